//! The WebSocket as the connection engine sees it, independent of the WebSocket library.
//! Adapters for axum's socket (server) and tokio-tungstenite (client) map to these types.

use std::fmt;
use std::marker::PhantomData;
use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{Sink, Stream};
use neffos_protocol::Frame;

/// An incoming WebSocket message.
#[derive(Debug)]
pub(crate) enum WsIn {
    Text(Bytes),
    Binary(Bytes),
    /// Ping or pong: proof of life, no content for us.
    Control,
    /// A close frame, with its code if it had one.
    Close(Option<u16>),
}

/// An outgoing WebSocket message.
#[derive(Debug, Clone)]
pub(crate) enum WsOut {
    Frame(Frame),
    /// A text frame checked for UTF-8 once and shared by every recipient of a broadcast
    /// (axum's text type re-checks a plain `Bytes` on every conversion).
    #[cfg(feature = "axum")]
    Text(axum::extract::ws::Utf8Bytes),
    Ping,
    Close(u16, String),
}

impl WsOut {
    /// Payload bytes of a data frame (for the frames/bytes metrics), `None` otherwise.
    pub(crate) fn data_len(&self) -> Option<usize> {
        match self {
            WsOut::Frame(f) => Some(f.bytes.len()),
            #[cfg(feature = "axum")]
            WsOut::Text(text) => Some(text.len()),
            WsOut::Ping | WsOut::Close(..) => None,
        }
    }

    /// The frame to queue for each recipient of a broadcast of `frame`: a text frame is
    /// checked once here instead of once per recipient.
    pub(crate) fn shared(frame: Frame) -> WsOut {
        #[cfg(feature = "axum")]
        if !frame.binary
            && let Ok(text) = axum::extract::ws::Utf8Bytes::try_from(frame.bytes.clone())
        {
            return WsOut::Text(text);
        }
        WsOut::Frame(frame)
    }
}

/// What went wrong on the wire, as far as the close code depends on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Cause {
    /// A frame or message over the size limits (close 1009).
    TooBig,
    /// A text message that is not UTF-8 (close 1007).
    InvalidUtf8,
    /// Anything else: I/O, protocol violations, a closed socket.
    Other,
}

/// A transport failure, already logged by whoever saw it first.
#[derive(Debug)]
pub(crate) struct TransportError {
    pub(crate) cause: Cause,
    pub(crate) message: String,
}

impl TransportError {
    pub(crate) fn other(message: impl Into<String>) -> Self {
        TransportError {
            cause: Cause::Other,
            message: message.into(),
        }
    }
}

impl fmt::Display for TransportError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.message)
    }
}

/// The cause of a tungstenite error (the WebSocket library of both axum and our client).
#[cfg(any(feature = "axum", feature = "client"))]
fn tungstenite_cause(e: &tungstenite::Error) -> Cause {
    use tungstenite::error::{CapacityError, Error};
    match e {
        Error::Capacity(CapacityError::MessageTooLong { .. }) => Cause::TooBig,
        Error::Utf8(_) => Cause::InvalidUtf8,
        _ => Cause::Other,
    }
}

impl std::error::Error for TransportError {}

/// A WebSocket as the connection's one task drives it: a stream of incoming frames and a
/// sink for outgoing ones in one value, so reading and writing need no lock between them.
pub(crate) trait Socket:
    Stream<Item = Result<WsIn, TransportError>>
    + Sink<WsOut, Error = TransportError>
    + Send
    + Unpin
    + 'static
{
}

impl<T> Socket for T where
    T: Stream<Item = Result<WsIn, TransportError>>
        + Sink<WsOut, Error = TransportError>
        + Send
        + Unpin
        + 'static
{
}

/// A WebSocket library's socket (`S`, carrying its message type `M`) seen as a [`Socket`]:
/// its messages and errors mapped on the way, every error of the sink included
/// (`SinkExt::sink_map_err` maps only the first and panics on a second, which a closing
/// connection does hit).
pub(crate) struct Mapped<S, M> {
    socket: S,
    message: PhantomData<fn(M) -> M>,
}

impl<S, M> Mapped<S, M> {
    pub(crate) fn new(socket: S) -> Self {
        Mapped {
            socket,
            message: PhantomData,
        }
    }
}

/// How one WebSocket library's messages map to the engine's frames.
pub(crate) trait Codec: Sized {
    fn incoming(self) -> WsIn;
    fn outgoing(out: WsOut) -> Result<Self, TransportError>;
}

impl<S, M, E> Stream for Mapped<S, M>
where
    S: Stream<Item = Result<M, E>> + Unpin,
    M: Codec,
    E: Into<TransportError>,
{
    type Item = Result<WsIn, TransportError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.socket)
            .poll_next(cx)
            .map(|item| item.map(|r| r.map(M::incoming).map_err(Into::into)))
    }
}

impl<S, M, E> Sink<WsOut> for Mapped<S, M>
where
    S: Sink<M, Error = E> + Unpin,
    M: Codec,
    E: Into<TransportError>,
{
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_ready(cx)
            .map_err(Into::into)
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsOut) -> Result<(), Self::Error> {
        let message = M::outgoing(item)?;
        Pin::new(&mut self.socket)
            .start_send(message)
            .map_err(Into::into)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_flush(cx)
            .map_err(Into::into)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.socket)
            .poll_close(cx)
            .map_err(Into::into)
    }
}

/// A separate stream and sink as one [`Socket`] (in-process connections).
#[cfg(any(test, feature = "testkit"))]
pub(crate) struct Duplex<R, W> {
    pub(crate) stream: R,
    pub(crate) sink: W,
}

#[cfg(any(test, feature = "testkit"))]
impl<R, W> Stream for Duplex<R, W>
where
    R: Stream + Unpin,
    W: Unpin,
{
    type Item = R::Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        Pin::new(&mut self.stream).poll_next(cx)
    }
}

#[cfg(any(test, feature = "testkit"))]
impl<R, W, Item> Sink<Item> for Duplex<R, W>
where
    R: Unpin,
    W: Sink<Item> + Unpin,
{
    type Error = W::Error;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_ready(cx)
    }

    fn start_send(mut self: Pin<&mut Self>, item: Item) -> Result<(), Self::Error> {
        Pin::new(&mut self.sink).start_send(item)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_flush(cx)
    }

    fn poll_close(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Pin::new(&mut self.sink).poll_close(cx)
    }
}

#[cfg(feature = "axum")]
impl From<axum::Error> for TransportError {
    fn from(e: axum::Error) -> Self {
        let message = e.to_string();
        // axum wraps tungstenite's error; its type carries the cause.
        let inner = e.into_inner();
        let cause = match inner.downcast_ref::<tungstenite::Error>() {
            Some(e) => tungstenite_cause(e),
            None if inner.downcast_ref::<std::str::Utf8Error>().is_some() => Cause::InvalidUtf8,
            None => Cause::Other,
        };
        TransportError { cause, message }
    }
}

#[cfg(any(feature = "axum", feature = "client"))]
impl From<tungstenite::Error> for TransportError {
    fn from(e: tungstenite::Error) -> Self {
        TransportError {
            cause: tungstenite_cause(&e),
            message: e.to_string(),
        }
    }
}

#[cfg(feature = "axum")]
pub(crate) mod axum_ws {
    use axum::extract::ws::{CloseFrame, Message, Utf8Bytes, WebSocket};

    use super::{Codec, Mapped, TransportError, WsIn, WsOut};

    /// axum's upgraded WebSocket as the engine's socket.
    pub(crate) fn socket(socket: WebSocket) -> Mapped<WebSocket, Message> {
        Mapped::new(socket)
    }

    impl Codec for Message {
        fn incoming(self) -> WsIn {
            match self {
                Message::Text(t) => WsIn::Text(t.into()),
                Message::Binary(b) => WsIn::Binary(b),
                Message::Ping(_) | Message::Pong(_) => WsIn::Control,
                Message::Close(frame) => WsIn::Close(frame.map(|f| f.code)),
            }
        }

        fn outgoing(out: WsOut) -> Result<Self, TransportError> {
            Ok(match out {
                WsOut::Frame(f) if f.binary => Message::Binary(f.bytes),
                WsOut::Frame(f) => Message::Text(
                    Utf8Bytes::try_from(f.bytes)
                        .map_err(|_| TransportError::other("text frame is not UTF-8"))?,
                ),
                WsOut::Text(text) => Message::Text(text),
                WsOut::Ping => Message::Ping(bytes::Bytes::new()),
                WsOut::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code,
                    reason: reason.into(),
                })),
            })
        }
    }
}

#[cfg(feature = "client")]
pub(crate) mod tungstenite_ws {
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    use super::{Codec, Mapped, TransportError, WsIn, WsOut};

    /// tokio-tungstenite's client WebSocket as the engine's socket.
    pub(crate) fn socket<S>(socket: WebSocketStream<S>) -> Mapped<WebSocketStream<S>, Message> {
        Mapped::new(socket)
    }

    impl Codec for Message {
        fn incoming(self) -> WsIn {
            match self {
                Message::Text(t) => WsIn::Text(t.into()),
                Message::Binary(b) => WsIn::Binary(b),
                Message::Ping(_) | Message::Pong(_) | Message::Frame(_) => WsIn::Control,
                Message::Close(frame) => WsIn::Close(frame.map(|f| u16::from(f.code))),
            }
        }

        fn outgoing(out: WsOut) -> Result<Self, TransportError> {
            Ok(match out {
                WsOut::Frame(f) if f.binary => Message::Binary(f.bytes),
                WsOut::Frame(f) => Message::Text(
                    Utf8Bytes::try_from(f.bytes)
                        .map_err(|_| TransportError::other("text frame is not UTF-8"))?,
                ),
                #[cfg(feature = "axum")]
                WsOut::Text(text) => Message::Text(
                    Utf8Bytes::try_from(bytes::Bytes::from(text))
                        .map_err(|_| TransportError::other("text frame is not UTF-8"))?,
                ),
                WsOut::Ping => Message::Ping(bytes::Bytes::new()),
                WsOut::Close(code, reason) => Message::Close(Some(CloseFrame {
                    code: CloseCode::from(code),
                    reason: reason.into(),
                })),
            })
        }
    }
}
