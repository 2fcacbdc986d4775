//! The application-level acknowledgement that follows the WebSocket handshake
//! (PROTOCOL.md §1.2): the client sends `M`, the server answers `A<id>` or `H<error>`,
//! all as text frames.

use bytes::{BufMut, Bytes, BytesMut};
use bytestring::ByteString;

use crate::error::HandshakeError;

/// Client → server: "acknowledge me". Only the first byte counts.
pub const ACK_REQUEST: u8 = b'M';
/// Server → client: accepted; the rest of the frame is the connection ID.
pub const ACK_ACCEPTED: u8 = b'A';
/// Server → client: refused; the rest of the frame is the error text.
pub const ACK_REJECTED: u8 = b'H';

/// The frame a client sends first.
pub fn ack_request() -> Bytes {
    Bytes::from_static(b"M")
}

/// What the server makes of a frame received before the connection is acknowledged.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHello {
    /// The `M` acknowledgement request.
    AckRequest,
    /// Any other frame: queue it and handle it after the acknowledgement (PROTOCOL.md §1.5).
    Early,
}

/// Classifies a frame a client sent before being acknowledged. A client frame starting with
/// `A` or `H` is the ID-spoofing attempt of PROTOCOL.md §1.3 and is refused.
pub fn classify_client_frame(frame: &[u8]) -> Result<ClientHello, HandshakeError> {
    match frame.first() {
        None => Err(HandshakeError::Empty),
        Some(&ACK_REQUEST) => Ok(ClientHello::AckRequest),
        Some(&b @ (ACK_ACCEPTED | ACK_REJECTED)) => {
            Err(HandshakeError::ClientSentServerAck(char::from(b)))
        }
        Some(_) => Ok(ClientHello::Early),
    }
}

/// Whether a frame a server sent before its acknowledgement is a message to keep for after
/// it (PROTOCOL.md §1.5: Go neffos may write the namespace connection its `OnConnect`
/// starts before `A`). `A`, `H`, and anything that cannot be a neffos message (empty, or
/// `M`, as from a peer that echoes) are not: they are the answer, or the wrong peer.
pub fn is_early_server_message(frame: &[u8]) -> bool {
    !matches!(
        frame.first(),
        None | Some(&(ACK_REQUEST | ACK_ACCEPTED | ACK_REJECTED))
    )
}

/// Checks that a connection ID can travel on the wire: IDs appear unescaped in `A<id>` and
/// in exclusion markers, so they must not contain `;`.
pub fn validate_id(id: &str) -> Result<(), HandshakeError> {
    if id.contains(';') {
        return Err(HandshakeError::InvalidId(id.to_owned(), "contains ';'"));
    }
    Ok(())
}

/// The server's acceptance frame `A<id>`.
pub fn encode_accept(id: &str) -> Result<Bytes, HandshakeError> {
    validate_id(id)?;
    let mut out = BytesMut::with_capacity(1 + id.len());
    out.put_u8(ACK_ACCEPTED);
    out.extend_from_slice(id.as_bytes());
    Ok(out.freeze())
}

/// The server's refusal frame `H<reason>`.
pub fn encode_reject(reason: &str) -> Bytes {
    let mut out = BytesMut::with_capacity(1 + reason.len());
    out.put_u8(ACK_REJECTED);
    out.extend_from_slice(reason.as_bytes());
    out.freeze()
}

/// The server's answer to `M`, as a client reads it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ServerAck {
    /// `A<id>`: accepted with this connection ID (may be empty).
    Accepted(ByteString),
    /// `H<reason>`: refused with this error text.
    Rejected(ByteString),
}

/// Parses the server's first frame. A client must accept only `A` or `H` here.
pub fn decode_server_ack(frame: Bytes) -> Result<ServerAck, HandshakeError> {
    let Some(&first) = frame.first() else {
        return Err(HandshakeError::Empty);
    };
    if first != ACK_ACCEPTED && first != ACK_REJECTED {
        return Err(HandshakeError::UnexpectedServerFrame(first));
    }
    let rest = ByteString::try_from(frame.slice(1..)).map_err(|_| {
        HandshakeError::InvalidId(
            String::from_utf8_lossy(&frame[1..]).into_owned(),
            "not UTF-8",
        )
    })?;
    Ok(if first == ACK_ACCEPTED {
        ServerAck::Accepted(rest)
    } else {
        ServerAck::Rejected(rest)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vectors_1_to_3() {
        assert_eq!(classify_client_frame(b"M"), Ok(ClientHello::AckRequest));
        assert_eq!(classify_client_frame(b"Mxyz"), Ok(ClientHello::AckRequest));
        let id = "6f1e4a2c-8b0d-4f6e-9a51-2d3c4b5a6e7f";
        let accept = encode_accept(id).unwrap();
        assert_eq!(&accept[..], format!("A{id}").as_bytes());
        assert_eq!(
            decode_server_ack(accept),
            Ok(ServerAck::Accepted(ByteString::from(id)))
        );
        let reject = encode_reject("not allowed: missing token");
        assert_eq!(&reject[..], b"Hnot allowed: missing token");
        assert_eq!(
            decode_server_ack(reject),
            Ok(ServerAck::Rejected("not allowed: missing token".into()))
        );
    }

    #[test]
    fn messages_a_server_sent_before_its_acknowledgement() {
        assert!(is_early_server_message(
            b"123;chat;;_OnNamespaceConnect;0;0;"
        ));
        assert!(is_early_server_message(b";chat;;chat;0;0;hi"));
        for not in [&b"Aid"[..], b"Hno", b"M", b"", b"A"] {
            assert!(!is_early_server_message(not), "{not:?}");
        }
    }

    #[test]
    fn spoofed_and_malformed() {
        assert_eq!(
            classify_client_frame(b"Aspoofed"),
            Err(HandshakeError::ClientSentServerAck('A'))
        );
        assert_eq!(
            classify_client_frame(b"Hx"),
            Err(HandshakeError::ClientSentServerAck('H'))
        );
        assert_eq!(classify_client_frame(b""), Err(HandshakeError::Empty));
        assert_eq!(
            classify_client_frame(b";default;;chat;0;0;x"),
            Ok(ClientHello::Early)
        );
        assert!(matches!(
            encode_accept("a;b"),
            Err(HandshakeError::InvalidId(..))
        ));
        assert_eq!(
            decode_server_ack(Bytes::from_static(b"Mx")),
            Err(HandshakeError::UnexpectedServerFrame(b'M'))
        );
        assert_eq!(decode_server_ack(Bytes::new()), Err(HandshakeError::Empty));
        assert!(matches!(
            decode_server_ack(Bytes::from_static(b"A\xff")),
            Err(HandshakeError::InvalidId(..))
        ));
    }
}
