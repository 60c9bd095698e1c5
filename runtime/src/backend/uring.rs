//! The io_uring backend: one `io_uring_enter` per tick submits every queued
//! SQE and waits for completions, bounded by the nearest timer (`EXT_ARG`
//! timeout where the kernel has it, a timeout op otherwise).
//!
//! `user_data` carries the op's generation and slab key, so an async cancel
//! names exactly one op even if its slot is reused later. Internal requests
//! (the wakeup eventfd read, cancels, fallback timeouts) use the key
//! `u32::MAX`, which the op table never hands out.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::sync::Arc;
use std::time::{Duration, Instant};

use io_uring::{opcode, squeue, types, IoUring, Probe};

use super::{Backend, BackendConfig, Driver, Push, Wake};
use crate::op::{OpId, OpKind, OpTable, RawCompletion};
use crate::stats::Stats;

#[path = "uring_linked.rs"]
mod linked;
use linked::LinkedOps;
#[path = "uring_sqe.rs"]
mod sqe;
use sqe::build_sqe;
#[path = "uring_cq.rs"]
mod cq;
use cq::CqView;
#[path = "uring_sq.rs"]
mod sq;
use sq::SqeView;

const INTERNAL_KEY: u64 = u32::MAX as u64;
const WAKE_TAG: u64 = (1 << 32) | INTERNAL_KEY;
const CANCEL_TAG: u64 = (2 << 32) | INTERNAL_KEY;
const TIMEOUT_TAG: u64 = (3 << 32) | INTERNAL_KEY;
/// A withdrawn op's SQE, now a no-op nobody waits for.
const VOID_TAG: u64 = (4 << 32) | INTERNAL_KEY;

const IORING_ENTER_GETEVENTS: u32 = 1 << 0;
const IORING_ENTER_EXT_ARG: u32 = 1 << 3;
/// How many times dropping the driver waits for its own internal requests.
const DROP_DRAIN_ATTEMPTS: usize = 100;
/// Most completions a batch wait holds on for.
const BATCH_MAX: usize = 64;
/// A batch wait holds on for at most this fraction of the ops in flight.
const BATCH_IN_FLIGHT_DIVISOR: usize = 16;

/// `struct io_uring_getevents_arg` from the kernel's uapi.
#[repr(C)]
struct GetEventsArg {
    sigmask: u64,
    sigmask_sz: u32,
    min_wait_usec: u32,
    ts: u64,
}

/// `struct __kernel_timespec`.
#[repr(C)]
struct KernelTimespec {
    tv_sec: i64,
    tv_nsec: i64,
}

fn token(id: OpId) -> u64 {
    ((id.generation as u64) << 32) | id.key as u64
}

/// Opcodes the loop uses; `Auto` falls back to poll if any is missing.
const OPCODES: [(u8, &str); 17] = [
    (opcode::Nop::CODE, "nop"),
    (opcode::Accept::CODE, "accept"),
    (opcode::Connect::CODE, "connect"),
    (opcode::Recv::CODE, "recv"),
    (opcode::Send::CODE, "send"),
    (opcode::Shutdown::CODE, "shutdown"),
    (opcode::Close::CODE, "close"),
    (opcode::OpenAt::CODE, "openat"),
    (opcode::Read::CODE, "read"),
    (opcode::Write::CODE, "write"),
    (opcode::Writev::CODE, "writev"),
    (opcode::Fsync::CODE, "fsync"),
    (opcode::RenameAt::CODE, "renameat"),
    (opcode::UnlinkAt::CODE, "unlinkat"),
    (opcode::MkDirAt::CODE, "mkdirat"),
    (opcode::AsyncCancel::CODE, "async_cancel"),
    (opcode::Timeout::CODE, "timeout"),
];

/// True for setup errors that mean "no io_uring here" (fall back to poll)
/// rather than a bug or a resource problem worth reporting.
pub(crate) fn is_unavailable(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ENOSYS) | Some(libc::EPERM) | Some(libc::EACCES) | Some(libc::ENOMEM)
    ) || e.kind() == io::ErrorKind::Unsupported
}

struct EventFdWaker {
    fd: OwnedFd,
}

impl Wake for EventFdWaker {
    fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live local to an eventfd this waker owns.
        let n = unsafe {
            libc::write(
                self.fd.as_raw_fd(),
                &one as *const u64 as *const libc::c_void,
                8,
            )
        };
        // EAGAIN means the counter is saturated: the loop is already due to wake.
        debug_assert!(n == 8 || io::Error::last_os_error().raw_os_error() == Some(libc::EAGAIN));
    }
}

pub(crate) struct UringDriver {
    ring: IoUring,
    ext_arg: bool,
    waker: Arc<EventFdWaker>,
    /// Target of the in-flight eventfd read; the kernel writes here until that
    /// read completes, so it is only freed (or leaked) after the drain in Drop.
    wake_buf: Box<u64>,
    wake_armed: bool,
    /// Cancels that did not fit in the SQ yet.
    cancels: Vec<u64>,
    /// Fallback timeout (no EXT_ARG): its timespec and when it fires.
    timeout_ts: Box<types::Timespec>,
    timeout_deadline: Option<Instant>,
    /// `send_recv` pairs in flight.
    linked: LinkedOps,
    /// Microseconds a waiting tick may hold on for a batch (0: never; also
    /// 0 where the kernel lacks min-wait support).
    batch_wait_us: u32,
    /// Op completions the last waiting tick reaped: the batch the next one
    /// waits for.
    last_batch: usize,
    /// The SQ tail as the crate will publish it: every push goes through
    /// `push_entry` or `push_entries`, which count it (a new ring starts
    /// at 0).
    sq_tail: u32,
    /// The SQE array, to withdraw entries the kernel has not read yet.
    sqes: SqeView,
    /// The CQ, where every CQE is taken from.
    cq: CqView,
}

impl UringDriver {
    pub(crate) fn open(config: BackendConfig) -> io::Result<UringDriver> {
        let ring = build_ring(config.sq_entries)?;
        probe_opcodes(&ring)?;
        // SAFETY: eventfd returns a new fd we own, or -1.
        let raw = unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) };
        if raw < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `raw` is a fresh fd owned by nobody else.
        let fd = unsafe { OwnedFd::from_raw_fd(raw) };
        let sqes = SqeView::map(ring.as_raw_fd(), ring.params().sq_entries())?;
        let cq = CqView::map(ring.as_raw_fd(), ring.params())?;
        let ext_arg = ring.params().is_feature_ext_arg();
        let cqe_skip = ring.params().is_feature_skip_cqe_on_success();
        let min_wait = ext_arg && ring.params().is_feature_min_timeout();
        let batch_wait_us = if min_wait {
            config.batch_wait.as_micros().min(u128::from(u32::MAX)) as u32
        } else {
            0
        };
        tracing::debug!(
            sq_entries = ring.params().sq_entries(),
            ext_arg,
            cqe_skip,
            min_wait,
            batch_wait_us,
            "io_uring ring ready"
        );
        Ok(UringDriver {
            ring,
            ext_arg,
            waker: Arc::new(EventFdWaker { fd }),
            wake_buf: Box::new(0),
            wake_armed: false,
            cancels: Vec::new(),
            timeout_ts: Box::new(types::Timespec::new()),
            timeout_deadline: None,
            linked: LinkedOps::new(cqe_skip),
            batch_wait_us,
            last_batch: 1,
            sq_tail: 0,
            sqes,
            cq,
        })
    }

    /// Pushes an op's SQE(s); false if the SQ is full.
    #[inline]
    fn push_op(&mut self, id: OpId, kind: &mut OpKind) -> bool {
        let entry = build_sqe(kind).user_data(token(id));
        match *kind {
            OpKind::Close { fd } => self.hold_close(fd, &entry) || self.push_close(fd, &entry),
            OpKind::SendRecv { .. } => self.push_send_recv(id, entry, kind),
            _ => self.push_entry(&entry),
        }
    }

    /// Pushes a close preceded by a cancel of every request still pending on
    /// that fd (hard-linked, so the close runs whatever the cancel finds). An
    /// in-flight request holds its own reference to the file, so a bare close
    /// would leave a recv or accept waiting forever and the socket open; the
    /// poll backend fails such waiters at close as well. Kernels without
    /// fd-matching cancels (before 5.19) fail the cancel, and the close runs.
    fn push_close(&mut self, fd: RawFd, close: &squeue::Entry) -> bool {
        let cancel = opcode::AsyncCancel2::new(types::CancelBuilder::fd(types::Fd(fd)).all())
            .build()
            .flags(squeue::Flags::IO_HARDLINK)
            .user_data(CANCEL_TAG);
        // SAFETY: the cancel points at no memory; the close's memory rules
        // are `push_entry`'s.
        unsafe { self.push_entries(&[cancel, close.clone()]) }
    }

    /// Queues the internal requests: pending cancels and the wakeup read.
    /// False if the SQ had no room for all of them.
    fn push_internal(&mut self) -> bool {
        if !self.push_linked_internal() {
            return false;
        }
        while let Some(target) = self.cancels.last().copied() {
            let entry = opcode::AsyncCancel::new(target)
                .build()
                .user_data(CANCEL_TAG);
            if !self.push_entry(&entry) {
                return false;
            }
            self.cancels.pop();
        }
        if !self.wake_armed {
            let buf = &mut *self.wake_buf as *mut u64 as *mut u8;
            let entry = opcode::Read::new(types::Fd(self.waker.fd.as_raw_fd()), buf, 8)
                .build()
                .user_data(WAKE_TAG);
            if !self.push_entry(&entry) {
                return false;
            }
            self.wake_armed = true;
        }
        true
    }

    /// Queues the internal requests before a wait. When the tick's ops left
    /// no room, they are submitted first (one extra enter): a wait without a
    /// pending cancel or without the wakeup read could sleep through exactly
    /// what it must see. Each round frees the whole SQ, so the rounds are
    /// bounded by the cancels still to push.
    fn push_internal_making_room(
        &mut self,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let mut rounds_left = self.cancels.len() + self.linked_internal_len() + 1;
        while !self.push_internal() && rounds_left > 0 {
            rounds_left -= 1;
            self.flush(done, stats)?;
        }
        Ok(())
    }

    /// Queues a fallback timeout op when the kernel lacks `EXT_ARG`. False if
    /// the SQ had no room for it.
    fn push_timeout(&mut self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        if self.timeout_deadline.is_some() {
            // One is in flight. If it fires later than we need, the wait may
            // oversleep this once: its timespec is not touched while in
            // flight, and a shorter one goes out after it fired.
            return true;
        }
        *self.timeout_ts = types::Timespec::from(timeout);
        let entry = opcode::Timeout::new(&*self.timeout_ts as *const types::Timespec)
            .build()
            .user_data(TIMEOUT_TAG);
        if !self.push_entry(&entry) {
            return false;
        }
        self.timeout_deadline = Some(deadline);
        true
    }

    /// Submits and waits for `min_complete` completions, or, with
    /// `min_wait_us`, for that long for them and then for at least one.
    fn enter(
        &mut self,
        min_complete: u32,
        min_wait_us: u32,
        timeout: Option<Duration>,
        stats: &mut Stats,
    ) -> io::Result<usize> {
        let to_submit = self.ring.submission().len() as u32;
        stats.syscalls += 1;
        let submitter = self.ring.submitter();
        debug_assert!(min_wait_us == 0 || (self.ext_arg && min_complete > 1));
        let with_arg = min_wait_us > 0 || (timeout.is_some() && min_complete > 0 && self.ext_arg);
        if with_arg {
            let ts = timeout.map(|t| KernelTimespec {
                tv_sec: t.as_secs() as i64,
                tv_nsec: t.subsec_nanos() as i64,
            });
            let arg = GetEventsArg {
                sigmask: 0,
                sigmask_sz: 0,
                min_wait_usec: min_wait_us,
                // 0: no timeout, wait for completions only.
                ts: ts
                    .as_ref()
                    .map_or(0, |ts| ts as *const KernelTimespec as u64),
            };
            let flags = IORING_ENTER_GETEVENTS | IORING_ENTER_EXT_ARG;
            // SAFETY: `arg` is a correctly laid out io_uring_getevents_arg
            // whose timespec, if any, outlives the call; the SQEs being
            // submitted point only at memory kept alive until their
            // completion.
            unsafe { submitter.enter(to_submit, min_complete, flags, Some(&arg)) }
        } else {
            // SAFETY: as above, without an argument.
            unsafe {
                submitter.enter::<libc::sigset_t>(
                    to_submit,
                    min_complete,
                    IORING_ENTER_GETEVENTS,
                    None,
                )
            }
        }
    }

    /// Moves every CQE into `done`; returns how many were op completions.
    fn reap(&mut self, done: &mut Vec<RawCompletion>) -> usize {
        let before = done.len();
        done.reserve(self.cq.len());
        while let Some(raw) = self.next_completion() {
            done.push(raw);
        }
        done.len() - before
    }

    /// What a CQE that is not a plain op's means: internal requests' CQEs
    /// update the driver and yield nothing, a linked pair's yield its op's
    /// completion once both are in.
    #[cold]
    fn special_cqe(&mut self, data: u64, res: i32) -> Option<RawCompletion> {
        let key = (data & INTERNAL_KEY) as usize;
        match data {
            WAKE_TAG => self.wake_armed = false,
            CANCEL_TAG | VOID_TAG => {}
            TIMEOUT_TAG => self.timeout_deadline = None,
            _ => {
                let plain = Some(RawCompletion { key, res });
                // `None`: not a linked pair's; `Some(None)`: one is still owed.
                return self.linked.on_cqe(key, data, res).unwrap_or(plain);
            }
        }
        None
    }
}

impl Driver for UringDriver {
    fn kind(&self) -> Backend {
        Backend::Uring
    }

    fn wants_nonblocking_sockets(&self) -> bool {
        false
    }

    #[inline]
    fn push(
        &mut self,
        id: OpId,
        kind: &mut OpKind,
        _done: &mut Vec<RawCompletion>,
        _stats: &mut Stats,
    ) -> Push {
        if self.push_op(id, kind) {
            Push::Accepted
        } else {
            Push::Full
        }
    }

    /// Single-SQE ops go into the SQ ring as they are submitted; a cancel
    /// before the tick's enter withdraws them ([`UringDriver::withdraw`]).
    /// Closes (linked to a cancel-by-fd, ordered with the loop's
    /// bookkeeping) and `send_recv` pairs wait for the tick.
    #[inline]
    fn push_now(&mut self, id: OpId, kind: &mut OpKind) -> bool {
        match kind {
            OpKind::Close { .. } | OpKind::SendRecv { .. } => false,
            _ => self.push_op(id, kind),
        }
    }

    fn flush(&mut self, done: &mut Vec<RawCompletion>, stats: &mut Stats) -> io::Result<()> {
        match self.enter(0, 0, None, stats) {
            Ok(_) => {}
            Err(e) if is_retry(&e) => {}
            Err(e) => return Err(e),
        }
        self.reap(done);
        Ok(())
    }

    fn cancel(
        &mut self,
        id: OpId,
        kind: &OpKind,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) {
        match kind {
            OpKind::SendRecv { .. } => self.linked.cancel(id.key as usize),
            // A close's SQE is linked to the cancel in front of it.
            OpKind::Close { .. } => self.cancels.push(token(id)),
            _ if self.withdraw(id) => {
                // The kernel never gets the op: it completes from here.
                stats.sqes_submitted -= 1;
                done.push(RawCompletion {
                    key: id.key as usize,
                    res: -libc::ECANCELED,
                });
            }
            _ => self.cancels.push(token(id)),
        }
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ops: &mut OpTable,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        let done_before = done.len();
        self.push_internal_making_room(done, stats)?;
        if let (Some(t), false) = (timeout, self.ext_arg) {
            if !t.is_zero() && !self.push_timeout(t) {
                self.flush(done, stats)?;
                self.push_timeout(t);
            }
        }
        self.reap(done);
        // Completions reaped since the tick began (from a flush that made
        // room) are ready to deliver: do not sleep on top of them.
        let timeout = if done.len() > done_before {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        let mut min_complete = match timeout {
            Some(t) if t.is_zero() => 0,
            _ => 1,
        };
        let mut min_wait_us = 0;
        if min_complete == 1 && self.batch_wait_us > 0 {
            // Hold on only for as many as the last wait got (one lone
            // exchange among idle connections never waits), and for at most
            // a sixteenth of what is in flight: no convoy of every
            // connection, and below 32 ops in flight no hold at all, where
            // a hold would cost a round trip a noticeable share of its time.
            let batch = self
                .last_batch
                .min(ops.in_kernel() / BATCH_IN_FLIGHT_DIVISOR)
                .min(BATCH_MAX);
            if batch > 1 {
                min_complete = batch as u32;
                min_wait_us = self.batch_wait_us;
            }
        }
        let waited = min_complete > 0;
        let reaped_before = done.len();
        loop {
            match self.enter(min_complete, min_wait_us, timeout, stats) {
                Ok(_) => break,
                // The wait timed out, or a signal arrived: an empty tick is fine.
                Err(e) if matches!(e.raw_os_error(), Some(libc::ETIME) | Some(libc::EINTR)) => {
                    break
                }
                // CQ overflow backlog or no memory for requests right now: reap
                // what is there, then try once more without waiting.
                Err(e) if is_retry(&e) => {
                    if self.reap(done) > 0 || min_complete == 0 {
                        break;
                    }
                    min_complete = 0;
                    min_wait_us = 0;
                }
                Err(e) => return Err(e),
            }
        }
        // The CQEs stay in the CQ for `next_completion`; the batch is
        // counted with the few internal ones among them.
        if waited {
            let in_cq = self.cq.len();
            self.last_batch = (done.len() - reaped_before + in_cq).max(1);
        }
        Ok(())
    }

    #[inline]
    fn next_completion(&mut self) -> Option<RawCompletion> {
        loop {
            let (data, res) = self.cq.pop()?;
            // Most CQEs are plain ops': no lookup while no pair is in flight.
            if data & INTERNAL_KEY != INTERNAL_KEY && self.linked.is_empty() {
                let key = (data & INTERNAL_KEY) as usize;
                return Some(RawCompletion { key, res });
            }
            if let Some(raw) = self.special_cqe(data, res) {
                return Some(raw);
            }
        }
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.waker.clone()
    }
}

fn is_retry(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EBUSY) | Some(libc::EAGAIN) | Some(libc::EINTR)
    )
}

impl Drop for UringDriver {
    fn drop(&mut self) {
        // The loop drained user ops already; take back our own requests before
        // the memory they point at goes away.
        if self.wake_armed {
            self.cancels.push(WAKE_TAG);
        }
        let mut stats = Stats::default();
        let mut sink = Vec::new();
        for _ in 0..DROP_DRAIN_ATTEMPTS {
            if !self.wake_armed && self.timeout_deadline.is_none() {
                return;
            }
            while let Some(target) = self.cancels.pop() {
                let entry = opcode::AsyncCancel::new(target)
                    .build()
                    .user_data(CANCEL_TAG);
                if !self.push_entry(&entry) {
                    self.cancels.push(target);
                    break;
                }
            }
            if self.timeout_deadline.is_some() {
                let entry = opcode::TimeoutRemove::new(TIMEOUT_TAG)
                    .build()
                    .user_data(CANCEL_TAG);
                self.push_entry(&entry);
            }
            if self
                .enter(1, 0, Some(Duration::from_millis(100)), &mut stats)
                .is_err()
            {
                break;
            }
            self.reap(&mut sink);
        }
        if self.wake_armed || self.timeout_deadline.is_some() {
            tracing::error!("io_uring still holds internal requests; leaking their buffers");
            std::mem::forget(std::mem::replace(&mut self.wake_buf, Box::new(0)));
            std::mem::forget(std::mem::replace(
                &mut self.timeout_ts,
                Box::new(types::Timespec::new()),
            ));
        }
    }
}

fn build_ring(sq_entries: u32) -> io::Result<IoUring> {
    let cq_entries = sq_entries.saturating_mul(4);
    // Newest flags first; EINVAL means this kernel lacks one of them.
    type SetupFlags = fn(&mut io_uring::Builder);
    let attempts: [(&str, SetupFlags); 3] = [
        ("coop_taskrun+single_issuer+defer_taskrun", |b| {
            b.setup_coop_taskrun()
                .setup_single_issuer()
                .setup_defer_taskrun();
        }),
        ("coop_taskrun", |b| {
            b.setup_coop_taskrun();
        }),
        ("none", |_| {}),
    ];
    let mut last_err = None;
    for (name, apply) in attempts {
        let mut builder = IoUring::builder();
        builder.setup_cqsize(cq_entries).setup_submit_all();
        apply(&mut builder);
        match builder.build(sq_entries) {
            Ok(ring) => {
                tracing::debug!(flags = name, "io_uring setup");
                return Ok(ring);
            }
            Err(e) if e.raw_os_error() == Some(libc::EINVAL) => last_err = Some(e),
            Err(e) => return Err(e),
        }
    }
    Err(last_err.expect("at least one attempt ran"))
}

fn probe_opcodes(ring: &IoUring) -> io::Result<()> {
    let mut probe = Probe::new();
    ring.submitter().register_probe(&mut probe)?;
    for (code, name) in OPCODES {
        if !probe.is_supported(code) {
            return Err(io::Error::new(
                io::ErrorKind::Unsupported,
                format!("io_uring opcode {name} not supported by this kernel"),
            ));
        }
    }
    Ok(())
}
