//! The call tables: one per call site (continuation type `F`, reply type
//! `R`), with the calls waiting, their deadline queues, and the finished
//! calls whose continuations the scheduler pass owes.
//!
//! Invariants:
//! - A waiting call is in its table's slab until it finishes; its deadline
//!   queue entry may outlive it (queues are trimmed from the front).
//! - The counts in `CallTables::drains` for a table add up to the length of
//!   its ready queue, and the entries are in the order calls finished.

use std::any::{Any, TypeId};
use std::collections::VecDeque;
use std::time::{Duration, Instant};

use ringvisor_runtime::{Loop, TimerId};

use super::CallError;
use crate::pid::{ExitReason, Pid};
use crate::process::{self, Processes, Work};

/// Distinct timeout durations tracked per call table.
const DEADLINE_QUEUES_MAX: usize = 16;

/// A call table's drain, run by the scheduler pass as `(table, count,
/// budget left)`: runs the next `count` continuations of that table and
/// returns how many ran and the pass's next work.
pub(crate) type Drain = fn(&mut Loop, u32, u32, usize) -> (usize, Work);

pub(super) struct Waiting<F> {
    pub(super) generation: u32,
    pub(super) callee: Pid,
    pub(super) continuation: F,
}

/// Calls with one timeout duration, in deadline order: each entry holds
/// when its call began (deadlines of one duration grow with the loop's
/// clock, so a FIFO is sorted; the deadline itself is worked out only when
/// the timer fires, which keeps an `Instant` addition off every call). One loop timer
/// per queue replaces a timer per call. The timer stays armed while calls
/// come and go (it may fire early and re-arm for the new front); it is
/// canceled only when a drain finds the queue empty, so back-to-back calls
/// do not each insert and cancel a timer.
pub(super) struct Deadlines {
    timeout: Duration,
    pub(super) queue: VecDeque<(Instant, u32, u32)>,
    pub(super) timer: Option<TimerId>,
}

type Finished<F, R> = (F, Result<R, CallError>);

pub(super) struct Calls<F, R> {
    pub(super) waiting: slab::Slab<Waiting<F>>,
    pub(super) next_generation: u32,
    pub(super) deadlines: Vec<Deadlines>,
    /// Finished calls whose continuations run at the next drains.
    ready: Vec<Finished<F, R>>,
    /// An empty queue a drain swaps with `ready` (keeps its capacity: no
    /// allocation per drain).
    spare: Vec<Finished<F, R>>,
}

struct Entry {
    /// The type of the table (`Calls<F, R>`).
    type_id: TypeId,
    /// The type of its replies, `R`.
    reply_type: TypeId,
    table: Box<dyn Any>,
    waiting: fn(&dyn Any) -> usize,
}

/// Hint slots of [`CallTables::position`].
const TABLE_HINTS: usize = 64;

/// Every call table, plus the drains the scheduler owes.
#[derive(Default)]
pub(crate) struct CallTables {
    tables: Vec<Entry>,
    /// A guess at each call site's table index, by a hash of its type (a
    /// scan compares a 128-bit `TypeId` per table: a server with a few call
    /// sites paid more for the scan than for the rest of finding its table).
    /// Only ever a guess: checked against the entry's type.
    hints: TableHints,
    /// Continuations owed, in the order their calls finished, as
    /// `(drain, table, count)`: consecutive finishes of one table share an
    /// entry, so a batch of replies is one drain.
    pub(crate) drains: VecDeque<(Drain, u32, u32)>,
}

struct TableHints([u8; TABLE_HINTS]);

impl Default for TableHints {
    fn default() -> TableHints {
        TableHints([0; TABLE_HINTS])
    }
}

/// The hint slot of a table type (constant once inlined).
#[inline(always)]
fn hint_slot(id: TypeId) -> usize {
    ringvisor_runtime::fold_type_id(id) as usize % TABLE_HINTS
}

impl CallTables {
    #[inline(always)]
    pub(super) fn position<F: 'static, R: 'static>(&mut self) -> Option<usize> {
        let id = TypeId::of::<Calls<F, R>>();
        let slot = hint_slot(id);
        let guess = usize::from(self.hints.0[slot]);
        if self.tables.get(guess).is_some_and(|e| e.type_id == id) {
            return Some(guess);
        }
        self.position_slow(id, slot)
    }

    #[cold]
    #[inline(never)]
    fn position_slow(&mut self, id: TypeId, slot: usize) -> Option<usize> {
        let index = self.tables.iter().position(|e| e.type_id == id)?;
        if let Ok(small) = u8::try_from(index) {
            self.hints.0[slot] = small;
        }
        Some(index)
    }

    pub(super) fn insert<F: 'static, R: 'static>(&mut self, calls: Calls<F, R>) -> usize {
        self.tables.push(Entry {
            type_id: TypeId::of::<Calls<F, R>>(),
            reply_type: TypeId::of::<R>(),
            table: Box::new(calls),
            waiting: waiting_len::<F, R>,
        });
        self.tables.len() - 1
    }

    /// The table at `index`, of continuation type `F`.
    #[inline(always)]
    pub(super) fn typed<F: 'static, R: 'static>(&mut self, index: usize) -> &mut Calls<F, R> {
        self.tables[index]
            .table
            .downcast_mut()
            .expect("a call table keeps its index and type")
    }

    /// Calls waiting for a reply of type `R`, over all tables.
    pub(super) fn waiting<R: 'static>(&self) -> usize {
        let id = TypeId::of::<R>();
        self.tables
            .iter()
            .filter(|e| e.reply_type == id)
            .map(|e| (e.waiting)(&*e.table))
            .sum()
    }

    fn push_drain(&mut self, drain: Drain, table: u32, count: u32) {
        if let Some(back) = self.drains.back_mut() {
            if back.1 == table {
                back.2 += count;
                return;
            }
        }
        self.drains.push_back((drain, table, count));
    }
}

fn waiting_len<F: 'static, R: 'static>(table: &dyn Any) -> usize {
    table
        .downcast_ref::<Calls<F, R>>()
        .map_or(0, |calls| calls.waiting.len())
}

impl Processes {
    /// Queues one continuation of `table` for the scheduler pass; true if a
    /// pass must be deferred (none is scheduled or running).
    pub(crate) fn schedule_drain(&mut self, drain: Drain, table: u32) -> bool {
        self.calls.push_drain(drain, table, 1);
        self.schedule_pass()
    }
}

impl<F, R> Calls<F, R> {
    pub(super) fn new() -> Calls<F, R> {
        Calls {
            waiting: slab::Slab::new(),
            next_generation: 0,
            deadlines: Vec::new(),
            ready: Vec::new(),
            spare: Vec::new(),
        }
    }

    #[inline(always)]
    pub(super) fn deadline_queue(&mut self, timeout: Duration) -> usize {
        // Most call sites use one timeout: its queue is the first.
        if self.deadlines.first().is_some_and(|d| d.timeout == timeout) {
            return 0;
        }
        self.other_deadline_queue(timeout)
    }

    #[inline(never)]
    fn other_deadline_queue(&mut self, timeout: Duration) -> usize {
        if let Some(index) = self.deadlines.iter().position(|d| d.timeout == timeout) {
            return index;
        }
        assert!(
            self.deadlines.len() < DEADLINE_QUEUES_MAX,
            "more than {DEADLINE_QUEUES_MAX} distinct call timeouts at one call site"
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
    /// the timer of a queue that emptied, to cancel (one per call: the
    /// caller loops).
    fn trim(&mut self) -> Option<TimerId> {
        let waiting = &self.waiting;
        for deadlines in &mut self.deadlines {
            while let Some(&(_, key, generation)) = deadlines.queue.front() {
                let live = waiting
                    .get(key as usize)
                    .is_some_and(|w| w.generation == generation);
                if live {
                    break;
                }
                deadlines.queue.pop_front();
            }
            if deadlines.queue.is_empty() {
                if let Some(timer) = deadlines.timer.take() {
                    return Some(timer);
                }
            }
        }
        None
    }
}

/// Packs a table and deadline queue index into a timer's argument.
pub(super) fn pack(table: usize, queue: usize) -> u64 {
    debug_assert!(queue < DEADLINE_QUEUES_MAX);
    ((table as u64) << 8) | queue as u64
}

fn unpack(arg: u64) -> (usize, usize) {
    ((arg >> 8) as usize, (arg & 0xff) as usize)
}

/// Arms the deadline timer of a table's queue (`Arm`).
pub(super) fn arm<F, R>(lp: &mut Loop, arg: u64, after: Duration)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let timer = lp.timer_fn(after, expire::<F, R>, arg);
    set_timer::<F, R>(process::existing(lp), arg, timer);
}

pub(super) fn set_timer<F: 'static, R: 'static>(procs: &mut Processes, arg: u64, timer: TimerId) {
    let (table, queue) = unpack(arg);
    procs.calls.typed::<F, R>(table).deadlines[queue].timer = Some(timer);
}

/// Ends a call of table `table`: queues its continuation for a drain.
/// `None` if nobody waits (a late reply), else whether a pass must be
/// deferred.
#[inline]
pub(super) fn finish_in<F, R>(
    procs: &mut Processes,
    table: u32,
    key: u32,
    generation: u32,
    result: Result<R, CallError>,
) -> Option<bool>
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let calls = procs.calls.typed::<F, R>(table as usize);
    if !calls.is_waiting(key, generation) {
        return None;
    }
    let waiting = calls.waiting.remove(key as usize);
    calls.ready.push((waiting.continuation, result));
    Some(procs.schedule_drain(drain::<F, R>, table))
}

/// Ends `first` and the replies after it that go to its table `F, R` (see
/// `RunFinisher`): late ones are dropped, the others' continuations queued
/// under one drain entry. Returns the first reply to another table.
pub(super) fn finish_run<F, R>(
    procs: &mut Processes,
    first: (super::From<R>, R),
    rest: &mut super::Replies<'_, R>,
) -> (Option<(super::From<R>, R)>, bool)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let table = first.0.table;
    let calls = procs.calls.typed::<F, R>(table as usize);
    let mut finished = 0;
    let mut next = Some(first);
    let other = loop {
        let Some((from, value)) = next else {
            break None;
        };
        if from.table != table {
            break Some((from, value));
        }
        if calls.is_waiting(from.key, from.generation) {
            let waiting = calls.waiting.remove(from.key as usize);
            calls.ready.push((waiting.continuation, Ok(value)));
            finished += 1;
        } // else a late reply: the caller gave up
        next = rest.next();
    };
    if finished == 0 {
        return (other, false);
    }
    procs.calls.push_drain(drain::<F, R>, table, finished);
    (other, procs.schedule_pass())
}

/// The timer of a deadline queue fired: time out what is due, re-arm.
pub(super) fn expire<F, R>(lp: &mut Loop, arg: u64)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let (table, queue) = unpack(arg);
    let now = lp.now();
    let procs = process::existing(lp);
    procs.calls.typed::<F, R>(table).deadlines[queue].timer = None;
    let mut defer = false;
    let rearm = loop {
        let calls = procs.calls.typed::<F, R>(table);
        let deadlines = &calls.deadlines[queue];
        let Some(&(began, key, generation)) = deadlines.queue.front() else {
            break None;
        };
        let elapsed = now.saturating_duration_since(began);
        if elapsed < deadlines.timeout && calls.is_waiting(key, generation) {
            break Some(deadlines.timeout - elapsed);
        }
        calls.deadlines[queue].queue.pop_front();
        let timed_out = finish_in::<F, R>(
            procs,
            table as u32,
            key,
            generation,
            Err(CallError::Timeout),
        );
        defer |= timed_out == Some(true);
    };
    if let Some(after) = rearm {
        let timer = lp.timer_fn(after, expire::<F, R>, arg);
        set_timer::<F, R>(process::existing(lp), arg, timer);
    }
    if defer {
        process::defer_pass(lp);
    }
}

/// Runs the next `count` continuations of table `table` (called by the
/// scheduler pass with `budget` left), cancels the deadline timers of queues
/// left empty, and picks the pass's next work in the same lookup.
fn drain<F, R>(lp: &mut Loop, table: u32, count: u32, budget: usize) -> (usize, Work)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let mut batch = {
        let calls = process::existing(lp).calls.typed::<F, R>(table as usize);
        let count = count as usize;
        debug_assert!(count <= calls.ready.len());
        let mut batch = std::mem::take(&mut calls.spare);
        if count >= calls.ready.len() {
            std::mem::swap(&mut batch, &mut calls.ready);
        } else {
            batch.extend(calls.ready.drain(..count));
        }
        batch
    };
    let ran = batch.len();
    for (continuation, result) in batch.drain(..) {
        continuation(lp, result);
    }
    let procs = process::existing(lp);
    let calls = procs.calls.typed::<F, R>(table as usize);
    // The spare taken above was left as `Vec::new()`, which owns no
    // memory: forgetting it skips a drop call per drain and leaks nothing.
    let empty = std::mem::replace(&mut calls.spare, batch);
    debug_assert_eq!(empty.capacity(), 0);
    std::mem::forget(empty);
    let Some(timer) = calls.trim() else {
        if ran >= budget {
            return (ran, Work::Idle);
        }
        return (ran, procs.next_work());
    };
    let mut idle = vec![timer];
    while let Some(timer) = calls.trim() {
        idle.push(timer);
    }
    for timer in idle {
        lp.cancel_timer(timer);
    }
    (ran, process::next_work(lp, budget.saturating_sub(ran)))
}

/// Fails every call of table `table` still owed by `callee`.
pub(super) fn fail_callee<F, R>(lp: &mut Loop, table: usize, callee: Pid, reason: &ExitReason)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    let procs = process::existing(lp);
    let calls = procs.calls.typed::<F, R>(table);
    if calls.waiting.is_empty() {
        return;
    }
    let owed: Vec<(u32, u32)> = calls
        .waiting
        .iter()
        .filter(|(_, w)| w.callee == callee)
        .map(|(key, w)| (key as u32, w.generation))
        .collect();
    let mut defer = false;
    for (key, generation) in owed {
        let error = Err(CallError::Exit(reason.clone()));
        defer |= finish_in::<F, R>(procs, table as u32, key, generation, error) == Some(true);
    }
    if defer {
        process::defer_pass(lp);
    }
}
