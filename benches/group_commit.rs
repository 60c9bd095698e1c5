//! Durable writes per second through the persist engine: group commit
//! (every append of a tick in one write + one `fdatasync`) against one
//! `fdatasync` per write (`batch_entries_max = 1`), for 1, 8, 64 and 256
//! concurrent writers. A writer keeps one append outstanding and appends
//! again when it is acknowledged (durable).
//!
//! Then: many shards as streams of one [`SharedLog`] (one writer) against
//! one log per shard.
//!
//! After criterion's runs it prints a table with writes/s and fdatasyncs per
//! acknowledged write on both backends (skipped under `--test`, or with
//! `GROUP_COMMIT_TABLE=0`; `GROUP_COMMIT_TABLE=shards` prints the shards
//! table only).
//!
//! ```text
//! cargo bench --bench group_commit
//! ```

use std::cell::Cell;
use std::path::PathBuf;
use std::rc::Rc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use criterion::{BenchmarkId, Criterion, SamplingMode, Throughput};
use ringvisor::behaviours::persist::{open_blocking, Options, SharedLog, Store, StoreStats};
use ringvisor::{Backend, Loop};

const WRITERS: [usize; 4] = [1, 8, 64, 256];
const ENTRY_BYTES: usize = 64;
/// Writes per criterion iteration (enough to keep 256 writers busy).
const WRITES_PER_ITER: u64 = 256;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Commit {
    /// Group commit, up to `BATCHES_IN_FLIGHT_MAX_DEFAULT` batches in flight.
    Group,
    /// Group commit, one batch in flight (double buffering).
    GroupSerial,
    PerWrite,
}

impl Commit {
    fn name(self) -> &'static str {
        match self {
            Commit::Group => "group_commit",
            Commit::GroupSerial => "group_commit_serial",
            Commit::PerWrite => "fdatasync_per_write",
        }
    }

    fn options(self) -> Options {
        match self {
            Commit::Group => Options::default(),
            Commit::GroupSerial => Options {
                batches_in_flight_max: 1,
                ..Options::default()
            },
            Commit::PerWrite => Options {
                batch_entries_max: 1,
                ..Options::default()
            },
        }
    }
}

struct Run {
    elapsed: Duration,
    acked: u64,
    stats: StoreStats,
}

impl Run {
    fn writes_per_sec(&self) -> f64 {
        self.acked as f64 / self.elapsed.as_secs_f64()
    }

    fn fdatasyncs_per_ack(&self) -> f64 {
        self.stats.fdatasyncs as f64 / self.acked as f64
    }
}

struct Counters {
    started: Cell<u64>,
    acked: Cell<u64>,
    /// Appends to start, at most.
    total: u64,
    /// No append starts after this.
    deadline: Instant,
}

fn scratch_dir() -> PathBuf {
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("ringvisor-group-commit-{}-{n}", std::process::id()))
}

/// One writer: append, and on acknowledgement append again, until `total`
/// appends have started.
fn write_next(lp: &mut Loop, store: &Rc<Store>, counters: &Rc<Counters>) {
    if counters.started.get() >= counters.total || lp.now() >= counters.deadline {
        return;
    }
    counters.started.set(counters.started.get() + 1);
    let (s, c) = (store.clone(), counters.clone());
    store
        .append(lp, &[0x5a; ENTRY_BYTES], move |lp, res| {
            res.expect("durable append");
            c.acked.set(c.acked.get() + 1);
            write_next(lp, &s, &c);
        })
        .expect("append accepted");
}

/// How much a run writes: a number of writes, or for how long.
#[derive(Debug, Clone, Copy)]
enum Amount {
    Writes(u64),
    For(Duration),
}

/// Durable writes by `writers_per_shard` writers on each of `shards` stores,
/// all on one loop: each with its own directory and log, or (`shared`) all
/// streams of one shared log.
fn durable_writes(
    backend: Backend,
    commit: Commit,
    shards: usize,
    writers_per_shard: usize,
    shared: bool,
    amount: Amount,
) -> Run {
    let mut lp = Loop::builder().backend(backend).build().expect("loop");
    let base = scratch_dir();
    std::fs::create_dir_all(&base).expect("scratch dir");
    let log = shared.then(|| {
        SharedLog::open_blocking(&mut lp, &base.join("log"), commit.options()).expect("open log")
    });
    let stores: Vec<Rc<Store>> = (0..shards)
        .map(|i| {
            let dir = base.join(format!("shard-{i}"));
            let (store, _) = match &log {
                Some(log) => log.open_stream_blocking(&mut lp, i as u32, &dir),
                None => open_blocking(&mut lp, &dir, commit.options()),
            }
            .expect("open");
            Rc::new(store)
        })
        .collect();
    let start = Instant::now();
    let (total, deadline) = match amount {
        Amount::Writes(total) => (total, start + Duration::from_secs(3600)),
        Amount::For(duration) => (u64::MAX, start + duration),
    };
    let counters = Rc::new(Counters {
        started: Cell::new(0),
        acked: Cell::new(0),
        total,
        deadline,
    });
    for store in &stores {
        for _ in 0..writers_per_shard {
            write_next(&mut lp, store, &counters);
        }
    }
    while counters.acked.get() < counters.started.get() {
        lp.run_once().expect("loop tick");
    }
    let elapsed = start.elapsed();
    let mut stats = StoreStats::default();
    for store in &stores {
        let s = store.stats();
        stats.fdatasyncs += s.fdatasyncs;
        stats.entries_written += s.entries_written;
        stats.batches += s.batches;
        store
            .close(&mut lp, |_, res| res.expect("close"))
            .expect("close");
    }
    if let Some(log) = &log {
        // A stream's counters count each shared fdatasync once per stream.
        stats = log.stats();
        log.close(&mut lp, |_, res| res.expect("close log"))
            .expect("close log");
    }
    lp.run().expect("loop");
    drop(log);
    drop(stores);
    std::fs::remove_dir_all(&base).expect("remove scratch dir");
    Run {
        elapsed,
        acked: counters.acked.get(),
        stats,
    }
}

fn bench_writers(c: &mut Criterion) {
    for commit in [Commit::Group, Commit::PerWrite] {
        let mut group = c.benchmark_group(format!("durable_writes/{}", commit.name()));
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(3))
            .throughput(Throughput::Elements(WRITES_PER_ITER));
        for writers in WRITERS {
            group.bench_function(BenchmarkId::from_parameter(writers), |b| {
                b.iter_custom(|iters| {
                    let total = iters * WRITES_PER_ITER;
                    let amount = Amount::Writes(total);
                    durable_writes(Backend::Auto, commit, 1, writers, false, amount).elapsed
                })
            });
        }
        group.finish();
    }
}

/// 8 shards with 8 writers each: streams of one shared log against a log
/// per shard, each with batches pipelined (the default) and with one batch
/// in flight at a time (`_serial`).
fn bench_shards(c: &mut Criterion) {
    let mut group = c.benchmark_group("shards_8x8");
    group
        .sampling_mode(SamplingMode::Flat)
        .sample_size(10)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(3))
        .throughput(Throughput::Elements(WRITES_PER_ITER));
    let cases = [
        ("shared_log", Commit::Group, true),
        ("log_per_shard", Commit::Group, false),
        ("shared_log_serial", Commit::GroupSerial, true),
        ("log_per_shard_serial", Commit::GroupSerial, false),
    ];
    for (name, commit, shared) in cases {
        group.bench_function(name, |b| {
            b.iter_custom(|iters| {
                let amount = Amount::Writes(iters * WRITES_PER_ITER);
                durable_writes(Backend::Auto, commit, 8, 8, shared, amount).elapsed
            })
        });
    }
    group.finish();
}

fn backend_name(backend: Backend) -> &'static str {
    match backend {
        Backend::Uring => "uring",
        _ => "poll",
    }
}

/// Runs each config `TABLE_REPS` times, interleaved with the configs it is
/// compared with (the disk's flush latency drifts by 10x over minutes on a
/// shared VM), and keeps the run with the median writes/s.
const TABLE_REPS: usize = 5;
const TABLE_RUN: Duration = Duration::from_millis(300);

fn median_runs(configs: &[(Commit, usize, usize, bool)], backend: Backend) -> Vec<Run> {
    let mut runs: Vec<Vec<Run>> = configs.iter().map(|_| Vec::new()).collect();
    for _ in 0..TABLE_REPS {
        for (i, &(commit, shards, writers, shared)) in configs.iter().enumerate() {
            let amount = Amount::For(TABLE_RUN);
            runs[i].push(durable_writes(
                backend, commit, shards, writers, shared, amount,
            ));
        }
    }
    runs.into_iter()
        .map(|mut r| {
            r.sort_by(|a, b| a.writes_per_sec().total_cmp(&b.writes_per_sec()));
            r.swap_remove(TABLE_REPS / 2)
        })
        .collect()
}

fn print_writers_table() {
    println!("\n| backend | writers | group commit writes/s | entries/fdatasync | fdatasync-per-write writes/s | entries/fdatasync | speedup |");
    println!("|---|---|---|---|---|---|---|");
    for backend in [Backend::Uring, Backend::Poll] {
        for writers in WRITERS {
            let configs = [
                (Commit::Group, 1, writers, false),
                (Commit::PerWrite, 1, writers, false),
            ];
            let runs = median_runs(&configs, backend);
            let (group, single) = (&runs[0], &runs[1]);
            println!(
                "| {} | {writers} | {:.0} | {:.1} | {:.0} | {:.1} | {:.1}x |",
                backend_name(backend),
                group.writes_per_sec(),
                1.0 / group.fdatasyncs_per_ack(),
                single.writes_per_sec(),
                1.0 / single.fdatasyncs_per_ack(),
                group.writes_per_sec() / single.writes_per_sec(),
            );
        }
    }
}

fn print_shards_table() {
    println!("\n| backend | layout | batches in flight | writes/s | entries/fdatasync |");
    println!("|---|---|---|---|---|");
    let layouts = [
        ("1 log, 64 writers", 1, 64, false),
        ("1 shared log, 8 streams x 8 writers", 8, 8, true),
        ("8 logs x 8 writers", 8, 8, false),
        ("64 logs x 1 writer", 64, 1, false),
    ];
    let commits = [Commit::Group, Commit::GroupSerial];
    for backend in [Backend::Uring, Backend::Poll] {
        let configs: Vec<_> = layouts
            .iter()
            .flat_map(|&(_, s, w, shared)| commits.map(|c| (c, s, w, shared)))
            .collect();
        let runs = median_runs(&configs, backend);
        for (&(commit, ..), (name, run)) in configs.iter().zip(
            layouts
                .iter()
                .flat_map(|(name, ..)| commits.map(|_| name))
                .zip(&runs),
        ) {
            println!(
                "| {} | {name} | {} | {:.0} | {:.1} |",
                backend_name(backend),
                commit.options().batches_in_flight_max,
                run.writes_per_sec(),
                1.0 / run.fdatasyncs_per_ack()
            );
        }
    }
}

fn main() {
    let mut criterion = Criterion::default().configure_from_args();
    bench_writers(&mut criterion);
    bench_shards(&mut criterion);
    criterion.final_summary();
    let test_mode = std::env::args().any(|a| a == "--test");
    // GROUP_COMMIT_TABLE=0: no tables; =shards: the shards table only.
    let table = std::env::var("GROUP_COMMIT_TABLE").unwrap_or_default();
    if table != "0" && !test_mode {
        if table != "shards" {
            print_writers_table();
        }
        print_shards_table();
    }
}
