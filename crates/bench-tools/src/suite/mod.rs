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

mod brokers;
mod crossask;
mod machine;
mod overload;
mod peers;
mod plot;
mod queries;
mod recovery;
mod report;
mod resume;
mod scaleout;
mod shards;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::Context;
use serde::{Deserialize, Serialize};

use crate::loadgen::{self, Report, Scenario, Spec};
pub use brokers::{BrokerCeiling, BrokerStats};
pub use crossask::{AskRun, CrossAskResults};
pub use machine::{Machine, Versions};
pub use overload::{OverloadPoint, OverloadResults, OverloadRun, RssRow};
pub use peers::{Peer, Role};
pub use queries::{QueryResults, QueryRow, RestRow};
pub use recovery::{CatchUpRow, FanoutRow, ModeRuns, RecoveryResults};
pub use resume::{ResumeResults, ResumeRun, ResumeTopology};
pub use scaleout::{ScaleOutArgs, ScaleOutResults};
pub use shards::{GapRow, PeerRow, ShardResults, ShardRun};

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
    /// raw-axum, raw-fastws); the cross-instance rows are those of neffos-rs and go-neffos.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Skip the cluster runs.
    #[arg(long)]
    pub no_cluster: bool,
    /// Run only the cross-instance phase (the cluster runs of `--only` peers, neffos-rs
    /// and go-neffos, over `--exchanges`): results in `target/bench/cluster.json` and its
    /// tables on standard error; BENCHMARKS.md is left alone.
    #[arg(long, conflicts_with = "no_cluster")]
    pub cluster_only: bool,
    /// Exchanges of the cluster runs (comma-separated: memory, redis, nats; default all).
    #[arg(long, value_delimiter = ',')]
    pub exchanges: Vec<String>,
    /// Run only the cluster-query phase (neffos-rs `room_count`/`room_members` next to
    /// socketioxide-redis `fetch_sockets`, 5 instances over Redis; heartbeat cost at rest):
    /// results in `target/bench/queries.json`, its section on standard error (and appended
    /// to `target/bench/queries.md`); BENCHMARKS.md is left alone.
    #[arg(long, conflicts_with_all = ["no_cluster", "cluster_only"])]
    pub only_queries: bool,
    /// Run only the recovery phase (fan-out with connection-state recovery off and on,
    /// locally and across instances over Redis and NATS; reconnect to caught up):
    /// results in `target/bench/recovery.json`, its section on standard error (and in
    /// `target/bench/recovery.md`); BENCHMARKS.md is left alone.
    #[arg(long, conflicts_with_all = ["no_cluster", "cluster_only", "only_queries"])]
    pub only_recovery: bool,
    /// Run only the resume phase (kill -9 and restart of Redis, NATS, a Redis Cluster and
    /// a NATS cluster, 10 times each, two `neffos-bench-server`s streaming across): results
    /// in `target/bench/resume.json`, its section in `target/bench/resume.md` and on
    /// standard error, its plot in `docs/bench/`; BENCHMARKS.md is left alone.
    #[arg(long, conflicts_with_all = ["no_cluster", "cluster_only", "only_queries", "only_recovery"])]
    pub only_resume: bool,
    /// Run only the Redis Cluster shards phase (1 vs 3 shards, as is and broker-bound; one
    /// hot namespace with and without partitions; the gap per topology change;
    /// socketioxide-redis's cluster driver): results in `target/bench/shards.json`, its
    /// section (and plots under `docs/bench/`) in `target/bench/shards.md`; BENCHMARKS.md
    /// is left alone.
    #[arg(long, conflicts_with_all = ["no_cluster", "cluster_only", "only_queries", "only_recovery", "only_resume"])]
    pub only_shards: bool,
    /// Run only the overload phase (open loop at 50/100/150 % of the raw floor's rate, with
    /// and without a CPU hog; memory at 2× and 5×): results in `target/bench/overload.json`,
    /// its section on standard error and in `target/bench/overload.md`; BENCHMARKS.md is
    /// left alone.
    #[arg(long, conflicts_with_all = ["cluster_only", "only_queries"])]
    pub only_overload: bool,
    /// Skip the overload phase.
    #[arg(long)]
    pub no_overload: bool,
    /// Connections of the cluster-query phase.
    #[arg(long, default_value_t = 10_000)]
    pub query_connections: usize,
    /// Do not pin the servers and the load generator to separate CPUs.
    #[arg(long)]
    pub no_pin: bool,
    /// An earlier `neffos-bench-server` to run as one more peer (`neffos-rs-before`), for
    /// before/after ratios measured in the same run (`cargo xtask bench --before <rev>`).
    #[arg(long)]
    pub before: Option<PathBuf>,
    /// What `--before` was built from (a git revision), for the report.
    #[arg(long, default_value = "earlier build")]
    pub before_label: String,
    /// The scale-out demonstration (`--scale-out`, `--only-scale-out`, sizes).
    #[command(flatten)]
    pub scale_out: ScaleOutArgs,
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
                duration: 2.0,
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

/// A cluster configuration of neffos-rs or Go neffos.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ClusterResults {
    /// The peer (`neffos-rs`, `go-neffos`).
    #[serde(default = "ours_key")]
    pub peer: String,
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
    /// What the broker did during the saturating run.
    #[serde(default)]
    pub broker: Option<BrokerStats>,
}

fn ours_key() -> String {
    report::OURS.to_owned()
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
    /// neffos-rs and Go neffos clusters.
    pub cluster: Vec<ClusterResults>,
    /// The brokers' own ceilings (raw publish → subscribers).
    #[serde(default)]
    pub broker_ceilings: Vec<BrokerCeiling>,
    /// The scale-out demonstration, per exchange (empty when not run).
    #[serde(default)]
    pub scale_out: Vec<ScaleOutResults>,
    /// neffos-rs Asks across instances, per exchange (cross-instance phase).
    #[serde(default)]
    pub cross_ask: Vec<CrossAskResults>,
    /// Cluster queries next to socketioxide-redis `fetch_sockets` (cross-instance phase,
    /// Redis).
    #[serde(default)]
    pub queries: Option<QueryResults>,
    /// Connection-state recovery: its cost and reconnect to caught up.
    #[serde(default)]
    pub recovery: Option<RecoveryResults>,
    /// Resumption after broker outages (cross-instance phase).
    #[serde(default)]
    pub resume: Option<ResumeResults>,
    /// Redis Cluster shards (cross-instance phase).
    #[serde(default)]
    pub shards: Option<ShardResults>,
    /// Open-loop overload around the raw floor's sustainable rate (issue 13).
    #[serde(default)]
    pub overload: Option<OverloadResults>,
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

/// Which cross-instance rows run: `--only` peers and `--exchanges` (empty: all).
struct ClusterOnly<'a> {
    peers: &'a [String],
    exchanges: &'a [String],
}

impl ClusterOnly<'_> {
    fn wants(&self, peer: &str, exchange: &str) -> bool {
        (self.peers.is_empty() || self.peers.iter().any(|p| p == peer))
            && (self.exchanges.is_empty() || self.exchanges.iter().any(|e| e == exchange))
    }
}

/// The broker of a cross-instance run and what to watch on it.
struct Watched<'a> {
    broker: &'a brokers::Broker,
    /// The namespace channel (Redis) or subject (NATS) of the peer.
    channel: &'static str,
    instances: usize,
}

/// Saturation and half-rate runs over the instances at `urls`; with a broker, what the
/// broker did during the saturating run.
fn cluster_runs(
    plan: &Plan,
    urls: Vec<String>,
    proto: crate::loadgen::Proto,
    pid: u32,
    result: &mut ClusterResults,
    watched: Option<Watched<'_>>,
) -> anyhow::Result<()> {
    let spec = Spec {
        scenario: Scenario::ClusterFanout,
        urls,
        proto,
        clients: plan.fanout_clients,
        size: plan.size,
        duration: plan.duration,
        warmup: (plan.duration * 0.2).min(1.0),
        rate: 0.0,
        server_pid: Some(pid),
        label: Some(format!("cluster {} {}", result.peer, result.exchange)),
        ..Spec::default()
    };
    let saturate = match watched {
        Some(w) => {
            let endpoint = w.broker.endpoint;
            let before = endpoint.counters().ok();
            let watch = endpoint.watch(w.channel);
            let report = measure(&spec);
            let sent = report.as_ref().map_or(0, |r| r.sent);
            result.broker = Some(watch.finish(&endpoint, w.channel, w.instances, before, sent));
            report?
        }
        None => measure(&spec)?,
    };
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

/// The key of the Go neffos peer.
const GO_NEFFOS: &str = "go-neffos";
const SOCKETIOXIDE: &str = "socketioxide";

/// `peer` (neffos-rs or Go neffos) as 2 processes joined through `broker`.
fn broker_row(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    broker: &brokers::Broker,
    kind: brokers::Kind,
    peer: &str,
) -> ClusterResults {
    let ours = peer == report::OURS;
    let socketio = peer == SOCKETIOXIDE;
    let broker_name = match kind {
        brokers::Kind::Redis => "redis-server",
        brokers::Kind::Nats => "nats-server",
    };
    let mut result = ClusterResults {
        peer: peer.to_owned(),
        exchange: kind.name().into(),
        setup: if cpus.is_some() {
            format!(
                "2 processes on the server CPU, one local `{broker_name}` on the load generator's CPU"
            )
        } else {
            format!("2 processes, one local `{broker_name}` (not pinned)")
        },
        status: "failed".into(),
        saturate: None,
        half: None,
        broker: None,
    };
    let (program, args): (PathBuf, Vec<String>) = match (ours, kind) {
        // socketioxide joins its instances with socketioxide-redis (Redis only).
        _ if socketio => (
            programs.peers.join("release/peer-socketioxide"),
            vec!["--redis-url".into(), broker.url()],
        ),
        (true, brokers::Kind::Redis) => (
            programs.bench_server.clone(),
            vec![
                "--exchange".into(),
                "redis".into(),
                "--redis-url".into(),
                broker.url(),
            ],
        ),
        (true, brokers::Kind::Nats) => (
            programs.bench_server.clone(),
            vec![
                "--exchange".into(),
                "nats".into(),
                "--nats-url".into(),
                broker.url(),
            ],
        ),
        (false, brokers::Kind::Redis) => (
            programs.peers.join("neffos-go-benchserver"),
            vec![
                "-exchange".into(),
                "redis".into(),
                "-redis-addr".into(),
                broker.addr(),
            ],
        ),
        (false, brokers::Kind::Nats) => (
            programs.peers.join("neffos-go-benchserver"),
            vec![
                "-exchange".into(),
                "nats".into(),
                "-nats-url".into(),
                broker.url(),
            ],
        ),
    };
    let mut args = args;
    args.extend([
        if ours || socketio { "--addr" } else { "-addr" }.to_owned(),
        "127.0.0.1:0".to_owned(),
    ]);
    let (path, proto) = if socketio {
        (
            "/socket.io/?EIO=4&transport=websocket",
            crate::loadgen::Proto::Socketio,
        )
    } else {
        ("/echo", crate::loadgen::Proto::Neffos)
    };
    eprintln!("-- {peer} cluster over {}", kind.name());
    // Both processes are killed when this match ends, on success or failure.
    match (
        peers::start(&program, &args, cpus, 1),
        peers::start(&program, &args, cpus, 1),
    ) {
        (Ok(a), Ok(b)) => {
            let urls = vec![
                format!("ws://{}{path}", a.addrs[0]),
                format!("ws://{}{path}", b.addrs[0]),
            ];
            let watched = Watched {
                broker,
                channel: if socketio {
                    // socketioxide-redis publishes broadcasts of `/bench` here.
                    "socket.io-request#/bench#"
                } else {
                    kind.namespace_channel(ours)
                },
                instances: 2,
            };
            // The server CPU time measured is the first instance's.
            if let Err(e) = cluster_runs(plan, urls, proto, a.pid(), &mut result, Some(watched)) {
                result.status = format!("failed: {e:#}");
            }
        }
        (Err(e), _) | (_, Err(e)) => {
            result.status = if ours {
                format!(
                    "not measured: the bench server cannot use the {} exchange ({e:#}); build it with `--features redis,nats`",
                    kind.name()
                )
            } else {
                format!("not measured: {e:#}")
            };
        }
    }
    result
}

/// The cross-instance phase: neffos-rs over the memory exchange (one process), then for
/// Redis and NATS in turn one broker and, through it, neffos-rs and Go neffos as two
/// processes each, then the broker's own ceiling.
fn run_cluster(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    only: &ClusterOnly<'_>,
) -> (Vec<ClusterResults>, Vec<BrokerCeiling>) {
    let mut out = Vec::new();
    let mut ceilings = Vec::new();
    let server = &programs.bench_server;

    if only.wants(report::OURS, "memory") {
        eprintln!("== neffos-rs cluster: memory exchange");
        let mut memory = ClusterResults {
            peer: report::OURS.into(),
            exchange: "memory".into(),
            setup: "2 instances in one process (shared `MemoryExchange`), receivers split evenly, sender on the first".into(),
            status: "failed".into(),
            saturate: None,
            half: None,
            broker: None,
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
                if let Err(e) = cluster_runs(
                    plan,
                    urls,
                    crate::loadgen::Proto::Neffos,
                    running.pid(),
                    &mut memory,
                    None,
                ) {
                    memory.status = format!("failed: {e:#}");
                }
            }
            Err(e) => memory.status = format!("failed: {e:#}"),
        }
        out.push(memory);
    }

    for kind in [brokers::Kind::Redis, brokers::Kind::Nats] {
        let socketio_rows: &[&str] = match kind {
            brokers::Kind::Redis => &[SOCKETIOXIDE],
            brokers::Kind::Nats => &[],
        };
        let rows: Vec<&str> = [report::OURS, GO_NEFFOS]
            .iter()
            .chain(socketio_rows)
            .copied()
            .filter(|peer| only.wants(peer, kind.name()))
            .collect();
        if rows.is_empty() {
            continue;
        }
        eprintln!("== cross-instance: {}", kind.name());
        // Killed when this iteration ends.
        let broker = match brokers::Broker::start(kind) {
            Ok(broker) => broker,
            Err(e) => {
                for peer in rows {
                    out.push(ClusterResults {
                        peer: peer.into(),
                        exchange: kind.name().into(),
                        setup: "2 processes, one local broker".into(),
                        status: format!("not measured: {e:#}"),
                        saturate: None,
                        half: None,
                        broker: None,
                    });
                }
                continue;
            }
        };
        for peer in rows {
            out.push(broker_row(programs, plan, cpus, &broker, kind, peer));
        }
        eprintln!("-- {} ceiling", kind.name());
        wait_for_quiet();
        let ceiling = brokers::ceiling(&broker.endpoint, plan.size, plan.duration.min(2.0), cpus);
        if let Err(e) = &ceiling {
            eprintln!("  ceiling: {e:#}");
        }
        ceilings.push(BrokerCeiling {
            broker: kind.name().into(),
            subscribers: brokers::CEILING_SUBSCRIBERS,
            size: plan.size,
            publishes_per_s: ceiling.as_ref().ok().copied(),
            status: match &ceiling {
                Ok(_) => "measured".into(),
                Err(e) => format!("failed: {e:#}"),
            },
        });
    }
    (out, ceilings)
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
    // The servers' standard error, one file per start (a server that dies says why there).
    let logs = root.join("target/bench/logs");
    let _ = std::fs::remove_dir_all(&logs);
    peers::log_to(logs);
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
        before: args
            .before
            .clone()
            .map(|program| (program, args.before_label.clone())),
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
        broker_ceilings: Vec::new(),
        scale_out: Vec::new(),
        cross_ask: Vec::new(),
        queries: None,
        recovery: None,
        resume: None,
        shards: None,
        overload: None,
    };
    let list: Vec<Peer> = peers::all(&programs, &versions)
        .into_iter()
        .filter(|peer| args.only.is_empty() || args.only.iter().any(|k| k == peer.key))
        .collect();
    if args.only_queries {
        let res = queries::run(&programs, server_cpus.as_deref(), args.query_connections);
        return write_phase(&root, "queries", &res, queries::render, started);
    }
    if args.only_recovery {
        let res = recovery::run(&programs, &plan, server_cpus.as_deref(), args.quick);
        return write_phase(&root, "recovery", &res, recovery::render, started);
    }
    if args.only_resume {
        return resume::write_alone(
            &resume::run(&programs, server_cpus.as_deref()),
            &root,
            started,
        );
    }
    if args.only_shards {
        let res = shards::run(&programs, server_cpus.as_deref(), args.quick);
        return shards::write_alone(&res, &root, started);
    }
    if args.only_overload {
        let res = overload::run(&list, &plan, server_cpus.as_deref());
        return write_phase(&root, "overload", &res, overload::render, started);
    }
    if !args.scale_out.only_scale_out {
        if !args.cluster_only {
            for peer in &list {
                eprintln!("peer {}: {}", peer.key, peer.description);
            }
            results.peers = run_peers(&list, &plan, server_cpus.as_deref());
            if !args.no_overload {
                results.overload = Some(overload::run(&list, &plan, server_cpus.as_deref()));
            }
        }
        if !args.no_cluster {
            let only = ClusterOnly {
                peers: &args.only,
                exchanges: &args.exchanges,
            };
            (results.cluster, results.broker_ceilings) =
                run_cluster(&programs, &plan, server_cpus.as_deref(), &only);
            results.cross_ask = crossask::run(&programs, &plan, server_cpus.as_deref(), &only);
            if only.wants(report::OURS, "redis") {
                results.queries = Some(queries::run(
                    &programs,
                    server_cpus.as_deref(),
                    args.query_connections,
                ));
                results.shards = Some(shards::run(&programs, server_cpus.as_deref(), args.quick));
            }
            if args.only.is_empty() || args.only.iter().any(|k| k == report::OURS) {
                results.recovery = Some(recovery::run(
                    &programs,
                    &plan,
                    server_cpus.as_deref(),
                    args.quick,
                ));
            }
            if args.exchanges.is_empty() {
                results.resume = Some(resume::run(&programs, server_cpus.as_deref()));
            }
        }
    }
    if args.scale_out.enabled() {
        results.scale_out = scaleout::run(&programs, &args.scale_out, server_cpus.as_deref());
    }
    results.wall_s = started.elapsed().as_secs_f64();
    if args.scale_out.only_scale_out {
        return scaleout::write_alone(&results.scale_out, &root);
    }
    if args.cluster_only {
        let out_dir = root.join("target/bench");
        std::fs::create_dir_all(&out_dir)?;
        let json = out_dir.join("cluster.json");
        std::fs::write(&json, serde_json::to_string_pretty(&results)?)?;
        eprintln!("\n{}", report::cluster_only(&results)?);
        eprintln!(
            "results: {} ({:.0} s; BENCHMARKS.md not written)",
            json.display(),
            results.wall_s
        );
        return Ok(());
    }

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

/// Writes a single phase's results (`target/bench/<name>.json`) and its section
/// (`target/bench/<name>.md`, and standard error); BENCHMARKS.md is left alone.
pub(super) fn write_phase<T: Serialize>(
    root: &Path,
    name: &str,
    res: &T,
    render: impl FnOnce(&T, &mut String) -> std::fmt::Result,
    started: Instant,
) -> anyhow::Result<()> {
    let out_dir = root.join("target/bench");
    std::fs::create_dir_all(&out_dir)?;
    let json = out_dir.join(format!("{name}.json"));
    std::fs::write(&json, serde_json::to_string_pretty(res)?)?;
    let mut md = String::new();
    render(res, &mut md)?;
    std::fs::write(out_dir.join(format!("{name}.md")), &md)?;
    eprintln!("\n{md}");
    eprintln!(
        "results: {} ({:.0} s; BENCHMARKS.md not written)",
        json.display(),
        started.elapsed().as_secs_f64()
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
