//! Opening a shared log's directory: create it, lock it, check every
//! segment, repair a torn tail, and index which streams each segment holds.
//!
//! The rules are the single-store log's (see `recovery.rs`), with two
//! differences. Segments may be missing between others (compaction drops a
//! segment once every stream's snapshot covers it, whatever its neighbours
//! hold), so across segments the record sequence numbers must only
//! increase; within a segment they are contiguous. And entries are not
//! collected here: each stream reads its own when it opens (`stream.rs`).

use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use ringvisor_runtime::Loop;

use super::super::books::{raise, StreamSeqs};
use super::super::error::OpenError;
use super::super::fileio::{adopt, close_all, read_to_end, unlink_all, write_all_at};
use super::super::frame::{decode_at, Decoded};
use super::super::layout::{self, SegmentFile};
use super::super::lock::DirLock;
use super::super::options::{Durability, Options};
use super::super::recovery::{
    corrupt, end_at_bad_record, held_fds, io_error, lock_and_open_dir, SegmentEnd, TornTail,
    SEGMENT_READ_BYTES_MAX,
};
use super::super::wal::{ClosedSegment, Segment, STREAM_PREFIX_BYTES};
use super::core::{LogCore, Parts, Shared};
use super::record::split_prefix;

pub(crate) type OnOpen = Box<dyn FnOnce(&mut Loop, Result<(Shared, Option<TornTail>), OpenError>)>;

/// Starts opening the shared log in `dir`; `on_open` runs from the loop.
pub(crate) fn open(lp: &mut Loop, dir: PathBuf, options: Options, on_open: OnOpen) {
    if let Err(e) = super::validate(&options) {
        lp.defer(move |lp| on_open(lp, Err(OpenError::InvalidOptions(e))));
        return;
    }
    let job = LogRecovery {
        dir,
        options,
        on_open,
        lock: None,
        dir_fd: None,
        segments: Vec::new(),
        next_segment: 0,
        last_seq: 0,
        closed: Vec::new(),
        last: None,
        torn_tail: None,
    };
    lp.mkdir(job.dir.clone(), 0o755, move |lp, res| match res {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            let error = io_error(&job.dir, e);
            job.fail(lp, error)
        }
        _ => job.lock(lp),
    });
}

struct LogRecovery {
    dir: PathBuf,
    options: Options,
    on_open: OnOpen,
    lock: Option<DirLock>,
    dir_fd: Option<OwnedFd>,
    segments: Vec<SegmentFile>,
    next_segment: usize,
    /// The highest record sequence number seen so far.
    last_seq: u64,
    closed: Vec<ClosedSegment>,
    last: Option<Segment>,
    torn_tail: Option<TornTail>,
}

impl LogRecovery {
    fn fail(mut self, lp: &mut Loop, error: OpenError) {
        let fds = held_fds(self.lock.take(), self.dir_fd.take(), self.last.take());
        let on_open = self.on_open;
        close_all(lp, fds, move |lp| on_open(lp, Err(error)));
    }

    fn lock(self, lp: &mut Loop) {
        let dir = self.dir.clone();
        lock_and_open_dir(lp, dir, move |lp, res| match res {
            Err(error) => self.fail(lp, error),
            Ok((lock, dir_fd)) => {
                let mut job = self;
                job.lock = Some(lock);
                job.dir_fd = Some(dir_fd);
                job.list(lp)
            }
        });
    }

    /// Lists the directory (a control-plane `readdir`), then reads segments.
    fn list(mut self, lp: &mut Loop) {
        match layout::list(&self.dir) {
            Ok(listing) => {
                self.segments = listing.segments;
                self.read_next_segment(lp)
            }
            Err(e) => {
                let error = io_error(&self.dir, e);
                self.fail(lp, error)
            }
        }
    }

    fn read_next_segment(self, lp: &mut Loop) {
        let Some(file) = self.segments.get(self.next_segment).cloned() else {
            return self.finish(lp);
        };
        let is_last = self.next_segment + 1 == self.segments.len();
        let flags = if is_last {
            libc::O_RDWR
        } else {
            libc::O_RDONLY
        };
        lp.open(file.path.clone(), flags, 0, move |lp, res| {
            let fd = match res {
                Ok(fd) => adopt(fd),
                Err(e) => return self.fail(lp, io_error(&file.path, e)),
            };
            let raw = fd.as_raw_fd();
            read_to_end(lp, raw, SEGMENT_READ_BYTES_MAX, move |lp, res| match res {
                Err(e) => {
                    close_all(lp, vec![fd], |_| {});
                    self.fail(lp, io_error(&file.path, e))
                }
                Ok(bytes) => self.scan_segment(lp, file, fd, bytes, is_last),
            });
        });
    }

    fn scan_segment(
        mut self,
        lp: &mut Loop,
        file: SegmentFile,
        fd: OwnedFd,
        bytes: Vec<u8>,
        is_last: bool,
    ) {
        if file.first_seq <= self.last_seq {
            close_all(lp, vec![fd], |_| {});
            let reason = format!(
                "segment starting at seq {} overlaps records up to {}",
                file.first_seq, self.last_seq
            );
            return self.fail(lp, corrupt(&file, 0, reason));
        }
        let mut streams = StreamSeqs::new();
        let max = self.options.record_bytes_max + STREAM_PREFIX_BYTES;
        let end = match scan_records(&bytes, &file, is_last, max, &mut streams) {
            Err(error) => {
                close_all(lp, vec![fd], |_| {});
                return self.fail(lp, error);
            }
            Ok(end) => end,
        };
        self.next_segment += 1;
        self.last_seq = end.last_seq;
        if !is_last {
            close_all(lp, vec![fd], |_| {});
            self.closed.push(ClosedSegment {
                last_seq: end.last_seq,
                path: file.path,
                len_bytes: end.valid_bytes as u64,
                streams,
            });
            return self.read_next_segment(lp);
        }
        let segment = Segment {
            fd,
            path: file.path,
            len_bytes: end.valid_bytes as u64,
            last_seq: end.last_seq,
            streams,
        };
        let torn_bytes = bytes.len() - end.valid_bytes;
        if end.torn && torn_bytes > 0 {
            return self.zero_torn_tail(lp, segment, torn_bytes);
        }
        self.last = Some(segment);
        self.read_next_segment(lp)
    }

    /// Overwrites a torn tail with zeros and syncs, so a later recovery finds
    /// a clean end where this one cut the log.
    fn zero_torn_tail(mut self, lp: &mut Loop, segment: Segment, torn_bytes: usize) {
        let offset = segment.len_bytes;
        tracing::warn!(
            file = %segment.path.display(),
            offset,
            bytes = torn_bytes,
            "torn tail in the shared log: cutting it off (its entries were never acknowledged as durable)"
        );
        self.torn_tail = Some(TornTail {
            file: segment.path.clone(),
            offset,
            bytes: torn_bytes as u64,
        });
        let fd = segment.fd.as_raw_fd();
        let path = segment.path.clone();
        self.last = Some(segment);
        write_all_at(lp, fd, vec![0u8; torn_bytes], offset, move |lp, res, _| {
            if let Err(e) = res {
                return self.fail(lp, io_error(&path, e));
            }
            lp.fdatasync(fd, move |lp, res| match res {
                Err(e) => self.fail(lp, io_error(&path, e)),
                Ok(()) => self.read_next_segment(lp),
            });
        });
    }

    fn finish(mut self, lp: &mut Loop) {
        let mut last = self.last.take();
        if self.options.durability == Durability::Never {
            // Nothing is written in this mode: the last segment only waits
            // for snapshots to cover it.
            if let Some(segment) = last.take() {
                self.closed.push(ClosedSegment {
                    last_seq: segment.last_seq,
                    path: segment.path,
                    len_bytes: segment.len_bytes,
                    streams: segment.streams,
                });
                close_all(lp, vec![segment.fd], |_| {});
            }
        }
        // Empty closed segments hold nothing any stream needs.
        let (empty, closed): (Vec<_>, Vec<_>) = std::mem::take(&mut self.closed)
            .into_iter()
            .partition(|s| s.streams.is_empty());
        let parts = Parts {
            dir: self.dir,
            options: self.options,
            dir_fd: self.dir_fd.take().expect("opened before listing"),
            lock: self.lock.take().expect("locked before listing"),
            next_seq: self.last_seq + 1,
            segment: last,
            closed,
        };
        tracing::debug!(dir = %parts.dir.display(), next_seq = parts.next_seq, "shared log opened");
        let core = LogCore::from_parts(parts);
        let (on_open, torn_tail) = (self.on_open, self.torn_tail);
        let empty = empty.into_iter().map(|s| s.path).collect();
        unlink_all(lp, empty, move |lp| on_open(lp, Ok((core, torn_tail))));
    }
}

/// Checks one segment's records and notes each stream's highest entry.
fn scan_records(
    bytes: &[u8],
    file: &SegmentFile,
    is_last: bool,
    record_bytes_max: usize,
    streams: &mut StreamSeqs,
) -> Result<SegmentEnd, OpenError> {
    let mut offset = 0;
    let mut last_seq = file.first_seq - 1;
    loop {
        let reason = match decode_at(bytes, offset, record_bytes_max) {
            Decoded::Record { seq, payload, next } => {
                if seq != last_seq + 1 {
                    let reason = format!("seq {seq} where {} was expected", last_seq + 1);
                    return Err(corrupt(file, offset, reason));
                }
                let Some((stream, stream_seq, _)) = split_prefix(payload) else {
                    let reason = "record shorter than its stream prefix".to_string();
                    return Err(corrupt(file, offset, reason));
                };
                raise(streams, stream, stream_seq);
                last_seq = seq;
                offset = next;
                continue;
            }
            Decoded::Incomplete => "incomplete record",
            Decoded::Bad(reason) => reason,
        };
        return end_at_bad_record(
            bytes,
            file,
            is_last,
            record_bytes_max,
            offset,
            last_seq,
            reason,
        );
    }
}
