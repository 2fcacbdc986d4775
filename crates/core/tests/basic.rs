//! End-to-end behaviour of one server with the Rust client.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use neffos::error::{AskErrorKind, DialErrorKind, NamespaceErrorKind};
use neffos::testkit::{eventually, serve};
use neffos::{Client, Events, Message, Namespaces, Reply, Server, Target};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

fn server_namespaces() -> Namespaces {
    Namespaces::new().namespace(
        "default",
        Events::new()
            .on("chat", |ns, msg| async move { ns.broadcast_others(msg) })
            .on(
                "echo",
                |_ns, msg: Message| async move { Reply::new(msg.body) },
            )
            .on("fail", |_ns, _msg| async { Err::<(), _>("nope") })
            .on("room-chat", |ns, msg: Message| async move {
                let room = msg.room.to_string();
                ns.conn()
                    .server()
                    .expect("server side")
                    .broadcast(Target::room(ns.namespace(), &room), msg)
            }),
    )
}

fn collecting_client(tx: mpsc::UnboundedSender<Message>) -> Namespaces {
    let tx2 = tx.clone();
    Namespaces::new().namespace(
        "default",
        Events::new()
            .on("chat", move |_ns, msg| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(msg);
                }
            })
            .on("room-chat", move |_ns, msg| {
                let tx = tx2.clone();
                async move {
                    let _ = tx.send(msg);
                }
            })
            .on("question", |_ns, msg: Message| async move {
                Reply::new(format!("answer to {}", String::from_utf8_lossy(&msg.body)))
            }),
    )
}

#[tokio::test]
async fn emit_broadcast_ask_rooms() {
    let ts = serve(Server::builder(server_namespaces()).build())
        .await
        .unwrap();
    let (tx_a, mut rx_a) = mpsc::unbounded_channel();
    let (tx_b, mut rx_b) = mpsc::unbounded_channel();
    let a = Client::builder(ts.url())
        .namespaces(collecting_client(tx_a))
        .connect()
        .await
        .unwrap();
    let b = Client::builder(ts.url())
        .namespaces(collecting_client(tx_b))
        .connect()
        .await
        .unwrap();
    assert_ne!(a.id(), b.id());
    let ns_a = a.connect("default").await.unwrap();
    let ns_b = b.connect("default").await.unwrap();
    assert!(
        eventually(T, || ts.server.stats().namespaces == 1
            && ts.server.connection_count() == 2)
        .await
    );

    // Broadcast to others.
    ns_a.emit("chat", "hello").unwrap();
    let got = tokio::time::timeout(T, rx_b.recv()).await.unwrap().unwrap();
    assert_eq!(&got.body[..], b"hello");
    assert!(rx_a.try_recv().is_err());

    // Client -> server ask, reply and error.
    let reply = ns_a.ask("echo", "ping").await.unwrap();
    assert_eq!(&reply.body[..], b"ping");
    let err = ns_a.ask("fail", "x").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (AskErrorKind::Remote, Some("nope"))
    );
    assert!(
        err.to_string()
            .contains("\"fail\" on namespace \"default\""),
        "names event and namespace: {err}"
    );

    // Server -> client ask.
    let reply = ts
        .server
        .ask(&b.id(), Message::new("default", "question", "life"), T)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"answer to life");

    // Rooms.
    let room_b = ns_b.join_room("lobby").await.unwrap();
    assert!(eventually(T, || ts.server.stats().rooms == 1).await);
    let room_a = ns_a.join_room("lobby").await.unwrap();
    room_a.emit("room-chat", "in the room").unwrap();
    let got = tokio::time::timeout(T, rx_b.recv()).await.unwrap().unwrap();
    assert_eq!(&got.room, "lobby");
    assert_eq!(&got.body[..], b"in the room");
    room_b.leave().await.unwrap();
    assert!(ns_b.room("lobby").is_none());

    // Disconnect namespace, then close: indexes return to zero.
    ns_a.disconnect().await.unwrap();
    a.close();
    b.close();
    assert!(eventually(T, || ts.server.stats().connections == 0).await);
    let stats = ts.server.stats();
    assert_eq!(
        (stats.ids, stats.namespaces, stats.rooms),
        (0, 0, 0),
        "{stats:?}"
    );
}

#[tokio::test]
async fn refused_connection_gets_the_reason() {
    let server = Server::builder(server_namespaces())
        .on_connect(|conn| async move {
            if conn.headers().contains_key("x-token") {
                Ok(())
            } else {
                Err("not allowed: missing token".to_string())
            }
        })
        .build();
    let ts = serve(server).await.unwrap();
    let err = Client::builder(ts.url()).connect().await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (DialErrorKind::Refused, Some("not allowed: missing token"))
    );
    let ok = Client::builder(ts.url())
        .header("X-Token", "1")
        .connect()
        .await;
    assert!(ok.is_ok());
}

#[tokio::test]
async fn unknown_namespace_is_refused() {
    let ts = serve(Server::builder(server_namespaces()).build())
        .await
        .unwrap();
    let client = Client::builder(ts.url())
        .namespaces(Namespaces::new().namespace("nope", Events::new()))
        .connect()
        .await
        .unwrap();
    let err = client.connect("nope").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (NamespaceErrorKind::Refused, Some("bad namespace"))
    );
}
