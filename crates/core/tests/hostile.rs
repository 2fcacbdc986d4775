//! Bad input, limits and the security rules of the handshake and wait tokens. Each test
//! uses a raw WebSocket client to send what a well-behaved neffos client never would, and
//! checks the clear close/error, that the server keeps serving others, and that no
//! connection, index entry or task is left behind.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use futures_util::SinkExt;
use neffos::error::AskErrorKind;
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Config, Events, Message, Namespaces, Reply, Server, Target};
use tokio::io::AsyncWriteExt;
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;

mod support;

use support::{T, acked, all_clean, close_of, connect_ns, next_text, raw};

struct Fixture {
    ts: TestServer,
    handled: Arc<AtomicUsize>,
}

async fn fixture(config: Config) -> Fixture {
    neffos::testkit::watch_panics();
    let handled = Arc::new(AtomicUsize::new(0));
    let h = handled.clone();
    let server = Server::builder(Namespaces::new().namespace(
        "chat",
        Events::new().on("chat", move |_ns, msg: Message| {
            let h = h.clone();
            async move {
                h.fetch_add(1, Ordering::SeqCst);
                Reply::new(msg.body)
            }
        }),
    ))
    .config(config)
    .build();
    Fixture {
        ts: serve(server).await.unwrap(),
        handled,
    }
}

#[tokio::test]
async fn client_cannot_choose_its_id_with_an_ack() {
    let f = fixture(Config::default()).await;
    let mut ws = raw(&f.ts).await;
    ws.send(Ws::text("Aspoofed")).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("may not send"), "{reason}");
    assert!(f.ts.server.connections_by_id("spoofed").is_empty());
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn server_internal_wait_tokens_are_refused() {
    let f = fixture(Config::default()).await;
    for token in ["1!234", "M!yChatApp.chat.", "neffos(0x3f2c(user1))"] {
        let (mut ws, _) = acked(&f.ts).await;
        connect_ns(&mut ws, "chat").await;
        ws.send(Ws::text(format!("{token};chat;;chat;0;0;spoofed")))
            .await
            .unwrap();
        let (code, reason) = close_of(&mut ws).await;
        assert_eq!(code, CloseCode::Policy, "{token}");
        assert!(reason.contains("server-internal"), "{reason}");
    }
    assert_eq!(f.handled.load(Ordering::SeqCst), 0, "no handler ran");
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn events_of_an_unconnected_namespace_never_reach_handlers() {
    let f = fixture(Config::default()).await;
    let (mut ws, _) = acked(&f.ts).await;
    ws.send(Ws::text(";chat;;chat;0;0;fire-and-forget"))
        .await
        .unwrap();
    ws.send(Ws::text("$9;chat;;chat;0;0;asked")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$9;chat;;chat;1;0;bad namespace")
    );
    // Unknown namespace on connect.
    ws.send(Ws::text("$2;nope;;_OnNamespaceConnect;0;0;"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$2;nope;;_OnNamespaceConnect;1;0;bad namespace")
    );
    // Local-only system events from the wire are ignored; a room event outside the room too.
    connect_ns(&mut ws, "chat").await;
    ws.send(Ws::text("$3;chat;;_OnNamespaceConnected;0;0;"))
        .await
        .unwrap();
    ws.send(Ws::text("$4;chat;r1;chat;0;0;x")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$4;chat;r1;chat;1;0;bad room")
    );
    ws.send(Ws::text("$5;chat;;chat;0;0;ok")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$5;chat;;chat;0;0;ok")
    );
    assert_eq!(
        f.handled.load(Ordering::SeqCst),
        1,
        "only the connected event ran"
    );
    drop(ws);
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn frames_before_the_ack_are_queued_then_handled_and_bounded() {
    let f = fixture(Config::default().max_early_frames(4)).await;
    let mut ws = raw(&f.ts).await;
    ws.send(Ws::text("$1;chat;;_OnNamespaceConnect;0;0;"))
        .await
        .unwrap();
    ws.send(Ws::text("$2;chat;;chat;0;0;early")).await.unwrap();
    ws.send(Ws::text("M")).await.unwrap();
    let first = next_text(&mut ws).await.unwrap();
    assert!(
        first.starts_with('A'),
        "A<id> is the very first frame, got {first}"
    );
    assert_eq!(next_text(&mut ws).await.as_deref(), Some("$1;;;;;;"));
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$2;chat;;chat;0;0;early")
    );

    let mut flood = raw(&f.ts).await;
    for i in 0..5 {
        flood.send(Ws::text(format!("garbage {i}"))).await.unwrap();
    }
    let (code, reason) = close_of(&mut flood).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("before the acknowledgement"), "{reason}");
}

#[tokio::test]
async fn garbage_and_invalid_utf8_after_the_ack_are_dropped_not_fatal() {
    let f = fixture(Config::default()).await;
    let (mut ws, _) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    ws.send(Ws::text("not a neffos message")).await.unwrap();
    ws.send(Ws::binary(b"$1;ch\xffat;;chat;0;0;x".to_vec()))
        .await
        .unwrap();
    ws.send(Ws::binary(b"$1;chat;;ch\xc3at;0;0;x".to_vec()))
        .await
        .unwrap();
    ws.send(Ws::text("$7;chat;;chat;0;0;still here"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$7;chat;;chat;0;0;still here")
    );
    assert_eq!(f.ts.server.stats().invalid_frames, 3);
}

#[tokio::test]
async fn oversized_frames_close_with_1009() {
    let f = fixture(Config::default().max_frame_size(1024)).await;
    let (mut ws, _) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    let big = format!(";chat;;chat;0;0;{}", "x".repeat(4096));
    ws.send(Ws::text(big)).await.unwrap();
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Size, "message too big")
    );
    all_clean(&f.ts).await;
    assert_eq!(f.handled.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn room_join_flood_past_the_limit_is_refused() {
    let f = fixture(Config::default().max_rooms(3)).await;
    let (mut ws, _) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    for i in 0..3 {
        ws.send(Ws::text(format!("$j{i};chat;r{i};_OnRoomJoin;0;0;")))
            .await
            .unwrap();
        assert_eq!(next_text(&mut ws).await, Some(format!("$j{i};;;;;;")));
    }
    ws.send(Ws::text("$j9;chat;r9;_OnRoomJoin;0;0;"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$j9;chat;r9;_OnRoomJoin;1;0;too many rooms")
    );
    assert_eq!(f.ts.server.stats().rooms, 3);
    drop(ws);
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn namespace_limit() {
    let f = fixture(Config::default().max_namespaces(0)).await;
    let (mut ws, _) = acked(&f.ts).await;
    ws.send(Ws::text("$1;chat;;_OnNamespaceConnect;0;0;"))
        .await
        .unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$1;chat;;_OnNamespaceConnect;1;0;too many namespaces")
    );
}

#[tokio::test]
async fn server_ask_flood_past_the_limit_fails_fast_and_cleans_up() {
    let f = fixture(Config::default().max_pending_asks(4)).await;
    // A client that never answers.
    let (mut ws, id) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    let conn = f.ts.server.connections_by_id(&id).remove(0);
    let mut asks = Vec::new();
    for _ in 0..4 {
        let conn = conn.clone();
        asks.push(tokio::spawn(async move {
            conn.ask(Message::new("chat", "q", "?")).await
        }));
    }
    // Wait until the four asks are on the wire, then the fifth is refused at once.
    for _ in 0..4 {
        assert!(next_text(&mut ws).await.unwrap().contains(";chat;;q;0;0;?"));
    }
    let err = conn.ask(Message::new("chat", "q", "?")).await.unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::TooManyPending, "{err}");
    assert!(err.to_string().contains("limit 4"), "{err}");
    drop(ws);
    for a in asks {
        assert_eq!(a.await.unwrap().unwrap_err().kind(), AskErrorKind::Closed);
    }
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn client_ask_flood_is_answered_in_order_without_loss() {
    let f = fixture(Config::default().inbound_queue(8)).await;
    let (mut ws, _) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    const N: usize = 500;
    for i in 0..N {
        ws.feed(Ws::text(format!("${i};chat;;chat;0;0;{i}")))
            .await
            .unwrap();
    }
    ws.flush().await.unwrap();
    for i in 0..N {
        assert_eq!(
            next_text(&mut ws).await,
            Some(format!("${i};chat;;chat;0;0;{i}"))
        );
    }
}

#[tokio::test]
async fn late_replies_are_dropped_and_counted() {
    let f = fixture(Config::default().ask_timeout(Duration::from_millis(50))).await;
    let (mut ws, id) = acked(&f.ts).await;
    connect_ns(&mut ws, "chat").await;
    let conn = f.ts.server.connections_by_id(&id).remove(0);
    let err = conn.ask(Message::new("chat", "q", "?")).await.unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::Timeout);
    let request = next_text(&mut ws).await.unwrap();
    let token = request.split(';').next().unwrap().to_owned();
    ws.send(Ws::text(format!("{token};chat;;q;0;0;too late")))
        .await
        .unwrap();
    // The connection keeps working and the late reply is counted.
    ws.send(Ws::text("$x;chat;;chat;0;0;alive")).await.unwrap();
    assert_eq!(
        next_text(&mut ws).await.as_deref(),
        Some("$x;chat;;chat;0;0;alive")
    );
    assert_eq!(f.ts.server.stats().late_replies, 1);
}

#[tokio::test]
async fn handshake_timeout_closes_silent_connections() {
    let f = fixture(Config::default().handshake_timeout(Duration::from_millis(100))).await;
    let mut ws = raw(&f.ts).await;
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(code, CloseCode::Policy);
    assert!(reason.contains("handshake timeout"), "{reason}");
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn abrupt_tcp_close_mid_frame_cleans_up() {
    let f = fixture(Config::default()).await;
    let (ws, _) = acked(&f.ts).await;
    let (mut ws2, _) = acked(&f.ts).await;
    connect_ns(&mut ws2, "chat").await;
    assert!(eventually(T, || f.ts.server.connection_count() == 2).await);
    // Write half a frame header + payload straight to the TCP socket, then drop it.
    let mut tcp = match ws.into_inner() {
        tokio_tungstenite::MaybeTlsStream::Plain(tcp) => tcp,
        _ => unreachable!("plain ws"),
    };
    tcp.write_all(&[0x81, 0xFE, 0x10, 0x00, 1, 2, 3, 4, b'x'])
        .await
        .unwrap();
    drop(tcp);
    ws2.close(None).await.unwrap();
    all_clean(&f.ts).await;
}

#[tokio::test]
async fn slow_consumer_is_closed_and_others_keep_receiving() {
    let config = Config::default()
        .outbound_queue(8)
        .close_timeout(Duration::from_millis(100));
    let f = fixture(config).await;
    let (mut slow, _) = acked(&f.ts).await;
    connect_ns(&mut slow, "chat").await;
    let received = Arc::new(AtomicUsize::new(0));
    let r = received.clone();
    let fast = Client::builder(f.ts.url())
        .namespaces(Namespaces::new().namespace(
            "chat",
            Events::new().on("big", move |_ns, _msg| {
                let r = r.clone();
                async move {
                    r.fetch_add(1, Ordering::SeqCst);
                }
            }),
        ))
        .connect()
        .await
        .unwrap();
    fast.connect("chat").await.unwrap();
    assert!(
        eventually(T, || f.ts.server.stats().namespaces == 1
            && f.ts.server.connection_count() == 2)
        .await
    );
    let body = "y".repeat(32 * 1024);
    let mut sent = 0;
    while f.ts.server.stats().slow_consumer_closes == 0 && sent < 10_000 {
        f.ts.server
            .broadcast(
                Target::namespace("chat"),
                Message::new("", "big", body.clone()),
            )
            .unwrap();
        sent += 1;
        tokio::task::yield_now().await;
    }
    assert_eq!(
        f.ts.server.stats().slow_consumer_closes,
        1,
        "after {sent} broadcasts"
    );
    assert!(
        !fast.conn().is_closed(),
        "the fast client is still connected"
    );
    assert!(
        eventually(T, || received.load(Ordering::SeqCst) == sent).await,
        "the fast client lost messages: {} of {sent}",
        received.load(Ordering::SeqCst)
    );
    // The slow client finds the reason once it reads again.
    let (code, reason) = close_of(&mut slow).await;
    assert!(
        matches!(code, CloseCode::Policy | CloseCode::Abnormal),
        "{code:?} {reason}"
    );
    assert!(eventually(T, || f.ts.server.connection_count() == 1).await);
}

#[tokio::test]
async fn no_task_is_left_behind() {
    let f = fixture(Config::default()).await;
    let handle = tokio::runtime::Handle::current();
    let baseline = handle.metrics().num_alive_tasks();
    let mut sockets = Vec::new();
    for _ in 0..20 {
        let (mut ws, _) = acked(&f.ts).await;
        connect_ns(&mut ws, "chat").await;
        sockets.push(ws);
    }
    assert!(handle.metrics().num_alive_tasks() > baseline);
    for mut ws in sockets {
        ws.close(None).await.unwrap();
    }
    all_clean(&f.ts).await;
    assert!(
        eventually(T, || handle.metrics().num_alive_tasks() <= baseline).await,
        "tasks: {} > baseline {baseline}",
        handle.metrics().num_alive_tasks()
    );
}
