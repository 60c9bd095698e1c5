//! The log writer: group commit with double buffering, segment rolling, and
//! the interval sync timer. It serves one [`Host`]: a store's own log, or a
//! log shared by several stores (streams) of one loop.
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
//! A shared log's records carry their stream (see [`STREAM_PREFIX_BYTES`]),
//! and the writer keeps per-stream books: entries queued and in flight (the
//! barrier a stream's recovery waits on), counters, and each segment's
//! highest entry of each stream (what compaction needs).
//!
//! After any write or sync error the writer is failed: every waiting entry
//! gets the error and nothing more is accepted, because after a failed
//! `fdatasync` the page cache no longer says what is on disk.

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::{Loop, TimerId};

use super::books::{Books, StreamBook, StreamSeqs};
use super::error::StoreError;
use super::fileio::{adopt, close_fd, unlink_all, write_all_at};
use super::frame::{self, RECORD_HEADER_BYTES};
use super::layout::segment_file_name;
use super::options::{Durability, Options};
use super::stats::StoreStats;

/// Bytes a shared log's record payload starts with: `stream u32 | stream
/// seq u64` (little endian), then the entry.
pub(crate) const STREAM_PREFIX_BYTES: usize = 12;

/// Runs once an entry is durable (or the log failed).
pub(crate) type OnDurable = Box<dyn FnOnce(&mut Loop, io::Result<u64>)>;

/// What a writer serves. It lives in an `Rc<RefCell<_>>` that the writer's
/// in-flight ops keep alive; no borrow of it is held while a caller's
/// callback runs.
pub(crate) trait Host: Sized + 'static {
    fn wal(&mut self) -> &mut Wal;
    fn wal_ref(&self) -> &Wal;
    /// A close waits for the writer to drain: sync what is unsynced, stop.
    fn closing(&self) -> bool;
    /// Closed segments that may be unlinked now (after a roll).
    fn take_unlinkable(&mut self) -> Vec<PathBuf>;
    /// The writer has no op in flight and is about to pick its next one.
    fn on_idle(lp: &mut Loop, rc: &Rc<RefCell<Self>>);
    /// The writer has nothing left to do, or failed.
    fn on_quiet(lp: &mut Loop, rc: &Rc<RefCell<Self>>);
}

struct Waiter {
    /// The record's sequence number in this log.
    seq: u64,
    /// What `on_durable` gets: the entry's sequence number in its stream
    /// (for a store's own log, `seq` itself).
    ack: u64,
    stream: u32,
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
    /// Shared logs: the highest entry of each stream in it.
    pub(crate) streams: StreamSeqs,
}

/// A segment no longer appended to, kept until snapshots cover it.
pub(crate) struct ClosedSegment {
    pub(crate) last_seq: u64,
    pub(crate) path: PathBuf,
    /// Its length in valid bytes.
    pub(crate) len_bytes: u64,
    /// Shared logs: the highest entry of each stream in it.
    pub(crate) streams: StreamSeqs,
}

impl Segment {
    fn into_closed(self, lp: &mut Loop) -> ClosedSegment {
        close_fd(lp, self.fd, "log segment");
        ClosedSegment {
            last_seq: self.last_seq,
            path: self.path,
            len_bytes: self.len_bytes,
            streams: self.streams,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    Idle,
    Rolling,
    Writing,
    Syncing,
}

/// The writer's state; it lives in its host.
pub(crate) struct Wal {
    pub(crate) options: Options,
    dir: PathBuf,
    /// The log directory's fd, owned by the host and open while it is.
    dir_fd: RawFd,
    /// Records carry their stream (a shared log).
    tagged: bool,
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
    pub(crate) sync_due: bool,
    sync_timer: Option<TimerId>,
    pub(crate) failure: Option<(io::ErrorKind, String)>,
    pub(crate) stats: StoreStats,
    /// Shared logs: per-stream books.
    pub(crate) books: Books,
}

impl Wal {
    pub(crate) fn new(
        options: Options,
        dir: PathBuf,
        dir_fd: RawFd,
        tagged: bool,
        segment: Option<Segment>,
        closed: Vec<ClosedSegment>,
    ) -> Wal {
        Wal {
            options,
            dir,
            dir_fd,
            tagged,
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
            books: Books::default(),
        }
    }

    /// The books of `stream`, if it has any.
    pub(crate) fn book_ref(&self, stream: u32) -> Option<&StreamBook> {
        self.books.get(stream)
    }

    /// Frames one entry at the end of the queue buffer, encoding its payload
    /// in place. Refuses (and leaves the queue as it was) past the limits.
    /// `ack` is what `on_durable` gets; a shared log's record also carries
    /// `stream` and `ack`.
    pub(crate) fn enqueue(
        &mut self,
        seq: u64,
        stream: u32,
        ack: u64,
        encode: impl FnOnce(&mut Vec<u8>),
        on_durable: OnDurable,
    ) -> Result<(), StoreError> {
        let start = frame::begin(&mut self.queue_buf);
        let prefix_bytes = if self.tagged {
            self.queue_buf.extend_from_slice(&stream.to_le_bytes());
            self.queue_buf.extend_from_slice(&ack.to_le_bytes());
            STREAM_PREFIX_BYTES
        } else {
            0
        };
        encode(&mut self.queue_buf);
        let payload_bytes = self.queue_buf.len() - start - RECORD_HEADER_BYTES - prefix_bytes;
        if payload_bytes > self.options.record_bytes_max {
            self.queue_buf.truncate(start);
            return Err(StoreError::TooLarge {
                bytes: payload_bytes,
                max: self.options.record_bytes_max,
            });
        }
        if self.queue_buf.len() > self.options.pending_bytes_max {
            self.queue_buf.truncate(start);
            return Err(StoreError::Full {
                pending_bytes: start,
                max: self.options.pending_bytes_max,
            });
        }
        frame::finish(&mut self.queue_buf, start, seq);
        let end = self.queue_buf.len();
        self.queue.push_back(Waiter {
            seq,
            ack,
            stream,
            end,
            on_durable,
        });
        if self.tagged {
            self.books.book(stream).queued += 1;
        }
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

    /// The fd of the open segment, to close it.
    pub(crate) fn take_segment_fd(&mut self) -> Option<OwnedFd> {
        self.segment.take().map(|s| s.fd)
    }

    /// How many queued entries the next batch takes, and its bytes.
    fn pick_batch(&self) -> (usize, usize) {
        let mut count = 0;
        let mut bytes = 0;
        for waiter in self.queue.iter().take(self.options.batch_entries_max) {
            if waiter.end > self.options.batch_bytes_max {
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
        if self.tagged {
            self.books.share(
                self.queue
                    .iter()
                    .take(count)
                    .map(|w| (w.stream, w.ack, w.end)),
            );
        }
        self.in_flight.extend(self.queue.drain(..count));
        buf
    }

    fn needs_roll(&self, batch_bytes: usize) -> bool {
        match &self.segment {
            None => true,
            Some(segment) if segment.len_bytes == 0 => false,
            Some(segment) => {
                self.roll_requested
                    || segment.len_bytes + batch_bytes as u64 > self.options.segment_bytes_max
            }
        }
    }
}

fn fire(lp: &mut Loop, waiters: impl IntoIterator<Item = Waiter>) {
    for waiter in waiters {
        (waiter.on_durable)(lp, Ok(waiter.ack));
    }
}

/// Defers [`drive`] to the end of this tick, once.
pub(crate) fn schedule_flush<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    if wal.flush_scheduled {
        return;
    }
    wal.flush_scheduled = true;
    drop(host);
    let rc = rc.clone();
    lp.defer(move |lp| drive(lp, &rc));
}

/// Starts the writer's next op if it is idle: a due sync, a new segment, a
/// batch write, or the final sync of a close. With nothing to do it tells
/// the host (which may be waiting to close).
pub(crate) fn drive<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>) {
    {
        let mut host = rc.borrow_mut();
        let wal = host.wal();
        wal.flush_scheduled = false;
        if wal.phase != Phase::Idle {
            return;
        }
    }
    H::on_idle(lp, rc);
    let mut host = rc.borrow_mut();
    let closing = host.closing();
    let wal = host.wal();
    if wal.phase == Phase::Idle && wal.failure.is_none() {
        let queued = !wal.queue.is_empty();
        if wal.unsynced && (wal.sync_due || (closing && !queued)) {
            return start_sync(lp, rc, wal);
        }
        if queued {
            let (count, bytes) = wal.pick_batch();
            if !wal.needs_roll(bytes) {
                let fire_now = start_write(lp, rc, wal, count, bytes);
                drop(host);
                return fire(lp, fire_now);
            }
            if wal.unsynced {
                return start_sync(lp, rc, wal);
            }
            return start_roll(lp, rc, wal);
        }
    }
    drop(host);
    H::on_quiet(lp, rc);
}

/// Writes the next batch; returns the waiters to acknowledge right away
/// (`Interval`: acknowledged once the write is queued).
fn start_write<H: Host>(
    lp: &mut Loop,
    rc: &Rc<RefCell<H>>,
    wal: &mut Wal,
    count: usize,
    bytes: usize,
) -> Vec<Waiter> {
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
    match wal.options.durability {
        Durability::Interval(_) => std::mem::take(&mut wal.in_flight),
        Durability::Always | Durability::Never => Vec::new(),
    }
}

fn on_written<H: Host>(
    lp: &mut Loop,
    rc: &Rc<RefCell<H>>,
    res: io::Result<()>,
    mut buf: Vec<u8>,
    count: usize,
    bytes: usize,
    last_seq: u64,
) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    buf.clear();
    wal.spare_buf = buf;
    if let Err(error) = res {
        drop(host);
        return fail(lp, rc, error, "write");
    }
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
    if wal.tagged {
        let segment = wal.segment.as_mut().expect("checked above");
        wal.books.written(&mut segment.streams);
    }
    match wal.options.durability {
        Durability::Interval(interval) => {
            wal.unsynced = true;
            wal.phase = Phase::Idle;
            // Written: a recovery from here on reads these entries back.
            wal.books.release();
            if wal.sync_timer.is_none() {
                let timer_rc = rc.clone();
                let id = lp.timer(interval, move |lp| on_sync_timer(lp, &timer_rc));
                wal.sync_timer = Some(id);
            }
            drop(host);
            schedule_flush(lp, rc);
        }
        Durability::Always | Durability::Never => {
            wal.phase = Phase::Syncing;
            let rc = rc.clone();
            lp.fdatasync(fd, move |lp, res| {
                on_synced(lp, &rc, res.map_err(Into::into))
            });
        }
    }
}

fn on_sync_timer<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    wal.sync_timer = None;
    wal.sync_due = true;
    drop(host);
    schedule_flush(lp, rc);
}

fn start_sync<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, wal: &mut Wal) {
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

fn on_synced<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, res: io::Result<()>) {
    if let Err(error) = res {
        return fail(lp, rc, error, "fdatasync");
    }
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    wal.stats.fdatasyncs += 1;
    wal.unsynced = false;
    wal.sync_due = false;
    wal.phase = Phase::Idle;
    if wal.tagged {
        wal.books.synced();
        wal.books.release();
    }
    let mut waiters = std::mem::take(&mut wal.in_flight);
    drop(host);
    // Deferred, so entries appended by the callbacks below join the next
    // batch, and a callback that panics cannot stall the writer.
    schedule_flush(lp, rc);
    fire(lp, waiters.drain(..));
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    if wal.in_flight.capacity() == 0 {
        wal.in_flight = waiters;
    }
}

/// Opens a new segment named by the next batch's first sequence number,
/// makes its directory entry durable, then goes on writing.
fn start_roll<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, wal: &mut Wal) {
    let first_seq = wal.queue.front().expect("a batch waits").seq;
    wal.phase = Phase::Rolling;
    if let Some(old) = wal.segment.take() {
        let closed = old.into_closed(lp);
        wal.closed.push(closed);
    }
    let path = wal.dir.join(segment_file_name(first_seq));
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_EXCL;
    let rc = rc.clone();
    lp.open(path.clone(), flags, 0o644, move |lp, res| match res {
        Err(e) => fail(lp, &rc, e.into(), "create segment"),
        Ok(fd) => sync_new_segment(lp, &rc, adopt(fd), path, first_seq),
    });
}

fn sync_new_segment<H: Host>(
    lp: &mut Loop,
    rc: &Rc<RefCell<H>>,
    fd: OwnedFd,
    path: PathBuf,
    first_seq: u64,
) {
    let dir_fd = rc.borrow().wal_ref().dir_fd;
    let rc = rc.clone();
    lp.fsync(dir_fd, move |lp, res| {
        if let Err(e) = res {
            return fail(lp, &rc, e.into(), "fsync directory for new segment");
        }
        let mut host = rc.borrow_mut();
        tracing::debug!(path = %path.display(), "log segment created");
        let wal = host.wal();
        wal.segment = Some(Segment {
            fd,
            path,
            len_bytes: 0,
            last_seq: first_seq - 1,
            streams: Vec::new(),
        });
        wal.roll_requested = false;
        wal.stats.segments_created += 1;
        wal.phase = Phase::Idle;
        let covered = host.take_unlinkable();
        drop(host);
        unlink_all(lp, covered, |_| {});
        drive(lp, &rc);
    });
}

/// Fails the writer: every waiting entry gets the error, later appends are
/// refused, and a pending close completes with the error.
fn fail<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, error: io::Error, what: &str) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    let kind = error.kind();
    let message = format!("log {what} in {} failed: {error}", wal.dir.display());
    tracing::error!(%message, "log writer failed; refusing further appends");
    wal.failure = Some((kind, message.clone()));
    wal.phase = Phase::Idle;
    wal.queue_buf.clear();
    wal.books.fail();
    let mut waiters = std::mem::take(&mut wal.in_flight);
    waiters.extend(wal.queue.drain(..));
    wal.cancel_timer(lp);
    drop(host);
    for waiter in waiters {
        (waiter.on_durable)(lp, Err(io::Error::new(kind, message.clone())));
    }
    H::on_quiet(lp, rc);
}
