//! The coordinator: runs the workers (in this process, or as child processes speaking a
//! line protocol on their standard input and output), starts them together, measures the
//! server, and merges the results into a [`Report`].
//!
//! Child protocol: the child prints `READY <json>` once connected, reads `GO <t0>` (Unix
//! nanoseconds), runs, prints `RESULT <json>` and exits. It exits as well when its standard
//! input closes (the coordinator died).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};

use super::stamp::now_ns;
use super::stats::{self, Latency};
use super::worker::{self, ReadyInfo, WorkerOut};
use super::{MAX_TRACKED_SEQ, MessageStat, Report, Scenario, Spec};
/// The start instant is this far after the last worker is ready (after `on_ready` of
/// [`run_observed`] returned).
pub const START_DELAY: Duration = Duration::from_millis(200);

fn runtime() -> anyhow::Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}

fn bar(spec: &Spec) -> ProgressBar {
    let bar = ProgressBar::new((spec.duration.max(0.0) * 1000.0) as u64);
    bar.set_style(
        ProgressStyle::with_template("{prefix:>14} [{bar:30}] {msg}")
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
    );
    bar.set_prefix(format!("{} {}", spec.scenario, spec.proto));
    bar
}

/// Ticks `bar` from `t0` for the run's duration, in a thread, until `done`.
fn tick(bar: ProgressBar, spec: &Spec, t0: u64, done: Arc<AtomicU64>) {
    let total = (spec.duration.max(0.0) * 1000.0) as u64;
    std::thread::spawn(move || {
        while done.load(Ordering::Relaxed) == 0 {
            let ms = now_ns().saturating_sub(t0) / 1_000_000;
            bar.set_position(ms.min(total));
            if ms >= total {
                bar.set_message("draining");
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        bar.finish_and_clear();
    });
}

/// What the coordinator measures around the start.
#[derive(Debug, Default)]
struct Probe {
    rss_before: Option<u64>,
    rss_after: Option<u64>,
    server_cpu_start: Option<f64>,
    /// The start instant handed to the workers.
    t0: u64,
    /// Machine-wide busy CPU seconds, this process's CPU seconds and the instant, at the
    /// start.
    busy_start: Option<f64>,
    self_cpu_start: Option<f64>,
    wall_start: Option<std::time::Instant>,
}

/// Once every worker is connected: lets an idle server settle and reads its memory, then
/// picks the start instant.
fn on_all_ready(spec: &Spec, probe: &mut Probe) -> u64 {
    if spec.scenario == Scenario::Idle
        && let Some(pid) = spec.server_pid
    {
        std::thread::sleep(Duration::from_secs_f64(spec.settle.max(0.0)));
        probe.rss_after = stats::rss_kib(pid);
    }
    probe.server_cpu_start = spec
        .server_pid
        .and_then(|pid| stats::cpu_seconds(Some(pid)));
    probe.busy_start = stats::machine_busy_seconds();
    probe.self_cpu_start = stats::cpu_seconds(None);
    probe.wall_start = Some(std::time::Instant::now());
    probe.t0 = now_ns() + START_DELAY.as_nanos() as u64;
    probe.t0
}

/// Runs `spec` and returns the merged report.
pub fn run(spec: &Spec) -> anyhow::Result<Report> {
    run_observed(spec, &mut |_| {})
}

/// Runs `spec` like [`run`], and calls `on_ready` with the number of connected clients
/// once every worker is connected, before anything is sent: the moment to look at the
/// servers with every connection open (their memory, their broker connections).
pub fn run_observed(spec: &Spec, on_ready: &mut dyn FnMut(usize)) -> anyhow::Result<Report> {
    if spec.urls.is_empty() {
        bail!("no --url");
    }
    let mut probe = Probe {
        rss_before: spec.server_pid.and_then(stats::rss_kib),
        ..Probe::default()
    };
    let bar = bar(spec);
    bar.set_message(format!("connecting {} clients", spec.clients));
    let done = Arc::new(AtomicU64::new(0));
    let outs = if spec.workers <= 1 {
        let rt = runtime()?;
        let connected = Arc::new(AtomicU64::new(0));
        let counter = connected.clone();
        let progress = bar.clone();
        let watcher_done = done.clone();
        std::thread::spawn(move || {
            while watcher_done.load(Ordering::Relaxed) == 0 && progress.position() == 0 {
                progress.set_message(format!("connected {}", counter.load(Ordering::Relaxed)));
                std::thread::sleep(Duration::from_millis(200));
            }
        });
        let probe_ref = &mut probe;
        let (bar_ref, done_ref) = (&bar, &done);
        let out = rt.block_on(worker::run(spec, 0, 1, connected, |ready| async move {
            on_ready(ready.connected);
            let t0 = on_all_ready(spec, probe_ref);
            bar_ref.set_message("running");
            tick(bar_ref.clone(), spec, t0, done_ref.clone());
            Ok(t0)
        }));
        done.store(1, Ordering::Relaxed);
        rt.shutdown_timeout(Duration::from_secs(1));
        vec![out?]
    } else {
        let outs = run_children(spec, &mut probe, &bar, &done, on_ready);
        done.store(1, Ordering::Relaxed);
        outs?
    };
    bar.finish_and_clear();
    let server_cpu = match (
        probe.server_cpu_start,
        spec.server_pid
            .and_then(|pid| stats::cpu_seconds(Some(pid))),
    ) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    let mut report = merge(spec, &outs, &probe, server_cpu);
    // CPU used by everything else on the machine meanwhile: a disturbed measurement.
    if let (Some(b0), Some(b1), Some(c0), Some(c1), Some(start)) = (
        probe.busy_start,
        stats::machine_busy_seconds(),
        probe.self_cpu_start,
        stats::cpu_seconds(None),
        probe.wall_start,
    ) {
        let children: f64 = if spec.workers > 1 {
            outs.iter().map(|o| o.cpu_s).sum()
        } else {
            0.0
        };
        let ours = (c1 - c0) + children + server_cpu.unwrap_or(0.0);
        let wall = start.elapsed().as_secs_f64().max(1e-3);
        report.other_cores = Some(((b1 - b0) - ours).max(0.0) / wall);
    }
    Ok(report)
}

/// Kills the child processes when dropped.
struct Children(Vec<Child>);

impl Drop for Children {
    fn drop(&mut self) {
        for child in &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

enum Line {
    Ready(ReadyInfo),
    Result(usize, Box<WorkerOut>),
    Failed(usize, String),
}

fn run_children(
    spec: &Spec,
    probe: &mut Probe,
    bar: &ProgressBar,
    done: &Arc<AtomicU64>,
    on_ready: &mut dyn FnMut(usize),
) -> anyhow::Result<Vec<WorkerOut>> {
    let exe = std::env::current_exe().context("locating neffos-loadgen")?;
    let json = serde_json::to_string(spec)?;
    let (tx, rx) = mpsc::channel::<Line>();
    let mut children = Children(Vec::new());
    let mut stdins: Vec<ChildStdin> = Vec::new();
    for index in 0..spec.workers {
        let mut child = Command::new(&exe)
            .arg("worker")
            .arg("--index")
            .arg(index.to_string())
            .arg("--spec")
            .arg(&json)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting worker {index}"))?;
        let stdout = child.stdout.take().context("worker stdout")?;
        stdins.push(child.stdin.take().context("worker stdin")?);
        children.0.push(child);
        let tx = tx.clone();
        std::thread::spawn(move || {
            let mut reported = false;
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let parsed = if let Some(rest) = line.strip_prefix("READY ") {
                    serde_json::from_str(rest).map(Line::Ready)
                } else if let Some(rest) = line.strip_prefix("RESULT ") {
                    reported = true;
                    serde_json::from_str(rest).map(|r| Line::Result(index, Box::new(r)))
                } else if let Some(rest) = line.strip_prefix("FAILED ") {
                    reported = true;
                    Ok(Line::Failed(index, rest.to_owned()))
                } else {
                    continue;
                };
                let _ = tx.send(parsed.unwrap_or_else(|e| Line::Failed(index, e.to_string())));
            }
            if !reported {
                let _ = tx.send(Line::Failed(index, "exited without a result".into()));
            }
        });
    }
    drop(tx);

    let mut ready = 0;
    let mut connected = 0;
    let connect_deadline = Duration::from_secs_f64(spec.connect_deadline.max(1.0));
    let give_up = Instant::now() + connect_deadline;
    while ready < spec.workers {
        match rx.recv_timeout(give_up.saturating_duration_since(Instant::now())) {
            Ok(Line::Ready(info)) => {
                ready += 1;
                connected += info.connected;
                bar.set_message(format!(
                    "{ready}/{} workers ready, {connected} connected",
                    spec.workers
                ));
            }
            Ok(Line::Failed(i, e)) => bail!("worker {i}: {e}"),
            Ok(Line::Result(i, _)) => bail!("worker {i} reported before starting"),
            Err(_) => bail!("the workers did not connect within {connect_deadline:?}"),
        }
    }
    on_ready(connected);
    let t0 = on_all_ready(spec, probe);
    bar.set_message("running");
    tick(bar.clone(), spec, t0, done.clone());
    for stdin in &mut stdins {
        writeln!(stdin, "GO {t0}").context("starting a worker")?;
        stdin.flush()?;
    }
    let deadline = Duration::from_secs_f64(spec.duration.max(0.0) + spec.drain_max.max(0.0) + 60.0);
    let mut outs: Vec<Option<WorkerOut>> = (0..spec.workers).map(|_| None).collect();
    let mut got = 0;
    while got < spec.workers {
        match rx.recv_timeout(deadline) {
            Ok(Line::Result(i, out)) => {
                outs[i] = Some(*out);
                got += 1;
            }
            Ok(Line::Failed(i, e)) => bail!("worker {i}: {e}"),
            Ok(Line::Ready(_)) => {}
            Err(_) => bail!("the workers did not finish in time"),
        }
    }
    drop(stdins);
    for child in &mut children.0 {
        let _ = child.wait();
    }
    children.0.clear();
    Ok(outs.into_iter().flatten().collect())
}

/// The body of `neffos-loadgen worker`: one worker as a child process.
#[allow(clippy::print_stdout)]
pub fn run_worker(spec: &Spec, index: usize) -> anyhow::Result<()> {
    let rt = runtime()?;
    let workers = spec.workers;
    let result = rt.block_on(worker::run(
        spec,
        index,
        workers,
        Arc::new(AtomicU64::new(0)),
        |info| async move {
            println!("READY {}", serde_json::to_string(&info)?);
            std::io::stdout().flush()?;
            let line = tokio::task::spawn_blocking(|| {
                let mut line = String::new();
                std::io::stdin().read_line(&mut line).map(|_| line)
            })
            .await??;
            let t0: u64 = line
                .trim()
                .strip_prefix("GO ")
                .and_then(|t| t.parse().ok())
                .context("expected GO <t0> from the coordinator")?;
            // The coordinator closing our input means it is gone: stop.
            std::thread::spawn(|| {
                let mut sink = String::new();
                while std::io::stdin().read_line(&mut sink).is_ok_and(|n| n > 0) {}
                std::process::exit(3);
            });
            Ok(t0)
        },
    ));
    match result {
        Ok(out) => println!("RESULT {}", serde_json::to_string(&out)?),
        Err(e) => println!("FAILED {e:#}"),
    }
    std::io::stdout().flush()?;
    rt.shutdown_timeout(Duration::from_millis(200));
    Ok(())
}

fn merge(spec: &Spec, outs: &[WorkerOut], probe: &Probe, server_cpu: Option<f64>) -> Report {
    let mut report = Report {
        spec: spec.clone(),
        ..Report::default()
    };
    let rooms = spec.rooms.max(1);
    let mut receivers = vec![0u64; rooms];
    let mut sent = vec![0u64; rooms];
    let mut hist = stats::new_histogram();
    let mut server_ask = stats::new_histogram();
    let mut last_recv = 0;
    let mut cpu = 0.0;
    let mut sent_per_sender: Vec<u64> = Vec::new();
    for out in outs {
        if sent_per_sender.len() < out.sent_per_sender.len() {
            sent_per_sender.resize(out.sent_per_sender.len(), 0);
        }
        for (acc, n) in sent_per_sender.iter_mut().zip(&out.sent_per_sender) {
            *acc += n;
        }
        report.connected += out.connected;
        report.connect_failed += out.connect_failed;
        report.connect_s = report.connect_s.max(out.connect_s);
        for (acc, n) in receivers.iter_mut().zip(&out.receivers_per_room) {
            *acc += n;
        }
        for (acc, n) in sent.iter_mut().zip(&out.sent_per_room) {
            *acc += n;
        }
        report.received += out.received;
        report.disconnects += out.disconnects;
        report.out_of_order += out.out_of_order;
        report.responders_connected += out.responders_connected;
        report.answered += out.answered;
        report.error_replies += out.error_replies;
        report.stalls += out.stalls;
        report.cycles += out.cycles;
        report.cycle_failures += out.cycle_failures;
        stats::add_pairs(&mut hist, &out.hist);
        stats::add_pairs(&mut server_ask, &out.server_ask_hist);
        last_recv = last_recv.max(out.last_recv_ns);
        cpu += out.cpu_s;
        for e in &out.errors {
            if report.errors.len() < 10 {
                report.errors.push(e.clone());
            }
        }
    }
    report.sent = sent.iter().sum();
    report.latency = Latency::of(&hist);
    if !server_ask.is_empty() {
        report.server_ask_latency = Some(Latency::of(&server_ask));
    }
    report.elapsed_s = if report.received > 0 && last_recv > probe.t0 {
        (last_recv - probe.t0) as f64 / 1e9
    } else {
        spec.duration
    };
    report.loadgen_cores = cpu / spec.duration.max(1e-3);
    report.server_cpu_s = server_cpu;
    match spec.scenario {
        Scenario::Fanout | Scenario::ClusterFanout => {
            report.expected = sent.iter().zip(&receivers).map(|(s, r)| s * r).sum();
            let recipients = receivers.iter().sum::<u64>() as f64 / rooms as f64;
            if spec.rate > 0.0 {
                report.offered_per_s = spec.rate;
                report.offered_deliveries_per_s = spec.rate * recipients;
            }
        }
        Scenario::Ask | Scenario::ClusterAsk => {
            report.expected = report.sent;
            report.offered_per_s = spec.rate;
            report.offered_deliveries_per_s = spec.rate;
        }
        Scenario::Idle | Scenario::Churn => {}
    }
    report.lost = report.expected.saturating_sub(report.received);
    if spec.per_message {
        report.per_message = per_message(spec, outs, &sent_per_sender, &receivers);
    }
    if report.received > 0 {
        report.deliveries_per_s = report.received as f64 / report.elapsed_s;
        report.server_cpu_us_per_delivery = server_cpu.map(|c| c * 1e6 / report.received as f64);
    }
    if spec.scenario == Scenario::Churn {
        report.cycles_per_s = report.cycles as f64 / spec.duration.max(1e-3);
        report.server_cpu_us_per_delivery =
            server_cpu.map(|c| c * 1e6 / report.cycles.max(1) as f64);
    }
    if spec.scenario == Scenario::Idle {
        report.rss_before_kib = probe.rss_before;
        report.rss_after_kib = probe.rss_after;
        if let (Some(before), Some(after)) = (probe.rss_before, probe.rss_after)
            && report.connected > 0
        {
            report.kib_per_conn = Some((after as f64 - before as f64) / report.connected as f64);
        }
    }
    report
}

/// Every message of every sender (up to [`MAX_TRACKED_SEQ`] each): the workers'
/// deliveries of it summed, its latencies merged, the largest one as the time it took to
/// reach its last receiver.
fn per_message(
    spec: &Spec,
    outs: &[WorkerOut],
    sent_per_sender: &[u64],
    receivers: &[u64],
) -> Vec<MessageStat> {
    let mut all = Vec::new();
    for (sender, &sent) in sent_per_sender.iter().enumerate() {
        let sender = (sender % 1000) as u32;
        for seq in 0..sent.min(MAX_TRACKED_SEQ) {
            let mut hist = stats::new_message_histogram();
            let (mut received, mut max_ns) = (0, 0);
            for m in outs
                .iter()
                .flat_map(|o| &o.per_message)
                .filter(|m| m.sender == sender && m.seq == seq)
            {
                received += m.received;
                max_ns = max_ns.max(m.max_ns);
                stats::add_pairs(&mut hist, &m.hist);
            }
            let room = if spec.rooms == 0 {
                0
            } else {
                (seq % spec.rooms as u64) as usize
            };
            let expected = receivers.get(room).copied().unwrap_or(0);
            let mut latency = Latency::of(&hist);
            if received > 0 {
                // The histogram's buckets round up (2 significant digits): the exact largest
                // value bounds them.
                let max_us = max_ns as f64 / 1000.0;
                latency.max_us = max_us;
                for p in [
                    &mut latency.p50_us,
                    &mut latency.p90_us,
                    &mut latency.p99_us,
                    &mut latency.p999_us,
                    &mut latency.mean_us,
                ] {
                    *p = p.min(max_us);
                }
            }
            let lost = expected.saturating_sub(received);
            all.push(MessageStat {
                sender,
                seq,
                expected,
                received,
                lost,
                latency,
                reach_all_us: (lost == 0 && received > 0).then_some(max_ns as f64 / 1000.0),
            });
        }
    }
    all
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;
    use crate::loadgen::worker::MessageOut;

    fn delivered(seq: u64, received: u64, max_ns: u64) -> MessageOut {
        let mut hist = stats::new_message_histogram();
        hist.record_n(max_ns / 2, received - 1).unwrap();
        hist.record(max_ns).unwrap();
        MessageOut {
            sender: 0,
            seq,
            received,
            max_ns,
            hist: stats::to_pairs(&hist),
        }
    }

    #[test]
    fn messages_are_followed_across_workers() {
        let spec = Spec {
            per_message: true,
            ..Spec::default()
        };
        // Two workers of 5 receivers each; three messages sent by worker 0's sender.
        let a = WorkerOut {
            sent_per_sender: vec![3],
            per_message: vec![delivered(0, 5, 2_000_000), delivered(1, 5, 1_000_000)],
            ..WorkerOut::default()
        };
        let b = WorkerOut {
            per_message: vec![delivered(0, 5, 3_000_000), delivered(1, 2, 9_000_000)],
            ..WorkerOut::default()
        };
        let stats = per_message(&spec, &[a, b], &[3], &[10]);
        assert_eq!(stats.len(), 3);
        assert_eq!((stats[0].received, stats[0].lost), (10, 0));
        assert_eq!(stats[0].reach_all_us, Some(3000.0));
        assert!(stats[0].latency.p99_us <= 3000.0);
        assert_eq!((stats[1].received, stats[1].lost), (7, 3));
        assert_eq!(stats[1].reach_all_us, None);
        // Never delivered at all: still listed, all lost.
        assert_eq!((stats[2].received, stats[2].lost), (0, 10));
        assert_eq!(stats[2].reach_all_us, None);
    }
}
