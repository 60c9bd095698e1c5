//! Latency samples and percentiles, and the process's own CPU time.

use std::time::Duration;

/// The `p`-th percentile (0..=100) of `samples_ns` in microseconds, by
/// nearest rank; sorts the samples. Zero for no samples.
///
/// ```
/// let mut s: Vec<u64> = (1..=100).map(|i| i * 1000).collect();
/// assert_eq!(ringvisor_peers::latency::percentile_us(&mut s, 50.0), 50.0);
/// assert_eq!(ringvisor_peers::latency::percentile_us(&mut s, 99.0), 99.0);
/// ```
pub fn percentile_us(samples_ns: &mut [u64], p: f64) -> f64 {
    if samples_ns.is_empty() {
        return 0.0;
    }
    samples_ns.sort_unstable();
    let rank = ((p / 100.0) * samples_ns.len() as f64).ceil() as usize;
    let index = rank.clamp(1, samples_ns.len()) - 1;
    samples_ns[index] as f64 / 1000.0
}

/// User plus system CPU time this process has used so far.
///
/// ```
/// let t = ringvisor_peers::latency::process_cpu_time();
/// assert!(t >= std::time::Duration::ZERO);
/// ```
pub fn process_cpu_time() -> Duration {
    // SAFETY: getrusage writes into a zeroed rusage we own.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        libc::getrusage(libc::RUSAGE_SELF, &mut usage);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}
