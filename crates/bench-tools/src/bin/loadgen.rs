//! `neffos-loadgen`: the load generator of neffos-rs, and the side-by-side suite behind
//! `cargo xtask bench`.
//!
//! ```sh
//! # one scenario against a running server; JSON on stdout (and in --out)
//! neffos-loadgen fanout --url ws://127.0.0.1:9000/echo --clients 1000 --rate 2000 --duration 5
//! neffos-loadgen fanout --url ws://127.0.0.1:9000/echo --rate 0          # saturate
//! neffos-loadgen cluster-fanout --url ws://127.0.0.1:9000/echo --url ws://127.0.0.1:9001/echo
//! neffos-loadgen ask --url ws://127.0.0.1:9000/echo --clients 100 --rate 5000
//! # Asks relayed by instance 9000 to responders on instance 9001 (through the exchange)
//! neffos-loadgen cluster-ask --url ws://127.0.0.1:9000/echo --url ws://127.0.0.1:9001/echo --rate 2000
//! neffos-loadgen idle --url ws://127.0.0.1:9000/echo --clients 15000 --workers 2 --server-pid 1234
//! neffos-loadgen churn --url ws://127.0.0.1:9000/echo --concurrency 16 --duration 5
//! neffos-loadgen fanout --proto socketio --url 'ws://127.0.0.1:9002/socket.io/?EIO=4&transport=websocket'
//! # everything, side by side (what `cargo xtask bench` runs after building the peers)
//! neffos-loadgen suite --quick --root . --peers target/peers
//! # only the scale-out demonstration: 100,000 clients over 6 instances, Redis then NATS
//! neffos-loadgen suite --only-scale-out
//! ```
//!
//! See `neffos_bench_tools::loadgen` for what is measured and how.
#![allow(clippy::print_stdout)]

use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use neffos_bench_tools::loadgen::{self, Scenario, Spec};
use neffos_bench_tools::suite::{self, ReportArgs, SuiteArgs};

#[derive(Parser)]
#[command(about = "neffos-rs load generator and side-by-side benchmark suite")]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Also write the JSON result to this file.
    #[arg(long, global = true)]
    out: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Senders → every client of a namespace or room.
    Fanout(Spec),
    /// Fan-out with the clients spread over several instances (repeat --url).
    ClusterFanout(Spec),
    /// Ask round trips at a fixed rate.
    Ask(Spec),
    /// Asks relayed by the first instance (`ask-peer`) to responders on the last --url.
    ClusterAsk(Spec),
    /// Idle connections; with --server-pid, the server's KiB per connection.
    Idle(Spec),
    /// Connects and disconnects per second.
    Churn(Spec),
    /// One worker process of a run (started by the coordinator).
    #[command(hide = true)]
    Worker {
        #[arg(long)]
        index: usize,
        #[arg(long)]
        spec: String,
    },
    /// Builds nothing; starts every peer, runs every scenario side by side, writes
    /// BENCHMARKS.md and the plots.
    Suite(SuiteArgs),
    /// Writes BENCHMARKS.md and the plots again from a suite's results.json.
    Report(ReportArgs),
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let (scenario, mut spec) = match cli.command {
        Command::Fanout(spec) => (Scenario::Fanout, spec),
        Command::ClusterFanout(spec) => (Scenario::ClusterFanout, spec),
        Command::Ask(spec) => (Scenario::Ask, spec),
        Command::ClusterAsk(spec) => (Scenario::ClusterAsk, spec),
        Command::Idle(spec) => (Scenario::Idle, spec),
        Command::Churn(spec) => (Scenario::Churn, spec),
        Command::Worker { index, spec } => {
            let spec: Spec = serde_json::from_str(&spec).context("parsing --spec")?;
            return loadgen::run_worker(&spec, index);
        }
        Command::Suite(args) => return suite::run(&args),
        Command::Report(args) => return suite::report_again(&args),
    };
    spec.scenario = scenario;
    let report = loadgen::run(&spec)?;
    let json = serde_json::to_string_pretty(&report)?;
    if let Some(path) = cli.out {
        std::fs::write(&path, &json).with_context(|| format!("writing {}", path.display()))?;
    }
    println!("{json}");
    Ok(())
}
