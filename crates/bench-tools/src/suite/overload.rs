//! Overload (issue 13): open-loop fan-out above and below the raw floor's sustainable rate,
//! as an outside tester drives it.
//!
//! - The floor: `raw-axum` (`neffos-bench-server --mode raw`, our stack without the
//!   protocol), saturated by one sender → [`CLIENTS`] clients; the median of its runs is
//!   the sustainable rate, in messages per second.
//! - Then open loop (messages due on a fixed schedule, no window) at 50 %, 100 % and 150 %
//!   of that rate, against the floor, neffos-rs (default `Config`: the publisher is pushed
//!   back) and neffos-rs with `OverloadPolicy::Shed` on the namespace ([`SHED`]) in turns,
//!   three runs each on fresh servers for every point, once on a quiet machine and once
//!   with a CPU hog: a process spinning on the servers' CPU for [`HOG`] in the middle of the
//!   run.
//! - Memory: the three, each a fresh process, offered 2× and 5× the rate; the server's
//!   resident memory is sampled every 50 ms and the peak above its memory
//!   before the run is reported.
//!
//! Every run reports what was lost, how many clients the server closed (the load
//! generator's `disconnects`; for neffos-rs also the server's own `slow_consumer_closes`
//! and `budget_closes` from `GET /stats`), how often it pushed back on the publisher, and
//! deliveries that broke per-sender order. The report shows the worst run of each point.

use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::peers::{self, Peer};
use super::{Plan, brokers, measure, note};
use crate::loadgen::{self, Report, Scenario, Spec, stats};

/// neffos-rs with `--shed`: broadcasts shed for recipients over their budget.
pub(super) const SHED: &str = "neffos-rs shed";

/// Receivers of every run.
pub(super) const CLIENTS: usize = 1000;
/// How long the hog spins.
const HOG: Duration = Duration::from_secs(3);
/// Offered loads, as fractions of the floor's sustainable rate.
const LOADS: [f64; 3] = [0.5, 1.0, 1.5];
/// Offered loads of the memory runs.
const RSS_LOADS: [f64; 2] = [2.0, 5.0];

/// One run of one point.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OverloadRun {
    /// Deliveries per second offered (messages due × receivers).
    pub offered_deliveries_per_s: f64,
    /// Deliveries per second achieved.
    pub deliveries_per_s: f64,
    /// Messages the sender got out (a server pushing back makes this fall short of due).
    pub sent: u64,
    /// Messages due by the schedule.
    pub due: u64,
    /// Deliveries expected for what was sent, and lost of them.
    pub expected: u64,
    /// Deliveries lost.
    pub lost: u64,
    /// Clients the server closed (or lost) during the run.
    pub disconnects: u64,
    /// Deliveries that broke per-sender order.
    pub out_of_order: u64,
    /// Latency from the intended send time.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Largest.
    pub max_us: f64,
    /// neffos-rs: stuck clients and budget overruns it closed (its own counters).
    pub server_closes: Option<u64>,
    /// neffos-rs: times it paused reading from the publisher.
    pub pushbacks: Option<u64>,
    /// neffos-rs: broadcast frames it shed (`OverloadPolicy::Shed`).
    #[serde(default)]
    pub shed: Option<u64>,
    /// CPU used by other processes meanwhile (the hog included), in cores.
    pub other_cores: Option<f64>,
}

/// Every run of one peer at one load, with or without the hog.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct OverloadPoint {
    /// Peer key.
    pub peer: String,
    /// Offered load, fraction of the floor's sustainable rate.
    pub load: f64,
    /// Whether the CPU hog ran in the middle of the runs.
    pub hog: bool,
    /// The runs.
    pub runs: Vec<OverloadRun>,
}

impl OverloadPoint {
    fn worst(&self, f: impl Fn(&OverloadRun) -> f64) -> f64 {
        self.runs.iter().map(f).fold(0.0, f64::max)
    }
}

/// The memory of one server offered a multiple of the sustainable rate.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RssRow {
    /// Peer key.
    pub peer: String,
    /// Offered load, multiple of the floor's sustainable rate.
    pub load: f64,
    /// Resident memory before the run, KiB.
    pub before_kib: u64,
    /// Highest resident memory seen during the run, KiB.
    pub peak_kib: u64,
    /// The run.
    pub run: OverloadRun,
}

/// The phase's results.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct OverloadResults {
    /// Seconds of sending per run.
    pub duration_s: f64,
    /// Runs per point.
    pub repeats: usize,
    /// Body size, bytes.
    pub size: usize,
    /// The floor's saturating runs, messages per second each.
    pub floor_runs: Vec<f64>,
    /// Their median: 100 %.
    pub floor_rate: f64,
    /// Where the processes ran.
    pub setup: String,
    /// The points.
    pub points: Vec<OverloadPoint>,
    /// Memory under 2× and 5×.
    pub rss: Vec<RssRow>,
    /// What failed.
    pub errors: Vec<String>,
}

/// A process spinning on `cpus` (or anywhere) for [`HOG`], started `after` from now, on a
/// thread of its own; joined by [`Hog::finish`].
struct Hog(std::thread::JoinHandle<()>);

impl Hog {
    fn start(after: Duration, cpus: Option<String>) -> Hog {
        Hog(std::thread::spawn(move || {
            std::thread::sleep(after);
            let script = "while :; do :; done";
            let secs = format!("{}", HOG.as_secs_f64());
            let mut command = match &cpus {
                Some(c) => {
                    let mut command = Command::new("timeout");
                    command.args([secs.as_str(), "taskset", "-c", c, "sh", "-c", script]);
                    command
                }
                None => {
                    let mut command = Command::new("timeout");
                    command.args([secs.as_str(), "sh", "-c", script]);
                    command
                }
            };
            let spawned: std::io::Result<Child> =
                command.stdout(Stdio::null()).stderr(Stdio::null()).spawn();
            match spawned {
                Ok(mut child) => drop(child.wait()),
                Err(e) => eprintln!("   cannot start the CPU hog: {e}"),
            }
        }))
    }

    fn finish(self) {
        let _ = self.0.join();
    }
}

/// Samples `pid`'s resident memory every 50 ms until stopped; returns the peak.
struct RssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: std::thread::JoinHandle<()>,
}

impl RssSampler {
    fn start(pid: u32) -> RssSampler {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(stats::rss_kib(pid).unwrap_or(0)));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                if let Some(kib) = stats::rss_kib(pid) {
                    p.fetch_max(kib, Ordering::Relaxed);
                }
                std::thread::sleep(Duration::from_millis(50));
            }
        });
        RssSampler { stop, peak, thread }
    }

    fn finish(self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        let _ = self.thread.join();
        self.peak.load(Ordering::Relaxed)
    }
}

/// neffos-rs's own counters, from `GET /stats`: (closes, pushbacks, shed frames).
fn server_counters(port: Option<u16>) -> Option<(u64, u64, u64)> {
    let v = brokers::http_json(port?, "/stats").ok()?;
    let server = &v["server"];
    let closes = server["slow_consumer_closes"].as_u64()? + server["budget_closes"].as_u64()?;
    Some((
        closes,
        server["publisher_pushbacks"].as_u64()?,
        server["shed_frames"].as_u64().unwrap_or(0),
    ))
}

/// Whether `peer` is neffos-rs (as is or shedding): it has `GET /stats`.
fn is_ours(peer: &str) -> bool {
    peer == super::report::OURS || peer == SHED
}

fn port_of(addr: &str) -> Option<u16> {
    addr.rsplit_once(':')?.1.parse().ok()
}

fn summary(report: &Report, due: u64) -> OverloadRun {
    OverloadRun {
        offered_deliveries_per_s: report.offered_deliveries_per_s,
        deliveries_per_s: report.deliveries_per_s,
        sent: report.sent,
        due,
        expected: report.expected,
        lost: report.lost,
        disconnects: report.disconnects,
        out_of_order: report.out_of_order,
        p50_us: report.latency.p50_us,
        p99_us: report.latency.p99_us,
        max_us: report.latency.max_us,
        server_closes: None,
        pushbacks: None,
        shed: None,
        other_cores: report.other_cores,
    }
}

/// What the phase needs of a running peer.
struct Target<'a> {
    peer: &'a Peer,
    server: peers::Running,
}

impl Target<'_> {
    fn spec(&self, plan: &Plan, duration: f64, rate: f64) -> Spec {
        let addr = &self.server.addrs[0];
        Spec {
            scenario: Scenario::Fanout,
            urls: vec![self.peer.url(addr)],
            proto: self.peer.proto,
            clients: CLIENTS,
            size: plan.size,
            rate,
            duration,
            warmup: (duration * 0.2).min(1.0),
            server_pid: Some(self.server.pid()),
            label: Some(self.peer.key.to_owned()),
            // A server that fell behind needs time to deliver what it queued.
            drain_quiet: 1.0,
            drain_max: 15.0,
            ..Spec::default()
        }
    }

    /// One open-loop run at `rate` messages per second, the hog in the middle if asked.
    fn open_loop(
        &self,
        plan: &Plan,
        duration: f64,
        rate: f64,
        hog: Option<Option<String>>,
        rss: bool,
    ) -> anyhow::Result<(OverloadRun, Option<(u64, u64)>)> {
        let spec = self.spec(plan, duration, rate);
        let port = is_ours(self.peer.key)
            .then(|| port_of(&self.server.addrs[0]))
            .flatten();
        let before = server_counters(port);
        super::wait_for_quiet();
        let pid = self.server.pid();
        let rss_before = stats::rss_kib(pid).unwrap_or(0);
        let mut hog_thread = None;
        let mut sampler = None;
        let mut on_ready = |_connected: usize| {
            if let Some(cpus) = hog.clone() {
                let middle = Duration::from_secs_f64((duration - HOG.as_secs_f64()).max(0.0) / 2.0);
                hog_thread = Some(Hog::start(middle, cpus));
            }
            if rss {
                sampler = Some(RssSampler::start(pid));
            }
        };
        let report = loadgen::run_observed(&spec, &mut on_ready);
        let peak = sampler.map(RssSampler::finish);
        if let Some(h) = hog_thread {
            h.finish();
        }
        std::thread::sleep(Duration::from_millis(300));
        let report = report?;
        let mut run = summary(&report, (rate * duration).round() as u64);
        if let (Some(a), Some(b)) = (before, server_counters(port)) {
            run.server_closes = Some(b.0.saturating_sub(a.0));
            run.pushbacks = Some(b.1.saturating_sub(a.1));
            run.shed = Some(b.2.saturating_sub(a.2));
        }
        Ok((run, peak.map(|p| (rss_before, p))))
    }
}

/// The phase: the floor's rate, the open-loop points, then memory at 2× and 5×.
pub(super) fn run(list: &[Peer], plan: &Plan, cpus: Option<&str>) -> OverloadResults {
    let duration = if plan.duration < 5.0 { 3.0 } else { 10.0 };
    let repeats = 3;
    let mut out = OverloadResults {
        duration_s: duration,
        repeats,
        size: plan.size,
        setup: match cpus {
            Some(c) => format!(
                "servers on CPU {c}, the load generator on the others; the hog spins on CPU {c}"
            ),
            None => "not pinned; the hog spins wherever the kernel puts it".to_owned(),
        },
        ..OverloadResults::default()
    };
    let find = |key: &str| list.iter().find(|p| p.key == key);
    let (Some(floor), Some(ours)) = (find("raw-axum"), find(super::report::OURS)) else {
        out.errors
            .push("the overload phase needs the raw-axum and neffos-rs peers".into());
        return out;
    };
    let mut shed_args = ours.args.clone();
    shed_args.push("--shed".into());
    let shedding = Peer {
        key: SHED,
        args: shed_args,
        description: format!("{}, `--shed`", ours.description),
        ..ours.clone()
    };
    let mut errors = Vec::new();
    fn started<'p>(
        peer: &'p Peer,
        cpus: Option<&str>,
        errors: &mut Vec<String>,
    ) -> Option<Target<'p>> {
        note(errors, "start", peers::start_peer(peer, cpus)).map(|server| Target { peer, server })
    }
    let Some(floor_t) = started(floor, cpus, &mut errors) else {
        out.errors = errors;
        return out;
    };

    eprintln!("== overload: the floor's sustainable rate ({CLIENTS} clients)");
    for _ in 0..repeats {
        let spec = Spec {
            rate: 0.0,
            ..floor_t.spec(plan, plan.duration.min(duration), 0.0)
        };
        if let Some(r) = note(&mut errors, "floor", measure(&spec))
            && r.connected > 0
        {
            out.floor_runs.push(r.deliveries_per_s / r.connected as f64);
        }
    }
    let mut sorted = out.floor_runs.clone();
    sorted.sort_by(f64::total_cmp);
    let Some(&floor_rate) = sorted.get(sorted.len() / 2) else {
        out.errors = errors;
        return out;
    };
    out.floor_rate = floor_rate;
    drop(floor_t);

    let hog_cpus = cpus.map(str::to_owned);
    for hog in [false, true] {
        for load in LOADS {
            // Fresh servers for every point: no state carried over, and a server's lifetime
            // (`--lifetime-secs`, 600 s by default) never ends in the middle of the phase.
            let (Some(floor_t), Some(ours_t), Some(shed_t)) = (
                started(floor, cpus, &mut errors),
                started(ours, cpus, &mut errors),
                started(&shedding, cpus, &mut errors),
            ) else {
                continue;
            };
            let mut points: Vec<OverloadPoint> = [&floor_t, &ours_t, &shed_t]
                .iter()
                .map(|t| OverloadPoint {
                    peer: t.peer.key.to_owned(),
                    load,
                    hog,
                    runs: Vec::new(),
                })
                .collect();
            for run in 0..repeats {
                for (t, point) in [&floor_t, &ours_t, &shed_t].iter().zip(&mut points) {
                    eprintln!(
                        "-- overload {} at {:.0} %{} (run {})",
                        t.peer.key,
                        load * 100.0,
                        if hog { " with the hog" } else { "" },
                        run + 1
                    );
                    let what = format!("{} at {:.0} %", t.peer.key, load * 100.0);
                    let rate = floor_rate * load;
                    let hog_arg = hog.then(|| hog_cpus.clone());
                    if let Some((r, _)) = note(
                        &mut errors,
                        &what,
                        t.open_loop(plan, duration, rate, hog_arg, false),
                    ) {
                        point.runs.push(r);
                    }
                }
            }
            out.points.extend(points);
        }
    }

    for load in RSS_LOADS {
        for peer in [floor, ours, &shedding] {
            eprintln!("-- overload memory {} at {load}×", peer.key);
            let Some(t) = started(peer, cpus, &mut errors) else {
                continue;
            };
            let what = format!("{} memory at {load}×", peer.key);
            let measured = t.open_loop(plan, duration, floor_rate * load, None, true);
            if let Some((run, Some((before, peak)))) = note(&mut errors, &what, measured) {
                out.rss.push(RssRow {
                    peer: peer.key.to_owned(),
                    load,
                    before_kib: before,
                    peak_kib: peak,
                    run,
                });
            }
        }
    }
    out.errors = errors;
    out
}

fn pct(part: u64, whole: u64) -> f64 {
    if whole == 0 {
        0.0
    } else {
        part as f64 * 100.0 / whole as f64
    }
}

fn ms(us: f64) -> String {
    if us >= 100_000.0 {
        format!("{:.1} s", us / 1e6)
    } else {
        format!("{:.1} ms", us / 1000.0)
    }
}

/// Whether neffos-rs met the bar at this point, against the floor's same point.
fn verdict(ours: &OverloadPoint, floor: Option<&OverloadPoint>) -> &'static str {
    let closed = ours.worst(|r| r.disconnects as f64) > 0.0
        || ours.worst(|r| r.server_closes.unwrap_or(0) as f64) > 0.0;
    let disordered = ours.worst(|r| r.out_of_order as f64) > 0.0;
    if ours.peer == SHED {
        // Shedding may lose deliveries at any load (counted); it must close nobody and
        // keep each sender's order.
        return if closed || disordered {
            "**missed**"
        } else {
            "met"
        };
    }
    if ours.load <= 1.0 {
        let lost = ours.worst(|r| r.lost as f64) > 0.0;
        let p99_ok = floor.is_some_and(|f| {
            let fp = f.worst(|r| r.p99_us);
            fp > 0.0 && ours.worst(|r| r.p99_us) <= 1.5 * fp
        });
        if closed || lost || disordered || !p99_ok {
            "**missed**"
        } else {
            "met"
        }
    } else if closed || disordered {
        "**missed**"
    } else {
        "met"
    }
}

/// The section.
pub(super) fn render(res: &OverloadResults, md: &mut String) -> std::fmt::Result {
    use std::fmt::Write;
    writeln!(
        md,
        "## Overload: open loop around the floor's sustainable rate\n"
    )?;
    writeln!(
        md,
        "One sender → {CLIENTS} clients of the namespace, {} B, open loop (messages due on a fixed schedule, no window), {:.0} s per run, {} runs per point on fresh servers; the peers take turns. 100 % = the raw floor's sustainable rate, the median of its saturating runs: **{:.0} messages/s** ({} deliveries/s; runs: {}). With the hog, a process spins on the servers' CPU for {} s in the middle of each run. Setup: {}. Each cell is the **worst run** of its point.\n",
        res.size,
        res.duration_s,
        res.repeats,
        res.floor_rate,
        super::report::thousands(res.floor_rate * CLIENTS as f64),
        res.floor_runs
            .iter()
            .map(|r| format!("{r:.0}"))
            .collect::<Vec<_>>()
            .join(", "),
        HOG.as_secs(),
        res.setup
    )?;
    writeln!(
        md,
        "| load | hog | peer | sent of due (worst) | lost (worst) | clients closed (worst) | out of order | p99 (worst) | p99 ÷ floor's | publisher pushbacks | shed frames | target |"
    )?;
    writeln!(md, "|---|---|---|---|---|---|---|---|---|---|---|---|")?;
    for point in &res.points {
        let floor = res
            .points
            .iter()
            .find(|p| p.peer == "raw-axum" && p.load == point.load && p.hog == point.hog);
        let sent_share = point
            .runs
            .iter()
            .map(|r| pct(r.sent, r.due))
            .fold(f64::INFINITY, f64::min);
        let lost = point
            .runs
            .iter()
            .map(|r| pct(r.lost, r.expected))
            .fold(0.0, f64::max);
        let closed = point.worst(|r| r.disconnects.max(r.server_closes.unwrap_or(0)) as f64);
        let ratio = floor
            .map(|f| f.worst(|r| r.p99_us))
            .filter(|f| *f > 0.0)
            .map(|f| format!("{:.2}×", point.worst(|r| r.p99_us) / f))
            .unwrap_or_else(|| "–".into());
        let (pushbacks, shed) = if is_ours(&point.peer) {
            (
                format!("{:.0}", point.worst(|r| r.pushbacks.unwrap_or(0) as f64)),
                format!("{:.0}", point.worst(|r| r.shed.unwrap_or(0) as f64)),
            )
        } else {
            ("–".into(), "–".into())
        };
        let target = if is_ours(&point.peer) {
            verdict(point, floor)
        } else {
            "floor"
        };
        writeln!(
            md,
            "| {:.0} % | {} | {} | {:.1} % | {:.3} % | {:.0} | {:.0} | {} | {} | {} | {} | {} |",
            point.load * 100.0,
            if point.hog { "yes" } else { "no" },
            point.peer,
            if sent_share.is_finite() {
                sent_share
            } else {
                0.0
            },
            lost,
            closed,
            point.worst(|r| r.out_of_order as f64),
            ms(point.worst(|r| r.p99_us)),
            ratio,
            pushbacks,
            shed,
            target
        )?;
    }
    writeln!(
        md,
        "\nTarget for neffos-rs: at ≤ 100 % no client closed, 0 lost, order kept and p99 ≤ 1.5× the floor's (worst runs); at 150 % no client closed and order kept. A publisher that the server pushes back on sends late (\"sent of due\" below 100 %): its messages are delayed, not shed, and the delay counts as latency from the intended send time. `{SHED}` is the same server with `OverloadPolicy::Shed` on the namespace (`neffos-bench-server --shed`): nobody is pushed back, a recipient over its outbound budget skips broadcasts (\"shed frames\", counted by the server; they are its losses), and its target is no client closed and order kept at every load.\n"
    )?;
    if !res.rss.is_empty() {
        writeln!(
            md,
            "### Memory under 2× and 5× the sustainable rate\n\nA fresh server per row; resident memory sampled every 50 ms during the run.\n"
        )?;
        writeln!(
            md,
            "| peer | offered | RSS before | peak RSS | growth | sent of due | lost | clients closed |"
        )?;
        writeln!(md, "|---|---|---|---|---|---|---|---|")?;
        for row in &res.rss {
            writeln!(
                md,
                "| {} | {:.0}× | {:.1} MiB | {:.1} MiB | {:.1} MiB | {:.1} % | {:.3} % | {} |",
                row.peer,
                row.load,
                row.before_kib as f64 / 1024.0,
                row.peak_kib as f64 / 1024.0,
                row.peak_kib.saturating_sub(row.before_kib) as f64 / 1024.0,
                pct(row.run.sent, row.run.due),
                pct(row.run.lost, row.run.expected),
                row.run.disconnects.max(row.run.server_closes.unwrap_or(0))
            )?;
        }
        writeln!(md)?;
    }
    for e in &res.errors {
        writeln!(md, "- not measured: {e}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(peer: &str, load: f64, p99: f64, lost: u64, closed: u64) -> OverloadPoint {
        OverloadPoint {
            peer: peer.into(),
            load,
            hog: false,
            runs: vec![OverloadRun {
                p99_us: p99,
                lost,
                disconnects: closed,
                expected: 1000,
                ..OverloadRun::default()
            }],
        }
    }

    #[test]
    fn the_verdict_reads_the_worst_run_against_the_floor() {
        let floor = point("raw-axum", 1.0, 1000.0, 0, 0);
        assert_eq!(
            verdict(&point("neffos-rs", 1.0, 1400.0, 0, 0), Some(&floor)),
            "met"
        );
        assert_eq!(
            verdict(&point("neffos-rs", 1.0, 1600.0, 0, 0), Some(&floor)),
            "**missed**"
        );
        assert_eq!(
            verdict(&point("neffos-rs", 1.0, 100.0, 1, 0), Some(&floor)),
            "**missed**"
        );
        // Above the floor's rate only closing clients (or reordering) misses.
        assert_eq!(
            verdict(&point("neffos-rs", 1.5, 1e7, 0, 0), Some(&floor)),
            "met"
        );
        assert_eq!(
            verdict(&point("neffos-rs", 1.5, 1.0, 0, 3), Some(&floor)),
            "**missed**"
        );
        // Shedding loses (counted) at any load; closing a client still misses.
        assert_eq!(verdict(&point(SHED, 1.0, 1e7, 500, 0), Some(&floor)), "met");
        assert_eq!(
            verdict(&point(SHED, 0.5, 1.0, 0, 1), Some(&floor)),
            "**missed**"
        );
    }
}
