//! Hostile clients, part two: connection limits, per-IP limits, message rate, fragmented
//! and malformed WebSocket frames, reconnect storms, slowloris upgrades, huge header sets
//! and compression. Each case checks the clear refusal or close, that other clients keep
//! being served, and that nothing is left behind.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::net::SocketAddr;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Config, Events, Namespaces, Reply, Server};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio_tungstenite::tungstenite::Message as Ws;
use tokio_tungstenite::tungstenite::protocol::frame::Frame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::{CloseCode, Data, OpCode};

mod support;

use support::{Raw, T, all_clean, close_of, connect_ns};

/// A raw client with the handshake done and namespace `chat` connected.
async fn acked(ts: &TestServer) -> Raw {
    let (mut ws, _) = support::acked(ts).await;
    connect_ns(&mut ws, "chat").await;
    ws
}

/// The handshake and namespace `chat` on an already dialled socket.
async fn ack(ws: &mut Raw) {
    support::ack(ws).await;
    connect_ns(ws, "chat").await;
}

async fn server(config: Config) -> TestServer {
    neffos::testkit::watch_panics();
    let server = Server::builder(Namespaces::new().namespace(
        "chat",
        Events::new().on("echo", |_ns, msg: neffos::Message| async move {
            Reply::new(msg.body)
        }),
    ))
    .config(config)
    .build();
    serve(server).await.unwrap()
}

/// Dials from a chosen loopback source address.
async fn dial_from(
    ts: &TestServer,
    source: [u8; 4],
) -> Result<Raw, tokio_tungstenite::tungstenite::Error> {
    let socket = TcpSocket::new_v4().unwrap();
    socket.bind(SocketAddr::from((source, 0))).unwrap();
    let tcp = socket.connect(ts.addr).await.unwrap();
    tokio_tungstenite::client_async(ts.url(), tokio_tungstenite::MaybeTlsStream::Plain(tcp))
        .await
        .map(|(ws, _)| ws)
}

async fn echo_works(ws: &mut Raw) {
    ws.send(Ws::text("$e;chat;;echo;0;0;ping")).await.unwrap();
    let r = tokio::time::timeout(T, ws.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(r, Ws::text("$e;chat;;echo;0;0;ping"));
}

async fn raw_http(addr: SocketAddr, request: &str) -> String {
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    tcp.write_all(request.as_bytes()).await.unwrap();
    let mut buf = vec![0u8; 4096];
    let n = tokio::time::timeout(T, tcp.read(&mut buf))
        .await
        .unwrap()
        .unwrap();
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[tokio::test]
async fn max_connections_answers_503_and_frees_on_close() {
    let ts = server(Config::default().max_connections(Some(3))).await;
    let mut open = Vec::new();
    for _ in 0..3 {
        open.push(acked(&ts).await);
    }
    let err = tokio_tungstenite::connect_async(ts.url())
        .await
        .unwrap_err();
    assert!(err.to_string().contains("503"), "{err}");
    let mut first = open.remove(0);
    first.close(None).await.unwrap();
    drop(first);
    // The freed place is usable again.
    let ok = eventually(T, || ts.server.connection_count() == 2).await;
    assert!(ok);
    let mut again = None;
    for _ in 0..100 {
        if let Ok((ws, _)) = tokio_tungstenite::connect_async(ts.url()).await {
            again = Some(ws);
            break;
        }
        tokio::task::yield_now().await;
    }
    let mut again = again.expect("a place was freed");
    ack(&mut again).await;
    echo_works(&mut again).await;
}

#[tokio::test]
async fn per_ip_limit_answers_429_for_that_address_only() {
    let ts = server(Config::default().max_connections_per_ip(Some(2))).await;
    let _a = dial_from(&ts, [127, 0, 0, 1]).await.unwrap();
    let _b = dial_from(&ts, [127, 0, 0, 1]).await.unwrap();
    let err = dial_from(&ts, [127, 0, 0, 1]).await.unwrap_err();
    assert!(err.to_string().contains("429"), "{err}");
    let mut other = dial_from(&ts, [127, 0, 0, 2]).await.unwrap();
    ack(&mut other).await;
    echo_works(&mut other).await;
}

#[tokio::test]
async fn message_rate_limit_closes_the_flooder_only() {
    let ts = server(Config::default().max_messages_per_second(Some(20))).await;
    let mut calm = acked(&ts).await;
    let mut flood = acked(&ts).await;
    for i in 0..200 {
        if flood
            .feed(Ws::text(format!(";chat;;noop;0;0;{i}")))
            .await
            .is_err()
        {
            break;
        }
    }
    let _ = flood.flush().await;
    let (code, reason) = close_of(&mut flood).await;
    assert_eq!(code, CloseCode::Policy);
    assert_eq!(reason, "message rate exceeded");
    echo_works(&mut calm).await;
}

#[tokio::test]
async fn fragmented_frame_flood_past_the_size_limit_is_closed() {
    let ts = server(Config::default().max_message_size(4096)).await;
    let mut ws = acked(&ts).await;
    let mut calm = acked(&ts).await;
    // One text message sent as 1,000 fragments of 64 bytes: 64 KiB > 4 KiB.
    let chunk = vec![b'x'; 64];
    ws.send(Ws::Frame(Frame::message(
        chunk.clone(),
        OpCode::Data(Data::Text),
        false,
    )))
    .await
    .unwrap();
    for i in 0..1000 {
        let last = i == 999;
        if ws
            .send(Ws::Frame(Frame::message(
                chunk.clone(),
                OpCode::Data(Data::Continue),
                last,
            )))
            .await
            .is_err()
        {
            break;
        }
    }
    // RFC 6455's 1009, received: the server drains what the peer still sends (lingering
    // close) instead of resetting the connection over unread data.
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Size, "message too big")
    );
    echo_works(&mut calm).await;
    drop(ws);
    calm.close(None).await.unwrap();
    all_clean(&ts).await;
}

#[tokio::test]
async fn invalid_utf8_in_a_text_frame_closes_that_connection() {
    let ts = server(Config::default()).await;
    let mut ws = acked(&ts).await;
    let mut calm = acked(&ts).await;
    ws.send(Ws::Frame(Frame::message(
        b";chat;;echo;0;0;\xff\xfe".to_vec(),
        OpCode::Data(Data::Text),
        true,
    )))
    .await
    .unwrap();
    // RFC 6455: 1007 for data inconsistent with the message type (was 1008 "read error").
    let (code, reason) = close_of(&mut ws).await;
    assert_eq!(
        (code, reason.as_str()),
        (CloseCode::Invalid, "invalid UTF-8 in a text frame")
    );
    echo_works(&mut calm).await;
    drop(ws);
    calm.close(None).await.unwrap();
    all_clean(&ts).await;
}

#[tokio::test]
async fn reconnect_storm_leaves_nothing_behind() {
    let ts = server(Config::default()).await;
    let handle = tokio::runtime::Handle::current();
    let baseline = handle.metrics().num_alive_tasks();
    for round in 0..10 {
        let mut batch = Vec::new();
        for _ in 0..20 {
            batch.push(tokio::spawn({
                let url = ts.url();
                async move {
                    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
                    ack(&mut ws).await;
                    // Half leave politely, half just vanish.
                    if round % 2 == 0 {
                        ws.close(None).await.unwrap();
                    }
                }
            }));
        }
        for t in batch {
            t.await.unwrap();
        }
    }
    all_clean(&ts).await;
    assert_eq!(ts.server.stats().accepted, 200);
    assert!(eventually(T, || handle.metrics().num_alive_tasks() <= baseline).await);
}

#[tokio::test]
async fn slowloris_upgrade_requests_do_not_block_others() {
    let ts = server(Config::default().max_connections(Some(5))).await;
    // Ten connections that send half an upgrade request and stall.
    let mut stalled = Vec::new();
    for _ in 0..10 {
        let mut tcp = TcpStream::connect(ts.addr).await.unwrap();
        tcp.write_all(b"GET /echo HTTP/1.1\r\nHost: x\r\nUpgrade: websock")
            .await
            .unwrap();
        stalled.push(tcp);
    }
    // They hold no WebSocket place: real clients still get in.
    let mut ws = acked(&ts).await;
    echo_works(&mut ws).await;
    assert_eq!(ts.server.connection_count(), 1);
    drop(stalled);
}

#[tokio::test]
async fn huge_header_sets_are_refused() {
    let ts = server(Config::default()).await;
    let mut req = String::from(
        "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
         Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n",
    );
    for i in 0..500 {
        req.push_str(&format!("X-Junk-{i}: {}\r\n", "v".repeat(64)));
    }
    req.push_str("\r\n");
    let response = raw_http(ts.addr, &req).await;
    assert!(response.starts_with("HTTP/1.1 431"), "{response}");
    let mut ws = acked(&ts).await;
    echo_works(&mut ws).await;
}

#[tokio::test]
async fn compression_is_never_negotiated() {
    // Without permessage-deflate there is no decompression, hence no compression bomb.
    let ts = server(Config::default()).await;
    let req = "GET /echo HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\
               Sec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
               Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\r\n";
    let response = raw_http(ts.addr, req).await;
    assert!(response.starts_with("HTTP/1.1 101"), "{response}");
    assert!(
        !response
            .to_ascii_lowercase()
            .contains("sec-websocket-extensions"),
        "{response}"
    );
}

#[tokio::test]
async fn empty_frames_after_the_ack_are_ignored() {
    let ts = server(Config::default()).await;
    let mut ws = acked(&ts).await;
    for _ in 0..10 {
        ws.send(Ws::text("")).await.unwrap();
        ws.send(Ws::binary(Vec::new())).await.unwrap();
    }
    echo_works(&mut ws).await;
    assert_eq!(ts.server.stats().invalid_frames, 20);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn peers_vanishing_while_the_server_writes_cause_no_panic() {
    let ts = server(Config::default().outbound_queue(4096)).await;
    let mut sockets = Vec::new();
    for _ in 0..20 {
        sockets.push(acked(&ts).await);
    }
    assert!(eventually(T, || ts.server.stats().namespaces == 1).await);
    let body = "z".repeat(16 * 1024);
    let writer = {
        let server = ts.server.clone();
        tokio::spawn(async move {
            for _ in 0..2000 {
                let _ = server.broadcast(
                    neffos::Target::namespace("chat"),
                    neffos::Message::new("", "big", body.clone()),
                );
                tokio::task::yield_now().await;
            }
        })
    };
    // Reset the TCP connections under the writers' feet (no close handshake).
    for ws in sockets {
        if let tokio_tungstenite::MaybeTlsStream::Plain(tcp) = ws.into_inner() {
            // Linger 0: close sends RST at once (it does not block with a zero timeout).
            #[allow(deprecated)]
            let _ = tcp.set_linger(Some(Duration::ZERO));
            drop(tcp);
        }
    }
    writer.await.unwrap();
    all_clean(&ts).await;
}
