#![allow(clippy::print_stderr)]
//! Resumption after a broker outage (issue 15): how soon cross-instance delivery comes
//! back once the broker accepts connections again, and how many messages the outage cost.
//!
//! For each topology, the broker(s) started by the harness (`neffos::testkit`), two
//! `neffos-bench-server` processes joined through them (pinned like the other server runs),
//! a client of instance A emitting `fanout` with the numbers `0, 1, 2…` every [`PERIOD`]
//! and a client of instance B recording the `msg` broadcasts it gets (in order, no
//! duplicates: checked). Then [`RUNS`] times: `kill -9` of the broker (every node of a
//! cluster), a restart [`DOWN`] later (a cluster: every node, then until it is healthy or
//! routed again), and the time from the broker answering again to the first delivery at B.
//! The NATS-node row kills only the nodes the instances are connected to (the other node
//! accepts connections all along), so its time counts from the kill.
//!
//! Per run: the messages B never got (the gap), what the sender counted as failed
//! (`publish_errors` at `GET /stats` of A) and the reconnections of both instances.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context as _;
use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::testkit::broker_cluster::{NatsCluster, RedisCluster};
use neffos::testkit::numbered::Numbered;
use neffos::{Client, Events, Namespaces};
use serde::{Deserialize, Serialize};

use super::plot::{COLORS, Chart, DrawResult, Plot, err, plot_chart};
use super::{brokers, peers};

/// Outages per topology.
pub(super) const RUNS: usize = 10;
/// How long the broker stays down.
pub(super) const DOWN: Duration = Duration::from_secs(2);
/// The sender's period.
pub(super) const PERIOD: Duration = Duration::from_millis(5);
/// The target: delivery resumes at most this long after the broker answers again.
pub(super) const TARGET_MS: f64 = 300.0;

/// One outage.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeRun {
    /// From the broker answering again (the NATS-node row: from the kill) to the first
    /// delivery at B, ms.
    pub resume_ms: f64,
    /// From the restart's start (broker start-up included) to the first delivery, ms;
    /// `None` where the time counts from the kill.
    pub from_restart_ms: Option<f64>,
    /// Messages B never received.
    pub lost: u64,
    /// Publishes A counted as failed (`publish_errors`).
    pub publish_errors: u64,
    /// Reconnections of A and B.
    pub reconnects: u64,
}

/// One topology's runs.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeTopology {
    /// What the broker is.
    pub name: String,
    /// What each outage does.
    pub outage: String,
    /// `measured`, or why not.
    pub status: String,
    /// The runs, in order.
    pub runs: Vec<ResumeRun>,
}

impl ResumeTopology {
    /// Resume times, sorted.
    pub fn sorted_ms(&self) -> Vec<f64> {
        let mut v: Vec<f64> = self.runs.iter().map(|r| r.resume_ms).collect();
        v.sort_by(f64::total_cmp);
        v
    }
}

/// The whole phase.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ResumeResults {
    /// How the processes ran.
    pub setup: String,
    /// Per topology.
    pub topologies: Vec<ResumeTopology>,
}

/// The brokers of one topology, and what an outage does to them.
enum Brokers {
    Redis(RedisServer),
    Nats(NatsServer),
    RedisCluster(RedisCluster),
    NatsCluster(NatsCluster),
    /// A NATS cluster whose nodes holding the instances are killed.
    NatsNodes(NatsCluster),
}

impl Brokers {
    fn start(topology: usize) -> Brokers {
        match topology {
            0 => Brokers::Redis(RedisServer::start()),
            1 => Brokers::Nats(NatsServer::start()),
            2 => Brokers::RedisCluster(RedisCluster::start()),
            3 => Brokers::NatsCluster(NatsCluster::start()),
            _ => Brokers::NatsNodes(NatsCluster::start()),
        }
    }

    fn name(topology: usize) -> (&'static str, &'static str) {
        match topology {
            0 => ("Redis", "kill -9 of `redis-server`, restarted 2 s later"),
            1 => ("NATS", "kill -9 of `nats-server`, restarted 2 s later"),
            2 => (
                "Redis Cluster (3 masters + 3 replicas)",
                "kill -9 of all 6 nodes, restarted 2 s later; answering = cluster healthy again",
            ),
            3 => (
                "NATS cluster (3 nodes)",
                "kill -9 of all 3 nodes, restarted 2 s later; answering = routes up again",
            ),
            _ => (
                "NATS cluster (3 nodes), node kill",
                "kill -9 of the node(s) the instances are on (another accepts all along): \
                 time from the kill; restarted 2 s later",
            ),
        }
    }

    /// `neffos-bench-server` arguments joining this broker.
    fn server_args(&self) -> Vec<String> {
        let (kind, flag, url) = match self {
            Brokers::Redis(r) => ("redis", "--redis-url", r.url()),
            Brokers::Nats(n) => ("nats", "--nats-url", n.url()),
            Brokers::RedisCluster(c) => ("redis-cluster", "--redis-url", c.urls().join(",")),
            Brokers::NatsCluster(c) | Brokers::NatsNodes(c) => ("nats", "--nats-url", c.urls()),
        };
        ["--exchange", kind, flag, &url, "--addr", "127.0.0.1:0"]
            .map(str::to_owned)
            .to_vec()
    }

    /// True when resumption counts from the kill (other nodes accept all along).
    fn counts_from_kill(&self) -> bool {
        matches!(self, Brokers::NatsNodes(_))
    }

    fn kill(&self) {
        match self {
            Brokers::Redis(r) => r.kill(),
            Brokers::Nats(n) => n.kill(),
            Brokers::RedisCluster(c) => (0..c.len()).for_each(|i| c.node(i).kill()),
            Brokers::NatsCluster(c) => (0..c.len()).for_each(|i| c.node(i).kill()),
            Brokers::NatsNodes(c) => {
                let held: Vec<usize> = (0..c.len()).filter(|i| c.connections(*i) > 0).collect();
                // Never every node: one must take the instances over.
                for i in held.into_iter().take(c.len() - 1) {
                    c.node(i).kill();
                }
            }
        }
    }

    /// Restarts what is down and returns once it answers.
    fn restart(&self) {
        match self {
            Brokers::Redis(r) => r.restart(),
            Brokers::Nats(n) => n.restart(),
            Brokers::RedisCluster(c) => {
                (0..c.len()).for_each(|i| c.node(i).restart());
                c.wait_healthy();
            }
            Brokers::NatsCluster(c) | Brokers::NatsNodes(c) => {
                for i in 0..c.len() {
                    if c.node(i).pid().is_none() {
                        c.node(i).restart();
                    }
                }
                c.wait_routes();
            }
        }
    }
}

/// Topologies measured, in order (indexes of [`Brokers::start`]).
const TOPOLOGIES: usize = 5;

/// Runs the phase.
pub(super) fn run(programs: &peers::Programs, cpus: Option<&str>) -> ResumeResults {
    let mut out = ResumeResults {
        setup: format!(
            "2 `neffos-bench-server` processes{}, brokers on the other CPUs",
            cpus.map(|c| format!(" on CPU {c}")).unwrap_or_default()
        ),
        topologies: Vec::new(),
    };
    for topology in 0..TOPOLOGIES {
        let (name, outage) = Brokers::name(topology);
        eprintln!("-- resume: {name} ({RUNS} outages)");
        let started = Instant::now();
        // The harness panics when a broker cannot start: reported, not fatal.
        let result = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            one_topology(programs, cpus, topology)
        }));
        let (status, runs) = match result {
            Ok(Ok(runs)) => ("measured".to_owned(), runs),
            Ok(Err(e)) => (format!("failed: {e:#}"), Vec::new()),
            Err(_) => ("failed: the broker harness panicked".to_owned(), Vec::new()),
        };
        let t = ResumeTopology {
            name: name.into(),
            outage: outage.into(),
            status,
            runs,
        };
        eprintln!(
            "   {} in {:.0} s: resume ms {:?}, lost {:?}",
            t.status,
            started.elapsed().as_secs_f64(),
            t.sorted_ms().iter().map(|v| v.round()).collect::<Vec<_>>(),
            t.runs.iter().map(|r| r.lost).collect::<Vec<_>>()
        );
        out.topologies.push(t);
    }
    out
}

fn one_topology(
    programs: &peers::Programs,
    cpus: Option<&str>,
    topology: usize,
) -> anyhow::Result<Vec<ResumeRun>> {
    let brokers = Arc::new(Brokers::start(topology));
    let args = brokers.server_args();
    // Killed when this function returns.
    let a = peers::start(&programs.bench_server, &args, cpus, 1)?;
    let b = peers::start(&programs.bench_server, &args, cpus, 1)?;
    let ports = [port(&a.addrs[0])?, port(&b.addrs[0])?];
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    runtime.block_on(outages(
        brokers,
        format!("ws://{}/echo", a.addrs[0]),
        format!("ws://{}/echo", b.addrs[0]),
        ports,
    ))
}

/// Port of `127.0.0.1:<port>`.
fn port(addr: &str) -> anyhow::Result<u16> {
    addr.rsplit(':')
        .next()
        .and_then(|p| p.parse().ok())
        .with_context(|| format!("no port in {addr}"))
}

/// `(publish_errors of A, reconnects of A and B)` from `GET /stats`.
async fn counters(ports: [u16; 2]) -> anyhow::Result<(u64, u64)> {
    tokio::task::spawn_blocking(move || {
        let a = brokers::http_json(ports[0], "/stats")?;
        let b = brokers::http_json(ports[1], "/stats")?;
        let n = |v: &serde_json::Value, k: &str| v["exchange"][k].as_u64().unwrap_or(0);
        Ok((
            n(&a, "publish_errors"),
            n(&a, "reconnects") + n(&b, "reconnects"),
        ))
    })
    .await?
}

/// Runs `f` off the runtime (the harness blocks while brokers start and heal).
async fn blocking(brokers: &Arc<Brokers>, f: fn(&Brokers)) -> anyhow::Result<()> {
    let brokers = brokers.clone();
    tokio::task::spawn_blocking(move || f(&brokers))
        .await
        .context("the broker harness panicked")
}

async fn outages(
    brokers: Arc<Brokers>,
    sender_url: String,
    receiver_url: String,
    ports: [u16; 2],
) -> anyhow::Result<Vec<ResumeRun>> {
    let (_receiver, mut remote) = Numbered::connect(&receiver_url, "bench", "msg").await;
    let sender = Client::builder(&sender_url)
        .namespaces(Namespaces::new().namespace("bench", Events::new()))
        .connect()
        .await
        .context("the sender cannot connect")?;
    let ns = sender
        .connect("bench")
        .await
        .context("the sender cannot join `bench`")?;
    let stream = tokio::spawn(async move {
        let mut tick = tokio::time::interval(PERIOD);
        for n in 0u64.. {
            tick.tick().await;
            let _ = ns.emit("fanout", n.to_string());
        }
    });
    // B subscribes asynchronously: wait for the stream to flow.
    remote.until(20, Instant::now()).await;
    let mut runs = Vec::new();
    for _ in 0..RUNS {
        let flowing = remote.last().unwrap_or(0) + 20;
        remote.until(flowing, Instant::now()).await;
        let (errors0, reconnects0) = counters(ports).await?;
        let missing0 = remote.missing();
        let killed = Instant::now();
        blocking(&brokers, Brokers::kill).await?;
        let (resume_ms, from_restart_ms) = if brokers.counts_from_kill() {
            let outage = remote.until(remote.last().unwrap_or(0) + 20, killed).await;
            tokio::time::sleep(DOWN.saturating_sub(killed.elapsed())).await;
            blocking(&brokers, Brokers::restart).await?;
            (ms(outage.resumed_after), None)
        } else {
            tokio::time::sleep(DOWN).await;
            while remote.try_next().is_some() {}
            let restart = Instant::now();
            blocking(&brokers, Brokers::restart).await?;
            let ready = Instant::now();
            let resumed = loop {
                let (_, at) = remote.next().await;
                if at > ready {
                    break at;
                }
            };
            (
                ms(resumed.duration_since(ready)),
                Some(ms(resumed.duration_since(restart))),
            )
        };
        // Flowing again: whatever was lost shows as a gap by now.
        let flowing = remote.last().unwrap_or(0) + 20;
        remote.until(flowing, Instant::now()).await;
        let (errors1, reconnects1) = counters(ports).await?;
        runs.push(ResumeRun {
            resume_ms,
            from_restart_ms,
            lost: remote.missing() - missing0,
            publish_errors: errors1 - errors0,
            reconnects: reconnects1 - reconnects0,
        });
    }
    stream.abort();
    Ok(runs)
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Resume times per topology, one dot per run, labelled "median / worst", the target as a
/// line.
struct Distribution<'a>(&'a ResumeResults);

impl Chart for Distribution<'_> {
    fn draw<DB: plotters::prelude::DrawingBackend>(
        &self,
        root: &plotters::prelude::DrawingArea<DB, plotters::coord::Shift>,
    ) -> DrawResult {
        use plotters::prelude::*;
        let rows: Vec<&ResumeTopology> = self
            .0
            .topologies
            .iter()
            .filter(|t| !t.runs.is_empty())
            .collect();
        let n = rows.len().max(1) as u32;
        let max_y = rows
            .iter()
            .flat_map(|t| t.runs.iter().map(|r| r.resume_ms))
            .fold(TARGET_MS, f64::max)
            * 1.1;
        let mut chart = ChartBuilder::on(root)
            .caption(
                format!(
                    "Delivery resumed after the broker answered again, ms ({RUNS} outages each; median / worst)"
                ),
                ("sans-serif", 20),
            )
            .margin(15)
            .x_label_area_size(45)
            .y_label_area_size(70)
            .build_cartesian_2d((0u32..n - 1).into_segmented(), 0.0..max_y)
            .map_err(err)?;
        let names: Vec<String> = rows.iter().map(|t| short(&t.name)).collect();
        chart
            .configure_mesh()
            .disable_x_mesh()
            .light_line_style(WHITE)
            .y_desc("ms")
            .x_label_formatter(&|v| match v {
                SegmentValue::CenterOf(i) => names.get(*i as usize).cloned().unwrap_or_default(),
                _ => String::new(),
            })
            .label_style(("sans-serif", 13))
            .draw()
            .map_err(err)?;
        for (i, t) in rows.iter().enumerate() {
            let color = COLORS[i % COLORS.len()];
            let x = SegmentValue::CenterOf(i as u32);
            chart
                .draw_series(
                    t.runs
                        .iter()
                        .map(|r| Circle::new((x.clone(), r.resume_ms), 5, color.mix(0.6).filled())),
                )
                .map_err(err)?;
            let sorted = t.sorted_ms();
            let median = sorted[sorted.len() / 2];
            chart
                .draw_series(std::iter::once(Text::new(
                    format!("{median:.0} / {:.0}", sorted[sorted.len() - 1]),
                    (x.clone(), sorted[sorted.len() - 1] + max_y * 0.03),
                    ("sans-serif", 13),
                )))
                .map_err(err)?;
        }
        chart
            .draw_series(LineSeries::new(
                vec![
                    (SegmentValue::Exact(0), TARGET_MS),
                    (SegmentValue::Exact(n), TARGET_MS),
                ],
                BLACK.stroke_width(1),
            ))
            .map_err(err)?
            .label("target: 300 ms")
            .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK));
        chart
            .configure_series_labels()
            .background_style(WHITE.mix(0.85))
            .border_style(BLACK)
            .label_font(("sans-serif", 14))
            .position(SeriesLabelPosition::UpperRight)
            .draw()
            .map_err(err)?;
        Ok(())
    }
}

fn short(name: &str) -> String {
    name.replace(" (3 masters + 3 replicas)", "")
        .replace(" (3 nodes), node kill", " node kill")
        .replace(" (3 nodes)", "")
}

/// Draws the distribution under `<root>/docs/bench/`.
pub(super) fn plot(res: &ResumeResults, dir: &std::path::Path) -> anyhow::Result<Plot> {
    plot_chart(
        dir,
        "resume_distribution",
        "Resumption after a broker outage (issue 15)",
        &Distribution(res),
    )
}

/// The phase's section of BENCHMARKS.md.
pub(super) fn render(res: &ResumeResults, md: &mut String) -> std::fmt::Result {
    use std::fmt::Write as _;
    writeln!(md, "\n### Resumption after a broker outage (issue 15)\n")?;
    writeln!(
        md,
        "Two instances ({}) joined through the broker, a client of A sending a numbered \
         `fanout` every {} ms, a client of B checking what arrives (in order, no duplicate). \
         {RUNS} outages per row. *Resume*: from the broker answering again (restart \
         returned: the process accepts connections; a Redis Cluster: healthy again; a NATS \
         cluster: routes up again) to the first delivery at B; target ≤ {TARGET_MS:.0} ms, \
         worst of {RUNS}. *From restart*: from the restart's start, broker start-up \
         included. *Lost*: numbers B never got (delivery between instances is at most \
         once). *Counted*: what A's exchange counted as failed publishes \
         (`publish_errors`, `neffos_exchange_publish_errors_total`, `GET /stats` of \
         `neffos-bench-server`); the rest of the loss happened while B's subscription was \
         down, which its `reconnects` shows.\n",
        res.setup,
        PERIOD.as_millis()
    )?;
    writeln!(
        md,
        "| broker | outage | resume: median | worst | ≤ {TARGET_MS:.0} ms | every run, ms (sorted) | from restart: worst | lost per run | counted per run | reconnects per run |"
    )?;
    writeln!(md, "|---|---|---:|---:|---|---|---:|---|---|---|")?;
    for t in &res.topologies {
        if t.runs.is_empty() {
            writeln!(
                md,
                "| {} | {} | – | – | – | {} | – | – | – | – |",
                t.name, t.outage, t.status
            )?;
            continue;
        }
        let sorted = t.sorted_ms();
        let worst = sorted[sorted.len() - 1];
        let list = |v: Vec<String>| v.join(", ");
        writeln!(
            md,
            "| {} | {} | {:.0} ms | {:.0} ms | {} | {} | {} | {} | {} | {} |",
            t.name,
            t.outage,
            sorted[sorted.len() / 2],
            worst,
            if worst <= TARGET_MS {
                "**met**"
            } else {
                "**missed**"
            },
            list(sorted.iter().map(|v| format!("{v:.0}")).collect()),
            t.runs
                .iter()
                .filter_map(|r| r.from_restart_ms)
                .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))))
                .map_or("–".to_owned(), |v| format!("{v:.0} ms")),
            list(t.runs.iter().map(|r| r.lost.to_string()).collect()),
            list(
                t.runs
                    .iter()
                    .map(|r| r.publish_errors.to_string())
                    .collect()
            ),
            list(t.runs.iter().map(|r| r.reconnects.to_string()).collect()),
        )?;
    }
    writeln!(
        md,
        "\n![Resumption after a broker outage](docs/bench/resume_distribution.svg)"
    )?;
    Ok(())
}

/// `--only-resume`: writes `target/bench/resume.{json,md}` and the plot, prints the section.
pub(super) fn write_alone(
    res: &ResumeResults,
    root: &std::path::Path,
    started: std::time::Instant,
) -> anyhow::Result<()> {
    let plots = root.join("docs/bench");
    std::fs::create_dir_all(&plots)?;
    if let Err(e) = plot(res, &plots) {
        eprintln!("no plot: {e:#}");
    }
    super::write_phase(root, "resume", res, render, started)
}
