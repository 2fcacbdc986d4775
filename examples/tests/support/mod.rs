//! Helpers shared by the multi-process tests (each test binary uses some of them).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use serde_json::Value;

/// How long a neffos.js user may stay silent while a test waits for it.
const SILENCE: Duration = Duration::from_secs(30);

/// The repository root.
pub(crate) fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .unwrap()
        .to_path_buf()
}

/// Installs interop/js's npm packages (neffos.js) once per test process.
pub(crate) fn ensure_npm() {
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

/// Starts the Node script `script` of interop/js with `args` (npm packages installed
/// first); its stdout is read as one JSON report per line.
pub(crate) fn spawn_node(
    script: &str,
    args: &[&str],
) -> (Child, ChildStdin, std_mpsc::Receiver<Value>) {
    ensure_npm();
    let mut child = Command::new("node")
        .arg(script)
        .args(args)
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
    (child, stdin, lines)
}

/// A neffos.js user in Node (interop/js/cluster.js): connects namespace `default` with the
/// header `X-Username`, answers the server's `question` Ask, reports every event as a JSON
/// line. Killed on drop.
pub(crate) struct JsUser {
    child: Child,
    stdin: ChildStdin,
    lines: std_mpsc::Receiver<Value>,
}

impl JsUser {
    /// Starts the user `name` against the WebSocket `url` and waits until it is connected
    /// (installs interop/js's npm packages the first time).
    pub(crate) fn start(url: &str, name: &str) -> JsUser {
        let mut user = JsUser::spawn("cluster.js", &[url, name]);
        let ready = user.next_where(|v| v["ev"] == "ready");
        assert_eq!(ready["id"], name);
        user
    }

    /// Starts the Node script `script` of interop/js (reporting JSON lines, killed on drop).
    pub(crate) fn spawn(script: &str, args: &[&str]) -> JsUser {
        let (child, stdin, lines) = spawn_node(script, args);
        JsUser {
            child,
            stdin,
            lines,
        }
    }

    /// Sends a command line to the script.
    pub(crate) fn send(&mut self, command: &str) {
        writeln!(self.stdin, "{command}").unwrap();
    }

    /// The next report matching `pred` (earlier ones are skipped).
    pub(crate) fn next_where(&mut self, pred: impl Fn(&Value) -> bool) -> Value {
        loop {
            let v = self
                .lines
                .recv_timeout(SILENCE)
                .expect("neffos.js user went silent");
            assert_ne!(v["ev"], "fail", "neffos.js failed: {v}");
            if pred(&v) {
                return v;
            }
        }
    }

    /// The next report matching `pred` within `timeout`, if any (earlier ones are skipped).
    pub(crate) fn next_within(
        &mut self,
        timeout: Duration,
        pred: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        let deadline = std::time::Instant::now() + timeout;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let v = self.lines.recv_timeout(left).ok()?;
            assert_ne!(v["ev"], "fail", "neffos.js failed: {v}");
            if pred(&v) {
                return Some(v);
            }
        }
    }

    /// The next `chat`/`private` event as (event, parsed body).
    pub(crate) fn next_event(&mut self) -> (String, Value) {
        let v = self.next_where(|v| {
            v["ev"] == "event" && (v["event"] == "chat" || v["event"] == "private")
        });
        let body =
            serde_json::from_str(v["body"].as_str().unwrap_or("null")).unwrap_or(Value::Null);
        (v["event"].as_str().unwrap().to_owned(), body)
    }

    /// Waits for the event `event` (e.g. the system event `_OnRoomJoined`) and returns its
    /// room.
    pub(crate) fn event(&mut self, event: &str) -> String {
        let v = self.next_where(|v| v["ev"] == "event" && v["event"] == event);
        v["room"].as_str().unwrap_or_default().to_owned()
    }
}

impl Drop for JsUser {
    fn drop(&mut self) {
        let _ = writeln!(self.stdin, "quit");
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One `scale-out` process (one instance on a free port) started with `args`; killed
/// (SIGKILL) on drop or with [`ScaleOut::kill`].
pub(crate) struct ScaleOut {
    child: Child,
    /// Where it listens.
    pub(crate) port: u16,
}

impl ScaleOut {
    /// Starts it and waits until it printed its address.
    pub(crate) fn start(args: &[String]) -> ScaleOut {
        let bundle =
            std::env::temp_dir().join(format!("neffos-scale-out-test-{}.js", std::process::id()));
        std::fs::write(&bundle, "// not used by this test\n").unwrap();
        let mut child = Command::new(env!("CARGO_BIN_EXE_scale-out"))
            .args(["--ports", "0"])
            .args(args)
            .arg("--neffos-js")
            .arg(&bundle)
            .env(
                "RUST_LOG",
                std::env::var("SCALE_OUT_LOG").unwrap_or_else(|_| "warn".into()),
            )
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // SCALE_OUT_LOG=<filter> shows the instances' logs (debugging a test).
                if std::env::var_os("SCALE_OUT_LOG").is_some() {
                    #[allow(clippy::print_stderr)]
                    {
                        eprintln!("scale-out: {line}");
                    }
                }
                if let Some(port) = line
                    .split("open http://")
                    .nth(1)
                    .and_then(|url| url.rsplit(':').next())
                    .and_then(|port| port.trim().parse::<u16>().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx
            .recv_timeout(Duration::from_secs(20))
            .expect("scale-out printed its address");
        ScaleOut { child, port }
    }

    /// The WebSocket endpoint.
    pub(crate) fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }

    /// kill -9.
    pub(crate) fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for ScaleOut {
    fn drop(&mut self) {
        self.kill();
    }
}
