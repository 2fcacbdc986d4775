//! Errors of the framework's operations: one type per operation where the failure modes
//! differ, each a [`Error<Kind>`] with a `#[non_exhaustive]` kind to match on, a message
//! that names the operation and its object (namespace, room, connection ID), and the
//! underlying error as its [`source`](std::error::Error::source).
//!
//! ```
//! # async fn run(ns: neffos::NsConn) {
//! use neffos::error::AskErrorKind;
//! match ns.ask("price", "ABC").await {
//!     Ok(reply) => println!("{}", String::from_utf8_lossy(&reply.body)),
//!     Err(e) if e.kind() == AskErrorKind::Remote => println!("refused: {:?}", e.remote()),
//!     Err(e) if e.kind() == AskErrorKind::Timeout => println!("no answer in time"),
//!     Err(e) => println!("{e}"),
//! }
//! # }
//! ```

use std::error::Error as StdError;
use std::fmt;

/// A boxed error, the [`source`](std::error::Error::source) of this crate's errors.
pub type BoxError = Box<dyn StdError + Send + Sync + 'static>;

/// The error of an operation whose failure modes are told apart by `K`
/// (see [`AskError`], [`WriteError`]…).
pub struct Error<K> {
    kind: K,
    context: String,
    source: Option<BoxError>,
}

impl<K: Copy> Error<K> {
    /// An error of `kind` in the operation described by `context` (e.g. `ask "chat" on
    /// namespace "default" of connection "abc"`).
    pub fn new(kind: K, context: impl Into<String>) -> Self {
        Error {
            kind,
            context: context.into(),
            source: None,
        }
    }

    /// The same error, caused by `source`.
    pub fn with_source(mut self, source: impl Into<BoxError>) -> Self {
        self.source = Some(source.into());
        self
    }

    /// What went wrong.
    pub fn kind(&self) -> K {
        self.kind
    }

    /// The operation and its object, e.g. `ask "chat" on namespace "default" of connection "abc"`.
    pub fn context(&self) -> &str {
        &self.context
    }

    /// The text of the peer's neffos error reply, when the peer answered with one (the
    /// source is then a [`RemoteError`]).
    pub fn remote(&self) -> Option<&str> {
        let mut cause = self
            .source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static));
        while let Some(e) = cause {
            if let Some(remote) = e.downcast_ref::<RemoteError>() {
                return Some(remote.text());
            }
            cause = e.source();
        }
        None
    }

    /// The context and the source, for re-wrapping under another kind.
    #[cfg(any(feature = "json", feature = "msgpack"))]
    pub(crate) fn into_parts(self) -> (String, Option<BoxError>) {
        (self.context, self.source)
    }

    /// Turns this error into one of another operation, keeping it as the source.
    pub(crate) fn into_kind<L: Copy>(self, kind: L, context: impl Into<String>) -> Error<L>
    where
        K: fmt::Display + fmt::Debug + Send + Sync + 'static,
    {
        Error::new(kind, context).with_source(self)
    }
}

impl<K: fmt::Debug> fmt::Debug for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Error")
            .field("kind", &self.kind)
            .field("context", &self.context)
            .field("source", &self.source)
            .finish()
    }
}

impl<K: fmt::Display> fmt::Display for Error<K> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.context, self.kind)?;
        if let Some(source) = &self.source {
            write!(f, ": {source}")?;
        }
        Ok(())
    }
}

impl<K: fmt::Display + fmt::Debug> StdError for Error<K> {
    fn source(&self) -> Option<&(dyn StdError + 'static)> {
        self.source
            .as_deref()
            .map(|s| s as &(dyn StdError + 'static))
    }
}

/// The peer's neffos error reply (`msg.err`), kept as the source of an error of kind
/// `Remote` / `Refused`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteError {
    text: String,
}

impl RemoteError {
    /// The peer's error text.
    pub fn new(text: impl Into<String>) -> Self {
        RemoteError { text: text.into() }
    }

    /// The peer's error text.
    pub fn text(&self) -> &str {
        &self.text
    }
}

impl fmt::Display for RemoteError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl StdError for RemoteError {}

macro_rules! kinds {
    ($(#[$meta:meta])* $alias:ident = $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal,)* }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
        #[non_exhaustive]
        pub enum $name {
            $($(#[$vmeta])* $variant,)*
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(match self {
                    $($name::$variant => $text,)*
                })
            }
        }

        #[doc = concat!("An [`Error`] whose kind is a [`", stringify!($name), "`].")]
        pub type $alias = Error<$name>;
    };
}

kinds! {
    /// Why a message could not be sent to the peer ([`NsConn::emit`](crate::NsConn::emit),
    /// [`Room::emit`](crate::Room::emit), [`Conn::write`](crate::Conn::write)).
    WriteError = WriteErrorKind {
        /// The connection is closed (or was closed as a slow consumer).
        Closed => "connection closed",
        /// The handshake is not acknowledged yet.
        NotReady => "handshake not acknowledged yet",
        /// The message's namespace is not connected on this connection.
        NamespaceNotConnected => "namespace not connected",
        /// The message's room is not joined on this connection.
        RoomNotJoined => "room not joined",
        /// A text message whose body is not UTF-8 (send it as binary instead).
        InvalidText => "a text message body must be UTF-8; send binary data with a binary message",
        /// The body could not be encoded (typed bodies).
        Encode => "cannot encode the body",
    }
}

kinds! {
    /// Why an Ask failed ([`NsConn::ask`](crate::NsConn::ask),
    /// [`Conn::ask`](crate::Conn::ask), [`Server::ask`](crate::Server::ask)).
    AskError = AskErrorKind {
        /// No reply within the deadline.
        Timeout => "no reply in time",
        /// No connection with this ID is known (locally, or on any instance within the deadline).
        UnknownConnection => "unknown connection",
        /// The peer answered with a neffos error reply ([`Error::remote`] has its text).
        Remote => "the peer answered with an error",
        /// The connection (or the server) closed before the reply came.
        Closed => "closed before the reply",
        /// The exchange could not carry the Ask to another instance.
        Exchange => "exchange failure",
        /// Too many Asks are pending on this connection ([`Config::max_pending_asks`](crate::Config)).
        TooManyPending => "too many pending asks",
        /// The request was not sent: its namespace is not connected, or its body is invalid
        /// (the source is the [`WriteError`]).
        NotSent => "request not sent",
        /// The reply body did not decode into the requested type (typed Asks).
        Decode => "cannot decode the reply body",
    }
}

kinds! {
    /// Why connecting or disconnecting a namespace failed ([`Conn::connect`](crate::Conn::connect),
    /// [`NsConn::disconnect`](crate::NsConn::disconnect)).
    NamespaceError = NamespaceErrorKind {
        /// The namespace is not declared on this side.
        Unknown => "namespace not declared on this side",
        /// The namespace is not connected.
        NotConnected => "namespace not connected",
        /// A handler (ours or the peer's) refused: [`Error::remote`] has its text.
        Refused => "refused",
        /// The peer did not answer in time.
        Timeout => "no answer in time",
        /// The connection closed.
        Closed => "connection closed",
    }
}

kinds! {
    /// Why joining or leaving a room failed ([`NsConn::join_room`](crate::NsConn::join_room),
    /// [`NsConn::leave_room`](crate::NsConn::leave_room)).
    RoomError = RoomErrorKind {
        /// The room's namespace is not connected.
        NamespaceNotConnected => "namespace not connected",
        /// The room is not joined.
        NotJoined => "room not joined",
        /// The connection already joined [`Config::max_rooms`](crate::Config) rooms.
        TooManyRooms => "too many rooms on this connection",
        /// A handler (ours or the peer's) refused: [`Error::remote`] has its text.
        Refused => "refused",
        /// The peer did not answer in time.
        Timeout => "no answer in time",
        /// The connection closed.
        Closed => "connection closed",
    }
}

kinds! {
    /// Why a broadcast failed ([`Server::broadcast`](crate::Server::broadcast),
    /// [`NsConn::broadcast`](crate::NsConn::broadcast)).
    BroadcastError = BroadcastErrorKind {
        /// A text message whose body is not UTF-8 (send it as binary instead).
        InvalidText => "a text message body must be UTF-8; send binary data with a binary message",
        /// Broadcasting is a server-side operation; this connection is a client's.
        NotServer => "broadcast is a server-side operation (this is a client connection)",
        /// The envelope for the other instances could not be encoded.
        Exchange => "exchange failure",
        /// The body could not be encoded (typed bodies).
        Encode => "cannot encode the body",
    }
}

kinds! {
    /// Why a client could not connect ([`ClientBuilder::connect`](crate::ClientBuilder)).
    DialError = DialErrorKind {
        /// The URL or a header is invalid.
        InvalidRequest => "invalid request",
        /// The WebSocket connection failed (network, HTTP status, TLS).
        Transport => "transport failure",
        /// No answer within the handshake timeout.
        Timeout => "timed out",
        /// The server refused the connection: [`Error::remote`] has its reason (`H<reason>`).
        Refused => "refused by the server",
        /// The server's handshake answer was not a neffos acknowledgement.
        Handshake => "handshake failed",
    }
}

kinds! {
    /// Why waiting for a client-side event failed ([`Client::wait_reconnects`](crate::Client)).
    WaitError = WaitErrorKind {
        /// The event did not happen in time.
        Timeout => "timed out",
        /// The connection closed.
        Closed => "connection closed",
    }
}

kinds! {
    /// Why a typed body could not be decoded or encoded ([`MessageExt`](crate::MessageExt),
    /// [`Reply::json`](crate::Reply::json)…); the source is the serde error.
    BodyError = BodyErrorKind {
        /// The body is not valid for the requested type.
        Decode => "cannot be decoded",
        /// The value cannot be represented in the format (e.g. a map with non-string keys in JSON).
        Encode => "cannot be encoded",
    }
}

kinds! {
    /// Why a handler argument could not be taken from a message
    /// ([`FromMessage`](crate::extract::FromMessage)).
    ExtractError = ExtractErrorKind {
        /// The body did not decode (the source is the decoder's error).
        Body => "cannot be decoded",
        /// No state of the requested type was given to the builder.
        MissingState => "not given to the builder (ServerBuilder::with_state)",
    }
}

kinds! {
    /// A failure of an exchange (configuring, connecting, encoding); broker crates convert
    /// their errors into it, keeping them as the source.
    ExchangeError = ExchangeErrorKind {
        /// Invalid configuration: URL, prefix, a feature not enabled.
        Config => "invalid configuration",
        /// The broker could not be reached or refused the credentials.
        Connect => "cannot connect to the broker",
        /// The broker failed a command.
        Broker => "broker failure",
        /// An envelope could not be encoded.
        Encode => "cannot encode the envelope",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_names_operation_kind_and_cause_and_source_chains() {
        let write = WriteError::new(
            WriteErrorKind::NamespaceNotConnected,
            "emit \"chat\" on namespace \"lobby\"",
        );
        let ask = write.into_kind(AskErrorKind::NotSent, "ask \"chat\" on namespace \"lobby\"");
        assert_eq!(ask.kind(), AskErrorKind::NotSent);
        let text = ask.to_string();
        assert!(
            text.starts_with("ask \"chat\" on namespace \"lobby\": request not sent"),
            "{text}"
        );
        assert!(text.contains("namespace not connected"), "{text}");
        let source = ask.source().expect("source");
        let inner = source.downcast_ref::<WriteError>().expect("a WriteError");
        assert_eq!(inner.kind(), WriteErrorKind::NamespaceNotConnected);
        assert_eq!(ask.remote(), None);
    }

    #[test]
    fn remote_text_is_found_through_the_chain() {
        let ask = AskError::new(AskErrorKind::Remote, "ask \"join\"")
            .with_source(RemoteError::new("nope"));
        assert_eq!(ask.remote(), Some("nope"));
        let room = ask.into_kind(RoomErrorKind::Refused, "join room \"r\"");
        assert_eq!(room.remote(), Some("nope"));
    }

    #[test]
    fn errors_are_send_sync_static() {
        fn check<T: StdError + Send + Sync + 'static>() {}
        check::<AskError>();
        check::<WriteError>();
        check::<BroadcastError>();
        check::<ExchangeError>();
    }
}
