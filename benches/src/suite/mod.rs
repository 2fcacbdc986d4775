#![allow(clippy::print_stderr)]
//! The side-by-side suite behind `cargo xtask bench` (`neffos-loadgen suite`): every peer
//! server started in turn on the same machine, every scenario run against each by the same
//! load generator, results in `target/bench/results.json`, then `BENCHMARKS.md` and the
//! plots under `docs/bench/`.
//!
//! On a machine with two or more CPUs the servers run on CPU 0 (`taskset -c 0`) and the
//! load generator on the others, so that every server gets the same, whole core and the
//! load generator's own work never competes with it. A run where the load generator used
//! 90% or more of its CPUs is marked as bound by the load generator: the server could
//! have gone faster.

mod machine;
mod peers;
mod plot;
mod report;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::loadgen::{self, Report, Scenario, Spec};
pub use machine::{Machine, Versions};
pub use peers::{Peer, Role};

/// Environment variable set on the suite once it re-executed itself pinned.
const PINNED_ENV: &str = "NEFFOS_BENCH_PINNED";

/// Arguments of `neffos-loadgen suite`.
#[derive(Debug, Clone, clap::Args)]
pub struct SuiteArgs {
    /// Short runs: the whole suite in under five minutes.
    #[arg(long)]
    pub quick: bool,
    /// Repository root (BENCHMARKS.md and docs/bench/ are written there).
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// Where the peers were built (default: <root>/target/peers).
    #[arg(long)]
    pub peers: Option<PathBuf>,
    /// Only these peers (comma-separated keys: neffos-rs, go-neffos, socketioxide,
    /// raw-axum, raw-fastws).
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the cluster runs.
    #[arg(long)]
    pub no_cluster: bool,
    /// Do not pin the servers and the load generator to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
}

/// Arguments of `neffos-loadgen report`.
#[derive(Debug, Clone, clap::Args)]
pub struct ReportArgs {
    /// Repository root.
    #[arg(long, default_value = ".")]
    pub root: PathBuf,
    /// The results (default: <root>/target/bench/results.json).
    #[arg(long)]
    pub results: Option<PathBuf>,
}

/// The sizes of a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Plan {
    /// Seconds of each measured run.
    pub duration: f64,
    /// Body size, bytes.
    pub size: usize,
    /// Receivers of the headline fan-out.
    pub fanout_clients: usize,
    /// Saturating runs at `fanout_clients` (the median is reported).
    #[serde(default = "one")]
    pub repeats: usize,
    /// Receivers of the throughput-versus-clients runs.
    pub client_counts: Vec<usize>,
    /// Offered load of the latency runs, as fractions of each peer's own maximum.
    pub sweep: Vec<f64>,
    /// Messages per second of the latency run every peer gets at the same load.
    #[serde(default)]
    pub fixed_rate: f64,
    /// Rooms of the room fan-out (receivers: `fanout_clients`).
    pub rooms: usize,
    /// Messages per second of the room fan-out.
    pub room_rate: f64,
    /// Connections of the Ask runs.
    pub ask_clients: usize,
    /// Asks per second.
    pub ask_rate: f64,
    /// Loops of the churn runs.
    pub churn_concurrency: usize,
    /// Idle connections.
    pub idle_clients: usize,
    /// Load generator processes of the idle runs.
    pub idle_workers: usize,
}

fn one() -> usize {
    1
}

impl Plan {
    fn new(quick: bool) -> Plan {
        if quick {
            Plan {
                duration: 2.5,
                size: 64,
                fanout_clients: 1000,
                repeats: 3,
                client_counts: vec![100, 1000],
                sweep: vec![0.25, 0.5, 0.75],
                fixed_rate: 50.0,
                rooms: 10,
                room_rate: 200.0,
                ask_clients: 100,
                ask_rate: 2000.0,
                churn_concurrency: 16,
                idle_clients: 15_000,
                idle_workers: 2,
            }
        } else {
            Plan {
                duration: 10.0,
                size: 64,
                fanout_clients: 1000,
                repeats: 3,
                client_counts: vec![100, 1000, 5000, 10_000],
                sweep: vec![0.1, 0.25, 0.5, 0.75, 0.9],
                fixed_rate: 50.0,
                rooms: 100,
                room_rate: 1000.0,
                ask_clients: 100,
                ask_rate: 5000.0,
                churn_concurrency: 16,
                idle_clients: 15_000,
                idle_workers: 2,
            }
        }
    }
}

/// Everything one peer produced.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerResults {
    /// Peer key.
    pub key: String,
    /// Its protocol.
    pub proto: String,
    /// Its role.
    pub role: Role,
    /// What it is built from.
    pub description: String,
    /// Idle connections and memory.
    pub idle: Option<Report>,
    /// Saturating fan-out, per receiver count (several runs at the headline count).
    pub saturate: Vec<Report>,
    /// Open-loop fan-out at fractions of the maximum.
    pub sweep: Vec<Report>,
    /// Open-loop fan-out at the same rate for every peer.
    #[serde(default)]
    pub fixed: Option<Report>,
    /// Open-loop room fan-out.
    pub rooms: Option<Report>,
    /// Asks.
    pub ask: Option<Report>,
    /// Connect/disconnect churn.
    pub churn: Option<Report>,
    /// What failed.
    pub errors: Vec<String>,
}

/// A cluster configuration of neffos-rs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResults {
    /// The exchange.
    pub exchange: String,
    /// How the instances run.
    pub setup: String,
    /// `measured`, or why not.
    pub status: String,
    /// Saturating fan-out over the instances.
    pub saturate: Option<Report>,
    /// Open-loop fan-out at half of that.
    pub half: Option<Report>,
}

/// The results of a suite.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SuiteResults {
    /// `--quick`.
    pub quick: bool,
    /// When it ran (UTC).
    pub date: String,
    /// Seconds it took.
    pub wall_s: f64,
    /// The machine.
    pub machine: Machine,
    /// Toolchains and packages.
    pub versions: Versions,
    /// CPUs of the servers (`None`: not pinned).
    pub server_cpus: Option<String>,
    /// CPUs of the load generator.
    pub loadgen_cpus: String,
    /// The sizes.
    pub plan: Plan,
    /// Per peer.
    pub peers: Vec<PeerResults>,
    /// neffos-rs clusters.
    pub cluster: Vec<ClusterResults>,
}

/// `YYYY-MM-DD HH:MM` (UTC) of now.
fn utc_now() -> String {
    let secs = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0);
    let days = (secs / 86_400) as i64;
    let (h, m) = ((secs % 86_400) / 3600, (secs % 3600) / 60);
    // Civil date from days since 1970-01-01 (H. Hinnant's algorithm).
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let mo = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(mo <= 2);
    format!("{y:04}-{mo:02}-{d:02} {h:02}:{m:02} UTC")
}

/// Re-executes this suite under `taskset -c <cpus>` unless already pinned; returns
/// `Some(status)` when it did.
fn pin_self(cpus: &str) -> anyhow::Result<Option<std::process::ExitStatus>> {
    if std::env::var_os(PINNED_ENV).is_some() {
        return Ok(None);
    }
    let exe = std::env::current_exe()?;
    let status = Command::new("taskset")
        .arg("-c")
        .arg(cpus)
        .arg(exe)
        .args(std::env::args_os().skip(1))
        .env(PINNED_ENV, "1")
        .status()
        .context("running taskset (util-linux); pass --no-pin to run without it")?;
    Ok(Some(status))
}

/// One load generator run, with a pause afterwards for the sockets to close.
fn measure(spec: &Spec) -> anyhow::Result<Report> {
    wait_for_quiet();
    let report = loadgen::run(spec);
    std::thread::sleep(Duration::from_millis(300));
    report
}

/// Other processes busier than this (in CPUs) make the suite wait before a run.
const QUIET_CORES: f64 = 0.3;
/// The longest wait for a quiet machine before a run goes ahead anyway (and is marked).
const QUIET_WAIT: Duration = Duration::from_secs(20);
/// The most a whole suite waits for quiet (so a busy machine cannot stretch it for long).
const QUIET_BUDGET_MS: u64 = 90_000;

static QUIET_WAITED_MS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// Between runs nothing of ours is busy (the servers idle): waits, within
/// [`QUIET_WAIT`], until the rest of the machine uses less than [`QUIET_CORES`].
fn wait_for_quiet() {
    use std::sync::atomic::Ordering;
    let began = Instant::now();
    let deadline = began + QUIET_WAIT;
    let mut waited = false;
    loop {
        if QUIET_WAITED_MS.load(Ordering::Relaxed) + began.elapsed().as_millis() as u64
            > QUIET_BUDGET_MS
        {
            break;
        }
        let (Some(a), start) = (loadgen::stats::machine_busy_seconds(), Instant::now()) else {
            break;
        };
        std::thread::sleep(Duration::from_millis(250));
        let Some(b) = loadgen::stats::machine_busy_seconds() else {
            break;
        };
        let cores = (b - a) / start.elapsed().as_secs_f64();
        if cores < QUIET_CORES || Instant::now() > deadline {
            if waited {
                eprintln!("   (waited for a quiet machine: {cores:.2} CPUs busy elsewhere)");
            }
            break;
        }
        waited = true;
    }
    if waited {
        QUIET_WAITED_MS.fetch_add(began.elapsed().as_millis() as u64, Ordering::Relaxed);
    }
}

fn note<T>(errors: &mut Vec<String>, what: &str, r: anyhow::Result<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            eprintln!("  {what}: {e:#}");
            errors.push(format!("{what}: {e:#}"));
            None
        }
    }
}

fn base_spec(plan: &Plan, peer: &Peer, url: String, pid: u32) -> Spec {
    Spec {
        urls: vec![url],
        proto: peer.proto,
        size: plan.size,
        duration: plan.duration,
        warmup: (plan.duration * 0.2).min(1.0),
        server_pid: Some(pid),
        label: Some(peer.key.to_owned()),
        ..Spec::default()
    }
}

fn empty_results(peer: &Peer) -> PeerResults {
    PeerResults {
        key: peer.key.to_owned(),
        proto: peer.proto.to_string(),
        role: peer.role,
        description: peer.description.clone(),
        idle: None,
        saturate: Vec::new(),
        sweep: Vec::new(),
        fixed: None,
        rooms: None,
        ask: None,
        churn: None,
        errors: Vec::new(),
    }
}

/// A peer's server for the traffic phases, and its results so far.
struct Slot<'a> {
    peer: &'a Peer,
    server: Option<peers::Running>,
    results: PeerResults,
}

impl Slot<'_> {
    /// The run `shape` against this peer's server (skipped if it did not start).
    fn run(&mut self, plan: &Plan, what: &str, shape: impl FnOnce(Spec) -> Spec) -> Option<Report> {
        let server = self.server.as_ref()?;
        let base = base_spec(
            plan,
            self.peer,
            self.peer.url(&server.addrs[0]),
            server.pid(),
        );
        eprintln!("-- {} {what}", self.peer.key);
        note(&mut self.results.errors, what, measure(&shape(base)))
    }

    /// Messages per second this peer sustained at the headline receiver count.
    fn max_rate(&self, plan: &Plan) -> Option<f64> {
        let mut runs: Vec<&Report> = self
            .results
            .saturate
            .iter()
            .filter(|r| r.spec.clients == plan.fanout_clients && r.connected > 0)
            .collect();
        runs.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
        let r = runs.get(runs.len() / 2)?;
        Some(r.deliveries_per_s / r.connected as f64)
    }
}

/// Every scenario against every peer. Phases run one after the other, and within a phase
/// the peers take turns (repeated runs too), so that a disturbance of the machine does not
/// fall on one peer only. The idle measurement gets a fresh server per peer; the traffic
/// phases share one server per peer, all started up front (an idle server costs nothing).
fn run_peers(list: &[Peer], plan: &Plan, cpus: Option<&str>) -> Vec<PeerResults> {
    let mut slots: Vec<Slot<'_>> = list
        .iter()
        .map(|peer| Slot {
            peer,
            server: None,
            results: empty_results(peer),
        })
        .collect();

    eprintln!("== idle connections ({})", plan.idle_clients);
    for slot in &mut slots {
        let errors = &mut slot.results.errors;
        if let Some(server) = note(errors, "start", peers::start_peer(slot.peer, cpus)) {
            let spec = Spec {
                scenario: Scenario::Idle,
                clients: plan.idle_clients,
                workers: plan.idle_workers,
                duration: 0.5,
                ..base_spec(
                    plan,
                    slot.peer,
                    slot.peer.url(&server.addrs[0]),
                    server.pid(),
                )
            };
            eprintln!("-- {} idle", slot.peer.key);
            slot.results.idle = note(errors, "idle", measure(&spec));
        }
    }

    for slot in &mut slots {
        slot.server = note(
            &mut slot.results.errors,
            "start",
            peers::start_peer(slot.peer, cpus),
        );
    }

    eprintln!("== saturating fan-out");
    for round in 0..plan.repeats.max(1) {
        for &clients in &plan.client_counts {
            if round > 0 && clients != plan.fanout_clients {
                continue;
            }
            for slot in &mut slots {
                let what = format!("saturate {clients}");
                if let Some(r) = slot.run(plan, &what, |base| Spec {
                    scenario: Scenario::Fanout,
                    clients,
                    rate: 0.0,
                    ..base
                }) {
                    slot.results.saturate.push(r);
                }
            }
        }
    }

    eprintln!("== fan-out latency versus load");
    for &fraction in &plan.sweep {
        for slot in &mut slots {
            let Some(max_rate) = slot.max_rate(plan) else {
                continue;
            };
            let label = format!("{} @ {fraction}", slot.peer.key);
            if let Some(r) = slot.run(plan, &format!("sweep {fraction}"), |base| Spec {
                scenario: Scenario::Fanout,
                clients: plan.fanout_clients,
                rate: (max_rate * fraction).max(1.0),
                label: Some(label),
                ..base
            }) {
                slot.results.sweep.push(r);
            }
        }
    }

    eprintln!("== the same load for every peer, rooms, asks");
    for slot in &mut slots {
        slot.results.fixed = slot.run(plan, "fixed rate", |base| Spec {
            scenario: Scenario::Fanout,
            clients: plan.fanout_clients,
            rate: plan.fixed_rate,
            ..base
        });
    }
    for slot in &mut slots {
        if slot.peer.proto.has_rooms() {
            slot.results.rooms = slot.run(plan, "rooms", |base| Spec {
                scenario: Scenario::Fanout,
                clients: plan.fanout_clients,
                rooms: plan.rooms,
                rate: plan.room_rate,
                ..base
            });
        }
    }
    for slot in &mut slots {
        if slot.peer.proto.has_rooms() {
            slot.results.ask = slot.run(plan, "ask", |base| Spec {
                scenario: Scenario::Ask,
                clients: plan.ask_clients,
                rate: plan.ask_rate,
                ..base
            });
        }
    }

    eprintln!("== churn");
    for slot in &mut slots {
        slot.results.churn = slot.run(plan, "churn", |base| Spec {
            scenario: Scenario::Churn,
            concurrency: plan.churn_concurrency,
            ..base
        });
    }
    slots.into_iter().map(|s| s.results).collect()
}

/// Saturation and half-rate runs over the instances at `urls`.
fn cluster_runs(
    plan: &Plan,
    urls: Vec<String>,
    pid: u32,
    result: &mut ClusterResults,
) -> anyhow::Result<()> {
    let spec = Spec {
        scenario: Scenario::ClusterFanout,
        urls,
        clients: plan.fanout_clients,
        size: plan.size,
        duration: plan.duration,
        warmup: (plan.duration * 0.2).min(1.0),
        rate: 0.0,
        server_pid: Some(pid),
        label: Some(format!("cluster {}", result.exchange)),
        ..Spec::default()
    };
    let saturate = measure(&spec)?;
    let max_rate = saturate.deliveries_per_s / saturate.connected.max(1) as f64;
    result.saturate = Some(saturate);
    let half = Spec {
        rate: (max_rate * 0.5).max(1.0),
        ..spec
    };
    result.half = Some(measure(&half)?);
    result.status = "measured".into();
    Ok(())
}

fn run_cluster(programs: &peers::Programs, plan: &Plan, cpus: Option<&str>) -> Vec<ClusterResults> {
    let mut out = Vec::new();
    let server = &programs.bench_server;

    eprintln!("== neffos-rs cluster: memory exchange");
    let mut memory = ClusterResults {
        exchange: "memory".into(),
        setup: "2 instances in one process (shared `MemoryExchange`), receivers split evenly, sender on the first".into(),
        status: "failed".into(),
        saturate: None,
        half: None,
    };
    let args: Vec<String> = [
        "--instances",
        "2",
        "--exchange",
        "memory",
        "--addr",
        "127.0.0.1:0",
    ]
    .map(String::from)
    .to_vec();
    match peers::start(server, &args, cpus, 2) {
        Ok(running) => {
            let urls = running
                .addrs
                .iter()
                .map(|a| format!("ws://{a}/echo"))
                .collect();
            if let Err(e) = cluster_runs(plan, urls, running.pid(), &mut memory) {
                memory.status = format!("failed: {e:#}");
            }
        }
        Err(e) => memory.status = format!("failed: {e:#}"),
    }
    out.push(memory);

    eprintln!("== neffos-rs cluster: Redis exchange");
    let mut redis = ClusterResults {
        exchange: "redis".into(),
        setup: "2 processes on the server CPU, one local `redis-server` (not pinned)".into(),
        status: "failed".into(),
        saturate: None,
        half: None,
    };
    let broker = std::panic::catch_unwind(neffos::testkit::broker::RedisServer::start);
    match broker {
        Err(_) => redis.status = "not measured: redis-server could not be started".into(),
        Ok(broker) => {
            let args: Vec<String> = vec![
                "--exchange".into(),
                "redis".into(),
                "--redis-url".into(),
                broker.url(),
                "--addr".into(),
                "127.0.0.1:0".into(),
            ];
            match (
                peers::start(server, &args, cpus, 1),
                peers::start(server, &args, cpus, 1),
            ) {
                (Ok(a), Ok(b)) => {
                    let urls = vec![
                        format!("ws://{}/echo", a.addrs[0]),
                        format!("ws://{}/echo", b.addrs[0]),
                    ];
                    // The server CPU time measured is the first instance's.
                    if let Err(e) = cluster_runs(plan, urls, a.pid(), &mut redis) {
                        redis.status = format!("failed: {e:#}");
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    redis.status = format!(
                        "not measured yet: the bench server cannot use the Redis exchange ({e:#}); build it with `--features redis`"
                    );
                }
            }
        }
    }
    out.push(redis);

    out.push(ClusterResults {
        exchange: "nats".into(),
        setup: "2 processes, one local `nats-server`".into(),
        status: "not measured yet: the NATS exchange (neffos-nats) is not available to the bench server; wire it in `benches/src/server.rs` (`ExchangeKind::Nats`)".into(),
        saturate: None,
        half: None,
    });
    out
}

/// Runs the suite and writes the report.
pub fn run(args: &SuiteArgs) -> anyhow::Result<()> {
    let machine = Machine::detect();
    let pin = !args.no_pin && machine.cores >= 2;
    let loadgen_cpus = format!("1-{}", machine.cores - 1);
    if pin && let Some(status) = pin_self(&loadgen_cpus)? {
        anyhow::ensure!(status.success(), "the pinned suite failed ({status})");
        return Ok(());
    }
    let server_cpus = pin.then(|| "0".to_owned());
    let started = Instant::now();
    let root = args.root.canonicalize().context("the repository root")?;
    let exe = std::env::current_exe()?;
    let programs = peers::Programs {
        bench_server: exe
            .parent()
            .map(|d| d.join("neffos-bench-server"))
            .context("locating neffos-bench-server")?,
        peers: args
            .peers
            .clone()
            .unwrap_or_else(|| root.join("target/peers")),
    };
    let versions = Versions::detect(&root, &programs.peers.join("neffos-go-benchserver"));
    let plan = Plan::new(args.quick);
    let mut results = SuiteResults {
        quick: args.quick,
        date: utc_now(),
        wall_s: 0.0,
        machine,
        versions: versions.clone(),
        server_cpus: server_cpus.clone(),
        loadgen_cpus: machine::allowed_cpus(),
        plan: plan.clone(),
        peers: Vec::new(),
        cluster: Vec::new(),
    };
    let list: Vec<Peer> = peers::all(&programs, &versions)
        .into_iter()
        .filter(|peer| args.only.is_empty() || args.only.iter().any(|k| k == peer.key))
        .collect();
    for peer in &list {
        eprintln!("peer {}: {}", peer.key, peer.description);
    }
    results.peers = run_peers(&list, &plan, server_cpus.as_deref());
    if !args.no_cluster {
        results.cluster = run_cluster(&programs, &plan, server_cpus.as_deref());
    }
    results.wall_s = started.elapsed().as_secs_f64();

    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = out_dir.join("results.json");
    std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
    eprintln!("results: {}", json.display());
    report::write(&results, &root)?;
    eprintln!(
        "wrote {} and {} in {:.0} s",
        root.join("BENCHMARKS.md").display(),
        root.join("docs/bench").display(),
        results.wall_s
    );
    Ok(())
}

/// Writes BENCHMARKS.md and the plots again from a results file.
pub fn report_again(args: &ReportArgs) -> anyhow::Result<()> {
    let root = args.root.canonicalize().context("the repository root")?;
    let path = args
        .results
        .clone()
        .unwrap_or_else(|| root.join("target/bench/results.json"));
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let results: SuiteResults = serde_json::from_str(&text)?;
    report::write(&results, &root)
}

/// The results directory under a root.
pub fn results_path(root: &Path) -> PathBuf {
    root.join("target/bench/results.json")
}
