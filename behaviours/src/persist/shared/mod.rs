//! A log shared by several stores of one loop: one writer, one group commit.
//!
//! Each store is a *stream* of the log, named by a number below
//! [`STREAMS_MAX`]. Entries of every stream appended during a tick go out as
//! one write and (with [`Durability::Always`]) one `fdatasync`, with up to
//! [`Options::batches_in_flight_max`] batches in flight as in a store's own
//! log; each stream's callbacks run once its entries, and every entry
//! before them in the log, are durable. Snapshots stay per stream, each in the stream's own
//! directory with the stream sequence number it covers.
//!
//! # Layout
//!
//! ```text
//! <log dir>/LOCK                          flock, held while the log is open
//! <log dir>/wal-<first log seq>.log       segments shared by every stream
//! <stream dir>/snapshot, snapshot.tmp     one stream's snapshots
//! ```
//!
//! A record is framed as in any log (`len | crc32c | log seq | payload`),
//! its payload starting with `stream u32 | stream seq u64`. Log sequence
//! numbers are contiguous within a segment and increase across segments;
//! each stream's sequence numbers are contiguous after its snapshot.
//!
//! # Guarantees
//!
//! - Opening the log checks every segment: a torn tail of the last one is
//!   cut (with a warning, and [`SharedLog::torn_tail`]); a bad record
//!   followed by valid data is [`super::OpenError::Corrupt`], with file and
//!   offset. The log directory's flock refuses a second open, in this or
//!   another process.
//! - A stream opens (again, after a crash of its owner) only once nothing of
//!   it is queued or in flight in the writer: it recovers exactly what any
//!   later recovery would.
//! - A segment is unlinked once every stream with records in it has a
//!   snapshot covering them; streams without records in it do not hold it.
//!   A stream that was not opened since the log was holds every segment it
//!   has records in.
//!
//! ```
//! use ringvisor_behaviours::persist::{Options, SharedLog};
//! use ringvisor_runtime::Loop;
//!
//! let dir = tempfile::tempdir().unwrap();
//! let mut lp = Loop::new().unwrap();
//! let log = SharedLog::open_blocking(&mut lp, &dir.path().join("log"), Options::default()).unwrap();
//! for stream in 0..2 {
//!     let snapshots = dir.path().join(format!("stream-{stream}"));
//!     log.open_stream(&mut lp, stream, snapshots, |lp, res| {
//!         let (store, _recovered) = res.unwrap();
//!         store.append(lp, b"hello", |_, res| assert_eq!(res.unwrap(), 1)).unwrap();
//!         store.close(lp, |_, res| res.unwrap()).unwrap();
//!     });
//! }
//! while log.stats().entries_written < 2 || !log.is_idle() {
//!     lp.run_once().unwrap();
//! }
//! assert_eq!(log.stats().fdatasyncs, 1, "both streams' entries in one fdatasync");
//! ```

mod core;
mod open;
mod record;
mod stream;

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringvisor_runtime::Loop;

use self::core::Shared;
pub(crate) use self::stream::Handle;
use super::error::{OpenError, StoreError};
use super::frame::RECORD_HEADER_BYTES;
use super::options::{Durability, Options};
use super::recovery::{Recovered, TornTail};
use super::stats::StoreStats;
use super::store::Store;
use super::wal::{self, STREAM_PREFIX_BYTES};

/// Streams a shared log serves: stream ids are below this.
pub const STREAMS_MAX: u32 = 4096;

/// Checks a shared log's options: a store's, with room for the stream
/// prefix in a batch.
fn validate(options: &Options) -> io::Result<()> {
    options.validate()?;
    let framed = options
        .record_bytes_max
        .saturating_add(RECORD_HEADER_BYTES + STREAM_PREFIX_BYTES);
    if framed > options.batch_bytes_max {
        let message =
            "batch_bytes_max must hold one record of record_bytes_max and its stream prefix";
        return Err(io::Error::new(io::ErrorKind::InvalidInput, message));
    }
    Ok(())
}

/// A write-ahead log shared by several [`Store`]s (streams) of one loop.
/// Cloning gives another handle on the same log; it lives while any handle
/// or stream does, so it outlives each stream's owner.
///
/// See the [module documentation](self) for the layout and guarantees.
#[derive(Clone)]
pub struct SharedLog {
    core: Shared,
    torn_tail: Rc<Option<TornTail>>,
}

impl std::fmt::Debug for SharedLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.core.borrow();
        f.debug_struct("SharedLog")
            .field("dir", &core.dir)
            .field("next_seq", &core.next_seq)
            .finish_non_exhaustive()
    }
}

impl SharedLog {
    /// Opens (creating it if missing; its parent must exist) and locks the
    /// log directory `dir`, checks every segment, and hands the log to
    /// `on_open`. `options` apply to every stream (durability, limits).
    pub fn open(
        lp: &mut Loop,
        dir: impl Into<PathBuf>,
        options: Options,
        on_open: impl FnOnce(&mut Loop, Result<SharedLog, OpenError>) + 'static,
    ) {
        let on_open = Box::new(move |lp: &mut Loop, res: Result<(Shared, _), _>| {
            on_open(
                lp,
                res.map(|(core, torn_tail)| SharedLog {
                    core,
                    torn_tail: Rc::new(torn_tail),
                }),
            )
        });
        open::open(lp, dir.into(), options, on_open);
    }

    /// Opens the log and runs the loop until it is open: for tools and tests
    /// that are not loop-driven themselves.
    pub fn open_blocking(
        lp: &mut Loop,
        dir: &Path,
        options: Options,
    ) -> Result<SharedLog, OpenError> {
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        SharedLog::open(lp, dir, options, move |_, res| {
            *slot.borrow_mut() = Some(res)
        });
        run_until(lp, dir, &out)
    }

    /// Opens stream `stream` with its snapshots in `dir` (created if
    /// missing): once nothing of the stream is queued or in flight, reads
    /// its latest snapshot and its entries after it, and hands `on_open` the
    /// stream's [`Store`] and what it recovered. Fails with
    /// [`OpenError::Locked`] while another store holds the stream.
    pub fn open_stream(
        &self,
        lp: &mut Loop,
        stream: u32,
        dir: impl Into<PathBuf>,
        on_open: impl FnOnce(&mut Loop, Result<(Store, Recovered), OpenError>) + 'static,
    ) {
        stream::open(lp, &self.core, stream, dir.into(), Box::new(on_open));
    }

    /// [`SharedLog::open_stream`], running the loop until the stream is open.
    pub fn open_stream_blocking(
        &self,
        lp: &mut Loop,
        stream: u32,
        dir: &Path,
    ) -> Result<(Store, Recovered), OpenError> {
        let out = Rc::new(RefCell::new(None));
        let slot = out.clone();
        self.open_stream(lp, stream, dir, move |_, res| {
            *slot.borrow_mut() = Some(res)
        });
        run_until(lp, dir, &out)
    }

    /// Flushes and syncs everything queued, waits for the streams' pending
    /// opens, closes and snapshots, closes the files and releases the lock;
    /// then calls `on_closed`. Streams refuse appends from then on.
    pub fn close(
        &self,
        lp: &mut Loop,
        on_closed: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        self.core.borrow_mut().start_close(Box::new(on_closed))?;
        wal::schedule_flush(lp, &self.core);
        Ok(())
    }

    /// The writer's counters, over all streams.
    pub fn stats(&self) -> StoreStats {
        self.core.borrow().wal.stats
    }

    /// Bytes of valid records in the log's segments now on disk.
    pub fn log_bytes(&self) -> u64 {
        let core = self.core.borrow();
        let closed: u64 = core.wal.closed.iter().map(|s| s.len_bytes).sum();
        closed + core.wal.segment.as_ref().map_or(0, |s| s.len_bytes)
    }

    /// Segment files the log has now.
    pub fn segments(&self) -> usize {
        let core = self.core.borrow();
        core.wal.closed.len() + usize::from(core.wal.segment.is_some())
    }

    /// The log directory.
    pub fn dir(&self) -> PathBuf {
        self.core.borrow().dir.clone()
    }

    /// When appends are acknowledged, for every stream.
    pub fn durability(&self) -> Durability {
        self.core.borrow().options.durability
    }

    /// The torn tail cut off when the log was opened, if there was one.
    pub fn torn_tail(&self) -> Option<TornTail> {
        (*self.torn_tail).clone()
    }

    /// Batches sealed and not yet acknowledged: written or being written,
    /// their `fdatasync`s in flight (at most
    /// [`Options::batches_in_flight_max`]).
    pub fn batches_in_flight(&self) -> usize {
        self.core.borrow().wal.batches_in_flight()
    }

    /// True once nothing is queued, in flight or unsynced.
    pub fn is_idle(&self) -> bool {
        self.core.borrow().wal.is_idle()
    }
}

fn run_until<T>(
    lp: &mut Loop,
    dir: &Path,
    out: &Rc<RefCell<Option<Result<T, OpenError>>>>,
) -> Result<T, OpenError> {
    while out.borrow().is_none() {
        lp.run_once().map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let result = out.borrow_mut().take().expect("checked above");
    result
}
