//! The `wait` field: request/reply correlation tokens and the markers that share its slot
//! (PROTOCOL.md §2.5, §2.6).

use std::fmt;

use bytestring::ByteString;

/// Prefix of the broadcast-exclusion marker that neffos Go writes in the wait slot.
pub const EXCLUSION_PREFIX: &str = "neffos(0x";

/// What a `wait` token's shape says about the frame that carries it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum WaitKind {
    /// Empty: fire-and-forget, no reply expected.
    None,
    /// Starts with `$`: a request asked by a client (Go client, neffos.js).
    ClientAsk,
    /// Starts with `#`: the reserved "confirmation" shape; treated as a wait.
    Confirmation,
    /// Starts with [`EXCLUSION_PREFIX`]: neffos Go's broadcast-exclusion marker.
    /// Only ever valid between servers, never from a client.
    Exclusion,
    /// Second byte is `!` (length > 2): neffos Go's "came through the exchange" marker.
    /// Only ever valid between servers, never from a client.
    ExchangeMarked,
    /// Any other non-empty token: a request asked by a server (or its echo in a reply).
    ServerAsk,
}

impl WaitKind {
    /// Whether a token of this kind may only travel between servers. A server must refuse
    /// such a token from a client (PROTOCOL.md §7.7).
    pub fn is_server_internal(self) -> bool {
        matches!(self, WaitKind::Exclusion | WaitKind::ExchangeMarked)
    }
}

/// The `wait` field of a neffos message: an opaque token that a reply echoes byte for byte.
///
/// Cloning is cheap (the token shares the frame's buffer).
#[derive(Clone, Default, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WaitToken(ByteString);

impl WaitToken {
    /// The empty token (no reply expected).
    pub const fn empty() -> Self {
        WaitToken(ByteString::new())
    }

    /// Wraps a raw token as read from or written to the wire.
    pub fn new(raw: impl Into<ByteString>) -> Self {
        WaitToken(raw.into())
    }

    /// A client-ask token: `$` followed by `id`.
    pub fn client(id: impl fmt::Display) -> Self {
        WaitToken(ByteString::from(format!("${id}")))
    }

    /// A server-ask token. `id` must not start with `$` or `#`; an integer is the usual choice.
    pub fn server(id: u64) -> Self {
        WaitToken(ByteString::from(id.to_string()))
    }

    /// The raw token.
    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The raw token as a shared string.
    pub fn as_byte_string(&self) -> &ByteString {
        &self.0
    }

    /// True for the empty token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// Classifies the token by its shape.
    pub fn kind(&self) -> WaitKind {
        let s = self.0.as_bytes();
        match s.first() {
            None => WaitKind::None,
            Some(_) if self.0.starts_with(EXCLUSION_PREFIX) => WaitKind::Exclusion,
            Some(b'$') => WaitKind::ClientAsk,
            Some(b'#') => WaitKind::Confirmation,
            Some(_) if s.len() > 2 && s[1] == b'!' => WaitKind::ExchangeMarked,
            Some(_) => WaitKind::ServerAsk,
        }
    }

    /// True when a reply with this token answers a pending client ask
    /// (the rule neffos.js and the Go client use: `$` or `#` prefix).
    pub fn is_client_wait(&self) -> bool {
        matches!(self.kind(), WaitKind::ClientAsk | WaitKind::Confirmation)
    }
}

impl fmt::Debug for WaitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl fmt::Display for WaitToken {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl From<&'static str> for WaitToken {
    fn from(s: &'static str) -> Self {
        WaitToken(ByteString::from_static(s))
    }
}

impl From<String> for WaitToken {
    fn from(s: String) -> Self {
        WaitToken(ByteString::from(s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_of_every_documented_shape() {
        let cases = [
            ("", WaitKind::None),
            ("$1795487474372343598", WaitKind::ClientAsk),
            ("$183048593284712", WaitKind::ClientAsk),
            ("$263212.51904544816", WaitKind::ClientAsk),
            ("$dn4kkm3aayqq-1", WaitKind::ClientAsk),
            ("1795487474372343237", WaitKind::ServerAsk),
            ("dn4kkjd7rjrx-2-5ea82d08", WaitKind::ServerAsk),
            ("R795487474372343237", WaitKind::ServerAsk),
            ("#12", WaitKind::Confirmation),
            ("1!234", WaitKind::ExchangeMarked),
            ("d!n4k-1-5150c502", WaitKind::ExchangeMarked),
            ("M!yChatApp.default.", WaitKind::ExchangeMarked),
            ("1!", WaitKind::ServerAsk),
            (
                "neffos(0x3f2c9a10-0000-4000-8000-000000000000(user420xc00018a2d0))",
                WaitKind::Exclusion,
            ),
        ];
        for (raw, kind) in cases {
            assert_eq!(WaitToken::new(raw).kind(), kind, "{raw}");
        }
        assert!(WaitKind::Exclusion.is_server_internal());
        assert!(WaitKind::ExchangeMarked.is_server_internal());
        assert!(!WaitKind::ServerAsk.is_server_internal());
        assert_eq!(WaitToken::client(7).as_str(), "$7");
        assert_eq!(WaitToken::server(7).kind(), WaitKind::ServerAsk);
    }
}
