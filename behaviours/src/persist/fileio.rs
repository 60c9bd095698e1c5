//! Small asynchronous file helpers on the loop's ops: whole writes, whole
//! reads, owned descriptors, sequential unlinks.
//!
//! The helpers that loop (a short write, the next read chunk, the next
//! unlink) continue from the op's completion, on a fresh stack from the loop:
//! continuation, not recursion.

use std::io;
use std::os::fd::{FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::path::PathBuf;

use ringvisor_runtime::Loop;

/// Bytes asked for per read while reading a file whole.
pub(crate) const READ_CHUNK_BYTES: usize = 1 << 20;

/// Takes ownership of an fd an `open` op just returned.
pub(crate) fn adopt(fd: RawFd) -> OwnedFd {
    assert!(fd >= 0, "open returned a valid fd");
    // SAFETY: the open op handed this fd to us alone and nothing else closes
    // it; from here the OwnedFd is its only owner.
    unsafe { OwnedFd::from_raw_fd(fd) }
}

/// Closes `fd` through the loop, logging a failure (nothing can be done about
/// it: every byte that mattered was synced before).
pub(crate) fn close_fd(lp: &mut Loop, fd: OwnedFd, what: &'static str) {
    lp.close(fd.into_raw_fd(), move |_, res| {
        if let Err(error) = res {
            tracing::warn!(%error, what, "close failed");
        }
    });
}

/// Writes all of `buf` at `offset`, resubmitting after a short write. The
/// buffer comes back (possibly drained) for reuse.
pub(crate) fn write_all_at(
    lp: &mut Loop,
    fd: RawFd,
    buf: Vec<u8>,
    offset: u64,
    on_written: impl FnOnce(&mut Loop, io::Result<()>, Vec<u8>) + 'static,
) {
    lp.write_at(fd, buf, offset, move |lp, res, mut buf| match res {
        Err(e) => on_written(lp, Err(e.into()), buf),
        Ok(n) if n == buf.len() => on_written(lp, Ok(()), buf),
        Ok(0) => on_written(lp, Err(io::ErrorKind::WriteZero.into()), buf),
        Ok(n) => {
            buf.drain(..n);
            write_all_at(lp, fd, buf, offset + n as u64, on_written);
        }
    });
}

/// Reads `fd` from offset 0 to end of file, failing if it holds more than
/// `limit_bytes`.
pub(crate) fn read_to_end(
    lp: &mut Loop,
    fd: RawFd,
    limit_bytes: u64,
    on_read: impl FnOnce(&mut Loop, io::Result<Vec<u8>>) + 'static,
) {
    read_more(lp, fd, Vec::new(), limit_bytes, on_read);
}

fn read_more(
    lp: &mut Loop,
    fd: RawFd,
    mut buf: Vec<u8>,
    limit_bytes: u64,
    on_read: impl FnOnce(&mut Loop, io::Result<Vec<u8>>) + 'static,
) {
    if buf.len() as u64 > limit_bytes {
        let message = format!("file larger than its limit of {limit_bytes} bytes");
        on_read(lp, Err(io::Error::new(io::ErrorKind::InvalidData, message)));
        return;
    }
    buf.reserve(READ_CHUNK_BYTES);
    let offset = buf.len() as u64;
    lp.read_at(fd, buf, offset, move |lp, res, buf| match res {
        Err(e) => on_read(lp, Err(e.into())),
        Ok(0) => on_read(lp, Ok(buf)),
        Ok(_) => read_more(lp, fd, buf, limit_bytes, on_read),
    });
}

/// Unlinks `paths` one after another (oldest first, as given), then calls
/// `on_done`. Failures are logged: a file left behind is harmless (recovery
/// skips what a snapshot covers) but worth knowing about.
pub(crate) fn unlink_all(
    lp: &mut Loop,
    mut paths: Vec<PathBuf>,
    on_done: impl FnOnce(&mut Loop) + 'static,
) {
    paths.reverse();
    unlink_next(lp, paths, on_done);
}

fn unlink_next(
    lp: &mut Loop,
    mut rev_paths: Vec<PathBuf>,
    on_done: impl FnOnce(&mut Loop) + 'static,
) {
    let Some(path) = rev_paths.pop() else {
        on_done(lp);
        return;
    };
    lp.unlink(path.clone(), move |lp, res| {
        match res {
            Ok(()) => tracing::debug!(path = %path.display(), "unlinked"),
            Err(error) => tracing::warn!(path = %path.display(), %error, "unlink failed"),
        }
        unlink_next(lp, rev_paths, on_done);
    });
}

/// Closes `fds` one after another through the loop, last first, then calls
/// `on_done`.
pub(crate) fn close_all(
    lp: &mut Loop,
    mut fds: Vec<OwnedFd>,
    on_done: impl FnOnce(&mut Loop) + 'static,
) {
    let Some(fd) = fds.pop() else {
        on_done(lp);
        return;
    };
    lp.close(fd.into_raw_fd(), move |lp, res| {
        if let Err(error) = res {
            tracing::warn!(%error, "close failed");
        }
        close_all(lp, fds, on_done);
    });
}
