//! What instances of one cluster tell each other about themselves: leases, queries about
//! their connections, remote operations and presence changes.
//!
//! A [`ClusterMessage`] travels as the body of an [`Envelope`](crate::Envelope) of kind
//! [`EnvelopeKind::Cluster`](crate::EnvelopeKind::Cluster), MessagePack-encoded, on the
//! cluster topic (every instance) or on one instance's inbox (answers).

use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EnvelopeError;

/// The namespace-topic name every instance of a cluster listens to. It starts with a NUL
/// character, which no application namespace name is expected to contain.
pub const CLUSTER_TOPIC: &str = "\u{0}neffos-cluster";

/// One control message between instances.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum ClusterMessage {
    /// "I am alive until `lease_ms` from now": sent every heartbeat interval on the cluster
    /// topic, and straight to a newcomer's inbox when it asks (`reply`).
    Heartbeat(Heartbeat),
    /// The sender is shutting down: drop it from the live set now.
    Bye {
        /// The sender's generation (see [`Heartbeat::generation`]).
        generation: u64,
    },
    /// A question for every instance; answered to the asker's inbox with the same token.
    Query {
        /// Correlates the answers.
        token: u64,
        /// What is asked.
        query: Query,
    },
    /// One instance's answer to a [`ClusterMessage::Query`].
    Answer {
        /// The query's token.
        token: u64,
        /// The answer.
        answer: Answer,
    },
    /// Presence changes of the sender's connections, or, when `expired` is set, the leaves
    /// of a dead instance's connections reported by one survivor.
    Presence(PresenceBatch),
    /// Tells an instance that the cluster expired it (its lease ran out): it must announce
    /// its connections again under a new generation.
    Expired {
        /// The generation that was expired.
        generation: u64,
    },
}

/// The lease an instance renews.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Heartbeat {
    /// A human-readable label (e.g. the address the instance serves).
    pub label: String,
    /// Incremented when the instance comes back after having been expired.
    pub generation: u64,
    /// How long the lease lasts after this heartbeat, in milliseconds.
    pub lease_ms: u64,
    /// The sender just started (or came back): receivers answer with their own heartbeat
    /// to its inbox so it learns the live set within one round trip.
    pub reply: bool,
}

impl Heartbeat {
    /// A heartbeat.
    pub fn new(label: impl Into<String>, generation: u64, lease_ms: u64, reply: bool) -> Self {
        Heartbeat {
            label: label.into(),
            generation,
            lease_ms,
            reply,
        }
    }
}

/// What a [`ClusterMessage::Query`] asks each instance.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Query {
    /// IDs of the connections of a namespace.
    Connections {
        /// Namespace.
        namespace: String,
    },
    /// Number of connections of a namespace.
    Count {
        /// Namespace.
        namespace: String,
    },
    /// Rooms of a namespace with their number of members.
    Rooms {
        /// Namespace.
        namespace: String,
    },
    /// IDs of the members of a room.
    RoomMembers {
        /// Namespace.
        namespace: String,
        /// Room.
        room: String,
    },
    /// Number of members of a room.
    RoomCount {
        /// Namespace.
        namespace: String,
        /// Room.
        room: String,
    },
    /// Number of connections with this ID.
    Find {
        /// Connection ID.
        id: String,
    },
    /// Close the connections with this ID.
    Disconnect {
        /// Connection ID.
        id: String,
        /// Close reason sent to the client.
        reason: String,
    },
    /// Make the connections with this ID join a room (server-side join).
    JoinRoom {
        /// Connection ID.
        id: String,
        /// Namespace.
        namespace: String,
        /// Room.
        room: String,
    },
    /// Make the connections with this ID leave a room.
    LeaveRoom {
        /// Connection ID.
        id: String,
        /// Namespace.
        namespace: String,
        /// Room.
        room: String,
    },
    /// The presence of the instance's connections in the namespaces with presence events.
    PresenceSnapshot,
}

/// One instance's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub enum Answer {
    /// Connection IDs (one per connection).
    Ids(Vec<String>),
    /// A number.
    Count(u64),
    /// Rooms and their number of members.
    Rooms(Vec<(String, u64)>),
    /// A remote operation was applied to this many connections.
    Applied(u64),
    /// A remote operation failed on this instance.
    Failed(String),
    /// The answer to [`Query::PresenceSnapshot`].
    Snapshot(PresenceBatch),
}

/// Presence changes (or a full snapshot) of one instance's connections.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PresenceBatch {
    /// The instance the connections are (or were) on.
    pub instance: Uuid,
    /// That instance's generation.
    pub generation: u64,
    /// Sequence number of the last change included (per instance and generation); a
    /// receiver that sees a gap asks for a snapshot.
    pub seq: u64,
    /// A full snapshot (replaces what the receiver knew), not a delta.
    pub snapshot: bool,
    /// Leaves reported by a survivor for an instance whose lease expired.
    pub expired: bool,
    /// The changes, in order.
    pub changes: Vec<PresenceChange>,
}

/// One connection entering or leaving a namespace or a room.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PresenceChange {
    /// Connection ID.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// Room (`None`: the namespace itself).
    pub room: Option<String>,
    /// Joined (`true`) or left.
    pub joined: bool,
}

impl PresenceChange {
    /// A change.
    pub fn new(
        id: impl Into<String>,
        namespace: impl Into<String>,
        room: Option<String>,
        joined: bool,
    ) -> Self {
        PresenceChange {
            id: id.into(),
            namespace: namespace.into(),
            room,
            joined,
        }
    }
}

impl ClusterMessage {
    /// Serialises to MessagePack (the body of a cluster envelope).
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        rmp_serde::to_vec(self).map_err(EnvelopeError::Encode)
    }

    /// Parses a body written by [`Self::encode`]; garbage is an error, never a panic.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        rmp_serde::from_slice(bytes).map_err(EnvelopeError::Malformed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_and_garbage() {
        let messages = [
            ClusterMessage::Heartbeat(Heartbeat::new("a", 1, 6000, true)),
            ClusterMessage::Query {
                token: 7,
                query: Query::RoomMembers {
                    namespace: "n".into(),
                    room: "r".into(),
                },
            },
            ClusterMessage::Answer {
                token: 7,
                answer: Answer::Rooms(vec![("r".into(), 3)]),
            },
            ClusterMessage::Presence(PresenceBatch {
                instance: Uuid::from_u128(9),
                generation: 2,
                seq: 5,
                snapshot: false,
                expired: true,
                changes: vec![PresenceChange::new("u", "n", Some("r".into()), false)],
            }),
        ];
        for m in messages {
            let bytes = m.encode().unwrap();
            assert_eq!(ClusterMessage::decode(&bytes).unwrap(), m);
            for cut in 0..bytes.len() {
                assert!(ClusterMessage::decode(&bytes[..cut]).is_err());
            }
        }
        assert!(ClusterMessage::decode(b"garbage").is_err());
    }
}
