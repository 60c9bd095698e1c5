//! The op table's storage: a slab (a `Vec` of slots threaded with a free
//! list) whose every call inlines into the loop's submit and delivery paths.
//! With the `slab` crate's out-of-line insert, each op's slot was built on
//! the stack, copied into an argument and copied again into place, and what
//! the compiler knew about the op (its kind) was lost on the way.
//!
//! Invariants: `next_free` heads the free list (it is `entries.len()` when
//! the list is empty), and `len` counts the occupied entries.

use std::ops::{Index, IndexMut};

enum Entry<T> {
    Occupied(T),
    /// A free slot, with the next free one.
    Vacant(usize),
}

pub(crate) struct Slots<T> {
    entries: Vec<Entry<T>>,
    next_free: usize,
    len: usize,
}

impl<T> Slots<T> {
    pub(crate) fn new() -> Slots<T> {
        Slots {
            entries: Vec::new(),
            next_free: 0,
            len: 0,
        }
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// The key the next insert takes.
    #[inline]
    pub(crate) fn next_key(&self) -> usize {
        self.next_free
    }

    /// Inserts the value `make` builds at [`Slots::next_key`]. The value is
    /// built once its entry is found and written there at once: built
    /// first and moved in, it went through a stack copy whose wide reloads
    /// of just-written narrow fields stalled on store forwarding.
    #[inline(always)]
    pub(crate) fn insert_with(&mut self, make: impl FnOnce() -> T) {
        let key = self.next_free;
        if key == self.entries.len() {
            self.entries.push(Entry::Occupied(make()));
            self.next_free = key + 1;
        } else {
            let entry = &mut self.entries[key];
            let Entry::Vacant(next) = *entry else {
                unreachable!("the free list names only vacant slots")
            };
            self.next_free = next;
            // SAFETY: the entry is vacant and owns nothing: overwriting it
            // without dropping it leaks nothing.
            unsafe { std::ptr::write(entry, Entry::Occupied(make())) };
        }
        self.len += 1;
    }

    #[inline]
    pub(crate) fn get(&self, key: usize) -> Option<&T> {
        match self.entries.get(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    #[inline]
    pub(crate) fn get_mut(&mut self, key: usize) -> Option<&mut T> {
        match self.entries.get_mut(key) {
            Some(Entry::Occupied(value)) => Some(value),
            _ => None,
        }
    }

    /// Takes out the value at `key`, which must be occupied.
    #[inline]
    pub(crate) fn remove(&mut self, key: usize) -> T {
        let entry = self.entries.get_mut(key).expect("key in the table");
        let Entry::Occupied(value) = entry else {
            panic!("removed a vacant op slot")
        };
        // SAFETY: the value is read out exactly once, and the entry is then
        // overwritten as vacant without being dropped: the value moves out
        // without a copy of the whole entry (`mem::replace`) in between.
        let value = unsafe { std::ptr::read(value) };
        // SAFETY: as above; `entry` is valid for writes.
        unsafe { std::ptr::write(entry, Entry::Vacant(self.next_free)) };
        self.next_free = key;
        self.len -= 1;
        value
    }

    /// Keys of the occupied slots, in order.
    pub(crate) fn keys(&self) -> impl Iterator<Item = usize> + '_ {
        (self.entries.iter().enumerate())
            .filter(|(_, entry)| matches!(entry, Entry::Occupied(_)))
            .map(|(key, _)| key)
    }
}

impl<T> Index<usize> for Slots<T> {
    type Output = T;

    #[inline]
    fn index(&self, key: usize) -> &T {
        self.get(key).expect("an occupied op slot")
    }
}

impl<T> IndexMut<usize> for Slots<T> {
    #[inline]
    fn index_mut(&mut self, key: usize) -> &mut T {
        self.get_mut(key).expect("an occupied op slot")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn freed_keys_are_reused_last_freed_first_and_len_counts_occupied() {
        let mut slots = Slots::new();
        for i in 0..4 {
            assert_eq!(slots.next_key(), i);
            slots.insert_with(|| i * 10 + 1);
        }
        assert_eq!(slots.remove(1), 11);
        assert_eq!(slots.remove(2), 21);
        assert_eq!(slots.len(), 2);
        assert_eq!(slots.get(1), None);
        assert_eq!(slots.keys().collect::<Vec<_>>(), [0, 3]);
        assert_eq!(slots.next_key(), 2);
        slots.insert_with(|| 99);
        assert_eq!(slots.next_key(), 1);
        slots.insert_with(|| 98);
        assert_eq!(slots.next_key(), 4);
        slots.insert_with(|| 97);
        assert_eq!(slots[2], 99);
        slots[1] += 1;
        assert_eq!(slots.get(1), Some(&99));
        assert_eq!(slots.len(), 5);
    }

    #[test]
    #[should_panic(expected = "vacant")]
    fn removing_a_vacant_slot_panics() {
        let mut slots = Slots::new();
        slots.insert_with(|| 1);
        slots.remove(0);
        slots.remove(0);
    }
}
