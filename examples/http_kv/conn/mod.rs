//! A connection's state machine on the loop: receive, assemble requests,
//! hand them to the router, keep the timeouts, and close — gracefully after
//! the last response, or at once on errors.
//!
//! ```text
//! Open ──(close after flush: Connection: close, HTTP/1.0, 4xx that closes,
//!         408, peer EOF, draining)──▶ Lingering ──(peer EOF, linger over)──▶ Closing
//!   └──────────────(I/O error, idle or write timeout)──────────────────────────┘
//! ```
//! Closing cancels the connection's ops and closes its fd only once none is
//! in flight (an fd must never be closed, and maybe reused, under an op).
//!
//! The next receive waits while a flush is coming (responses owed or
//! unsent, no request partly read) and then goes out linked to it: one
//! `send_recv` carries the answer and the wait for the next request. That
//! op is both `recv_op` and the output's `send_op`; ending its receive
//! early (draining) shuts the socket's read side rather than canceling it,
//! which could cut the answer short (the receives: [`recv`]).
//!
//! Timeouts use one loop timer per connection ([`timeout`]).

use std::net::Shutdown;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringvisor::{Loop, OpError, OpId, TimerId};

use crate::input::{Input, Limits, Step};
use crate::output::{self, Output, Responder};
use crate::response::{Persistence, Response};
use crate::router;
use crate::server::{self, server_mut};

mod recv;
mod timeout;

use recv::start_recv;
pub use recv::{linked_recv_wanted, send_then_recv};
use timeout::rearm_timer;

/// Longest a closing connection waits for the peer to close its side
/// (draining what it still sends) before closing anyway.
pub const LINGER_TIMEOUT: Duration = Duration::from_secs(1);
/// Most bytes read and dropped while lingering.
pub const LINGER_BYTES_MAX: usize = 256 * 1024;

/// A connection's address in the server's table; a stale id finds nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ConnId {
    /// Slab key.
    pub key: u32,
    /// Distinguishes reuses of one key.
    pub generation: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Open,
    Lingering {
        since: Instant,
        dropped_bytes: usize,
    },
    Closing,
}

/// One connection.
#[derive(Debug)]
pub struct Conn {
    /// The socket.
    pub fd: RawFd,
    /// See [`ConnId::generation`].
    pub generation: u32,
    input: Input,
    /// The responses.
    pub output: Output,
    recv_op: Option<OpId>,
    shutdown_in_flight: bool,
    phase: Phase,
    /// No more requests are read on this connection.
    read_closed: bool,
    peer_closed: bool,
    draining: bool,
    /// Last byte received or sent.
    pub last_activity: Instant,
    timer: Option<(TimerId, Instant)>,
}

impl Conn {
    /// Whether responses may still be sent.
    pub fn is_open(&self) -> bool {
        self.phase == Phase::Open
    }

    /// Whether a request is partly received or responses are owed or unsent.
    pub fn in_progress(&self) -> bool {
        self.input.in_request() || !self.output.is_quiet()
    }

    /// Whether no receive is in flight while requests are being read: one
    /// was held back for a flush.
    pub fn holds_recv(&self) -> bool {
        self.recv_op.is_none() && self.reading()
    }

    /// Whether requests are being read (phase open, reading not closed,
    /// room to read into, output not backed up).
    fn reading(&self) -> bool {
        self.phase == Phase::Open
            && !self.read_closed
            && !self.peer_closed
            && !self.output.is_backlogged()
            && self.input.has_room()
            && (!self.draining || self.input.in_request())
    }

    /// Whether a plain receive should start now: the connection reads (or
    /// lingers) and has none in flight, and no flush is coming that the
    /// receive would go out linked to.
    fn wants_recv(&self) -> bool {
        let wanted = match self.phase {
            Phase::Open => {
                self.reading() && (self.input.in_request() || !self.output.flush_coming())
            }
            Phase::Lingering { .. } => true,
            Phase::Closing => false,
        };
        wanted && self.recv_op.is_none()
    }

    /// Whether the connection may start closing: no more requests come and
    /// every response is out.
    fn may_finish(&self) -> bool {
        self.phase == Phase::Open && self.read_closed && self.output.is_idle()
    }

    /// Whether [`pump`]'s last steps (receive, finish, timer) have nothing
    /// to do.
    fn settled(&self, idle: Duration, request: Duration) -> bool {
        !self.wants_recv() && !self.may_finish() && self.timer_current(idle, request)
    }
}

/// Takes over an accepted socket.
pub fn open(lp: &mut Loop, fd: RawFd) {
    let now = lp.now();
    let server = server_mut(lp);
    let bodies = server.bodies.clone();
    let id = server.insert_conn(|generation| Conn {
        fd,
        generation,
        input: Input::new(bodies),
        output: Output::new(),
        recv_op: None,
        shutdown_in_flight: false,
        phase: Phase::Open,
        read_closed: false,
        peer_closed: false,
        draining: false,
        last_activity: now,
        timer: None,
    });
    pump(lp, id);
}

/// Makes all the progress the connection's state allows: assembles and
/// dispatches requests, receives more, starts closing when done, and keeps
/// the timer right. Called after every event on the connection.
pub fn pump(lp: &mut Loop, id: ConnId) {
    loop {
        match next_step(lp, id) {
            NextStep::Gone => return,
            NextStep::Idle { settled: true } => return,
            NextStep::Idle { settled: false } => break,
            NextStep::Continue => {
                let Some(conn) = server_mut(lp).conn_mut(id) else {
                    return;
                };
                if conn.output.push_continue() {
                    output::schedule_flush(lp, id);
                }
            }
            NextStep::Request(request, seq, limits) => {
                dispatch_guarded(lp, Responder { conn: id, seq }, request, &limits);
            }
            NextStep::Error(e, method) => {
                tracing::debug!(status = e.status, reason = e.reason, "bad request");
                let now = lp.now();
                let Some(conn) = server_mut(lp).conn_mut(id) else {
                    return;
                };
                conn.read_closed = true;
                let seq = conn.output.push_slot(method, now, Persistence::Close);
                Responder { conn: id, seq }.send(lp, Response::text(e.status, e.reason));
            }
        }
    }
    start_recv(lp, id);
    maybe_finish(lp, id);
    rearm_timer(lp, id);
}

/// Routes a request; a bug that panics there costs that request a 500 and
/// its connection, never the server.
fn dispatch_guarded(
    lp: &mut Loop,
    responder: Responder,
    request: crate::input::Request,
    limits: &Limits,
) {
    let run = std::panic::AssertUnwindSafe(|| router::dispatch(lp, responder, request, limits));
    if std::panic::catch_unwind(run).is_err() {
        tracing::error!("request handler panicked; answering 500");
        if let Some(conn) = server_mut(lp).conn_mut(responder.conn) {
            conn.read_closed = true;
        }
        responder.send(lp, Response::text(500, "internal error\n"));
    }
}

/// What the input holds next; a complete request comes with its response
/// slot reserved (under the same look-up of the server), and with the
/// limits it is routed by. When nothing is left to dispatch, the same
/// look-up tells whether the connection needs anything else (a receive, a
/// close, its timer moved): usually not, and then [`pump`] is done.
fn next_step(lp: &mut Loop, id: ConnId) -> NextStep {
    let now = lp.now();
    let s = server_mut(lp);
    let (idle, request_timeout) = (s.config.idle_timeout(), s.config.request_timeout());
    let limits = Limits {
        max_value_bytes: s.config.max_value_bytes(),
        shards: s.config.shards,
        chaos: s.config.chaos,
    };
    let Some(conn) = s.conn_mut(id) else {
        return NextStep::Gone;
    };
    if conn.phase != Phase::Open || conn.read_closed || conn.output.is_backlogged() {
        return NextStep::Idle {
            settled: conn.settled(idle, request_timeout),
        };
    }
    match conn.input.step(&limits, now) {
        Step::Request(request) => {
            let seq = take_slot(conn, &request, now);
            NextStep::Request(request, seq, limits)
        }
        Step::Continue => NextStep::Continue,
        Step::Error(e, method) => NextStep::Error(e, method),
        Step::NeedMore => NextStep::Idle {
            settled: conn.settled(idle, request_timeout),
        },
    }
}

/// A [`Step`], a request with the sequence number of its response slot.
enum NextStep {
    Request(crate::input::Request, u64, Limits),
    Continue,
    Error(crate::http::HttpError, crate::http::Method),
    /// Nothing to dispatch; `settled`: nothing else to do either.
    Idle {
        settled: bool,
    },
    /// The connection is closed.
    Gone,
}

/// Reserves the response slot of a complete request and decides whether the
/// connection stays open after it; returns the slot's sequence number.
fn take_slot(conn: &mut Conn, request: &crate::input::Request, now: Instant) -> u64 {
    let last = !request.keep_alive || (conn.draining && !conn.input.in_request());
    let persistence = if last {
        conn.read_closed = true;
        Persistence::Close
    } else if request.announce_keep_alive {
        Persistence::KeepAliveAnnounced
    } else {
        Persistence::KeepAlive
    };
    conn.output.push_slot(request.method, now, persistence)
}

/// An op on the connection failed: resets and broken pipes are a client's
/// right and are logged quietly; the connection closes either way.
pub fn on_io_error(lp: &mut Loop, id: ConnId, op: &'static str, e: OpError) {
    match &e {
        OpError::Canceled => {
            let closing = server_mut(lp)
                .conn_mut(id)
                .is_some_and(|c| c.phase == Phase::Closing);
            if closing {
                return try_finalize(lp, id);
            }
            return pump(lp, id);
        }
        OpError::Io(io) if is_peer_gone(io) => tracing::debug!(op, error = %io, "peer went away"),
        OpError::Io(io) => tracing::warn!(op, error = %io, "connection error"),
    }
    abort(lp, id);
}

fn is_peer_gone(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::ECONNRESET) | Some(libc::EPIPE) | Some(libc::ETIMEDOUT) | Some(libc::ENOTCONN)
    )
}

/// Starts closing once every response is out and no more requests come.
fn maybe_finish(lp: &mut Loop, id: ConnId) {
    let now = lp.now();
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    if !conn.may_finish() {
        return;
    }
    if conn.peer_closed || (conn.draining && !conn.input.in_request()) {
        return abort(lp, id);
    }
    // Half-close and read until the peer closes too, so a request it sent
    // after the last one answered does not turn our close into a reset
    // that destroys that answer in flight.
    conn.phase = Phase::Lingering {
        since: now,
        dropped_bytes: 0,
    };
    shut(lp, id, Shutdown::Write);
    // A receive still out (canceled by a timeout) comes back first and
    // starts the lingering reads itself.
    start_recv(lp, id);
}

/// Shuts one side of the socket; a close waits for it.
fn shut(lp: &mut Loop, id: ConnId, how: Shutdown) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    debug_assert!(!conn.shutdown_in_flight);
    conn.shutdown_in_flight = true;
    let fd = conn.fd;
    lp.shutdown(fd, how, move |lp, _| {
        if let Some(conn) = server_mut(lp).conn_mut(id) {
            conn.shutdown_in_flight = false;
            if conn.phase == Phase::Closing {
                try_finalize(lp, id);
            }
        }
    });
}

/// Ends the receive in flight, if any, while the connection stays open. A
/// linked one carries an answer that must not be cut short: the socket's
/// read side is shut instead, and the receive ends with 0 bytes once the
/// answer is out.
fn stop_receiving(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    match (conn.recv_op, conn.output.send_linked) {
        (Some(_), true) if !conn.shutdown_in_flight => shut(lp, id, Shutdown::Read),
        (Some(_), true) => {}
        (Some(op), false) => {
            lp.cancel(op);
        }
        (None, _) => {}
    }
}

/// Closes at once: cancels what is in flight and closes the fd once all of
/// it has come back.
pub fn abort(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    conn.phase = Phase::Closing;
    let ops = [conn.recv_op, conn.output.send_op];
    for op in ops.into_iter().flatten() {
        lp.cancel(op);
    }
    try_finalize(lp, id);
}

fn try_finalize(lp: &mut Loop, id: ConnId) {
    let server = server_mut(lp);
    let Some(conn) = server.conn_mut(id) else {
        return;
    };
    debug_assert_eq!(conn.phase, Phase::Closing);
    if conn.recv_op.is_some() || conn.output.send_op.is_some() || conn.shutdown_in_flight {
        return;
    }
    let conn = server.conns.remove(id.key as usize);
    if let Some((timer, _)) = conn.timer {
        lp.cancel_timer(timer);
    }
    lp.close(conn.fd, |_, _| {});
    server::on_conn_closed(lp);
}

/// Shutdown: an idle connection closes now; one with a request in progress
/// finishes it, answers with `Connection: close`, and closes.
pub fn drain(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    conn.draining = true;
    if !conn.input.in_request() {
        conn.read_closed = true;
        stop_receiving(lp, id);
    }
    pump(lp, id);
}
