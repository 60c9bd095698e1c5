//! ringvisor's runtime: a single-threaded completion event loop on io_uring,
//! with an epoll/kqueue fallback through `polling`.
//!
//! Every op takes ownership of its buffers, is queued without a syscall, and
//! completes exactly once (`Ok`, `Err`, or [`OpError::Canceled`]) with its
//! buffers handed back. Each tick submits every queued op and waits for
//! completions in one `io_uring_enter`, bounded by the nearest timer.
//!
//! ```
//! use ringvisor_runtime::Loop;
//! use std::time::Duration;
//!
//! let mut lp = Loop::new().unwrap();
//! lp.timer(Duration::from_millis(1), |lp| {
//!     lp.open("/dev/zero", libc::O_RDONLY, 0, |lp, fd| {
//!         let fd = fd.unwrap();
//!         lp.read_at(fd, Vec::with_capacity(16), 0, move |lp, n, buf| {
//!             assert_eq!(n.unwrap(), 16);
//!             assert_eq!(buf, vec![0u8; 16]);
//!             lp.close(fd, |_, res| res.unwrap());
//!         });
//!     });
//! });
//! lp.run().unwrap();
//! ```
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod backend;
mod clock;
mod event_loop;
mod handle;
mod op;
mod ops;
mod stats;
mod timer;

#[doc(hidden)]
pub mod testing;

pub use backend::Backend;
pub use event_loop::{
    fold_type_id, Loop, LoopBuilder, BATCH_WAIT_DEFAULT, BATCH_WAIT_MAX, DEFER_BUDGET_PER_TICK,
    FILE_THREADS_DEFAULT, SQ_ENTRIES_DEFAULT,
};
pub use handle::{LoopGone, LoopHandle};
pub use op::{OpError, OpId, OpResult};
pub use ops::net::{
    local_addr, set_nodelay, ListenOptions, SendRecvDone, SendRecvOutcome, LISTEN_BACKLOG_DEFAULT,
    SEND_RECV_BUFS_POOLED_MAX,
};
pub use stats::Stats;
pub use timer::TimerId;
