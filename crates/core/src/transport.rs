//! The WebSocket as the connection engine sees it, independent of the WebSocket library.
//! Adapters for axum's socket (server) and tokio-tungstenite (client) map to these types.

use std::fmt;

use bytes::Bytes;
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

/// Maps every error of a sink into [`TransportError`]. (`SinkExt::sink_map_err` and
/// `sink_err_into` map only the first error and panic on a second one, which a writer
/// closing after a failed flush does hit.)
#[derive(Debug)]
pub(crate) struct ErrInto<S>(pub(crate) S);

impl<S, Item> futures_util::Sink<Item> for ErrInto<S>
where
    S: futures_util::Sink<Item> + Unpin,
    S::Error: Into<TransportError>,
{
    type Error = TransportError;

    fn poll_ready(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::pin::Pin::new(&mut self.0)
            .poll_ready(cx)
            .map_err(Into::into)
    }

    fn start_send(mut self: std::pin::Pin<&mut Self>, item: Item) -> Result<(), Self::Error> {
        std::pin::Pin::new(&mut self.0)
            .start_send(item)
            .map_err(Into::into)
    }

    fn poll_flush(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::pin::Pin::new(&mut self.0)
            .poll_flush(cx)
            .map_err(Into::into)
    }

    fn poll_close(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Result<(), Self::Error>> {
        std::pin::Pin::new(&mut self.0)
            .poll_close(cx)
            .map_err(Into::into)
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
    use futures_util::{Sink, SinkExt, Stream, StreamExt, future};

    use super::{TransportError, WsIn, WsOut};

    pub(crate) fn split(
        socket: WebSocket,
    ) -> (
        impl Stream<Item = Result<WsIn, TransportError>> + Send + Unpin + 'static,
        impl Sink<WsOut, Error = TransportError> + Send + Unpin + 'static,
    ) {
        let (sink, stream) = socket.split();
        let stream = stream.map(|item| match item {
            Ok(Message::Text(t)) => Ok(WsIn::Text(t.into())),
            Ok(Message::Binary(b)) => Ok(WsIn::Binary(b)),
            Ok(Message::Ping(_) | Message::Pong(_)) => Ok(WsIn::Control),
            Ok(Message::Close(frame)) => Ok(WsIn::Close(frame.map(|f| f.code))),
            Err(e) => Err(TransportError::from(e)),
        });
        let sink = super::ErrInto(sink).with(|out: WsOut| future::ready(to_axum(out)));
        (stream, sink)
    }

    fn to_axum(out: WsOut) -> Result<Message, TransportError> {
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

#[cfg(feature = "client")]
pub(crate) mod tungstenite_ws {
    use futures_util::{Sink, SinkExt, Stream, StreamExt, future};
    use tokio::io::{AsyncRead, AsyncWrite};
    use tokio_tungstenite::WebSocketStream;
    use tokio_tungstenite::tungstenite::protocol::CloseFrame;
    use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
    use tokio_tungstenite::tungstenite::{Message, Utf8Bytes};

    use super::{TransportError, WsIn, WsOut};

    pub(crate) fn split<S>(
        socket: WebSocketStream<S>,
    ) -> (
        impl Stream<Item = Result<WsIn, TransportError>> + Send + Unpin + 'static,
        impl Sink<WsOut, Error = TransportError> + Send + Unpin + 'static,
    )
    where
        S: AsyncRead + AsyncWrite + Send + Unpin + 'static,
    {
        let (sink, stream) = socket.split();
        let stream = stream.map(|item| match item {
            Ok(Message::Text(t)) => Ok(WsIn::Text(t.into())),
            Ok(Message::Binary(b)) => Ok(WsIn::Binary(b)),
            Ok(Message::Ping(_) | Message::Pong(_) | Message::Frame(_)) => Ok(WsIn::Control),
            Ok(Message::Close(frame)) => Ok(WsIn::Close(frame.map(|f| u16::from(f.code)))),
            Err(e) => Err(TransportError::from(e)),
        });
        let sink = super::ErrInto(sink).with(|out: WsOut| future::ready(to_tungstenite(out)));
        (stream, sink)
    }

    fn to_tungstenite(out: WsOut) -> Result<Message, TransportError> {
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
