//! `http_kv`: an HTTP key-value service on ringvisor's loop.
//!
//! ```text
//! cargo run --release --example http_kv -- --addr 127.0.0.1:8080 --shards 8
//! curl -X PUT --data-binary 'hello' localhost:8080/kv/greeting   # 201
//! curl localhost:8080/kv/greeting                                 # hello
//! ```
//! The first line on stdout, once it accepts connections, is
//! `listening on ADDR (backend: io_uring|poll, shards: N, data: DIR)`.
//! SIGTERM or SIGINT stop accepting, finish the requests in flight and exit
//! 0; a second signal stops at once.
//!
//! Layout: `config` (flags), `server` (listener, connection table,
//! shutdown), `conn` (a connection's state machine) with `input` (request
//! assembly over `http` heads and `chunked` bodies) and `output` (ordered
//! responses, one send per flush, `response` encoding), `router` (paths to
//! shard requests), `batch` (a tick's key requests to a shard as one call),
//! `shard` (the shards and their supervision tree), `events`
//! (request events through a gen_event manager), `status` and `metrics`.
#![warn(missing_docs, clippy::undocumented_unsafe_blocks)]

mod batch;
mod bodies;
mod chunked;
mod config;
mod conn;
mod date;
mod events;
mod http;
mod input;
mod key;
mod kv;
mod metrics;
mod output;
mod percent;
mod response;
mod router;
mod server;
mod shard;
mod status;

use std::io::Write;

use clap::Parser;
use ringvisor::{ListenOptions, Loop};

use crate::config::Config;

/// How long startup waits for every shard to recover its data.
const SHARD_RECOVERY_MAX: std::time::Duration = std::time::Duration::from_secs(120);

fn main() -> std::io::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_writer(std::io::stderr)
        .init();
    // A shard's panic is a crash its supervisor handles: log it as one
    // structured line (the supervisor's report follows), not a raw dump.
    std::panic::set_hook(Box::new(|info| tracing::error!(%info, "panic")));
    let config = Config::parse();
    let signals = block_stop_signals();
    std::fs::create_dir_all(&config.data_dir)?;
    let mut lp = Loop::builder().backend(config.backend).build()?;
    let listener = lp.listen_tcp(config.addr, ListenOptions::default())?;
    let local = ringvisor::local_addr(listener)?;
    shard::start(
        &mut lp,
        shard::ShardConfig {
            shards: config.shards,
            data_dir: config.data_dir.clone(),
            sync: config.sync,
            queue_capacity: usize::try_from(config.shard_queue_capacity).unwrap_or(usize::MAX),
            max_value_bytes: config.max_value_bytes(),
            batches_in_flight: usize::try_from(config.batches_in_flight).unwrap_or(usize::MAX),
            log: config.log,
        },
        vec![events::spec()],
    )?;
    // Recover every shard before accepting: a connection must never meet a
    // shard still reading its log (nor take the fds its files need).
    let deadline = std::time::Instant::now() + SHARD_RECOVERY_MAX;
    while !shard::ready(&lp) {
        if !shard::tree_alive(&lp) {
            return Err(std::io::Error::other(
                "a shard could not recover its data; see the log",
            ));
        }
        if std::time::Instant::now() > deadline {
            return Err(std::io::Error::other(
                "shards did not recover in time; see the log",
            ));
        }
        lp.run_for(std::time::Duration::from_millis(10))?;
    }
    let banner = format!(
        "listening on {local} (backend: {}, shards: {}, data: {})",
        lp.backend(),
        config.shards,
        config.data_dir.display()
    );
    tracing::info!(?config, "starting");
    // The listener joins the tree last: started once the shards serve,
    // stopped first.
    let root = ringvisor::behaviours::whereis(&lp, shard::ROOT)
        .map(ringvisor::behaviours::ServerRef::<ringvisor::behaviours::supervisor::Supervisor>::from_pid)
        .ok_or_else(|| std::io::Error::other("the supervision tree is gone"))?;
    let spec = server::listener_spec(config, listener, local);
    ringvisor::behaviours::supervisor::start_child(&mut lp, root, spec, |_, started| {
        if let Err(e) = started {
            tracing::error!(error = %e, "the listener did not start");
        }
    });
    while ringvisor::behaviours::whereis(&lp, server::LISTENER).is_none() {
        if !shard::tree_alive(&lp) {
            return Err(std::io::Error::other(
                "the listener did not start; see the log",
            ));
        }
        lp.run_for(std::time::Duration::from_millis(10))?;
    }
    let mut stdout = std::io::stdout().lock();
    writeln!(stdout, "{banner}")?;
    stdout.flush()?;
    drop(stdout);
    let handle = lp.handle();
    std::thread::spawn(move || {
        wait_for_signal(&signals);
        tracing::info!("stop signal: draining");
        if handle.post(server::begin_shutdown).is_err() {
            return;
        }
        wait_for_signal(&signals);
        tracing::warn!("second stop signal: stopping now");
        handle.stop();
    });
    lp.run()?;
    tracing::info!(stats = ?lp.stats(), "stopped");
    Ok(())
}

/// Blocks SIGINT and SIGTERM in this thread (and the threads it spawns) so a
/// dedicated thread can take them with `sigwait`.
fn block_stop_signals() -> libc::sigset_t {
    // SAFETY: sigset operations on a local set; pthread_sigmask on this thread.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        libc::sigaddset(&mut set, libc::SIGINT);
        libc::sigaddset(&mut set, libc::SIGTERM);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        set
    }
}

fn wait_for_signal(set: &libc::sigset_t) {
    let mut sig: libc::c_int = 0;
    // SAFETY: `set` is an initialised signal set; `sig` is a live local.
    unsafe {
        libc::sigwait(set, &mut sig);
    }
}
