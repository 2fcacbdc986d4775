//! Connection-state recovery across instances through a real `redis-server`: history in a
//! Redis Stream, sessions as keys with a TTL. A client cut off from instance A comes back
//! through the load balancer on instance B with its ID and room and gets the 1,000
//! broadcasts a client on instance C published meanwhile, exactly once, in order, before
//! newer ones; a lost history is reported, never replayed with a gap.
#![allow(clippy::unwrap_used)]

use std::time::{Duration, Instant};

use neffos::protocol::recovery::Position;
use neffos::recovery::{HistoryLimits, HistoryStore, Outcome, Reason, Recovery};
use neffos::testkit::broker::RedisServer;
use neffos::testkit::proxy::LoadBalancer;
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Events, Message, Namespaces, Reconnect, Server};
use neffos_redis::{RedisExchange, RedisHistory};
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
    .exchange(RedisExchange::connect(url).await.unwrap())
    .recovery(
        Recovery::new().namespace("chat").store(
            RedisHistory::connect(url, HistoryLimits::default())
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
async fn recorded(store: &RedisHistory, namespace: &str, n: u64) -> Position {
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
    broker: RedisServer,
    instances: Vec<TestServer>,
    lb: LoadBalancer,
    store: RedisHistory,
}

impl Scenario {
    async fn start() -> Scenario {
        let broker = RedisServer::start();
        let url = broker.url();
        let mut instances = Vec::new();
        for _ in 0..3 {
            instances.push(instance(&url).await);
        }
        let lb = LoadBalancer::start(instances[0].addr).await.unwrap();
        let store = RedisHistory::connect(&url, HistoryLimits::default())
            .await
            .unwrap();
        Scenario {
            broker,
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

    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.broker.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
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
    let mut admin = s.admin().await;
    match lose {
        "flushall" => redis::cmd("FLUSHALL").exec_async(&mut admin).await.unwrap(),
        // The stream and its epoch gone (purged), sessions kept.
        _ => redis::cmd("DEL")
            .arg("neffos:recovery:s:chat")
            .arg("neffos:recovery:m:chat")
            .exec_async(&mut admin)
            .await
            .unwrap(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_history_is_reported_as_an_epoch_change() {
    not_recovered_when("purge", &[Reason::EpochChanged]).await;
}

/// FLUSHALL loses the kept session too: the client starts afresh and is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_redis_is_not_recovered() {
    not_recovered_when("flushall", &[Reason::NoSession, Reason::EpochChanged]).await;
}

/// Broker bytes per broadcast, recorded namespace vs plain one, same instances and run.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_bytes_per_broadcast_with_recovery_on_and_off() {
    let s = Scenario::start().await;
    let mut admin = s.admin().await;
    let mut per_broadcast = Vec::new();
    for ns in ["plain", "chat"] {
        let (_client, mut rx) = subscriber(&s.lb, ns).await;
        let p = publisher(&s.instances[2], ns).await;
        emit_range(&p, 0..10, Duration::ZERO).await;
        receive(&mut rx, 10).await;
        let before = net_bytes(&mut admin).await;
        emit_range(&p, 0..1000, Duration::ZERO).await;
        receive(&mut rx, 1000).await;
        let bytes = net_bytes(&mut admin).await - before;
        per_broadcast.push(bytes as f64 / 1000.0);
    }
    eprintln!(
        "broker bytes per broadcast (in + out, 3 instances, 4-byte body): recovery off {:.0}, on {:.0} ({:.2}x)",
        per_broadcast[0],
        per_broadcast[1],
        per_broadcast[1] / per_broadcast[0]
    );
    assert!(per_broadcast[1] > per_broadcast[0]);
}

async fn net_bytes(admin: &mut redis::aio::MultiplexedConnection) -> u64 {
    let info: String = redis::cmd("INFO")
        .arg("stats")
        .query_async(admin)
        .await
        .unwrap();
    ["total_net_input_bytes:", "total_net_output_bytes:"]
        .iter()
        .map(|key| {
            info.lines()
                .find_map(|l| l.strip_prefix(key))
                .and_then(|v| v.trim().parse::<u64>().ok())
                .unwrap()
        })
        .sum()
}
