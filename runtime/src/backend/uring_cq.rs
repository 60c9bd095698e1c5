//! The CQ, read straight from the ring's memory.
//!
//! The io-uring crate hands out each CQE through an out-of-line copy and
//! re-reads the ring's head and tail on every borrow; the loop takes its
//! completions one at a time as it settles them ([`super::Driver::next_completion`]),
//! so that cost was paid per op. This view maps the CQ ring a second time
//! (the kernel maps the same pages for every mapping of the ring fd) and
//! keeps the head in a register's reach: one acquire load of the tail per
//! batch, one release store of the head per CQE, so the kernel can reuse the
//! slot at once. Every CQE is consumed through this view (the crate's own
//! CQ accessors are not used), and the crate reads the head from the ring
//! itself, so the two never disagree.

use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU32, Ordering};

use io_uring::Parameters;

/// `IORING_OFF_CQ_RING`: the mmap offset of the CQ ring.
const IORING_OFF_CQ_RING: libc::off_t = 0x800_0000;

/// `struct io_sqring_offsets` from the kernel's uapi.
#[repr(C)]
struct SqRingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    flags: u32,
    dropped: u32,
    array: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_cqring_offsets` from the kernel's uapi.
#[repr(C)]
struct CqRingOffsets {
    head: u32,
    tail: u32,
    ring_mask: u32,
    ring_entries: u32,
    overflow: u32,
    cqes: u32,
    flags: u32,
    resv1: u32,
    user_addr: u64,
}

/// `struct io_uring_params` from the kernel's uapi, which the crate's
/// `Parameters` wraps (`#[repr(transparent)]`, documented as such).
#[repr(C)]
struct RawParams {
    sq_entries: u32,
    cq_entries: u32,
    flags: u32,
    sq_thread_cpu: u32,
    sq_thread_idle: u32,
    features: u32,
    wq_fd: u32,
    resv: [u32; 3],
    sq_off: SqRingOffsets,
    cq_off: CqRingOffsets,
}

const _: () = assert!(std::mem::size_of::<RawParams>() == 120);
const _: () = assert!(std::mem::size_of::<RawParams>() == std::mem::size_of::<Parameters>());

/// `struct io_uring_cqe` (16 bytes: no CQE32 here).
#[repr(C)]
struct RawCqe {
    user_data: u64,
    res: i32,
    flags: u32,
}

/// A second view of the ring's CQ.
pub(super) struct CqView {
    map: *mut libc::c_void,
    map_len: usize,
    head_at: *const AtomicU32,
    tail_at: *const AtomicU32,
    cqes: *const RawCqe,
    mask: u32,
    /// The head as this view last published it.
    head: u32,
    /// The tail as last read: CQEs up to here are the kernel's to read.
    tail: u32,
}

impl CqView {
    /// Maps the CQ of the ring `ring_fd`, set up with `params`.
    pub(super) fn map(ring_fd: RawFd, params: &Parameters) -> io::Result<CqView> {
        // SAFETY: `Parameters` is a transparent wrapper of the kernel's
        // io_uring_params, which `RawParams` lays out field for field (the
        // sizes are checked above).
        let params = unsafe { &*(params as *const Parameters as *const RawParams) };
        let off = &params.cq_off;
        let map_len =
            off.cqes as usize + params.cq_entries as usize * std::mem::size_of::<RawCqe>();
        // SAFETY: maps the CQ ring of a ring this driver owns, shared, as the
        // io-uring crate maps it; the kernel picks the address.
        let map = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                map_len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                ring_fd,
                IORING_OFF_CQ_RING,
            )
        };
        if map == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let base = map as *const u8;
        // SAFETY: the kernel's offsets lie within the mapping it sized.
        let (head_at, tail_at, mask, cqes) = unsafe {
            (
                base.add(off.head as usize) as *const AtomicU32,
                base.add(off.tail as usize) as *const AtomicU32,
                *(base.add(off.ring_mask as usize) as *const u32),
                base.add(off.cqes as usize) as *const RawCqe,
            )
        };
        // SAFETY: head and tail are aligned u32s of the live mapping.
        let (head, tail) = unsafe {
            (
                (*head_at).load(Ordering::Acquire),
                (*tail_at).load(Ordering::Acquire),
            )
        };
        Ok(CqView {
            map,
            map_len,
            head_at,
            tail_at,
            cqes,
            mask,
            head,
            tail,
        })
    }

    /// CQEs the kernel has posted and this view not yet taken.
    pub(super) fn len(&mut self) -> usize {
        // SAFETY: `tail_at` points into the live mapping.
        self.tail = unsafe { (*self.tail_at).load(Ordering::Acquire) };
        self.tail.wrapping_sub(self.head) as usize
    }

    /// Takes the next CQE: its `user_data` and result.
    #[inline]
    pub(super) fn pop(&mut self) -> Option<(u64, i32)> {
        if self.head == self.tail {
            // SAFETY: `tail_at` points into the live mapping; acquire pairs
            // with the kernel's release of the CQEs it posted.
            self.tail = unsafe { (*self.tail_at).load(Ordering::Acquire) };
            if self.head == self.tail {
                return None;
            }
        }
        // SAFETY: `head` is behind the tail, so this CQE is posted and the
        // kernel leaves it alone until the head moves past it.
        let cqe = unsafe { &*self.cqes.add((self.head & self.mask) as usize) };
        let taken = (cqe.user_data, cqe.res);
        self.head = self.head.wrapping_add(1);
        // SAFETY: `head_at` points into the live mapping; release: the CQE
        // is read before the kernel may overwrite it.
        unsafe { (*self.head_at).store(self.head, Ordering::Release) };
        Some(taken)
    }
}

impl Drop for CqView {
    fn drop(&mut self) {
        // SAFETY: unmaps exactly the view `map` made; nothing reads it after.
        unsafe {
            libc::munmap(self.map, self.map_len);
        }
    }
}
