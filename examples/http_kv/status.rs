//! `/_status`: what the service is and how it is doing, as JSON.
//!
//! ```text
//! {"service":"http_kv","backend":"io_uring","uptime_ms":1234,
//!  "addr":"127.0.0.1:8080","data_dir":"./data","sync":"always","storage":"memory",
//!  "shards":[{"shard":0,"keys":3,"log_bytes":0,"restarts":0,"fsyncs":0,"state":"running"},..],
//!  "keys_total":3,"supervision":null,
//!  "log":{"dir":"./data/log","fdatasyncs":..,"entries_written":..,"batches":..,
//!         "bytes_written":..,"log_bytes":..,"segments":..,"entries_per_fdatasync":..},
//!  "connections":{"open":1,"max":10000,"accepted_total":5,"in_progress":0},
//!  "requests_total":42,"draining":false,
//!  "loop":{"ticks":..,"syscalls":..,"sqes_submitted":..,"completions":..,
//!          "timers_fired":..,"wakeups":..,"ops_in_flight":..,"file_pool_syscalls":..}}
//! ```
//! `supervision` is the supervision tree as the shard layer reports it;
//! `log` is the log every shard writes to (a shard's `log_bytes` and
//! `fsyncs` are its share: its entries' bytes, the fdatasyncs that carried
//! them); `log.log_bytes` is what its segments hold on disk now;
//! `connections.in_progress` counts connections with a request partly read
//! or answers owed or unsent (this `/_status` request's own included).

use ringvisor::Loop;
use serde_json::json;

use crate::server::server;
use crate::shard;

/// The `/_status` body.
pub fn render(lp: &Loop) -> Vec<u8> {
    let s = server(lp);
    let stats = lp.stats();
    let shards = shard::info(lp);
    let shard_json: Vec<serde_json::Value> = shards
        .iter()
        .enumerate()
        .map(|(i, info)| {
            json!({
                "shard": i,
                "keys": info.keys,
                "log_bytes": info.log_bytes,
                "restarts": info.restarts,
                "fsyncs": info.fsyncs,
                "state": info.state,
            })
        })
        .collect();
    let in_progress = s.conns.iter().filter(|(_, c)| c.in_progress()).count();
    let log = shard::log_info(lp).map(|log| {
        let per_fdatasync = match log.fdatasyncs {
            0 => 0.0,
            n => log.entries_written as f64 / n as f64,
        };
        json!({
            "dir": s.config.data_dir.join(shard::LOG_DIR).display().to_string(),
            "fdatasyncs": log.fdatasyncs,
            "entries_written": log.entries_written,
            "batches": log.batches,
            "bytes_written": log.bytes_written,
            "log_bytes": log.log_bytes,
            "segments": log.segments,
            "entries_per_fdatasync": per_fdatasync,
        })
    });
    let value = json!({
        "service": "http_kv",
        "backend": lp.backend().name(),
        "uptime_ms": lp.now().saturating_duration_since(s.started).as_millis() as u64,
        "addr": s.local_addr.to_string(),
        "data_dir": s.config.data_dir.display().to_string(),
        "sync": s.config.sync.name(),
        "storage": shard::storage_name(lp),
        "log_layout": s.config.log.name(),
        "shards": shard_json,
        "keys_total": shards.iter().map(|i| i.keys).sum::<u64>(),
        "supervision": shard::supervision(lp),
        "log": log,
        "connections": {
            "open": s.conns.len(),
            "max": s.config.max_connections,
            "accepted_total": s.metrics.connections_accepted,
            "in_progress": in_progress,
        },
        "requests_total": s.metrics.requests_total(),
        "draining": s.draining,
        "loop": {
            "ticks": stats.ticks,
            "syscalls": stats.syscalls,
            "sqes_submitted": stats.sqes_submitted,
            "completions": stats.completions,
            "timers_fired": stats.timers_fired,
            "wakeups": stats.wakeups,
            "ops_in_flight": stats.ops_in_flight,
            "file_pool_syscalls": stats.file_pool_syscalls,
        },
    });
    let mut body = serde_json::to_vec(&value).unwrap_or_else(|_| b"{}".to_vec());
    body.push(b'\n');
    body
}
