//! Connection lifecycle: pings and idle timeout, graceful shutdown under load, IDs and
//! typed per-connection state, forced disconnects.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use neffos::error::DialErrorKind;
use neffos::testkit::{eventually, serve};
use neffos::{Client, Config, Events, Message, Namespaces, Server, Target};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

const T: Duration = Duration::from_secs(5);

fn namespaces() -> Namespaces {
    Namespaces::new().namespace("chat", Events::new())
}

async fn acked(
    url: &str,
) -> tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>> {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Ws::text("M")).await.unwrap();
    let ack = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_text().unwrap().starts_with('A'));
    ws
}

#[tokio::test]
async fn pings_keep_readers_alive_and_idle_clients_are_closed() {
    let config = Config::default()
        .ping_interval(Some(Duration::from_millis(40)))
        .idle_timeout(Some(Duration::from_millis(200)));
    let ts = serve(Server::builder(namespaces()).config(config).build())
        .await
        .unwrap();
    let mut alive = acked(&ts.url()).await;
    let _silent = acked(&ts.url()).await; // never read again: it never answers pings.
    let started = Instant::now();
    let mut pings = 0;
    while pings < 10 {
        match tokio::time::timeout(T, alive.next()).await.unwrap() {
            Some(Ok(Ws::Ping(_))) => pings += 1,
            other => panic!("unexpected {other:?}"),
        }
    }
    assert!(
        started.elapsed() > Duration::from_millis(200),
        "outlived the idle timeout"
    );
    // The silent client was dropped by the idle timeout; the reading one was not.
    assert!(eventually(T, || ts.server.connection_count() == 1).await);
}

#[tokio::test]
async fn graceful_shutdown_under_load() {
    let ts = serve(Server::builder(namespaces()).build()).await.unwrap();
    let mut clients = Vec::new();
    for _ in 0..50 {
        let mut ws = acked(&ts.url()).await;
        ws.send(Ws::text("$1;chat;;_OnNamespaceConnect;0;0;"))
            .await
            .unwrap();
        clients.push(ws);
    }
    assert!(
        eventually(T, || ts.server.stats().namespaces == 1
            && ts.server.connection_count() == 50)
        .await
    );
    let server = ts.server.clone();
    let load = tokio::spawn(async move {
        let mut n = 0u64;
        while !server.is_shutting_down() {
            let _ = server.broadcast(
                Target::namespace("chat"),
                Message::new("", "tick", n.to_string()),
            );
            n += 1;
            tokio::task::yield_now().await;
        }
    });
    let deadline = Duration::from_secs(3);
    let started = Instant::now();
    let readers: Vec<_> = clients
        .into_iter()
        .map(|mut ws| {
            tokio::spawn(async move {
                loop {
                    match tokio::time::timeout(T, ws.next()).await.unwrap() {
                        Some(Ok(Ws::Close(Some(frame)))) => {
                            return Some((frame.code, frame.reason.to_string()));
                        }
                        Some(Ok(_)) => continue,
                        _ => return None,
                    }
                }
            })
        })
        .collect();
    let left = ts.server.shutdown(deadline).await;
    assert_eq!(left, 0);
    assert!(started.elapsed() < deadline, "returned within the deadline");
    for r in readers {
        let (code, reason) = r.await.unwrap().expect("a close frame");
        assert_eq!(code, CloseCode::Away);
        assert_eq!(reason, "server shutting down");
    }
    load.await.unwrap();
    // New connections are refused while shutting down.
    let err = tokio_tungstenite::connect_async(ts.url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
}

#[derive(Clone, Debug, PartialEq)]
struct Session {
    user: String,
}

#[tokio::test]
async fn typed_state_ids_and_forced_disconnect() {
    let server = Server::builder(Namespaces::new().namespace(
        "chat",
        Events::new().on("whoami", |ns, _msg| async move {
            let session = ns
                .conn()
                .get::<Session>()
                .map(|s| s.user)
                .unwrap_or_default();
            neffos::Reply::new(session)
        }),
    ))
    .id_generator(|parts| {
        parts
            .headers
            .get("x-user")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("nobody")
            .to_owned()
    })
    .on_connect(|conn| async move {
        conn.set(Session {
            user: format!("user:{}", conn.id()),
        });
        Ok(())
    })
    .build();
    let ts = serve(server).await.unwrap();
    let client = Client::builder(ts.url())
        .header("X-User", "carol")
        .namespaces(namespaces())
        .connect()
        .await
        .unwrap();
    assert_eq!(client.id(), "carol");
    let ns = client.connect("chat").await.unwrap();
    assert_eq!(&ns.ask("whoami", "").await.unwrap().body[..], b"user:carol");

    // An ID that cannot travel on the wire is refused, not sent.
    let err = Client::builder(ts.url())
        .header("X-User", "a;b")
        .connect()
        .await
        .unwrap_err();
    assert_eq!(err.kind(), DialErrorKind::Refused, "{err:?}");

    // Server-forced namespace disconnect, then server-side close by ID.
    let conn = ts.server.connections_by_id("carol").remove(0);
    conn.namespace("chat").unwrap().disconnect().await.unwrap();
    assert!(eventually(T, || client.conn().namespace("chat").is_none()).await);
    assert_eq!(ts.server.disconnect("carol"), 1);
    tokio::time::timeout(T, client.closed()).await.unwrap();
    assert!(eventually(T, || ts.server.connection_count() == 0).await);
}

#[tokio::test]
async fn server_forced_namespace_connect() {
    let server = Server::builder(namespaces()).build();
    let ts = serve(server).await.unwrap();
    let client = Client::builder(ts.url())
        .namespaces(namespaces())
        .connect()
        .await
        .unwrap();
    assert!(eventually(T, || ts.server.connection_count() == 1).await);
    let conn = ts.server.connections_by_id(&client.id()).remove(0);
    let ns = conn.connect("chat").await.unwrap();
    let on_client = client.wait_server_connect("chat", T).await.unwrap();
    assert_eq!(on_client.namespace(), "chat");
    ns.emit("hello", "from server").unwrap();
}

#[tokio::test]
async fn client_reconnects_and_restores_namespaces_and_rooms() {
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let server = Server::builder(namespaces())
        .on_connect(move |conn| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(conn.reconnect_tries());
                Ok(())
            }
        })
        .build();
    let ts = serve(server).await.unwrap();
    let (got_tx, mut got) = tokio::sync::mpsc::unbounded_channel();
    let client = Client::builder(ts.url())
        .namespaces(Namespaces::new().namespace(
            "chat",
            Events::new().on("news", move |_ns, msg: Message| {
                let got_tx = got_tx.clone();
                async move {
                    let _ = got_tx.send(msg);
                }
            }),
        ))
        .reconnect(neffos::Reconnect::new(
            Duration::from_millis(10),
            Duration::from_millis(100),
        ))
        .connect()
        .await
        .unwrap();
    assert_eq!(rx.recv().await, Some(0));
    let ns = client.connect("chat").await.unwrap();
    ns.join_room("lobby").await.unwrap();
    assert!(eventually(T, || ts.server.stats().rooms == 1).await);

    // The server drops the client: it comes back, with namespace and room.
    assert_eq!(ts.server.disconnect(&client.id()), 1);
    client.wait_reconnects(0, T).await.unwrap();
    assert_eq!(rx.recv().await, Some(1), "X-Websocket-Reconnect: 1");
    let restored = eventually(T, || {
        ts.server.stats().rooms == 1 && ts.server.connection_count() == 1
    })
    .await;
    assert!(
        restored,
        "{:?} reconnects={}",
        ts.server.stats(),
        client.reconnects()
    );
    ts.server
        .broadcast(
            Target::room("chat", "lobby"),
            Message::new("", "news", "after reconnect"),
        )
        .unwrap();
    let msg = tokio::time::timeout(T, got.recv()).await.unwrap().unwrap();
    assert_eq!(&msg.body[..], b"after reconnect");

    // A user close stops reconnecting.
    client.close();
    assert!(eventually(T, || ts.server.connection_count() == 0).await);
    assert_eq!(client.reconnects(), 1);
}

/// Go neffos can write the namespace connection its `OnConnect` starts before `A` (its
/// acknowledged flag is set before `A` is written, PROTOCOL.md §1.5): the client keeps such
/// a message and handles it after the acknowledgement instead of failing the dial.
#[tokio::test]
async fn a_message_sent_before_the_acknowledgement_is_handled_after_it() {
    const CONNECT: &str = "1795487474372343598;chat;;_OnNamespaceConnect;0;0;";
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(async move {
        let (tcp, _) = listener.accept().await.unwrap();
        let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
        let hello = ws.next().await.unwrap().unwrap();
        assert_eq!(hello, Ws::text("M"));
        ws.send(Ws::text(CONNECT)).await.unwrap();
        ws.send(Ws::text("Agoid")).await.unwrap();
        let reply = tokio::time::timeout(T, ws.next())
            .await
            .unwrap()
            .unwrap()
            .unwrap();
        (ws, reply)
    });
    let client = Client::builder(format!("ws://{addr}/"))
        .namespaces(namespaces())
        .connect()
        .await
        .unwrap();
    assert_eq!(client.id(), "goid");
    let ns = client.wait_server_connect("chat", T).await.unwrap();
    assert_eq!(ns.namespace(), "chat");
    let (_ws, reply) = server.await.unwrap();
    // The empty reply to the request's wait token accepts the connection.
    assert_eq!(
        reply.into_text().unwrap().as_str(),
        "1795487474372343598;;;;;;"
    );
}
