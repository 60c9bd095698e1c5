//! The shard interface the HTTP side calls, and its current implementation.
//!
//! The interface: [`KvRequest`] in, [`KvReply`] or [`ShardError`] out, through
//! [`call`] with a timeout and a continuation that runs later from the loop
//! (never inside `call`). Keys go to shards by [`shard_for_key`], a fixed
//! FNV-1a hash, so routing survives restarts. [`info`], [`supervision`] and
//! [`stop_all`] are what `/_status`, `/metrics` and shutdown need.
//!
//! The implementation: one in-memory `BTreeMap` per shard in a loop
//! extension, each with a bounded request queue drained by a deferred pass,
//! like a gen_server's mailbox. It keeps no files yet: `--data-dir` and
//! `--sync` are carried in [`ShardConfig`] for the durable gen_server shards
//! that replace it, and `Crash` clears the shard's map where those will panic
//! and be restarted by their supervisor.

use std::collections::{BTreeMap, VecDeque};
use std::io;
use std::ops::Bound;
use std::path::PathBuf;
use std::rc::Rc;
use std::time::Duration;

use ringvisor::Loop;

use crate::config::SyncMode;

/// A stored value, shared without copying between the shard and responses.
pub type Value = Rc<[u8]>;

/// A request to one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRequest {
    /// Read a key.
    Get {
        /// The key.
        key: Vec<u8>,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Vec<u8>,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Vec<u8>,
    },
    /// This shard's keys starting with `prefix`, in byte order, at most `limit`.
    List {
        /// The prefix.
        prefix: Vec<u8>,
        /// Most keys returned.
        limit: usize,
    },
    /// Crash the shard (`--chaos`).
    Crash,
}

/// A shard's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvReply {
    /// The value of a `Get`, if the key exists.
    Value(Option<Value>),
    /// A `Put` is done (durable, once shards are): `created` if the key was new.
    Stored {
        /// The key did not exist before.
        created: bool,
    },
    /// A `Delete` is done: `existed` if there was a key to remove.
    Deleted {
        /// The key existed.
        existed: bool,
    },
    /// The keys of a `List`.
    Keys(Vec<Vec<u8>>),
    /// The shard crashed as asked.
    Crashed,
}

/// Why a shard gave no answer; every one is a 503 to the client.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ShardError {
    /// No answer within the call's timeout.
    #[allow(dead_code)] // The in-memory shards always answer within the tick.
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
    /// Bytes of its write-ahead log (0 while shards are in memory only).
    pub log_bytes: u64,
    /// Times it was restarted (crashed and recovered).
    pub restarts: u64,
    /// fdatasyncs made.
    pub fsyncs: u64,
    /// `running`, `restarting`, ...
    pub state: &'static str,
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

type Continuation = Box<dyn FnOnce(&mut Loop, Result<KvReply, ShardError>)>;

struct Shard {
    map: BTreeMap<Vec<u8>, Value>,
    queue: VecDeque<(KvRequest, Continuation)>,
    drain_scheduled: bool,
    restarts: u64,
}

struct Shards {
    shards: Vec<Shard>,
    config: ShardConfig,
}

/// Starts the shards.
pub fn start(lp: &mut Loop, config: ShardConfig) -> io::Result<()> {
    assert!(config.shards > 0 && config.queue_capacity > 0);
    let shards = (0..config.shards)
        .map(|_| Shard {
            map: BTreeMap::new(),
            queue: VecDeque::new(),
            drain_scheduled: false,
            restarts: 0,
        })
        .collect();
    lp.insert_extension(Shards { shards, config });
    Ok(())
}

/// Sends `request` to shard `shard`; `reply` runs later from the loop with
/// the answer or why there is none. `timeout` bounds the wait (the in-memory
/// shards answer within the tick, so it never expires here).
pub fn call(
    lp: &mut Loop,
    shard: usize,
    request: KvRequest,
    timeout: Duration,
    reply: impl FnOnce(&mut Loop, Result<KvReply, ShardError>) + 'static,
) {
    debug_assert!(timeout > Duration::ZERO);
    let refused = match lp.extension_mut::<Shards>() {
        None => ShardError::Unavailable,
        Some(all) => {
            let capacity = all.config.queue_capacity;
            match all.shards.get_mut(shard) {
                None => ShardError::Unavailable,
                Some(s) if s.queue.len() >= capacity => ShardError::Overloaded,
                Some(s) => {
                    s.queue.push_back((request, Box::new(reply)));
                    if !s.drain_scheduled {
                        s.drain_scheduled = true;
                        lp.defer(move |lp| drain(lp, shard));
                    }
                    return;
                }
            }
        }
    };
    lp.defer(move |lp| reply(lp, Err(refused)));
}

/// Answers every request queued on `shard`, in order.
fn drain(lp: &mut Loop, shard: usize) {
    let Some(s) = lp
        .extension_mut::<Shards>()
        .and_then(|all| all.shards.get_mut(shard))
    else {
        return;
    };
    s.drain_scheduled = false;
    let mut queue = std::mem::take(&mut s.queue);
    while let Some((request, reply)) = queue.pop_front() {
        let answer = match lp
            .extension_mut::<Shards>()
            .and_then(|all| all.shards.get_mut(shard))
        {
            Some(s) => Ok(handle(s, request)),
            None => Err(ShardError::Unavailable),
        };
        reply(lp, answer);
    }
    // Give the queue's memory back unless continuations queued more meanwhile.
    if let Some(s) = lp
        .extension_mut::<Shards>()
        .and_then(|all| all.shards.get_mut(shard))
    {
        if s.queue.is_empty() {
            s.queue = queue;
        }
    }
}

fn handle(shard: &mut Shard, request: KvRequest) -> KvReply {
    match request {
        KvRequest::Get { key } => KvReply::Value(shard.map.get(&key).cloned()),
        KvRequest::Put { key, value } => {
            let created = shard.map.insert(key, Value::from(value)).is_none();
            KvReply::Stored { created }
        }
        KvRequest::Delete { key } => KvReply::Deleted {
            existed: shard.map.remove(&key).is_some(),
        },
        KvRequest::List { prefix, limit } => {
            let keys = shard
                .map
                .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
                .take_while(|(k, _)| k.starts_with(&prefix))
                .take(limit)
                .map(|(k, _)| k.clone())
                .collect();
            KvReply::Keys(keys)
        }
        KvRequest::Crash => {
            // Stand-in for a panic and a supervised restart from durable
            // state; with nothing durable yet, the restart starts empty.
            shard.map.clear();
            shard.restarts += 1;
            KvReply::Crashed
        }
    }
}

/// Every shard's figures, in shard order.
pub fn info(lp: &Loop) -> Vec<ShardInfo> {
    let Some(all) = lp.extension::<Shards>() else {
        return Vec::new();
    };
    all.shards
        .iter()
        .map(|s| ShardInfo {
            keys: s.map.len() as u64,
            log_bytes: 0,
            restarts: s.restarts,
            fsyncs: 0,
            state: "running",
        })
        .collect()
}

/// The supervision tree as JSON for `/_status` (null until shards are
/// supervised gen_servers).
pub fn supervision(_lp: &Loop) -> serde_json::Value {
    serde_json::Value::Null
}

/// Name of what stores the data, for `/_status`.
pub fn storage_name() -> &'static str {
    "memory"
}

/// Stops every shard once in-flight work is done (flush and snapshot, once
/// they are durable), then runs `done`.
pub fn stop_all(lp: &mut Loop, done: impl FnOnce(&mut Loop) + 'static) {
    if let Some(all) = lp.extension::<Shards>() {
        tracing::info!(
            shards = all.shards.len(),
            data_dir = %all.config.data_dir.display(),
            sync = all.config.sync.name(),
            "shards stopped"
        );
    }
    lp.defer(done);
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn config(capacity: usize) -> ShardConfig {
        ShardConfig {
            shards: 2,
            data_dir: PathBuf::from("unused"),
            sync: SyncMode::Always,
            queue_capacity: capacity,
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
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(16)).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        let requests = [
            KvRequest::Put {
                key: b"k".to_vec(),
                value: b"v".to_vec(),
            },
            KvRequest::Put {
                key: b"k".to_vec(),
                value: b"w".to_vec(),
            },
            KvRequest::Get { key: b"k".to_vec() },
            KvRequest::List {
                prefix: b"".to_vec(),
                limit: 10,
            },
            KvRequest::Delete { key: b"k".to_vec() },
            KvRequest::Delete { key: b"k".to_vec() },
        ];
        for request in requests {
            let got = got.clone();
            call(&mut lp, 1, request, Duration::from_secs(1), move |_, r| {
                got.borrow_mut().push(r)
            });
        }
        assert!(got.borrow().is_empty(), "never answered inside call");
        lp.run().unwrap();
        assert_eq!(
            *got.borrow(),
            vec![
                Ok(KvReply::Stored { created: true }),
                Ok(KvReply::Stored { created: false }),
                Ok(KvReply::Value(Some(Value::from(&b"w"[..])))),
                Ok(KvReply::Keys(vec![b"k".to_vec()])),
                Ok(KvReply::Deleted { existed: true }),
                Ok(KvReply::Deleted { existed: false }),
            ]
        );
    }

    #[test]
    fn a_full_queue_is_overloaded_and_a_missing_shard_unavailable() {
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(2)).unwrap();
        let got = Rc::new(RefCell::new(Vec::new()));
        for shard in [0, 0, 0, 7] {
            let got = got.clone();
            let req = KvRequest::Get { key: b"x".to_vec() };
            call(&mut lp, shard, req, Duration::from_secs(1), move |_, r| {
                got.borrow_mut().push(r)
            });
        }
        lp.run().unwrap();
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
    fn crash_clears_and_counts_a_restart() {
        let mut lp = Loop::new().unwrap();
        start(&mut lp, config(16)).unwrap();
        let put = KvRequest::Put {
            key: b"a".to_vec(),
            value: vec![],
        };
        call(&mut lp, 0, put, Duration::from_secs(1), |_, _| {});
        lp.run().unwrap();
        assert_eq!(info(&lp)[0].keys, 1);
        call(
            &mut lp,
            0,
            KvRequest::Crash,
            Duration::from_secs(1),
            |_, r| assert_eq!(r, Ok(KvReply::Crashed)),
        );
        lp.run().unwrap();
        assert_eq!((info(&lp)[0].keys, info(&lp)[0].restarts), (0, 1));
    }
}
