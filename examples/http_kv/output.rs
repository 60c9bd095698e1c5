//! A connection's output side: responses kept in request order, encoded
//! into one buffer, and written with one send per flush.
//!
//! Each parsed request gets a slot (sequence number) in `pending`. A
//! response for the front slot is encoded straight into `out`; one that
//! completes early (another shard answered first) is encoded aside until the
//! slots before it are done, into one `aside` buffer shared by the
//! connection's early responses (with two or more shards, about half of a
//! pipelined batch completes out of order: a `Vec` each cost a malloc, two
//! or three reallocs and a free per response). A flush is deferred to the end of the work
//! queued in this tick, so every response ready in a tick leaves in one
//! `send_all`. Only one send is in flight per connection; responses ready
//! meanwhile wait in `out` for the next.
//!
//! A flush that answers everything owed, on a connection that wants its next
//! request, goes out linked to that receive in one `send_recv` (one kernel
//! entry per request-response exchange on io_uring; see
//! [`conn::send_then_recv`]). The connection holds its receive back while a
//! flush is coming so that the two can go together.

use std::collections::VecDeque;
use std::time::Instant;

use ringvisor::{Loop, OpId};

use crate::conn::{self, Conn, ConnId};
use crate::http::Method;
use crate::metrics::Metrics;
use crate::response::{self, Persistence, Response};
use crate::server::server_mut;

/// Responses a connection may owe at once; reading pauses at this many.
pub const PIPELINE_DEPTH_MAX: usize = 128;
/// Bytes waiting to be sent above which reading pauses.
pub const OUT_HIGH_WATER_BYTES: usize = 4 << 20;
/// Send buffers kept for reuse up to this capacity (larger ones are freed).
pub const OUT_REUSE_BYTES_MAX: usize = 64 * 1024;
/// Times a flush steps aside (re-defers) for answers expected later in the
/// same tick before sending what is ready.
pub const FLUSH_DEFERRALS_MAX: u32 = 2;
/// Largest flush sent linked to the next receive. A bigger one may wait on
/// a slow reader, so it goes alone, with the receive beside it, and reading
/// goes on while it drains.
pub const LINKED_SEND_BYTES_MAX: usize = 64 * 1024;

/// Where one request's response goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Responder {
    /// The connection.
    pub conn: ConnId,
    /// The request's sequence number on it.
    pub seq: u64,
}

impl Responder {
    /// Delivers the response; dropped if the connection is gone.
    pub fn send(self, lp: &mut Loop, response: Response) {
        complete(lp, self, response);
    }
}

#[derive(Debug)]
struct Slot {
    method: Method,
    started: Instant,
    persistence: Persistence,
    /// Encoded early, waiting for the slots before it: `start..end` of
    /// [`Output::aside`].
    encoded: Option<(usize, usize)>,
}

/// The output side of one connection.
#[derive(Debug)]
pub struct Output {
    pending: VecDeque<Slot>,
    head_seq: u64,
    /// Encoded responses not yet handed to a send.
    pub out: Vec<u8>,
    spare: Vec<u8>,
    /// Responses encoded before the ones ahead of them; emptied once no
    /// slot refers to it.
    aside: Vec<u8>,
    /// Slots whose response waits in `aside`.
    aside_slots: usize,
    /// The send in flight.
    pub send_op: Option<OpId>,
    /// When the send in flight started (not for a linked send).
    pub send_started: Option<Instant>,
    /// The send in flight is a `send_recv`'s, which completes only with the
    /// next request: counted as sent by [`Output::is_quiet`].
    pub send_linked: bool,
    flush_scheduled: bool,
}

impl Output {
    /// An empty output side.
    pub fn new() -> Output {
        Output {
            pending: VecDeque::new(),
            head_seq: 0,
            out: Vec::new(),
            spare: Vec::new(),
            aside: Vec::new(),
            aside_slots: 0,
            send_op: None,
            send_started: None,
            send_linked: false,
            flush_scheduled: false,
        }
    }

    /// Responses owed.
    pub fn owed(&self) -> usize {
        self.pending.len()
    }

    /// Whether reading more requests should wait for output to drain.
    pub fn is_backlogged(&self) -> bool {
        self.pending.len() >= PIPELINE_DEPTH_MAX || self.out.len() >= OUT_HIGH_WATER_BYTES
    }

    /// Nothing owed, nothing unsent, no send in flight or scheduled.
    pub fn is_idle(&self) -> bool {
        self.pending.is_empty()
            && self.out.is_empty()
            && self.send_op.is_none()
            && !self.flush_scheduled
    }

    /// Like [`Output::is_idle`], but a linked send counts as sent: a
    /// keep-alive connection waiting for its next request is quiet.
    pub fn is_quiet(&self) -> bool {
        self.pending.is_empty()
            && self.out.is_empty()
            && (self.send_op.is_none() || self.send_linked)
            && !self.flush_scheduled
    }

    /// A flush will come without anything more being received: responses
    /// are owed, or ready and not yet sent.
    pub fn flush_coming(&self) -> bool {
        !self.pending.is_empty() || self.flush_scheduled || !self.out.is_empty()
    }

    /// Reserves the next response slot; returns its sequence number.
    pub fn push_slot(&mut self, method: Method, started: Instant, persistence: Persistence) -> u64 {
        let seq = self.head_seq + self.pending.len() as u64;
        self.pending.push_back(Slot {
            method,
            started,
            persistence,
            encoded: None,
        });
        seq
    }

    /// Whether a flush should be scheduled (output waiting, no flush
    /// scheduled, no send in flight, whose completion flushes); if so, marks
    /// it scheduled: the caller defers it.
    fn flush_wanted(&mut self) -> bool {
        if self.flush_scheduled || self.send_op.is_some() || self.out.is_empty() {
            return false;
        }
        self.flush_scheduled = true;
        true
    }

    /// Appends the `100 Continue` interim response, if nothing is owed before it.
    pub fn push_continue(&mut self) -> bool {
        if !self.pending.is_empty() {
            return false;
        }
        self.out.extend_from_slice(response::CONTINUE);
        true
    }
}

/// Encodes `response` into its slot's place, gathers its request event,
/// and schedules a flush when it can go out: all under one look-up of the
/// server (each look-up of a loop extension costs about 50 instructions).
fn complete(lp: &mut Loop, responder: Responder, response: Response) {
    let now = lp.now();
    let server = server_mut(lp);
    let Some(conn) = server
        .conns
        .get_mut(responder.conn.key as usize)
        .filter(|c| c.generation == responder.conn.generation)
    else {
        return;
    };
    let output = &mut conn.output;
    let Some(index) = responder.seq.checked_sub(output.head_seq) else {
        return;
    };
    let Some(slot) = output.pending.get_mut(index as usize) else {
        return;
    };
    debug_assert!(slot.encoded.is_none(), "one response per request");
    let gathered = server.events.push(crate::events::RequestEvent {
        method: slot.method,
        status: response.status,
        // Loop time: a request answered in the tick it arrived in (most of
        // a pipelined batch) took none, and is spared a timespec subtraction.
        latency: if slot.started == now {
            std::time::Duration::ZERO
        } else {
            now.saturating_duration_since(slot.started)
        },
    });
    let date = server.date.get(now);
    let head_only = slot.method == Method::Head;
    if index > 0 {
        let start = output.aside.len();
        response::encode(
            &response,
            head_only,
            slot.persistence,
            date,
            &mut output.aside,
        );
        slot.encoded = Some((start, output.aside.len()));
        output.aside_slots += 1;
        return crate::events::gathered(lp, gathered);
    }
    response::encode(
        &response,
        head_only,
        slot.persistence,
        date,
        &mut output.out,
    );
    output.pending.pop_front();
    output.head_seq += 1;
    while let Some((start, end)) = output.pending.front_mut().and_then(|s| s.encoded.take()) {
        output.out.extend_from_slice(&output.aside[start..end]);
        output.pending.pop_front();
        output.head_seq += 1;
        output.aside_slots -= 1;
    }
    if output.aside_slots == 0 {
        output.aside.clear();
        if output.aside.capacity() > OUT_REUSE_BYTES_MAX {
            output.aside.shrink_to(OUT_REUSE_BYTES_MAX);
        }
    }
    let flush = output.flush_wanted();
    crate::events::gathered(lp, gathered);
    if flush {
        defer_flush(lp, responder.conn);
    }
}

/// Schedules a flush of `conn`'s output later in this tick, unless one is
/// scheduled or a send is in flight (its completion flushes).
pub fn schedule_flush(lp: &mut Loop, id: ConnId) {
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    if conn.output.flush_wanted() {
        defer_flush(lp, id);
    }
}

/// Defers the flush [`Output::flush_wanted`] marked scheduled.
fn defer_flush(lp: &mut Loop, id: ConnId) {
    // A function and the packed id: nothing allocated per flush.
    let packed = u64::from(id.key) | u64::from(id.generation) << 32;
    lp.defer_fn(deferred_flush, packed);
}

fn deferred_flush(lp: &mut Loop, packed: u64) {
    let id = ConnId {
        key: packed as u32,
        generation: (packed >> 32) as u32,
    };
    flush(lp, id, 0)
}

fn flush(lp: &mut Loop, id: ConnId, deferrals: u32) {
    let now = lp.now();
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    let fd = conn.fd;
    let open = conn.is_open();
    let output = &mut conn.output;
    output.flush_scheduled = false;
    if output.out.is_empty() || output.send_op.is_some() || !open {
        return;
    }
    // The next response is still with a shard: its answer may come later in
    // this tick; give it the chance to share this send.
    if deferrals < FLUSH_DEFERRALS_MAX
        && output.pending.front().is_some_and(|s| s.encoded.is_none())
    {
        output.flush_scheduled = true;
        lp.defer(move |lp| flush(lp, id, deferrals + 1));
        return;
    }
    let spare = std::mem::take(&mut output.spare);
    let buf = std::mem::replace(&mut output.out, spare);
    if conn::linked_recv_wanted(conn, buf.len()) {
        let recv = conn.take_linked_recv(buf.len(), now);
        return conn::send_then_recv(lp, id, recv, buf);
    }
    conn.output.send_started = Some(now);
    let op = lp.send_all(fd, buf, move |lp, res, buf| on_sent(lp, id, res, buf));
    let Some(conn) = server_mut(lp).conn_mut(id) else {
        return;
    };
    conn.output.send_op = Some(op);
    if conn.holds_recv() {
        // A receive held back for this flush goes beside the send, after
        // the requests already received are taken from its buffer.
        conn::pump(lp, id);
    }
}

fn on_sent(lp: &mut Loop, id: ConnId, res: ringvisor::OpResult<usize>, buf: Vec<u8>) {
    let now = lp.now();
    let Some((conn, metrics)) = server_mut(lp).conn_and_metrics(id) else {
        return;
    };
    conn.output.send_op = None;
    conn.output.send_started = None;
    match res {
        Ok(_) => {
            sent(conn, metrics, buf, now);
            if conn.output.flush_wanted() {
                defer_flush(lp, id);
            }
            conn::pump(lp, id);
        }
        Err(e) => conn::on_io_error(lp, id, "send", e),
    }
}

/// A send of `buf` completed on `conn` (under the caller's look-up of it):
/// counts it and keeps the buffer for the next flush.
pub fn sent(conn: &mut Conn, metrics: &mut Metrics, mut buf: Vec<u8>, now: Instant) {
    metrics.bytes_sent += buf.len() as u64;
    conn.last_activity = now;
    buf.clear();
    if buf.capacity() > OUT_REUSE_BYTES_MAX {
        buf.shrink_to(OUT_REUSE_BYTES_MAX);
    }
    conn.output.spare = buf;
}
