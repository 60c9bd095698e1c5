//! `Ctx`: what a gen_server callback can do besides changing its state.
//!
//! Everything a process starts through its `Ctx` (timers from `send_after`,
//! ops from `io`, fds given to `own_fd`) is owned by the process and released
//! when it exits: timers canceled, ops canceled (their buffers come back to
//! the loop, never freed while the kernel holds them), fds closed.

use std::cell::Cell;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::{Duration, Instant};

use ringvisor_runtime::{Loop, OpId, TimerId};

use crate::call::{CallError, From};
use crate::gen_server::{self, GenServer, ServerRef, StartError, StartOptions};
use crate::pid::{ExitReason, MonitorRef, Pid};
use crate::process::{self, SendError};

/// Immediate replies buffered by a batch.
pub(crate) type Replies<S> = Vec<(From<<S as GenServer>::Reply>, <S as GenServer>::Reply)>;

/// The context of one gen_server callback.
pub struct Ctx<'a, S: GenServer> {
    lp: &'a mut Loop,
    pid: Pid,
    stop: Option<ExitReason>,
    /// Immediate replies (`Reply::Now`) of the running batch, finished
    /// together with one table lookup when the batch ends, or before any
    /// reply through [`Ctx::reply`] (so replies keep the order they were made).
    replies: Replies<S>,
    /// Whether immediate replies are buffered (a batch of several messages);
    /// a lone message replies at once, skipping the buffer's bookkeeping.
    buffer_replies: bool,
    _server: PhantomData<fn(S)>,
}

/// A timer set with [`Ctx::send_after`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TimerRef(TimerId);

/// Finishes an op started with [`Ctx::io`]: hand it the op's result.
pub struct Completer<T> {
    pid: Pid,
    op: Rc<Cell<Option<OpId>>>,
    deliver: fn(&mut Loop, Pid, T, Box<dyn std::any::Any>),
    then: Box<dyn std::any::Any>,
}

impl<T: 'static> Completer<T> {
    /// Delivers the op's outcome to the process (dropped if it has exited).
    pub fn complete(self, lp: &mut Loop, value: T) {
        let Some(op) = self.op.get() else {
            return;
        };
        // An op the process no longer owns was canceled by its exit: the
        // outcome (buffers included) is dropped here, never delivered.
        if !process::owns_op(lp, self.pid, op) {
            return;
        }
        // Deliver before disowning: disowning the last op of a lingering
        // process schedules its final exit, which must come after this.
        (self.deliver)(lp, self.pid, value, self.then);
        process::disown_op(lp, self.pid, op);
    }
}

/// Delivers the outcome of any async work (not a loop op: a store close, a
/// reply from elsewhere) into the process that made it; see [`Ctx::later`].
pub struct Later<S: GenServer, T> {
    pid: Pid,
    epoch: u32,
    then: Option<LaterFn<S, T>>,
}

type LaterFn<S, T> = Box<dyn FnOnce(&mut S, &mut Ctx<S>, T)>;

impl<S: GenServer, T: 'static> Later<S, T> {
    /// Runs the continuation inside the process with `value`. Dropped if the
    /// process exited since the continuation was made (unless it was made by
    /// `terminate`, whose work the exit waits for).
    pub fn complete(mut self, lp: &mut Loop, value: T) {
        let then = self.then.take().expect("completed once");
        if process::hold_is_current(lp, self.pid, self.epoch) {
            gen_server::send_run::<S>(lp, self.pid, move |state, ctx| then(state, ctx, value));
        }
        process::release(lp, self.pid, self.epoch);
    }
}

impl<'a, S: GenServer> Ctx<'a, S> {
    /// A continuation for async work that is not a loop op. Like [`Ctx::io`],
    /// work made by `terminate` holds the exiting process (up to its shutdown
    /// timeout) until the continuation completes.
    pub fn later<T: 'static>(
        &mut self,
        then: impl FnOnce(&mut S, &mut Ctx<S>, T) + 'static,
    ) -> Later<S, T> {
        let epoch = process::hold(self.lp, self.pid);
        Later {
            pid: self.pid,
            epoch,
            then: Some(Box::new(then)),
        }
    }

    pub(crate) fn new(lp: &'a mut Loop, pid: Pid) -> Ctx<'a, S> {
        Ctx::with_replies(lp, pid, None)
    }

    /// A context whose immediate replies are buffered in `replies` (empty;
    /// its capacity is reused from batch to batch), or sent at once if `None`.
    pub(crate) fn with_replies(
        lp: &'a mut Loop,
        pid: Pid,
        replies: Option<Replies<S>>,
    ) -> Ctx<'a, S> {
        let buffer_replies = replies.is_some();
        let replies = replies.unwrap_or_default();
        debug_assert!(replies.is_empty());
        Ctx {
            lp,
            pid,
            stop: None,
            replies,
            buffer_replies,
            _server: PhantomData,
        }
    }

    /// Replies to a call handled in this batch: buffered (see
    /// [`Ctx::flush_replies`]) or at once.
    #[inline]
    pub(crate) fn reply_now(&mut self, from: From<S::Reply>, value: S::Reply) {
        if self.buffer_replies {
            self.replies.push((from, value));
        } else {
            crate::call::reply(self.lp, from, value);
        }
    }

    /// Finishes the queued immediate replies; returns the emptied buffer.
    pub(crate) fn flush_replies(&mut self) -> &mut Replies<S> {
        if !self.replies.is_empty() {
            crate::call::reply_all(self.lp, &mut self.replies);
        }
        &mut self.replies
    }

    /// The buffer of immediate replies, not yet finished (the scheduler
    /// finishes them; see [`Process::finish_replies`]).
    ///
    /// [`Process::finish_replies`]: crate::process::Process
    pub(crate) fn take_replies(&mut self) -> Replies<S> {
        std::mem::take(&mut self.replies)
    }

    pub(crate) fn take_stop(&mut self) -> Option<ExitReason> {
        self.stop.take()
    }

    /// This process's id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// A typed reference to this server.
    pub fn me(&self) -> ServerRef<S> {
        ServerRef::from_pid(self.pid)
    }

    /// The loop, for ops this process does not need to own. Replies the
    /// running batch has buffered are finished first, so whatever is sent
    /// through the loop (a `reply`, a cast, a call) follows them, as
    /// Erlang's ordering between two processes promises.
    pub fn lp(&mut self) -> &mut Loop {
        self.flush_replies();
        self.lp
    }

    /// The loop's time for this tick.
    pub fn now(&self) -> Instant {
        self.lp.now()
    }

    /// Stops this process after the current callback returns.
    pub fn stop(&mut self, reason: ExitReason) {
        self.stop = Some(reason);
    }

    /// Replies to a call kept for later. False if the caller stopped waiting.
    pub fn reply<R: 'static>(&mut self, from: From<R>, value: R) -> bool {
        self.flush_replies();
        crate::call::reply(self.lp, from, value)
    }

    /// Calls another server; the outcome comes back to this process as a
    /// continuation that runs with its state, like a message.
    pub fn call<T: GenServer>(
        &mut self,
        server: ServerRef<T>,
        request: T::Call,
        timeout: Duration,
        then: impl FnOnce(&mut S, &mut Ctx<S>, Result<T::Reply, CallError>) + 'static,
    ) {
        let me = self.pid;
        self.flush_replies();
        gen_server::call(self.lp, server, request, timeout, move |lp, result| {
            gen_server::send_run::<S>(lp, me, move |state, ctx| then(state, ctx, result));
        });
    }

    /// Casts to another server.
    pub fn cast<T: GenServer>(
        &mut self,
        server: ServerRef<T>,
        message: T::Cast,
    ) -> Result<(), SendError> {
        self.flush_replies();
        gen_server::cast(self.lp, server, message)
    }

    /// Delivers `info` to this process's `handle_info` after `after`.
    pub fn send_after(&mut self, after: Duration, info: S::Info) -> TimerRef {
        let pid = self.pid;
        let slot: Rc<Cell<Option<TimerId>>> = Rc::new(Cell::new(None));
        let fired = slot.clone();
        let timer = self.lp.timer(after, move |lp| {
            if let Some(timer) = fired.get() {
                process::disown_timer(lp, pid, timer);
            }
            let _ = gen_server::send_info::<S>(lp, ServerRef::from_pid(pid), info);
        });
        slot.set(Some(timer));
        process::own_timer(self.lp, self.pid, timer);
        TimerRef(timer)
    }

    /// Cancels a `send_after` timer; false if it already fired.
    pub fn cancel_timer(&mut self, timer: TimerRef) -> bool {
        process::disown_timer(self.lp, self.pid, timer.0);
        self.lp.cancel_timer(timer.0)
    }

    /// Monitors `pid`: [`crate::gen_server::Info::Down`] arrives when it
    /// exits (at once if it already has).
    pub fn monitor(&mut self, pid: Pid) -> MonitorRef {
        process::monitor(self.lp, self.pid, pid)
    }

    /// Removes a monitor on `pid`.
    pub fn demonitor(&mut self, pid: Pid, monitor: MonitorRef) -> bool {
        process::demonitor(self.lp, pid, monitor)
    }

    /// Starts a server whose exits come to this one as
    /// [`crate::gen_server::Info::Exit`].
    pub fn start_child<T: GenServer>(
        &mut self,
        args: T::Args,
        mut options: StartOptions,
    ) -> Result<ServerRef<T>, StartError> {
        options.parent = Some(self.pid);
        self.flush_replies();
        gen_server::start::<T>(self.lp, args, options)
    }

    /// Starts an op owned by this process: `start` gets the loop and a
    /// [`Completer`] to call from the op's callback; `then` runs inside the
    /// process with the outcome. If the process exits first, the op is
    /// canceled and `then` never runs.
    ///
    /// ```text
    /// ctx.io(
    ///     |lp, done| lp.fdatasync(fd, move |lp, res| done.complete(lp, res)),
    ///     |state, ctx, res| state.synced = res.is_ok(),
    /// );
    /// ```
    pub fn io<T: 'static>(
        &mut self,
        start: impl FnOnce(&mut Loop, Completer<T>) -> OpId,
        then: impl FnOnce(&mut S, &mut Ctx<S>, T) + 'static,
    ) {
        type Then<S, T> = Box<dyn FnOnce(&mut S, &mut Ctx<S>, T)>;
        fn deliver<S: GenServer, T: 'static>(
            lp: &mut Loop,
            pid: Pid,
            value: T,
            then: Box<dyn std::any::Any>,
        ) {
            let then = then
                .downcast::<Then<S, T>>()
                .expect("io continuation of this server type");
            gen_server::send_run::<S>(lp, pid, move |state, ctx| (*then)(state, ctx, value));
        }
        let op = Rc::new(Cell::new(None));
        let then: Then<S, T> = Box::new(then);
        let completer = Completer {
            pid: self.pid,
            op: op.clone(),
            deliver: deliver::<S, T>,
            then: Box::new(then),
        };
        let id = start(self.lp, completer);
        op.set(Some(id));
        process::own_op(self.lp, self.pid, id);
    }

    /// Makes this process own `fd`: it is closed when the process exits.
    pub fn own_fd(&mut self, fd: RawFd) {
        process::own_fd(self.lp, self.pid, fd);
    }

    /// Gives up ownership of `fd` (after closing it yourself, say).
    pub fn release_fd(&mut self, fd: RawFd) {
        process::disown_fd(self.lp, self.pid, fd);
    }
}
