#![allow(clippy::print_stderr)]
//! `BENCHMARKS.md`: the targets (met or missed), the tables with ratios against each peer
//! of the same run, the plots, the machine and the method.

use std::fmt::Write as _;
use std::path::Path;

use super::{BrokerStats, ClusterResults, PeerResults, Role, SuiteResults, plot};
use crate::loadgen::Report;

/// The key of our server among the peers.
pub(super) const OURS: &str = "neffos-rs";

/// Formats an integer-ish rate with thousands separators.
pub(super) fn thousands(v: f64) -> String {
    let n = v.round().max(0.0) as u64;
    let s = n.to_string();
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i).is_multiple_of(3) {
            out.push(',');
        }
        out.push(c);
    }
    out
}

/// Formats microseconds as µs or ms.
pub(super) fn time_us(us: f64) -> String {
    if us >= 10_000.0 {
        format!("{:.0} ms", us / 1000.0)
    } else if us >= 1000.0 {
        format!("{:.2} ms", us / 1000.0)
    } else {
        format!("{us:.0} µs")
    }
}

fn ratio(a: f64, b: f64) -> String {
    if b > 0.0 && a > 0.0 {
        format!("{:.2}×", a / b)
    } else {
        "–".into()
    }
}

fn opt<T>(v: Option<T>, f: impl Fn(T) -> String) -> String {
    v.map(f).unwrap_or_else(|| "–".into())
}

/// CPUs in a `Cpus_allowed_list` such as `1`, `1-3` or `0,2-3`.
fn cpu_count(list: &str) -> usize {
    list.split(',')
        .filter(|p| !p.is_empty())
        .map(|part| match part.split_once('-') {
            Some((a, b)) => {
                let (a, b): (usize, usize) =
                    (a.trim().parse().unwrap_or(0), b.trim().parse().unwrap_or(0));
                b.saturating_sub(a) + 1
            }
            None => 1,
        })
        .sum::<usize>()
        .max(1)
}

impl SuiteResults {
    fn peer(&self, key: &str) -> Option<&PeerResults> {
        self.peers.iter().find(|p| p.key == key)
    }

    fn loadgen_cores(&self) -> usize {
        cpu_count(&self.loadgen_cpus)
    }

    /// True when the load generator was (nearly) saturated: the server could have gone
    /// faster.
    fn loadgen_bound(&self, r: &Report) -> bool {
        r.loadgen_cores >= 0.9 * self.loadgen_cores() as f64
    }
}

impl PeerResults {
    /// The saturating fan-out to `clients` receivers (the median run when repeated).
    pub(super) fn saturate_at(&self, clients: usize) -> Option<&Report> {
        let mut runs = self.saturate_runs(clients);
        runs.sort_by(|a, b| a.deliveries_per_s.total_cmp(&b.deliveries_per_s));
        runs.get(runs.len() / 2).copied()
    }

    /// Every saturating run to `clients` receivers.
    pub(super) fn saturate_runs(&self, clients: usize) -> Vec<&Report> {
        self.saturate
            .iter()
            .filter(|r| r.spec.clients == clients)
            .collect()
    }

    /// The open-loop run closest to `fraction` of the maximum.
    pub(super) fn sweep_at(&self, fraction: f64) -> Option<&Report> {
        let max = self.saturate_max()?;
        self.sweep.iter().min_by(|a, b| {
            let fa = (a.spec.rate / max - fraction).abs();
            let fb = (b.spec.rate / max - fraction).abs();
            fa.total_cmp(&fb)
        })
    }

    /// Maximum sustainable messages per second of the headline fan-out (from the sweep's
    /// base: the saturating run whose receiver count the sweep used).
    pub(super) fn saturate_max(&self) -> Option<f64> {
        let clients = self.sweep.first()?.spec.clients;
        let r = self.saturate_at(clients)?;
        (r.connected > 0).then(|| r.deliveries_per_s / r.connected as f64)
    }
}

/// Other processes used more than this many cores during a run: marked as disturbed.
const DISTURBED: f64 = 0.3;

/// The peer's name, marked when another process disturbed one of `runs`.
fn named(key: &str, runs: &[&Report]) -> String {
    let worst = runs
        .iter()
        .filter_map(|r| r.other_cores)
        .fold(0.0f64, f64::max);
    if worst > DISTURBED {
        format!("{key} ⚠{worst:.1}")
    } else {
        key.to_owned()
    }
}

/// One target line.
struct Target {
    what: String,
    measured: String,
    required: String,
    met: Option<bool>,
    /// Status when there is no target to meet.
    unmet_status: &'static str,
}

/// A line of the Targets table from a phase module (`crossask`, `scaleout`): shown as "not
/// measured" when `met` is unknown.
pub(super) struct TargetRow {
    pub(super) what: String,
    pub(super) measured: String,
    pub(super) required: String,
    pub(super) met: Option<bool>,
}

impl From<TargetRow> for Target {
    fn from(t: TargetRow) -> Self {
        Target {
            what: t.what,
            measured: t.measured,
            required: t.required,
            met: t.met,
            unmet_status: "not measured",
        }
    }
}

fn targets(res: &SuiteResults) -> Vec<Target> {
    let clients = res.plan.fanout_clients;
    let ours = res.peer(OURS);
    let sat = |key: &str| {
        res.peer(key)
            .and_then(|p| p.saturate_at(clients))
            .map(|r| r.deliveries_per_s)
    };
    let ours_sat = sat(OURS);
    let mut out = Vec::new();
    for (key, name, factor) in [
        ("go-neffos", "Go neffos", 3.0),
        ("socketioxide", "socketioxide", 1.5),
        ("raw-axum", "the raw WebSocket floor (same stack)", 0.6),
    ] {
        let peer = sat(key);
        let met = match (ours_sat, peer) {
            (Some(a), Some(b)) if b > 0.0 => Some(a / b >= factor),
            _ => None,
        };
        let bound = [OURS, key].iter().any(|k| {
            res.peer(k)
                .and_then(|p| p.saturate_at(clients))
                .is_some_and(|r| res.loadgen_bound(r))
        });
        let cpu = |key: &str| {
            res.peer(key)
                .and_then(|p| p.saturate_at(clients))
                .and_then(|r| r.server_cpu_us_per_delivery)
        };
        let cpu_note = match (cpu(OURS), cpu(key)) {
            (Some(a), Some(b)) if a > 0.0 => format!(
                "; server CPU per delivery {a:.2} vs {b:.2} µs ({})",
                if a <= b {
                    format!("{:.2}× less work", b / a)
                } else {
                    format!("{:.2}× more work", a / b)
                }
            ),
            _ => String::new(),
        };
        out.push(Target {
            what: format!(
                "Fan-out 1 sender → {} clients, {} B: deliveries/s vs {name}{}",
                thousands(clients as f64),
                res.plan.size,
                if res.plan.repeats > 1 {
                    format!(" (median of {} runs)", res.plan.repeats)
                } else {
                    String::new()
                }
            ),
            measured: match (ours_sat, peer) {
                (Some(a), Some(b)) => format!(
                    "{} vs {} = **{}**{}{cpu_note}",
                    thousands(a),
                    thousands(b),
                    ratio(a, b),
                    if bound {
                        " (load generator saturated)"
                    } else {
                        ""
                    }
                ),
                _ => "not measured".into(),
            },
            required: if factor >= 1.0 {
                format!("≥ {factor}×")
            } else {
                format!("≥ {:.0} %", factor * 100.0)
            },
            met,
            unmet_status: "not measured yet",
        });
    }
    let half = ours.and_then(|p| p.sweep_at(0.5));
    out.push(Target {
        what: format!(
            "p99 latency at half the maximum sustainable rate ({} clients, local)",
            thousands(clients as f64)
        ),
        measured: opt(half, |r| {
            format!(
                "{} at {} deliveries/s (p50 {})",
                time_us(r.latency.p99_us),
                thousands(r.offered_deliveries_per_s),
                time_us(r.latency.p50_us)
            )
        }),
        required: "≤ 2 ms".into(),
        met: half.map(|r| r.latency.p99_us <= 2000.0 && r.lost == 0),
        unmet_status: "not measured yet",
    });
    let idle = ours.and_then(|p| p.idle.as_ref());
    out.push(Target {
        what: format!(
            "Idle memory at {} connections, one instance",
            thousands(res.plan.idle_clients as f64)
        ),
        measured: opt(idle, |r| {
            format!(
                "{} KiB per connection ({} connected)",
                opt(r.kib_per_conn, |k| format!("{k:.1}")),
                thousands(r.connected as f64)
            )
        }),
        required: "≤ 8 KiB".into(),
        met: idle.and_then(|r| {
            r.kib_per_conn
                .map(|k| k <= 8.0 && r.connected >= res.plan.idle_clients)
        }),
        unmet_status: "not measured yet",
    });
    out.extend(cluster_targets(res));
    out.extend(
        super::crossask::targets(&res.cross_ask)
            .into_iter()
            .map(Target::from),
    );
    out.extend(
        super::scaleout::targets(&res.scale_out)
            .into_iter()
            .map(Target::from),
    );
    out
}

/// The key of Go neffos among the peers.
const GO_NEFFOS: &str = "go-neffos";

/// The cross-instance row of `peer` over `exchange`.
fn cluster_row<'a>(
    res: &'a SuiteResults,
    peer: &str,
    exchange: &str,
) -> Option<&'a ClusterResults> {
    res.cluster
        .iter()
        .find(|c| c.peer == peer && c.exchange == exchange)
}

/// Saturating deliveries/s of a cross-instance row.
fn cluster_rate(c: Option<&ClusterResults>) -> Option<f64> {
    c.and_then(|c| c.saturate.as_ref())
        .map(|r| r.deliveries_per_s)
        .filter(|v| *v > 0.0)
}

/// Broadcasts (messages) per second of a saturating run.
fn broadcasts_per_s(r: &Report) -> Option<f64> {
    (r.connected > 0).then(|| r.deliveries_per_s / r.connected as f64)
}

fn broker_title(exchange: &str) -> &str {
    match exchange {
        "redis" => "Redis",
        "nats" => "NATS",
        other => other,
    }
}

/// Deliveries per broadcast: two decimals when small, thousands separators when large.
fn per_broadcast(d: f64) -> String {
    if d >= 100.0 {
        thousands(d)
    } else {
        format!("{d:.2}")
    }
}

/// Why a row has no number.
fn why_not(c: Option<&ClusterResults>, who: &str) -> String {
    match c {
        Some(c) => format!("{who}: {}", c.status),
        None => format!("{who}: not run"),
    }
}

/// The cross-instance target lines.
fn cluster_targets(res: &SuiteResults) -> Vec<Target> {
    let mut out = Vec::new();
    let clients = thousands(res.plan.fanout_clients as f64);
    for exchange in ["redis", "nats"] {
        let name = broker_title(exchange);
        let (ours, go) = (
            cluster_row(res, OURS, exchange),
            cluster_row(res, GO_NEFFOS, exchange),
        );
        let (a, b) = (cluster_rate(ours), cluster_rate(go));
        let cpu = |c: Option<&ClusterResults>| {
            c.and_then(|c| c.saturate.as_ref())
                .and_then(|r| r.server_cpu_us_per_delivery)
        };
        out.push(Target {
            what: format!(
                "Cross-instance fan-out through {name} (2 processes, 1 sender → {clients} clients split evenly, {} B): deliveries/s vs Go neffos",
                res.plan.size
            ),
            measured: match (a, b) {
                (Some(a), Some(b)) => format!(
                    "{} vs {} = **{}**{}",
                    thousands(a),
                    thousands(b),
                    ratio(a, b),
                    match (cpu(ours), cpu(go)) {
                        (Some(x), Some(y)) if x > 0.0 => format!(
                            "; first instance's CPU per delivery {x:.2} vs {y:.2} µs"
                        ),
                        _ => String::new(),
                    }
                ),
                _ => [
                    a.is_none().then(|| why_not(ours, "neffos-rs")),
                    b.is_none().then(|| why_not(go, "Go neffos")),
                ]
                .into_iter()
                .flatten()
                .collect::<Vec<_>>()
                .join("; "),
            },
            required: "≥ 3×".into(),
            met: match (a, b) {
                (Some(a), Some(b)) => Some(a / b >= 3.0),
                _ => None,
            },
            unmet_status: "not measured",
        });

        fn stats(c: Option<&ClusterResults>) -> Option<&BrokerStats> {
            c.and_then(|c| c.broker.as_ref())
        }
        let instances = stats(ours).map_or(2, |s| s.instances);
        let describe = |c: Option<&ClusterResults>, who: &str| match stats(c)
            .and_then(|s| s.deliveries_per_broadcast().map(|d| (d, s)))
        {
            Some((d, s)) => format!(
                "{who} **{}** (broker connections per instance: {})",
                per_broadcast(d),
                opt(s.connections_per_instance(), |n| format!("{n:.0}"))
            ),
            None => why_not(c, who),
        };
        let ours_per = stats(ours).and_then(BrokerStats::deliveries_per_broadcast);
        out.push(Target {
            what: format!(
                "Broker deliveries per broadcast through {name} = interested instances, not clients ({instances} instances, {clients} clients)"
            ),
            measured: format!(
                "{}; {}",
                describe(ours, "neffos-rs"),
                describe(go, "Go neffos")
            ),
            required: format!("≤ {instances}"),
            met: ours_per.map(|d| d <= instances as f64),
            unmet_status: "not measured",
        });
    }
    let half = |peer: &str| cluster_row(res, peer, "redis").and_then(|c| c.half.as_ref());
    let ours_half = half(OURS);
    out.push(Target {
        what: format!(
            "p99 latency at half the maximum sustainable rate through Redis (2 processes, {clients} clients)"
        ),
        measured: match ours_half {
            Some(r) => format!(
                "{} at {} deliveries/s (p50 {}){}",
                time_us(r.latency.p99_us),
                thousands(r.offered_deliveries_per_s),
                time_us(r.latency.p50_us),
                half(GO_NEFFOS)
                    .map(|g| format!(
                        "; Go neffos {} at {} deliveries/s",
                        time_us(g.latency.p99_us),
                        thousands(g.offered_deliveries_per_s)
                    ))
                    .unwrap_or_default()
            ),
            None => why_not(cluster_row(res, OURS, "redis"), "neffos-rs"),
        },
        required: "≤ 5 ms".into(),
        met: ours_half.map(|r| r.latency.p99_us <= 5000.0 && r.lost == 0),
        unmet_status: "not measured",
    });
    out
}

/// The cross-instance section: every row, then the brokers' own ceilings.
fn cluster_section(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let clients = res.plan.fanout_clients;
    writeln!(
        md,
        "\n## Across instances: neffos-rs, Go neffos and socketioxide\n"
    )?;
    writeln!(
        md,
        "{} receivers split evenly over the instances, the sender on the first, {} B bodies: \
         saturating (as above), then open loop at half that rate. Through Redis and NATS each \
         peer runs as 2 processes joined by its own exchange (neffos-rs: `neffos-redis` / \
         `neffos-nats`; Go neffos v0.0.25: its `stackexchange/redis` / `stackexchange/nats`), \
         one broker started by the suite for all peers; socketioxide, through Redis only, with \
         `socketioxide-redis` (its project's Redis adapter). *ours ÷ peer* compares the \
         saturating deliveries/s through the same broker. Server CPU is the first instance's \
         process.\n",
        thousands(clients as f64),
        res.plan.size
    )?;
    writeln!(
        md,
        "| peer | exchange | setup | saturating deliveries/s | ours ÷ peer | server CPU/delivery | half rate: p50 | p99 | lost | broker deliveries per broadcast | broker connections per instance | namespace subscriptions | status |"
    )?;
    writeln!(
        md,
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|"
    )?;
    for c in &res.cluster {
        let ours = cluster_rate(cluster_row(res, OURS, &c.exchange));
        let vs = match (ours, cluster_rate(Some(c))) {
            (Some(_), Some(_)) if c.peer == OURS => "1.00×".into(),
            (Some(a), Some(b)) if c.exchange != "memory" => ratio(a, b),
            _ => "–".into(),
        };
        let runs: Vec<&Report> = c.saturate.iter().chain(c.half.iter()).collect();
        let b = c.broker.as_ref();
        writeln!(
            md,
            "| {} | {} | {} | {} | {vs} | {} | {} | {} | {} | {} | {} | {} | {} |",
            named(&c.peer, &runs),
            c.exchange,
            c.setup,
            opt(c.saturate.as_ref(), |r| thousands(r.deliveries_per_s)),
            opt(
                c.saturate
                    .as_ref()
                    .and_then(|r| r.server_cpu_us_per_delivery),
                |v| format!("{v:.2} µs")
            ),
            opt(c.half.as_ref(), |r| time_us(r.latency.p50_us)),
            opt(c.half.as_ref(), |r| time_us(r.latency.p99_us)),
            opt(c.half.as_ref(), |r| (r.lost
                + c.saturate.as_ref().map_or(0, |s| s.lost + s.stalls))
            .to_string()),
            opt(
                b.and_then(BrokerStats::deliveries_per_broadcast),
                per_broadcast
            ),
            opt(
                b.and_then(BrokerStats::connections_per_instance),
                |n| format!("{n:.0}")
            ),
            opt(b.and_then(|b| b.namespace_subscribers), |n| thousands(
                n as f64
            )),
            c.status
        )?;
    }
    writeln!(
        md,
        "\n*Broker deliveries per broadcast* counts what the broker itself did during the \
         saturating run, divided by the broadcasts the sender asked for. NATS: the delta of \
         `out_msgs` of nats-server's `/varz` (started with `-m <port>`); `in_msgs` gives the \
         publishes. Redis, which counts no deliveries: `PUBLISH` calls (`INFO commandstats`) × \
         subscribers of the namespace channel (`PUBSUB NUMSUB`, sampled during the run; no \
         pattern subscriptions). *Broker connections* are the broker's clients during the \
         run (Redis `connected_clients`, NATS `/varz` `connections`) divided by the instances; \
         *namespace subscriptions* are the subscriptions of the namespace's channel \
         (`bench:ns:5:bench`, `bench.ns.bench` for neffos-rs; `bench.bench.`, `bench.bench` \
         for Go neffos; `socket.io-request#/bench#` for socketioxide-redis, which also keeps \
         per-instance request/response channels). neffos-rs subscribes once per instance with local interest and \
         delivers to its local clients itself; over NATS it connects with `no_echo`, so the \
         origin instance does not get its own broadcast back (1 delivery for 2 instances), \
         while over Redis the origin receives it and drops it (2). Go neffos subscribes once \
         per WebSocket connection (Redis: one subscriber connection each), so the broker \
         delivers every broadcast once per client.\n"
    )?;
    if !res.broker_ceilings.is_empty() {
        writeln!(md, "### The brokers' own ceilings\n")?;
        writeln!(
            md,
            "Raw publish → {} subscribers on the broker's own protocol (no neffos, no client \
             library), {} B payloads, one pipelined publisher connection that keeps at most \
             {} messages not yet received by every subscriber, for {} s; these clients run on \
             the servers' CPU, the broker where it ran above. A neffos-rs broadcast is one \
             publish delivered to the interested instances; a Go neffos broadcast is one \
             publish delivered to every client's subscription.\n",
            super::brokers::CEILING_SUBSCRIBERS,
            res.plan.size,
            thousands(super::brokers::CEILING_WINDOW as f64),
            res.plan.duration.min(2.0)
        )?;
        writeln!(
            md,
            "| broker | publishes/s to {} subscribers | broker deliveries/s | neffos-rs: broadcasts/s, broker deliveries/s | Go neffos: broadcasts/s, broker deliveries/s | status |",
            super::brokers::CEILING_SUBSCRIBERS
        )?;
        writeln!(md, "|---|---:|---:|---:|---:|---|")?;
        for ceiling in &res.broker_ceilings {
            let through = |peer: &str| {
                let c = cluster_row(res, peer, &ceiling.broker)?;
                let r = c.saturate.as_ref()?;
                let b = broadcasts_per_s(r)?;
                let per = c
                    .broker
                    .as_ref()
                    .and_then(BrokerStats::deliveries_per_broadcast);
                Some(format!(
                    "{}, {}",
                    thousands(b),
                    opt(per, |d| thousands(d * b))
                ))
            };
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                broker_title(&ceiling.broker),
                opt(ceiling.publishes_per_s, thousands),
                opt(ceiling.publishes_per_s, |p| thousands(
                    p * ceiling.subscribers as f64
                )),
                through(OURS).unwrap_or_else(|| "–".into()),
                through(GO_NEFFOS).unwrap_or_else(|| "–".into()),
                ceiling.status
            )?;
        }
    }
    Ok(())
}

/// The cross-instance targets and section alone (`neffos-loadgen suite --cluster-only`).
pub(super) fn cluster_only(res: &SuiteResults) -> Result<String, std::fmt::Error> {
    let mut md = String::new();
    writeln!(md, "| target | measured | required | status |")?;
    writeln!(md, "|---|---|---|---|")?;
    for t in cluster_targets(res).into_iter().chain(
        super::crossask::targets(&res.cross_ask)
            .into_iter()
            .map(Target::from),
    ) {
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.required,
            status(&t)
        )?;
    }
    cluster_section(res, &mut md)?;
    if let Some(q) = &res.queries {
        super::queries::render(q, &mut md)?;
    }
    if let Some(r) = &res.resume {
        super::resume::render(r, &mut md)?;
    }
    super::crossask::render(&res.cross_ask, None, &mut md)?;
    Ok(md)
}

fn status(t: &Target) -> &'static str {
    match t.met {
        Some(true) => "**met**",
        Some(false) => "**missed**",
        None => t.unmet_status,
    }
}

/// Writes `BENCHMARKS.md` and the plots under `docs/bench/`.
pub(super) fn write(res: &SuiteResults, root: &Path) -> anyhow::Result<()> {
    let plots_dir = root.join("docs/bench");
    std::fs::create_dir_all(&plots_dir)?;
    let plots = match plot::draw_all(res, &plots_dir) {
        Ok(plots) => plots,
        Err(e) => {
            eprintln!("no plots: {e:#}");
            Vec::new()
        }
    };
    let mut md = String::new();
    render(res, &plots, root, &mut md)?;
    std::fs::write(root.join("BENCHMARKS.md"), md)?;
    Ok(())
}

/// The flags of `cargo xtask bench` that produced `res`.
fn command_flags(res: &SuiteResults) -> String {
    let mut flags = String::new();
    if res.quick {
        flags.push_str(" --quick");
        if !res.scale_out.is_empty() {
            flags.push_str(" --scale-out");
        }
    }
    if let Some(before) = res.peers.iter().find(|p| p.key == super::peers::BEFORE_KEY) {
        let label = before.description.split('`').nth(1).unwrap_or("<rev>");
        flags.push_str(&format!(" --before {label}"));
    }
    flags
}

fn render(
    res: &SuiteResults,
    plots: &[plot::Plot],
    root: &Path,
    md: &mut String,
) -> std::fmt::Result {
    title(res, md)?;
    targets_table(res, md)?;
    peers_table(res, md)?;
    fanout_saturation(res, md)?;
    latency_vs_load(res, md)?;
    latency_same_load(res, md)?;
    rooms(res, md)?;
    asks(res, md)?;
    churn(res, md)?;
    idle_memory(res, md)?;

    if let Some(o) = &res.overload {
        super::overload::render(o, md)?;
    }

    // Across instances.
    cluster_section(res, md)?;
    if let Some(q) = &res.queries {
        super::queries::render(q, md)?;
    }
    if let Some(r) = &res.recovery {
        super::recovery::render(r, md)?;
    }
    if let Some(r) = &res.resume {
        super::resume::render(r, md)?;
    }
    if let Some(shards) = &res.shards {
        super::shards::render(shards, &[], md)?;
    }

    super::scaleout::render(&res.scale_out, md)?;

    plots_section(plots, md)?;
    errors_section(res, md)?;
    if let Ok(analysis) = std::fs::read_to_string(root.join("docs/bench/analysis.md")) {
        writeln!(md, "\n{}", analysis.trim_end())?;
    }
    machine_section(res, md)?;
    method_section(res, md)?;
    Ok(())
}

/// The title and what produced the file.
fn title(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    writeln!(md, "# Benchmarks")?;
    writeln!(md)?;
    writeln!(
        md,
        "Generated by `cargo xtask bench{}` on {} ({:.0} s). Every number below comes from this one run, \
         on one machine, with every peer driven by the same load generator (`neffos-loadgen`); \
         ratios compare peers of this run only. Do not edit by hand: run the command again.",
        command_flags(res),
        res.date,
        res.wall_s
    )?;
    if res.quick {
        writeln!(
            md,
            "\nThis is a **quick** run ({} s per measurement): expect a few percent of noise; \
             `cargo xtask bench` runs longer and wider.",
            res.plan.duration
        )?;
    }
    Ok(())
}

/// The targets and whether they were met.
fn targets_table(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    writeln!(md, "\n## Targets\n")?;
    writeln!(md, "| target | measured | required | status |")?;
    writeln!(md, "|---|---|---|---|")?;
    for t in targets(res) {
        writeln!(
            md,
            "| {} | {} | {} | {} |",
            t.what,
            t.measured,
            t.required,
            status(&t)
        )?;
    }
    Ok(())
}

/// The peers and what they are built from.
fn peers_table(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    writeln!(md, "\n## Peers\n")?;
    writeln!(md, "| peer | role | protocol | built from |")?;
    writeln!(md, "|---|---|---|---|")?;
    for p in &res.peers {
        let role = match p.role {
            Role::Ours => "ours",
            Role::Baseline => "baseline",
            Role::Floor => "raw WebSocket (no protocol)",
        };
        writeln!(
            md,
            "| {} | {role} | {} | {} |",
            p.key, p.proto, p.description
        )?;
    }
    writeln!(
        md,
        "\nEvery peer does the same: clients connect to namespace `bench` (Socket.IO: `/bench`), \
         optionally join a room; a sender's `fanout` event is broadcast as `msg` with the same \
         body to every other client of the namespace or room; `ask` is answered with its body. \
         The raw peers have no namespaces, rooms or Asks: every frame is broadcast to every other \
         connection."
    )?;
    Ok(())
}

/// Fan-out: the maximum sustainable rate per receiver count.
fn fanout_saturation(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let ours = res.peer(OURS);
    writeln!(md, "\n## Fan-out: maximum sustainable rate\n")?;
    writeln!(
        md,
        "One sender → N clients of the namespace, {} B bodies; the sender keeps at most {} \
         messages not yet delivered to every client (so no queue overflows) and sends as fast as \
         that allows for {} s; the headline receiver count is run several times and the median \
         reported, every run listed. *ours ÷ peer* is neffos-rs's deliveries/s divided by the peer's. \
         *CPU/delivery* is the server's CPU time (user + system, from `/proc/<pid>/stat`) \
         divided by deliveries: it does not depend on whether the load generator kept up.\n",
        res.plan.size,
        crate::loadgen::Spec::default().window,
        res.plan.duration
    )?;
    writeln!(
        md,
        "| peer | clients | deliveries/s (median) | runs | ours ÷ peer | server CPU/delivery | ours ÷ peer (CPU) | lost | load generator |"
    )?;
    writeln!(md, "|---|---:|---:|---|---:|---:|---:|---:|---|")?;
    for &n in &res.plan.client_counts {
        let o = ours.and_then(|p| p.saturate_at(n));
        for p in &res.peers {
            let Some(r) = p.saturate_at(n) else {
                writeln!(
                    md,
                    "| {} | {} | failed | | | | | | |",
                    p.key,
                    thousands(n as f64)
                )?;
                continue;
            };
            let cpu = r.server_cpu_us_per_delivery;
            let all_runs = p.saturate_runs(n);
            let runs = if all_runs.len() > 1 {
                all_runs
                    .iter()
                    .map(|r| format!("{:.2} M", r.deliveries_per_s / 1e6))
                    .collect::<Vec<_>>()
                    .join(" / ")
            } else {
                "1".into()
            };
            writeln!(
                md,
                "| {} | {} | {} | {runs} | {} | {} | {} | {} | {:.2} cores{} |",
                named(&p.key, &all_runs),
                thousands(r.connected as f64),
                thousands(r.deliveries_per_s),
                if p.key == OURS {
                    "1.00×".into()
                } else {
                    opt(o, |o| ratio(o.deliveries_per_s, r.deliveries_per_s))
                },
                opt(cpu, |c| format!("{c:.2} µs")),
                match (o.and_then(|o| o.server_cpu_us_per_delivery), cpu) {
                    (Some(a), Some(b)) if p.key != OURS => format!("{:.2}× the CPU", a / b),
                    _ => "–".into(),
                },
                r.lost + r.stalls,
                r.loadgen_cores,
                if res.loadgen_bound(r) {
                    " (saturated)"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

/// Fan-out latency over the offered-load sweep.
fn latency_vs_load(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let clients = res.plan.fanout_clients;
    writeln!(md, "\n## Fan-out latency versus offered load\n")?;
    writeln!(
        md,
        "One sender on an open-loop schedule → {} clients: message k is due at t₀ + k/rate and \
         carries that *intended* time; latency is the receiver's clock minus the intended time, \
         so a sender or server that falls behind shows up as latency (coordinated omission is \
         accounted for). HDR histograms, the first {:.1} s excluded. Offered load is a fraction \
         of each peer's own maximum above.\n",
        thousands(clients as f64),
        (res.plan.duration * 0.2).min(1.0)
    )?;
    writeln!(
        md,
        "| peer | of max | offered deliveries/s | achieved | p50 | p90 | p99 | p99.9 | max | lost |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    for p in &res.peers {
        let max = p.saturate_max();
        for r in &p.sweep {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                named(&p.key, &[r]),
                opt(max, |m| format!("{:.0} %", r.spec.rate / m * 100.0)),
                thousands(r.offered_deliveries_per_s),
                thousands(r.deliveries_per_s),
                time_us(r.latency.p50_us),
                time_us(r.latency.p90_us),
                time_us(r.latency.p99_us),
                time_us(r.latency.p999_us),
                time_us(r.latency.max_us),
                r.lost
            )?;
        }
    }
    Ok(())
}

/// Fan-out latency with every peer at the same load.
fn latency_same_load(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let clients = res.plan.fanout_clients;
    let ours = res.peer(OURS);
    writeln!(md, "\n## Fan-out latency at the same load\n")?;
    writeln!(
        md,
        "Every peer at {} messages/s to {} clients ({} deliveries/s), open loop as above.\n",
        res.plan.fixed_rate,
        thousands(clients as f64),
        thousands(res.plan.fixed_rate * clients as f64)
    )?;
    writeln!(
        md,
        "| peer | p50 | p90 | p99 | p99.9 | max | lost | server CPU/delivery | p99: ours ÷ peer |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|---:|")?;
    let ours_fixed = ours
        .and_then(|p| p.fixed.as_ref())
        .map(|r| r.latency.p99_us);
    for p in &res.peers {
        if let Some(r) = &p.fixed {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                named(&p.key, &[r]),
                time_us(r.latency.p50_us),
                time_us(r.latency.p90_us),
                time_us(r.latency.p99_us),
                time_us(r.latency.p999_us),
                time_us(r.latency.max_us),
                r.lost,
                opt(r.server_cpu_us_per_delivery, |c| format!("{c:.2} µs")),
                if p.key == OURS {
                    "–".into()
                } else {
                    opt(ours_fixed, |o| ratio(o, r.latency.p99_us))
                }
            )?;
        }
    }
    Ok(())
}

/// Room fan-out.
fn rooms(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let clients = res.plan.fanout_clients;
    let ours = res.peer(OURS);
    writeln!(md, "\n## Room fan-out\n")?;
    writeln!(
        md,
        "{} clients in {} rooms, {} messages/s, each to one room (round-robin), open loop.\n",
        thousands(clients as f64),
        res.plan.rooms,
        res.plan.room_rate
    )?;
    writeln!(
        md,
        "| peer | deliveries/s | p50 | p99 | p99.9 | lost | server CPU/delivery | ours ÷ peer (CPU) |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    let ours_rooms_cpu = ours
        .and_then(|p| p.rooms.as_ref())
        .and_then(|r| r.server_cpu_us_per_delivery);
    for p in &res.peers {
        if let Some(r) = &p.rooms {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                named(&p.key, &[r]),
                thousands(r.deliveries_per_s),
                time_us(r.latency.p50_us),
                time_us(r.latency.p99_us),
                time_us(r.latency.p999_us),
                r.lost,
                opt(r.server_cpu_us_per_delivery, |c| format!("{c:.2} µs")),
                match (ours_rooms_cpu, r.server_cpu_us_per_delivery) {
                    (Some(a), Some(b)) if p.key != OURS => format!("{:.2}×", a / b),
                    _ => "–".into(),
                }
            )?;
        }
    }
    Ok(())
}

/// Ask round trips.
fn asks(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let ours = res.peer(OURS);
    writeln!(md, "\n## Ask round trips\n")?;
    writeln!(
        md,
        "{} connections, {} Asks/s in total (open loop, round-robin over the connections), \
         each answered with its own {} B body.\n",
        res.plan.ask_clients, res.plan.ask_rate, res.plan.size
    )?;
    writeln!(
        md,
        "| peer | replies/s | p50 | p90 | p99 | p99.9 | lost | server CPU/Ask |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---:|")?;
    for p in &res.peers {
        if let Some(r) = &p.ask {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                named(&p.key, &[r]),
                thousands(r.deliveries_per_s),
                time_us(r.latency.p50_us),
                time_us(r.latency.p90_us),
                time_us(r.latency.p99_us),
                time_us(r.latency.p999_us),
                r.lost,
                opt(r.server_cpu_us_per_delivery, |c| format!("{c:.1} µs"))
            )?;
        }
    }
    super::crossask::render(
        &res.cross_ask,
        ours.and_then(|p| p.ask.as_ref()).map(|r| r.latency.p50_us),
        md,
    )?;
    Ok(())
}

/// Connection churn.
fn churn(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let ours = res.peer(OURS);
    writeln!(md, "\n## Connection churn\n")?;
    writeln!(
        md,
        "{} loops, each: TCP connect, WebSocket upgrade, protocol handshake and namespace \
         connect (neffos `M`/`A` + `_OnNamespaceConnect`; Socket.IO open + `40/bench,`), then \
         a clean close; {} s.\n",
        res.plan.churn_concurrency, res.plan.duration
    )?;
    writeln!(
        md,
        "| peer | connects/s | ours ÷ peer | connect p50 | connect p99 | failures | server CPU/connect | load generator |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|---:|---|")?;
    let ours_churn = ours.and_then(|p| p.churn.as_ref()).map(|r| r.cycles_per_s);
    for p in &res.peers {
        if let Some(r) = &p.churn {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} | {} | {:.2} cores{} |",
                named(&p.key, &[r]),
                thousands(r.cycles_per_s),
                if p.key == OURS {
                    "1.00×".into()
                } else {
                    opt(ours_churn, |o| ratio(o, r.cycles_per_s))
                },
                time_us(r.latency.p50_us),
                time_us(r.latency.p99_us),
                r.cycle_failures,
                opt(r.server_cpu_us_per_delivery, |c| format!("{c:.0} µs")),
                r.loadgen_cores,
                if res.loadgen_bound(r) {
                    " (saturated)"
                } else {
                    ""
                }
            )?;
        }
    }
    Ok(())
}

/// Idle connections: server memory.
fn idle_memory(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let ours = res.peer(OURS);
    writeln!(md, "\n## Idle connections: server memory\n")?;
    writeln!(
        md,
        "{} connections opened by {} load generator processes from 127.0.0.2–127.0.0.17 (each \
         handshaken and connected to the namespace), then the server's `VmRSS` \
         (`/proc/<pid>/status`) is read after {} s and compared with its value before the \
         first connection. A fresh server process per peer.\n",
        thousands(res.plan.idle_clients as f64),
        res.plan.idle_workers,
        crate::loadgen::Spec::default().settle
    )?;
    writeln!(
        md,
        "| peer | connected | RSS before | RSS after | KiB per connection | ours ÷ peer |"
    )?;
    writeln!(md, "|---|---:|---:|---:|---:|---:|")?;
    let ours_idle = ours
        .and_then(|p| p.idle.as_ref())
        .and_then(|r| r.kib_per_conn);
    for p in &res.peers {
        if let Some(r) = &p.idle {
            writeln!(
                md,
                "| {} | {} | {} | {} | {} | {} |",
                p.key,
                thousands(r.connected as f64),
                opt(r.rss_before_kib, |k| format!(
                    "{:.1} MiB",
                    k as f64 / 1024.0
                )),
                opt(r.rss_after_kib, |k| format!("{:.1} MiB", k as f64 / 1024.0)),
                opt(r.kib_per_conn, |k| format!("{k:.1}")),
                match (ours_idle, r.kib_per_conn) {
                    (Some(a), Some(b)) if p.key != OURS => ratio(a, b),
                    _ => "–".into(),
                }
            )?;
        }
    }
    Ok(())
}

/// The plots, with links to their PNG versions.
fn plots_section(plots: &[plot::Plot], md: &mut String) -> std::fmt::Result {
    writeln!(md, "\n## Plots\n")?;
    for p in plots {
        writeln!(md, "**{}**\n", p.title)?;
        writeln!(md, "![{}]({})\n", p.title, p.svg)?;
        if let Some(png) = &p.png {
            writeln!(md, "(PNG: [{png}]({png}))\n")?;
        }
    }
    Ok(())
}

/// Errors the runs reported (at most 30).
fn errors_section(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    let errors: Vec<_> = res
        .peers
        .iter()
        .flat_map(|p| p.errors.iter().map(move |e| (p.key.clone(), e.clone())))
        .chain(res.peers.iter().flat_map(|p| {
            [&p.idle, &p.fixed, &p.rooms, &p.ask, &p.churn]
                .into_iter()
                .flatten()
                .chain(p.saturate.iter())
                .chain(p.sweep.iter())
                .flat_map(move |r| r.errors.iter().map(move |e| (p.key.clone(), e.clone())))
        }))
        .collect();
    if !errors.is_empty() {
        writeln!(md, "\n## Errors seen\n")?;
        for (peer, e) in errors.iter().take(30) {
            writeln!(md, "- {peer}: {e}")?;
        }
    }
    Ok(())
}

/// The machine and the versions measured.
fn machine_section(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    writeln!(md, "\n## Machine and versions\n")?;
    let m = &res.machine;
    writeln!(md, "| | |\n|---|---|")?;
    writeln!(md, "| CPU | {} × {} |", m.cores, m.cpu_model)?;
    writeln!(md, "| memory | {} MiB |", thousands(m.memory_mib as f64))?;
    writeln!(md, "| kernel | {} |", m.kernel)?;
    writeln!(md, "| open files (soft / hard) | {} |", m.fd_limit)?;
    writeln!(md, "| ephemeral ports | {} |", m.port_range)?;
    writeln!(
        md,
        "| pinning | servers on CPU {}, load generator on CPU {} |",
        res.server_cpus.as_deref().unwrap_or("(not pinned)"),
        res.loadgen_cpus
    )?;
    for (name, version) in &res.versions.0 {
        writeln!(md, "| {name} | {version} |")?;
    }
    Ok(())
}

/// How the suite measures.
fn method_section(res: &SuiteResults, md: &mut String) -> std::fmt::Result {
    writeln!(md, "\n## Method\n")?;
    writeln!(
        md,
        "- `cargo xtask bench` builds `neffos-loadgen` and `neffos-bench-server` (release), the \
           socketioxide and fastwebsockets peers (their own workspaces under `benches/peers/`, \
           built into `target/peers`) and the Go neffos server (`interop/go/benchserver`, \
           `GOTOOLCHAIN=go1.27.3`), then runs `neffos-loadgen suite`.\n\
         - Servers run one at a time, pinned to CPU {} (`taskset`); the load generator runs \
           on the other CPU(s). A row marked *(saturated)* had the load generator at ≥ 90 % of \
           its CPUs: the server could have gone faster, so a ratio in its favour is a lower bound.\n\
         - The load generator uses its own minimal WebSocket client (masked frames, one read per \
           wake-up), binds each connection to 127.0.0.2…127.0.0.17 before connecting, and runs \
           the senders on their own threads (sub-millisecond schedules; tokio's timer has a 1 ms \
           resolution). Connections are closed cleanly after each run.\n\
         - ⚠*x* after a peer's name: while that run lasted, processes other than the server \
           and the load generator used *x* CPUs on average (this machine is shared); treat \
           that row with suspicion. Before each run the suite waits (up to 20 s) until \
           other processes use less than 0.3 CPUs (at most 90 s in all); phases run one after the other and the \
           peers take turns within each phase, so a disturbance does not fall on one peer \
           only.\n\
         - Losses: messages are numbered; expected deliveries = messages sent × receivers \
           connected (per room); *lost* = expected − received after a drain (until nothing \
           arrived for 300 ms, at most 5 s).\n\
         - Run one scenario by hand: `target/release/neffos-loadgen fanout --help`.",
        res.server_cpus.as_deref().unwrap_or("–")
    )?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_are_formatted() {
        assert_eq!(thousands(1_234_567.4), "1,234,567");
        assert_eq!(thousands(999.0), "999");
        assert_eq!(time_us(812.0), "812 µs");
        assert_eq!(time_us(3410.0), "3.41 ms");
        assert_eq!(time_us(25_000.0), "25 ms");
        assert_eq!(cpu_count("1"), 1);
        assert_eq!(cpu_count("1-3"), 3);
        assert_eq!(cpu_count("0,2-3"), 3);
    }
}
