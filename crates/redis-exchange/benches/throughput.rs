//! Cross-instance broadcast throughput through Redis, and the broker's own ceiling.
//!
//! Two neffos servers on one `redis-server` (started by the test harness): instance A
//! broadcasts to a namespace, a WebSocket client of instance B receives. One delivery =
//! one broadcast published by A's exchange, received by B's exchange, decoded and written
//! by B, read by B's client. At most `WINDOW` deliveries are outstanding, so queues stay
//! bounded and what is measured is the sustained rate.
//!
//! After the criterion group, the same run measures `redis-benchmark` `PUBLISH` (payload
//! of the size of one of our envelopes, one subscriber on the channel) on the same broker
//! and prints both rates and their ratio.
//!
//! `cargo bench -p neffos-redis --bench throughput` (needs `redis-server`, `redis-benchmark`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, SamplingMode, Throughput};
use neffos::testkit::broker::RedisServer;
use neffos::testkit::{TestServer, serve};
use neffos::{Client, Config, Events, Message, Namespaces, Server, Target};
use neffos_redis::RedisExchange;
use tokio::runtime::Runtime;
use tokio::sync::Notify;

const NS: &str = "bench";
const WINDOW: u64 = 4096;

struct Fixture {
    a: TestServer,
    _b: TestServer,
    _client: Client,
    delivered: Arc<AtomicU64>,
    progress: Arc<Notify>,
    sent: u64,
}

async fn setup(url: &str) -> Fixture {
    let config = Config::default().outbound_queue(1 << 16);
    let mut servers = Vec::new();
    for _ in 0..2 {
        let exchange = RedisExchange::builder(url)
            .prefix("bench")
            .connect()
            .await
            .unwrap();
        let server = Server::builder(Namespaces::new().namespace(NS, Events::new()))
            .config(config.clone())
            .exchange(exchange)
            .build();
        servers.push(serve(server).await.unwrap());
    }
    let delivered = Arc::new(AtomicU64::new(0));
    let progress = Arc::new(Notify::new());
    let (d, p) = (delivered.clone(), progress.clone());
    let client = Client::builder(servers[1].url())
        .config(Config::default().outbound_queue(1 << 16))
        .namespaces(Namespaces::new().namespace(
            NS,
            Events::new().on("tick", move |_ns, _msg: Message| {
                d.fetch_add(1, Ordering::AcqRel);
                p.notify_one();
                async {}
            }),
        ))
        .connect()
        .await
        .unwrap();
    client.connect(NS).await.unwrap();
    for s in &servers {
        s.server.exchange().unwrap().flush().await;
    }
    let _b = servers.pop().unwrap();
    let a = servers.pop().unwrap();
    Fixture {
        a,
        _b,
        _client: client,
        delivered,
        progress,
        sent: 0,
    }
}

impl Fixture {
    /// Broadcasts `n` messages from A and waits until B's client read them all.
    async fn run(&mut self, n: u64) -> Duration {
        let start = Instant::now();
        let target = self.sent + n;
        let msg = Message::new("", "tick", "0123456789abcdef");
        while self.sent < target {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            let delivered = self.delivered.load(Ordering::Acquire);
            if self.sent - delivered < WINDOW {
                let burst = (WINDOW - (self.sent - delivered)).min(target - self.sent);
                for _ in 0..burst {
                    self.a
                        .server
                        .broadcast(Target::namespace(NS), msg.clone())
                        .unwrap();
                }
                self.sent += burst;
            } else {
                wait(&mut progress).await;
            }
        }
        loop {
            let progress = self.progress.notified();
            tokio::pin!(progress);
            progress.as_mut().enable();
            if self.delivered.load(Ordering::Acquire) >= target {
                return start.elapsed();
            }
            wait(&mut progress).await;
        }
    }
}

async fn wait(progress: &mut std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>) {
    if tokio::time::timeout(Duration::from_secs(10), progress.as_mut())
        .await
        .is_err()
    {
        panic!("no delivery for 10 s: messages were lost");
    }
}

/// The payload size of one broadcast envelope on the broker (for a fair ceiling).
async fn envelope_size(url: &str, fixture: &mut Fixture) -> usize {
    let client = redis::Client::open(url).unwrap();
    let mut pubsub = client.get_async_pubsub().await.unwrap();
    pubsub.subscribe("bench:ns:5:bench").await.unwrap();
    fixture.run(1).await;
    let msg = {
        use futures_util::StreamExt;
        tokio::time::timeout(Duration::from_secs(5), pubsub.on_message().next())
            .await
            .unwrap()
            .unwrap()
    };
    msg.get_payload_bytes().len()
}

/// `redis-benchmark … PUBLISH ch <payload>` requests per second, with one subscriber.
fn redis_benchmark(port: u16, payload: usize, pipeline: u32, requests: u32) -> Option<f64> {
    let mut subscriber = Command::new("redis-cli")
        .args(["-p", &port.to_string(), "subscribe", "ceiling"])
        .stdout(Stdio::null())
        .spawn()
        .ok()?;
    let out = Command::new("redis-benchmark")
        .args([
            "-p",
            &port.to_string(),
            "-n",
            &requests.to_string(),
            "-c",
            "50",
            "-P",
            &pipeline.to_string(),
            "--csv",
            "PUBLISH",
            "ceiling",
            &"x".repeat(payload),
        ])
        .output();
    let _ = subscriber.kill();
    let _ = subscriber.wait();
    let out = out.ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // "test","rps",… header, then "PUBLISH ceiling xxx…","123456.78",…
    let line = text.lines().find(|l| l.starts_with("\"PUBLISH"))?;
    line.split("\",\"").nth(1)?.trim_matches('"').parse().ok()
}

fn main() {
    let quick = std::env::args().any(|a| a == "--test");
    let rt = Runtime::new().unwrap();
    let redis = RedisServer::start();
    let url = redis.url();
    let mut fixture = rt.block_on(setup(&url));

    let mut c = Criterion::default().configure_from_args();
    {
        let mut group = c.benchmark_group("redis");
        group
            .sampling_mode(SamplingMode::Flat)
            .sample_size(10)
            .measurement_time(Duration::from_secs(8))
            .throughput(Throughput::Elements(1));
        group.bench_function("cross_instance_broadcast", |b| {
            b.iter_custom(|iters| rt.block_on(fixture.run(iters)));
        });
        group.finish();
    }
    c.final_summary();
    if quick {
        return;
    }

    // Same run, same broker: our rate against redis-benchmark's PUBLISH rate.
    let n = 300_000;
    let ours = n as f64 / rt.block_on(fixture.run(n)).as_secs_f64();
    let payload = rt.block_on(envelope_size(&url, &mut fixture));
    let plain = redis_benchmark(redis.port(), payload, 1, 200_000);
    let pipelined = redis_benchmark(redis.port(), payload, 16, 1_000_000);
    println!(
        "\ncross-instance broadcast deliveries/s through Redis: {ours:.0} (envelope {payload} B)"
    );
    for (label, rate) in [
        ("redis-benchmark PUBLISH, 50 clients, no pipelining", plain),
        (
            "redis-benchmark PUBLISH, 50 clients, pipeline 16",
            pipelined,
        ),
    ] {
        match rate {
            Some(rps) => println!("{label}: {rps:.0}/s; ours / it = {:.2}", ours / rps),
            None => println!("{label}: redis-benchmark unavailable or unparsable"),
        }
    }
}
