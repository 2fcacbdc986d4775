//! Connection-state recovery across processes: three `scale-out` processes on one real
//! broker (Redis, or NATS with JetStream: history and sessions in the broker), a loopback
//! proxy playing the load balancer. A client is in room R on instance A; A is killed
//! (kill -9: it saves nothing, the session is its last checkpoint); a client on C
//! publishes 1,000 room messages over 2 s; the client comes back through the proxy on B
//! with its ID and room and receives all 1,000 exactly once, in order, before what is
//! published after its reconnect. The same scenario runs for our Rust client and for the
//! unmodified neffos.js in Node (its own reconnect, the session header only), on each
//! broker; a steady stream across the kill measures what neffos.js loses or gets twice.
#![cfg(any(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::time::{Duration, Instant};

use neffos::protocol::recovery::{Position, SessionState};
use neffos::recovery::{HistoryLimits, HistoryStore, Outcome};
use neffos::testkit::proxy::LoadBalancer;
use neffos::testkit::recovery::assert_in_order;
use neffos::{Client, Events, Message, Namespaces, NsConn, Reconnect, Room};
use serde_json::Value;
use support::{JsUser, ScaleOut};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

/// A broker holding the recovery store of the `scale-out` processes.
enum Broker {
    #[cfg(feature = "redis")]
    Redis(neffos::testkit::broker::RedisServer),
    #[cfg(feature = "nats")]
    Nats(neffos::testkit::broker::NatsServer),
}

impl Broker {
    /// The `scale-out` arguments joining it.
    fn args(&self) -> Vec<String> {
        let args = match self {
            #[cfg(feature = "redis")]
            Broker::Redis(b) => ["--exchange", "redis", "--redis-url", &b.url()],
            #[cfg(feature = "nats")]
            Broker::Nats(b) => ["--exchange", "nats", "--nats-url", &b.url()],
        };
        args.map(str::to_owned).to_vec()
    }

    /// A store of the test's own on the broker, and the sessions it keeps now.
    async fn store(&self) -> (Box<dyn HistoryStore>, Vec<SessionState>) {
        let limits = HistoryLimits::default();
        let (store, kept): (Box<dyn HistoryStore>, _) = match self {
            #[cfg(feature = "redis")]
            Broker::Redis(b) => {
                let store = neffos_redis::RedisHistory::connect(&b.url(), limits)
                    .await
                    .unwrap();
                let kept = store.kept_sessions().await.unwrap();
                (Box::new(store), kept)
            }
            #[cfg(feature = "nats")]
            Broker::Nats(b) => {
                let store = neffos_nats::NatsHistory::connect(&b.url(), limits)
                    .await
                    .unwrap();
                let kept = store.kept_sessions().await.unwrap();
                (Box::new(store), kept)
            }
        };
        let kept = kept
            .iter()
            .filter_map(|b| SessionState::decode(b).ok())
            .collect();
        (store, kept)
    }

    /// Waits until instance A's checkpoint of `user`'s session has room R and a position at
    /// least `up_to` (kill -9 leaves nothing else behind).
    async fn checkpointed(&self, user: &str, up_to: Option<Position>) {
        let deadline = Instant::now() + T;
        loop {
            let (_, kept) = self.store().await;
            if kept.iter().any(|s| {
                s.id == user
                    && s.namespaces.iter().any(|ns| {
                        ns.rooms == ["R"]
                            && up_to.is_none_or(|up_to| {
                                ns.position
                                    .is_some_and(|p| p.epoch == up_to.epoch && p >= up_to)
                            })
                    })
            }) {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "no checkpoint of {user}'s session"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// The newest position of the chat's history.
    async fn head(&self) -> Position {
        self.store().await.0.head("default").await.unwrap()
    }
}

/// Three `scale-out` processes on `broker`, the load balancer in front of A, a publisher
/// on C and a witness on B: once the witness has a message, it was recorded.
struct Cluster {
    broker: Broker,
    a: ScaleOut,
    b: ScaleOut,
    _c: ScaleOut,
    lb: LoadBalancer,
    _publisher: Client,
    p: Room,
    _witness: Client,
    witness: mpsc::UnboundedReceiver<String>,
}

impl Cluster {
    async fn start(broker: Broker) -> Cluster {
        let args = broker.args();
        let a = ScaleOut::start(&args);
        let b = ScaleOut::start(&args);
        let c = ScaleOut::start(&args);
        let lb = LoadBalancer::start(([127, 0, 0, 1], a.port).into())
            .await
            .unwrap();
        let (_publisher, p, _) = user(&c.ws(), "pub", false).await;
        let (_witness, _, witness) = user(&b.ws(), "witness", false).await;
        Cluster {
            broker,
            a,
            b,
            _c: c,
            lb,
            _publisher,
            p,
            _witness,
            witness,
        }
    }

    /// kill -9 of instance A; the load balancer holds new connections meanwhile.
    fn kill_a(&mut self) {
        self.lb.hold();
        self.a.kill();
    }

    /// The load balancer sends new connections to B.
    fn to_b(&self) {
        self.lb.route_to(Some(([127, 0, 0, 1], self.b.port).into()));
    }
}

/// A chat user in room "R" of "default" reporting the text of every `chat` it receives.
async fn user(
    url: &str,
    name: &str,
    recovery: bool,
) -> (Client, Room, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("chat", move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            let body: Value = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
            let _ = tx.send(body["text"].as_str().unwrap_or_default().to_owned());
        }
    });
    let client = Client::builder(url)
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace("default", events))
        .reconnect(Reconnect::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .recovery(recovery)
        .connect()
        .await
        .unwrap();
    let room = client
        .connect("default")
        .await
        .unwrap()
        .join_room("R")
        .await
        .unwrap();
    (client, room, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a message in time")
        .unwrap()
}

/// The next `n` numbered messages (probes skipped).
async fn numbers(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let text = next(rx).await;
        if !text.starts_with("probe") {
            got.push(text);
        }
    }
    got
}

/// Emits one numbered message per `pace` on average (all at once when zero).
async fn emit_range(room: &Room, range: std::ops::Range<usize>, pace: Duration) {
    let mut tick = (!pace.is_zero()).then(|| tokio::time::interval(pace));
    for i in range {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        room.emit("chat", i.to_string()).unwrap();
    }
}

/// Until a probe from `from` reaches `arrived` (subscriptions across processes become
/// active asynchronously).
async fn probe(from: &Room, mut arrived: impl AsyncFnMut(Duration) -> bool) {
    for i in 0..100 {
        from.emit("chat", format!("probe {i}")).unwrap();
        if arrived(Duration::from_millis(100)).await {
            return;
        }
    }
    panic!("no probe arrived");
}

async fn probe_rx(from: &Room, rx: &mut mpsc::UnboundedReceiver<String>) {
    probe(from, async |wait| {
        tokio::time::timeout(wait, rx.recv())
            .await
            .is_ok_and(|m| m.is_some())
    })
    .await;
}

async fn probe_js(from: &Room, js: &mut JsUser) {
    probe(from, async |wait| {
        tokio::task::block_in_place(|| js.next_within(wait, |v| v["ev"] == "probe").is_some())
    })
    .await;
}

/// Blocks on a neffos.js report without stalling the runtime's other tasks (the proxy).
fn js_wait(js: &mut JsUser, pred: impl Fn(&Value) -> bool) -> Value {
    tokio::task::block_in_place(|| js.next_where(pred))
}

/// The Rust client (exact positions): everything missed, once, in order, on B.
async fn rust_client_recovers_on_another_process_after_kill_9(broker: Broker) {
    let mut s = Cluster::start(broker).await;
    let (client, _room, mut rx) = user(&s.lb.url(), "sub", true).await;
    probe_rx(&s.p, &mut rx).await;
    probe_rx(&s.p, &mut s.witness).await;
    emit_range(&s.p, 0..100, Duration::ZERO).await;
    assert_in_order(&numbers(&mut rx, 100).await, 0..100);
    assert_in_order(&numbers(&mut s.witness, 100).await, 0..100);
    s.broker
        .checkpointed("sub", Some(s.broker.head().await))
        .await;
    let extra: Vec<String> = std::iter::from_fn(|| rx.try_recv().ok())
        .filter(|t| !t.starts_with("probe"))
        .collect();
    assert!(extra.is_empty(), "live delivery sent again: {extra:?}");

    s.kill_a();
    let started = Instant::now();
    emit_range(&s.p, 100..1100, Duration::from_millis(2)).await;
    assert_in_order(&numbers(&mut s.witness, 1000).await, 100..1100);
    eprintln!(
        "1,000 published and delivered to B in {:?}",
        started.elapsed()
    );

    s.to_b();
    client.wait_reconnects(0, T).await.unwrap();
    let back = Instant::now();
    emit_range(&s.p, 1100..1200, Duration::ZERO).await;
    assert_in_order(&numbers(&mut rx, 1100).await, 100..1200);
    eprintln!("caught up {:?} after the reconnect", back.elapsed());
    assert_eq!(
        client.wait_recovery("default", T).await.unwrap(),
        Outcome::Recovered
    );
    assert_eq!(client.id(), "sub");
    assert_eq!(
        client.namespace("default").unwrap().rooms(),
        vec!["R".to_owned()]
    );
    assert!(rx.try_recv().is_err(), "no duplicate");
}

/// neffos.js (the session header only: the server replays from its last checkpoint of
/// what it handed to the socket). With the checkpoint covering what the client had, the
/// same result as the Rust client: everything missed, once, in order, on B.
async fn neffos_js_recovers_on_another_process_after_kill_9(broker: Broker) {
    let mut s = Cluster::start(broker).await;
    let mut js = JsUser::spawn(
        "recovery.js",
        &[&s.lb.url(), "a-secret-of-jsub", "jsub", "default", "chat"],
    );
    assert_eq!(js_wait(&mut js, |v| v["ev"] == "ready")["id"], "jsub");
    probe_js(&s.p, &mut js).await;
    probe_rx(&s.p, &mut s.witness).await;
    emit_range(&s.p, 0..100, Duration::ZERO).await;
    js_wait(&mut js, |v| v["ev"] == "count" && v["n"] == 100);
    assert_in_order(&numbers(&mut s.witness, 100).await, 0..100);
    s.broker
        .checkpointed("jsub", Some(s.broker.head().await))
        .await;

    s.kill_a();
    emit_range(&s.p, 100..1100, Duration::from_millis(2)).await;
    assert_in_order(&numbers(&mut s.witness, 1000).await, 100..1100);
    s.to_b();
    let recovery = js_wait(&mut js, |v| {
        v["ev"] == "recovery" && v["reconnected"] == true
    });
    assert_eq!(recovery["body"], "recovered", "{recovery}");
    assert_eq!(recovery["id"], "jsub", "same connection ID");
    assert_eq!(recovery["reconnected"], true);
    emit_range(&s.p, 1100..1200, Duration::ZERO).await;
    s.p.emit("chat", "end").unwrap();
    let end = js_wait(&mut js, |v| v["ev"] == "end");
    let got: Vec<String> = serde_json::from_value(end["bodies"].clone()).unwrap();
    assert_in_order(&got, 0..1200);
}

/// neffos.js across the kill of its instance in the middle of a steady stream (1,000/s
/// from C): the replay starts at A's last checkpoint (every second), so nothing is lost,
/// what arrived after that checkpoint may come twice, and the order is kept from the
/// replay on. Returns (lost, duplicates) of the stream.
async fn neffos_js_steady_stream_across_kill_9(broker: Broker) -> (usize, usize) {
    const N: usize = 2000;
    let mut s = Cluster::start(broker).await;
    let mut js = JsUser::spawn(
        "recovery.js",
        &[
            &s.lb.url(),
            "a-secret-of-steady",
            "steady",
            "default",
            "chat",
        ],
    );
    js_wait(&mut js, |v| v["ev"] == "ready");
    probe_js(&s.p, &mut js).await;
    // A session to come back to (without one, neffos.js is told `not-recovered:no-session`).
    s.broker.checkpointed("steady", None).await;
    let publisher = s.p.clone();
    let stream =
        tokio::spawn(async move { emit_range(&publisher, 0..N, Duration::from_millis(1)).await });
    js_wait(&mut js, |v| v["ev"] == "count" && v["n"] == 500);
    s.kill_a();
    s.to_b();
    let recovery = js_wait(&mut js, |v| {
        v["ev"] == "recovery" && v["reconnected"] == true
    });
    assert_eq!(recovery["body"], "recovered", "{recovery}");
    stream.await.unwrap();
    s.p.emit("chat", "end").unwrap();
    let end = js_wait(&mut js, |v| v["ev"] == "end");
    let got: Vec<usize> = end["bodies"]
        .as_array()
        .unwrap()
        .iter()
        .map(|b| b.as_str().unwrap().parse().unwrap())
        .collect();
    // In order but for one step back: where the replay from the checkpoint started.
    let steps_back: Vec<usize> = (1..got.len()).filter(|&i| got[i] <= got[i - 1]).collect();
    assert!(
        steps_back.len() <= 1,
        "order kept: steps back at {:?}",
        steps_back
            .iter()
            .map(|&i| &got[i.saturating_sub(3)..(i + 3).min(got.len())])
            .collect::<Vec<_>>()
    );
    let mut distinct = got.clone();
    distinct.sort_unstable();
    distinct.dedup();
    let lost = N - distinct.len();
    let duplicates = got.len() - distinct.len();
    let missing: Vec<usize> = (0..N)
        .filter(|i| distinct.binary_search(i).is_err())
        .collect();
    assert!(
        missing.is_empty(),
        "nothing lost across a kill -9: {lost} missing, {:?}..{:?}",
        missing.first(),
        missing.last()
    );
    // At most what arrived since the last checkpoint (one a second, 1,000/s), with slack.
    assert!(duplicates <= 1200, "{duplicates} duplicates");
    (lost, duplicates)
}

/// Several runs, reported side by side.
async fn steady_stream_runs(make: impl Fn() -> Broker, name: &str) {
    let mut runs = Vec::new();
    for _ in 0..3 {
        runs.push(neffos_js_steady_stream_across_kill_9(make()).await);
    }
    eprintln!(
        "{name}: neffos.js across kill -9 of its instance, 2,000 at 1,000/s, 3 runs: (lost, duplicates) {runs:?}"
    );
}

/// The scenarios on one broker, as tests of module `$name`.
macro_rules! on_broker {
    ($name:ident, $label:literal, $broker:expr) => {
        mod $name {
            use super::*;

            fn broker() -> Broker {
                $broker
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn rust_client_recovers_on_another_process_after_kill_9() {
                super::rust_client_recovers_on_another_process_after_kill_9(broker()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn neffos_js_recovers_on_another_process_after_kill_9() {
                super::neffos_js_recovers_on_another_process_after_kill_9(broker()).await;
            }

            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn neffos_js_steady_stream_across_kill_9() {
                steady_stream_runs(broker, $label).await;
            }
        }
    };
}

#[cfg(feature = "redis")]
on_broker!(
    redis,
    "Redis",
    Broker::Redis(neffos::testkit::broker::RedisServer::start())
);

#[cfg(feature = "nats")]
on_broker!(
    nats,
    "NATS",
    Broker::Nats(neffos::testkit::broker::NatsServer::start_with(&["-js"]))
);
