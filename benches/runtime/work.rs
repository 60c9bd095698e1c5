//! The measured work, shared by the criterion benches and the one-run summary.

use std::time::Duration;

use ringvisor::{Backend, Loop};

/// Batch sizes of the no-op benchmarks.
pub const BATCH_SIZES: [usize; 5] = [1, 16, 256, 1024, 4096];
/// SQ entries of the loop and of the raw ring in the no-op benchmarks, so a
/// batch of 4,096 fits in one submission on both.
pub const SQ_ENTRIES: u32 = 4096;
/// Timers left pending under the insert+cancel benchmark's "deep heap" case.
pub const PENDING_TIMERS: usize = 10_000;
/// Insert+cancel pairs per measured iteration.
pub const TIMER_PAIRS_PER_ITER: usize = 1024;

/// Completions counted by the no-op callbacks, kept in the loop.
pub struct Completed(pub u64);

/// A loop for the no-op benchmarks.
pub fn nop_loop(backend: Backend, sq_entries: u32) -> Loop {
    let mut lp = Loop::builder()
        .backend(backend)
        .sq_entries(sq_entries)
        .build()
        .expect("loop");
    lp.insert_extension(Completed(0));
    lp
}

/// Submits `batch` no-ops, each with a callback that counts it, and runs the
/// loop until all have completed.
pub fn nop_batch(lp: &mut Loop, batch: usize) {
    let before = completed(lp);
    for _ in 0..batch {
        lp.nop(|lp, res| {
            debug_assert!(res.is_ok());
            if let Some(c) = lp.extension_mut::<Completed>() {
                c.0 += 1;
            }
        });
    }
    lp.run().expect("run");
    debug_assert_eq!(completed(lp) - before, batch as u64);
}

fn completed(lp: &Loop) -> u64 {
    lp.extension::<Completed>().map_or(0, |c| c.0)
}

/// A loop with `pending` far-off timers already set.
pub fn timer_loop(pending: usize) -> Loop {
    let mut lp = Loop::builder()
        .backend(Backend::Auto)
        .build()
        .expect("loop");
    for i in 0..pending {
        lp.timer(Duration::from_secs(3600 + i as u64), |_| {});
    }
    lp
}

/// Inserts and cancels `pairs` timers, one at a time, from inside a
/// callback: where servers set their timers, and where the loop's clock is
/// already read for the tick (outside callbacks `Loop::timer` reads the clock
/// itself, which is not the path to measure).
pub fn timer_insert_cancel(lp: &mut Loop, pairs: usize) {
    lp.defer(move |lp| {
        for i in 0..pairs {
            let id = lp.timer(Duration::from_millis(1 + (i as u64 & 1023)), |_| {});
            let canceled = lp.cancel_timer(id);
            debug_assert!(canceled);
        }
    });
    lp.run_nowait().expect("run");
}
