//! A store with its own log: the core behind [`super::Store::open`], its
//! snapshots (which roll and compact its log) and its close.
//!
//! The core is shared between the store and its in-flight ops through an
//! `Rc<RefCell<Core>>`. No borrow of the core is ever held while a caller's
//! callback runs, so callbacks may append, snapshot or close freely. The core
//! (and with it every fd) lives until the last op holding it has completed.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::Loop;

use super::error::StoreError;
use super::fileio::{close_all, unlink_all};
use super::lock::DirLock;
use super::options::{Durability, Options};
use super::snapshot::{self, SnapshotStep, SNAPSHOT_HEADER_BYTES};
use super::wal::{self, ClosedSegment, Host, OnDurable, Segment, Wal};

pub(crate) type OnDone = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

pub(crate) type Shared = Rc<RefCell<Core>>;

/// Everything a store with its own log owns.
pub(crate) struct Core {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    dir_fd: Option<OwnedFd>,
    lock: Option<DirLock>,
    pub(crate) next_seq: u64,
    /// Covering sequence number of the latest durable snapshot (0: none).
    pub(crate) snapshot_seq: u64,
    pub(crate) snapshot_busy: bool,
    /// Set by `close`; taken when the close completes.
    closing: Option<OnDone>,
    closed: bool,
    pub(crate) wal: Wal,
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

impl Core {
    pub(crate) fn from_parts(parts: Parts) -> Shared {
        let wal = Wal::new(
            parts.options.clone(),
            parts.dir.clone(),
            parts.dir_fd.as_raw_fd(),
            false,
            parts.segment,
            parts.closed,
        );
        Rc::new(RefCell::new(Core {
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
        }))
    }

    fn dir_fd(&self) -> RawFd {
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

impl Host for Core {
    fn wal(&mut self) -> &mut Wal {
        &mut self.wal
    }

    fn wal_ref(&self) -> &Wal {
        &self.wal
    }

    fn closing(&self) -> bool {
        self.closing.is_some()
    }

    fn take_unlinkable(&mut self) -> Vec<PathBuf> {
        let snapshot_seq = self.snapshot_seq;
        self.wal.take_covered(snapshot_seq)
    }

    fn on_idle(_lp: &mut Loop, _rc: &Shared) {}

    fn on_quiet(lp: &mut Loop, rc: &Shared) {
        on_wal_quiet(lp, rc)
    }
}

/// See [`Store::append_unlogged`](super::Store::append_unlogged).
pub(crate) fn append_unlogged(rc: &Shared) -> Result<Option<u64>, StoreError> {
    let mut core = rc.borrow_mut();
    core.check_open()?;
    if core.options.durability != Durability::Never {
        return Ok(None);
    }
    let seq = core.next_seq;
    core.next_seq += 1;
    Ok(Some(seq))
}

pub(crate) fn append_with(
    rc: &Shared,
    lp: &mut Loop,
    encode: impl FnOnce(&mut Vec<u8>),
    on_durable: OnDurable,
) -> Result<u64, StoreError> {
    let mut guard = rc.borrow_mut();
    let core = &mut *guard;
    core.check_open()?;
    let seq = core.next_seq;
    if core.options.durability == Durability::Never {
        core.next_seq += 1;
        lp.defer(move |lp| on_durable(lp, Ok(seq)));
        return Ok(seq);
    }
    core.wal.enqueue(seq, 0, seq, encode, on_durable)?;
    core.next_seq += 1;
    drop(guard);
    wal::schedule_flush(lp, rc);
    Ok(seq)
}

pub(crate) fn snapshot_until(
    rc: &Shared,
    lp: &mut Loop,
    state: Vec<u8>,
    covering_seq: u64,
    stop_after: SnapshotStep,
    on_done: OnDone,
) -> Result<(), StoreError> {
    let mut core = rc.borrow_mut();
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
    let rc = rc.clone();
    let written: OnDone = Box::new(move |lp, res| {
        on_snapshot_written(lp, &rc, covering_seq, stop_after, res, on_done)
    });
    snapshot::write(lp, &dir, dir_fd, state, covering_seq, stop_after, written);
    Ok(())
}

pub(crate) fn close(rc: &Shared, lp: &mut Loop, on_closed: OnDone) -> Result<(), StoreError> {
    let mut core = rc.borrow_mut();
    if core.closed || core.closing.is_some() {
        return Err(StoreError::Closed);
    }
    core.closing = Some(on_closed);
    drop(core);
    wal::schedule_flush(lp, rc);
    Ok(())
}

fn on_snapshot_written(
    lp: &mut Loop,
    rc: &Shared,
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
        len_bytes: segment.len_bytes,
        streams: Vec::new(),
    });
    super::fileio::close_fd(lp, segment.fd, "log segment");
}

/// Called when the writer has nothing in flight: finishes a pending close.
fn on_wal_quiet(lp: &mut Loop, rc: &Shared) {
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
    fds.extend(core.wal.take_segment_fd());
    drop(core);
    close_all(lp, fds, move |lp| on_closed(lp, result));
}
