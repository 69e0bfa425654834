//! Typed keys of one core's tables, and the slab that hands them out.
//!
//! Keys are reused after a removal, so a key held across turns must be paired with something
//! that is not (the session's serial, see [`super::PubRef`]).

use std::marker::PhantomData;
use std::ops::{Index, IndexMut};

use slab::Slab;

/// A key into a [`Table`].
pub trait Key: Copy {
    /// The key of slab slot `i`.
    fn from_index(i: usize) -> Self;
    /// The slab slot of this key.
    fn index(self) -> usize;
}

macro_rules! key {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
        pub struct $name(usize);

        impl Key for $name {
            fn from_index(i: usize) -> Self {
                $name(i)
            }
            fn index(self) -> usize {
                self.0
            }
        }
    };
}

key!(
    /// A session (participant connection, or the shadow of a publisher on another core).
    SessionKey
);
key!(
    /// A track a session publishes (an up-track).
    UpKey
);
key!(
    /// One subscriber's copy of a published track (a down-track).
    DownKey
);

/// A slab indexed by a typed key.
#[derive(Debug)]
pub struct Table<K, T> {
    slab: Slab<T>,
    _key: PhantomData<K>,
}

impl<K: Key, T> Default for Table<K, T> {
    fn default() -> Self {
        Table { slab: Slab::new(), _key: PhantomData }
    }
}

impl<K: Key, T> Table<K, T> {
    /// Stores `value` and returns its key.
    pub fn insert(&mut self, value: T) -> K {
        K::from_index(self.slab.insert(value))
    }

    /// Removes and returns the value under `key`, if there is one.
    pub fn remove(&mut self, key: K) -> Option<T> {
        self.slab.try_remove(key.index())
    }

    /// The value under `key`.
    pub fn get(&self, key: K) -> Option<&T> {
        self.slab.get(key.index())
    }

    /// The value under `key`, mutably.
    pub fn get_mut(&mut self, key: K) -> Option<&mut T> {
        self.slab.get_mut(key.index())
    }

    /// Number of values.
    pub fn len(&self) -> usize {
        self.slab.len()
    }

    /// Whether the table is empty.
    pub fn is_empty(&self) -> bool {
        self.slab.is_empty()
    }

    /// Every (key, value).
    pub fn iter(&self) -> impl Iterator<Item = (K, &T)> {
        self.slab.iter().map(|(i, v)| (K::from_index(i), v))
    }
}

impl<K: Key, T> Index<K> for Table<K, T> {
    type Output = T;
    fn index(&self, key: K) -> &T {
        &self.slab[key.index()]
    }
}

impl<K: Key, T> IndexMut<K> for Table<K, T> {
    fn index_mut(&mut self, key: K) -> &mut T {
        &mut self.slab[key.index()]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_address_their_own_values_and_removal_frees_the_slot() {
        let mut t: Table<UpKey, &str> = Table::default();
        let a = t.insert("a");
        let b = t.insert("b");
        assert_eq!((t[a], t[b], t.len()), ("a", "b", 2));
        assert_eq!(t.remove(a), Some("a"));
        assert_eq!(t.remove(a), None);
        assert!(t.get(a).is_none());
        let c = t.insert("c");
        assert_eq!(c, a, "slots are reused");
        assert_eq!(t.iter().count(), 2);
    }
}
