//! Command-line flags: every limit of the service with its name and default.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::{Parser, ValueEnum};
use ringvisor::behaviours::persist::BATCHES_IN_FLIGHT_MAX_DEFAULT;
use ringvisor::Backend;

/// Default listen address.
pub const ADDR_DEFAULT: &str = "127.0.0.1:8080";
/// Default data directory.
pub const DATA_DIR_DEFAULT: &str = "./data";
/// Default number of shards.
///
/// All shards share one loop (one core) and one log writer (`DATA/log`), so
/// more shards buy crash isolation (a crash loses the in-flight work of 1/8
/// of the keys), not throughput, and cost no group commit: under `--sync
/// always`, with 64 connections of one request in flight each, the log
/// acknowledges about 17 writes per fdatasync at 8 shards with 2 batches in
/// flight (28 with one batch in flight, 11 with 4, 3.8 when each shard had
/// its own log).
pub const SHARDS_DEFAULT: usize = 8;
/// Most shards accepted.
pub const SHARDS_MAX: usize = 1024;
/// Default largest value accepted (1 MiB).
pub const MAX_VALUE_BYTES_DEFAULT: u64 = 1 << 20;
/// Largest `--max-value-bytes` accepted (256 MiB): a value is held in memory whole.
pub const MAX_VALUE_BYTES_LIMIT: u64 = 256 << 20;
/// Default most open connections.
pub const MAX_CONNECTIONS_DEFAULT: u64 = 10_000;
/// Default idle keep-alive timeout.
pub const IDLE_TIMEOUT_MS_DEFAULT: u64 = 30_000;
/// Default time a request may take to arrive.
pub const REQUEST_TIMEOUT_MS_DEFAULT: u64 = 10_000;
/// Most batches of the log in flight at once (each written, its fdatasync
/// overlapping the earlier ones'); 1 is double buffering.
pub const BATCHES_IN_FLIGHT_DEFAULT: usize = BATCHES_IN_FLIGHT_MAX_DEFAULT;
/// Largest `--batches-in-flight` accepted.
pub const BATCHES_IN_FLIGHT_LIMIT: u64 = 64;
/// Default requests queued per shard before it answers "overloaded" (503).
pub const SHARD_QUEUE_CAPACITY_DEFAULT: u64 = 1024;

/// When a shard makes a write durable before acknowledging it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum SyncMode {
    /// fdatasync (group-committed) before every acknowledgement.
    Always,
    /// fdatasync on a timer; a crash may lose the last interval.
    Interval,
    /// Never fdatasync; the OS writes back when it likes.
    Never,
}

impl SyncMode {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            SyncMode::Always => "always",
            SyncMode::Interval => "interval",
            SyncMode::Never => "never",
        }
    }
}

/// Where the shards log their writes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LogLayout {
    /// Every shard a stream of one log (`DATA/log`): one writer, one
    /// group commit for all shards.
    Shared,
    /// A log per shard (`DATA/shard-N`): a writer and fdatasyncs per shard.
    PerShard,
}

impl LogLayout {
    /// The flag's spelling.
    pub fn name(self) -> &'static str {
        match self {
            LogLayout::Shared => "shared",
            LogLayout::PerShard => "per-shard",
        }
    }
}

/// Default log layout: shared. With `--sync always`, 8 shards, `wrk -t1
/// -c64` PUT-heavy request-response on this VM (8 interleaved rounds), the
/// shared log with 2 batches in flight served a median 39.4k req/s at 17
/// writes per fdatasync against 33.4k at 3.8 for a log per shard (paired
/// ratio 1.12; one batch in flight: 27.9k, 0.72). The disk's flush latency
/// drifts a lot between runs: single runs of either range over 2x.
pub const LOG_LAYOUT_DEFAULT: LogLayout = LogLayout::Shared;

/// The service's configuration, from the command line.
#[derive(Debug, Clone, Parser)]
#[command(about = "HTTP key-value service on ringvisor's loop")]
pub struct Config {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, default_value = ADDR_DEFAULT)]
    pub addr: SocketAddr,
    /// Directory for the shards' files.
    #[arg(long, default_value = DATA_DIR_DEFAULT)]
    pub data_dir: PathBuf,
    /// Backend: auto, uring or poll.
    #[arg(long, default_value = "auto", value_parser = parse_backend)]
    pub backend: Backend,
    /// Number of shards (keys are routed by hash).
    #[arg(long, default_value_t = SHARDS_DEFAULT, value_parser = parse_shards)]
    pub shards: usize,
    /// When writes are made durable.
    #[arg(long, value_enum, default_value_t = SyncMode::Always)]
    pub sync: SyncMode,
    /// One log for all shards, or a log per shard. A data directory keeps
    /// the layout it was created with: the other one refuses to start on it.
    #[arg(long, value_enum, default_value_t = LOG_LAYOUT_DEFAULT)]
    pub log: LogLayout,
    /// Most log batches in flight at once (`--sync always`: their
    /// fdatasyncs overlap; acknowledgements still go in log order).
    #[arg(long, default_value_t = BATCHES_IN_FLIGHT_DEFAULT as u64,
          value_parser = clap::value_parser!(u64).range(1..=BATCHES_IN_FLIGHT_LIMIT))]
    pub batches_in_flight: u64,
    /// Largest value accepted, in bytes (413 above).
    #[arg(long, default_value_t = MAX_VALUE_BYTES_DEFAULT,
          value_parser = clap::value_parser!(u64).range(0..=MAX_VALUE_BYTES_LIMIT))]
    pub max_value_bytes: u64,
    /// Most open connections; the listener pauses at this many.
    #[arg(long, default_value_t = MAX_CONNECTIONS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub max_connections: u64,
    /// Idle keep-alive connections close after this many milliseconds.
    #[arg(long, default_value_t = IDLE_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub idle_timeout_ms: u64,
    /// A request must arrive whole within this many milliseconds (408
    /// otherwise); also the timeout of each shard call.
    #[arg(long, default_value_t = REQUEST_TIMEOUT_MS_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub request_timeout_ms: u64,
    /// Requests queued or unanswered per shard before it answers 503.
    #[arg(long, default_value_t = SHARD_QUEUE_CAPACITY_DEFAULT,
          value_parser = clap::value_parser!(u64).range(1..))]
    pub shard_queue_capacity: u64,
    /// Enable `POST /_crash/{shard}`.
    #[arg(long)]
    pub chaos: bool,
}

impl Config {
    /// `--max-value-bytes` as a size.
    pub fn max_value_bytes(&self) -> usize {
        usize::try_from(self.max_value_bytes).unwrap_or(usize::MAX)
    }

    /// `--idle-timeout-ms` as a duration.
    pub fn idle_timeout(&self) -> Duration {
        Duration::from_millis(self.idle_timeout_ms)
    }

    /// `--request-timeout-ms` as a duration.
    pub fn request_timeout(&self) -> Duration {
        Duration::from_millis(self.request_timeout_ms)
    }
}

fn parse_backend(s: &str) -> Result<Backend, String> {
    Backend::parse(s).ok_or_else(|| format!("unknown backend {s:?}: expected auto, uring or poll"))
}

fn parse_shards(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=SHARDS_MAX).contains(&n) => Ok(n),
        _ => Err(format!("expected 1 to {SHARDS_MAX} shards")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_match_the_documented_ones() {
        let c = Config::try_parse_from(["http_kv"]).unwrap();
        assert_eq!(c.addr.to_string(), ADDR_DEFAULT);
        assert_eq!(c.shards, 8);
        assert_eq!(c.sync, SyncMode::Always);
        assert_eq!(c.max_value_bytes(), 1 << 20);
        assert_eq!(c.max_connections, 10_000);
        assert_eq!(c.idle_timeout(), Duration::from_secs(30));
        assert_eq!(c.request_timeout(), Duration::from_secs(10));
        assert!(!c.chaos);
        assert_eq!(c.batches_in_flight, 2);
        assert_eq!(c.log, LogLayout::Shared);
    }

    #[test]
    fn refuses_out_of_range_flags() {
        for args in [
            &["x", "--shards", "0"][..],
            &["x", "--shards", "1025"],
            &["x", "--sync", "sometimes"],
            &["x", "--backend", "kqueue2"],
            &["x", "--max-connections", "0"],
            &["x", "--max-value-bytes", "999999999999"],
            &["x", "--batches-in-flight", "0"],
            &["x", "--batches-in-flight", "65"],
            &["x", "--log", "striped"],
        ] {
            assert!(Config::try_parse_from(args).is_err(), "{args:?}");
        }
        let c = Config::try_parse_from(["x", "--log", "per-shard"]).unwrap();
        assert_eq!(c.log, LogLayout::PerShard);
        let c = Config::try_parse_from(["x", "--sync", "never", "--backend", "poll", "--chaos"])
            .unwrap();
        assert_eq!(
            (c.sync, c.backend, c.chaos),
            (SyncMode::Never, Backend::Poll, true)
        );
    }
}
