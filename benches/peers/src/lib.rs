//! Benchmark-only code for `benches/run.sh`: the peer servers a user would
//! pick instead of ringvisor (tokio and monoio, one thread each), the echo
//! load client, and the report tool that turns raw runs into a Markdown table
//! and SVG plots.
//!
//! This crate is a workspace member but not a default member, so `cargo test`
//! never builds it. Build it with `cargo build --release -p ringvisor-peers`.
//!
//! The peers serve the same HTTP KV subset as ringvisor's `http_kv` example
//! with the same parsing crate (`httparse`) and the same in-memory map, and
//! write all responses a read produced with one write, as `http_kv` does.
//! They are not tuned down: each is the idiomatic single-threaded server of
//! its runtime.
#![warn(missing_docs)]

pub mod date;
pub mod http;
pub mod latency;
pub mod report;

use std::net::SocketAddr;

/// Bytes read per socket read in the peers and the load client.
pub const READ_CAPACITY_BYTES: usize = 16 * 1024;

/// Command line shared by the peer servers.
#[derive(clap::Parser, Debug)]
pub struct ServerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: SocketAddr,
}

/// The first stdout line of every server in the harness, which waits for it.
///
/// ```
/// let line = ringvisor_peers::listening_line("127.0.0.1:1".parse().unwrap(), "tokio");
/// assert_eq!(line, "listening on 127.0.0.1:1 (backend: tokio)");
/// ```
pub fn listening_line(addr: SocketAddr, backend: &str) -> String {
    format!("listening on {addr} (backend: {backend})")
}
