//! A TCP front for any gen_server: accept on the loop, decode requests with a
//! [`Codec`], call the server, write replies in request order.
//!
//! Each connection is a small state machine: a receive buffer, the requests
//! in flight (at most [`ListenerOptions::max_pipelined`]; reading pauses at
//! the limit), and replies written in order, all that are ready in one send.
//! A bad frame is answered with an error and ends that connection only.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::rc::Rc;
use std::time::Duration;

use ringvisor_runtime::{Loop, OpError};

use crate::codec::Codec;
use crate::gen_server::{self, GenServer, ServerRef};

/// Back-off after accept ran out of fds.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

/// Limits of a listener.
#[derive(Debug, Clone, Copy)]
pub struct ListenerOptions {
    /// Connections served at once; accepting pauses at the limit.
    pub max_connections: usize,
    /// Requests of one connection in flight; reading pauses at the limit.
    pub max_pipelined: usize,
    /// Timeout of each call to the server.
    pub call_timeout: Duration,
    /// Bytes read per recv.
    pub recv_bytes: usize,
}

impl Default for ListenerOptions {
    fn default() -> ListenerOptions {
        ListenerOptions {
            max_connections: 1024,
            max_pipelined: 64,
            call_timeout: Duration::from_secs(5),
            recv_bytes: 16 * 1024,
        }
    }
}

/// Finds the server to call (it may be restarted under a new Pid).
pub type Resolve<S> = Rc<dyn Fn(&mut Loop) -> Option<ServerRef<S>>>;

struct Shared<S, C> {
    listen_fd: RawFd,
    resolve: Resolve<S>,
    new_codec: Box<dyn Fn() -> C>,
    options: ListenerOptions,
    connections: usize,
    accepting: bool,
}

struct Conn<C> {
    fd: RawFd,
    codec: C,
    inbuf: Vec<u8>,
    /// Encoded replies in request order; `None` while the call is out.
    replies: VecDeque<Option<Vec<u8>>>,
    /// Sequence number of `replies[0]`.
    first_seq: u64,
    sending: bool,
    reading: bool,
    /// No more requests will be read (peer closed, bad frame, error).
    done_reading: bool,
    closed: bool,
}

type SharedRef<S, C> = Rc<RefCell<Shared<S, C>>>;
type ConnRef<C> = Rc<RefCell<Conn<C>>>;

/// Serves `server` (found again through `resolve` for each request) on the
/// listening socket `listen_fd`.
///
/// ```no_run
/// use ringvisor_behaviours::codec::LineCodec;
/// use ringvisor_behaviours::listener::{self, ListenerOptions};
/// use ringvisor_behaviours::step::{StateMachine, Stepper};
/// use ringvisor_behaviours::gen_server::{self, StartOptions};
/// use ringvisor_runtime::{ListenOptions, Loop};
/// use std::rc::Rc;
///
/// struct Echo;
/// impl StateMachine for Echo {
///     type State = (); type Input = String; type Output = String;
///     fn step(line: String, _: &mut ()) -> String { line }
/// }
/// let mut lp = Loop::new().unwrap();
/// let server = gen_server::start::<Stepper<Echo>>(&mut lp, (), StartOptions::default()).unwrap();
/// let fd = lp.listen_tcp("127.0.0.1:7001".parse().unwrap(), ListenOptions::default()).unwrap();
/// let codec = || LineCodec::new(|l: &str| Ok(l.to_string()), |r: &String| r.clone());
/// listener::serve(&mut lp, fd, Rc::new(move |_| Some(server)), codec, ListenerOptions::default());
/// lp.run().unwrap();
/// ```
pub fn serve<S, C>(
    lp: &mut Loop,
    listen_fd: RawFd,
    resolve: Resolve<S>,
    new_codec: impl Fn() -> C + 'static,
    options: ListenerOptions,
) where
    S: GenServer,
    C: Codec<Request = S::Call, Reply = S::Reply>,
{
    assert!(options.max_connections > 0 && options.max_pipelined > 0 && options.recv_bytes > 0);
    let shared = Rc::new(RefCell::new(Shared {
        listen_fd,
        resolve,
        new_codec: Box::new(new_codec),
        options,
        connections: 0,
        accepting: false,
    }));
    accept_next(lp, shared);
}

fn accept_next<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: SharedRef<S, C>,
) {
    let fd = {
        let mut sh = shared.borrow_mut();
        if sh.accepting || sh.connections >= sh.options.max_connections {
            return;
        }
        sh.accepting = true;
        sh.listen_fd
    };
    lp.accept(fd, move |lp, result| {
        shared.borrow_mut().accepting = false;
        match result {
            Ok((conn_fd, _peer)) => {
                let _ = ringvisor_runtime::set_nodelay(conn_fd, true);
                let conn = {
                    let mut sh = shared.borrow_mut();
                    sh.connections += 1;
                    Rc::new(RefCell::new(Conn {
                        fd: conn_fd,
                        codec: (sh.new_codec)(),
                        inbuf: Vec::with_capacity(sh.options.recv_bytes),
                        replies: VecDeque::new(),
                        first_seq: 0,
                        sending: false,
                        reading: false,
                        done_reading: false,
                        closed: false,
                    }))
                };
                read_next(lp, &shared, &conn);
            }
            Err(OpError::Io(e))
                if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
            {
                tracing::warn!(error = %e, "out of fds; pausing accept");
                let sh = shared.clone();
                lp.timer(ACCEPT_BACKOFF, move |lp| accept_next(lp, sh));
                return;
            }
            Err(OpError::Canceled) => return,
            Err(e) => tracing::debug!(error = %e, "accept failed"),
        }
        accept_next(lp, shared);
    });
}

fn read_next<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
) {
    let (fd, buf) = {
        let mut c = conn.borrow_mut();
        let max_pipelined = shared.borrow().options.max_pipelined;
        if c.reading || c.done_reading || c.closed || c.replies.len() >= max_pipelined {
            return;
        }
        c.reading = true;
        let recv_bytes = shared.borrow().options.recv_bytes;
        let mut buf = std::mem::take(&mut c.inbuf);
        buf.reserve(recv_bytes);
        (c.fd, buf)
    };
    let (shared, conn) = (shared.clone(), conn.clone());
    lp.recv(fd, buf, move |lp, result, buf| {
        {
            let mut c = conn.borrow_mut();
            c.reading = false;
            c.inbuf = buf;
            if !matches!(result, Ok(n) if n > 0) {
                c.done_reading = true;
            }
        }
        decode_all(lp, &shared, &conn);
        read_next(lp, &shared, &conn);
        finish_if_done(lp, &shared, &conn);
    });
}

/// Decodes every complete request in the buffer and calls the server.
fn decode_all<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
) {
    let (max_pipelined, timeout) = {
        let sh = shared.borrow();
        (sh.options.max_pipelined, sh.options.call_timeout)
    };
    loop {
        let decoded = {
            let mut c = conn.borrow_mut();
            if c.closed || c.replies.len() >= max_pipelined || c.inbuf.is_empty() {
                return;
            }
            let c = &mut *c;
            match c.codec.decode(&c.inbuf) {
                Ok(Some((request, used))) => {
                    c.inbuf.drain(..used);
                    c.replies.push_back(None);
                    Ok((request, c.first_seq + c.replies.len() as u64 - 1))
                }
                Ok(None) => return,
                Err(e) => Err(e),
            }
        };
        match decoded {
            Ok((request, seq)) => call_server(lp, shared, conn, request, seq, timeout),
            Err(e) => {
                let mut c = conn.borrow_mut();
                let mut out = Vec::new();
                c.codec.encode_error(&e.0, &mut out);
                c.replies.push_back(Some(out));
                c.done_reading = true;
                c.inbuf.clear();
                drop(c);
                flush(lp, shared, conn);
                return;
            }
        }
    }
}

fn call_server<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
    request: S::Call,
    seq: u64,
    timeout: Duration,
) {
    let resolve = shared.borrow().resolve.clone();
    let (shared, conn) = (shared.clone(), conn.clone());
    let Some(server) = resolve(lp) else {
        fill(lp, &shared, &conn, seq, Err("noproc".to_string()));
        return;
    };
    gen_server::call(lp, server, request, timeout, move |lp, reply| {
        fill(lp, &shared, &conn, seq, reply.map_err(|e| e.to_string()));
    });
}

/// Stores the encoded reply for request `seq` and writes what is in order.
fn fill<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
    seq: u64,
    reply: Result<S::Reply, String>,
) {
    {
        let mut c = conn.borrow_mut();
        if c.closed {
            return;
        }
        let mut out = Vec::new();
        match &reply {
            Ok(value) => c.codec.encode(value, &mut out),
            Err(message) => c.codec.encode_error(message, &mut out),
        }
        let index = (seq - c.first_seq) as usize;
        c.replies[index] = Some(out);
    }
    flush(lp, shared, conn);
}

/// Sends every reply ready at the front, in one send.
fn flush<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
) {
    let (fd, out) = {
        let mut c = conn.borrow_mut();
        if c.sending || c.closed {
            return;
        }
        let mut out = Vec::new();
        while let Some(Some(_)) = c.replies.front() {
            let reply = c.replies.pop_front().flatten().expect("checked");
            out.extend_from_slice(&reply);
            c.first_seq += 1;
        }
        if out.is_empty() {
            return;
        }
        c.sending = true;
        (c.fd, out)
    };
    let (shared, conn) = (shared.clone(), conn.clone());
    lp.send_all(fd, out, move |lp, result, _| {
        {
            let mut c = conn.borrow_mut();
            c.sending = false;
            if result.is_err() {
                c.done_reading = true;
                c.replies.clear();
            }
        }
        flush(lp, &shared, &conn);
        decode_all(lp, &shared, &conn);
        read_next(lp, &shared, &conn);
        finish_if_done(lp, &shared, &conn);
    });
}

/// Closes a connection that reads no more and has nothing left to write.
fn finish_if_done<S: GenServer, C: Codec<Request = S::Call, Reply = S::Reply>>(
    lp: &mut Loop,
    shared: &SharedRef<S, C>,
    conn: &ConnRef<C>,
) {
    let fd = {
        let mut c = conn.borrow_mut();
        if c.closed || !c.done_reading || c.reading || c.sending || !c.replies.is_empty() {
            return;
        }
        c.closed = true;
        c.fd
    };
    lp.close(fd, |_, _| {});
    shared.borrow_mut().connections -= 1;
    accept_next(lp, shared.clone());
}
