//! Project automation, run as `cargo xtask <command>` (alias in `.cargo/config.toml`).
//!
//! - `test`: every test of the workspace, interop peers and brokers included.
//! - `lint`: formatting, clippy with `-D warnings`, cargo-deny, the library crates'
//!   dependency graphs (no test-only crate in a normal graph), their docs (`cargo doc` with
//!   `-D warnings`) and their packaging (`cargo package --no-verify`).
//! - `demo`: the chat demo in the browser (no broker needed).
//! - `fuzz`: the protocol fuzz targets for a bounded time.
//! - `bench`: the side-by-side benchmark (writes BENCHMARKS.md and docs/bench/).
#![allow(clippy::print_stdout, clippy::print_stderr)]

mod bench;
mod demo;
mod deps;
mod integration;
mod tools;

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(about = "neffos-rs project automation")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every test: unit, property, interop (neffos.js, Go neffos, Chromium) and broker tests.
    Test {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Run the tests that need a broker (Redis, NATS) against locally started brokers.
    Integration {
        /// Extra arguments passed to `cargo test` (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Check formatting, clippy (-D warnings), cargo-deny, and the library crates' dependency
    /// graphs, docs (-D warnings) and packaging.
    Lint,
    /// Run the chat example for the browser (installs neffos.js into target/npm-demo).
    Demo {
        /// Port of the chat page.
        #[arg(long, default_value_t = 8080)]
        port: u16,
        /// Extra arguments passed to the chat example (after `--`).
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Soak test: churn across two instances joined through Redis, sampling RSS, tasks and
    /// Redis channels (needs `redis-server`).
    Soak {
        /// Minutes to run.
        #[arg(long, default_value_t = 10.0)]
        minutes: f64,
    },
    /// Build the benchmark peers (Go neffos, socketioxide, raw WebSocket servers), run every
    /// scenario side by side, write BENCHMARKS.md and the plots under docs/bench/.
    Bench {
        /// Short runs: the whole suite in under five minutes.
        #[arg(long)]
        quick: bool,
        /// Also run the scale-out demonstration (100,000 clients over 6 instances through
        /// Redis and NATS); the full run does it anyway, `--quick` only with this flag.
        #[arg(long)]
        scale_out: bool,
        /// Also run neffos-rs as built at this git revision (e.g. `HEAD~3`), side by side
        /// with the working tree, for before/after ratios from the same run.
        #[arg(long)]
        before: Option<String>,
        /// Passed on to `neffos-loadgen suite` after `--`, e.g. `cargo xtask bench --
        /// --only-recovery` for one phase (its results under target/bench/).
        #[arg(last = true)]
        suite_args: Vec<String>,
    },
    /// Run the protocol fuzz targets, each for a bounded time.
    Fuzz {
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
}

fn main() -> Result<()> {
    let cli = Cli::parse();
    let root = workspace_root();
    match cli.command {
        Command::Test { args } => tools::test(&root, &args),
        Command::Integration { args } => integration::integration(&root, &args),
        Command::Lint => tools::lint(&root),
        Command::Demo { port, args } => demo::demo(&root, port, &args),
        Command::Fuzz { seconds } => tools::fuzz(&root, seconds),
        Command::Bench {
            quick,
            scale_out,
            before,
            suite_args,
        } => bench::bench(&root, quick, scale_out, before.as_deref(), &suite_args),
        Command::Soak { minutes } => tools::run(
            &root,
            "cargo",
            &[
                "run",
                "--release",
                "-p",
                "neffos-examples",
                "--features",
                "redis",
                "--bin",
                "soak",
                "--",
                "--minutes",
                &minutes.to_string(),
            ],
        ),
    }
}

fn workspace_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}
