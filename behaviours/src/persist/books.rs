//! A shared log's per-stream books: entries queued and in flight (what a
//! stream's recovery barrier waits on), per-stream counters, and which
//! streams a segment holds (what compaction needs).

use std::collections::VecDeque;

use super::stats::StoreStats;

/// The highest entry (stream seq) of each stream in a segment.
pub(crate) type StreamSeqs = Vec<(u32, u64)>;

/// Notes `seq` as an entry of `stream` in `seqs`.
pub(crate) fn raise(seqs: &mut StreamSeqs, stream: u32, seq: u64) {
    match seqs.iter_mut().find(|(s, _)| *s == stream) {
        Some((_, max)) => *max = (*max).max(seq),
        None => seqs.push((stream, seq)),
    }
}

/// One stream's books.
#[derive(Debug, Default, Clone)]
pub(crate) struct StreamBook {
    /// Entries queued and not yet handed to a write.
    pub(crate) queued: u64,
    /// Entries in batches in flight, until written (`Interval`) or synced.
    pub(crate) in_flight: u64,
    /// Written since the last `fdatasync`.
    pub(crate) unsynced: bool,
    pub(crate) stats: StoreStats,
}

impl StreamBook {
    /// Nothing of the stream is queued or in flight: what the log holds of
    /// it is what any later recovery will find.
    pub(crate) fn is_settled(&self) -> bool {
        self.queued == 0 && self.in_flight == 0
    }
}

/// One stream's share of a batch in flight.
#[derive(Debug, Clone, Copy)]
struct Share {
    stream: u32,
    entries: u64,
    bytes: u64,
    last_seq: u64,
}

/// Every stream's books, indexed by stream id, and each batch in flight's
/// shares, oldest first (batches are done with in log order).
#[derive(Debug, Default)]
pub(crate) struct Books {
    streams: Vec<StreamBook>,
    batches: VecDeque<Vec<Share>>,
    /// Emptied share lists, reused.
    spare: Vec<Vec<Share>>,
}

impl Books {
    /// The books of `stream`, created on first use.
    pub(crate) fn book(&mut self, stream: u32) -> &mut StreamBook {
        let index = stream as usize;
        if index >= self.streams.len() {
            self.streams.resize(index + 1, StreamBook::default());
        }
        &mut self.streams[index]
    }

    pub(crate) fn get(&self, stream: u32) -> Option<&StreamBook> {
        self.streams.get(stream as usize)
    }

    /// Books a newly sealed batch of `(stream, stream seq, end offset in
    /// the batch)` records as in flight, behind those already in flight.
    pub(crate) fn share(&mut self, records: impl Iterator<Item = (u32, u64, usize)>) {
        let mut batch = self.spare.pop().unwrap_or_default();
        debug_assert!(batch.is_empty());
        let mut start = 0;
        for (stream, seq, end) in records {
            let bytes = (end - start) as u64;
            start = end;
            match batch.iter_mut().find(|b| b.stream == stream) {
                Some(share) => {
                    share.entries += 1;
                    share.bytes += bytes;
                    share.last_seq = seq;
                }
                None => batch.push(Share {
                    stream,
                    entries: 1,
                    bytes,
                    last_seq: seq,
                }),
            }
        }
        for share in &batch {
            let book = self.book(share.stream);
            debug_assert!(book.queued >= share.entries);
            book.queued -= share.entries;
            book.in_flight += share.entries;
        }
        self.batches.push_back(batch);
    }

    /// The oldest batch in flight is written to the segment whose streams
    /// are `segment`.
    pub(crate) fn written(&mut self, segment: &mut StreamSeqs) {
        let batch = self.batches.pop_front().expect("a batch in flight");
        for share in &batch {
            raise(segment, share.stream, share.last_seq);
            let book = self.book(share.stream);
            book.unsynced = true;
            book.stats.batches += 1;
            book.stats.entries_written += share.entries;
            book.stats.bytes_written += share.bytes;
            book.stats.batch_entries_peak = book.stats.batch_entries_peak.max(share.entries);
        }
        self.batches.push_front(batch);
    }

    /// The oldest batch in flight is done with: durable, or written
    /// (`Interval`).
    pub(crate) fn release(&mut self) {
        let mut batch = self.batches.pop_front().expect("a batch in flight");
        for share in &batch {
            self.book(share.stream).in_flight -= share.entries;
        }
        batch.clear();
        self.spare.push(batch);
    }

    /// An `fdatasync` made every written entry durable.
    pub(crate) fn synced(&mut self) {
        for book in self.streams.iter_mut().filter(|b| b.unsynced) {
            book.unsynced = false;
            book.stats.fdatasyncs += 1;
        }
    }

    /// The writer failed: nothing is queued or in flight any more.
    pub(crate) fn fail(&mut self) {
        while !self.batches.is_empty() {
            self.release();
        }
        for book in &mut self.streams {
            book.queued = 0;
        }
    }
}
