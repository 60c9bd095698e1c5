//! Engine options: the durability mode and the named limits, with defaults.

use std::io;
use std::time::Duration;

use super::frame::RECORD_HEADER_BYTES;

/// Largest payload of one log record.
pub const RECORD_BYTES_MAX_DEFAULT: usize = 1 << 20;
/// Largest single write (one batch, headers included).
pub const BATCH_BYTES_MAX_DEFAULT: usize = 4 << 20;
/// Most entries acknowledged by one batch (one write, one `fdatasync`).
pub const BATCH_ENTRIES_MAX_DEFAULT: usize = 4096;
/// Most bytes waiting to be written; beyond it appends are refused
/// ([`super::StoreError::Full`]), which is the engine's back-pressure.
pub const PENDING_BYTES_MAX_DEFAULT: usize = 16 << 20;
/// Most batches a log has in flight at once: written one after another,
/// their `fdatasync`s overlapping. On ext4 (Linux 6.18, `cargo bench
/// --bench fdatasync_overlap`) concurrent syncs of one file overlap much as
/// syncs of several files do: 8 write+fdatasync chains reach 9.7k syncs/s
/// on one file, 13k on 8 files, against about 1k for one chain. More
/// batches in flight give more syncs in parallel but smaller batches. With
/// 64 request-response clients on 8 shards of one shared log (http_kv,
/// `--sync always`), 2 gave the most requests/s in each of three sessions
/// or close to it (medians 43.0k, 42.0k, 37.8k; 1: 27.1k, 33.9k, 33.5k; 4:
/// 45.8k, 36.7k, 33.5k) at about 17 acknowledged writes per `fdatasync`
/// (1: 28, 4: 11, 8: 7). 1 is double buffering.
pub const BATCHES_IN_FLIGHT_MAX_DEFAULT: usize = 2;
/// Size at which the log moves to a new segment file.
pub const SEGMENT_BYTES_MAX_DEFAULT: u64 = 64 << 20;
/// Largest snapshot (state bytes plus header) written or read back.
pub const SNAPSHOT_BYTES_MAX_DEFAULT: u64 = 256 << 20;

/// When an appended entry counts as durable, and so when its callback runs.
///
/// Loss windows (what a crash can take away from entries already acknowledged):
///
/// | mode | process crash (SIGKILL, panic) | OS crash / power loss |
/// |------|--------------------------------|-----------------------|
/// | `Always` | nothing | nothing |
/// | `Interval(d)` | entries acknowledged in the last tick whose write had not reached the kernel yet | up to `d` (plus one `fdatasync`) of acknowledged entries |
/// | `Never` | everything since the last snapshot | everything since the last snapshot |
///
/// ```
/// use ringvisor_behaviours::persist::{Durability, Options};
/// use std::time::Duration;
/// let options = Options {
///     durability: Durability::Interval(Duration::from_millis(10)),
///     ..Options::default()
/// };
/// assert!(options.validate().is_ok());
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Durability {
    /// The callback runs after the entry's batch is written and `fdatasync`ed.
    #[default]
    Always,
    /// The callback runs as soon as the entry's batch write is queued (at the
    /// end of the tick it was appended in); a loop timer `fdatasync`s written
    /// data every interval.
    Interval(Duration),
    /// Memory only: the log is not written; the callback runs at once (from
    /// the loop, not inside `append`). Only snapshots reach the disk, so the
    /// owner must snapshot before a clean shutdown.
    Never,
}

/// How a [`super::Store`] behaves, and its limits. Start from
/// `Options::default()` and change what you need.
///
/// ```
/// use ringvisor_behaviours::persist::Options;
/// let options = Options { segment_bytes_max: 8 << 20, ..Options::default() };
/// assert!(options.validate().is_ok());
/// let bad = Options { batch_bytes_max: 10, ..Options::default() };
/// assert!(bad.validate().is_err());
/// let none_in_flight = Options { batches_in_flight_max: 0, ..Options::default() };
/// assert!(none_in_flight.validate().is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    /// When appends are acknowledged.
    pub durability: Durability,
    /// Largest payload of one entry ([`RECORD_BYTES_MAX_DEFAULT`]).
    pub record_bytes_max: usize,
    /// Largest batch write, headers included ([`BATCH_BYTES_MAX_DEFAULT`]).
    pub batch_bytes_max: usize,
    /// Most entries in one batch ([`BATCH_ENTRIES_MAX_DEFAULT`]); 1 gives one
    /// `fdatasync` per write (the benchmark's baseline).
    pub batch_entries_max: usize,
    /// Most batches in flight at once ([`BATCHES_IN_FLIGHT_MAX_DEFAULT`]);
    /// each is acknowledged only once it and every earlier batch are durable.
    pub batches_in_flight_max: usize,
    /// Most bytes queued and not yet written ([`PENDING_BYTES_MAX_DEFAULT`]).
    pub pending_bytes_max: usize,
    /// Segment size that triggers a new log file ([`SEGMENT_BYTES_MAX_DEFAULT`]).
    pub segment_bytes_max: u64,
    /// Largest snapshot file ([`SNAPSHOT_BYTES_MAX_DEFAULT`]).
    pub snapshot_bytes_max: u64,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            durability: Durability::Always,
            record_bytes_max: RECORD_BYTES_MAX_DEFAULT,
            batch_bytes_max: BATCH_BYTES_MAX_DEFAULT,
            batch_entries_max: BATCH_ENTRIES_MAX_DEFAULT,
            batches_in_flight_max: BATCHES_IN_FLIGHT_MAX_DEFAULT,
            pending_bytes_max: PENDING_BYTES_MAX_DEFAULT,
            segment_bytes_max: SEGMENT_BYTES_MAX_DEFAULT,
            snapshot_bytes_max: SNAPSHOT_BYTES_MAX_DEFAULT,
        }
    }
}

impl Options {
    /// Checks that the limits fit together: a maximal record fits a batch, a
    /// batch fits the pending queue and a segment, and nothing is zero.
    pub fn validate(&self) -> io::Result<()> {
        let record_frame_bytes = self.record_bytes_max.saturating_add(RECORD_HEADER_BYTES);
        let checks: [(bool, &str); 8] = [
            (
                self.record_bytes_max > 0,
                "record_bytes_max must be positive",
            ),
            (
                self.record_bytes_max <= u32::MAX as usize,
                "record_bytes_max must fit the u32 length field",
            ),
            (
                record_frame_bytes <= self.batch_bytes_max,
                "batch_bytes_max must hold one record of record_bytes_max",
            ),
            (
                self.batch_bytes_max <= self.pending_bytes_max,
                "pending_bytes_max must be at least batch_bytes_max",
            ),
            (
                self.batch_bytes_max as u64 <= self.segment_bytes_max,
                "segment_bytes_max must be at least batch_bytes_max",
            ),
            (
                self.batch_entries_max > 0,
                "batch_entries_max must be positive",
            ),
            (
                self.batches_in_flight_max > 0,
                "batches_in_flight_max must be positive",
            ),
            (
                !matches!(self.durability, Durability::Interval(d) if d.is_zero()),
                "Durability::Interval needs a nonzero interval",
            ),
        ];
        match checks.iter().find(|(ok, _)| !ok) {
            Some((_, message)) => Err(io::Error::new(io::ErrorKind::InvalidInput, *message)),
            None => Ok(()),
        }
    }
}
