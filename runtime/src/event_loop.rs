//! The loop: owns the backend, the op table, the timers, the ready queue, the
//! clock and the counters, and runs ticks.
//!
//! A tick:
//! 1. hand every queued op to the backend (no syscall on io_uring: SQEs only;
//!    most ops are in its SQ ring already, put there as they were submitted);
//! 2. one backend wait, bounded by the nearest timer (zero if work is ready);
//! 3. run posted cross-thread work, due timers and ready callbacks;
//! 4. settle the tick's completions, running each callback as its op is
//!    settled (no trip through the ready queue), then deferred work.
//!
//! Callbacks only ever queue work; nothing they do re-enters a backend or runs
//! another callback on their stack.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::os::fd::RawFd;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crate::backend::{self, Backend, Driver, Push};
use crate::clock::Clock;
use crate::handle::{LoopHandle, Posted, Shared};
use crate::op::{Completion, OpCallback, OpId, OpKind, OpState, OpTable, RawCompletion, Settled};
use crate::stats::Stats;
use crate::timer::{TimerCallback, TimerId, Timers};

mod builder;
mod deliver;
mod drain;
mod extensions;

pub use builder::{LoopBuilder, BATCH_WAIT_DEFAULT, BATCH_WAIT_MAX};
pub use extensions::fold_type_id;

/// Default io_uring submission queue size.
pub const SQ_ENTRIES_DEFAULT: u32 = 256;
/// Default size of the poll backend's regular-file thread pool.
pub const FILE_THREADS_DEFAULT: usize = 4;
/// Deferred callbacks run per tick before the loop goes back to the kernel;
/// more wait for the next tick (which then does not block), so a callback
/// that keeps deferring cannot starve I/O.
pub const DEFER_BUDGET_PER_TICK: usize = 4096;
/// How long dropping a loop waits for the kernel to give back canceled ops
/// before leaking their memory instead of freeing it.
const DROP_DRAIN_TIMEOUT: Duration = Duration::from_secs(10);

type Ready = (Option<OpCallback>, Completion);
/// Work deferred to later in the tick: a boxed closure, or a plain
/// function and its argument ([`Loop::defer_fn`], no allocation).
enum Deferred {
    Boxed(Box<dyn FnOnce(&mut Loop)>),
    Fn(fn(&mut Loop, u64), u64),
}

/// A single-threaded completion event loop.
///
/// ```
/// # use ringvisor_runtime::Loop;
/// # use std::time::Duration;
/// let mut lp = Loop::new().unwrap();
/// lp.timer(Duration::from_millis(1), |lp| {
///     lp.nop(|lp, res| {
///         assert!(res.is_ok());
///         lp.stop();
///     });
/// });
/// lp.run().unwrap();
/// ```
pub struct Loop {
    driver: backend::AnyDriver,
    ops: OpTable,
    /// Ops waiting to be handed to the backend at the next tick, in order.
    submit_queue: Vec<OpId>,
    /// Completions reported outside a wait (a flush that made room, a poll
    /// op done at once, a poll cancel), for the next tick.
    raw_completions: Vec<RawCompletion>,
    /// This tick's completions reported outside the kernel's queue (which
    /// `run_completions` reads next, one at a time), settled one by one as
    /// their callbacks run (until then their ops are still in the table, in
    /// the kernel's hands).
    completed: Vec<RawCompletion>,
    /// Where `run_completions` is in `completed`; past it if a callback
    /// panicked, so the rest still run (or are settled by drop).
    completed_next: usize,
    ready: VecDeque<Ready>,
    timers: Timers,
    clock: Clock,
    stats: Stats,
    shared: Arc<Shared>,
    posted: Vec<Posted>,
    deferred: VecDeque<Deferred>,
    /// Boxes of finished `send_recv`s, reused by the next ones (boxes, as
    /// the op holds them: reusing one saves an allocation per op).
    #[allow(clippy::vec_box)]
    pub(crate) send_recv_bufs: Vec<Box<crate::op::SendRecvBufs>>,
    /// Typed state layered on the loop (the behaviours' process table).
    extensions: extensions::Extensions,
    stopped: bool,
    /// True while a tick runs callbacks: they all share the tick's time.
    in_callbacks: bool,
    /// Fds closed through the loop in this tick or the last, with the tick:
    /// a `send_all` on them must not send its rest to a reused fd number.
    recently_closed: Vec<(RawFd, u64)>,
    /// Callbacks are not `Send`, and neither is the loop.
    _not_send: PhantomData<*const ()>,
}

impl Loop {
    /// The backend this loop runs on (never `Auto`).
    pub fn backend(&self) -> Backend {
        self.driver.kind()
    }

    /// The loop's counters.
    pub fn stats(&self) -> Stats {
        let mut stats = self.stats;
        stats.ops_in_flight = self.ops.len() as u64;
        stats
    }

    /// A handle for other threads.
    pub fn handle(&self) -> LoopHandle {
        LoopHandle::new(self.shared.clone())
    }

    /// The time as of the start of this tick's callbacks.
    pub fn now(&self) -> Instant {
        self.clock.now()
    }

    /// Makes the current `run*` call return once this tick is done.
    pub fn stop(&mut self) {
        self.stopped = true;
    }

    /// Whether sockets used with this loop's backend must be nonblocking.
    pub(crate) fn wants_nonblocking_sockets(&self) -> bool {
        self.driver.wants_nonblocking_sockets()
    }

    /// Calls `callback` once `after` has passed, from a later tick (never from
    /// inside this call, even for a zero duration). Inside a callback, `after`
    /// counts from the tick's time ([`Loop::now`]); outside, from the present.
    pub fn timer(
        &mut self,
        after: Duration,
        callback: impl FnOnce(&mut Loop) + 'static,
    ) -> TimerId {
        self.refresh_clock_outside_callbacks();
        let deadline_ns = self.clock.deadline_ns(after);
        self.timers
            .insert(deadline_ns, TimerCallback::Boxed(Box::new(callback)))
    }

    /// Like [`Loop::timer`] with a plain function and one word of context:
    /// nothing is allocated, for timers set on hot paths.
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// # use std::time::Duration;
    /// fn fired(lp: &mut Loop, n: u64) {
    ///     assert_eq!(n, 7);
    ///     lp.stop();
    /// }
    /// let mut lp = Loop::new().unwrap();
    /// lp.timer_fn(Duration::from_millis(1), fired, 7);
    /// lp.run().unwrap();
    /// ```
    pub fn timer_fn(&mut self, after: Duration, callback: fn(&mut Loop, u64), arg: u64) -> TimerId {
        self.refresh_clock_outside_callbacks();
        let deadline_ns = self.clock.deadline_ns(after);
        self.timers
            .insert(deadline_ns, TimerCallback::Fn(callback, arg))
    }

    /// Runs `callback` later in this tick, after the callbacks already
    /// running, without a trip to the kernel. At most
    /// [`DEFER_BUDGET_PER_TICK`] deferred callbacks run per tick; the rest run
    /// next tick, which then does not block.
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// let mut lp = Loop::new().unwrap();
    /// lp.defer(|lp| lp.defer(|_| println!("second")));
    /// lp.run().unwrap();
    /// assert_eq!(lp.stats().syscalls, 0, "deferred work needs no syscall");
    /// ```
    pub fn defer(&mut self, callback: impl FnOnce(&mut Loop) + 'static) {
        self.deferred.push_back(Deferred::Boxed(Box::new(callback)));
    }

    /// [`Loop::defer`] with a plain function and its argument: nothing is
    /// allocated (a closure that captures anything is boxed by `defer`).
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// fn later(lp: &mut Loop, n: u64) {
    ///     assert_eq!(n, 42);
    ///     lp.stop();
    /// }
    /// let mut lp = Loop::new().unwrap();
    /// lp.defer_fn(later, 42);
    /// lp.run().unwrap();
    /// ```
    pub fn defer_fn(&mut self, callback: fn(&mut Loop, u64), arg: u64) {
        self.deferred.push_back(Deferred::Fn(callback, arg));
    }

    /// Cancels a pending timer; false if it already fired or was canceled.
    pub fn cancel_timer(&mut self, id: TimerId) -> bool {
        self.timers.cancel(id)
    }

    /// Number of pending timers.
    pub fn timers_pending(&self) -> usize {
        self.timers.len()
    }

    /// Submits a no-op through the backend (a round trip through the ring on
    /// io_uring); useful to measure the loop itself.
    pub fn nop(&mut self, callback: impl FnOnce(&mut Loop, crate::OpResult<()>) + 'static) -> OpId {
        self.submit(OpKind::Nop, move |lp, c| {
            match c.kind {
                // Owns nothing: skip the call to the drop glue.
                kind @ OpKind::Nop => std::mem::forget(kind),
                kind => drop(kind),
            }
            callback(lp, c.result.map(|_| ()))
        })
    }

    /// Hands an op to the backend if it takes ops at submit time (io_uring:
    /// an SQE in the ring, no syscall), else queues it for the next tick.
    /// The kernel sees it at the next tick either way.
    #[inline]
    pub(crate) fn submit(
        &mut self,
        kind: OpKind,
        callback: impl FnOnce(&mut Loop, Completion) + 'static,
    ) -> OpId {
        self.submit_op(kind, Some(Box::new(callback)))
    }

    /// Submits an op nobody waits for (the reaper's closes).
    pub(crate) fn submit_detached(&mut self, kind: OpKind) {
        self.submit_op(kind, None);
    }

    #[inline]
    fn submit_op(&mut self, kind: OpKind, callback: Option<OpCallback>) -> OpId {
        // Behind queued ops, an op waits its turn: submission order holds.
        let queue_empty = self.submit_queue.is_empty();
        let driver = &mut self.driver;
        let (id, taken) = self.ops.insert_with(kind, callback, |id, kind| {
            let taken = queue_empty && driver.push_now(id, kind);
            if taken {
                tracing::trace!(op = kind.name(), key = id.key, "submit");
            }
            taken
        });
        if taken {
            self.stats.sqes_submitted += 1;
        } else {
            self.submit_queue.push(id);
        }
        id
    }

    /// Delivers a completion for an op that failed before reaching any backend
    /// (bad arguments), keeping the one-completion-per-op rule and the
    /// never-re-entrant rule: its callback runs from the loop, not from here.
    pub(crate) fn fail_early(
        &mut self,
        kind: OpKind,
        err: io::Error,
        callback: impl FnOnce(&mut Loop, Completion) + 'static,
    ) -> OpId {
        let id = self.ops.insert(kind, None);
        let key = id.key as usize;
        if let Settled::Deliver(_, completion) = self.ops.cancel_queued(key) {
            let completion = Completion {
                result: Err(crate::OpError::Io(err)),
                kind: completion.kind,
            };
            self.ready.push_back((Some(Box::new(callback)), completion));
        }
        id
    }

    /// Cancels an op. It still completes exactly once, with its buffers,
    /// once the kernel has let go of them: with `Err(OpError::Canceled)` if
    /// the cancel stopped it, or with its own result if the kernel finished
    /// it first (a receive's bytes are delivered, a send's count reported,
    /// so nothing moved on a socket is lost or sent twice). An accept, open
    /// or connect always ends `Canceled`, closing any fd it produced late.
    /// Returns false if the op already completed.
    pub fn cancel(&mut self, id: OpId) -> bool {
        let Some(slot) = self.ops.get_mut(id) else {
            return false;
        };
        let key = id.key as usize;
        match slot.state {
            OpState::Queued => {
                let settled = self.ops.cancel_queued(key);
                self.settled(settled);
                true
            }
            OpState::InKernel => {
                self.ops.mark_canceling(key);
                let slot = self.ops.slot_mut(key).expect("slot is live");
                tracing::trace!(op = slot.kind.name(), key, "cancel");
                self.driver
                    .cancel(id, &slot.kind, &mut self.raw_completions, &mut self.stats);
                true
            }
            OpState::Canceling => true,
        }
    }

    /// Runs until nothing is pending (no ops, timers or ready callbacks) or
    /// [`Loop::stop`] is called.
    pub fn run(&mut self) -> io::Result<()> {
        while self.has_work() {
            self.tick(Wait::UntilEvent)?;
            if self.take_stop() {
                break;
            }
        }
        Ok(())
    }

    /// One tick, waiting for at least one event if nothing is ready. Returns
    /// at once if nothing at all is pending.
    pub fn run_once(&mut self) -> io::Result<()> {
        if self.has_work() {
            self.tick(Wait::UntilEvent)?;
        }
        self.take_stop();
        Ok(())
    }

    /// One tick that does not block.
    pub fn run_nowait(&mut self) -> io::Result<()> {
        self.tick(Wait::No)?;
        self.take_stop();
        Ok(())
    }

    /// Runs for `duration`, or until nothing is pending or `stop()`.
    pub fn run_for(&mut self, duration: Duration) -> io::Result<()> {
        self.refresh_clock_outside_callbacks();
        let end_ns = self.clock.deadline_ns(duration);
        while self.has_work() {
            self.tick(Wait::Until(end_ns))?;
            if self.take_stop() || self.clock.now_ns() >= end_ns {
                break;
            }
        }
        Ok(())
    }

    /// Between runs the cached time goes stale (the caller may have done
    /// anything since the last tick): re-read it before computing a deadline.
    fn refresh_clock_outside_callbacks(&mut self) {
        if !self.in_callbacks {
            self.clock.update();
        }
    }

    fn take_stop(&mut self) -> bool {
        let remote = self.shared.take_stop();
        std::mem::replace(&mut self.stopped, false) || remote
    }

    fn has_work(&self) -> bool {
        self.ops.len() > 0
            || self.timers.len() > 0
            || !self.ready.is_empty()
            || !self.deferred.is_empty()
            || self.shared.has_pending()
            || self.stopped
    }

    fn tick(&mut self, wait: Wait) -> io::Result<()> {
        self.stats.ticks += 1;
        let tick = self.stats.ticks;
        // A send's partial completion arrives at most a tick after the close.
        self.recently_closed
            .retain(|&(_, closed_at)| closed_at + 1 >= tick);
        self.flush_submissions()?;
        let timeout = self.wait_timeout(wait);
        self.completed.append(&mut self.raw_completions);
        // Nothing in any backend and no need to sleep: skip the kernel.
        let idle = self.ops.in_kernel() == 0
            && self.completed.is_empty()
            && timeout == Some(Duration::ZERO);
        let result = if idle {
            Ok(())
        } else {
            self.driver
                .wait(timeout, &mut self.ops, &mut self.completed, &mut self.stats)
        };
        self.clock.update();
        // On an error the completions stay in `completed` for the next tick.
        result?;
        self.in_callbacks = true;
        self.run_posted();
        self.run_due_timers();
        self.run_ready();
        self.run_completions();
        self.run_deferred();
        self.in_callbacks = false;
        Ok(())
    }

    fn run_deferred(&mut self) {
        for _ in 0..DEFER_BUDGET_PER_TICK {
            match self.deferred.pop_front() {
                Some(Deferred::Boxed(callback)) => callback(self),
                Some(Deferred::Fn(callback, arg)) => callback(self, arg),
                None => return,
            }
        }
    }

    fn wait_timeout(&mut self, wait: Wait) -> Option<Duration> {
        // Completions a mid-tick flush already reaped are ready as well.
        if !self.ready.is_empty()
            || !self.raw_completions.is_empty()
            || self.completed.len() > self.completed_next
            || !self.deferred.is_empty()
            || self.stopped
            || self.shared.has_pending()
            || !self.submit_queue.is_empty()
        {
            return Some(Duration::ZERO);
        }
        let until_ns = match wait {
            Wait::No => return Some(Duration::ZERO),
            Wait::UntilEvent => self.timers.next_deadline_ns(),
            Wait::Until(end_ns) => Some(
                self.timers
                    .next_deadline_ns()
                    .map_or(end_ns, |d| d.min(end_ns)),
            ),
        };
        // Re-read the clock: callbacks may have run for a while since the last wait.
        self.clock.update();
        let now_ns = self.clock.now_ns();
        until_ns.map(|deadline| Duration::from_nanos(deadline.saturating_sub(now_ns)))
    }

    /// Hands every queued op to the backend. A full submission queue is
    /// flushed (one enter) and filling continues; an op is never failed
    /// because the ring is full.
    fn flush_submissions(&mut self) -> io::Result<()> {
        let mut next = 0;
        let mut full_rounds = 0;
        let result = loop {
            let Some(&id) = self.submit_queue.get(next) else {
                break Ok(());
            };
            // Canceled while queued (its key may hold another op by now).
            let Some(mut op) = self.ops.queued_mut(id) else {
                next += 1;
                continue;
            };
            let kind = op.kind();
            match self
                .driver
                .push(id, kind, &mut self.raw_completions, &mut self.stats)
            {
                Push::Accepted => {
                    tracing::trace!(op = kind.name(), key = id.key, "submit");
                    if let OpKind::Close { fd } = *kind {
                        self.recently_closed.push((fd, self.stats.ticks));
                    }
                    op.mark_in_kernel();
                    next += 1;
                    self.stats.sqes_submitted += 1;
                    full_rounds = 0;
                }
                Push::Full => {
                    full_rounds += 1;
                    // Two full rounds in a row means flushing freed nothing:
                    // leave the rest for the next tick rather than spin.
                    if full_rounds > 1 {
                        break Ok(());
                    }
                    if let Err(e) = self
                        .driver
                        .flush(&mut self.raw_completions, &mut self.stats)
                    {
                        break Err(e);
                    }
                }
            }
        };
        self.submit_queue.drain(..next);
        result
    }

    fn run_posted(&mut self) {
        let mut posted = std::mem::take(&mut self.posted);
        if self.shared.drain(&mut posted) {
            self.stats.wakeups += 1;
            for f in posted.drain(..) {
                f(self);
            }
        }
        self.posted = posted;
    }

    /// Fires timers due now, one at a time, so a callback can still cancel a
    /// timer due in this same tick. Timers set by these callbacks wait for the
    /// next tick, even if already due, so a zero-delay re-arm cannot spin here.
    fn run_due_timers(&mut self) {
        let now_ns = self.clock.now_ns();
        let max_seq = self.timers.last_seq();
        while let Some(callback) = self.timers.pop_due(now_ns, max_seq) {
            self.stats.timers_fired += 1;
            callback.run(self);
        }
    }
}

#[derive(Debug, Clone, Copy)]
enum Wait {
    No,
    UntilEvent,
    Until(u64),
}

impl std::fmt::Debug for Loop {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Loop")
            .field("backend", &self.backend())
            .field("stats", &self.stats())
            .finish_non_exhaustive()
    }
}
