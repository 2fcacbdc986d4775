//! Chaos on real brokers and processes: kill -9 the broker in the middle of a steady
//! cross-instance stream and restart it; pause it (SIGSTOP) so it hangs instead of failing;
//! shut an instance down under load. Local delivery never loses anything, cross-instance
//! delivery resumes quickly, nothing hangs, nothing panics, and interest is released.
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Events, Exchange, Message, Namespaces, NsConn, Server, Target};
use neffos_nats::NatsExchange;
use neffos_redis::RedisExchange;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// One broker of either kind, controllable from the test.
enum Broker {
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Broker {
    async fn exchange(&self) -> Arc<dyn Exchange> {
        match self {
            Broker::Redis(r) => Arc::new(
                RedisExchange::builder(r.url())
                    .response_timeout(Duration::from_millis(500))
                    .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
                    .connect()
                    .await
                    .unwrap(),
            ),
            Broker::Nats(n) => Arc::new(NatsExchange::connect(&n.url()).await.unwrap()),
        }
    }
    fn kill(&self) {
        match self {
            Broker::Redis(r) => r.kill(),
            Broker::Nats(n) => n.kill(),
        }
    }
    fn restart(&self) {
        match self {
            Broker::Redis(r) => r.restart(),
            Broker::Nats(n) => n.restart(),
        }
    }
    fn pause(&self) {
        match self {
            Broker::Redis(r) => r.pause(),
            Broker::Nats(n) => n.pause(),
        }
    }
    fn resume(&self) {
        match self {
            Broker::Redis(r) => r.resume(),
            Broker::Nats(n) => n.resume(),
        }
    }
}

async fn instance(broker: &Broker) -> TestServer {
    neffos::testkit::watch_panics();
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .exchange(broker.exchange().await)
        .build();
    serve(server).await.unwrap()
}

/// A client that records the sequence numbers of `seq` events, with arrival times.
async fn recorder(ts: &TestServer) -> (Client, mpsc::UnboundedReceiver<(u64, Instant)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let client = Client::builder(ts.url())
        .namespaces(Namespaces::new().namespace(
            "chat",
            Events::new().on("seq", move |_ns: NsConn, msg: Message| {
                let tx = tx.clone();
                async move {
                    let n = std::str::from_utf8(&msg.body).unwrap().parse().unwrap();
                    let _ = tx.send((n, Instant::now()));
                }
            }),
        ))
        .connect()
        .await
        .unwrap();
    client.connect("chat").await.unwrap();
    (client, rx)
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .unwrap()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap()
}

async fn kill_and_restart_mid_stream(broker: Broker) {
    let a = instance(&broker).await;
    let b = instance(&broker).await;
    let (_ca, mut local) = recorder(&a).await;
    let (_cb, mut remote) = recorder(&b).await;
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;

    // A steady stream from instance A: one broadcast every 5 ms.
    let stream = {
        let server = a.server.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0..1200u64 {
                tick.tick().await;
                server
                    .broadcast(
                        Target::namespace("chat"),
                        Message::new("", "seq", n.to_string()),
                    )
                    .unwrap();
            }
        })
    };
    // Let the stream run, then kill the broker.
    loop {
        let (n, _) = tokio::time::timeout(T, remote.recv())
            .await
            .unwrap()
            .unwrap();
        if n >= 100 {
            break;
        }
    }
    let rss_before = rss_kib();
    broker.kill();
    let killed_at = Instant::now();
    // Down for about 2 s (the stream keeps going meanwhile).
    while killed_at.elapsed() < Duration::from_secs(2) {
        let _ = tokio::time::timeout(Duration::from_millis(100), remote.recv()).await;
    }
    let rss_down = rss_kib();
    broker.restart();
    let restarted_at = Instant::now();
    // The first cross-instance message published after the restart arrives within 2 s.
    let resumed = loop {
        let (_, at) = tokio::time::timeout(T, remote.recv())
            .await
            .unwrap()
            .unwrap();
        if at > restarted_at {
            break at;
        }
    };
    let resume_delay = resumed.duration_since(restarted_at);
    println!("cross-instance delivery resumed {resume_delay:?} after the restart");
    assert!(
        resume_delay < Duration::from_secs(2),
        "resumed after {resume_delay:?}"
    );
    stream.await.unwrap();
    // Local deliveries lost nothing, in order.
    for expected in 0..1200u64 {
        let (n, _) = tokio::time::timeout(T, local.recv())
            .await
            .unwrap()
            .unwrap();
        assert_eq!(n, expected, "a local delivery was lost or reordered");
    }
    let exchange_a = &a.server.exchanges()[0];
    assert!(
        exchange_a.stats().publish_errors > 0,
        "publishes during the outage are counted"
    );
    assert!(
        eventually(T, || exchange_a.stats().reconnects >= 1).await,
        "reconnect counted"
    );
    assert!(
        rss_down < rss_before + 32 * 1024,
        "memory grew by {} KiB while the broker was down",
        rss_down.saturating_sub(rss_before)
    );
    assert_eq!(neffos::testkit::panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_kill_9_and_restart_mid_stream() {
    kill_and_restart_mid_stream(Broker::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_kill_9_and_restart_mid_stream() {
    kill_and_restart_mid_stream(Broker::Nats(NatsServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_redis_hangs_nothing() {
    let redis = RedisServer::start();
    let broker = Broker::Redis(redis);
    let a = instance(&broker).await;
    let b = instance(&broker).await;
    let (_cb, mut remote) = recorder(&b).await;
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let Broker::Redis(redis) = &broker else {
        unreachable!()
    };
    redis.pause();
    // Connects, namespace connects (which subscribe), handlers and broadcasts go on.
    let started = Instant::now();
    let (_ca, mut local) = recorder(&a).await;
    for n in 0..50u64 {
        a.server
            .broadcast(
                Target::namespace("chat"),
                Message::new("", "seq", n.to_string()),
            )
            .unwrap();
    }
    for n in 0..50u64 {
        assert_eq!(
            tokio::time::timeout(T, local.recv())
                .await
                .unwrap()
                .unwrap()
                .0,
            n
        );
    }
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "local work waited for the paused broker"
    );
    // Publishes time out and are counted.
    let exchange_a = a.server.exchanges()[0].clone();
    assert!(
        eventually(T, || exchange_a.stats().publish_errors > 0).await,
        "publishes to a hung broker time out and are counted"
    );
    // Shutdown does not hang on the broker either.
    let started = Instant::now();
    let left = a.server.shutdown(Duration::from_secs(2)).await;
    assert_eq!(left, 0);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "shutdown took {:?}",
        started.elapsed()
    );
    redis.resume();
    // B still works after the pause.
    let c = instance(&broker).await;
    c.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    c.server
        .broadcast(Target::namespace("chat"), Message::new("", "seq", "777"))
        .unwrap();
    loop {
        let (n, _) = tokio::time::timeout(T, remote.recv())
            .await
            .unwrap()
            .unwrap();
        if n == 777 {
            break;
        }
    }
    assert_eq!(neffos::testkit::panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instance_shutdown_under_load_releases_its_interest() {
    let redis = RedisServer::start();
    let url = redis.url();
    let broker = Broker::Redis(redis);
    let a = instance(&broker).await;
    let b = instance(&broker).await;
    let (_cb, mut remote) = recorder(&b).await;
    let (_ca, _local) = recorder(&a).await;
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let channel = RedisExchange::connect(url.clone())
        .await
        .unwrap()
        .channel(&neffos::Topic::Namespace("chat".into()))
        .unwrap();
    let numsub = |conn: &mut redis::aio::MultiplexedConnection| {
        let mut conn = conn.clone();
        let channel = channel.clone();
        async move {
            let v: (String, u64) = redis::cmd("PUBSUB")
                .arg("NUMSUB")
                .arg(&channel)
                .query_async(&mut conn)
                .await
                .unwrap();
            v.1
        }
    };
    assert_eq!(
        numsub(&mut conn).await,
        2,
        "both instances subscribed once each"
    );
    let load = {
        let server = b.server.clone();
        tokio::spawn(async move {
            for n in 0..400u64 {
                let _ = server.broadcast(
                    Target::namespace("chat"),
                    Message::new("", "seq", n.to_string()),
                );
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
        })
    };
    assert_eq!(a.server.shutdown(Duration::from_secs(3)).await, 0);
    let deadline = Instant::now() + T;
    while numsub(&mut conn).await != 1 {
        assert!(
            Instant::now() < deadline,
            "instance A's subscription was not released"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    load.await.unwrap();
    // B's own client received its whole stream.
    for n in 0..400u64 {
        assert_eq!(
            tokio::time::timeout(T, remote.recv())
                .await
                .unwrap()
                .unwrap()
                .0,
            n
        );
    }
}

/// The broker freezes (SIGSTOP) for 3 s; on SIGCONT the backlog reaches B at once.
async fn broker_pause_burst_closes_no_client(broker: Broker) {
    pause_burst_closes_no_client(broker, Freeze::Broker).await;
}

/// What is frozen for 3 s in [`pause_burst_closes_no_client`].
#[derive(Clone, Copy, PartialEq, Eq)]
enum Freeze {
    /// The broker process (SIGSTOP).
    Broker,
    /// The instance the 200 clients are on: its whole runtime (as SIGSTOP would its
    /// process), while its sockets keep buffering.
    ReceivingInstance,
}

/// An instance with the exchange as a user gets it (a 3 s pause is within its default
/// timeouts).
async fn default_instance(broker: BrokerUrl) -> TestServer {
    let exchange: Arc<dyn Exchange> = match broker {
        BrokerUrl::Redis(url) => Arc::new(RedisExchange::builder(url).connect().await.unwrap()),
        BrokerUrl::Nats(url) => Arc::new(NatsExchange::connect(url).await.unwrap()),
    };
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .exchange(exchange)
        .build();
    serve(server).await.unwrap()
}

#[derive(Clone)]
enum BrokerUrl {
    Redis(String),
    Nats(String),
}

impl Broker {
    fn url(&self) -> BrokerUrl {
        match self {
            Broker::Redis(r) => BrokerUrl::Redis(r.url()),
            Broker::Nats(n) => BrokerUrl::Nats(n.url()),
        }
    }
}

/// An instance on a runtime of its own, on its own thread, like another process; the handle
/// freezes it. Stops when dropped.
struct OwnRuntime {
    ts: TestServer,
    runtime: tokio::runtime::Handle,
    _stop: tokio::sync::oneshot::Sender<()>,
}

fn instance_on_own_runtime(broker: BrokerUrl) -> OwnRuntime {
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        runtime.block_on(async move {
            let ts = default_instance(broker).await;
            ready_tx
                .send((ts, tokio::runtime::Handle::current()))
                .unwrap();
            let _ = stopped.await;
        });
    });
    let (ts, runtime) = ready_rx.recv_timeout(T).unwrap();
    OwnRuntime {
        ts,
        runtime,
        _stop: stop,
    }
}

/// Issue 13: something freezes for 3 s while instance A publishes every 5 ms to 200 clients
/// on instance B; afterwards the backlog (≈ 600 messages) reaches the clients at once.
/// Before: 7–140 of the 200 healthy clients were closed "slow consumer" (a queue of 256
/// frames). Now the queues are budgeted in bytes and a burst may exceed the budget while
/// the clients read: no client is closed, and every client gets the same sequence, in order.
async fn pause_burst_closes_no_client(broker: Broker, freeze: Freeze) {
    const CLIENTS: usize = 200;
    const MESSAGES: u64 = 1400;
    let a = default_instance(broker.url()).await;
    let own = instance_on_own_runtime(broker.url());
    let b = &own.ts;
    let mut clients = Vec::new();
    for _ in 0..CLIENTS {
        clients.push(recorder(b).await);
    }
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let published = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let stream = {
        let server = a.server.clone();
        let published = published.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(5));
            for n in 0..MESSAGES {
                tick.tick().await;
                let _ = server.broadcast(
                    Target::namespace("chat"),
                    Message::new("", "seq", n.to_string()),
                );
                published.store(n + 1, Ordering::Relaxed);
            }
        })
    };
    // Running: the first client is past message 100.
    loop {
        let (n, _) = tokio::time::timeout(T, clients[0].1.recv())
            .await
            .unwrap()
            .unwrap();
        if n >= 100 {
            break;
        }
    }
    match freeze {
        Freeze::Broker => {
            broker.pause();
            tokio::time::sleep(Duration::from_secs(3)).await;
            broker.resume();
        }
        Freeze::ReceivingInstance => {
            // Its only thread sleeps: nothing of the instance runs meanwhile.
            let frozen = own
                .runtime
                .spawn(async { std::thread::sleep(Duration::from_secs(3)) });
            frozen.await.unwrap();
        }
    }
    let resumed = Instant::now();
    let backlog = published.load(Ordering::Relaxed);
    stream.await.unwrap();
    let mut reference: Option<Vec<u64>> = None;
    let mut burst = 0;
    for (i, (client, rx)) in clients.iter_mut().enumerate() {
        let mut got = Vec::new();
        while got.last() != Some(&(MESSAGES - 1)) {
            let (n, at) = tokio::time::timeout(T, rx.recv())
                .await
                .unwrap_or_else(|_| panic!("client {i} stopped at {:?}", got.last()))
                .unwrap();
            // Published before the broker came back, delivered after: the catch-up burst.
            if i == 0 && at >= resumed && n < backlog {
                burst += 1;
            }
            got.push(n);
        }
        assert!(
            got.windows(2).all(|w| w[0] < w[1]),
            "client {i} got messages out of order"
        );
        assert!(!client.conn().is_closed(), "client {i} was closed");
        // Client 0 consumed the first hundred while the test waited: compare from 200 on.
        let later: Vec<u64> = got.into_iter().filter(|&n| n >= 200).collect();
        match &reference {
            None => reference = Some(later),
            Some(r) => assert_eq!(&later, r, "client {i} got another sequence than client 0"),
        }
    }
    let lost = MESSAGES - 200 - reference.map_or(0, |r| r.len() as u64);
    println!(
        "catch-up burst after the pause: {burst} messages to each of {CLIENTS} clients; {lost} lost"
    );
    assert_eq!(
        lost, 0,
        "within the exchanges' default timeouts nothing is lost"
    );
    let stats = b.server.stats();
    assert_eq!(stats.slow_consumer_closes, 0, "{stats:?}");
    assert_eq!(b.server.connection_count(), CLIENTS);
    assert!(burst >= 100, "no burst reached the clients ({burst})");
    assert_eq!(neffos::testkit::panics(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_pause_burst_closes_no_client() {
    broker_pause_burst_closes_no_client(Broker::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nats_pause_burst_closes_no_client() {
    broker_pause_burst_closes_no_client(Broker::Nats(NatsServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn receiving_instance_pause_burst_closes_no_client() {
    let broker = Broker::Redis(RedisServer::start());
    pause_burst_closes_no_client(broker, Freeze::ReceivingInstance).await;
}
