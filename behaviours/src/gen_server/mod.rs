//! `gen_server`: a process with typed calls, casts and infos, run as plain
//! sequential callbacks on the loop.
//!
//! ```
//! use ringvisor_behaviours::gen_server::{self, Ctx, GenServer, Init, Reply, StartOptions};
//! use ringvisor_behaviours::From;
//! use ringvisor_runtime::Loop;
//! use std::time::Duration;
//!
//! struct Counter(u64);
//!
//! impl GenServer for Counter {
//!     type Args = u64;
//!     type Call = ();
//!     type Reply = u64;
//!     type Cast = u64;
//!     type Info = ();
//!     type Continue = ();
//!     fn init(start: u64, _ctx: &mut Ctx<Self>) -> Init<Self> {
//!         Init::ok(Counter(start))
//!     }
//!     fn handle_call(&mut self, _: (), _from: From<u64>, _ctx: &mut Ctx<Self>) -> Reply<Self> {
//!         Reply::now(self.0)
//!     }
//!     fn handle_cast(&mut self, n: u64, _ctx: &mut Ctx<Self>) -> gen_server::Next<Self> {
//!         self.0 += n;
//!         gen_server::Next::Wait
//!     }
//! }
//!
//! let mut lp = Loop::new().unwrap();
//! let counter = gen_server::start::<Counter>(&mut lp, 40, StartOptions::default()).unwrap();
//! gen_server::cast(&mut lp, counter, 2).unwrap();
//! gen_server::call(&mut lp, counter, (), Duration::from_secs(1), |lp, reply| {
//!     assert_eq!(reply, Ok(42));
//!     lp.stop();
//! });
//! lp.run().unwrap();
//! ```

use std::marker::PhantomData;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Duration;

use ringvisor_runtime::Loop;

pub use crate::call::{reply, CallError, From, INFINITY};
pub use crate::ctx::{Completer, Ctx};
use crate::pid::{ExitReason, MonitorRef, Pid};
use crate::process::{self, SendError, MAILBOX_CAPACITY_DEFAULT};

mod server;

use server::{fail_pending, push_msg, Msg, ServerProc};

/// A behaviour whose state is `Self`. Every callback runs on the loop thread,
/// one at a time, under `catch_unwind`: a panic ends the process with
/// [`ExitReason::Panic`] and `terminate` runs.
pub trait GenServer: Sized + 'static {
    /// What `init` starts from.
    type Args: 'static;
    /// Requests that expect a reply.
    type Call: 'static;
    /// Replies to calls.
    type Reply: 'static;
    /// Requests without a reply.
    type Cast: 'static;
    /// Plain messages (including timer events from `send_after`).
    type Info: 'static;
    /// Work `handle_continue` does before any further message.
    type Continue: 'static;

    /// Builds the state. `Init::Stop` makes the start fail with that reason;
    /// `Init::Ignore` starts no process.
    fn init(args: Self::Args, ctx: &mut Ctx<Self>) -> Init<Self>;

    /// Handles a call; reply now, later (keep `from` and call `ctx.reply`), or stop.
    fn handle_call(
        &mut self,
        request: Self::Call,
        from: From<Self::Reply>,
        ctx: &mut Ctx<Self>,
    ) -> Reply<Self>;

    /// Handles a cast.
    fn handle_cast(&mut self, _message: Self::Cast, _ctx: &mut Ctx<Self>) -> Next<Self> {
        Next::Wait
    }

    /// Handles an info: a plain message, the idle timeout, a monitor's `Down`,
    /// or a child's `Exit`.
    fn handle_info(&mut self, _info: Info<Self::Info>, _ctx: &mut Ctx<Self>) -> Next<Self> {
        Next::Wait
    }

    /// Runs right after the callback that asked for it, before any message.
    fn handle_continue(&mut self, _work: Self::Continue, _ctx: &mut Ctx<Self>) -> Next<Self> {
        Next::Wait
    }

    /// Runs when the process stops (by request, after a panic, or a
    /// supervisor's `Timeout` shutdown), never on `BrutalKill`. Async work it
    /// starts through `ctx.io` may finish (up to the shutdown timeout) before
    /// the process is gone.
    fn terminate(&mut self, _reason: &ExitReason, _ctx: &mut Ctx<Self>) {}
}

/// What `init` decided.
pub enum Init<S: GenServer> {
    /// Started with this state; then `Next` (a timeout or a continue).
    Ok(S, Next<S>),
    /// Do not start; the start fails with this reason.
    Stop(ExitReason),
    /// Do not start, and that is fine (a supervisor keeps the spec).
    Ignore,
}

impl<S: GenServer> Init<S> {
    /// Started, waiting for messages.
    pub fn ok(state: S) -> Init<S> {
        Init::Ok(state, Next::Wait)
    }
}

/// What a callback wants next.
pub enum Next<S: GenServer> {
    /// Wait for the next message.
    Wait,
    /// Wait, but deliver [`Info::Timeout`] if nothing arrives within this time.
    Timeout(Duration),
    /// Run `handle_continue` with this before any other message.
    Continue(S::Continue),
    /// Stop with this reason.
    Stop(ExitReason),
}

/// What `handle_call` decided.
pub enum Reply<S: GenServer> {
    /// Reply now, then `Next`.
    Now(S::Reply, Next<S>),
    /// Reply later through the kept `From` token, then `Next`.
    Later(Next<S>),
    /// Stop, replying first if a reply is given.
    Stop(ExitReason, Option<S::Reply>),
}

impl<S: GenServer> Reply<S> {
    /// Reply now and wait for the next message.
    pub fn now(reply: S::Reply) -> Reply<S> {
        Reply::Now(reply, Next::Wait)
    }

    /// Keep the `From` and reply later.
    pub fn later() -> Reply<S> {
        Reply::Later(Next::Wait)
    }
}

/// A non-call message as `handle_info` sees it.
#[derive(Debug)]
pub enum Info<I> {
    /// A message sent with [`send_info`] or a timer from `send_after`.
    Msg(I),
    /// No message arrived within the time a callback asked for.
    Timeout,
    /// A monitored process exited.
    Down {
        /// The process that exited.
        pid: Pid,
        /// Why.
        reason: ExitReason,
        /// The monitor that fired.
        monitor: MonitorRef,
    },
    /// A process this one started exited.
    Exit {
        /// The child.
        pid: Pid,
        /// Why.
        reason: ExitReason,
    },
}

/// A typed reference to a running gen_server.
pub struct ServerRef<S> {
    pid: Pid,
    _server: PhantomData<fn() -> S>,
}

impl<S> Clone for ServerRef<S> {
    fn clone(&self) -> Self {
        *self
    }
}

impl<S> Copy for ServerRef<S> {}

impl<S> PartialEq for ServerRef<S> {
    fn eq(&self, other: &Self) -> bool {
        self.pid == other.pid
    }
}

impl<S> std::fmt::Debug for ServerRef<S> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ServerRef({})", self.pid)
    }
}

impl<S> ServerRef<S> {
    /// The server's process id.
    pub fn pid(&self) -> Pid {
        self.pid
    }

    /// A typed reference from a Pid; messages fail with `NoProc` if `pid`
    /// is not a server of type `S`.
    pub fn from_pid(pid: Pid) -> ServerRef<S> {
        ServerRef {
            pid,
            _server: PhantomData,
        }
    }
}

/// How to start a server.
#[derive(Debug, Clone)]
pub struct StartOptions {
    /// Register the process under this name.
    pub name: Option<String>,
    /// Mailbox capacity (default [`MAILBOX_CAPACITY_DEFAULT`]).
    pub mailbox_capacity: usize,
    /// The process told (with `Info::Exit`) when this one exits.
    pub parent: Option<Pid>,
}

impl Default for StartOptions {
    fn default() -> StartOptions {
        StartOptions {
            name: None,
            mailbox_capacity: MAILBOX_CAPACITY_DEFAULT,
            parent: None,
        }
    }
}

impl StartOptions {
    /// Options with a registered name.
    pub fn named(name: impl Into<String>) -> StartOptions {
        StartOptions {
            name: Some(name.into()),
            ..StartOptions::default()
        }
    }
}

/// Why a server did not start.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StartError {
    /// `init` returned `Ignore`.
    Ignored,
    /// `init` stopped (or panicked) with this reason.
    Stopped(ExitReason),
    /// The name is registered to another process.
    NameTaken(String),
}

impl std::fmt::Display for StartError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            StartError::Ignored => f.write_str("ignored"),
            StartError::Stopped(reason) => write!(f, "init stopped: {reason}"),
            StartError::NameTaken(name) => write!(f, "name {name:?} already registered"),
        }
    }
}

impl std::error::Error for StartError {}

/// Starts a server: runs `init` now, on this thread.
pub fn start<S: GenServer>(
    lp: &mut Loop,
    args: S::Args,
    options: StartOptions,
) -> Result<ServerRef<S>, StartError> {
    let pid = process::reserve(lp, options.parent, options.mailbox_capacity);
    if let Some(name) = &options.name {
        if !process::register(lp, pid, name) {
            process::unreserve(lp, pid);
            return Err(StartError::NameTaken(name.clone()));
        }
    }
    let mut ctx = Ctx::new(lp, pid);
    let init = catch_unwind(AssertUnwindSafe(|| S::init(args, &mut ctx)));
    let requested_stop = ctx.take_stop();
    let (state, next) = match (init, requested_stop) {
        (Ok(Init::Ok(_, _)), Some(reason)) | (Ok(Init::Stop(reason)), _) => {
            return Err(abandon::<S>(lp, pid, StartError::Stopped(reason)));
        }
        (Ok(Init::Ignore), _) => return Err(abandon::<S>(lp, pid, StartError::Ignored)),
        (Err(panic), _) => {
            let reason = ExitReason::from_panic(panic);
            return Err(abandon::<S>(lp, pid, StartError::Stopped(reason)));
        }
        (Ok(Init::Ok(state, next)), None) => (state, next),
    };
    let mut proc = ServerProc::new(state);
    let stop = proc.apply(lp, pid, next);
    process::install(lp, pid, Box::new(proc));
    if let Some(reason) = stop {
        process::stop(
            lp,
            pid,
            reason,
            process::Kill::Terminate(process::TERMINATE_GRACE_DEFAULT),
        );
    }
    Ok(ServerRef::from_pid(pid))
}

/// Releases a process whose init did not succeed.
fn abandon<S: GenServer>(lp: &mut Loop, pid: Pid, error: StartError) -> StartError {
    let reason = match &error {
        StartError::Stopped(reason) => reason.clone(),
        _ => ExitReason::Normal,
    };
    process::abandon(lp, pid, &reason, fail_pending::<S>);
    error
}

fn send<S: GenServer>(lp: &mut Loop, pid: Pid, msg: Msg<S>) -> Result<(), SendError> {
    let user = msg.is_user();
    process::deliver(lp, pid, msg, user, push_msg::<S>)
}

/// Calls `server`; the reply (or `Timeout`, `NoProc`, `Overloaded`,
/// `Exit(reason)`) goes to `continuation`, from the loop. Never blocks.
pub fn call<S: GenServer>(
    lp: &mut Loop,
    server: ServerRef<S>,
    request: S::Call,
    timeout: Duration,
    continuation: impl FnOnce(&mut Loop, Result<S::Reply, CallError>) + 'static,
) {
    let now = lp.now();
    let server = server.pid;
    // One table lookup (the table is created by the first process, or by
    // this call) registers the call and queues the request; the rare cases
    // (a timer to arm, a refused send) are out of line.
    let procs = process::table(lp);
    let (from, arm) = crate::call::begin_in(procs, now, server, timeout, continuation);
    let alias = crate::call::from_alias(&from);
    let sent = procs.deliver(server, Msg::Call(request, from), true, push_msg::<S>);
    if let Some(arm) = arm {
        crate::call::arm(lp, arm);
    }
    match sent {
        Ok(true) => process::defer_pass(lp),
        Ok(false) => {}
        // A refused send fails the call through its entry, from the loop.
        Err(e) => refused(lp, alias, e),
    }
}

#[cold]
#[inline(never)]
fn refused<R: 'static>(lp: &mut Loop, from: From<R>, e: SendError) {
    crate::call::fail(lp, from, e.into());
}

/// Casts to `server`: refused at once if it is gone or its mailbox is full.
pub fn cast<S: GenServer>(
    lp: &mut Loop,
    server: ServerRef<S>,
    message: S::Cast,
) -> Result<(), SendError> {
    send::<S>(lp, server.pid, Msg::Cast(message))
}

/// Sends a plain message, delivered to `handle_info` as [`Info::Msg`].
pub fn send_info<S: GenServer>(
    lp: &mut Loop,
    server: ServerRef<S>,
    info: S::Info,
) -> Result<(), SendError> {
    send::<S>(lp, server.pid, Msg::Info(info))
}

/// Runs `f` inside the server, with its state, as if it were a message
/// (not counted against the mailbox capacity). Used for continuations.
pub(crate) fn send_run<S: GenServer>(
    lp: &mut Loop,
    pid: Pid,
    f: impl FnOnce(&mut S, &mut Ctx<S>) + 'static,
) -> bool {
    send(lp, pid, Msg::Run(Box::new(f))).is_ok()
}

/// Stops a server from outside: `terminate` runs with `reason`.
pub fn stop<S: GenServer>(lp: &mut Loop, server: ServerRef<S>, reason: ExitReason) -> bool {
    process::stop(
        lp,
        server.pid,
        reason,
        process::Kill::Terminate(process::TERMINATE_GRACE_DEFAULT),
    )
}
