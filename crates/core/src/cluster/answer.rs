//! This instance's answer to a query, read from its indexes (counts never list members).

use std::sync::Arc;

use bytestring::ByteString;
use neffos_protocol::cluster::{Answer, Query};

use crate::server::ServerShared;

/// Answers `query` for this instance (remote operations are applied here).
pub(crate) async fn local(shared: &Arc<ServerShared>, query: &Query) -> Answer {
    match query {
        Query::Disconnect { id, reason } => super::remote::disconnect(shared, id, reason),
        Query::JoinRoom {
            id,
            namespace,
            room,
        } => super::remote::join_room(shared, id, namespace, room).await,
        Query::LeaveRoom {
            id,
            namespace,
            room,
        } => super::remote::leave_room(shared, id, namespace, room).await,
        Query::PresenceSnapshot => Answer::Snapshot(super::presence::snapshot(shared)),
        other => read(shared, other),
    }
}

/// The read-only queries.
fn read(shared: &ServerShared, query: &Query) -> Answer {
    let registry = shared.registry.read();
    match query {
        Query::Connections { namespace } => Answer::Ids(
            registry
                .by_ns
                .get(namespace.as_str())
                .map(|m| m.iter().map(|c| c.id.to_string()).collect())
                .unwrap_or_default(),
        ),
        Query::Count { namespace } => Answer::Count(
            registry
                .by_ns
                .get(namespace.as_str())
                .map_or(0, |m| m.len() as u64),
        ),
        Query::Rooms { namespace } => Answer::Rooms(
            registry
                .by_room
                .iter()
                .filter(|((ns, _), _)| ns == namespace.as_str())
                .map(|((_, room), m)| (room.to_string(), m.len() as u64))
                .collect(),
        ),
        Query::RoomMembers { namespace, room } => Answer::Ids(
            registry
                .by_room
                .get(&room_key(namespace, room))
                .map(|m| m.iter().map(|c| c.id.to_string()).collect())
                .unwrap_or_default(),
        ),
        Query::RoomCount { namespace, room } => Answer::Count(
            registry
                .by_room
                .get(&room_key(namespace, room))
                .map_or(0, |m| m.len() as u64),
        ),
        Query::Find { id } => Answer::Count(
            registry
                .by_id
                .get(id.as_str())
                .map_or(0, |m| m.len() as u64),
        ),
        _ => Answer::Failed("unsupported query".to_owned()),
    }
}

fn room_key(namespace: &str, room: &str) -> (ByteString, ByteString) {
    (ByteString::from(namespace), ByteString::from(room))
}
