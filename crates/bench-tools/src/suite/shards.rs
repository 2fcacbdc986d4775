#![allow(clippy::print_stderr)]
//! Redis Cluster shards (issue 15): does cross-instance capacity grow with shards, how
//! evenly do the shards work, what does one hot namespace do, and what does each topology
//! change cost; next to socketioxide-redis's cluster driver where both can be run alike.
//!
//! Every cluster is started by the suite (`neffos::testkit::broker_cluster`: N masters with
//! one replica each, `redis-server` 7) and every neffos-rs instance runs in the suite's
//! process on a `RedisClusterExchange` (the instances of a run share one tokio runtime):
//!
//! 1. **Throughput, 1 vs 3 shards**: publishing instances broadcast round-robin over
//!    [`NAMESPACES`] namespaces to one receiving instance that has a client in each; the
//!    rate is what the receiving instance got from the cluster per second (cross-instance
//!    deliveries), with at most [`WINDOW`] messages outstanding. Each master's CPU time
//!    (`/proc/<pid>/stat`) over the run, busiest ÷ quietest, and the suite's own CPU (every
//!    neffos-rs instance and client) are read next to it. Two settings:
//!    - *as is*: every `redis-server` free on every CPU, like the rest of the machine;
//!    - *broker-bound*: each `redis-server` capped at [`NODE_CPU`] of a CPU (Linux CFS
//!      bandwidth control, a cgroup per node) and pinned to the server CPU, the neffos-rs
//!      instances on the other CPU: each shard is a small, fixed broker (as one machine per
//!      shard would be) and the broker is the bottleneck by construction; the masters'
//!      CPU, at their cap, shows it.
//! 2. **One hot namespace** (broker-bound): 3 publishing instances into one namespace, on
//!    1 shard, on 3 shards, and on 3 shards with `namespace_partitions(3)` (partition index
//!    = instance number).
//! 3. **Topology changes** (3 shards, as is): one instance broadcasts a numbered message
//!    every [`STREAM_PERIOD`] to another; slot migration of the namespace's slot, `CLUSTER
//!    FAILOVER` of its master, then kill -9 of its master: messages lost, when delivery
//!    resumed, the exchange's recorded subscription gap and the sender's publish errors.
//! 4. **socketioxide-redis** (`ClusterAdapter`, sharded pub/sub through `redis`'s
//!    `ClusterConnection`) next to neffos-rs, both as 2 processes on the same cluster,
//!    one namespace, the load generator's cross-instance fan-out (`cluster-fanout`) on 1
//!    and on 3 shards.

use std::fmt::Write as _;
use std::path::Path;

use serde::{Deserialize, Serialize};

use super::plot;
use super::report::thousands;

/// Namespaces of the throughput runs.
pub(super) const NAMESPACES: usize = 300;
/// Messages outstanding (sent, not yet received) at most.
pub(super) const WINDOW: u64 = 8192;
/// CPU share of each `redis-server` in the broker-bound runs: low enough that three capped
/// shards are still slower than the neffos-rs instances on the other CPU (with 0.2, the
/// instances, not the brokers, held the 3-shard runs at one full CPU).
pub(super) const NODE_CPU: f64 = 0.1;
/// Period of the numbered stream of the topology runs.
pub(super) const STREAM_PERIOD_MS: u64 = 2;

/// One throughput run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardRun {
    /// `as is` or `broker-bound`.
    pub setting: String,
    /// What flowed: `300 namespaces`, `1 hot namespace`…
    pub traffic: String,
    /// Masters.
    pub shards: usize,
    /// `namespace_partitions`.
    pub partitions: u16,
    /// Publishing instances.
    pub publishers: usize,
    /// Cross-instance deliveries per second (received by the receiving instance).
    pub deliveries_per_s: f64,
    /// Each master's CPU use over the run, in CPUs.
    pub master_cpu: Vec<f64>,
    /// Each replica's CPU use, in CPUs.
    pub replica_cpu: Vec<f64>,
    /// The neffos-rs instances' and clients' CPU use (the suite process), in CPUs.
    pub neffos_cpu: f64,
    /// `measured`, or why not.
    pub status: String,
}

impl ShardRun {
    /// Busiest ÷ quietest master.
    pub fn spread(&self) -> Option<f64> {
        let max = self.master_cpu.iter().copied().fold(0.0, f64::max);
        let min = self.master_cpu.iter().copied().fold(f64::MAX, f64::min);
        (min > 0.0 && min < f64::MAX).then(|| max / min)
    }
}

/// One topology change.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GapRow {
    /// What was done.
    pub change: String,
    /// How long the harness's change took (until the cluster reported the new owner).
    pub change_ms: f64,
    /// Numbered messages that never arrived.
    pub lost: u64,
    /// When delivery resumed, from the start of the change.
    pub resumed_ms: f64,
    /// Subscription gaps the receiving exchange recorded, and the longest.
    pub gaps: u64,
    /// The longest recorded gap.
    pub gap_max_ms: f64,
    /// Publishes the sending exchange counted as failed (no master, connection cut).
    pub publish_errors: u64,
    /// `measured`, or why not.
    pub status: String,
}

/// One system of the side-by-side runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerRow {
    /// `neffos-rs` or `socketioxide`.
    pub system: String,
    /// Masters.
    pub shards: usize,
    /// Client deliveries per second (load generator).
    pub deliveries_per_s: f64,
    /// `measured`, or why not.
    pub status: String,
}

/// The whole phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ShardResults {
    /// Seconds per throughput run.
    pub secs: f64,
    /// How the processes ran.
    pub setup: String,
    /// Throughput runs.
    pub runs: Vec<ShardRun>,
    /// Topology changes.
    pub gaps: Vec<GapRow>,
    /// socketioxide-redis next to neffos-rs.
    pub peers: Vec<PeerRow>,
}

impl ShardResults {
    fn find(
        &self,
        setting: &str,
        traffic: &str,
        shards: usize,
        partitions: u16,
    ) -> Option<&ShardRun> {
        self.runs.iter().find(|r| {
            r.setting == setting
                && r.traffic == traffic
                && r.shards == shards
                && r.partitions == partitions
                && r.status == "measured"
        })
    }
}

const AS_IS: &str = "as is";
const BOUND: &str = "broker-bound";

fn many() -> String {
    format!("{NAMESPACES} namespaces")
}

const HOT: &str = "1 hot namespace";

#[cfg(feature = "redis")]
mod measure {
    //! The runs themselves (the `redis` feature brings `neffos-redis`).

    use std::path::PathBuf;
    use std::sync::Arc;
    use std::time::{Duration, Instant};

    use anyhow::Context;
    use neffos::testkit::broker_cluster::RedisCluster;
    use neffos::testkit::numbered::{Numbered, stream};
    use neffos::testkit::{TestServer, serve};
    use neffos::{Client, Events, Message, Namespaces, Server, Target, Topic};
    use neffos_redis::RedisClusterExchange;

    use super::super::peers;
    use super::*;
    use crate::loadgen::stats::cpu_seconds;
    use crate::loadgen::{Proto, Scenario, Spec};

    /// A CPU cap for some processes: a cgroup with CFS bandwidth control (v1 `cpu`
    /// controller or v2 `cpu.max`); removed when dropped (its processes must be gone).
    pub(super) struct CpuCap {
        dir: PathBuf,
    }

    impl CpuCap {
        /// A cgroup allowing `cpus` of a CPU per 20 ms period (the kernel's smallest quota
        /// is 1 ms: with a 5 ms period nothing below 0.2 CPU could be asked for).
        pub(super) fn new(name: &str, cpus: f64) -> anyhow::Result<CpuCap> {
            const PERIOD_US: u64 = 20_000;
            let quota = ((PERIOD_US as f64) * cpus).round().max(1000.0) as u64;
            let v1 = Path::new("/sys/fs/cgroup/cpu");
            let v2 = Path::new("/sys/fs/cgroup");
            if v1.join("cpu.cfs_quota_us").exists() {
                let dir = v1.join(name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(dir.join("cpu.cfs_period_us"), PERIOD_US.to_string())?;
                std::fs::write(dir.join("cpu.cfs_quota_us"), quota.to_string())?;
                Ok(CpuCap { dir })
            } else if std::fs::read_to_string(v2.join("cgroup.subtree_control"))
                .is_ok_and(|c| c.split_whitespace().any(|c| c == "cpu"))
            {
                let dir = v2.join(name);
                std::fs::create_dir_all(&dir)
                    .with_context(|| format!("creating {}", dir.display()))?;
                std::fs::write(dir.join("cpu.max"), format!("{quota} {PERIOD_US}"))?;
                Ok(CpuCap { dir })
            } else {
                anyhow::bail!(
                    "no writable cgroup CPU controller (needs root and cgroup v1 `cpu` or v2 `cpu.max`)"
                )
            }
        }

        pub(super) fn add(&self, pid: u32) -> anyhow::Result<()> {
            std::fs::write(self.dir.join("cgroup.procs"), pid.to_string())
                .with_context(|| format!("moving {pid} into {}", self.dir.display()))
        }
    }

    impl Drop for CpuCap {
        fn drop(&mut self) {
            for _ in 0..50 {
                if std::fs::remove_dir(&self.dir).is_ok() {
                    return;
                }
                std::thread::sleep(Duration::from_millis(20));
            }
        }
    }

    /// `taskset -a -p -c <cpus> <pid>` (every thread of the process).
    fn pin(pid: u32, cpus: &str) -> anyhow::Result<()> {
        let status = std::process::Command::new("taskset")
            .args(["-a", "-p", "-c", cpus, &pid.to_string()])
            .stdout(std::process::Stdio::null())
            .status()
            .context("running taskset")?;
        anyhow::ensure!(status.success(), "taskset -p {pid} failed");
        Ok(())
    }

    /// Every CPU of the machine, `0-<n-1>`.
    fn all_cpus() -> String {
        let n = std::thread::available_parallelism().map_or(1, |n| n.get());
        // The suite may be pinned: ask the machine, not our affinity.
        let online = std::fs::read_to_string("/sys/devices/system/cpu/online")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default();
        if online.is_empty() {
            format!("0-{}", n.saturating_sub(1))
        } else {
            online
        }
    }

    /// A started cluster, placed as the setting wants; its caps outlive its processes.
    pub(super) struct Placed {
        pub(super) cluster: RedisCluster,
        _caps: Vec<CpuCap>,
    }

    impl Drop for Placed {
        fn drop(&mut self) {
            // Kill the nodes before the caps are removed (a cgroup with processes stays).
            for i in 0..self.cluster.len() {
                self.cluster.node(i).kill();
            }
        }
    }

    /// A cluster of `shards` masters (+ one replica each). `bound`: each node capped at
    /// [`NODE_CPU`] and pinned to `server_cpu`; else free on every CPU.
    pub(super) fn place(shards: usize, bound: Option<&str>) -> anyhow::Result<Placed> {
        let caps_base = format!("neffos-bench-{}", std::process::id());
        let cluster = RedisCluster::start_with(shards, &[]);
        let mut caps = Vec::new();
        for i in 0..cluster.len() {
            let pid = cluster.node(i).pid().context("a node without pid")?;
            match bound {
                Some(cpu) => {
                    let cap = CpuCap::new(&format!("{caps_base}-{shards}-{i}"), NODE_CPU)?;
                    cap.add(pid)?;
                    caps.push(cap);
                    pin(pid, cpu)?;
                }
                None => pin(pid, &all_cpus())?,
            }
        }
        Ok(Placed {
            cluster,
            _caps: caps,
        })
    }

    async fn instance(
        cluster: &RedisCluster,
        names: &[String],
        partitions: u16,
        index: u16,
    ) -> anyhow::Result<TestServer> {
        let mut ns = Namespaces::new();
        for n in names {
            ns = ns.namespace(n.as_str(), Events::new());
        }
        let exchange = RedisClusterExchange::builder(cluster.urls())
            .prefix("bench")
            .namespace_partitions(partitions)
            .partition_index(index)
            .connect()
            .await?;
        Ok(serve(Server::builder(ns).exchange(exchange).build()).await?)
    }

    /// Clients of `ts`, each in up to 50 of `names`.
    async fn receivers(ts: &TestServer, names: &[String]) -> anyhow::Result<Vec<Client>> {
        let mut clients = Vec::new();
        for chunk in names.chunks(50) {
            let mut ns = Namespaces::new();
            for n in chunk {
                ns = ns.namespace(n.as_str(), Events::new());
            }
            let client = Client::builder(ts.url()).namespaces(ns).connect().await?;
            for n in chunk {
                client.connect(n).await?;
            }
            clients.push(client);
        }
        Ok(clients)
    }

    fn cpu_of(pid: Option<u32>) -> f64 {
        cpu_seconds(pid).unwrap_or(0.0)
    }

    /// One throughput run on `placed`.
    pub(super) fn throughput(
        placed: &Placed,
        rt: &tokio::runtime::Runtime,
        names: &[String],
        publishers: usize,
        partitions: u16,
        secs: f64,
        run: &mut ShardRun,
    ) -> anyhow::Result<()> {
        let cluster = &placed.cluster;
        let masters = cluster.masters();
        let replicas: Vec<usize> = masters
            .iter()
            .filter_map(|m| cluster.replica_of(*m))
            .collect();
        let pids = |nodes: &[usize]| -> Vec<Option<u32>> {
            nodes.iter().map(|i| cluster.node(*i).pid()).collect()
        };
        let (master_pids, replica_pids) = (pids(&masters), pids(&replicas));
        rt.block_on(async {
            let mut senders = Vec::new();
            for i in 0..publishers {
                senders.push(instance(cluster, names, partitions, i as u16).await?);
            }
            let receiver = instance(cluster, names, partitions, publishers as u16).await?;
            let clients = receivers(&receiver, names).await?;
            for s in senders.iter().chain([&receiver]) {
                tokio::time::timeout(Duration::from_secs(30), s.server.flush_exchanges())
                    .await
                    .context("subscriptions not confirmed")?;
            }
            let cpu =
                |pids: &[Option<u32>]| -> Vec<f64> { pids.iter().map(|p| cpu_of(*p)).collect() };
            let (m0, r0, n0) = (cpu(&master_pids), cpu(&replica_pids), cpu_of(None));
            let received = || receiver.server.stats().envelopes_received;
            let start = received();
            let started = Instant::now();
            let body = bytes::Bytes::from("x".repeat(64));
            let mut sent = 0u64;
            while started.elapsed().as_secs_f64() < secs {
                if sent.saturating_sub(received() - start) >= WINDOW {
                    tokio::time::sleep(Duration::from_micros(200)).await;
                    continue;
                }
                let k = sent as usize;
                let sender = &senders[k % publishers];
                let ns = &names[(k / publishers) % names.len()];
                let _ = sender.server.broadcast(
                    Target::namespace(ns),
                    Message::new("", "tick", body.clone()),
                );
                sent += 1;
                if sent.is_multiple_of(256) {
                    tokio::task::yield_now().await;
                }
            }
            let elapsed = started.elapsed().as_secs_f64();
            let got = received() - start;
            let used = |before: &[f64], pids: &[Option<u32>]| -> Vec<f64> {
                pids.iter()
                    .zip(before)
                    .map(|(p, b)| (cpu_of(*p) - b) / elapsed)
                    .collect()
            };
            run.master_cpu = used(&m0, &master_pids);
            run.replica_cpu = used(&r0, &replica_pids);
            run.neffos_cpu = (cpu_of(None) - n0) / elapsed;
            run.deliveries_per_s = got as f64 / elapsed;
            drop(clients);
            for s in senders.iter().chain([&receiver]) {
                s.server.shutdown(Duration::from_secs(1)).await;
            }
            anyhow::Ok(())
        })
    }

    /// The topology changes, in turn, on one 3-shard cluster.
    pub(super) fn topology(rt: &tokio::runtime::Runtime, out: &mut Vec<GapRow>) {
        let placed = match place(3, None) {
            Ok(p) => p,
            Err(e) => {
                out.push(GapRow::failed("all", &e));
                return;
            }
        };
        let cluster = Arc::new(placed);
        let result = rt.block_on(async {
            let names = vec!["chat".to_owned()];
            let c = &cluster.cluster;
            let a = instance(c, &names, 1, 0).await?;
            let b_exchange = Arc::new(
                RedisClusterExchange::builder(c.urls())
                    .prefix("bench")
                    .connect()
                    .await?,
            );
            let b = serve(
                Server::builder(Namespaces::new().namespace("chat", Events::new()))
                    .exchange(b_exchange.clone())
                    .build(),
            )
            .await?;
            let (_client, mut numbered) = Numbered::connect(&b.url(), "chat", "seq").await;
            for s in [&a, &b] {
                tokio::time::timeout(Duration::from_secs(30), s.server.flush_exchanges())
                    .await
                    .context("subscriptions not confirmed")?;
            }
            let channel = b_exchange
                .channel(&Topic::Namespace("chat".into()))
                .context("the namespace's channel")?;
            let slot = c.key_slot(&channel);
            let streaming = stream(
                a.server.clone(),
                Target::namespace("chat"),
                "seq",
                Duration::from_millis(STREAM_PERIOD_MS),
            );
            let _ = numbered.until(100, Instant::now()).await;
            for change in [
                "slot migration (`MIGRATE` of the namespace's slot)",
                "`CLUSTER FAILOVER` (its master's replica takes over)",
                "kill -9 of its master (replica promoted)",
            ] {
                let owner = c.master_of_slot(slot);
                let errors0 = a.server.exchanges()[0].stats().publish_errors;
                let stats0 = b_exchange.cluster_stats();
                let began = Instant::now();
                let cl = cluster.clone();
                let kind = change.chars().next();
                tokio::task::spawn_blocking(move || {
                    let c = &cl.cluster;
                    match kind {
                        Some('s') => {
                            let to = c.masters().into_iter().find(|m| *m != owner);
                            if let Some(to) = to {
                                c.migrate_slot(slot, to);
                            }
                        }
                        Some('`') => {
                            if let Some(r) = c.replica_of(owner) {
                                c.failover(r);
                            }
                        }
                        _ => {
                            c.node(owner).kill();
                            c.wait_healthy();
                        }
                    }
                })
                .await?;
                let change_ms = began.elapsed().as_secs_f64() * 1e3;
                let target = numbered.last().unwrap_or(0) + 500;
                let outage = numbered.until(target, began).await;
                let stats1 = b_exchange.cluster_stats();
                let moved = c.master_of_slot(slot) != owner;
                out.push(GapRow {
                    change: change.into(),
                    change_ms,
                    lost: outage.missing,
                    resumed_ms: outage.resumed_after.as_secs_f64() * 1e3,
                    gaps: stats1.gaps - stats0.gaps,
                    gap_max_ms: if stats1.gaps > stats0.gaps {
                        stats1.gap_max.as_secs_f64() * 1e3
                    } else {
                        0.0
                    },
                    publish_errors: a.server.exchanges()[0].stats().publish_errors - errors0,
                    status: if moved {
                        "measured".into()
                    } else {
                        "measured (the slot kept its owner)".into()
                    },
                });
                eprintln!("   {change}: {:?}", out.last());
            }
            streaming.abort();
            anyhow::Ok(())
        });
        if let Err(e) = result {
            out.push(GapRow::failed("topology runs", &e));
        }
    }

    /// neffos-rs and socketioxide-redis as 2 processes each on a cluster of `shards`.
    pub(super) fn side_by_side(
        programs: &peers::Programs,
        cpus: Option<&str>,
        secs: f64,
        shards: usize,
        out: &mut Vec<PeerRow>,
    ) {
        let placed = match place(shards, None) {
            Ok(p) => p,
            Err(e) => {
                for system in [crate::suite::report::OURS, "socketioxide"] {
                    out.push(PeerRow {
                        system: system.into(),
                        shards,
                        deliveries_per_s: 0.0,
                        status: format!("failed: {e:#}"),
                    });
                }
                return;
            }
        };
        let seeds = placed.cluster.urls().join(",");
        let systems: [(&str, PathBuf, Vec<String>, Proto, &str); 2] = [
            (
                crate::suite::report::OURS,
                programs.bench_server.clone(),
                vec![
                    "--exchange".into(),
                    "redis-cluster".into(),
                    "--redis-url".into(),
                    seeds.clone(),
                    "--addr".into(),
                    "127.0.0.1:0".into(),
                ],
                Proto::Neffos,
                "/echo",
            ),
            (
                "socketioxide",
                programs.peers.join("release/peer-socketioxide"),
                vec![
                    "--redis-cluster-urls".into(),
                    seeds,
                    "--addr".into(),
                    "127.0.0.1:0".into(),
                ],
                Proto::Socketio,
                "/socket.io/?EIO=4&transport=websocket",
            ),
        ];
        for (system, program, args, proto, path) in systems {
            let measured = (|| -> anyhow::Result<f64> {
                // Both killed when this closure returns.
                let a = peers::start(&program, &args, cpus, 1)?;
                let b = peers::start(&program, &args, cpus, 1)?;
                let spec = Spec {
                    scenario: Scenario::ClusterFanout,
                    urls: vec![
                        format!("ws://{}{path}", a.addrs[0]),
                        format!("ws://{}{path}", b.addrs[0]),
                    ],
                    proto,
                    clients: 1000,
                    size: 64,
                    duration: secs,
                    warmup: (secs * 0.2).min(1.0),
                    server_pid: Some(a.pid()),
                    label: Some(format!("shards {system} {shards}")),
                    ..Spec::default()
                };
                Ok(super::super::measure(&spec)?.deliveries_per_s)
            })();
            out.push(PeerRow {
                system: system.into(),
                shards,
                deliveries_per_s: measured.as_ref().copied().unwrap_or(0.0),
                status: match measured {
                    Ok(_) => "measured".into(),
                    Err(e) => format!("failed: {e:#}"),
                },
            });
        }
    }
}

impl GapRow {
    #[cfg_attr(not(feature = "redis"), allow(dead_code))]
    fn failed(change: &str, e: &anyhow::Error) -> GapRow {
        GapRow {
            change: change.into(),
            change_ms: 0.0,
            lost: 0,
            resumed_ms: 0.0,
            gaps: 0,
            gap_max_ms: 0.0,
            publish_errors: 0,
            status: format!("failed: {e:#}"),
        }
    }
}

/// The phase. `server_cpu` is the CPU the broker-bound runs pin the nodes to (the
/// suite itself runs on the others).
pub(super) fn run(
    programs: &super::peers::Programs,
    cpus: Option<&str>,
    quick: bool,
) -> ShardResults {
    let secs = if quick { 2.0 } else { 5.0 };
    let mut res = ShardResults {
        secs,
        setup: match cpus {
            Some(c) => format!(
                "neffos-rs instances in the suite's process on the load generator's CPUs; broker-bound nodes pinned to CPU {c}"
            ),
            None => "not pinned (broker-bound runs need pinning: not run)".into(),
        },
        runs: Vec::new(),
        gaps: Vec::new(),
        peers: Vec::new(),
    };
    #[cfg(feature = "redis")]
    {
        let rt = match tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
        {
            Ok(rt) => rt,
            Err(e) => {
                res.setup = format!("failed: {e}");
                return res;
            }
        };
        let many_names: Vec<String> = (0..NAMESPACES).map(|i| format!("n{i}")).collect();
        let hot_names = vec!["hot".to_owned()];
        let mut plan: Vec<(&str, String, usize, u16, usize)> = Vec::new();
        for shards in [1, 3] {
            plan.push((AS_IS, many(), shards, 1, 1));
        }
        if cpus.is_some() {
            for shards in [1, 3] {
                plan.push((BOUND, many(), shards, 1, 1));
            }
            plan.push((BOUND, HOT.into(), 1, 1, 3));
            plan.push((BOUND, HOT.into(), 3, 1, 3));
            plan.push((BOUND, HOT.into(), 3, 3, 3));
        }
        for (setting, traffic, shards, partitions, publishers) in plan {
            eprintln!(
                "-- shards: {setting}, {traffic}, {shards} shard(s), {partitions} partition(s)"
            );
            super::wait_for_quiet();
            let mut run = ShardRun {
                setting: setting.into(),
                traffic: traffic.clone(),
                shards,
                partitions,
                publishers,
                deliveries_per_s: 0.0,
                master_cpu: Vec::new(),
                replica_cpu: Vec::new(),
                neffos_cpu: 0.0,
                status: "failed".into(),
            };
            let names = if traffic == HOT {
                &hot_names
            } else {
                &many_names
            };
            let bound = (setting == BOUND).then_some(cpus).flatten();
            let outcome = measure::place(shards, bound).and_then(|placed| {
                measure::throughput(&placed, &rt, names, publishers, partitions, secs, &mut run)
            });
            run.status = match outcome {
                Ok(()) => "measured".into(),
                Err(e) => format!("failed: {e:#}"),
            };
            eprintln!(
                "   {:.0}/s, masters {:?} CPUs, replicas {:?}, neffos {:.2} ({})",
                run.deliveries_per_s, run.master_cpu, run.replica_cpu, run.neffos_cpu, run.status
            );
            res.runs.push(run);
        }
        eprintln!("-- shards: topology changes");
        measure::topology(&rt, &mut res.gaps);
        for shards in [1, 3] {
            eprintln!("-- shards: neffos-rs and socketioxide-redis, {shards} shard(s)");
            measure::side_by_side(programs, cpus, secs, shards, &mut res.peers);
        }
    }
    #[cfg(not(feature = "redis"))]
    {
        let _ = programs;
        res.setup = "not measured: the suite was built without the `redis` feature".into();
    }
    res
}

fn cpus(v: &[f64]) -> String {
    let parts: Vec<String> = v.iter().map(|c| format!("{c:.2}")).collect();
    parts.join(" / ")
}

/// The section.
pub(super) fn render(
    res: &ShardResults,
    plots: &[plot::Plot],
    md: &mut String,
) -> std::fmt::Result {
    writeln!(md, "\n### Redis Cluster shards (issue 15)\n")?;
    writeln!(
        md,
        "Clusters of 1 and 3 masters (one replica each) started by the suite; neffos-rs \
         instances on `RedisClusterExchange` in the suite's process ({}), {} s per run. \
         Deliveries: what the receiving instance got from the cluster per second, at most \
         {} messages outstanding, 64-byte bodies. CPU columns: CPUs used over the run (CPU \
         time ÷ wall time, `/proc/<pid>/stat`); *spread*: busiest ÷ quietest master. \
         *Broker-bound*: every `redis-server` capped at {NODE_CPU} CPU (cgroup CFS quota, \
         20 ms period) and pinned to the server CPU, so each shard is a small fixed broker and \
         the broker is the bottleneck; *as is*: nodes free on every CPU (on this 2-CPU \
         machine the neffos-rs instances and the nodes share both CPUs).\n",
        res.setup,
        res.secs,
        thousands(WINDOW as f64),
    )?;
    writeln!(
        md,
        "| setting | traffic | shards | partitions | publishing instances | deliveries/s | ÷ 1 shard | masters' CPU | spread | replicas' CPU | neffos-rs CPU | status |"
    )?;
    writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---|---:|---|---:|---|"
    )?;
    for r in &res.runs {
        let base = res.find(&r.setting, &r.traffic, 1, 1);
        let ratio = match base {
            Some(b) if b.deliveries_per_s > 0.0 => {
                format!("{:.2}×", r.deliveries_per_s / b.deliveries_per_s)
            }
            _ => "–".into(),
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {:.2} | {} |",
            r.setting,
            r.traffic,
            r.shards,
            r.partitions,
            r.publishers,
            thousands(r.deliveries_per_s),
            ratio,
            cpus(&r.master_cpu),
            r.spread().map_or("–".into(), |s| format!("{s:.2}")),
            cpus(&r.replica_cpu),
            r.neffos_cpu,
            r.status
        )?;
    }
    writeln!(
        md,
        "\nTopology changes on 3 shards while one instance broadcasts a numbered message every \
         {STREAM_PERIOD_MS} ms to another (one after the other on the same cluster, each on the \
         namespace's slot): *lost*: numbers that never arrived; *resumed*: first arrival after \
         the gap, from the start of the change; *gaps* / *longest*: subscription gaps the \
         receiving exchange recorded (`ClusterStats`, also logged and in metrics); *publish \
         errors*: publishes the sender counted as failed.\n"
    )?;
    writeln!(
        md,
        "| change | change took | lost | resumed after | gaps | longest gap | publish errors | status |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    for g in &res.gaps {
        writeln!(
            md,
            "| {} | {:.0} ms | {} | {:.0} ms | {} | {:.0} ms | {} | {} |",
            g.change,
            g.change_ms,
            g.lost,
            g.resumed_ms,
            g.gaps,
            g.gap_max_ms,
            g.publish_errors,
            g.status
        )?;
    }
    writeln!(
        md,
        "\nneffos-rs next to socketioxide-redis's cluster driver (`ClusterAdapter`: sharded \
         pub/sub, one channel per namespace, like neffos-rs without partitions): 2 processes \
         of each on the same cluster, 1,000 clients, the load generator's cross-instance \
         fan-out (one namespace, sender on the first process), client deliveries/s.\n"
    )?;
    writeln!(md, "| system | 1 shard | 3 shards | 3 ÷ 1 | status |")?;
    writeln!(md, "|---|---:|---:|---:|---|")?;
    for system in [super::report::OURS, "socketioxide"] {
        let at = |shards: usize| {
            res.peers
                .iter()
                .find(|p| p.system == system && p.shards == shards)
        };
        let (one, three) = (at(1), at(3));
        let rate = |p: Option<&PeerRow>| {
            p.filter(|p| p.status == "measured")
                .map(|p| p.deliveries_per_s)
        };
        let status: Vec<&str> = [one, three]
            .iter()
            .flatten()
            .map(|p| p.status.as_str())
            .filter(|s| *s != "measured")
            .collect();
        writeln!(
            md,
            "| {system} | {} | {} | {} | {} |",
            rate(one).map_or("–".into(), thousands),
            rate(three).map_or("–".into(), thousands),
            match (rate(one), rate(three)) {
                (Some(a), Some(b)) if a > 0.0 => format!("{:.2}×", b / a),
                _ => "–".into(),
            },
            if status.is_empty() {
                "measured".to_owned()
            } else {
                status.join("; ")
            }
        )?;
    }
    writeln!(
        md,
        "\nNot compared: socketioxide's peer serves one namespace (`/bench`) and has no \
         namespace partitioning, and its cluster driver keeps no count of what a topology \
         change lost, so the many-namespace, hot-namespace and topology rows are neffos-rs only."
    )?;
    for p in plots {
        writeln!(
            md,
            "\n![{}]({})",
            p.title,
            p.png.as_deref().unwrap_or(&p.svg)
        )?;
    }
    Ok(())
}

/// Throughput per configuration, and the gap per topology change.
pub(super) fn plots(res: &ShardResults, dir: &Path) -> anyhow::Result<Vec<plot::Plot>> {
    let bars: Vec<(String, f64)> = res
        .runs
        .iter()
        .filter(|r| r.status == "measured")
        .map(|r| {
            let traffic = if r.traffic == HOT { "hot" } else { "many ns" };
            let parts = if r.partitions > 1 {
                format!(" p{}", r.partitions)
            } else {
                String::new()
            };
            (
                format!(
                    "{} {traffic} {}sh{parts}",
                    if r.setting == BOUND { "bound" } else { "as is" },
                    r.shards
                ),
                r.deliveries_per_s,
            )
        })
        .collect();
    let throughput = plot::Bars {
        caption: "Redis Cluster: cross-instance deliveries/s vs shards".into(),
        y_desc: "deliveries per second",
        bars,
        format: |v| format!("{:.0} k", v / 1e3),
        target: None,
    };
    let gaps = plot::Bars {
        caption: "Redis Cluster: messages lost per topology change".into(),
        y_desc: "lost messages (numbered stream)",
        bars: res
            .gaps
            .iter()
            .filter(|g| g.status.starts_with("measured"))
            .map(|g| {
                let short = g
                    .change
                    .split(" (")
                    .next()
                    .unwrap_or(&g.change)
                    .replace('`', "");
                (format!("{short}: {:.0} ms", g.resumed_ms), g.lost as f64)
            })
            .collect(),
        format: |v| format!("{v:.0}"),
        target: None,
    };
    Ok(vec![
        plot::plot_chart(
            dir,
            "shards_throughput",
            "Cross-instance deliveries/s versus shards",
            &throughput,
        )?,
        plot::plot_chart(
            dir,
            "shards_gaps",
            "Messages lost and time to resume per topology change",
            &gaps,
        )?,
    ])
}

/// `--only-shards`: the results, the section and its plots, without BENCHMARKS.md.
pub(super) fn write_alone(
    res: &ShardResults,
    root: &Path,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let plots_dir = root.join("docs/bench");
    std::fs::create_dir_all(&plots_dir)?;
    let drawn = match plots(res, &plots_dir) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("no plots: {e:#}");
            Vec::new()
        }
    };
    super::write_phase(
        root,
        "shards",
        res,
        |res, md| render(res, &drawn, md),
        started,
    )
}
