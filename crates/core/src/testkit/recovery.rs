//! The connection-state recovery scenarios every shared [`HistoryStore`] runs, across
//! three instances on one broker behind a [`LoadBalancer`]: each broker's tests give a
//! [`Backend`] (its exchange, its store, how to read its byte counters and kept sessions)
//! and call the scenarios.
//!
//! Every instance serves namespace `chat` (recorded) and `plain` (not recorded); the event
//! `pub` broadcasts its body as `msg` to room `R` of its namespace. The subscriber is our
//! Rust client (with [`ClientBuilder::recovery`](crate::ClientBuilder::recovery)) in room
//! `R`, through the load balancer on instance A; the publisher is a client on instance C.
//!
//! ```no_run
//! # async fn run(backend: impl neffos::testkit::recovery::Backend) {
//! use neffos::testkit::recovery::{Scenario, Settings};
//! Scenario::start(backend, Settings::default()).await.recovers_on_another_instance().await;
//! # }
//! ```

use std::future::Future;
use std::ops::Range;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::proxy::LoadBalancer;
use super::{TestServer, eventually, serve};
use crate::recovery::{HistoryLimits, HistoryStore, Outcome, Reason, Recovery};
use crate::{Client, Events, Exchange, Message, Namespaces, NsConn, Reconnect, Server};

/// Deadline of every single wait of a scenario.
pub const T: Duration = Duration::from_secs(20);

/// The recorded namespace of the scenarios (`plain` is the same, not recorded).
pub const NAMESPACE: &str = "chat";

/// A broker with its exchange and its history store.
pub trait Backend: Send + Sync + 'static {
    /// A new exchange on the broker, for one more instance.
    fn exchange(&self) -> impl Future<Output = Arc<dyn Exchange>> + Send;

    /// A new history store on the broker, keeping up to `limits` per namespace.
    fn history(&self, limits: HistoryLimits) -> impl Future<Output = Arc<dyn HistoryStore>> + Send;

    /// Bytes the broker received and sent so far (its own counters).
    fn broker_bytes(&self) -> impl Future<Output = u64> + Send;

    /// Kept sessions (live connections' checkpoints included): how many, and the bytes the
    /// broker reports they take.
    fn kept_sessions(&self) -> impl Future<Output = KeptSessions> + Send;
}

/// What a broker holds for kept sessions.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct KeptSessions {
    /// Sessions held.
    pub count: usize,
    /// Bytes the broker reports for them (records and its own bookkeeping).
    pub bytes: u64,
}

/// The recovery settings of the instances of a scenario.
#[derive(Debug, Clone, Copy)]
pub struct Settings {
    /// The history's bounds.
    pub limits: HistoryLimits,
    /// [`Recovery::window`].
    pub window: Duration,
    /// [`Recovery::checkpoint_interval`].
    pub checkpoint: Duration,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            limits: HistoryLimits::default(),
            window: Duration::from_secs(120),
            checkpoint: Duration::from_secs(1),
        }
    }
}

/// Three instances on one broker, a load balancer in front of instance A, and a store of
/// the test's own to look at the history.
#[derive(Debug)]
pub struct Scenario<B> {
    /// The broker.
    pub backend: B,
    /// Instances A, B, C.
    pub instances: Vec<TestServer>,
    /// The load balancer, first sending to A.
    pub lb: LoadBalancer,
    /// A store on the broker (not used by any instance).
    pub store: Arc<dyn HistoryStore>,
    settings: Settings,
}

impl<B: Backend> Scenario<B> {
    /// Starts the instances (recording `chat`) and the load balancer.
    ///
    /// # Panics
    ///
    /// When an instance cannot listen.
    pub async fn start(backend: B, settings: Settings) -> Self {
        let mut instances = Vec::new();
        for _ in 0..3 {
            let recovery = Recovery::new()
                .namespace(NAMESPACE)
                .window(settings.window)
                .checkpoint_interval(settings.checkpoint)
                .store(backend.history(settings.limits).await);
            let server = Server::builder(
                Namespaces::new()
                    .namespace(NAMESPACE, publish())
                    .namespace("plain", publish()),
            )
            .exchange(backend.exchange().await)
            .recovery(recovery)
            .build();
            instances.push(serve(server).await.expect("an instance listens"));
        }
        let lb = LoadBalancer::start(instances[0].addr)
            .await
            .expect("the load balancer listens");
        let store = backend.history(settings.limits).await;
        Scenario {
            backend,
            instances,
            lb,
            store,
            settings,
        }
    }

    /// Our Rust client (recovery on) through the load balancer, in room `R` of `ns`, and
    /// the bodies of the `msg` events it receives.
    ///
    /// # Panics
    ///
    /// When it cannot connect or join.
    pub async fn subscriber(&self, ns: &str) -> (Client, mpsc::UnboundedReceiver<String>) {
        let (tx, rx) = mpsc::unbounded_channel();
        let events = Events::new().on("msg", move |_ns, msg: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
            }
        });
        let client = Client::builder(self.lb.url())
            .namespaces(Namespaces::new().namespace(ns, events))
            .reconnect(Reconnect::new(
                Duration::from_millis(20),
                Duration::from_millis(100),
            ))
            .recovery(true)
            .connect()
            .await
            .expect("the subscriber connects");
        client
            .connect(ns)
            .await
            .expect("the subscriber connects its namespace")
            .join_room("R")
            .await
            .expect("the subscriber joins R");
        (client, rx)
    }

    /// A client on instance `i` connected to `ns`, to emit `pub`.
    ///
    /// # Panics
    ///
    /// When it cannot connect.
    pub async fn publisher(&self, i: usize, ns: &str) -> NsConn {
        let client = Client::builder(self.instances[i].url())
            .namespaces(Namespaces::new().namespace(ns, Events::new()))
            .connect()
            .await
            .expect("the publisher connects");
        client
            .connect(ns)
            .await
            .expect("the publisher connects its namespace")
    }

    /// Instance A loses its clients: the load balancer cuts their connections and sends new
    /// ones nowhere until [`Self::back_on`].
    ///
    /// # Panics
    ///
    /// When A does not see its connections end in time.
    pub async fn cut(&self) {
        self.lb.route_to(None);
        self.lb.cut();
        let a = &self.instances[0].server;
        assert!(eventually(T, || a.connection_count() == 0).await);
    }

    /// The load balancer sends new connections to instance `i`.
    pub fn back_on(&self, i: usize) {
        self.lb.route_to(Some(self.instances[i].addr));
    }

    /// Waits until `chat`'s history holds offset `n` (everything published was recorded).
    ///
    /// # Panics
    ///
    /// When it does not in time.
    pub async fn recorded(&self, n: u64) {
        let deadline = Instant::now() + T;
        loop {
            let head = self.store.head(NAMESPACE).await.expect("history head");
            if head.offset >= n {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "history at {head:?}, {n} expected"
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Waits until the broker keeps `n` sessions.
    ///
    /// # Panics
    ///
    /// When it does not in time.
    pub async fn kept(&self, n: usize) -> KeptSessions {
        let deadline = Instant::now() + T;
        loop {
            let kept = self.backend.kept_sessions().await;
            if kept.count == n {
                return kept;
            }
            assert!(Instant::now() < deadline, "{kept:?} kept, {n} expected");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// The acceptance scenario of issue 17: the subscriber, in room R on A, is cut off; a
    /// client on C publishes 1,000 room messages over 2 s; the subscriber comes back through
    /// the load balancer on B with its ID and room and receives all 1,000 exactly once, in
    /// order, before what is published after its reconnect.
    ///
    /// Returns the time from the reconnect until the client had every missed broadcast
    /// and the 100 newer ones.
    ///
    /// # Panics
    ///
    /// When any of that does not hold.
    pub async fn recovers_on_another_instance(&self) -> Duration {
        let (client, mut rx) = self.subscriber(NAMESPACE).await;
        let id = client.id();
        let p = self.publisher(2, NAMESPACE).await;
        emit_range(&p, 0..100, Duration::ZERO).await;
        assert_in_order(&receive(&mut rx, 100).await, 0..100);

        self.cut().await;
        let started = Instant::now();
        emit_range(&p, 100..1100, Duration::from_millis(2)).await;
        self.recorded(1100).await;
        tracing::info!(took = ?started.elapsed(), "1,000 published and recorded");

        self.back_on(1);
        client.wait_reconnects(0, T).await.expect("reconnected");
        let back = Instant::now();
        // Published after the reconnect: must come after every missed one.
        emit_range(&p, 1100..1200, Duration::ZERO).await;
        assert_in_order(&receive(&mut rx, 1100).await, 100..1200);
        let caught_up = back.elapsed();
        assert_eq!(
            client
                .wait_recovery(NAMESPACE, T)
                .await
                .expect("an outcome"),
            Outcome::Recovered
        );
        assert_eq!(client.id(), id, "same connection ID");
        let b = &self.instances[1].server;
        let on_b = b.connections_by_id(&id).pop().expect("the client is on B");
        assert_eq!(
            on_b.namespace(NAMESPACE).expect("chat on B").rooms(),
            vec!["R".to_owned()]
        );
        assert!(rx.try_recv().is_err(), "nothing more, no duplicate");
        assert_eq!(b.recovery_stats().recovered, 1);
        caught_up
    }

    /// The subscriber is cut off while `missed` broadcasts are published, then `outage` runs
    /// (the history or the session is lost, time passes); back on B it is told
    /// "not recovered" for one of `expected`, and nothing of the missed broadcasts is
    /// replayed: the next broadcast is the first it receives.
    ///
    /// # Panics
    ///
    /// When any of that does not hold.
    pub async fn not_recovered_after<F: Future<Output = ()>>(
        &self,
        missed: usize,
        outage: impl FnOnce() -> F,
        expected: &[Reason],
    ) {
        let (client, mut rx) = self.subscriber(NAMESPACE).await;
        let id = client.id();
        let p = self.publisher(2, NAMESPACE).await;
        emit_range(&p, 0..10, Duration::ZERO).await;
        assert_in_order(&receive(&mut rx, 10).await, 0..10);
        self.cut().await;
        emit_range(&p, 10..10 + missed, Duration::ZERO).await;
        self.recorded(10 + missed as u64).await;
        outage().await;
        self.back_on(1);
        client.wait_reconnects(0, T).await.expect("reconnected");
        let outcome = client
            .wait_recovery(NAMESPACE, T)
            .await
            .expect("an outcome");
        assert!(
            expected
                .iter()
                .any(|r| outcome == Outcome::NotRecovered(*r)),
            "{outcome:?}, expected one of {expected:?}"
        );
        if outcome == Outcome::NotRecovered(Reason::NoSession) {
            assert_ne!(client.id(), id, "a fresh session");
        } else {
            assert_eq!(client.id(), id, "same connection ID");
        }
        let b = &self.instances[1].server;
        let cid = client.id();
        assert!(
            eventually(T, || b
                .connections_by_id(&cid)
                .first()
                .and_then(|c| c.namespace(NAMESPACE))
                .is_some_and(|ns| !ns.rooms().is_empty()))
            .await,
            "the client is in room R on B"
        );
        emit_range(&p, 1000..1001, Duration::ZERO).await;
        assert_in_order(&receive(&mut rx, 1).await, 1000..1001);
    }

    /// After the window (and the last checkpoint's extra) passed: a fresh session, told
    /// `no-session`.
    ///
    /// # Panics
    ///
    /// When the session comes back.
    pub async fn window_expiry(&self) {
        let wait = self.settings.window + self.settings.checkpoint * 2;
        self.not_recovered_after(
            100,
            // Time passing is what is tested.
            || tokio::time::sleep(wait),
            &[Reason::NoSession],
        )
        .await;
    }

    /// With `limits.max_entries` far below the 300 missed broadcasts (Redis `MAXLEN ~`
    /// trims whole nodes of 100 entries): `history-trimmed`.
    ///
    /// # Panics
    ///
    /// When the limits do not make the history lose missed broadcasts, or recovery is not
    /// refused.
    pub async fn count_bound(&self) {
        assert!(
            self.settings.limits.max_entries <= 50,
            "a bound far below 300"
        );
        self.not_recovered_after(300, || async {}, &[Reason::HistoryTrimmed])
            .await;
    }

    /// With `limits.max_age` passed since the missed broadcasts: `history-trimmed`.
    ///
    /// # Panics
    ///
    /// When recovery is not refused.
    pub async fn age_bound(&self) {
        let age = self.settings.limits.max_age;
        assert!(age < Duration::from_secs(5), "a short age bound");
        self.not_recovered_after(
            100,
            // Time passing is what is tested: every missed broadcast gets older than the bound.
            || tokio::time::sleep(age * 2),
            &[Reason::HistoryTrimmed],
        )
        .await;
    }

    /// Broker bytes per broadcast (4-byte body, subscriber on A, publisher on C), in the
    /// recorded namespace vs the plain one, same instances and run: `(off, on)`.
    ///
    /// # Panics
    ///
    /// When a broadcast does not arrive.
    pub async fn broker_bytes_per_broadcast(&self) -> (f64, f64) {
        let mut per_broadcast = Vec::new();
        for ns in ["plain", NAMESPACE] {
            let (_client, mut rx) = self.subscriber(ns).await;
            let p = self.publisher(2, ns).await;
            emit_range(&p, 0..10, Duration::ZERO).await;
            receive(&mut rx, 10).await;
            let before = self.backend.broker_bytes().await;
            emit_range(&p, 1000..2000, Duration::ZERO).await;
            receive(&mut rx, 1000).await;
            let bytes = self.backend.broker_bytes().await - before;
            per_broadcast.push(bytes as f64 / 1000.0);
        }
        (per_broadcast[0], per_broadcast[1])
    }

    /// `n` subscribers (one namespace, room R, server-generated 36-byte IDs) cut off: the
    /// bytes the broker reports per kept session (and in all).
    ///
    /// # Panics
    ///
    /// When the sessions are not kept.
    pub async fn bytes_per_kept_session(&self, n: usize) -> (f64, KeptSessions) {
        let mut clients = Vec::with_capacity(n);
        for _ in 0..n {
            clients.push(self.subscriber(NAMESPACE).await);
        }
        // Checkpointed while live: the same records as after the cut.
        self.kept(n).await;
        self.cut().await;
        let kept = self.kept(n).await;
        (kept.bytes as f64 / n as f64, kept)
    }
}

fn publish() -> Events {
    Events::new().on("pub", |ns: NsConn, msg: Message| async move {
        let _ = ns.broadcast(Message::new(ns.namespace(), "msg", msg.body).with_room("R"));
    })
}

/// Emits one `pub` per number of `range`, one every `pace` on average (all at once when
/// zero).
///
/// # Panics
///
/// When the connection is closed.
pub async fn emit_range(p: &NsConn, range: Range<usize>, pace: Duration) {
    let mut tick = (!pace.is_zero()).then(|| tokio::time::interval(pace));
    for i in range {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        p.emit("pub", i.to_string()).expect("emitted");
    }
}

/// The next `n` items of `rx`.
///
/// # Panics
///
/// When one does not arrive within [`T`].
pub async fn receive(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(T, rx.recv()).await {
            Ok(Some(body)) => got.push(body),
            _ => panic!("received {} of {n}, last {:?}", got.len(), got.last()),
        }
    }
    got
}

/// Asserts `got` is exactly the decimal numbers of `range`, in order.
///
/// # Panics
///
/// At the first difference, saying where.
pub fn assert_in_order(got: &[String], range: Range<usize>) {
    let expected: Vec<String> = range.map(|i| i.to_string()).collect();
    if let Some(i) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i)) {
        panic!(
            "first difference at {i}: got {:?}, expected {:?} ({} received, {} expected)",
            got.get(i),
            expected.get(i),
            got.len(),
            expected.len()
        );
    }
}

/// The scenarios every shared store passes, as tests: `recovery_tests!(backend)` in a test
/// file defines one `#[tokio::test]` per scenario, each with a fresh broker from the
/// expression `backend` (a [`Backend`]), printing what it measures. Loss of the history
/// (flush, purge, delete) is broker-specific: write those tests with
/// [`Scenario::not_recovered_after`].
#[macro_export]
macro_rules! recovery_tests {
    ($backend:expr) => {
        /// The acceptance scenario of issue 17 (see `Scenario::recovers_on_another_instance`).
        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn recovers_on_another_instance_exactly_once_in_order() {
            let caught_up = $crate::testkit::recovery::Scenario::start(
                $backend,
                $crate::testkit::recovery::Settings::default(),
            )
            .await
            .recovers_on_another_instance()
            .await;
            eprintln!("caught up (1,000 missed + 100 newer) {caught_up:?} after the reconnect");
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn a_batch_is_appended_in_order_after_a_single_append() {
            $crate::testkit::recovery::appends_in_order($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn after_the_window_a_fresh_session_is_told_no_session() {
            $crate::testkit::recovery::window_expiry($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn more_missed_than_the_history_keeps_is_not_recovered() {
            $crate::testkit::recovery::count_bound($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn missed_broadcasts_older_than_the_history_keeps_are_not_recovered() {
            $crate::testkit::recovery::age_bound($backend).await;
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn broker_bytes_per_broadcast_with_recovery_on_and_off() {
            let (off, on) = $crate::testkit::recovery::broker_bytes($backend).await;
            eprintln!(
                "broker bytes per broadcast (in + out, 3 instances, 4-byte body): recovery off {off:.0}, on {on:.0} ({:.2}x)",
                on / off
            );
        }

        #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
        async fn memory_per_kept_session() {
            let (per_session, kept) =
                $crate::testkit::recovery::memory_per_kept_session($backend).await;
            eprintln!("{kept:?}: {per_session:.0} bytes per kept session");
        }
    };
}

/// The store's appends: one, then a batch of 300 in one call, then an empty batch;
/// positions follow one another and a read from the start gives the payloads in order.
///
/// # Panics
///
/// When not.
pub async fn appends_in_order(backend: impl Backend) {
    let store = backend.history(HistoryLimits::default()).await;
    let start = store.head("batch").await.expect("head");
    let payloads: Vec<bytes::Bytes> = (0..301).map(|i| i.to_string().into()).collect();
    let first = store
        .append("batch", payloads[0].clone())
        .await
        .expect("append");
    let rest = store
        .append_all("batch", &payloads[1..])
        .await
        .expect("append_all");
    assert!(
        store
            .append_all("batch", &[])
            .await
            .expect("empty")
            .is_empty()
    );
    let positions: Vec<_> = std::iter::once(first).chain(rest).collect();
    assert_eq!(positions.len(), payloads.len());
    for (i, p) in positions.iter().enumerate() {
        assert_eq!(p.epoch, start.epoch, "one epoch");
        assert_eq!(p.offset, start.offset + 1 + i as u64, "consecutive offsets");
    }
    match store.read_after("batch", start, 1000).await.expect("read") {
        crate::recovery::Replay::Entries { entries, head } => {
            assert_eq!(head, positions[positions.len() - 1]);
            let expected: Vec<_> = positions.into_iter().zip(payloads).collect();
            assert!(entries == expected, "entries out of order or changed");
        }
        other => panic!("{other:?}"),
    }
}

/// Window of 300 ms (checkpoints every 100 ms), reconnect after it passed:
/// `no-session`, a fresh session ([`Scenario::window_expiry`]).
pub async fn window_expiry(backend: impl Backend) {
    let settings = Settings {
        window: Duration::from_millis(300),
        checkpoint: Duration::from_millis(100),
        ..Settings::default()
    };
    Scenario::start(backend, settings)
        .await
        .window_expiry()
        .await;
}

/// A history of 20 entries, 300 missed: `history-trimmed` ([`Scenario::count_bound`]).
pub async fn count_bound(backend: impl Backend) {
    let settings = Settings {
        limits: HistoryLimits::default().max_entries(20),
        ..Settings::default()
    };
    Scenario::start(backend, settings).await.count_bound().await;
}

/// A history of 500 ms, missed broadcasts older: `history-trimmed`
/// ([`Scenario::age_bound`]).
pub async fn age_bound(backend: impl Backend) {
    let settings = Settings {
        limits: HistoryLimits::default().max_age(Duration::from_millis(500)),
        ..Settings::default()
    };
    Scenario::start(backend, settings).await.age_bound().await;
}

/// Broker bytes per broadcast with recovery off and on ([`Scenario::broker_bytes_per_broadcast`]),
/// asserting recording costs something and less than 4 times the plain broadcast.
///
/// # Panics
///
/// When not.
pub async fn broker_bytes(backend: impl Backend) -> (f64, f64) {
    let (off, on) = Scenario::start(backend, Settings::default())
        .await
        .broker_bytes_per_broadcast()
        .await;
    assert!(on > off && on < off * 4.0, "off {off}, on {on}");
    (off, on)
}

/// Bytes per kept session of 50 ([`Scenario::bytes_per_kept_session`]), asserting under
/// 512 each.
///
/// # Panics
///
/// When not.
pub async fn memory_per_kept_session(backend: impl Backend) -> (f64, KeptSessions) {
    let (per_session, kept) = Scenario::start(backend, Settings::default())
        .await
        .bytes_per_kept_session(50)
        .await;
    assert!(per_session < 512.0, "{per_session} bytes per kept session");
    (per_session, kept)
}
