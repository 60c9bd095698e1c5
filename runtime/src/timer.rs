//! User-space timers: an indexed 4-ary min-heap over a slab.
//!
//! Insert and cancel are O(log n); a canceled timer leaves nothing behind, so
//! a million pending timers cost one slab entry and one heap entry each, and
//! insert-then-cancel in a tight loop never grows memory. Timers with equal
//! deadlines fire in the order they were set (a sequence number breaks ties).
//!
//! Invariants: `heap[i].key` names a live slab entry whose `heap_index == i`;
//! the heap is ordered by `(deadline_ns, seq)`; sequence numbers are unique.

use crate::event_loop::Loop;

/// Identifies a pending timer so it can be canceled with [`Loop::cancel_timer`].
///
/// ```
/// # use ringvisor_runtime::Loop;
/// # use std::time::Duration;
/// let mut lp = Loop::new().unwrap();
/// let id = lp.timer(Duration::from_secs(60), |_lp| unreachable!());
/// assert!(lp.cancel_timer(id));
/// lp.run().unwrap(); // returns at once: nothing is pending
/// ```
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TimerId {
    key: u32,
    seq: u64,
}

/// What runs when a timer fires: a boxed closure, or a plain function with
/// one word of context (no allocation, for hot paths).
pub(crate) enum TimerCallback {
    Boxed(Box<dyn FnOnce(&mut Loop)>),
    Fn(fn(&mut Loop, u64), u64),
}

impl TimerCallback {
    pub(crate) fn run(self, lp: &mut Loop) {
        match self {
            TimerCallback::Boxed(f) => f(lp),
            TimerCallback::Fn(f, arg) => f(lp, arg),
        }
    }
}

/// A timer's slab slot. Its sequence number lives only in its heap item
/// (`heap[heap_index].seq`), which keeps a pending timer at 64 bytes.
struct Entry {
    heap_index: u32,
    callback: TimerCallback,
}

#[derive(Clone, Copy)]
struct HeapItem {
    deadline_ns: u64,
    seq: u64,
    key: u32,
}

impl HeapItem {
    fn before(&self, other: &HeapItem) -> bool {
        (self.deadline_ns, self.seq) < (other.deadline_ns, other.seq)
    }
}

/// Children per heap node. Four halves the depth of a binary heap, and with
/// it the scattered writes to the slab that each level of a sift makes; the
/// four children sit next to each other in the heap array.
const ARITY: usize = 4;

fn parent_of(index: usize) -> usize {
    (index - 1) / ARITY
}

/// The pending timers of one loop.
pub(crate) struct Timers {
    entries: slab::Slab<Entry>,
    heap: Vec<HeapItem>,
    next_seq: u64,
}

impl Timers {
    pub(crate) fn new() -> Timers {
        Timers {
            entries: slab::Slab::new(),
            heap: Vec::new(),
            next_seq: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        debug_assert_eq!(self.entries.len(), self.heap.len());
        self.heap.len()
    }

    /// The earliest deadline, if any timer is pending.
    pub(crate) fn next_deadline_ns(&self) -> Option<u64> {
        self.heap.first().map(|item| item.deadline_ns)
    }

    pub(crate) fn insert(&mut self, deadline_ns: u64, callback: TimerCallback) -> TimerId {
        self.next_seq += 1;
        let seq = self.next_seq;
        let heap_index = self.heap.len() as u32;
        let key = self.entries.insert(Entry {
            heap_index,
            callback,
        });
        assert!(key < u32::MAX as usize, "timer table full");
        self.heap.push(HeapItem {
            deadline_ns,
            seq,
            key: key as u32,
        });
        self.sift_up(heap_index as usize);
        TimerId {
            key: key as u32,
            seq,
        }
    }

    /// Removes a pending timer; false if it already fired or was canceled.
    pub(crate) fn cancel(&mut self, id: TimerId) -> bool {
        let Some(entry) = self.entries.get(id.key as usize) else {
            return false;
        };
        let index = entry.heap_index as usize;
        // A reused slot holds a younger timer with another sequence number.
        if self.heap[index].seq != id.seq {
            return false;
        }
        drop(self.remove_at(index));
        true
    }

    /// The sequence number of the latest timer set; timers set later have
    /// larger ones.
    pub(crate) fn last_seq(&self) -> u64 {
        self.next_seq
    }

    /// Pops the earliest timer if it is due at `now_ns` and was set no later
    /// than `max_seq` (see [`Timers::last_seq`]).
    ///
    /// A timer set after `max_seq` while `now_ns` is the current time has a
    /// deadline of at least `now_ns`, so every older due timer sorts before it:
    /// stopping at the first younger one skips no older due timer.
    pub(crate) fn pop_due(&mut self, now_ns: u64, max_seq: u64) -> Option<TimerCallback> {
        match self.heap.first() {
            Some(item) if item.deadline_ns <= now_ns && item.seq <= max_seq => {
                Some(self.remove_at(0))
            }
            _ => None,
        }
    }

    fn remove_at(&mut self, index: usize) -> TimerCallback {
        let last = self.heap.len() - 1;
        self.heap.swap(index, last);
        let removed = self.heap.pop().expect("heap holds the removed item");
        let entry = self.entries.remove(removed.key as usize);
        debug_assert_eq!(entry.heap_index as usize, index);
        if index < self.heap.len() {
            self.set_index(index);
            // The moved item may belong above or below its new place.
            if index > 0 && self.heap[index].before(&self.heap[parent_of(index)]) {
                self.sift_up(index);
            } else {
                self.sift_down(index);
            }
        }
        entry.callback
    }

    fn set_index(&mut self, index: usize) {
        let key = self.heap[index].key as usize;
        self.entries[key].heap_index = index as u32;
    }

    fn sift_up(&mut self, mut index: usize) {
        while index > 0 {
            let parent = parent_of(index);
            if !self.heap[index].before(&self.heap[parent]) {
                break;
            }
            self.heap.swap(index, parent);
            self.set_index(index);
            index = parent;
        }
        self.set_index(index);
    }

    fn sift_down(&mut self, mut index: usize) {
        let len = self.heap.len();
        loop {
            let first = ARITY * index + 1;
            if first >= len {
                break;
            }
            let mut child = first;
            for candidate in first + 1..(first + ARITY).min(len) {
                if self.heap[candidate].before(&self.heap[child]) {
                    child = candidate;
                }
            }
            if !self.heap[child].before(&self.heap[index]) {
                break;
            }
            self.heap.swap(index, child);
            self.set_index(index);
            index = child;
        }
        self.set_index(index);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn noop() -> TimerCallback {
        TimerCallback::Boxed(Box::new(|_| {}))
    }

    #[test]
    fn pops_in_deadline_then_insertion_order() {
        let mut timers = Timers::new();
        let deadlines = [50u64, 10, 30, 10, 40, 20, 30];
        let mut ids = Vec::new();
        for d in deadlines {
            ids.push((d, timers.insert(d, noop())));
        }
        // Equal deadlines: the earlier insert has the smaller seq.
        let mut expected: Vec<(u64, u64)> = ids.iter().map(|(d, id)| (*d, id.seq)).collect();
        expected.sort();
        let mut popped = Vec::new();
        while let Some(item) = timers.heap.first().copied() {
            assert!(timers.pop_due(u64::MAX, u64::MAX).is_some());
            popped.push((item.deadline_ns, item.seq));
        }
        assert_eq!(popped, expected);
    }

    #[test]
    fn cancel_removes_from_the_middle_and_keeps_order() {
        let mut timers = Timers::new();
        let ids: Vec<TimerId> = (0..1000u64)
            .map(|i| timers.insert((i * 7919) % 1000, noop()))
            .collect();
        for id in ids.iter().step_by(3) {
            assert!(timers.cancel(*id));
            assert!(!timers.cancel(*id), "second cancel must fail");
        }
        assert_eq!(timers.len(), 1000 - 334);
        let mut last = 0;
        while let Some(deadline) = timers.next_deadline_ns() {
            assert!(deadline >= last);
            last = deadline;
            timers.pop_due(u64::MAX, u64::MAX);
        }
    }

    /// Checks the module invariants: indexes match and the heap is ordered.
    fn assert_invariants(timers: &Timers) {
        for (i, item) in timers.heap.iter().enumerate() {
            assert_eq!(timers.entries[item.key as usize].heap_index as usize, i);
            if i > 0 {
                assert!(
                    !item.before(&timers.heap[parent_of(i)]),
                    "heap order at {i}"
                );
            }
        }
        assert_eq!(timers.entries.len(), timers.heap.len());
    }

    #[test]
    fn random_inserts_cancels_and_pops_keep_the_invariants() {
        let mut timers = Timers::new();
        let mut live: Vec<TimerId> = Vec::new();
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut now = 0;
        for step in 0..20_000 {
            match next() % 4 {
                0 | 1 => live.push(timers.insert(now + next() % 1000, noop())),
                2 if !live.is_empty() => {
                    let id = live.swap_remove((next() % live.len() as u64) as usize);
                    // False if it was popped already.
                    timers.cancel(id);
                }
                _ => {
                    now += next() % 50;
                    while timers.pop_due(now, timers.last_seq()).is_some() {}
                }
            }
            if step % 97 == 0 {
                assert_invariants(&timers);
            }
        }
        assert_invariants(&timers);
    }

    #[test]
    fn pop_due_respects_now() {
        let mut timers = Timers::new();
        timers.insert(100, noop());
        assert!(timers.pop_due(99, u64::MAX).is_none());
        assert!(timers.pop_due(100, u64::MAX).is_some());
        assert_eq!(timers.len(), 0);
    }

    #[test]
    fn a_pending_timer_costs_at_most_64_bytes_besides_its_closure() {
        // A slab slot is the entry plus the slab's tag, padded.
        let slot = std::mem::size_of::<Entry>() + 8;
        let per_timer = slot + std::mem::size_of::<HeapItem>();
        assert!(per_timer <= 64, "{per_timer} bytes per timer");
    }

    #[test]
    fn insert_then_cancel_in_a_loop_never_grows_memory() {
        let mut timers = Timers::new();
        let keep = timers.insert(5, noop());
        for i in 0..1_000_000u64 {
            let id = timers.insert(i, noop());
            assert!(timers.cancel(id));
        }
        assert_eq!(timers.len(), 1);
        assert!(
            timers.heap.capacity() <= 4,
            "heap grew to {}",
            timers.heap.capacity()
        );
        assert!(
            timers.entries.capacity() <= 4,
            "slab grew to {}",
            timers.entries.capacity()
        );
        assert!(timers.cancel(keep));
    }

    #[test]
    fn timers_set_after_max_seq_wait_even_if_due() {
        let mut timers = Timers::new();
        timers.insert(7, noop());
        timers.insert(10, noop());
        let max_seq = timers.last_seq();
        // Set "during the callbacks" of a tick at time 10: due at once.
        timers.insert(10, noop());
        assert!(timers.pop_due(10, max_seq).is_some());
        assert!(timers.pop_due(10, max_seq).is_some());
        assert!(
            timers.pop_due(10, max_seq).is_none(),
            "the younger timer waits"
        );
        assert_eq!(timers.len(), 1);
        assert!(timers.pop_due(10, timers.last_seq()).is_some());
    }

    #[test]
    fn stale_id_after_slot_reuse_is_refused() {
        let mut timers = Timers::new();
        let first = timers.insert(1, noop());
        assert!(timers.pop_due(1, u64::MAX).is_some());
        let second = timers.insert(2, noop());
        assert_eq!(first.key, second.key, "slot reused");
        assert!(!timers.cancel(first));
        assert!(timers.cancel(second));
    }
}
