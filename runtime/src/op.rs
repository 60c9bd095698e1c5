//! The op table: every operation from submission to completion.
//!
//! One lifecycle for every backend:
//!
//! ```text
//!   Queued ──push──▶ InKernel ──completion──▶ (removed as its callback runs)
//!     │                  │
//!     │ cancel           │ cancel
//!     ▼                  ▼
//!   (removed, Canceled)  Canceling ──completion──▶ (removed, Canceled, late fd reaped)
//! ```
//!
//! A cancel is a request, not a verdict: a `Canceling` op whose completion
//! shows the kernel finished it first (not `ECANCELED`) is delivered with
//! its own result, so no received byte is dropped and no sent byte is
//! reported unsent; only ops that produce an fd always end `Canceled`
//! (see `settle::cancel_won`).
//!
//! `push` happens at submit where the backend takes ops then (io_uring: an
//! SQE in the ring, read by the kernel at the next enter; a cancel before
//! that withdraws it, and the op completes `Canceled` without the kernel),
//! else at the next tick.
//!
//! Invariants:
//! - A slot holds everything the kernel may read or write for its op (buffers,
//!   iovecs, sockaddrs, paths). All of it lives behind a heap pointer (`Vec`, `Box`,
//!   `CString`), so moving the slot when the slab grows never moves memory the
//!   kernel was given.
//! - A slot leaves the table only when its op is done with the kernel: after the
//!   backend reported its completion, or while it is still `Queued` (never handed
//!   to any backend).
//! - Every op is delivered exactly once: its callback runs once, with `Ok`, `Err`
//!   or `Canceled`, and gets its buffers back.

use std::ffi::CString;
use std::io;
use std::net::SocketAddr;
use std::os::fd::RawFd;

use crate::event_loop::Loop;

/// Identifies an operation so it can be canceled with [`Loop::cancel`].
///
/// ```
/// # use ringvisor_runtime::Loop;
/// let mut lp = Loop::new().unwrap();
/// let op = lp.nop(|_lp, res| assert!(res.is_err()));
/// assert!(lp.cancel(op));
/// lp.run().unwrap();
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct OpId {
    pub(crate) key: u32,
    pub(crate) generation: u32,
}

/// Why an op did not succeed.
#[derive(Debug)]
pub enum OpError {
    /// The op was canceled with [`Loop::cancel`] (or the loop was dropped).
    Canceled,
    /// The kernel (or the emulating syscall) reported an error.
    Io(io::Error),
}

impl OpError {
    /// True if the op was canceled.
    pub fn is_canceled(&self) -> bool {
        matches!(self, OpError::Canceled)
    }

    /// The errno, if this is an I/O error carrying one.
    pub fn raw_os_error(&self) -> Option<i32> {
        match self {
            OpError::Canceled => None,
            OpError::Io(e) => e.raw_os_error(),
        }
    }
}

impl std::fmt::Display for OpError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            OpError::Canceled => write!(f, "operation canceled"),
            OpError::Io(e) => write!(f, "{e}"),
        }
    }
}

impl std::error::Error for OpError {}

impl From<OpError> for io::Error {
    fn from(e: OpError) -> io::Error {
        match e {
            OpError::Canceled => io::Error::from_raw_os_error(libc::ECANCELED),
            OpError::Io(e) => e,
        }
    }
}

/// The result every op callback receives.
pub type OpResult<T> = Result<T, OpError>;

/// A socket address in the form the kernel reads and writes, boxed so its
/// address is stable while an op is in flight.
pub(crate) struct SockAddrBuf {
    pub(crate) storage: libc::sockaddr_storage,
    pub(crate) len: libc::socklen_t,
}

impl SockAddrBuf {
    pub(crate) fn empty() -> Box<SockAddrBuf> {
        Box::new(SockAddrBuf {
            // SAFETY: sockaddr_storage is plain old data; all-zero is a valid value.
            storage: unsafe { std::mem::zeroed() },
            len: std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t,
        })
    }

    pub(crate) fn from_addr(addr: SocketAddr) -> Box<SockAddrBuf> {
        let mut buf = SockAddrBuf::empty();
        let storage = &mut buf.storage as *mut libc::sockaddr_storage;
        match addr {
            SocketAddr::V4(v4) => {
                // SAFETY: sockaddr_storage is large and aligned enough for any
                // sockaddr type; we write a complete sockaddr_in into it.
                let sin = unsafe { &mut *(storage as *mut libc::sockaddr_in) };
                sin.sin_family = libc::AF_INET as libc::sa_family_t;
                sin.sin_port = v4.port().to_be();
                sin.sin_addr = libc::in_addr {
                    s_addr: u32::from(*v4.ip()).to_be(),
                };
                buf.len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            }
            SocketAddr::V6(v6) => {
                // SAFETY: as above, for sockaddr_in6.
                let sin6 = unsafe { &mut *(storage as *mut libc::sockaddr_in6) };
                sin6.sin6_family = libc::AF_INET6 as libc::sa_family_t;
                sin6.sin6_port = v6.port().to_be();
                sin6.sin6_flowinfo = v6.flowinfo();
                sin6.sin6_addr = libc::in6_addr {
                    s6_addr: v6.ip().octets(),
                };
                sin6.sin6_scope_id = v6.scope_id();
                buf.len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            }
        }
        buf
    }

    pub(crate) fn to_socket_addr(&self) -> Option<SocketAddr> {
        let storage = &self.storage as *const libc::sockaddr_storage;
        match self.storage.ss_family as i32 {
            libc::AF_INET => {
                // SAFETY: the family says the storage holds a sockaddr_in.
                let sin = unsafe { &*(storage as *const libc::sockaddr_in) };
                let ip = std::net::Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr));
                Some(SocketAddr::from((ip, u16::from_be(sin.sin_port))))
            }
            libc::AF_INET6 => {
                // SAFETY: the family says the storage holds a sockaddr_in6.
                let sin6 = unsafe { &*(storage as *const libc::sockaddr_in6) };
                let ip = std::net::Ipv6Addr::from(sin6.sin6_addr.s6_addr);
                Some(SocketAddr::V6(std::net::SocketAddrV6::new(
                    ip,
                    u16::from_be(sin6.sin6_port),
                    sin6.sin6_flowinfo,
                    sin6.sin6_scope_id,
                )))
            }
            _ => None,
        }
    }
}

/// What an op is, with everything the kernel may touch while it is in flight.
pub(crate) enum OpKind {
    Nop,
    Accept {
        fd: RawFd,
        addr: Box<SockAddrBuf>,
    },
    /// `fd` is a socket the op created and owns until it succeeds.
    Connect {
        fd: RawFd,
        addr: Box<SockAddrBuf>,
        /// Poll backend: the nonblocking connect was issued, now waiting for
        /// writability to read `SO_ERROR`.
        in_progress: bool,
    },
    /// Receives into the spare capacity of `buf` (after `buf.len()`).
    Recv {
        fd: RawFd,
        buf: Vec<u8>,
    },
    /// Sends `buf[offset..]`; with `all`, partial sends are resubmitted.
    Send {
        fd: RawFd,
        buf: Vec<u8>,
        offset: usize,
        all: bool,
    },
    /// Sends `out[sent..]`, all of it, then receives into the spare capacity
    /// of `input` ([`crate::Loop::send_recv`]). The receive runs only once the
    /// whole send is done. On io_uring the two go out as one linked pair of
    /// SQEs; the poll backend runs them in turn. The buffers are boxed:
    /// inline, they would make every op's slot 24 bytes bigger.
    SendRecv {
        fd: RawFd,
        bufs: Box<SendRecvBufs>,
    },
    Shutdown {
        fd: RawFd,
        how: i32,
    },
    Close {
        fd: RawFd,
    },
    Open {
        path: CString,
        flags: i32,
        mode: u32,
    },
    /// Reads into the spare capacity of `buf` at file `offset`.
    Read {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    Write {
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
    },
    /// Boxed for the same reason as `SendRecv`.
    Writev {
        fd: RawFd,
        vecs: Box<WritevBufs>,
        offset: u64,
    },
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    Rename {
        from: CString,
        to: CString,
    },
    Unlink {
        path: CString,
        dir: bool,
    },
    Mkdir {
        path: CString,
        mode: u32,
    },
}

/// A `send_recv`'s buffers (and the argument of a `send_recv_with`, kept
/// here so its callback captures nothing and is not allocated).
#[derive(Default)]
pub(crate) struct SendRecvBufs {
    pub(crate) out: Vec<u8>,
    /// Bytes of `out` known to be sent: advanced by the poll backend as it
    /// goes, after a short linked send on io_uring (the rest is resubmitted),
    /// and set to `out.len()` by the receive's completion.
    pub(crate) sent: usize,
    pub(crate) input: Vec<u8>,
    pub(crate) arg: u64,
}

/// A vectored write's buffers and the iovecs pointing into them.
pub(crate) struct WritevBufs {
    pub(crate) bufs: Vec<Vec<u8>>,
    pub(crate) iovecs: Vec<libc::iovec>,
}

impl OpKind {
    /// The socket whose readiness the op waits on (poll backend), if any.
    pub(crate) fn socket_fd(&self) -> Option<RawFd> {
        match *self {
            OpKind::Accept { fd, .. }
            | OpKind::Connect { fd, .. }
            | OpKind::Recv { fd, .. }
            | OpKind::Send { fd, .. }
            | OpKind::SendRecv { fd, .. } => Some(fd),
            _ => None,
        }
    }

    /// True for ops on regular files and directories, which never report
    /// readiness and so go to the poll backend's thread pool.
    pub(crate) fn is_file_op(&self) -> bool {
        matches!(
            self,
            OpKind::Open { .. }
                | OpKind::Read { .. }
                | OpKind::Write { .. }
                | OpKind::Writev { .. }
                | OpKind::Fsync { .. }
                | OpKind::Rename { .. }
                | OpKind::Unlink { .. }
                | OpKind::Mkdir { .. }
        )
    }

    /// A short name for logs.
    pub(crate) fn name(&self) -> &'static str {
        match self {
            OpKind::Nop => "nop",
            OpKind::Accept { .. } => "accept",
            OpKind::Connect { .. } => "connect",
            OpKind::Recv { .. } => "recv",
            OpKind::Send { .. } => "send",
            OpKind::SendRecv { .. } => "send_recv",
            OpKind::Shutdown { .. } => "shutdown",
            OpKind::Close { .. } => "close",
            OpKind::Open { .. } => "open",
            OpKind::Read { .. } => "read",
            OpKind::Write { .. } => "write",
            OpKind::Writev { .. } => "writev",
            OpKind::Fsync { .. } => "fsync",
            OpKind::Rename { .. } => "rename",
            OpKind::Unlink { .. } => "unlink",
            OpKind::Mkdir { .. } => "mkdir",
        }
    }

    /// The fd a successful result hands over, which nobody will own if the op
    /// was canceled or failed after the fact (the reaper closes it).
    fn result_fd(&self, res: i32) -> Option<RawFd> {
        match self {
            OpKind::Accept { .. } | OpKind::Open { .. } if res >= 0 => Some(res),
            OpKind::Connect { fd, .. } => Some(*fd),
            _ => None,
        }
    }

    /// Applies a successful byte count to the buffer the kernel filled.
    fn commit_read(&mut self, res: i32) {
        if let OpKind::Recv { buf, .. } | OpKind::Read { buf, .. } = self {
            let n = res as usize;
            assert!(
                n <= buf.capacity() - buf.len(),
                "kernel reported more bytes than the buffer holds"
            );
            // SAFETY: the kernel (or the emulating syscall) wrote exactly `n`
            // bytes into the spare capacity starting at `buf.len()`, and we just
            // checked they fit.
            unsafe { buf.set_len(buf.len() + n) };
        }
    }
}

/// Where an op is in its lifecycle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum OpState {
    /// Waiting in the submission queue; no backend has seen it.
    Queued,
    /// Handed to the backend; only its completion may free the slot.
    InKernel,
    /// Cancel requested while in the kernel; the completion is still owed.
    Canceling,
}

/// The erased callback an op runs with.
pub(crate) type OpCallback = Box<dyn FnOnce(&mut Loop, Completion)>;

/// An op's outcome as delivered to its callback: the result and the op's data
/// (so buffers go back to the caller).
pub(crate) struct Completion {
    /// `Ok(res)` with the kernel's non-negative result, or the error.
    pub(crate) result: Result<i32, OpError>,
    pub(crate) kind: OpKind,
}

pub(crate) struct OpSlot {
    pub(crate) generation: u32,
    pub(crate) state: OpState,
    pub(crate) kind: OpKind,
    /// `None` for internal ops nobody waits for (reaper closes).
    pub(crate) callback: Option<OpCallback>,
}

/// A completion reported by a backend: the slab key and a cqe-style result
/// (non-negative on success, `-errno` on failure).
#[derive(Debug, Clone, Copy)]
pub(crate) struct RawCompletion {
    pub(crate) key: usize,
    pub(crate) res: i32,
}

/// What the loop must do after a backend reports a completion.
pub(crate) enum Settled {
    /// Deliver this to the user (or drop it, for internal ops).
    Deliver(Option<OpCallback>, Completion),
    /// A `send_all` advanced; the op goes back on the submission queue.
    Resubmit(OpId),
    /// A canceled op produced an fd nobody owns: close it.
    Reap(RawFd, Option<OpCallback>, Completion),
}

/// A queued op on its way to a backend ([`OpTable::queued_mut`]).
pub(crate) struct QueuedOp<'a> {
    slot: &'a mut OpSlot,
    in_kernel: &'a mut usize,
}

impl QueuedOp<'_> {
    pub(crate) fn kind(&mut self) -> &mut OpKind {
        &mut self.slot.kind
    }

    /// Queued → InKernel: the backend accepted the op.
    pub(crate) fn mark_in_kernel(self) {
        debug_assert_eq!(self.slot.state, OpState::Queued);
        self.slot.state = OpState::InKernel;
        *self.in_kernel += 1;
    }
}

/// The slab of ops with their lifecycle.
pub(crate) struct OpTable {
    slots: Slots<OpSlot>,
    next_generation: u32,
    /// Ops handed to a backend and not yet completed (InKernel + Canceling).
    in_kernel: usize,
}

impl OpTable {
    pub(crate) fn new() -> OpTable {
        OpTable {
            slots: Slots::new(),
            next_generation: 0,
            in_kernel: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    pub(crate) fn in_kernel(&self) -> usize {
        self.in_kernel
    }

    #[inline]
    pub(crate) fn insert(&mut self, kind: OpKind, callback: Option<OpCallback>) -> OpId {
        self.insert_with(kind, callback, |_, _| false).0
    }

    /// Inserts an op, first offering it to `hand_over` (a backend taking ops
    /// at submit time) with its id. If that takes it, the op goes in as in
    /// the kernel; else as queued. Returns the id and whether it was taken.
    ///
    /// The op is offered before it moves into its slot, so a backend builds
    /// its request from a value the compiler still knows. That is sound
    /// because everything the kernel may touch lives behind a heap pointer
    /// (see the module docs), which the move does not move; and the insert
    /// cannot fail once the request is out (it may only grow the slab,
    /// and failing to allocate aborts).
    #[inline]
    pub(crate) fn insert_with(
        &mut self,
        mut kind: OpKind,
        callback: Option<OpCallback>,
        hand_over: impl FnOnce(OpId, &mut OpKind) -> bool,
    ) -> (OpId, bool) {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let key = self.slots.next_key();
        assert!(key < u32::MAX as usize, "op table full");
        let id = OpId {
            key: key as u32,
            generation,
        };
        let taken = hand_over(id, &mut kind);
        let state = if taken {
            OpState::InKernel
        } else {
            OpState::Queued
        };
        self.slots.insert_with(|| OpSlot {
            generation,
            state,
            kind,
            callback,
        });
        self.in_kernel += usize::from(taken);
        (id, taken)
    }

    /// The slot of a live op, if `id` still names it.
    pub(crate) fn get_mut(&mut self, id: OpId) -> Option<&mut OpSlot> {
        self.slots
            .get_mut(id.key as usize)
            .filter(|slot| slot.generation == id.generation)
    }

    pub(crate) fn slot_mut(&mut self, key: usize) -> Option<&mut OpSlot> {
        self.slots.get_mut(key)
    }

    pub(crate) fn id_of(&self, key: usize) -> Option<OpId> {
        self.slots.get(key).map(|slot| OpId {
            key: key as u32,
            generation: slot.generation,
        })
    }

    /// The op `id` names, if it is still queued: to hand to a backend, and
    /// mark in the kernel without a second lookup.
    #[inline]
    pub(crate) fn queued_mut(&mut self, id: OpId) -> Option<QueuedOp<'_>> {
        let OpTable {
            slots, in_kernel, ..
        } = self;
        let slot = slots
            .get_mut(id.key as usize)
            .filter(|slot| slot.generation == id.generation && slot.state == OpState::Queued)?;
        Some(QueuedOp { slot, in_kernel })
    }

    /// Queued → InKernel by key (tests; the loop uses [`QueuedOp`]).
    #[cfg(test)]
    pub(crate) fn mark_in_kernel(&mut self, key: usize) {
        let slot = &mut self.slots[key];
        debug_assert_eq!(slot.state, OpState::Queued);
        slot.state = OpState::InKernel;
        self.in_kernel += 1;
    }

    /// Removes a queued op that no backend ever saw and returns its delivery as
    /// `Canceled`.
    pub(crate) fn cancel_queued(&mut self, key: usize) -> Settled {
        let slot = self.slots.remove(key);
        debug_assert_eq!(slot.state, OpState::Queued);
        let completion = Completion {
            result: Err(OpError::Canceled),
            kind: slot.kind,
        };
        match completion.kind.result_fd(-1) {
            // A connect owns its socket from creation.
            Some(fd) => Settled::Reap(fd, slot.callback, completion),
            None => Settled::Deliver(slot.callback, completion),
        }
    }

    /// InKernel → Canceling. Returns false if the op was not in the kernel.
    pub(crate) fn mark_canceling(&mut self, key: usize) -> bool {
        let slot = &mut self.slots[key];
        if slot.state != OpState::InKernel {
            return false;
        }
        slot.state = OpState::Canceling;
        true
    }

    /// Keys of every op, for shutdown.
    pub(crate) fn keys(&self) -> Vec<usize> {
        self.slots.keys().collect()
    }

    pub(crate) fn state(&self, key: usize) -> OpState {
        self.slots[key].state
    }
}

#[path = "op_slots.rs"]
mod slots;
use slots::Slots;

#[path = "op_settle.rs"]
mod settle;
pub(crate) use settle::Verdict;

#[path = "op_send_recv.rs"]
mod send_recv;
pub(crate) use send_recv::SEND_DONE_KEY_FLAG;

#[cfg(test)]
#[path = "op_tests.rs"]
mod tests;
