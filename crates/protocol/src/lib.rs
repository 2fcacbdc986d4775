//! The neffos wire protocol, without any I/O.
//!
//! This crate is the byte-exact codec that lets neffos-rs talk to the existing
//! [neffos](https://github.com/kataras/neffos) Go server and client and to `neffos.js`:
//!
//! - [`Message`]: one neffos frame, `wait;namespace;room;event;isError;isNoOp;body`, with
//!   [`decode`] (zero-copy from [`Bytes`](bytes::Bytes)) and [`Message::encode`] /
//!   [`Message::to_frame`] (encode once, share the resulting `Bytes` with many recipients).
//! - [`WaitToken`] and [`WaitKind`]: the `wait` field and what its shape means
//!   (client Ask, server Ask, exchange marker, exclusion marker).
//! - [`handshake`]: the application-level ACK (`M`, `A<id>`, `H<error>`).
//! - [`events`]: the reserved system event names.
//! - [`Envelope`]: what neffos-rs instances send each other through a broker
//!   (MessagePack, versioned), which carries what the neffos frame cannot (frame type,
//!   target connection, exclusion, origin instance, Ask correlation).
//! - [`cluster`]: the control messages of a cluster (leases, queries, remote operations,
//!   presence), carried in envelopes of kind [`EnvelopeKind::Cluster`].
//!
//! # Example
//!
//! ```
//! use bytes::Bytes;
//! use neffos_protocol::{decode, DecodeOptions, Message};
//!
//! let frame = Bytes::from_static(b";default;room1;chat;0;0;hi;there");
//! let msg = decode(frame, false, &DecodeOptions::default())?;
//! assert_eq!(&*msg.namespace, "default");
//! assert_eq!(&*msg.room, "room1");
//! assert_eq!(&*msg.event, "chat");
//! assert_eq!(&msg.body[..], b"hi;there");
//!
//! // Encode once, send the same bytes to every recipient.
//! let reply = Message::new("default", "chat", "hello");
//! assert_eq!(&reply.to_frame().bytes[..], b";default;;chat;0;0;hello");
//! # Ok::<(), neffos_protocol::DecodeError>(())
//! ```

#![cfg_attr(docsrs, feature(doc_cfg))]

pub mod cluster;
mod envelope;
mod error;
mod escape;
pub mod events;
mod frame;
pub mod gocompat;
pub mod handshake;
pub mod recovery;
mod token;

pub use envelope::{ENVELOPE_VERSION, Envelope, EnvelopeKind, EnvelopeTarget};
pub use error::{DecodeError, EnvelopeError, Field, HandshakeError};
pub use escape::{ESCAPE_TOKEN, escape, unescape};
pub use frame::{
    DEFAULT_MAX_FIELD_LEN, DEFAULT_MAX_FRAME_SIZE, DecodeOptions, Frame, Message, NativeMode,
    decode, encode_empty_reply,
};
pub use token::{EXCLUSION_PREFIX, WaitKind, WaitToken};

/// Re-exported so users can build field values without adding the crate themselves.
pub use bytestring::ByteString;

/// Known error texts that neffos peers put on the wire (PROTOCOL.md §4.4).
pub mod known_errors {
    /// A namespace was not declared, or not connected.
    pub const BAD_NAMESPACE: &str = "bad namespace";
    /// A room was not joined.
    pub const BAD_ROOM: &str = "bad room";
    /// The connection was closed before a write.
    pub const WRITE_CLOSED: &str = "write closed";
    /// A frame could not be parsed.
    pub const INVALID_PAYLOAD: &str = "invalid payload";
}
