//! Indexes of the local connections, kept in step with joins and leaves, so a broadcast
//! finds its recipients without scanning every connection.

use std::collections::HashMap;
use std::sync::Arc;

use bytestring::ByteString;

use crate::conn::ConnInner;
use crate::exchange::Topic;

type Members = HashMap<u64, Arc<ConnInner>>;

/// An exchange interest change caused by an index update (applied after the lock is released).
#[derive(Debug)]
pub(crate) enum Interest {
    Gained(Topic),
    Lost(Topic),
}

#[derive(Default)]
pub(crate) struct Registry {
    pub(crate) conns: Members,
    pub(crate) by_id: HashMap<ByteString, Members>,
    pub(crate) by_ns: HashMap<ByteString, Members>,
    pub(crate) by_room: HashMap<(ByteString, ByteString), Members>,
}

fn insert(map: &mut HashMap<ByteString, Members>, key: &ByteString, conn: &Arc<ConnInner>) -> bool {
    let members = map.entry(key.clone()).or_default();
    members.insert(conn.key, conn.clone());
    members.len() == 1
}

fn remove(map: &mut HashMap<ByteString, Members>, key: &str, conn_key: u64) -> bool {
    let Some(members) = map.get_mut(key) else {
        return false;
    };
    if members.remove(&conn_key).is_none() {
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
            .filter(|(_, m)| m.contains_key(&conn.key))
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
            .insert(conn.key, conn.clone());
    }

    pub(crate) fn remove_room(&mut self, ns: &ByteString, room: &ByteString, conn_key: u64) {
        let key = (ns.clone(), room.clone());
        if let Some(members) = self.by_room.get_mut(&key) {
            members.remove(&conn_key);
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
