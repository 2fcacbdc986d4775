//! A connection to a [`Server`] without a socket: frames go through bounded in-process
//! channels, so a benchmark can hold tens of thousands of members without file
//! descriptors or kernel buffers. A peer that stops reading fills its channel and then
//! the server's outbound queue, as a client that stops reading its socket would.

use std::pin::Pin;
use std::task::{Context, Poll};

use bytes::Bytes;
use futures_util::{FutureExt, Sink, Stream};
use tokio::sync::mpsc;

use crate::Server;
use crate::conn::RequestInfo;
use crate::transport::{Duplex, TransportError, WsIn, WsOut};

/// The client end of an in-process connection (see [`connect`]). Dropping it closes the
/// connection.
#[derive(Debug)]
pub struct LocalPeer {
    to_server: mpsc::UnboundedSender<Result<WsIn, TransportError>>,
    from_server: mpsc::Receiver<WsOut>,
}

impl LocalPeer {
    /// Sends one text frame (a raw neffos frame such as `M` or
    /// `$1;chat;;_OnNamespaceConnect;0;0;`). False once the server side is gone.
    pub fn send_text(&self, text: &str) -> bool {
        self.to_server
            .send(Ok(WsIn::Text(Bytes::copy_from_slice(text.as_bytes()))))
            .is_ok()
    }

    /// The payload of the next data frame the server wrote (pings skipped); `None` once the
    /// server closed the connection.
    pub async fn recv(&mut self) -> Option<Bytes> {
        loop {
            match self.from_server.recv().await? {
                WsOut::Frame(frame) => return Some(frame.bytes),
                #[cfg(feature = "axum")]
                WsOut::Text(text) => return Some(Bytes::from(text)),
                WsOut::Ping => {}
                WsOut::Close(..) => return None,
            }
        }
    }
}

/// Serves one in-process connection on `server` (a task on the current runtime) and
/// returns its client end. At most `capacity` frames wait for the peer to read them; then
/// the server's writer waits, as it would on a full socket.
pub fn connect(server: &Server, capacity: usize) -> LocalPeer {
    let (to_server, inbound) = mpsc::unbounded_channel::<Result<WsIn, TransportError>>();
    let (outbound, from_server) = mpsc::channel::<WsOut>(capacity.max(1));
    let stream: Pin<Box<dyn Stream<Item = Result<WsIn, TransportError>> + Send>> =
        Box::pin(futures_util::stream::unfold(inbound, |mut rx| async move {
            rx.recv().await.map(|item| (item, rx))
        }));
    let sink = ChannelSink {
        tx: outbound,
        reserving: None,
        permit: None,
    };
    let served = server.serve_socket(
        RequestInfo::default(),
        None,
        Duplex { stream, sink },
        http::Extensions::new(),
    );
    tokio::spawn(served);
    LocalPeer {
        to_server,
        from_server,
    }
}

type Reserving = Pin<Box<dyn Future<Output = Option<mpsc::OwnedPermit<WsOut>>> + Send>>;

/// The server's side of the peer's channel: ready once a slot is reserved.
struct ChannelSink {
    tx: mpsc::Sender<WsOut>,
    reserving: Option<Reserving>,
    permit: Option<mpsc::OwnedPermit<WsOut>>,
}

impl Sink<WsOut> for ChannelSink {
    type Error = TransportError;

    fn poll_ready(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        if self.permit.is_some() {
            return Poll::Ready(Ok(()));
        }
        let tx = self.tx.clone();
        let reserving = self
            .reserving
            .get_or_insert_with(|| Box::pin(tx.reserve_owned().map(Result::ok)));
        let permit = std::task::ready!(reserving.as_mut().poll(cx));
        self.reserving = None;
        match permit {
            Some(permit) => {
                self.permit = Some(permit);
                Poll::Ready(Ok(()))
            }
            None => Poll::Ready(Err(TransportError::other("local peer gone"))),
        }
    }

    fn start_send(mut self: Pin<&mut Self>, item: WsOut) -> Result<(), Self::Error> {
        match self.permit.take() {
            Some(permit) => {
                permit.send(item);
                Ok(())
            }
            None => Err(TransportError::other("local peer not ready")),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn poll_close(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }
}
