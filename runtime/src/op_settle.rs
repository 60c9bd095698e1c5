//! Settling: what a backend's completion does to its op. Done in two
//! steps so the loop can move a finished op once, from the table straight
//! into its callback: [`OpTable::verdict`] applies the completion to the
//! slot where it lies, [`OpTable::remove_done`] takes the op out.
//! [`OpTable::settle`] does both for the callers that want a [`Settled`].

use std::io;
use std::os::fd::RawFd;

use super::{Completion, OpError, OpId, OpKind, OpSlot, OpState, OpTable, RawCompletion};
use super::{Settled, SEND_DONE_KEY_FLAG};

/// What a completion does to its op ([`OpTable::verdict`]).
pub(crate) enum Verdict {
    /// The op is done: deliver `result`, and close `orphan_fd` if set (a
    /// canceled op produced an fd nobody owns).
    Done {
        result: Result<i32, OpError>,
        orphan_fd: Option<RawFd>,
    },
    /// A `send_all` advanced; the op goes back on the submission queue.
    Resubmit(OpId),
}

/// Whether a cancel requested while the op was in the kernel decides its
/// outcome, given the kernel's result `res`. It does when the kernel
/// canceled the op (`ECANCELED`, or `EINTR` for an op interrupted by the
/// cancel), and always for ops that produce an fd (accept, open, connect:
/// the late fd is closed, as documented). Otherwise the op finished before
/// the cancel reached it and its own result stands: the bytes of a receive
/// are delivered, not dropped from the stream, and a send that went out is
/// reported as sent, so a caller that retries does not send it twice.
/// io_uring itself does the same: a cancel that finds nothing to cancel
/// leaves the target's completion alone.
pub(crate) fn cancel_won(kind: &OpKind, res: i32) -> bool {
    let produces_fd = matches!(
        kind,
        OpKind::Accept { .. } | OpKind::Open { .. } | OpKind::Connect { .. }
    );
    produces_fd || kernel_canceled(res)
}

/// Whether the kernel's result says the op was canceled (or interrupted).
pub(crate) fn kernel_canceled(res: i32) -> bool {
    res == -libc::ECANCELED || res == -libc::EINTR
}

impl OpTable {
    /// Applies a backend completion: the kernel is done with the slot.
    pub(crate) fn settle(&mut self, raw: RawCompletion) -> Settled {
        let key = raw.key & !SEND_DONE_KEY_FLAG;
        let Some(verdict) = self.verdict(raw) else {
            return self
                .settle_send_recv(raw)
                .expect("the slot holds a send_recv");
        };
        match verdict {
            Verdict::Resubmit(id) => Settled::Resubmit(id),
            Verdict::Done { result, orphan_fd } => {
                let slot = self.remove_done(key);
                let completion = Completion {
                    result,
                    kind: slot.kind,
                };
                match orphan_fd {
                    Some(fd) => Settled::Reap(fd, slot.callback, completion),
                    None => Settled::Deliver(slot.callback, completion),
                }
            }
        }
    }

    /// The first half of [`OpTable::settle`], done in place: applies a
    /// completion to its slot (bytes received, a `send_all`'s progress) and
    /// says what follows, leaving a finished op in the table for
    /// [`OpTable::remove_done`]. Split so the loop moves each finished op
    /// once, from the table into its callback. `None` for a `send_recv`,
    /// which only `settle` handles.
    #[inline]
    pub(crate) fn verdict(&mut self, raw: RawCompletion) -> Option<Verdict> {
        let key = raw.key & !SEND_DONE_KEY_FLAG;
        let slot = self
            .slots
            .get_mut(key)
            .expect("completion for an op that is not in the table");
        assert!(
            slot.state != OpState::Queued,
            "completion for an op never submitted"
        );
        debug_assert!(
            key == raw.key || matches!(slot.kind, OpKind::SendRecv { .. }),
            "only a send_recv's receive is flagged"
        );
        let canceling = slot.state == OpState::Canceling;
        let canceled = canceling && cancel_won(&slot.kind, raw.res);
        let result = match &mut slot.kind {
            OpKind::SendRecv { .. } => return None,
            _ if canceled => Err(OpError::Canceled),
            _ if raw.res < 0 => Err(OpError::Io(io::Error::from_raw_os_error(-raw.res))),
            OpKind::Send {
                buf,
                offset,
                all: true,
                ..
            } => {
                *offset += raw.res as usize;
                debug_assert!(*offset <= buf.len());
                // A cancel that came too late for this part still stops
                // the rest: the caller learns how much went out.
                if raw.res > 0 && *offset < buf.len() && !canceling {
                    slot.state = OpState::Queued;
                    self.in_kernel -= 1;
                    return Some(Verdict::Resubmit(OpId {
                        key: key as u32,
                        generation: slot.generation,
                    }));
                }
                // send_all reports every byte it sent across its resubmissions.
                Ok(*offset as i32)
            }
            kind => {
                kind.commit_read(raw.res);
                Ok(raw.res)
            }
        };
        // Only a failed or canceled op can leave an fd nobody owns.
        let orphan_fd = match result {
            Ok(_) => None,
            Err(_) => (slot.kind.result_fd(raw.res))
                .filter(|_| canceled || matches!(slot.kind, OpKind::Connect { .. })),
        };
        Some(Verdict::Done { result, orphan_fd })
    }

    /// Takes out an op [`OpTable::verdict`] found done.
    #[inline]
    pub(crate) fn remove_done(&mut self, key: usize) -> OpSlot {
        let slot = self.slots.remove(key);
        debug_assert_ne!(slot.state, OpState::Queued);
        self.in_kernel -= 1;
        slot
    }
}
