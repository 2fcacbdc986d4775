//! Typed errors of the codec. Every malformed input maps to one variant; nothing panics.

use std::fmt;

/// A header field of a neffos message, named in errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Field {
    /// Field 1, the wait token.
    Wait,
    /// Field 2.
    Namespace,
    /// Field 3.
    Room,
    /// Field 4.
    Event,
    /// Field 5.
    IsError,
    /// Field 6.
    IsNoOp,
}

impl fmt::Display for Field {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Field::Wait => "wait",
            Field::Namespace => "namespace",
            Field::Room => "room",
            Field::Event => "event",
            Field::IsError => "isError",
            Field::IsNoOp => "isNoOp",
        })
    }
}

/// Why a frame is not a neffos message (PROTOCOL.md §2.8).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeError {
    /// A zero-length frame.
    #[error("empty frame")]
    Empty,
    /// The frame is larger than [`DecodeOptions::max_frame_size`](crate::DecodeOptions).
    #[error("frame of {len} bytes exceeds the limit of {max} bytes")]
    FrameTooLarge {
        /// Size of the frame.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// Fewer than six `;` separators, and native messages are not allowed.
    #[error("frame has {found} fields; a neffos message has 7")]
    TooFewFields {
        /// How many fields were found.
        found: usize,
    },
    /// A header field is longer than [`DecodeOptions::max_field_len`](crate::DecodeOptions).
    #[error("{field} field of {len} bytes exceeds the limit of {max} bytes")]
    FieldTooLong {
        /// The field.
        field: Field,
        /// Its length.
        len: usize,
        /// The configured limit.
        max: usize,
    },
    /// A header field is not UTF-8 (possible in binary frames).
    #[error("{field} field is not valid UTF-8")]
    InvalidUtf8 {
        /// The field.
        field: Field,
    },
}

/// Why a handshake frame was refused (PROTOCOL.md §1.2).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum HandshakeError {
    /// A zero-length frame where an ACK byte was expected.
    #[error("empty handshake frame")]
    Empty,
    /// A client sent a server's ACK (`A<id>` or `H<text>`): the ID-spoofing attempt of
    /// PROTOCOL.md §1.3. A server must refuse it.
    #[error("a client may not send the server acknowledgement byte {0:?}")]
    ClientSentServerAck(char),
    /// The server's first frame is neither `A<id>` nor `H<error>`.
    #[error("expected the server acknowledgement (A or H), got byte {0:#04x}")]
    UnexpectedServerFrame(u8),
    /// A connection ID that cannot travel on the wire (contains `;`, or is not UTF-8).
    #[error("connection ID {0:?} is not valid on the wire: {1}")]
    InvalidId(String, &'static str),
}

/// Why an inter-instance [`Envelope`](crate::Envelope) could not be read or written.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EnvelopeError {
    /// The envelope was written by a format version this build does not know.
    #[error("unknown envelope version {0}")]
    UnknownVersion(u64),
    /// Not a MessagePack envelope at all (garbage, truncated, or another application's data).
    #[error("malformed envelope: {0}")]
    Malformed(#[source] rmp_serde::decode::Error),
    /// The envelope could not be serialised.
    #[error("cannot encode envelope: {0}")]
    Encode(#[source] rmp_serde::encode::Error),
}
