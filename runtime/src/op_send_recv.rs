//! Settling a `send_recv`: one op, two kernel requests (a send of the whole
//! buffer, then a receive), one completion to the user.
//!
//! Backends report a `send_recv` exactly once, when the kernel is done with
//! both of its buffers, as one of two things:
//! - the receive's result, flagged with [`SEND_DONE_KEY_FLAG`] on io_uring
//!   (the receive only runs after the whole send, so its completion proves
//!   the send finished; the poll backend advances `sent` itself instead);
//! - the send's result while `sent < out.len()`: the send failed, was
//!   canceled, or (io_uring) stopped short, and the receive never ran.
//!
//! A short send that made progress is resubmitted for the rest (send and
//! receive again), as `send_all` does; its error, if any, comes with the
//! next attempt.

use std::io;

use super::{
    Completion, OpError, OpId, OpKind, OpState, OpTable, RawCompletion, SendRecvBufs, Settled,
};

/// Set in [`RawCompletion::key`] when the completion is a `send_recv`'s
/// receive, whose arrival proves the whole send went out. Never set for any
/// other op; slab keys never reach this bit.
pub(crate) const SEND_DONE_KEY_FLAG: usize = 1 << (usize::BITS - 1);

impl OpTable {
    /// Settles `raw` if it belongs to a `send_recv`; `None` for other ops.
    pub(super) fn settle_send_recv(&mut self, raw: RawCompletion) -> Option<Settled> {
        let send_done = raw.key & SEND_DONE_KEY_FLAG != 0;
        let key = raw.key & !SEND_DONE_KEY_FLAG;
        let slot = self.slots.get_mut(key)?;
        let OpKind::SendRecv { bufs, .. } = &mut slot.kind else {
            return None;
        };
        let SendRecvBufs {
            out, sent, input, ..
        } = &mut **bufs;
        assert!(
            slot.state != OpState::Queued,
            "completion for an op never submitted"
        );
        let canceling = slot.state == OpState::Canceling;
        // See `cancel_won`: a cancel that came after the kernel finished a
        // half leaves that half's result alone (bytes received are kept).
        let canceled = canceling && super::settle::kernel_canceled(raw.res);
        if send_done {
            *sent = out.len();
        }
        let result = if *sent < out.len() {
            // The send's completion: the receive did not run.
            if raw.res > 0 {
                *sent += raw.res as usize;
                assert!(*sent <= out.len(), "kernel sent more than the buffer");
            }
            if raw.res > 0 && !canceling {
                slot.state = OpState::Queued;
                self.in_kernel -= 1;
                let id = OpId {
                    key: key as u32,
                    generation: slot.generation,
                };
                return Some(Settled::Resubmit(id));
            }
            Err(match raw.res {
                // Stopped by the cancel (before or after part of the send).
                _ if canceling => OpError::Canceled,
                0 => OpError::Io(io::Error::new(
                    io::ErrorKind::WriteZero,
                    "send made no progress",
                )),
                res => OpError::Io(io::Error::from_raw_os_error(-res)),
            })
        } else if canceled {
            Err(OpError::Canceled)
        } else if raw.res < 0 {
            Err(OpError::Io(io::Error::from_raw_os_error(-raw.res)))
        } else {
            let n = raw.res as usize;
            assert!(
                n <= input.capacity() - input.len(),
                "kernel reported more bytes than the buffer holds"
            );
            // SAFETY: the kernel (or the emulating syscall) wrote exactly `n`
            // bytes into `input`'s spare capacity starting at `input.len()`,
            // and we just checked they fit.
            unsafe { input.set_len(input.len() + n) };
            Ok(raw.res)
        };
        let slot = self.slots.remove(key);
        self.in_kernel -= 1;
        let completion = Completion {
            result,
            kind: slot.kind,
        };
        Some(Settled::Deliver(slot.callback, completion))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn in_kernel(table: &mut OpTable, out: &[u8]) -> usize {
        let kind = OpKind::SendRecv {
            fd: 3,
            bufs: Box::new(SendRecvBufs {
                out: out.to_vec(),
                sent: 0,
                input: Vec::with_capacity(8),
                arg: 0,
            }),
        };
        let key = table.insert(kind, None).key as usize;
        table.mark_in_kernel(key);
        key
    }

    fn delivered(settled: Settled) -> (Result<i32, OpError>, usize, Vec<u8>) {
        let Settled::Deliver(_, Completion { result, kind }) = settled else {
            panic!("expected a delivery")
        };
        let OpKind::SendRecv { bufs, .. } = kind else {
            panic!("not a send_recv")
        };
        (result, bufs.sent, bufs.input)
    }

    #[test]
    fn the_receives_completion_means_all_was_sent_and_fills_input() {
        let mut table = OpTable::new();
        let key = in_kernel(&mut table, b"ping");
        let raw = RawCompletion {
            key: key | SEND_DONE_KEY_FLAG,
            res: 0,
        };
        let (result, sent, input) = delivered(table.settle(raw));
        assert_eq!((result.expect("ok"), sent, input.len()), (0, 4, 0));
        assert_eq!((table.len(), table.in_kernel()), (0, 0));
    }

    #[test]
    fn a_short_send_is_resubmitted_for_the_rest_then_its_error_is_the_result() {
        let mut table = OpTable::new();
        let key = in_kernel(&mut table, b"ping");
        let Settled::Resubmit(id) = table.settle(RawCompletion { key, res: 3 }) else {
            panic!("a short send with progress goes again")
        };
        assert_eq!(table.state(key), OpState::Queued);
        assert_eq!(table.in_kernel(), 0);
        table.mark_in_kernel(id.key as usize);
        let raw = RawCompletion {
            key,
            res: -libc::EPIPE,
        };
        let (result, sent, input) = delivered(table.settle(raw));
        let err = result.expect_err("the send failed");
        assert_eq!(
            (err.raw_os_error(), sent, input.len()),
            (Some(libc::EPIPE), 3, 0)
        );
    }

    #[test]
    fn a_send_without_progress_fails_instead_of_spinning() {
        let mut table = OpTable::new();
        let key = in_kernel(&mut table, b"ping");
        let (result, sent, _) = delivered(table.settle(RawCompletion { key, res: 0 }));
        let Err(OpError::Io(e)) = result else {
            panic!("expected an I/O error")
        };
        assert_eq!((e.kind(), sent), (io::ErrorKind::WriteZero, 0));
    }

    #[test]
    fn a_cancel_decides_only_what_the_kernel_had_not_finished() {
        let mut table = OpTable::new();
        let send_half = in_kernel(&mut table, b"ping");
        let recv_half = in_kernel(&mut table, b"ping");
        let canceled_recv = in_kernel(&mut table, b"ping");
        for key in [send_half, recv_half, canceled_recv] {
            assert!(table.mark_canceling(key));
        }
        // A short send: canceled, not resubmitted, its progress recorded.
        let (result, sent, _) = delivered(table.settle(RawCompletion {
            key: send_half,
            res: 2,
        }));
        assert!(matches!(result, Err(OpError::Canceled)), "no resubmit");
        assert_eq!(sent, 2);
        // The receive ran before the cancel: its bytes are delivered.
        let raw = RawCompletion {
            key: recv_half | SEND_DONE_KEY_FLAG,
            res: 5,
        };
        let (result, sent, input) = delivered(table.settle(raw));
        assert_eq!(result.expect("received before the cancel"), 5);
        assert_eq!((sent, input.len()), (4, 5), "bytes received are kept");
        // The kernel canceled the receive.
        let raw = RawCompletion {
            key: canceled_recv | SEND_DONE_KEY_FLAG,
            res: -libc::ECANCELED,
        };
        let (result, sent, input) = delivered(table.settle(raw));
        assert!(matches!(result, Err(OpError::Canceled)));
        assert_eq!((sent, input.len()), (4, 0));
    }
}
