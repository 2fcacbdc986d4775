//! The cluster layer on three in-process instances sharing a `MemoryExchange`: the live
//! set, every query against the ground truth, partial answers when an instance is gone,
//! remote operations observed by the clients, `Server::ask` failing fast, and presence
//! events (a dead instance's members leave exactly once on every instance).
#![cfg(feature = "testkit")]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use neffos::error::AskErrorKind;

use neffos::testkit::{TestServer, serve};
use neffos::{
    Client, ClusterConfig, Events, Exchange, ExchangeFuture, ExchangeStats, Inbound,
    MemoryExchange, Message, Namespaces, PresenceEvent, PresenceKind, Server, Topic,
};
use parking_lot::Mutex;

const NS: &str = "chat";
const T: Duration = Duration::from_secs(10);

type Log = Arc<Mutex<Vec<PresenceEvent>>>;

/// A `MemoryExchange` handle that can be cut: then nothing it publishes reaches the bus,
/// as if its instance died (kill -9) or was partitioned away.
#[derive(Debug, Clone)]
struct Cuttable {
    inner: MemoryExchange,
    cut: Arc<AtomicBool>,
}

impl Exchange for Cuttable {
    fn start(&self, instance: uuid::Uuid, inbound: Inbound) {
        self.inner.start(instance, inbound);
    }
    fn publish(&self, topic: Topic, payload: bytes::Bytes) {
        if !self.cut.load(Ordering::Acquire) {
            self.inner.publish(topic, payload);
        }
    }
    fn subscribe(&self, topic: Topic) {
        self.inner.subscribe(topic);
    }
    fn unsubscribe(&self, topic: Topic) {
        self.inner.unsubscribe(topic);
    }
    fn flush(&self) -> ExchangeFuture<'_> {
        self.inner.flush()
    }
    fn close(&self) -> ExchangeFuture<'_> {
        self.inner.close()
    }
    fn stats(&self) -> ExchangeStats {
        self.inner.stats()
    }
}

struct Instance {
    test: TestServer,
    log: Log,
    cut: Arc<AtomicBool>,
}

impl Instance {
    fn server(&self) -> &Server {
        &self.test.server
    }
}

async fn instance(bus: &MemoryExchange, label: &str) -> Instance {
    let log: Log = Arc::default();
    let sink = log.clone();
    let config = ClusterConfig::default()
        .heartbeat(Duration::from_millis(100), Duration::from_millis(400))
        .label(label)
        .presence(NS, move |event| {
            let sink = sink.clone();
            async move { sink.lock().push(event) }
        });
    let server =
        Server::builder(Namespaces::new().namespace(NS, Events::new())).id_generator(|parts| {
            parts
                .headers
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        });
    let cut = Arc::new(AtomicBool::new(false));
    let server = server
        .cluster(config)
        .exchange(Cuttable {
            inner: bus.clone(),
            cut: cut.clone(),
        })
        .build();
    Instance {
        test: serve(server).await.unwrap(),
        log,
        cut,
    }
}

async fn client(at: &Instance, id: &str, rooms: &[&str]) -> Client {
    let client = Client::builder(at.test.url())
        .header("X-Id", id)
        .namespaces(Namespaces::new().namespace(NS, Events::new()))
        .connect()
        .await
        .unwrap();
    let ns = client.connect(NS).await.unwrap();
    for room in rooms {
        ns.join_room(room).await.unwrap();
    }
    client
}

/// Waits (bounded) until `cond` holds, re-checking as time passes.
async fn until(what: &str, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < T, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

fn ids(members: &[neffos::Member]) -> BTreeSet<String> {
    members.iter().map(|m| m.id.clone()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn queries_operations_ask_and_presence_on_three_instances() {
    let bus = MemoryExchange::new();
    let a = instance(&bus, "a").await;
    let b = instance(&bus, "b").await;
    let c = instance(&bus, "c").await;
    let all = [&a, &b, &c];
    for i in all {
        until("every instance sees three", async || {
            let cluster = i.server().cluster();
            cluster.instances().len() == 3 && cluster.stats().settled
        })
        .await;
    }
    let labels: BTreeSet<String> = a
        .server()
        .cluster()
        .instances()
        .into_iter()
        .map(|i| i.label)
        .collect();
    assert_eq!(labels, ["a", "b", "c"].map(String::from).into());

    // Ground truth: 3 clients per instance, rooms r0/r1.
    let mut clients = HashMap::new();
    let mut truth_rooms: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (n, at) in all.iter().enumerate() {
        for k in 0..3 {
            let id = format!("u{n}{k}");
            let room = format!("r{}", k % 2);
            clients.insert(id.clone(), client(at, &id, &[&room]).await);
            truth_rooms.entry(room).or_default().insert(id);
        }
    }
    let cluster = a.server().cluster();
    let count = cluster.count(NS).await.unwrap();
    assert!(count.is_complete(), "{count:?}");
    assert_eq!(count.value, 9);
    assert_eq!(count.answered.len(), 3);
    let conns = cluster.connections(NS).await.unwrap();
    assert_eq!(ids(&conns.value), clients.keys().cloned().collect());
    let on_b = conns
        .value
        .iter()
        .filter(|m| m.instance == b.server().instance_id())
        .count();
    assert_eq!(on_b, 3);
    let rooms = cluster.rooms(NS).await.unwrap();
    let expected: BTreeMap<String, usize> = truth_rooms
        .iter()
        .map(|(r, m)| (r.clone(), m.len()))
        .collect();
    assert_eq!(rooms.value, expected);
    for (room, members) in &truth_rooms {
        let got = cluster.room_members(NS, room).await.unwrap();
        assert_eq!(&ids(&got.value), members);
        assert_eq!(
            cluster.room_count(NS, room).await.unwrap().value,
            members.len()
        );
    }
    let found = cluster.find("u21").await.unwrap();
    assert_eq!(found.value, vec![(c.server().instance_id(), 1)]);
    assert!(cluster.find("nobody").await.unwrap().value.is_empty());

    // Remote operations on connections held by other instances, seen by their clients.
    let joined = cluster.join_room("u10", NS, "vip").await.unwrap();
    assert_eq!(joined.applied, vec![(b.server().instance_id(), 1)]);
    let u10 = clients["u10"].namespace(NS).unwrap();
    assert!(u10.room("vip").is_some(), "u10 was made to join vip");
    assert_eq!(cluster.room_count(NS, "vip").await.unwrap().value, 1);
    let left = cluster.leave_room("u10", NS, "vip").await.unwrap();
    assert_eq!(left.connections(), 1);
    assert!(u10.room("vip").is_none());
    let refused = cluster.leave_room("u10", NS, "vip").await.unwrap();
    assert_eq!(refused.failed.len(), 1, "{refused:?}");
    let nowhere = cluster.disconnect("nobody", "bye").await.unwrap();
    assert!(nowhere.nowhere(), "{nowhere:?}");
    let kicked = cluster.disconnect("u22", "kicked").await.unwrap();
    assert_eq!(kicked.applied, vec![(c.server().instance_id(), 1)]);
    tokio::time::timeout(T, clients["u22"].closed())
        .await
        .unwrap();
    until("u22 gone everywhere", async || {
        cluster.count(NS).await.unwrap().value == 8
    })
    .await;

    // Ask to an ID nobody holds fails at once, not after its timeout.
    let probe = cluster.find("nobody").await.unwrap();
    assert!(probe.is_complete() && probe.value.is_empty(), "{probe:?}");
    let started = Instant::now();
    let err = a
        .server()
        .ask("nobody", Message::new(NS, "q", "?"), Duration::from_secs(5))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::UnknownConnection, "{err}");
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );

    // c dies (its exchange goes away): queries right after list it as missing, by the
    // deadline; after its lease, only a and b answer and c's members left exactly once.
    let c_id = c.server().instance_id();
    let c_members: BTreeSet<String> = ["u20", "u21"].map(String::from).into();
    c.cut.store(true, Ordering::Release);
    let started = Instant::now();
    let partial = cluster.count(NS).await.unwrap();
    assert!(started.elapsed() < Duration::from_millis(400));
    assert_eq!(partial.missing, vec![c_id]);
    assert_eq!(partial.value, 6);
    // With an instance missing, an Ask to an unknown ID waits for its timeout.
    let err = a
        .server()
        .ask(
            "nobody",
            Message::new(NS, "q", "?"),
            Duration::from_millis(300),
        )
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::Timeout, "{err}");
    until("c expired", async || {
        a.server().cluster().instances().len() == 2 && b.server().cluster().instances().len() == 2
    })
    .await;
    let after = cluster.count(NS).await.unwrap();
    assert!(after.is_complete());
    assert_eq!(after.value, 6);
    for at in [&a, &b] {
        until("expired leaves delivered", async || {
            at.log.lock().iter().filter(|e| e.expired).count() >= 4
        })
        .await;
        let log = at.log.lock();
        let leaves: Vec<&PresenceEvent> = log.iter().filter(|e| e.expired).collect();
        let mut per_member: HashMap<(String, Option<String>), usize> = HashMap::new();
        for e in &leaves {
            assert_eq!(e.kind, PresenceKind::Left);
            assert_eq!(e.instance, c_id);
            *per_member
                .entry((e.id.clone(), e.room.clone()))
                .or_default() += 1;
        }
        // u20 (room r0) and u21 (room r1): one namespace leave and one room leave each.
        assert_eq!(per_member.len(), 4, "{per_member:?}");
        assert!(per_member.values().all(|n| *n == 1), "{per_member:?}");
        assert!(leaves.iter().all(|e| c_members.contains(&e.id)));
        let reporters: BTreeSet<_> = leaves.iter().map(|e| e.reported_by).collect();
        assert_eq!(reporters.len(), 1, "one survivor reports");
        // Every live join was seen: 9 namespace joins, 9 room joins (and vip).
        let joins = log
            .iter()
            .filter(|e| e.kind == PresenceKind::Joined && e.room.is_none())
            .count();
        assert_eq!(joins, 9);
    }
}

/// Instances chained over two buses (as during a Redis → NATS migration) answer once each;
/// the query rate limit refuses a burst beyond it; a shut-down instance leaves the live set
/// at once, not after its lease.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn chained_buses_rate_limit_and_goodbye() {
    let (one, two) = (MemoryExchange::new(), MemoryExchange::new());
    let mut servers = Vec::new();
    for label in ["a", "b", "c"] {
        let config = ClusterConfig::default()
            .heartbeat(Duration::from_millis(100), Duration::from_secs(5))
            .rate_limits(5, 10_000)
            .label(label);
        let server = Server::builder(Namespaces::new().namespace(NS, Events::new()))
            .cluster(config)
            .exchange(one.clone())
            .exchange(two.clone())
            .build();
        servers.push(serve(server).await.unwrap());
    }
    for s in &servers {
        until("three instances, settled", async || {
            let cluster = s.server.cluster();
            cluster.instances().len() == 3 && cluster.stats().settled
        })
        .await;
    }
    let mut clients = Vec::new();
    for s in &servers {
        let client = Client::builder(s.url())
            .namespaces(Namespaces::new().namespace(NS, Events::new()))
            .connect()
            .await
            .unwrap();
        client.connect(NS).await.unwrap();
        clients.push(client);
    }
    let cluster = servers[0].server.cluster();
    let count = cluster.count(NS).await.unwrap();
    assert_eq!((count.value, count.answered.len()), (3, 3), "{count:?}");
    assert!(count.is_complete());

    // 5 per second: a burst of 20 is refused beyond the bucket.
    let mut refused = 0;
    for _ in 0..20 {
        match cluster.count(NS).await {
            Ok(_) => {}
            Err(e) => {
                assert_eq!(e.kind(), neffos::ClusterErrorKind::RateLimited, "{e}");
                refused += 1;
            }
        }
    }
    assert!(refused >= 10, "{refused} of 20 refused");

    let started = Instant::now();
    servers[2].server.shutdown(Duration::from_secs(1)).await;
    until("c gone", async || cluster.instances().len() == 2).await;
    assert!(
        started.elapsed() < Duration::from_secs(3),
        "gone at once, not after the 5 s lease: {:?}",
        started.elapsed()
    );
}
