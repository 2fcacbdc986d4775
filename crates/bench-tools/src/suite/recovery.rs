#![allow(clippy::print_stderr)]
//! Connection-state recovery (issue 17): what turning it on costs a fan-out, and how long a
//! client that reconnects takes to catch up with what it missed.
//!
//! **Cost.** `neffos-bench-server` with and without `--recovery` (namespace `bench`
//! recorded in the history of the exchange), side by side, in three places: one instance
//! with its memory history (`local`), and two processes joined through one local
//! `redis-server` (`RedisHistory`, Streams) or one local `nats-server -js` (`NatsHistory`,
//! JetStream). With recovery on, every receiver presents its own session key (as a neffos.js
//! app would), so the server also checkpoints a session per connection every second; off,
//! they connect as usual. Each round runs both modes (the order alternating between
//! rounds), a fresh server per run:
//!
//! 1. a saturating fan-out (`fanout` or `cluster-fanout`, [`Plan::fanout_clients`]
//!    receivers): the broadcasts per second sustained;
//! 2. an open-loop fan-out at [`LOAD`] of the slower mode's maximum in round 1 (the same
//!    offered load for both modes): latency from the intended send time (p50, p99), and,
//!    across instances, the broker's bytes: `redis-server`'s `INFO stats`
//!    `total_net_input_bytes + total_net_output_bytes` or `nats-server`'s `/varz`
//!    `in_bytes + out_bytes`, read at rest with every connection open ([`REST`]: session
//!    checkpoints, no broadcast) and over the sending window (warm-up excluded); *per
//!    broadcast* is the window's bytes less the at-rest rate, divided by the broadcasts
//!    the schedule sent meanwhile.
//!
//! The ratios are paired within a round (on ÷ off of the same round); the median round is
//! reported with the worst next to it.
//!
//! **Catch-up.** The same places with recovery on (two instances A and B across a broker,
//! one instance locally). A Rust client (`ClientBuilder::recovery(true)`, reconnecting
//! every 5–20 ms) reaches the instances through the testkit's `LoadBalancer` (a loopback
//! TCP proxy); a publisher and an observer are connected to B. Per run: the proxy cuts the
//! client's connection and refuses new ones; the publisher sends [`MISSED`] broadcasts
//! (one per millisecond); once the observer got all of them (so they are recorded), the
//! proxy sends new connections to the other instance. Measured: from the proxy's accept of
//! the client's reconnect to the arrival of the last missed broadcast in the client's
//! handler (the WebSocket and neffos handshakes, the session taken from the store, the
//! namespace restored, the history read and replayed). Each run checks that the client got
//! exactly the missed broadcasts, in order, with its connection ID, and was told
//! "recovered".

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use neffos::testkit::proxy::LoadBalancer;
use neffos::{Client, Events, Message, Namespaces, NsConn, Reconnect};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::report::{thousands, time_us};
use super::{Plan, brokers, peers};
use crate::loadgen::{self, Report, Scenario, Spec};

/// Offered load of the latency runs, as a fraction of the slower mode's maximum.
pub(super) const LOAD: f64 = 0.5;
/// Broadcasts a reconnecting client misses.
pub(super) const MISSED: usize = 1000;
/// Seconds of each fan-out run, at most (the plan's duration when shorter).
const RUN_S: f64 = 5.0;
/// The at-rest window of the broker's bytes.
pub(super) const REST: Duration = Duration::from_secs(2);
/// How long any step of a catch-up run may take.
const STEP: Duration = Duration::from_secs(30);

/// One mode's numbers, one entry per round.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct ModeRuns {
    /// Broadcasts per second sustained by the saturating runs (deliveries per second ÷
    /// receivers).
    pub max_per_s: Vec<f64>,
    /// Server CPU µs per delivery of the saturating runs (the first instance's).
    pub cpu_us_per_delivery: Vec<f64>,
    /// Latency of the open-loop runs, µs.
    pub p50_us: Vec<f64>,
    /// Latency of the open-loop runs, µs.
    pub p99_us: Vec<f64>,
    /// Broker bytes (in + out) per broadcast of the open-loop runs, the at-rest rate taken
    /// out (across instances only).
    pub broker_bytes: Vec<f64>,
    /// Broker bytes per second at rest, every connection open (across instances only).
    pub rest_bytes_per_s: Vec<f64>,
    /// Deliveries lost over every run.
    pub lost: u64,
    /// CPUs used by other processes of the machine during each run (a disturbed run).
    #[serde(default)]
    pub other_cores: Vec<f64>,
}

/// Recovery off and on in one place.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct FanoutRow {
    /// `local`, `redis` or `nats`.
    pub exchange: String,
    /// The history store of the `on` runs.
    pub history: String,
    /// How the processes ran.
    pub setup: String,
    /// `measured`, or what failed.
    pub status: String,
    /// Messages per second offered in the latency runs.
    pub rate: f64,
    /// Recovery off.
    pub off: ModeRuns,
    /// Recovery on.
    pub on: ModeRuns,
}

/// Reconnect-to-caught-up runs with one store.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CatchUpRow {
    /// `local`, `redis` or `nats`.
    pub exchange: String,
    /// The history store.
    pub history: String,
    /// `measured`, or what failed.
    pub status: String,
    /// Milliseconds from the reconnect to the last missed broadcast, per run.
    pub runs_ms: Vec<f64>,
    /// Runs in which the client got exactly the missed broadcasts, in order, with its
    /// connection ID, and was told "recovered".
    pub exact: usize,
    /// What was wrong in the other runs.
    pub problems: Vec<String>,
}

/// The whole phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RecoveryResults {
    /// `--quick`.
    pub quick: bool,
    /// How the processes ran.
    pub setup: String,
    /// Receivers of the fan-out runs.
    pub receivers: usize,
    /// Body size, bytes.
    pub size: usize,
    /// Seconds of each fan-out run.
    pub duration_s: f64,
    /// Rounds of off/on runs.
    pub rounds: usize,
    /// Fan-out with recovery off and on, per place.
    pub fanout: Vec<FanoutRow>,
    /// Reconnect to caught up, per store.
    pub catch_up: Vec<CatchUpRow>,
}

/// Where the instances meet.
#[derive(Debug, Clone, Copy)]
enum Place {
    Local,
    Broker(brokers::Kind),
}

impl Place {
    fn name(self) -> &'static str {
        match self {
            Place::Local => "local",
            Place::Broker(kind) => kind.name(),
        }
    }

    fn history(self) -> &'static str {
        match self {
            Place::Local => "`MemoryHistory`",
            Place::Broker(brokers::Kind::Redis) => "`RedisHistory` (Streams)",
            Place::Broker(brokers::Kind::Nats) => "`NatsHistory` (JetStream)",
        }
    }

    fn setup(self, cpus: Option<&str>) -> String {
        let pinned = match cpus {
            Some(c) => format!(" on CPU {c}"),
            None => String::new(),
        };
        match self {
            Place::Local => format!("1 instance{pinned}"),
            Place::Broker(kind) => {
                format!("2 processes{pinned}, one local `{}-server`", kind.name())
            }
        }
    }
}

/// The bench servers of `place`, recovery on or off; one URL per instance.
fn start_servers(
    programs: &peers::Programs,
    cpus: Option<&str>,
    place: Place,
    broker: Option<&brokers::Broker>,
    recovery: bool,
) -> anyhow::Result<(Vec<peers::Running>, Vec<String>)> {
    let mut args: Vec<String> = vec!["--addr".into(), "127.0.0.1:0".into()];
    if recovery {
        args.push("--recovery".into());
    }
    let processes = match (place, broker) {
        (Place::Local, _) => 1,
        (Place::Broker(kind), Some(broker)) => {
            let url_flag = match kind {
                brokers::Kind::Redis => "--redis-url",
                brokers::Kind::Nats => "--nats-url",
            };
            args.extend([
                "--exchange".into(),
                kind.name().into(),
                url_flag.into(),
                broker.url(),
            ]);
            2
        }
        (Place::Broker(_), None) => anyhow::bail!("no broker"),
    };
    let mut running = Vec::new();
    for _ in 0..processes {
        running.push(peers::start(&programs.bench_server, &args, cpus, 1)?);
    }
    let urls = running
        .iter()
        .map(|r| format!("ws://{}/echo", r.addrs[0]))
        .collect();
    Ok((running, urls))
}

fn fanout_spec(plan: &Plan, urls: Vec<String>, pid: u32, recovery: bool) -> Spec {
    let duration = plan.duration.min(RUN_S);
    Spec {
        scenario: if urls.len() > 1 {
            Scenario::ClusterFanout
        } else {
            Scenario::Fanout
        },
        urls,
        clients: plan.fanout_clients,
        size: plan.size,
        duration,
        warmup: (duration * 0.2).min(1.0),
        rate: 0.0,
        server_pid: Some(pid),
        sessions: recovery,
        label: Some(format!("recovery {}", if recovery { "on" } else { "off" })),
        ..Spec::default()
    }
}

fn checked(report: Report) -> anyhow::Result<Report> {
    anyhow::ensure!(
        report.connected > 0,
        "no receiver connected ({} failed): {:?}",
        report.connect_failed,
        report.errors.first()
    );
    Ok(report)
}

/// A saturating run: its broadcasts per second.
fn saturate(spec: &Spec, runs: &mut ModeRuns) -> anyhow::Result<f64> {
    let report = checked(super::measure(spec)?)?;
    let max = report.deliveries_per_s / report.connected as f64;
    runs.max_per_s.push(max);
    runs.cpu_us_per_delivery
        .push(report.server_cpu_us_per_delivery.unwrap_or(f64::NAN));
    runs.lost += report.lost;
    runs.other_cores
        .push(report.other_cores.unwrap_or(f64::NAN));
    Ok(max)
}

/// Broker bytes over the sending window of an open-loop run: `(bytes, seconds)`.
type Window = std::thread::JoinHandle<anyhow::Result<(u64, f64)>>;

/// An open-loop run at `spec.rate`: latency and, with a broker, its bytes.
fn open_loop(
    spec: &Spec,
    broker: Option<&brokers::Broker>,
    runs: &mut ModeRuns,
) -> anyhow::Result<()> {
    super::wait_for_quiet();
    let mut rest: anyhow::Result<f64> = Ok(0.0);
    let mut window: Option<Window> = None;
    let report = loadgen::run_observed(spec, &mut |_| {
        let Some(broker) = broker else { return };
        let endpoint = broker.endpoint;
        rest = (|| {
            let cost = super::queries::reading_cost(broker)?;
            let (b0, t0) = (endpoint.net_bytes()?, Instant::now());
            std::thread::sleep(REST);
            let b1 = endpoint.net_bytes()?;
            Ok(b1.saturating_sub(b0).saturating_sub(cost) as f64 / t0.elapsed().as_secs_f64())
        })();
        // Sending starts START_DELAY after this returns; the window leaves out the
        // warm-up and the last 200 ms.
        let start =
            Instant::now() + loadgen::START_DELAY + Duration::from_secs_f64(spec.warmup.max(0.0));
        let end = Instant::now()
            + loadgen::START_DELAY
            + Duration::from_secs_f64((spec.duration - 0.2).max(spec.warmup + 0.5));
        let cost = super::queries::reading_cost(broker);
        window = Some(std::thread::spawn(move || {
            let cost = cost?;
            std::thread::sleep(start.saturating_duration_since(Instant::now()));
            let (a, ta) = (endpoint.net_bytes()?, Instant::now());
            std::thread::sleep(end.saturating_duration_since(Instant::now()));
            let (b, tb) = (endpoint.net_bytes()?, Instant::now());
            Ok((
                b.saturating_sub(a).saturating_sub(cost),
                (tb - ta).as_secs_f64(),
            ))
        }));
    });
    let window = window.map(|w| {
        w.join()
            .map_err(|_| anyhow::anyhow!("the byte counter panicked"))?
    });
    std::thread::sleep(Duration::from_millis(300));
    let report = checked(report?)?;
    runs.p50_us.push(report.latency.p50_us);
    runs.p99_us.push(report.latency.p99_us);
    runs.lost += report.lost;
    runs.other_cores
        .push(report.other_cores.unwrap_or(f64::NAN));
    if let Some(window) = window {
        let (bytes, secs) = window?;
        let rest = rest?;
        runs.rest_bytes_per_s.push(rest);
        let broadcasts = spec.rate * secs;
        runs.broker_bytes
            .push((bytes as f64 - rest * secs).max(0.0) / broadcasts.max(1.0));
    }
    Ok(())
}

/// Recovery off and on in `place`, `rounds` times.
fn fanout(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    place: Place,
    broker: Option<&brokers::Broker>,
    rounds: usize,
    row: &mut FanoutRow,
) -> anyhow::Result<()> {
    for round in 0..rounds {
        // Off first in even rounds, on first in odd ones.
        let order = if round % 2 == 0 {
            [false, true]
        } else {
            [true, false]
        };
        for on in order {
            eprintln!(
                "-- {} round {}: recovery {} saturating",
                place.name(),
                round + 1,
                if on { "on" } else { "off" }
            );
            let (servers, urls) = start_servers(programs, cpus, place, broker, on)?;
            let spec = fanout_spec(plan, urls, servers[0].pid(), on);
            let runs = if on { &mut row.on } else { &mut row.off };
            saturate(&spec, runs)?;
        }
        if round == 0 {
            let slower = row.off.max_per_s[0].min(row.on.max_per_s[0]);
            row.rate = (slower * LOAD).max(1.0);
        }
        for on in order {
            eprintln!(
                "-- {} round {}: recovery {} at {:.0} msg/s",
                place.name(),
                round + 1,
                if on { "on" } else { "off" },
                row.rate
            );
            let (servers, urls) = start_servers(programs, cpus, place, broker, on)?;
            let spec = Spec {
                rate: row.rate,
                ..fanout_spec(plan, urls, servers[0].pid(), on)
            };
            let runs = if on { &mut row.on } else { &mut row.off };
            open_loop(&spec, broker, runs)?;
        }
    }
    Ok(())
}

/// The body of missed broadcast `i` of run `run`, `size` bytes.
fn body(run: usize, i: usize, size: usize) -> Bytes {
    let mut s = format!("{run:03}:{i:06}");
    while s.len() < size {
        s.push('.');
    }
    Bytes::from(s)
}

/// A client of namespace `bench` at `url` whose `msg` events go to a channel with their
/// arrival time.
async fn listener(
    url: String,
    recovery: bool,
) -> anyhow::Result<(Client, mpsc::UnboundedReceiver<(Instant, Bytes)>)> {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("msg", move |_ns, msg: Message| {
        let tx = tx.clone();
        async move {
            let _ = tx.send((Instant::now(), msg.body));
        }
    });
    let mut builder = Client::builder(url).namespaces(Namespaces::new().namespace("bench", events));
    if recovery {
        builder = builder.recovery(true).reconnect(Reconnect::new(
            Duration::from_millis(5),
            Duration::from_millis(20),
        ));
    }
    let client = builder.connect().await?;
    client.connect("bench").await?;
    Ok((client, rx))
}

/// The next `n` messages of `rx`, each within [`STEP`].
async fn receive(
    rx: &mut mpsc::UnboundedReceiver<(Instant, Bytes)>,
    n: usize,
) -> anyhow::Result<Vec<(Instant, Bytes)>> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        match tokio::time::timeout(STEP, rx.recv()).await {
            Ok(Some(m)) => got.push(m),
            _ => anyhow::bail!("received {} of {n}", got.len()),
        }
    }
    Ok(got)
}

/// Emits `fanout` with the bodies of run `run`, one per millisecond.
async fn publish(p: &NsConn, run: usize, n: usize, size: usize) -> anyhow::Result<()> {
    let mut tick = tokio::time::interval(Duration::from_millis(1));
    for i in 0..n {
        tick.tick().await;
        p.emit("fanout", body(run, i, size))?;
    }
    Ok(())
}

/// The catch-up runs against running instances (`addrs`: A first, B last).
async fn catch_up_runs(
    addrs: &[SocketAddr],
    runs: usize,
    size: usize,
    row: &mut CatchUpRow,
) -> anyhow::Result<()> {
    let (Some(&a), Some(&b)) = (addrs.first(), addrs.last()) else {
        anyhow::bail!("no instance");
    };
    let lb = LoadBalancer::start(a).await?;
    let (client, mut rx) = listener(lb.url(), true).await?;
    let (_observer, mut observed) = listener(format!("ws://{b}/echo"), false).await?;
    let publisher = Client::builder(format!("ws://{b}/echo"))
        .namespaces(Namespaces::new().namespace("bench", Events::new()))
        .connect()
        .await?;
    let p = publisher.connect("bench").await?;
    // Warm-up: the client has a position in the history before its first drop.
    publish(&p, 0, 10, size).await?;
    receive(&mut rx, 10).await.context("warm-up")?;
    receive(&mut observed, 10).await.context("warm-up")?;
    let mut on = 0;
    for run in 1..=runs {
        let id = client.id();
        let reconnects = client.reconnects();
        let conn = client.conn();
        lb.route_to(None);
        lb.cut();
        tokio::time::timeout(STEP, conn.closed())
            .await
            .context("the cut connection did not close")?;
        publish(&p, run, MISSED, size).await?;
        // The observer (on B) gets each broadcast after it was recorded.
        receive(&mut observed, MISSED)
            .await
            .context("the observer")?;
        on = (on + 1) % addrs.len();
        let routed = Instant::now();
        lb.route_to(Some(addrs[on]));
        let got = receive(&mut rx, MISSED)
            .await
            .with_context(|| format!("run {run}: the reconnected client"))?;
        let reconnected = lb
            .last_forwarded()
            .filter(|t| *t >= routed)
            .context("no reconnect went through the load balancer")?;
        let last = got.last().map_or(reconnected, |m| m.0);
        row.runs_ms
            .push(last.saturating_duration_since(reconnected).as_secs_f64() * 1000.0);
        let outcome = client.wait_recovery("bench", STEP).await;
        let first_wrong = (0..MISSED).find(|&i| got[i].1 != body(run, i, size));
        let problem = match (outcome, first_wrong) {
            (Ok(o), _) if !o.is_recovered() => Some(format!("told {o:?}")),
            (Err(e), _) => Some(format!("no recovery outcome: {e}")),
            (_, Some(i)) => Some(format!(
                "broadcast {i} was {:?}",
                String::from_utf8_lossy(&got[i].1)
            )),
            _ if client.id() != id => Some("a new connection ID".to_owned()),
            _ => None,
        };
        // Anything more (a duplicate) arrives right behind the replay.
        tokio::time::sleep(Duration::from_millis(50)).await;
        let extra = std::iter::from_fn(|| rx.try_recv().ok()).count();
        let problem = match (problem, extra) {
            (None, 0) => None,
            (Some(p), _) => Some(p),
            (None, n) => Some(format!("{n} broadcasts more than missed")),
        };
        match problem {
            None => row.exact += 1,
            Some(p) => row.problems.push(format!(
                "run {run}: {p} (reconnects: {}; instances' recovery counters: {})",
                client.reconnects() - reconnects,
                recovery_counters(addrs)
            )),
        }
    }
    client.close();
    Ok(())
}

/// Every instance's recovery counters (`GET /stats`), for the report of a wrong run.
fn recovery_counters(addrs: &[SocketAddr]) -> String {
    let counters: Vec<String> = addrs
        .iter()
        .map(|a| match brokers::http_json(a.port(), "/stats") {
            Ok(s) => s["recovery"].to_string(),
            Err(e) => format!("({e})"),
        })
        .collect();
    counters.join(", ")
}

/// Reconnect to caught up with recovery on in `place`.
fn catch_up(
    programs: &peers::Programs,
    cpus: Option<&str>,
    place: Place,
    broker: Option<&brokers::Broker>,
    runs: usize,
    size: usize,
    row: &mut CatchUpRow,
) -> anyhow::Result<()> {
    eprintln!(
        "-- {}: reconnect to caught up, {MISSED} missed, {runs} runs",
        place.name()
    );
    super::wait_for_quiet();
    let (servers, _) = start_servers(programs, cpus, place, broker, true)?;
    let addrs = servers
        .iter()
        .map(|s| s.addrs[0].parse::<SocketAddr>())
        .collect::<Result<Vec<_>, _>>()?;
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let result = rt.block_on(catch_up_runs(&addrs, runs, size, row));
    rt.shutdown_timeout(Duration::from_secs(1));
    drop(servers);
    result
}

/// The phase: locally, then across instances over Redis and NATS.
pub(super) fn run(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    quick: bool,
) -> RecoveryResults {
    let rounds = if quick { 2 } else { 3 };
    let catch_ups = if quick { 3 } else { 5 };
    let mut out = RecoveryResults {
        quick,
        setup: match cpus {
            Some(c) => format!(
                "servers on CPU {c}; the brokers, the load generator and the catch-up client on the other CPUs"
            ),
            None => "not pinned".into(),
        },
        receivers: plan.fanout_clients,
        size: plan.size,
        duration_s: plan.duration.min(RUN_S),
        rounds,
        fanout: Vec::new(),
        catch_up: Vec::new(),
    };
    for place in [
        Place::Local,
        Place::Broker(brokers::Kind::Redis),
        Place::Broker(brokers::Kind::Nats),
    ] {
        eprintln!("== recovery: {}", place.name());
        let mut row = FanoutRow {
            exchange: place.name().into(),
            history: place.history().into(),
            setup: place.setup(cpus),
            status: "measured".into(),
            rate: 0.0,
            off: ModeRuns::default(),
            on: ModeRuns::default(),
        };
        let mut caught = CatchUpRow {
            exchange: place.name().into(),
            history: place.history().into(),
            status: "measured".into(),
            runs_ms: Vec::new(),
            exact: 0,
            problems: Vec::new(),
        };
        // Killed when this iteration ends.
        let broker = match place {
            Place::Local => Ok(None),
            Place::Broker(kind) => brokers::Broker::start_with(kind, true).map(Some),
        };
        let broker = match broker {
            Ok(b) => b,
            Err(e) => {
                row.status = format!("not measured: {e:#}");
                caught.status = row.status.clone();
                out.fanout.push(row);
                out.catch_up.push(caught);
                continue;
            }
        };
        if let Err(e) = fanout(
            programs,
            plan,
            cpus,
            place,
            broker.as_ref(),
            rounds,
            &mut row,
        ) {
            eprintln!("  recovery fan-out {}: {e:#}", place.name());
            row.status = format!("failed: {e:#}");
        }
        if let Err(e) = catch_up(
            programs,
            cpus,
            place,
            broker.as_ref(),
            catch_ups,
            plan.size,
            &mut caught,
        ) {
            eprintln!("  recovery catch-up {}: {e:#}", place.name());
            caught.status = format!("failed: {e:#}");
        }
        out.fanout.push(row);
        out.catch_up.push(caught);
    }
    out
}

/// The median and the worst of `values` (`higher_is_worse`), when there are any.
fn median_worst(values: &[f64], higher_is_worse: bool) -> Option<(f64, f64)> {
    let mut v: Vec<f64> = values.iter().copied().filter(|x| x.is_finite()).collect();
    v.sort_by(f64::total_cmp);
    let median = *v.get(v.len() / 2)?;
    let worst = if higher_is_worse { v.last() } else { v.first() };
    Some((median, *worst?))
}

/// Round-by-round `on ÷ off`.
fn paired(on: &[f64], off: &[f64]) -> Vec<f64> {
    on.iter()
        .zip(off)
        .filter(|(_, b)| **b > 0.0)
        .map(|(a, b)| a / b)
        .collect()
}

fn cell(values: &[f64], higher_is_worse: bool, show: impl Fn(f64) -> String) -> String {
    match median_worst(values, higher_is_worse) {
        Some((m, w)) => format!("{} ({})", show(m), show(w)),
        None => "–".into(),
    }
}

fn times(x: f64) -> String {
    format!("{x:.2}×")
}

/// The section: the cost of recovery, then the catch-up times.
pub(super) fn render(res: &RecoveryResults, md: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(
        md,
        "\n### Connection-state recovery: its cost, and reconnect to caught up\n"
    )?;
    writeln!(
        md,
        "`neffos-bench-server` with recovery off and `--recovery` (namespace `bench` recorded \
         in the exchange's history; every receiver presents its own session key, so each \
         connection's session is also checkpointed every second), side by side ({}). {} \
         rounds per place, each running both modes (order alternating), a fresh server per \
         run: a saturating fan-out to {} receivers ({} B bodies, {} s), then an open-loop \
         fan-out at {:.0}% of the slower mode's round-1 maximum (the same offered load for \
         both). Cells: the median round (the worst round); *on ÷ off* pairs the runs of a \
         round. *Broker B/broadcast*: the broker's bytes in + out (`redis-server` `INFO \
         stats` `total_net_*_bytes`, `nats-server` `/varz` `in_bytes + out_bytes`) over the \
         sending window, less the at-rest rate, per broadcast; *at rest*: bytes per second \
         with every connection open and nothing sent (the session checkpoints).\n",
        res.setup,
        res.rounds,
        thousands(res.receivers as f64),
        res.size,
        res.duration_s,
        LOAD * 100.0
    )?;
    writeln!(
        md,
        "| place | history | max broadcasts/s off | on | on ÷ off | p99 off | p99 on | p99 on ÷ off | p50 off | p50 on | CPU µs/delivery off | on | broker B/broadcast off | on | at rest B/s off | on | lost off / on |"
    )?;
    writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for row in &res.fanout {
        if row.status != "measured" {
            writeln!(
                md,
                "| {} | {} | – | – | – | – | – | – | – | – | – | – | – | – | – | – | – ({}) |",
                row.exchange, row.history, row.status
            )?;
            continue;
        }
        let (off, on) = (&row.off, &row.on);
        let rate = |x: f64| thousands(x);
        let bytes = |x: f64| thousands(x);
        let cpu = |x: f64| format!("{x:.2}");
        writeln!(
            md,
            "| {} ({}) | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} / {} |",
            row.exchange,
            row.setup,
            row.history,
            cell(&off.max_per_s, false, rate),
            cell(&on.max_per_s, false, rate),
            cell(&paired(&on.max_per_s, &off.max_per_s), false, times),
            cell(&off.p99_us, true, time_us),
            cell(&on.p99_us, true, time_us),
            cell(&paired(&on.p99_us, &off.p99_us), true, times),
            cell(&off.p50_us, true, time_us),
            cell(&on.p50_us, true, time_us),
            cell(&off.cpu_us_per_delivery, true, cpu),
            cell(&on.cpu_us_per_delivery, true, cpu),
            cell(&off.broker_bytes, true, bytes),
            cell(&on.broker_bytes, true, bytes),
            cell(&off.rest_bytes_per_s, true, bytes),
            cell(&on.rest_bytes_per_s, true, bytes),
            off.lost,
            on.lost,
        )?;
    }
    let rates: Vec<String> = res
        .fanout
        .iter()
        .filter(|r| r.rate > 0.0)
        .map(|r| format!("{} {} msg/s", r.exchange, thousands(r.rate)))
        .collect();
    if !rates.is_empty() {
        writeln!(
            md,
            "\nOffered load of the latency runs: {}.",
            rates.join(", ")
        )?;
    }
    let busy: Vec<String> = res
        .fanout
        .iter()
        .filter_map(|r| {
            let most = r
                .off
                .other_cores
                .iter()
                .chain(&r.on.other_cores)
                .copied()
                .filter(|c| c.is_finite())
                .fold(None, |m: Option<f64>, c| Some(m.map_or(c, |m| m.max(c))))?;
            Some(format!("{} {most:.2}", r.exchange))
        })
        .collect();
    if !busy.is_empty() {
        writeln!(
            md,
            "CPUs used by other processes of the machine during a run, at most: {} \
             (above a few tenths the runs were disturbed).",
            busy.join(", ")
        )?;
    }
    writeln!(
        md,
        "\n**Reconnect to caught up** ({MISSED} broadcasts missed). A Rust client with \
         `ClientBuilder::recovery(true)` behind the testkit's `LoadBalancer` (loopback TCP \
         proxy) is cut off; a publisher on instance B sends {MISSED} broadcasts (one per ms); \
         once an observer on B got them all (recorded), the proxy sends the client's next \
         dial to the other instance (across a broker: A ↔ B in turn; locally: the same \
         instance). Time from the proxy's accept of that reconnect to the last missed \
         broadcast in the client's handler. *Exact*: runs in which the client got exactly \
         the missed broadcasts, in order, with its connection ID, and was told \
         \"recovered\".\n"
    )?;
    writeln!(
        md,
        "| place | history | runs | median | worst | every run | exact |"
    )?;
    writeln!(md, "|---|---|---:|---:|---:|---|---:|")?;
    for row in &res.catch_up {
        let ms = |x: f64| format!("{x:.1} ms");
        let (median, worst) = median_worst(&row.runs_ms, true)
            .map_or(("–".into(), "–".into()), |(m, w)| (ms(m), ms(w)));
        let every: Vec<String> = row.runs_ms.iter().map(|x| format!("{x:.1}")).collect();
        let status = if row.status == "measured" {
            String::new()
        } else {
            format!(" ({})", row.status)
        };
        writeln!(
            md,
            "| {} | {} | {} | {} | {} | {} | {} of {}{} |",
            row.exchange,
            row.history,
            row.runs_ms.len(),
            median,
            worst,
            every.join(" / "),
            row.exact,
            row.runs_ms.len(),
            status
        )?;
    }
    for row in &res.catch_up {
        for p in &row.problems {
            writeln!(md, "\n- {}: {p}", row.exchange)?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_median_round_is_reported_with_the_worst() {
        // Throughput: the worst is the lowest; latency: the highest. NaN (not measured) is
        // left out.
        assert_eq!(
            median_worst(&[3.0, 1.0, 2.0, f64::NAN], false),
            Some((2.0, 1.0))
        );
        assert_eq!(median_worst(&[3.0, 1.0, 2.0], true), Some((2.0, 3.0)));
        assert_eq!(median_worst(&[], true), None);
    }

    #[test]
    fn ratios_pair_the_runs_of_a_round() {
        assert_eq!(paired(&[2.0, 3.0, 1.0], &[4.0, 3.0, 0.0]), vec![0.5, 1.0]);
    }

    #[test]
    fn missed_bodies_are_numbered_and_sized() {
        let b = body(2, 844, 64);
        assert_eq!(b.len(), 64);
        assert!(b.starts_with(b"002:000844."));
        assert_ne!(body(2, 844, 64), body(2, 845, 64));
    }
}
