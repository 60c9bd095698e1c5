//! The one-run summary printed after the criterion benches: ops/s of the
//! loop on io_uring and poll and of the raw io-uring crate, measured
//! interleaved in this process so their ratios are fair, with kernel entries
//! per 1,000 ops from `Loop::stats().syscalls` (and the raw ring's own count),
//! and the issue-2 / issue-8 targets checked.
//!
//! Set `RINGVISOR_BENCH_SUMMARY=path` to also write it as Markdown there.

use std::fmt::Write;
use std::time::{Duration, Instant};

use ringvisor::{Backend, Loop};

use crate::echo::EchoBench;
use crate::raw_uring::RawRing;
use crate::work::{self, BATCH_SIZES, PENDING_TIMERS, SQ_ENTRIES};

/// Interleaved rounds per figure; the median is reported.
const ROUNDS: usize = 5;
/// No-ops per measurement (rounded to whole batches).
const OPS_PER_MEASUREMENT: usize = 1 << 19;
/// Timer insert+cancel pairs per measurement.
const TIMER_PAIRS_PER_MEASUREMENT: usize = 1 << 21;
/// Echo round trips per measurement.
const ROUND_TRIPS_PER_MEASUREMENT: u64 = 20_000;

/// Issue 2: no-ops/s at batch 1,024 through the loop, callbacks included.
const TARGET_NOPS_PER_S: f64 = 10e6;
/// Issue 8: loop no-ops at batch 1,024 over the raw crate's.
const TARGET_RAW_RATIO: f64 = 0.75;
/// Issue 2: timer insert+cancel pairs per second.
const TARGET_TIMER_PAIRS_PER_S: f64 = 20e6;

struct Figure {
    ops_per_s: f64,
    entries_per_kop: f64,
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

/// Times `ops` operations done by `f`, which returns kernel entries made.
fn measure(ops: usize, f: impl FnOnce() -> u64) -> (f64, u64) {
    let start = Instant::now();
    let entries = f();
    (ops as f64 / start.elapsed().as_secs_f64(), entries)
}

fn loop_nops(lp: &mut Loop, batch: usize) -> (f64, u64) {
    let batches = (OPS_PER_MEASUREMENT / batch).max(1);
    let before = lp.stats().syscalls;
    measure(batches * batch, || {
        for _ in 0..batches {
            work::nop_batch(lp, batch);
        }
        lp.stats().syscalls - before
    })
}

fn raw_nops(ring: &mut RawRing, batch: usize) -> (f64, u64) {
    let batches = (OPS_PER_MEASUREMENT / batch).max(1);
    let before = ring.enters;
    measure(batches * batch, || {
        for _ in 0..batches {
            ring.nop_batch(batch);
        }
        ring.enters - before
    })
}

/// Rows per batch size: loop on io_uring (SQ 4,096 and the default 256),
/// loop on poll, raw io-uring; rounds interleaved.
fn nop_figures(batch: usize) -> Vec<(&'static str, Figure)> {
    let mut uring = work::nop_loop(Backend::Uring, SQ_ENTRIES);
    let mut uring_default = work::nop_loop(Backend::Uring, ringvisor::SQ_ENTRIES_DEFAULT);
    let mut poll = work::nop_loop(Backend::Poll, SQ_ENTRIES);
    let mut raw = RawRing::new(SQ_ENTRIES);
    let ops = (OPS_PER_MEASUREMENT / batch).max(1) * batch;
    let mut rates = vec![Vec::new(); 4];
    let mut entries = [0u64; 4];
    for _ in 0..ROUNDS {
        let runs = [
            loop_nops(&mut uring, batch),
            loop_nops(&mut uring_default, batch),
            loop_nops(&mut poll, batch),
            raw_nops(&mut raw, batch),
        ];
        for (i, (rate, e)) in runs.into_iter().enumerate() {
            rates[i].push(rate);
            entries[i] += e;
        }
    }
    let names = [
        "loop io_uring (sq 4096)",
        "loop io_uring (sq 256, default)",
        "loop poll",
        "raw io-uring crate (sq 4096)",
    ];
    names
        .into_iter()
        .zip(rates)
        .zip(entries)
        .map(|((name, r), e)| {
            let figure = Figure {
                ops_per_s: median(r),
                entries_per_kop: 1000.0 * e as f64 / (ops * ROUNDS) as f64,
            };
            (name, figure)
        })
        .collect()
}

fn timer_rate(pending: usize) -> f64 {
    let mut lp = work::timer_loop(pending);
    let rates = (0..ROUNDS)
        .map(|_| {
            measure(TIMER_PAIRS_PER_MEASUREMENT, || {
                work::timer_insert_cancel(&mut lp, TIMER_PAIRS_PER_MEASUREMENT);
                0
            })
            .0
        })
        .collect();
    median(rates)
}

fn echo_figure(backend: Backend, connections: usize) -> Figure {
    let mut bench = EchoBench::new(backend, connections);
    bench.run(ROUND_TRIPS_PER_MEASUREMENT / 10); // warm-up
    let before = bench.lp.stats();
    let mut rates = Vec::new();
    for _ in 0..ROUNDS {
        let took: Duration = bench.run(ROUND_TRIPS_PER_MEASUREMENT);
        rates.push(ROUND_TRIPS_PER_MEASUREMENT as f64 / took.as_secs_f64());
    }
    let after = bench.lp.stats();
    let ops = (after.completions - before.completions) as f64;
    Figure {
        ops_per_s: median(rates),
        entries_per_kop: 1000.0 * (after.syscalls - before.syscalls) as f64 / ops,
    }
}

fn verdict(met: bool) -> &'static str {
    if met {
        "met"
    } else {
        "**missed**"
    }
}

/// Measures everything and returns the Markdown summary.
pub fn run() -> String {
    let mut md =
        String::from("## Runtime micro-benchmarks, one run (medians of 5 interleaved rounds)\n\n");
    md.push_str("| case | batch | ops/s | kernel entries per 1,000 ops |\n|---|---:|---:|---:|\n");
    let mut at_1024 = (0.0, 0.0);
    for batch in BATCH_SIZES {
        for (name, f) in nop_figures(batch) {
            let _ = writeln!(
                md,
                "| no-op, {name} | {batch} | {:.2} M | {:.2} |",
                f.ops_per_s / 1e6,
                f.entries_per_kop
            );
            if batch == 1024 && name.starts_with("loop io_uring (sq 4096)") {
                at_1024.0 = f.ops_per_s;
            }
            if batch == 1024 && name.starts_with("raw") {
                at_1024.1 = f.ops_per_s;
            }
        }
    }
    let timers_empty = timer_rate(0);
    let timers_deep = timer_rate(PENDING_TIMERS);
    let _ = writeln!(
        md,
        "| timer insert+cancel, no other timers | – | {:.2} M pairs | 0 |",
        timers_empty / 1e6
    );
    let _ = writeln!(
        md,
        "| timer insert+cancel, {PENDING_TIMERS} later timers pending (new one goes to the heap top) | – | {:.2} M pairs | 0 |",
        timers_deep / 1e6
    );
    for backend in [Backend::Uring, Backend::Poll] {
        for connections in [1, 16] {
            let f = echo_figure(backend, connections);
            let _ = writeln!(
                md,
                "| echo ping-pong {}B, same loop, {} ({connections} conns) | – | {:.0} k round trips | {:.2} (per 1,000 ops; 4 ops per round trip) |",
                crate::echo::MESSAGE_BYTES,
                backend,
                f.ops_per_s / 1e3,
                f.entries_per_kop
            );
        }
    }
    let ratio = at_1024.0 / at_1024.1;
    md.push_str("\n| target | figure | verdict |\n|---|---|---|\n");
    let _ = writeln!(md, "| issue 2: >= 10 M no-ops/s at batch 1,024 through the loop, callbacks included | {:.2} M/s | {} |", at_1024.0 / 1e6, verdict(at_1024.0 >= TARGET_NOPS_PER_S));
    let _ = writeln!(md, "| issue 8: loop >= 0.75x raw io-uring at batch 1,024, same run | {ratio:.2}x ({:.2} M/s raw) | {} |", at_1024.1 / 1e6, verdict(ratio >= TARGET_RAW_RATIO));
    let _ = writeln!(md, "| issue 2: >= 20 M timer insert+cancel/s | {:.2} M/s (empty), {:.2} M/s ({PENDING_TIMERS} pending) | {} |", timers_empty / 1e6, timers_deep / 1e6, verdict(timers_empty >= TARGET_TIMER_PAIRS_PER_S));
    md
}
