//! A connection's timeouts: idle, request (slowloris), write and linger,
//! kept with one loop timer re-armed lazily. The timer may fire early (the
//! deadline moved later meanwhile) and then re-arms for the new deadline, so
//! a keep-alive connection does not churn timers per request.

use std::time::{Duration, Instant};

use super::{abort, pump, stop_receiving, Conn, ConnId, Phase, LINGER_TIMEOUT};
use crate::output::Responder;
use crate::response::{Persistence, Response};
use crate::server::server_mut;
use ringvisor::Loop;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Expiry {
    Idle,
    Request,
    Write,
    Linger,
}

impl Conn {
    /// Whether the timer needs no re-arming: there is no deadline, or the
    /// armed timer fires no later than it (it re-arms lazily when it fires).
    pub(super) fn timer_current(&self, idle: Duration, request: Duration) -> bool {
        match (self.deadline(idle, request), self.timer) {
            (None, _) => true,
            (Some((at, _)), Some((_, armed_at))) => armed_at <= at,
            (Some(_), None) => false,
        }
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

pub(super) fn rearm_timer(lp: &mut Loop, id: ConnId) {
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
