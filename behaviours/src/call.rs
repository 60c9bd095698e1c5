//! Calls in flight: who waits for which reply, with what timeout.
//!
//! Each reply type `R` has its own table, kept in the process table's
//! [`CallTables`] (one loop-extension lookup reaches both), so replies are
//! never boxed as `Any`. A call ends exactly once: with the reply, `Timeout`,
//! `Exit` (the callee died), `NoProc` or `Overloaded`; whichever comes first
//! removes the entry, and anything later (a late reply) finds nothing and is
//! dropped. Continuations always run from the scheduler pass, never inside
//! `reply`: a finished call queues its continuation and the pass drains it,
//! so a round trip between processes needs no `Loop::defer`.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::marker::PhantomData;
use std::time::{Duration, Instant};

use ringvisor_runtime::{Loop, TimerId};

use crate::pid::{ExitReason, Pid};
use crate::process::{self, Processes, SendError, Work};

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

pub(crate) type Continuation<R> = Box<dyn FnOnce(&mut Loop, Result<R, CallError>)>;
type Finished<R> = (Continuation<R>, Result<R, CallError>);

struct Waiting<R> {
    generation: u32,
    callee: Pid,
    continuation: Continuation<R>,
}

/// Calls with one timeout duration, in deadline order (deadlines of one
/// duration grow with the loop's clock, so a FIFO is sorted). One loop timer
/// per queue replaces a timer per call. The timer stays armed while calls
/// come and go (it may fire early and re-arm for the new front); it is
/// canceled only when a drain finds the queue empty, so back-to-back calls
/// do not each insert and cancel a timer.
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
    deadlines: Vec<Deadlines>,
    /// Finished calls whose continuations run at the next drain.
    ready: VecDeque<Finished<R>>,
    /// An empty queue swapped with `ready` by a drain (keeps its capacity:
    /// no allocation per drain).
    spare: VecDeque<Finished<R>>,
    drain_scheduled: bool,
}

/// A reply type's drain, run by the scheduler pass with the budget left:
/// returns how many continuations ran and the pass's next work.
pub(crate) type Drain = fn(&mut Loop, usize) -> (usize, Work);

/// Every reply type's call table, plus the drains the scheduler owes.
#[derive(Default)]
pub(crate) struct CallTables {
    tables: Vec<(TypeId, Box<dyn Any>)>,
    /// Reply types with finished calls, in the order they first finished.
    pub(crate) drains: VecDeque<Drain>,
}

impl CallTables {
    /// The table of reply type `R`, created on first use (with its
    /// callee-exit failer registered in `failers`).
    fn get<R: 'static>(&mut self) -> &mut Calls<R> {
        let id = TypeId::of::<R>();
        let index = match self.tables.iter().position(|(t, _)| *t == id) {
            Some(index) => index,
            None => self.insert::<R>(),
        };
        self.tables[index].1.downcast_mut().expect("TypeId matched")
    }

    /// Adds the table of `R` (once per reply type: kept out of `get`'s
    /// hot path).
    #[cold]
    #[inline(never)]
    fn insert<R: 'static>(&mut self) -> usize {
        self.tables
            .push((TypeId::of::<R>(), Box::new(Calls::<R>::new())));
        self.tables.len() - 1
    }

    /// The table of `R` if any call of that type was ever made.
    fn find<R: 'static>(&mut self) -> Option<&mut Calls<R>> {
        let id = TypeId::of::<R>();
        self.tables
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, table)| table.downcast_mut())
    }
}

impl<R: 'static> Calls<R> {
    fn new() -> Calls<R> {
        Calls {
            waiting: slab::Slab::new(),
            next_generation: 0,
            deadlines: Vec::new(),
            ready: VecDeque::new(),
            spare: VecDeque::new(),
            drain_scheduled: false,
        }
    }
}

/// A timer to arm for a call just begun: (reply type's expire, queue, after).
pub(crate) struct Arm {
    expire: fn(&mut Loop, u64),
    index: usize,
    after: Duration,
}

/// Registers a call to `callee` in `procs` and returns the token for its
/// reply, plus a deadline timer to arm (the caller arms it: the loop is
/// borrowed through `procs` here). `now` is the loop's time.
pub(crate) fn begin_in<R: 'static>(
    procs: &mut Processes,
    now: Instant,
    callee: Pid,
    timeout: Duration,
    continuation: Continuation<R>,
) -> (From<R>, Option<Arm>) {
    if !procs
        .calls
        .tables
        .iter()
        .any(|(t, _)| *t == TypeId::of::<R>())
    {
        // First call with this reply type: let callee exits fail these calls.
        procs.register_failer(TypeId::of::<R>(), fail_callee::<R>);
    }
    let table = procs.calls.get::<R>();
    table.next_generation = table.next_generation.wrapping_add(1);
    let generation = table.next_generation;
    let queue_index = (timeout != INFINITY).then(|| table.deadline_queue(timeout));
    let key = table.waiting.insert(Waiting {
        generation,
        callee,
        continuation,
    });
    assert!(key < u32::MAX as usize, "call table full");
    let key = key as u32;
    let mut arm = None;
    if let Some(index) = queue_index {
        let deadlines = &mut table.deadlines[index];
        deadlines.queue.push_back((now + timeout, key, generation));
        if deadlines.timer.is_none() {
            arm = Some(Arm {
                expire: expire::<R>,
                index,
                after: timeout,
            });
        }
    }
    let from = From {
        key,
        generation,
        _reply: PhantomData,
    };
    (from, arm)
}

/// Arms the deadline timer `begin_in` asked for.
pub(crate) fn arm<R: 'static>(lp: &mut Loop, arm: Arm) {
    let timer = lp.timer_fn(arm.after, arm.expire, arm.index as u64);
    process::table(lp).calls.get::<R>().deadlines[arm.index].timer = Some(timer);
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

    /// Drops finished calls from the front of every deadline queue; returns
    /// the timer of a queue that emptied, to cancel (at most one per call:
    /// the caller loops).
    fn trim(&mut self) -> Option<TimerId> {
        for index in 0..self.deadlines.len() {
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
                if let Some(timer) = self.deadlines[index].timer.take() {
                    return Some(timer);
                }
            }
        }
        None
    }

    /// Ends a call: queues its continuation for the next drain. Returns
    /// `None` if nobody waits (a late reply), else whether the drain of `R`
    /// must be scheduled.
    fn finish(&mut self, key: u32, generation: u32, result: Result<R, CallError>) -> Option<bool> {
        if !self.is_waiting(key, generation) {
            return None;
        }
        let waiting = self.waiting.remove(key as usize);
        self.ready.push_back((waiting.continuation, result));
        Some(!std::mem::replace(&mut self.drain_scheduled, true))
    }
}

/// The timer of deadline queue `index` fired: time out what is due, re-arm.
fn expire<R: 'static>(lp: &mut Loop, index: u64) {
    let index = index as usize;
    let now = lp.now();
    let mut schedule_pass = false;
    let rearm = {
        let procs = process::table(lp);
        let table = procs.calls.get::<R>();
        let mut schedule_drain = false;
        table.deadlines[index].timer = None;
        let rearm = loop {
            let Some(&(deadline, key, generation)) = table.deadlines[index].queue.front() else {
                break None;
            };
            if deadline > now && table.is_waiting(key, generation) {
                break Some(deadline - now);
            }
            table.deadlines[index].queue.pop_front();
            schedule_drain |= table.finish(key, generation, Err(CallError::Timeout)) == Some(true);
        };
        if schedule_drain {
            schedule_pass = procs.schedule_drain(drain::<R>);
        }
        rearm
    };
    if let Some(after) = rearm {
        let timer = lp.timer_fn(after, expire::<R>, index as u64);
        process::table(lp).calls.get::<R>().deadlines[index].timer = Some(timer);
    }
    if schedule_pass {
        process::defer_pass(lp);
    }
}

/// Runs the continuations of calls of type `R` finished so far (called by
/// the scheduler pass with `budget` left), cancels the deadline timers of
/// queues left empty, and picks the pass's next work in the same lookup.
fn drain<R: 'static>(lp: &mut Loop, budget: usize) -> (usize, Work) {
    let mut batch = {
        let table = process::existing(lp).calls.get::<R>();
        table.drain_scheduled = false;
        let mut batch = std::mem::take(&mut table.spare);
        std::mem::swap(&mut batch, &mut table.ready);
        batch
    };
    let ran = batch.len();
    while let Some((continuation, result)) = batch.pop_front() {
        continuation(lp, result);
    }
    let procs = process::existing(lp);
    let table = procs.calls.get::<R>();
    table.spare = batch;
    let Some(timer) = table.trim() else {
        if ran >= budget {
            return (ran, Work::Idle);
        }
        return (ran, procs.next_work(false));
    };
    let mut idle = vec![timer];
    while let Some(timer) = table.trim() {
        idle.push(timer);
    }
    for timer in idle {
        lp.cancel_timer(timer);
    }
    (
        ran,
        process::next_work(lp, budget.saturating_sub(ran), false),
    )
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

/// Sends each reply of `replies` (emptied) with one table lookup.
pub(crate) fn reply_all<R: 'static>(lp: &mut Loop, replies: &mut Vec<(From<R>, R)>) {
    let procs = process::existing(lp);
    let Some(table) = procs.calls.find::<R>() else {
        replies.clear();
        return;
    };
    let mut schedule_drain = false;
    for (from, value) in replies.drain(..) {
        schedule_drain |= table.finish(from.key, from.generation, Ok(value)) == Some(true);
    }
    if schedule_drain && procs.schedule_drain(drain::<R>) {
        process::defer_pass(lp);
    }
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
    let procs = process::existing(lp);
    let Some(table) = procs.calls.find::<R>() else {
        return false;
    };
    let Some(schedule_drain) = table.finish(key, generation, result) else {
        return false;
    };
    if schedule_drain && procs.schedule_drain(drain::<R>) {
        process::defer_pass(lp);
    }
    true
}

/// Fails every call of reply type `R` still owed by `callee`.
fn fail_callee<R: 'static>(lp: &mut Loop, callee: Pid, reason: &ExitReason) {
    let owed: Vec<(u32, u32)> = match process::table(lp).calls.find::<R>() {
        Some(table) => table
            .waiting
            .iter()
            .filter(|(_, w)| w.callee == callee)
            .map(|(key, w)| (key as u32, w.generation))
            .collect(),
        None => return,
    };
    for (key, generation) in owed {
        finish::<R>(lp, key, generation, Err(CallError::Exit(reason.clone())));
    }
}

/// Calls still waiting for a reply of type `R` (for tests and status pages).
pub fn waiting<R: 'static>(lp: &mut Loop) -> usize {
    process::table(lp)
        .calls
        .find::<R>()
        .map_or(0, |table| table.waiting.len())
}
