//! A 3-node NATS cluster (routes, started by the test harness): instances connect to
//! different seed nodes, each with the full URL list. The exchange conformance suite runs
//! unchanged on it; `kill -9` of the node an instance is connected to (publisher side, then
//! subscriber side) and a node restart happen while a broadcast flows every 5 ms: delivery
//! and `Server::ask` resume, per-sender order holds, nothing arrives twice, and the gap and
//! the time to resume are measured and printed.
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neffos::testkit::broker_cluster::NatsCluster;
use neffos::testkit::numbered::{self, Numbered};
use neffos::testkit::{TestServer, eventually};
use neffos::{Exchange, Message, Target};
use neffos_nats::{ConnectOptions, NatsExchange};
use support::{MakeFuture, Recorder, WAIT, instance, settle};

/// An exchange connected to the cluster with node `seed` tried first (the full list,
/// in order, for reconnections).
async fn exchange(cluster: &NatsCluster, seed: usize, prefix: &str) -> Arc<NatsExchange> {
    Arc::new(
        NatsExchange::builder(cluster.urls_from(seed))
            .prefix(prefix)
            .options(ConnectOptions::new().name("neffos").retain_servers_order())
            .connect()
            .await
            .expect("connect to the test cluster"),
    )
}

/// A fresh cluster for this test and a factory of exchanges on it, the n-th seeded with
/// node `n mod 3`. The factory owns the cluster: it runs as long as a scenario holds it.
fn nats_cluster() -> impl Fn() -> MakeFuture {
    let cluster = Arc::new(NatsCluster::start());
    let next = Arc::new(AtomicUsize::new(0));
    move || {
        let cluster = cluster.clone();
        let seed = next.fetch_add(1, Ordering::Relaxed) % cluster.len();
        Box::pin(async move {
            let exchange = exchange(&cluster, seed, "conformance").await;
            exchange as Arc<dyn Exchange>
        })
    }
}

neffos::conformance_tests!(nats_cluster());

fn reconnects(exchanges: &[&Arc<NatsExchange>]) -> u64 {
    exchanges.iter().map(|x| x.stats().reconnects).sum()
}

/// Streams from instance A (seeded on node 0) to instance B (seeded on node 1); kills the
/// node each is connected to in turn, then restarts them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_an_instances_node_moves_it_to_another() {
    neffos::testkit::watch_panics();
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let cluster = Arc::new(NatsCluster::start());
    let xa = exchange(&cluster, 0, "kill").await;
    let xb = exchange(&cluster, 1, "kill").await;
    let a: TestServer = instance(&["chat"], xa.clone()).await;
    let b: TestServer = instance(&["chat"], xb.clone()).await;
    assert_eq!(cluster.connections(0), 1, "A is on node 0");
    assert_eq!(cluster.connections(1), 1, "B is on node 1");
    let mut ra = Recorder::connect(&a.url(), "chat", "alice").await;
    let _rb = Recorder::connect(&b.url(), "chat", "bob").await;
    let (_seq_client, mut stream) = Numbered::connect(&b.url(), "chat", "seq").await;
    settle(&[&a, &b]).await;
    let sender = numbered::stream(
        a.server.clone(),
        Target::namespace("chat").except_id("alice"),
        "seq",
        Duration::from_millis(5),
    );
    stream.until(50, Instant::now()).await;

    // Publisher side: the node A is connected to dies.
    let killed = Instant::now();
    cluster.node(0).kill();
    let publisher = stream.until(stream.last().unwrap_or(0) + 100, killed).await;
    assert_eq!(cluster.connections(1) + cluster.connections(2), 2);
    // Server::ask across instances works again, both ways.
    let reply = b
        .server
        .ask("alice", Message::new("chat", "question", "q1"), WAIT)
        .await
        .expect("B asks alice on A");
    assert_eq!(&reply.body[..], b"answer:alice:q1");
    let reply = a
        .server
        .ask("bob", Message::new("chat", "question", "q2"), WAIT)
        .await
        .expect("A asks bob on B");
    assert_eq!(&reply.body[..], b"answer:bob:q2");

    // Subscriber side: the node B is connected to dies.
    let killed = Instant::now();
    cluster.node(1).kill();
    let subscriber = stream.until(stream.last().unwrap_or(0) + 100, killed).await;
    assert_eq!(cluster.connections(2), 2, "both instances on the last node");

    // Restarts: the nodes rejoin, nothing is lost or duplicated meanwhile. The harness
    // blocks (process start, route polling): off the runtime's two workers, which keep
    // serving the instances and the clients meanwhile.
    let (sent_before, reconnects_before) = (xa.stats().publish_errors, reconnects(&[&xa, &xb]));
    let restarted = Instant::now();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || {
        c.node(0).restart();
        c.node(1).restart();
        c.wait_routes();
    })
    .await
    .unwrap();
    let restart = stream
        .until(stream.last().unwrap_or(0) + 100, restarted)
        .await;
    // Losses here would be counted: dropped publishes (A) or a reconnection (A or B).
    let idle_restart_counters = (
        xa.stats().publish_errors - sent_before,
        reconnects(&[&xa, &xb]) - reconnects_before,
    );
    let reply = b
        .server
        .ask("alice", Message::new("chat", "question", "q3"), WAIT)
        .await
        .expect("B asks alice after the restarts");
    assert_eq!(&reply.body[..], b"answer:alice:q3");

    // Restart of the node both instances are on now: both move to the other two.
    let restarted = Instant::now();
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.node(2).restart())
        .await
        .unwrap();
    let both = stream
        .until(stream.last().unwrap_or(0) + 100, restarted)
        .await;
    let c = cluster.clone();
    tokio::task::spawn_blocking(move || c.wait_routes())
        .await
        .unwrap();
    let reply = a
        .server
        .ask("bob", Message::new("chat", "question", "q4"), WAIT)
        .await
        .expect("A asks bob after its node restarted");
    assert_eq!(&reply.body[..], b"answer:bob:q4");
    sender.abort();
    println!(
        "NATS cluster, kill -9 of the publisher's node: {} messages lost, delivery resumed {:?} after the kill; \
         of the subscriber's node: {} lost, resumed {:?} after; restarts of idle nodes: {} lost; \
         restart of both instances' node: {} lost, resumed {:?} after the restart began",
        publisher.missing,
        publisher.resumed_after,
        subscriber.missing,
        subscriber.resumed_after,
        restart.missing,
        both.missing,
        both.resumed_after,
    );
    assert_eq!(
        restart.missing, 0,
        "restarting idle nodes loses nothing (meanwhile: A's dropped publishes, reconnections: {idle_restart_counters:?})"
    );
    // The other nodes accept connections all along: delivery resumes within the target
    // (300 ms after the broker accepts connections again) counted from the kill.
    for outage in [&publisher, &subscriber, &both] {
        assert!(
            outage.resumed_after <= Duration::from_millis(300),
            "resumed after {:?}",
            outage.resumed_after
        );
    }
    // The losses are counted where they happened, and the reconnections.
    assert!(eventually(WAIT, || xa.stats().reconnects >= 1).await);
    assert!(eventually(WAIT, || xb.stats().reconnects >= 1).await);
    ra.expect_nothing();
    assert_eq!(neffos::testkit::panics(), 0);
}
