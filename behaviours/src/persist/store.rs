//! The façade: [`Store`] ties the log writer, snapshots and closing together.
//!
//! A store is shared between its owner and its in-flight ops through an
//! `Rc<RefCell<Core>>`. No borrow of the core is ever held while a caller's
//! callback runs, so callbacks may append, snapshot or close freely. The core
//! (and with it every fd) lives until the last op holding it has completed.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringvisor_runtime::Loop;

use super::codec::Codec;
use super::error::{OpenError, StoreError};
use super::fileio::{close_all, close_fd, unlink_all};
use super::lock::DirLock;
use super::options::{Durability, Options};
use super::recovery::{self, Recovered};
use super::snapshot::{self, SnapshotStep, SNAPSHOT_HEADER_BYTES};
use super::wal::{self, ClosedSegment, OnDurable, Segment, Wal};

pub use super::wal::StoreStats;

type OnDone = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

/// Everything a store owns.
pub(crate) struct Core {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    dir_fd: Option<OwnedFd>,
    lock: Option<DirLock>,
    next_seq: u64,
    /// Covering sequence number of the latest durable snapshot (0: none).
    pub(crate) snapshot_seq: u64,
    snapshot_busy: bool,
    /// Set by `close`; taken when the close completes.
    pub(crate) closing: Option<OnDone>,
    closed: bool,
    pub(crate) wal: Wal,
}

impl Core {
    pub(crate) fn dir_fd(&self) -> RawFd {
        self.dir_fd
            .as_ref()
            .expect("directory fd is open until close")
            .as_raw_fd()
    }

    fn check_open(&self) -> Result<(), StoreError> {
        if self.closed || self.closing.is_some() {
            return Err(StoreError::Closed);
        }
        match &self.wal.failure {
            Some((_, reason)) => Err(StoreError::Failed {
                reason: reason.clone(),
            }),
            None => Ok(()),
        }
    }
}

/// What recovery hands over to build a store.
pub(crate) struct Parts {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) dir_fd: OwnedFd,
    pub(crate) lock: DirLock,
    pub(crate) next_seq: u64,
    pub(crate) snapshot_seq: u64,
    pub(crate) segment: Option<Segment>,
    pub(crate) closed: Vec<ClosedSegment>,
}

/// An open data directory: append entries, write snapshots, close.
///
/// Entries get consecutive sequence numbers from
/// [`Recovered::next_seq`] on. Appends made in one tick are written together
/// and acknowledged together (see [`Durability`] for when).
///
/// ```
/// use ringvisor_behaviours::persist::{Options, Store};
/// use ringvisor_runtime::Loop;
/// use std::{cell::Cell, rc::Rc};
///
/// let dir = tempfile::tempdir().unwrap();
/// let mut lp = Loop::new().unwrap();
/// let acked = Rc::new(Cell::new(0));
/// let seen = acked.clone();
/// Store::open(&mut lp, dir.path(), Options::default(), move |lp, res| {
///     let (store, _recovered) = res.unwrap();
///     for i in 0..64u32 {
///         let seen = seen.clone();
///         store.append(lp, &i.to_le_bytes(), move |_, res| {
///             res.unwrap();
///             seen.set(seen.get() + 1);
///         }).unwrap();
///     }
///     store.close(lp, |_, res| res.unwrap()).unwrap();
/// });
/// lp.run().unwrap();
/// assert_eq!(acked.get(), 64);
/// ```
pub struct Store {
    core: Rc<RefCell<Core>>,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let core = self.core.borrow();
        f.debug_struct("Store")
            .field("dir", &core.dir)
            .field("next_seq", &core.next_seq)
            .field("snapshot_seq", &core.snapshot_seq)
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it if missing; its parent must exist) and locks the
    /// data directory `dir`, then reads the latest valid snapshot and every
    /// log record after it, and hands the store and what it recovered to
    /// `on_open`. Fails with [`OpenError::Locked`] if another open store holds
    /// the directory, [`OpenError::Corrupt`] if data is damaged in a way that
    /// is not a torn tail.
    ///
    /// The lock (`flock`, never waiting) and the directory listing run on the
    /// loop thread, once; every read and write goes through loop ops.
    pub fn open(
        lp: &mut Loop,
        dir: impl Into<PathBuf>,
        options: Options,
        on_open: impl FnOnce(&mut Loop, Result<(Store, Recovered), OpenError>) + 'static,
    ) {
        recovery::open(lp, dir.into(), options, Box::new(on_open));
    }

    pub(crate) fn from_parts(parts: Parts) -> Store {
        let wal = Wal::new(parts.segment, parts.closed);
        let core = Core {
            dir: parts.dir,
            options: parts.options,
            dir_fd: Some(parts.dir_fd),
            lock: Some(parts.lock),
            next_seq: parts.next_seq,
            snapshot_seq: parts.snapshot_seq,
            snapshot_busy: false,
            closing: None,
            closed: false,
            wal,
        };
        Store {
            core: Rc::new(RefCell::new(core)),
        }
    }

    /// Appends `payload` as the next entry and returns its sequence number.
    /// `on_durable` runs from the loop (never inside this call) once the
    /// entry is durable in the sense of the store's [`Durability`], or with
    /// the error that lost it. On `Err` nothing was appended and `on_durable`
    /// is dropped uncalled.
    pub fn append(
        &self,
        lp: &mut Loop,
        payload: &[u8],
        on_durable: impl FnOnce(&mut Loop, io::Result<u64>) + 'static,
    ) -> Result<u64, StoreError> {
        self.append_with(lp, |buf| buf.extend_from_slice(payload), on_durable)
    }

    /// Appends `value` encoded by codec `C`, straight into the batch buffer.
    ///
    /// ```
    /// use ringvisor_behaviours::persist::{BytesCodec, Options, Store};
    /// use ringvisor_runtime::Loop;
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut lp = Loop::new().unwrap();
    /// Store::open(&mut lp, dir.path(), Options::default(), |lp, res| {
    ///     let (store, _) = res.unwrap();
    ///     let seq = store.append_encoded::<BytesCodec, _>(lp, &b"x".to_vec(), |_, r| { r.unwrap(); });
    ///     assert_eq!(seq, Ok(1));
    /// });
    /// lp.run().unwrap();
    /// ```
    pub fn append_encoded<C: Codec<T>, T>(
        &self,
        lp: &mut Loop,
        value: &T,
        on_durable: impl FnOnce(&mut Loop, io::Result<u64>) + 'static,
    ) -> Result<u64, StoreError> {
        self.append_with(lp, |buf| C::encode(value, buf), on_durable)
    }

    /// Appends an entry whose payload `encode` appends to the buffer it is
    /// given (the batch buffer itself). See [`Store::append`].
    pub fn append_with(
        &self,
        lp: &mut Loop,
        encode: impl FnOnce(&mut Vec<u8>),
        on_durable: impl FnOnce(&mut Loop, io::Result<u64>) + 'static,
    ) -> Result<u64, StoreError> {
        let mut guard = self.core.borrow_mut();
        let core = &mut *guard;
        core.check_open()?;
        let seq = core.next_seq;
        if core.options.durability == Durability::Never {
            core.next_seq += 1;
            lp.defer(move |lp| on_durable(lp, Ok(seq)));
            return Ok(seq);
        }
        let on_durable: OnDurable = Box::new(on_durable);
        core.wal.enqueue(&core.options, seq, encode, on_durable)?;
        core.next_seq += 1;
        drop(guard);
        wal::schedule_flush(lp, &self.core);
        Ok(seq)
    }

    /// Makes `state` (the caller's encoding of its state after applying every
    /// entry up to and including `covering_seq`) the new snapshot, then drops
    /// the log segments it covers. `on_done` runs once the snapshot is
    /// durable and the covered segments are unlinked. On `Err` nothing
    /// started and `on_done` is dropped uncalled.
    ///
    /// ```
    /// use ringvisor_behaviours::persist::{Options, Store};
    /// use ringvisor_runtime::Loop;
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut lp = Loop::new().unwrap();
    /// Store::open(&mut lp, dir.path(), Options::default(), |lp, res| {
    ///     let (store, _) = res.unwrap();
    ///     let seq = store.append(lp, b"+1", |_, r| { r.unwrap(); }).unwrap();
    ///     // The state after entry `seq` is "1"; entries after it replay on top.
    ///     store.snapshot(lp, b"1".to_vec(), seq, |_, r| r.unwrap()).unwrap();
    /// });
    /// lp.run().unwrap();
    /// let mut lp = Loop::new().unwrap();
    /// Store::open(&mut lp, dir.path(), Options::default(), |_, res| {
    ///     let (_, recovered) = res.unwrap();
    ///     assert_eq!(recovered.snapshot.as_deref(), Some(&b"1"[..]));
    ///     assert!(recovered.entries.is_empty());
    /// });
    /// lp.run().unwrap();
    /// ```
    pub fn snapshot(
        &self,
        lp: &mut Loop,
        state: Vec<u8>,
        covering_seq: u64,
        on_done: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        self.snapshot_until(lp, state, covering_seq, SnapshotStep::LogCompacted, on_done)
    }

    /// [`Store::snapshot`], stopping after `stop_after`: crash tests use this
    /// to leave the directory as a crash at that point would.
    #[doc(hidden)]
    pub fn snapshot_until(
        &self,
        lp: &mut Loop,
        state: Vec<u8>,
        covering_seq: u64,
        stop_after: SnapshotStep,
        on_done: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        let mut core = self.core.borrow_mut();
        core.check_open()?;
        if core.snapshot_busy {
            return Err(StoreError::SnapshotBusy);
        }
        if covering_seq < core.snapshot_seq || covering_seq >= core.next_seq {
            return Err(StoreError::BadCoveringSeq {
                covering_seq,
                snapshot_seq: core.snapshot_seq,
                next_seq: core.next_seq,
            });
        }
        let max = core.options.snapshot_bytes_max as usize;
        if state.len().saturating_add(SNAPSHOT_HEADER_BYTES) > max {
            return Err(StoreError::TooLarge {
                bytes: state.len(),
                max,
            });
        }
        core.snapshot_busy = true;
        let (dir, dir_fd) = (core.dir.clone(), core.dir_fd());
        drop(core);
        let rc = self.core.clone();
        let on_done: OnDone = Box::new(on_done);
        let written: OnDone = Box::new(move |lp, res| {
            on_snapshot_written(lp, &rc, covering_seq, stop_after, res, on_done)
        });
        snapshot::write(lp, &dir, dir_fd, state, covering_seq, stop_after, written);
        Ok(())
    }

    /// Flushes everything queued, waits for the batch in flight and any
    /// snapshot being written, `fdatasync`s what is unsynced, closes the files
    /// and releases the directory lock; then calls `on_closed` (with the
    /// writer's earlier failure, if it had one). Appends after `close` are
    /// refused with [`StoreError::Closed`]. A [`Durability::Never`] store
    /// keeps nothing unless a snapshot was taken first.
    pub fn close(
        &self,
        lp: &mut Loop,
        on_closed: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        let mut core = self.core.borrow_mut();
        if core.closed || core.closing.is_some() {
            return Err(StoreError::Closed);
        }
        core.closing = Some(Box::new(on_closed));
        drop(core);
        wal::schedule_flush(lp, &self.core);
        Ok(())
    }

    /// The writer's counters.
    pub fn stats(&self) -> StoreStats {
        self.core.borrow().wal.stats
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        self.core.borrow().next_seq
    }

    /// The covering sequence number of the latest durable snapshot (0: none).
    pub fn snapshot_seq(&self) -> u64 {
        self.core.borrow().snapshot_seq
    }

    /// The data directory.
    pub fn dir(&self) -> PathBuf {
        self.core.borrow().dir.clone()
    }

    /// Entries appended and not yet handed to a write (the next batch).
    pub fn queued_entries(&self) -> usize {
        self.core.borrow().wal.queued_entries()
    }

    /// Entries in the batch being written and synced, waiting for their
    /// callbacks ([`Durability::Always`]; `Interval` acknowledges them as the
    /// write is queued).
    pub fn in_flight_entries(&self) -> usize {
        self.core.borrow().wal.in_flight_entries()
    }

    /// True once nothing is queued, in flight or waiting for a sync.
    pub fn is_idle(&self) -> bool {
        let core = self.core.borrow();
        core.wal.is_idle() && !core.snapshot_busy
    }
}

fn on_snapshot_written(
    lp: &mut Loop,
    rc: &Rc<RefCell<Core>>,
    covering_seq: u64,
    stop_after: SnapshotStep,
    res: io::Result<()>,
    on_done: OnDone,
) {
    let complete = stop_after >= SnapshotStep::DirSynced;
    let mut core = rc.borrow_mut();
    if res.is_err() || !complete {
        core.snapshot_busy = false;
        drop(core);
        on_done(lp, res);
        return wal::schedule_flush(lp, rc);
    }
    core.snapshot_seq = covering_seq;
    core.wal.stats.snapshots += 1;
    tracing::debug!(dir = %core.dir.display(), covering_seq, "snapshot durable");
    if stop_after == SnapshotStep::DirSynced {
        core.snapshot_busy = false;
        drop(core);
        on_done(lp, Ok(()));
        return wal::schedule_flush(lp, rc);
    }
    roll_covered(lp, &mut core, covering_seq);
    let covered = match stop_after {
        SnapshotStep::LogCompacted => core.wal.take_covered(covering_seq),
        _ => Vec::new(),
    };
    drop(core);
    let rc = rc.clone();
    unlink_all(lp, covered, move |lp| {
        rc.borrow_mut().snapshot_busy = false;
        on_done(lp, Ok(()));
        wal::schedule_flush(lp, &rc);
    });
}

/// Ends the current segment so the snapshot can drop it: at once if the
/// writer is quiet and every record in it is covered, else at its next write.
fn roll_covered(lp: &mut Loop, core: &mut Core, covering_seq: u64) {
    let wal = &mut core.wal;
    let Some(segment) = &wal.segment else { return };
    if segment.len_bytes == 0 {
        return;
    }
    if !wal.is_quiet() || segment.last_seq > covering_seq {
        wal.roll_requested = true;
        return;
    }
    let segment = wal.segment.take().expect("checked above");
    // Anything unsynced in it is covered by the durable snapshot.
    wal.unsynced = false;
    wal.closed.push(ClosedSegment {
        last_seq: segment.last_seq,
        path: segment.path,
    });
    close_fd(lp, segment.fd, "log segment");
}

/// Called when the writer has nothing in flight: finishes a pending close.
pub(crate) fn on_wal_quiet(lp: &mut Loop, rc: &Rc<RefCell<Core>>) {
    let mut core = rc.borrow_mut();
    let ready = core.closing.is_some()
        && !core.snapshot_busy
        && core.wal.is_quiet()
        && (core.wal.failure.is_some() || core.wal.is_idle());
    if !ready {
        return;
    }
    let on_closed = core.closing.take().expect("checked above");
    core.closed = true;
    core.wal.cancel_timer(lp);
    let result = match &core.wal.failure {
        Some((kind, message)) => Err(io::Error::new(*kind, message.clone())),
        None => Ok(()),
    };
    let mut fds: Vec<OwnedFd> = Vec::new();
    // close_all closes from the back: the lock goes last, so a reopen never
    // meets a half-closed store.
    fds.extend(core.lock.take().map(DirLock::into_fd));
    fds.extend(core.dir_fd.take());
    fds.extend(core.wal.segment.take().map(|s| s.fd));
    drop(core);
    close_all(lp, fds, move |lp| on_closed(lp, result));
}

/// Opens a store and runs the loop until it is open: for tests and tools
/// that are not loop-driven themselves.
#[doc(hidden)]
pub fn open_blocking(
    lp: &mut Loop,
    dir: &Path,
    options: Options,
) -> Result<(Store, Recovered), OpenError> {
    let out = Rc::new(RefCell::new(None));
    let slot = out.clone();
    Store::open(lp, dir, options, move |_, res| {
        *slot.borrow_mut() = Some(res)
    });
    while out.borrow().is_none() {
        lp.run_once().map_err(|source| OpenError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    let result = out.borrow_mut().take().expect("checked above");
    result
}
