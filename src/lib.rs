//! ringvisor: a completion-based event loop on io_uring (with an epoll/kqueue
//! fallback) and, on top of it, Erlang/OTP's behaviours.
//!
//! This facade re-exports the runtime ([`ringvisor_runtime`]).
//!
//! ```
//! use ringvisor::Loop;
//! let mut lp = Loop::new().unwrap();
//! lp.nop(|_, res| res.unwrap());
//! lp.run().unwrap();
//! ```
#![warn(missing_docs)]

pub use ringvisor_runtime::*;

/// Erlang/OTP's behaviours on the loop (see [`ringvisor_behaviours`]).
pub use ringvisor_behaviours as behaviours;
