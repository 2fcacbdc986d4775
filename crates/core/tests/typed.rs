//! Typed bodies (JSON, MessagePack) and handler state, end to end with the Rust client:
//! extractors, typed replies and emits, typed Asks both ways, and what a body that does
//! not decode does (an error reply naming the event and the serde error, the connection
//! stays, the server counts it).
#![cfg(all(feature = "testkit", feature = "json", feature = "msgpack"))]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use neffos::error::{AskErrorKind, WriteErrorKind};
use neffos::testkit::{eventually, serve};
use neffos::{
    Client, Events, Json, Message, MessageExt, MsgPack, Namespaces, NsConn, Reply, Server, State,
    Target,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(5);

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Add {
    a: i64,
    b: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Sum {
    sum: i64,
    by: String,
    call: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct Notice {
    text: String,
}

/// The application state: given once to the builder, shared by every handler.
#[derive(Clone)]
struct App {
    name: String,
    calls: Arc<AtomicU64>,
}

fn server_events() -> Events {
    Events::new()
        .handle(
            "add",
            |_ns: NsConn, State(app): State<App>, Json(add): Json<Add>| async move {
                let call = app.calls.fetch_add(1, Ordering::Relaxed) + 1;
                Reply::json(&Sum {
                    sum: add.a + add.b,
                    by: app.name,
                    call,
                })
            },
        )
        .handle(
            "add-mp",
            |_ns: NsConn, State(app): State<App>, MsgPack(add): MsgPack<Add>| async move {
                Reply::msgpack(&Sum {
                    sum: add.a + add.b,
                    by: app.name,
                    call: 0,
                })
            },
        )
        .handle(
            "shout",
            |ns: NsConn, Json(notice): Json<Notice>| async move {
                let loud = Notice {
                    text: notice.text.to_uppercase(),
                };
                ns.emit_json("shouted", &loud)
            },
        )
        .handle(
            "needs-u32",
            |_ns: NsConn, State(n): State<u32>| async move { Reply::new(n.to_string()) },
        )
        // The plain `on` handlers see the state too.
        .on("whoami", |ns: NsConn, _msg| async move {
            let app: App = ns.state().expect("state given to the builder");
            Reply::new(app.name)
        })
}

fn server(app: App) -> Server {
    Server::builder(Namespaces::new().namespace("default", server_events()))
        .with_state(app)
        .build()
}

fn app() -> App {
    App {
        name: "server-1".into(),
        calls: Arc::new(AtomicU64::new(0)),
    }
}

async fn client(url: String, tx: mpsc::UnboundedSender<Message>) -> (Client, NsConn) {
    let record = move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(msg);
        }
    };
    let events = Events::new()
        .on("shouted", record.clone())
        .on("notice", record.clone())
        .on("notice-mp", record)
        .handle("quote", |_ns: NsConn, Json(add): Json<Add>| async move {
            Reply::json(&Sum {
                sum: add.a * add.b,
                by: "client".into(),
                call: 0,
            })
        });
    let client = Client::builder(url)
        .namespaces(Namespaces::new().namespace("default", events))
        .connect()
        .await
        .expect("dial");
    let ns = client.connect("default").await.expect("connect default");
    (client, ns)
}

#[tokio::test]
async fn typed_handlers_with_state_reply_emit_and_broadcast() {
    let app = app();
    let ts = serve(server(app.clone())).await.unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let (client, ns) = client(ts.url(), tx).await;

    // JSON in, JSON out, state reached; twice to see the shared counter move.
    let sum: Sum = ns.ask_json("add", &Add { a: 2, b: 40 }).await.unwrap();
    assert_eq!(
        sum,
        Sum {
            sum: 42,
            by: "server-1".into(),
            call: 1
        }
    );
    let sum: Sum = ns.ask_json("add", &Add { a: 1, b: 1 }).await.unwrap();
    assert_eq!((sum.sum, sum.call), (2, 2));
    assert_eq!(app.calls.load(Ordering::Relaxed), 2, "one state, shared");
    let who = ns.ask("whoami", "").await.unwrap();
    assert_eq!(&who.body[..], b"server-1");

    // MessagePack in a binary frame, answered in a binary frame.
    let request = Message::new_msgpack("default", "add-mp", &Add { a: 5, b: 6 }).unwrap();
    let reply = client.conn().ask(request).await.unwrap();
    assert!(
        reply.binary,
        "a MessagePack reply travels in a binary frame"
    );
    assert_eq!(reply.msgpack::<Sum>().unwrap().sum, 11);

    // A typed emit from a typed handler.
    ns.emit_json("shout", &Notice { text: "hé".into() })
        .unwrap();
    let got = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!(&*got.event, "shouted");
    assert_eq!(got.json::<Notice>().unwrap().text, "HÉ");

    // Typed broadcasts.
    ts.server
        .broadcast_json(
            Target::namespace("default"),
            "notice",
            &Notice {
                text: "to all".into(),
            },
        )
        .unwrap();
    let got = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!((&*got.event, got.binary), ("notice", false));
    assert_eq!(got.json::<Notice>().unwrap().text, "to all");
    ts.server
        .broadcast_msgpack(
            Target::namespace("default"),
            "notice-mp",
            &Notice { text: "bin".into() },
        )
        .unwrap();
    let got = tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap();
    assert_eq!((&*got.event, got.binary), ("notice-mp", true));
    assert_eq!(got.msgpack::<Notice>().unwrap().text, "bin");

    // A typed Ask from the server to the client's typed handler.
    let product: Sum = ts
        .server
        .ask_json("default", &client.id(), "quote", &Add { a: 6, b: 7 }, T)
        .await
        .unwrap();
    assert_eq!((product.sum, product.by.as_str()), (42, "client"));
    assert_eq!(ts.server.stats().rejected_messages, 0);
    client.close();
}

#[tokio::test]
async fn a_body_that_does_not_decode_is_answered_counted_and_the_connection_stays() {
    let ts = serve(server(app())).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (client, ns) = client(ts.url(), tx).await;

    let err = ns.ask("add", r#"{"a": 1}"#).await.unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::Remote, "{err}");
    let text = err.remote().expect("the server's error text");
    assert!(
        text.starts_with(r#"the JSON body of "add" on namespace "default""#),
        "names the event: {text}"
    );
    assert!(
        text.contains("missing field `b`"),
        "has serde's error: {text}"
    );
    let err = ns.ask("add", "not json").await.unwrap_err();
    assert!(
        err.remote().unwrap().contains("expected ident"),
        "{:?}",
        err.remote()
    );
    // MessagePack that is not: the same.
    let bad = Message::new("default", "add-mp", vec![0xc1u8]).with_binary(true);
    let err = client.conn().ask(bad).await.unwrap_err();
    assert!(
        err.remote()
            .unwrap()
            .contains(r#"MessagePack body of "add-mp""#)
    );
    assert!(eventually(T, || ts.server.stats().rejected_messages == 3).await);

    // The connection is still there and serves typed requests.
    assert!(!client.conn().is_closed());
    let sum: Sum = ns.ask_json("add", &Add { a: 3, b: 4 }).await.unwrap();
    assert_eq!(sum.sum, 7);

    // A typed reply that does not decode on our side is an Ask error of kind Decode.
    let err = ns
        .ask_json::<_, Notice>("add", &Add { a: 0, b: 0 })
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::Decode, "{err}");
    client.close();
}

#[tokio::test]
async fn state_not_given_is_an_error_reply_naming_the_type() {
    let ts = serve(server(app())).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (client, ns) = client(ts.url(), tx).await;
    let err = ns.ask("needs-u32", "").await.unwrap_err();
    let text = err.remote().unwrap();
    assert!(text.contains("state u32"), "{text}");
    assert!(text.contains("not given to the builder"), "{text}");
    client.close();
}

#[tokio::test]
async fn an_unencodable_value_is_a_typed_error_and_nothing_is_sent() {
    let ts = serve(server(app())).await.unwrap();
    let (tx, _rx) = mpsc::unbounded_channel();
    let (client, ns) = client(ts.url(), tx).await;
    let mut map = std::collections::HashMap::new();
    map.insert((1, 2), "tuple keys are not JSON object keys");
    let err = ns.emit_json("shout", &map).unwrap_err();
    assert_eq!(err.kind(), WriteErrorKind::Encode);
    assert!(
        err.to_string()
            .contains(r#"emit "shout" on namespace "default""#),
        "{err}"
    );
    let err = ts
        .server
        .broadcast_json(Target::namespace("default"), "notice", &map)
        .unwrap_err();
    assert_eq!(err.kind(), neffos::error::BroadcastErrorKind::Encode);
    client.close();
}
