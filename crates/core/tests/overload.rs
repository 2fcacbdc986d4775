//! Overload (issue 13 §1): a server behind for everyone is told from a stuck client. Only
//! the stuck client is closed; a publisher faster than its healthy readers is pushed back
//! (its reading pauses, TCP carries that to it) instead of its readers being closed.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

use std::net::SocketAddr;
use std::time::Duration;

use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Config, Events, Namespaces, Server, StatsSnapshot};
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpSocket, TcpStream};

#[path = "support/wire.rs"]
mod wire;

use wire::{next_text, text};

const T: Duration = Duration::from_secs(20);

async fn start(config: Config) -> TestServer {
    neffos::testkit::watch_panics();
    let server = Server::builder(Namespaces::new().namespace(
        "chat",
        Events::new().on("chat", |ns, msg| async move { ns.broadcast_others(msg) }),
    ))
    .config(config)
    .build();
    serve(server).await.unwrap()
}

/// `messages` pipelined `chat` events, numbered from 0 in their first 5 bytes and padded to
/// `len` more bytes.
fn flood(messages: usize, len: usize) -> Vec<u8> {
    let filler = "f".repeat(len);
    let mut flood = Vec::new();
    for n in 0..messages {
        flood.extend_from_slice(&text(format!(";chat;;chat;0;0;{n:05}{filler}")));
    }
    flood
}

/// A client with a small receive buffer, so that the server's queue is what fills when
/// it reads slower than it is sent to.
async fn small_window_client(addr: SocketAddr) -> TcpStream {
    let socket = TcpSocket::new_v4().unwrap();
    socket.set_recv_buffer_size(4096).unwrap();
    let tcp = socket.connect(addr).await.unwrap();
    wire::acked_on(tcp, "chat").await
}

/// 50 readers that read everything as fast as they can, and one publisher that floods them
/// (3,000 pipelined messages of 2 KB): the fan-out outruns the writers, so the readers
/// fall behind together. That is the server being behind, not they: the publisher is pushed
/// back (its reading pauses) and no reader is closed. Before, a queue bound of 256 frames
/// closed such readers en masse.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flooding_publisher_is_pushed_back_instead_of_closing_its_readers() {
    const READERS: usize = 50;
    const MESSAGES: usize = 3000;
    let ts = start(Config::default().outbound_budget(64 * 1024)).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        readers.push(small_window_client(ts.addr).await);
    }
    let stats = publish_to_all(&ts, readers, flood(MESSAGES, 2000), MESSAGES).await;
    assert_eq!(stats.slow_consumer_closes, 0);
    assert!(stats.publisher_pushbacks > 0, "{stats:?}");
    assert_eq!(neffos::testkit::panics(), 0);
}

/// One client that never reads among readers that keep up: only it is closed (after the
/// stall timeout, or at four times its budget), the publisher is not held back for long,
/// and the others get everything.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stuck_client_among_healthy_ones_is_the_only_one_closed() {
    const READERS: usize = 8;
    const MESSAGES: usize = 2000;
    let ts = start(
        Config::default()
            .outbound_budget(16 * 1024)
            .write_stall_timeout(Duration::from_secs(1)),
    )
    .await;
    let _stuck = small_window_client(ts.addr).await;
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut tcp = wire::acked(ts.addr, "chat").await;
        readers.push(tokio::spawn(async move {
            let mut got = 0;
            while got < MESSAGES && next_text(&mut tcp).await.is_some() {
                got += 1;
            }
            got
        }));
    }
    let mut publisher = wire::acked(ts.addr, "chat").await;
    let flood = flood(MESSAGES, 4000);
    publisher.write_all(&flood).await.unwrap();
    for reader in readers {
        let got = tokio::time::timeout(T, reader).await.unwrap().unwrap();
        assert_eq!(got, MESSAGES);
    }
    assert!(eventually(T, || ts.server.stats().slow_consumer_closes == 1).await);
    assert_eq!(ts.server.stats().budget_closes, 1);
    assert_eq!(neffos::testkit::panics(), 0);
}

/// The same flood on a namespace with `OverloadPolicy::Shed`: the publisher is never
/// pushed back, no reader is closed, readers over their budget skip messages (counted),
/// and what each reader gets is in the order sent. Every delivery is accounted for:
/// received + shed = readers × messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shedding_namespace_skips_messages_for_readers_behind_and_keeps_order() {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    const READERS: usize = 20;
    const MESSAGES: usize = 3000;
    neffos::testkit::watch_panics();
    let server = Server::builder(Namespaces::new().namespace(
        "chat",
        Events::new().on("chat", |ns, msg| async move { ns.broadcast_others(msg) }),
    ))
    .config(Config::default().outbound_budget(64 * 1024))
    .overload("chat", neffos::OverloadPolicy::Shed)
    .build();
    let ts = serve(server).await.unwrap();
    let received = Arc::new(AtomicUsize::new(0));
    let mut readers = Vec::new();
    for _ in 0..READERS {
        let mut tcp = small_window_client(ts.addr).await;
        let received = received.clone();
        readers.push(tokio::spawn(async move {
            let mut last: Option<usize> = None;
            while let Some(frame) = next_text(&mut tcp).await {
                let n: usize = frame[";chat;;chat;0;0;".len()..][..5].parse().unwrap();
                if last.is_some_and(|l| n <= l) {
                    return Err(format!("{n} after {last:?}"));
                }
                last = Some(n);
                received.fetch_add(1, Ordering::Relaxed);
            }
            Ok(())
        }));
    }
    let mut publisher = wire::acked(ts.addr, "chat").await;
    let flood = flood(MESSAGES, 2000);
    publisher.write_all(&flood).await.unwrap();
    let accounted = eventually(T, || {
        received.load(Ordering::Relaxed) as u64 + ts.server.stats().shed_frames
            == (READERS * MESSAGES) as u64
    })
    .await;
    let stats = ts.server.stats();
    eprintln!(
        "measured: received {} shed {} {stats:?}",
        received.load(Ordering::Relaxed),
        stats.shed_frames
    );
    assert!(accounted, "every delivery received or counted as shed");
    assert!(stats.shed_frames > 0, "the flood outran the readers");
    assert_eq!(stats.publisher_pushbacks, 0, "nobody is pushed back");
    assert_eq!(stats.slow_consumer_closes, 0);
    for reader in readers {
        if reader.is_finished() {
            // A reader ends only when closed or on a message out of order.
            panic!("a reader ended: {:?}", reader.await.unwrap());
        }
        reader.abort();
    }
    assert_eq!(neffos::testkit::panics(), 0);
}

/// Broadcasts coalesced per poll (a publisher's pipelined messages) keep the order the
/// handlers sent them in, across targets (namespace, room) and with a direct send to the
/// reader in between: per message the reader gets `a` (namespace), `x` (direct), `b`
/// (room), `c` and `d` (namespace), for 200 pipelined messages.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn coalesced_broadcasts_keep_their_order_across_targets_and_direct_sends() {
    use std::sync::{Arc, Mutex};

    use neffos::{Message, NsConn, Target};

    const MESSAGES: usize = 200;
    neffos::testkit::watch_panics();
    let reader: Arc<Mutex<Option<NsConn>>> = Arc::default();
    let joined = reader.clone();
    let events = Events::new()
        .on("hello", move |ns: NsConn, _| {
            let joined = joined.clone();
            async move {
                *joined.lock().unwrap() = Some(ns.clone());
                ns.emit("joined", "")
            }
        })
        .on("go", move |ns: NsConn, msg: Message| {
            let reader = reader.clone();
            async move {
                let server = ns.conn().server().ok_or("no server")?;
                let others = || Target::namespace("chat").except(ns.conn());
                let say = |body: &str| Message::new("chat", "say", body.to_owned());
                let n = String::from_utf8_lossy(&msg.body).into_owned();
                let fail = |e: neffos::BroadcastError| e.to_string();
                server
                    .broadcast(others(), say(&format!("a{n}")))
                    .map_err(fail)?;
                let direct = reader.lock().unwrap().clone().ok_or("no reader")?;
                direct
                    .emit("say", format!("x{n}"))
                    .map_err(|e| e.to_string())?;
                server
                    .broadcast(Target::room("chat", "r"), say(&format!("b{n}")))
                    .map_err(fail)?;
                server
                    .broadcast(others(), say(&format!("c{n}")))
                    .map_err(fail)?;
                server
                    .broadcast(others(), say(&format!("d{n}")))
                    .map_err(fail)
            }
        });
    let server = Server::builder(Namespaces::new().namespace("chat", events)).build();
    let ts = serve(server).await.unwrap();
    let mut reader = wire::acked(ts.addr, "chat").await;
    reader
        .write_all(&text("$j1;chat;r;_OnRoomJoin;0;0;"))
        .await
        .unwrap();
    reader.write_all(&text(";chat;;hello;0;0;")).await.unwrap();
    // The join's (empty) reply, then the hello's.
    let mut setup = Vec::new();
    while !setup.iter().any(|f: &String| f.contains(";joined;")) {
        setup.push(
            tokio::time::timeout(T, next_text(&mut reader))
                .await
                .unwrap()
                .unwrap(),
        );
    }
    assert!(setup.iter().any(|f| f.as_str() == "$j1;;;;;;"), "{setup:?}");
    let mut publisher = wire::acked(ts.addr, "chat").await;
    let mut burst = Vec::new();
    for n in 0..MESSAGES {
        burst.extend_from_slice(&text(format!(";chat;;go;0;0;{n:03}")));
    }
    publisher.write_all(&burst).await.unwrap();
    for n in 0..MESSAGES {
        for kind in ["a", "x", "b", "c", "d"] {
            let frame = tokio::time::timeout(T, next_text(&mut reader))
                .await
                .unwrap()
                .unwrap();
            let body = frame.rsplit(';').next().unwrap();
            assert_eq!(body, format!("{kind}{n:03}"), "frame {frame}");
        }
    }
    assert_eq!(neffos::testkit::panics(), 0);
}

/// A connection flooded with broadcasts still reads what its client sends: a task woken
/// to write skips the read attempt unless the socket woke it, so a missed read wake would
/// leave the client's requests unread behind the flood. 3,000 broadcasts; the reader asks
/// 30 times on the way (after every 100 broadcasts received) and gets every answer.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_reader_flooded_with_broadcasts_still_has_its_requests_read() {
    const MESSAGES: usize = 3_000;
    const ASKS: usize = 30;
    neffos::testkit::watch_panics();
    let server = Server::builder(
        Namespaces::new().namespace(
            "chat",
            Events::new()
                .on("chat", |ns, msg| async move { ns.broadcast_others(msg) })
                .on(
                    "ask",
                    |ns: neffos::NsConn, msg: neffos::Message| async move {
                        ns.emit("answer", msg.body).map_err(|e| e.to_string())
                    },
                ),
        ),
    )
    .build();
    let ts = serve(server).await.unwrap();
    let mut reader = wire::acked(ts.addr, "chat").await;
    let mut publisher = wire::acked(ts.addr, "chat").await;
    let flooding = tokio::spawn(async move {
        publisher.write_all(&flood(MESSAGES, 64)).await.unwrap();
        publisher
    });
    let (mut broadcasts, mut asked, mut answers) = (0, 0, Vec::new());
    while broadcasts < MESSAGES || answers.len() < ASKS {
        let frame = tokio::time::timeout(T, next_text(&mut reader))
            .await
            .unwrap_or_else(|_| {
                panic!("{broadcasts} broadcasts, answers {answers:?} of {asked} asked")
            })
            .unwrap();
        if frame.contains(";answer;") {
            answers.push(frame.rsplit(';').next().unwrap().to_owned());
            continue;
        }
        broadcasts += 1;
        if broadcasts % 100 == 0 && asked < ASKS {
            reader
                .write_all(&text(format!(";chat;;ask;0;0;q{asked}")))
                .await
                .unwrap();
            asked += 1;
        }
    }
    let expected: Vec<String> = (0..ASKS).map(|i| format!("q{i}")).collect();
    assert_eq!(answers, expected);
    drop(flooding.await.unwrap());
    assert_eq!(neffos::testkit::panics(), 0);
}

/// Reads `messages` numbered `chat` broadcasts (see [`flood`]) in order, or says where it
/// went wrong.
async fn read_numbered(tcp: &mut TcpStream, messages: usize) -> Result<(), String> {
    for want in 0..messages {
        let Some(frame) = next_text(tcp).await else {
            return Err(format!("closed after {want} messages"));
        };
        let n: usize = frame[";chat;;chat;0;0;".len()..][..5].parse().unwrap();
        if n != want {
            return Err(format!("message {want} lost (got {n})"));
        }
    }
    Ok(())
}

/// `n` clients connected to namespace `chat`.
async fn chat_clients(addr: SocketAddr, n: usize) -> Vec<TcpStream> {
    let mut clients = Vec::with_capacity(n);
    for _ in 0..n {
        clients.push(wire::acked(addr, "chat").await);
    }
    clients
}

/// A publisher connected after `readers` writes `flood` (numbered messages) at once; every
/// reader must get all `messages` of it, in order. Returns the server's counters after.
async fn publish_to_all(
    ts: &TestServer,
    readers: Vec<TcpStream>,
    flood: Vec<u8>,
    messages: usize,
) -> StatsSnapshot {
    let readers: Vec<_> = readers
        .into_iter()
        .map(|mut tcp| tokio::spawn(async move { read_numbered(&mut tcp, messages).await }))
        .collect();
    let mut publisher = wire::acked(ts.addr, "chat").await;
    let publishing = tokio::spawn(async move {
        publisher.write_all(&flood).await.unwrap();
        publisher
    });
    let mut results = Vec::new();
    for reader in readers {
        results.push(tokio::time::timeout(T, reader).await.unwrap().unwrap());
    }
    let stats = ts.server.stats();
    eprintln!("measured: {stats:?}");
    for result in results {
        result.unwrap();
    }
    let _publisher = publishing.await.unwrap();
    stats
}

/// A publisher that pipelines small messages to 64 readers outruns their writers (the
/// fan-out of one message is cheap, a write is a system call): its broadcasts find most
/// recipients with frames still waiting. Its next read then waits for the writers' round,
/// and what it sent meanwhile reaches each reader as one burst. Every reader still gets
/// every message in order, and none is closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_ahead_of_the_writers_is_paced_and_every_reader_gets_everything() {
    const READERS: usize = 64;
    const MESSAGES: usize = 3000;
    let ts = start(Config::default()).await;
    let readers = chat_clients(ts.addr, READERS).await;
    let stats = publish_to_all(&ts, readers, flood(MESSAGES, 64), MESSAGES).await;
    assert!(stats.publisher_paces > 0, "{stats:?}");
    assert_eq!(stats.slow_consumer_closes, 0);
    assert_eq!(neffos::testkit::panics(), 0);
}

/// A publisher whose every message has reached every reader before it sends the next
/// finds their queues empty: it is never paced (no latency added while the server keeps
/// up).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_publisher_the_writers_keep_up_with_is_not_paced() {
    const READERS: usize = 64;
    const MESSAGES: usize = 50;
    let ts = start(Config::default()).await;
    let mut readers = chat_clients(ts.addr, READERS).await;
    let mut publisher = wire::acked(ts.addr, "chat").await;
    for n in 0..MESSAGES {
        publisher
            .write_all(&text(format!(";chat;;chat;0;0;{n:05}")))
            .await
            .unwrap();
        for reader in &mut readers {
            let frame = tokio::time::timeout(T, next_text(reader))
                .await
                .unwrap()
                .unwrap();
            assert!(frame.ends_with(&format!("{n:05}")), "{frame}");
        }
    }
    let stats = ts.server.stats();
    assert_eq!(stats.publisher_paces, 0, "{stats:?}");
    assert_eq!(neffos::testkit::panics(), 0);
}
