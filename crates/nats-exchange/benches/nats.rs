//! Cross-instance scale-out through a real `nats-server` on loopback, side by side in one
//! run with its references:
//!
//! - **broadcast**: instance A broadcasts to a namespace whose clients (10 WebSocket
//!   clients) are on instance B; deliveries/s counted when the clients have read them.
//!   References: the same with the in-process `MemoryExchange` (no broker), and raw
//!   `async-nats` publish → subscribe of the same payload size (no neffos).
//! - **ask**: `Server::ask` on instance A to a client on instance B (NATS, the client's
//!   WebSocket round trip, NATS back to A's inbox). Ceiling: `async-nats`'s own
//!   `Client::request` to a responder on the same server. Reference: `MemoryExchange`.
//!
//! Besides criterion's report, the run prints p50/p99 of each round trip and the ratios.
//!
//! Run: `cargo bench -p neffos-nats --bench nats` (needs `nats-server` on `PATH`).
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use criterion::{BenchmarkId, Criterion, Throughput};
use futures_util::StreamExt as _;
use neffos::testkit::broker::NatsServer;
use neffos::testkit::{TestServer, serve};
use neffos::{
    Client, Config, Events, Exchange, MemoryExchange, Message, Namespaces, Reply, Server, Target,
};
use neffos_nats::NatsExchange;
use tokio::sync::Notify;

const NS: &str = "bench";
/// WebSocket clients on instance B receiving each broadcast.
const RECEIVERS: u64 = 10;
/// Broadcasts in flight at most (flow control, so no queue overflows and drops).
const WINDOW: u64 = 256;
/// Round trips sampled for the percentiles.
const LATENCY_SAMPLES: usize = 5_000;
const TIMEOUT: Duration = Duration::from_secs(5);

/// Counts deliveries and wakes the sender when a threshold is reached.
#[derive(Default)]
struct Counter {
    received: AtomicU64,
    wanted: AtomicU64,
    reached: Notify,
}

impl Counter {
    fn hit(&self) {
        let n = self.received.fetch_add(1, Ordering::AcqRel) + 1;
        if n >= self.wanted.load(Ordering::Acquire) {
            self.reached.notify_one();
        }
    }

    async fn wait(&self, n: u64) {
        self.wanted.store(n, Ordering::Release);
        while self.received.load(Ordering::Acquire) < n {
            if tokio::time::timeout(TIMEOUT, self.reached.notified())
                .await
                .is_err()
            {
                panic!(
                    "stalled at {} of {n} deliveries",
                    self.received.load(Ordering::Acquire)
                );
            }
        }
    }
}

/// Two instances sharing one exchange kind, 10 receivers and one responder on B.
struct Pair {
    a: TestServer,
    _b: TestServer,
    counter: Arc<Counter>,
    _clients: Vec<Client>,
}

fn server(exchange: Arc<dyn Exchange>) -> Server {
    // With WINDOW broadcasts in flight to RECEIVERS clients, one client may lag by at most
    // WINDOW * RECEIVERS frames: the outbound queue must hold them (no slow-consumer close).
    Server::builder(Namespaces::new().namespace(NS, Events::new()))
        .config(Config::default().outbound_queue(2 * (WINDOW * RECEIVERS) as usize))
        .id_generator(|parts| {
            parts
                .headers
                .get("x-id")
                .and_then(|v| v.to_str().ok())
                .map(str::to_owned)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
        })
        .exchange(exchange)
        .build()
}

async fn pair(a: Arc<dyn Exchange>, b: Arc<dyn Exchange>) -> Pair {
    let a = serve(server(a)).await.unwrap();
    let b = serve(server(b)).await.unwrap();
    let counter = Arc::new(Counter::default());
    let mut clients = Vec::new();
    for i in 0..RECEIVERS {
        let counter = counter.clone();
        let on_news = move |_ns: neffos::NsConn, _msg: Message| {
            counter.hit();
            async {}
        };
        let c = Client::builder(b.url())
            .header("x-id", format!("receiver-{i}"))
            .namespaces(Namespaces::new().namespace(NS, Events::new().on("news", on_news)))
            .connect()
            .await
            .unwrap();
        c.connect(NS).await.unwrap();
        clients.push(c);
    }
    let responder = Client::builder(b.url())
        .header("x-id", "responder")
        .namespaces(Namespaces::new().namespace(
            NS,
            Events::new().on(
                "ping",
                |_ns, msg: Message| async move { Reply::new(msg.body) },
            ),
        ))
        .connect()
        .await
        .unwrap();
    responder.connect(NS).await.unwrap();
    clients.push(responder);
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    Pair {
        a,
        _b: b,
        counter,
        _clients: clients,
    }
}

impl Pair {
    /// Sends `n` broadcasts from A with at most [`WINDOW`] undelivered; returns when the
    /// receivers on B have read them all.
    async fn broadcast(&self, n: u64) -> Duration {
        let base = self.counter.received.load(Ordering::Acquire);
        let start = Instant::now();
        for i in 0..n {
            if i >= WINDOW {
                self.counter.wait(base + (i - WINDOW + 1) * RECEIVERS).await;
            }
            self.a
                .server
                .broadcast(
                    Target::namespace(NS),
                    Message::new("", "news", "0123456789abcdef"),
                )
                .unwrap();
        }
        self.counter.wait(base + n * RECEIVERS).await;
        start.elapsed()
    }

    async fn ask(&self) -> Duration {
        let start = Instant::now();
        let reply = self
            .a
            .server
            .ask(
                "responder",
                Message::new(NS, "ping", "0123456789abcdef"),
                TIMEOUT,
            )
            .await
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!(&reply.body[..], b"0123456789abcdef");
        elapsed
    }
}

/// A raw `async-nats` requester and echo responder, and a raw publisher → subscriber.
struct Raw {
    requester: async_nats::Client,
    publisher: async_nats::Client,
    counter: Arc<Counter>,
}

async fn raw(url: &str) -> Raw {
    let responder = async_nats::connect(url).await.unwrap();
    let mut echo = responder.subscribe("ceiling.echo").await.unwrap();
    tokio::spawn(async move {
        while let Some(msg) = echo.next().await {
            if let Some(reply) = msg.reply {
                responder.publish(reply, msg.payload).await.unwrap();
            }
        }
    });
    let subscriber = async_nats::connect(url).await.unwrap();
    let mut sub = subscriber.subscribe("ceiling.stream").await.unwrap();
    let counter = Arc::new(Counter::default());
    let c = counter.clone();
    tokio::spawn(async move {
        let _keep = subscriber;
        while sub.next().await.is_some() {
            c.hit();
        }
    });
    let requester = async_nats::connect(url).await.unwrap();
    let publisher = async_nats::connect(url).await.unwrap();
    requester.flush().await.unwrap();
    // Make sure both subscriptions are in place (a round trip through the server).
    let _ = requester
        .request("ceiling.echo", Bytes::from_static(b"warm"))
        .await
        .unwrap();
    Raw {
        requester,
        publisher,
        counter,
    }
}

impl Raw {
    async fn request(&self) -> Duration {
        let start = Instant::now();
        let reply = self
            .requester
            .request("ceiling.echo", Bytes::from_static(b"0123456789abcdef"))
            .await
            .unwrap();
        let elapsed = start.elapsed();
        assert_eq!(&reply.payload[..], b"0123456789abcdef");
        elapsed
    }

    /// `n` messages of a broadcast envelope's size, windowed like [`Pair::broadcast`].
    async fn stream(&self, n: u64, payload: &Bytes) -> Duration {
        let base = self.counter.received.load(Ordering::Acquire);
        let start = Instant::now();
        for i in 0..n {
            if i >= WINDOW {
                self.counter.wait(base + i - WINDOW + 1).await;
            }
            self.publisher
                .publish("ceiling.stream", payload.clone())
                .await
                .unwrap();
        }
        self.counter.wait(base + n).await;
        start.elapsed()
    }
}

struct Percentiles {
    p50: Duration,
    p99: Duration,
}

async fn percentiles<F, Fut>(mut round_trip: F) -> Percentiles
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Duration>,
{
    for _ in 0..500 {
        round_trip().await;
    }
    let mut samples = Vec::with_capacity(LATENCY_SAMPLES);
    for _ in 0..LATENCY_SAMPLES {
        samples.push(round_trip().await);
    }
    samples.sort_unstable();
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    Percentiles {
        p50: at(0.50),
        p99: at(0.99),
    }
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

fn main() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let broker = NatsServer::start();
    let url = broker.url();
    let (nats, memory, raw) = rt.block_on(async {
        let nats = pair(
            Arc::new(NatsExchange::connect(&url).await.unwrap()),
            Arc::new(NatsExchange::connect(&url).await.unwrap()),
        )
        .await;
        let bus = MemoryExchange::new();
        let memory = pair(Arc::new(bus.clone()), Arc::new(bus.clone())).await;
        let raw = raw(&url).await;
        (nats, memory, raw)
    });
    // The size of one broadcast envelope as published (for the raw stream).
    let envelope = Bytes::from(vec![b'x'; envelope_size()]);

    let mut c = Criterion::default()
        .sample_size(20)
        .measurement_time(Duration::from_secs(5))
        .warm_up_time(Duration::from_secs(1))
        .configure_from_args();

    const BATCH: u64 = 1_000;
    let mut g = c.benchmark_group("cross_instance_broadcast");
    g.throughput(Throughput::Elements(BATCH * RECEIVERS));
    g.bench_function(BenchmarkId::new("deliveries", "nats"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let nats = &nats;
            async move { nats.broadcast(iters * BATCH).await }
        });
    });
    g.bench_function(BenchmarkId::new("deliveries", "memory"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let memory = &memory;
            async move { memory.broadcast(iters * BATCH).await }
        });
    });
    g.throughput(Throughput::Elements(BATCH));
    g.bench_function(BenchmarkId::new("messages", "raw_async_nats"), |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let (raw, envelope) = (&raw, &envelope);
            async move { raw.stream(iters * BATCH, envelope).await }
        });
    });
    g.finish();

    let mut g = c.benchmark_group("cross_instance_ask");
    g.bench_function("nats", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let nats = &nats;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += nats.ask().await;
                }
                total
            }
        });
    });
    g.bench_function("memory", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let memory = &memory;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += memory.ask().await;
                }
                total
            }
        });
    });
    g.bench_function("raw_async_nats_request", |b| {
        b.to_async(&rt).iter_custom(|iters| {
            let raw = &raw;
            async move {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += raw.request().await;
                }
                total
            }
        });
    });
    g.finish();

    // Side by side, same run: percentiles and throughput ratios.
    rt.block_on(async {
        let ask_nats = percentiles(|| nats.ask()).await;
        let ask_raw = percentiles(|| raw.request()).await;
        let ask_memory = percentiles(|| memory.ask()).await;
        let n = 20_000;
        let t_nats = nats.broadcast(n).await;
        let t_memory = memory.broadcast(n).await;
        let t_raw = raw.stream(n, &envelope).await;
        let rate = |t: Duration, per: u64| (n * per) as f64 / t.as_secs_f64();
        let (d_nats, d_memory, m_raw) = (
            rate(t_nats, RECEIVERS),
            rate(t_memory, RECEIVERS),
            rate(t_raw, 1),
        );
        println!();
        println!("== neffos-nats, {n} broadcasts to {RECEIVERS} clients on the other instance ==");
        println!(
            "broadcast deliveries/s: nats {d_nats:.0} ({:.0} broadcasts/s), memory {d_memory:.0}; nats/memory = {:.2}",
            d_nats / RECEIVERS as f64,
            d_nats / d_memory
        );
        println!(
            "raw async-nats pub->sub of a {}-byte envelope: {m_raw:.0} msgs/s; neffos-nats broadcasts/s / raw = {:.2}, deliveries/s / raw = {:.2}",
            envelope.len(),
            d_nats / RECEIVERS as f64 / m_raw,
            d_nats / m_raw
        );
        println!("== round trips, {LATENCY_SAMPLES} sequential samples ==");
        for (name, p) in [
            ("Server::ask via NATS", &ask_nats),
            ("Server::ask via MemoryExchange", &ask_memory),
            ("async-nats request/reply (ceiling)", &ask_raw),
        ] {
            println!(
                "{name:<36} p50 {:>8.1} us   p99 {:>8.1} us",
                us(p.p50),
                us(p.p99)
            );
        }
        println!(
            "ask via NATS / NATS request ceiling: p50 x{:.2}, p99 x{:.2}",
            us(ask_nats.p50) / us(ask_raw.p50),
            us(ask_nats.p99) / us(ask_raw.p99)
        );
    });
    c.final_summary();
    drop(rt);
    drop(broker);
}

/// The encoded size of the bench's broadcast envelope.
fn envelope_size() -> usize {
    let msg = Message::new(NS, "news", "0123456789abcdef");
    let env = neffos::protocol::Envelope::new(
        uuid::Uuid::new_v4(),
        1,
        neffos::protocol::EnvelopeKind::Broadcast,
        neffos::protocol::EnvelopeTarget::namespace(NS),
        &msg,
    );
    env.encode().map(|b| b.len()).unwrap_or(64)
}
