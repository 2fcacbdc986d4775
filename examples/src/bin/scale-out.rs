//! Scale-out: several neffos-rs instances serve the same chat; a message sent to one
//! instance reaches the clients of the others through the exchange.
//!
//! ```sh
//! npm install --prefix target/npm-demo neffos.js@0.1.34   # once (or `cargo xtask demo`)
//! cargo run -p neffos-examples --bin scale-out -- --ports 8080,8081,8082
//! ```
//!
//! Open <http://127.0.0.1:8080> in one tab and <http://127.0.0.1:8081> in another, join
//! the same room on both and talk: each page is served by a different instance (see the
//! label at the top right). Here every instance lives in this process and they share a
//! `MemoryExchange` (`--exchange memory`, the default); the Redis and NATS backends
//! (`--exchange redis|nats`, cargo features `redis`/`nats`) join instances in different
//! processes the same way. Options: `--ports` (env `PORTS`), `--host`, `--neffos-js`
//! (env `NEFFOS_JS`), `--label` (the instance name shown in the page, env `INSTANCE_LABEL`),
//! `--metrics 127.0.0.1:9100` (Prometheus, env `METRICS_ADDR`).
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use anyhow::{Context, bail};
use clap::Parser;
use neffos_examples::chat::{self, ChatOptions};
use neffos_examples::exchange::ExchangeArgs;
use neffos_examples::{log, serve};
use tokio::sync::watch;
use tokio::task::JoinSet;

#[derive(Parser, Debug)]
#[command(about = "neffos-rs scale-out example: one chat served by several instances")]
struct Args {
    /// One instance per port (two or more with the memory exchange; 0 picks a free port).
    #[arg(
        long,
        env = "PORTS",
        value_delimiter = ',',
        default_value = "8080,8081"
    )]
    ports: Vec<u16>,
    /// Address the instances listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// The neffos.js browser bundle (`node_modules/neffos.js/dist/neffos.js`).
    #[arg(long, env = "NEFFOS_JS")]
    neffos_js: Option<PathBuf>,
    #[command(flatten)]
    exchange: ExchangeArgs,
    /// The name the page shows for this process's instances (default: `instance <n> of <total>`
    /// with several instances, `instance :<port>` with one); the port is added.
    #[arg(long, env = "INSTANCE_LABEL")]
    label: Option<String>,
    /// Serve Prometheus metrics at http://<addr>/metrics.
    #[arg(long, env = "METRICS_ADDR")]
    metrics: Option<SocketAddr>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    log::init();
    let args = Args::parse();
    if args.ports.len() < 2 && !args.exchange.exchange.is_broker() {
        bail!(
            "with the in-process memory exchange, scale-out needs at least two instances: pass two or more --ports \
             (with --exchange redis|nats, one instance per process is fine)"
        );
    }
    if let Some(addr) = args.metrics {
        neffos_examples::metrics::install_prometheus(addr)?;
        println!("Metrics: http://{addr}/metrics");
    }
    let neffos_js = args.neffos_js.unwrap_or_else(chat::default_neffos_js);
    chat::check_bundle(&neffos_js)?;

    let exchanges = args.exchange.exchanges();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let mut tasks = JoinSet::new();
    let total = args.ports.len();
    for (i, port) in args.ports.iter().copied().enumerate() {
        let addr = SocketAddr::new(args.host, port);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("instance {}: cannot listen on {addr}", i + 1))?;
        let addr = listener.local_addr()?;
        let port = addr.port();
        let label = match &args.label {
            Some(label) if total > 1 => format!("{label} {} (:{port})", i + 1),
            Some(label) => format!("{label} (:{port})"),
            None if total > 1 => format!("instance {} of {total} (:{port})", i + 1),
            None => format!("instance :{port}"),
        };
        let server = chat::server_with_recovery(
            Some(exchanges.for_instance().await?),
            &label,
            exchanges.history_for_instance().await?,
        );
        let app = chat::router(&server, ChatOptions::new(&neffos_js).instance(label));
        tracing::info!(instance = i + 1, %addr, id = %server.instance_id(), "instance listening");
        println!("Instance {}: open http://{addr}", i + 1);
        let mut stop = stop_rx.clone();
        tasks.spawn(serve::serve(listener, app, async move {
            let _ = stop.wait_for(|stop| *stop).await;
        }));
        servers.push(server);
    }
    println!(
        "{total} instances share one {} exchange: join the same room from two of them (Ctrl-C to stop).",
        exchanges.kind()
    );

    tokio::select! {
        signal = tokio::signal::ctrl_c() => signal.context("listening for Ctrl-C")?,
        Some(done) = tasks.join_next() => {
            done.context("an instance panicked")?.context("an instance stopped")?;
        }
    }
    tracing::info!("shutting down");
    for server in &servers {
        server.shutdown(serve::SHUTDOWN_DEADLINE).await;
    }
    let _ = stop_tx.send(true);
    while let Some(done) = tasks.join_next().await {
        done.context("an instance panicked")??;
    }
    Ok(())
}
