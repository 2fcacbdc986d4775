//! Errors returned by the framework's operations.

use std::time::Duration;

/// The error of every fallible operation of this crate.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The connection is closed; nothing more can be written to it.
    #[error("write closed")]
    ConnectionClosed,
    /// The namespace is not declared on this side, or not connected on this connection.
    #[error("bad namespace")]
    BadNamespace,
    /// The room is not joined on this connection.
    #[error("bad room")]
    BadRoom,
    /// The peer answered with an error text (a neffos error reply).
    #[error("{0}")]
    Remote(String),
    /// An Ask got no reply within its deadline.
    #[error("ask timed out after {0:?}")]
    Timeout(Duration),
    /// Too many Asks are pending on this connection.
    #[error("too many pending asks (limit {0})")]
    TooManyAsks(usize),
    /// Too many namespaces or rooms on this connection.
    #[error("limit reached: {0}")]
    Limit(&'static str),
    /// A text message whose body is not UTF-8 (send it as binary instead).
    #[error("a text message body must be UTF-8; send binary data with a binary message")]
    InvalidText,
    /// No connection with this ID is known (locally, or on any instance within the deadline).
    #[error("no connection with ID {0:?}")]
    UnknownConnection(String),
    /// The exchange refused or failed an operation.
    #[error("exchange: {0}")]
    Exchange(String),
    /// The handshake with the peer failed.
    #[error("handshake: {0}")]
    Handshake(String),
    /// The server refused the connection with this reason (`H<reason>`).
    #[error("refused: {0}")]
    Refused(String),
    /// A transport-level failure (dial, I/O, WebSocket protocol).
    #[error("transport: {0}")]
    Transport(String),
    /// The server is shutting down.
    #[error("server shutting down")]
    ShuttingDown,
}

/// `Result` with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;
