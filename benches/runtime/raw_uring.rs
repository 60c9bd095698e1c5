//! The raw io-uring crate doing the loop's no-op batches without callbacks or
//! an op table: the floor the loop's own overhead is measured against. The
//! ring is set up like the loop's (same setup flags where the kernel has them,
//! same SQ size, CQ four times the SQ).

use io_uring::{opcode, IoUring};

/// A ring and the number of `io_uring_enter` calls made on it.
pub struct RawRing {
    ring: IoUring,
    /// Kernel entries so far.
    pub enters: u64,
}

impl RawRing {
    /// A ring with `sq_entries`, trying the loop's setup flags first.
    pub fn new(sq_entries: u32) -> RawRing {
        let build = |flags: bool| {
            let mut builder = IoUring::builder();
            builder.setup_cqsize(sq_entries * 4).setup_submit_all();
            if flags {
                builder
                    .setup_coop_taskrun()
                    .setup_single_issuer()
                    .setup_defer_taskrun();
            }
            builder.build(sq_entries)
        };
        let ring = build(true)
            .or_else(|_| build(false))
            .expect("io_uring is available for the raw comparison");
        RawRing { ring, enters: 0 }
    }

    /// Submits `batch` no-ops and reaps their completions; returns how many
    /// completed. `batch` must fit in the SQ.
    pub fn nop_batch(&mut self, batch: usize) -> usize {
        {
            let mut sq = self.ring.submission();
            for i in 0..batch {
                let entry = opcode::Nop::new().build().user_data(i as u64);
                // SAFETY: a no-op carries no pointers.
                unsafe { sq.push(&entry).expect("batch fits in the SQ") };
            }
        }
        let mut completed = 0;
        while completed < batch {
            self.enters += 1;
            self.ring
                .submit_and_wait(batch - completed)
                .expect("io_uring_enter");
            for cqe in self.ring.completion() {
                debug_assert!(cqe.result() >= 0);
                std::hint::black_box(cqe.user_data());
                completed += 1;
            }
        }
        completed
    }
}
