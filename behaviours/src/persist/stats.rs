//! The log writer's counters, for a whole log and for one stream of a shared
//! log.

/// Counters of a store's log writer; read them with [`super::Store::stats`].
/// `entries_written / fdatasyncs` is the group-commit factor.
///
/// For a store that is one stream of a [`super::SharedLog`], the counters
/// are that stream's: its entries and bytes, the batches that carried them
/// and the `fdatasync`s that made them durable (one `fdatasync` usually
/// covers several streams, so the streams' counts add up to more than the
/// log's own, [`super::SharedLog::stats`]).
///
/// ```
/// use ringvisor_behaviours::persist::StoreStats;
/// let stats = StoreStats { fdatasyncs: 2, entries_written: 128, ..StoreStats::default() };
/// assert_eq!(stats.entries_per_fdatasync(), 64.0);
/// ```
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct StoreStats {
    /// `fdatasync` calls issued on log segments.
    pub fdatasyncs: u64,
    /// Entries written to the log.
    pub entries_written: u64,
    /// Batch writes (each one write op).
    pub batches: u64,
    /// Bytes written to the log, headers included.
    pub bytes_written: u64,
    /// Most entries in one batch so far.
    pub batch_entries_peak: u64,
    /// Most batches in flight at once so far (see
    /// [`super::Options::batches_in_flight_max`]).
    pub batches_in_flight_peak: u64,
    /// Log segment files created.
    pub segments_created: u64,
    /// Snapshots made durable.
    pub snapshots: u64,
}

impl StoreStats {
    /// Entries written per `fdatasync` (0 if none was issued).
    pub fn entries_per_fdatasync(&self) -> f64 {
        if self.fdatasyncs == 0 {
            return 0.0;
        }
        self.entries_written as f64 / self.fdatasyncs as f64
    }
}
