//! The shared log's core: its writer, the streams' states, the barriers that
//! stream opens and closes wait on, and the compaction rule.
//!
//! Invariants:
//! - A stream is attached to at most one [`super::super::Store`] (or one open
//!   in progress) at a time; `generation` tells a stale handle from the
//!   current one.
//! - A barrier of stream `s` runs only once nothing of `s` is queued or in
//!   flight in the writer and no snapshot of `s` is being written: from then
//!   on the log holds exactly the entries of `s` that any later recovery
//!   finds (`s` appends nothing while it is detached).
//! - A closed segment is unlinked only when every stream with records in it
//!   is known (opened since the log was) and its snapshot covers them.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::Loop;

use super::super::error::StoreError;
use super::super::fileio::close_all;
use super::super::lock::DirLock;
use super::super::options::Options;
use super::super::wal::{ClosedSegment, Host, Segment, Wal};

pub(crate) type OnDone = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

pub(crate) type Shared = Rc<RefCell<LogCore>>;

/// One stream's state; it outlives the stream's handles (compaction needs
/// its snapshot position after a handle is gone).
#[derive(Default)]
pub(crate) struct StreamState {
    /// A handle (or an open in progress) holds the stream.
    pub(crate) attached: bool,
    /// Bumped at every attach.
    pub(crate) generation: u64,
    /// Opened since the log was: `snapshot_seq` is its snapshot's.
    pub(crate) known: bool,
    pub(crate) snapshot_seq: u64,
    pub(crate) next_seq: u64,
    pub(crate) snapshot_busy: bool,
    pub(crate) snapshots: u64,
    /// Set by a close of the current handle.
    pub(crate) closing: bool,
    /// The stream's snapshot directory and its fd (while attached).
    pub(crate) dir: PathBuf,
    pub(crate) dir_fd: Option<OwnedFd>,
}

/// Work that waits until a stream's entries are settled.
pub(crate) struct Barrier {
    pub(crate) stream: u32,
    /// Also wait until every written entry is synced (a close).
    pub(crate) synced: bool,
    pub(crate) run: OnDone,
}

/// Everything a shared log owns.
pub(crate) struct LogCore {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    dir_fd: Option<OwnedFd>,
    lock: Option<DirLock>,
    /// The log's next record sequence number (all streams).
    pub(crate) next_seq: u64,
    pub(crate) streams: Vec<StreamState>,
    barriers: Vec<Barrier>,
    closing: Option<OnDone>,
    pub(crate) closed: bool,
    pub(crate) wal: Wal,
}

/// What opening the log hands over.
pub(crate) struct Parts {
    pub(crate) dir: PathBuf,
    pub(crate) options: Options,
    pub(crate) dir_fd: OwnedFd,
    pub(crate) lock: DirLock,
    pub(crate) next_seq: u64,
    pub(crate) segment: Option<Segment>,
    pub(crate) closed: Vec<ClosedSegment>,
}

impl LogCore {
    pub(crate) fn from_parts(parts: Parts) -> Shared {
        let wal = Wal::new(
            parts.options.clone(),
            parts.dir.clone(),
            parts.dir_fd.as_raw_fd(),
            true,
            parts.segment,
            parts.closed,
        );
        Rc::new(RefCell::new(LogCore {
            dir: parts.dir,
            options: parts.options,
            dir_fd: Some(parts.dir_fd),
            lock: Some(parts.lock),
            next_seq: parts.next_seq,
            streams: Vec::new(),
            barriers: Vec::new(),
            closing: None,
            closed: false,
            wal,
        }))
    }

    pub(crate) fn stream(&mut self, stream: u32) -> &mut StreamState {
        let index = stream as usize;
        if index >= self.streams.len() {
            self.streams.resize_with(index + 1, StreamState::default);
        }
        &mut self.streams[index]
    }

    /// Refuses work once the log is closing, closed or failed.
    pub(crate) fn check_open(&self) -> Result<(), StoreError> {
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

    pub(crate) fn failure(&self) -> Option<io::Error> {
        let (kind, message) = self.wal.failure.as_ref()?;
        Some(io::Error::new(*kind, message.clone()))
    }

    pub(crate) fn add_barrier(&mut self, barrier: Barrier) {
        self.barriers.push(barrier);
    }

    pub(crate) fn start_close(&mut self, on_closed: OnDone) -> Result<(), StoreError> {
        if self.closed || self.closing.is_some() {
            return Err(StoreError::Closed);
        }
        self.closing = Some(on_closed);
        Ok(())
    }

    fn settled(&self, stream: u32) -> bool {
        let book = self.wal.book_ref(stream).is_none_or(|b| b.is_settled());
        let busy = self
            .streams
            .get(stream as usize)
            .is_some_and(|s| s.snapshot_busy);
        book && !busy
    }

    /// Takes the barriers that may run now; asks for a sync that a close
    /// waits for.
    fn take_ready_barriers(&mut self) -> Vec<(Barrier, io::Result<()>)> {
        if let Some((kind, message)) = &self.wal.failure {
            let (kind, message) = (*kind, message.clone());
            return std::mem::take(&mut self.barriers)
                .into_iter()
                .map(|b| (b, Err(io::Error::new(kind, message.clone()))))
                .collect();
        }
        let mut ready = Vec::new();
        let mut index = 0;
        while index < self.barriers.len() {
            let barrier = &self.barriers[index];
            if !self.settled(barrier.stream) {
                index += 1;
                continue;
            }
            if barrier.synced && self.wal.unsynced {
                self.wal.sync_due = true;
                index += 1;
                continue;
            }
            ready.push((self.barriers.remove(index), Ok(())));
        }
        ready
    }

    fn streams_busy(&self) -> bool {
        !self.barriers.is_empty() || self.streams.iter().any(|s| s.snapshot_busy)
    }
}

/// Runs the barriers that are ready, each from the loop on its own.
fn release_barriers(lp: &mut Loop, rc: &Shared) {
    let ready = rc.borrow_mut().take_ready_barriers();
    for (barrier, result) in ready {
        lp.defer(move |lp| (barrier.run)(lp, result));
    }
}

impl Host for LogCore {
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
        let streams = &self.streams;
        let covered = |segment: &ClosedSegment| {
            segment.streams.iter().all(|&(stream, max)| {
                streams
                    .get(stream as usize)
                    .is_some_and(|s| s.known && s.snapshot_seq >= max)
            })
        };
        let (gone, kept): (Vec<_>, Vec<_>) = std::mem::take(&mut self.wal.closed)
            .into_iter()
            .partition(covered);
        self.wal.closed = kept;
        gone.into_iter().map(|s| s.path).collect()
    }

    fn on_idle(lp: &mut Loop, rc: &Shared) {
        release_barriers(lp, rc)
    }

    fn on_quiet(lp: &mut Loop, rc: &Shared) {
        release_barriers(lp, rc);
        on_log_quiet(lp, rc)
    }
}

/// Finishes a pending close of the whole log once the writer is drained and
/// no stream has work pending.
fn on_log_quiet(lp: &mut Loop, rc: &Shared) {
    let mut core = rc.borrow_mut();
    let ready = core.closing.is_some()
        && core.wal.is_quiet()
        && (core.wal.failure.is_some() || (core.wal.is_idle() && !core.streams_busy()));
    if !ready {
        return;
    }
    let on_closed = core.closing.take().expect("checked above");
    core.closed = true;
    core.wal.cancel_timer(lp);
    let result = core.failure().map_or(Ok(()), Err);
    let mut fds: Vec<OwnedFd> = Vec::new();
    // close_all closes from the back: the lock goes last.
    fds.extend(core.lock.take().map(DirLock::into_fd));
    fds.extend(core.dir_fd.take());
    fds.extend(core.wal.take_segment_fd());
    for stream in &mut core.streams {
        fds.extend(stream.dir_fd.take());
    }
    drop(core);
    close_all(lp, fds, move |lp| on_closed(lp, result));
}
