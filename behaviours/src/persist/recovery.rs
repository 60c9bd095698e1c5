//! Opening a data directory: create it, lock it, read the latest snapshot and
//! every log record after it, repair a torn tail, and build the [`Store`].
//!
//! Every read, write and unlink goes through loop ops; each step continues
//! from the previous op's completion. The rules for what is on disk:
//! - `snapshot.tmp` is never read; it is removed.
//! - `snapshot` must be valid (it only ever appears by rename after being
//!   synced): a damaged one is [`OpenError::Corrupt`].
//! - Segments wholly covered by the snapshot are removed unread. Records a
//!   snapshot covers are skipped; the rest must continue its sequence with no
//!   gap or overlap.
//! - A record that is incomplete or fails its checks ends the log if nothing
//!   but zeros follows it, or if it is in the last segment and no valid
//!   record follows it (a torn tail: warned about, then zeroed through the
//!   loop so the next write lands right after the last good record).
//!   Otherwise it is corruption, reported with file and offset.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};

use ringvisor_runtime::Loop;

use super::error::OpenError;
use super::fileio::{adopt, close_all, read_to_end, unlink_all, write_all_at};
use super::frame::{decode_at, find_valid_after, Decoded};
use super::layout::{self, SegmentFile, LOCK_FILE};
use super::lock::DirLock;
use super::options::{Durability, Options};
use super::own::{Core, Parts};
use super::snapshot;
use super::store::Store;
use super::wal::{ClosedSegment, Segment};

/// Largest log segment recovery reads (segments written under a larger
/// `segment_bytes_max` than today's still open).
pub(crate) const SEGMENT_READ_BYTES_MAX: u64 = 1 << 32;

/// What [`Store::open`] recovered: apply `entries` in order to `snapshot`
/// (or to the initial state, if there is none) to get the state back.
///
/// ```
/// use ringvisor_behaviours::persist::Recovered;
/// let r = Recovered::default();
/// assert_eq!((r.snapshot_seq, r.next_seq), (0, 1));
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Recovered {
    /// The latest valid snapshot's state bytes.
    pub snapshot: Option<Vec<u8>>,
    /// The sequence number the snapshot covers (0 if none).
    pub snapshot_seq: u64,
    /// Every log entry after the snapshot, `(seq, payload)`, seq ascending
    /// and contiguous from `snapshot_seq + 1`.
    pub entries: Vec<(u64, Vec<u8>)>,
    /// The sequence number the next append gets.
    pub next_seq: u64,
    /// The torn tail cut off the log, if there was one.
    pub torn_tail: Option<TornTail>,
}

impl Default for Recovered {
    fn default() -> Recovered {
        Recovered {
            snapshot: None,
            snapshot_seq: 0,
            entries: Vec::new(),
            next_seq: 1,
            torn_tail: None,
        }
    }
}

/// A torn tail found (and cut off) by recovery.
///
/// ```
/// use ringvisor_behaviours::persist::TornTail;
/// let t = TornTail { file: "wal.log".into(), offset: 32, bytes: 7 };
/// assert_eq!(t.offset + t.bytes, 39);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TornTail {
    /// The segment it was in.
    pub file: PathBuf,
    /// Where it started: the end of the last good record.
    pub offset: u64,
    /// How many bytes were cut.
    pub bytes: u64,
}

type OnOpen = Box<dyn FnOnce(&mut Loop, Result<(Store, Recovered), OpenError>)>;

/// The fds a failed open holds (lock file, directory, last segment), to
/// close before reporting the failure.
pub(crate) fn held_fds(
    lock: Option<DirLock>,
    dir_fd: Option<OwnedFd>,
    last: Option<Segment>,
) -> Vec<OwnedFd> {
    let mut fds: Vec<OwnedFd> = Vec::new();
    fds.extend(lock.map(DirLock::into_fd));
    fds.extend(dir_fd);
    fds.extend(last.map(|s| s.fd));
    fds
}

/// Takes `dir`'s lock file (refusing a second opener) and opens the
/// directory itself; on failure, what was acquired is closed before `then`
/// runs. The first steps of opening a store's own log and a shared log.
pub(crate) fn lock_and_open_dir(
    lp: &mut Loop,
    dir: PathBuf,
    then: impl FnOnce(&mut Loop, Result<(DirLock, OwnedFd), OpenError>) + 'static,
) {
    let path = dir.join(LOCK_FILE);
    let flags = libc::O_RDWR | libc::O_CREAT;
    lp.open(path.clone(), flags, 0o644, move |lp, res| {
        let lock = match res.map_err(|e| io_error(&path, e)) {
            Ok(fd) => DirLock::acquire(adopt(fd), &dir),
            Err(error) => Err(error),
        };
        let lock = match lock {
            Ok(lock) => lock,
            Err(error) => return then(lp, Err(error)),
        };
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        lp.open(dir.clone(), flags, 0, move |lp, res| match res {
            Ok(fd) => then(lp, Ok((lock, adopt(fd)))),
            Err(e) => {
                let error = io_error(&dir, e);
                close_all(lp, vec![lock.into_fd()], move |lp| then(lp, Err(error)));
            }
        });
    });
}

/// Reads and decodes the snapshot at `path` (at most `limit_bytes`): its
/// covering sequence number and the state's bytes. Shared by a store's own
/// recovery and a shared log's streams.
pub(crate) fn read_snapshot(
    lp: &mut Loop,
    path: PathBuf,
    limit_bytes: u64,
    then: impl FnOnce(&mut Loop, Result<(u64, Vec<u8>), OpenError>) + 'static,
) {
    lp.open(path.clone(), libc::O_RDONLY, 0, move |lp, res| {
        let fd = match res {
            Ok(fd) => adopt(fd),
            Err(e) => return then(lp, Err(io_error(&path, e))),
        };
        read_to_end(lp, fd.as_raw_fd(), limit_bytes, move |lp, res| {
            close_all(lp, vec![fd], |_| {});
            let decoded = match res {
                Err(e) => Err(io_error(&path, e)),
                Ok(bytes) => match snapshot::decode(&bytes) {
                    Ok((covering_seq, state)) => Ok((covering_seq, state.to_vec())),
                    Err(reason) => Err(OpenError::Corrupt {
                        file: path,
                        offset: 0,
                        reason: format!("snapshot: {reason}"),
                    }),
                },
            };
            then(lp, decoded)
        });
    });
}

pub(crate) fn io_error(path: &Path, error: impl Into<io::Error>) -> OpenError {
    OpenError::Io {
        path: path.to_path_buf(),
        source: error.into(),
    }
}

/// Starts opening `dir`; `on_open` runs from the loop, never inside this call.
pub(crate) fn open(lp: &mut Loop, dir: PathBuf, options: Options, on_open: OnOpen) {
    if let Err(e) = options.validate() {
        lp.defer(move |lp| on_open(lp, Err(OpenError::InvalidOptions(e))));
        return;
    }
    let job = Recovery {
        dir,
        options,
        on_open,
        lock: None,
        dir_fd: None,
        segments: Vec::new(),
        next_segment: 0,
        unlink: Vec::new(),
        recovered: Recovered::default(),
        closed: Vec::new(),
        last: None,
    };
    lp.mkdir(job.dir.clone(), 0o755, move |lp, res| match res {
        Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
            let error = io_error(&job.dir, e);
            job.fail(lp, error)
        }
        _ => job.lock(lp),
    });
}

struct Recovery {
    dir: PathBuf,
    options: Options,
    on_open: OnOpen,
    lock: Option<DirLock>,
    dir_fd: Option<OwnedFd>,
    /// Segments to read, in order.
    segments: Vec<SegmentFile>,
    next_segment: usize,
    /// Temp files and covered segments, removed before the store opens.
    unlink: Vec<PathBuf>,
    recovered: Recovered,
    closed: Vec<ClosedSegment>,
    /// The last segment, kept open (read-write) for the writer.
    last: Option<Segment>,
}

impl Recovery {
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

    /// Lists the directory (a control-plane `readdir`), then reads the snapshot.
    fn list(mut self, lp: &mut Loop) {
        let listing = match layout::list(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                let error = io_error(&self.dir, e);
                return self.fail(lp, error);
            }
        };
        self.unlink.extend(listing.temp_files);
        self.segments = listing.segments;
        match listing.snapshot {
            None => self.plan_segments(lp),
            Some(path) => self.read_snapshot(lp, path),
        }
    }

    fn read_snapshot(self, lp: &mut Loop, path: PathBuf) {
        let limit = self.options.snapshot_bytes_max;
        read_snapshot(lp, path, limit, move |lp, res| match res {
            Err(error) => self.fail(lp, error),
            Ok((covering_seq, state)) => {
                let mut job = self;
                job.recovered.snapshot = Some(state);
                job.recovered.snapshot_seq = covering_seq;
                job.plan_segments(lp)
            }
        });
    }

    /// Drops (unread) every segment but the last whose records the snapshot
    /// wholly covers: all records before the next segment's first one.
    fn plan_segments(mut self, lp: &mut Loop) {
        let snapshot_seq = self.recovered.snapshot_seq;
        self.recovered.next_seq = snapshot_seq + 1;
        let count = self.segments.len();
        let covered = (0..count.saturating_sub(1))
            .take_while(|&i| self.segments[i + 1].first_seq - 1 <= snapshot_seq)
            .count();
        self.unlink
            .extend(self.segments.drain(..covered).map(|s| s.path));
        self.read_next_segment(lp)
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
            read_to_end(
                lp,
                fd.as_raw_fd(),
                SEGMENT_READ_BYTES_MAX,
                move |lp, res| match res {
                    Err(e) => {
                        close_all(lp, vec![fd], |_| {});
                        self.fail(lp, io_error(&file.path, e))
                    }
                    Ok(bytes) => self.scan_segment(lp, file, fd, bytes, is_last),
                },
            );
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
        let scan = scan_records(&bytes, &file, is_last, &self.options, &mut self.recovered);
        let end = match scan {
            Err(error) => {
                close_all(lp, vec![fd], |_| {});
                return self.fail(lp, error);
            }
            Ok(end) => end,
        };
        self.next_segment += 1;
        let covered = end.last_seq <= self.recovered.snapshot_seq;
        if !is_last || covered {
            close_all(lp, vec![fd], |_| {});
            if covered {
                self.unlink.push(file.path);
            } else {
                self.closed.push(ClosedSegment {
                    last_seq: end.last_seq,
                    path: file.path,
                    len_bytes: end.valid_bytes as u64,
                    streams: Vec::new(),
                });
            }
            return self.read_next_segment(lp);
        }
        let segment = Segment {
            fd,
            path: file.path,
            len_bytes: end.valid_bytes as u64,
            last_seq: end.last_seq,
            streams: Vec::new(),
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
            "torn tail in the log: cutting it off (its entries were never acknowledged as durable)"
        );
        self.recovered.torn_tail = Some(TornTail {
            file: segment.path.clone(),
            offset,
            bytes: torn_bytes as u64,
        });
        let fd = segment.fd.as_raw_fd();
        self.last = Some(segment);
        write_all_at(lp, fd, vec![0u8; torn_bytes], offset, move |lp, res, _| {
            if let Err(e) = res {
                let path = self.last.as_ref().expect("kept above").path.clone();
                return self.fail(lp, io_error(&path, e));
            }
            lp.fdatasync(fd, move |lp, res| match res {
                Err(e) => {
                    let path = self.last.as_ref().expect("kept above").path.clone();
                    self.fail(lp, io_error(&path, e))
                }
                Ok(()) => self.read_next_segment(lp),
            });
        });
    }

    /// Removes leftovers, then hands over the store.
    fn finish(mut self, lp: &mut Loop) {
        let unlink = std::mem::take(&mut self.unlink);
        unlink_all(lp, unlink, move |lp| self.open_store(lp));
    }

    fn open_store(mut self, lp: &mut Loop) {
        let mut last = self.last.take();
        if self.options.durability == Durability::Never {
            // Nothing is written in this mode: the last segment only waits
            // for a snapshot to cover it.
            if let Some(segment) = last.take() {
                self.closed.push(ClosedSegment {
                    last_seq: segment.last_seq,
                    path: segment.path,
                    len_bytes: segment.len_bytes,
                    streams: Vec::new(),
                });
                close_all(lp, vec![segment.fd], |_| {});
            }
        }
        let parts = Parts {
            dir: self.dir,
            options: self.options,
            dir_fd: self.dir_fd.take().expect("opened before listing"),
            lock: self.lock.take().expect("locked before listing"),
            next_seq: self.recovered.next_seq,
            snapshot_seq: self.recovered.snapshot_seq,
            segment: last,
            closed: self.closed,
        };
        tracing::debug!(
            dir = %parts.dir.display(),
            snapshot_seq = parts.snapshot_seq,
            entries = self.recovered.entries.len(),
            next_seq = parts.next_seq,
            "store recovered"
        );
        (self.on_open)(
            lp,
            Ok((Store::own(Core::from_parts(parts)), self.recovered)),
        )
    }
}

/// Where a segment's valid records end.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct SegmentEnd {
    pub(crate) valid_bytes: usize,
    /// Last valid record's seq (`first_seq - 1` if none).
    pub(crate) last_seq: u64,
    /// The bytes after `valid_bytes` are a torn record (not just zeros).
    pub(crate) torn: bool,
}

pub(crate) fn corrupt(file: &SegmentFile, offset: usize, reason: String) -> OpenError {
    OpenError::Corrupt {
        file: file.path.clone(),
        offset: offset as u64,
        reason,
    }
}

/// Checks and collects one segment's records into `recovered` (those after
/// the snapshot), advancing `recovered.next_seq`.
fn scan_records(
    bytes: &[u8],
    file: &SegmentFile,
    is_last: bool,
    options: &Options,
    recovered: &mut Recovered,
) -> Result<SegmentEnd, OpenError> {
    let floor = recovered.snapshot_seq + 1;
    if file.first_seq > recovered.next_seq {
        let reason = format!(
            "log gap: expected seq {} next, segment starts at {}",
            recovered.next_seq, file.first_seq
        );
        return Err(corrupt(file, 0, reason));
    }
    if file.first_seq < recovered.next_seq && recovered.next_seq > floor {
        let reason = format!(
            "segment starting at seq {} overlaps records up to {}",
            file.first_seq,
            recovered.next_seq - 1
        );
        return Err(corrupt(file, 0, reason));
    }
    let mut offset = 0;
    let mut last_seq = file.first_seq - 1;
    loop {
        let reason = match decode_at(bytes, offset, options.record_bytes_max) {
            Decoded::Record { seq, payload, next } => {
                if seq != last_seq + 1 {
                    let reason = format!("seq {seq} where {} was expected", last_seq + 1);
                    return Err(corrupt(file, offset, reason));
                }
                if seq == recovered.next_seq {
                    recovered.entries.push((seq, payload.to_vec()));
                    recovered.next_seq += 1;
                }
                last_seq = seq;
                offset = next;
                continue;
            }
            Decoded::Incomplete => "incomplete record",
            Decoded::Bad(reason) => reason,
        };
        let max = options.record_bytes_max;
        return end_at_bad_record(bytes, file, is_last, max, offset, last_seq, reason);
    }
}

/// Decides what the bytes from the first bad record at `offset` on are: a
/// clean end (zeros), a torn tail, or corruption.
pub(crate) fn end_at_bad_record(
    bytes: &[u8],
    file: &SegmentFile,
    is_last: bool,
    record_bytes_max: usize,
    offset: usize,
    last_seq: u64,
    reason: &str,
) -> Result<SegmentEnd, OpenError> {
    let end = |torn: bool| SegmentEnd {
        valid_bytes: offset,
        last_seq,
        torn,
    };
    if bytes[offset..].iter().all(|&b| b == 0) {
        return Ok(end(false));
    }
    if !is_last {
        let reason = format!("{reason} in a segment that is not the last");
        return Err(corrupt(file, offset, reason));
    }
    if let Some((at, seq)) = find_valid_after(bytes, offset, last_seq, record_bytes_max) {
        let reason = format!("{reason}, followed by a valid record (seq {seq} at offset {at})");
        return Err(corrupt(file, offset, reason));
    }
    Ok(end(true))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::persist::frame::encode;

    fn log(seqs: std::ops::RangeInclusive<u64>) -> Vec<u8> {
        let mut buf = Vec::new();
        for seq in seqs {
            encode(seq, format!("entry {seq}").as_bytes(), &mut buf);
        }
        buf
    }

    fn scan(
        bytes: &[u8],
        first_seq: u64,
        is_last: bool,
        recovered: &mut Recovered,
    ) -> Result<SegmentEnd, OpenError> {
        let file = SegmentFile {
            first_seq,
            path: PathBuf::from("seg"),
        };
        scan_records(bytes, &file, is_last, &Options::default(), recovered)
    }

    #[test]
    fn records_covered_by_the_snapshot_are_skipped() {
        let mut recovered = Recovered {
            snapshot_seq: 3,
            next_seq: 4,
            ..Recovered::default()
        };
        let end = scan(&log(1..=5), 1, true, &mut recovered).unwrap();
        assert_eq!(end.last_seq, 5);
        assert_eq!(
            recovered.entries.iter().map(|e| e.0).collect::<Vec<_>>(),
            vec![4, 5]
        );
        assert_eq!(recovered.next_seq, 6);
    }

    #[test]
    fn a_gap_between_segments_is_corruption() {
        let mut recovered = Recovered::default();
        let error = scan(&log(5..=6), 5, true, &mut recovered).unwrap_err();
        assert!(error.to_string().contains("log gap"), "{error}");
    }

    #[test]
    fn a_zero_tail_is_a_clean_end_even_mid_log() {
        let mut bytes = log(1..=2);
        let valid = bytes.len();
        bytes.extend_from_slice(&[0u8; 100]);
        let mut recovered = Recovered::default();
        let end = scan(&bytes, 1, false, &mut recovered).unwrap();
        assert_eq!(
            end,
            SegmentEnd {
                valid_bytes: valid,
                last_seq: 2,
                torn: false
            }
        );
    }

    #[test]
    fn a_torn_record_in_an_earlier_segment_is_corruption() {
        let mut bytes = log(1..=2);
        bytes.truncate(bytes.len() - 1);
        let error = scan(&bytes, 1, false, &mut Recovered::default()).unwrap_err();
        assert!(
            matches!(error, OpenError::Corrupt { offset, .. } if offset > 0),
            "{error}"
        );
    }
}
