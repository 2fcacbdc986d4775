//! Property test: arbitrary sequences of frames from a client — valid requests, requests
//! for unknown namespaces and rooms, forbidden tokens, garbage, binary junk — never panic
//! the server, never break it for the next client, and leave every index empty once the
//! connection is gone.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::sync::LazyLock;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Config, Events, Namespaces, Reply, Server};
use proptest::prelude::*;
use tokio_tungstenite::tungstenite::Message as Ws;

static RT: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
});

static SERVER: LazyLock<TestServer> = LazyLock::new(|| {
    RT.block_on(async {
        let events = || {
            Events::new()
                .on("echo", |_ns, msg: neffos::Message| async move {
                    Reply::new(msg.body)
                })
                .on("fail", |_ns, _msg| async { Err::<(), _>("no") })
        };
        let server = Server::builder(
            Namespaces::new()
                .namespace("a", events())
                .namespace("b", events())
                .namespace("", events()),
        )
        .config(
            Config::default()
                .max_rooms(4)
                .max_frame_size(4096)
                .outbound_queue(64),
        )
        .build();
        serve(server).await.unwrap()
    })
});

fn frame() -> impl Strategy<Value = Ws> {
    let ns = prop::sample::select(vec!["a", "b", "", "nope"]);
    let room = prop::sample::select(vec!["", "r1", "r2", "r3", "r4", "r5"]);
    let event = prop::sample::select(vec![
        "_OnNamespaceConnect",
        "_OnNamespaceDisconnect",
        "_OnRoomJoin",
        "_OnRoomLeave",
        "_OnRoomLeft",
        "_OnNamespaceConnected",
        "echo",
        "fail",
        "other",
    ]);
    let wait = prop::sample::select(vec!["", "$1", "$2", "7", "1!2", "neffos(0xab(c))", "#x"]);
    let flag = prop::sample::select(vec!["0", "1", "true", ""]);
    let structured = (wait, ns, room, event, flag.clone(), flag, ".{0,20}").prop_map(
        |(w, n, r, e, f1, f2, body)| Ws::text(format!("{w};{n};{r};{e};{f1};{f2};{body}")),
    );
    prop_oneof![
        6 => structured,
        1 => ".{0,40}".prop_map(Ws::text),
        1 => prop::collection::vec(any::<u8>(), 0..64).prop_map(Ws::binary),
        1 => Just(Ws::text("M")),
        1 => Just(Ws::text("Ax")),
    ]
}

async fn run(frames: Vec<Ws>) {
    neffos::testkit::watch_panics();
    let ts = &*SERVER;
    let (mut ws, _) = tokio_tungstenite::connect_async(ts.url()).await.unwrap();
    ws.send(Ws::text("M")).await.unwrap();
    for f in frames {
        if ws.send(f).await.is_err() {
            break;
        }
    }
    // Read whatever comes back until the server is done or closes, then leave.
    let _ = tokio::time::timeout(Duration::from_millis(50), async {
        while let Some(Ok(_)) = ws.next().await {}
    })
    .await;
    drop(ws);
    let clean = eventually(Duration::from_secs(5), || {
        let s = ts.server.stats();
        s.connections == 0 && s.ids == 0 && s.namespaces == 0 && s.rooms == 0
    })
    .await;
    assert!(clean, "indexes not empty: {:?}", ts.server.stats());
    assert_eq!(neffos::testkit::panics(), 0, "a task panicked");
    // The server still serves a well-behaved client.
    let (mut ok, _) = tokio_tungstenite::connect_async(ts.url()).await.unwrap();
    ok.send(Ws::text("M")).await.unwrap();
    let ack = tokio::time::timeout(Duration::from_secs(5), ok.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert!(ack.to_text().unwrap().starts_with('A'));
    ok.close(None).await.unwrap();
    let clean = eventually(Duration::from_secs(5), || ts.server.connection_count() == 0).await;
    assert!(clean);
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 128, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn arbitrary_frame_sequences_keep_the_server_consistent(frames in prop::collection::vec(frame(), 0..40)) {
        LazyLock::force(&SERVER);
        RT.block_on(run(frames));
    }
}
