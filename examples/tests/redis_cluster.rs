//! Three OS processes of the `scale-out` example joined through a real Redis Cluster
//! (`--exchange redis-cluster`, 3 masters + 3 replicas started by the harness), a Rust chat
//! user on each. The user on process 1 sends a numbered chat message every 10 ms while the
//! harness fails over the master serving the chat namespace's channel (`CLUSTER FAILOVER`),
//! then kills its new master (kill -9): the users on processes 2 and 3 receive the numbers
//! in increasing order, never twice, and delivery resumes after each change.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

mod support;

use std::sync::Arc;
use std::time::{Duration, Instant};

use neffos::testkit::broker_cluster::RedisCluster;
use neffos::testkit::numbered::Numbered;
use neffos::{Client, Events, Message, Namespaces, NsConn};
use support::ScaleOut;
use tokio::sync::mpsc;

/// A chat user whose received chat texts that are numbers are checked by a [`Numbered`].
async fn user(url: &str, name: &str) -> (Client, Numbered) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("chat", move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            let body: serde_json::Value = serde_json::from_slice(&msg.body).unwrap_or_default();
            if let Some(n) = body["text"].as_str().and_then(|t| t.parse().ok()) {
                let _ = tx.send((n, Instant::now()));
            }
        }
    });
    let client = Client::builder(url)
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace("default", events))
        .connect()
        .await
        .unwrap();
    client.connect("default").await.unwrap();
    (client, Numbered::new(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_keep_order_through_failover_and_master_kill() {
    let cluster = Arc::new(RedisCluster::start());
    let seeds = cluster.urls().join(",");
    let args = ["--exchange", "redis-cluster", "--redis-url", seeds.as_str()].map(String::from);
    let processes: Vec<ScaleOut> = (0..3).map(|_| ScaleOut::start(&args)).collect();
    let (sender, _rx1) = user(&processes[0].ws(), "sender").await;
    let (_c2, rx2) = user(&processes[1].ws(), "two").await;
    let (_c3, rx3) = user(&processes[2].ws(), "three").await;
    let ns = sender.namespace("default").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let _ = ns.emit("chat", n.to_string());
                n += 1;
            }
        })
    };
    let mut seen = [rx2, rx3];
    // The other processes subscribe asynchronously: wait for the stream to flow.
    for s in &mut seen {
        s.until(30, Instant::now()).await;
    }
    let slot = cluster.key_slot("neffos:ns:7:default");
    for step in ["CLUSTER FAILOVER", "kill -9 of the master"] {
        let owner = cluster.master_of_slot(slot);
        let changed = Instant::now();
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || {
            if step == "CLUSTER FAILOVER" {
                c.failover(c.replica_of(owner).unwrap());
            } else {
                c.node(owner).kill();
                c.wait_healthy();
            }
        })
        .await
        .unwrap();
        assert_ne!(cluster.master_of_slot(slot), owner);
        let mut report = Vec::new();
        for s in &mut seen {
            let target = s.last().unwrap_or(0) + 100;
            report.push(s.until(target, changed).await);
        }
        println!(
            "scale-out processes on Redis Cluster, {step}: healed and 100 more delivered after {:?}; per receiver {report:?}",
            changed.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stream.await.unwrap();
}
