//! The typed op API: each op takes ownership of its buffers, queues itself on
//! the loop, and hands the buffers back to its callback with the result.

pub mod fs;
pub mod net;
