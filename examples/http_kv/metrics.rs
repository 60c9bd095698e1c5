//! Request counters and the latency histogram, and their rendering in the
//! Prometheus text format (0.0.4) together with the loop's and shards'
//! counters.
//!
//! Recording is allocation-free: fixed arrays indexed by method and status.

use std::io::Write;
use std::time::Duration;

use ringvisor::Stats;

use crate::http::Method;
use crate::shard::{LogInfo, ShardInfo};

/// Statuses counted separately; anything else is counted as `other`.
const STATUSES: [u16; 15] = [
    100, 200, 201, 204, 400, 404, 405, 408, 413, 414, 417, 431, 500, 503, 0,
];

/// Upper bounds of the latency histogram's buckets, in seconds.
pub const LATENCY_BUCKETS_SECONDS: [f64; 14] = [
    0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 5.0,
];

/// Counters of one server.
#[derive(Debug, Default)]
pub struct Metrics {
    requests: [[u64; STATUSES.len()]; Method::ALL.len()],
    /// Per bucket (non-cumulative), the last one being +Inf.
    latency_counts: [u64; LATENCY_BUCKETS_SECONDS.len() + 1],
    latency_sum_ns: u128,
    /// Connections accepted.
    pub connections_accepted: u64,
    /// Connections closed.
    pub connections_closed: u64,
    /// Connections closed by the idle timeout.
    pub idle_timeouts: u64,
    /// Requests cut off by the request timeout (408).
    pub request_timeouts: u64,
    /// Bytes received.
    pub bytes_received: u64,
    /// Bytes sent.
    pub bytes_sent: u64,
}

fn status_slot(status: u16) -> usize {
    STATUSES
        .iter()
        .position(|&s| s == status)
        .unwrap_or(STATUSES.len() - 1)
}

impl Metrics {
    /// Counts one answered request and how long it took.
    pub fn record(&mut self, method: Method, status: u16, latency: Duration) {
        self.requests[method.index()][status_slot(status)] += 1;
        let seconds = latency.as_secs_f64();
        let bucket = LATENCY_BUCKETS_SECONDS
            .iter()
            .position(|&le| seconds <= le)
            .unwrap_or(LATENCY_BUCKETS_SECONDS.len());
        self.latency_counts[bucket] += 1;
        self.latency_sum_ns += latency.as_nanos();
    }

    /// Requests answered so far.
    pub fn requests_total(&self) -> u64 {
        self.requests.iter().flatten().sum()
    }
}

/// What `/metrics` shows beyond the server's own counters.
pub struct Snapshot<'a> {
    /// The server's counters.
    pub metrics: &'a Metrics,
    /// The loop's counters.
    pub loop_stats: Stats,
    /// Connections open now.
    pub connections_open: usize,
    /// Each shard's figures.
    pub shards: &'a [ShardInfo],
    /// The shared log's figures.
    pub log: Option<LogInfo>,
    /// Seconds since start.
    pub uptime_seconds: f64,
}

/// Renders `snapshot` in the Prometheus text format.
pub fn render(snapshot: &Snapshot<'_>, out: &mut Vec<u8>) {
    render_requests(snapshot.metrics, out);
    render_latency(snapshot.metrics, out);
    render_connections(snapshot, out);
    render_loop(&snapshot.loop_stats, out);
    render_shards(snapshot.shards, out);
    if let Some(log) = &snapshot.log {
        render_log(log, out);
    }
}

fn render_log(log: &LogInfo, out: &mut Vec<u8>) {
    let series: [(&str, &str, &str, u64); 6] = [
        (
            "ringvisor_log_fdatasyncs_total",
            "counter",
            "fdatasyncs of the shared log (each covers every shard's entries of its batch).",
            log.fdatasyncs,
        ),
        (
            "ringvisor_log_entries_written_total",
            "counter",
            "Entries written to the shared log, all shards.",
            log.entries_written,
        ),
        (
            "ringvisor_log_batches_total",
            "counter",
            "Batch writes of the shared log.",
            log.batches,
        ),
        (
            "ringvisor_log_bytes_written_total",
            "counter",
            "Bytes written to the shared log, headers included.",
            log.bytes_written,
        ),
        (
            "ringvisor_log_bytes",
            "gauge",
            "Bytes of valid records in the shared log's segments.",
            log.log_bytes,
        ),
        (
            "ringvisor_log_segments",
            "gauge",
            "Segment files of the shared log.",
            log.segments,
        ),
    ];
    for (name, kind, help, value) in series {
        counter(out, name, kind, help, value);
    }
}

fn header(out: &mut Vec<u8>, name: &str, kind: &str, help: &str) {
    let _ = write!(out, "# HELP {name} {help}\n# TYPE {name} {kind}\n");
}

fn render_requests(m: &Metrics, out: &mut Vec<u8>) {
    header(
        out,
        "http_requests_total",
        "counter",
        "Requests answered, by method and status.",
    );
    for method in Method::ALL {
        for (slot, &status) in STATUSES.iter().enumerate() {
            let n = m.requests[method.index()][slot];
            if n == 0 {
                continue;
            }
            let _ = match status {
                0 => writeln!(
                    out,
                    "http_requests_total{{method=\"{}\",code=\"other\"}} {n}",
                    method.as_str()
                ),
                _ => writeln!(
                    out,
                    "http_requests_total{{method=\"{}\",code=\"{status}\"}} {n}",
                    method.as_str()
                ),
            };
        }
    }
}

fn render_latency(m: &Metrics, out: &mut Vec<u8>) {
    let name = "http_request_duration_seconds";
    header(
        out,
        name,
        "histogram",
        "From a request's last byte read to its response queued, in loop time.",
    );
    let mut cumulative = 0;
    for (i, le) in LATENCY_BUCKETS_SECONDS.iter().enumerate() {
        cumulative += m.latency_counts[i];
        let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
    }
    cumulative += m.latency_counts[LATENCY_BUCKETS_SECONDS.len()];
    let _ = writeln!(out, "{name}_bucket{{le=\"+Inf\"}} {cumulative}");
    let _ = writeln!(out, "{name}_sum {}", m.latency_sum_ns as f64 / 1e9);
    let _ = writeln!(out, "{name}_count {cumulative}");
}

fn counter(out: &mut Vec<u8>, name: &str, kind: &str, help: &str, value: impl std::fmt::Display) {
    header(out, name, kind, help);
    let _ = writeln!(out, "{name} {value}");
}

fn render_connections(s: &Snapshot<'_>, out: &mut Vec<u8>) {
    let m = s.metrics;
    counter(
        out,
        "http_connections_open",
        "gauge",
        "Connections open now.",
        s.connections_open,
    );
    counter(
        out,
        "http_connections_accepted_total",
        "counter",
        "Connections accepted.",
        m.connections_accepted,
    );
    counter(
        out,
        "http_connections_closed_total",
        "counter",
        "Connections closed.",
        m.connections_closed,
    );
    counter(
        out,
        "http_idle_timeouts_total",
        "counter",
        "Keep-alive connections closed for idleness.",
        m.idle_timeouts,
    );
    counter(
        out,
        "http_request_timeouts_total",
        "counter",
        "Requests cut off for arriving too slowly (408).",
        m.request_timeouts,
    );
    counter(
        out,
        "http_received_bytes_total",
        "counter",
        "Bytes received.",
        m.bytes_received,
    );
    counter(
        out,
        "http_sent_bytes_total",
        "counter",
        "Bytes sent.",
        m.bytes_sent,
    );
    counter(
        out,
        "process_uptime_seconds",
        "gauge",
        "Seconds since start.",
        s.uptime_seconds,
    );
}

fn render_loop(st: &Stats, out: &mut Vec<u8>) {
    counter(
        out,
        "ringvisor_loop_ticks_total",
        "counter",
        "Loop iterations (one backend wait each).",
        st.ticks,
    );
    counter(
        out,
        "ringvisor_loop_syscalls_total",
        "counter",
        "Syscalls the loop made (io_uring_enter on io_uring).",
        st.syscalls,
    );
    counter(
        out,
        "ringvisor_loop_sqes_submitted_total",
        "counter",
        "Ops handed to the backend.",
        st.sqes_submitted,
    );
    counter(
        out,
        "ringvisor_loop_completions_total",
        "counter",
        "Op completions delivered.",
        st.completions,
    );
    let per_tick = if st.ticks == 0 {
        0.0
    } else {
        st.completions as f64 / st.ticks as f64
    };
    counter(
        out,
        "ringvisor_loop_completions_per_tick",
        "gauge",
        "Completions per tick since start.",
        per_tick,
    );
    counter(
        out,
        "ringvisor_loop_timers_fired_total",
        "counter",
        "Timer callbacks run.",
        st.timers_fired,
    );
    counter(
        out,
        "ringvisor_loop_wakeups_total",
        "counter",
        "Cross-thread wakeups.",
        st.wakeups,
    );
    counter(
        out,
        "ringvisor_loop_ops_in_flight",
        "gauge",
        "Ops submitted and not completed.",
        st.ops_in_flight,
    );
    counter(
        out,
        "ringvisor_loop_file_pool_syscalls_total",
        "counter",
        "Blocking file syscalls of the poll backend's pool.",
        st.file_pool_syscalls,
    );
}

fn render_shards(shards: &[ShardInfo], out: &mut Vec<u8>) {
    type Field = fn(&ShardInfo) -> u64;
    let series: [(&str, &str, &str, Field); 4] = [
        (
            "ringvisor_shard_keys",
            "gauge",
            "Keys held by each shard.",
            |s| s.keys,
        ),
        (
            "ringvisor_shard_log_bytes",
            "gauge",
            "Bytes of each shard's entries written to the shared log.",
            |s| s.log_bytes,
        ),
        (
            "ringvisor_shard_restarts_total",
            "counter",
            "Restarts of each shard.",
            |s| s.restarts,
        ),
        (
            "ringvisor_shard_fsyncs_total",
            "counter",
            "fdatasyncs of the shared log that carried each shard's entries.",
            |s| s.fsyncs,
        ),
    ];
    for (name, kind, help, field) in series {
        header(out, name, kind, help);
        for (i, s) in shards.iter().enumerate() {
            let _ = writeln!(out, "{name}{{shard=\"{i}\"}} {}", field(s));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn records_and_renders_requests_and_latency() {
        let mut m = Metrics::default();
        m.record(Method::Get, 200, Duration::from_micros(50));
        m.record(Method::Get, 200, Duration::from_millis(3));
        m.record(Method::Put, 418, Duration::from_secs(60));
        assert_eq!(m.requests_total(), 3);
        let shards = [ShardInfo {
            keys: 4,
            log_bytes: 0,
            restarts: 1,
            fsyncs: 0,
            state: "running",
        }];
        let snap = Snapshot {
            metrics: &m,
            loop_stats: Stats::default(),
            connections_open: 2,
            shards: &shards,
            log: Some(LogInfo {
                fdatasyncs: 3,
                entries_written: 24,
                ..LogInfo::default()
            }),
            uptime_seconds: 1.5,
        };
        let mut out = Vec::new();
        render(&snap, &mut out);
        let text = String::from_utf8(out).unwrap();
        assert!(text.contains("http_requests_total{method=\"GET\",code=\"200\"} 2\n"));
        assert!(text.contains("http_requests_total{method=\"PUT\",code=\"other\"} 1\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"0.0001\"} 1\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"0.005\"} 2\n"));
        assert!(text.contains("http_request_duration_seconds_bucket{le=\"+Inf\"} 3\n"));
        assert!(text.contains("http_request_duration_seconds_count 3\n"));
        assert!(text.contains("ringvisor_shard_keys{shard=\"0\"} 4\n"));
        assert!(text.contains("http_connections_open 2\n"));
        assert!(text.contains("ringvisor_log_fdatasyncs_total 3\n"));
        assert!(text.contains("ringvisor_log_entries_written_total 24\n"));
        for line in text.lines().filter(|l| !l.starts_with('#')) {
            let value = line.rsplit(' ').next().unwrap();
            assert!(value.parse::<f64>().is_ok(), "{line}");
        }
    }
}
