//! Runtime micro-benchmarks (issues 2 and 8): no-ops through the loop at
//! batch sizes 1 to 4,096 on io_uring and on poll beside the raw io-uring
//! crate, timer insert+cancel, and echo ping-pong over loopback.
//!
//! ```text
//! cargo bench --bench runtime
//! ```
//! After criterion's figures, a one-run summary measures the same work
//! interleaved, with kernel entries per 1,000 ops, and checks the targets
//! (`RINGVISOR_BENCH_SUMMARY=path` writes it as Markdown too; `=off` skips
//! it, for profiling one bench).

use std::time::Duration;

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use ringvisor::Backend;

#[path = "runtime/echo.rs"]
mod echo;
#[path = "runtime/raw_uring.rs"]
mod raw_uring;
#[path = "runtime/summary.rs"]
mod summary;
#[path = "runtime/work.rs"]
mod work;

use work::{BATCH_SIZES, PENDING_TIMERS, SQ_ENTRIES, TIMER_PAIRS_PER_ITER};

fn nops(c: &mut Criterion) {
    let mut group = c.benchmark_group("nop");
    for batch in BATCH_SIZES {
        group.throughput(Throughput::Elements(batch as u64));
        for backend in [Backend::Uring, Backend::Poll] {
            let mut lp = work::nop_loop(backend, SQ_ENTRIES);
            group.bench_with_input(BenchmarkId::new(backend.name(), batch), &batch, |b, &n| {
                b.iter(|| work::nop_batch(&mut lp, n))
            });
        }
        let mut ring = raw_uring::RawRing::new(SQ_ENTRIES);
        group.bench_with_input(BenchmarkId::new("raw_io_uring", batch), &batch, |b, &n| {
            b.iter(|| ring.nop_batch(n))
        });
    }
    group.finish();
}

fn timers(c: &mut Criterion) {
    let mut group = c.benchmark_group("timer_insert_cancel");
    group.throughput(Throughput::Elements(TIMER_PAIRS_PER_ITER as u64));
    for pending in [0, PENDING_TIMERS] {
        let mut lp = work::timer_loop(pending);
        group.bench_with_input(BenchmarkId::new("pending", pending), &pending, |b, _| {
            b.iter(|| work::timer_insert_cancel(&mut lp, TIMER_PAIRS_PER_ITER))
        });
    }
    group.finish();
}

fn echo_ping_pong(c: &mut Criterion) {
    let mut group = c.benchmark_group("echo_ping_pong_64B");
    group.throughput(Throughput::Elements(1));
    for backend in [Backend::Uring, Backend::Poll] {
        for connections in [1usize, 16] {
            let mut bench = echo::EchoBench::new(backend, connections);
            let id = BenchmarkId::new(backend.name(), format!("{connections}conns"));
            group.bench_function(id, |b| b.iter_custom(|iters| bench.run(iters)));
        }
    }
    group.finish();
}

fn config() -> Criterion {
    Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(20)
        .configure_from_args()
}

criterion_group! {
    name = benches;
    config = config();
    targets = nops, timers, echo_ping_pong
}

fn main() {
    benches();
    Criterion::default().configure_from_args().final_summary();
    // `cargo test --benches` runs each bench once without `--bench`: skip the
    // summary there.
    // `RINGVISOR_BENCH_SUMMARY=off` skips it (for profiling one bench).
    let target = std::env::var("RINGVISOR_BENCH_SUMMARY").ok();
    if !std::env::args().any(|a| a == "--bench") || target.as_deref() == Some("off") {
        return;
    }
    let md = summary::run();
    println!("\n{md}");
    if let Some(path) = target {
        if let Err(e) = std::fs::write(&path, &md) {
            eprintln!("cannot write {path}: {e}");
        }
    }
}
