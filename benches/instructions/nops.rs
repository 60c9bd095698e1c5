//! User-space instructions per no-op through the loop and through the raw
//! io-uring crate, for callgrind (repeatable where CPU time is not):
//!
//! ```text
//! cargo bench --bench nop_instructions --no-run
//! valgrind --tool=callgrind --toggle-collect='*measured*' \
//!     target/release/deps/nop_instructions-<hash> loop 1024 64
//! ```
//! Arguments: `loop`, `poll` or `raw`; the batch size; how many batches are
//! measured (after as many unmeasured for warm-up). `ratio` instead times
//! loop and raw batches alternately, without callgrind. Divide callgrind's total
//! by batch x batches; `benches/instructions/nops.sh` does it all.

use ringvisor::Backend;

#[path = "../runtime/raw_uring.rs"]
mod raw_uring;
#[path = "../runtime/work.rs"]
#[allow(dead_code)]
mod work;

/// The measured region: callgrind collects only inside it.
#[inline(never)]
fn measured(batches: usize, mut one_batch: impl FnMut()) {
    for _ in 0..batches {
        one_batch();
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.iter().any(|a| a == "--bench") || args.len() < 3 {
        // `cargo bench` runs every bench: nothing to do without arguments.
        return;
    }
    let batch: usize = args[1].parse().expect("batch size");
    let batches: usize = args[2].parse().expect("batch count");
    match args[0].as_str() {
        "ratio" => ratio(batch, batches),
        "raw" => {
            let mut ring = raw_uring::RawRing::new(work::SQ_ENTRIES);
            for _ in 0..batches {
                ring.nop_batch(batch);
            }
            measured(batches, || {
                ring.nop_batch(batch);
            });
        }
        which => {
            let backend = match which {
                "poll" => Backend::Poll,
                _ => Backend::Uring,
            };
            let mut lp = work::nop_loop(backend, work::SQ_ENTRIES);
            // Warm-up (slab and queues grown) outside the measured region.
            for _ in 0..batches {
                work::nop_batch(&mut lp, batch);
            }
            measured(batches, || work::nop_batch(&mut lp, batch));
        }
    }
}

/// `ratio`: loop and raw batches alternately, each timed; prints the median
/// ns per no-op of each and their ratio (raw over loop), which on a noisy
/// machine holds steadier than two separate runs.
fn ratio(batch: usize, batches: usize) {
    use std::time::Instant;
    let mut lp = work::nop_loop(Backend::Uring, work::SQ_ENTRIES);
    let mut ring = raw_uring::RawRing::new(work::SQ_ENTRIES);
    let (mut ours, mut raw) = (Vec::new(), Vec::new());
    for round in 0..batches * 2 {
        let start = Instant::now();
        work::nop_batch(&mut lp, batch);
        let loop_ns = start.elapsed().as_nanos() as f64;
        let start = Instant::now();
        ring.nop_batch(batch);
        let raw_ns = start.elapsed().as_nanos() as f64;
        if round >= batches / 4 {
            ours.push(loop_ns / batch as f64);
            raw.push(raw_ns / batch as f64);
        }
    }
    let median = |v: &mut Vec<f64>| {
        v.sort_by(f64::total_cmp);
        v[v.len() / 2]
    };
    let (o, r) = (median(&mut ours), median(&mut raw));
    println!(
        "batch {batch}: loop {o:.1} ns/op, raw {r:.1} ns/op, loop/raw rate {:.3}",
        r / o
    );
}
