//! Raw harness runs (one CSV row per run) to medians with spread, a Markdown
//! report, ratios between servers of the same session, and the issue's
//! targets checked against them. Plots are in [`plot`].
//!
//! A run row: `suite,server,shape,mix,conns,rep,rps,p50_us,p99_us,
//! cpu_us_per_req,syscalls_per_req,syscalls_source,req_per_entry,
//! load_cpu_pct,errors,writes_per_fsync,other_cpu0_pct`; an empty numeric field means "not measured".

pub mod plot;
mod targets;

use std::collections::BTreeMap;
use std::fmt::Write;

/// The numeric columns of a run, in CSV order after `rep`.
pub const METRICS: [&str; 8] = [
    "rps",
    "p50_us",
    "p99_us",
    "cpu_us_per_req",
    "syscalls_per_req",
    "syscalls_source",
    "req_per_entry",
    "load_cpu_pct",
];

/// Identifies a point: one server under one load.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct PointKey {
    /// `kv` (HTTP KV under wrk) or `echo` (echo under the echo load client).
    pub suite: String,
    /// `rr` (one request in flight per connection) or `pipe16`.
    pub shape: String,
    /// `get` (GET-heavy), `put` (PUT-heavy) or `echo`.
    pub mix: String,
    /// Server label, such as `ringvisor-uring` or `tokio`.
    pub server: String,
    /// Concurrent connections.
    pub conns: u32,
}

/// One measured run.
#[derive(Debug, Clone)]
pub struct Run {
    /// Which point.
    pub key: PointKey,
    /// Requests (or echo messages) per second.
    pub rps: Option<f64>,
    /// Median latency, µs.
    pub p50_us: Option<f64>,
    /// 99th percentile latency, µs.
    pub p99_us: Option<f64>,
    /// Server user+system CPU per request, µs.
    pub cpu_us_per_req: Option<f64>,
    /// Server syscalls per request.
    pub syscalls_per_req: Option<f64>,
    /// Where the syscall count came from: `perf` or `loop` (its own counters).
    pub syscalls_source: String,
    /// ringvisor only: requests per kernel entry, from its counters.
    pub req_per_entry: Option<f64>,
    /// CPU use of the load generator, percent of one core.
    pub load_cpu_pct: Option<f64>,
    /// Durable servers: acknowledged writes per fdatasync.
    pub writes_per_fsync: Option<f64>,
    /// Busy time of the server's core outside the server, percent.
    pub other_load_pct: Option<f64>,
}

/// Median and spread of one metric at one point.
#[derive(Debug, Clone, Copy)]
pub struct Summary {
    /// Median over the repetitions.
    pub median: f64,
    /// Smallest value.
    pub min: f64,
    /// Largest value.
    pub max: f64,
    /// Repetitions that measured it.
    pub count: usize,
}

impl Summary {
    /// Summarises the values (None if there are none).
    ///
    /// ```
    /// let s = ringvisor_peers::report::Summary::of(&[3.0, 1.0, 2.0]).unwrap();
    /// assert_eq!((s.median, s.min, s.max), (2.0, 1.0, 3.0));
    /// ```
    pub fn of(values: &[f64]) -> Option<Summary> {
        if values.is_empty() {
            return None;
        }
        let mut v = values.to_vec();
        v.sort_by(f64::total_cmp);
        let mid = v.len() / 2;
        let median = if v.len() % 2 == 1 {
            v[mid]
        } else {
            (v[mid - 1] + v[mid]) / 2.0
        };
        Some(Summary {
            median,
            min: v[0],
            max: v[v.len() - 1],
            count: v.len(),
        })
    }

    /// Half the range as a percentage of the median.
    pub fn spread_pct(&self) -> f64 {
        if self.median == 0.0 {
            0.0
        } else {
            50.0 * (self.max - self.min) / self.median.abs()
        }
    }
}

/// Per-point summaries of every metric.
#[derive(Debug, Clone, Default)]
pub struct Point {
    /// Requests per second.
    pub rps: Option<Summary>,
    /// Median latency, µs.
    pub p50_us: Option<Summary>,
    /// p99 latency, µs.
    pub p99_us: Option<Summary>,
    /// Server CPU µs per request.
    pub cpu_us_per_req: Option<Summary>,
    /// Syscalls per request.
    pub syscalls_per_req: Option<Summary>,
    /// `perf` or `loop`.
    pub syscalls_source: String,
    /// Requests per kernel entry (ringvisor).
    pub req_per_entry: Option<Summary>,
    /// Load generator CPU, %.
    pub load_cpu_pct: Option<Summary>,
    /// Acknowledged writes per fdatasync (durable servers).
    pub writes_per_fsync: Option<Summary>,
    /// Other load on the server's core, %.
    pub other_load_pct: Option<Summary>,
}

/// Parses the raw CSV (with its header line).
pub fn parse_runs(csv: &str) -> Result<Vec<Run>, String> {
    let mut runs = Vec::new();
    for (n, line) in csv.lines().enumerate().skip(1) {
        if line.trim().is_empty() {
            continue;
        }
        let f: Vec<&str> = line.split(',').map(str::trim).collect();
        if f.len() < 14 {
            return Err(format!(
                "line {}: expected 15 fields, got {}",
                n + 1,
                f.len()
            ));
        }
        let num = |i: usize| f[i].parse::<f64>().ok().filter(|v| v.is_finite());
        let conns = f[4]
            .parse()
            .map_err(|_| format!("line {}: bad conns {:?}", n + 1, f[4]))?;
        runs.push(Run {
            key: PointKey {
                suite: f[0].into(),
                server: f[1].into(),
                shape: f[2].into(),
                mix: f[3].into(),
                conns,
            },
            rps: num(6),
            p50_us: num(7),
            p99_us: num(8),
            cpu_us_per_req: num(9),
            syscalls_per_req: num(10),
            syscalls_source: f[11].into(),
            req_per_entry: num(12),
            load_cpu_pct: num(13),
            writes_per_fsync: f.get(15).and_then(|v| v.parse::<f64>().ok()),
            other_load_pct: f.get(16).and_then(|v| v.parse::<f64>().ok()),
        });
    }
    Ok(runs)
}

/// Groups runs by point and summarises each metric.
pub fn summarise(runs: &[Run]) -> BTreeMap<PointKey, Point> {
    let mut grouped: BTreeMap<PointKey, Vec<&Run>> = BTreeMap::new();
    for run in runs {
        grouped.entry(run.key.clone()).or_default().push(run);
    }
    grouped
        .into_iter()
        .map(|(key, runs)| {
            let col = |get: fn(&Run) -> Option<f64>| {
                Summary::of(&runs.iter().filter_map(|r| get(r)).collect::<Vec<_>>())
            };
            let point = Point {
                rps: col(|r| r.rps),
                p50_us: col(|r| r.p50_us),
                p99_us: col(|r| r.p99_us),
                cpu_us_per_req: col(|r| r.cpu_us_per_req),
                syscalls_per_req: col(|r| r.syscalls_per_req),
                syscalls_source: runs[0].syscalls_source.clone(),
                req_per_entry: col(|r| r.req_per_entry),
                load_cpu_pct: col(|r| r.load_cpu_pct),
                writes_per_fsync: col(|r| r.writes_per_fsync),
                other_load_pct: col(|r| r.other_load_pct),
            };
            (key, point)
        })
        .collect()
}

fn cell(s: Option<Summary>, decimals: usize) -> String {
    match s {
        Some(s) => format!("{:.*} ±{:.0}%", decimals, s.median, s.spread_pct()),
        None => "–".into(),
    }
}

/// The groups a report has: (suite, shape, mix).
pub fn groups(points: &BTreeMap<PointKey, Point>) -> Vec<(String, String, String)> {
    let mut g: Vec<_> = points
        .keys()
        .map(|k| (k.suite.clone(), k.shape.clone(), k.mix.clone()))
        .collect();
    g.dedup();
    g
}

/// A human title for a group.
pub fn group_title(suite: &str, shape: &str, mix: &str) -> String {
    let suite = match suite {
        "kv" => "HTTP KV (wrk)",
        "echo" => "echo, 64-byte messages (echo-load)",
        other => other,
    };
    let shape = match shape {
        "rr" => "request-response",
        "pipe16" => "pipelined, 16 per write",
        other => other,
    };
    let mix = match mix {
        "get" => ", GET-heavy (90% GET)",
        "put" => ", PUT-heavy (90% PUT)",
        _ => "",
    };
    format!("{suite}, {shape}{mix}")
}

/// The Markdown tables: one per group, rows by connections then server.
pub fn markdown_tables(points: &BTreeMap<PointKey, Point>) -> String {
    let mut md = String::new();
    for (suite, shape, mix) in groups(points) {
        let _ = writeln!(md, "\n### {}\n", group_title(&suite, &shape, &mix));
        md.push_str(
            "| conns | server | req/s | p50 µs | p99 µs | server CPU µs/req | syscalls/req | req/kernel entry | load gen CPU % | other load on server CPU % | writes/fsync | runs |\n",
        );
        md.push_str("|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
        let mut rows: Vec<(&PointKey, &Point)> = points
            .iter()
            .filter(|(k, _)| k.suite == suite && k.shape == shape && k.mix == mix)
            .collect();
        rows.sort_by(|a, b| (a.0.conns, &a.0.server).cmp(&(b.0.conns, &b.0.server)));
        for (k, p) in rows {
            let source = if p.syscalls_source == "perf" || p.syscalls_source.is_empty() {
                String::new()
            } else {
                format!(" ({})", p.syscalls_source)
            };
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {}{} | {} | {} | {} | {} | {} |",
                k.conns,
                k.server,
                cell(p.rps, 0),
                cell(p.p50_us, 0),
                cell(p.p99_us, 0),
                cell(p.cpu_us_per_req, 2),
                cell(p.syscalls_per_req, 2),
                source,
                cell(p.req_per_entry, 2),
                cell(p.load_cpu_pct, 0),
                cell(p.other_load_pct, 0),
                cell(p.writes_per_fsync, 1),
                p.rps.map_or(0, |s| s.count),
            );
        }
    }
    md
}

/// Ratios between servers at each point, from medians of the same session.
pub fn markdown_ratios(points: &BTreeMap<PointKey, Point>) -> String {
    let mut md = String::from(
        "\n| suite | shape | mix | conns | pair | req/s ratio | syscalls/req ratio | CPU µs/req ratio | p99 ratio |\n|---|---|---|---:|---|---:|---:|---:|---:|\n",
    );
    let pairs = [
        ("ringvisor-uring", "tokio"),
        ("ringvisor-uring", "monoio"),
        ("ringvisor-uring", "ringvisor-poll"),
        ("ringvisor-uring-sync", "ringvisor-poll-sync"),
    ];
    let mut any = false;
    for (a, b) in pairs {
        for (ka, pa) in points.iter().filter(|(k, _)| k.server == a) {
            let kb = PointKey {
                server: b.into(),
                ..ka.clone()
            };
            let Some(pb) = points.get(&kb) else { continue };
            let ratio = |x: Option<Summary>, y: Option<Summary>| match (x, y) {
                (Some(x), Some(y)) if y.median != 0.0 => format!("{:.2}", x.median / y.median),
                _ => "–".into(),
            };
            any = true;
            let _ = writeln!(
                md,
                "| {} | {} | {} | {} | {a} / {b} | {} | {} | {} | {} |",
                ka.suite,
                ka.shape,
                ka.mix,
                ka.conns,
                ratio(pa.rps, pb.rps),
                ratio(pa.syscalls_per_req, pb.syscalls_per_req),
                ratio(pa.cpu_us_per_req, pb.cpu_us_per_req),
                ratio(pa.p99_us, pb.p99_us),
            );
        }
    }
    if any {
        md
    } else {
        "\n(no pairs of servers measured at the same point)\n".into()
    }
}

/// The issue-8 targets checked against the medians.
pub use targets::markdown_targets;

#[cfg(test)]
mod tests {
    use super::*;

    const CSV: &str = "suite,server,shape,mix,conns,rep,rps,p50_us,p99_us,cpu_us_per_req,syscalls_per_req,syscalls_source,req_per_entry,load_cpu_pct,errors
echo,ringvisor-uring,rr,echo,64,1,100,10,20,5,0.4,perf,2.5,99,0
echo,ringvisor-uring,rr,echo,64,2,120,10,20,5,0.5,perf,2.0,99,0
echo,ringvisor-uring,rr,echo,64,3,110,10,20,5,0.45,perf,,99,0
echo,tokio,rr,echo,64,1,100,10,20,5,2.5,perf,,99,0
";

    #[test]
    fn medians_and_spread_per_point() {
        let runs = parse_runs(CSV).unwrap();
        assert_eq!(runs.len(), 4);
        let points = summarise(&runs);
        let key = PointKey {
            suite: "echo".into(),
            server: "ringvisor-uring".into(),
            shape: "rr".into(),
            mix: "echo".into(),
            conns: 64,
        };
        let p = &points[&key];
        let rps = p.rps.unwrap();
        assert_eq!((rps.median, rps.count), (110.0, 3));
        assert!((rps.spread_pct() - 100.0 * 10.0 / 110.0).abs() < 1e-9);
        assert_eq!(
            p.req_per_entry.unwrap().count,
            2,
            "empty fields are not zeros"
        );
        let ratios = markdown_ratios(&points);
        assert!(ratios.contains("| 1.10 | 0.18 |"), "{ratios}");
    }
}
