//! Connection-state recovery across instances through a real `nats-server` with JetStream:
//! history in a stream per namespace, sessions in a sessions stream. A client cut off from instance A comes back
//! through the load balancer on instance B with its ID and room and gets the 1,000
//! broadcasts a client on instance C published meanwhile, exactly once, in order, before
//! newer ones; a lost history is reported, never replayed with a gap.
#![cfg(feature = "history")]
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use neffos::protocol::recovery::Position;
use neffos::recovery::{HistoryLimits, HistoryStore, Outcome, Reason, Recovery};
use neffos::testkit::broker::NatsServer;
use neffos::testkit::proxy::LoadBalancer;
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Events, Message, Namespaces, Reconnect, Server};
use neffos_nats::{NatsExchange, NatsHistory};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

/// An instance: "pub" broadcasts its body to room "R" of "chat" (recorded) or of "plain"
/// (not recorded).
async fn instance(url: &str) -> TestServer {
    let publish = || {
        Events::new().on("pub", |ns, msg: Message| async move {
            let _ = ns.broadcast(Message::new(ns.namespace(), "msg", msg.body).with_room("R"));
        })
    };
    let server = Server::builder(
        Namespaces::new()
            .namespace("chat", publish())
            .namespace("plain", publish()),
    )
    .exchange(NatsExchange::connect(url).await.unwrap())
    .recovery(
        Recovery::new().namespace("chat").store(
            NatsHistory::connect(url, HistoryLimits::default())
                .await
                .unwrap(),
        ),
    )
    .build();
    serve(server).await.unwrap()
}

async fn subscriber(lb: &LoadBalancer, ns: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("msg", move |_ns, msg: Message| {
        let tx = tx.clone();
        async move {
            let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
        }
    });
    let client = Client::builder(lb.url())
        .namespaces(Namespaces::new().namespace(ns, events))
        .reconnect(Reconnect::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .recovery(true)
        .connect()
        .await
        .unwrap();
    client
        .connect(ns)
        .await
        .unwrap()
        .join_room("R")
        .await
        .unwrap();
    (client, rx)
}

async fn publisher(ts: &TestServer, ns: &str) -> neffos::NsConn {
    let client = Client::builder(ts.url())
        .namespaces(Namespaces::new().namespace(ns, Events::new()))
        .connect()
        .await
        .unwrap();
    client.connect(ns).await.unwrap()
}

async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(body)) => got.push(body),
            _ => panic!("received {} of {n}, last {:?}", got.len(), got.last()),
        }
    }
    got
}

/// `got` is exactly `range`, in order (a short message when not).
fn assert_in_order(got: &[String], range: std::ops::Range<usize>) {
    let expected: Vec<String> = range.map(|i| i.to_string()).collect();
    if let Some(i) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i)) {
        panic!(
            "first difference at {i}: got {:?}, expected {:?} ({} received, {} expected)",
            got.get(i),
            expected.get(i),
            got.len(),
            expected.len()
        );
    }
}

/// Waits until `namespace`'s history holds offset `n` (everything published was recorded).
async fn recorded(store: &NatsHistory, namespace: &str, n: u64) -> Position {
    let deadline = Instant::now() + T;
    loop {
        let head = store.head(namespace).await.unwrap();
        if head.offset >= n {
            return head;
        }
        assert!(
            Instant::now() < deadline,
            "history at {head:?}, {n} expected"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

struct Scenario {
    _broker: NatsServer,
    _dir: JetStreamDir,
    js: async_nats::jetstream::Context,
    instances: Vec<TestServer>,
    lb: LoadBalancer,
    store: NatsHistory,
}

impl Scenario {
    async fn start() -> Scenario {
        let dir = JetStreamDir::new();
        let broker = NatsServer::start_with(&["-js", "-sd", dir.0.to_str().unwrap()]);
        let url = broker.url();
        let mut instances = Vec::new();
        for _ in 0..3 {
            instances.push(instance(&url).await);
        }
        let lb = LoadBalancer::start(instances[0].addr).await.unwrap();
        let store = NatsHistory::connect(&url, HistoryLimits::default())
            .await
            .unwrap();
        let js = async_nats::jetstream::new(async_nats::connect(&url).await.unwrap());
        Scenario {
            _broker: broker,
            _dir: dir,
            js,
            instances,
            lb,
            store,
        }
    }

    /// Instance A loses its client: the load balancer cuts the connection and sends new
    /// ones nowhere until [`Self::back_on`].
    async fn cut(&self) {
        self.lb.route_to(None);
        self.lb.cut();
        let a = &self.instances[0].server;
        assert!(eventually(T, || a.connection_count() == 0).await);
    }

    fn back_on(&self, i: usize) {
        self.lb.route_to(Some(self.instances[i].addr));
    }
}

/// Emits one "pub" per number, one every `pace` on average (all at once when zero).
async fn emit_range(p: &neffos::NsConn, range: std::ops::Range<usize>, pace: Duration) {
    let mut tick = (!pace.is_zero()).then(|| tokio::time::interval(pace));
    for i in range {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        p.emit("pub", i.to_string()).unwrap();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovers_on_another_instance_exactly_once_in_order() {
    let s = Scenario::start().await;
    let (client, mut rx) = subscriber(&s.lb, "chat").await;
    let id = client.id();
    let p = publisher(&s.instances[2], "chat").await;
    emit_range(&p, 0..100, Duration::ZERO).await;
    assert_in_order(&receive(&mut rx, 100).await, 0..100);

    s.cut().await;
    // 1,000 room messages over 2 s from a client on C while the client is away.
    let started = Instant::now();
    emit_range(&p, 100..1100, Duration::from_millis(2)).await;
    recorded(&s.store, "chat", 1100).await;
    eprintln!("published 1,000 in {:?}", started.elapsed());

    s.back_on(1);
    client.wait_reconnects(0, T).await.unwrap();
    let back = Instant::now();
    // Published after the reconnect: must come after all of the missed ones.
    emit_range(&p, 1100..1200, Duration::ZERO).await;
    let got = receive(&mut rx, 1100).await;
    assert_in_order(&got, 100..1200);
    eprintln!(
        "caught up (1,000 missed + 100 newer) {:?} after the reconnect",
        back.elapsed()
    );
    assert_eq!(
        client.wait_recovery("chat", T).await.unwrap(),
        Outcome::Recovered
    );
    assert_eq!(client.id(), id, "same connection ID");
    let b = &s.instances[1].server;
    let on_b = b.connections_by_id(&id).pop().expect("the client is on B");
    assert_eq!(
        on_b.namespace("chat").unwrap().rooms(),
        vec!["R".to_owned()]
    );
    assert!(rx.try_recv().is_err(), "nothing more, no duplicate");
    assert_eq!(b.recovery_stats().recovered, 1);
}

async fn not_recovered_when(lose: &str, expected: &[Reason]) {
    let s = Scenario::start().await;
    let (client, mut rx) = subscriber(&s.lb, "chat").await;
    let p = publisher(&s.instances[2], "chat").await;
    emit_range(&p, 0..10, Duration::ZERO).await;
    assert_in_order(&receive(&mut rx, 10).await, 0..10);
    s.cut().await;
    emit_range(&p, 10..110, Duration::ZERO).await;
    recorded(&s.store, "chat", 110).await;
    let stream = "NEFFOS_H_63686174"; // "chat"
    match lose {
        "delete" => {
            s.js.delete_stream(stream).await.unwrap();
        }
        _ => {
            s.js.get_stream(stream)
                .await
                .unwrap()
                .purge()
                .await
                .unwrap();
        }
    }
    s.back_on(1);
    client.wait_reconnects(0, T).await.unwrap();
    let outcome = client.wait_recovery("chat", T).await.unwrap();
    assert!(
        expected
            .iter()
            .any(|r| outcome == Outcome::NotRecovered(*r)),
        "{outcome:?}"
    );
    // Nothing of the lost history is replayed: the next broadcast is the first one.
    let b = &s.instances[1].server;
    assert!(
        eventually(T, || b
            .connections_by_id(&client.id())
            .first()
            .and_then(|c| c.namespace("chat"))
            .is_some_and(|ns| !ns.rooms().is_empty()))
        .await
    );
    emit_range(&p, 1000..1001, Duration::ZERO).await;
    assert_in_order(&receive(&mut rx, 1).await, 1000..1001);
}

/// A purged stream keeps its sequence numbers: the missed ones are a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_stream_is_not_recovered() {
    not_recovered_when("purge", &[Reason::HistoryTrimmed]).await;
}

/// A stream deleted (and created again by the next broadcast) is a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_is_an_epoch_change() {
    not_recovered_when("delete", &[Reason::EpochChanged]).await;
}

/// A JetStream store directory of its own, removed at the end.
struct JetStreamDir(std::path::PathBuf);

impl JetStreamDir {
    fn new() -> Self {
        static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("neffos-js-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        JetStreamDir(dir)
    }
}

impl Drop for JetStreamDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}
