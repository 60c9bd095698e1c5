//! The data directory's file names, and listing them (a control-plane
//! `readdir`, done once when a store opens).

use std::io;
use std::path::{Path, PathBuf};

/// The advisory lock file, held (flock) while a store is open.
pub const LOCK_FILE: &str = "LOCK";
/// The latest durable snapshot.
pub const SNAPSHOT_FILE: &str = "snapshot";
/// A snapshot being written; never read back, removed when a store opens.
pub const SNAPSHOT_TEMP_FILE: &str = "snapshot.tmp";

const SEGMENT_PREFIX: &str = "wal-";
const SEGMENT_SUFFIX: &str = ".log";
const SEGMENT_DIGITS: usize = 20;

/// The file name of the log segment whose first record has `first_seq`.
/// Zero-padded so names sort like the numbers.
///
/// ```
/// use ringvisor_behaviours::persist::segment_file_name;
/// assert_eq!(segment_file_name(42), "wal-00000000000000000042.log");
/// ```
pub fn segment_file_name(first_seq: u64) -> String {
    format!("{SEGMENT_PREFIX}{first_seq:0SEGMENT_DIGITS$}{SEGMENT_SUFFIX}")
}

fn parse_segment_name(name: &str) -> Option<u64> {
    let digits = name
        .strip_prefix(SEGMENT_PREFIX)?
        .strip_suffix(SEGMENT_SUFFIX)?;
    if digits.len() != SEGMENT_DIGITS || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok().filter(|&seq| seq > 0)
}

/// A log segment found on disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct SegmentFile {
    pub(crate) first_seq: u64,
    pub(crate) path: PathBuf,
}

/// What a data directory holds.
#[derive(Debug, Default)]
pub(crate) struct Listing {
    pub(crate) snapshot: Option<PathBuf>,
    pub(crate) temp_files: Vec<PathBuf>,
    /// Sorted by `first_seq`.
    pub(crate) segments: Vec<SegmentFile>,
}

/// Lists `dir` (blocking `readdir`: a control-plane step of opening a store).
/// Names the engine does not know are left alone.
pub(crate) fn list(dir: &Path) -> io::Result<Listing> {
    let mut listing = Listing::default();
    for entry in std::fs::read_dir(dir)? {
        let entry = entry?;
        let name = entry.file_name();
        let Some(name) = name.to_str() else { continue };
        if name == SNAPSHOT_FILE {
            listing.snapshot = Some(entry.path());
        } else if name == SNAPSHOT_TEMP_FILE {
            listing.temp_files.push(entry.path());
        } else if let Some(first_seq) = parse_segment_name(name) {
            listing.segments.push(SegmentFile {
                first_seq,
                path: entry.path(),
            });
        }
    }
    listing.segments.sort_by_key(|s| s.first_seq);
    Ok(listing)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn segment_names_round_trip_and_sort_numerically() {
        assert_eq!(parse_segment_name(&segment_file_name(1)), Some(1));
        assert_eq!(
            parse_segment_name(&segment_file_name(u64::MAX)),
            Some(u64::MAX)
        );
        assert!(segment_file_name(9) < segment_file_name(10));
        assert_eq!(parse_segment_name("wal-12.log"), None);
        assert_eq!(parse_segment_name("wal-0000000000000000001x.log"), None);
    }
}
