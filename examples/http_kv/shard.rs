//! The shard interface the HTTP side calls, and the shards behind it.
//!
//! The interface: [`KvRequest`] in, [`KvReply`] or [`ShardError`] out, through
//! [`call`] with a timeout and a continuation that runs later from the loop
//! (never inside `call`). Keys go to shards by [`shard_for_key`], a fixed
//! FNV-1a hash, so routing survives restarts. [`info`], [`supervision`] and
//! [`stop_all`] are what `/_status`, `/metrics` and shutdown need.
//!
//! The shards: one durable gen_server ([`KvShard`]) per shard, registered as
//! `shard-N`, under a `OneForOne` shard supervisor, under the root
//! supervisor `http_kv`. Every shard logs to its stream (N) of one shared
//! log (`DATA/log/`, opened before the tree starts and closed after it
//! stops, so it outlives any shard); its snapshots go to `DATA/shard-N/`. A
//! write is acknowledged once durable (with `--sync always`:
//! group-committed, each batch carrying the writes of all shards, up to
//! `--batches-in-flight` batches with their fdatasyncs overlapping).
//! `Crash` panics the shard; its supervisor restarts it from its snapshot
//! and its entries in the shared log (once the writer holds none of them).
//! With `--log per-shard` each shard has a log of its own in
//! `DATA/shard-N/` instead (kept to compare the two: see `config.rs`).

use std::cell::Cell;
use std::io;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ringvisor::behaviours::durable::{self, Durable, DurableOptions};
use ringvisor::behaviours::gen_server::{self, ServerRef, StartOptions};
use ringvisor::behaviours::persist::{Durability, Options, SharedLog, RECORD_HEADER_BYTES};
use ringvisor::behaviours::supervisor::{self, ChildInfo, ChildSpec, ChildState, Flags, Strategy};
use ringvisor::behaviours::{whereis, CallError, ExitReason, Kill, Pid};
use ringvisor::Loop;

use crate::bodies::BodyPool;
use crate::config::{LogLayout, SyncMode};
use crate::kv::KEY_BYTES_MAX;
pub use crate::kv::{Counters, KvReply, KvRequest, KvShard};

/// Why a shard gave no answer; every one is a 503 to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardError {
    /// No answer within the call's timeout.
    Timeout,
    /// The shard's queue is full.
    Overloaded,
    /// The shard is not running (restarting, or gone).
    Unavailable,
}

/// What `/_status` and `/metrics` show of one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ShardInfo {
    /// Keys held.
    pub keys: u64,
    /// Bytes of its entries written to the shared log since start.
    pub log_bytes: u64,
    /// Times it was restarted (crashed and recovered).
    pub restarts: u64,
    /// fdatasyncs of the shared log that carried its entries (one
    /// fdatasync usually carries several shards': see [`LogInfo`]).
    pub fsyncs: u64,
    /// `running`, `restarting`, ...
    pub state: &'static str,
}

/// What `/_status` and `/metrics` show of the shared log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct LogInfo {
    /// fdatasyncs of the log (each covers every shard's entries of its batch).
    pub fdatasyncs: u64,
    /// Entries written, all shards.
    pub entries_written: u64,
    /// Batch writes.
    pub batches: u64,
    /// Bytes written since start, headers included.
    pub bytes_written: u64,
    /// Bytes of valid records in the segments on disk now.
    pub log_bytes: u64,
    /// Segment files now.
    pub segments: u64,
}

/// What shards are started with.
#[derive(Debug, Clone)]
pub struct ShardConfig {
    /// Number of shards.
    pub shards: usize,
    /// Where their files go.
    pub data_dir: PathBuf,
    /// When writes are made durable.
    pub sync: SyncMode,
    /// Requests queued per shard before `Overloaded`.
    pub queue_capacity: usize,
    /// Largest value a PUT may store (sizes the log's records).
    pub max_value_bytes: usize,
    /// Most log batches in flight at once.
    pub batches_in_flight: usize,
    /// One shared log, or a log per shard.
    pub log: LogLayout,
}

/// The shard a key lives in: FNV-1a (64-bit) of the key bytes, modulo
/// `shards`. Fixed, so keys stay where their files are across restarts.
pub fn shard_for_key(key: &[u8], shards: usize) -> usize {
    assert!(shards > 0, "at least one shard");
    const OFFSET_BASIS: u64 = 0xcbf2_9ce4_8422_2325;
    const PRIME: u64 = 0x0000_0100_0000_01b3;
    let hash = key
        .iter()
        .fold(OFFSET_BASIS, |h, &b| (h ^ u64::from(b)).wrapping_mul(PRIME));
    (hash % shards as u64) as usize
}

/// Name of the root supervisor.
pub const ROOT: &str = "http_kv";
/// Name of the shard supervisor.
pub const SHARDS: &str = "shards";
/// How often --sync interval fdatasyncs.
const SYNC_INTERVAL: Duration = Duration::from_millis(200);
/// How long a shard may take to flush and close when stopped.
const SHARD_SHUTDOWN: Duration = Duration::from_secs(10);
/// What the loop keeps to reach the shards.
struct Shards {
    names: Vec<String>,
    counters: Vec<Rc<Counters>>,
    /// The log every shard writes to (`--log shared`).
    log: Option<SharedLog>,
    /// Each shard's Pid, written by its child spec's start function at
    /// every (re)start: a request finds its shard without hashing a name.
    /// Between an exit and the restart the stale Pid gets `NoProc`, as
    /// `whereis` would have found no name.
    pids: ShardPids,
    /// Replaced values' buffers, shared with the server for PUT bodies.
    bodies: BodyPool,
}

/// Each shard's Pid as of its last start, shared by the shard table and the
/// server (whose per-request look-up already made finds it here, with no
/// second look-up for the shards).
#[derive(Clone, Default)]
pub struct ShardPids(Rc<[Cell<Option<Pid>>]>);

impl ShardPids {
    /// Shard `shard`'s process, if it has started.
    pub fn get(&self, shard: usize) -> Option<Pid> {
        self.0.get(shard)?.get()
    }
}

impl std::fmt::Debug for ShardPids {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.0.iter().map(Cell::get))
            .finish()
    }
}

fn durability(sync: SyncMode) -> Durability {
    match sync {
        SyncMode::Always => Durability::Always,
        SyncMode::Interval => Durability::Interval(SYNC_INTERVAL),
        SyncMode::Never => Durability::Never,
    }
}

/// Directory of the shared log under the data directory.
pub const LOG_DIR: &str = "log";

/// The shared log's durability and limits.
fn log_options(config: &ShardConfig) -> Options {
    let mut store = Options {
        durability: durability(config.sync),
        batches_in_flight_max: config.batches_in_flight,
        ..Options::default()
    };
    // A record holds the largest value plus its key, entry header and the
    // shared log's stream prefix (16 bytes covers both).
    store.record_bytes_max = store
        .record_bytes_max
        .max(config.max_value_bytes + KEY_BYTES_MAX + 16);
    store.batch_bytes_max = store
        .batch_bytes_max
        .max(store.record_bytes_max + RECORD_HEADER_BYTES + 16);
    store.pending_bytes_max = store.pending_bytes_max.max(store.batch_bytes_max * 4);
    store.segment_bytes_max = store.segment_bytes_max.max(store.batch_bytes_max as u64);
    store
}

fn shard_spec(
    index: usize,
    config: &ShardConfig,
    log: Option<&SharedLog>,
    counters: Rc<Counters>,
    bodies: BodyPool,
) -> ChildSpec {
    let name = format!("shard-{index}");
    let stream = u32::try_from(index).expect("shard count is limited far below u32::MAX");
    let dir = config.data_dir.join(&name);
    let options = match log {
        Some(log) => DurableOptions::shared(dir, log, stream),
        None => DurableOptions {
            store: log_options(config),
            ..DurableOptions::new(dir)
        },
    };
    let capacity = config.queue_capacity;
    let registered = name.clone();
    ChildSpec::from_fn(name, move |lp, parent| {
        let start = StartOptions {
            name: Some(registered.clone()),
            mailbox_capacity: capacity,
            parent: Some(parent),
        };
        let pid = durable::start::<KvShard>(
            lp,
            (index, counters.clone(), bodies.clone()),
            options.clone(),
            start,
        )?
        .pid();
        if let Some(slot) = lp
            .extension::<Shards>()
            .and_then(|all| all.pids.0.get(index))
        {
            slot.set(Some(pid));
        }
        Ok(pid)
    })
    .shutdown(supervisor::Shutdown::Timeout(SHARD_SHUTDOWN))
}

/// Opens the shared log (`DATA/log`; its lock refuses a second process on
/// the same data directory), then starts the supervision tree: `http_kv`
/// over `shards` (one durable gen_server per shard) and then `others` (the
/// request event manager).
pub fn start(lp: &mut Loop, config: ShardConfig, others: Vec<ChildSpec>) -> io::Result<()> {
    assert!(config.shards > 0 && config.queue_capacity > 0);
    let log_dir = config.data_dir.join(LOG_DIR);
    let log = match config.log {
        LogLayout::Shared => Some(
            SharedLog::open_blocking(lp, &log_dir, log_options(&config))
                .map_err(|e| io::Error::other(format!("opening the log: {e}")))?,
        ),
        // The shards' entries would be in DATA/log, unread: refuse.
        LogLayout::PerShard if log_dir.exists() => {
            let message = format!(
                "{} holds a shared log: start with --log shared",
                log_dir.display()
            );
            return Err(io::Error::other(message));
        }
        LogLayout::PerShard => None,
    };
    let counters: Vec<Rc<Counters>> = (0..config.shards).map(|_| Rc::default()).collect();
    let bodies = BodyPool::default();
    let specs: Vec<ChildSpec> = (0..config.shards)
        .map(|i| {
            shard_spec(
                i,
                &config,
                log.as_ref(),
                counters[i].clone(),
                bodies.clone(),
            )
        })
        .collect();
    let shard_flags = Flags::new(Strategy::OneForOne).intensity(10, Duration::from_secs(10));
    let shards = ChildSpec::supervisor(SHARDS, shard_flags, move || specs.clone());
    let root_flags = Flags::new(Strategy::OneForOne).intensity(3, Duration::from_secs(60));
    let mut children = vec![shards];
    children.extend(others);
    // Before the shards start: their start functions record their Pids here.
    let names = (0..config.shards).map(|i| format!("shard-{i}")).collect();
    let pids = ShardPids((0..config.shards).map(|_| Cell::new(None)).collect());
    lp.insert_extension(Shards {
        names,
        counters: counters.clone(),
        log,
        pids,
        bodies,
    });
    supervisor::start(lp, ROOT, root_flags, children, StartOptions::named(ROOT))
        .map_err(|e| io::Error::other(format!("starting the shards: {e}")))?;
    Ok(())
}

/// False once the root supervisor gave up (a shard could not recover).
pub fn tree_alive(lp: &Loop) -> bool {
    supervisor::report(lp, ROOT).is_some()
}

/// True once every shard has recovered its state and serves calls.
pub fn ready(lp: &Loop) -> bool {
    lp.extension::<Shards>()
        .is_some_and(|all| all.counters.iter().all(|c| c.ready.get()))
}

/// The shards' Pids (empty before [`start`]).
pub fn pids(lp: &Loop) -> ShardPids {
    lp.extension::<Shards>()
        .map(|all| all.pids.clone())
        .unwrap_or_default()
}

/// The pool the shards give replaced values' buffers to (a pool of its own
/// before [`start`]).
pub fn bodies(lp: &Loop) -> BodyPool {
    lp.extension::<Shards>()
        .map(|all| all.bodies.clone())
        .unwrap_or_default()
}

/// Sends `request` to shard `shard`; `reply` runs later from the loop with
/// the answer or why there is none (`Timeout` after `timeout`).
pub fn call(
    lp: &mut Loop,
    shard: usize,
    request: KvRequest,
    timeout: Duration,
    reply: impl FnOnce(&mut Loop, Result<KvReply, ShardError>) + 'static,
) {
    let pid = shard_pid(lp, shard);
    call_pid(lp, pid, request, timeout, reply);
}

/// [`call`] to a shard's process found through [`ShardPids`] (`None`: the
/// shard is not running).
pub fn call_pid(
    lp: &mut Loop,
    pid: Option<Pid>,
    request: KvRequest,
    timeout: Duration,
    reply: impl FnOnce(&mut Loop, Result<KvReply, ShardError>) + 'static,
) {
    debug_assert!(timeout > Duration::ZERO);
    let Some(pid) = pid else {
        lp.defer(move |lp| reply(lp, Err(ShardError::Unavailable)));
        return;
    };
    let crash = request == KvRequest::Crash;
    let server = ServerRef::<Durable<KvShard>>::from_pid(pid);
    gen_server::call(lp, server, request, timeout, move |lp, answer| {
        let answer = match answer {
            Ok(r) => Ok(r),
            Err(CallError::Exit(ExitReason::Panic(_))) if crash => Ok(KvReply::Crashed),
            Err(CallError::Timeout) => Err(ShardError::Timeout),
            Err(CallError::Overloaded) => Err(ShardError::Overloaded),
            Err(CallError::NoProc) | Err(CallError::Exit(_)) => Err(ShardError::Unavailable),
        };
        reply(lp, answer)
    });
}

/// The process serving `shard`, as of its last start.
fn shard_pid(lp: &Loop, shard: usize) -> Option<Pid> {
    lp.extension::<Shards>()?.pids.get(shard)
}

/// Every shard's figures, in shard order.
pub fn info(lp: &Loop) -> Vec<ShardInfo> {
    let children = supervisor::report(lp, SHARDS).unwrap_or_default();
    let Some(all) = lp.extension::<Shards>() else {
        return Vec::new();
    };
    all.names
        .iter()
        .zip(&all.counters)
        .map(|(name, c)| {
            let child = children.iter().find(|ch| ch.id == *name);
            ShardInfo {
                keys: c.keys.get(),
                log_bytes: c.log_bytes.get(),
                restarts: child.map_or(0, |ch| u64::from(ch.restarts)),
                fsyncs: c.fsyncs.get(),
                state: child.map_or("stopped", |ch| state_name(ch.state)),
            }
        })
        .collect()
}

/// The shared log's figures.
pub fn log_info(lp: &Loop) -> Option<LogInfo> {
    let log = lp.extension::<Shards>()?.log.as_ref()?;
    let stats = log.stats();
    Some(LogInfo {
        fdatasyncs: stats.fdatasyncs,
        entries_written: stats.entries_written,
        batches: stats.batches,
        bytes_written: stats.bytes_written,
        log_bytes: log.log_bytes(),
        segments: log.segments() as u64,
    })
}

fn state_name(state: ChildState) -> &'static str {
    match state {
        ChildState::Running(_) => "running",
        ChildState::Restarting => "restarting",
        ChildState::Undefined => "stopped",
    }
}

fn child_json(child: &ChildInfo) -> serde_json::Value {
    serde_json::json!({
        "id": child.id,
        "kind": match child.kind {
            supervisor::ChildKind::Worker => "worker",
            supervisor::ChildKind::Supervisor => "supervisor",
        },
        "state": state_name(child.state),
        "restarts": child.restarts,
    })
}

/// The supervision tree as JSON for `/_status`.
pub fn supervision(lp: &Loop) -> serde_json::Value {
    let shard_children: Vec<serde_json::Value> = supervisor::report(lp, SHARDS)
        .unwrap_or_default()
        .iter()
        .map(child_json)
        .collect();
    let root = supervisor::report(lp, ROOT);
    let running = root.is_some();
    let root_children: Vec<serde_json::Value> = root
        .unwrap_or_default()
        .iter()
        .map(|child| {
            let mut json = child_json(child);
            if child.id == SHARDS {
                json["strategy"] = "one_for_one".into();
                json["children"] = shard_children.clone().into();
            }
            json
        })
        .collect();
    serde_json::json!({
        "id": ROOT,
        "kind": "supervisor",
        "strategy": "one_for_one",
        "state": if running { "running" } else { "stopped" },
        "children": root_children,
    })
}

/// Name of what stores the data, for `/_status`.
pub fn storage_name(lp: &Loop) -> &'static str {
    match lp.extension::<Shards>().map(|all| all.log.is_some()) {
        Some(false) => "wal+snapshots",
        _ => "shared-wal+snapshots",
    }
}

/// Stops the tree (each shard flushes, snapshots and closes its stream),
/// then, once every shard process is gone, closes the shared log and runs
/// `done`.
pub fn stop_all(lp: &mut Loop, done: impl FnOnce(&mut Loop) + 'static) {
    if let Some(root) = whereis(lp, ROOT) {
        ringvisor::behaviours::stop_process(
            lp,
            root,
            ExitReason::Shutdown,
            Kill::Terminate(SHARD_SHUTDOWN),
        );
    }
    wait_for_exit(lp, Box::new(done));
}

/// Polls until no process is left (shards linger while they flush).
fn wait_for_exit(lp: &mut Loop, done: Box<dyn FnOnce(&mut Loop)>) {
    if ringvisor::behaviours::process_count(lp) == 0 {
        tracing::info!("shards flushed and stopped");
        let Some(log) = lp.extension::<Shards>().and_then(|all| all.log.clone()) else {
            lp.defer(done);
            return;
        };
        let done = Rc::new(Cell::new(Some(done)));
        let on_closed = done.clone();
        let closing = log.close(lp, move |lp, res| {
            if let Err(e) = res {
                tracing::error!(error = %e, "closing the shared log failed");
            }
            if let Some(done) = on_closed.take() {
                done(lp);
            }
        });
        if let Err(e) = closing {
            tracing::warn!(error = %e, "the shared log was closed already");
            if let Some(done) = done.take() {
                lp.defer(done);
            }
        }
        return;
    }
    lp.timer(Duration::from_millis(5), move |lp| wait_for_exit(lp, done));
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::key::Key;
    use std::cell::RefCell;

    fn config(dir: &tempfile::TempDir, capacity: usize) -> ShardConfig {
        ShardConfig {
            shards: 2,
            data_dir: dir.path().to_path_buf(),
            sync: SyncMode::Always,
            queue_capacity: capacity,
            max_value_bytes: 1 << 20,
            batches_in_flight: 2,
            log: LogLayout::Shared,
        }
    }

    /// Runs the loop until `n` answers came (shards recover first).
    fn run_until_answers<T>(lp: &mut Loop, got: &Rc<RefCell<Vec<T>>>, n: usize) {
        let start = std::time::Instant::now();
        while got.borrow().len() < n {
            assert!(
                start.elapsed() < Duration::from_secs(10),
                "answers did not come"
            );
            lp.run_for(Duration::from_millis(5)).unwrap();
        }
    }

    #[test]
    fn routing_is_fixed_fnv1a() {
        // FNV-1a 64 test vectors: "" and "a".
        assert_eq!(
            shard_for_key(b"", 1 << 20),
            (0xcbf2_9ce4_8422_2325u64 % (1 << 20)) as usize
        );
        assert_eq!(
            shard_for_key(b"a", 1 << 20),
            (0xaf63_dc4c_8601_ec8cu64 % (1 << 20)) as usize
        );
        let spread: std::collections::HashSet<usize> = (0..1000u32)
            .map(|i| shard_for_key(&i.to_le_bytes(), 8))
            .collect();
        assert_eq!(spread.len(), 8);
    }

    #[test]
    fn answers_in_order_after_the_call_returns() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(&dir, 16), Vec::new()).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let requests = [
            KvRequest::Put {
                key: Key::from(&b"k"[..]),
                value: b"v".to_vec(),
            },
            KvRequest::Put {
                key: Key::from(&b"k"[..]),
                value: b"w".to_vec(),
            },
            KvRequest::Get {
                key: Key::from(&b"k"[..]),
            },
            KvRequest::List {
                prefix: b"".to_vec(),
                limit: 10,
            },
            KvRequest::Delete {
                key: Key::from(&b"k"[..]),
            },
            KvRequest::Delete {
                key: Key::from(&b"k"[..]),
            },
        ];
        for request in requests {
            let got = got.clone();
            call(&mut lp, 1, request, Duration::from_secs(1), move |_, r| {
                got.borrow_mut().push(r)
            });
        }
        assert!(got.borrow().is_empty(), "never answered inside call");
        run_until_answers(&mut lp, &got, 6);
        assert_eq!(
            *got.borrow(),
            vec![
                Ok(KvReply::Stored { created: true }),
                Ok(KvReply::Stored { created: false }),
                Ok(KvReply::Value(Some(Rc::new(b"w".to_vec())))),
                Ok(KvReply::Keys(vec![b"k".to_vec()])),
                Ok(KvReply::Deleted { existed: true }),
                Ok(KvReply::Deleted { existed: false }),
            ]
        );
    }

    #[test]
    fn a_log_per_shard_serves_and_refuses_a_directory_with_a_shared_log() {
        let per_shard = |dir: &tempfile::TempDir| ShardConfig {
            log: LogLayout::PerShard,
            ..config(dir, 16)
        };
        let shared_before = tempfile::tempdir().unwrap();
        std::fs::create_dir(shared_before.path().join(LOG_DIR)).unwrap();
        let mut lp = Loop::new().unwrap();
        let refused = start(&mut lp, per_shard(&shared_before), Vec::new()).unwrap_err();
        assert!(refused.to_string().contains("--log shared"), "{refused}");

        let dir = tempfile::tempdir().unwrap();
        let mut lp = Loop::new().unwrap();
        start(&mut lp, per_shard(&dir), Vec::new()).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let put = KvRequest::Put {
            key: Key::from(&b"k"[..]),
            value: b"v".to_vec(),
        };
        let slot = got.clone();
        call(&mut lp, 1, put, Duration::from_secs(1), move |_, r| {
            slot.borrow_mut().push(r)
        });
        run_until_answers(&mut lp, &got, 1);
        assert_eq!(got.borrow()[0], Ok(KvReply::Stored { created: true }));
        assert_eq!(storage_name(&lp), "wal+snapshots");
        assert!(log_info(&lp).is_none(), "no shared log");
        assert!(!dir.path().join(LOG_DIR).exists());
        let fsyncs: u64 = info(&lp).iter().map(|i| i.fsyncs).sum();
        assert_eq!(fsyncs, 1, "shard 1's own log synced the write");
    }

    #[test]
    fn a_full_queue_is_overloaded_and_a_missing_shard_unavailable() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(&dir, 2), Vec::new()).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        for shard in [0, 0, 0, 7] {
            let got = got.clone();
            let req = KvRequest::Get {
                key: Key::from(&b"x"[..]),
            };
            call(&mut lp, shard, req, Duration::from_secs(1), move |_, r| {
                got.borrow_mut().push(r)
            });
        }
        run_until_answers(&mut lp, &got, 4);
        let got = got.borrow();
        assert_eq!(
            got.iter()
                .filter(|r| **r == Ok(KvReply::Value(None)))
                .count(),
            2
        );
        assert!(got.contains(&Err(ShardError::Overloaded)));
        assert!(got.contains(&Err(ShardError::Unavailable)));
    }

    #[test]
    fn crash_restarts_the_shard_from_its_durable_state() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(&dir, 16), Vec::new()).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let put = KvRequest::Put {
            key: Key::from(&b"a"[..]),
            value: vec![],
        };
        let g = got.clone();
        call(&mut lp, 0, put, Duration::from_secs(1), move |_, r| {
            g.borrow_mut().push(r)
        });
        run_until_answers(&mut lp, &got, 1);
        assert_eq!(info(&lp)[0].keys, 1);
        let g = got.clone();
        call(
            &mut lp,
            0,
            KvRequest::Crash,
            Duration::from_secs(1),
            move |_, r| g.borrow_mut().push(r),
        );
        run_until_answers(&mut lp, &got, 2);
        assert_eq!(got.borrow()[1], Ok(KvReply::Crashed));
        let start_wait = std::time::Instant::now();
        while info(&lp)[0].restarts < 1 || info(&lp)[0].state != "running" {
            assert!(start_wait.elapsed() < Duration::from_secs(10));
            lp.run_for(Duration::from_millis(5)).unwrap();
        }
        let g = got.clone();
        call(
            &mut lp,
            0,
            KvRequest::Get {
                key: Key::from(&b"a"[..]),
            },
            Duration::from_secs(1),
            move |_, r| g.borrow_mut().push(r),
        );
        run_until_answers(&mut lp, &got, 3);
        assert_eq!(
            got.borrow()[2],
            Ok(KvReply::Value(Some(Rc::new(Vec::new())))),
            "kept across the crash"
        );
        assert_eq!((info(&lp)[0].keys, info(&lp)[0].restarts), (1, 1));
    }

    #[test]
    fn a_batch_answers_in_order_and_its_writes_survive_a_restart() {
        let dir = tempfile::tempdir().unwrap();
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(&dir, 16), Vec::new()).unwrap();
        let key = |k: &[u8]| Key::from(k);
        let got = Rc::new(RefCell::new(Vec::new()));
        let ask = |lp: &mut Loop, request: KvRequest| {
            let g = got.clone();
            call(lp, 0, request, Duration::from_secs(1), move |_, r| {
                g.borrow_mut().push(r)
            });
        };
        ask(
            &mut lp,
            KvRequest::Batch(vec![
                KvRequest::Get { key: key(b"a") },
                KvRequest::Put {
                    key: key(b"a"),
                    value: b"1".to_vec(),
                },
                KvRequest::Get { key: key(b"a") },
                KvRequest::Put {
                    key: key(b"b"),
                    value: b"2".to_vec(),
                },
                KvRequest::Delete { key: key(b"a") },
                KvRequest::Delete { key: key(b"a") },
            ]),
        );
        run_until_answers(&mut lp, &got, 1);
        assert_eq!(
            got.borrow()[0],
            Ok(KvReply::Batch(vec![
                KvReply::Value(None),
                KvReply::Stored { created: true },
                KvReply::Value(Some(Rc::new(b"1".to_vec()))),
                KvReply::Stored { created: true },
                KvReply::Deleted { existed: true },
                KvReply::Deleted { existed: false },
            ]))
        );
        // Reads only: answered without a log entry.
        ask(
            &mut lp,
            KvRequest::Batch(vec![
                KvRequest::Get { key: key(b"b") },
                KvRequest::Get { key: key(b"a") },
            ]),
        );
        run_until_answers(&mut lp, &got, 2);
        assert_eq!(
            got.borrow()[1],
            Ok(KvReply::Batch(vec![
                KvReply::Value(Some(Rc::new(b"2".to_vec()))),
                KvReply::Value(None),
            ]))
        );
        // A crash restarts the shard from its log: the batch's writes, replayed.
        ask(&mut lp, KvRequest::Crash);
        run_until_answers(&mut lp, &got, 3);
        let start_wait = std::time::Instant::now();
        while info(&lp)[0].restarts < 1 || info(&lp)[0].state != "running" {
            assert!(start_wait.elapsed() < Duration::from_secs(10));
            lp.run_for(Duration::from_millis(5)).unwrap();
        }
        ask(
            &mut lp,
            KvRequest::Batch(vec![
                KvRequest::Get { key: key(b"a") },
                KvRequest::Get { key: key(b"b") },
            ]),
        );
        run_until_answers(&mut lp, &got, 4);
        assert_eq!(
            got.borrow()[3],
            Ok(KvReply::Batch(vec![
                KvReply::Value(None),
                KvReply::Value(Some(Rc::new(b"2".to_vec()))),
            ]))
        );
        assert_eq!(info(&lp)[0].keys, 1);
    }
}
