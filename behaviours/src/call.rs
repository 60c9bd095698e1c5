//! Calls in flight: who waits for which reply, with what timeout.
//!
//! Each reply type `R` has its own table (a loop extension), so replies are
//! never boxed as `Any`. A call ends exactly once: with the reply, `Timeout`,
//! `Exit` (the callee died), `NoProc` or `Overloaded`; whichever comes first
//! removes the entry, and anything later (a late reply) finds nothing and is
//! dropped. Continuations always run from the loop, never inside `reply`.

use std::any::TypeId;
use std::marker::PhantomData;
use std::time::Duration;

use ringvisor_runtime::{Loop, TimerId};

use crate::pid::{ExitReason, Pid};
use crate::process::{self, SendError};

/// Use as a call timeout to wait forever (OTP's `infinity`).
pub const INFINITY: Duration = Duration::MAX;

/// Why a call got no reply.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CallError {
    /// No reply within the timeout.
    Timeout,
    /// The callee does not exist (exited, or a stale Pid).
    NoProc,
    /// The callee's mailbox is full.
    Overloaded,
    /// The callee exited before replying.
    Exit(ExitReason),
}

impl std::fmt::Display for CallError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CallError::Timeout => f.write_str("call timed out"),
            CallError::NoProc => f.write_str("no such process"),
            CallError::Overloaded => f.write_str("callee overloaded"),
            CallError::Exit(reason) => write!(f, "callee exited: {reason}"),
        }
    }
}

impl std::error::Error for CallError {}

impl std::convert::From<SendError> for CallError {
    fn from(e: SendError) -> CallError {
        match e {
            SendError::NoProc => CallError::NoProc,
            SendError::Overloaded => CallError::Overloaded,
        }
    }
}

/// The token a server replies through; reply once with `reply` (or by
/// returning a reply from `handle_call`).
#[derive(Debug, PartialEq, Eq, Hash)]
pub struct From<R> {
    key: u32,
    generation: u32,
    _reply: PhantomData<fn(R)>,
}

type Continuation<R> = Box<dyn FnOnce(&mut Loop, Result<R, CallError>)>;

struct Waiting<R> {
    generation: u32,
    callee: Pid,
    timer: Option<TimerId>,
    continuation: Continuation<R>,
}

struct Calls<R> {
    waiting: slab::Slab<Waiting<R>>,
    next_generation: u32,
    /// Whether the callee-exit failer for `R` is registered.
    registered: bool,
}

fn calls<R: 'static>(lp: &mut Loop) -> &mut Calls<R> {
    lp.extension_or_insert_with(|| Calls::<R> {
        waiting: slab::Slab::new(),
        next_generation: 0,
        registered: false,
    })
}

/// Registers a call to `callee` and returns the token for its reply.
pub(crate) fn begin<R: 'static>(
    lp: &mut Loop,
    callee: Pid,
    timeout: Duration,
    continuation: impl FnOnce(&mut Loop, Result<R, CallError>) + 'static,
) -> From<R> {
    let table = calls::<R>(lp);
    table.next_generation = table.next_generation.wrapping_add(1);
    let generation = table.next_generation;
    let key = table.waiting.insert(Waiting {
        generation,
        callee,
        timer: None,
        continuation: Box::new(continuation),
    }) as u32;
    if !std::mem::replace(&mut table.registered, true) {
        // First call with this reply type: let callee exits fail these calls.
        process::table(lp).register_failer(TypeId::of::<R>(), fail_callee::<R>);
    }
    if timeout != INFINITY {
        let timer = lp.timer(timeout, move |lp| {
            finish::<R>(lp, key, generation, Err(CallError::Timeout), false);
        });
        calls::<R>(lp).waiting[key as usize].timer = Some(timer);
    }
    From {
        key,
        generation,
        _reply: PhantomData,
    }
}

/// A second token for the same call (the framework keeps one to reply with
/// when `handle_call` answers at once).
pub(crate) fn from_alias<R>(from: &From<R>) -> From<R> {
    From {
        key: from.key,
        generation: from.generation,
        _reply: PhantomData,
    }
}

/// Sends `value` to whoever waits on `from`. A reply after the caller gave up
/// (timeout) is dropped. Returns true if someone was waiting.
pub fn reply<R: 'static>(lp: &mut Loop, from: From<R>, value: R) -> bool {
    finish::<R>(lp, from.key, from.generation, Ok(value), true)
}

/// Fails a call whose request never reached the callee.
pub(crate) fn fail<R: 'static>(lp: &mut Loop, from: From<R>, error: CallError) {
    finish::<R>(lp, from.key, from.generation, Err(error), true);
}

fn finish<R: 'static>(
    lp: &mut Loop,
    key: u32,
    generation: u32,
    result: Result<R, CallError>,
    cancel_timer: bool,
) -> bool {
    let table = calls::<R>(lp);
    match table.waiting.get(key as usize) {
        Some(w) if w.generation == generation => {}
        _ => return false,
    }
    let waiting = table.waiting.remove(key as usize);
    if cancel_timer {
        if let Some(timer) = waiting.timer {
            lp.cancel_timer(timer);
        }
    }
    let continuation = waiting.continuation;
    lp.defer(move |lp| continuation(lp, result));
    true
}

/// Fails every call of reply type `R` still owed by `callee`.
fn fail_callee<R: 'static>(lp: &mut Loop, callee: Pid, reason: &ExitReason) {
    let owed: Vec<(u32, u32)> = calls::<R>(lp)
        .waiting
        .iter()
        .filter(|(_, w)| w.callee == callee)
        .map(|(key, w)| (key as u32, w.generation))
        .collect();
    for (key, generation) in owed {
        finish::<R>(
            lp,
            key,
            generation,
            Err(CallError::Exit(reason.clone())),
            true,
        );
    }
}

/// Calls still waiting for a reply of type `R` (for tests and status pages).
pub fn waiting<R: 'static>(lp: &mut Loop) -> usize {
    calls::<R>(lp).waiting.len()
}
