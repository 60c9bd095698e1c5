//! The platform split: one internal interface, one file per backend.
//!
//! A backend takes ops the loop hands it (`push`), gets them to the kernel, and
//! reports each op's completion exactly once as a cqe-style [`RawCompletion`].
//! It never runs user callbacks: the loop collects completions first and runs
//! them from its own step of the tick, so callbacks never recurse into a
//! backend.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use crate::op::{OpId, OpKind, OpTable, RawCompletion};
use crate::stats::Stats;

pub(crate) use dispatch::AnyDriver;

mod dispatch;
pub(crate) mod poll;
pub(crate) mod pool;
#[cfg(target_os = "linux")]
pub(crate) mod uring;

/// Which backend a loop runs on.
///
/// ```
/// # use ringvisor_runtime::{Backend, Loop};
/// let lp = Loop::builder().backend(Backend::Poll).build().unwrap();
/// assert_eq!(lp.backend(), Backend::Poll);
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Backend {
    /// Probe io_uring and fall back to poll where it is missing (the default).
    Auto,
    /// io_uring: completions from the kernel, one `io_uring_enter` per tick.
    Uring,
    /// epoll/kqueue readiness through `polling`, completions emulated.
    Poll,
}

impl Backend {
    /// The name used in logs, the `RINGVISOR_BACKEND` variable and examples'
    /// output: `io_uring`, `poll` or `auto`.
    pub fn name(self) -> &'static str {
        match self {
            Backend::Auto => "auto",
            Backend::Uring => "io_uring",
            Backend::Poll => "poll",
        }
    }

    /// Parses `auto`, `uring`/`io_uring` or `poll`.
    ///
    /// ```
    /// # use ringvisor_runtime::Backend;
    /// assert_eq!(Backend::parse("uring"), Some(Backend::Uring));
    /// assert_eq!(Backend::parse("nope"), None);
    /// ```
    pub fn parse(s: &str) -> Option<Backend> {
        match s.trim().to_ascii_lowercase().as_str() {
            "auto" => Some(Backend::Auto),
            "uring" | "io_uring" | "io-uring" => Some(Backend::Uring),
            "poll" | "epoll" | "kqueue" => Some(Backend::Poll),
            _ => None,
        }
    }
}

impl std::fmt::Display for Backend {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// Whether a backend took an op.
pub(crate) enum Push {
    Accepted,
    /// No room this round (a full submission queue): flush, then retry.
    /// Only io_uring has a queue to fill.
    #[cfg_attr(not(target_os = "linux"), allow(dead_code))]
    Full,
}

/// Wakes a loop sleeping in its backend from another thread.
pub(crate) trait Wake: Send + Sync {
    fn wake(&self);
}

/// Settings a backend is built with.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BackendConfig {
    pub(crate) sq_entries: u32,
    pub(crate) file_threads: usize,
    /// See [`crate::LoopBuilder::batch_wait`].
    pub(crate) batch_wait: std::time::Duration,
}

pub(crate) trait Driver {
    fn kind(&self) -> Backend;

    /// Whether sockets handed to this backend must be nonblocking.
    fn wants_nonblocking_sockets(&self) -> bool;

    /// Starts an op. The op's memory stays in the op table, at a stable heap
    /// address, until this backend reports its completion. May report the
    /// completion at once into `done` (no callback runs here).
    fn push(
        &mut self,
        id: OpId,
        kind: &mut OpKind,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> Push;

    /// Takes an op as it is submitted, if this backend can without a
    /// syscall or any effect the kernel could see before the next wait
    /// (io_uring: its SQE goes into the SQ ring, which the kernel reads only
    /// at the next enter). False: the loop queues the op for its next tick's
    /// [`Driver::push`]. The memory rules are `push`'s.
    fn push_now(&mut self, id: OpId, kind: &mut OpKind) -> bool;

    /// Sends what `push` queued without waiting (after a `Push::Full`).
    fn flush(&mut self, done: &mut Vec<RawCompletion>, stats: &mut Stats) -> io::Result<()>;

    /// Asks the kernel to cancel an op it holds. Its completion still comes
    /// through `wait` (with whatever result the kernel reports).
    fn cancel(&mut self, id: OpId, kind: &OpKind, done: &mut Vec<RawCompletion>, stats: &mut Stats);

    /// Submits everything pending and waits up to `timeout` (`None`: until
    /// something happens) for completions. Some are appended to `done`; the
    /// rest are left where the kernel put them, for
    /// [`Driver::next_completion`] to hand over one at a time.
    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ops: &mut OpTable,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> io::Result<()>;

    /// The next op completion `wait` left in the kernel's queue (io_uring's
    /// CQ), if any: the loop settles each as it takes it, with no pass that
    /// copies them all out first. Every op completion still comes out once,
    /// through `done` or here.
    fn next_completion(&mut self) -> Option<RawCompletion>;

    /// A waker usable from any thread.
    fn waker(&self) -> Arc<dyn Wake>;
}

/// Builds the backend asked for. `Auto` probes io_uring and falls back to poll
/// with one warning saying why.
#[cfg(target_os = "linux")]
pub(crate) fn open(requested: Backend, config: BackendConfig) -> io::Result<AnyDriver> {
    match requested {
        Backend::Uring => {
            let driver = uring::UringDriver::open(config).map_err(|e| {
                io::Error::new(e.kind(), format!("io_uring backend unavailable: {e}"))
            })?;
            tracing::debug!(sq_entries = config.sq_entries, "backend: io_uring");
            Ok(AnyDriver::Uring(driver))
        }
        Backend::Poll => open_poll(config),
        Backend::Auto => match uring::UringDriver::open(config) {
            Ok(driver) => {
                tracing::debug!(sq_entries = config.sq_entries, "backend: io_uring (auto)");
                Ok(AnyDriver::Uring(driver))
            }
            Err(e) if uring::is_unavailable(&e) => {
                tracing::warn!(reason = %e, "io_uring unavailable, falling back to poll backend");
                open_poll(config)
            }
            Err(e) => Err(e),
        },
    }
}

/// Builds the backend asked for: io_uring exists only on Linux, so `Auto`
/// means poll (kqueue) and asking for `Uring` is an error.
#[cfg(not(target_os = "linux"))]
pub(crate) fn open(requested: Backend, config: BackendConfig) -> io::Result<AnyDriver> {
    match requested {
        Backend::Uring => Err(io::Error::new(
            io::ErrorKind::Unsupported,
            "io_uring backend unavailable: io_uring is Linux-only",
        )),
        Backend::Poll | Backend::Auto => open_poll(config),
    }
}

fn open_poll(config: BackendConfig) -> io::Result<AnyDriver> {
    tracing::debug!(file_threads = config.file_threads, "backend: poll");
    Ok(AnyDriver::Poll(poll::PollDriver::open(config)?))
}
