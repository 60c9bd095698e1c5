//! Errors: why a store did not open, and why it refused an operation.

use std::fmt;
use std::io;
use std::path::PathBuf;

/// Why [`super::Store::open`] failed.
///
/// ```
/// use ringvisor_behaviours::persist::OpenError;
/// let e = OpenError::Corrupt { file: "d/wal-1.log".into(), offset: 48, reason: "checksum mismatch".into() };
/// assert!(e.to_string().contains("d/wal-1.log at byte offset 48"));
/// ```
#[derive(Debug)]
pub enum OpenError {
    /// Another open store (in this or another process) holds the directory.
    Locked {
        /// The data directory.
        dir: PathBuf,
    },
    /// A log record or snapshot is damaged and valid data follows it; the
    /// store refuses to start rather than skip data.
    Corrupt {
        /// The damaged file.
        file: PathBuf,
        /// Byte offset of the first bad record.
        offset: u64,
        /// What is wrong there.
        reason: String,
    },
    /// An I/O error on `path`.
    Io {
        /// The file or directory the failed operation was on.
        path: PathBuf,
        /// The error.
        source: io::Error,
    },
    /// The options do not fit together (see [`super::Options::validate`]).
    InvalidOptions(io::Error),
}

impl fmt::Display for OpenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            OpenError::Locked { dir } => write!(
                f,
                "data directory {} is locked by another open store (flock on {}/LOCK)",
                dir.display(),
                dir.display()
            ),
            OpenError::Corrupt {
                file,
                offset,
                reason,
            } => write!(
                f,
                "corrupt data in {} at byte offset {offset}: {reason}; refusing to open rather than skip data",
                file.display()
            ),
            OpenError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            OpenError::InvalidOptions(e) => write!(f, "invalid store options: {e}"),
        }
    }
}

impl std::error::Error for OpenError {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            OpenError::Io { source, .. } | OpenError::InvalidOptions(source) => Some(source),
            _ => None,
        }
    }
}

impl From<OpenError> for io::Error {
    fn from(e: OpenError) -> io::Error {
        let kind = match &e {
            OpenError::Locked { .. } => io::ErrorKind::WouldBlock,
            OpenError::Corrupt { .. } => io::ErrorKind::InvalidData,
            OpenError::Io { source, .. } => source.kind(),
            OpenError::InvalidOptions(_) => io::ErrorKind::InvalidInput,
        };
        io::Error::new(kind, e.to_string())
    }
}

/// Why a store refused an append, snapshot or close at once. When one of
/// these is returned the operation did not start and its callback is
/// dropped without being called.
///
/// ```
/// use ringvisor_behaviours::persist::StoreError;
/// let e = StoreError::TooLarge { bytes: 10, max: 5 };
/// assert_eq!(e.to_string(), "entry of 10 bytes exceeds the limit of 5");
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// The entry or snapshot is larger than its limit.
    TooLarge {
        /// Its size.
        bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `pending_bytes_max` bytes already wait to be written: back off.
    Full {
        /// Bytes waiting.
        pending_bytes: usize,
        /// The limit.
        max: usize,
    },
    /// `close` was called.
    Closed,
    /// An earlier write or sync failed; the log can no longer be trusted, so
    /// nothing more is accepted (reopen the store to recover).
    Failed {
        /// The earlier error.
        reason: String,
    },
    /// A snapshot is already being written.
    SnapshotBusy,
    /// The snapshot would cover entries not yet appended, or fewer than the
    /// last snapshot.
    BadCoveringSeq {
        /// The covering sequence number asked for.
        covering_seq: u64,
        /// The latest durable snapshot's.
        snapshot_seq: u64,
        /// The next sequence number to be assigned.
        next_seq: u64,
    },
}

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            StoreError::TooLarge { bytes, max } => {
                write!(f, "entry of {bytes} bytes exceeds the limit of {max}")
            }
            StoreError::Full { pending_bytes, max } => write!(
                f,
                "log queue full: {pending_bytes} bytes pending (limit {max})"
            ),
            StoreError::Closed => write!(f, "store is closed"),
            StoreError::Failed { reason } => write!(f, "store failed earlier: {reason}"),
            StoreError::SnapshotBusy => write!(f, "a snapshot is already in progress"),
            StoreError::BadCoveringSeq {
                covering_seq,
                snapshot_seq,
                next_seq,
            } => write!(
                f,
                "snapshot covering seq {covering_seq} must be in {snapshot_seq}..{next_seq}"
            ),
        }
    }
}

impl std::error::Error for StoreError {}
