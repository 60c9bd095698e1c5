//! Erlang/OTP's behaviours as callbacks on ringvisor's loop.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]
pub mod persist;
