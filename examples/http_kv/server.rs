//! The server's state on the loop (a loop extension): configuration, the
//! connection table, counters; the accept loop with its connection limit;
//! and the graceful shutdown.
//!
//! Invariants: open connections plus accepts in flight never exceed
//! `--max-connections`, so the listener stops accepting at the limit and
//! resumes as connections close. Once draining, nothing new is accepted and
//! the loop stops when the last connection has closed (or the grace period
//! ran out) and the shards have stopped.

use ringvisor::behaviours::gen_server::{self, Ctx, GenServer, Init, Reply, StartOptions};
use ringvisor::behaviours::supervisor::ChildSpec;
use ringvisor::behaviours::{ExitReason, From};
use std::net::SocketAddr;
use std::os::fd::RawFd;
use std::time::{Duration, Instant};

use ringvisor::{Loop, OpError, OpId};
use slab::Slab;

use crate::config::Config;
use crate::conn::{self, Conn, ConnId};
use crate::date::DateCache;
use crate::metrics::Metrics;
use crate::shard;

/// Accepts kept in flight at once (fewer near the connection limit).
pub const ACCEPTS_IN_FLIGHT_MAX: usize = 4;
/// Pause after the process or system ran out of fds.
pub const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);

struct Listener {
    fd: RawFd,
    /// Accepts in flight, by token.
    accepts: Vec<(u64, OpId)>,
    next_token: u64,
    backing_off: bool,
    closed: bool,
}

/// Everything the HTTP side keeps on the loop.
pub struct Server {
    /// The configuration.
    pub config: Config,
    /// Where the shards are (shared with the shard table).
    pub shard_pids: crate::shard::ShardPids,
    /// PUT bodies' buffers (shared with the shards).
    pub bodies: crate::bodies::BodyPool,
    /// Open connections.
    pub conns: Slab<Conn>,
    next_generation: u32,
    /// Counters.
    pub metrics: Metrics,
    /// The `Date` header.
    pub date: DateCache,
    /// When the server started (loop time).
    pub started: Instant,
    /// The address it listens on.
    pub local_addr: SocketAddr,
    listener: Listener,
    /// Shutting down: no new connections or requests.
    pub draining: bool,
    stopping: bool,
    /// Request events gathered for the `events` manager.
    pub events: crate::events::Pending,
    /// Key requests waiting for the end of the tick, per shard.
    pub batches: crate::batch::Batches,
}

/// The server extension. Installed by [`start`] before any callback runs and
/// never removed, so every callback finds it.
pub fn server_mut(lp: &mut Loop) -> &mut Server {
    lp.extension_mut::<Server>()
        .expect("the server extension is installed at start and never removed")
}

/// Read-only access to the server extension.
pub fn server(lp: &Loop) -> &Server {
    lp.extension::<Server>()
        .expect("the server extension is installed at start and never removed")
}

impl Server {
    /// The connection `id`, if it is still open.
    pub fn conn_mut(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conn_and_metrics(id).map(|(conn, _)| conn)
    }

    /// The connection `id` and the counters, borrowed together (one look-up
    /// of the server for a completion that updates both).
    pub fn conn_and_metrics(&mut self, id: ConnId) -> Option<(&mut Conn, &mut Metrics)> {
        let conn = self
            .conns
            .get_mut(id.key as usize)
            .filter(|c| c.generation == id.generation)?;
        Some((conn, &mut self.metrics))
    }

    /// Adds a connection; returns its id.
    pub fn insert_conn(&mut self, make: impl FnOnce(u32) -> Conn) -> ConnId {
        self.next_generation = self.next_generation.wrapping_add(1);
        let generation = self.next_generation;
        let key = self.conns.insert(make(generation));
        ConnId {
            key: u32::try_from(key).expect("connections are bounded by --max-connections"),
            generation,
        }
    }
}

/// Installs the server on `lp` and starts accepting on `listener_fd`.
pub fn start(lp: &mut Loop, config: Config, listener_fd: RawFd, local_addr: SocketAddr) {
    let server = Server {
        shard_pids: crate::shard::pids(lp),
        bodies: crate::shard::bodies(lp),
        conns: Slab::with_capacity(1024.min(config.max_connections as usize)),
        config,
        next_generation: 0,
        metrics: Metrics::default(),
        date: DateCache::new(),
        started: lp.now(),
        local_addr,
        listener: Listener {
            fd: listener_fd,
            accepts: Vec::with_capacity(ACCEPTS_IN_FLIGHT_MAX),
            next_token: 0,
            backing_off: false,
            closed: false,
        },
        draining: false,
        stopping: false,
        events: crate::events::Pending::default(),
        batches: crate::batch::Batches::default(),
    };
    lp.insert_extension(server);
    fill_accepts(lp);
}

/// Keeps accepts in flight up to [`ACCEPTS_IN_FLIGHT_MAX`] and the connection limit.
fn fill_accepts(lp: &mut Loop) {
    loop {
        let s = server_mut(lp);
        let l = &s.listener;
        let room = (s.config.max_connections as usize).saturating_sub(s.conns.len());
        if l.closed
            || l.backing_off
            || s.draining
            || l.accepts.len() >= room.min(ACCEPTS_IN_FLIGHT_MAX)
        {
            return;
        }
        let token = l.next_token;
        let fd = l.fd;
        s.listener.next_token += 1;
        let op = lp.accept(fd, move |lp, res| on_accept(lp, token, res));
        server_mut(lp).listener.accepts.push((token, op));
    }
}

fn on_accept(lp: &mut Loop, token: u64, res: ringvisor::OpResult<(RawFd, SocketAddr)>) {
    let s = server_mut(lp);
    s.listener.accepts.retain(|(t, _)| *t != token);
    match res {
        Ok((fd, _)) if s.draining => {
            lp.close(fd, |_, _| {});
        }
        Ok((fd, peer)) => {
            s.metrics.connections_accepted += 1;
            tracing::trace!(fd, %peer, "accepted");
            if let Err(e) = ringvisor::set_nodelay(fd, true) {
                tracing::debug!(error = %e, "TCP_NODELAY failed");
            }
            conn::open(lp, fd);
        }
        Err(OpError::Canceled) => return,
        Err(OpError::Io(e))
            if matches!(e.raw_os_error(), Some(libc::EMFILE) | Some(libc::ENFILE)) =>
        {
            tracing::warn!(error = %e, "out of fds; pausing accept");
            s.listener.backing_off = true;
            lp.timer(ACCEPT_BACKOFF, |lp| {
                server_mut(lp).listener.backing_off = false;
                fill_accepts(lp);
            });
            return;
        }
        Err(e) => tracing::debug!(error = %e, "accept failed"),
    }
    fill_accepts(lp);
}

/// A connection was closed and removed: maybe accept again, maybe finish draining.
pub fn on_conn_closed(lp: &mut Loop) {
    server_mut(lp).metrics.connections_closed += 1;
    fill_accepts(lp);
    check_drained(lp);
}

/// Stops accepting, lets in-flight requests finish and idle connections go,
/// then stops the shards and the loop. Connections that do not finish
/// within the request timeout are left behind when the loop stops.
pub fn begin_shutdown(lp: &mut Loop) {
    let s = server_mut(lp);
    if s.draining {
        return;
    }
    s.draining = true;
    let grace = s.config.request_timeout();
    tracing::info!(
        connections = s.conns.len(),
        "shutting down: draining connections"
    );
    let accepts = std::mem::take(&mut s.listener.accepts);
    let fd = s.listener.fd;
    s.listener.closed = true;
    let ids: Vec<ConnId> = s
        .conns
        .iter()
        .map(|(key, c)| ConnId {
            key: key as u32,
            generation: c.generation,
        })
        .collect();
    for (_, op) in accepts {
        lp.cancel(op);
    }
    lp.close(fd, |_, _| {});
    for id in ids {
        conn::drain(lp, id);
    }
    lp.timer(grace, |lp| {
        let left = server(lp).conns.len();
        if left > 0 {
            tracing::warn!(connections = left, "grace period over; stopping anyway");
        }
        stop_shards_then_loop(lp);
    });
    check_drained(lp);
}

fn check_drained(lp: &mut Loop) {
    let s = server(lp);
    if s.draining && s.conns.is_empty() {
        stop_shards_then_loop(lp);
    }
}

fn stop_shards_then_loop(lp: &mut Loop) {
    let s = server_mut(lp);
    if s.stopping {
        return;
    }
    s.stopping = true;
    shard::stop_all(lp, |lp| lp.stop());
}

/// The listener as a supervised child of the root supervisor: starting it
/// installs the server and begins accepting; terminating it stops accepting
/// and drains the connections. It is added after the shards recovered, so it
/// is the last child started and the first one stopped.
pub struct ListenerProcess;

impl GenServer for ListenerProcess {
    type Args = (Config, RawFd, SocketAddr);
    type Call = ();
    type Reply = ();
    type Cast = ();
    type Info = ();
    type Continue = ();

    fn init((config, fd, local): Self::Args, ctx: &mut Ctx<Self>) -> Init<Self> {
        if ctx.lp().extension::<Server>().is_none() {
            start(ctx.lp(), config, fd, local);
        }
        Init::ok(ListenerProcess)
    }

    fn handle_call(&mut self, _: (), _: From<()>, _: &mut Ctx<Self>) -> Reply<Self> {
        Reply::now(())
    }

    fn terminate(&mut self, _reason: &ExitReason, ctx: &mut Ctx<Self>) {
        begin_shutdown(ctx.lp());
    }
}

/// Name of the listener child.
pub const LISTENER: &str = "listener";

/// The listener child's spec.
pub fn listener_spec(config: Config, fd: RawFd, local: SocketAddr) -> ChildSpec {
    ChildSpec::from_fn(LISTENER, move |lp, parent| {
        let options = StartOptions {
            parent: Some(parent),
            ..StartOptions::named(LISTENER)
        };
        gen_server::start::<ListenerProcess>(lp, (config.clone(), fd, local), options)
            .map(|s| s.pid())
    })
}
