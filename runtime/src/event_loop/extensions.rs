//! Typed state layered on the loop (the behaviours' process table lives
//! here): one value per type, reachable from every callback's `&mut Loop`.

use std::any::{Any, TypeId};
use std::cell::Cell;
use std::hash::{Hash, Hasher};

use super::Loop;

/// Hint slots: a lookup tries the two slots its type hashes to first.
const HINT_SLOTS: usize = 256;

/// The loop's extensions: one boxed value per type, found by a linear scan
/// that a per-type hint usually skips. Behaviours and servers look several
/// up per request (a scan of ten entries, each a 128-bit compare, cost
/// more than the rest of the lookup); a hint is only ever a guess, checked
/// against the entry's `TypeId`, so a stale one (after a removal moved
/// entries) costs one scan and is then corrected. Each type has two hint
/// slots, so two types whose first slots collide do not evict each other's
/// hint on every lookup (one miss per request was measured in http_kv with
/// a single slot per type).
pub(crate) struct Extensions {
    entries: Vec<(TypeId, Box<dyn Any>)>,
    hints: [Cell<u8>; HINT_SLOTS],
    /// Lookups that missed both hints (for tests).
    #[cfg(test)]
    slow: Cell<u32>,
}

impl Default for Extensions {
    fn default() -> Extensions {
        Extensions {
            entries: Vec::new(),
            hints: [const { Cell::new(0) }; HINT_SLOTS],
            #[cfg(test)]
            slow: Cell::new(0),
        }
    }
}

impl Extensions {
    pub(crate) fn clear(&mut self) {
        self.entries.clear();
    }

    /// The index of the entry of `id`: its two hinted slots first.
    #[inline(always)]
    fn index_of(&self, id: TypeId) -> Option<usize> {
        let (first, second) = hint_slots(id);
        let guess = usize::from(self.hints[first].get());
        if self.entries.get(guess).is_some_and(|(t, _)| *t == id) {
            return Some(guess);
        }
        let guess = usize::from(self.hints[second].get());
        if self.entries.get(guess).is_some_and(|(t, _)| *t == id) {
            return Some(guess);
        }
        self.index_of_slow(id)
    }

    /// Scans for `id` and records its index in whichever of its hint slots
    /// no other live type relies on (the first if both are taken).
    #[cold]
    #[inline(never)]
    fn index_of_slow(&self, id: TypeId) -> Option<usize> {
        #[cfg(test)]
        self.slow.set(self.slow.get() + 1);
        let index = self.entries.iter().position(|(t, _)| *t == id)?;
        let Ok(small) = u8::try_from(index) else {
            return Some(index);
        };
        let (first, second) = hint_slots(id);
        let slot = if self.relied_on(first) && !self.relied_on(second) {
            second
        } else {
            first
        };
        self.hints[slot].set(small);
        Some(index)
    }

    /// Whether hint slot `slot` points at a type that hashes to it.
    fn relied_on(&self, slot: usize) -> bool {
        let guess = usize::from(self.hints[slot].get());
        self.entries.get(guess).is_some_and(|(t, _)| {
            let (first, second) = hint_slots(*t);
            first == slot || second == slot
        })
    }
}

/// Folds a `TypeId` to its two distinct hint slots (constant for each `T`
/// once inlined: forced, since a call per lookup cost more than the lookup).
#[inline(always)]
fn hint_slots(id: TypeId) -> (usize, usize) {
    let folded = fold_type_id(id) as usize;
    let first = folded % HINT_SLOTS;
    let second = (folded >> 8) % HINT_SLOTS;

    (first, if second == first { first ^ 1 } else { second })
}

/// Folds a `TypeId` into 64 bits, cheaply enough that it folds to a
/// constant for each concrete type once inlined: for tables that guess an
/// index from a type (the loop's extensions, the behaviours' call tables).
/// Not a hash for untrusted input; collisions only cost a guess.
///
/// ```
/// # use std::any::TypeId;
/// let a = ringvisor_runtime::fold_type_id(TypeId::of::<u32>());
/// assert_eq!(a, ringvisor_runtime::fold_type_id(TypeId::of::<u32>()));
/// ```
#[inline(always)]
pub fn fold_type_id(id: TypeId) -> u64 {
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
    fold.finish()
}

impl Extensions {
    /// The entry of type `T`, if any: its hinted slots first.
    #[inline(always)]
    fn find_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let index = self.index_of(TypeId::of::<T>())?;
        Some(self.cast_mut(index))
    }

    /// Adds the value `make` builds (out of line: once per type).
    #[cold]
    #[inline(never)]
    fn push_new<T: 'static>(&mut self, make: impl FnOnce() -> T) -> usize {
        self.entries.push((TypeId::of::<T>(), Box::new(make())));
        self.entries.len() - 1
    }

    /// Entry `index`, known to hold a `T` (a checked downcast: STYLE keeps
    /// `unsafe` to the backends and the op table).
    #[inline(always)]
    fn cast_mut<T: 'static>(&mut self, index: usize) -> &mut T {
        self.entries[index]
            .1
            .downcast_mut()
            .expect("an entry's TypeId is that of its value")
    }

    #[inline(always)]
    fn find<T: 'static>(&self) -> Option<&T> {
        let index = self.index_of(TypeId::of::<T>())?;
        self.entries[index].1.downcast_ref()
    }
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
    #[inline(always)]
    pub fn extension_or_insert_with<T: 'static>(&mut self, make: impl FnOnce() -> T) -> &mut T {
        let id = TypeId::of::<T>();
        let index = match self.extensions.index_of(id) {
            Some(index) => index,
            None => self.extensions.push_new(make),
        };
        self.extensions.cast_mut(index)
    }

    /// The stored value of type `T`, if any.
    #[inline]
    pub fn extension<T: 'static>(&self) -> Option<&T> {
        self.extensions.find()
    }

    /// The stored value of type `T`, mutably.
    #[inline]
    pub fn extension_mut<T: 'static>(&mut self) -> Option<&mut T> {
        self.extensions.find_mut()
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

    #[test]
    fn warm_lookups_of_many_types_hit_their_hints() {
        let mut lp = Loop::new().expect("loop");
        macro_rules! each {
            ($($t:ty),*) => {{
                $( lp.insert_extension::<$t>(<$t>::default()); )*
                // Two warm-up passes settle the hints; the third must hit.
                for _ in 0..2 {
                    $( assert!(lp.extension::<$t>().is_some()); )*
                }
                let before = lp.extensions.slow.get();
                $( assert!(lp.extension::<$t>().is_some()); )*
                lp.extensions.slow.get() - before
            }};
        }
        let slow = each!(
            u8,
            u16,
            u32,
            u64,
            u128,
            i8,
            i16,
            i32,
            i64,
            i128,
            usize,
            isize,
            bool,
            char,
            String,
            Vec<u8>,
            Vec<u16>,
            Vec<u32>
        );
        // A third type sharing both slots of two others could still miss;
        // with one slot per type and 18 types most builds saw misses.
        assert!(slow <= 1, "{slow} of 18 warm lookups missed their hints");
    }
}
