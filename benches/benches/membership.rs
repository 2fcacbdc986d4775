//! Join and leave latency while broadcasts go to a large room (issue 13 §2): a member
//! that joins and leaves room "big" of 10,000 members, one request at a time, measured
//! from sending `_OnRoomJoin` / `_OnRoomLeave` to reading the server's answer; idle, then
//! while a sender thread offers 1,000 broadcasts/s to that room.
//!
//! The members are in-process connections (`neffos::testkit::local`) that stop reading
//! after they joined: their writers wait, their queues stay full and every broadcast is
//! dropped for them (`SlowConsumerPolicy::DropMessage`), so a broadcast costs the server
//! its fan-out over the index and not 10,000 socket writes this machine could not do 1,000
//! times a second. Besides criterion's estimate, each group prints the p50/p99 of single
//! requests and the broadcast rate achieved.
#![allow(missing_docs, clippy::unwrap_used, clippy::print_stderr)]

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use neffos::testkit::local::{self, LocalPeer};
use neffos::{Config, Events, Message, Namespaces, Server, SlowConsumerPolicy, Target};

const MEMBERS: usize = 10_000;
const BROADCASTS_PER_SECOND: u64 = 1_000;

/// Sends `request` (a frame with wait token `wait`) and reads until its answer.
async fn request(peer: &mut LocalPeer, wait: &str, request: &str) {
    assert!(peer.send_text(request));
    let prefix = format!("{wait};");
    loop {
        let frame = peer.recv().await.expect("server closed the connection");
        if frame.starts_with(prefix.as_bytes()) {
            return;
        }
    }
}

/// A peer past the handshake, connected to namespace "chat".
async fn connected(server: &Server, capacity: usize) -> LocalPeer {
    let mut peer = local::connect(server, capacity);
    assert!(peer.send_text("M"));
    let ack = peer.recv().await.unwrap();
    assert_eq!(ack.first(), Some(&b'A'), "handshake refused");
    request(&mut peer, "$1", "$1;chat;;_OnNamespaceConnect;0;0;").await;
    peer
}

struct Sender {
    stop: Arc<AtomicBool>,
    sent: Arc<AtomicU64>,
    /// Nanoseconds spent inside `broadcast`.
    busy: Arc<AtomicU64>,
    thread: Option<std::thread::JoinHandle<()>>,
    started: Instant,
}

impl Sender {
    /// Offers `rate` broadcasts/s to room "big" from its own thread (open loop: a late
    /// broadcast is sent at once, none is skipped).
    fn start(server: Server, rate: u64) -> Sender {
        let stop = Arc::new(AtomicBool::new(false));
        let sent = Arc::new(AtomicU64::new(0));
        let busy = Arc::new(AtomicU64::new(0));
        let (stop2, sent2, busy2) = (stop.clone(), sent.clone(), busy.clone());
        let started = Instant::now();
        let thread = std::thread::spawn(move || {
            let msg = Message::new("", "chat", "x".repeat(64));
            let every = Duration::from_nanos(1_000_000_000 / rate);
            let mut due = Instant::now();
            while !stop2.load(Ordering::Relaxed) {
                let start = Instant::now();
                server
                    .broadcast(Target::room("chat", "big"), msg.clone())
                    .unwrap();
                busy2.fetch_add(start.elapsed().as_nanos() as u64, Ordering::Relaxed);
                sent2.fetch_add(1, Ordering::Relaxed);
                due += every;
                if let Some(wait) = due.checked_duration_since(Instant::now()) {
                    std::thread::sleep(wait);
                }
            }
        });
        Sender {
            stop,
            sent,
            busy,
            thread: Some(thread),
            started,
        }
    }

    /// Broadcasts per second so far, and the mean time one took.
    fn rate(&self) -> (f64, Duration) {
        let sent = self.sent.load(Ordering::Relaxed);
        let busy = Duration::from_nanos(self.busy.load(Ordering::Relaxed) / sent.max(1));
        (sent as f64 / self.started.elapsed().as_secs_f64(), busy)
    }
}

impl Drop for Sender {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn membership(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .config(
            Config::default()
                .outbound_queue(4)
                .slow_consumer(SlowConsumerPolicy::DropMessage)
                .ping_interval(None)
                .idle_timeout(None),
        )
        .build();
    let (members, joiner) = rt.block_on(async {
        let mut members = Vec::with_capacity(MEMBERS);
        for _ in 0..MEMBERS {
            let mut peer = connected(&server, 1).await;
            request(&mut peer, "$2", "$2;chat;big;_OnRoomJoin;0;0;").await;
            members.push(peer);
        }
        (members, connected(&server, 1024).await)
    });
    assert_eq!(server.connection_count(), MEMBERS + 1);
    let joiner = tokio::sync::Mutex::new(joiner);

    let mut group = c.benchmark_group("join_leave_10000_member_room");
    group.measurement_time(Duration::from_secs(5));
    for loaded in [false, true] {
        let sender = loaded.then(|| Sender::start(server.clone(), BROADCASTS_PER_SECOND));
        let samples = parking_lot::Mutex::new(Vec::new());
        let name = if loaded {
            "under_1000_broadcasts_per_s"
        } else {
            "idle"
        };
        group.bench_function(name, |b| {
            b.to_async(&rt).iter_custom(|iters| {
                let (joiner, samples) = (&joiner, &samples);
                async move {
                    let mut joiner = joiner.lock().await;
                    let joiner = &mut *joiner;
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let start = Instant::now();
                        request(joiner, "$3", "$3;chat;big;_OnRoomJoin;0;0;").await;
                        let joined = start.elapsed();
                        let start = Instant::now();
                        request(joiner, "$4", "$4;chat;big;_OnRoomLeave;0;0;").await;
                        let left = start.elapsed();
                        samples.lock().extend([joined, left]);
                        total += joined + left;
                    }
                    total
                }
            });
        });
        let mut samples = samples.into_inner();
        samples.sort_unstable();
        eprintln!(
            "{name}: {} join/leave requests, p50 {:?}, p99 {:?}, max {:?}{}",
            samples.len(),
            percentile(&samples, 0.50),
            percentile(&samples, 0.99),
            samples.last().copied().unwrap_or_default(),
            sender
                .as_ref()
                .map(|s| {
                    let (rate, took) = s.rate();
                    format!(", {rate:.0} broadcasts/s achieved, {took:?} each")
                })
                .unwrap_or_default(),
        );
    }
    group.finish();
    let stats = server.stats();
    assert_eq!(
        stats.connections,
        MEMBERS + 1,
        "members were closed: {stats:?}"
    );
    drop(members);
}

criterion_group!(benches, membership);
criterion_main!(benches);
