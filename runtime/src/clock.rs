//! The loop's clock: monotonic time read once per tick.
//!
//! Callbacks ask the loop for the time ([`crate::Loop::now`]) instead of
//! reading `Instant::now()`, so every callback of one tick sees the same
//! instant and a simulated backend can substitute virtual time.

use std::time::{Duration, Instant};

pub(crate) struct Clock {
    epoch: Instant,
    now_ns: u64,
}

impl Clock {
    pub(crate) fn new() -> Clock {
        Clock {
            epoch: Instant::now(),
            now_ns: 0,
        }
    }

    /// Reads the OS clock (vDSO, no syscall) and caches it.
    pub(crate) fn update(&mut self) {
        let elapsed = self.epoch.elapsed();
        let ns = elapsed.as_nanos().min(u64::MAX as u128) as u64;
        // Monotonic by construction; never let the cached value go back.
        self.now_ns = self.now_ns.max(ns);
    }

    /// Nanoseconds since the loop started, as of the last update.
    pub(crate) fn now_ns(&self) -> u64 {
        self.now_ns
    }

    pub(crate) fn now(&self) -> Instant {
        self.epoch + Duration::from_nanos(self.now_ns)
    }

    /// The deadline `after` from now, in clock nanoseconds (saturating).
    pub(crate) fn deadline_ns(&self, after: Duration) -> u64 {
        let after_ns = after.as_nanos().min(u64::MAX as u128) as u64;
        self.now_ns.saturating_add(after_ns)
    }
}
