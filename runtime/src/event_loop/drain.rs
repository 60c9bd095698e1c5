//! Dropping a loop: every op is canceled and the kernel is given (bounded)
//! time to hand each one back, so no memory it may still write is freed.
//! Callbacks do not run; fds produced late are closed.

use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use super::{Loop, DROP_DRAIN_TIMEOUT};
use crate::backend::Driver;
use crate::op::{OpState, OpTable, RawCompletion, Settled};

impl Loop {
    /// Cancels every op and waits (bounded) for the kernel to return them.
    /// Callbacks do not run; fds produced late are closed.
    fn drain_for_drop(&mut self) {
        self.submit_queue.clear();
        // Completions a panicking callback left unsettled: the kernel is done
        // with these ops already.
        let left = self
            .completed
            .split_off(self.completed_next.min(self.completed.len()));
        for raw in left {
            settle_for_drop(&mut self.ops, raw);
        }
        for key in self.ops.keys() {
            match self.ops.state(key) {
                OpState::Queued => {
                    if let Settled::Reap(fd, ..) = self.ops.cancel_queued(key) {
                        close_now(fd);
                    }
                }
                OpState::InKernel => {
                    self.ops.mark_canceling(key);
                    let id = self.ops.id_of(key).expect("live");
                    let kind = &self.ops.slot_mut(key).expect("live").kind;
                    self.driver
                        .cancel(id, kind, &mut self.raw_completions, &mut self.stats);
                }
                OpState::Canceling => {}
            }
        }
        let start = Instant::now();
        while self.ops.in_kernel() > 0 && start.elapsed() < DROP_DRAIN_TIMEOUT {
            let mut done = std::mem::take(&mut self.raw_completions);
            let result = self.driver.wait(
                Some(Duration::from_millis(100)),
                &mut self.ops,
                &mut done,
                &mut self.stats,
            );
            while let Some(raw) = self.driver.next_completion() {
                done.push(raw);
            }
            for raw in done.drain(..) {
                settle_for_drop(&mut self.ops, raw);
            }
            self.raw_completions = done;
            if let Err(e) = result {
                tracing::warn!(error = %e, "backend wait failed while draining a dropped loop");
                break;
            }
        }
        if self.ops.in_kernel() > 0 {
            tracing::error!(
                ops = self.ops.in_kernel(),
                "kernel still holds ops of a dropped loop; leaking their memory"
            );
            std::mem::forget(std::mem::replace(&mut self.ops, OpTable::new()));
        }
    }
}

/// Settles a completion without running its callback.
fn settle_for_drop(ops: &mut OpTable, raw: RawCompletion) {
    match ops.settle(raw) {
        Settled::Reap(fd, ..) => close_now(fd),
        Settled::Resubmit(id) => {
            // A send_all cut short: nobody waits for the rest.
            let _ = ops.cancel_queued(id.key as usize);
        }
        Settled::Deliver(..) => {}
    }
}

/// Closes an fd outside the ring: only while dropping the loop.
fn close_now(fd: RawFd) {
    // SAFETY: `fd` was produced for an op nobody will ever see complete, so
    // this loop is its only owner.
    unsafe {
        libc::close(fd);
    }
}

impl Drop for Loop {
    fn drop(&mut self) {
        self.shared.close();
        if self.ops.len() > 0 {
            self.drain_for_drop();
        }
        // Ready completions, deferred work and extensions hold user callbacks
        // and state: drop them here, while the ops they may reference are
        // still accounted for.
        self.ready.clear();
        self.deferred.clear();
        self.extensions.clear();
    }
}
