//! The namespaces a connection has connected, and the rooms it joined in each.
//!
//! A connection has one namespace or a few (at most [`Config::max_namespaces`](crate::Config::max_namespaces)),
//! so a vector searched in order beats a hash map: one namespace costs 40 bytes instead of
//! a hash table's 340, on every idle connection.

use std::borrow::Borrow;
use std::collections::HashSet;
use std::hash::Hash;

use bytestring::ByteString;

/// Rooms joined in one namespace: a set made on the first join (8 bytes per namespace
/// until then, where an empty hash set takes 48 on every idle connection).
#[derive(Debug, Clone, Default)]
#[expect(
    clippy::box_collection,
    reason = "boxed on purpose: 8 bytes inline, where the set itself is 48"
)]
pub(crate) struct Rooms(Option<Box<HashSet<ByteString>>>);

impl Rooms {
    pub(crate) fn new() -> Self {
        Rooms(None)
    }

    pub(crate) fn contains<Q>(&self, room: &Q) -> bool
    where
        ByteString: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        self.0.as_ref().is_some_and(|set| set.contains(room))
    }

    /// The stored name of `room`, if joined.
    pub(crate) fn get(&self, room: &str) -> Option<&ByteString> {
        self.0.as_ref().and_then(|set| set.get(room))
    }

    /// Adds `room`; false if it was there.
    pub(crate) fn insert(&mut self, room: ByteString) -> bool {
        self.0.get_or_insert_default().insert(room)
    }

    /// Removes `room`; false if it was not there. The set goes with its last room.
    pub(crate) fn remove<Q>(&mut self, room: &Q) -> bool
    where
        ByteString: Borrow<Q>,
        Q: Hash + Eq + ?Sized,
    {
        let Some(set) = self.0.as_mut() else {
            return false;
        };
        let removed = set.remove(room);
        if set.is_empty() {
            self.0 = None;
        }
        removed
    }

    pub(crate) fn len(&self) -> usize {
        self.0.as_ref().map_or(0, |set| set.len())
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &ByteString> {
        self.0.iter().flat_map(|set| set.iter())
    }
}

#[derive(Debug, Clone, Default)]
pub(crate) struct NsTable(Vec<(ByteString, Rooms)>);

impl NsTable {
    pub(crate) fn get(&self, ns: &str) -> Option<&Rooms> {
        self.get_key_value(ns).map(|(_, rooms)| rooms)
    }

    pub(crate) fn get_key_value(&self, ns: &str) -> Option<(&ByteString, &Rooms)> {
        self.0
            .iter()
            .find(|(name, _)| &**name == ns)
            .map(|(name, rooms)| (name, rooms))
    }

    pub(crate) fn get_mut(&mut self, ns: &str) -> Option<&mut Rooms> {
        self.0
            .iter_mut()
            .find(|(name, _)| &**name == ns)
            .map(|(_, rooms)| rooms)
    }

    pub(crate) fn contains_key(&self, ns: &str) -> bool {
        self.get(ns).is_some()
    }

    pub(crate) fn len(&self) -> usize {
        self.0.len()
    }

    /// Adds `ns` with no rooms; false (and its rooms kept) if it was there already.
    pub(crate) fn add(&mut self, ns: ByteString) -> bool {
        if self.contains_key(&ns) {
            return false;
        }
        // One slot at a time: a vector's first growth would make room for four.
        self.0.reserve_exact(1);
        self.0.push((ns, Rooms::new()));
        true
    }

    /// Removes `ns` and returns its rooms.
    pub(crate) fn remove(&mut self, ns: &str) -> Option<Rooms> {
        let at = self.0.iter().position(|(name, _)| &**name == ns)?;
        Some(self.0.swap_remove(at).1)
    }

    pub(crate) fn keys(&self) -> impl Iterator<Item = &ByteString> {
        self.0.iter().map(|(name, _)| name)
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = (&ByteString, &Rooms)> {
        self.0.iter().map(|(name, rooms)| (name, rooms))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn add_keeps_rooms_and_remove_returns_them() {
        let mut table = NsTable::default();
        assert!(table.add("a".into()));
        assert!(table.add("b".into()));
        table.get_mut("a").map(|r| r.insert("r".into()));
        assert!(!table.add("a".into()));
        assert!(table.get("a").is_some_and(|r| r.contains("r")));
        assert_eq!(table.len(), 2);
        assert_eq!(table.remove("a").map(|r| r.len()), Some(1));
        assert!(!table.contains_key("a"));
        assert_eq!(table.keys().map(|k| &**k).collect::<Vec<_>>(), ["b"]);
        assert!(table.remove("a").is_none());
    }

    #[test]
    fn rooms_make_their_set_on_the_first_join_and_drop_it_with_the_last() {
        let mut rooms = Rooms::new();
        assert!(rooms.0.is_none() && rooms.len() == 0 && !rooms.contains("r"));
        assert!(rooms.insert("r".into()));
        assert!(!rooms.insert("r".into()));
        assert!(rooms.insert("s".into()));
        assert!(rooms.contains("r") && rooms.len() == 2);
        assert!(rooms.remove("r") && !rooms.remove("r"));
        assert_eq!(rooms.iter().map(|r| &**r).collect::<Vec<_>>(), ["s"]);
        assert!(rooms.remove("s"));
        assert!(rooms.0.is_none(), "no set kept once empty");
    }
}
