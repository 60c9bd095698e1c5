//! Value buffers passed back for reuse: a PUT that replaces a value nobody
//! else holds leaves the old value's buffer here, and a later PUT whose body
//! has arrived whole takes it, instead of a malloc for the new body and a
//! free for the old value (about 240 instructions per PUT).
//!
//! The shards give and the connections take on the one loop thread, so the
//! pool is shared as an `Rc` (like the shards' Pids), never across threads.
//!
//! Invariants: at most [`BODY_POOL_BUFFERS_MAX`] buffers and
//! [`BODY_POOL_BYTES_MAX`] bytes of capacity are kept, each buffer empty; a
//! body takes a buffer only if that holds at most twice the body, so a
//! stored value never keeps more than twice its length.

use std::cell::RefCell;
use std::rc::Rc;

/// Most buffers kept (a pipelined tick's PUTs on every connection take
/// theirs before the shards give the replaced ones back).
pub const BODY_POOL_BUFFERS_MAX: usize = 1024;
/// Most bytes of capacity kept, all buffers together.
pub const BODY_POOL_BYTES_MAX: usize = 1 << 20;

#[derive(Default)]
struct Pool {
    buffers: Vec<Vec<u8>>,
    capacity_bytes: usize,
}

/// The pool, shared by the shards and the server.
#[derive(Clone, Default)]
pub struct BodyPool(Rc<RefCell<Pool>>);

impl BodyPool {
    /// Keeps `buf` for a later body, if the pool has room for it.
    pub fn give(&self, mut buf: Vec<u8>) {
        let mut pool = self.0.borrow_mut();
        let capacity_bytes = pool.capacity_bytes + buf.capacity();
        if buf.capacity() == 0
            || pool.buffers.len() >= BODY_POOL_BUFFERS_MAX
            || capacity_bytes > BODY_POOL_BYTES_MAX
        {
            return;
        }
        buf.clear();
        pool.capacity_bytes = capacity_bytes;
        pool.buffers.push(buf);
    }

    /// An empty buffer with room for `len` bytes: the one given last if it
    /// fits (room for `len`, and at most twice that), else a new one.
    pub fn take(&self, len: usize) -> Vec<u8> {
        let mut pool = self.0.borrow_mut();
        let fits = |b: &mut Vec<u8>| b.capacity() >= len && b.capacity() - len <= len;
        let Some(buf) = pool.buffers.pop_if(fits) else {
            return Vec::with_capacity(len);
        };
        pool.capacity_bytes -= buf.capacity();
        debug_assert!(buf.is_empty());
        buf
    }

    /// Buffers kept now.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.0.borrow().buffers.len()
    }
}

impl std::fmt::Debug for BodyPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let pool = self.0.borrow();
        f.debug_struct("BodyPool")
            .field("buffers", &pool.buffers.len())
            .field("capacity_bytes", &pool.capacity_bytes)
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_given_buffer_is_taken_by_a_body_it_fits() {
        let pool = BodyPool::default();
        let mut old = Vec::with_capacity(64);
        old.extend_from_slice(&[7; 64]);
        let ptr = old.as_ptr();
        pool.give(old);
        assert_eq!(pool.len(), 1);
        // Too big for a 31-byte body (more than twice it), too small for 65.
        assert_eq!(pool.take(31).capacity(), 31);
        assert_eq!(pool.take(65).capacity(), 65);
        let reused = pool.take(40);
        assert_eq!(reused.as_ptr(), ptr);
        assert!(reused.is_empty() && reused.capacity() >= 40);
        assert_eq!(pool.len(), 0);
    }

    #[test]
    fn the_pool_keeps_at_most_its_buffers_and_bytes() {
        let pool = BodyPool::default();
        for _ in 0..BODY_POOL_BUFFERS_MAX + 10 {
            pool.give(Vec::with_capacity(16));
        }
        assert_eq!(pool.len(), BODY_POOL_BUFFERS_MAX);
        let pool = BodyPool::default();
        pool.give(Vec::with_capacity(BODY_POOL_BYTES_MAX + 1));
        pool.give(Vec::new());
        assert_eq!(pool.len(), 0);
        pool.give(Vec::with_capacity(BODY_POOL_BYTES_MAX / 2));
        pool.give(Vec::with_capacity(BODY_POOL_BYTES_MAX / 2));
        pool.give(Vec::with_capacity(1));
        assert_eq!(pool.len(), 2);
        let _ = pool.take(BODY_POOL_BYTES_MAX / 2);
        pool.give(Vec::with_capacity(1));
        assert_eq!(pool.len(), 2);
    }
}
