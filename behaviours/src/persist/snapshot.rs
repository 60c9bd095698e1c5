//! Snapshot files: their format and the crash-safe write sequence.
//!
//! Format: `magic "RVSNAP01" | crc32c u32 | covering_seq u64 | state_len u64 | state`
//! (little endian); the CRC covers everything after it. The file carries its
//! own covering sequence number, so recovery needs nothing else to know which
//! log records it replaces.
//!
//! Write sequence ([`SnapshotStep`] names the point after each step):
//! 1. write `snapshot.tmp` (created or truncated);
//! 2. `fdatasync` it, close it;
//! 3. rename it over `snapshot` (atomic: readers see the old or the new one);
//! 4. `fsync` the directory, making the rename durable;
//! 5. roll the log to a new segment (the store does this);
//! 6. unlink the segments the snapshot covers.
//!
//! Crash after 1–2: the temp file is ignored and removed on open. After 3–4:
//! old or new snapshot, both valid; the log still holds every record, and
//! replay skips those the snapshot covers. After 5–6: the new snapshot is
//! durable before any covered segment goes.

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::path::{Path, PathBuf};

use ringvisor_runtime::Loop;

use super::fileio::{adopt, close_fd, write_all_at};
use super::layout::{SNAPSHOT_FILE, SNAPSHOT_TEMP_FILE};

/// Bytes of header before a snapshot's state.
///
/// ```
/// assert_eq!(ringvisor_behaviours::persist::SNAPSHOT_HEADER_BYTES, 28);
/// ```
pub const SNAPSHOT_HEADER_BYTES: usize = 28;

const MAGIC: &[u8; 8] = b"RVSNAP01";
const CRC_AT: usize = 8;
const SEQ_AT: usize = 12;
const LEN_AT: usize = 20;

/// The steps of writing a snapshot, in order; a crash test stops after one of
/// them (see [`super::Store::snapshot_until`]) and then recovers.
///
/// ```
/// use ringvisor_behaviours::persist::SnapshotStep;
/// assert!(SnapshotStep::Renamed < SnapshotStep::DirSynced);
/// assert_eq!(SnapshotStep::ALL.last(), Some(&SnapshotStep::LogCompacted));
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SnapshotStep {
    /// `snapshot.tmp` written, not synced.
    TempWritten,
    /// `snapshot.tmp` synced and closed.
    TempSynced,
    /// Renamed over `snapshot`.
    Renamed,
    /// Directory synced: the snapshot is durable.
    DirSynced,
    /// The log moved on to a new segment (or will at its next write).
    LogRolled,
    /// Covered log segments unlinked: the whole sequence.
    LogCompacted,
}

impl SnapshotStep {
    /// Every step, in order.
    pub const ALL: [SnapshotStep; 6] = [
        SnapshotStep::TempWritten,
        SnapshotStep::TempSynced,
        SnapshotStep::Renamed,
        SnapshotStep::DirSynced,
        SnapshotStep::LogRolled,
        SnapshotStep::LogCompacted,
    ];
}

/// The header to write before `state`.
pub(crate) fn encode_header(state: &[u8], covering_seq: u64) -> Vec<u8> {
    let mut header = vec![0u8; SNAPSHOT_HEADER_BYTES];
    header[..CRC_AT].copy_from_slice(MAGIC);
    header[SEQ_AT..LEN_AT].copy_from_slice(&covering_seq.to_le_bytes());
    header[LEN_AT..].copy_from_slice(&(state.len() as u64).to_le_bytes());
    let crc = crc32c::crc32c_append(crc32c::crc32c(&header[SEQ_AT..]), state);
    header[CRC_AT..SEQ_AT].copy_from_slice(&crc.to_le_bytes());
    header
}

/// Decodes a snapshot file: `(covering_seq, state)`, or what is wrong.
pub(crate) fn decode(bytes: &[u8]) -> Result<(u64, &[u8]), &'static str> {
    if bytes.len() < SNAPSHOT_HEADER_BYTES {
        return Err("shorter than a snapshot header");
    }
    if &bytes[..CRC_AT] != MAGIC {
        return Err("bad magic");
    }
    let field = |at: usize| u64::from_le_bytes(bytes[at..at + 8].try_into().expect("8 bytes"));
    let state_bytes = field(LEN_AT);
    if state_bytes != (bytes.len() - SNAPSHOT_HEADER_BYTES) as u64 {
        return Err("length field does not match the file size");
    }
    let stored = u32::from_le_bytes(bytes[CRC_AT..SEQ_AT].try_into().expect("4 bytes"));
    let crc = crc32c::crc32c_append(
        crc32c::crc32c(&bytes[SEQ_AT..SNAPSHOT_HEADER_BYTES]),
        &bytes[SNAPSHOT_HEADER_BYTES..],
    );
    if crc != stored {
        return Err("checksum mismatch");
    }
    Ok((field(SEQ_AT), &bytes[SNAPSHOT_HEADER_BYTES..]))
}

type Done = Box<dyn FnOnce(&mut Loop, io::Result<()>)>;

fn in_file(path: &Path, what: &str, error: impl Into<io::Error>) -> io::Error {
    let error = error.into();
    io::Error::new(error.kind(), format!("{what} {}: {error}", path.display()))
}

/// Runs steps 1–4 (or up to `stop_after`, if earlier) for `state`; the log
/// steps belong to the store.
pub(crate) fn write(
    lp: &mut Loop,
    dir: &Path,
    dir_fd: RawFd,
    state: Vec<u8>,
    covering_seq: u64,
    stop_after: SnapshotStep,
    on_done: Done,
) {
    let temp = dir.join(SNAPSHOT_TEMP_FILE);
    let job = Job {
        temp: temp.clone(),
        target: dir.join(SNAPSHOT_FILE),
        dir_fd,
        stop_after,
        on_done,
    };
    let flags = libc::O_WRONLY | libc::O_CREAT | libc::O_TRUNC;
    lp.open(&temp, flags, 0o644, move |lp, res| match res {
        Err(e) => (job.on_done)(lp, Err(in_file(&job.temp, "open", e))),
        Ok(fd) => job.write_temp(lp, adopt(fd), state, covering_seq),
    });
}

struct Job {
    temp: PathBuf,
    target: PathBuf,
    dir_fd: RawFd,
    stop_after: SnapshotStep,
    on_done: Done,
}

impl Job {
    fn write_temp(
        self,
        lp: &mut Loop,
        fd: std::os::fd::OwnedFd,
        state: Vec<u8>,
        covering_seq: u64,
    ) {
        let header = encode_header(&state, covering_seq);
        let total = header.len() + state.len();
        let raw = fd.as_raw_fd();
        lp.write_vectored_at(
            raw,
            vec![header, state],
            0,
            move |lp, res, bufs| match res {
                Err(e) => (self.on_done)(lp, Err(in_file(&self.temp, "write", e))),
                Ok(n) if n == total => self.sync_temp(lp, fd),
                Ok(n) => {
                    // A short write: finish the rest as one plain buffer.
                    let mut rest = bufs.concat();
                    rest.drain(..n);
                    write_all_at(lp, raw, rest, n as u64, move |lp, res, _| match res {
                        Err(e) => (self.on_done)(lp, Err(in_file(&self.temp, "write", e))),
                        Ok(()) => self.sync_temp(lp, fd),
                    });
                }
            },
        );
    }

    fn sync_temp(self, lp: &mut Loop, fd: std::os::fd::OwnedFd) {
        if self.stop_after == SnapshotStep::TempWritten {
            close_fd(lp, fd, "snapshot temp file");
            return (self.on_done)(lp, Ok(()));
        }
        lp.fdatasync(fd.as_raw_fd(), move |lp, res| {
            close_fd(lp, fd, "snapshot temp file");
            match res {
                Err(e) => (self.on_done)(lp, Err(in_file(&self.temp, "fdatasync", e))),
                Ok(()) if self.stop_after == SnapshotStep::TempSynced => (self.on_done)(lp, Ok(())),
                Ok(()) => self.rename(lp),
            }
        });
    }

    fn rename(self, lp: &mut Loop) {
        let (from, to) = (self.temp.clone(), self.target.clone());
        lp.rename(from, to, move |lp, res| match res {
            Err(e) => (self.on_done)(lp, Err(in_file(&self.target, "rename onto", e))),
            Ok(()) if self.stop_after == SnapshotStep::Renamed => (self.on_done)(lp, Ok(())),
            Ok(()) => self.sync_dir(lp),
        });
    }

    fn sync_dir(self, lp: &mut Loop) {
        lp.fsync(self.dir_fd, move |lp, res| match res {
            Err(e) => {
                let dir = self.target.parent().unwrap_or(Path::new("."));
                (self.on_done)(lp, Err(in_file(dir, "fsync directory", e)))
            }
            Ok(()) => (self.on_done)(lp, Ok(())),
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn snapshot_round_trips_and_detects_damage() {
        let state = b"some state".to_vec();
        let mut file = encode_header(&state, 99);
        file.extend_from_slice(&state);
        assert_eq!(decode(&file), Ok((99, &state[..])));
        for at in 0..file.len() {
            let mut bad = file.clone();
            bad[at] ^= 0x01;
            assert!(decode(&bad).is_err(), "flip at {at} accepted");
        }
        assert_eq!(
            decode(&file[..file.len() - 1]),
            Err("length field does not match the file size")
        );
    }
}
