//! Interoperability with the real Go neffos module, `github.com/kataras/neffos` v0.0.25.
//!
//! - (A) The Go neffos client (`interop/go/client`) runs named scenarios against our server;
//!   it checks what it sees itself (exit status, JSON lines) and our server's handlers
//!   report what they saw on a channel.
//! - (B) Our Rust client drives the Go neffos server (`interop/go/server`), which prints one
//!   JSON line per observation.
//!
//! The Go programs are built once per test binary into `<target>/interop-go/` with
//! `GOTOOLCHAIN=go1.27.3 go build` (skipped when the sources did not change since the last
//! build). Without a `go` command (or `$GO`) the tests fail: they are never skipped.
#![cfg(feature = "testkit")]

use std::collections::hash_map::DefaultHasher;
use std::fmt::Write as _;
use std::fs;
use std::hash::{Hash, Hasher};
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use bytes::Bytes;
use neffos::error::{AskErrorKind, DialErrorKind, NamespaceErrorKind, WriteErrorKind};
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{
    Client, Config, Events, Json, Message, Namespaces, NsConn, Reply, Server, ServerBuilder, State,
    Target, events,
};
use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::{Child, ChildStdin, Command};
use tokio::sync::mpsc;

/// Deadline of one wait for an event, a line or a reply.
const T: Duration = Duration::from_secs(10);
/// Deadline of a whole Go client scenario.
const SCENARIO_TIMEOUT: Duration = Duration::from_secs(90);
/// Deadline of `go build` (the first one may download the toolchain and the modules).
const BUILD_TIMEOUT: Duration = Duration::from_secs(900);
/// The Go toolchain neffos v0.0.25 needs (`go 1.27` in its go.mod).
const GO_TOOLCHAIN: &str = "go1.27.3";

/// Bytes that must survive a binary round trip: NUL, the field separator, bytes that are not
/// UTF-8 and a trailing separator. Same as `binaryPayload` in the Go client.
const BINARY_PAYLOAD: &[u8] = &[0x00, 0x01, b';', b'x', 0xff, 0xfe, 0x00, b';', 0x80, b';'];

// ---------------------------------------------------------------------------------------
// Building the Go programs
// ---------------------------------------------------------------------------------------

#[derive(Debug)]
struct GoPrograms {
    client: PathBuf,
    server: PathBuf,
}

/// The built Go programs; builds them on first use (once per test binary).
fn go_programs() -> &'static GoPrograms {
    static PROGRAMS: OnceLock<Result<GoPrograms, String>> = OnceLock::new();
    match PROGRAMS.get_or_init(build_go_programs) {
        Ok(programs) => programs,
        Err(e) => panic!("cannot build the Go interop programs: {e}"),
    }
}

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR").map(PathBuf::from) {
        Some(dir) if dir.is_absolute() => dir,
        Some(dir) => workspace_root().join(dir),
        None => workspace_root().join("target"),
    }
}

/// A fingerprint of everything the build depends on: the Go sources, go.mod, go.sum and
/// the toolchain.
fn source_stamp(src: &Path, go: &std::ffi::OsStr) -> Result<String, String> {
    fn walk(dir: &Path, files: &mut Vec<PathBuf>) -> std::io::Result<()> {
        for entry in fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(&path, files)?;
            } else if path.extension().is_some_and(|e| e == "go")
                || path
                    .file_name()
                    .is_some_and(|n| n == "go.mod" || n == "go.sum")
            {
                files.push(path);
            }
        }
        Ok(())
    }
    let mut files = Vec::new();
    walk(src, &mut files).map_err(|e| format!("reading {}: {e}", src.display()))?;
    files.sort();
    let mut hasher = DefaultHasher::new();
    (GO_TOOLCHAIN, go).hash(&mut hasher);
    for file in &files {
        let content = fs::read(file).map_err(|e| format!("reading {}: {e}", file.display()))?;
        (file.strip_prefix(src).unwrap_or(file), content).hash(&mut hasher);
    }
    Ok(format!("{GO_TOOLCHAIN} {:016x}\n", hasher.finish()))
}

#[allow(clippy::print_stderr)]
fn build_go_programs() -> Result<GoPrograms, String> {
    let src = workspace_root().join("interop/go");
    let out = target_dir().join("interop-go");
    let go = std::env::var_os("GO").unwrap_or_else(|| "go".into());
    let exe = |name: &str| out.join(format!("{name}{}", std::env::consts::EXE_SUFFIX));
    let programs = GoPrograms {
        client: exe("neffos-go-client"),
        server: exe("neffos-go-server"),
    };

    let stamp = source_stamp(&src, &go)?;
    let stamp_file = out.join("stamp");
    if fs::read_to_string(&stamp_file).is_ok_and(|s| s == stamp)
        && programs.client.is_file()
        && programs.server.is_file()
    {
        return Ok(programs);
    }

    // Build into a private directory, then rename: concurrent test processes never see a
    // half-written program.
    let tmp = out.join(format!("build-{}", std::process::id()));
    fs::create_dir_all(&tmp).map_err(|e| format!("creating {}: {e}", tmp.display()))?;
    let log_path = tmp.join("build.log");
    let log = fs::File::create(&log_path).map_err(|e| format!("creating the build log: {e}"))?;
    let log_err = log.try_clone().map_err(|e| e.to_string())?;
    let started = Instant::now();
    let spawned = std::process::Command::new(&go)
        .current_dir(&src)
        .env("GOTOOLCHAIN", GO_TOOLCHAIN)
        .args(["build", "-buildvcs=false", "-o"])
        .arg(format!("{}/", tmp.display()))
        .args(["./client", "./server"])
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(log_err)
        .spawn();
    let mut child = match spawned {
        Ok(child) => child,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let _ = fs::remove_dir_all(&tmp);
            return Err(format!(
                "the Go toolchain is required by the interop tests, but `{}` was not found \
                 (install Go >= 1.21 and put `go` on PATH, or set GO=/path/to/go; it downloads \
                 {GO_TOOLCHAIN} itself through the module proxy)",
                go.to_string_lossy()
            ));
        }
        Err(e) => return Err(format!("running `{}`: {e}", go.to_string_lossy())),
    };
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if started.elapsed() > BUILD_TIMEOUT => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("`go build` still running after {BUILD_TIMEOUT:?}"));
            }
            // Polling a child process: there is no portable blocking wait with a deadline.
            Ok(None) => std::thread::sleep(Duration::from_millis(50)),
            Err(e) => return Err(format!("waiting for `go build`: {e}")),
        }
    };
    let build_log = fs::read_to_string(&log_path).unwrap_or_default();
    if !status.success() {
        let _ = fs::remove_dir_all(&tmp);
        return Err(format!(
            "`GOTOOLCHAIN={GO_TOOLCHAIN} go build` in {} failed ({status}):\n{build_log}",
            src.display()
        ));
    }
    for (built, dest) in [("client", &programs.client), ("server", &programs.server)] {
        let built = tmp.join(format!("{built}{}", std::env::consts::EXE_SUFFIX));
        fs::rename(&built, dest)
            .map_err(|e| format!("moving {} to {}: {e}", built.display(), dest.display()))?;
    }
    let _ = fs::remove_dir_all(&tmp);
    fs::write(&stamp_file, stamp).map_err(|e| format!("writing the stamp: {e}"))?;
    eprintln!(
        "built the Go interop programs with {GO_TOOLCHAIN} in {:?}",
        started.elapsed()
    );
    Ok(programs)
}

// ---------------------------------------------------------------------------------------
// Running the Go programs
// ---------------------------------------------------------------------------------------

/// A running Go program: its stdout JSON lines arrive on a channel; everything it printed
/// (stdout and stderr) is kept for failure messages. Killed when dropped.
struct GoProcess {
    name: String,
    child: Child,
    /// Kept open: the Go server exits when its stdin closes.
    _stdin: Option<ChildStdin>,
    lines: mpsc::UnboundedReceiver<Value>,
    output: Arc<parking_lot::Mutex<String>>,
}

impl GoProcess {
    fn spawn(name: &str, program: &Path, args: &[&str]) -> Self {
        let mut child = Command::new(program)
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .kill_on_drop(true)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", program.display()));
        let output = Arc::new(parking_lot::Mutex::new(String::new()));
        let (tx, lines) = mpsc::unbounded_channel();
        let stdout = child.stdout.take().expect("piped stdout");
        let out = output.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stdout).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = writeln!(out.lock(), "{line}");
                match serde_json::from_str::<Value>(&line) {
                    Ok(value) => {
                        let _ = tx.send(value);
                    }
                    Err(e) => {
                        let _ = writeln!(out.lock(), "  ^ not JSON: {e}");
                    }
                }
            }
        });
        let stderr = child.stderr.take().expect("piped stderr");
        let out = output.clone();
        tokio::spawn(async move {
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                let _ = writeln!(out.lock(), "stderr: {line}");
            }
        });
        let stdin = child.stdin.take();
        GoProcess {
            name: name.to_owned(),
            child,
            _stdin: stdin,
            lines,
            output,
        }
    }

    fn output(&self) -> String {
        self.output.lock().clone()
    }

    /// Waits for the next line that satisfies `pred`, skipping the others.
    async fn expect(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.lines.recv()).await {
                Ok(Some(line)) if pred(&line) => return line,
                Ok(Some(_)) => {}
                Ok(None) => panic!(
                    "{}: exited while the test waited for {what}; its output:\n{}",
                    self.name,
                    self.output()
                ),
                Err(_) => panic!(
                    "{}: timed out waiting for {what}; its output:\n{}",
                    self.name,
                    self.output()
                ),
            }
        }
    }

    /// Waits for the next observation named `event` that satisfies `pred`.
    async fn expect_event(&mut self, event: &str, pred: impl Fn(&Value) -> bool) -> Value {
        self.expect(event, |v| str_of(v, "event") == event && pred(v))
            .await
    }

    /// Waits for the process to exit; returns its exit status and every JSON line left.
    async fn finish(mut self, timeout: Duration) -> (std::process::ExitStatus, Vec<Value>) {
        let status = match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(Ok(status)) => status,
            Ok(Err(e)) => panic!("{}: waiting: {e}", self.name),
            Err(_) => panic!(
                "{}: still running after {timeout:?}; its output:\n{}",
                self.name,
                self.output()
            ),
        };
        let mut lines = Vec::new();
        // The reader task ends at EOF, which follows the exit.
        while let Ok(Some(line)) = tokio::time::timeout(T, self.lines.recv()).await {
            lines.push(line);
        }
        (status, lines)
    }
}

fn str_of<'a>(v: &'a Value, key: &str) -> &'a str {
    v[key].as_str().unwrap_or("")
}

fn bool_of(v: &Value, key: &str) -> bool {
    v[key].as_bool().unwrap_or(false)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().fold(String::new(), |mut s, b| {
        let _ = write!(s, "{b:02x}");
        s
    })
}

/// Runs a Go client scenario against `url` to its end and returns its JSON lines; fails the
/// test when the scenario fails.
async fn run_go_client(url: &str, scenario: &str, extra: &[&str]) -> Vec<Value> {
    let programs = go_programs();
    let mut args = vec!["-url", url, "-scenario", scenario];
    args.extend_from_slice(extra);
    let process = GoProcess::spawn(&format!("Go client {scenario}"), &programs.client, &args);
    let output = process.output.clone();
    let (status, lines) = process.finish(SCENARIO_TIMEOUT).await;
    let passed = lines.last().is_some_and(|l| str_of(l, "result") == "pass");
    assert!(
        status.success() && passed,
        "Go client scenario {scenario:?} failed ({status}); its output:\n{}",
        output.lock()
    );
    lines
}

/// The `field` of the first step line named `step`.
fn step_field(lines: &[Value], step: &str, field: &str) -> String {
    lines
        .iter()
        .find(|l| str_of(l, "step") == step)
        .map(|l| str_of(l, field).to_owned())
        .unwrap_or_else(|| panic!("no {step:?} step in {lines:#?}"))
}

// ---------------------------------------------------------------------------------------
// (A) Go neffos client -> our server
// ---------------------------------------------------------------------------------------

/// What our server's handlers saw.
#[derive(Debug, Clone)]
struct Obs {
    event: String,
    id: String,
    ns: String,
    room: String,
    body: Bytes,
    binary: bool,
    native: bool,
    err: Option<String>,
}

impl Obs {
    fn of(ns: &NsConn, msg: &Message) -> Self {
        Obs {
            event: msg.event.to_string(),
            id: ns.conn().id().to_owned(),
            ns: msg.namespace.to_string(),
            room: msg.room.to_string(),
            body: msg.body.clone(),
            binary: msg.binary,
            native: msg.is_native,
            err: msg.error().map(str::to_owned),
        }
    }

    fn conn(event: &str, id: &str) -> Self {
        Obs {
            event: event.to_owned(),
            id: id.to_owned(),
            ns: String::new(),
            room: String::new(),
            body: Bytes::new(),
            binary: false,
            native: false,
            err: None,
        }
    }

    fn body_str(&self) -> &str {
        std::str::from_utf8(&self.body).unwrap_or("<not UTF-8>")
    }
}

type ObsTx = mpsc::UnboundedSender<Obs>;

/// Our server's observations, in order.
struct Observed {
    rx: mpsc::UnboundedReceiver<Obs>,
    seen: Vec<Obs>,
}

impl Observed {
    /// Waits for the next observation named `event` that satisfies `pred`.
    async fn expect(&mut self, event: &str, pred: impl Fn(&Obs) -> bool) -> Obs {
        let deadline = tokio::time::Instant::now() + T;
        loop {
            match tokio::time::timeout_at(deadline, self.rx.recv()).await {
                Ok(Some(obs)) => {
                    self.seen.push(obs.clone());
                    if obs.event == event && pred(&obs) {
                        return obs;
                    }
                }
                Ok(None) => panic!("observer gone while waiting for {event}"),
                Err(_) => panic!(
                    "timed out waiting for {event}; the server observed {:#?}",
                    self.seen
                ),
            }
        }
    }

    /// Everything observed so far.
    fn all(&mut self) -> &[Obs] {
        while let Ok(obs) = self.rx.try_recv() {
            self.seen.push(obs);
        }
        &self.seen
    }
}

fn record(tx: &ObsTx, ns: &NsConn, msg: &Message) {
    let _ = tx.send(Obs::of(ns, msg));
}

/// A handler that only records.
fn recorder(
    tx: &ObsTx,
) -> impl Fn(NsConn, Message) -> std::future::Ready<()> + Send + Sync + use<> {
    let tx = tx.clone();
    move |ns, msg| {
        record(&tx, &ns, &msg);
        std::future::ready(())
    }
}

fn system_recorders(tx: &ObsTx) -> Events {
    Events::new()
        .on(events::ON_NAMESPACE_CONNECTED, recorder(tx))
        .on(events::ON_NAMESPACE_DISCONNECT, recorder(tx))
        .on(events::ON_ROOM_JOINED, recorder(tx))
        .on(events::ON_ROOM_LEFT, recorder(tx))
}

fn body_string(msg: &Message) -> String {
    String::from_utf8_lossy(&msg.body).into_owned()
}

/// Asks the client through [`Server::ask`] (or [`NsConn::ask`] when `label` is `conn_ask`),
/// records the outcome as `label`, and turns it into the text the handler replies with.
async fn ask_client(tx: &ObsTx, ns: &NsConn, label: &str, event: &str, body: Bytes) -> Reply {
    let result = if label == "conn_ask" {
        ns.ask(event, body).await
    } else {
        let server = ns.conn().server().expect("server side");
        server
            .ask(ns.conn().id(), Message::new(ns.namespace(), event, body), T)
            .await
    };
    let mut obs = Obs::conn(label, ns.conn().id());
    obs.ns = ns.namespace().to_owned();
    match result {
        Ok(reply) => {
            obs.body = reply.body.clone();
            let _ = tx.send(obs);
            Reply::new(format!("client said: {}", body_string(&reply)))
        }
        Err(e) => {
            // The peer's own error text, without our context.
            let text = e.remote().map_or_else(|| e.to_string(), str::to_owned);
            obs.err = Some(text.clone());
            let _ = tx.send(obs);
            Reply::new(format!("error: {text}"))
        }
    }
}

/// The JSON request of the typed scenario (Go's `neffos.Marshal(typedAdd{...})`).
#[derive(serde::Deserialize)]
struct TypedAdd {
    a: i64,
    b: i64,
}

/// The JSON answer of the typed scenario.
#[derive(serde::Serialize)]
struct TypedSum {
    sum: i64,
    by: &'static str,
    call: u64,
}

/// The state of the typed scenario's handlers: counts the typed Asks.
#[derive(Clone, Default)]
struct TypedApp {
    calls: Arc<std::sync::atomic::AtomicU64>,
}

impl TypedApp {
    fn sum(&self, add: &TypedAdd) -> TypedSum {
        TypedSum {
            sum: add.a + add.b,
            by: "rust",
            call: self
                .calls
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed)
                + 1,
        }
    }
}

/// The namespaces of our server for the Go client scenarios. Each event does what the Go
/// server of direction B does for it (see the list in `interop/go/server/main.go`).
fn rust_server_namespaces(tx: &ObsTx) -> Namespaces {
    let chat_tx = tx.clone();
    let bin_tx = tx.clone();
    let (ask_tx, conn_ask_tx, ask_fail_tx) = (tx.clone(), tx.clone(), tx.clone());
    let default = system_recorders(tx)
        .on("room-chat", recorder(tx))
        .on("chat", move |ns: NsConn, msg: Message| {
            record(&chat_tx, &ns, &msg);
            async move { ns.emit("chat-back", msg.body) }
        })
        .on("bin", move |ns: NsConn, msg: Message| {
            record(&bin_tx, &ns, &msg);
            async move { ns.emit_binary("bin-back", msg.body) }
        })
        .on(
            "echo",
            |_ns, msg: Message| async move { Reply::new(msg.body) },
        )
        .on("fail", |_ns, _msg| async {
            Err::<(), _>("nope; exact text")
        })
        .on("room-broadcast", |ns: NsConn, msg: Message| async move {
            let room = body_string(&msg);
            let server = ns.conn().server().expect("server side");
            server.broadcast(
                Target::room(ns.namespace(), &room),
                Message::new("", "room-msg", format!("hello {room}")),
            )?;
            server.broadcast(
                Target::namespace(ns.namespace()),
                Message::new("", "marker", msg.body),
            )?;
            Ok::<_, neffos::BroadcastError>(Reply::new("ok"))
        })
        .on("force-join", |ns: NsConn, msg: Message| async move {
            ns.join_room(&body_string(&msg)).await?;
            Ok::<_, neffos::RoomError>(Reply::new("ok"))
        })
        .on("force-leave", |ns: NsConn, msg: Message| async move {
            ns.leave_room(&body_string(&msg)).await?;
            Ok::<_, neffos::RoomError>(Reply::new("ok"))
        })
        .on("force-connect", |ns: NsConn, msg: Message| async move {
            ns.conn().connect(&body_string(&msg)).await?;
            Ok::<_, neffos::NamespaceError>(Reply::new("ok"))
        })
        .on("force-disconnect", |ns: NsConn, msg: Message| async move {
            let target = ns
                .conn()
                .namespace(&body_string(&msg))
                .ok_or("bad namespace")?;
            target.disconnect().await?;
            Ok::<_, Box<dyn std::error::Error + Send + Sync>>(Reply::new("ok"))
        })
        .on("ask-me", move |ns: NsConn, msg: Message| {
            let tx = ask_tx.clone();
            async move { ask_client(&tx, &ns, "server_ask", "question", msg.body).await }
        })
        .on("conn-ask-me", move |ns: NsConn, msg: Message| {
            let tx = conn_ask_tx.clone();
            async move { ask_client(&tx, &ns, "conn_ask", "question", msg.body).await }
        })
        .on("ask-me-fail", move |ns: NsConn, msg: Message| {
            let tx = ask_fail_tx.clone();
            async move { ask_client(&tx, &ns, "server_ask", "question-fail", msg.body).await }
        })
        .on("close-me", |ns: NsConn, _msg| async move {
            ns.conn().close_with(4000, "kicked");
        })
        .handle(
            "add",
            |_ns: NsConn, State(app): State<TypedApp>, Json(add): Json<TypedAdd>| async move {
                Reply::json(&app.sum(&add))
            },
        )
        .handle(
            "typed-chat",
            |ns: NsConn, State(app): State<TypedApp>, Json(add): Json<TypedAdd>| async move {
                ns.emit_json("typed-back", &app.sum(&add))
            },
        );
    Namespaces::new()
        .with_state(TypedApp::default())
        .namespace("default", default)
        .namespace("forced", system_recorders(tx))
        .namespace(
            "private",
            system_recorders(tx).on(events::ON_NAMESPACE_CONNECT, |_ns, _msg| async {
                Err::<(), _>("private namespace; denied")
            }),
        )
}

/// Native-only namespaces: namespace "" with only `_OnNativeMessage`, echoing every frame.
fn rust_native_namespaces(tx: &ObsTx) -> Namespaces {
    let tx = tx.clone();
    Namespaces::new().namespace(
        "",
        Events::new().on(
            events::ON_NATIVE_MESSAGE,
            move |ns: NsConn, msg: Message| {
                record(&tx, &ns, &msg);
                async move { ns.conn().write(&Message::native(msg.body, msg.binary)) }
            },
        ),
    )
}

/// Adds the connect/disconnect observers (and, with `require_token`, the refusal of
/// connections without an `X-Token` header).
fn with_hooks(builder: ServerBuilder, tx: &ObsTx, require_token: bool) -> ServerBuilder {
    let (connect_tx, disconnect_tx) = (tx.clone(), tx.clone());
    builder
        .on_connect(move |conn| {
            let _ = connect_tx.send(Obs::conn("connect", conn.id()));
            let allowed = !require_token || conn.headers().contains_key("x-token");
            async move {
                if allowed {
                    Ok(())
                } else {
                    Err("not allowed: missing token".to_owned())
                }
            }
        })
        .on_disconnect(move |conn| {
            let _ = disconnect_tx.send(Obs::conn("disconnect", conn.id()));
            async {}
        })
}

struct RustServer {
    ts: TestServer,
    obs: Observed,
}

async fn rust_server_with(
    namespaces: impl FnOnce(&ObsTx) -> Namespaces,
    config: Config,
    require_token: bool,
) -> RustServer {
    let (tx, rx) = mpsc::unbounded_channel();
    let builder = Server::builder(namespaces(&tx)).config(config);
    let server = with_hooks(builder, &tx, require_token).build();
    let ts = serve(server).await.expect("serve");
    RustServer {
        ts,
        obs: Observed {
            rx,
            seen: Vec::new(),
        },
    }
}

async fn rust_server() -> RustServer {
    rust_server_with(rust_server_namespaces, Config::default(), false).await
}

impl RustServer {
    /// Waits until every connection is gone and the indexes are empty.
    async fn assert_drained(&self) {
        let server = &self.ts.server;
        assert!(
            eventually(T, || {
                let s = server.stats();
                (s.connections, s.ids, s.namespaces, s.rooms) == (0, 0, 0, 0)
            })
            .await,
            "connections or index entries left: {:?}",
            server.stats()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_connect_and_namespaces() {
    let mut rs = rust_server().await;
    let lines = run_go_client(&rs.ts.url(), "connect", &[]).await;
    let id = step_field(&lines, "dialed", "id");

    // The ID our server assigned is the one the Go client learned from `A<id>`.
    rs.obs.expect("connect", |o| o.id == id).await;
    let is_default = |o: &Obs| o.id == id && o.ns == "default";
    rs.obs
        .expect(events::ON_NAMESPACE_CONNECTED, is_default)
        .await;
    rs.obs
        .expect(events::ON_NAMESPACE_DISCONNECT, is_default)
        .await;
    rs.obs
        .expect(events::ON_NAMESPACE_CONNECTED, is_default)
        .await;
    rs.obs.expect("disconnect", |o| o.id == id).await;
    assert!(
        !rs.obs
            .all()
            .iter()
            .any(|o| o.ns == "private" && o.event == events::ON_NAMESPACE_CONNECTED),
        "the refused namespace was connected: {:#?}",
        rs.obs.seen
    );
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_server_forced_connect_and_disconnect() {
    let mut rs = rust_server().await;
    let lines = run_go_client(&rs.ts.url(), "server-forced", &[]).await;
    let id = step_field(&lines, "dialed", "id");
    let is_forced = |o: &Obs| o.id == id && o.ns == "forced";
    rs.obs
        .expect(events::ON_NAMESPACE_CONNECTED, is_forced)
        .await;
    rs.obs
        .expect(events::ON_NAMESPACE_DISCONNECT, is_forced)
        .await;
    // Connected again by the client itself.
    rs.obs
        .expect(events::ON_NAMESPACE_CONNECTED, is_forced)
        .await;
    rs.obs.expect("disconnect", |o| o.id == id).await;
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_emits_and_receives_text() {
    let mut rs = rust_server().await;
    run_go_client(&rs.ts.url(), "emit", &[]).await;
    for body in ["hello; world", "", "ünïcödé ✓", "a;b;c;d;e;f;g"] {
        let got = rs.obs.expect("chat", |_| true).await;
        assert_eq!((got.body_str(), got.binary), (body, false), "{got:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_binary_bodies_keep_bytes_and_frame_type() {
    let mut rs = rust_server().await;
    run_go_client(&rs.ts.url(), "binary", &[]).await;
    let got = rs.obs.expect("bin", |_| true).await;
    assert!(got.binary, "{got:?}");
    assert_eq!(&got.body[..], BINARY_PAYLOAD);
    let got = rs.obs.expect("chat", |_| true).await;
    assert_eq!((got.body_str(), got.binary), ("text again", false));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_rooms_join_leave_and_room_broadcast() {
    let mut rs = rust_server().await;
    run_go_client(&rs.ts.url(), "rooms", &[]).await;
    let joined = rs
        .obs
        .expect(events::ON_ROOM_JOINED, |o| o.room == "lobby")
        .await;
    let a = joined.id.clone();
    let chat = rs.obs.expect("room-chat", |_| true).await;
    assert_eq!(
        (chat.id.as_str(), chat.room.as_str(), chat.body_str()),
        (a.as_str(), "lobby", "hi room")
    );
    rs.obs
        .expect(events::ON_ROOM_LEFT, |o| o.id == a && o.room == "lobby")
        .await;
    // The server-forced join and leave fire the server's own room events too.
    rs.obs
        .expect(events::ON_ROOM_JOINED, |o| o.id == a && o.room == "vip")
        .await;
    rs.obs
        .expect(events::ON_ROOM_LEFT, |o| o.id == a && o.room == "vip")
        .await;
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_ask_both_ways_with_error_replies() {
    let mut rs = rust_server().await;
    let lines = run_go_client(&rs.ts.url(), "ask", &[]).await;
    let id = step_field(&lines, "dialed", "id");

    // Server::ask and NsConn::ask reached the Go client (its `$`-less tokens echoed back).
    let asked = rs.obs.expect("server_ask", |o| o.id == id).await;
    assert_eq!(
        (asked.body_str(), asked.err.as_deref()),
        ("answer to life", None)
    );
    let asked = rs.obs.expect("conn_ask", |o| o.id == id).await;
    assert_eq!(
        (asked.body_str(), asked.err.as_deref()),
        ("answer to everything", None)
    );
    // A Go handler's error reaches our asker with its exact text.
    let asked = rs.obs.expect("server_ask", |o| o.id == id).await;
    assert_eq!(asked.err.as_deref(), Some("client says no; really"));
    assert_eq!(rs.ts.server.stats().late_replies, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_refused_by_on_connect_gets_the_reason() {
    let mut rs = rust_server_with(rust_server_namespaces, Config::default(), true).await;
    let lines = run_go_client(&rs.ts.url(), "refused", &[]).await;
    let id = step_field(&lines, "dialed", "id");
    rs.obs.expect("connect", |o| o.id != id).await;
    rs.obs.expect("disconnect", |o| o.id == id).await;
    let disconnects = rs
        .obs
        .all()
        .iter()
        .filter(|o| o.event == "disconnect")
        .count();
    assert_eq!(disconnects, 1, "a refused connection is never registered");
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_closes_and_the_server_notices() {
    let mut rs = rust_server().await;
    let lines = run_go_client(&rs.ts.url(), "close-client", &[]).await;
    let id = step_field(&lines, "dialed", "id");
    rs.obs
        .expect(events::ON_ROOM_LEFT, |o| o.id == id && o.room == "lobby")
        .await;
    rs.obs
        .expect(events::ON_NAMESPACE_DISCONNECT, |o| {
            o.id == id && o.ns == "default"
        })
        .await;
    rs.obs.expect("disconnect", |o| o.id == id).await;
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_closes_and_the_go_client_gets_code_and_reason() {
    let mut rs = rust_server().await;
    // The Go client checks close code 4000 and reason "kicked".
    let lines = run_go_client(&rs.ts.url(), "close-server", &[]).await;
    let id = step_field(&lines, "dialed", "id");
    rs.obs.expect("disconnect", |o| o.id == id).await;
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_clients_against_a_native_only_server() {
    let mut rs = rust_server_with(rust_native_namespaces, Config::default(), false).await;
    // A Go neffos client in native-only mode (no acknowledgement, no namespace protocol).
    run_go_client(&rs.ts.url(), "native-neffos", &[]).await;
    // A plain gorilla/websocket client.
    run_go_client(&rs.ts.url(), "native-raw", &[]).await;
    let expected: [(&[u8], bool); 6] = [
        (b"native;text;with;separators", false),
        (BINARY_PAYLOAD, true),
        (b"M", false),
        (b"hello;raw;world", false),
        (BINARY_PAYLOAD, true),
        (b"M", false),
    ];
    let mut ids = Vec::new();
    for (body, binary) in expected {
        let obs = rs.obs.expect(events::ON_NATIVE_MESSAGE, |_| true).await;
        assert!(obs.native, "{obs:?}");
        assert_eq!((&obs.body[..], obs.binary), (body, binary), "{obs:?}");
        ids.push(obs.id);
    }
    // One connection per client, and both are gone.
    assert!(ids[..3].iter().all(|id| *id == ids[0]) && ids[3..].iter().all(|id| *id == ids[3]));
    assert_ne!(ids[0], ids[3]);
    for id in [&ids[0], &ids[3]] {
        let seen = |o: &Obs| o.event == "disconnect" && o.id == *id;
        if !rs.obs.all().iter().any(seen) {
            rs.obs.expect("disconnect", |o| o.id == *id).await;
        }
    }
    rs.assert_drained().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_answers_a_close_frame() {
    let rs = rust_server_with(rust_native_namespaces, Config::default(), false).await;
    run_go_client(&rs.ts.url(), "close-handshake", &[]).await;
    let rs = rust_server().await;
    run_go_client(&rs.ts.url(), "close-handshake", &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_pings_are_answered() {
    let rs = rust_server_with(
        rust_server_namespaces,
        Config::default().ping_interval(None).idle_timeout(None),
        false,
    )
    .await;
    // The Go heartbeat closes the connection when a pong takes longer than one interval.
    run_go_client(
        &rs.ts.url(),
        "heartbeat",
        &["-ping", "200ms", "-quiet", "1500ms"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_pings_are_answered_by_the_go_client() {
    let rs = rust_server_with(
        rust_server_namespaces,
        Config::default()
            .ping_interval(Some(Duration::from_millis(100)))
            .idle_timeout(Some(Duration::from_millis(600))),
        false,
    )
    .await;
    // Silent for 1.5 s: only the Go client's pongs keep our idle timeout from closing it.
    run_go_client(
        &rs.ts.url(),
        "heartbeat",
        &["-ping", "0", "-quiet", "1500ms"],
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn frames_before_the_acknowledgement_are_handled_after_it() {
    let mut rs = rust_server().await;
    run_go_client(&rs.ts.url(), "early-frames", &[]).await;
    rs.obs
        .expect(events::ON_NAMESPACE_CONNECTED, |o| o.ns == "default")
        .await;
}

// ---------------------------------------------------------------------------------------
// (B) our Rust client -> Go neffos server
// ---------------------------------------------------------------------------------------

/// A running Go neffos server.
struct GoServer {
    process: GoProcess,
    url: String,
}

impl GoServer {
    async fn start(args: &[&str]) -> Self {
        let programs = go_programs();
        let mut process = GoProcess::spawn("Go server", &programs.server, args);
        let listening = process.expect_event("listening", |_| true).await;
        let url = format!("ws://{}/echo", str_of(&listening, "addr"));
        GoServer { process, url }
    }

    /// Waits for the observation `event` of connection `id` (and namespace `ns` if not
    /// empty) that satisfies `pred`.
    async fn expect(
        &mut self,
        event: &str,
        id: &str,
        ns: &str,
        pred: impl Fn(&Value) -> bool,
    ) -> Value {
        self.process
            .expect_event(event, |v| {
                str_of(v, "id") == id && (ns.is_empty() || str_of(v, "ns") == ns) && pred(v)
            })
            .await
    }
}

/// Messages our client's handlers received: custom events and local system events.
struct ClientInbox {
    name: &'static str,
    events: mpsc::UnboundedReceiver<Message>,
    system: mpsc::UnboundedReceiver<Message>,
}

async fn next_message(
    rx: &mut mpsc::UnboundedReceiver<Message>,
    who: &str,
    ns: &str,
    room: &str,
    event: &str,
) -> Message {
    let msg = match tokio::time::timeout(T, rx.recv()).await {
        Ok(Some(msg)) => msg,
        Ok(None) => panic!("{who}: handlers gone while waiting for {event}"),
        Err(_) => panic!("{who}: timed out waiting for {event} in {ns:?}/{room:?}"),
    };
    assert_eq!(
        (&*msg.namespace, &*msg.room, &*msg.event),
        (ns, room, event),
        "{who}: unexpected message {msg:?}"
    );
    msg
}

impl ClientInbox {
    /// The next custom event; it must be `event` in `ns`/`room`.
    async fn event(&mut self, ns: &str, room: &str, event: &str) -> Message {
        next_message(&mut self.events, self.name, ns, room, event).await
    }

    /// The next local system event; it must be `event` in `ns`/`room`.
    async fn system(&mut self, ns: &str, room: &str, event: &str) -> Message {
        next_message(&mut self.system, self.name, ns, room, event).await
    }
}

fn sender_handler(
    tx: &mpsc::UnboundedSender<Message>,
) -> impl Fn(NsConn, Message) -> std::future::Ready<()> + Send + Sync + use<> {
    let tx = tx.clone();
    move |_ns, msg| {
        let _ = tx.send(msg);
        std::future::ready(())
    }
}

/// The namespaces of our client for the Go server, and where its handlers report.
fn rust_client(name: &'static str) -> (Namespaces, ClientInbox) {
    let (events_tx, events) = mpsc::unbounded_channel();
    let (system_tx, system) = mpsc::unbounded_channel();
    let system_events = || {
        Events::new()
            .on(events::ON_NAMESPACE_CONNECTED, sender_handler(&system_tx))
            .on(events::ON_NAMESPACE_DISCONNECT, sender_handler(&system_tx))
            .on(events::ON_ROOM_JOINED, sender_handler(&system_tx))
            .on(events::ON_ROOM_LEFT, sender_handler(&system_tx))
    };
    let mut default = system_events()
        .on("question", |_ns, msg: Message| async move {
            Reply::new(format!("answer to {}", body_string(&msg)))
        })
        .on("question-fail", |_ns, _msg| async {
            Err::<(), _>("rust says no; really")
        });
    for event in ["chat-back", "bin-back", "room-msg", "marker"] {
        default = default.on(event, sender_handler(&events_tx));
    }
    let namespaces = Namespaces::new()
        .namespace("default", default)
        .namespace("forced", system_events())
        .namespace("private", system_events())
        // Declared here only: the Go server does not know it.
        .namespace("nope", system_events());
    (
        namespaces,
        ClientInbox {
            name,
            events,
            system,
        },
    )
}

async fn dial_go(go: &GoServer, name: &'static str) -> (Client, ClientInbox) {
    let (namespaces, inbox) = rust_client(name);
    let client = Client::builder(go.url.as_str())
        .namespaces(namespaces)
        .connect()
        .await
        .unwrap_or_else(|e| panic!("{name}: dial: {e}"));
    (client, inbox)
}

async fn connect_default(client: &Client, inbox: &mut ClientInbox) -> NsConn {
    let ns = client.connect("default").await.expect("connect default");
    inbox
        .system("default", "", events::ON_NAMESPACE_CONNECTED)
        .await;
    ns
}

async fn ask_ok(ns: &NsConn, event: &str, body: &str, want: &str) {
    let reply = tokio::time::timeout(T, ns.ask(event, body.to_owned()))
        .await
        .unwrap_or_else(|_| panic!("ask {event}: no reply"))
        .unwrap_or_else(|e| panic!("ask {event}: {e}"));
    assert_eq!(body_string(&reply), want, "reply to {event}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_connect_and_namespaces() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    // The ID the Go server assigned is the one we learned from `A<id>`.
    go.expect("connect", &id, "", |_| true).await;

    let ns = connect_default(&client, &mut inbox).await;
    let seen = go
        .expect(events::ON_NAMESPACE_CONNECTED, &id, "default", |_| true)
        .await;
    assert!(!bool_of(&seen, "local"));

    let err = client.connect("nope").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (NamespaceErrorKind::Refused, Some("bad namespace"))
    );
    let err = client.connect("private").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (
            NamespaceErrorKind::Refused,
            Some("private namespace; denied")
        )
    );
    assert!(client.conn().namespace("private").is_none());

    ns.disconnect().await.expect("disconnect");
    assert!(client.conn().namespace("default").is_none());
    inbox
        .system("default", "", events::ON_NAMESPACE_DISCONNECT)
        .await;
    let seen = go
        .expect(events::ON_NAMESPACE_DISCONNECT, &id, "default", |_| true)
        .await;
    assert!(!bool_of(&seen, "local") && !bool_of(&seen, "forced"));
    assert_eq!(
        ns.emit("chat", "after").unwrap_err().kind(),
        WriteErrorKind::NamespaceNotConnected
    );

    // Connecting again works.
    connect_default(&client, &mut inbox).await;
    go.expect(events::ON_NAMESPACE_CONNECTED, &id, "default", |_| true)
        .await;
    client.close();
    let gone = go.expect("disconnect", &id, "", |_| true).await;
    assert_eq!(gone["code"], 1000, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_forces_connect_and_disconnect() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;

    // The Go server's Conn.Connect, from inside its handler.
    ask_ok(&ns, "force-connect", "forced", "ok").await;
    client
        .wait_server_connect("forced", T)
        .await
        .expect("server connect");
    inbox
        .system("forced", "", events::ON_NAMESPACE_CONNECTED)
        .await;
    let seen = go
        .expect(events::ON_NAMESPACE_CONNECTED, &id, "forced", |_| true)
        .await;
    assert!(bool_of(&seen, "local"), "the Go server asked: {seen}");

    // The Go server's NSConn.Disconnect.
    ask_ok(&ns, "force-disconnect", "forced", "ok").await;
    assert!(client.conn().namespace("forced").is_none());
    inbox
        .system("forced", "", events::ON_NAMESPACE_DISCONNECT)
        .await;

    // And our client may connect it again itself.
    client.connect("forced").await.expect("reconnect forced");
    go.expect(events::ON_NAMESPACE_CONNECTED, &id, "forced", |v| {
        !bool_of(v, "local")
    })
    .await;
    client.close();
    go.expect("disconnect", &id, "", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_connects_from_on_connect() {
    // The pattern of the neffos examples: `Conn.Connect` inside `Server.OnConnect`, and
    // `WaitServerConnect` on the client.
    let mut go = GoServer::start(&["-force-connect", "forced"]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    client
        .wait_server_connect("forced", T)
        .await
        .expect("server connect");
    inbox
        .system("forced", "", events::ON_NAMESPACE_CONNECTED)
        .await;
    go.expect(events::ON_NAMESPACE_CONNECTED, &id, "forced", |_| true)
        .await;
    client.close();
    go.expect("disconnect", &id, "", |_| true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_emits_and_receives_text() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;
    for body in ["hello; world", "", "ünïcödé ✓", "a;b;c;d;e;f;g"] {
        ns.emit("chat", body).expect("emit");
        let seen = go.expect("chat", &id, "default", |_| true).await;
        assert_eq!(
            (str_of(&seen, "body"), bool_of(&seen, "binary")),
            (body, false)
        );
        let back = inbox.event("default", "", "chat-back").await;
        assert_eq!((body_string(&back).as_str(), back.binary), (body, false));
    }
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_binary_bodies_keep_bytes_and_frame_type() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;

    ns.emit_binary("bin", BINARY_PAYLOAD).expect("emit binary");
    let seen = go.expect("bin", &id, "default", |_| true).await;
    assert_eq!(str_of(&seen, "hex"), hex(BINARY_PAYLOAD));
    assert!(bool_of(&seen, "binary"), "{seen}");
    let back = inbox.event("default", "", "bin-back").await;
    assert!(back.binary);
    assert_eq!(&back.body[..], BINARY_PAYLOAD);

    ns.emit("chat", "text again").expect("emit");
    let back = inbox.event("default", "", "chat-back").await;
    assert_eq!(
        (body_string(&back).as_str(), back.binary),
        ("text again", false)
    );
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_clients_rooms_join_leave_and_room_broadcast() {
    let mut go = GoServer::start(&[]).await;
    let (a, mut inbox_a) = dial_go(&go, "a").await;
    let (b, mut inbox_b) = dial_go(&go, "b").await;
    let id_a = a.id().to_owned();
    let ns_a = connect_default(&a, &mut inbox_a).await;
    let ns_b = connect_default(&b, &mut inbox_b).await;

    let lobby = ns_a.join_room("lobby").await.expect("join lobby");
    inbox_a
        .system("default", "lobby", events::ON_ROOM_JOINED)
        .await;
    go.expect(events::ON_ROOM_JOINED, &id_a, "default", |v| {
        str_of(v, "room") == "lobby"
    })
    .await;

    lobby.emit("room-chat", "hi room").expect("room emit");
    let seen = go.expect("room-chat", &id_a, "default", |_| true).await;
    assert_eq!(
        (str_of(&seen, "room"), str_of(&seen, "body")),
        ("lobby", "hi room")
    );

    // The Go server's room broadcast reaches the member before the namespace marker; the
    // other client only gets the marker.
    ask_ok(&ns_a, "room-broadcast", "lobby", "ok").await;
    let got = inbox_a.event("default", "lobby", "room-msg").await;
    assert_eq!(body_string(&got), "hello lobby");
    inbox_a.event("default", "", "marker").await;
    inbox_b.event("default", "", "marker").await;

    lobby.leave().await.expect("leave lobby");
    assert!(ns_a.room("lobby").is_none());
    inbox_a
        .system("default", "lobby", events::ON_ROOM_LEFT)
        .await;
    go.expect(events::ON_ROOM_LEFT, &id_a, "default", |v| {
        str_of(v, "room") == "lobby"
    })
    .await;
    ask_ok(&ns_b, "room-broadcast", "lobby", "ok").await;
    inbox_a.event("default", "", "marker").await;
    inbox_b.event("default", "", "marker").await;

    // Server-forced join and leave (the Go server's JoinRoom and Room.Leave).
    ask_ok(&ns_a, "force-join", "vip", "ok").await;
    assert!(ns_a.room("vip").is_some());
    inbox_a
        .system("default", "vip", events::ON_ROOM_JOINED)
        .await;
    ask_ok(&ns_b, "room-broadcast", "vip", "ok").await;
    inbox_a.event("default", "vip", "room-msg").await;
    inbox_a.event("default", "", "marker").await;
    inbox_b.event("default", "", "marker").await;
    ask_ok(&ns_a, "force-leave", "vip", "ok").await;
    assert!(ns_a.room("vip").is_none());
    inbox_a.system("default", "vip", events::ON_ROOM_LEFT).await;
    a.close();
    b.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_ask_both_ways_with_error_replies() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;

    ask_ok(&ns, "echo", "ping; 1", "ping; 1").await;
    ask_ok(&ns, "echo", "", "").await;
    let err = ns.ask("fail", "x").await.unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (AskErrorKind::Remote, Some("go says no; exact text"))
    );

    // Go's Server.Ask (token like `dn4kkjd7rjrx-2-5ea82d08`), answered by our handler.
    ns.emit("ask-me", "life").expect("emit");
    let asked = go.expect("server_ask", &id, "default", |_| true).await;
    assert_eq!(
        (str_of(&asked, "body"), str_of(&asked, "err")),
        ("answer to life", "")
    );
    // Our handler's error reaches Go's Server.Ask with its exact text.
    ns.emit("ask-me-fail", "x").expect("emit");
    let asked = go.expect("server_ask", &id, "default", |_| true).await;
    assert_eq!(str_of(&asked, "err"), "rust says no; really");
    // Go's NSConn.Ask from inside its handler (token like `dn4kkjbk0qz6-1`).
    ask_ok(
        &ns,
        "conn-ask-me",
        "everything",
        "client said: answer to everything",
    )
    .await;

    // Concurrent asks are matched by token.
    let asks = (0..8).map(|i| {
        let ns = ns.clone();
        async move {
            let body = format!("concurrent {i}");
            let reply = ns.ask("echo", body.clone()).await.expect("ask");
            assert_eq!(body_string(&reply), body);
        }
    });
    tokio::time::timeout(T, futures_util::future::join_all(asks))
        .await
        .expect("concurrent asks");
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_refused_by_go_on_connect_gets_the_reason() {
    let go = GoServer::start(&["-require-token"]).await;
    let (namespaces, _inbox) = rust_client("anonymous");
    let err = Client::builder(go.url.as_str())
        .namespaces(namespaces)
        .connect()
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (DialErrorKind::Refused, Some("not allowed: missing token"))
    );

    let (namespaces, mut inbox) = rust_client("authorized");
    let client = Client::builder(go.url.as_str())
        .header("X-Token", "secret")
        .namespaces(namespaces)
        .connect()
        .await
        .expect("dial with a token");
    let ns = connect_default(&client, &mut inbox).await;
    ask_ok(&ns, "echo", "let in", "let in").await;
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_closes_and_the_go_server_notices() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;
    ns.join_room("lobby").await.expect("join");
    inbox
        .system("default", "lobby", events::ON_ROOM_JOINED)
        .await;
    go.expect(events::ON_ROOM_JOINED, &id, "default", |_| true)
        .await;

    client.close();
    tokio::time::timeout(T, client.closed())
        .await
        .expect("closed");
    inbox.system("default", "lobby", events::ON_ROOM_LEFT).await;
    inbox
        .system("default", "", events::ON_NAMESPACE_DISCONNECT)
        .await;
    // The Go server leaves rooms and namespaces locally (forced), then reports our 1000.
    let seen = go
        .expect(events::ON_ROOM_LEFT, &id, "default", |_| true)
        .await;
    assert!(bool_of(&seen, "forced"), "{seen}");
    let seen = go
        .expect(events::ON_NAMESPACE_DISCONNECT, &id, "default", |_| true)
        .await;
    assert!(bool_of(&seen, "forced"), "{seen}");
    let gone = go.expect("disconnect", &id, "", |_| true).await;
    assert_eq!(gone["code"], 1000, "{gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_server_closes_and_the_rust_client_notices() {
    let mut go = GoServer::start(&[]).await;
    let (client, mut inbox) = dial_go(&go, "a").await;
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;

    ns.emit("close-me", "").expect("emit");
    tokio::time::timeout(T, client.closed())
        .await
        .expect("closed by the Go server");
    inbox
        .system("default", "", events::ON_NAMESPACE_DISCONNECT)
        .await;
    assert!(client.conn().is_closed());
    // (Go's NSConn.Emit answers a closed error here; ours reports BadNamespace, since the
    // namespaces are already left: any error is fine.)
    assert!(ns.emit("chat", "after").is_err());
    let gone = go.expect("disconnect", &id, "", |_| true).await;
    assert_eq!(
        (gone["code"].as_i64(), str_of(&gone, "reason")),
        (Some(4001), "go kicked")
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pings_both_ways_with_a_go_server() {
    let mut go = GoServer::start(&["-ping", "200ms"]).await;
    let (namespaces, mut inbox) = rust_client("a");
    let client = Client::builder(go.url.as_str())
        .namespaces(namespaces)
        .config(
            Config::default()
                .ping_interval(Some(Duration::from_millis(100)))
                .idle_timeout(Some(Duration::from_millis(600))),
        )
        .connect()
        .await
        .expect("dial");
    let id = client.id().to_owned();
    let ns = connect_default(&client, &mut inbox).await;

    // Silent for 1.5 s: the Go heartbeat drops us if we do not answer its pings within one
    // interval, and our idle timeout drops it if it does not answer ours.
    tokio::select! {
        () = client.closed() => panic!("closed while silent; Go server output:\n{}", go.process.output()),
        () = tokio::time::sleep(Duration::from_millis(1500)) => {}
    }
    ask_ok(&ns, "echo", "still here", "still here").await;
    client.close();
    let gone = go.expect("disconnect", &id, "", |_| true).await;
    assert_eq!(gone["code"], 1000, "dropped by a heartbeat instead: {gone}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_native_only_client_against_a_go_native_only_server() {
    let mut go = GoServer::start(&["-mode", "native"]).await;
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = tokio::time::timeout(
        T,
        Client::builder(go.url.as_str())
            .namespaces(Namespaces::new().namespace(
                "",
                Events::new().on(events::ON_NATIVE_MESSAGE, sender_handler(&tx)),
            ))
            .connect(),
    )
    .await
    .expect("dial timed out")
    .expect("dial");

    let cases: [(&[u8], bool); 2] = [
        (b"native;text;with;separators", false),
        (BINARY_PAYLOAD, true),
    ];
    for (body, binary) in cases {
        client
            .conn()
            .write(&Message::native(Bytes::from_static(body), binary))
            .expect("native write");
        let seen = go
            .process
            .expect_event(events::ON_NATIVE_MESSAGE, |_| true)
            .await;
        assert_eq!(
            (str_of(&seen, "hex"), bool_of(&seen, "binary")),
            (hex(body).as_str(), binary)
        );
        let echo = tokio::time::timeout(T, rx.recv())
            .await
            .expect("no echo")
            .expect("handler gone");
        assert!(echo.is_native);
        assert_eq!((&echo.body[..], echo.binary), (body, binary));
    }
    client.close();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn go_client_typed_json_bodies_through_typed_handlers() {
    let rs = rust_server().await;
    let lines = run_go_client(&rs.ts.url(), "typed", &[]).await;
    assert_eq!(step_field(&lines, "typed reply", "by"), "rust");
    let rejected = step_field(&lines, "rejected", "error");
    assert!(rejected.contains("missing field `b`"), "{rejected}");
    assert_eq!(rs.ts.server.stats().rejected_messages, 1);
    rs.assert_drained().await;
}
