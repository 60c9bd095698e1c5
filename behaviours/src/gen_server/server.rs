//! The process behind a gen_server: its mailbox of typed messages, and the
//! batch loop that runs callbacks under one `catch_unwind`.
//!
//! Invariants:
//! - A batch handles at most what was queued when it started (messages that
//!   arrive meanwhile wait in the slot's overflow) and at most the process
//!   budget.
//! - Replies returned from `handle_call` in a batch are finished together
//!   when the scheduler puts the process back (also after a panic), or
//!   earlier, before anything the batch sends through the loop (a
//!   `Ctx::reply`, a cast, a call).

use std::collections::VecDeque;
use std::panic::{catch_unwind, AssertUnwindSafe};

use ringvisor_runtime::{Loop, TimerId};

use super::{send, GenServer, Info, Next, Reply};
use crate::call::{CallError, From};
use crate::ctx::Ctx;
use crate::pid::{ExitReason, Pid};
use crate::process::{Pending, Process, Processes, Ran, SysMsg};

type RunFn<S> = Box<dyn FnOnce(&mut S, &mut Ctx<S>)>;

pub(crate) enum Msg<S: GenServer> {
    Call(S::Call, From<S::Reply>),
    Cast(S::Cast),
    Info(S::Info),
    IdleTimeout(u64),
    /// Boxed: system messages are rare, and a small `Msg` is cheaper to
    /// move through the mailbox.
    Sys(Box<SysMsg>),
    Run(RunFn<S>),
}

impl<S: GenServer> Msg<S> {
    pub(super) fn is_user(&self) -> bool {
        matches!(self, Msg::Call(..) | Msg::Cast(_) | Msg::Info(_))
    }
}

pub(super) struct ServerProc<S: GenServer> {
    state: S,
    mailbox: VecDeque<Msg<S>>,
    pending_continue: Option<S::Continue>,
    idle_timer: Option<TimerId>,
    idle_seq: u64,
    terminated: bool,
    /// The immediate-reply buffer lent to each batch's `Ctx`.
    replies: crate::ctx::Replies<S>,
}

impl<S: GenServer> ServerProc<S> {
    pub(super) fn new(state: S) -> ServerProc<S> {
        ServerProc {
            state,
            mailbox: VecDeque::new(),
            pending_continue: None,
            idle_timer: None,
            idle_seq: 0,
            terminated: false,
            replies: Vec::new(),
        }
    }
}

pub(super) fn fail_pending<S: GenServer>(lp: &mut Loop, pending: Pending, reason: &ExitReason) {
    if let Pending::User(boxed) = pending {
        if let Ok(msg) = boxed.downcast::<Msg<S>>() {
            if let Msg::Call(_, from) = *msg {
                crate::call::fail(lp, from, CallError::Exit(reason.clone()));
            }
        }
    }
}

#[inline]
pub(super) fn push_msg<S: GenServer>(server: &mut ServerProc<S>, msg: Msg<S>) {
    server.mailbox.push_back(msg);
}

fn deliver_idle_timeout<S: GenServer>(lp: &mut Loop, pid: Pid, seq: u64) {
    let _ = send::<S>(lp, pid, Msg::IdleTimeout(seq));
}

impl<S: GenServer> ServerProc<S> {
    /// Applies a callback's `Next`; returns a stop reason if it asked to stop.
    pub(super) fn apply(&mut self, lp: &mut Loop, pid: Pid, next: Next<S>) -> Option<ExitReason> {
        match next {
            Next::Wait => None,
            Next::Timeout(after) => {
                self.idle_seq += 1;
                let seq = self.idle_seq;
                self.idle_timer =
                    Some(lp.timer(after, move |lp| deliver_idle_timeout::<S>(lp, pid, seq)));
                None
            }
            Next::Continue(work) => {
                self.pending_continue = Some(work);
                None
            }
            Next::Stop(reason) => Some(reason),
        }
    }

    fn cancel_idle(&mut self, lp: &mut Loop) {
        if let Some(timer) = self.idle_timer.take() {
            lp.cancel_timer(timer);
        }
    }

    /// Runs the callback for one message (no catch_unwind here: the whole
    /// batch runs under one, see `run_batch`).
    fn handle(&mut self, msg: Msg<S>, ctx: &mut Ctx<S>) -> Next<S> {
        let state = &mut self.state;
        match msg {
            Msg::Call(request, from) => {
                let alias = from_clone(&from);
                match state.handle_call(request, alias, ctx) {
                    Reply::Now(value, next) => {
                        ctx.reply_now(from, value);
                        next
                    }
                    Reply::Later(next) => next,
                    Reply::Stop(reason, value) => {
                        if let Some(value) = value {
                            ctx.reply_now(from, value);
                        }
                        Next::Stop(reason)
                    }
                }
            }
            Msg::Cast(message) => state.handle_cast(message, ctx),
            Msg::Info(info) => state.handle_info(Info::Msg(info), ctx),
            Msg::IdleTimeout(_) => state.handle_info(Info::Timeout, ctx),
            Msg::Sys(sys) => match *sys {
                SysMsg::Down {
                    pid,
                    reason,
                    monitor,
                } => state.handle_info(
                    Info::Down {
                        pid,
                        reason,
                        monitor,
                    },
                    ctx,
                ),
                SysMsg::Exit { pid, reason } => state.handle_info(Info::Exit { pid, reason }, ctx),
            },
            Msg::Run(f) => {
                f(state, ctx);
                Next::Wait
            }
        }
    }

    /// Handles up to `budget` messages (and continues) with one context.
    /// Returns a stop reason if a callback asked to stop.
    fn run_batch(
        &mut self,
        ctx: &mut Ctx<S>,
        budget: usize,
        counts: &mut (usize, usize),
    ) -> Option<ExitReason> {
        while counts.0 < budget {
            let next = if let Some(work) = self.pending_continue.take() {
                self.state.handle_continue(work, ctx)
            } else {
                let msg = self.mailbox.pop_front()?;
                counts.0 += 1;
                counts.1 += usize::from(msg.is_user());
                if let Msg::IdleTimeout(seq) = msg {
                    if seq != self.idle_seq || self.idle_timer.is_none() {
                        continue; // a timeout that lost the race with a message
                    }
                    self.idle_timer = None;
                } else if let Some(timer) = self.idle_timer.take() {
                    ctx.lp().cancel_timer(timer);
                }
                self.handle(msg, ctx)
            };
            if let Some(reason) = ctx.take_stop() {
                return Some(reason);
            }
            if matches!(next, Next::Wait) {
                continue; // the common case, without a call to `apply`
            }
            let pid = ctx.pid();
            if let Some(reason) = self.apply(ctx.lp(), pid, next) {
                return Some(reason);
            }
        }
        None
    }

    /// After terminate, only continuations of its async work run; calls
    /// still queued fail with the exit reason.
    fn run_terminated(&mut self, lp: &mut Loop, pid: Pid, msg: Msg<S>) {
        match msg {
            Msg::Run(f) => {
                let mut ctx = Ctx::new(lp, pid);
                let state = &mut self.state;
                let _ = catch_unwind(AssertUnwindSafe(|| f(state, &mut ctx)));
            }
            Msg::Call(_, from) => {
                crate::call::fail(lp, from, CallError::Exit(ExitReason::Shutdown))
            }
            _ => {}
        }
    }
}

/// The token handed to `handle_call` aliases the one the framework keeps for
/// an immediate reply; whichever replies first wins, the other finds nothing.
fn from_clone<R>(from: &From<R>) -> From<R> {
    crate::call::from_alias(from)
}

impl<S: GenServer> Process for ServerProc<S> {
    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn accept(&mut self, pending: Pending) {
        match pending {
            Pending::User(boxed) => match boxed.downcast::<Msg<S>>() {
                Ok(msg) => self.mailbox.push_back(*msg),
                Err(_) => tracing::warn!("message of another type dropped"),
            },
            Pending::Sys(sys) => self.mailbox.push_back(Msg::Sys(Box::new(sys))),
        }
    }

    fn has_messages(&self) -> bool {
        !self.mailbox.is_empty() || (self.pending_continue.is_some() && !self.terminated)
    }

    #[inline]
    fn finish_replies(&mut self, procs: &mut Processes) {
        if !self.replies.is_empty() {
            let defer = crate::call::reply_all_in(procs, &mut self.replies);
            debug_assert!(!defer, "replies are finished inside a scheduler pass");
        }
    }

    fn run(&mut self, lp: &mut Loop, pid: Pid, budget: usize) -> Ran {
        let mut counts = (0, 0);
        if self.terminated {
            while counts.0 < budget {
                let Some(msg) = self.mailbox.pop_front() else {
                    break;
                };
                counts.0 += 1;
                counts.1 += usize::from(msg.is_user());
                self.run_terminated(lp, pid, msg);
            }
            return Ran {
                handled: counts.0,
                user_handled: counts.1,
                exit: None,
            };
        }
        // One catch_unwind for the batch: a panic ends the process at the
        // message that panicked; nothing after it runs.
        // Messages that arrive meanwhile wait in the overflow: the batch is
        // at most what is queued now. Immediate replies are buffered and
        // finished by the scheduler when it puts the process back (the
        // lookup it makes anyway), also after a panic, before the exit
        // fails the calls left.
        let replies = std::mem::take(&mut self.replies);
        let mut ctx = Ctx::with_replies(lp, pid, Some(replies));
        let result = catch_unwind(AssertUnwindSafe(|| {
            self.run_batch(&mut ctx, budget, &mut counts)
        }));
        self.replies = ctx.take_replies();
        let exit = match result {
            Ok(exit) => exit,
            Err(panic) => Some(ExitReason::from_panic(panic)),
        };
        Ran {
            handled: counts.0,
            user_handled: counts.1,
            exit,
        }
    }

    fn terminate(&mut self, lp: &mut Loop, pid: Pid, reason: &ExitReason) {
        self.cancel_idle(lp);
        self.terminated = true;
        let mut ctx = Ctx::new(lp, pid);
        let state = &mut self.state;
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| state.terminate(reason, &mut ctx))) {
            tracing::error!(%pid, reason = %ExitReason::from_panic(panic), "terminate panicked");
        }
    }

    fn fail_queued(&mut self, lp: &mut Loop, reason: &ExitReason) {
        self.cancel_idle(lp);
        for msg in self.mailbox.drain(..) {
            if let Msg::Call(_, from) = msg {
                crate::call::fail(lp, from, CallError::Exit(reason.clone()));
            }
        }
    }
}
