//! In-process broadcast fan-out: one broadcast to 1,000 connected WebSocket clients on
//! loopback, measured until every client has read it (encode, queue, write, read); then
//! the same with one extra client that never reads (a slow consumer), whose cost on the
//! others is the ratio of the two groups.
//!
//! At most [`WINDOW`] broadcasts are in flight (not yet read by every client): a sender
//! that ran ahead by a whole warm-up batch overflowed the clients' budgets, they were
//! closed, and the bench waited forever for frames that would never come. Waits are
//! bounded and say why they gave up.
#![allow(missing_docs, clippy::unwrap_used)]

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use futures_util::{SinkExt, StreamExt};
use neffos::testkit::{TestServer, serve};
use neffos::{Config, Events, Message, Namespaces, Server, Target};
use tokio::sync::Notify;
use tokio_tungstenite::tungstenite::Message as Ws;

/// Broadcasts sent but not yet read by every client, at most.
const WINDOW: u64 = 32;
/// A wait for the clients longer than this is a failure, not a slow run.
const STALL: Duration = Duration::from_secs(30);

const CLIENTS: u64 = 1000;

struct Fixture {
    ts: TestServer,
    received: Arc<AtomicU64>,
    target: Arc<AtomicU64>,
    done: Arc<Notify>,
    /// Reading clients whose connection ended.
    closed: Arc<AtomicU64>,
}

impl Fixture {
    /// Waits until the clients have read `count` frames in all.
    async fn wait_for(&self, count: u64) {
        loop {
            let notified = self.done.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            self.target.store(count, Ordering::SeqCst);
            let received = self.received.load(Ordering::SeqCst);
            if received >= count {
                return;
            }
            let closed = self.closed.load(Ordering::SeqCst);
            assert_eq!(closed, 0, "{closed} reading clients were closed");
            if tokio::time::timeout(STALL, notified).await.is_err() {
                panic!(
                    "clients read {received} of {count} frames in {STALL:?}; stats {:?}",
                    self.ts.server.stats()
                );
            }
        }
    }
}

async fn setup(stuck: bool) -> Fixture {
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .config(Config::default().outbound_queue(1024))
        .build();
    let ts = serve(server).await.unwrap();
    let received = Arc::new(AtomicU64::new(0));
    let target = Arc::new(AtomicU64::new(u64::MAX));
    let done = Arc::new(Notify::new());
    let closed = Arc::new(AtomicU64::new(0));
    if stuck {
        // One more client that completes the handshake, then never reads again: its
        // socket buffers fill, its queue fills, and the server closes it as a slow
        // consumer. The others must not slow down.
        let (mut ws, _) = tokio_tungstenite::connect_async(ts.url()).await.unwrap();
        ws.send(Ws::text("M")).await.unwrap();
        let _ack = ws.next().await.unwrap().unwrap();
        ws.send(Ws::text("$1;chat;;_OnNamespaceConnect;0;0;"))
            .await
            .unwrap();
        let _ok = ws.next().await.unwrap().unwrap();
        std::mem::forget(ws);
    }
    for _ in 0..CLIENTS {
        let (mut ws, _) = tokio_tungstenite::connect_async(ts.url()).await.unwrap();
        ws.send(Ws::text("M")).await.unwrap();
        let _ack = ws.next().await.unwrap().unwrap();
        ws.send(Ws::text("$1;chat;;_OnNamespaceConnect;0;0;"))
            .await
            .unwrap();
        let _ok = ws.next().await.unwrap().unwrap();
        let (received, target, done, closed) = (
            received.clone(),
            target.clone(),
            done.clone(),
            closed.clone(),
        );
        tokio::spawn(async move {
            while let Some(Ok(frame)) = ws.next().await {
                if matches!(frame, Ws::Text(_)) {
                    let n = received.fetch_add(1, Ordering::SeqCst) + 1;
                    if n == target.load(Ordering::SeqCst) {
                        done.notify_waiters();
                    }
                }
            }
            closed.fetch_add(1, Ordering::SeqCst);
            done.notify_waiters();
        });
    }
    Fixture {
        ts,
        received,
        target,
        done,
        closed,
    }
}

fn fanout(c: &mut Criterion) {
    run(c, "fanout_1000_clients", false);
    run(c, "fanout_1000_clients_plus_one_stuck", true);
}

fn run(c: &mut Criterion, name: &str, stuck: bool) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let fx = rt.block_on(setup(stuck));
    let mut group = c.benchmark_group(name);
    group.throughput(Throughput::Elements(CLIENTS));
    group.measurement_time(Duration::from_secs(5));
    for size in [64usize, 1024] {
        let msg = Message::new("", "chat", "x".repeat(size));
        group.bench_function(format!("broadcast_{size}B"), |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let msg = msg.clone();
                let fx = &fx;
                async move {
                    let start_count = fx.received.load(Ordering::SeqCst);
                    let start = Instant::now();
                    for i in 0..iters {
                        if i >= WINDOW {
                            fx.wait_for(start_count + (i - WINDOW) * CLIENTS).await;
                        }
                        fx.ts
                            .server
                            .broadcast(Target::namespace("chat"), msg.clone())
                            .unwrap();
                        // Give the writers a chance between broadcasts, as a real sender would.
                        tokio::task::yield_now().await;
                    }
                    fx.wait_for(start_count + iters * CLIENTS).await;
                    start.elapsed()
                }
            });
        });
    }
    group.finish();
    // Only the stuck client may have been closed.
    assert_eq!(
        fx.closed.load(Ordering::SeqCst),
        0,
        "the bench must not drop clients"
    );
}

criterion_group!(benches, fanout);
criterion_main!(benches);
