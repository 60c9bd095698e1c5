//! One stream of a shared log: opening it (wait for its entries to settle,
//! read its snapshot, then its records from the shared segments) and what
//! its [`Store`] does (append, snapshot, close).
//!
//! A stream's recovery waits behind a barrier (see `core.rs`): a stream
//! restarted while the writer still holds entries of its previous life
//! reads the log only once those entries are written (and, with
//! [`Durability::Always`], synced) or lost with a failed writer. What it
//! recovers is then exactly what a later recovery finds.

use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;

use ringvisor_runtime::Loop;

use super::super::books::StreamSeqs;
use super::super::error::{OpenError, StoreError};
use super::super::fileio::{adopt, close_all, close_fd, read_to_end, unlink_all};
use super::super::frame::{decode_at, Decoded};
use super::super::layout::{self, SegmentFile};
use super::super::options::Durability;
use super::super::recovery::{corrupt, io_error, read_snapshot, Recovered, SEGMENT_READ_BYTES_MAX};
use super::super::snapshot::{self, SnapshotStep, SNAPSHOT_HEADER_BYTES};
use super::super::stats::StoreStats;
use super::super::store::Store;
use super::super::wal::{self, Host, OnDurable, STREAM_PREFIX_BYTES};
use super::core::{Barrier, OnDone, Shared};
use super::record::split_prefix;
use super::STREAMS_MAX;

pub(crate) type OnOpen = Box<dyn FnOnce(&mut Loop, Result<(Store, Recovered), OpenError>)>;

/// A store's hold on its stream; dropping it detaches the stream (entries
/// it appended still go out).
pub(crate) struct Handle {
    pub(crate) log: Shared,
    pub(crate) stream: u32,
    generation: u64,
}

impl Drop for Handle {
    fn drop(&mut self) {
        // Never borrowed while a caller's code (which may drop a store) runs.
        let Ok(mut core) = self.log.try_borrow_mut() else {
            debug_assert!(false, "shared log borrowed while a store is dropped");
            return;
        };
        let state = core.stream(self.stream);
        if state.generation == self.generation {
            state.attached = false;
        }
    }
}

/// Starts opening `stream`; `on_open` runs from the loop, never inside.
pub(crate) fn open(lp: &mut Loop, log: &Shared, stream: u32, dir: PathBuf, on_open: OnOpen) {
    let mut core = log.borrow_mut();
    let refused = if stream >= STREAMS_MAX {
        let message = format!("stream {stream} is not below STREAMS_MAX ({STREAMS_MAX})");
        Some(OpenError::InvalidOptions(io::Error::new(
            io::ErrorKind::InvalidInput,
            message,
        )))
    } else if let Err(e) = core.check_open() {
        Some(io_error(&core.dir, io::Error::other(e.to_string())))
    } else if core.stream(stream).attached {
        Some(OpenError::Locked { dir: dir.clone() })
    } else {
        None
    };
    if let Some(error) = refused {
        drop(core);
        lp.defer(move |lp| on_open(lp, Err(error)));
        return;
    }
    let state = core.stream(stream);
    state.attached = true;
    state.generation += 1;
    let job = StreamOpen {
        log: log.clone(),
        stream,
        generation: state.generation,
        dir,
        on_open,
        dir_fd: None,
        recovered: Recovered::default(),
        to_read: Vec::new(),
    };
    let run: OnDone = Box::new(move |lp, res| match res {
        Err(e) => {
            let error = io_error(&job.dir, e);
            job.fail(lp, error)
        }
        Ok(()) => job.make_dir(lp),
    });
    core.add_barrier(Barrier {
        stream,
        synced: false,
        run,
    });
    drop(core);
    wal::schedule_flush(lp, log);
}

struct StreamOpen {
    log: Shared,
    stream: u32,
    generation: u64,
    dir: PathBuf,
    on_open: OnOpen,
    dir_fd: Option<OwnedFd>,
    recovered: Recovered,
    /// Segments holding entries after the snapshot: path and valid bytes,
    /// in log order (read from the back).
    to_read: Vec<(PathBuf, u64)>,
}

impl StreamOpen {
    fn fail(self, lp: &mut Loop, error: OpenError) {
        let mut core = self.log.borrow_mut();
        let state = core.stream(self.stream);
        if state.generation == self.generation {
            state.attached = false;
        }
        drop(core);
        let on_open = self.on_open;
        let fds: Vec<OwnedFd> = self.dir_fd.into_iter().collect();
        close_all(lp, fds, move |lp| on_open(lp, Err(error)));
    }

    fn make_dir(self, lp: &mut Loop) {
        lp.mkdir(self.dir.clone(), 0o755, move |lp, res| match res {
            Err(e) if e.raw_os_error() != Some(libc::EEXIST) => {
                let error = io_error(&self.dir, e);
                self.fail(lp, error)
            }
            _ => self.open_dir(lp),
        });
    }

    fn open_dir(mut self, lp: &mut Loop) {
        let flags = libc::O_RDONLY | libc::O_DIRECTORY;
        lp.open(self.dir.clone(), flags, 0, move |lp, res| match res {
            Err(e) => {
                let error = io_error(&self.dir, e);
                self.fail(lp, error)
            }
            Ok(fd) => {
                self.dir_fd = Some(adopt(fd));
                self.list(lp)
            }
        });
    }

    /// Lists the snapshot directory (a control-plane `readdir`).
    fn list(self, lp: &mut Loop) {
        let listing = match layout::list(&self.dir) {
            Ok(listing) => listing,
            Err(e) => {
                let error = io_error(&self.dir, e);
                return self.fail(lp, error);
            }
        };
        if let Some(segment) = listing.segments.first() {
            let reason = "a log segment in a stream's snapshot directory: it belongs to a \
                          store with its own log (open it with Store::open)"
                .to_string();
            return self.fail(lp, corrupt(segment, 0, reason));
        }
        let snapshot = listing.snapshot;
        unlink_all(lp, listing.temp_files, move |lp| match snapshot {
            None => self.plan_reads(lp),
            Some(path) => self.read_snapshot(lp, path),
        });
    }

    fn read_snapshot(self, lp: &mut Loop, path: PathBuf) {
        let limit = self.log.borrow().options.snapshot_bytes_max;
        read_snapshot(lp, path, limit, move |lp, res| match res {
            Err(error) => self.fail(lp, error),
            Ok((covering_seq, state)) => {
                let mut job = self;
                job.recovered.snapshot = Some(state);
                job.recovered.snapshot_seq = covering_seq;
                job.plan_reads(lp)
            }
        });
    }

    /// Picks the segments with entries of this stream after its snapshot,
    /// and how much of each is valid now (later writes carry other streams'
    /// entries only: this one is not attached yet).
    fn plan_reads(mut self, lp: &mut Loop) {
        let floor = self.recovered.snapshot_seq;
        self.recovered.next_seq = floor + 1;
        let core = self.log.borrow();
        let wal = core.wal_ref();
        let needed = |streams: &StreamSeqs| {
            streams
                .iter()
                .any(|&(s, max)| s == self.stream && max > floor)
        };
        let mut to_read: Vec<(PathBuf, u64)> = wal
            .closed
            .iter()
            .filter(|s| needed(&s.streams))
            .map(|s| (s.path.clone(), s.len_bytes))
            .collect();
        if let Some(segment) = wal.segment.as_ref().filter(|s| needed(&s.streams)) {
            to_read.push((segment.path.clone(), segment.len_bytes));
        }
        drop(core);
        to_read.reverse();
        self.to_read = to_read;
        self.read_next(lp)
    }

    fn read_next(mut self, lp: &mut Loop) {
        let Some((path, len_bytes)) = self.to_read.pop() else {
            return self.finish(lp);
        };
        lp.open(path.clone(), libc::O_RDONLY, 0, move |lp, res| {
            let fd = match res {
                Ok(fd) => adopt(fd),
                Err(e) => return self.fail(lp, io_error(&path, e)),
            };
            let raw = fd.as_raw_fd();
            read_to_end(lp, raw, SEGMENT_READ_BYTES_MAX, move |lp, res| {
                close_all(lp, vec![fd], |_| {});
                match res {
                    Err(e) => self.fail(lp, io_error(&path, e)),
                    Ok(mut bytes) if bytes.len() as u64 >= len_bytes => {
                        bytes.truncate(len_bytes as usize);
                        self.scan(lp, path, &bytes)
                    }
                    Ok(bytes) => {
                        let reason = format!(
                            "segment is {} bytes, the log wrote {len_bytes}",
                            bytes.len()
                        );
                        let file = SegmentFile { first_seq: 0, path };
                        self.fail(lp, corrupt(&file, 0, reason))
                    }
                }
            });
        });
    }

    /// Collects this stream's entries after its snapshot from one segment.
    fn scan(mut self, lp: &mut Loop, path: PathBuf, bytes: &[u8]) {
        let max = self.log.borrow().options.record_bytes_max + STREAM_PREFIX_BYTES;
        let file = SegmentFile { first_seq: 0, path };
        let mut offset = 0;
        while offset < bytes.len() {
            let (payload, next) = match decode_at(bytes, offset, max) {
                Decoded::Record { payload, next, .. } => (payload, next),
                Decoded::Incomplete => return self.corrupt(lp, &file, offset, "incomplete record"),
                Decoded::Bad(reason) => return self.corrupt(lp, &file, offset, reason),
            };
            let Some((stream, seq, entry)) = split_prefix(payload) else {
                return self.corrupt(lp, &file, offset, "record shorter than its stream prefix");
            };
            let expected = self.recovered.next_seq;
            if stream == self.stream && seq > self.recovered.snapshot_seq {
                if seq != expected {
                    let reason =
                        format!("stream {stream}: seq {seq} where {expected} was expected");
                    return self.fail(lp, corrupt(&file, offset, reason));
                }
                self.recovered.entries.push((seq, entry.to_vec()));
                self.recovered.next_seq += 1;
            }
            offset = next;
        }
        self.read_next(lp)
    }

    fn corrupt(self, lp: &mut Loop, file: &SegmentFile, offset: usize, reason: &str) {
        let error = corrupt(file, offset, format!("{reason} in a shared log segment"));
        self.fail(lp, error)
    }

    fn finish(self, lp: &mut Loop) {
        let mut core = self.log.borrow_mut();
        let state = core.stream(self.stream);
        debug_assert_eq!(state.generation, self.generation);
        state.known = true;
        state.snapshot_seq = self.recovered.snapshot_seq;
        state.next_seq = self.recovered.next_seq;
        state.closing = false;
        state.dir = self.dir.clone();
        let old_fd = std::mem::replace(&mut state.dir_fd, self.dir_fd);
        drop(core);
        if let Some(fd) = old_fd {
            close_fd(lp, fd, "stream directory");
        }
        tracing::debug!(
            dir = %self.dir.display(),
            stream = self.stream,
            snapshot_seq = self.recovered.snapshot_seq,
            entries = self.recovered.entries.len(),
            "stream recovered"
        );
        let handle = Handle {
            log: self.log,
            stream: self.stream,
            generation: self.generation,
        };
        (self.on_open)(lp, Ok((Store::stream(handle), self.recovered)))
    }
}

impl Handle {
    /// Refuses work unless this handle is the stream's current, open one.
    fn check(&self, core: &mut super::core::LogCore) -> Result<(), StoreError> {
        core.check_open()?;
        let state = core.stream(self.stream);
        if state.generation != self.generation || !state.attached || state.closing {
            return Err(StoreError::Closed);
        }
        Ok(())
    }

    /// See [`Store::append_unlogged`](super::super::Store::append_unlogged).
    pub(crate) fn append_unlogged(&self) -> Result<Option<u64>, StoreError> {
        let mut core = self.log.borrow_mut();
        self.check(&mut core)?;
        if core.options.durability != Durability::Never {
            return Ok(None);
        }
        let stream = core.stream(self.stream);
        let seq = stream.next_seq;
        stream.next_seq += 1;
        Ok(Some(seq))
    }

    pub(crate) fn append_with(
        &self,
        lp: &mut Loop,
        encode: impl FnOnce(&mut Vec<u8>),
        on_durable: OnDurable,
    ) -> Result<u64, StoreError> {
        let mut core = self.log.borrow_mut();
        self.check(&mut core)?;
        let seq = core.stream(self.stream).next_seq;
        if core.options.durability == Durability::Never {
            core.stream(self.stream).next_seq += 1;
            lp.defer(move |lp| on_durable(lp, Ok(seq)));
            return Ok(seq);
        }
        let log_seq = core.next_seq;
        core.wal
            .enqueue(log_seq, self.stream, seq, encode, on_durable)?;
        core.next_seq += 1;
        core.stream(self.stream).next_seq += 1;
        drop(core);
        wal::schedule_flush(lp, &self.log);
        Ok(seq)
    }

    pub(crate) fn snapshot_until(
        &self,
        lp: &mut Loop,
        state: Vec<u8>,
        covering_seq: u64,
        stop_after: SnapshotStep,
        on_done: OnDone,
    ) -> Result<(), StoreError> {
        let mut core = self.log.borrow_mut();
        self.check(&mut core)?;
        let max = core.options.snapshot_bytes_max as usize;
        let stream = core.stream(self.stream);
        if stream.snapshot_busy {
            return Err(StoreError::SnapshotBusy);
        }
        if covering_seq < stream.snapshot_seq || covering_seq >= stream.next_seq {
            return Err(StoreError::BadCoveringSeq {
                covering_seq,
                snapshot_seq: stream.snapshot_seq,
                next_seq: stream.next_seq,
            });
        }
        if state.len().saturating_add(SNAPSHOT_HEADER_BYTES) > max {
            return Err(StoreError::TooLarge {
                bytes: state.len(),
                max,
            });
        }
        stream.snapshot_busy = true;
        let dir = stream.dir.clone();
        let dir_fd = stream
            .dir_fd
            .as_ref()
            .expect("an attached stream has its directory open")
            .as_raw_fd();
        drop(core);
        let (log, id) = (self.log.clone(), self.stream);
        let written: OnDone = Box::new(move |lp, res| {
            on_snapshot_written(lp, &log, id, covering_seq, stop_after, res, on_done)
        });
        snapshot::write(lp, &dir, dir_fd, state, covering_seq, stop_after, written);
        Ok(())
    }

    pub(crate) fn close(&self, lp: &mut Loop, on_closed: OnDone) -> Result<(), StoreError> {
        let mut core = self.log.borrow_mut();
        let state = core.stream(self.stream);
        if state.generation != self.generation || !state.attached || state.closing {
            return Err(StoreError::Closed);
        }
        state.closing = true;
        let (log, stream, generation) = (self.log.clone(), self.stream, self.generation);
        let run: OnDone = Box::new(move |lp, res| {
            let mut core = log.borrow_mut();
            let failure = core.failure();
            let state = core.stream(stream);
            if state.generation == generation {
                state.attached = false;
                state.closing = false;
            }
            drop(core);
            on_closed(lp, res.and(failure.map_or(Ok(()), Err)))
        });
        core.add_barrier(Barrier {
            stream,
            synced: true,
            run,
        });
        drop(core);
        wal::schedule_flush(lp, &self.log);
        Ok(())
    }

    pub(crate) fn stats(&self) -> StoreStats {
        let core = self.log.borrow();
        let mut stats = core
            .wal
            .book_ref(self.stream)
            .map(|b| b.stats)
            .unwrap_or_default();
        stats.snapshots = core
            .streams
            .get(self.stream as usize)
            .map_or(0, |s| s.snapshots);
        stats
    }

    fn with_state<T>(&self, f: impl FnOnce(&super::core::StreamState) -> T) -> T {
        let mut core = self.log.borrow_mut();
        f(core.stream(self.stream))
    }

    pub(crate) fn next_seq(&self) -> u64 {
        self.with_state(|s| s.next_seq)
    }

    pub(crate) fn snapshot_seq(&self) -> u64 {
        self.with_state(|s| s.snapshot_seq)
    }

    pub(crate) fn dir(&self) -> PathBuf {
        self.with_state(|s| s.dir.clone())
    }

    pub(crate) fn durability(&self) -> Durability {
        self.log.borrow().options.durability
    }

    pub(crate) fn queued_entries(&self) -> usize {
        let core = self.log.borrow();
        core.wal
            .book_ref(self.stream)
            .map_or(0, |b| b.queued as usize)
    }

    pub(crate) fn in_flight_entries(&self) -> usize {
        let core = self.log.borrow();
        core.wal
            .book_ref(self.stream)
            .map_or(0, |b| b.in_flight as usize)
    }

    pub(crate) fn is_idle(&self) -> bool {
        let core = self.log.borrow();
        let settled = core
            .wal
            .book_ref(self.stream)
            .is_none_or(|b| b.is_settled() && !b.unsynced);
        let busy = core
            .streams
            .get(self.stream as usize)
            .is_some_and(|s| s.snapshot_busy);
        settled && !busy
    }
}

fn on_snapshot_written(
    lp: &mut Loop,
    log: &Shared,
    stream: u32,
    covering_seq: u64,
    stop_after: SnapshotStep,
    res: io::Result<()>,
    on_done: OnDone,
) {
    let mut core = log.borrow_mut();
    if res.is_err() || stop_after < SnapshotStep::DirSynced {
        core.stream(stream).snapshot_busy = false;
        drop(core);
        on_done(lp, res);
        return wal::schedule_flush(lp, log);
    }
    let state = core.stream(stream);
    state.snapshot_seq = covering_seq;
    state.snapshots += 1;
    tracing::debug!(stream, covering_seq, "stream snapshot durable");
    // A shared segment holds other streams' records too: it is never rolled
    // for one stream's snapshot, only dropped once every stream's covers it.
    let unlinkable = match stop_after {
        SnapshotStep::LogCompacted => core.take_unlinkable(),
        _ => Vec::new(),
    };
    drop(core);
    let log = log.clone();
    unlink_all(lp, unlinkable, move |lp| {
        log.borrow_mut().stream(stream).snapshot_busy = false;
        on_done(lp, Ok(()));
        wal::schedule_flush(lp, &log);
    });
}
