//! The chat app served by two instances sharing a `MemoryExchange` (what the `scale-out`
//! example runs): users on different instances talk in a room, with the Rust client.
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use neffos::{Client, Events, MemoryExchange, Message, Namespaces, NsConn, Server};
use neffos_examples::chat::{self, ChatOptions, NAMESPACE};
use serde_json::Value;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

async fn instance(bus: &MemoryExchange) -> (Server, SocketAddr) {
    let server = chat::server(Some(Arc::new(bus.clone())));
    let app = chat::router(&server, ChatOptions::new("unused-neffos.js"));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(neffos_examples::serve::serve(
        listener,
        app,
        std::future::pending(),
    ));
    (server, addr)
}

/// A user whose `chat` and `notice` events arrive on a channel as (event, JSON body).
async fn user(addr: SocketAddr, name: &str) -> (NsConn, mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut events = Events::new();
    for event in ["chat", "notice"] {
        let tx = tx.clone();
        events = events.on(event, move |_ns: NsConn, msg: Message| {
            let tx = tx.clone();
            async move {
                let body = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
                let _ = tx.send((msg.event.to_string(), body));
            }
        });
    }
    let client = Client::builder(format!("ws://{addr}{}", chat::ENDPOINT))
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace(NAMESPACE, events))
        .connect()
        .await
        .unwrap();
    assert_eq!(client.id(), name);
    (client.connect(NAMESPACE).await.unwrap(), rx)
}

/// The first `event` whose body has `text`, within `T` (anything else is skipped).
async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Value)>, event: &str, text: &str) -> Value {
    tokio::time::timeout(T, async {
        loop {
            let (name, body) = rx.recv().await.expect("connection closed");
            if name == event && body["text"] == text {
                return body;
            }
        }
    })
    .await
    .unwrap_or_else(|_| panic!("no {event} {text:?} within {T:?}"))
}

#[tokio::test]
async fn users_on_two_instances_talk_in_a_room() {
    let bus = MemoryExchange::new();
    let (_one, addr_one) = instance(&bus).await;
    let (_two, addr_two) = instance(&bus).await;

    let (alice, mut alice_rx) = user(addr_one, "alice").await;
    let (bob, mut bob_rx) = user(addr_two, "bob").await;
    let room_alice = alice.join_room("lobby").await.unwrap();
    bob.join_room("lobby").await.unwrap();

    next(&mut alice_rx, "notice", "bob is online").await;
    let joined = next(&mut alice_rx, "notice", "bob joined lobby").await;
    assert_eq!(joined["room"], "lobby");

    room_alice.emit("chat", "hello from instance one").unwrap();
    let got = next(&mut bob_rx, "chat", "hello from instance one").await;
    assert_eq!(got["from"], "alice");
    assert_eq!(got["room"], "lobby");

    // Outside a room: the whole namespace, across instances.
    bob.emit("chat", "hello everyone").unwrap();
    let got = next(&mut alice_rx, "chat", "hello everyone").await;
    assert_eq!(
        (&got["from"], &got["room"]),
        (&Value::from("bob"), &Value::Null)
    );
}

#[tokio::test]
async fn a_connection_without_username_is_refused() {
    let bus = MemoryExchange::new();
    let (_server, addr) = instance(&bus).await;
    let err = Client::builder(format!("ws://{addr}{}", chat::ENDPOINT))
        .connect()
        .await
        .unwrap_err();
    assert!(err.to_string().contains("username"), "{err}");
}
