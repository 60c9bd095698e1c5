//! One shard's state machine: the requests it answers ([`KvRequest`] →
//! [`KvReply`]), the log entries it records ([`KvEntry`], framed by the
//! store, encoded here), and its map ([`KvShard`], a [`DurableServer`]).
//! Where shards run, how they are supervised and reached is `shard.rs`.

use std::cell::Cell;
use std::collections::BTreeMap;
use std::ops::Bound;
use std::rc::Rc;

use ringvisor::behaviours::durable::{Decision, DurableServer};
use ringvisor::behaviours::persist::{DecodeError, StoreStats};

use crate::bodies::BodyPool;
use crate::key::Key;

/// A stored value, shared without copying between the shard and responses.
pub type Value = Rc<Vec<u8>>;

/// A request to one shard.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KvRequest {
    /// Read a key.
    Get {
        /// The key.
        key: Key,
    },
    /// Write a key.
    Put {
        /// The key.
        key: Key,
        /// Its new value.
        value: Vec<u8>,
    },
    /// Remove a key.
    Delete {
        /// The key.
        key: Key,
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
    /// Key requests (`Get`, `Put`, `Delete` only) answered in order, as one
    /// call: what one tick's requests to this shard cost one message, one
    /// run and one reply (see `crate::batch`). Answered with
    /// [`KvReply::Batch`], one reply per request.
    Batch(Vec<KvRequest>),
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
    /// The replies to a [`KvRequest::Batch`], in its order.
    Batch(Vec<KvReply>),
}

/// Longest key a log entry may carry (the HTTP side allows 1,024 bytes).
pub const KEY_BYTES_MAX: usize = 64 * 1024;

/// Counters a shard publishes for status pages.
#[derive(Default)]
pub struct Counters {
    /// Recovered and serving.
    pub ready: Cell<bool>,
    /// Keys held.
    pub keys: Cell<u64>,
    /// Bytes of its entries in the log.
    pub log_bytes: Cell<u64>,
    /// fdatasyncs that carried its entries.
    pub fsyncs: Cell<u64>,
}

/// A log entry: a change to one key (kept inline, as requests carry it, so
/// replacing a key's value allocates no key).
pub enum KvEntry {
    /// Set a key.
    Put(Key, Vec<u8>),
    /// Remove a key.
    Delete(Key),
    /// A batch's requests in order (see [`KvRequest::Batch`]): its writes
    /// are logged as one entry, its reads are answered from the map as it
    /// is when their turn comes (after the batch's earlier writes) and are
    /// not logged. Recovered from the log, it holds writes only.
    Batch(Vec<KvRequest>),
}

/// One shard: a durable map from keys to values. Keys are kept as requests
/// carry them (a short key inline, no heap block of its own), and searched
/// with [`Key`]'s word-at-a-time order instead of a `memcmp` per node key
/// (a pipelined GET spent a tenth of its instructions in those calls).
pub struct KvShard {
    map: BTreeMap<Key, Value>,
    counters: Rc<Counters>,
    index: usize,
    /// Where a replaced value's buffer goes, for a later PUT's body.
    bodies: BodyPool,
}

impl DurableServer for KvShard {
    type Args = (usize, Rc<Counters>, BodyPool);
    type Call = KvRequest;
    type Reply = KvReply;
    type Entry = KvEntry;

    fn initial((index, counters, bodies): &Self::Args) -> Self {
        counters.keys.set(0);
        counters.ready.set(false);
        KvShard {
            map: BTreeMap::new(),
            counters: counters.clone(),
            index: *index,
            bodies: bodies.clone(),
        }
    }

    fn handle_call(&self, request: KvRequest) -> Decision<Self> {
        match request {
            KvRequest::Get { key } => Decision::Reply(KvReply::Value(self.map.get(&key).cloned())),
            KvRequest::Put { key, value } => Decision::Record(KvEntry::Put(key, value)),
            KvRequest::Delete { key } if self.map.contains_key(&key) => {
                Decision::Record(KvEntry::Delete(key))
            }
            KvRequest::Delete { .. } => Decision::Reply(KvReply::Deleted { existed: false }),
            KvRequest::List { prefix, limit } => {
                let keys = self
                    .map
                    .range::<[u8], _>((Bound::Included(&prefix[..]), Bound::Unbounded))
                    .take_while(|(k, _)| k.starts_with(&prefix))
                    .take(limit)
                    .map(|(k, _)| k.to_vec())
                    .collect();
                Decision::Reply(KvReply::Keys(keys))
            }
            KvRequest::Crash => panic!("shard {} crashed on request (--chaos)", self.index),
            KvRequest::Batch(requests) => {
                if requests.iter().all(|r| matches!(r, KvRequest::Get { .. })) {
                    let replies = requests.iter().map(|r| self.read(r)).collect();
                    return Decision::Reply(KvReply::Batch(replies));
                }
                Decision::Record(KvEntry::Batch(requests))
            }
        }
    }

    fn apply(&mut self, entry: KvEntry) -> KvReply {
        let reply = match entry {
            KvEntry::Put(key, value) => self.put(key, value),
            KvEntry::Delete(key) => self.delete(&key),
            KvEntry::Batch(requests) => {
                let replies = requests
                    .into_iter()
                    .map(|request| match request {
                        KvRequest::Put { key, value } => self.put(key, value),
                        KvRequest::Delete { key } => self.delete(&key),
                        read => self.read(&read),
                    })
                    .collect();
                KvReply::Batch(replies)
            }
        };
        self.counters.keys.set(self.map.len() as u64);
        reply
    }

    fn encode_entry(entry: &KvEntry, out: &mut Vec<u8>) {
        match entry {
            KvEntry::Put(key, value) => encode_put(key, value, out),
            KvEntry::Delete(key) => {
                out.push(b'D');
                out.extend_from_slice(key);
            }
            KvEntry::Batch(requests) => {
                // `B`, then each write as `P key-len key value-len value` or
                // `D key-len key`; reads leave nothing to replay.
                out.push(b'B');
                for request in requests {
                    match request {
                        KvRequest::Put { key, value } => {
                            out.push(b'P');
                            push_key(key, out);
                            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
                            out.extend_from_slice(value);
                        }
                        KvRequest::Delete { key } => {
                            out.push(b'D');
                            push_key(key, out);
                        }
                        _ => {}
                    }
                }
            }
        }
    }

    fn decode_entry(bytes: &[u8]) -> Result<KvEntry, DecodeError> {
        match bytes.split_first() {
            Some((b'P', rest)) => {
                let (key, value) = split_key(rest)?;
                Ok(KvEntry::Put(Key::from(key), value.to_vec()))
            }
            Some((b'D', key)) => Ok(KvEntry::Delete(Key::from(key))),
            Some((b'B', rest)) => decode_batch(rest).map(KvEntry::Batch),
            _ => Err(DecodeError::new("unknown entry tag")),
        }
    }

    fn encode_state(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&(self.map.len() as u64).to_le_bytes());
        for (key, value) in &self.map {
            push_key(key, out);
            out.extend_from_slice(&(value.len() as u64).to_le_bytes());
            out.extend_from_slice(value);
        }
    }

    fn decode_state(args: &Self::Args, bytes: &[u8]) -> Result<Self, DecodeError> {
        let mut shard = KvShard::initial(args);
        let (count, mut rest) = take_u64(bytes)?;
        for _ in 0..count {
            let (key, after_key) = split_key(rest)?;
            let (len, after_len) = take_u64(after_key)?;
            let len = usize::try_from(len).map_err(|_| DecodeError::new("value length"))?;
            if after_len.len() < len {
                return Err(DecodeError::new("snapshot value cut short"));
            }
            shard
                .map
                .insert(Key::from(key), Rc::new(after_len[..len].to_vec()));
            rest = &after_len[len..];
        }
        if !rest.is_empty() {
            return Err(DecodeError::new("trailing bytes after the snapshot"));
        }
        shard.counters.keys.set(shard.map.len() as u64);
        Ok(shard)
    }

    fn recovered(&mut self) {
        self.counters.ready.set(true);
    }

    fn observe(&mut self, stats: &StoreStats) {
        self.counters.log_bytes.set(stats.bytes_written);
        self.counters.fsyncs.set(stats.fdatasyncs);
    }
}

impl KvShard {
    fn put(&mut self, key: Key, value: Vec<u8>) -> KvReply {
        let created = match self.map.get_mut(&key) {
            // A value nobody else holds (no response still being written)
            // is replaced in place: no allocation, and its buffer goes to a
            // later PUT's body rather than free().
            Some(old) => {
                match Rc::get_mut(old) {
                    Some(unshared) => self.bodies.give(std::mem::replace(unshared, value)),
                    None => *old = Rc::new(value),
                }
                false
            }
            None => {
                self.map.insert(key, Rc::new(value));
                true
            }
        };
        KvReply::Stored { created }
    }

    fn delete(&mut self, key: &Key) -> KvReply {
        KvReply::Deleted {
            existed: self.map.remove(key).is_some(),
        }
    }

    /// The reply to a batch's read (a `Get`; the batch holds nothing else
    /// that is not a write).
    fn read(&self, request: &KvRequest) -> KvReply {
        match request {
            KvRequest::Get { key } => KvReply::Value(self.map.get(key).cloned()),
            other => unreachable!("a batch holds key requests only, not {other:?}"),
        }
    }
}

fn encode_put(key: &Key, value: &[u8], out: &mut Vec<u8>) {
    out.push(b'P');
    push_key(key, out);
    out.extend_from_slice(value);
}

/// `len: u32 LE, key` (what [`split_key`] reads back).
fn push_key(key: &[u8], out: &mut Vec<u8>) {
    out.extend_from_slice(&(key.len() as u32).to_le_bytes());
    out.extend_from_slice(key);
}

/// A batch entry's writes (see `encode_entry`).
fn decode_batch(mut rest: &[u8]) -> Result<Vec<KvRequest>, DecodeError> {
    let mut writes = Vec::new();
    while let Some((&tag, after_tag)) = rest.split_first() {
        let (key, after_key) = split_key(after_tag)?;
        let key = Key::from(key);
        match tag {
            b'P' => {
                let (len, after_len) = take_u64(after_key)?;
                let len = usize::try_from(len).map_err(|_| DecodeError::new("value length"))?;
                if after_len.len() < len {
                    return Err(DecodeError::new("batched value cut short"));
                }
                let (value, after) = after_len.split_at(len);
                writes.push(KvRequest::Put {
                    key,
                    value: value.to_vec(),
                });
                rest = after;
            }
            b'D' => {
                writes.push(KvRequest::Delete { key });
                rest = after_key;
            }
            _ => return Err(DecodeError::new("unknown batched write tag")),
        }
    }
    Ok(writes)
}

/// `len: u32 LE, key, rest` -> `(key, rest)`.
fn split_key(bytes: &[u8]) -> Result<(&[u8], &[u8]), DecodeError> {
    let (len, rest) = bytes
        .split_at_checked(4)
        .ok_or_else(|| DecodeError::new("key length cut short"))?;
    let len = u32::from_le_bytes(len.try_into().expect("4 bytes")) as usize;
    if len > KEY_BYTES_MAX || rest.len() < len {
        return Err(DecodeError::new("key cut short"));
    }
    Ok(rest.split_at(len))
}

fn take_u64(bytes: &[u8]) -> Result<(u64, &[u8]), DecodeError> {
    let (n, rest) = bytes
        .split_at_checked(8)
        .ok_or_else(|| DecodeError::new("length cut short"))?;
    Ok((u64::from_le_bytes(n.try_into().expect("8 bytes")), rest))
}
