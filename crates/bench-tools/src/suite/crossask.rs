#![allow(clippy::print_stderr)]
//! Asks across instances (part of the cross-instance phase): neffos-rs as 2 processes
//! joined through Redis, then NATS (one broker started by the suite for each), driven by
//! `neffos-loadgen cluster-ask`.
//!
//! Three kinds of runs over the same two processes, at the same rate:
//!
//! 1. **local Ask**: the `ask` scenario against the first instance (answered by the server
//!    itself): the baseline of the ratio.
//! 2. **relayed, same instance**: `cluster-ask` with askers and responders on the first
//!    instance: the server relays each Ask (`ask-peer`) to a responder connection found
//!    locally, without the exchange.
//! 3. **across instances**: `cluster-ask` with the askers on the first instance and the
//!    responders on the second: `Server::ask` finds the responder through the exchange
//!    (an Ask envelope to the connection's topic, the reply envelope back).
//!
//! The local and cross runs are repeated (`Plan::repeats` rounds, taking turns with each
//! other, the relayed run once in the first round) and the run of median p50 is reported,
//! every run's p50 listed: a single quick run moves by ±20 % on this shared machine.
//! Latency is the reply time minus the intended send time of the open-loop schedule, as for
//! the local Ask (client-observed: it includes the asker's own WebSocket round trip to
//! instance 1). The `cluster-ask` runs also report the server-side latency: how long
//! instance 1's `Server::ask` call took, measured by the bench server and carried back in
//! each reply (`Report::server_ask_latency`); the NATS target is judged on its p50 (median
//! over the runs). *Server CPU per Ask* adds both instances' CPU time.

use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::report::{OURS, TargetRow, thousands, time_us};
use super::{ClusterOnly, Plan, brokers, peers};
use crate::loadgen::{self, Report, Scenario, Spec, stats};

/// Asks per second of every run (in total, round-robin over the askers).
pub(super) const RATE: f64 = 2000.0;
/// Asking connections (on the first instance).
pub(super) const ASKERS: usize = 100;
/// Responding connections (on the second instance, or the first for the relayed run).
pub(super) const RESPONDERS: usize = 100;
/// The target: p50 of `Server::ask` across instances via NATS (server-side, as the bench
/// server measures the call), microseconds.
pub(super) const TARGET_P50_US: f64 = 300.0;

/// One run of this phase, and both instances' CPU time during it.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AskRun {
    /// What the load generator measured (its `server_cpu_s` is the first instance's).
    pub report: Report,
    /// The second instance's CPU seconds during the run.
    pub second_cpu_s: Option<f64>,
}

impl AskRun {
    /// Both instances' CPU microseconds per reply.
    pub fn cpu_us_per_ask(&self) -> Option<f64> {
        let first = self.report.server_cpu_s?;
        let replies = self.report.received;
        (replies > 0).then(|| (first + self.second_cpu_s.unwrap_or(0.0)) * 1e6 / replies as f64)
    }
}

/// Asks across instances over one exchange.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CrossAskResults {
    /// `redis` or `nats`.
    pub exchange: String,
    /// How the instances run.
    pub setup: String,
    /// `measured`, or why not.
    pub status: String,
    /// Asks per second offered.
    pub rate: f64,
    /// Asking connections.
    pub askers: usize,
    /// Responding connections.
    pub responders: usize,
    /// The `ask` scenario on the first instance, every round.
    #[serde(default)]
    pub local: Vec<AskRun>,
    /// `cluster-ask`, responders on the first instance (relayed without the exchange).
    pub same_instance: Option<AskRun>,
    /// `cluster-ask`, responders on the second instance (through the exchange), every
    /// round.
    #[serde(default)]
    pub cross: Vec<AskRun>,
}

/// The run of median p50.
fn median(runs: &[AskRun]) -> Option<&AskRun> {
    let mut sorted: Vec<&AskRun> = runs.iter().collect();
    sorted.sort_by(|a, b| a.report.latency.p50_us.total_cmp(&b.report.latency.p50_us));
    sorted.get(sorted.len() / 2).copied()
}

/// The p50 of the server-side `Server::ask` duration of a run.
fn server_p50(run: &AskRun) -> Option<f64> {
    run.report.server_ask_latency.map(|l| l.p50_us)
}

/// The run of median server-side `Server::ask` p50 among those that carry one.
fn server_median(runs: &[AskRun]) -> Option<&AskRun> {
    let mut sorted: Vec<(&AskRun, f64)> = runs
        .iter()
        .filter_map(|r| server_p50(r).map(|p| (r, p)))
        .collect();
    sorted.sort_by(|a, b| a.1.total_cmp(&b.1));
    sorted.get(sorted.len() / 2).map(|(r, _)| *r)
}

/// Every run's server-side `Server::ask` p50, in order (`–` for a run without one).
fn server_p50s(runs: &[AskRun]) -> String {
    let list: Vec<String> = runs
        .iter()
        .map(|r| server_p50(r).map_or("–".into(), |p| format!("{p:.0}")))
        .collect();
    format!("{} µs", list.join(" / "))
}

/// Every run's p50, in order: `412 / 388 / 401 µs`.
fn p50s(runs: &[AskRun]) -> String {
    let list: Vec<String> = runs
        .iter()
        .map(|r| format!("{:.0}", r.report.latency.p50_us))
        .collect();
    format!("{} µs", list.join(" / "))
}

impl CrossAskResults {
    /// The local Ask run of median p50.
    pub fn local_median(&self) -> Option<&AskRun> {
        median(&self.local)
    }

    /// The cross-instance run of median p50.
    pub fn cross_median(&self) -> Option<&AskRun> {
        median(&self.cross)
    }

    /// The cross-instance run of median server-side `Server::ask` p50.
    pub fn cross_server_median(&self) -> Option<&AskRun> {
        server_median(&self.cross)
    }
}

/// Runs `spec`, reading `second`'s CPU time from the moment every connection is open.
fn measure(spec: &Spec, second: u32) -> anyhow::Result<AskRun> {
    super::wait_for_quiet();
    let mut start = None;
    let report = loadgen::run_observed(spec, &mut |_| {
        start = stats::cpu_seconds(Some(second));
    });
    let second_cpu_s = match (start, stats::cpu_seconds(Some(second))) {
        (Some(a), Some(b)) => Some(b - a),
        _ => None,
    };
    std::thread::sleep(Duration::from_millis(300));
    Ok(AskRun {
        report: report?,
        second_cpu_s,
    })
}

fn one_exchange(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    kind: brokers::Kind,
    result: &mut CrossAskResults,
) -> anyhow::Result<()> {
    // Killed when this function returns.
    let broker = brokers::Broker::start(kind)?;
    let url_flag = match kind {
        brokers::Kind::Redis => "--redis-url",
        brokers::Kind::Nats => "--nats-url",
    };
    let args: Vec<String> = vec![
        "--exchange".into(),
        kind.name().into(),
        url_flag.into(),
        broker.url(),
        "--addr".into(),
        "127.0.0.1:0".into(),
    ];
    let start = || {
        peers::start(&programs.bench_server, &args, cpus, 1).map_err(|e| {
            e.context(format!(
                "starting neffos-bench-server --exchange {} (built with `--features redis,nats`?)",
                kind.name()
            ))
        })
    };
    // Both processes are killed when this function returns.
    let (a, b) = (start()?, start()?);
    let (url_a, url_b) = (
        format!("ws://{}/echo", a.addrs[0]),
        format!("ws://{}/echo", b.addrs[0]),
    );
    let base = Spec {
        clients: ASKERS,
        responders: RESPONDERS,
        rate: RATE,
        size: plan.size,
        duration: plan.duration,
        warmup: (plan.duration * 0.2).min(1.0),
        server_pid: Some(a.pid()),
        ..Spec::default()
    };
    let name = kind.name();
    for round in 0..plan.repeats.max(1) {
        eprintln!("-- neffos-rs ask over {name}: local");
        result.local.push(measure(
            &Spec {
                scenario: Scenario::Ask,
                urls: vec![url_a.clone()],
                label: Some(format!("ask local ({name})")),
                ..base.clone()
            },
            b.pid(),
        )?);
        if round == 0 {
            eprintln!("-- neffos-rs ask over {name}: relayed on the same instance");
            result.same_instance = Some(measure(
                &Spec {
                    scenario: Scenario::ClusterAsk,
                    urls: vec![url_a.clone()],
                    label: Some(format!("ask relayed, same instance ({name})")),
                    ..base.clone()
                },
                b.pid(),
            )?);
        }
        eprintln!("-- neffos-rs ask over {name}: across instances");
        result.cross.push(measure(
            &Spec {
                scenario: Scenario::ClusterAsk,
                urls: vec![url_a.clone(), url_b.clone()],
                label: Some(format!("ask across instances ({name})")),
                ..base.clone()
            },
            b.pid(),
        )?);
    }
    result.status = "measured".into();
    Ok(())
}

/// The Asks across instances over Redis, then NATS (those `only` wants for neffos-rs).
pub(super) fn run(
    programs: &peers::Programs,
    plan: &Plan,
    cpus: Option<&str>,
    only: &ClusterOnly<'_>,
) -> Vec<CrossAskResults> {
    let mut out = Vec::new();
    for kind in [brokers::Kind::Redis, brokers::Kind::Nats] {
        if !only.wants(OURS, kind.name()) {
            continue;
        }
        eprintln!("== neffos-rs Asks across instances: {}", kind.name());
        let broker_name = match kind {
            brokers::Kind::Redis => "redis-server",
            brokers::Kind::Nats => "nats-server",
        };
        let mut result = CrossAskResults {
            exchange: kind.name().into(),
            setup: match cpus {
                Some(c) => format!(
                    "2 `neffos-bench-server` processes on CPU {c}, one local `{broker_name}` on the load generator's CPU"
                ),
                None => format!("2 processes, one local `{broker_name}` (not pinned)"),
            },
            status: "failed".into(),
            rate: RATE,
            askers: ASKERS,
            responders: RESPONDERS,
            local: Vec::new(),
            same_instance: None,
            cross: Vec::new(),
        };
        if let Err(e) = one_exchange(programs, plan, cpus, kind, &mut result) {
            eprintln!("  ask over {}: {e:#}", kind.name());
            result.status = format!("failed: {e:#}");
        }
        out.push(result);
    }
    out
}

/// The NATS target line (present even when not measured).
pub(super) fn targets(results: &[CrossAskResults]) -> Vec<TargetRow> {
    let nats = results.iter().find(|r| r.exchange == "nats");
    let what = format!(
        "Ask across instances via NATS (2 processes, {ASKERS} askers on instance 1 → \
         {RESPONDERS} responders on instance 2, {} Asks/s)",
        thousands(RATE)
    );
    let required = format!("server-side `Server::ask` p50 ≤ {}", time_us(TARGET_P50_US));
    let Some(res) = nats else {
        return vec![TargetRow {
            what,
            measured: "not run (the cross-instance phase, NATS)".into(),
            required,
            met: None,
        }];
    };
    let Some(cross) = res.cross_median() else {
        return vec![TargetRow {
            what,
            measured: res.status.clone(),
            required,
            met: None,
        }];
    };
    let r = &cross.report;
    let lost: u64 = res.cross.iter().map(|c| c.report.lost).sum();
    let local = res.local_median().map(|l| l.report.latency.p50_us);
    let runs = res.cross.len();
    let client = format!(
        "client-observed round trip (asker → instance 1 → instance 2 → back, including the \
         asker's own WebSocket hop): p50 {}{}, p99 {}",
        time_us(r.latency.p50_us),
        if runs > 1 {
            format!(" (median of {runs} runs: {})", p50s(&res.cross))
        } else {
            String::new()
        },
        time_us(r.latency.p99_us),
    );
    let versus_local = match local {
        Some(l) if l > 0.0 => format!(
            "; client-observed p50 {:.2}× the p50 of a local Ask on the same processes ({}, \
             median)",
            r.latency.p50_us / l,
            time_us(l)
        ),
        _ => String::new(),
    };
    let lost_text = format!("{} lost", thousands(lost as f64));
    let Some(server) = res
        .cross_server_median()
        .and_then(|run| run.report.server_ask_latency)
    else {
        return vec![TargetRow {
            what,
            measured: format!(
                "server-side `Server::ask` not measured (no durations in the replies); \
                 {client}; {lost_text}{versus_local}"
            ),
            required,
            met: None,
        }];
    };
    let measured = format!(
        "server-side `Server::ask` (judged): p50 **{}**{}, p99 {}; {client}; \
         {lost_text}{versus_local}",
        time_us(server.p50_us),
        if runs > 1 {
            format!(" (median of {runs} runs: {})", server_p50s(&res.cross))
        } else {
            String::new()
        },
        time_us(server.p99_us),
    );
    vec![TargetRow {
        what,
        measured,
        required,
        met: Some(
            server.p50_us <= TARGET_P50_US
                && lost == 0
                && res.cross.iter().all(|c| c.report.received > 0),
        ),
    }]
}

/// The sub-section of the Ask section: every run of every exchange.
pub(super) fn render(
    results: &[CrossAskResults],
    local_peer_p50_us: Option<f64>,
    md: &mut String,
) -> std::fmt::Result {
    use std::fmt::Write as _;
    if results.is_empty() {
        return Ok(());
    }
    let size = results
        .iter()
        .flat_map(|r| r.local.iter().chain(&r.same_instance).chain(&r.cross))
        .map(|run| run.report.spec.size)
        .next()
        .unwrap_or(64);
    writeln!(md, "\n### Asks across instances (neffos-rs)\n")?;
    writeln!(
        md,
        "neffos-rs as 2 processes joined through the exchange, one broker started by the \
         suite; {ASKERS} asking connections on instance 1, {} Asks/s in total (open loop, \
         round-robin), {size} B bodies. *Across instances*: {RESPONDERS} responder connections \
         on instance 2; each Ask is event `ask-peer` whose body names a responder's \
         connection ID; instance 1's handler calls `Server::ask(\"bench\", id, …)`, which \
         finds the connection through the exchange (an Ask envelope to the connection's \
         topic, the reply envelope back); the responder echoes the server's Ask with the \
         same wait token, and the handler replies with that body. *Relayed, same instance*: \
         the same with the responders on instance 1 (no exchange hop). *Local Ask*: event \
         `ask` answered by instance 1 itself, as in the table above. *Server CPU/Ask* adds \
         both processes' CPU time. The local and cross-instance runs are repeated, taking \
         turns, and the run of median p50 is shown (*runs: p50* lists every run; *lost* \
         adds them up); *p50 ÷ local* divides by the median local Ask's p50 of the same \
         processes. Those columns are client-observed: from the intended send time to the \
         asker's reply, including the asker's own WebSocket round trip to instance 1. \
         *`Server::ask`* columns are server-side: how long instance 1's `Server::ask` call \
         took (measured by the handler, carried back in the reply's padding), for the \
         `ask-peer` runs; *runs* lists every run's p50, and p50/p99 are those of the run of \
         median server-side p50 (the NATS target is judged on that p50).\n",
        thousands(RATE)
    )?;
    writeln!(
        md,
        "| exchange | path | runs: p50 | replies/s | p50 | p90 | p99 | p99.9 | lost | server CPU/Ask | p50 ÷ local | `Server::ask` runs: p50 | `Server::ask` p50 | `Server::ask` p99 |"
    )?;
    writeln!(
        md,
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"
    )?;
    for res in results {
        let local = res
            .local_median()
            .map(|l| l.report.latency.p50_us)
            .filter(|v| *v > 0.0);
        let paths: [(&str, &[AskRun]); 3] = [
            ("local Ask", &res.local),
            ("relayed, same instance", res.same_instance.as_slice()),
            ("**across instances**", &res.cross),
        ];
        if paths.iter().all(|(_, runs)| runs.is_empty()) {
            writeln!(
                md,
                "| {} | – | – | – | – | – | – | – | – | – | – ({}) | – | – | – |",
                res.exchange, res.status
            )?;
            continue;
        }
        for (path, runs) in paths {
            let Some(run) = median(runs) else {
                writeln!(
                    md,
                    "| {} | {path} | – | – | – | – | – | – | – | – | – | – | – | – |",
                    res.exchange
                )?;
                continue;
            };
            let r = &run.report;
            let server = server_median(runs).and_then(|s| s.report.server_ask_latency);
            writeln!(
                md,
                "| {} | {path} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} | {} |",
                res.exchange,
                p50s(runs),
                thousands(r.deliveries_per_s),
                time_us(r.latency.p50_us),
                time_us(r.latency.p90_us),
                time_us(r.latency.p99_us),
                time_us(r.latency.p999_us),
                runs.iter().map(|run| run.report.lost).sum::<u64>(),
                run.cpu_us_per_ask()
                    .map_or("–".into(), |c| format!("{c:.1} µs")),
                match local {
                    Some(l) => format!("{:.2}×", r.latency.p50_us / l),
                    None => "–".into(),
                },
                if server.is_some() {
                    server_p50s(runs)
                } else {
                    "–".into()
                },
                server.map_or("–".into(), |l| time_us(l.p50_us)),
                server.map_or("–".into(), |l| time_us(l.p99_us)),
            )?;
        }
    }
    if let Some(p50) = local_peer_p50_us {
        writeln!(
            md,
            "\nFor comparison, neffos-rs's local Ask in the table above (one process without \
             an exchange, its own rate): p50 {}.",
            time_us(p50)
        )?;
    }
    Ok(())
}
