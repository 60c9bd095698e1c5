//! Delivering completions: settling each op the backend reported and
//! running its callback, in the order the backend reported them (on
//! io_uring, read straight from the CQ, not copied out first). An op
//! leaves the table only as its callback is about to run, so until then a
//! cancel still finds it (and it completes `Canceled`, exactly once).

use std::io;

use super::{Loop, Ready};
use crate::backend::Driver;
use crate::op::{Completion, OpId, OpKind, Settled, Verdict};

impl Loop {
    /// Accounts for a settled op and queues its delivery, if any.
    pub(super) fn settled(&mut self, settled: Settled) {
        if let Some(ready) = self.accept_settled(settled) {
            self.ready.push_back(ready);
        }
    }

    /// Accounts for a settled op: a reap queues its close, a resubmit the
    /// rest of its send. Returns what to deliver, if anything.
    fn accept_settled(&mut self, settled: Settled) -> Option<Ready> {
        match settled {
            Settled::Deliver(callback, completion) => {
                self.stats.completions += 1;
                Some((callback, completion))
            }
            Settled::Resubmit(id) => self.resubmit(id),
            Settled::Reap(fd, callback, completion) => {
                tracing::debug!(
                    fd,
                    op = completion.kind.name(),
                    "reaping fd of a canceled op"
                );
                self.submit_detached(OpKind::Close { fd });
                self.stats.completions += 1;
                Some((callback, completion))
            }
        }
    }

    /// Queues the rest of a `send_all`, unless its fd was closed since it was
    /// last handed to the backend: the number may already name another socket,
    /// so the op ends as the close ended the others on that fd.
    fn resubmit(&mut self, id: OpId) -> Option<Ready> {
        let key = id.key as usize;
        let fd = self
            .ops
            .slot_mut(key)
            .and_then(|slot| slot.kind.socket_fd());
        let closed = fd.is_some_and(|fd| self.recently_closed.iter().any(|&(c, _)| c == fd));
        if !closed {
            self.submit_queue.push(id);
            return None;
        }
        match self.ops.cancel_queued(key) {
            Settled::Deliver(callback, completion) => {
                let completion = Completion {
                    result: Err(crate::OpError::Io(io::Error::from_raw_os_error(
                        libc::ECANCELED,
                    ))),
                    kind: completion.kind,
                };
                self.accept_settled(Settled::Deliver(callback, completion))
            }
            other => self.accept_settled(other),
        }
    }

    /// Settles this tick's completions in turn, running each callback as its
    /// op leaves the table: a completion is copied once, from the table to
    /// the callback. Until its turn an op stays in the table as in flight,
    /// so a cancel from an earlier callback still gets `Canceled` delivered
    /// (the kernel's cancel finds nothing, which is harmless).
    pub(super) fn run_completions(&mut self) {
        loop {
            // Completions reported outside the wait first, then the
            // kernel's, taken from its queue one at a time.
            let raw = match self.completed.get(self.completed_next) {
                Some(&raw) => {
                    self.completed_next += 1;
                    raw
                }
                None => match self.driver.next_completion() {
                    Some(raw) => raw,
                    None => break,
                },
            };
            let ready = match self.ops.verdict(raw) {
                Some(Verdict::Done {
                    result,
                    orphan_fd: None,
                }) => {
                    let slot = self.ops.remove_done(raw.key);
                    self.stats.completions += 1;
                    if let Some(callback) = slot.callback {
                        callback(
                            self,
                            Completion {
                                result,
                                kind: slot.kind,
                            },
                        );
                    }
                    continue;
                }
                // The rare cases, run in turn all the same: completions of
                // one tick are delivered in the order they were reported.
                Some(Verdict::Resubmit(id)) => self.resubmit(id),
                Some(Verdict::Done {
                    result,
                    orphan_fd: Some(fd),
                }) => {
                    let slot = self.ops.remove_done(raw.key);
                    let completion = Completion {
                        result,
                        kind: slot.kind,
                    };
                    self.accept_settled(Settled::Reap(fd, slot.callback, completion))
                }
                None => {
                    let settled = self.ops.settle(raw);
                    self.accept_settled(settled)
                }
            };
            if let Some((Some(callback), completion)) = ready {
                callback(self, completion);
            }
        }
        self.completed.clear();
        self.completed_next = 0;
    }

    /// Runs the callbacks ready at the start of this step; those they make
    /// ready run next tick.
    pub(super) fn run_ready(&mut self) {
        let count = self.ready.len();
        for _ in 0..count {
            let (callback, completion) = self.ready.pop_front().expect("counted");
            match callback {
                Some(callback) => callback(self, completion),
                None => drop(completion),
            }
        }
    }
}
