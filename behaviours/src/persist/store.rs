//! The façade: [`Store`], a stream of entries with snapshots, backed by its
//! own log (see `own.rs`) or by a stream of a [`super::SharedLog`] (see
//! `shared/stream.rs`). Both keep the same contract.

use std::cell::RefCell;
use std::io;
use std::path::{Path, PathBuf};
use std::rc::Rc;

use ringvisor_runtime::Loop;

use super::codec::Codec;
use super::error::{OpenError, StoreError};
use super::options::{Durability, Options};
use super::own::{self, Shared};
use super::recovery::{self, Recovered};
use super::shared::Handle;
use super::snapshot::SnapshotStep;
use super::stats::StoreStats;

/// An open data directory (or a stream of a [`super::SharedLog`]): append
/// entries, write snapshots, close.
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
    inner: Inner,
}

enum Inner {
    Own(Shared),
    Stream(Handle),
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store")
            .field("dir", &self.dir())
            .field("next_seq", &self.next_seq())
            .field("snapshot_seq", &self.snapshot_seq())
            .finish_non_exhaustive()
    }
}

impl Store {
    /// Opens (creating it if missing; its parent must exist) and locks the
    /// data directory `dir`, then reads the latest valid snapshot and every
    /// log record after it, and hands the store and what it recovered to
    /// `on_open`. Fails with [`OpenError::Locked`] if another open store holds
    /// the directory, [`OpenError::Corrupt`] if data is damaged in a way that
    /// is not a torn tail. (For a stream of a shared log, see
    /// [`super::SharedLog::open_stream`].)
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

    pub(crate) fn own(core: Shared) -> Store {
        Store {
            inner: Inner::Own(core),
        }
    }

    pub(crate) fn stream(handle: Handle) -> Store {
        Store {
            inner: Inner::Stream(handle),
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
        let on_durable = Box::new(on_durable);
        match &self.inner {
            Inner::Own(core) => own::append_with(core, lp, encode, on_durable),
            Inner::Stream(handle) => handle.append_with(lp, encode, on_durable),
        }
    }

    /// Takes the next sequence number for an entry without writing it, if
    /// the store is memory-only ([`Durability::Never`]: it writes no entry,
    /// so an entry is at once as durable as it will ever be); `Ok(None)`,
    /// taking nothing, for a store that logs its entries (append those with
    /// [`Store::append_with`]). A memory-only store's owner learns here what
    /// `append_with`'s callback would tell it a tick later, without that
    /// callback boxed and deferred per entry. Refused as `append_with` would
    /// be (closed, failed).
    ///
    /// ```
    /// use ringvisor_behaviours::persist::{Durability, Options, Store};
    /// use ringvisor_runtime::Loop;
    /// let dir = tempfile::tempdir().unwrap();
    /// let mut lp = Loop::new().unwrap();
    /// let memory_only = Options { durability: Durability::Never, ..Options::default() };
    /// Store::open(&mut lp, dir.path(), memory_only, |_, res| {
    ///     let (store, _) = res.unwrap();
    ///     assert_eq!(store.append_unlogged(), Ok(Some(1)));
    ///     assert_eq!(store.next_seq(), 2);
    /// });
    /// lp.run().unwrap();
    /// ```
    pub fn append_unlogged(&self) -> Result<Option<u64>, StoreError> {
        match &self.inner {
            Inner::Own(core) => own::append_unlogged(core),
            Inner::Stream(handle) => handle.append_unlogged(),
        }
    }

    /// Makes `state` (the caller's encoding of its state after applying every
    /// entry up to and including `covering_seq`) the new snapshot, then drops
    /// the log segments it covers (for a stream of a shared log: the segments
    /// every stream's snapshot now covers). `on_done` runs once the snapshot
    /// is durable and the covered segments are unlinked. On `Err` nothing
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
    /// to leave the directory as a crash at that point would. (A stream of a
    /// shared log never rolls the shared log for its snapshot:
    /// `LogRolled` stops where `DirSynced` does.)
    #[doc(hidden)]
    pub fn snapshot_until(
        &self,
        lp: &mut Loop,
        state: Vec<u8>,
        covering_seq: u64,
        stop_after: SnapshotStep,
        on_done: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        let on_done = Box::new(on_done);
        match &self.inner {
            Inner::Own(core) => {
                own::snapshot_until(core, lp, state, covering_seq, stop_after, on_done)
            }
            Inner::Stream(handle) => {
                handle.snapshot_until(lp, state, covering_seq, stop_after, on_done)
            }
        }
    }

    /// Flushes everything queued, waits for the batch in flight and any
    /// snapshot being written, `fdatasync`s what is unsynced, closes the files
    /// and releases the directory lock (for a stream: detaches it from the
    /// shared log, which stays open); then calls `on_closed` (with the
    /// writer's earlier failure, if it had one). Appends after `close` are
    /// refused with [`StoreError::Closed`]. A [`Durability::Never`] store
    /// keeps nothing unless a snapshot was taken first.
    pub fn close(
        &self,
        lp: &mut Loop,
        on_closed: impl FnOnce(&mut Loop, io::Result<()>) + 'static,
    ) -> Result<(), StoreError> {
        let on_closed = Box::new(on_closed);
        match &self.inner {
            Inner::Own(core) => own::close(core, lp, on_closed),
            Inner::Stream(handle) => handle.close(lp, on_closed),
        }
    }

    /// The writer's counters (for a stream of a shared log: the stream's).
    pub fn stats(&self) -> StoreStats {
        match &self.inner {
            Inner::Own(core) => core.borrow().wal.stats,
            Inner::Stream(handle) => handle.stats(),
        }
    }

    /// The sequence number the next append gets.
    pub fn next_seq(&self) -> u64 {
        match &self.inner {
            Inner::Own(core) => core.borrow().next_seq,
            Inner::Stream(handle) => handle.next_seq(),
        }
    }

    /// The covering sequence number of the latest durable snapshot (0: none).
    pub fn snapshot_seq(&self) -> u64 {
        match &self.inner {
            Inner::Own(core) => core.borrow().snapshot_seq,
            Inner::Stream(handle) => handle.snapshot_seq(),
        }
    }

    /// The data directory (for a stream: its snapshot directory).
    pub fn dir(&self) -> PathBuf {
        match &self.inner {
            Inner::Own(core) => core.borrow().dir.clone(),
            Inner::Stream(handle) => handle.dir(),
        }
    }

    /// When appends are acknowledged.
    pub fn durability(&self) -> Durability {
        match &self.inner {
            Inner::Own(core) => core.borrow().options.durability,
            Inner::Stream(handle) => handle.durability(),
        }
    }

    /// Entries appended and not yet handed to a write (the next batch).
    pub fn queued_entries(&self) -> usize {
        match &self.inner {
            Inner::Own(core) => core.borrow().wal.queued_entries(),
            Inner::Stream(handle) => handle.queued_entries(),
        }
    }

    /// Entries in the batch being written and synced, waiting for their
    /// callbacks ([`Durability::Always`]; `Interval` acknowledges them as the
    /// write is queued).
    pub fn in_flight_entries(&self) -> usize {
        match &self.inner {
            Inner::Own(core) => core.borrow().wal.in_flight_entries(),
            Inner::Stream(handle) => handle.in_flight_entries(),
        }
    }

    /// True once nothing is queued, in flight or waiting for a sync.
    pub fn is_idle(&self) -> bool {
        match &self.inner {
            Inner::Own(core) => {
                let core = core.borrow();
                core.wal.is_idle() && !core.snapshot_busy
            }
            Inner::Stream(handle) => handle.is_idle(),
        }
    }
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
