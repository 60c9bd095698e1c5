//! Typed state layered on the loop (the behaviours' process table lives
//! here): one value per type, reachable from every callback's `&mut Loop`.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::hash::{Hash, Hasher};

use super::Loop;

/// Hint slots: a lookup tries the slot its type hashes to first.
const HINT_SLOTS: usize = 64;

/// The loop's extensions: one boxed value per type, found by a linear scan
/// that a per-type hint usually skips. Behaviours and servers look several
/// up per request (a scan of ten entries, each a 128-bit compare, cost
/// more than the rest of the lookup); a hint is only ever a guess, checked
/// against the entry's `TypeId`, so a stale one (after a removal moved
/// entries) costs one scan and is then corrected.
pub(crate) struct Extensions {
    entries: Vec<(TypeId, Box<dyn Any>)>,
    hints: [Cell<u8>; HINT_SLOTS],
}

impl Default for Extensions {
    fn default() -> Extensions {
        Extensions {
            entries: Vec::new(),
            hints: [const { Cell::new(0) }; HINT_SLOTS],
        }
    }
}

impl Extensions {
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    #[inline]
    fn index_of(&self, id: TypeId) -> Option<usize> {
        let hint = &self.hints[hint_slot(id)];
        let guess = usize::from(hint.get());
        if self.entries.get(guess).is_some_and(|(t, _)| *t == id) {
            return Some(guess);
        }
        let index = self.entries.iter().position(|(t, _)| *t == id)?;
        if let Ok(small) = u8::try_from(index) {
            hint.set(small);
        }
        Some(index)
    }
}

/// Folds a `TypeId` to a hint slot (constant for each `T` once inlined).
#[inline]
fn hint_slot(id: TypeId) -> usize {
    struct Fold(u64);
    impl Hasher for Fold {
        fn write(&mut self, bytes: &[u8]) {
            for &b in bytes {
                self.0 = self.0.rotate_left(8) ^ u64::from(b);
            }
        }
        fn write_u64(&mut self, n: u64) {
            self.0 ^= n ^ (n >> 32);
        }
        fn finish(&self) -> u64 {
            self.0
        }
    }
    let mut fold = Fold(0);
    id.hash(&mut fold);
    (fold.finish() as usize) % HINT_SLOTS
}

impl Loop {
    /// Stores a value of type `T` in the loop, replacing any earlier one.
    /// Layers built on the loop (the behaviours) keep their state here, so
    /// every callback that gets `&mut Loop` can reach it.
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// let mut lp = Loop::new().unwrap();
    /// lp.insert_extension(7u32);
    /// *lp.extension_mut::<u32>().unwrap() += 1;
    /// assert_eq!(lp.extension::<u32>(), Some(&8));
    /// ```
    pub fn insert_extension<T: 'static>(&mut self, value: T) -> Option<T> {
        let old = self.remove_extension::<T>();
        self.extensions
            .entries
            .push((TypeId::of::<T>(), Box::new(value)));
        old
    }

    /// The stored value of type `T`, inserting `make()` first if there is
    /// none (one lookup on the hot path).
    ///
    /// ```
    /// # use ringvisor_runtime::Loop;
    /// let mut lp = Loop::new().unwrap();
    /// *lp.extension_or_insert_with(|| 0u64) += 5;
    /// assert_eq!(*lp.extension_or_insert_with(|| 0u64), 5);
    /// ```
    pub fn extension_or_insert_with<T: 'static>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        let id = TypeId::of::<T>();
        let index = match self.extensions.index_of(id) {
            Some(index) => index,
            None => {
                self.extensions.entries.push((id, Box::new(make())));
                self.extensions.entries.len() - 1
            }
        };
        self.extensions.entries[index]
            .1
            .downcast_mut()
            .expect("TypeId matched")
    }

    /// The stored value of type `T`, if any.
    pub fn extension<T: 'static>(&self) -> Option<&T> {
        let index = self.extensions.index_of(TypeId::of::<T>())?;
        self.extensions.entries[index].1.downcast_ref()
    }

    /// The stored value of type `T`, mutably.
    pub fn extension_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let index = self.extensions.index_of(TypeId::of::<T>())?;
        self.extensions.entries[index].1.downcast_mut()
    }

    /// Takes the stored value of type `T` out of the loop.
    pub fn remove_extension<T: 'static>(&mut self) -> Option<T> {
        let pos = self.extensions.index_of(TypeId::of::<T>())?;
        let (_, value) = self.extensions.entries.swap_remove(pos);
        Some(*value.downcast::<T>().expect("TypeId matched"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookups_survive_removals_that_move_entries_and_colliding_hints() {
        let mut lp = Loop::new().expect("loop");
        macro_rules! insert_all {
            ($($t:ty = $v:expr),*) => { $( lp.insert_extension::<$t>($v); )* };
        }
        // More types than hint slots: some share a slot.
        insert_all!(u8 = 1, u16 = 2, u32 = 3, u64 = 4, u128 = 5, i8 = 6, i16 = 7, i32 = 8,
            i64 = 9, i128 = 10, usize = 11, isize = 12, f32 = 13.0, f64 = 14.0, char = 'f',
            bool = true, String = "s".into(), Vec<u8> = vec![18]);
        assert_eq!(lp.extension::<u32>(), Some(&3));
        assert_eq!(lp.extension::<Vec<u8>>(), Some(&vec![18]));
        // Removing an early entry moves the last one into its place.
        assert_eq!(lp.remove_extension::<u16>(), Some(2));
        assert_eq!(lp.extension::<u16>(), None);
        assert_eq!(lp.extension::<Vec<u8>>(), Some(&vec![18]));
        *lp.extension_mut::<char>().expect("char") = 'g';
        for _ in 0..3 {
            assert_eq!(lp.extension::<u8>(), Some(&1));
            assert_eq!(lp.extension::<i128>(), Some(&10));
            assert_eq!(lp.extension::<char>(), Some(&'g'));
            assert_eq!(lp.extension::<bool>(), Some(&true));
        }
        assert_eq!(*lp.extension_or_insert_with(|| 99u16), 99);
        assert_eq!(lp.extension::<u16>(), Some(&99));
    }
}
