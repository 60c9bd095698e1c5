//! The log writer: group commit with pipelined batches, segment rolling,
//! and the interval sync timer. It serves one [`Host`]: a store's own log,
//! or a log shared by several stores (streams) of one loop.
//!
//! Appends encode their record straight into the *queue* buffer; the first
//! append of a tick defers a flush to the end of the tick, which seals the
//! queued records (up to the batch limits) into a batch. Up to
//! [`Options::batches_in_flight_max`] batches are in flight: each is written
//! once the previous batch's write has completed (writes go one at a time,
//! in log order, so the file only ever grows by a prefix of the log) and,
//! with [`Durability::Always`], `fdatasync`ed right after its write, while
//! earlier batches' syncs may still run. A batch's callbacks run once its
//! own sync and every earlier batch's have completed, in log order (see
//! [`pipeline`]). When a batch is done the next flush is deferred to the end
//! of that tick, so entries appended by its callbacks join the next batch.
//!
//! A standalone sync (`Interval`, a close) or the steps of opening a new
//! segment run only while no batch is in flight, and no batch starts while
//! one of them runs: a segment is never closed under a write or a sync.
//!
//! A shared log's records carry their stream (see [`STREAM_PREFIX_BYTES`]),
//! and the writer keeps per-stream books: entries queued and in flight (the
//! barrier a stream's recovery waits on), counters, and each segment's
//! highest entry of each stream (what compaction needs).
//!
//! After any write or sync error the writer is failed: every waiting entry
//! gets the error and nothing more is accepted, because after a failed
//! `fdatasync` the page cache no longer says what is on disk.

mod drive;
mod pipeline;

use std::cell::RefCell;
use std::collections::VecDeque;
use std::io;
use std::os::fd::{OwnedFd, RawFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::{Loop, TimerId};

use self::pipeline::Pipeline;
use super::books::{Books, StreamBook, StreamSeqs};
use super::error::StoreError;
use super::fileio::close_fd;
use super::frame::{self, RECORD_HEADER_BYTES};
use super::options::Options;
use super::stats::StoreStats;

pub(crate) use self::drive::schedule_flush;

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

/// What the writer does besides its pipeline of batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Phase {
    /// Nothing, or batches only.
    Idle,
    /// Opening a new segment (no batch in flight).
    Rolling,
    /// A standalone `fdatasync` (no batch in flight).
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
    /// Emptied batch buffers, reused.
    spare_bufs: Vec<Vec<u8>>,
    /// Batches sealed and not yet done.
    pipeline: Pipeline,
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
            spare_bufs: Vec::new(),
            pipeline: Pipeline::default(),
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

    /// Entries in batches in flight still waiting to be acknowledged.
    pub(crate) fn in_flight_entries(&self) -> usize {
        self.pipeline.waiting_entries()
    }

    /// Batches sealed and not yet done.
    pub(crate) fn batches_in_flight(&self) -> usize {
        self.pipeline.len()
    }

    /// True while nothing is queued, in flight, or unsynced.
    pub(crate) fn is_idle(&self) -> bool {
        self.is_quiet() && self.queue.is_empty() && !self.unsynced
    }

    /// True if no op of the writer is in flight.
    pub(crate) fn is_quiet(&self) -> bool {
        self.phase == Phase::Idle && self.pipeline.is_empty() && self.pipeline.ops_in_flight == 0
    }

    /// Where the next batch starts in the segment: after its valid bytes
    /// and the batches in flight.
    fn next_offset(&self) -> Option<u64> {
        let segment = self.segment.as_ref()?;
        Some(segment.len_bytes + self.pipeline.bytes())
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

    /// Moves the first `count` entries (`bytes` long) out of the queue into
    /// a sealed batch, its waiters in it.
    fn take_batch(&mut self, count: usize, bytes: usize) -> pipeline::Batch {
        let mut buf = self.spare_bufs.pop().unwrap_or_default();
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
        let waiters: Vec<Waiter> = self.queue.drain(..count).collect();
        let last_seq = waiters.last().expect("batch is not empty").seq;
        pipeline::Batch {
            waiters,
            count,
            bytes,
            last_seq,
            buf: Some(buf),
            stage: pipeline::Stage::Sealed,
        }
    }

    fn needs_roll(&self, batch_bytes: usize) -> bool {
        match self.next_offset() {
            None => true,
            Some(0) => false,
            Some(offset) => {
                self.roll_requested || offset + batch_bytes as u64 > self.options.segment_bytes_max
            }
        }
    }
}
