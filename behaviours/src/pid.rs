//! Process identifiers and exit reasons.

use std::sync::Arc;

/// Identifies a process: a slot in the loop's process table plus the
/// generation of its occupant, so a stale `Pid` never reaches a process that
/// later reuses the slot.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Pid {
    pub(crate) index: u32,
    pub(crate) generation: u32,
}

impl std::fmt::Display for Pid {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "<{}.{}>", self.index, self.generation)
    }
}

/// Why a process ended, as in OTP.
///
/// `Normal`, `Shutdown` and `ShutdownWith(_)` are the normal reasons: a
/// `Transient` child that ends with one of them is not restarted.
///
/// ```
/// use ringvisor_behaviours::ExitReason;
/// assert!(ExitReason::Shutdown.is_normal());
/// assert!(!ExitReason::panic("boom").is_normal());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ExitReason {
    /// The process finished its work.
    Normal,
    /// Its supervisor (or owner) shut it down.
    Shutdown,
    /// A shutdown with a reason, e.g. a supervisor that
    /// [`reached_max_restart_intensity`](ExitReason::REACHED_MAX_RESTART_INTENSITY).
    ShutdownWith(Arc<str>),
    /// Killed without running `terminate` (`BrutalKill`, or a shutdown timeout).
    Killed,
    /// A callback panicked; the payload's message.
    Panic(Arc<str>),
    /// The process stopped itself with an error.
    Error(Arc<str>),
}

impl ExitReason {
    /// The reason a supervisor exits with when its children restart too often.
    pub const REACHED_MAX_RESTART_INTENSITY: &'static str = "reached_max_restart_intensity";

    /// True for `Normal`, `Shutdown` and `ShutdownWith(_)`.
    pub fn is_normal(&self) -> bool {
        matches!(
            self,
            ExitReason::Normal | ExitReason::Shutdown | ExitReason::ShutdownWith(_)
        )
    }

    /// An `Error` reason.
    pub fn error(message: impl Into<Arc<str>>) -> ExitReason {
        ExitReason::Error(message.into())
    }

    /// A `Panic` reason.
    pub fn panic(message: impl Into<Arc<str>>) -> ExitReason {
        ExitReason::Panic(message.into())
    }

    /// A `ShutdownWith` reason.
    pub fn shutdown_with(message: impl Into<Arc<str>>) -> ExitReason {
        ExitReason::ShutdownWith(message.into())
    }

    /// The reason carried by a caught panic payload.
    pub(crate) fn from_panic(payload: Box<dyn std::any::Any + Send>) -> ExitReason {
        let message: Arc<str> = if let Some(s) = payload.downcast_ref::<&'static str>() {
            (*s).into()
        } else if let Some(s) = payload.downcast_ref::<String>() {
            s.as_str().into()
        } else {
            "panic with a non-string payload".into()
        };
        ExitReason::Panic(message)
    }
}

impl std::fmt::Display for ExitReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            ExitReason::Normal => f.write_str("normal"),
            ExitReason::Shutdown => f.write_str("shutdown"),
            ExitReason::ShutdownWith(r) => write!(f, "{{shutdown, {r}}}"),
            ExitReason::Killed => f.write_str("killed"),
            ExitReason::Panic(m) => write!(f, "panic: {m}"),
            ExitReason::Error(m) => write!(f, "error: {m}"),
        }
    }
}

/// Identifies a monitor set with `monitor`, for `demonitor`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct MonitorRef(pub(crate) u64);
