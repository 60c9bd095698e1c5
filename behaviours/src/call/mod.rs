//! Calls in flight: who waits for which reply, with what timeout.
//!
//! Each call site (the continuation's closure type `F`, with reply type `R`)
//! has its own table, kept in the process table's [`CallTables`] (one
//! loop-extension lookup reaches both): continuations are stored unboxed in
//! a slab reused after warm-up, and replies are never boxed as `Any`. The
//! [`From`] token carries its table's index and a typed finisher, so a reply
//! goes straight to its table.
//!
//! A call ends exactly once: with the reply, `Timeout`, `Exit` (the callee
//! died), `NoProc` or `Overloaded`; whichever comes first removes the entry,
//! and anything later (a late reply) finds nothing and is dropped.
//! Continuations always run from the scheduler pass, never inside `reply`: a
//! finished call queues its continuation and the pass drains it, in the
//! order calls finished (across tables too), so a round trip between
//! processes needs no `Loop::defer`.

use std::time::{Duration, Instant};

use ringvisor_runtime::Loop;

use crate::pid::{ExitReason, Pid};
use crate::process::{self, Processes, SendError};

mod table;

pub(crate) use table::{CallTables, Drain};
use table::{Calls, Waiting};

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

/// Ends a call of one table: `(procs, table, key, generation, outcome)`;
/// `None` if nobody waits, else whether a scheduler pass must be deferred.
type Finisher<R> = fn(&mut Processes, u32, u32, u32, Result<R, CallError>) -> Option<bool>;

/// Replies of a batch, in the order they were made.
pub(crate) type Replies<'a, R> = std::vec::Drain<'a, (From<R>, R)>;

/// Ends `first` and the replies after it that go to the same table: one
/// typed look-up and one drain entry for the run. Returns the first reply
/// to another table, if any, and whether a scheduler pass must be deferred.
type RunFinisher<R> =
    fn(&mut Processes, (From<R>, R), &mut Replies<'_, R>) -> (Option<(From<R>, R)>, bool);

/// The token a server replies through; reply once with `reply` (or by
/// returning a reply from `handle_call`).
pub struct From<R: 'static> {
    key: u32,
    generation: u32,
    table: u32,
    /// How to end calls of its table (one static per call site: a token
    /// stays three words).
    ends: &'static Ends<R>,
}

/// The typed functions that end calls of one call table.
pub(crate) struct Ends<R: 'static> {
    finish: Finisher<R>,
    finish_run: RunFinisher<R>,
}

/// The [`Ends`] of the call table of continuation `F`.
struct EndsOf<F, R>(std::marker::PhantomData<(F, R)>);

impl<F, R> EndsOf<F, R>
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
    R: 'static,
{
    const ENDS: Ends<R> = Ends {
        finish: table::finish_in::<F, R>,
        finish_run: table::finish_run::<F, R>,
    };
}

impl<R: 'static> std::fmt::Debug for From<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("From")
            .field("key", &self.key)
            .field("generation", &self.generation)
            .field("table", &self.table)
            .finish()
    }
}

impl<R: 'static> PartialEq for From<R> {
    fn eq(&self, other: &Self) -> bool {
        (self.key, self.generation, self.table) == (other.key, other.generation, other.table)
    }
}

impl<R: 'static> Eq for From<R> {}

impl<R: 'static> std::hash::Hash for From<R> {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        (self.key, self.generation, self.table).hash(state);
    }
}

/// A deadline timer to arm for a call just begun: its table's queue.
#[derive(Clone, Copy)]
pub(crate) struct Arm {
    arg: u64,
    after: Duration,
    arm: fn(&mut Loop, u64, Duration),
}

/// Registers a call to `callee` in `procs` and returns the token for its
/// reply, plus a deadline timer to arm with [`arm`] (the loop is borrowed
/// through `procs` here; the timer is armed only for the first call of a
/// timeout's queue, so the common case carries nothing). `now` is the
/// loop's time.
#[inline(always)]
pub(crate) fn begin_in<R: 'static, F>(
    procs: &mut Processes,
    now: Instant,
    callee: Pid,
    timeout: Duration,
    continuation: F,
) -> (From<R>, Option<Arm>)
where
    F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
{
    let table_index = procs.call_table::<F, R>();
    let table = procs.calls.typed::<F, R>(table_index);
    table.next_generation = table.next_generation.wrapping_add(1);
    let generation = table.next_generation;
    let key = table.waiting.insert(Waiting {
        generation,
        callee,
        continuation,
    });
    assert!(key < u32::MAX as usize, "call table full");
    let key = key as u32;
    let mut arm = None;
    if timeout != INFINITY {
        let queue = table.deadline_queue(timeout);
        let deadlines = &mut table.deadlines[queue];
        deadlines.queue.push_back((now, key, generation));
        if deadlines.timer.is_none() {
            arm = Some(Arm {
                arg: table::pack(table_index, queue),
                after: timeout,
                arm: table::arm::<F, R>,
            });
        }
    }
    let from = From {
        key,
        generation,
        table: table_index as u32,
        ends: &EndsOf::<F, R>::ENDS,
    };
    (from, arm)
}

/// Arms the deadline timer `begin_in` asked for.
#[cold]
#[inline(never)]
pub(crate) fn arm(lp: &mut Loop, arm: Arm) {
    (arm.arm)(lp, arm.arg, arm.after);
}

/// A second token for the same call (the framework keeps one to reply with
/// when `handle_call` answers at once).
pub(crate) fn from_alias<R: 'static>(from: &From<R>) -> From<R> {
    From {
        key: from.key,
        generation: from.generation,
        table: from.table,
        ends: from.ends,
    }
}

/// Sends `value` to whoever waits on `from`. A reply after the caller gave up
/// (timeout) is dropped. Returns true if someone was waiting.
pub fn reply<R: 'static>(lp: &mut Loop, from: From<R>, value: R) -> bool {
    finish(lp, from, Ok(value))
}

/// Sends each reply of `replies` (emptied) with one table lookup.
pub(crate) fn reply_all<R: 'static>(lp: &mut Loop, replies: &mut Vec<(From<R>, R)>) {
    if reply_all_in(process::existing(lp), replies) {
        process::defer_pass(lp);
    }
}

/// [`reply_all`] on a borrowed table: true if a scheduler pass must be
/// deferred.
#[inline]
pub(crate) fn reply_all_in<R: 'static>(
    procs: &mut Processes,
    replies: &mut Vec<(From<R>, R)>,
) -> bool {
    // One reply (a lone call) skips the drain iterator's bookkeeping.
    if replies.len() == 1 {
        let (from, value) = replies.pop().expect("one reply");
        return (from.ends.finish)(procs, from.table, from.key, from.generation, Ok(value))
            == Some(true);
    }
    // Replies to one table in a row (callers from one call site) end
    // together.
    let mut defer = false;
    let mut rest = replies.drain(..);
    let mut next = rest.next();
    while let Some(first) = next {
        let finish_run = first.0.ends.finish_run;
        let (other, deferred) = finish_run(procs, first, &mut rest);
        defer |= deferred;
        next = other;
    }
    defer
}

/// Fails a call whose request never reached the callee.
pub(crate) fn fail<R: 'static>(lp: &mut Loop, from: From<R>, error: CallError) {
    finish(lp, from, Err(error));
}

/// Ends a call: its continuation runs at the next drain, never from here.
fn finish<R: 'static>(lp: &mut Loop, from: From<R>, result: Result<R, CallError>) -> bool {
    let procs = process::existing(lp);
    match (from.ends.finish)(procs, from.table, from.key, from.generation, result) {
        None => false,
        Some(defer) => {
            if defer {
                process::defer_pass(lp);
            }
            true
        }
    }
}

/// Calls still waiting for a reply of type `R` (for tests and status pages).
pub fn waiting<R: 'static>(lp: &mut Loop) -> usize {
    process::table(lp).calls.waiting::<R>()
}

impl Processes {
    /// The index of the call table of continuation `F`, created (with its
    /// callee-exit failer) on first use.
    fn call_table<F, R>(&mut self) -> usize
    where
        F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
        R: 'static,
    {
        match self.calls.position::<F, R>() {
            Some(index) => index,
            None => self.add_call_table::<F, R>(),
        }
    }

    #[cold]
    #[inline(never)]
    fn add_call_table<F, R>(&mut self) -> usize
    where
        F: FnOnce(&mut Loop, Result<R, CallError>) + 'static,
        R: 'static,
    {
        let index = self.calls.insert(Calls::<F, R>::new());
        self.register_failer(table::fail_callee::<F, R>, index);
        index
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;
    use std::time::Duration;

    use ringvisor_runtime::{Backend, Loop};

    use super::*;

    type Outcomes = Rc<RefCell<Vec<(u32, Result<u32, CallError>)>>>;

    /// A call from one call site (one continuation type) recording `n`.
    fn begin(lp: &mut Loop, outcomes: &Outcomes, n: u32) -> From<u32> {
        let now = lp.now();
        let outcomes = outcomes.clone();
        let callee = Pid {
            index: 0,
            generation: 1,
        };
        let continuation = move |_: &mut Loop, r: Result<u32, CallError>| {
            outcomes.borrow_mut().push((n, r));
        };
        let (from, arm) = begin_in(
            process::table(lp),
            now,
            callee,
            Duration::from_secs(5),
            continuation,
        );
        if let Some(arm) = arm {
            super::arm(lp, arm);
        }
        from
    }

    // A batch of replies to one call site where one caller already gave up:
    // the late reply is dropped, the others arrive once, in order.
    #[test]
    fn a_batch_of_replies_drops_the_late_one() {
        for backend in [Backend::Uring, Backend::Poll] {
            let mut lp = Loop::builder().backend(backend).build().expect("loop");
            let outcomes = Outcomes::default();
            let froms: Vec<From<u32>> = (0..4).map(|n| begin(&mut lp, &outcomes, n)).collect();
            // Caller 1 stops waiting (as its deadline would make it).
            fail(&mut lp, from_alias(&froms[1]), CallError::Timeout);
            let mut replies: Vec<(From<u32>, u32)> = froms
                .into_iter()
                .enumerate()
                .map(|(n, f)| (f, 10 + n as u32))
                .collect();
            reply_all(&mut lp, &mut replies);
            assert!(replies.is_empty());
            lp.run().expect("run");
            assert_eq!(
                *outcomes.borrow(),
                vec![
                    (1, Err(CallError::Timeout)),
                    (0, Ok(10)),
                    (2, Ok(12)),
                    (3, Ok(13)),
                ]
            );
            assert_eq!(waiting::<u32>(&mut lp), 0);
        }
    }
}
