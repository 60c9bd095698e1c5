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
//! which could cut the answer short.
//!
//! Timeouts use one loop timer per connection, re-armed lazily: it may fire
//! early (the deadline moved later meanwhile), and then re-arms for the new
//! deadline, so a keep-alive connection does not churn timers per request.

use std::net::Shutdown;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringvisor::{Loop, OpError, OpId, SendRecvDone, SendRecvOutcome, TimerId};

use crate::input::{Input, Limits, RecvTarget, Step};
use crate::output::{self, Output, Responder, LINKED_SEND_BYTES_MAX};
use crate::response::{Persistence, Response};
use crate::router;
use crate::server::{self, server_mut};

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

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Idle,
    Request,
    Write,
    Linger,
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

    fn deadline(&self, idle: Duration, request: Duration) -> Option<(Instant, Expiry)> {
        match self.phase {
            Phase::Closing => None,
            Phase::Lingering { since, .. } => Some((since + LINGER_TIMEOUT, Expiry::Linger)),
            Phase::Open => {
                if let (Some(started), false) = (
                    self.input.started,
                    self.read_closed || self.output.is_backlogged(),
                ) {
                    Some((started + request, Expiry::Request))
                } else if let Some(sent) = self.output.send_started {
                    Some((sent + idle, Expiry::Write))
                } else if self.output.owed() > 0 {
                    None
                } else {
                    Some((self.last_activity + idle, Expiry::Idle))
                }
            }
        }
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
    while let Some((step, limits)) = next_step(lp, id) {
        match step {
            NextStep::NeedMore => break,
            NextStep::Continue => {
                let Some(conn) = server_mut(lp).conn_mut(id) else {
                    return;
                };
                if conn.output.push_continue() {
                    output::schedule_flush(lp, id);
                }
            }
            NextStep::Request(request, seq) => {
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
/// limits it is routed by.
fn next_step(lp: &mut Loop, id: ConnId) -> Option<(NextStep, Limits)> {
    let now = lp.now();
    let s = server_mut(lp);
    let limits = Limits {
        max_value_bytes: s.config.max_value_bytes(),
        shards: s.config.shards,
        chaos: s.config.chaos,
        request_timeout: s.config.request_timeout(),
        shard_pids: s.shard_pids.clone(),
    };
    let conn = s.conn_mut(id)?;
    if conn.phase != Phase::Open || conn.read_closed || conn.output.is_backlogged() {
        return None;
    }
    let step = match conn.input.step(&limits, now) {
        Step::Request(request) => {
            let seq = take_slot(conn, &request, now);
            NextStep::Request(request, seq)
        }
        Step::Continue => NextStep::Continue,
        Step::Error(e, method) => NextStep::Error(e, method),
        Step::NeedMore => NextStep::NeedMore,
    };
    Some((step, limits))
}

/// A [`Step`], a request with the sequence number of its response slot.
enum NextStep {
    Request(crate::input::Request, u64),
    Continue,
    Error(crate::http::HttpError, crate::http::Method),
    NeedMore,
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

/// Starts a plain receive if the connection wants one and none is in
/// flight, unless it waits for a flush to go out linked to it.
fn start_recv(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    let wanted = match conn.phase {
        Phase::Open => conn.reading() && (conn.input.in_request() || !conn.output.flush_coming()),
        Phase::Lingering { .. } => true,
        Phase::Closing => false,
    };
    if !wanted || conn.recv_op.is_some() {
        return;
    }
    let fd = conn.fd;
    if let Phase::Lingering { .. } = conn.phase {
        conn.input.discard();
    }
    let (target, buf) = conn.input.take_recv_buffer();
    let op = lp.recv(fd, buf, move |lp, res, buf| {
        on_recv(lp, id, target, res, buf)
    });
    if let Some(conn) = server_mut(lp).conn_mut(id) {
        conn.recv_op = Some(op);
    }
}

/// Whether a flush of `out_bytes`, about to go, should carry the next
/// receive: everything owed is in it, it is small enough not to wait on a
/// slow reader, and the connection wants its next request and has no
/// receive or send in flight.
pub fn linked_recv_wanted(conn: &Conn, out_bytes: usize) -> bool {
    out_bytes <= LINKED_SEND_BYTES_MAX
        && conn.output.owed() == 0
        && conn.output.send_op.is_none()
        && conn.recv_op.is_none()
        && !conn.input.in_request()
        && conn.reading()
}

/// Sends `out` and receives the next request in one op (see the module
/// docs); the caller checked [`linked_recv_wanted`].
pub fn send_then_recv(lp: &mut Loop, id: ConnId, out: Vec<u8>) {
    let now = lp.now();
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    debug_assert!(linked_recv_wanted(conn, out.len()));
    let fd = conn.fd;
    // An answer in flight is activity; a linked send is too small to need a
    // write deadline of its own, so the idle one applies.
    conn.last_activity = now;
    let (target, input) = conn.input.take_recv_buffer();
    let op = lp.send_recv_with::<SentThenReceived>(fd, out, input, pack_recv(id, target));
    if let Some(conn) = server_mut(lp).conn_mut(id) {
        conn.recv_op = Some(op);
        conn.output.send_op = Some(op);
        conn.output.send_linked = true;
    }
    // The idle deadline starts now; the op may wait long for its request.
    rearm_timer(lp, id);
}

/// A connection and the target of its receive, as one op argument (no
/// closure to allocate per linked send).
fn pack_recv(id: ConnId, target: RecvTarget) -> u64 {
    debug_assert!(
        id.key < 1 << 31,
        "connections are bounded by --max-connections"
    );
    let body = u64::from(target == RecvTarget::Body);
    u64::from(id.key) | body << 31 | u64::from(id.generation) << 32
}

fn unpack_recv(arg: u64) -> (ConnId, RecvTarget) {
    let id = ConnId {
        key: (arg & 0x7fff_ffff) as u32,
        generation: (arg >> 32) as u32,
    };
    let target = if arg & (1 << 31) != 0 {
        RecvTarget::Body
    } else {
        RecvTarget::Input
    };
    (id, target)
}

/// Where a connection's linked send and receive complete.
struct SentThenReceived;

impl SendRecvDone for SentThenReceived {
    fn done(lp: &mut Loop, arg: u64, outcome: SendRecvOutcome, out: Vec<u8>, input: Vec<u8>) {
        let (id, target) = unpack_recv(arg);
        on_send_recv(lp, id, target, outcome, out, input)
    }
}

fn on_send_recv(
    lp: &mut Loop,
    id: ConnId,
    target: RecvTarget,
    outcome: SendRecvOutcome,
    out: Vec<u8>,
    input: Vec<u8>,
) {
    let now = lp.now();
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    conn.output.send_op = None;
    conn.output.send_linked = false;
    match outcome {
        SendRecvOutcome::Received(res) => {
            output::sent(lp, id, out);
            on_recv(lp, id, target, res, input);
        }
        SendRecvOutcome::SendFailed(e) => {
            conn.recv_op = None;
            conn.input.put_recv_buffer(target, input, 0, now);
            on_io_error(lp, id, "send", e);
        }
    }
}

fn on_recv(
    lp: &mut Loop,
    id: ConnId,
    target: RecvTarget,
    res: ringvisor::OpResult<usize>,
    buf: Vec<u8>,
) {
    let now = lp.now();
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    conn.recv_op = None;
    let received = *res.as_ref().unwrap_or(&0);
    conn.input.put_recv_buffer(target, buf, received, now);
    match (conn.phase, res) {
        (Phase::Closing, _) => return try_finalize(lp, id),
        (
            Phase::Lingering {
                since,
                dropped_bytes,
            },
            Ok(n),
        ) if n > 0 => {
            let dropped_bytes = dropped_bytes + n;
            conn.phase = Phase::Lingering {
                since,
                dropped_bytes,
            };
            if dropped_bytes > LINGER_BYTES_MAX {
                return abort(lp, id);
            }
        }
        (Phase::Lingering { .. }, Err(OpError::Canceled)) => {}
        (Phase::Lingering { .. }, _) => return abort(lp, id),
        (Phase::Open, Ok(0)) => {
            conn.peer_closed = true;
            conn.read_closed = true;
        }
        (Phase::Open, Ok(n)) => {
            conn.last_activity = now;
            server_mut(lp).metrics.bytes_received += n as u64;
        }
        (Phase::Open, Err(OpError::Canceled)) => {}
        (Phase::Open, Err(e)) => return on_io_error(lp, id, "recv", e),
    }
    pump(lp, id);
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
    if conn.phase != Phase::Open || !conn.read_closed || !conn.output.is_idle() {
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

fn rearm_timer(lp: &mut Loop, id: ConnId) {
    let now = lp.now();
    let s = server_mut(lp);
    let (idle, request) = (s.config.idle_timeout(), s.config.request_timeout());
    let Some(conn) = s.conn_mut(id) else { return };
    let Some((at, _)) = conn.deadline(idle, request) else {
        return;
    };
    let old = match conn.timer {
        Some((_, armed_at)) if armed_at <= at => return,
        Some((timer, _)) => Some(timer),
        None => None,
    };
    if let Some(timer) = old {
        lp.cancel_timer(timer);
    }
    let timer = lp.timer(at.saturating_duration_since(now), move |lp| {
        on_timer(lp, id)
    });
    if let Some(conn) = server_mut(lp).conn_mut(id) {
        conn.timer = Some((timer, at));
    }
}

fn on_timer(lp: &mut Loop, id: ConnId) {
    let now = lp.now();
    let s = server_mut(lp);
    let (idle, request) = (s.config.idle_timeout(), s.config.request_timeout());
    let Some(conn) = s.conn_mut(id) else { return };
    conn.timer = None;
    let fd = conn.fd;
    let Some((at, expiry)) = conn.deadline(idle, request) else {
        return;
    };
    if at > now {
        return rearm_timer(lp, id);
    }
    match expiry {
        Expiry::Idle => {
            server_mut(lp).metrics.idle_timeouts += 1;
            tracing::debug!(fd, "idle timeout");
            abort(lp, id);
        }
        Expiry::Request => request_timed_out(lp, id),
        Expiry::Write | Expiry::Linger => {
            tracing::debug!(fd, ?expiry, "timeout");
            abort(lp, id);
        }
    }
}

/// Slowloris: the request in progress took too long to arrive. Answer 408
/// (after any responses owed before it) and close.
fn request_timed_out(lp: &mut Loop, id: ConnId) {
    let now = lp.now();
    let s = server_mut(lp);
    s.metrics.request_timeouts += 1;
    let Some(conn) = s.conn_mut(id) else { return };
    tracing::debug!(fd = conn.fd, "request timeout");
    conn.read_closed = true;
    conn.input.started = None;
    let method = conn.input.method();
    let seq = conn.output.push_slot(method, now, Persistence::Close);
    stop_receiving(lp, id);
    Responder { conn: id, seq }.send(lp, Response::text(408, "request timeout\n"));
    pump(lp, id);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_receive_argument_gives_back_its_connection_and_target() {
        for (key, generation) in [(0, 0), (1, u32::MAX), ((1 << 31) - 1, 7)] {
            for target in [RecvTarget::Input, RecvTarget::Body] {
                let id = ConnId { key, generation };
                let (back, back_target) = unpack_recv(pack_recv(id, target));
                assert_eq!(
                    (back.key, back.generation, back_target),
                    (key, generation, target)
                );
            }
        }
    }
}
