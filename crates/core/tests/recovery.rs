//! Connection-state recovery on one instance (memory store): a client whose connection is
//! cut comes back through the load balancer with its ID and rooms and gets every broadcast
//! it missed exactly once, in order, before newer ones; or it is told "not recovered"
//! (window passed, history lost, history bounds exceeded) and gets no partial replay.
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used)]

use std::time::Duration;

use neffos::protocol::recovery::RECOVERY_EVENT;
use neffos::recovery::{HistoryLimits, MemoryHistory, Outcome, Reason, Recovery};
use neffos::testkit::proxy::LoadBalancer;
use neffos::testkit::recovery::assert_in_order;
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Events, Message, Namespaces, Reconnect, Server, Target};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

fn server(store: MemoryHistory, window: Duration) -> Server {
    Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .recovery(
            Recovery::new()
                .namespace("chat")
                .window(window)
                .store(store),
        )
        .build()
}

/// A client through `lb` that reports every "msg" body; in room "R" of "chat".
async fn client(
    lb: &LoadBalancer,
    exact: bool,
    header_key: Option<&str>,
) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let told = tx.clone();
    let events = Events::new()
        .on("msg", move |_ns, msg: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
            }
        })
        // What neffos.js apps listen to; reported in the same stream, marked.
        .on(RECOVERY_EVENT, move |_ns, msg: Message| {
            let told = told.clone();
            async move {
                let _ = told.send(format!("told {}", String::from_utf8_lossy(&msg.body)));
            }
        });
    let mut builder = Client::builder(lb.url())
        .namespaces(Namespaces::new().namespace("chat", events))
        .reconnect(Reconnect::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .recovery(exact);
    if let Some(key) = header_key {
        builder = builder.header("X-Neffos-Session", key);
    }
    let client = builder.connect().await.unwrap();
    client
        .connect("chat")
        .await
        .unwrap()
        .join_room("R")
        .await
        .unwrap();
    (client, rx)
}

fn publish(server: &Server, range: std::ops::Range<usize>) {
    for i in range {
        server
            .broadcast(
                Target::room("chat", "R"),
                Message::new("chat", "msg", i.to_string()),
            )
            .unwrap();
    }
}

/// The next `n` broadcasts received (recovery events skipped).
async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(told)) if told.starts_with("told ") => {}
            Ok(Some(body)) => got.push(body),
            _ => panic!("received {} of {n}: {:?}", got.len(), got.last()),
        }
    }
    got
}

/// The next `n` items, recovery events included.
async fn receive_all(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(item)) => got.push(item),
            _ => panic!(
                "received {} of {n}: {:?} .. {:?}",
                got.len(),
                got.first(),
                got.last()
            ),
        }
    }
    got
}

fn numbers(range: std::ops::Range<usize>) -> Vec<String> {
    range.map(|i| i.to_string()).collect()
}

/// Cuts the client's connection and waits until the server noticed.
async fn cut(lb: &LoadBalancer, ts: &TestServer) {
    lb.route_to(None);
    lb.cut();
    assert!(eventually(T, || ts.server.connection_count() == 0).await);
}

/// The scenario of issue 17 on one instance: 1,000 broadcasts missed, while new ones are
/// published during the reconnect; everything arrives once, in order.
async fn missed_broadcasts_replayed(exact: bool, header_key: Option<&str>) {
    let store = MemoryHistory::new(HistoryLimits::default());
    let ts = serve(server(store.clone(), Duration::from_secs(120)))
        .await
        .unwrap();
    let lb = LoadBalancer::start(ts.addr).await.unwrap();
    let (client, mut rx) = client(&lb, exact, header_key).await;
    let id = client.id();
    publish(&ts.server, 0..100);
    assert_eq!(receive(&mut rx, 100).await, numbers(0..100));

    cut(&lb, &ts).await;
    publish(&ts.server, 100..1100);
    assert!(eventually(T, || store.session_count() == 1).await);
    // Publishing goes on while the client comes back: those must follow the replay.
    lb.route_to(Some(ts.addr));
    let publisher = {
        let server = ts.server.clone();
        tokio::spawn(async move {
            for chunk in 0..20 {
                let from = 1100 + chunk * 10;
                publish(&server, from..from + 10);
                tokio::task::yield_now().await;
            }
        })
    };
    client.wait_reconnects(0, T).await.unwrap();
    publisher.await.unwrap();
    // Every missed and newer broadcast once, in order, and the event saying so (sent once
    // the replay is done; newer broadcasts may come before it).
    let (told, got): (Vec<String>, Vec<String>) = receive_all(&mut rx, 1201)
        .await
        .into_iter()
        .partition(|item| item.starts_with("told "));
    assert_eq!(told, vec!["told recovered".to_owned()]);
    assert_in_order(&got, 100..1300);
    if exact {
        assert_eq!(client.recovery("chat"), Some(Outcome::Recovered));
    }
    assert_eq!(client.id(), id, "same connection ID");
    let conn = ts.server.connections_by_id(&id).pop().unwrap();
    assert_eq!(
        conn.namespace("chat").unwrap().rooms(),
        vec!["R".to_owned()]
    );
    // Nothing more: no duplicates after the last one.
    publish(&ts.server, 1300..1301);
    assert_eq!(receive(&mut rx, 1).await, numbers(1300..1301));
    assert!(rx.try_recv().is_err());
    assert_eq!(ts.server.recovery_stats().recovered, 1);
}

#[tokio::test]
async fn rust_client_gets_every_missed_broadcast_once_in_order() {
    missed_broadcasts_replayed(true, None).await;
}

/// What neffos.js does: only the session header, no positions; the server's own record
/// of what it handed to the socket is where the replay starts.
#[tokio::test]
async fn session_header_alone_recovers_from_the_servers_positions() {
    missed_broadcasts_replayed(false, Some("a-secret-key-of-this-tab")).await;
}

/// What happens while the client is away.
enum Outage {
    /// The window passes.
    Long(Duration),
    /// The history is lost (a new epoch).
    HistoryLost,
    /// Nothing but the broadcasts it misses.
    Plain,
}

async fn not_recovered_after(
    store: MemoryHistory,
    window: Duration,
    outage: Outage,
    expected: Reason,
) {
    let ts = serve(server(store.clone(), window)).await.unwrap();
    let lb = LoadBalancer::start(ts.addr).await.unwrap();
    let (client, mut rx) = client(&lb, true, None).await;
    let id = client.id();
    publish(&ts.server, 0..10);
    assert_eq!(receive(&mut rx, 10).await, numbers(0..10));
    cut(&lb, &ts).await;
    assert!(eventually(T, || store.session_count() == 1).await);
    publish(&ts.server, 10..110);
    match outage {
        Outage::Long(d) => {
            // The window runs out while the client is away (time passing is the point).
            tokio::time::sleep(d).await;
            assert_eq!(store.session_count(), 0);
        }
        Outage::HistoryLost => store.forget("chat"),
        Outage::Plain => {}
    }
    lb.route_to(Some(ts.addr));
    client.wait_reconnects(0, T).await.unwrap();
    assert_eq!(
        client.wait_recovery("chat", T).await.unwrap(),
        Outcome::NotRecovered(expected)
    );
    // No partial replay: once the client is back in its room, the next broadcast is the
    // first one it receives.
    assert!(
        eventually(T, || ts
            .server
            .connections_by_id(&client.id())
            .first()
            .and_then(|c| c.namespace("chat"))
            .is_some_and(|ns| !ns.rooms().is_empty()))
        .await
    );
    publish(&ts.server, 1000..1001);
    assert_eq!(receive(&mut rx, 1).await, numbers(1000..1001));
    if expected == Reason::NoSession {
        assert_ne!(client.id(), id, "a fresh session");
    } else {
        assert_eq!(client.id(), id);
    }
}

#[tokio::test]
async fn after_the_window_the_client_starts_afresh_and_is_told() {
    let window = Duration::from_millis(200);
    not_recovered_after(
        MemoryHistory::default(),
        window,
        Outage::Long(window * 2),
        Reason::NoSession,
    )
    .await;
}

#[tokio::test]
async fn lost_history_is_not_recovered() {
    not_recovered_after(
        MemoryHistory::default(),
        Duration::from_secs(60),
        Outage::HistoryLost,
        Reason::EpochChanged,
    )
    .await;
}

#[tokio::test]
async fn history_bounds_exceeded_is_not_recovered_and_nothing_is_replayed() {
    not_recovered_after(
        MemoryHistory::new(HistoryLimits::default().max_entries(50)),
        Duration::from_secs(60),
        Outage::Plain,
        Reason::HistoryTrimmed,
    )
    .await;
}

/// A client that closes on purpose leaves no session behind; one that drops leaves one,
/// and its size is what a kept session costs in the store.
#[tokio::test]
async fn sessions_are_kept_only_after_unexpected_ends() {
    let store = MemoryHistory::default();
    let ts = serve(server(store.clone(), Duration::from_secs(60)))
        .await
        .unwrap();
    let lb = LoadBalancer::start(ts.addr).await.unwrap();
    let (client, _rx) = client(&lb, true, None).await;
    client.close();
    assert!(eventually(T, || ts.server.connection_count() == 0).await);
    // The last checkpoint of the live connection may land just before the close.
    assert!(eventually(T, || store.session_count() == 0).await);

    let (_client, _rx) = client_with_rooms(&lb, 3).await;
    cut(&lb, &ts).await;
    assert!(eventually(T, || store.session_count() == 1).await);
    eprintln!(
        "kept session: {} bytes in the store (1 namespace, 3 rooms, 36-byte ID)",
        store.session_bytes()
    );
    assert!(store.session_bytes() < 256);
}

async fn client_with_rooms(
    lb: &LoadBalancer,
    rooms: usize,
) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (client, rx) = client(lb, true, None).await;
    let ns = client.namespace("chat").unwrap();
    for i in 1..rooms {
        ns.join_room(&format!("room-{i}")).await.unwrap();
    }
    (client, rx)
}

/// Cut in the middle of a steady stream (2,000 broadcasts/s): what was in flight in the
/// socket and the network is replayed too, since the Rust client reports what it received.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_loses_nothing_in_flight_at_a_cut() {
    let store = MemoryHistory::default();
    let ts = serve(server(store.clone(), Duration::from_secs(60)))
        .await
        .unwrap();
    let lb = LoadBalancer::start(ts.addr).await.unwrap();
    let (client, mut rx) = client(&lb, true, None).await;
    const N: usize = 3000;
    let publisher = {
        let server = ts.server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_micros(500));
            for i in 0..N {
                tick.tick().await;
                publish(&server, i..i + 1);
            }
        })
    };
    let mut got = receive(&mut rx, 500).await;
    cut(&lb, &ts).await;
    lb.route_to(Some(ts.addr));
    client.wait_reconnects(0, T).await.unwrap();
    publisher.await.unwrap();
    got.extend(receive(&mut rx, N - 500).await);
    assert_in_order(&got, 0..N);
    assert_eq!(
        client.wait_recovery("chat", T).await.unwrap(),
        Outcome::Recovered
    );
}

/// A [`MemoryHistory`] whose session saves can be held: once armed, the next save waits
/// (and says so) until released.
#[derive(Debug, Default)]
struct HeldSaves {
    inner: MemoryHistory,
    armed: std::sync::atomic::AtomicBool,
    holding: tokio::sync::Notify,
    release: tokio::sync::Notify,
    /// Session saves written so far.
    saved: tokio::sync::watch::Sender<usize>,
}

impl neffos::recovery::HistoryStore for HeldSaves {
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [bytes::Bytes],
    ) -> neffos::recovery::StoreFuture<'a, Vec<neffos::recovery::Position>> {
        self.inner.append_all(namespace, payloads)
    }
    fn head<'a>(
        &'a self,
        namespace: &'a str,
    ) -> neffos::recovery::StoreFuture<'a, neffos::recovery::Position> {
        self.inner.head(namespace)
    }
    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: neffos::recovery::Position,
        limit: usize,
    ) -> neffos::recovery::StoreFuture<'a, neffos::recovery::Replay> {
        self.inner.read_after(namespace, after, limit)
    }
    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: bytes::Bytes,
        ttl: Duration,
    ) -> neffos::recovery::StoreFuture<'a, ()> {
        Box::pin(async move {
            if self.armed.swap(false, std::sync::atomic::Ordering::SeqCst) {
                let released = self.release.notified();
                self.holding.notify_one();
                released.await;
            }
            self.inner.save_session(key, session, ttl).await?;
            self.saved.send_modify(|n| *n += 1);
            Ok(())
        })
    }
    fn take_session<'a>(
        &'a self,
        key: &'a str,
    ) -> neffos::recovery::StoreFuture<'a, Option<bytes::Bytes>> {
        self.inner.take_session(key)
    }
    fn delete_session<'a>(&'a self, key: &'a str) -> neffos::recovery::StoreFuture<'a, ()> {
        self.inner.delete_session(key)
    }
}

/// A checkpoint taken before the connection ended, and still being written when it ended,
/// does not overwrite the session's final save: the replay starts after the last
/// broadcast the server handed to the socket, not at the checkpoint's older position.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_checkpoint_in_flight_does_not_overwrite_the_final_save() {
    let store = std::sync::Arc::new(HeldSaves::default());
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .recovery(
            Recovery::new()
                .namespace("chat")
                .window(Duration::from_secs(120))
                .checkpoint_interval(Duration::from_millis(20))
                .store(store.clone()),
        )
        .build();
    let ts = serve(server).await.unwrap();
    let lb = LoadBalancer::start(ts.addr).await.unwrap();
    // The server's positions, as for neffos.js (the client presents none).
    let (client, mut rx) = client(&lb, false, Some("held-checkpoint")).await;
    publish(&ts.server, 0..10);
    assert_eq!(receive(&mut rx, 10).await, numbers(0..10));
    // The next checkpoint (at position 10) is held while being written.
    store.armed.store(true, std::sync::atomic::Ordering::SeqCst);
    let mut saved = store.saved.subscribe();
    let saved_before = *saved.borrow_and_update();
    tokio::time::timeout(T, store.holding.notified())
        .await
        .expect("a checkpoint");
    publish(&ts.server, 10..20);
    assert_eq!(receive(&mut rx, 10).await, numbers(10..20));
    cut(&lb, &ts).await;
    store.release.notify_one();
    // The held checkpoint and the final save are both written.
    tokio::time::timeout(T, saved.wait_for(|n| *n >= saved_before + 2))
        .await
        .expect("both saves written")
        .unwrap();
    publish(&ts.server, 20..30);
    lb.route_to(Some(ts.addr));
    client.wait_reconnects(0, T).await.unwrap();
    assert_eq!(receive(&mut rx, 10).await, numbers(20..30));
    publish(&ts.server, 30..31);
    assert_eq!(receive(&mut rx, 1).await, numbers(30..31));
    assert!(rx.try_recv().is_err(), "nothing replayed twice");
}
