//! The unit tests inside `examples/http_kv/` (parsers, encoders, routing,
//! metrics, the shard interface): examples' own `#[cfg(test)]` modules are
//! not run by `cargo test`, so this test crate compiles those files as its
//! modules and runs them here.
#![allow(dead_code)]

#[path = "../examples/http_kv/batch.rs"]
mod batch;
#[path = "../examples/http_kv/bodies.rs"]
mod bodies;
#[path = "../examples/http_kv/chunked.rs"]
mod chunked;
#[path = "../examples/http_kv/config.rs"]
mod config;
#[path = "../examples/http_kv/conn/mod.rs"]
mod conn;
#[path = "../examples/http_kv/date.rs"]
mod date;
#[path = "../examples/http_kv/events.rs"]
mod events;
#[path = "../examples/http_kv/http.rs"]
mod http;
#[path = "../examples/http_kv/input.rs"]
mod input;
#[path = "../examples/http_kv/key.rs"]
mod key;
#[path = "../examples/http_kv/kv.rs"]
mod kv;
#[path = "../examples/http_kv/metrics.rs"]
mod metrics;
#[path = "../examples/http_kv/output.rs"]
mod output;
#[path = "../examples/http_kv/percent.rs"]
mod percent;
#[path = "../examples/http_kv/response.rs"]
mod response;
#[path = "../examples/http_kv/router.rs"]
mod router;
#[path = "../examples/http_kv/server.rs"]
mod server;
#[path = "../examples/http_kv/shard.rs"]
mod shard;
#[path = "../examples/http_kv/status.rs"]
mod status;
