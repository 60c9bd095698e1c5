//! The process table: every behaviour instance on a loop, its mailbox
//! bookkeeping, what it owns, who watches it, and the scheduler that runs
//! processes with messages.
//!
//! Invariants:
//! - A process's behaviour object is out of its slot exactly while one of its
//!   callbacks runs; messages that arrive meanwhile wait in `overflow` and are
//!   handed over when it is put back, in arrival order.
//! - A slot whose process is exiting refuses new messages; its `Pid` goes
//!   stale when the slot is freed.
//! - Scheduling never runs a callback re-entrantly: sends only queue, and the
//!   scheduler runs from `Loop::defer` or a zero timer.

use std::any::Any;
use std::collections::{HashMap, VecDeque};
use std::os::fd::RawFd;
use std::time::Duration;

use ringvisor_runtime::{Loop, OpId, TimerId};

use crate::call::CallTables;
use crate::pid::{ExitReason, MonitorRef, Pid};

mod exit;
mod scheduler;

use exit::finish_lingering_if_idle;
pub use exit::stop;
pub(crate) use exit::{abandon, hold, hold_is_current, release};
pub(crate) use scheduler::{defer_pass, next_work, Work};
use scheduler::{put_back, schedule};

/// Default mailbox capacity of a process.
pub const MAILBOX_CAPACITY_DEFAULT: usize = 1024;
/// Messages one process handles before the scheduler moves to the next.
pub const PROCESS_BUDGET: usize = 64;
/// Messages handled per scheduler pass before the loop polls I/O again.
pub const PASS_BUDGET: usize = 4096;
/// How long a process may keep async work (owned ops) running after
/// `terminate` when nobody gave it a shutdown timeout.
pub const TERMINATE_GRACE_DEFAULT: Duration = Duration::from_secs(5);

/// Why a send was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SendError {
    /// No such process (it exited, or the Pid is stale).
    NoProc,
    /// Its mailbox is full: back-pressure, retry later or shed load.
    Overloaded,
}

impl std::fmt::Display for SendError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SendError::NoProc => f.write_str("no such process"),
            SendError::Overloaded => f.write_str("mailbox full"),
        }
    }
}

impl std::error::Error for SendError {}

/// Messages about other processes, delivered to any behaviour.
#[derive(Debug, Clone)]
pub(crate) enum SysMsg {
    /// A monitored process exited.
    Down {
        pid: Pid,
        reason: ExitReason,
        monitor: MonitorRef,
    },
    /// A child (a process this one started) exited.
    Exit { pid: Pid, reason: ExitReason },
}

/// A message that arrived while its process was running.
pub(crate) enum Pending {
    User(Box<dyn Any>),
    Sys(SysMsg),
}

/// What the table needs from a behaviour instance.
pub(crate) trait Process: 'static {
    fn as_any_mut(&mut self) -> &mut dyn Any;
    /// Takes a message that waited in the overflow.
    fn accept(&mut self, pending: Pending);
    fn has_messages(&self) -> bool;
    /// Finishes the immediate replies its last `run` buffered (the
    /// scheduler calls it with the table it has looked up anyway).
    fn finish_replies(&mut self, procs: &mut Processes);
    /// Handles up to `budget` messages.
    fn run(&mut self, lp: &mut Loop, pid: Pid, budget: usize) -> Ran;
    /// Runs the user's terminate callback (which must not unwind out).
    fn terminate(&mut self, lp: &mut Loop, pid: Pid, reason: &ExitReason);
    /// Fails every queued call with `reason`; drops other messages.
    fn fail_queued(&mut self, lp: &mut Loop, reason: &ExitReason);
}

/// What one run of a process did.
pub(crate) struct Ran {
    /// Messages handled (the scheduler's budget unit).
    pub(crate) handled: usize,
    /// Of those, user messages (they free mailbox capacity).
    pub(crate) user_handled: usize,
    /// Set if the process asked to exit (or panicked).
    pub(crate) exit: Option<ExitReason>,
}

/// How a process is being stopped from outside.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kill {
    /// Run `terminate`, then let owned async work finish up to the grace
    /// period before killing.
    Terminate(Duration),
    /// Exit at once without `terminate` (OTP's `brutal_kill`).
    Brutal,
}

struct Slot {
    generation: u32,
    /// The behaviour; `None` while its callback runs (or while being built).
    process: Option<Box<dyn Process>>,
    overflow: Vec<Pending>,
    /// User messages queued (in the process or the overflow).
    queued: usize,
    capacity: usize,
    in_run_queue: bool,
    parent: Option<Pid>,
    name: Option<String>,
    /// Watchers: who gets a `Down` when this process exits.
    monitors: Vec<(MonitorRef, Pid)>,
    timers: Vec<TimerId>,
    ops: Vec<OpId>,
    /// Outstanding `Ctx::later` continuations of the current epoch.
    holds: u32,
    /// Bumped at exit: continuations from before it are dropped.
    hold_epoch: u32,
    fds: Vec<RawFd>,
    /// Set once the process is exiting: it takes no more messages.
    exiting: Option<ExitReason>,
    /// Timer that kills a process lingering after `terminate`.
    linger_timer: Option<TimerId>,
}

/// Fails the pending calls of one call table (its index) whose callee exited.
pub(crate) type CallFailer = fn(&mut Loop, usize, Pid, &ExitReason);

/// The loop extension holding every process.
pub(crate) struct Processes {
    slots: slab::Slab<Slot>,
    next_generation: u32,
    next_monitor: u64,
    names: HashMap<String, Pid>,
    run_queue: VecDeque<Pid>,
    pass_scheduled: bool,
    call_failers: Vec<(CallFailer, usize)>,
    /// Calls in flight and the continuations owed to their callers.
    pub(crate) calls: CallTables,
}

/// The process table of a loop, created on first use.
#[inline]
pub(crate) fn table(lp: &mut Loop) -> &mut Processes {
    lp.extension_or_insert_with(|| Processes {
        slots: slab::Slab::new(),
        next_generation: 0,
        next_monitor: 0,
        names: HashMap::new(),
        run_queue: VecDeque::new(),
        pass_scheduled: false,
        call_failers: Vec::new(),
        calls: CallTables::default(),
    })
}

impl Processes {
    #[inline]
    fn slot(&self, pid: Pid) -> Option<&Slot> {
        self.slots
            .get(pid.index as usize)
            .filter(|s| s.generation == pid.generation)
    }

    #[inline]
    fn slot_mut(&mut self, pid: Pid) -> Option<&mut Slot> {
        self.slots
            .get_mut(pid.index as usize)
            .filter(|s| s.generation == pid.generation)
    }

    /// Registers the failer of a new call table.
    pub(crate) fn register_failer(&mut self, failer: CallFailer, table: usize) {
        self.call_failers.push((failer, table));
    }

    /// True if a scheduler pass must be deferred (none is scheduled or
    /// running); it counts as scheduled from now on.
    pub(crate) fn schedule_pass(&mut self) -> bool {
        !std::mem::replace(&mut self.pass_scheduled, true)
    }
}

/// The process table where it must exist (a process or a call does): one
/// lookup without `table`'s insertion path.
#[inline]
pub(crate) fn existing(lp: &mut Loop) -> &mut Processes {
    lp.extension_mut::<Processes>()
        .expect("the process table exists while processes or calls do")
}

/// Reserves a slot for a new process (its behaviour comes with `install`).
pub(crate) fn reserve(lp: &mut Loop, parent: Option<Pid>, capacity: usize) -> Pid {
    assert!(capacity > 0, "mailbox capacity must be positive");
    let procs = table(lp);
    procs.next_generation = procs.next_generation.wrapping_add(1);
    let generation = procs.next_generation;
    let index = procs.slots.insert(Slot {
        generation,
        process: None,
        overflow: Vec::new(),
        queued: 0,
        capacity,
        in_run_queue: false,
        parent,
        name: None,
        monitors: Vec::new(),
        timers: Vec::new(),
        ops: Vec::new(),
        holds: 0,
        hold_epoch: 0,
        fds: Vec::new(),
        exiting: None,
        linger_timer: None,
    });
    assert!(index < u32::MAX as usize, "process table full");
    Pid {
        index: index as u32,
        generation,
    }
}

/// Puts a behaviour into its reserved slot and hands it what arrived meanwhile.
pub(crate) fn install(lp: &mut Loop, pid: Pid, process: Box<dyn Process>) {
    put_back(lp, pid, process);
}

/// Frees a reserved slot whose process never started (init failed).
pub(crate) fn unreserve(lp: &mut Loop, pid: Pid) {
    let procs = table(lp);
    let name = match procs.slot_mut(pid) {
        Some(slot) => {
            debug_assert!(slot.process.is_none());
            slot.name.take()
        }
        None => return,
    };
    if let Some(name) = name {
        procs.names.remove(&name);
    }
    procs.slots.remove(pid.index as usize);
}

/// Registers `name` for `pid`; false if the name is taken.
pub(crate) fn register(lp: &mut Loop, pid: Pid, name: &str) -> bool {
    let procs = table(lp);
    if procs.names.contains_key(name) {
        return false;
    }
    let Some(slot) = procs.slot_mut(pid) else {
        return false;
    };
    slot.name = Some(name.to_string());
    procs.names.insert(name.to_string(), pid);
    true
}

/// The process registered under `name`, if it is alive.
pub fn whereis(lp: &Loop, name: &str) -> Option<Pid> {
    lp.extension::<Processes>()
        .and_then(|procs| procs.names.get(name).copied())
}

/// True if `pid` names a live process that is not exiting.
pub fn is_alive(lp: &mut Loop, pid: Pid) -> bool {
    table(lp).slot(pid).is_some_and(|s| s.exiting.is_none())
}

/// True while `pid`'s slot exists, including while it lingers after terminate.
pub(crate) fn exists(lp: &mut Loop, pid: Pid) -> bool {
    table(lp).slot(pid).is_some()
}

/// Number of live processes on this loop.
pub fn count(lp: &mut Loop) -> usize {
    table(lp).slots.len()
}

/// Queued user messages of a live process.
pub fn mailbox_len(lp: &mut Loop, pid: Pid) -> Option<usize> {
    table(lp).slot(pid).map(|s| s.queued)
}

/// Delivers a message to `pid`'s typed mailbox. `push` receives the process
/// object if it is a `P`; while the process runs, the message is boxed into
/// the overflow. `user` messages count toward the capacity.
pub(crate) fn deliver<P: Process, M: 'static>(
    lp: &mut Loop,
    pid: Pid,
    message: M,
    user: bool,
    push: fn(&mut P, M),
) -> Result<(), SendError> {
    let deferred = match lp.extension_mut::<Processes>() {
        Some(procs) => procs.deliver(pid, message, user, push)?,
        None => table(lp).deliver(pid, message, user, push)?,
    };
    if deferred {
        defer_pass(lp);
    }
    Ok(())
}

impl Processes {
    /// [`deliver`] on a borrowed table: returns true if a scheduler pass
    /// must be deferred (see [`defer_pass`]).
    #[inline(always)]
    pub(crate) fn deliver<P: Process, M: 'static>(
        &mut self,
        pid: Pid,
        message: M,
        user: bool,
        push: fn(&mut P, M),
    ) -> Result<bool, SendError> {
        let Some(slot) = self.slot_mut(pid) else {
            return Err(SendError::NoProc);
        };
        if slot.exiting.is_some() && (user || slot.linger_timer.is_none()) {
            return Err(SendError::NoProc);
        }
        if user {
            if slot.queued >= slot.capacity {
                return Err(SendError::Overloaded);
            }
            slot.queued += 1;
        }
        match slot.process.as_deref_mut() {
            Some(process) => match process.as_any_mut().downcast_mut::<P>() {
                Some(process) => push(process, message),
                // A Pid of another behaviour type: the message is dropped,
                // like a message nobody matches in Erlang; calls fail by
                // timeout.
                None => tracing::warn!("message to a process of another type dropped"),
            },
            None => slot.overflow.push(Pending::User(Box::new(message))),
        }
        // Enqueued with the slot at hand (`enqueue` would look it up again).
        if !slot.in_run_queue {
            slot.in_run_queue = true;
            self.run_queue.push_back(pid);
        }
        Ok(self.schedule_pass())
    }
}

/// Delivers a system message (never refused for capacity).
pub(crate) fn deliver_sys(lp: &mut Loop, pid: Pid, msg: SysMsg) {
    let procs = table(lp);
    let Some(slot) = procs.slot_mut(pid) else {
        return;
    };
    if slot.exiting.is_some() {
        return;
    }
    match slot.process.as_deref_mut() {
        Some(process) => process.accept(Pending::Sys(msg)),
        None => slot.overflow.push(Pending::Sys(msg)),
    }
    schedule(lp, pid);
}

/// Sets a monitor: `watcher` gets a `Down` when `target` exits (at once if it
/// is already gone).
pub(crate) fn monitor(lp: &mut Loop, watcher: Pid, target: Pid) -> MonitorRef {
    let procs = table(lp);
    procs.next_monitor += 1;
    let monitor = MonitorRef(procs.next_monitor);
    match procs.slot_mut(target) {
        Some(slot) if slot.exiting.is_none() => slot.monitors.push((monitor, watcher)),
        _ => {
            let down = SysMsg::Down {
                pid: target,
                reason: ExitReason::error("noproc"),
                monitor,
            };
            deliver_sys(lp, watcher, down);
        }
    }
    monitor
}

/// Removes a monitor; false if it was not set (or already fired).
pub(crate) fn demonitor(lp: &mut Loop, target: Pid, monitor: MonitorRef) -> bool {
    let Some(slot) = table(lp).slot_mut(target) else {
        return false;
    };
    let before = slot.monitors.len();
    slot.monitors.retain(|(m, _)| *m != monitor);
    slot.monitors.len() != before
}

/// Records resources a process owns, released when it exits.
pub(crate) fn own_timer(lp: &mut Loop, pid: Pid, timer: TimerId) {
    if let Some(slot) = table(lp).slot_mut(pid) {
        slot.timers.push(timer);
    }
}

pub(crate) fn disown_timer(lp: &mut Loop, pid: Pid, timer: TimerId) {
    if let Some(slot) = table(lp).slot_mut(pid) {
        slot.timers.retain(|t| *t != timer);
    }
}

/// True while `op` is owned by `pid` (false once the exit canceled it).
pub(crate) fn owns_op(lp: &mut Loop, pid: Pid, op: OpId) -> bool {
    table(lp).slot(pid).is_some_and(|s| s.ops.contains(&op))
}

pub(crate) fn own_op(lp: &mut Loop, pid: Pid, op: OpId) {
    if let Some(slot) = table(lp).slot_mut(pid) {
        slot.ops.push(op);
    }
}

/// An owned op completed; a lingering process with no more ops finishes exiting.
pub(crate) fn disown_op(lp: &mut Loop, pid: Pid, op: OpId) {
    let procs = table(lp);
    let Some(slot) = procs.slot_mut(pid) else {
        return;
    };
    slot.ops.retain(|o| *o != op);
    finish_lingering_if_idle(lp, pid);
}

pub(crate) fn own_fd(lp: &mut Loop, pid: Pid, fd: RawFd) {
    if let Some(slot) = table(lp).slot_mut(pid) {
        slot.fds.push(fd);
    }
}

pub(crate) fn disown_fd(lp: &mut Loop, pid: Pid, fd: RawFd) {
    if let Some(slot) = table(lp).slot_mut(pid) {
        slot.fds.retain(|f| *f != fd);
    }
}

/// The parent of a live process.
pub fn parent(lp: &mut Loop, pid: Pid) -> Option<Pid> {
    table(lp).slot(pid).and_then(|s| s.parent)
}
