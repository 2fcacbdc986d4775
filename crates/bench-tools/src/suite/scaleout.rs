#![allow(clippy::print_stderr)]
//! The scale-out demonstration (issue 7): 100,000 concurrent clients spread over 6
//! instances of `neffos-bench-server` on this machine, joined through one Redis (then one
//! NATS), every instance holding at most two broker connections, and broadcasts that each
//! reach all 100,000 clients. Go neffos would need one Redis connection per client for this.
//!
//! For each exchange the phase:
//!
//! 1. checks that the machine can hold it (available memory, open files per process,
//!    ephemeral ports) and says what is missing otherwise;
//! 2. starts the broker on a free loopback port (the test harness's
//!    [`RedisServer`](neffos::testkit::broker::RedisServer) /
//!    [`NatsServer`](neffos::testkit::broker::NatsServer), NATS with its monitoring port),
//!    then the instances, one process each (`--exchange redis|nats`), pinned like every
//!    server of the suite;
//! 3. runs `neffos-loadgen cluster-fanout --per-message`: the clients spread evenly over the
//!    instances, split over worker processes of at most 17,000 connections (a process may
//!    hold 20,000 file descriptors), from 127.0.0.2–127.0.0.17; one sender on the first
//!    instance broadcasts a 64 B message to the namespace at a low rate (default five
//!    broadcasts, two seconds apart);
//! 4. once every client is connected, before the first broadcast: the `VmRSS` of every
//!    instance, its broker connections (its TCP sockets to the broker's port, from
//!    `/proc/<pid>/fd` and `/proc/net/tcp`), the broker's own count (Redis `CLIENT LIST`
//!    grouped by client name, NATS monitoring `/connz`) and the machine's available
//!    memory; after the run, each instance's peak RSS (`VmHWM`);
//! 5. reports per broadcast the deliveries, the lost ones, p50/p99 of the delivery latency
//!    and the time until the last of the clients got it; then stops every process it started
//!    (the guards kill them on success and on failure).
//!
//! Run it alone (after `cargo build --release -p neffos-bench-tools --features redis,nats --bins`):
//!
//! ```sh
//! target/release/neffos-loadgen suite --only-scale-out
//! target/release/neffos-loadgen suite --only-scale-out --scale-out-clients 10000 --scale-out-exchanges redis
//! ```
//!
//! Alone, the results go to `target/bench/scaleout.json` and the report section is printed;
//! `BENCHMARKS.md` is left alone. `cargo xtask bench` runs it by default (not with
//! `--quick`, unless `--scale-out` is given) and puts it in `BENCHMARKS.md`.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

use super::brokers::{self, BrokerStats, Kind};
use super::peers::{self, Programs, Running};
use super::report::{TargetRow, thousands, time_us};
use crate::loadgen::{self, Proto, Report, Scenario, Spec, stats};

/// Connections per load generator process (the hard limit is 20,000 descriptors).
const PER_WORKER: usize = 17_000;
/// The most descriptors a process of the phase may need.
const FD_BUDGET: usize = 19_000;
/// Descriptors a process needs besides its connections (listener, broker, epoll, pipes).
const FD_MARGIN: usize = 64;
/// Memory the phase needs per client: the server's connection (~23 KiB), the load
/// generator's (~8 KiB) and the kernel's two sockets, with room to spare.
const KIB_PER_CLIENT: u64 = 64;
/// Memory kept free for everything else on the machine.
const RESERVE_MIB: u64 = 2048;
/// Source addresses of the load generator (127.0.0.2–127.0.0.17).
const SOURCE_IPS: usize = 16;
/// A broadcast may take longer than the load generator's usual 300 ms of quiet to reach
/// everyone: the run ends after this many seconds without any delivery.
const DRAIN_QUIET_S: f64 = 3.0;
/// …and at the latest this long after the last broadcast.
const DRAIN_MAX_S: f64 = 60.0;
/// Connecting every client may take this long.
const CONNECT_DEADLINE_S: f64 = 600.0;
/// Lifetime of the instances (they are stopped long before).
const SERVER_LIFETIME_S: u64 = 1800;
/// The most broker connections an instance may hold.
const MAX_BROKER_CONNS: usize = 2;
/// Other processes using more CPUs than this during the broadcasts disturbed them.
const DISTURBED: f64 = 0.3;

/// The scale-out options of `neffos-loadgen suite`.
#[derive(Debug, Clone, clap::Args)]
pub struct ScaleOutArgs {
    /// Run the scale-out demonstration (100,000 clients over 6 instances through Redis,
    /// then NATS). `cargo xtask bench` passes it unless `--quick`.
    #[arg(long)]
    pub scale_out: bool,
    /// Run only the scale-out demonstration: no peers, no cluster runs; results in
    /// `target/bench/scaleout.json` and the report section printed (BENCHMARKS.md is not
    /// written).
    #[arg(long)]
    pub only_scale_out: bool,
    /// Clients of the scale-out demonstration.
    #[arg(long, default_value_t = 100_000)]
    pub scale_out_clients: usize,
    /// Instances (one server process each).
    #[arg(long, default_value_t = 6)]
    pub scale_out_instances: usize,
    /// Exchanges, in turn (comma-separated: redis, nats).
    #[arg(long, value_delimiter = ',', default_value = "redis,nats")]
    pub scale_out_exchanges: Vec<String>,
    /// Broadcasts, each to every client.
    #[arg(long, default_value_t = 5)]
    pub scale_out_broadcasts: usize,
    /// Broadcasts per second (one every two seconds by default: one broadcast to 100,000
    /// clients keeps this machine busy for over a second, and overlapping broadcasts would
    /// measure the queue, not one broadcast).
    #[arg(long, default_value_t = 0.5)]
    pub scale_out_rate: f64,
}

impl ScaleOutArgs {
    /// Whether the phase runs.
    pub fn enabled(&self) -> bool {
        self.scale_out || self.only_scale_out
    }
}

/// The scale-out demonstration over one exchange.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ScaleOutResults {
    /// `redis` or `nats`.
    pub exchange: String,
    /// Server processes, one instance each.
    pub instances: usize,
    /// Clients asked for.
    pub clients: usize,
    /// Load generator processes.
    pub workers: usize,
    /// Broadcasts asked for, and their rate per second.
    pub broadcasts: usize,
    /// Broadcasts per second.
    pub rate: f64,
    /// How the processes ran.
    pub setup: String,
    /// `measured`, or what went wrong.
    pub status: String,
    /// The load generator's report (with one entry per broadcast in `per_message`).
    pub report: Option<Report>,
    /// `VmRSS` of each instance once started, KiB.
    pub rss_idle_kib: Vec<u64>,
    /// `VmRSS` of each instance with every client connected, KiB.
    pub rss_connected_kib: Vec<u64>,
    /// Peak `VmRSS` (`VmHWM`) of each instance after the broadcasts, KiB.
    pub rss_peak_kib: Vec<u64>,
    /// TCP connections from each instance to the broker, with every client connected.
    pub broker_conns: Vec<usize>,
    /// What the broker saw during the run: its own count of connections (most seen),
    /// publishes and deliveries (`brokers::Endpoint::watch`).
    pub broker: Option<BrokerStats>,
    /// The machine's available memory before connecting minus with every client
    /// connected (servers, load generator and kernel), MiB.
    pub machine_used_mib: Option<u64>,
    /// CPUs used during the broadcasts by processes the suite did not start (this machine
    /// is shared), from `/proc/<pid>/stat` sampled every 200 ms; kernel threads excluded.
    pub other_cores: Option<f64>,
}

impl ScaleOutResults {
    fn total(v: &[u64]) -> Option<u64> {
        (!v.is_empty()).then(|| v.iter().sum())
    }

    /// Sum of the instances' RSS with every client connected, KiB.
    pub fn rss_total_kib(&self) -> Option<u64> {
        Self::total(&self.rss_connected_kib)
    }

    /// Server memory per connected client: the instances' RSS growth from idle to
    /// connected, divided by the clients, KiB.
    pub fn kib_per_conn(&self) -> Option<f64> {
        let connected = self.report.as_ref()?.connected;
        let (idle, conn) = (
            Self::total(&self.rss_idle_kib)?,
            Self::total(&self.rss_connected_kib)?,
        );
        (connected > 0).then(|| (conn as f64 - idle as f64) / connected as f64)
    }

    /// The slowest broadcast's time to reach every client, µs (`None` if one never did).
    pub fn worst_reach_us(&self) -> Option<f64> {
        let per = &self.report.as_ref()?.per_message;
        if per.is_empty() {
            return None;
        }
        per.iter()
            .map(|m| m.reach_all_us)
            .try_fold(0.0f64, |acc, r| r.map(|r| acc.max(r)))
    }

    /// The target: every client connected, at most two broker connections per instance,
    /// every broadcast delivered to every client.
    fn met(&self) -> Option<bool> {
        let r = self.report.as_ref()?;
        if self.status != "measured" {
            return None;
        }
        Some(
            r.connected == self.clients
                && r.connect_failed == 0
                && r.disconnects == 0
                && self.broker_conns.len() == self.instances
                && self.broker_conns.iter().all(|&n| n <= MAX_BROKER_CONNS)
                && self
                    .broker
                    .as_ref()
                    .and_then(|b| b.connections)
                    .is_none_or(|n| n as usize <= MAX_BROKER_CONNS * self.instances)
                && !r.per_message.is_empty()
                && r.per_message.iter().all(|m| m.lost == 0 && m.received > 0),
        )
    }
}

/// The socket inodes of process `pid`.
fn socket_inodes(pid: u32) -> HashSet<u64> {
    let Ok(dir) = std::fs::read_dir(format!("/proc/{pid}/fd")) else {
        return HashSet::new();
    };
    dir.filter_map(|e| std::fs::read_link(e.ok()?.path()).ok())
        .filter_map(|target| {
            target
                .to_str()?
                .strip_prefix("socket:[")?
                .strip_suffix(']')?
                .parse()
                .ok()
        })
        .collect()
}

/// Established TCP connections from each process of `pids` to 127.0.0.1:`port`: the
/// sockets of `/proc/net/tcp` whose remote end is that address, matched to the processes'
/// descriptors by inode. (The remote address matters: the broker's port is in the
/// ephemeral range, so a client the instance accepted may come from the same port number.)
fn connections_to(pids: &[u32], port: u16) -> anyhow::Result<Vec<usize>> {
    let table = std::fs::read_to_string("/proc/net/tcp").context("reading /proc/net/tcp")?;
    // 127.0.0.1 as the kernel prints it (little-endian hex), and the port.
    let broker = format!("0100007F:{port:04X}");
    let mut inodes = HashSet::new();
    for line in table.lines().skip(1) {
        let fields: Vec<&str> = line.split_whitespace().take(10).collect();
        let (Some(remote), Some(state), Some(inode)) =
            (fields.get(2), fields.get(3), fields.get(9))
        else {
            continue;
        };
        // State 01: ESTABLISHED.
        if *remote == broker
            && *state == "01"
            && let Ok(inode) = inode.parse::<u64>()
        {
            inodes.insert(inode);
        }
    }
    Ok(pids
        .iter()
        .map(|&pid| socket_inodes(pid).intersection(&inodes).count())
        .collect())
}

/// CPU seconds of every process that this one did not start (directly or not), by
/// process ID; kernel threads (PID 2 and its children) left out.
fn foreign_cpu_by_pid() -> HashMap<u32, f64> {
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return HashMap::new();
    };
    // pid → (parent, CPU seconds)
    let procs: HashMap<u32, (u32, f64)> = dir
        .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
        .filter_map(|pid| {
            let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
            // Fields after the command name's closing ')': state, ppid, …, utime (12th),
            // stime (13th).
            let rest: Vec<&str> = stat.get(stat.rfind(')')? + 2..)?.split(' ').collect();
            let ppid = rest.get(1)?.parse().ok()?;
            let utime: f64 = rest.get(11)?.parse().ok()?;
            let stime: f64 = rest.get(12)?.parse().ok()?;
            Some((pid, (ppid, (utime + stime) / 100.0)))
        })
        .collect();
    let me = std::process::id();
    let ours = |mut pid: u32| {
        // Walks up the parents (bounded; a vanished parent ends it).
        for _ in 0..64 {
            if pid == me {
                return true;
            }
            match procs.get(&pid) {
                Some(&(parent, _)) if parent > 1 => pid = parent,
                _ => return false,
            }
        }
        false
    };
    procs
        .iter()
        .filter(|&(&pid, &(ppid, _))| pid != 2 && ppid != 2 && !ours(pid))
        .map(|(&pid, &(_, cpu))| (pid, cpu))
        .collect()
}

/// Samples, every 200 ms until finished, the CPU time used by processes this one did not
/// start: what else this shared machine was doing.
struct ForeignCpu {
    stop: Arc<AtomicBool>,
    handle: std::thread::JoinHandle<Vec<(Instant, f64)>>,
}

impl ForeignCpu {
    fn start() -> ForeignCpu {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let handle = std::thread::spawn(move || {
            let mut samples = vec![(Instant::now(), 0.0)];
            let mut previous = foreign_cpu_by_pid();
            let mut total = 0.0;
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                let now = foreign_cpu_by_pid();
                // Processes seen in both samples (one that lived less than 200 ms between
                // them is missed).
                total += now
                    .iter()
                    .filter_map(|(pid, cpu)| previous.get(pid).map(|p| (cpu - p).max(0.0)))
                    .sum::<f64>();
                samples.push((Instant::now(), total));
                previous = now;
            }
            samples
        });
        ForeignCpu { stop, handle }
    }

    /// Stops sampling: (instant, cumulative CPU seconds) pairs.
    fn finish(self) -> Vec<(Instant, f64)> {
        self.stop.store(true, Ordering::Relaxed);
        self.handle.join().unwrap_or_default()
    }
}

/// CPUs used by other processes between `from` and `to`, from the samples around them.
fn foreign_cores(samples: &[(Instant, f64)], from: Instant, to: Instant) -> Option<f64> {
    let (&(t0, c0), &(t1, c1)) = (
        samples
            .iter()
            .rev()
            .find(|(at, _)| *at <= from)
            .or(samples.first())?,
        samples
            .iter()
            .find(|(at, _)| *at >= to)
            .or(samples.last())?,
    );
    let wall = t1.saturating_duration_since(t0).as_secs_f64();
    (wall > 0.0).then(|| (c1 - c0) / wall)
}

/// Microseconds as ms, or as s from one second on.
fn long_time(us: f64) -> String {
    if us >= 1_000_000.0 {
        format!("{:.2} s", us / 1e6)
    } else {
        time_us(us)
    }
}

/// `MemAvailable` of `/proc/meminfo`, MiB.
fn available_mib() -> Option<u64> {
    std::fs::read_to_string("/proc/meminfo")
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse::<u64>().ok())
        .map(|kib| kib / 1024)
}

/// The soft limit of open files of this process (inherited by every process it starts).
fn open_files_limit() -> Option<usize> {
    std::fs::read_to_string("/proc/self/limits")
        .ok()?
        .lines()
        .find(|l| l.starts_with("Max open files"))?
        .split_whitespace()
        .nth(3)?
        .parse()
        .ok()
}

/// Ports of the ephemeral range.
fn ephemeral_ports() -> Option<usize> {
    let range = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range").ok()?;
    let mut it = range.split_whitespace().map(|v| v.parse::<usize>().ok());
    let (lo, hi) = (it.next()??, it.next()??);
    Some(hi.saturating_sub(lo) + 1)
}

/// Load generator processes for `clients`.
fn workers_for(clients: usize) -> usize {
    clients.div_ceil(PER_WORKER).max(1)
}

/// Whether this machine can hold the phase; what is missing otherwise.
fn preflight(args: &ScaleOutArgs) -> anyhow::Result<()> {
    let (clients, instances) = (args.scale_out_clients, args.scale_out_instances);
    if instances == 0 || clients < instances {
        bail!("the scale-out needs at least one instance and one client per instance");
    }
    if args.scale_out_rate.is_nan() || args.scale_out_rate <= 0.0 || args.scale_out_broadcasts == 0
    {
        bail!("the scale-out needs at least one broadcast at a rate above 0");
    }
    let limit = open_files_limit().unwrap_or(FD_BUDGET).min(FD_BUDGET);
    let per_instance = clients.div_ceil(instances) + 1 + FD_MARGIN;
    if per_instance > limit {
        bail!(
            "{clients} clients over {instances} instances need {per_instance} open files per \
             server process, more than the {limit} allowed: use more instances \
             (--scale-out-instances)"
        );
    }
    let per_worker = clients.div_ceil(workers_for(clients)) + 1 + FD_MARGIN;
    if per_worker > limit {
        bail!("{per_worker} open files per load generator process: more than the {limit} allowed");
    }
    if let Some(ports) = ephemeral_ports()
        && clients.div_ceil(SOURCE_IPS) + 1000 > ports
    {
        bail!(
            "{clients} clients from {SOURCE_IPS} source addresses need more than the {ports} \
             ephemeral ports of each (net.ipv4.ip_local_port_range)"
        );
    }
    let need_mib = clients as u64 * KIB_PER_CLIENT / 1024 + RESERVE_MIB;
    match available_mib() {
        Some(have) if have < need_mib => bail!(
            "not enough memory for {} clients over {instances} instances: {} MiB available \
             (MemAvailable, `free -m`), {} MiB needed ({KIB_PER_CLIENT} KiB per client and \
             {RESERVE_MIB} MiB to spare); free some memory or use fewer clients \
             (--scale-out-clients)",
            thousands(clients as f64),
            thousands(have as f64),
            thousands(need_mib as f64)
        ),
        _ => Ok(()),
    }
}

/// What is measured once every client is connected.
#[derive(Debug, Default)]
struct AtReady {
    /// When.
    at: Option<Instant>,
    rss_kib: Vec<u64>,
    broker_conns: Vec<usize>,
    available_mib: Option<u64>,
    errors: Vec<String>,
}

/// The phase over one exchange. An error before the load generator started means the
/// phase could not be set up.
fn run_one(
    programs: &Programs,
    args: &ScaleOutArgs,
    cpus: Option<&str>,
    result: &mut ScaleOutResults,
) -> anyhow::Result<()> {
    preflight(args)?;
    let (kind, url_flag) = match result.exchange.as_str() {
        "redis" => (Kind::Redis, "--redis-url"),
        "nats" => (Kind::Nats, "--nats-url"),
        other => bail!("unknown exchange {other:?} (redis or nats)"),
    };
    let broker = brokers::Broker::start(kind)?;
    let broker_port: u16 = broker
        .addr()
        .rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .context("the broker's port")?;
    let mut servers: Vec<Running> = Vec::with_capacity(args.scale_out_instances);
    let server_args = vec![
        "--exchange".to_owned(),
        result.exchange.clone(),
        url_flag.to_owned(),
        broker.url(),
        "--addr".to_owned(),
        "127.0.0.1:0".to_owned(),
        "--lifetime-secs".to_owned(),
        SERVER_LIFETIME_S.to_string(),
    ];
    for i in 0..args.scale_out_instances {
        let running =
            peers::start(&programs.bench_server, &server_args, cpus, 1).with_context(|| {
                format!(
                    "starting instance {i} with --exchange {} (is neffos-bench-server built \
                     with `--features redis,nats`?)",
                    result.exchange
                )
            })?;
        servers.push(running);
    }
    let pids: Vec<u32> = servers.iter().map(Running::pid).collect();
    result.rss_idle_kib = pids.iter().filter_map(|&p| stats::rss_kib(p)).collect();
    let urls: Vec<String> = servers
        .iter()
        .map(|s| format!("ws://{}/echo", s.addrs[0]))
        .collect();
    let spec = Spec {
        scenario: Scenario::ClusterFanout,
        urls,
        proto: Proto::Neffos,
        clients: args.scale_out_clients,
        senders: 1,
        rooms: 0,
        size: 64,
        rate: args.scale_out_rate,
        duration: args.scale_out_broadcasts as f64 / args.scale_out_rate,
        warmup: 0.0,
        workers: result.workers,
        source_ips: SOURCE_IPS,
        server_pid: pids.first().copied(),
        label: Some(format!("scale-out {}", result.exchange)),
        per_message: true,
        drain_quiet: DRAIN_QUIET_S,
        drain_max: DRAIN_MAX_S,
        connect_deadline: CONNECT_DEADLINE_S,
        ..Spec::default()
    };
    let before_mib = available_mib();
    let mut at_ready = AtReady::default();
    super::wait_for_quiet();
    let (endpoint, channel) = (broker.endpoint, kind.namespace_channel(true));
    let counters = endpoint.counters().ok();
    let watch = endpoint.watch(channel);
    let foreign = ForeignCpu::start();
    eprintln!(
        "-- {} clients over {} instances ({} load generator processes)",
        thousands(spec.clients as f64),
        pids.len(),
        spec.workers
    );
    let run = loadgen::run_observed(&spec, &mut |connected| {
        eprintln!("   {connected} connected; measuring the instances and the broker");
        let began = Instant::now();
        at_ready.rss_kib = pids.iter().filter_map(|&p| stats::rss_kib(p)).collect();
        at_ready.at = Some(Instant::now());
        at_ready.available_mib = available_mib();
        match connections_to(&pids, broker_port) {
            Ok(conns) => at_ready.broker_conns = conns,
            Err(e) => at_ready.errors.push(format!("{e:#}")),
        }
        eprintln!("   (measured in {:.1} s)", began.elapsed().as_secs_f64());
    });
    let foreign = foreign.finish();
    // From the first broadcast (the start is 200 ms after everyone is ready) to the last
    // delivery.
    result.other_cores = match (&run, at_ready.at) {
        (Ok(r), Some(ready)) => {
            let from = ready + Duration::from_millis(200);
            foreign_cores(&foreign, from, from + Duration::from_secs_f64(r.elapsed_s))
        }
        _ => None,
    };
    let sent = run.as_ref().map_or(0, |r| r.sent);
    result.broker = Some(watch.finish(&endpoint, channel, pids.len(), counters, sent));
    result.rss_peak_kib = pids
        .iter()
        .filter_map(|&p| stats::status_field(p, "VmHWM:"))
        .collect();
    result.rss_connected_kib = at_ready.rss_kib;
    result.broker_conns = at_ready.broker_conns;
    result.machine_used_mib = match (before_mib, at_ready.available_mib) {
        (Some(a), Some(b)) => Some(a.saturating_sub(b)),
        _ => None,
    };
    let mut report = run.map_err(|e| {
        result.status = format!("failed: {e:#}");
        e
    })?;
    report.errors.extend(at_ready.errors);
    result.report = Some(report);
    result.status = "measured".into();
    drop(servers);
    drop(broker);
    Ok(())
}

/// The scale-out demonstration over each exchange of `args`, one after the other.
pub(super) fn run(
    programs: &Programs,
    args: &ScaleOutArgs,
    cpus: Option<&str>,
) -> Vec<ScaleOutResults> {
    let mut out = Vec::new();
    for exchange in &args.scale_out_exchanges {
        let workers = workers_for(args.scale_out_clients);
        eprintln!(
            "== scale-out over {exchange}: {} clients, {} instances",
            thousands(args.scale_out_clients as f64),
            args.scale_out_instances
        );
        let mut result = ScaleOutResults {
            exchange: exchange.clone(),
            instances: args.scale_out_instances,
            clients: args.scale_out_clients,
            workers,
            broadcasts: args.scale_out_broadcasts,
            rate: args.scale_out_rate,
            setup: format!(
                "{} `neffos-bench-server` processes ({}), one local `{}-server`, {} load \
                 generator processes ({}), clients from 127.0.0.2–127.0.0.17, one sender on \
                 the first instance",
                args.scale_out_instances,
                cpus.map_or("not pinned".to_owned(), |c| format!("on CPU {c}")),
                exchange,
                workers,
                cpus.map_or("not pinned".to_owned(), |_| format!(
                    "on CPU {}",
                    super::machine::allowed_cpus()
                )),
            ),
            status: "failed".into(),
            ..ScaleOutResults::default()
        };
        if let Err(e) = run_one(programs, args, cpus, &mut result) {
            eprintln!("  scale-out over {exchange}: {e:#}");
            if result.status == "failed" {
                result.status = format!("not measured: {e:#}");
            }
        }
        out.push(result);
    }
    out
}

fn mib(kib: u64) -> String {
    if kib >= 10 * 1024 * 1024 {
        format!("{:.1} GiB", kib as f64 / (1024.0 * 1024.0))
    } else {
        format!("{} MiB", thousands(kib as f64 / 1024.0))
    }
}

fn conns_list(v: &[usize]) -> String {
    if v.is_empty() {
        return "–".into();
    }
    v.iter()
        .map(usize::to_string)
        .collect::<Vec<_>>()
        .join(" / ")
}

/// The Targets rows: one per exchange measured, or one saying it was not run.
pub(super) fn targets(results: &[ScaleOutResults]) -> Vec<TargetRow> {
    let required = format!(
        "every client connected, ≤ {MAX_BROKER_CONNS} broker connections per instance, every \
         broadcast reaches every client (0 lost)"
    );
    if results.is_empty() {
        return vec![TargetRow {
            what: "Scale-out: 100,000 clients over 6 instances, ≤ 2 broker connections per \
                   instance, one broadcast reaches all"
                .into(),
            measured: "not run (`cargo xtask bench` runs it; `--quick` only with `--scale-out`)"
                .into(),
            required,
            met: None,
        }];
    }
    results
        .iter()
        .map(|s| {
            let measured = match &s.report {
                Some(r) => format!(
                    "{} connected; every broadcast reached all in ≤ **{}** ({} of {} \
                     broadcasts complete, {} lost); broker connections per instance {}; \
                     instances' RSS {} ({} KiB per connection)",
                    thousands(r.connected as f64),
                    s.worst_reach_us().map_or("–".into(), long_time),
                    r.per_message
                        .iter()
                        .filter(|m| m.reach_all_us.is_some())
                        .count(),
                    r.per_message.len(),
                    thousands(r.per_message.iter().map(|m| m.lost).sum::<u64>() as f64),
                    conns_list(&s.broker_conns),
                    s.rss_total_kib().map_or("–".into(), mib),
                    s.kib_per_conn().map_or("–".into(), |k| format!("{k:.1}")),
                ),
                None => s.status.clone(),
            };
            TargetRow {
                what: format!(
                    "Scale-out over {}: {} clients over {} instances, ≤ {MAX_BROKER_CONNS} broker \
                     connections per instance, one broadcast reaches all",
                    s.exchange,
                    thousands(s.clients as f64),
                    s.instances
                ),
                measured,
                required: required.clone(),
                met: s.met(),
            }
        })
        .collect()
}

/// The report section (nothing when the phase did not run).
pub(super) fn render(results: &[ScaleOutResults], md: &mut String) -> std::fmt::Result {
    let Some(first) = results.first() else {
        return Ok(());
    };
    writeln!(
        md,
        "\n## Scale-out: {} clients over {} instances\n",
        thousands(first.clients as f64),
        first.instances
    )?;
    writeln!(
        md,
        "{} neffos-rs instances (`neffos-bench-server`, one process each) joined through one \
         local broker; {} clients connected to namespace `bench`, spread evenly over them; one \
         sender on the first instance broadcasts a 64 B message to the namespace, {} times, \
         {} s apart (a *reach all* above that means a broadcast overlapped the next). Each \
         broadcast reaches the first instance's clients directly and the others' through the \
         broker: one publish, one broker delivery per subscribed instance. *Reach all* is \
         the time from the broadcast's send time until the last of the clients got it. RSS is \
         the sum of the instances' `VmRSS` with every client connected (peak: `VmHWM` after \
         the broadcasts); *KiB per connection* is its growth from the idle instances divided \
         by the clients. *Broker connections per instance* are each instance's TCP \
         connections to the broker's port (its descriptors in `/proc/<pid>/fd` matched with \
         `/proc/net/tcp`) with every client connected; *broker's count* is the broker's own \
         (most seen during the run: Redis `INFO clients`, NATS monitoring `/varz`), and \
         *broker deliveries per broadcast* what it delivered to subscribers per broadcast \
         (NATS `out_msgs`; Redis `PUBLISH` calls × `PUBSUB NUMSUB` of the namespace channel). \
         Go neffos would need one Redis connection per client for this (its Redis exchange \
         opens a subscription connection per WebSocket connection).\n",
        first.instances,
        thousands(first.clients as f64),
        first.broadcasts,
        1.0 / first.rate,
    )?;
    writeln!(md, "Setup: {}.\n", first.setup)?;
    writeln!(
        md,
        "| exchange | connected | connect time | broker connections per instance | broker's count | broker deliveries per broadcast | RSS of the instances (peak) | KiB per connection | machine memory used (shared machine) | status |"
    )?;
    writeln!(md, "|---|---:|---:|---|---:|---:|---:|---:|---:|---|")?;
    for s in results {
        let r = s.report.as_ref();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} ({}) | {} | {} | {} |",
            s.exchange,
            r.map_or("–".into(), |r| format!(
                "{}{}",
                thousands(r.connected as f64),
                if r.connect_failed > 0 {
                    format!(" ({} failed)", thousands(r.connect_failed as f64))
                } else {
                    String::new()
                }
            )),
            r.map_or("–".into(), |r| format!("{:.1} s", r.connect_s)),
            conns_list(&s.broker_conns),
            s.broker
                .as_ref()
                .and_then(|b| b.connections)
                .map_or("–".into(), |n| n.to_string()),
            s.broker
                .as_ref()
                .and_then(BrokerStats::deliveries_per_broadcast)
                .map_or("–".into(), |d| format!("{d:.1}")),
            s.rss_total_kib().map_or("–".into(), mib),
            ScaleOutResults::total(&s.rss_peak_kib).map_or("–".into(), mib),
            s.kib_per_conn().map_or("–".into(), |k| format!("{k:.1}")),
            s.machine_used_mib
                .map_or("–".into(), |m| format!("{} MiB", thousands(m as f64))),
            match s.other_cores {
                Some(o) if o > DISTURBED => format!(
                    "{} ⚠ {o:.1} CPUs busy elsewhere during the broadcasts",
                    s.status
                ),
                _ => s.status.clone(),
            }
        )?;
    }
    writeln!(md, "\nEvery broadcast:\n")?;
    writeln!(
        md,
        "| exchange | broadcast | received | lost | p50 | p99 | reach all |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|")?;
    for s in results {
        let Some(r) = &s.report else { continue };
        for m in &r.per_message {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} |",
                s.exchange,
                m.seq + 1,
                thousands(m.received as f64),
                thousands(m.lost as f64),
                long_time(m.latency.p50_us),
                long_time(m.latency.p99_us),
                m.reach_all_us.map_or_else(|| "not all".into(), long_time)
            )?;
        }
    }
    for s in results {
        if let Some(r) = &s.report
            && !r.errors.is_empty()
        {
            writeln!(md, "\nErrors seen over {}:\n", s.exchange)?;
            for e in r.errors.iter().take(10) {
                writeln!(md, "- {e}")?;
            }
        }
    }
    Ok(())
}

/// `--only-scale-out`: writes `target/bench/scaleout.json` and prints the Targets rows and
/// the section (BENCHMARKS.md is left as it is).
pub(super) fn write_alone(results: &[ScaleOutResults], root: &Path) -> anyhow::Result<()> {
    let dir = root.join("target/bench");
    std::fs::create_dir_all(&dir)?;
    let path = dir.join("scaleout.json");
    std::fs::write(&path, serde_json::to_string_pretty(results)?)?;
    let mut md = String::new();
    let _ = writeln!(
        md,
        "| target | measured | required | status |\n|---|---|---|---|"
    );
    for t in targets(results) {
        let _ = writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.required,
            match t.met {
                Some(true) => "**met**",
                Some(false) => "**missed**",
                None => "not measured",
            }
        );
    }
    let _ = render(results, &mut md);
    eprintln!("{md}");
    eprintln!("results: {}", path.display());
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::loadgen::MessageStat;

    fn measured(broker_conns: Vec<usize>, lost: u64) -> ScaleOutResults {
        ScaleOutResults {
            exchange: "redis".into(),
            instances: 2,
            clients: 10,
            status: "measured".into(),
            broker_conns,
            rss_idle_kib: vec![1000, 1000],
            rss_connected_kib: vec![1100, 1100],
            report: Some(Report {
                connected: 10,
                per_message: vec![MessageStat {
                    expected: 10,
                    received: 10 - lost,
                    lost,
                    reach_all_us: (lost == 0).then_some(1500.0),
                    ..MessageStat::default()
                }],
                ..Report::default()
            }),
            ..ScaleOutResults::default()
        }
    }

    #[test]
    fn the_target_needs_few_broker_connections_and_no_loss() {
        assert_eq!(measured(vec![2, 2], 0).met(), Some(true));
        assert_eq!(measured(vec![2, 3], 0).met(), Some(false));
        assert_eq!(measured(vec![2, 2], 1).met(), Some(false));
        // An instance whose connections could not be counted does not pass.
        assert_eq!(measured(vec![2], 0).met(), Some(false));
        let r = measured(vec![1, 1], 0);
        assert_eq!(r.kib_per_conn(), Some(20.0));
        assert_eq!(r.worst_reach_us(), Some(1500.0));
        assert_eq!(targets(&[r])[0].met, Some(true));
        assert_eq!(targets(&[]).len(), 1);
        assert_eq!(targets(&[])[0].met, None);
    }

    #[test]
    fn foreign_cpu_leaves_this_process_tree_out() {
        let foreign = foreign_cpu_by_pid();
        assert!(!foreign.contains_key(&std::process::id()));
        let t = Instant::now();
        let samples = [
            (t, 0.0),
            (t + Duration::from_secs(1), 0.5),
            (t + Duration::from_secs(2), 1.0),
        ];
        let cores = foreign_cores(&samples, t, t + Duration::from_secs(2));
        assert!(cores.is_some_and(|c| (c - 0.5).abs() < 1e-9));
    }

    #[test]
    fn machine_limits_are_read() {
        assert!(available_mib().is_some_and(|m| m > 0));
        assert!(open_files_limit().is_some_and(|n| n > 0));
        assert!(ephemeral_ports().is_some_and(|n| n > 0));
        assert_eq!(workers_for(100_000), 6);
        assert_eq!(workers_for(10_000), 1);
    }
}
