//! Child specifications and supervisor flags.

use std::rc::Rc;
use std::time::Duration;

use ringvisor_runtime::Loop;

use crate::gen_server::{self, GenServer, StartError, StartOptions};
use crate::pid::Pid;

/// When a child is restarted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Restart {
    /// Always.
    Permanent,
    /// Only after an abnormal exit (not `Normal`, `Shutdown`, `ShutdownWith`).
    Transient,
    /// Never; its spec is dropped when it ends.
    Temporary,
}

/// How a child is stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Shutdown {
    /// Exit at once, without `terminate`.
    BrutalKill,
    /// Run `terminate`, let its async work finish up to this long, then kill.
    Timeout(Duration),
    /// Run `terminate` and wait for its async work however long it takes.
    Infinity,
}

/// Default shutdown of a worker: 5 s, as in OTP.
pub const WORKER_SHUTDOWN_DEFAULT: Shutdown = Shutdown::Timeout(Duration::from_secs(5));

/// Whether a child is a worker or a supervisor.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildKind {
    /// A worker (gen_server, gen_event manager, ...).
    Worker,
    /// A supervisor.
    Supervisor,
}

/// Starts a child linked to `parent`: returns its Pid, or why it did not start.
pub type StartFn = Rc<dyn Fn(&mut Loop, Pid) -> Result<Pid, StartError>>;

/// A child specification.
///
/// ```
/// use ringvisor_behaviours::supervisor::{ChildSpec, Restart};
/// # use ringvisor_behaviours::gen_server::{Ctx, GenServer, Init, Reply};
/// # use ringvisor_behaviours::From;
/// # struct Worker;
/// # impl GenServer for Worker {
/// #     type Args = (); type Call = (); type Reply = (); type Cast = (); type Info = (); type Continue = ();
/// #     fn init(_: (), _: &mut Ctx<Self>) -> Init<Self> { Init::ok(Worker) }
/// #     fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> { Reply::now(()) }
/// # }
/// let spec = ChildSpec::worker::<Worker>("w1", || ()).restart(Restart::Transient);
/// assert_eq!(spec.id, "w1");
/// ```
#[derive(Clone)]
pub struct ChildSpec {
    /// Unique among the supervisor's children.
    pub id: String,
    /// How to start it.
    pub start: StartFn,
    /// When to restart it.
    pub restart: Restart,
    /// How to stop it.
    pub shutdown: Shutdown,
    /// Worker or supervisor.
    pub kind: ChildKind,
}

impl std::fmt::Debug for ChildSpec {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ChildSpec")
            .field("id", &self.id)
            .field("restart", &self.restart)
            .field("shutdown", &self.shutdown)
            .field("kind", &self.kind)
            .finish()
    }
}

impl ChildSpec {
    /// A permanent worker child running gen_server `S`, started with the
    /// arguments `args()` returns (called again on every restart).
    pub fn worker<S: GenServer>(
        id: impl Into<String>,
        args: impl Fn() -> S::Args + 'static,
    ) -> ChildSpec {
        let start: StartFn = Rc::new(move |lp, parent| {
            let options = StartOptions {
                parent: Some(parent),
                ..StartOptions::default()
            };
            gen_server::start::<S>(lp, args(), options).map(|server| server.pid())
        });
        ChildSpec {
            id: id.into(),
            start,
            restart: Restart::Permanent,
            shutdown: WORKER_SHUTDOWN_DEFAULT,
            kind: ChildKind::Worker,
        }
    }

    /// Like [`ChildSpec::worker`], and registered under its id, so clients
    /// find it again after a restart (`whereis(id)`).
    pub fn named_worker<S: GenServer>(
        id: impl Into<String>,
        args: impl Fn() -> S::Args + 'static,
    ) -> ChildSpec {
        let id = id.into();
        let name = id.clone();
        let start: StartFn = Rc::new(move |lp, parent| {
            let options = StartOptions {
                parent: Some(parent),
                ..StartOptions::named(name.clone())
            };
            gen_server::start::<S>(lp, args(), options).map(|server| server.pid())
        });
        ChildSpec {
            id,
            start,
            restart: Restart::Permanent,
            shutdown: WORKER_SHUTDOWN_DEFAULT,
            kind: ChildKind::Worker,
        }
    }

    /// A child from a custom start function (a worker; change with `kind`).
    pub fn from_fn(
        id: impl Into<String>,
        start: impl Fn(&mut Loop, Pid) -> Result<Pid, StartError> + 'static,
    ) -> ChildSpec {
        ChildSpec {
            id: id.into(),
            start: Rc::new(start),
            restart: Restart::Permanent,
            shutdown: WORKER_SHUTDOWN_DEFAULT,
            kind: ChildKind::Worker,
        }
    }

    /// Sets the restart type.
    pub fn restart(mut self, restart: Restart) -> ChildSpec {
        self.restart = restart;
        self
    }

    /// Sets the shutdown.
    pub fn shutdown(mut self, shutdown: Shutdown) -> ChildSpec {
        self.shutdown = shutdown;
        self
    }

    /// Sets the kind (the default shutdown follows: `Infinity` for supervisors).
    pub fn kind(mut self, kind: ChildKind) -> ChildSpec {
        self.kind = kind;
        if kind == ChildKind::Supervisor && self.shutdown == WORKER_SHUTDOWN_DEFAULT {
            self.shutdown = Shutdown::Infinity;
        }
        self
    }
}

/// How a supervisor restarts children.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Strategy {
    /// Restart only the child that exited.
    OneForOne,
    /// Stop all other children, then restart all.
    OneForAll,
    /// Stop the children started after it, then restart it and them.
    RestForOne,
    /// Dynamic children of one template, added with `start_dynamic_child`;
    /// restarts like `OneForOne`.
    SimpleOneForOne,
}

/// A supervisor's strategy and restart intensity.
///
/// ```
/// use ringvisor_behaviours::supervisor::{Flags, Strategy};
/// let flags = Flags::new(Strategy::OneForAll).intensity(3, std::time::Duration::from_secs(10));
/// assert_eq!(flags.max_restarts, 3);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct Flags {
    /// The restart strategy.
    pub strategy: Strategy,
    /// More restarts than this within `period` and the supervisor gives up.
    pub max_restarts: u32,
    /// The intensity window.
    pub period: Duration,
}

impl Flags {
    /// OTP's defaults: at most 1 restart within 5 s.
    pub fn new(strategy: Strategy) -> Flags {
        Flags {
            strategy,
            max_restarts: 1,
            period: Duration::from_secs(5),
        }
    }

    /// Sets the restart intensity.
    pub fn intensity(mut self, max_restarts: u32, period: Duration) -> Flags {
        self.max_restarts = max_restarts;
        self.period = period;
        self
    }
}

/// A child as `which_children` reports it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ChildInfo {
    /// Its id.
    pub id: String,
    /// Its state.
    pub state: ChildState,
    /// Worker or supervisor.
    pub kind: ChildKind,
    /// Times it was restarted.
    pub restarts: u32,
}

/// Where a child is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChildState {
    /// Running as this process.
    Running(Pid),
    /// Its restart failed; it will be retried.
    Restarting,
    /// Not running (terminated, ignored, or not restarted).
    Undefined,
}

/// `count_children`'s answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ChildCounts {
    /// Child specs.
    pub specs: usize,
    /// Running children.
    pub active: usize,
    /// Supervisor children.
    pub supervisors: usize,
    /// Worker children.
    pub workers: usize,
}

/// OTP's supervisor error cases.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SupervisorError {
    /// A child with this id is running.
    AlreadyStarted(Pid),
    /// A child with this id exists but is not running.
    AlreadyPresent,
    /// The child is running (for `restart_child`, `delete_child`).
    Running,
    /// The child is being restarted.
    Restarting,
    /// No child with this id.
    NotFound,
    /// The child did not start.
    StartFailed(StartError),
    /// Not supported by this supervisor's strategy.
    NotSupported,
}

impl std::fmt::Display for SupervisorError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SupervisorError::AlreadyStarted(pid) => write!(f, "already started as {pid}"),
            SupervisorError::AlreadyPresent => f.write_str("already present"),
            SupervisorError::Running => f.write_str("running"),
            SupervisorError::Restarting => f.write_str("restarting"),
            SupervisorError::NotFound => f.write_str("not found"),
            SupervisorError::StartFailed(e) => write!(f, "start failed: {e}"),
            SupervisorError::NotSupported => f.write_str("not supported by this strategy"),
        }
    }
}

impl std::error::Error for SupervisorError {}
