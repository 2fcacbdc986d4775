//! The envelope neffos-rs instances exchange through a broker (DESIGN.md §4).
//!
//! Unlike neffos Go, which publishes bare frames and loses the frame type, the target
//! connection and ID-based exclusion on the way, an envelope carries all of them, plus the
//! origin instance (so an instance ignores its own publications), a per-origin sequence
//! number (ordering and de-duplication across chained exchanges) and the Ask correlation.
//!
//! Wire form: a MessagePack array whose first element is the format version.

use bytes::Bytes;
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use crate::error::EnvelopeError;
use crate::frame::Message;
use crate::recovery::Position;
use crate::token::WaitToken;

/// The envelope format this build writes and reads.
pub const ENVELOPE_VERSION: u8 = 1;

/// What an envelope asks the receiving instance to do.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub enum EnvelopeKind {
    /// Deliver to every matching local connection of the target namespace/room.
    Broadcast,
    /// Deliver to the one connection ID in the target.
    Targeted,
    /// Ask the target (a connection ID, or every connection of the namespace/room) and
    /// send the first reply back to the origin instance under [`Envelope::token`].
    Ask,
    /// The reply to an [`EnvelopeKind::Ask`], for the origin instance's waiter `token`.
    Reply,
    /// A cluster control message ([`crate::cluster::ClusterMessage`]) in the body.
    Cluster,
}

/// Who an envelope is for.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct EnvelopeTarget {
    /// Namespace.
    pub namespace: String,
    /// Room, if room-scoped.
    pub room: Option<String>,
    /// Connection ID, for targeted sends and asks.
    pub conn: Option<String>,
    /// Connection ID to skip.
    pub except: Option<String>,
}

impl EnvelopeTarget {
    /// Every connection of `namespace`.
    pub fn namespace(namespace: impl Into<String>) -> Self {
        EnvelopeTarget {
            namespace: namespace.into(),
            ..Default::default()
        }
    }

    /// Restricts to a room.
    pub fn with_room(mut self, room: impl Into<String>) -> Self {
        self.room = Some(room.into());
        self
    }

    /// Restricts to one connection ID.
    pub fn with_conn(mut self, id: impl Into<String>) -> Self {
        self.conn = Some(id.into());
        self
    }

    /// Skips one connection ID.
    pub fn with_except(mut self, id: impl Into<String>) -> Self {
        self.except = Some(id.into());
        self
    }
}

/// One message between instances.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct Envelope {
    /// The instance that published it.
    pub origin: Uuid,
    /// Per-origin sequence number, increasing by one per publication.
    pub seq: u64,
    /// What to do with it.
    pub kind: EnvelopeKind,
    /// Who it is for.
    pub target: EnvelopeTarget,
    /// Event name.
    pub event: String,
    /// Body bytes (raw; never re-encoded as text).
    pub body: Bytes,
    /// The body is an error text.
    pub is_error: bool,
    /// Deliver as a binary frame.
    pub binary: bool,
    /// Ask correlation token (for [`EnvelopeKind::Ask`] and [`EnvelopeKind::Reply`]).
    pub token: Option<u64>,
    /// The broadcast's position in its namespace's history, when the namespace records
    /// one (connection-state recovery).
    pub recorded: Option<Position>,
}

/// The serialised shape: a tuple, so the version is always the first array element.
#[derive(Serialize, Deserialize)]
struct WireV1 {
    version: u8,
    origin: Uuid,
    seq: u64,
    kind: EnvelopeKind,
    target: EnvelopeTarget,
    event: String,
    body: Bytes,
    is_error: bool,
    binary: bool,
    token: Option<u64>,
    /// Trailing and defaulted: envelopes of instances that record nothing decode as before.
    #[serde(default)]
    recorded: Option<Position>,
}

impl Envelope {
    /// An envelope of `kind` for `target` carrying `message`'s event, body and flags.
    pub fn new(
        origin: Uuid,
        seq: u64,
        kind: EnvelopeKind,
        target: EnvelopeTarget,
        message: &Message,
    ) -> Self {
        Envelope {
            origin,
            seq,
            kind,
            target,
            event: message.event.to_string(),
            body: message.body.clone(),
            is_error: message.is_error,
            binary: message.binary,
            token: None,
            recorded: None,
        }
    }

    /// Sets the Ask correlation token.
    pub fn with_token(mut self, token: u64) -> Self {
        self.token = Some(token);
        self
    }

    /// The neffos message to deliver locally (no wait token: the receiving instance adds
    /// its own when it asks a client on the origin's behalf).
    pub fn to_message(&self) -> Message {
        let mut msg = Message::new(
            self.target.namespace.clone(),
            self.event.clone(),
            self.body.clone(),
        )
        .with_binary(self.binary)
        .with_wait(WaitToken::empty());
        if let Some(room) = &self.target.room {
            msg.room = room.clone().into();
        }
        msg.is_error = self.is_error;
        msg
    }

    /// Serialises to MessagePack.
    pub fn encode(&self) -> Result<Vec<u8>, EnvelopeError> {
        let wire = WireV1 {
            version: ENVELOPE_VERSION,
            origin: self.origin,
            seq: self.seq,
            kind: self.kind,
            target: self.target.clone(),
            event: self.event.clone(),
            body: self.body.clone(),
            is_error: self.is_error,
            binary: self.binary,
            token: self.token,
            recorded: self.recorded,
        };
        rmp_serde::to_vec(&wire).map_err(EnvelopeError::Encode)
    }

    /// Parses MessagePack written by [`Self::encode`]. Garbage, truncation and unknown
    /// versions are typed errors, never panics.
    pub fn decode(bytes: &[u8]) -> Result<Self, EnvelopeError> {
        let mut peek = bytes;
        let version = rmp::decode::read_array_len(&mut peek)
            .ok()
            .filter(|&len| len > 0)
            .and_then(|_| rmp::decode::read_int::<u64, _>(&mut peek).ok());
        match version {
            Some(v) if v == u64::from(ENVELOPE_VERSION) => {}
            Some(v) => return Err(EnvelopeError::UnknownVersion(v)),
            // Not even an array starting with an integer: let serde describe the problem.
            None => {}
        }
        let wire: WireV1 = rmp_serde::from_slice(bytes).map_err(EnvelopeError::Malformed)?;
        Ok(Envelope {
            origin: wire.origin,
            seq: wire.seq,
            kind: wire.kind,
            target: wire.target,
            event: wire.event,
            body: wire.body,
            is_error: wire.is_error,
            binary: wire.binary,
            token: wire.token,
            recorded: wire.recorded,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Envelope {
        let msg =
            Message::new("chat", "message", Bytes::from_static(b"\x00\x01;x")).with_binary(true);
        Envelope::new(
            Uuid::from_u128(0x1234),
            7,
            EnvelopeKind::Ask,
            EnvelopeTarget::namespace("chat")
                .with_room("r")
                .with_conn("c")
                .with_except("e"),
            &msg,
        )
        .with_token(99)
    }

    #[test]
    fn recorded_position_round_trips_and_old_envelopes_decode() {
        let mut env = sample();
        env.recorded = Some(Position {
            epoch: 3,
            offset: 4,
        });
        assert_eq!(Envelope::decode(&env.encode().unwrap()).unwrap(), env);
        // The shape without the trailing field (instances that record nothing, older builds).
        let old = (
            ENVELOPE_VERSION,
            env.origin,
            env.seq,
            env.kind,
            env.target.clone(),
            env.event.clone(),
            env.body.clone(),
            env.is_error,
            env.binary,
            env.token,
        );
        let decoded = Envelope::decode(&rmp_serde::to_vec(&old).unwrap()).unwrap();
        assert_eq!(decoded.recorded, None);
        assert_eq!(decoded.token, env.token);
    }

    #[test]
    fn round_trip() {
        let env = sample();
        let bytes = env.encode().unwrap();
        assert_eq!(Envelope::decode(&bytes).unwrap(), env);
        let msg = env.to_message();
        assert_eq!(&*msg.room, "r");
        assert!(msg.binary);
    }

    #[test]
    fn unknown_version_and_garbage() {
        let mut bytes = sample().encode().unwrap();
        // fixarray marker, then positive fixint version.
        assert_eq!(bytes[1], ENVELOPE_VERSION);
        bytes[1] = 9;
        assert!(matches!(
            Envelope::decode(&bytes),
            Err(EnvelopeError::UnknownVersion(9))
        ));
        assert!(matches!(
            Envelope::decode(b"garbage"),
            Err(EnvelopeError::Malformed(_))
        ));
        assert!(matches!(
            Envelope::decode(b""),
            Err(EnvelopeError::Malformed(_))
        ));
        let ok = sample().encode().unwrap();
        for cut in 0..ok.len() {
            assert!(Envelope::decode(&ok[..cut]).is_err(), "truncated at {cut}");
        }
    }
}
