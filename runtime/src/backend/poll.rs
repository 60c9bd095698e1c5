//! The poll backend: completions emulated on readiness (`polling`: epoll on
//! Linux, kqueue on BSD/macOS).
//!
//! A socket op first tries its nonblocking syscall. On `EAGAIN` it waits in
//! its fd's interest entry; the entry is (re)armed oneshot at the next wait,
//! and on readiness the waiting ops are retried in order. A spurious wakeup
//! just re-arms; it never reaches the user. `polling` allows one registration
//! per fd, so one entry merges the fd's readers (recv, accept) and writers
//! (send, connect). Regular-file ops go to the [`FilePool`].

use std::collections::{HashMap, VecDeque};
use std::io;
use std::os::fd::{BorrowedFd, RawFd};
use std::sync::Arc;
use std::time::Duration;

use polling::{Event, Events, PollMode, Poller};

use super::pool::FilePool;
use super::{Backend, BackendConfig, Driver, Push, Wake};
use crate::op::{OpId, OpKind, OpTable, RawCompletion, SendRecvBufs};
use crate::stats::Stats;

/// Syscalls one `Poller::wait` makes. On Linux, `polling` arms a timerfd
/// (`timerfd_settime` + `epoll_ctl`), calls `epoll_wait`, then clears and
/// re-arms its notify eventfd (`read` + `epoll_ctl`). Checked with
/// `strace -c -f` on the echo example (polling 3.11): per wait exactly one
/// `timerfd_settime`, one `epoll_pwait`, one `read` and two `epoll_ctl`. A
/// wait that `polling` restarts after EINTR costs three more, not counted.
#[cfg(any(target_os = "linux", target_os = "android"))]
const WAIT_SYSCALLS: u64 = 5;
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const WAIT_SYSCALLS: u64 = 1;

/// Events taken from one wait; more stay queued in the kernel for the next.
const EVENTS_CAPACITY: usize = 1024;

impl Wake for Poller {
    fn wake(&self) {
        if let Err(e) = self.notify() {
            tracing::warn!(error = %e, "poller notify failed");
        }
    }
}

/// The ops waiting on one fd and what the kernel was asked to watch.
#[derive(Default)]
struct Interest {
    readers: VecDeque<usize>,
    writers: VecDeque<usize>,
    registered: bool,
    armed_read: bool,
    armed_write: bool,
}

impl Interest {
    fn is_idle(&self) -> bool {
        self.readers.is_empty() && self.writers.is_empty()
    }
}

enum Attempt {
    Done(i32),
    WouldBlock { write: bool },
}

pub(crate) struct PollDriver {
    poller: Arc<Poller>,
    events: Events,
    fds: HashMap<RawFd, Interest>,
    /// Fds whose waiters changed since they were last armed.
    dirty: Vec<RawFd>,
    /// Waiters failed by a registration error, reported at the next wait.
    failed: Vec<RawCompletion>,
    pool: FilePool,
}

impl PollDriver {
    pub(crate) fn open(config: BackendConfig) -> io::Result<PollDriver> {
        let poller = Arc::new(Poller::new()?);
        let notifier = poller.clone();
        let pool = FilePool::new(config.file_threads, Arc::new(move || notifier.wake()))?;
        Ok(PollDriver {
            poller,
            events: Events::with_capacity(
                std::num::NonZeroUsize::new(EVENTS_CAPACITY).expect("nonzero"),
            ),
            fds: HashMap::new(),
            dirty: Vec::new(),
            failed: Vec::new(),
            pool,
        })
    }

    fn wait_on(&mut self, fd: RawFd, key: usize, write: bool) {
        let interest = self.fds.entry(fd).or_default();
        if write {
            interest.writers.push_back(key);
        } else {
            interest.readers.push_back(key);
        }
        self.dirty.push(fd);
    }

    /// Arms every fd that has waiters the kernel is not watching for.
    fn arm_dirty(&mut self, stats: &mut Stats) {
        for fd in std::mem::take(&mut self.dirty) {
            let Some(interest) = self.fds.get_mut(&fd) else {
                continue;
            };
            let read = !interest.readers.is_empty();
            let write = !interest.writers.is_empty();
            if (read, write) == (false, false)
                || (interest.armed_read == read && interest.armed_write == write)
            {
                continue;
            }
            let event = Event::new(fd as usize, read, write);
            stats.syscalls += 1;
            let result = if interest.registered {
                // SAFETY: `fd` is open: ops are waiting on it and a close
                // through the loop removes this entry first.
                let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
                match self
                    .poller
                    .modify_with_mode(borrowed, event, PollMode::Oneshot)
                {
                    // The fd was closed behind our back and reused: register anew.
                    Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                        stats.syscalls += 1;
                        // SAFETY: as above; the entry is deleted before the fd
                        // is closed through the loop.
                        unsafe { self.poller.add_with_mode(fd, event, PollMode::Oneshot) }
                    }
                    other => other,
                }
            } else {
                // SAFETY: the fd stays registered only while open: a close
                // through the loop deletes the registration first.
                unsafe { self.poller.add_with_mode(fd, event, PollMode::Oneshot) }
            };
            match result {
                Ok(()) => {
                    interest.registered = true;
                    interest.armed_read = read;
                    interest.armed_write = write;
                }
                Err(e) => {
                    // Fail the waiters rather than leave them hanging.
                    tracing::debug!(fd, error = %e, "poll registration failed");
                    let errno = -e.raw_os_error().unwrap_or(libc::EBADF);
                    self.failed.extend(
                        interest
                            .readers
                            .drain(..)
                            .map(|key| RawCompletion { key, res: errno }),
                    );
                    self.failed.extend(
                        interest
                            .writers
                            .drain(..)
                            .map(|key| RawCompletion { key, res: errno }),
                    );
                }
            }
        }
    }

    /// Retries the waiters of one direction after readiness, in order, until
    /// one would block again.
    fn retry(
        &mut self,
        fd: RawFd,
        write: bool,
        ops: &mut OpTable,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) {
        loop {
            let Some(interest) = self.fds.get_mut(&fd) else {
                return;
            };
            let queue = if write {
                &mut interest.writers
            } else {
                &mut interest.readers
            };
            let Some(&key) = queue.front() else {
                return;
            };
            let slot = ops.slot_mut(key).expect("a waiting op is in the table");
            match attempt(&mut slot.kind, stats) {
                Attempt::Done(res) => {
                    queue.pop_front();
                    done.push(RawCompletion { key, res });
                }
                Attempt::WouldBlock { write: now_write } if now_write != write => {
                    // A send_recv sent everything and now waits to receive.
                    queue.pop_front();
                    self.wait_on(fd, key, now_write);
                }
                Attempt::WouldBlock { .. } => {
                    self.dirty.push(fd);
                    return;
                }
            }
        }
    }

    /// Removes an fd's entry before it is closed, failing its waiters with
    /// `ECANCELED`, as io_uring's cancel-by-fd before a close does.
    fn forget_fd(&mut self, fd: RawFd, done: &mut Vec<RawCompletion>, stats: &mut Stats) {
        let Some(mut interest) = self.fds.remove(&fd) else {
            return;
        };
        for key in interest.readers.drain(..).chain(interest.writers.drain(..)) {
            done.push(RawCompletion {
                key,
                res: -libc::ECANCELED,
            });
        }
        if interest.registered {
            stats.syscalls += 1;
            // SAFETY: the fd is still open; the close comes right after this.
            let borrowed = unsafe { BorrowedFd::borrow_raw(fd) };
            let _ = self.poller.delete(borrowed);
        }
    }
}

impl Driver for PollDriver {
    fn kind(&self) -> Backend {
        Backend::Poll
    }

    fn wants_nonblocking_sockets(&self) -> bool {
        true
    }

    fn push(
        &mut self,
        id: OpId,
        kind: &mut OpKind,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> Push {
        let key = id.key as usize;
        if kind.is_file_op() {
            self.pool.submit(key, kind);
            return Push::Accepted;
        }
        if let OpKind::Close { fd } = *kind {
            self.forget_fd(fd, done, stats);
        }
        match attempt(kind, stats) {
            Attempt::Done(res) => done.push(RawCompletion { key, res }),
            Attempt::WouldBlock { write } => {
                let fd = kind.socket_fd().expect("only socket ops would block");
                self.wait_on(fd, key, write);
            }
        }
        Push::Accepted
    }

    /// Starting an op here is a syscall (or a job for the pool): it waits
    /// for the tick.
    fn push_now(&mut self, _id: OpId, _kind: &mut OpKind) -> bool {
        false
    }

    fn flush(&mut self, _done: &mut Vec<RawCompletion>, _stats: &mut Stats) -> io::Result<()> {
        Ok(())
    }

    fn cancel(
        &mut self,
        id: OpId,
        kind: &OpKind,
        done: &mut Vec<RawCompletion>,
        _stats: &mut Stats,
    ) {
        let key = id.key as usize;
        // File ops cannot be taken back from a worker; their result arrives
        // later and the loop reports it as canceled.
        let Some(fd) = kind.socket_fd() else {
            return;
        };
        let Some(interest) = self.fds.get_mut(&fd) else {
            return;
        };
        for queue in [&mut interest.readers, &mut interest.writers] {
            if let Some(pos) = queue.iter().position(|&k| k == key) {
                queue.remove(pos);
                done.push(RawCompletion {
                    key,
                    res: -libc::ECANCELED,
                });
                return;
            }
        }
    }

    fn wait(
        &mut self,
        timeout: Option<Duration>,
        ops: &mut OpTable,
        done: &mut Vec<RawCompletion>,
        stats: &mut Stats,
    ) -> io::Result<()> {
        self.arm_dirty(stats);
        done.append(&mut self.failed);
        let timeout = if !done.is_empty() || self.pool.has_results() {
            Some(Duration::ZERO)
        } else {
            timeout
        };
        self.events.clear();
        stats.syscalls += WAIT_SYSCALLS;
        match self.poller.wait(&mut self.events, timeout) {
            Ok(_) => {}
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
        self.pool.collect(done);
        stats.file_pool_syscalls = self.pool.syscalls();
        let ready: Vec<(RawFd, bool, bool)> = self
            .events
            .iter()
            .map(|ev| (ev.key as RawFd, ev.readable, ev.writable))
            .collect();
        for (fd, readable, writable) in ready {
            let Some(interest) = self.fds.get_mut(&fd) else {
                continue;
            };
            // Oneshot: the registration is disarmed once it fired.
            interest.armed_read = false;
            interest.armed_write = false;
            // Errors and hang-ups show as readable and writable; retrying
            // surfaces the real errno.
            if readable || !writable {
                self.retry(fd, false, ops, done, stats);
            }
            if writable || !readable {
                self.retry(fd, true, ops, done, stats);
            }
            if let Some(interest) = self.fds.get(&fd) {
                if !interest.is_idle() {
                    self.dirty.push(fd);
                }
            }
        }
        Ok(())
    }

    /// Every completion is in `done` already.
    fn next_completion(&mut self) -> Option<RawCompletion> {
        None
    }

    fn waker(&self) -> Arc<dyn Wake> {
        self.poller.clone()
    }
}

/// Runs an op's nonblocking syscall once.
fn attempt(kind: &mut OpKind, stats: &mut Stats) -> Attempt {
    loop {
        let (ret, write) = match kind {
            OpKind::Nop => return Attempt::Done(0),
            OpKind::Accept { fd, addr } => {
                stats.syscalls += 1;
                addr.len = std::mem::size_of::<libc::sockaddr_storage>() as libc::socklen_t;
                (sys_accept(*fd, &mut addr.storage, &mut addr.len), false)
            }
            OpKind::Connect {
                fd,
                addr,
                in_progress,
            } => {
                stats.syscalls += 1;
                if *in_progress {
                    return Attempt::Done(socket_error(*fd));
                }
                // SAFETY: `addr` holds a valid sockaddr of `addr.len` bytes.
                let ret = unsafe {
                    libc::connect(
                        *fd,
                        &addr.storage as *const _ as *const libc::sockaddr,
                        addr.len,
                    )
                };
                if ret < 0 && last_errno() == libc::EINPROGRESS {
                    *in_progress = true;
                    return Attempt::WouldBlock { write: true };
                }
                (ret as isize, true)
            }
            OpKind::Recv { fd, buf } => {
                stats.syscalls += 1;
                let spare = buf.spare_capacity_mut();
                // SAFETY: writes at most `spare.len()` bytes into the buffer's
                // spare capacity, which the op slot owns.
                let ret = unsafe {
                    libc::recv(
                        *fd,
                        spare.as_mut_ptr() as *mut libc::c_void,
                        spare.len(),
                        libc::MSG_DONTWAIT,
                    )
                };
                (ret, false)
            }
            OpKind::Send {
                fd, buf, offset, ..
            } => {
                stats.syscalls += 1;
                let rest = &buf[*offset..];
                // SAFETY: reads `rest.len()` initialised bytes the op slot owns.
                let ret = unsafe {
                    libc::send(
                        *fd,
                        rest.as_ptr() as *const libc::c_void,
                        rest.len(),
                        SEND_FLAGS,
                    )
                };
                (ret, true)
            }
            OpKind::SendRecv { fd, bufs } => {
                let SendRecvBufs {
                    out, sent, input, ..
                } = &mut **bufs;
                send_recv_step(*fd, out, sent, input, stats)
            }
            OpKind::Shutdown { fd, how } => {
                stats.syscalls += 1;
                // SAFETY: plain syscall on an fd number.
                (unsafe { libc::shutdown(*fd, *how) } as isize, false)
            }
            OpKind::Close { fd } => {
                stats.syscalls += 1;
                // SAFETY: the op owns this fd by the caller's contract; EINTR
                // after close must not be retried (the fd is gone either way).
                let ret = unsafe { libc::close(*fd) };
                return Attempt::Done(if ret < 0 && last_errno() != libc::EINTR {
                    -last_errno()
                } else {
                    0
                });
            }
            other => unreachable!("{} is a file op for the pool", other.name()),
        };
        if ret >= 0 {
            return Attempt::Done(ret.min(i32::MAX as isize) as i32);
        }
        match last_errno() {
            libc::EINTR => continue,
            libc::EAGAIN | libc::EINPROGRESS | libc::EALREADY => {
                return Attempt::WouldBlock { write }
            }
            #[allow(unreachable_patterns)]
            libc::EWOULDBLOCK => return Attempt::WouldBlock { write },
            errno => return Attempt::Done(-errno),
        }
    }
}

/// One nonblocking step of a `send_recv`: sends the rest of `out`, over as
/// many partial sends as the socket takes, then receives into `input`'s
/// spare capacity. Returns the last syscall's result and whether it was a
/// send (which then failed, would block, or made no progress).
fn send_recv_step(
    fd: RawFd,
    out: &[u8],
    sent: &mut usize,
    input: &mut Vec<u8>,
    stats: &mut Stats,
) -> (isize, bool) {
    while *sent < out.len() {
        stats.syscalls += 1;
        let rest = &out[*sent..];
        // SAFETY: reads `rest.len()` initialised bytes the op slot owns.
        let ret = unsafe {
            libc::send(
                fd,
                rest.as_ptr() as *const libc::c_void,
                rest.len(),
                SEND_FLAGS,
            )
        };
        if ret <= 0 {
            return (ret, true);
        }
        *sent += ret as usize;
    }
    stats.syscalls += 1;
    let spare = input.spare_capacity_mut();
    // SAFETY: writes at most `spare.len()` bytes into the buffer's spare
    // capacity, which the op slot owns.
    let ret = unsafe {
        libc::recv(
            fd,
            spare.as_mut_ptr() as *mut libc::c_void,
            spare.len(),
            libc::MSG_DONTWAIT,
        )
    };
    (ret, false)
}

fn last_errno() -> i32 {
    io::Error::last_os_error()
        .raw_os_error()
        .unwrap_or(libc::EIO)
}

/// The pending error of a connecting socket, cqe-style.
fn socket_error(fd: RawFd) -> i32 {
    let mut err: libc::c_int = 0;
    let mut len = std::mem::size_of::<libc::c_int>() as libc::socklen_t;
    // SAFETY: `err` and `len` are live locals of the sizes passed.
    let ret = unsafe {
        libc::getsockopt(
            fd,
            libc::SOL_SOCKET,
            libc::SO_ERROR,
            &mut err as *mut _ as *mut libc::c_void,
            &mut len,
        )
    };
    if ret < 0 {
        -last_errno()
    } else {
        -err
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
const SEND_FLAGS: libc::c_int = libc::MSG_NOSIGNAL | libc::MSG_DONTWAIT;
// macOS has no MSG_NOSIGNAL; sockets from this loop set SO_NOSIGPIPE instead.
#[cfg(not(any(target_os = "linux", target_os = "android")))]
const SEND_FLAGS: libc::c_int = libc::MSG_DONTWAIT;

#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn sys_accept(fd: RawFd, storage: &mut libc::sockaddr_storage, len: &mut libc::socklen_t) -> isize {
    // SAFETY: `storage` and `len` are the op's boxed sockaddr buffer and its size.
    unsafe {
        libc::accept4(
            fd,
            storage as *mut _ as *mut libc::sockaddr,
            len,
            libc::SOCK_CLOEXEC | libc::SOCK_NONBLOCK,
        ) as isize
    }
}

#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn sys_accept(fd: RawFd, storage: &mut libc::sockaddr_storage, len: &mut libc::socklen_t) -> isize {
    // SAFETY: as above; then flags on the new fd only.
    unsafe {
        let new_fd = libc::accept(fd, storage as *mut _ as *mut libc::sockaddr, len);
        if new_fd >= 0 {
            libc::fcntl(new_fd, libc::F_SETFD, libc::FD_CLOEXEC);
            let flags = libc::fcntl(new_fd, libc::F_GETFL);
            libc::fcntl(new_fd, libc::F_SETFL, flags | libc::O_NONBLOCK);
            let one: libc::c_int = 1;
            libc::setsockopt(
                new_fd,
                libc::SOL_SOCKET,
                libc::SO_NOSIGPIPE,
                &one as *const _ as *const libc::c_void,
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            );
        }
        new_fd as isize
    }
}
