//! The loop's counters.

/// Counters a loop keeps about its own work; read them with [`crate::Loop::stats`].
///
/// `syscalls` counts what the loop itself asks of the kernel: on io_uring every
/// `io_uring_enter`; on poll every wait (with the syscalls `polling` makes around
/// it), every `epoll_ctl` and every nonblocking attempt (`recv`, `send`,
/// `accept4`, ...). Regular-file syscalls of the poll backend's thread pool are
/// counted in `file_pool_syscalls`. Under load, `syscalls` agrees with
/// `perf stat -e raw_syscalls:sys_enter -p PID` on the echo example within a
/// few percent on both backends; the rest is the application's own calls.
///
/// ```
/// # use ringvisor_runtime::Loop;
/// let mut lp = Loop::new().unwrap();
/// lp.nop(|_, _| {});
/// lp.run().unwrap();
/// assert_eq!(lp.stats().completions, 1);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Stats {
    /// Loop iterations (one backend wait each).
    pub ticks: u64,
    /// Syscalls the loop thread made for its own work.
    pub syscalls: u64,
    /// Ops handed to the backend (SQEs on io_uring; started ops on poll).
    pub sqes_submitted: u64,
    /// Op completions delivered.
    pub completions: u64,
    /// Timer callbacks run.
    pub timers_fired: u64,
    /// Times work posted from another thread was picked up.
    pub wakeups: u64,
    /// Ops submitted and not yet completed.
    pub ops_in_flight: u64,
    /// Blocking syscalls run by the poll backend's file thread pool.
    pub file_pool_syscalls: u64,
}
