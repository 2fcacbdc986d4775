//! The servers compared side by side, and running one as a child process pinned to the
//! server's CPUs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use crate::loadgen::Proto;

/// What a peer is in the comparison.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Role {
    /// neffos-rs.
    Ours,
    /// A framework we compare with.
    Baseline,
    /// A raw WebSocket broadcast server (no protocol): the floor (our stack) or the
    /// ceiling (fastwebsockets) of what a framework can reach.
    Floor,
}

/// One server of the comparison.
#[derive(Debug, Clone)]
pub struct Peer {
    /// Short key (`neffos-rs`, `go-neffos`, …).
    pub key: &'static str,
    /// The protocol the load generator speaks to it.
    pub proto: Proto,
    /// Its role.
    pub role: Role,
    /// The program and its arguments (a listen address is added).
    pub program: PathBuf,
    /// Arguments before the listen address.
    pub args: Vec<String>,
    /// How the listen address is passed (`--addr` or `-addr`).
    pub addr_flag: &'static str,
    /// Path (and query) of the WebSocket endpoint.
    pub path: &'static str,
    /// What it is built from.
    pub description: String,
}

impl Peer {
    /// The WebSocket URL of the peer listening on `addr`.
    pub fn url(&self, addr: &str) -> String {
        format!("ws://{addr}{}", self.path)
    }
}

/// Where the built programs are.
#[derive(Debug, Clone)]
pub(crate) struct Programs {
    /// `neffos-bench-server` (next to `neffos-loadgen`).
    pub bench_server: PathBuf,
    /// `target/peers`: the Go program and the release builds of the Rust peers.
    pub peers: PathBuf,
    /// An earlier build of `neffos-bench-server` and its label (a git revision), run as one
    /// more peer so that before/after ratios come from the same run.
    pub before: Option<(PathBuf, String)>,
}

/// The key of the earlier build of neffos-rs (`--before`).
pub(crate) const BEFORE_KEY: &str = "neffos-rs-before";

/// Every peer, in table order.
pub(crate) fn all(programs: &Programs, versions: &super::machine::Versions) -> Vec<Peer> {
    let release = programs.peers.join("release");
    let before = programs.before.iter().map(|(program, label)| Peer {
        key: BEFORE_KEY,
        proto: Proto::Neffos,
        role: Role::Baseline,
        program: program.clone(),
        args: vec![],
        addr_flag: "--addr",
        path: "/echo",
        description: format!(
            "this repository at `{label}`, before the changes being measured (`cargo xtask bench --before {label}`), default `Config`"
        ),
    });
    let mut list = vec![
        Peer {
            key: "neffos-rs",
            proto: Proto::Neffos,
            role: Role::Ours,
            program: programs.bench_server.clone(),
            args: vec![],
            addr_flag: "--addr",
            path: "/echo",
            description: format!(
                "this repository (`neffos-bench-server`, axum {}, tokio-tungstenite {}), default `Config`",
                versions.get("axum"),
                versions.get("tokio-tungstenite")
            ),
        },
        Peer {
            key: "go-neffos",
            proto: Proto::Neffos,
            role: Role::Baseline,
            program: programs.peers.join("neffos-go-benchserver"),
            args: vec![],
            addr_flag: "-addr",
            path: "/echo",
            description: format!(
                "github.com/kataras/neffos v0.0.25, gorilla upgrader, {} (`interop/go/benchserver`)",
                versions.get("go")
            ),
        },
        Peer {
            key: "socketioxide",
            proto: Proto::Socketio,
            role: Role::Baseline,
            program: release.join("peer-socketioxide"),
            args: vec![],
            addr_flag: "--addr",
            path: "/socket.io/?EIO=4&transport=websocket",
            description: format!(
                "socketioxide {} on axum, WebSocket transport; across instances socketioxide-redis {} (`benches/peers/socketioxide`)",
                versions.get("socketioxide"),
                versions.get("socketioxide-redis")
            ),
        },
        Peer {
            key: "raw-axum",
            proto: Proto::Raw,
            role: Role::Floor,
            program: programs.bench_server.clone(),
            args: vec!["--mode".into(), "raw".into()],
            addr_flag: "--addr",
            path: "/echo",
            description: format!(
                "raw broadcast on our stack: axum {} WebSocket / tokio-tungstenite {}, no protocol (`neffos-bench-server --mode raw`)",
                versions.get("axum"),
                versions.get("tokio-tungstenite")
            ),
        },
        Peer {
            key: "raw-fastws",
            proto: Proto::Raw,
            role: Role::Floor,
            program: release.join("peer-fastws"),
            args: vec![],
            addr_flag: "--addr",
            path: "/echo",
            description: format!(
                "raw broadcast on fastwebsockets {} + hyper, no protocol (`benches/peers/fastws`)",
                versions.get("fastwebsockets")
            ),
        },
    ];
    // Right after neffos-rs, so the tables read before → after.
    list.splice(1..1, before);
    list
}

/// A running server process; killed (and its input closed) when dropped.
#[derive(Debug)]
pub(crate) struct Running {
    child: Child,
    _stdin: Option<ChildStdin>,
    /// Listen addresses, one per instance.
    pub addrs: Vec<String>,
}

impl Running {
    /// The server's process ID (the program itself: `taskset` execs it).
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        self._stdin.take();
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Where the servers' standard error goes (set once by the suite: `target/bench/logs`).
static LOG_DIR: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();

/// Servers started so far (numbers their log files).
static STARTED: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Sends every server's standard error to a file of its own in `dir` (created if missing),
/// so that a server that dies in the middle of a phase leaves its reason behind.
pub(crate) fn log_to(dir: PathBuf) {
    if std::fs::create_dir_all(&dir).is_ok() {
        let _ = LOG_DIR.set(dir);
    }
}

/// `program`'s standard error: a new file in the log directory, else nowhere.
fn stderr_for(program: &Path) -> Stdio {
    let Some(dir) = LOG_DIR.get() else {
        return Stdio::null();
    };
    let n = STARTED.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let name = program
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    match std::fs::File::create(dir.join(format!("{n:04}-{name}.log"))) {
        Ok(file) => Stdio::from(file),
        Err(_) => Stdio::null(),
    }
}

/// Starts `program args` pinned to `cpus` (when given) and waits for `instances`
/// `"listening"` lines on its output; its standard error goes to the log directory
/// ([`log_to`]).
pub(crate) fn start(
    program: &Path,
    args: &[String],
    cpus: Option<&str>,
    instances: usize,
) -> anyhow::Result<Running> {
    if !program.is_file() {
        bail!(
            "{} is missing: build the peers first (`cargo xtask bench` does)",
            program.display()
        );
    }
    let mut command = match cpus {
        Some(cpus) => {
            let mut c = Command::new("taskset");
            c.arg("-c").arg(cpus).arg(program);
            c
        }
        None => Command::new(program),
    };
    let mut child = command
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(stderr_for(program))
        .spawn()
        .with_context(|| format!("starting {}", program.display()))?;
    let stdin = child.stdin.take();
    let stdout = child.stdout.take().context("server stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut running = Running {
        child,
        _stdin: stdin,
        addrs: Vec::new(),
    };
    while running.addrs.len() < instances {
        let line = rx
            .recv_timeout(Duration::from_secs(30))
            .with_context(|| format!("{} did not start listening", program.display()))?;
        if let Ok(v) = serde_json::from_str::<serde_json::Value>(&line)
            && v["event"] == "listening"
            && let Some(addr) = v["addr"].as_str()
        {
            running.addrs.push(addr.to_owned());
        }
    }
    Ok(running)
}

/// Starts `peer` on a free loopback port.
pub(crate) fn start_peer(peer: &Peer, cpus: Option<&str>) -> anyhow::Result<Running> {
    let mut args = peer.args.clone();
    args.push(peer.addr_flag.to_owned());
    args.push("127.0.0.1:0".to_owned());
    start(&peer.program, &args, cpus, 1)
}
