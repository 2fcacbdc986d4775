//! Cross-instance fan-out through a Redis Cluster of 1 shard and of 3 shards, in the same
//! run: instance A broadcasts round-robin over `NAMESPACES` namespaces, instance B (one
//! local client in each) receives through its `RedisClusterExchange`. Rate = envelopes B
//! received per second, with at most `WINDOW` outstanding (sustained, bounded queues).
//! Also per master: its CPU time during the run (`/proc/<pid>/stat`), busiest ÷ quietest;
//! and one hot namespace on 3 shards (a namespace is one channel, so one shard).
//!
//! `cargo bench -p neffos-redis --features cluster --bench shards` (needs `redis-server`,
//! `redis-cli`). `NEFFOS_BENCH_SECS` sets each run's length (default 3).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::time::{Duration, Instant};

use neffos::testkit::broker_cluster::RedisCluster;
use neffos::testkit::{TestServer, serve};
use neffos::{Client, Events, Message, Namespaces, Server, Target};
use neffos_redis::RedisClusterExchange;

const NAMESPACES: usize = 30;
const WINDOW: u64 = 2048;

/// CPU time (user + system) of process `pid`, from `/proc/<pid>/stat`.
fn cpu(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the `(comm)`; utime and stime are the 14th and 15th of the line.
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or_default();
    let fields: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = fields
        .get(11)
        .and_then(|u| u.parse::<u64>().ok())
        .unwrap_or(0)
        + fields
            .get(12)
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

struct Run {
    rate: f64,
    cpu_per_master: Vec<Duration>,
}

async fn instance(cluster: &RedisCluster, names: &[String]) -> TestServer {
    let mut ns = Namespaces::new();
    for n in names {
        ns = ns.namespace(n.as_str(), Events::new());
    }
    let exchange = RedisClusterExchange::builder(cluster.urls())
        .prefix("bench")
        .connect()
        .await
        .unwrap();
    serve(Server::builder(ns).exchange(exchange).build())
        .await
        .unwrap()
}

async fn run(shards: usize, namespaces: usize, secs: f64) -> Run {
    let cluster = RedisCluster::start_with(shards, &[]);
    let names: Vec<String> = (0..namespaces).map(|i| format!("ns{i}")).collect();
    let a = instance(&cluster, &names).await;
    let b = instance(&cluster, &names).await;
    let mut clients = Vec::new();
    for n in &names {
        let mut ns = Namespaces::new();
        ns = ns.namespace(n.as_str(), Events::new());
        let client: Client = Client::builder(b.url())
            .namespaces(ns)
            .connect()
            .await
            .unwrap();
        client.connect(n).await.unwrap();
        clients.push(client);
    }
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let masters = cluster.masters();
    let pids: Vec<u32> = masters
        .iter()
        .filter_map(|m| cluster.node(*m).pid())
        .collect();
    let cpu_before: Vec<Duration> = pids.iter().map(|p| cpu(*p)).collect();
    let received = || b.server.stats().envelopes_received;
    let start_received = received();
    let started = Instant::now();
    let mut sent = 0u64;
    let body = bytes::Bytes::from("x".repeat(64));
    while started.elapsed().as_secs_f64() < secs {
        if sent - (received() - start_received) >= WINDOW {
            tokio::task::yield_now().await;
            continue;
        }
        let ns = &names[(sent as usize) % names.len()];
        let _ = a.server.broadcast(
            Target::namespace(ns),
            Message::new("", "tick", body.clone()),
        );
        sent += 1;
        if sent.is_multiple_of(64) {
            tokio::task::yield_now().await;
        }
    }
    let elapsed = started.elapsed().as_secs_f64();
    let got = received() - start_received;
    let cpu_per_master = pids
        .iter()
        .zip(&cpu_before)
        .map(|(p, before)| cpu(*p).saturating_sub(*before))
        .collect();
    drop(clients);
    Run {
        rate: got as f64 / elapsed,
        cpu_per_master,
    }
}

fn spread(cpu: &[Duration]) -> String {
    let max = cpu.iter().max().copied().unwrap_or_default();
    let min = cpu.iter().min().copied().unwrap_or_default();
    let ratio = if min.is_zero() {
        f64::INFINITY
    } else {
        max.as_secs_f64() / min.as_secs_f64()
    };
    format!(
        "CPU per master {:?} ms, busiest ÷ quietest {ratio:.2}",
        cpu.iter().map(Duration::as_millis).collect::<Vec<_>>()
    )
}

fn main() {
    let secs: f64 = std::env::var("NEFFOS_BENCH_SECS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(3.0);
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let one = run(1, NAMESPACES, secs).await;
        let three = run(3, NAMESPACES, secs).await;
        let hot = run(3, 1, secs).await;
        println!(
            "cross-instance fan-out, {NAMESPACES} namespaces: 1 shard {:.0}/s ({}); 3 shards {:.0}/s ({}); 3 ÷ 1 = {:.2}",
            one.rate,
            spread(&one.cpu_per_master),
            three.rate,
            spread(&three.cpu_per_master),
            three.rate / one.rate
        );
        println!(
            "one hot namespace on 3 shards: {:.0}/s ({})",
            hot.rate,
            spread(&hot.cpu_per_master)
        );
    });
}
