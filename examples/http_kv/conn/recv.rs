//! A connection's receives: a plain one when the connection wants its next
//! bytes and no flush is coming, or one linked to the flush that answers
//! everything owed (one `send_recv`, one kernel entry per exchange on
//! io_uring); and what a completed receive does to the connection, under one
//! look-up of the server whichever way it came.

use std::os::fd::RawFd;
use std::time::Instant;

use ringvisor::{Loop, OpError, SendRecvDone, SendRecvOutcome};

use super::timeout::rearm_timer;
use super::{abort, on_io_error, pump, try_finalize, Conn, ConnId, Phase, LINGER_BYTES_MAX};
use crate::input::RecvTarget;
use crate::output::{self, LINKED_SEND_BYTES_MAX};
use crate::server::server_mut;

/// Starts a plain receive if the connection wants one and none is in
/// flight, unless it waits for a flush to go out linked to it.
pub(super) fn start_recv(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    if !conn.wants_recv() {
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

/// A linked send's receive side, taken from the connection under the
/// caller's look-up of it (see [`Conn::take_linked_recv`]).
pub struct LinkedRecv {
    fd: RawFd,
    target: RecvTarget,
    input: Vec<u8>,
}

impl Conn {
    /// Takes the receive buffer for a linked send of `out_bytes` about to
    /// go; the caller checked [`linked_recv_wanted`] and passes the result
    /// to [`send_then_recv`].
    pub fn take_linked_recv(&mut self, out_bytes: usize, now: Instant) -> LinkedRecv {
        debug_assert!(linked_recv_wanted(self, out_bytes));
        // An answer in flight is activity; a linked send is too small to
        // need a write deadline of its own, so the idle one applies.
        self.last_activity = now;
        let (target, input) = self.input.take_recv_buffer();
        LinkedRecv {
            fd: self.fd,
            target,
            input,
        }
    }
}

/// Sends `out` and receives the next request in one op (see the module
/// docs).
pub fn send_then_recv(lp: &mut Loop, id: ConnId, recv: LinkedRecv, out: Vec<u8>) {
    let LinkedRecv { fd, target, input } = recv;
    let op = lp.send_recv_with::<SentThenReceived>(fd, out, input, pack_recv(id, target));
    let s = server_mut(lp);
    let (idle, request) = (s.config.idle_timeout(), s.config.request_timeout());
    let Some(conn) = s.conn_mut(id) else {
        return;
    };
    conn.recv_op = Some(op);
    conn.output.send_op = Some(op);
    conn.output.send_linked = true;
    // The idle deadline starts now; the op may wait long for its request
    // (and the timer armed already fires no later: usually nothing to do).
    if !conn.timer_current(idle, request) {
        rearm_timer(lp, id);
    }
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
    let Some((conn, metrics)) = server_mut(lp).conn_and_metrics(id) else {
        return;
    };
    conn.output.send_op = None;
    conn.output.send_linked = false;
    match outcome {
        SendRecvOutcome::Received(res) => {
            output::sent(conn, metrics, out, now);
            let next = received(conn, metrics, target, res, input, now);
            next.run(lp, id);
        }
        SendRecvOutcome::SendFailed(e) => {
            conn.recv_op = None;
            conn.input.put_recv_buffer(target, input, 0, now);
            on_io_error(lp, id, "send", e);
        }
    }
}

pub(super) fn on_recv(
    lp: &mut Loop,
    id: ConnId,
    target: RecvTarget,
    res: ringvisor::OpResult<usize>,
    buf: Vec<u8>,
) {
    let now = lp.now();
    let Some((conn, metrics)) = server_mut(lp).conn_and_metrics(id) else {
        return;
    };
    let next = received(conn, metrics, target, res, buf, now);
    next.run(lp, id);
}

/// What a connection does after a receive completed.
enum AfterRecv {
    Pump,
    Finalize,
    Abort,
    Failed(OpError),
}

impl AfterRecv {
    fn run(self, lp: &mut Loop, id: ConnId) {
        match self {
            AfterRecv::Pump => pump(lp, id),
            AfterRecv::Finalize => try_finalize(lp, id),
            AfterRecv::Abort => abort(lp, id),
            AfterRecv::Failed(e) => on_io_error(lp, id, "recv", e),
        }
    }
}

/// Takes a completed receive's buffer and result into the connection (under
/// the caller's look-up of it); says what follows.
fn received(
    conn: &mut Conn,
    metrics: &mut crate::metrics::Metrics,
    target: RecvTarget,
    res: ringvisor::OpResult<usize>,
    buf: Vec<u8>,
    now: Instant,
) -> AfterRecv {
    conn.recv_op = None;
    let received = *res.as_ref().unwrap_or(&0);
    conn.input.put_recv_buffer(target, buf, received, now);
    match (conn.phase, res) {
        (Phase::Closing, _) => return AfterRecv::Finalize,
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
                return AfterRecv::Abort;
            }
        }
        (Phase::Lingering { .. }, Err(OpError::Canceled)) => {}
        (Phase::Lingering { .. }, _) => return AfterRecv::Abort,
        (Phase::Open, Ok(0)) => {
            conn.peer_closed = true;
            conn.read_closed = true;
        }
        (Phase::Open, Ok(n)) => {
            conn.last_activity = now;
            metrics.bytes_received += n as u64;
        }
        (Phase::Open, Err(OpError::Canceled)) => {}
        (Phase::Open, Err(e)) => return AfterRecv::Failed(e),
    }
    AfterRecv::Pump
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
