//! Calls in flight: who waits for which reply, with what timeout.
//!
//! Each reply type `R` has its own table (a loop extension), so replies are
//! never boxed as `Any`. A call ends exactly once: with the reply, `Timeout`,
//! `Exit` (the callee died), `NoProc` or `Overloaded`; whichever comes first
//! removes the entry, and anything later (a late reply) finds nothing and is
//! dropped. Continuations always run from the loop, never inside `reply`.

use std::any::TypeId;
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

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
    /// Index of its deadline queue, if it has a timeout.
    deadlines: Option<u8>,
    continuation: Continuation<R>,
}

/// Calls with one timeout duration, in deadline order (deadlines of one
/// duration grow with the loop's clock, so a FIFO is sorted). One loop timer
/// per queue, armed for its front, replaces a timer per call.
struct Deadlines {
    timeout: Duration,
    queue: VecDeque<(Instant, u32, u32)>,
    timer: Option<TimerId>,
}

/// Distinct timeout durations tracked per reply type.
const DEADLINE_QUEUES_MAX: usize = 16;

struct Calls<R> {
    waiting: slab::Slab<Waiting<R>>,
    next_generation: u32,
    /// Whether the callee-exit failer for `R` is registered.
    registered: bool,
    deadlines: Vec<Deadlines>,
    /// Finished calls whose continuations run at the next drain.
    ready: VecDeque<(Continuation<R>, Result<R, CallError>)>,
    drain_scheduled: bool,
}

fn calls<R: 'static>(lp: &mut Loop) -> &mut Calls<R> {
    lp.extension_or_insert_with(|| Calls::<R> {
        waiting: slab::Slab::new(),
        next_generation: 0,
        registered: false,
        deadlines: Vec::new(),
        ready: VecDeque::new(),
        drain_scheduled: false,
    })
}

/// Registers a call to `callee` and returns the token for its reply.
pub(crate) fn begin<R: 'static>(
    lp: &mut Loop,
    callee: Pid,
    timeout: Duration,
    continuation: impl FnOnce(&mut Loop, Result<R, CallError>) + 'static,
) -> From<R> {
    let now = lp.now();
    let table = calls::<R>(lp);
    table.next_generation = table.next_generation.wrapping_add(1);
    let generation = table.next_generation;
    let queue_index = (timeout != INFINITY).then(|| table.deadline_queue(timeout));
    let key = table.waiting.insert(Waiting {
        generation,
        callee,
        deadlines: queue_index.map(|i| i as u8),
        continuation: Box::new(continuation),
    }) as u32;
    let register = !std::mem::replace(&mut table.registered, true);
    let mut arm = None;
    if let Some(index) = queue_index {
        let deadlines = &mut table.deadlines[index];
        deadlines.queue.push_back((now + timeout, key, generation));
        if deadlines.timer.is_none() {
            arm = Some((index, timeout));
        }
    }
    if register {
        // First call with this reply type: let callee exits fail these calls.
        process::table(lp).register_failer(TypeId::of::<R>(), fail_callee::<R>);
    }
    if let Some((index, after)) = arm {
        let timer = lp.timer_fn(after, expire::<R>, index as u64);
        calls::<R>(lp).deadlines[index].timer = Some(timer);
    }
    From {
        key,
        generation,
        _reply: PhantomData,
    }
}

impl<R> Calls<R> {
    fn deadline_queue(&mut self, timeout: Duration) -> usize {
        if let Some(index) = self.deadlines.iter().position(|d| d.timeout == timeout) {
            return index;
        }
        assert!(
            self.deadlines.len() < DEADLINE_QUEUES_MAX,
            "more than {DEADLINE_QUEUES_MAX} distinct call timeouts for one reply type"
        );
        self.deadlines.push(Deadlines {
            timeout,
            queue: VecDeque::new(),
            timer: None,
        });
        self.deadlines.len() - 1
    }

    fn is_waiting(&self, key: u32, generation: u32) -> bool {
        self.waiting
            .get(key as usize)
            .is_some_and(|w| w.generation == generation)
    }

    /// Drops finished calls from the front of a deadline queue; returns a
    /// timer to cancel if the queue emptied.
    fn trim(&mut self, index: usize) -> Option<TimerId> {
        let mut deadlines = std::mem::take(&mut self.deadlines[index].queue);
        while let Some((_, key, generation)) = deadlines.front() {
            if self.is_waiting(*key, *generation) {
                break;
            }
            deadlines.pop_front();
        }
        let emptied = deadlines.is_empty();
        self.deadlines[index].queue = deadlines;
        if emptied {
            self.deadlines[index].timer.take()
        } else {
            None
        }
    }
}

/// The timer of deadline queue `index` fired: time out what is due, re-arm.
fn expire<R: 'static>(lp: &mut Loop, index: u64) {
    let index = index as usize;
    let now = lp.now();
    calls::<R>(lp).deadlines[index].timer = None;
    loop {
        let table = calls::<R>(lp);
        let Some(&(deadline, key, generation)) = table.deadlines[index].queue.front() else {
            return;
        };
        if !table.is_waiting(key, generation) {
            table.deadlines[index].queue.pop_front();
            continue;
        }
        if deadline > now {
            let timer = lp.timer_fn(deadline - now, expire::<R>, index as u64);
            calls::<R>(lp).deadlines[index].timer = Some(timer);
            return;
        }
        table.deadlines[index].queue.pop_front();
        finish::<R>(lp, key, generation, Err(CallError::Timeout));
    }
}

/// Runs the continuations of finished calls, from the loop.
fn drain<R: 'static>(lp: &mut Loop) {
    let ready = {
        let table = calls::<R>(lp);
        table.drain_scheduled = false;
        std::mem::take(&mut table.ready)
    };
    for (continuation, result) in ready {
        continuation(lp, result);
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
    finish::<R>(lp, from.key, from.generation, Ok(value))
}

/// Fails a call whose request never reached the callee.
pub(crate) fn fail<R: 'static>(lp: &mut Loop, from: From<R>, error: CallError) {
    finish::<R>(lp, from.key, from.generation, Err(error));
}

/// Ends a call: its continuation runs at the next drain, never from here.
fn finish<R: 'static>(
    lp: &mut Loop,
    key: u32,
    generation: u32,
    result: Result<R, CallError>,
) -> bool {
    let table = calls::<R>(lp);
    if !table.is_waiting(key, generation) {
        return false;
    }
    let waiting = table.waiting.remove(key as usize);
    let cancel = waiting
        .deadlines
        .and_then(|index| table.trim(index as usize));
    table.ready.push_back((waiting.continuation, result));
    let schedule = !std::mem::replace(&mut table.drain_scheduled, true);
    if let Some(timer) = cancel {
        lp.cancel_timer(timer);
    }
    if schedule {
        lp.defer(drain::<R>);
    }
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
        finish::<R>(lp, key, generation, Err(CallError::Exit(reason.clone())));
    }
}

/// Calls still waiting for a reply of type `R` (for tests and status pages).
pub fn waiting<R: 'static>(lp: &mut Loop) -> usize {
    calls::<R>(lp).waiting.len()
}
