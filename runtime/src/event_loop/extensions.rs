//! Typed state layered on the loop (the behaviours' process table lives
//! here): one value per type, reachable from every callback's `&mut Loop`.

use std::any::TypeId;

use super::Loop;

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
        self.extensions.push((TypeId::of::<T>(), Box::new(value)));
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
        let index = match self.extensions.iter().position(|(t, _)| *t == id) {
            Some(index) => index,
            None => {
                self.extensions.push((id, Box::new(make())));
                self.extensions.len() - 1
            }
        };
        self.extensions[index]
            .1
            .downcast_mut()
            .expect("TypeId matched")
    }

    /// The stored value of type `T`, if any.
    pub fn extension<T: 'static>(&self) -> Option<&T> {
        let id = TypeId::of::<T>();
        self.extensions
            .iter()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_ref())
    }

    /// The stored value of type `T`, mutably.
    pub fn extension_mut<T: 'static>(&mut self) -> Option<&mut T> {
        let id = TypeId::of::<T>();
        self.extensions
            .iter_mut()
            .find(|(t, _)| *t == id)
            .and_then(|(_, v)| v.downcast_mut())
    }

    /// Takes the stored value of type `T` out of the loop.
    pub fn remove_extension<T: 'static>(&mut self) -> Option<T> {
        let id = TypeId::of::<T>();
        let pos = self.extensions.iter().position(|(t, _)| *t == id)?;
        let (_, value) = self.extensions.swap_remove(pos);
        Some(*value.downcast::<T>().expect("TypeId matched"))
    }
}
