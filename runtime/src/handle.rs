//! `LoopHandle`: posting work into a loop from other threads.
//!
//! Posted closures wait in a mutex-protected queue; the first post after the
//! loop drained the queue wakes the backend (eventfd on io_uring,
//! `Poller::notify` on poll). Later posts before the next drain ride along
//! without another wakeup.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use crate::backend::Wake;
use crate::event_loop::Loop;

pub(crate) type Posted = Box<dyn FnOnce(&mut Loop) + Send>;

pub(crate) struct Shared {
    queue: Mutex<Vec<Posted>>,
    /// Set by the first post after a drain; cleared by the drain.
    pending: AtomicBool,
    stop: AtomicBool,
    /// False once the loop is gone: posts are refused.
    alive: AtomicBool,
    waker: Arc<dyn Wake>,
}

impl Shared {
    pub(crate) fn new(waker: Arc<dyn Wake>) -> Arc<Shared> {
        Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            pending: AtomicBool::new(false),
            stop: AtomicBool::new(false),
            alive: AtomicBool::new(true),
            waker,
        })
    }

    /// Takes posted work into `into`; true if there was any.
    pub(crate) fn drain(&self, into: &mut Vec<Posted>) -> bool {
        if !self.pending.load(Ordering::Acquire) {
            return false;
        }
        self.pending.store(false, Ordering::Release);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        std::mem::swap(&mut *queue, into);
        !into.is_empty()
    }

    pub(crate) fn take_stop(&self) -> bool {
        self.stop.swap(false, Ordering::AcqRel)
    }

    pub(crate) fn has_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }

    pub(crate) fn close(&self) {
        self.alive.store(false, Ordering::Release);
        let mut queue = self.queue.lock().unwrap_or_else(|p| p.into_inner());
        queue.clear();
    }
}

/// A `Send + Sync + Clone` handle to a loop, for other threads.
///
/// ```
/// # use ringvisor_runtime::Loop;
/// # use std::time::Duration;
/// let mut lp = Loop::new().unwrap();
/// let handle = lp.handle();
/// // Keep the loop busy until another thread stops it.
/// lp.timer(Duration::from_secs(60), |_| {});
/// let t = std::thread::spawn(move || handle.post(|lp| lp.stop()).unwrap());
/// lp.run().unwrap();
/// t.join().unwrap();
/// ```
#[derive(Clone)]
pub struct LoopHandle {
    shared: Arc<Shared>,
}

/// The loop behind a [`LoopHandle`] was dropped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LoopGone;

impl std::fmt::Display for LoopGone {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("the loop is gone")
    }
}

impl std::error::Error for LoopGone {}

impl LoopHandle {
    pub(crate) fn new(shared: Arc<Shared>) -> LoopHandle {
        LoopHandle { shared }
    }

    /// Runs `f` on the loop's thread during its next tick, waking it if it
    /// sleeps. Refused once the loop is dropped.
    pub fn post(&self, f: impl FnOnce(&mut Loop) + Send + 'static) -> Result<(), LoopGone> {
        if !self.shared.alive.load(Ordering::Acquire) {
            return Err(LoopGone);
        }
        {
            let mut queue = self.shared.queue.lock().unwrap_or_else(|p| p.into_inner());
            queue.push(Box::new(f));
        }
        if !self.shared.pending.swap(true, Ordering::AcqRel) {
            self.shared.waker.wake();
        }
        Ok(())
    }

    /// Makes the loop's current `run*` call return after its current tick.
    pub fn stop(&self) {
        self.shared.stop.store(true, Ordering::Release);
        self.shared.waker.wake();
    }
}

impl std::fmt::Debug for LoopHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LoopHandle").finish_non_exhaustive()
    }
}
