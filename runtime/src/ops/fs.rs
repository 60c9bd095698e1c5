//! File-system ops: open, read_at, write_at, write_vectored_at, fsync,
//! fdatasync, rename, unlink, mkdir. On io_uring they go through the ring; on
//! poll, through the backend's thread pool. The loop thread never blocks on disk.

use std::ffi::CString;
use std::io;
use std::os::fd::RawFd;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use crate::event_loop::Loop;
use crate::op::{Completion, OpId, OpKind, OpResult, WritevBufs};

fn c_path(path: &Path) -> io::Result<CString> {
    CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))
}

fn unit(result: Result<i32, crate::OpError>) -> OpResult<()> {
    result.map(|_| ())
}

impl Loop {
    /// Opens a file (`open(2)` flags and mode; `O_CLOEXEC` is always added).
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// let mut lp = Loop::new().unwrap();
    /// lp.open("/dev/null", libc::O_RDONLY, 0, |lp, res| {
    ///     let fd = res.unwrap();
    ///     lp.close(fd, |_, res| res.unwrap());
    /// });
    /// lp.run().unwrap();
    /// ```
    pub fn open(
        &mut self,
        path: impl AsRef<Path>,
        flags: i32,
        mode: u32,
        callback: impl FnOnce(&mut Loop, OpResult<RawFd>) + 'static,
    ) -> OpId {
        let deliver = move |lp: &mut Loop, c: Completion| callback(lp, c.result);
        match c_path(path.as_ref()) {
            Ok(path) => self.submit(
                OpKind::Open {
                    path,
                    flags: flags | libc::O_CLOEXEC,
                    mode,
                },
                deliver,
            ),
            Err(e) => self.fail_early(OpKind::Nop, e, deliver),
        }
    }

    /// Reads into `buf`'s spare capacity from file offset `offset`; the length
    /// grows by the count read (`Ok(0)` at end of file).
    pub fn read_at(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        let has_room = buf.capacity() > buf.len();
        let kind = OpKind::Read { fd, buf, offset };
        let deliver = move |lp: &mut Loop, c: Completion| {
            let Completion { result, kind } = c;
            let OpKind::Read { buf, .. } = kind else {
                unreachable!("read completion carries read data")
            };
            callback(lp, result.map(|n| n as usize), buf)
        };
        if !has_room {
            let err = io::Error::new(
                io::ErrorKind::InvalidInput,
                "read buffer has no spare capacity",
            );
            return self.fail_early(kind, err, deliver);
        }
        self.submit(kind, deliver)
    }

    /// Writes `buf` at file offset `offset` (one `pwrite`; the count may be short).
    pub fn write_at(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        offset: u64,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        let kind = OpKind::Write { fd, buf, offset };
        self.submit(kind, move |lp, c| {
            let Completion { result, kind } = c;
            let OpKind::Write { buf, .. } = kind else {
                unreachable!("write completion carries write data")
            };
            callback(lp, result.map(|n| n as usize), buf)
        })
    }

    /// Writes several buffers at `offset` in one `pwritev`.
    pub fn write_vectored_at(
        &mut self,
        fd: RawFd,
        bufs: Vec<Vec<u8>>,
        offset: u64,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<Vec<u8>>) + 'static,
    ) -> OpId {
        // The iovecs point into each inner Vec's heap block, which stays put
        // while the outer Vec (and the op slot) move.
        let iovecs = bufs
            .iter()
            .map(|b| libc::iovec {
                iov_base: b.as_ptr() as *mut libc::c_void,
                iov_len: b.len(),
            })
            .collect();
        let kind = OpKind::Writev {
            fd,
            vecs: Box::new(WritevBufs { bufs, iovecs }),
            offset,
        };
        self.submit(kind, move |lp, c| {
            let Completion { result, kind } = c;
            let OpKind::Writev { vecs, .. } = kind else {
                unreachable!("writev completion carries writev data")
            };
            callback(lp, result.map(|n| n as usize), vecs.bufs)
        })
    }

    /// Flushes a file's data and metadata to stable storage.
    pub fn fsync(
        &mut self,
        fd: RawFd,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        self.submit(
            OpKind::Fsync {
                fd,
                datasync: false,
            },
            move |lp, c| callback(lp, unit(c.result)),
        )
    }

    /// Flushes a file's data (and the metadata needed to read it back).
    pub fn fdatasync(
        &mut self,
        fd: RawFd,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        self.submit(OpKind::Fsync { fd, datasync: true }, move |lp, c| {
            callback(lp, unit(c.result))
        })
    }

    /// Renames `from` to `to`, atomically replacing `to` if it exists.
    pub fn rename(
        &mut self,
        from: impl AsRef<Path>,
        to: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        let deliver = move |lp: &mut Loop, c: Completion| callback(lp, unit(c.result));
        match (c_path(from.as_ref()), c_path(to.as_ref())) {
            (Ok(from), Ok(to)) => self.submit(OpKind::Rename { from, to }, deliver),
            (Err(e), _) | (_, Err(e)) => self.fail_early(OpKind::Nop, e, deliver),
        }
    }

    /// Removes a file.
    pub fn unlink(
        &mut self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        self.unlink_impl(path.as_ref(), false, callback)
    }

    /// Removes an empty directory.
    pub fn rmdir(
        &mut self,
        path: impl AsRef<Path>,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        self.unlink_impl(path.as_ref(), true, callback)
    }

    fn unlink_impl(
        &mut self,
        path: &Path,
        dir: bool,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        let deliver = move |lp: &mut Loop, c: Completion| callback(lp, unit(c.result));
        match c_path(path) {
            Ok(path) => self.submit(OpKind::Unlink { path, dir }, deliver),
            Err(e) => self.fail_early(OpKind::Nop, e, deliver),
        }
    }

    /// Creates a directory with `mode` (before the umask).
    pub fn mkdir(
        &mut self,
        path: impl AsRef<Path>,
        mode: u32,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        let deliver = move |lp: &mut Loop, c: Completion| callback(lp, unit(c.result));
        match c_path(path.as_ref()) {
            Ok(path) => self.submit(OpKind::Mkdir { path, mode }, deliver),
            Err(e) => self.fail_early(OpKind::Nop, e, deliver),
        }
    }
}
