//! Indexes of the local connections, kept in step with joins and leaves, so a broadcast
//! finds its recipients without scanning every connection.
//!
//! Each group (the connections of an ID, a namespace or a room) keeps its members in a
//! copy-on-write list of chunks: a broadcast takes the index lock only to clone the list's
//! `Arc`, then fans out without any lock, so joins, leaves and connects never wait for a
//! loop over recipients. A change made while a broadcast still holds the list copies the
//! list of chunks and the one or two chunks it touches (a few hundred pointers whatever the
//! group's size), otherwise it edits them in place.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;

use crate::conn::ConnInner;
use crate::exchange::Topic;

/// Members per chunk: what a change copies at most per chunk while a broadcast runs.
const CHUNK: usize = 256;

type Chunk = Arc<Vec<Arc<ConnInner>>>;

/// The recipients of one broadcast: the members it goes to, and the keys of the
/// connections it skips by ID (resolved once, under the index lock).
pub(crate) struct Recipients {
    pub(crate) members: Snapshot,
    pub(crate) except: Vec<u64>,
}

/// The members of one group at one moment, in no particular order.
///
/// A group of one (every connection's ID, most per-user rooms) is the connection itself:
/// no list, no chunk and no position map to allocate for it.
#[derive(Clone, Default)]
pub(crate) enum Snapshot {
    #[default]
    Empty,
    One(Arc<ConnInner>),
    Chunks(Arc<Vec<Chunk>>),
}

impl Snapshot {
    /// Whether both are the same list (no member joined or left in between: a change
    /// copies a list that a snapshot still holds, and a group of one changes its variant).
    pub(crate) fn same(&self, other: &Snapshot) -> bool {
        match (self, other) {
            (Snapshot::Empty, Snapshot::Empty) => true,
            (Snapshot::One(a), Snapshot::One(b)) => Arc::ptr_eq(a, b),
            (Snapshot::Chunks(a), Snapshot::Chunks(b)) => Arc::ptr_eq(a, b),
            _ => false,
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ConnInner>> {
        let (one, chunks) = match self {
            Snapshot::Empty => (None, &[][..]),
            Snapshot::One(conn) => (Some(conn), &[][..]),
            Snapshot::Chunks(chunks) => (None, &chunks[..]),
        };
        one.into_iter()
            .chain(chunks.iter().flat_map(|chunk| chunk.iter()))
    }
}

/// The members of one group: a single member inline, or full chunks but the last and
/// where each member sits (its index over all chunks). 16 bytes in the index's table, where
/// most groups (every connection's ID) have one member.
#[derive(Default)]
pub(crate) struct Members(Group);

#[derive(Default)]
enum Group {
    #[default]
    Empty,
    One(Arc<ConnInner>),
    Many(Box<Many>),
}

struct Many {
    list: Arc<Vec<Chunk>>,
    position: HashMap<u64, usize>,
}

impl Many {
    fn insert(&mut self, conn: &Arc<ConnInner>) -> bool {
        if self.position.contains_key(&conn.key) {
            return false;
        }
        let at = self.position.len();
        let chunks = Arc::make_mut(&mut self.list);
        if at.is_multiple_of(CHUNK) {
            chunks.push(Arc::new(Vec::new()));
        }
        if let Some(last) = chunks.last_mut() {
            Arc::make_mut(last).push(conn.clone());
            self.position.insert(conn.key, at);
        }
        true
    }

    /// The last member takes the removed one's place, so every chunk but the last stays
    /// full.
    fn remove(&mut self, key: u64) -> bool {
        let Some(at) = self.position.remove(&key) else {
            return false;
        };
        let chunks = Arc::make_mut(&mut self.list);
        let Some(moved) = chunks.last_mut().and_then(|last| Arc::make_mut(last).pop()) else {
            return true;
        };
        if chunks.last().is_some_and(|last| last.is_empty()) {
            chunks.pop();
        }
        if moved.key != key
            && let Some(chunk) = chunks.get_mut(at / CHUNK)
            && let Some(slot) = Arc::make_mut(chunk).get_mut(at % CHUNK)
        {
            self.position.insert(moved.key, at);
            *slot = moved;
        }
        true
    }
}

impl Members {
    /// Adds `conn`; false if it was a member already.
    fn insert(&mut self, conn: &Arc<ConnInner>) -> bool {
        match &mut self.0 {
            Group::Empty => {
                self.0 = Group::One(conn.clone());
                true
            }
            Group::One(only) if only.key == conn.key => false,
            Group::One(only) => {
                let mut many = Many {
                    list: Arc::new(vec![Arc::new(vec![only.clone()])]),
                    position: HashMap::from([(only.key, 0)]),
                };
                many.insert(conn);
                self.0 = Group::Many(Box::new(many));
                true
            }
            Group::Many(many) => many.insert(conn),
        }
    }

    /// Removes the member with `key`; false if it was not one. One left is kept inline.
    fn remove(&mut self, key: u64) -> bool {
        match &mut self.0 {
            Group::Empty => false,
            Group::One(only) => {
                if only.key != key {
                    return false;
                }
                self.0 = Group::Empty;
                true
            }
            Group::Many(many) => {
                if !many.remove(key) {
                    return false;
                }
                if many.position.len() == 1
                    && let Some(last) = many.list.iter().flat_map(|c| c.iter()).next().cloned()
                {
                    self.0 = Group::One(last);
                }
                true
            }
        }
    }

    pub(crate) fn len(&self) -> usize {
        match &self.0 {
            Group::Empty => 0,
            Group::One(_) => 1,
            Group::Many(many) => many.position.len(),
        }
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn contains(&self, key: u64) -> bool {
        match &self.0 {
            Group::Empty => false,
            Group::One(only) => only.key == key,
            Group::Many(many) => many.position.contains_key(&key),
        }
    }

    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<ConnInner>> {
        let (one, chunks) = match &self.0 {
            Group::Empty => (None, &[][..]),
            Group::One(conn) => (Some(conn), &[][..]),
            Group::Many(many) => (None, &many.list[..]),
        };
        one.into_iter()
            .chain(chunks.iter().flat_map(|chunk| chunk.iter()))
    }

    /// The current members, to iterate after the index lock is released.
    pub(crate) fn snapshot(&self) -> Snapshot {
        match &self.0 {
            Group::Empty => Snapshot::Empty,
            Group::One(conn) => Snapshot::One(conn.clone()),
            Group::Many(many) => Snapshot::Chunks(many.list.clone()),
        }
    }
}

/// An exchange interest change caused by an index update (applied after the lock is released).
#[derive(Debug)]
pub(crate) enum Interest {
    Gained(Topic),
    Lost(Topic),
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) conns: HashMap<u64, Arc<ConnInner>>,
    pub(crate) by_id: HashMap<ByteString, Members>,
    pub(crate) by_ns: HashMap<ByteString, Members>,
    pub(crate) by_room: HashMap<(ByteString, ByteString), Members>,
}

fn insert(map: &mut HashMap<ByteString, Members>, key: &ByteString, conn: &Arc<ConnInner>) -> bool {
    let members = map.entry(key.clone()).or_default();
    members.insert(conn);
    members.len() == 1
}

fn remove(map: &mut HashMap<ByteString, Members>, key: &str, conn_key: u64) -> bool {
    let Some(members) = map.get_mut(key) else {
        return false;
    };
    if !members.remove(conn_key) {
        return false;
    }
    if members.is_empty() {
        map.remove(key);
        return true;
    }
    false
}

impl Registry {
    pub(crate) fn add_conn(&mut self, conn: &Arc<ConnInner>) -> Option<Interest> {
        self.conns.insert(conn.key, conn.clone());
        insert(&mut self.by_id, &conn.id, conn)
            .then(|| Interest::Gained(Topic::Conn(conn.id.to_string())))
    }

    pub(crate) fn remove_conn(&mut self, conn: &ConnInner) -> Vec<Interest> {
        let mut changes = Vec::new();
        self.conns.remove(&conn.key);
        if remove(&mut self.by_id, &conn.id, conn.key) {
            changes.push(Interest::Lost(Topic::Conn(conn.id.to_string())));
        }
        // Normally empty by now (namespaces are left before removal, and nothing is
        // indexed for a closed connection); defensive cleanup so no index entry can outlive
        // its connection. Namespaces are few: scanning them is cheap. Rooms can be many
        // (one per user is common), so only the connection's own rooms are visited.
        let namespaces: Vec<ByteString> = self
            .by_ns
            .iter()
            .filter(|(_, m)| m.contains(conn.key))
            .map(|(k, _)| k.clone())
            .collect();
        for ns in namespaces {
            if let Some(change) = self.remove_ns(&ns, conn.key) {
                changes.push(change);
            }
        }
        let own_rooms: Vec<(ByteString, ByteString)> = conn
            .namespaces
            .lock()
            .iter()
            .flat_map(|(ns, rooms)| rooms.iter().map(|room| (ns.clone(), room.clone())))
            .collect();
        for (ns, room) in own_rooms {
            self.remove_room(&ns, &room, conn.key);
        }
        changes
    }

    pub(crate) fn add_ns(&mut self, ns: &ByteString, conn: &Arc<ConnInner>) -> Option<Interest> {
        insert(&mut self.by_ns, ns, conn)
            .then(|| Interest::Gained(Topic::Namespace(ns.to_string())))
    }

    pub(crate) fn remove_ns(&mut self, ns: &str, conn_key: u64) -> Option<Interest> {
        remove(&mut self.by_ns, ns, conn_key)
            .then(|| Interest::Lost(Topic::Namespace(ns.to_owned())))
    }

    pub(crate) fn add_room(&mut self, ns: &ByteString, room: &ByteString, conn: &Arc<ConnInner>) {
        self.by_room
            .entry((ns.clone(), room.clone()))
            .or_default()
            .insert(conn);
    }

    pub(crate) fn remove_room(&mut self, ns: &ByteString, room: &ByteString, conn_key: u64) {
        let key = (ns.clone(), room.clone());
        if let Some(members) = self.by_room.get_mut(&key) {
            members.remove(conn_key);
            if members.is_empty() {
                self.by_room.remove(&key);
            }
        }
    }

    /// Sizes of every index, for tests and metrics: (conns, ids, namespaces, rooms).
    pub(crate) fn sizes(&self) -> (usize, usize, usize, usize) {
        (
            self.conns.len(),
            self.by_id.len(),
            self.by_ns.len(),
            self.by_room.len(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Namespaces;
    use crate::config::Config;
    use crate::conn::{NewConn, RequestInfo, Role};

    fn conn(key: u64) -> Arc<ConnInner> {
        ConnInner::new(NewConn {
            key,
            id: ByteString::from(format!("c{key}")),
            role: Role::Server,
            request: RequestInfo::default(),
            handlers: Arc::new(Namespaces::new()),
            config: Arc::new(Config::default()),
            server: crate::conn::Hub::client(),
        })
    }

    fn keys(members: &Members) -> Vec<u64> {
        let mut keys: Vec<u64> = members.iter().map(|c| c.key).collect();
        keys.sort_unstable();
        keys
    }

    #[test]
    fn members_insert_and_remove_anywhere() {
        let conns: Vec<_> = (1..=5).map(conn).collect();
        let mut members = Members::default();
        for c in &conns {
            assert!(members.insert(c));
        }
        assert!(!members.insert(&conns[0]), "already a member");
        assert!(members.remove(2), "from the middle");
        assert!(members.remove(1), "the first");
        assert!(members.remove(5), "the last");
        assert!(!members.remove(5));
        assert_eq!(keys(&members), [3, 4]);
        assert!(members.contains(3) && !members.contains(2));
        // Positions stay right after the moves: each remaining member can still be removed.
        assert!(members.remove(4));
        assert!(members.remove(3));
        assert!(members.is_empty());
        assert_eq!(members.iter().count(), 0);
    }

    #[test]
    fn members_span_chunks() {
        let conns: Vec<_> = (0..(CHUNK as u64 * 2 + 10)).map(conn).collect();
        let mut members = Members::default();
        for c in &conns {
            members.insert(c);
        }
        let before = members.snapshot();
        // Remove from the first chunk, the middle one and the last, with a broadcast's
        // snapshot alive (copy on write) and then without.
        for key in [0, CHUNK as u64 + 3, conns.len() as u64 - 1, 7] {
            assert!(members.remove(key));
        }
        assert_eq!(before.iter().count(), conns.len());
        drop(before);
        for key in [1, 2, CHUNK as u64 * 2] {
            assert!(members.remove(key));
        }
        let expected: Vec<u64> = (0..conns.len() as u64)
            .filter(|k| ![0, 1, 2, 7, CHUNK as u64 + 3, CHUNK as u64 * 2].contains(k))
            .filter(|&k| k != conns.len() as u64 - 1)
            .collect();
        assert_eq!(keys(&members), expected);
        assert_eq!(members.len(), expected.len());
        // Every position is right: each member can be removed, and nothing is left.
        for key in expected {
            assert!(members.remove(key), "{key}");
        }
        assert!(members.is_empty());
        assert!(matches!(members.0, Group::Empty), "nothing kept");
    }

    #[test]
    fn a_snapshot_does_not_see_later_changes() {
        let conns: Vec<_> = (1..=4).map(conn).collect();
        let mut members = Members::default();
        members.insert(&conns[0]);
        members.insert(&conns[1]);
        let before = members.snapshot();
        members.insert(&conns[2]);
        members.remove(1);
        let mut seen: Vec<u64> = before.iter().map(|c| c.key).collect();
        seen.sort_unstable();
        assert_eq!(seen, [1, 2], "the broadcast in flight keeps its recipients");
        assert_eq!(keys(&members), [2, 3]);
        assert!(!members.snapshot().same(&before));
        drop(before);
        members.insert(&conns[3]);
        // Without a snapshot alive the list is edited in place.
        let list = members.snapshot();
        let at = match &list {
            Snapshot::Chunks(chunks) => Arc::as_ptr(chunks),
            _ => panic!("three members are a list"),
        };
        drop(list);
        members.remove(2);
        assert!(matches!(members.snapshot(), Snapshot::Chunks(c) if Arc::as_ptr(&c) == at));
    }

    #[test]
    fn a_group_of_one_is_its_member() {
        let conns: Vec<_> = (1..=2).map(conn).collect();
        let mut members = Members::default();
        assert!(members.insert(&conns[0]));
        assert!(!members.insert(&conns[0]), "a member already");
        assert!(matches!(members.0, Group::One(_)), "no list for one");
        let one = members.snapshot();
        assert!(members.insert(&conns[1]));
        assert_eq!(keys(&members), [1, 2]);
        assert_eq!(one.iter().map(|c| c.key).collect::<Vec<_>>(), [1]);
        assert!(!members.remove(3));
        assert!(members.remove(1));
        assert!(matches!(members.0, Group::One(_)), "back to one");
        assert!(members.contains(2) && !members.contains(1));
        assert!(members.remove(2));
        assert!(members.is_empty() && !members.contains(2));
    }
}
