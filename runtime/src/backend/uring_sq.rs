//! The SQ side of the io_uring driver: every push, counted, and taking
//! back SQEs the kernel has not read yet.
//!
//! Ops go into the SQ ring as they are submitted ([`super::Driver::push_now`]),
//! but the kernel reads the ring only inside `io_uring_enter` (no SQPOLL
//! here), so until the tick's enter an op is still the loop's alone. A cancel
//! then withdraws its SQE: the entry is rewritten in place as a no-op with an
//! internal tag, and the op completes `Canceled` without the kernel ever
//! seeing its memory or doing its work (no bytes sent, no connection
//! accepted), as an op still in the loop's own queue does.
//!
//! The crate's submission queue can only push, so the driver keeps its own
//! count of the SQ tail (every push goes through [`super::UringDriver`]'s
//! push helpers) and this module maps the SQE array a second time to read
//! and rewrite entries between the kernel's head and that tail.

use std::io;
use std::os::fd::RawFd;

use io_uring::squeue;

use super::{token, UringDriver, VOID_TAG};
use crate::op::OpId;

impl UringDriver {
    /// Pushes one SQE; false if the SQ is full.
    #[inline]
    pub(super) fn push_entry(&mut self, entry: &squeue::Entry) -> bool {
        // SAFETY: every pointer in `entry` refers to memory that stays valid
        // until its completion: op memory lives in the op table (stable heap
        // addresses) until settled, and internal buffers live in `self` and are
        // drained before it is dropped.
        let pushed = unsafe { self.ring.submission().push(entry).is_ok() };
        self.sq_tail = self.sq_tail.wrapping_add(u32::from(pushed));
        pushed
    }

    /// Pushes SQEs that must go in together (a link); false, and none
    /// pushed, if the SQ lacks room for all.
    ///
    /// # Safety
    /// Every pointer in `entries` refers to memory that stays valid until
    /// that entry's completion (as for `push_entry`).
    pub(super) unsafe fn push_entries(&mut self, entries: &[squeue::Entry]) -> bool {
        // SAFETY: the caller's promise.
        let pushed = unsafe { self.ring.submission().push_multiple(entries).is_ok() };
        if pushed {
            self.sq_tail = self.sq_tail.wrapping_add(entries.len() as u32);
        }
        pushed
    }

    /// Rewrites the SQE of op `id` as an internal no-op if the kernel has not
    /// read it yet (see the module docs). Single-SQE ops only.
    pub(super) fn withdraw(&mut self, id: OpId) -> bool {
        let unsubmitted = self.ring.submission().len() as u32;
        self.sqes
            .withdraw(self.sq_tail, unsubmitted, token(id), VOID_TAG)
    }
}

/// `IORING_OFF_SQES`: the mmap offset of the SQE array.
const IORING_OFF_SQES: libc::off_t = 0x1000_0000;

/// A second, writable view of the ring's SQE array.
pub(super) struct SqeView {
    sqes: *mut squeue::Entry,
    entries: u32,
}

impl SqeView {
    /// Maps the SQE array of the ring `ring_fd`, which has `entries` SQEs
    /// (a power of two).
    pub(super) fn map(ring_fd: RawFd, entries: u32) -> io::Result<SqeView> {
        assert!(entries.is_power_of_two(), "SQ sizes are powers of two");
        let len = entries as usize * std::mem::size_of::<squeue::Entry>();
        // SAFETY: maps the SQE array of a ring this driver owns, shared and
        // writable as the io-uring crate maps it; nothing is overwritten
        // (the kernel picks the address).
        let ptr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_SHARED | libc::MAP_POPULATE,
                ring_fd,
                IORING_OFF_SQES,
            )
        };
        if ptr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(SqeView {
            sqes: ptr.cast(),
            entries,
        })
    }

    /// Rewrites as a no-op tagged `void_tag` the SQE with `user_data` among
    /// the `unsubmitted` entries just before the SQ tail `tail`. False if
    /// none has it (the kernel has read it already).
    ///
    /// Only for single-SQE ops: a linked entry's flags would go with it.
    pub(super) fn withdraw(
        &mut self,
        tail: u32,
        unsubmitted: u32,
        user_data: u64,
        void_tag: u64,
    ) -> bool {
        debug_assert!(unsubmitted <= self.entries);
        let mask = self.entries - 1;
        for back in 1..=unsubmitted {
            let index = (tail.wrapping_sub(back) & mask) as usize;
            // SAFETY: `index` is within the mapped array. The kernel reads
            // SQEs only inside io_uring_enter, which the loop thread (the
            // only user of this ring) is not in; volatile, because the
            // crate writes the same memory through its own mapping.
            let entry = unsafe { self.sqes.add(index).read_volatile() };
            if entry.get_user_data() == user_data {
                let nop = io_uring::opcode::Nop::new().build().user_data(void_tag);
                // SAFETY: as above; the no-op points at no memory.
                unsafe { self.sqes.add(index).write_volatile(nop) };
                return true;
            }
        }
        false
    }
}

impl Drop for SqeView {
    fn drop(&mut self) {
        let len = self.entries as usize * std::mem::size_of::<squeue::Entry>();
        // SAFETY: unmaps exactly the view `map` made; nothing reads it after.
        unsafe {
            libc::munmap(self.sqes.cast(), len);
        }
    }
}
