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

const T: Duration = Duration::from_secs(15);
/// The Go side's channel / subject prefix (Go's NATS default).
const GO_PREFIX: &str = "neffos";
const GO_TOOLCHAIN: &str = "go1.27.3";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

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

    fn go_stats(&self) -> Option<&GoStats> {
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
}

fn ensure_npm() {
    static DONE: OnceLock<()> = OnceLock::new();
    DONE.get_or_init(|| {
        let dir = workspace().join("interop/js");
        if !dir.join("node_modules/neffos.js").exists() {
            let status = Command::new("npm")
                .args(["ci", "--no-audit", "--no-fund"])
                .current_dir(&dir)
                .status()
                .expect("npm is required for the neffos.js clients (install Node.js and npm)");
            assert!(status.success(), "npm ci failed in interop/js");
        }
    });
}

impl JsUser {
    fn start(port: u16, name: &str, reconnect_ms: u32) -> JsUser {
        ensure_npm();
        let mut child = Command::new("node")
            .arg("gochat.js")
            .args([
                format!("ws://127.0.0.1:{port}/echo"),
                name.to_owned(),
                reconnect_ms.to_string(),
            ])
            .current_dir(workspace().join("interop/js"))
            .env("INTEROP_WATCHDOG_MS", "300000")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .expect("node is required for the neffos.js clients");
        let stdin = child.stdin.take().unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Ok(v) = serde_json::from_str::<Value>(&line) {
                    let _ = tx.send(v);
                }
            }
        });
        let mut user = JsUser {
            name: name.to_owned(),
            child,
            stdin,
            lines,
            seen: Vec::new(),
        };
        let ready = user.next_where(|v| v["ev"] == "ready");
        assert_eq!(ready["id"], name);
        user
    }

    fn send(&mut self, cmd: &str) {
        writeln!(self.stdin, "{cmd}").unwrap();
        self.next_where(|v| v["ev"] == "sent" && v["cmd"] == cmd);
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
        if v["ev"] == "event" && (v["event"] == "chat" || v["event"] == "private") {
            let body: Value =
                serde_json::from_str(v["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
            self.seen.push((
                v["event"].as_str().unwrap_or_default().to_owned(),
                body["from"].as_str().unwrap_or_default().to_owned(),
                body["room"].as_str().map(str::to_owned),
                body["text"].as_str().unwrap_or_default().to_owned(),
            ));
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
    // An ID on neither side: Go's format cannot say "nobody", so the Ask times out.
    assert_eq!(http_get(go_port, "/ask?to=nobody&question=q3").await.0, 504);

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
    assert!(
        go_stats
            .translated
            .load(std::sync::atomic::Ordering::Relaxed)
            >= 5
    );
    rust.stop().await;
    drop(go);
}
