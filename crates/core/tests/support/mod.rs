//! A raw WebSocket client for the tests that send what a well-behaved neffos client never
//! would, and the checks they share.
#![allow(dead_code, clippy::unwrap_used)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use neffos::testkit::{TestServer, eventually};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

/// How long any single expectation may take.
pub(crate) const T: Duration = Duration::from_secs(5);

/// A raw client socket.
pub(crate) type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Dials without any neffos handshake.
pub(crate) async fn raw(ts: &TestServer) -> Raw {
    tokio_tungstenite::connect_async(ts.url()).await.unwrap().0
}

/// Sends `M` and returns the ID from `A<id>`.
pub(crate) async fn ack(ws: &mut Raw) -> String {
    ws.send(Ws::text("M")).await.unwrap();
    match next_text(ws).await {
        Some(t) if t.starts_with('A') => t[1..].to_owned(),
        other => panic!("expected A<id>, got {other:?}"),
    }
}

/// Dials and completes the neffos handshake; returns the socket and the ID.
pub(crate) async fn acked(ts: &TestServer) -> (Raw, String) {
    let mut ws = raw(ts).await;
    let id = ack(&mut ws).await;
    (ws, id)
}

/// Connects namespace `ns` and checks the empty reply.
pub(crate) async fn connect_ns(ws: &mut Raw, ns: &str) {
    ws.send(Ws::text(format!("$1;{ns};;_OnNamespaceConnect;0;0;")))
        .await
        .unwrap();
    assert_eq!(next_text(ws).await.as_deref(), Some("$1;;;;;;"));
}

/// The next text (or binary, as text) frame, or None on close.
pub(crate) async fn next_text(ws: &mut Raw) -> Option<String> {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("frame within timeout")
        {
            Some(Ok(Ws::Text(t))) => return Some(t.to_string()),
            Some(Ok(Ws::Binary(b))) => return Some(String::from_utf8_lossy(&b).into_owned()),
            Some(Ok(Ws::Ping(_) | Ws::Pong(_) | Ws::Frame(_))) => continue,
            Some(Ok(Ws::Close(_))) | None | Some(Err(_)) => return None,
        }
    }
}

/// Reads until the close frame and returns its code and reason; `Abnormal` when the
/// connection ended without one.
pub(crate) async fn close_of(ws: &mut Raw) -> (CloseCode, String) {
    loop {
        match tokio::time::timeout(T, ws.next())
            .await
            .expect("close within timeout")
        {
            Some(Ok(Ws::Close(Some(frame)))) => return (frame.code, frame.reason.to_string()),
            Some(Ok(Ws::Close(None))) => return (CloseCode::Status, String::new()),
            Some(Ok(_)) => continue,
            None | Some(Err(_)) => return (CloseCode::Abnormal, String::new()),
        }
    }
}

/// Every index is empty again and no task panicked.
pub(crate) async fn all_clean(ts: &TestServer) {
    assert_eq!(neffos::testkit::panics(), 0, "a task panicked");
    let ok = eventually(T, || {
        let s = ts.server.stats();
        s.connections == 0 && s.ids == 0 && s.namespaces == 0 && s.rooms == 0
    })
    .await;
    assert!(ok, "indexes not empty: {:?}", ts.server.stats());
}
