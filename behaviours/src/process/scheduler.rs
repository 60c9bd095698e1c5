//! The scheduler: the run queue of processes with messages, and the pass
//! that runs them and then the drains of finished calls.
//!
//! Invariants:
//! - `pass_scheduled` is true from the moment a pass is deferred (or set on
//!   a zero timer) until a pass ends with nothing left to run; sends and
//!   replies made meanwhile are picked up by that pass.
//! - Processes with messages run before the continuations of finished
//!   calls; a pass handles at most `PASS_BUDGET` messages and continuations
//!   (then the continuations already owed), then lets the loop poll I/O; a
//!   process handles at most `PROCESS_BUDGET` messages per turn.
//! - Each step of a pass reaches the process table once: putting a process
//!   back (or ending a drain) and picking the next work share one lookup.

use std::time::Duration;

use ringvisor_runtime::Loop;

use super::exit::exit_process;
use super::{
    table, Kill, Process, Processes, PASS_BUDGET, PROCESS_BUDGET, TERMINATE_GRACE_DEFAULT,
};
use crate::call::Drain;
use crate::pid::Pid;

/// What a scheduler pass does next.
pub(crate) enum Work {
    /// Run this process (taken out of its slot).
    Run(Pid, Box<dyn Process>),
    /// Run the next continuations of one call table: `(drain, table, count)`.
    Drain(Drain, u32, u32),
    /// Nothing is ready (or the budget is spent).
    Idle,
}

impl Processes {
    /// Puts `pid` on the run queue; true if a scheduler pass must be deferred.
    #[inline]
    pub(super) fn enqueue(&mut self, pid: Pid) -> bool {
        let slot = self.slot_mut(pid).expect("scheduling a live process");
        if !slot.in_run_queue {
            slot.in_run_queue = true;
            self.run_queue.push_back(pid);
        }
        self.schedule_pass()
    }

    /// The next work of a pass: processes with messages first, then the
    /// continuations of finished calls (as when the drains were deferred to
    /// the end of the pass: a crash's exit signals reach the supervisor
    /// before the failed callers' continuations run).
    pub(crate) fn next_work(&mut self) -> Work {
        while let Some(pid) = self.run_queue.pop_front() {
            let Some(slot) = self.slot_mut(pid) else {
                continue;
            };
            slot.in_run_queue = false;
            // None while being built or running: rescheduled when put back.
            if let Some(process) = slot.process.take() {
                return Work::Run(pid, process);
            }
        }
        match self.calls.drains.pop_front() {
            Some((drain, table, count)) => Work::Drain(drain, table, count),
            None => Work::Idle,
        }
    }

    /// Puts a process back after a run that took `user_handled` user
    /// messages off its mailbox, hands it what arrived meanwhile, and
    /// reschedules it; true if a scheduler pass must be deferred.
    fn put_back(&mut self, pid: Pid, mut process: Box<dyn Process>, user_handled: usize) -> bool {
        let Some(slot) = self.slot_mut(pid) else {
            return false;
        };
        debug_assert!(slot.process.is_none(), "a process is out of its slot once");
        debug_assert!(slot.queued >= user_handled);
        slot.queued = slot.queued.saturating_sub(user_handled);
        if !slot.overflow.is_empty() {
            for pending in slot.overflow.drain(..) {
                process.accept(pending);
            }
        }
        let ready = process.has_messages();
        slot.process = Some(process);
        ready && self.enqueue(pid)
    }
}

/// Puts `pid` on the run queue, deferring a pass if none is scheduled.
pub(super) fn schedule(lp: &mut Loop, pid: Pid) {
    if table(lp).enqueue(pid) {
        defer_pass(lp);
    }
}

/// Defers a scheduler pass (after `enqueue` or `schedule_drain` said so).
pub(crate) fn defer_pass(lp: &mut Loop) {
    lp.defer(scheduler_pass);
}

/// Puts a process (new, or back from outside the pass) into its slot.
pub(super) fn put_back(lp: &mut Loop, pid: Pid, process: Box<dyn Process>) {
    if table(lp).put_back(pid, process, 0) {
        defer_pass(lp);
    }
}

/// Runs ready processes and the continuations of finished calls within the
/// pass budget; leftover work continues after the loop has polled I/O (a
/// zero timer), so a deep mailbox cannot starve the network.
pub(super) fn scheduler_pass(lp: &mut Loop) {
    let mut budget = PASS_BUDGET;
    let mut work = table(lp).next_work();
    loop {
        work = match work {
            Work::Run(pid, process) => run(lp, pid, process, &mut budget),
            Work::Drain(drain, table, count) => {
                let (ran, next) = drain(lp, table, count, budget);
                budget = budget.saturating_sub(ran.max(1));
                next
            }
            Work::Idle => break,
        };
    }
    if budget == 0 {
        run_owed_drains(lp);
    }
    let procs = table(lp);
    if budget > 0 || (procs.run_queue.is_empty() && procs.calls.drains.is_empty()) {
        procs.pass_scheduled = false;
    } else {
        lp.timer(Duration::ZERO, scheduler_pass);
    }
}

/// Runs a process taken out of its slot, puts it back, and picks the next
/// work (`Idle` once the budget is spent).
fn run(lp: &mut Loop, pid: Pid, mut process: Box<dyn Process>, budget: &mut usize) -> Work {
    let ran = process.run(lp, pid, PROCESS_BUDGET);
    *budget = budget.saturating_sub(ran.handled.max(1));
    let procs = super::existing(lp);
    // Inside the pass: finished calls and a process put back on the run
    // queue need no defer.
    process.finish_replies(procs);
    procs.put_back(pid, process, ran.user_handled);
    match ran.exit {
        Some(reason) => {
            exit_process(lp, pid, reason, Kill::Terminate(TERMINATE_GRACE_DEFAULT));
            next_work(lp, *budget)
        }
        None if *budget == 0 => Work::Idle,
        None => procs.next_work(),
    }
}

/// The next work of a pass with `budget` left.
pub(crate) fn next_work(lp: &mut Loop, budget: usize) -> Work {
    if budget == 0 {
        return Work::Idle;
    }
    table(lp).next_work()
}

/// The pass budget is spent with a deep run queue: the continuations owed
/// so far still run before the loop polls I/O, so replies to others are not
/// held back by a busy process (only those queued now: a continuation whose
/// call fails at once waits for the next pass).
fn run_owed_drains(lp: &mut Loop) {
    let owed = table(lp).calls.drains.len();
    for _ in 0..owed {
        let Some((drain, table, count)) = super::existing(lp).calls.drains.pop_front() else {
            return;
        };
        let (_, next) = drain(lp, table, count, 0);
        debug_assert!(matches!(next, Work::Idle), "no budget, no next work");
    }
}
