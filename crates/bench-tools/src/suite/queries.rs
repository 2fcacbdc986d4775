#![allow(clippy::print_stderr)]
//! Cluster queries (issue 16): how long "who is in this room" takes across 5 instances
//! holding 10,000 connections, and what it costs the broker, next to socketioxide-redis's
//! `fetch_sockets` on the same broker and client count; and the heartbeat's cost at rest.
//!
//! For each system, one `redis-server` started by the suite and 5 processes joined
//! through it (pinned like the other server runs):
//!
//! - **neffos-rs**: `neffos-bench-server --exchange redis --cluster`; queries
//!   `GET /cluster/room_count` and `GET /cluster/room_members` (`server.cluster()`).
//! - **socketioxide**: `peer-socketioxide --redis-url` (socketioxide-redis); query
//!   `GET /fetch_sockets` (`io.of("/bench").to(room).fetch_sockets()`), which serves both
//!   questions (socketioxide has no count-only query).
//!
//! 1. **At rest** (every process up, no client): the broker's `PUBLISH` calls per second
//!    and instance, and its bytes per second, over [`REST`].
//! 2. **Queries**: the load generator opens the connections (`idle`, spread round-robin
//!    over the 5 instances, client i in room `r{i % 100}`) and, with every connection open,
//!    the suite asks instance 1 [`QUERIES`] times per query, one at a time, for room
//!    `r{k % 100}`, in [`ROUNDS`] rounds (the query kinds taking turns); the round of
//!    median p50 is reported, every round's p50 and the worst p99 next to it. Latency is the server-side time of the call (each server measures it and
//!    returns it with the answer: the HTTP hop is not in it); bytes per query are the
//!    broker's `total_net_input_bytes + total_net_output_bytes` over the queries (less the
//!    `INFO` reply that reads them) divided by their number (heartbeats during the window included, a few hundred bytes per second).
//!    Every answer is checked against the expected member count.

use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};

use super::report::{OURS, thousands, time_us};
use super::{brokers, peers};
use crate::loadgen::{self, Proto, Scenario, Spec};

/// Instances of each system.
pub(super) const INSTANCES: usize = 5;
/// Rooms the connections are spread over.
pub(super) const ROOMS: usize = 100;
/// Queries of each kind in a round.
pub(super) const QUERIES: usize = 200;
/// Rounds (the query kinds take turns; the round of median p50 is reported).
pub(super) const ROUNDS: usize = 3;
/// The at-rest window.
pub(super) const REST: Duration = Duration::from_secs(10);

/// One query's numbers.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryRow {
    /// `neffos-rs` or `socketioxide`.
    pub system: String,
    /// What was called.
    pub query: String,
    /// Answers received.
    pub queries: usize,
    /// Answers whose count was not the room's size, or that were partial.
    pub wrong: usize,
    /// Server-side latency, µs.
    pub p50_us: f64,
    /// Server-side latency, µs.
    pub p99_us: f64,
    /// Broker bytes (in + out) per query.
    pub broker_bytes: f64,
    /// Every round's p50, µs (`p50_us`, `p99_us` and `broker_bytes` are those of the
    /// round of median p50).
    #[serde(default)]
    pub round_p50_us: Vec<f64>,
    /// The worst round's p99, µs.
    #[serde(default)]
    pub worst_p99_us: f64,
}

/// One system at rest.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RestRow {
    /// `neffos-rs` or `socketioxide`.
    pub system: String,
    /// Broker `PUBLISH` calls per second and instance.
    pub publishes_per_s: f64,
    /// Broker bytes (in + out) per second, all instances.
    pub bytes_per_s: f64,
}

/// The whole phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct QueryResults {
    /// Connections open during the queries.
    pub connections: usize,
    /// How the processes ran.
    pub setup: String,
    /// Per system: `measured`, or why not.
    pub status: Vec<(String, String)>,
    /// Query rows.
    pub rows: Vec<QueryRow>,
    /// At-rest rows.
    pub rest: Vec<RestRow>,
}

/// Which system, and how it is asked.
#[derive(Clone, Copy)]
enum System {
    Ours,
    Socketioxide,
}

impl System {
    fn name(self) -> &'static str {
        match self {
            System::Ours => OURS,
            System::Socketioxide => "socketioxide",
        }
    }

    /// `(query label, HTTP path without the room)`.
    fn queries(self) -> &'static [(&'static str, &'static str)] {
        match self {
            System::Ours => &[
                ("`room_count`", "/cluster/room_count?room="),
                ("`room_members`", "/cluster/room_members?room="),
            ],
            System::Socketioxide => &[(
                "`fetch_sockets` (socketioxide-redis)",
                "/fetch_sockets?room=",
            )],
        }
    }
}

/// What one [`brokers::Endpoint::net_bytes`] reading adds to the broker's own counters
/// (Redis counts its `INFO` reply): two readings back to back.
pub(super) fn reading_cost(broker: &brokers::Broker) -> anyhow::Result<u64> {
    let a = broker.endpoint.net_bytes()?;
    Ok(broker.endpoint.net_bytes()?.saturating_sub(a))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Port of `127.0.0.1:<port>`.
fn port(addr: &str) -> anyhow::Result<u16> {
    use anyhow::Context;
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {addr}"))
}

/// Waits until every neffos-rs instance sees the 5 of them, settled.
fn wait_settled(ports: &[u16]) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    for &p in ports {
        loop {
            let s = brokers::http_json(p, "/stats")?;
            if s["cluster"]["instances"] == INSTANCES && s["cluster"]["settled"] == true {
                break;
            }
            anyhow::ensure!(Instant::now() < deadline, "the cluster did not settle: {s}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }
    Ok(())
}

fn one_system(
    programs: &peers::Programs,
    cpus: Option<&str>,
    system: System,
    connections: usize,
    out: &mut QueryResults,
) -> anyhow::Result<()> {
    // Killed when this function returns.
    let broker = brokers::Broker::start(brokers::Kind::Redis)?;
    let (program, args, proto, path) = match system {
        System::Ours => (
            programs.bench_server.clone(),
            vec![
                "--exchange".to_owned(),
                "redis".into(),
                "--redis-url".into(),
                broker.url(),
                "--cluster".into(),
                "--addr".into(),
                "127.0.0.1:0".into(),
            ],
            Proto::Neffos,
            "/echo",
        ),
        System::Socketioxide => (
            programs.peers.join("release/peer-socketioxide"),
            vec![
                "--redis-url".to_owned(),
                broker.url(),
                "--addr".into(),
                "127.0.0.1:0".into(),
            ],
            Proto::Socketio,
            "/socket.io/?EIO=4&transport=websocket",
        ),
    };
    // All killed when this function returns.
    let mut running = Vec::new();
    for _ in 0..INSTANCES {
        running.push(peers::start(&program, &args, cpus, 1)?);
    }
    let addrs: Vec<String> = running.iter().map(|r| r.addrs[0].clone()).collect();
    let ports = addrs
        .iter()
        .map(|a| port(a))
        .collect::<anyhow::Result<Vec<u16>>>()?;
    if matches!(system, System::Ours) {
        wait_settled(&ports)?;
    } else {
        // socketioxide-redis has no membership to wait for: its subscriptions are made
        // before the process says it listens.
        std::thread::sleep(Duration::from_millis(500));
    }

    let name = system.name();
    eprintln!(
        "-- {name}: {INSTANCES} instances at rest ({} s)",
        REST.as_secs()
    );
    let cost = reading_cost(&broker)?;
    let (c0, b0, t0) = (
        broker.endpoint.counters()?,
        broker.endpoint.net_bytes()?,
        Instant::now(),
    );
    std::thread::sleep(REST);
    let (c1, b1) = (broker.endpoint.counters()?, broker.endpoint.net_bytes()?);
    let secs = t0.elapsed().as_secs_f64();
    out.rest.push(RestRow {
        system: name.into(),
        publishes_per_s: (c1.published() - c0.published()) as f64 / secs / INSTANCES as f64,
        bytes_per_s: b1.saturating_sub(b0).saturating_sub(cost) as f64 / secs,
    });

    eprintln!(
        "-- {name}: {connections} connections, {ROUNDS} rounds of {QUERIES} queries of each kind"
    );
    let spec = Spec {
        scenario: Scenario::Idle,
        proto,
        urls: addrs.iter().map(|a| format!("ws://{a}{path}")).collect(),
        clients: connections,
        rooms: ROOMS,
        duration: 0.5,
        settle: 0.0,
        label: Some(format!("cluster queries ({name})")),
        ..Spec::default()
    };
    let per_room = connections / ROOMS;
    let mut measured: anyhow::Result<Vec<QueryRow>> = Ok(Vec::new());
    let report = loadgen::run_observed(&spec, &mut |connected| {
        measured = ask_all(
            system,
            &broker,
            ports[0],
            per_room,
            connected == connections,
        );
    })?;
    anyhow::ensure!(
        report.connected == connections,
        "{} of {connections} connections opened ({} failed)",
        report.connected,
        report.connect_failed
    );
    out.rows.extend(measured?);
    Ok(())
}

/// Every query of `system`, [`QUERIES`] times a round for [`ROUNDS`] rounds, asked to the
/// instance at `port`.
fn ask_all(
    system: System,
    broker: &brokers::Broker,
    port: u16,
    per_room: usize,
    all_connected: bool,
) -> anyhow::Result<Vec<QueryRow>> {
    anyhow::ensure!(all_connected, "not every connection is open");
    // Joins are acknowledged by the instance holding the connection; the others learn
    // them through the broker: wait until a full room is seen before measuring.
    let first = system.queries()[0].1;
    let deadline = Instant::now() + Duration::from_secs(30);
    while brokers::http_json(port, &format!("{first}r0"))?["value"] != per_room {
        anyhow::ensure!(
            Instant::now() < deadline,
            "room r0 never reached {per_room} members"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let cost = reading_cost(broker)?;
    // Per query kind: every round's (p50, p99, bytes per query).
    let kinds = system.queries();
    let mut rounds: Vec<Vec<(f64, f64, f64)>> = vec![Vec::new(); kinds.len()];
    let mut wrong = vec![0; kinds.len()];
    for _ in 0..ROUNDS {
        for (kind, (_, path)) in kinds.iter().enumerate() {
            let before = broker.endpoint.net_bytes()?;
            let mut micros = Vec::with_capacity(QUERIES);
            for k in 0..QUERIES {
                let answer = brokers::http_json(port, &format!("{path}r{}", k % ROOMS))?;
                let complete =
                    answer["missing"].as_u64().unwrap_or(0) == 0 && answer["error"] != true;
                if !complete || answer["value"] != per_room {
                    wrong[kind] += 1;
                }
                micros.push(answer["micros"].as_f64().unwrap_or(f64::NAN));
            }
            let bytes = broker
                .endpoint
                .net_bytes()?
                .saturating_sub(before)
                .saturating_sub(cost);
            micros.sort_by(f64::total_cmp);
            rounds[kind].push((
                percentile(&micros, 0.5),
                percentile(&micros, 0.99),
                bytes as f64 / QUERIES as f64,
            ));
        }
    }
    let mut rows = Vec::new();
    for (kind, (label, _)) in kinds.iter().enumerate() {
        let runs = &rounds[kind];
        let mut by_p50: Vec<&(f64, f64, f64)> = runs.iter().collect();
        by_p50.sort_by(|a, b| a.0.total_cmp(&b.0));
        let Some(&&(p50, p99, bytes)) = by_p50.get(by_p50.len() / 2) else {
            continue;
        };
        rows.push(QueryRow {
            system: system.name().into(),
            query: (*label).into(),
            queries: QUERIES * runs.len(),
            wrong: wrong[kind],
            p50_us: p50,
            p99_us: p99,
            broker_bytes: bytes,
            round_p50_us: runs.iter().map(|r| r.0).collect(),
            worst_p99_us: runs.iter().map(|r| r.1).fold(0.0, f64::max),
        });
    }
    Ok(rows)
}

/// The phase: neffos-rs, then socketioxide (when its peer is built), over Redis.
pub(super) fn run(
    programs: &peers::Programs,
    cpus: Option<&str>,
    connections: usize,
) -> QueryResults {
    let mut out = QueryResults {
        connections,
        setup: match cpus {
            Some(c) => format!(
                "{INSTANCES} server processes on CPU {c}, one local `redis-server` and the load generator on the other CPUs"
            ),
            None => format!("{INSTANCES} server processes, one local `redis-server` (not pinned)"),
        },
        status: Vec::new(),
        rows: Vec::new(),
        rest: Vec::new(),
    };
    for system in [System::Ours, System::Socketioxide] {
        eprintln!("== cluster queries: {}", system.name());
        super::wait_for_quiet();
        let status = match one_system(programs, cpus, system, connections, &mut out) {
            Ok(()) => "measured".to_owned(),
            Err(e) => {
                eprintln!("  cluster queries of {}: {e:#}", system.name());
                format!("failed: {e:#}")
            }
        };
        out.status.push((system.name().into(), status));
    }
    out
}

/// The section: query latency and broker bytes, then the cost at rest.
pub(super) fn render(res: &QueryResults, md: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(md, "\n### Cluster queries across instances (Redis)\n")?;
    writeln!(
        md,
        "{INSTANCES} processes of each system joined through one `redis-server` ({}), {} \
         connections spread round-robin over them in {ROOMS} rooms ({} members each). \
         {ROUNDS} rounds of {QUERIES} queries of each kind (the kinds taking turns), one at \
         a time, asked to instance 1 for room `r{{k % {ROOMS}}}`; p50, p99 and bytes are those \
         of the round of median p50 (*rounds: p50* lists every round, *worst p99* is the \
         worst round's); *÷ `fetch_sockets`* divides by socketioxide's p50. Latency is the server-side time of the call (measured by the \
         server, returned with the answer; the HTTP hop is not in it). *Broker bytes/query*: \
         `redis-server`'s `total_net_input_bytes + total_net_output_bytes` over the queries \
         (less what reading them costs) divided by their number (heartbeats during the \
         window included). *Wrong*: answers \
         that were partial or whose count was not the room's size. socketioxide has no \
         count-only query: `fetch_sockets` answers both questions, so it is the peer of both \
         neffos-rs rows.\n",
        res.setup,
        thousands(res.connections as f64),
        thousands((res.connections / ROOMS) as f64),
    )?;
    writeln!(
        md,
        "| system | query | queries | wrong | rounds: p50 | p50 | p99 | worst p99 | p50 ÷ `fetch_sockets` | broker bytes/query | bytes ÷ `fetch_sockets` |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let peer = res
        .rows
        .iter()
        .find(|r| r.system == System::Socketioxide.name());
    let ratio = |a: f64, b: Option<f64>| match b {
        Some(b) if b > 0.0 => format!("{:.2}×", a / b),
        _ => "–".into(),
    };
    for row in &res.rows {
        let rounds: Vec<String> = row.round_p50_us.iter().map(|p| time_us(*p)).collect();
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
            row.system,
            row.query,
            row.queries,
            row.wrong,
            rounds.join(" / "),
            time_us(row.p50_us),
            time_us(row.p99_us),
            time_us(row.worst_p99_us),
            ratio(row.p50_us, peer.map(|p| p.p50_us)),
            thousands(row.broker_bytes),
            ratio(row.broker_bytes, peer.map(|p| p.broker_bytes)),
        )?;
    }
    for (system, status) in &res.status {
        if status != "measured" {
            writeln!(
                md,
                "| {system} | – | – | – | – | – | – | – | – | – | – ({status}) |"
            )?;
        }
    }
    writeln!(
        md,
        "\nAt rest ({INSTANCES} instances, no client, {} s): what the broker carries for the \
         cluster to know itself (neffos-rs: one heartbeat per instance every 2 s, \
         `ClusterConfig::default()`).\n",
        REST.as_secs()
    )?;
    writeln!(
        md,
        "| system | broker messages/s per instance | broker bytes/s (all instances) |"
    )?;
    writeln!(md, "|---|---:|---:|")?;
    for row in &res.rest {
        writeln!(
            md,
            "| {} | {:.2} | {} |",
            row.system,
            row.publishes_per_s,
            thousands(row.bytes_per_s)
        )?;
    }
    Ok(())
}
