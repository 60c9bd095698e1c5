//! Crash-safe, asynchronous state persistence on the loop: a write-ahead log
//! with group commit, snapshots that compact it, and recovery.
//!
//! This is the storage engine under durable gen_servers. It stores bytes; what
//! they mean is the caller's business (see [`Codec`]). It has no dependency on
//! any behaviour: everything is a loop op plus a callback.
//!
//! # Data directory layout
//!
//! ```text
//! <dir>/LOCK                          advisory lock (flock), held while a Store is open
//! <dir>/snapshot                      latest durable snapshot (own CRC + covering seq)
//! <dir>/snapshot.tmp                  a snapshot being written; ignored and removed on open
//! <dir>/wal-<first seq, 20 digits>.log  log segments, named by their first sequence number
//! ```
//!
//! A log record is `len u32 | crc32c u32 | seq u64 | payload` (little endian,
//! [`RECORD_HEADER_BYTES`] of header); the CRC covers `len`, `seq` and the
//! payload. Sequence numbers start at 1 and are contiguous across segments.
//!
//! Several stores of one loop may instead be streams of one [`SharedLog`]:
//! one writer, one `fdatasync` per tick for all of them, snapshots still per
//! store (see the `shared` module's documentation on [`SharedLog`]).
//!
//! # Guarantees
//!
//! - **Group commit.** Every entry appended during a tick goes out in one
//!   write and (with [`Durability::Always`]) one `fdatasync`; entries appended
//!   while that batch is in flight gather for the next one.
//! - **Recovery** = latest valid snapshot, then every log record after it, in
//!   order. A torn tail (an incomplete or checksum-failing *last* record, with
//!   nothing valid after it) is cut off and reported with `tracing::warn!`; a
//!   bad record followed by a valid one is corruption, and [`Store::open`]
//!   fails with [`OpenError::Corrupt`] naming the file and byte offset.
//! - **Snapshots** are written to a temp file, `fdatasync`ed, renamed over the
//!   old one, and the directory is `fsync`ed before any log segment they cover
//!   is unlinked, so a crash at any point recovers.
//!
//! # I/O discipline
//!
//! All file I/O runs through the loop's ops (`open`, `read_at`, `write_at`,
//! `fdatasync`, `fsync`, `rename`, `unlink`, `close`). Two control-plane
//! exceptions run on the loop thread, once, inside [`Store::open`]: taking the
//! advisory lock (`flock(LOCK_EX | LOCK_NB)`, which never waits) and listing
//! the directory (`readdir`).
//!
//! ```
//! use ringvisor_behaviours::persist::{Options, Store};
//! use ringvisor_runtime::Loop;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut lp = Loop::new().unwrap();
//! Store::open(&mut lp, dir.path().join("data"), Options::default(), |lp, res| {
//!     let (store, recovered) = res.unwrap();
//!     assert_eq!(recovered.next_seq, 1);
//!     store.append(lp, b"hello", |_lp, res| assert_eq!(res.unwrap(), 1)).unwrap();
//!     store.close(lp, |_lp, res| res.unwrap()).unwrap();
//! });
//! lp.run().unwrap();
//! ```

mod books;
mod codec;
mod error;
mod fileio;
mod frame;
mod layout;
mod lock;
mod options;
mod own;
mod recovery;
mod shared;
mod snapshot;
mod stats;
mod store;
mod wal;

pub use codec::{BytesCodec, Codec, DecodeError};
pub use error::{OpenError, StoreError};
pub use frame::RECORD_HEADER_BYTES;
pub use layout::{segment_file_name, LOCK_FILE, SNAPSHOT_FILE, SNAPSHOT_TEMP_FILE};
pub use options::{
    Durability, Options, BATCHES_IN_FLIGHT_MAX_DEFAULT, BATCH_BYTES_MAX_DEFAULT,
    BATCH_ENTRIES_MAX_DEFAULT, PENDING_BYTES_MAX_DEFAULT, RECORD_BYTES_MAX_DEFAULT,
    SEGMENT_BYTES_MAX_DEFAULT, SNAPSHOT_BYTES_MAX_DEFAULT,
};
pub use recovery::{Recovered, TornTail};
pub use shared::{SharedLog, STREAMS_MAX};
pub use snapshot::{SnapshotStep, SNAPSHOT_HEADER_BYTES};
pub use stats::StoreStats;
#[doc(hidden)]
pub use store::open_blocking;
pub use store::Store;
