//! Socket ops: listen, accept, connect, recv, send, send_all, send_recv,
//! shutdown, close.

use std::io;
use std::net::{Shutdown, SocketAddr};
use std::os::fd::{IntoRawFd, RawFd};

use crate::event_loop::Loop;
use crate::op::{Completion, OpError, OpId, OpKind, OpResult, SendRecvBufs, SockAddrBuf};

/// Default listen backlog.
pub const LISTEN_BACKLOG_DEFAULT: i32 = 1024;

/// `send_recv` buffer boxes kept for reuse (one per op in flight is the
/// most a server needs; beyond this many they are freed).
pub const SEND_RECV_BUFS_POOLED_MAX: usize = 1024;

/// Where [`Loop::send_recv_with`] delivers: a handler type, so the op keeps
/// a plain function and a `u64` instead of a boxed closure.
pub trait SendRecvDone: 'static {
    /// Runs once, from the loop, with what `arg` the op was given, its
    /// outcome and both buffers back (as [`Loop::send_recv`]'s callback).
    fn done(lp: &mut Loop, arg: u64, outcome: SendRecvOutcome, out: Vec<u8>, input: Vec<u8>);
}

/// The op callback of a `send_recv_with::<H>`.
fn send_recv_done<H: SendRecvDone>(lp: &mut Loop, c: Completion) {
    let (outcome, out, input, arg) = lp.send_recv_outcome(c);
    H::done(lp, arg, outcome, out, input)
}

/// How a [`Loop::send_recv`] ended: either the whole buffer went out and the
/// receive ran, or the send did not finish and the receive never started.
///
/// ```
/// # use ringvisor_runtime::{OpError, SendRecvOutcome};
/// fn describe(outcome: &SendRecvOutcome) -> &'static str {
///     match outcome {
///         SendRecvOutcome::Received(Ok(0)) => "sent; the peer closed its side",
///         SendRecvOutcome::Received(Ok(_)) => "sent, then received",
///         SendRecvOutcome::Received(Err(_)) => "sent; the receive failed or was canceled",
///         SendRecvOutcome::SendFailed(_) => "not all sent; nothing received",
///     }
/// }
/// assert_eq!(describe(&SendRecvOutcome::SendFailed(OpError::Canceled)), "not all sent; nothing received");
/// ```
#[derive(Debug)]
pub enum SendRecvOutcome {
    /// Every byte of the output buffer was sent, then the receive ran with
    /// this result: `Ok(n)` bytes appended to the input buffer (`Ok(0)`: the
    /// peer closed its side), or its error ([`OpError::Canceled`] if canceled
    /// while waiting for data).
    Received(OpResult<usize>),
    /// The send failed or was canceled before the whole buffer went out; the
    /// receive never ran and the input buffer is as it was given.
    SendFailed(OpError),
}

impl SendRecvOutcome {
    /// True if the op was canceled, in either half.
    pub fn is_canceled(&self) -> bool {
        matches!(
            self,
            SendRecvOutcome::Received(Err(OpError::Canceled))
                | SendRecvOutcome::SendFailed(OpError::Canceled)
        )
    }
}

/// How to set up a listening TCP socket.
///
/// ```
/// # use ringvisor_runtime::{ListenOptions, Loop};
/// let lp = Loop::new().unwrap();
/// let fd = lp
///     .listen_tcp("127.0.0.1:0".parse().unwrap(), ListenOptions::default().reuse_port(true))
///     .unwrap();
/// assert!(ringvisor_runtime::local_addr(fd).unwrap().port() > 0);
/// ```
#[derive(Debug, Clone, Copy)]
pub struct ListenOptions {
    backlog: i32,
    reuse_port: bool,
}

impl Default for ListenOptions {
    fn default() -> ListenOptions {
        ListenOptions {
            backlog: LISTEN_BACKLOG_DEFAULT,
            reuse_port: false,
        }
    }
}

impl ListenOptions {
    /// Pending-connection queue length passed to `listen(2)`.
    pub fn backlog(mut self, backlog: i32) -> ListenOptions {
        self.backlog = backlog;
        self
    }

    /// Sets `SO_REUSEPORT`, so several loops can each own a listener on one port.
    pub fn reuse_port(mut self, reuse_port: bool) -> ListenOptions {
        self.reuse_port = reuse_port;
        self
    }
}

/// The local address of a socket.
pub fn local_addr(fd: RawFd) -> io::Result<SocketAddr> {
    // SAFETY: the caller passes an fd it keeps open for the duration of this
    // call; the borrow ends with it.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    let addr = socket2::SockRef::from(&borrowed).local_addr()?;
    addr.as_socket()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "not an IP socket"))
}

/// Sets `TCP_NODELAY` on a connected socket.
pub fn set_nodelay(fd: RawFd, nodelay: bool) -> io::Result<()> {
    // SAFETY: as in `local_addr`.
    let borrowed = unsafe { std::os::fd::BorrowedFd::borrow_raw(fd) };
    socket2::SockRef::from(&borrowed).set_tcp_nodelay(nodelay)
}

impl Loop {
    /// Opens a listening TCP socket (`SO_REUSEADDR`, optional `SO_REUSEPORT`),
    /// ready for [`Loop::accept`]. A control-plane call: it makes its
    /// syscalls directly rather than through the ring.
    pub fn listen_tcp(&self, addr: SocketAddr, options: ListenOptions) -> io::Result<RawFd> {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None)?;
        socket.set_reuse_address(true)?;
        if options.reuse_port {
            socket.set_reuse_port(true)?;
        }
        socket.bind(&addr.into())?;
        socket.listen(options.backlog)?;
        socket.set_nonblocking(self.wants_nonblocking_sockets())?;
        Ok(socket.into_raw_fd())
    }

    /// Accepts one connection: the new socket's fd (close-on-exec; nonblocking
    /// on the poll backend) and the peer's address. A canceled accept that
    /// raced with a connection closes that connection's fd.
    pub fn accept(
        &mut self,
        fd: RawFd,
        callback: impl FnOnce(&mut Loop, OpResult<(RawFd, SocketAddr)>) + 'static,
    ) -> OpId {
        let kind = OpKind::Accept {
            fd,
            addr: SockAddrBuf::empty(),
        };
        self.submit(kind, move |lp, c| {
            let Completion { result, kind } = c;
            let OpKind::Accept { addr, .. } = kind else {
                unreachable!("accept completion carries accept data")
            };
            let result = result.map(|new_fd| {
                let peer = addr
                    .to_socket_addr()
                    .unwrap_or_else(|| SocketAddr::from(([0, 0, 0, 0], 0)));
                (new_fd, peer)
            });
            callback(lp, result)
        })
    }

    /// Connects a new TCP socket to `addr`; on success the callback owns the fd.
    /// On failure or cancel the socket is closed.
    pub fn connect(
        &mut self,
        addr: SocketAddr,
        callback: impl FnOnce(&mut Loop, OpResult<RawFd>) + 'static,
    ) -> OpId {
        let domain = socket2::Domain::for_address(addr);
        let socket = socket2::Socket::new(domain, socket2::Type::STREAM, None).and_then(|s| {
            s.set_nonblocking(self.wants_nonblocking_sockets())
                .map(|_| s)
        });
        match socket {
            Err(e) => self.fail_early(OpKind::Nop, e, move |lp, c| {
                callback(lp, c.result.map(|_| -1))
            }),
            Ok(socket) => {
                let kind = OpKind::Connect {
                    fd: socket.into_raw_fd(),
                    addr: SockAddrBuf::from_addr(addr),
                    in_progress: false,
                };
                self.submit(kind, move |lp, c| {
                    let Completion { result, kind } = c;
                    let OpKind::Connect { fd, .. } = kind else {
                        unreachable!("connect completion carries connect data")
                    };
                    callback(lp, result.map(|_| fd))
                })
            }
        }
    }

    /// Receives into `buf`'s spare capacity (bytes land after `buf.len()`, and
    /// the length grows by the count received). `Ok(0)` means the peer closed.
    /// A buffer without spare capacity fails with `InvalidInput`.
    pub fn recv(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        let has_room = buf.capacity() > buf.len();
        let kind = OpKind::Recv { fd, buf };
        let deliver = move |lp: &mut Loop, c: Completion| {
            let Completion { result, kind } = c;
            let OpKind::Recv { buf, .. } = kind else {
                unreachable!("recv completion carries recv data")
            };
            callback(lp, result.map(|n| n as usize), buf)
        };
        if !has_room {
            let err = io::Error::new(
                io::ErrorKind::InvalidInput,
                "recv buffer has no spare capacity",
            );
            return self.fail_early(kind, err, deliver);
        }
        self.submit(kind, deliver)
    }

    /// Sends as much of `buf` as the socket takes in one go (maybe less than
    /// all of it). Never raises `SIGPIPE`: a closed peer is `EPIPE`.
    pub fn send(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        self.send_impl(fd, buf, false, callback)
    }

    /// Sends all of `buf`, resubmitting after partial sends (a slow reader
    /// gets every byte, eventually). The result is the total sent.
    pub fn send_all(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        self.send_impl(fd, buf, true, callback)
    }

    fn send_impl(
        &mut self,
        fd: RawFd,
        buf: Vec<u8>,
        all: bool,
        callback: impl FnOnce(&mut Loop, OpResult<usize>, Vec<u8>) + 'static,
    ) -> OpId {
        let too_big = buf.len() > i32::MAX as usize;
        let kind = OpKind::Send {
            fd,
            buf,
            offset: 0,
            all,
        };
        let deliver = move |lp: &mut Loop, c: Completion| {
            let Completion { result, kind } = c;
            let OpKind::Send { buf, .. } = kind else {
                unreachable!("send completion carries send data")
            };
            callback(lp, result.map(|n| n as usize), buf)
        };
        if too_big {
            let err = io::Error::new(io::ErrorKind::InvalidInput, "send buffer over 2 GiB");
            return self.fail_early(kind, err, deliver);
        }
        self.submit(kind, deliver)
    }

    /// Sends all of `out`, then receives into `input`'s spare capacity (like
    /// [`Loop::recv`]): a response and the wait for the next request in one
    /// op. The receive starts only once every byte of `out` is sent; if the
    /// send fails or is canceled, the receive never runs. The callback gets
    /// the outcome and both buffers back (`out` unchanged).
    ///
    /// On io_uring the two go to the kernel together, the send linked to the
    /// receive, and the send's own completion is skipped where the kernel
    /// can (`IORING_FEAT_CQE_SKIP`), so a request-response exchange costs one
    /// completion and no extra kernel entry. On poll it is emulated: send
    /// everything (waiting for writability as needed), then receive.
    /// Never raises `SIGPIPE`. An `input` without spare capacity, or an `out`
    /// over 2 GiB, fails with `InvalidInput` before anything is sent.
    ///
    /// ```
    /// # use ringvisor_runtime::{Backend, Loop, SendRecvOutcome};
    /// # use std::io::{Read, Write};
    /// # use std::os::fd::IntoRawFd;
    /// let mut lp = Loop::new().unwrap();
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    /// ours.set_nonblocking(lp.backend() == Backend::Poll).unwrap();
    /// let fd = ours.into_raw_fd();
    /// peer.write_all(b"next request").unwrap();
    /// let input = Vec::with_capacity(64);
    /// lp.send_recv(fd, b"response".to_vec(), input, move |lp, outcome, out, input| {
    ///     assert!(matches!(outcome, SendRecvOutcome::Received(Ok(12))));
    ///     assert_eq!((&out[..], &input[..]), (&b"response"[..], &b"next request"[..]));
    ///     lp.close(fd, |_, res| res.unwrap());
    /// });
    /// lp.run().unwrap();
    /// let mut sent = [0u8; 8];
    /// peer.read_exact(&mut sent).unwrap();
    /// assert_eq!(&sent, b"response");
    /// ```
    pub fn send_recv(
        &mut self,
        fd: RawFd,
        out: Vec<u8>,
        input: Vec<u8>,
        callback: impl FnOnce(&mut Loop, SendRecvOutcome, Vec<u8>, Vec<u8>) + 'static,
    ) -> OpId {
        let (kind, problem) = self.send_recv_kind(fd, out, input);
        let deliver = move |lp: &mut Loop, c: Completion| {
            let (outcome, out, input, _) = lp.send_recv_outcome(c);
            callback(lp, outcome, out, input)
        };
        if let Some(problem) = problem {
            let err = io::Error::new(io::ErrorKind::InvalidInput, problem);
            return self.fail_early(kind, err, deliver);
        }
        self.submit(kind, deliver)
    }

    /// [`Loop::send_recv`] whose completion goes to `H::done` with `arg`,
    /// with no allocation per op (the closure of `send_recv` is boxed, and
    /// its buffers' box is reused here; a request-response server makes one
    /// of these per request).
    ///
    /// ```
    /// # use ringvisor_runtime::{Backend, Loop, SendRecvDone, SendRecvOutcome};
    /// # use std::io::Write;
    /// # use std::os::fd::IntoRawFd;
    /// struct Answered;
    /// impl SendRecvDone for Answered {
    ///     fn done(lp: &mut Loop, fd: u64, outcome: SendRecvOutcome, _out: Vec<u8>, input: Vec<u8>) {
    ///         assert!(matches!(outcome, SendRecvOutcome::Received(Ok(4))));
    ///         assert_eq!(&input[..], b"next");
    ///         lp.close(fd as i32, |_, res| res.unwrap());
    ///     }
    /// }
    /// let mut lp = Loop::new().unwrap();
    /// let (ours, mut peer) = std::os::unix::net::UnixStream::pair().unwrap();
    /// ours.set_nonblocking(lp.backend() == Backend::Poll).unwrap();
    /// let fd = ours.into_raw_fd();
    /// peer.write_all(b"next").unwrap();
    /// lp.send_recv_with::<Answered>(fd, b"answer".to_vec(), Vec::with_capacity(16), fd as u64);
    /// lp.run().unwrap();
    /// ```
    pub fn send_recv_with<H: SendRecvDone>(
        &mut self,
        fd: RawFd,
        out: Vec<u8>,
        input: Vec<u8>,
        arg: u64,
    ) -> OpId {
        let (mut kind, problem) = self.send_recv_kind(fd, out, input);
        if let OpKind::SendRecv { bufs, .. } = &mut kind {
            bufs.arg = arg;
        }
        // The callback captures nothing (its argument rides in the op's
        // buffers): boxing it allocates nothing.
        if let Some(problem) = problem {
            let err = io::Error::new(io::ErrorKind::InvalidInput, problem);
            return self.fail_early(kind, err, send_recv_done::<H>);
        }
        self.submit(kind, send_recv_done::<H>)
    }

    /// The op of a `send_recv` (its buffers in a box from the pool), and
    /// why it cannot start, if it cannot.
    fn send_recv_kind(
        &mut self,
        fd: RawFd,
        out: Vec<u8>,
        input: Vec<u8>,
    ) -> (OpKind, Option<&'static str>) {
        let problem = if input.capacity() == input.len() {
            Some("send_recv input buffer has no spare capacity")
        } else if out.len() > i32::MAX as usize {
            Some("send_recv output buffer over 2 GiB")
        } else {
            None
        };
        let mut bufs = self.send_recv_bufs.pop().unwrap_or_default();
        *bufs = SendRecvBufs {
            out,
            sent: 0,
            input,
            arg: 0,
        };
        (OpKind::SendRecv { fd, bufs }, problem)
    }

    /// A completed `send_recv`'s outcome and buffers; its box goes back to
    /// the pool.
    fn send_recv_outcome(&mut self, c: Completion) -> (SendRecvOutcome, Vec<u8>, Vec<u8>, u64) {
        let Completion { result, kind } = c;
        let OpKind::SendRecv { mut bufs, .. } = kind else {
            unreachable!("send_recv completion carries send_recv data")
        };
        let SendRecvBufs {
            out,
            sent,
            input,
            arg,
        } = std::mem::take(&mut *bufs);
        if self.send_recv_bufs.len() < SEND_RECV_BUFS_POOLED_MAX {
            self.send_recv_bufs.push(bufs);
        }
        let outcome =
            if sent < out.len() {
                debug_assert!(result.is_err(), "an unfinished send is an error");
                SendRecvOutcome::SendFailed(result.err().unwrap_or_else(|| {
                    OpError::Io(io::Error::other("send_recv: send did not finish"))
                }))
            } else {
                SendRecvOutcome::Received(result.map(|n| n as usize))
            };
        (outcome, out, input, arg)
    }

    /// Shuts down one or both directions of a socket.
    pub fn shutdown(
        &mut self,
        fd: RawFd,
        how: Shutdown,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        self.submit(OpKind::Shutdown { fd, how }, move |lp, c| {
            callback(lp, c.result.map(|_| ()))
        })
    }

    /// Closes any fd (socket or file). Socket ops still pending on `fd`
    /// complete first, with an `ECANCELED` I/O error (call [`Loop::cancel`]
    /// beforehand to get [`crate::OpError::Canceled`] instead).
    pub fn close(
        &mut self,
        fd: RawFd,
        callback: impl FnOnce(&mut Loop, OpResult<()>) + 'static,
    ) -> OpId {
        self.submit(OpKind::Close { fd }, move |lp, c| {
            callback(lp, c.result.map(|_| ()))
        })
    }
}
