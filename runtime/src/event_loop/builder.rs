//! Building a loop: the backend, queue sizes and the batch wait, each with
//! a default and, for the backend and the batch wait, an environment
//! variable that overrides the default.

use std::collections::VecDeque;
use std::io;
use std::marker::PhantomData;
use std::time::Duration;

use super::{extensions, Loop, FILE_THREADS_DEFAULT, SQ_ENTRIES_DEFAULT};
use crate::backend::{self, Backend, BackendConfig, Driver};
use crate::clock::Clock;
use crate::handle::Shared;
use crate::op::OpTable;
use crate::stats::Stats;
use crate::timer::Timers;

/// Builds a [`Loop`] with a chosen backend and sizes.
///
/// ```
/// # use ringvisor_runtime::{Backend, Loop};
/// let lp = Loop::builder()
///     .backend(Backend::Auto)
///     .sq_entries(512)
///     .file_threads(2)
///     .build()
///     .unwrap();
/// assert_ne!(lp.backend(), Backend::Auto);
/// ```
#[derive(Debug, Clone)]
pub struct LoopBuilder {
    backend: Option<Backend>,
    config: BackendConfig,
}

impl LoopBuilder {
    /// Which backend to use. Without this, `RINGVISOR_BACKEND` (`uring`, `poll`,
    /// `auto`) decides, and `Auto` if it is unset.
    pub fn backend(mut self, backend: Backend) -> LoopBuilder {
        self.backend = Some(backend);
        self
    }

    /// io_uring submission queue entries (rounded up to a power of two by the
    /// kernel). Ignored by poll.
    pub fn sq_entries(mut self, sq_entries: u32) -> LoopBuilder {
        assert!(sq_entries > 0, "sq_entries must be positive");
        self.config.sq_entries = sq_entries;
        self
    }

    /// Threads of the poll backend's regular-file pool. Ignored by io_uring.
    pub fn file_threads(mut self, file_threads: usize) -> LoopBuilder {
        assert!(file_threads > 0, "file_threads must be positive");
        self.config.file_threads = file_threads;
        self
    }

    /// How long a waiting tick on io_uring may hold on for more completions
    /// (Linux 6.12's min-wait; ignored by poll and by older kernels). A tick
    /// with nothing to do waits for as many completions as the last waiting
    /// tick reaped (at most a sixteenth of the ops in flight): it returns as
    /// soon as they are in, or once `batch_wait` has passed with at least one
    /// in. One connection, or one active among many idle ones, never waits
    /// more than without it; under load, every kernel entry carries a bigger
    /// batch. Zero turns it off. Default 50 µs, or `RINGVISOR_BATCH_WAIT_US`.
    ///
    /// ```
    /// # use std::time::Duration;
    /// # use ringvisor_runtime::Loop;
    /// let lp = Loop::builder().batch_wait(Duration::ZERO).build().unwrap();
    /// # drop(lp);
    /// ```
    pub fn batch_wait(mut self, batch_wait: Duration) -> LoopBuilder {
        self.config.batch_wait = batch_wait.min(BATCH_WAIT_MAX);
        self
    }

    /// Creates the loop. Fails if the backend asked for cannot run here, or if
    /// `RINGVISOR_BACKEND` holds something unknown.
    pub fn build(self) -> io::Result<Loop> {
        let requested = match self.backend {
            Some(backend) => backend,
            None => backend_from_env()?,
        };
        let driver = backend::open(requested, self.config)?;
        let shared = Shared::new(driver.waker());
        let mut clock = Clock::new();
        clock.update();
        Ok(Loop {
            driver,
            ops: OpTable::new(),
            submit_queue: Vec::new(),
            raw_completions: Vec::new(),
            completed: Vec::new(),
            completed_next: 0,
            ready: VecDeque::new(),
            timers: Timers::new(),
            clock,
            stats: Stats::default(),
            shared,
            posted: Vec::new(),
            deferred: VecDeque::new(),
            send_recv_bufs: Vec::new(),
            extensions: extensions::Extensions::default(),
            stopped: false,
            in_callbacks: false,
            recently_closed: Vec::new(),
            _not_send: PhantomData,
        })
    }
}

/// Default of [`LoopBuilder::batch_wait`].
pub const BATCH_WAIT_DEFAULT: Duration = Duration::from_micros(50);
/// Longest [`LoopBuilder::batch_wait`] accepted (longer is cut to this).
pub const BATCH_WAIT_MAX: Duration = Duration::from_millis(10);

fn batch_wait_from_env() -> Duration {
    match std::env::var("RINGVISOR_BATCH_WAIT_US").map(|v| v.parse::<u64>()) {
        Ok(Ok(us)) => Duration::from_micros(us).min(BATCH_WAIT_MAX),
        Ok(Err(_)) => {
            tracing::warn!(
                "RINGVISOR_BATCH_WAIT_US is not a number of microseconds; using the default"
            );
            BATCH_WAIT_DEFAULT
        }
        Err(_) => BATCH_WAIT_DEFAULT,
    }
}

fn backend_from_env() -> io::Result<Backend> {
    match std::env::var("RINGVISOR_BACKEND") {
        Err(_) => Ok(Backend::Auto),
        Ok(value) => Backend::parse(&value).ok_or_else(|| {
            io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("RINGVISOR_BACKEND={value:?}: expected uring, poll or auto"),
            )
        }),
    }
}

impl Loop {
    /// A loop with default settings (see [`LoopBuilder`]).
    pub fn new() -> io::Result<Loop> {
        Loop::builder().build()
    }

    /// Starts building a loop.
    pub fn builder() -> LoopBuilder {
        LoopBuilder {
            backend: None,
            config: BackendConfig {
                sq_entries: SQ_ENTRIES_DEFAULT,
                file_threads: FILE_THREADS_DEFAULT,
                batch_wait: batch_wait_from_env(),
            },
        }
    }
}
