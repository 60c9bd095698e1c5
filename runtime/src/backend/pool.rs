//! The poll backend's blocking thread pool for regular-file ops.
//!
//! Regular files are always "ready" to epoll/kqueue, so reads, writes, syncs
//! and path ops run here, off the loop thread. A finished job's result goes to
//! a shared list and the poller is notified, so the loop picks it up in its
//! next wait.
//!
//! Invariant: a job holds raw pointers into its op's slot (buffers, iovecs,
//! paths). The slot stays in the op table, untouched by the loop, until the
//! loop settles this job's completion; the pool never touches a job's memory
//! after pushing its result.

use std::collections::VecDeque;
use std::ffi::c_char;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;

use crate::op::{OpKind, RawCompletion};

/// A file op with the raw pointers the blocking syscall needs.
enum FileOp {
    Open {
        path: *const c_char,
        flags: i32,
        mode: u32,
    },
    Read {
        fd: RawFd,
        ptr: *mut u8,
        len: usize,
        offset: u64,
    },
    Write {
        fd: RawFd,
        ptr: *const u8,
        len: usize,
        offset: u64,
    },
    Writev {
        fd: RawFd,
        iov: *const libc::iovec,
        count: i32,
        offset: u64,
    },
    Fsync {
        fd: RawFd,
        datasync: bool,
    },
    Rename {
        from: *const c_char,
        to: *const c_char,
    },
    Unlink {
        path: *const c_char,
        dir: bool,
    },
    Mkdir {
        path: *const c_char,
        mode: u32,
    },
}

struct Job {
    key: usize,
    op: FileOp,
}

// SAFETY: the pointers in a job refer to memory owned by the op table, which
// keeps it alive and unaliased by the loop thread until the job's completion
// is settled (see the module invariant). Nothing else in a job is thread-bound.
unsafe impl Send for Job {}

struct State {
    jobs: VecDeque<Job>,
    shutdown: bool,
}

struct PoolShared {
    state: Mutex<State>,
    work: Condvar,
    results: Mutex<Vec<RawCompletion>>,
    syscalls: AtomicU64,
}

pub(crate) struct FilePool {
    shared: Arc<PoolShared>,
    threads: Vec<JoinHandle<()>>,
    in_flight: usize,
}

impl FilePool {
    pub(crate) fn new(
        threads: usize,
        notify: Arc<dyn Fn() + Send + Sync>,
    ) -> std::io::Result<FilePool> {
        assert!(threads > 0);
        let shared = Arc::new(PoolShared {
            state: Mutex::new(State {
                jobs: VecDeque::new(),
                shutdown: false,
            }),
            work: Condvar::new(),
            results: Mutex::new(Vec::new()),
            syscalls: AtomicU64::new(0),
        });
        let mut handles = Vec::with_capacity(threads);
        for i in 0..threads {
            let shared = shared.clone();
            let notify = notify.clone();
            let handle = std::thread::Builder::new()
                .name(format!("ringvisor-file-{i}"))
                .spawn(move || worker(&shared, &*notify))?;
            handles.push(handle);
        }
        Ok(FilePool {
            shared,
            threads: handles,
            in_flight: 0,
        })
    }

    /// Hands a file op to a worker. `kind` must stay in the op table,
    /// unmodified, until its completion is collected.
    pub(crate) fn submit(&mut self, key: usize, kind: &mut OpKind) {
        let op = match kind {
            OpKind::Open { path, flags, mode } => FileOp::Open {
                path: path.as_ptr(),
                flags: *flags,
                mode: *mode,
            },
            OpKind::Read { fd, buf, offset } => {
                let spare = buf.spare_capacity_mut();
                FileOp::Read {
                    fd: *fd,
                    ptr: spare.as_mut_ptr() as *mut u8,
                    len: spare.len(),
                    offset: *offset,
                }
            }
            OpKind::Write { fd, buf, offset } => FileOp::Write {
                fd: *fd,
                ptr: buf.as_ptr(),
                len: buf.len(),
                offset: *offset,
            },
            OpKind::Writev { fd, vecs, offset } => FileOp::Writev {
                fd: *fd,
                iov: vecs.iovecs.as_ptr(),
                count: vecs.iovecs.len() as i32,
                offset: *offset,
            },
            OpKind::Fsync { fd, datasync } => FileOp::Fsync {
                fd: *fd,
                datasync: *datasync,
            },
            OpKind::Rename { from, to } => FileOp::Rename {
                from: from.as_ptr(),
                to: to.as_ptr(),
            },
            OpKind::Unlink { path, dir } => FileOp::Unlink {
                path: path.as_ptr(),
                dir: *dir,
            },
            OpKind::Mkdir { path, mode } => FileOp::Mkdir {
                path: path.as_ptr(),
                mode: *mode,
            },
            other => unreachable!("{} is not a file op", other.name()),
        };
        self.in_flight += 1;
        let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
        state.jobs.push_back(Job { key, op });
        drop(state);
        self.shared.work.notify_one();
    }

    /// Moves finished jobs' results into `done`.
    pub(crate) fn collect(&mut self, done: &mut Vec<RawCompletion>) {
        if self.in_flight == 0 {
            return;
        }
        let mut results = self
            .shared
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        self.in_flight -= results.len();
        done.append(&mut results);
    }

    pub(crate) fn has_results(&self) -> bool {
        self.in_flight > 0
            && !self
                .shared
                .results
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .is_empty()
    }

    pub(crate) fn syscalls(&self) -> u64 {
        self.shared.syscalls.load(Ordering::Relaxed)
    }
}

impl Drop for FilePool {
    fn drop(&mut self) {
        {
            let mut state = self.shared.state.lock().unwrap_or_else(|p| p.into_inner());
            state.shutdown = true;
        }
        self.shared.work.notify_all();
        for handle in self.threads.drain(..) {
            let _ = handle.join();
        }
    }
}

fn worker(shared: &PoolShared, notify: &(dyn Fn() + Send + Sync)) {
    loop {
        let job = {
            let mut state = shared.state.lock().unwrap_or_else(|p| p.into_inner());
            loop {
                if let Some(job) = state.jobs.pop_front() {
                    break job;
                }
                if state.shutdown {
                    return;
                }
                state = shared.work.wait(state).unwrap_or_else(|p| p.into_inner());
            }
        };
        let res = run(&job.op);
        shared.syscalls.fetch_add(1, Ordering::Relaxed);
        shared
            .results
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(RawCompletion { key: job.key, res });
        notify();
    }
}

/// Runs one blocking syscall; returns the result cqe-style.
fn run(op: &FileOp) -> i32 {
    loop {
        // SAFETY: every pointer was taken from the op's slot, which the op
        // table keeps alive and unchanged until this job's result is settled
        // (module invariant); lengths match the buffers they came from.
        let ret: i64 = unsafe {
            match *op {
                FileOp::Open { path, flags, mode } => {
                    libc::open(path, flags, mode as libc::c_uint) as i64
                }
                FileOp::Read {
                    fd,
                    ptr,
                    len,
                    offset,
                } => libc::pread(fd, ptr as *mut libc::c_void, len, offset as libc::off_t) as i64,
                FileOp::Write {
                    fd,
                    ptr,
                    len,
                    offset,
                } => {
                    libc::pwrite(fd, ptr as *const libc::c_void, len, offset as libc::off_t) as i64
                }
                FileOp::Writev {
                    fd,
                    iov,
                    count,
                    offset,
                } => libc::pwritev(fd, iov, count, offset as libc::off_t) as i64,
                FileOp::Fsync { fd, datasync: true } => fdatasync(fd) as i64,
                FileOp::Fsync {
                    fd,
                    datasync: false,
                } => libc::fsync(fd) as i64,
                FileOp::Rename { from, to } => libc::rename(from, to) as i64,
                FileOp::Unlink { path, dir: false } => libc::unlink(path) as i64,
                FileOp::Unlink { path, dir: true } => libc::rmdir(path) as i64,
                FileOp::Mkdir { path, mode } => libc::mkdir(path, mode as libc::mode_t) as i64,
            }
        };
        if ret >= 0 {
            return ret.min(i32::MAX as i64) as i32;
        }
        let errno = std::io::Error::last_os_error()
            .raw_os_error()
            .unwrap_or(libc::EIO);
        if errno != libc::EINTR {
            return -errno;
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: forwarded from the caller; fdatasync only reads the fd number.
    unsafe { libc::fdatasync(fd) }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
unsafe fn fdatasync(fd: RawFd) -> libc::c_int {
    // SAFETY: forwarded from the caller; macOS has no fdatasync, fsync is stronger.
    unsafe { libc::fsync(fd) }
}
