//! The loop's clock: monotonic time read once per tick.
//!
//! Callbacks ask the loop for the time ([`crate::Loop::now`]) instead of
//! reading `Instant::now()`, so every callback of one tick sees the same
//! instant and a simulated backend can substitute virtual time.

use std::time::{Duration, Instant};

pub(crate) struct Clock {
    epoch: Instant,
    now_ns: u64,
    /// `epoch + now_ns`, kept beside it: callbacks ask for the time several
    /// times per request, and building an `Instant` from a `Duration` costs
    /// a normalising add each time.
    now: Instant,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        let epoch = Instant::now();
        Clock {
            epoch,
            now_ns: 0,
            now: epoch,
        }
    }

    /// Reads the OS clock (vDSO, no syscall) and caches it.
    pub(crate) fn update(&mut self) {
        let elapsed = self.epoch.elapsed();
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        // Monotonic by construction; never let the cached value go back.
        if ns > self.now_ns {
            self.now_ns = ns;
            self.now = self.epoch + Duration::from_nanos(ns);
        }
    }

    /// Nanoseconds since the loop started, as of the last update.
    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub(crate) fn now(&self) -> Instant {
        debug_assert_eq!(self.now, self.epoch + Duration::from_nanos(self.now_ns));
        self.now
    }

    /// The deadline `after` from now, in clock nanoseconds (saturating).
    pub(crate) fn deadline_ns(&self, after: Duration) -> u64 {
        let after_ns = after.as_nanos().min(u64::MAX as u128) as u64;
        self.now_ns.saturating_add(after_ns)
    }
}
