//! Go neffos v0.0.25 compatibility mode of the exchanges (`go_compat`): Go and Rust
//! instances of the same chat on one real broker.
//!
//! The Go side is `interop/go/gochat` (the examples' chat written with Go neffos and its own
//! `stackexchange/redis` / `stackexchange/nats`), built with `GOTOOLCHAIN=go1.27.3` under
//! `target/`; the Rust side is the examples' chat (`neffos_examples::chat`) with a
//! `RedisExchange` / `NatsExchange` in compatibility mode; every user is neffos.js 0.1.34
//! under Node (`interop/js/gochat.js`).
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used, clippy::print_stderr)]

mod support;

use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use neffos::protocol::gocompat::GoStats;
use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::{Exchange, Server};
use neffos_examples::chat::{self, ChatOptions};
use neffos_nats::NatsExchange;
use neffos_redis::RedisExchange;
use serde_json::Value;
use support::workspace;

const T: Duration = Duration::from_secs(15);
/// The Go side's channel / subject prefix (Go's NATS default).
const GO_PREFIX: &str = "neffos";
const GO_TOOLCHAIN: &str = "go1.27.3";

// ---------------------------------------------------------------------------------------
// The Go chat
// ---------------------------------------------------------------------------------------

/// `interop/go/gochat`, built once per test binary (skipped when its sources and the
/// module files did not change since the last build).
fn gochat() -> &'static Path {
    static BIN: OnceLock<PathBuf> = OnceLock::new();
    BIN.get_or_init(|| {
        let src = workspace().join("interop/go");
        let out = workspace().join("target/interop-go");
        let bin = out.join("neffos-gochat");
        let mut hasher = DefaultHasher::new();
        GO_TOOLCHAIN.hash(&mut hasher);
        for file in ["gochat/main.go", "go.mod", "go.sum"] {
            std::fs::read(src.join(file)).unwrap().hash(&mut hasher);
        }
        let stamp = format!("{:016x}", hasher.finish());
        let stamp_file = out.join("gochat.stamp");
        if bin.is_file() && std::fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp) {
            return bin;
        }
        std::fs::create_dir_all(&out).unwrap();
        let tmp = out.join(format!("gochat-{}", std::process::id()));
        let built = Command::new(std::env::var_os("GO").unwrap_or_else(|| "go".into()))
            .current_dir(&src)
            .env("GOTOOLCHAIN", GO_TOOLCHAIN)
            .args(["build", "-buildvcs=false", "-o"])
            .arg(&tmp)
            .arg("./gochat")
            .output()
            .expect("the Go toolchain is required (go on PATH, or GO=/path/to/go)");
        assert!(
            built.status.success(),
            "go build ./gochat failed:\n{}",
            String::from_utf8_lossy(&built.stderr)
        );
        std::fs::rename(&tmp, &bin).unwrap();
        std::fs::write(&stamp_file, stamp).unwrap();
        bin
    })
}

/// One Go neffos chat process; killed on drop.
struct GoInstance {
    child: Child,
    port: u16,
}

impl GoInstance {
    fn start(broker: &Broker) -> GoInstance {
        let mut child = Command::new(gochat())
            .args(broker.go_args())
            .args(["-prefix", GO_PREFIX])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["event"] == "listening"
                {
                    let addr = v["addr"].as_str().unwrap_or_default().to_owned();
                    let _ = tx.send(addr.rsplit(':').next().unwrap().parse::<u16>().unwrap());
                }
            }
        });
        let port = rx.recv_timeout(T).expect("gochat printed its address");
        GoInstance { child, port }
    }
}

impl Drop for GoInstance {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------
// The Rust chat
// ---------------------------------------------------------------------------------------

/// The broker and the exchanges of both sides.
enum Broker {
    Redis(RedisServer),
    Nats(NatsServer),
}

/// A Rust exchange, kept typed for its Go counters.
#[derive(Clone)]
enum RustExchange {
    Redis(Arc<RedisExchange>),
    Nats(Arc<NatsExchange>),
}

impl RustExchange {
    fn published(&self) -> u64 {
        match self {
            RustExchange::Redis(x) => x.stats().published,
            RustExchange::Nats(x) => x.stats().published,
        }
    }

    fn received(&self) -> u64 {
        match self {
            RustExchange::Redis(x) => x.stats().received,
            RustExchange::Nats(x) => x.stats().received,
        }
    }

    fn go_stats(&self) -> Option<GoStats> {
        match self {
            RustExchange::Redis(x) => x.go_stats(),
            RustExchange::Nats(x) => x.go_stats(),
        }
    }

    fn dyn_arc(&self) -> Arc<dyn Exchange> {
        match self {
            RustExchange::Redis(x) => x.clone(),
            RustExchange::Nats(x) => x.clone(),
        }
    }
}

impl Broker {
    fn name(&self) -> &'static str {
        match self {
            Broker::Redis(_) => "Redis",
            Broker::Nats(_) => "NATS",
        }
    }

    fn go_args(&self) -> Vec<String> {
        match self {
            Broker::Redis(r) => vec![
                "-exchange".into(),
                "redis".into(),
                "-redis-addr".into(),
                format!("127.0.0.1:{}", r.port()),
            ],
            Broker::Nats(n) => vec![
                "-exchange".into(),
                "nats".into(),
                "-nats-url".into(),
                n.url(),
            ],
        }
    }

    async fn exchange(&self, compat: bool) -> RustExchange {
        match self {
            Broker::Redis(r) => {
                let builder = RedisExchange::builder(r.url());
                let builder = if compat {
                    builder.go_compat(GO_PREFIX)
                } else {
                    builder
                };
                RustExchange::Redis(Arc::new(builder.connect().await.unwrap()))
            }
            Broker::Nats(n) => {
                let builder = NatsExchange::builder(n.url());
                let builder = if compat {
                    builder.go_compat(GO_PREFIX)
                } else {
                    builder
                };
                RustExchange::Nats(Arc::new(builder.connect().await.unwrap()))
            }
        }
    }
}

/// One neffos-rs chat instance (the examples' router) on a free port.
struct RustInstance {
    server: Server,
    exchange: RustExchange,
    port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl RustInstance {
    async fn start(broker: &Broker, compat: bool) -> RustInstance {
        let exchange = broker.exchange(compat).await;
        let server = chat::server(Some(exchange.dyn_arc()));
        let app = chat::router(&server, ChatOptions::new("unused-neffos.js"));
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let task = tokio::spawn(async move {
            let _ = axum::serve(listener, app).await;
        });
        RustInstance {
            server,
            exchange,
            port,
            task,
        }
    }

    /// Shuts down like a deployment would: clients get 1001 and reconnect elsewhere.
    async fn stop(self) {
        self.server.shutdown(Duration::from_secs(5)).await;
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------
// neffos.js users
// ---------------------------------------------------------------------------------------

/// A `chat` or `private` event as (event, from, room, text).
type Seen = (String, String, Option<String>, String);

/// A neffos.js user in Node (interop/js/gochat.js).
struct JsUser {
    name: String,
    child: Child,
    stdin: ChildStdin,
    lines: std_mpsc::Receiver<Value>,
    seen: Vec<Seen>,
    /// Connections that ended, and namespace connections restored by neffos.js.
    drops: usize,
    reconnects: usize,
    /// Chat texts received, connection drops and restorations, in order.
    timeline: Vec<Mark>,
}

/// One entry of a user's timeline.
#[derive(Debug, Clone)]
enum Mark {
    Got(String),
    Dropped,
    Restored,
}

impl JsUser {
    fn start(port: u16, name: &str, reconnect_ms: u32) -> JsUser {
        let url = format!("ws://127.0.0.1:{port}/echo");
        let reconnect_ms = reconnect_ms.to_string();
        let (child, stdin, lines) =
            support::spawn_node("gochat.js", &[url.as_str(), name, reconnect_ms.as_str()]);
        let mut user = JsUser {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
            drops: 0,
            reconnects: 0,
            timeline: Vec::new(),
        };
        let ready = user.next_where(|v| v["ev"] == "ready");
        assert_eq!(ready["id"], name);
        user
    }

    /// Sends a command; returns whether neffos.js had a connection to write to.
    fn send(&mut self, cmd: &str) -> bool {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.next_where(|v| v["ev"] == "sent" && v["cmd"] == cmd)["ok"] != false
    }

    fn join(&mut self, room: &str) {
        writeln!(self.stdin, "join {room}").unwrap();
        self.next_where(|v| v["ev"] == "joined" && v["room"] == room);
    }

    /// Reads lines until one matches; `chat`/`private` events on the way are recorded.
    fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self
                .lines
                .recv_timeout(T)
                .unwrap_or_else(|_| panic!("neffos.js user {} went silent", self.name));
            assert_ne!(v["ev"], "fail", "neffos.js {} failed: {v}", self.name);
            self.record(&v);
            if pred(&v) {
                return v;
            }
        }
    }

    fn record(&mut self, v: &Value) {
        if v["ev"] == "dropped" {
            self.drops += 1;
            self.timeline.push(Mark::Dropped);
        }
        if v["ev"] == "connected" && v["reconnected"] == true {
            self.reconnects += 1;
            self.timeline.push(Mark::Restored);
        }
        if v["ev"] == "event" && (v["event"] == "chat" || v["event"] == "private") {
            let body: Value =
                serde_json::from_str(v["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
            let text = v["body"]
                .as_str()
                .and_then(|b| serde_json::from_str::<Value>(b).ok())
                .and_then(|b| b["text"].as_str().map(str::to_owned))
                .unwrap_or_default();
            self.timeline.push(Mark::Got(text));
            self.seen.push((
                v["event"].as_str().unwrap_or_default().to_owned(),
                body["from"].as_str().unwrap_or_default().to_owned(),
                body["room"].as_str().map(str::to_owned),
                body["text"].as_str().unwrap_or_default().to_owned(),
            ));
        }
    }

    /// Like [`Self::next_where`], but gives up (false) after `wait`.
    fn poll_where(&mut self, wait: Duration, pred: impl Fn(&Value) -> bool) -> bool {
        let deadline = std::time::Instant::now() + wait;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let Ok(v) = self.lines.recv_timeout(left) else {
                return false;
            };
            assert_ne!(v["ev"], "fail", "neffos.js {} failed: {v}", self.name);
            self.record(&v);
            if pred(&v) {
                return true;
            }
        }
    }

    /// Waits for a chat/private event with `text`.
    fn expect_text(&mut self, text: &str) {
        if self.seen.iter().any(|s| s.3 == text) {
            return;
        }
        self.next_where(|v| {
            v["ev"] == "event" && v["body"].as_str().is_some_and(|b| b.contains(text))
        });
    }

    /// Waits until neffos.js restored every connection that dropped.
    fn await_reconnected(&mut self) {
        self.drain();
        while self.reconnects < self.drops {
            self.next_where(|v| v["ev"] == "connected" && v["reconnected"] == true);
        }
    }

    /// Everything received so far (after draining what is buffered).
    fn drain(&mut self) -> &[Seen] {
        while let Ok(v) = self.lines.try_recv() {
            assert_ne!(v["ev"], "fail", "neffos.js {} failed: {v}", self.name);
            self.record(&v);
        }
        &self.seen
    }
}

impl Drop for JsUser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

fn chat_seen(from: &str, room: Option<&str>, text: &str) -> Seen {
    (
        "chat".into(),
        from.into(),
        room.map(str::to_owned),
        text.into(),
    )
}

fn private_seen(from: &str, text: &str) -> Seen {
    ("private".into(), from.into(), None, text.into())
}

// ---------------------------------------------------------------------------------------
// One Go and one Rust instance
// ---------------------------------------------------------------------------------------

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_rust_instances_share_redis() {
    go_and_rust(Broker::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_and_rust_instances_share_nats() {
    go_and_rust(Broker::Nats(NatsServer::start())).await;
}

/// Two neffos.js users on a Go instance (`gopher`, `gordon`), two on a Rust instance
/// (`ferris`, `crab`): broadcasts both ways (sender excluded), rooms, sends to an ID both
/// ways, `Server::ask` / `Server.Ask` both ways; every user receives exactly what it
/// should, once.
async fn go_and_rust(broker: Broker) {
    let go = GoInstance::start(&broker);
    let rust = RustInstance::start(&broker, true).await;
    let (go_port, rust_port) = (go.port, rust.port);
    // The test's own thread blocks on the users' pipes; the servers run on the workers.
    let mut gopher = JsUser::start(go_port, "gopher", 0);
    let mut gordon = JsUser::start(go_port, "gordon", 0);
    let mut ferris = JsUser::start(rust_port, "ferris", 0);
    let mut crab = JsUser::start(rust_port, "crab", 0);
    rust.server.flush_exchanges().await;

    // Namespace broadcasts, sender excluded, both ways.
    let published_before = rust.exchange.published();
    gopher.send("chat hello from go");
    ferris.expect_text("hello from go");
    crab.expect_text("hello from go");
    gordon.expect_text("hello from go");
    ferris.send("chat hello from rust");
    gopher.expect_text("hello from rust");
    gordon.expect_text("hello from rust");
    crab.expect_text("hello from rust");
    rust.server.flush_exchanges().await; // the counter moves when Redis acknowledged
    // One envelope for the Rust instances, one Go frame for the Go ones.
    assert_eq!(rust.exchange.published() - published_before, 2);

    // Rooms: only the members, on both sides.
    gordon.join("lobby");
    crab.join("lobby");
    rust.server.flush_exchanges().await;
    gordon.send("roomchat lobby room from go");
    crab.expect_text("room from go");
    crab.send("roomchat lobby room from rust");
    gordon.expect_text("room from rust");
    // Sends to an ID, both ways.
    gopher.send("private ferris go to rust");
    ferris.expect_text("go to rust");
    ferris.send("private gordon rust to go");
    gordon.expect_text("rust to go");

    // Asks both ways: the Rust server asks a client of the Go instance, the Go server
    // (Server.Ask through its stackexchange) a client of the Rust instance.
    assert_eq!(
        http_get(rust_port, "/ask?to=gopher&question=q1").await,
        (200, "js gopher: q1".to_owned())
    );
    assert_eq!(
        http_get(go_port, "/ask?to=crab&question=q2").await,
        (200, "js crab: q2".to_owned())
    );
    // An ID on neither side: Go's format cannot say "nobody", so the Ask times out (504;
    // Go's Redis exchange sometimes reports its read timeout instead: 502).
    let (status, _) = http_get(go_port, "/ask?to=nobody&question=q3").await;
    assert!(matches!(status, 502 | 504), "status {status}");

    // End markers from both sides, then every user's whole history must be exact.
    gopher.send("chat end go");
    crab.send("chat end rust");
    for u in [&mut gordon, &mut ferris, &mut crab] {
        u.expect_text("end go");
    }
    for u in [&mut gopher, &mut gordon, &mut ferris] {
        u.expect_text("end rust");
    }
    let mut expected = std::collections::HashMap::new();
    expected.insert(
        "gopher",
        vec![
            chat_seen("ferris", None, "hello from rust"),
            chat_seen("crab", None, "end rust"),
        ],
    );
    expected.insert(
        "gordon",
        vec![
            chat_seen("gopher", None, "hello from go"),
            chat_seen("ferris", None, "hello from rust"),
            chat_seen("crab", Some("lobby"), "room from rust"),
            private_seen("ferris", "rust to go"),
            chat_seen("gopher", None, "end go"),
            chat_seen("crab", None, "end rust"),
        ],
    );
    expected.insert(
        "ferris",
        vec![
            chat_seen("gopher", None, "hello from go"),
            private_seen("gopher", "go to rust"),
            chat_seen("gopher", None, "end go"),
            chat_seen("crab", None, "end rust"),
        ],
    );
    expected.insert(
        "crab",
        vec![
            chat_seen("gopher", None, "hello from go"),
            chat_seen("ferris", None, "hello from rust"),
            chat_seen("gordon", Some("lobby"), "room from go"),
            chat_seen("gopher", None, "end go"),
        ],
    );
    // Let anything duplicated or misrouted arrive before judging.
    tokio::time::sleep(Duration::from_millis(300)).await;
    for mut user in [gopher, gordon, ferris, crab] {
        let mut got = user.drain().to_vec();
        let mut want = expected[user.name.as_str()].clone();
        got.sort();
        want.sort();
        assert_eq!(got, want, "what {} received", user.name);
    }
    let go_stats = rust.exchange.go_stats().unwrap();
    eprintln!("compat counters: {go_stats:?}");
    assert!(go_stats.translated >= 5);
    rust.stop().await;
    drop(go);
}

// ---------------------------------------------------------------------------------------
// Rolling migration behind a load balancer
// ---------------------------------------------------------------------------------------

/// The load balancer: a loopback TCP proxy sending each new connection to the next backend
/// (round robin) among the current ones.
struct Proxy {
    port: u16,
    backends: Arc<std::sync::Mutex<Vec<u16>>>,
    /// Open proxied connections per backend.
    open: Arc<std::sync::Mutex<std::collections::HashMap<u16, usize>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Proxy {
    async fn start(backends: Vec<u16>) -> Proxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let backends = Arc::new(std::sync::Mutex::new(backends));
        let open = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
        let task = tokio::spawn({
            let backends = backends.clone();
            let open = open.clone();
            async move {
                let mut next = 0usize;
                while let Ok((mut client, _)) = listener.accept().await {
                    let backend = {
                        let list = backends.lock().unwrap();
                        if list.is_empty() {
                            continue;
                        }
                        next += 1;
                        list[next % list.len()]
                    };
                    let open = open.clone();
                    tokio::spawn(async move {
                        let Ok(mut upstream) =
                            tokio::net::TcpStream::connect(("127.0.0.1", backend)).await
                        else {
                            return;
                        };
                        let _ = (client.set_nodelay(true), upstream.set_nodelay(true));
                        *open.lock().unwrap().entry(backend).or_insert(0) += 1;
                        let _ = tokio::io::copy_bidirectional(&mut client, &mut upstream).await;
                        *open.lock().unwrap().entry(backend).or_insert(1) -= 1;
                    });
                }
            }
        });
        Proxy {
            port,
            backends,
            open,
            task,
        }
    }

    fn set_backends(&self, backends: Vec<u16>) {
        *self.backends.lock().unwrap() = backends;
    }

    fn open(&self, backend: u16) -> usize {
        self.open
            .lock()
            .unwrap()
            .get(&backend)
            .copied()
            .unwrap_or(0)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a migration step sent and lost. A lost delivery is put down to the sender being
/// offline (neffos.js reconnecting: the message never left), to the receiver being offline
/// (the message was broadcast while it reconnected), or else to the transit: messages in
/// flight on the instance being replaced.
#[derive(Debug, Default)]
struct StepReport {
    sent: usize,
    expected: usize,
    lost_sender_offline: usize,
    lost_receiver_offline: usize,
    lost_in_transit: usize,
}

impl StepReport {
    fn lost(&self) -> usize {
        self.lost_sender_offline + self.lost_receiver_offline + self.lost_in_transit
    }
}

/// The messages of a sender (`sender_texts`, in sending order) that a receiver missed while
/// it was offline: those between the last one it got before a drop and the first one it
/// got after that.
fn missed_offline(timeline: &[Mark], sender_texts: &[&str]) -> std::collections::HashSet<usize> {
    let index: std::collections::HashMap<&str, usize> = sender_texts
        .iter()
        .enumerate()
        .map(|(i, t)| (*t, i))
        .collect();
    let mut missed = std::collections::HashSet::new();
    let mut last: Option<usize> = None;
    let mut window: Option<Option<usize>> = None;
    for mark in timeline {
        match mark {
            Mark::Dropped => window = Some(last),
            Mark::Restored => {}
            Mark::Got(text) => {
                let Some(&i) = index.get(text.as_str()) else {
                    continue;
                };
                if let Some(from) = window.take() {
                    missed.extend(from.map_or(0, |f| f + 1)..i);
                }
                last = Some(i);
            }
        }
    }
    if let Some(from) = window {
        missed.extend(from.map_or(0, |f| f + 1)..sender_texts.len());
    }
    missed
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_migration_on_redis() {
    rolling_migration(Broker::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rolling_migration_on_nats() {
    rolling_migration(Broker::Nats(NatsServer::start())).await;
}

/// 2 Go → 1 Go + 1 Rust → 2 Rust behind the proxy, six neffos.js users (reconnecting by
/// themselves) chatting the whole time. Every chat message must reach every other user at
/// most once; losses are reported per step, and the steady steps (before and after) lose
/// nothing.
async fn rolling_migration(broker: Broker) {
    const USERS: usize = 6;
    let broker = Arc::new(broker);
    let g1 = GoInstance::start(&broker);
    let g2 = GoInstance::start(&broker);
    let proxy = Arc::new(Proxy::start(vec![g1.port, g2.port]).await);
    let mut users: Vec<JsUser> = (0..USERS)
        .map(|i| JsUser::start(proxy.port, &format!("u{i}"), 200))
        .collect();

    let mut sent: Vec<(usize, String, String, bool)> = Vec::new();
    let mut step =
        |users: &mut Vec<JsUser>, n: usize, transition: Option<&tokio::task::JoinHandle<()>>| {
            // Chat traffic (one message per user every 20 ms) until the transition is over, and
            // at least 20 rounds after it, so that clients of a replaced instance reconnected.
            let mut after = 0;
            for tick in 0.. {
                for u in users.iter_mut() {
                    let text = format!("s{n}-{}-{tick}", u.name);
                    let ok = u.send(&format!("chat {text}"));
                    sent.push((n, u.name.clone(), text, ok));
                }
                std::thread::sleep(Duration::from_millis(20)); // the traffic's pace
                if transition.is_none_or(|t| t.is_finished()) {
                    after += 1;
                }
                if after >= 20 {
                    break;
                }
            }
            for u in users.iter_mut() {
                u.await_reconnected();
            }
        };

    // Go's exchanges subscribe a new connection without waiting for the broker's
    // confirmation (PROTOCOL.md §12.3): probe rounds until every user hears every other.
    for round in 0.. {
        assert!(round < 50, "users never heard each other");
        for u in users.iter_mut() {
            let text = format!("probe-{}-{round}", u.name);
            u.send(&format!("chat {text}"));
        }
        let mut all = true;
        for u in users.iter_mut() {
            let heard = |u: &JsUser| {
                (0..USERS).filter(|i| format!("u{i}") != u.name).all(|i| {
                    u.seen
                        .iter()
                        .any(|s| s.3.starts_with(&format!("probe-u{i}-")))
                })
            };
            while !heard(u) {
                if !u.poll_where(Duration::from_millis(200), |v| v["ev"] == "event") {
                    all = false;
                    break;
                }
            }
        }
        if all {
            break;
        }
    }

    // Step 0: two Go instances.
    step(&mut users, 0, None);

    // Step 1: a Rust instance replaces the first Go instance.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let transition = tokio::spawn({
        let (broker, proxy) = (broker.clone(), proxy.clone());
        let g2_port = g2.port;
        async move {
            let r1 = RustInstance::start(&broker, true).await;
            proxy.set_backends(vec![g2_port, r1.port]);
            let g1_port = g1.port;
            drop(g1);
            assert!(neffos::testkit::eventually(T, || proxy.open(g1_port) == 0).await);
            let _ = tx.send(r1);
        }
    });
    step(&mut users, 1, Some(&transition));
    let r1 = rx.await.unwrap();

    // Step 2: a second Rust instance replaces the last Go instance.
    let (tx, rx) = tokio::sync::oneshot::channel();
    let transition = tokio::spawn({
        let (broker, proxy) = (broker.clone(), proxy.clone());
        let r1_port = r1.port;
        async move {
            let r2 = RustInstance::start(&broker, true).await;
            proxy.set_backends(vec![r1_port, r2.port]);
            let g2_port = g2.port;
            drop(g2);
            assert!(neffos::testkit::eventually(T, || proxy.open(g2_port) == 0).await);
            let _ = tx.send(r2);
        }
    });
    step(&mut users, 2, Some(&transition));
    let r2 = rx.await.unwrap();

    // Step 3: two Rust instances.
    step(&mut users, 3, None);

    // End markers: once every user got every other user's, everything delivered is in.
    for u in users.iter_mut() {
        let text = format!("end-{}", u.name);
        u.send(&format!("chat {text}"));
    }
    for u in users.iter_mut() {
        for i in 0..USERS {
            if format!("u{i}") != u.name {
                u.expect_text(&format!("end-u{i}"));
            }
        }
    }
    let mut reports: Vec<StepReport> = (0..4).map(|_| StepReport::default()).collect();
    for (n, _, _, _) in &sent {
        reports[*n].sent += 1;
    }
    for u in users.iter_mut() {
        u.drain();
        let mut counts = std::collections::HashMap::new();
        for s in &u.seen {
            *counts.entry(s.3.clone()).or_insert(0usize) += 1;
        }
        for (text, n) in &counts {
            assert_eq!(*n, 1, "{} received {text:?} {n} times", u.name);
        }
        for i in 0..USERS {
            let sender = format!("u{i}");
            if sender == u.name {
                continue;
            }
            let mine: Vec<&(usize, String, String, bool)> =
                sent.iter().filter(|m| m.1 == sender).collect();
            let texts: Vec<&str> = mine.iter().map(|m| m.2.as_str()).collect();
            let offline = missed_offline(&u.timeline, &texts);
            for (k, (n, _, text, ok)) in mine.iter().enumerate() {
                let r = &mut reports[*n];
                r.expected += 1;
                if counts.contains_key(text) {
                    continue;
                }
                if !ok {
                    r.lost_sender_offline += 1;
                } else if offline.contains(&k) {
                    r.lost_receiver_offline += 1;
                } else {
                    r.lost_in_transit += 1;
                }
            }
        }
    }
    let labels = [
        "2 Go",
        "1 Go + 1 Rust (first Go replaced)",
        "2 Rust (last Go replaced)",
        "2 Rust",
    ];
    for (label, r) in labels.iter().zip(&reports) {
        eprintln!(
            "rolling migration [{}] {label}: {} messages sent, {} deliveries expected, {} lost \
             ({} sender reconnecting, {} receiver reconnecting, {} in flight on the replaced instance)",
            broker.name(),
            r.sent,
            r.expected,
            r.lost(),
            r.lost_sender_offline,
            r.lost_receiver_offline,
            r.lost_in_transit,
        );
    }
    assert_eq!(reports[0].lost(), 0, "nothing is lost before the migration");
    assert_eq!(reports[3].lost(), 0, "nothing is lost after the migration");
    drop(users);
    r1.stop().await;
    r2.stop().await;
}

// ---------------------------------------------------------------------------------------
// Broker traffic with and without the compatibility mode
// ---------------------------------------------------------------------------------------

/// Per message sent by instance A to a user on instance B: publishes by A, payloads
/// received by B.
#[derive(Debug)]
struct Traffic {
    broadcast_published: f64,
    broadcast_received: f64,
    send_published: f64,
}

/// Two Rust instances, `compat` on or off, one Rust client on the second; 100 broadcasts
/// then 100 sends to its ID from the first.
async fn traffic(broker: &Broker, compat: bool) -> Traffic {
    const N: u64 = 100;
    let a = RustInstance::start(broker, compat).await;
    let b = RustInstance::start(broker, compat).await;
    let got = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let events = neffos::Events::new().on("news", {
        let got = got.clone();
        move |_ns: neffos::NsConn, _msg: neffos::Message| {
            got.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            async {}
        }
    });
    let client = neffos::Client::builder(format!("ws://127.0.0.1:{}/echo", b.port))
        .header("X-Username", "bob")
        .namespaces(neffos::Namespaces::new().namespace("default", events))
        .connect()
        .await
        .unwrap();
    client.connect("default").await.unwrap();
    b.server.flush_exchanges().await;
    let (published, received) = (a.exchange.published(), b.exchange.received());
    for i in 0..N {
        let msg = neffos::Message::new("default", "news", format!("b{i}"));
        a.server
            .broadcast(neffos::Target::namespace("default"), msg)
            .unwrap();
    }
    let arrived = || got.load(std::sync::atomic::Ordering::Relaxed);
    assert!(neffos::testkit::eventually(T, || arrived() == N).await);
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let broadcast_published = (a.exchange.published() - published) as f64 / N as f64;
    let broadcast_received = (b.exchange.received() - received) as f64 / N as f64;
    let published = a.exchange.published();
    for i in 0..N {
        let msg = neffos::Message::new("default", "news", format!("s{i}"));
        a.server
            .broadcast(neffos::Target::conn("default", "bob"), msg)
            .unwrap();
    }
    assert!(neffos::testkit::eventually(T, || arrived() == 2 * N).await);
    a.server.flush_exchanges().await;
    let send_published = (a.exchange.published() - published) as f64 / N as f64;
    drop(client);
    a.stop().await;
    b.stop().await;
    Traffic {
        broadcast_published,
        broadcast_received,
        send_published,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_traffic_with_and_without_compat() {
    for broker in [
        Broker::Redis(RedisServer::start()),
        Broker::Nats(NatsServer::start()),
    ] {
        let off = traffic(&broker, false).await;
        let on = traffic(&broker, true).await;
        eprintln!(
            "broker traffic [{}], 2 Rust instances: per broadcast {:.2} publishes off / {:.2} on, \
             {:.2} / {:.2} payloads received by the other instance; per send to an ID {:.2} / {:.2} publishes",
            broker.name(),
            off.broadcast_published,
            on.broadcast_published,
            off.broadcast_received,
            on.broadcast_received,
            off.send_published,
            on.send_published,
        );
        // (cluster heartbeats add a few publishes to the count)
        assert!((off.broadcast_published - 1.0).abs() < 0.05);
        assert!((on.broadcast_published - 2.0).abs() < 0.05);
        assert!((off.send_published - 1.0).abs() < 0.05);
        assert!((on.send_published - 2.0).abs() < 0.05);
        // Exactly once to the client either way (asserted by the counts above); with the
        // mode on, Redis also hands the other instance the Go copy (dropped there), NATS
        // too (no_echo only spares the publisher itself).
        assert!((off.broadcast_received - 1.0).abs() < 0.05);
    }
}
