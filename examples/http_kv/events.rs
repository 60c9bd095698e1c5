//! Request events through a `gen_event` manager.
//!
//! Every answered request is notified to the manager `events` (a child of the
//! root supervisor), in batches: the requests answered in one tick go as one
//! [`RequestEvents`] notification, so a pipelined tick of a thousand answers
//! costs the manager one message, not a thousand. Two handlers are installed
//! when it starts: `log` (a `tracing` debug line per request) and `metrics`
//! (the Prometheus counters and latency histogram of `/metrics`). A handler
//! that panics is removed and the others carry on; a restarted manager gets
//! both again.

use std::rc::Rc;
use std::time::Duration;

use ringvisor::behaviours::gen_event::{self, EventHandler, EventManager, HandlerAction};
use ringvisor::behaviours::gen_server::{ServerRef, StartOptions};
use ringvisor::behaviours::supervisor::ChildSpec;
use ringvisor::behaviours::{is_alive, whereis, Pid};
use ringvisor::Loop;

use crate::http::Method;
use crate::server::server_mut;

/// The manager's registered name.
pub const MANAGER: &str = "events";

/// One answered request.
#[derive(Debug, Clone, Copy)]
pub struct RequestEvent {
    /// Its method.
    pub method: Method,
    /// The status it was answered with.
    pub status: u16,
    /// From its first byte to its answer, in loop time.
    pub latency: Duration,
}

/// Logs each request at debug level.
struct LogHandler;

impl EventHandler<RequestEvents> for LogHandler {
    fn handle_event(
        &mut self,
        events: &RequestEvents,
        _lp: &mut Loop,
    ) -> HandlerAction<RequestEvents> {
        for event in events.0.iter() {
            tracing::debug!(method = ?event.method, status = event.status, latency_us = event.latency.as_micros() as u64, "request");
        }
        HandlerAction::Keep
    }
}

/// Counts requests for `/metrics`.
struct MetricsHandler;

impl EventHandler<RequestEvents> for MetricsHandler {
    fn handle_event(
        &mut self,
        events: &RequestEvents,
        lp: &mut Loop,
    ) -> HandlerAction<RequestEvents> {
        record(lp, events);
        HandlerAction::Keep
    }
}

fn record(lp: &mut Loop, events: &RequestEvents) {
    let metrics = &mut server_mut(lp).metrics;
    for event in events.0.iter() {
        metrics.record(event.method, event.status, event.latency);
    }
}

/// The manager as a supervised child, with its handlers.
pub fn spec() -> ChildSpec {
    ChildSpec::from_fn(MANAGER, |lp, parent| {
        let options = StartOptions {
            parent: Some(parent),
            ..StartOptions::named(MANAGER)
        };
        let manager = gen_event::start::<RequestEvents>(lp, options)?;
        // Queued before any event: the first thing the new manager does.
        gen_event::add_handler(lp, manager, "log", Box::new(LogHandler), |_, r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "log handler not installed");
            }
        });
        gen_event::add_handler(lp, manager, "metrics", Box::new(MetricsHandler), |_, r| {
            if let Err(e) = r {
                tracing::error!(error = %e, "metrics handler not installed");
            }
        });
        Ok(manager.pid())
    })
}

/// The requests answered in one tick, in the order they were answered.
#[derive(Debug, Clone)]
pub struct RequestEvents(pub Rc<Vec<RequestEvent>>);

/// Most events gathered before a batch goes out without waiting for the
/// end of the tick's work.
pub const BATCH_EVENTS_MAX: usize = 4096;

/// Events waiting for the end of the tick, and the manager's last Pid.
#[derive(Debug, Default)]
pub struct Pending {
    events: Vec<RequestEvent>,
    /// The batch sent last: once the handlers are done with it (nobody else
    /// holds it), its buffer gathers the next tick's events, so batches
    /// cost no allocation (a fresh batch of a few KiB per tick took the
    /// allocator's slow path: about 115 instructions per request).
    sent: Option<Rc<Vec<RequestEvent>>>,
    manager: Option<Pid>,
}

/// What gathering an event asks of the caller once it can reach the loop.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[must_use = "the batch goes out only if the caller acts on it"]
pub enum Gathered {
    /// The first event of a batch: send it at the end of the tick's work.
    FlushLater,
    /// A full batch: send it now.
    FlushNow,
    /// Nothing to do.
    Nothing,
}

impl Pending {
    /// Gathers an answered request for the batch of this tick; the caller
    /// passes what it returns to [`gathered`] (an answer is encoded under
    /// the same borrow of the server that gathers its event).
    pub fn push(&mut self, event: RequestEvent) -> Gathered {
        self.events.push(event);
        match self.events.len() {
            1 => Gathered::FlushLater,
            BATCH_EVENTS_MAX => Gathered::FlushNow,
            _ => Gathered::Nothing,
        }
    }
}

/// Acts on what [`Pending::push`] returned.
pub fn gathered(lp: &mut Loop, gathered: Gathered) {
    match gathered {
        Gathered::FlushLater => lp.defer(flush),
        Gathered::FlushNow => flush(lp),
        Gathered::Nothing => {}
    }
}

/// Sends the gathered events; counts them directly if the manager is down
/// (restarting) or its mailbox is full, so `/metrics` never misses a request.
fn flush(lp: &mut Loop) {
    let pending = &mut server_mut(lp).events;
    if pending.events.is_empty() {
        return;
    }
    // The gathered events go out as they are; the gathering buffer becomes
    // the last batch's, if the handlers have let go of it.
    let mut next = match pending.sent.take().map(Rc::try_unwrap) {
        Some(Ok(mut spent)) => {
            spent.clear();
            spent
        }
        _ => Vec::with_capacity(pending.events.capacity()),
    };
    std::mem::swap(&mut next, &mut pending.events);
    let shared = Rc::new(next);
    pending.sent = Some(shared.clone());
    let batch = RequestEvents(shared);
    let sent = manager(lp)
        .map(ServerRef::<EventManager<RequestEvents>>::from_pid)
        .map(|manager| gen_event::notify(lp, manager, batch.clone()));
    if !matches!(sent, Some(Ok(()))) {
        record(lp, &batch);
    }
}

/// The live manager: the cached Pid while it is alive, else whatever is
/// registered now.
fn manager(lp: &mut Loop) -> Option<Pid> {
    let cached = server_mut(lp).events.manager;
    if let Some(pid) = cached.filter(|&pid| is_alive(lp, pid)) {
        return Some(pid);
    }
    let pid = whereis(lp, MANAGER);
    server_mut(lp).events.manager = pid;
    pid
}
