//! Allocations of one broadcast do not grow with the number of recipients: the frame is
//! encoded once and each recipient gets a reference-counted clone.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use neffos::testkit::serve;
use neffos::{Events, Message, Namespaces, Server, Target};
use tokio_tungstenite::tungstenite::Message as Ws;

type Raw =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

async fn client(url: &str, ns: &str) -> Raw {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Ws::text("M")).await.unwrap();
    let _ack = ws.next().await.unwrap().unwrap();
    ws.send(Ws::text(format!("$1;{ns};;_OnNamespaceConnect;0;0;")))
        .await
        .unwrap();
    let _ok = ws.next().await.unwrap().unwrap();
    ws
}

async fn drain(clients: &mut [Raw]) {
    for ws in clients {
        let frame = tokio::time::timeout(Duration::from_secs(10), ws.next())
            .await
            .unwrap();
        assert!(matches!(frame, Some(Ok(Ws::Text(_)))));
    }
}

#[tokio::test]
async fn broadcast_allocations_do_not_grow_with_recipients() {
    let server = Server::builder(
        Namespaces::new()
            .namespace("small", Events::new())
            .namespace("large", Events::new()),
    )
    .build();
    let ts = serve(server).await.unwrap();
    let url = ts.url();
    let mut small = Vec::new();
    for _ in 0..10 {
        small.push(client(&url, "small").await);
    }
    let mut big = Vec::new();
    for _ in 0..1000 {
        big.push(client(&url, "large").await);
    }
    assert_eq!(ts.server.connection_count(), 1010);
    let msg = Message::new("", "chat", "x".repeat(64));
    let measure = |ns: &str| {
        allocation_counter::measure(|| {
            ts.server
                .broadcast(Target::namespace(ns), msg.clone())
                .unwrap();
        })
    };
    // Warm up queues and run queues once, then measure.
    let _ = measure("small");
    let _ = measure("large");
    drain(&mut small).await;
    drain(&mut big).await;
    let s = measure("small");
    let b = measure("large");
    drain(&mut small).await;
    drain(&mut big).await;
    println!(
        "one broadcast: 10 recipients {} allocations / {} bytes; 1000 recipients {} allocations / {} bytes",
        s.count_total, s.bytes_total, b.count_total, b.bytes_total
    );
    assert_eq!(
        s.count_total, b.count_total,
        "allocations grow with recipients"
    );
    assert_eq!(
        s.bytes_total, b.bytes_total,
        "allocated bytes grow with recipients"
    );
    assert!(
        b.count_total <= 4,
        "a broadcast allocates its frame, not much more"
    );
}
