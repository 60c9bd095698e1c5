//! The log writer: group commit with double buffering, segment rolling, and
//! the interval sync timer.
//!
//! Two buffers take turns. Appends encode their record straight into the
//! *queue* buffer; the first append of a batch defers a flush to the end of
//! the tick, which hands the queued records (up to the batch limits) to one
//! write and, with [`Durability::Always`], one `fdatasync`. While that batch
//! is in flight, new appends fill the other buffer; when the batch is durable
//! its callbacks run and the next flush is deferred to the end of that tick,
//! so entries appended by those callbacks join the next batch too.
//!
//! At most one op of the writer is in flight at a time (a write, a sync, or
//! the steps of opening a new segment): a sync never races a write, and a
//! segment is never closed under a write.
//!
//! After any write or sync error the writer is failed: every waiting entry
//! gets the error and nothing more is accepted, because after a failed
//! `fdatasync` the page cache no longer says what is on disk.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::{Loop, TimerId};

use super::error::StoreError;
use super::fileio::{adopt, close_fd, unlink_all, write_all_at};
use super::frame::{self, RECORD_HEADER_BYTES};
use super::layout::segment_file_name;
use super::options::{Durability, Options};
use super::store::{self, Core};

/// Runs once an entry is durable (or the log failed).
pub(crate) type OnDurable = Box<dyn FnOnce(&mut Loop, io::Result<u64>)>;

type Shared = Rc<RefCell<Core>>;

/// Counters of a store's log writer; read them with [`super::Store::stats`].
/// `entries_written / fdatasyncs` is the group-commit factor.
///
/// ```
/// use ringvisor_behaviours::persist::StoreStats;
/// let stats = StoreStats { fdatasyncs: 2, entries_written: 128, ..StoreStats::default() };
/// assert_eq!(stats.entries_per_fdatasync(), 64.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `fdatasync` calls issued on log segments.
    pub fdatasyncs: u64,
    /// Entries written to the log.
    pub entries_written: u64,
    /// Batch writes (each one write op).
    pub batches: u64,
    /// Bytes written to the log, headers included.
    pub bytes_written: u64,
    /// Most entries in one batch so far.
    pub batch_entries_peak: u64,
    /// Log segment files created.
    pub segments_created: u64,
    /// Snapshots made durable.
    pub snapshots: u64,
}

impl StoreStats {
    /// Entries written per `fdatasync` (0 if none was issued).
    pub fn entries_per_fdatasync(&self) -> f64 {
        if self.fdatasyncs == 0 {
            return 0.0;
        }
        self.entries_written as f64 / self.fdatasyncs as f64
    }
}

struct Waiter {
    seq: u64,
    /// Where the record ends in the queue buffer.
    end: usize,
    on_durable: OnDurable,
}

/// The segment being appended to.
pub(crate) struct Segment {
    pub(crate) fd: OwnedFd,
    pub(crate) path: PathBuf,
    /// Bytes of valid records; the next write goes here.
    pub(crate) len_bytes: u64,
    /// Last sequence number written (`first_seq - 1` while empty).
    pub(crate) last_seq: u64,
}

/// A segment no longer appended to, kept until a snapshot covers it.
pub(crate) struct ClosedSegment {
    pub(crate) last_seq: u64,
    pub(crate) path: PathBuf,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Rolling,
    Writing,
    Syncing,
}

/// The writer's state; it lives in the store's core.
pub(crate) struct Wal {
    queue_buf: Vec<u8>,
    queue: VecDeque<Waiter>,
    spare_buf: Vec<u8>,
    /// Waiters of the batch in flight (`Always` only).
    in_flight: Vec<Waiter>,
    phase: Phase,
    flush_scheduled: bool,
    pub(crate) segment: Option<Segment>,
    /// Oldest first.
    pub(crate) closed: Vec<ClosedSegment>,
    pub(crate) roll_requested: bool,
    /// Written but not yet `fdatasync`ed (`Interval`).
    pub(crate) unsynced: bool,
    sync_due: bool,
    sync_timer: Option<TimerId>,
    pub(crate) failure: Option<(io::ErrorKind, String)>,
    pub(crate) stats: StoreStats,
}

impl Wal {
    pub(crate) fn new(segment: Option<Segment>, closed: Vec<ClosedSegment>) -> Wal {
        Wal {
            queue_buf: Vec::new(),
            queue: VecDeque::new(),
            spare_buf: Vec::new(),
            in_flight: Vec::new(),
            phase: Phase::Idle,
            flush_scheduled: false,
            segment,
            closed,
            roll_requested: false,
            unsynced: false,
            sync_due: false,
            sync_timer: None,
            failure: None,
            stats: StoreStats::default(),
        }
    }

    /// Frames one entry at the end of the queue buffer, encoding its payload
    /// in place. Refuses (and leaves the queue as it was) past the limits.
    pub(crate) fn enqueue(
        &mut self,
        options: &Options,
        seq: u64,
        encode: impl FnOnce(&mut Vec<u8>),
        on_durable: OnDurable,
    ) -> Result<(), StoreError> {
        let start = frame::begin(&mut self.queue_buf);
        encode(&mut self.queue_buf);
        let payload_bytes = self.queue_buf.len() - start - RECORD_HEADER_BYTES;
        if payload_bytes > options.record_bytes_max {
            self.queue_buf.truncate(start);
            return Err(StoreError::TooLarge {
                bytes: payload_bytes,
                max: options.record_bytes_max,
            });
        }
        if self.queue_buf.len() > options.pending_bytes_max {
            self.queue_buf.truncate(start);
            return Err(StoreError::Full {
                pending_bytes: start,
                max: options.pending_bytes_max,
            });
        }
        frame::finish(&mut self.queue_buf, start, seq);
        let end = self.queue_buf.len();
        self.queue.push_back(Waiter {
            seq,
            end,
            on_durable,
        });
        Ok(())
    }

    pub(crate) fn queued_entries(&self) -> usize {
        self.queue.len()
    }

    pub(crate) fn in_flight_entries(&self) -> usize {
        self.in_flight.len()
    }

    /// True while nothing is queued, in flight, or unsynced.
    pub(crate) fn is_idle(&self) -> bool {
        self.phase == Phase::Idle && self.queue.is_empty() && !self.unsynced
    }

    /// True if no op of the writer is in flight.
    pub(crate) fn is_quiet(&self) -> bool {
        self.phase == Phase::Idle
    }

    /// Unlinkable segments: closed ones wholly covered by `snapshot_seq`.
    pub(crate) fn take_covered(&mut self, snapshot_seq: u64) -> Vec<PathBuf> {
        let covered = self
            .closed
            .iter()
            .take_while(|s| s.last_seq <= snapshot_seq)
            .count();
        self.closed.drain(..covered).map(|s| s.path).collect()
    }

    /// Cancels the interval timer (on close).
    pub(crate) fn cancel_timer(&mut self, lp: &mut Loop) {
        if let Some(id) = self.sync_timer.take() {
            lp.cancel_timer(id);
        }
    }

    /// How many queued entries the next batch takes, and its bytes.
    fn pick_batch(&self, options: &Options) -> (usize, usize) {
        let mut count = 0;
        let mut bytes = 0;
        for waiter in self.queue.iter().take(options.batch_entries_max) {
            if waiter.end > options.batch_bytes_max {
                break;
            }
            count += 1;
            bytes = waiter.end;
        }
        assert!(
            count > 0,
            "one record always fits a batch (validated options)"
        );
        (count, bytes)
    }

    /// Moves the first `count` entries (`bytes` long) out of the queue.
    fn take_batch(&mut self, count: usize, bytes: usize) -> Vec<u8> {
        let mut buf = std::mem::take(&mut self.spare_buf);
        debug_assert!(buf.is_empty());
        if bytes == self.queue_buf.len() {
            std::mem::swap(&mut buf, &mut self.queue_buf);
        } else {
            buf.extend_from_slice(&self.queue_buf[..bytes]);
            self.queue_buf.drain(..bytes);
            for waiter in self.queue.iter_mut().skip(count) {
                waiter.end -= bytes;
            }
        }
        self.in_flight.extend(self.queue.drain(..count));
        buf
    }

    fn needs_roll(&self, options: &Options, batch_bytes: usize) -> bool {
        match &self.segment {
            None => true,
            Some(segment) if segment.len_bytes == 0 => false,
            Some(segment) => {
                self.roll_requested
                    || segment.len_bytes + batch_bytes as u64 > options.segment_bytes_max
            }
        }
    }
}

fn fire(lp: &mut Loop, waiters: impl IntoIterator<Item = Waiter>) {
    for waiter in waiters {
        (waiter.on_durable)(lp, Ok(waiter.seq));
    }
}

/// Defers [`drive`] to the end of this tick, once.
pub(crate) fn schedule_flush(lp: &mut Loop, rc: &Shared) {
    let mut core = rc.borrow_mut();
    if core.wal.flush_scheduled {
        return;
    }
    core.wal.flush_scheduled = true;
    drop(core);
    let rc = rc.clone();
    lp.defer(move |lp| drive(lp, &rc));
}

/// Starts the writer's next op if it is idle: a due sync, a new segment, a
/// batch write, or the final sync of a close. With nothing to do it tells
/// the store (which may be waiting to close).
pub(crate) fn drive(lp: &mut Loop, rc: &Shared) {
    let mut core = rc.borrow_mut();
    core.wal.flush_scheduled = false;
    if core.wal.phase != Phase::Idle {
        return;
    }
    let closing = core.closing.is_some();
    let wal = &core.wal;
    if wal.failure.is_none() {
        let queued = !wal.queue.is_empty();
        if wal.unsynced && (wal.sync_due || (closing && !queued)) {
            return start_sync(lp, rc, &mut core);
        }
        if queued {
            let (count, bytes) = wal.pick_batch(&core.options);
            if !wal.needs_roll(&core.options, bytes) {
                let fire_now = start_write(lp, rc, &mut core, count, bytes);
                drop(core);
                return fire(lp, fire_now);
            }
            if wal.unsynced {
                return start_sync(lp, rc, &mut core);
            }
            return start_roll(lp, rc, &mut core);
        }
    }
    drop(core);
    store::on_wal_quiet(lp, rc);
}

/// Writes the next batch; returns the waiters to acknowledge right away
/// (`Interval`: acknowledged once the write is queued).
fn start_write(
    lp: &mut Loop,
    rc: &Shared,
    core: &mut Core,
    count: usize,
    bytes: usize,
) -> Vec<Waiter> {
    let wal = &mut core.wal;
    let buf = wal.take_batch(count, bytes);
    let last_seq = wal
        .in_flight
        .last()
        .map(|w| w.seq)
        .expect("batch is not empty");
    let segment = wal
        .segment
        .as_mut()
        .expect("a segment is open before a write");
    if segment.len_bytes == 0 {
        wal.roll_requested = false;
    }
    let (fd, offset) = (segment.fd.as_raw_fd(), segment.len_bytes);
    wal.phase = Phase::Writing;
    let rc = rc.clone();
    write_all_at(lp, fd, buf, offset, move |lp, res, buf| {
        on_written(lp, &rc, res, buf, count, bytes, last_seq)
    });
    match core.options.durability {
        Durability::Interval(_) => std::mem::take(&mut core.wal.in_flight),
        Durability::Always | Durability::Never => Vec::new(),
    }
}

fn on_written(
    lp: &mut Loop,
    rc: &Shared,
    res: io::Result<()>,
    mut buf: Vec<u8>,
    count: usize,
    bytes: usize,
    last_seq: u64,
) {
    let mut core = rc.borrow_mut();
    buf.clear();
    core.wal.spare_buf = buf;
    if let Err(error) = res {
        drop(core);
        return fail(lp, rc, error, "write");
    }
    let wal = &mut core.wal;
    let segment = wal
        .segment
        .as_mut()
        .expect("segment stays open during a write");
    segment.len_bytes += bytes as u64;
    segment.last_seq = last_seq;
    let fd = segment.fd.as_raw_fd();
    wal.stats.batches += 1;
    wal.stats.entries_written += count as u64;
    wal.stats.bytes_written += bytes as u64;
    wal.stats.batch_entries_peak = wal.stats.batch_entries_peak.max(count as u64);
    match core.options.durability {
        Durability::Interval(interval) => {
            core.wal.unsynced = true;
            core.wal.phase = Phase::Idle;
            if core.wal.sync_timer.is_none() {
                let timer_rc = rc.clone();
                let id = lp.timer(interval, move |lp| on_sync_timer(lp, &timer_rc));
                core.wal.sync_timer = Some(id);
            }
            drop(core);
            schedule_flush(lp, rc);
        }
        Durability::Always | Durability::Never => {
            core.wal.phase = Phase::Syncing;
            let rc = rc.clone();
            lp.fdatasync(fd, move |lp, res| {
                on_synced(lp, &rc, res.map_err(Into::into))
            });
        }
    }
}

fn on_sync_timer(lp: &mut Loop, rc: &Shared) {
    let mut core = rc.borrow_mut();
    core.wal.sync_timer = None;
    core.wal.sync_due = true;
    drop(core);
    schedule_flush(lp, rc);
}

fn start_sync(lp: &mut Loop, rc: &Shared, core: &mut Core) {
    let wal = &mut core.wal;
    let fd = wal
        .segment
        .as_ref()
        .expect("unsynced data has a segment")
        .fd
        .as_raw_fd();
    wal.phase = Phase::Syncing;
    let rc = rc.clone();
    lp.fdatasync(fd, move |lp, res| {
        on_synced(lp, &rc, res.map_err(Into::into))
    });
}

fn on_synced(lp: &mut Loop, rc: &Shared, res: io::Result<()>) {
    if let Err(error) = res {
        return fail(lp, rc, error, "fdatasync");
    }
    let mut core = rc.borrow_mut();
    let wal = &mut core.wal;
    wal.stats.fdatasyncs += 1;
    wal.unsynced = false;
    wal.sync_due = false;
    wal.phase = Phase::Idle;
    let mut waiters = std::mem::take(&mut wal.in_flight);
    drop(core);
    // Deferred, so entries appended by the callbacks below join the next
    // batch, and a callback that panics cannot stall the writer.
    schedule_flush(lp, rc);
    fire(lp, waiters.drain(..));
    let mut core = rc.borrow_mut();
    if core.wal.in_flight.capacity() == 0 {
        core.wal.in_flight = waiters;
    }
}

/// Opens a new segment named by the next batch's first sequence number,
/// makes its directory entry durable, then goes on writing.
fn start_roll(lp: &mut Loop, rc: &Shared, core: &mut Core) {
    let first_seq = core.wal.queue.front().expect("a batch waits").seq;
    let wal = &mut core.wal;
    wal.phase = Phase::Rolling;
    if let Some(old) = wal.segment.take() {
        wal.closed.push(ClosedSegment {
            last_seq: old.last_seq,
            path: old.path,
        });
        close_fd(lp, old.fd, "log segment");
    }
    let path = core.dir.join(segment_file_name(first_seq));
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let rc = rc.clone();
    lp.open(path.clone(), flags, 0o644, move |lp, res| match res {
        Err(e) => fail(lp, &rc, e.into(), "create segment"),
        Ok(fd) => sync_new_segment(lp, &rc, adopt(fd), path, first_seq),
    });
}

fn sync_new_segment(lp: &mut Loop, rc: &Shared, fd: OwnedFd, path: PathBuf, first_seq: u64) {
    let dir_fd = rc.borrow().dir_fd();
    let rc = rc.clone();
    lp.fsync(dir_fd, move |lp, res| {
        if let Err(e) = res {
            return fail(lp, &rc, e.into(), "fsync directory for new segment");
        }
        let mut core = rc.borrow_mut();
        tracing::debug!(path = %path.display(), "log segment created");
        core.wal.segment = Some(Segment {
            fd,
            path,
            len_bytes: 0,
            last_seq: first_seq - 1,
        });
        core.wal.roll_requested = false;
        core.wal.stats.segments_created += 1;
        core.wal.phase = Phase::Idle;
        let snapshot_seq = core.snapshot_seq;
        let covered = core.wal.take_covered(snapshot_seq);
        drop(core);
        unlink_all(lp, covered, |_| {});
        drive(lp, &rc);
    });
}

/// Fails the writer: every waiting entry gets the error, later appends are
/// refused, and a pending close completes with the error.
fn fail(lp: &mut Loop, rc: &Shared, error: io::Error, what: &str) {
    let mut core = rc.borrow_mut();
    let kind = error.kind();
    let message = format!("log {what} in {} failed: {error}", core.dir.display());
    tracing::error!(%message, "log writer failed; refusing further appends");
    let wal = &mut core.wal;
    wal.failure = Some((kind, message.clone()));
    wal.phase = Phase::Idle;
    wal.queue_buf.clear();
    let mut waiters = std::mem::take(&mut wal.in_flight);
    waiters.extend(wal.queue.drain(..));
    wal.cancel_timer(lp);
    drop(core);
    for waiter in waiters {
        (waiter.on_durable)(lp, Err(io::Error::new(kind, message.clone())));
    }
    store::on_wal_quiet(lp, rc);
}
