//! [`Target`]: who a broadcast is for.

use bytestring::ByteString;
use neffos_protocol::EnvelopeTarget;

use crate::conn::Conn;

/// Who a broadcast is for.
///
/// ```
/// use neffos::Target;
/// let everyone = Target::namespace("chat");
/// let room = Target::room("chat", "lobby");
/// let one = Target::conn("chat", "user-42");
/// # let _ = (everyone, room, one);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub(crate) namespace: ByteString,
    pub(crate) room: Option<ByteString>,
    pub(crate) to: Option<ByteString>,
    pub(crate) except_key: Option<u64>,
    pub(crate) except_id: Option<ByteString>,
}

impl Target {
    /// Every connection of `namespace`, on every instance.
    pub fn namespace(namespace: &str) -> Self {
        Target {
            namespace: ByteString::from(namespace),
            ..Target::default()
        }
    }

    /// Every member of `room` in `namespace`, on every instance.
    pub fn room(namespace: &str, room: &str) -> Self {
        Target {
            room: Some(ByteString::from(room)),
            ..Target::namespace(namespace)
        }
    }

    /// The connection(s) with ID `id` in `namespace`, on whichever instance they are.
    pub fn conn(namespace: &str, id: &str) -> Self {
        Target {
            to: Some(ByteString::from(id)),
            ..Target::namespace(namespace)
        }
    }

    /// Skips `conn` (and, on other instances, connections with its ID).
    pub fn except(mut self, conn: &Conn) -> Self {
        self.except_key = Some(conn.0.key);
        self.except_id = Some(conn.0.id.clone());
        self
    }

    /// Skips every connection with ID `id`.
    pub fn except_id(mut self, id: &str) -> Self {
        self.except_id = Some(ByteString::from(id));
        self
    }

    /// Whether both select the same recipients.
    pub(crate) fn same_recipients(&self, other: &Target) -> bool {
        self.namespace == other.namespace
            && self.room == other.room
            && self.to == other.to
            && self.except_key == other.except_key
            && self.except_id == other.except_id
    }

    pub(crate) fn envelope_target(&self) -> EnvelopeTarget {
        let mut t = EnvelopeTarget::namespace(self.namespace.to_string());
        t.room = self.room.as_ref().map(|r| r.to_string());
        t.conn = self.to.as_ref().map(|r| r.to_string());
        t.except = self.except_id.as_ref().map(|r| r.to_string());
        t
    }

    pub(crate) fn from_envelope(t: &EnvelopeTarget) -> Self {
        Target {
            namespace: ByteString::from(t.namespace.as_str()),
            room: t.room.as_deref().map(ByteString::from),
            to: t.conn.as_deref().map(ByteString::from),
            except_key: None,
            except_id: t.except.as_deref().map(ByteString::from),
        }
    }
}
