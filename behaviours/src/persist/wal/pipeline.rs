//! The batches a writer has in flight, oldest first, and the order their
//! acknowledgements are released in.
//!
//! Invariants:
//! - Batches are pushed in log order and written one at a time, in that
//!   order: a batch's write is issued only after the previous one's has
//!   completed, so the bytes reaching the file are always a prefix of the
//!   log, and an `fdatasync` issued after a batch's write covers it and
//!   every earlier batch.
//! - A batch is *done* with its own `fdatasync` (`Always`) or write
//!   (`Interval`); batches leave only from the front, once done, so no
//!   batch is acknowledged before every earlier one is durable, whatever
//!   order the kernel completes their syncs in.
//! - `ops_in_flight` counts every write and sync of the pipeline the kernel
//!   holds, including those of batches a failure already dropped: the
//!   writer is quiet (its segment may be closed) only at zero.

use std::collections::VecDeque;

use super::Waiter;

/// How far a batch has got.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Stage {
    /// Sealed, its write not yet issued (the previous write is in flight).
    Sealed,
    Writing,
    /// Written; its `fdatasync` in flight (`Always`).
    Written,
    Synced,
}

/// One sealed batch.
pub(crate) struct Batch {
    /// Waiting for this batch (empty once `Interval` acknowledged them).
    pub(crate) waiters: Vec<Waiter>,
    /// Entries in it.
    pub(crate) count: usize,
    pub(crate) bytes: usize,
    pub(crate) last_seq: u64,
    /// The encoded records, until its write is issued.
    pub(crate) buf: Option<Vec<u8>>,
    pub(crate) stage: Stage,
}

/// The writer's batches in flight.
#[derive(Default)]
pub(crate) struct Pipeline {
    batches: VecDeque<Batch>,
    /// Id of the front batch; ids follow log order.
    front_id: u64,
    /// Bytes of the batches held (sealed, not yet done).
    bytes: u64,
    /// Writes and syncs of the pipeline in the kernel.
    pub(crate) ops_in_flight: usize,
}

impl Pipeline {
    pub(crate) fn len(&self) -> usize {
        self.batches.len()
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.batches.is_empty()
    }

    /// Bytes sealed and not yet done: the next batch goes this far past the
    /// segment's end.
    pub(crate) fn bytes(&self) -> u64 {
        self.bytes
    }

    /// Entries still waiting for their batch.
    pub(crate) fn waiting_entries(&self) -> usize {
        self.batches.iter().map(|b| b.waiters.len()).sum()
    }

    /// True while a batch's write is in flight.
    #[cfg(test)]
    fn writing(&self) -> bool {
        self.batches.iter().any(|b| b.stage == Stage::Writing)
    }

    /// Adds a sealed batch at the back; returns its id.
    pub(crate) fn push(&mut self, batch: Batch) -> u64 {
        debug_assert_eq!(batch.stage, Stage::Sealed);
        debug_assert!(batch.count > 0);
        self.bytes += batch.bytes as u64;
        self.batches.push_back(batch);
        self.front_id + self.batches.len() as u64 - 1
    }

    /// The oldest batch whose write is not yet issued, if no write is in
    /// flight: the next to write, with its id and its offset past the end
    /// of the segment's done bytes.
    pub(crate) fn next_write(&mut self) -> Option<(u64, u64, &mut Batch)> {
        let mut offset = 0;
        for (index, batch) in self.batches.iter_mut().enumerate() {
            match batch.stage {
                Stage::Writing => return None,
                Stage::Sealed => return Some((self.front_id + index as u64, offset, batch)),
                Stage::Written | Stage::Synced => offset += batch.bytes as u64,
            }
        }
        None
    }

    /// Moves batch `id` to `stage` (never backwards). A batch dropped by a
    /// failure is ignored.
    pub(crate) fn advance(&mut self, id: u64, stage: Stage) {
        let Some(index) = id.checked_sub(self.front_id) else {
            return;
        };
        if let Some(batch) = self.batches.get_mut(index as usize) {
            assert!(batch.stage < stage, "a batch's stages only go forward");
            batch.stage = stage;
        }
    }

    /// The front batch, if it is at `done` or beyond: the next to
    /// acknowledge.
    pub(crate) fn pop_done(&mut self, done: Stage) -> Option<Batch> {
        if self.batches.front()?.stage < done {
            return None;
        }
        let batch = self.batches.pop_front().expect("checked above");
        self.front_id += 1;
        self.bytes -= batch.bytes as u64;
        Some(batch)
    }

    /// Drops every batch (the writer failed); their ops still count.
    pub(crate) fn clear(&mut self) -> Vec<Batch> {
        self.front_id += self.batches.len() as u64;
        self.bytes = 0;
        self.batches.drain(..).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch(bytes: usize, last_seq: u64) -> Batch {
        Batch {
            waiters: Vec::new(),
            count: 1,
            bytes,
            last_seq,
            buf: Some(vec![0; bytes]),
            stage: Stage::Sealed,
        }
    }

    #[test]
    fn a_batch_synced_before_an_earlier_one_waits_for_it() {
        let mut p = Pipeline::default();
        let ids: Vec<u64> = (1..=3).map(|i| p.push(batch(10, i))).collect();
        for &id in &ids {
            p.advance(id, Stage::Writing);
            p.advance(id, Stage::Written);
        }
        p.advance(ids[2], Stage::Synced);
        p.advance(ids[1], Stage::Synced);
        assert!(
            p.pop_done(Stage::Synced).is_none(),
            "the first is not durable yet"
        );
        p.advance(ids[0], Stage::Synced);
        let order: Vec<u64> = std::iter::from_fn(|| p.pop_done(Stage::Synced))
            .map(|b| b.last_seq)
            .collect();
        assert_eq!(order, vec![1, 2, 3]);
        assert!(p.is_empty());
        assert_eq!(p.bytes(), 0);
    }

    #[test]
    fn writes_go_one_at_a_time_in_log_order_at_growing_offsets() {
        let mut p = Pipeline::default();
        let a = p.push(batch(10, 1));
        let b = p.push(batch(7, 2));
        let (id, offset, _) = p.next_write().expect("first write");
        assert_eq!((id, offset), (a, 0));
        p.advance(a, Stage::Writing);
        assert!(p.next_write().is_none(), "one write in flight at a time");
        assert!(p.writing());
        p.advance(a, Stage::Written);
        let (id, offset, _) = p.next_write().expect("second write");
        assert_eq!((id, offset), (b, 10));
        assert_eq!(p.bytes(), 17);
    }

    #[test]
    fn stages_of_dropped_batches_are_ignored() {
        let mut p = Pipeline::default();
        let a = p.push(batch(10, 1));
        p.advance(a, Stage::Writing);
        assert_eq!(p.clear().len(), 1);
        p.advance(a, Stage::Written);
        let b = p.push(batch(5, 2));
        assert!(b > a);
        assert_eq!(
            p.next_write().map(|(id, offset, _)| (id, offset)),
            Some((b, 0))
        );
    }

    #[test]
    #[should_panic(expected = "only go forward")]
    fn a_stage_never_goes_backwards() {
        let mut p = Pipeline::default();
        let a = p.push(batch(10, 1));
        p.advance(a, Stage::Written);
        p.advance(a, Stage::Writing);
    }
}
