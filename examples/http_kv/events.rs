//! Request events through a `gen_event` manager.
//!
//! Every answered request is notified to the manager `events` (a child of the
//! root supervisor). Two handlers are installed when it starts: `log`
//! (a `tracing` debug line per request) and `metrics` (the Prometheus
//! counters and latency histogram of `/metrics`). A handler that panics is
//! removed and the others carry on; a restarted manager gets both again.

use std::time::Duration;

use ringvisor::behaviours::gen_event::{self, EventHandler, EventManager, HandlerAction};
use ringvisor::behaviours::gen_server::{ServerRef, StartOptions};
use ringvisor::behaviours::supervisor::ChildSpec;
use ringvisor::behaviours::whereis;
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

impl EventHandler<RequestEvent> for LogHandler {
    fn handle_event(
        &mut self,
        event: &RequestEvent,
        _lp: &mut Loop,
    ) -> HandlerAction<RequestEvent> {
        tracing::debug!(method = ?event.method, status = event.status, latency_us = event.latency.as_micros() as u64, "request");
        HandlerAction::Keep
    }
}

/// Counts requests for `/metrics`.
struct MetricsHandler;

impl EventHandler<RequestEvent> for MetricsHandler {
    fn handle_event(&mut self, event: &RequestEvent, lp: &mut Loop) -> HandlerAction<RequestEvent> {
        server_mut(lp)
            .metrics
            .record(event.method, event.status, event.latency);
        HandlerAction::Keep
    }
}

/// The manager as a supervised child, with its handlers.
pub fn spec() -> ChildSpec {
    ChildSpec::from_fn(MANAGER, |lp, parent| {
        let options = StartOptions {
            parent: Some(parent),
            ..StartOptions::named(MANAGER)
        };
        let manager = gen_event::start::<RequestEvent>(lp, options)?;
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

/// Notifies an answered request; counted directly if the manager is down
/// (restarting), so `/metrics` never misses a request.
pub fn notify(lp: &mut Loop, event: RequestEvent) {
    let sent = whereis(lp, MANAGER)
        .map(ServerRef::<EventManager<RequestEvent>>::from_pid)
        .map(|manager| gen_event::notify(lp, manager, event));
    if !matches!(sent, Some(Ok(()))) {
        server_mut(lp)
            .metrics
            .record(event.method, event.status, event.latency);
    }
}
