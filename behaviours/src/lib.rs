//! Erlang/OTP's behaviours — `gen_server`, `gen_event`, `supervisor` — as
//! callbacks on ringvisor's loop.
//!
//! A process is a behaviour instance in the loop's process table, addressed by
//! a [`Pid`]. Sending only queues; the loop runs processes with messages each
//! tick under a fairness budget. Every callback runs under `catch_unwind`: a
//! panic ends that process (its callers fail at once, its resources are
//! released, its supervisor is told) and everything else carries on.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod call;
pub mod codec;
mod ctx;
pub mod durable;
pub mod gen_event;
pub mod gen_server;
pub mod listener;
pub mod persist;
mod pid;
mod process;
pub mod remote;
pub mod step;
pub mod supervisor;

pub use call::{reply, waiting as calls_waiting, CallError, From, INFINITY};
pub use ctx::{Completer, Ctx, Later, TimerRef};
pub use gen_server::{GenServer, Info, Init, Next, Reply, ServerRef, StartError, StartOptions};
pub use pid::{ExitReason, MonitorRef, Pid};
pub use process::{
    count as process_count, is_alive, mailbox_len, parent, stop as stop_process, whereis, Kill,
    SendError, MAILBOX_CAPACITY_DEFAULT, PASS_BUDGET, PROCESS_BUDGET, TERMINATE_GRACE_DEFAULT,
};
