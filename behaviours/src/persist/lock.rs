//! The data directory's advisory lock: `flock(LOCK_EX | LOCK_NB)` on
//! `<dir>/LOCK`, held for as long as the store is open.
//!
//! `flock` never waits with `LOCK_NB`, so taking it on the loop thread is a
//! control-plane exception to "all file I/O through ops", done once at open.
//! flock locks belong to the open file description: a second open of the same
//! directory conflicts even inside one process, and the kernel drops the lock
//! when the holder dies, so a SIGKILLed owner never leaves it stale.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::Path;

use super::error::OpenError;

/// A held directory lock; released when the fd is closed (or dropped).
#[derive(Debug)]
pub(crate) struct DirLock {
    fd: OwnedFd,
}

impl DirLock {
    /// Locks `dir` through `fd`, an open descriptor of its lock file.
    pub(crate) fn acquire(fd: OwnedFd, dir: &Path) -> Result<DirLock, OpenError> {
        // SAFETY: flock takes an fd and flags, no memory; `fd` is owned and
        // open for the duration of the call.
        let rc = unsafe { libc::flock(fd.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
        if rc == 0 {
            return Ok(DirLock { fd });
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() == Some(libc::EWOULDBLOCK) {
            return Err(OpenError::Locked {
                dir: dir.to_path_buf(),
            });
        }
        Err(OpenError::Io {
            path: dir.join(super::LOCK_FILE),
            source: error,
        })
    }

    /// The descriptor, to close it through the loop (which releases the lock).
    pub(crate) fn into_fd(self) -> OwnedFd {
        self.fd
    }
}
