//! `send_recv` on io_uring: a SEND (`MSG_WAITALL`, so the kernel itself
//! retries the short sends of a stream socket) linked to a RECV, pushed as
//! one pair so the link cannot be split by a full SQ.
//!
//! Where the kernel has `IORING_FEAT_CQE_SKIP`, the send also carries
//! `IOSQE_CQE_SKIP_SUCCESS`, and the pair posts exactly one CQE:
//! - the send finished: its CQE is skipped, and the receive's CQE, which the
//!   link lets run only after the send, proves both buffers are free;
//! - the send failed, stopped short or was canceled: its CQE is posted, and
//!   the kernel skips the CQE of the receive its failure cancels (a failed
//!   skip-success request marks its link `REQ_F_SKIP_LINK_CQES`).
//!
//! Without the feature both CQEs always come, and the op completes at the
//! second; [`LinkedOps`] pairs them up. Either way the op table hears of the
//! op once, when the kernel is done with both buffers.
//!
//! Canceling is the subtle part. Once the send completes, the kernel issues
//! the receive from task work, which runs only inside a later
//! `io_uring_enter` (DEFER_TASKRUN), a bounded number of items at a time.
//! An async cancel never finds a request waiting there. So a canceled
//! `send_recv` gets cancels for both of its requests at every wait until its
//! CQE arrives: each round either finds the request in flight or leaves it
//! to be issued during that enter, for the next round to find. Each round's
//! cancel CQEs end that enter's wait at once, so the rounds do not sleep.
//!
//! A close of an fd with `send_recv`s in flight is held back until they are
//! done (and they are canceled): the cancel-by-fd in front of every close
//! could miss a receive in task work, and a receive issued after the close
//! looks its fd number up anew, which may by then name another socket.

use std::os::fd::RawFd;

use io_uring::{opcode, squeue, types};

use super::{token, UringDriver, CANCEL_TAG};
use crate::op::{OpId, OpKind, RawCompletion, SendRecvBufs, SEND_DONE_KEY_FLAG};

/// XORed into an op's token to name the receive of its linked pair; the
/// send carries the plain token. Flips the generation's top bit, so the
/// receive's `user_data` never equals a live op's token (that op would need
/// this slab key, which the `send_recv` holds).
const RECV_PART_BIT: u64 = 1 << 63;

/// A `send_recv` the kernel holds.
struct LinkedOp {
    send_token: u64,
    fd: RawFd,
    /// Bytes the send was asked for: it finished if its result says so.
    send_len: u32,
    /// Without CQE skipping: the results that arrived so far.
    send_res: Option<i32>,
    recv_res: Option<i32>,
    canceling: bool,
}

/// Bookkeeping of the linked pairs in flight, by op slab key.
pub(super) struct LinkedOps {
    /// `IOSQE_CQE_SKIP_SUCCESS` goes on the send.
    pub(super) cqe_skip: bool,
    ops: Vec<Option<LinkedOp>>,
    /// How many of `ops` are `Some`.
    in_flight: usize,
    /// Linked pairs in flight per fd number.
    per_fd: Vec<u32>,
    /// Keys of canceled pairs whose CQE has not come yet.
    canceling: Vec<usize>,
    /// Position in `canceling` of this wait's round (a full SQ splits it).
    cancel_cursor: usize,
    /// Closes waiting for the pairs on their fd.
    held_closes: Vec<(RawFd, squeue::Entry)>,
}

impl LinkedOps {
    pub(super) fn new(cqe_skip: bool) -> LinkedOps {
        LinkedOps {
            cqe_skip,
            ops: Vec::new(),
            in_flight: 0,
            per_fd: Vec::new(),
            canceling: Vec::new(),
            cancel_cursor: 0,
            held_closes: Vec::new(),
        }
    }

    /// True if no pair is in flight: no CQE can be a pair's.
    pub(super) fn is_empty(&self) -> bool {
        self.in_flight == 0
    }

    fn in_flight_on(&self, fd: RawFd) -> bool {
        usize::try_from(fd)
            .ok()
            .and_then(|i| self.per_fd.get(i))
            .is_some_and(|&n| n > 0)
    }

    fn insert(&mut self, key: usize, op: LinkedOp) {
        if self.ops.len() <= key {
            self.ops.resize_with(key + 1, || None);
        }
        debug_assert!(self.ops[key].is_none(), "one linked pair per op");
        if let Ok(i) = usize::try_from(op.fd) {
            if self.per_fd.len() <= i {
                self.per_fd.resize(i + 1, 0);
            }
            self.per_fd[i] += 1;
        }
        self.ops[key] = Some(op);
        self.in_flight += 1;
    }

    fn remove(&mut self, key: usize) -> LinkedOp {
        let op = self.ops[key].take().expect("a linked pair in flight");
        self.in_flight -= 1;
        if let Some(n) = usize::try_from(op.fd)
            .ok()
            .and_then(|i| self.per_fd.get_mut(i))
        {
            *n -= 1;
        }
        if op.canceling {
            if let Some(pos) = self.canceling.iter().position(|&k| k == key) {
                self.canceling.swap_remove(pos);
            }
            self.cancel_cursor = 0;
        }
        op
    }

    /// Starts canceling the pair of `key`, if it is in flight.
    pub(super) fn cancel(&mut self, key: usize) {
        if let Some(Some(op)) = self.ops.get_mut(key) {
            if !op.canceling {
                op.canceling = true;
                self.canceling.push(key);
            }
        }
    }

    /// Routes a CQE whose `user_data` names op slab `key`. Returns `None` if
    /// it is not a linked pair's; otherwise the op's completion once the
    /// kernel is done with both requests.
    pub(super) fn on_cqe(
        &mut self,
        key: usize,
        user_data: u64,
        res: i32,
    ) -> Option<Option<RawCompletion>> {
        let op = self.ops.get_mut(key)?.as_mut()?;
        let is_send = user_data == op.send_token;
        debug_assert!(
            is_send || user_data == op.send_token ^ RECV_PART_BIT,
            "a CQE for another generation of a linked op's key"
        );
        if is_send {
            op.send_res = Some(res);
        } else {
            op.recv_res = Some(res);
        }
        let done = match (self.cqe_skip, op.send_res, op.recv_res) {
            // One CQE in all: whichever came is the only one.
            (true, Some(res), _) => Some(RawCompletion { key, res }),
            (true, None, Some(res)) => Some(RawCompletion {
                key: key | SEND_DONE_KEY_FLAG,
                res,
            }),
            (false, Some(sent), Some(received)) if sent >= 0 && sent as u32 == op.send_len => {
                Some(RawCompletion {
                    key: key | SEND_DONE_KEY_FLAG,
                    res: received,
                })
            }
            // The receive was canceled by the send's failure.
            (false, Some(sent), Some(_)) => Some(RawCompletion { key, res: sent }),
            _ => None,
        };
        if done.is_some() {
            self.remove(key);
        }
        Some(done)
    }
}

impl UringDriver {
    /// Pushes a `send_recv`'s linked pair (`send` is its SEND, built by
    /// `build_sqe`). Both go in or neither does.
    pub(super) fn push_send_recv(
        &mut self,
        id: OpId,
        send: squeue::Entry,
        kind: &mut OpKind,
    ) -> bool {
        let OpKind::SendRecv { fd, bufs } = kind else {
            unreachable!("push_send_recv takes a send_recv")
        };
        let SendRecvBufs {
            out, sent, input, ..
        } = &mut **bufs;
        let send_len = (out.len() - *sent) as u32;
        let mut flags = squeue::Flags::IO_LINK;
        if self.linked.cqe_skip {
            flags |= squeue::Flags::SKIP_SUCCESS;
        }
        let send = send.flags(flags);
        let spare = input.spare_capacity_mut();
        let len = spare.len().min(u32::MAX as usize) as u32;
        let send_token = token(id);
        let recv = opcode::Recv::new(types::Fd(*fd), spare.as_mut_ptr() as *mut u8, len)
            .build()
            .user_data(send_token ^ RECV_PART_BIT);
        // SAFETY: both point into the op's `out` and `input`, heap memory the
        // op table keeps until this pair's last CQE (see `LinkedOps::on_cqe`).
        let pushed = unsafe { self.push_entries(&[send, recv]) };
        if pushed {
            let op = LinkedOp {
                send_token,
                fd: *fd,
                send_len,
                send_res: None,
                recv_res: None,
                canceling: false,
            };
            self.linked.insert(id.key as usize, op);
        }
        pushed
    }

    /// A close of an fd with linked pairs in flight: cancel them and hold
    /// the close until they are back (see the module docs). False if the fd
    /// has none, and the close may go now.
    pub(super) fn hold_close(&mut self, fd: RawFd, close: &squeue::Entry) -> bool {
        if !self.linked.in_flight_on(fd) {
            return false;
        }
        let keys: Vec<usize> = (self.linked.ops.iter().enumerate())
            .filter(|(_, op)| op.as_ref().is_some_and(|op| op.fd == fd))
            .map(|(key, _)| key)
            .collect();
        for key in keys {
            self.linked.cancel(key);
        }
        self.linked.held_closes.push((fd, close.clone()));
        true
    }

    /// Pushes this wait's round of cancels for canceled pairs, and the held
    /// closes whose fd has no pair left. False if the SQ filled first.
    pub(super) fn push_linked_internal(&mut self) -> bool {
        while let Some(&key) = self.linked.canceling.get(self.linked.cancel_cursor) {
            let send_token = match &self.linked.ops[key] {
                Some(op) => op.send_token,
                None => unreachable!("canceling lists only pairs in flight"),
            };
            let cancels = [send_token, send_token ^ RECV_PART_BIT].map(|target| {
                opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(CANCEL_TAG)
            });
            // SAFETY: cancels point at no memory.
            if unsafe { !self.push_entries(&cancels) } {
                return false;
            }
            self.linked.cancel_cursor += 1;
        }
        self.linked.cancel_cursor = 0;
        let mut i = 0;
        while i < self.linked.held_closes.len() {
            let (fd, close) = self.linked.held_closes[i].clone();
            if self.linked.in_flight_on(fd) {
                i += 1;
                continue;
            }
            if !self.push_close(fd, &close) {
                return false;
            }
            self.linked.held_closes.swap_remove(i);
        }
        true
    }

    /// Entries `push_linked_internal` may still have to push this round.
    pub(super) fn linked_internal_len(&self) -> usize {
        2 * self.linked.canceling.len() + self.linked.held_closes.len()
    }
}

#[cfg(test)]
#[path = "uring_linked_tests.rs"]
mod tests;
