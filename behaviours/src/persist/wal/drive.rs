//! The writer's ops and their completions: sealing batches into the
//! pipeline, each batch's write and `fdatasync`, acknowledging done batches
//! in log order, standalone syncs, opening a new segment, and failing.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::PathBuf;
use std::rc::Rc;

use ringvisor_runtime::Loop;

use super::super::fileio::{adopt, unlink_all, write_all_at};
use super::super::layout::segment_file_name;
use super::super::options::Durability;
use super::pipeline::Stage;
use super::{Host, Phase, Segment, Waiter, Wal};

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

/// Picks the writer's next ops: a due sync, a new segment, or as many new
/// batches as the pipeline has room for. With nothing in flight and nothing
/// to do it tells the host (which may be waiting to close).
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
        let sync_wanted = wal.sync_due || (closing && !queued);
        // A due sync (`Interval`, a close) waits for the batches in flight,
        // and no new batch starts meanwhile: under a steady load the
        // pipeline would otherwise never drain and the sync never run.
        let sync_waits = wal.unsynced && sync_wanted;
        if sync_waits && wal.pipeline.is_empty() {
            return start_sync(lp, rc, wal);
        }
        let room = wal.options.batches_in_flight_max;
        while !sync_waits && !wal.queue.is_empty() && wal.pipeline.len() < room {
            let (count, bytes) = wal.pick_batch();
            if !wal.needs_roll(bytes) {
                seal(wal, count, bytes);
                continue;
            }
            if !wal.pipeline.is_empty() {
                break; // roll once the batches in flight are done
            }
            if wal.unsynced {
                return start_sync(lp, rc, wal);
            }
            return start_roll(lp, rc, wal);
        }
        let fire_now = start_next_write(lp, rc, wal);
        if !fire_now.is_empty() || !wal.is_quiet() {
            drop(host);
            return fire(lp, fire_now);
        }
    }
    let quiet = wal.is_quiet();
    drop(host);
    if quiet {
        H::on_quiet(lp, rc);
    }
}

/// Seals the next batch into the pipeline.
fn seal(wal: &mut Wal, count: usize, bytes: usize) {
    let batch = wal.take_batch(count, bytes);
    wal.pipeline.push(batch);
    let peak = wal.pipeline.len() as u64;
    wal.stats.batches_in_flight_peak = wal.stats.batches_in_flight_peak.max(peak);
}

/// Issues the write of the oldest sealed batch, unless a write is in flight.
/// Returns the waiters to acknowledge now (`Interval`: once the write is
/// queued).
fn start_next_write<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, wal: &mut Wal) -> Vec<Waiter> {
    let Some((id, offset_past_end, batch)) = wal.pipeline.next_write() else {
        return Vec::new();
    };
    let buf = batch.buf.take().expect("a sealed batch holds its records");
    let fire_now = match wal.options.durability {
        Durability::Interval(_) => std::mem::take(&mut batch.waiters),
        Durability::Always | Durability::Never => Vec::new(),
    };
    let segment = wal
        .segment
        .as_ref()
        .expect("a segment is open while batches are in flight");
    let (fd, offset) = (segment.fd.as_raw_fd(), segment.len_bytes + offset_past_end);
    if offset == 0 {
        wal.roll_requested = false;
    }
    wal.pipeline.advance(id, Stage::Writing);
    wal.pipeline.ops_in_flight += 1;
    let rc = rc.clone();
    write_all_at(lp, fd, buf, offset, move |lp, res, buf| {
        on_written(lp, &rc, id, res, buf)
    });
    fire_now
}

/// A pipeline op completed after the writer failed: once the last one is
/// back the host may finish a close.
fn after_failure<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>) {
    let quiet = rc.borrow().wal_ref().is_quiet();
    if quiet {
        H::on_quiet(lp, rc);
    }
}

fn on_written<H: Host>(
    lp: &mut Loop,
    rc: &Rc<RefCell<H>>,
    id: u64,
    res: io::Result<()>,
    mut buf: Vec<u8>,
) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    wal.pipeline.ops_in_flight -= 1;
    buf.clear();
    wal.spare_bufs.push(buf);
    if wal.failure.is_some() {
        drop(host);
        return after_failure(lp, rc);
    }
    if let Err(error) = res {
        drop(host);
        return fail(lp, rc, error, "write");
    }
    wal.pipeline.advance(id, Stage::Written);
    let fd = wal
        .segment
        .as_ref()
        .expect("segment stays open during a write")
        .fd
        .as_raw_fd();
    match wal.options.durability {
        Durability::Interval(interval) => {
            wal.unsynced = true;
            if wal.sync_timer.is_none() {
                let timer_rc = rc.clone();
                let id = lp.timer(interval, move |lp| on_sync_timer(lp, &timer_rc));
                wal.sync_timer = Some(id);
            }
            // Written: a recovery from here on reads these entries back.
            let waiters = pop_done(wal, Stage::Written);
            debug_assert!(waiters.is_empty(), "Interval acknowledged at write");
        }
        Durability::Always | Durability::Never => {
            // Issued after this write completed: it covers this batch and,
            // since writes go in log order, every earlier one.
            wal.pipeline.ops_in_flight += 1;
            let sync_rc = rc.clone();
            lp.fdatasync(fd, move |lp, res| {
                on_synced(lp, &sync_rc, id, res.map_err(Into::into))
            });
        }
    }
    let fire_now = start_next_write(lp, rc, wal);
    drop(host);
    schedule_flush(lp, rc);
    fire(lp, fire_now);
}

/// Takes the done batches off the front of the pipeline, in log order:
/// their records now count as the segment's, and their waiters are handed
/// back to be acknowledged.
fn pop_done(wal: &mut Wal, done: Stage) -> Vec<Waiter> {
    let mut waiters = Vec::new();
    while let Some(mut batch) = wal.pipeline.pop_done(done) {
        let segment = wal.segment.as_mut().expect("segment stays open");
        segment.len_bytes += batch.bytes as u64;
        segment.last_seq = batch.last_seq;
        wal.stats.batches += 1;
        wal.stats.entries_written += batch.count as u64;
        wal.stats.bytes_written += batch.bytes as u64;
        wal.stats.batch_entries_peak = wal.stats.batch_entries_peak.max(batch.count as u64);
        if wal.tagged {
            wal.books.written(&mut segment.streams);
            if done == Stage::Synced {
                wal.books.synced();
            }
            wal.books.release();
        }
        waiters.append(&mut batch.waiters);
    }
    waiters
}

fn on_synced<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, id: u64, res: io::Result<()>) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    wal.pipeline.ops_in_flight -= 1;
    if wal.failure.is_some() {
        drop(host);
        return after_failure(lp, rc);
    }
    if let Err(error) = res {
        drop(host);
        return fail(lp, rc, error, "fdatasync");
    }
    wal.stats.fdatasyncs += 1;
    wal.pipeline.advance(id, Stage::Synced);
    let waiters = pop_done(wal, Stage::Synced);
    drop(host);
    // Deferred, so entries appended by the callbacks below join the next
    // batch, and a callback that panics cannot stall the writer.
    schedule_flush(lp, rc);
    fire(lp, waiters);
}

fn on_sync_timer<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>) {
    let mut host = rc.borrow_mut();
    let wal = host.wal();
    wal.sync_timer = None;
    wal.sync_due = true;
    drop(host);
    schedule_flush(lp, rc);
}

/// Syncs what earlier writes left unsynced (`Interval`, a close, a roll);
/// no batch is in flight meanwhile.
fn start_sync<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, wal: &mut Wal) {
    debug_assert!(wal.pipeline.is_empty());
    let fd = wal
        .segment
        .as_ref()
        .expect("unsynced data has a segment")
        .fd
        .as_raw_fd();
    wal.phase = Phase::Syncing;
    let rc = rc.clone();
    lp.fdatasync(fd, move |lp, res| {
        on_standalone_synced(lp, &rc, res.map_err(Into::into))
    });
}

fn on_standalone_synced<H: Host>(lp: &mut Loop, rc: &Rc<RefCell<H>>, res: io::Result<()>) {
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
    }
    drop(host);
    schedule_flush(lp, rc);
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
/// refused, and a pending close completes with the error once the ops still
/// in the kernel are back.
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
    let mut waiters: Vec<Waiter> = Vec::new();
    for mut batch in wal.pipeline.clear() {
        waiters.append(&mut batch.waiters);
    }
    waiters.extend(wal.queue.drain(..));
    wal.cancel_timer(lp);
    let quiet = wal.is_quiet();
    drop(host);
    for waiter in waiters {
        (waiter.on_durable)(lp, Err(io::Error::new(kind, message.clone())));
    }
    if quiet {
        H::on_quiet(lp, rc);
    }
}
