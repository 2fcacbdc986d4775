//! Wire shapes of connection-state recovery: a broadcast's position in its namespace's
//! history, the kept session, the tag that tells our Rust client a message's position, and
//! the headers a reconnecting client presents.
//!
//! Only clients that ask for it (header [`CAPABILITY_HEADER`]) ever see a tag: neffos.js and
//! Go neffos receive the usual frames.

use serde::{Deserialize, Serialize};

use crate::EnvelopeError;

/// Header naming the session a client wants back (any client: neffos.js can send it as a
/// header in Node, or as the query parameter `X-Websocket-Header-X-Neffos-Session`).
pub const SESSION_HEADER: &str = "x-neffos-session";
/// Header our Rust client sends to receive each recorded broadcast tagged with its position.
pub const CAPABILITY_HEADER: &str = "x-neffos-recovery";
/// Header our Rust client sends on a reconnect: the last position it received per namespace.
pub const POSITIONS_HEADER: &str = "x-neffos-positions";
/// The event the server sends in each namespace of a presented session once it is known
/// whether the session was recovered. Body: [`RECOVERED`] or `not-recovered:<reason>`.
pub const RECOVERY_EVENT: &str = "_OnRecovery";
/// Body of [`RECOVERY_EVENT`] when every missed broadcast was replayed.
pub const RECOVERED: &str = "recovered";
/// Prefix of [`RECOVERY_EVENT`]'s body when nothing was replayed.
pub const NOT_RECOVERED_PREFIX: &str = "not-recovered:";
/// First byte of a position tag in the wait field (no neffos peer produces it).
pub const TAG_PREFIX: char = '~';

/// A broadcast's place in a namespace's history. The epoch names the history: when the
/// history is lost (broker flushed, stream purged) a new epoch starts, so an old position
/// can never be mistaken for one of the new history.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct Position {
    /// Identifies one history of the stream.
    pub epoch: u64,
    /// Increases with every append within an epoch (not necessarily by one).
    pub offset: u64,
}

impl Position {
    /// The tag put in the wait field of a frame for clients that asked for tags.
    pub fn tag(&self) -> String {
        format!("{TAG_PREFIX}{:x}.{:x}", self.epoch, self.offset)
    }

    /// Parses a wait field written by [`Self::tag`]; `None` when it is not a tag.
    pub fn from_tag(wait: &str) -> Option<Position> {
        Self::parse(wait.strip_prefix(TAG_PREFIX)?)
    }

    fn parse(s: &str) -> Option<Position> {
        let (epoch, offset) = s.split_once('.')?;
        Some(Position {
            epoch: u64::from_str_radix(epoch, 16).ok()?,
            offset: u64::from_str_radix(offset, 16).ok()?,
        })
    }
}

/// One namespace of a kept session.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NamespaceState {
    /// Namespace name.
    pub name: String,
    /// Joined rooms.
    pub rooms: Vec<String>,
    /// The last recorded broadcast handed to the connection, if known.
    pub position: Option<Position>,
}

/// What the server keeps of a connection for its recovery window.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct SessionState {
    /// The connection ID, given back to the recovered connection.
    pub id: String,
    /// Connected namespaces with their rooms and positions.
    pub namespaces: Vec<NamespaceState>,
}

impl SessionState {
    /// Serialises to MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        rmp_serde::to_vec(self).map_err(EnvelopeError::Encode)
    }

    /// Parses bytes written by [`Self::encode`].
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        rmp_serde::from_slice(bytes).map_err(EnvelopeError::Malformed)
    }
}

/// Encodes [`POSITIONS_HEADER`]: `<hex of namespace>=<epoch>.<offset>` joined by `,`
/// (hex keeps any namespace name header-safe).
pub fn encode_positions<'a>(positions: impl IntoIterator<Item = (&'a str, Position)>) -> String {
    let mut out = String::new();
    for (ns, pos) in positions {
        if !out.is_empty() {
            out.push(',');
        }
        for b in ns.as_bytes() {
            out.push_str(&format!("{b:02x}"));
        }
        out.push('=');
        out.push_str(&pos.tag()[1..]);
    }
    out
}

/// Parses [`POSITIONS_HEADER`]; malformed items are skipped (the server then falls back to
/// what it kept).
pub fn decode_positions(header: &str) -> Vec<(String, Position)> {
    header
        .split(',')
        .filter_map(|item| {
            let (ns, pos) = item.split_once('=')?;
            if ns.len() % 2 != 0 {
                return None;
            }
            let bytes = (0..ns.len())
                .step_by(2)
                .map(|i| u8::from_str_radix(ns.get(i..i + 2)?, 16).ok())
                .collect::<Option<Vec<u8>>>()?;
            Some((String::from_utf8(bytes).ok()?, Position::parse(pos)?))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_round_trip_and_other_waits_are_not_tags() {
        let pos = Position {
            epoch: 0xdead_beef,
            offset: 42,
        };
        assert_eq!(Position::from_tag(&pos.tag()), Some(pos));
        for wait in ["", "$123", "123", "#1", "~", "~1", "~x.1", "neffos(0x"] {
            assert_eq!(Position::from_tag(wait), None, "{wait}");
        }
    }

    #[test]
    fn positions_header_round_trips_any_namespace() {
        let a = Position {
            epoch: 1,
            offset: u64::MAX,
        };
        let b = Position {
            epoch: u64::MAX,
            offset: 0,
        };
        let header = encode_positions([("chat;=,", a), ("", b)]);
        assert!(header.is_ascii());
        assert_eq!(
            decode_positions(&header),
            vec![("chat;=,".to_owned(), a), (String::new(), b)]
        );
        assert!(decode_positions("zz=1.2,abc=1.2,61=q").is_empty());
    }

    #[test]
    fn session_round_trips() {
        let s = SessionState {
            id: "abc".into(),
            namespaces: vec![NamespaceState {
                name: "chat".into(),
                rooms: vec!["r".into()],
                position: Some(Position {
                    epoch: 7,
                    offset: 9,
                }),
            }],
        };
        assert_eq!(SessionState::decode(&s.encode().unwrap()).unwrap(), s);
        assert!(SessionState::decode(b"\xc1garbage").is_err());
    }
}
