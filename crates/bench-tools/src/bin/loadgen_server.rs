//! `neffos-bench-server`: the neffos-rs server of the benchmark (and the raw axum WebSocket
//! floor with `--mode raw`). See `neffos_bench_tools::server` for the behaviour.
//!
//! ```sh
//! cargo run --release -p neffos-bench-tools --bin neffos-bench-server -- --addr 127.0.0.1:9000
//! ```

use clap::Parser;
use neffos_bench_tools::server::{self, ServerArgs};

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    server::run(ServerArgs::parse()).await
}
