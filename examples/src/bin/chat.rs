//! A chat in the browser: neffos.js on the page, neffos-rs on the server.
//!
//! Run it with the browser bundle installed by npm (the easy way does both):
//!
//! ```sh
//! cargo xtask demo
//! # or, by hand:
//! npm install --prefix target/npm-demo neffos.js@0.1.34
//! cargo run -p neffos-examples --bin chat -- \
//!     --neffos-js target/npm-demo/node_modules/neffos.js/dist/neffos.js
//! ```
//!
//! then open the printed URL (default <http://127.0.0.1:8080>) in two tabs, pick two
//! names, join the same room and talk. Options: `--port` (env `PORT`), `--host` (env
//! `HOST`), `--neffos-js` (env `NEFFOS_JS`), `--exchange memory` (the default: no broker).
//! Logs go through `tracing` (`RUST_LOG=debug` for more).
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::Parser;
use neffos_examples::chat::{self, ChatOptions};
use neffos_examples::exchange::ExchangeArgs;
use neffos_examples::{log, serve};

#[derive(Parser, Debug)]
#[command(about = "neffos-rs chat example: a browser chat with rooms")]
struct Args {
    /// Port to listen on.
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on (0.0.0.0 to accept other machines).
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: std::net::IpAddr,
    /// The neffos.js browser bundle (`node_modules/neffos.js/dist/neffos.js`).
    #[arg(long, env = "NEFFOS_JS")]
    neffos_js: Option<PathBuf>,
    #[command(flatten)]
    exchange: ExchangeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    log::init();
    let args = Args::parse();
    let neffos_js = args.neffos_js.unwrap_or_else(chat::default_neffos_js);
    chat::check_bundle(&neffos_js)?;

    let exchanges = args.exchange.exchanges();
    let addr = SocketAddr::new(args.host, args.port);
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("cannot listen on {addr} (choose another with --port)"))?;
    let addr = listener.local_addr()?;
    let label = format!("single instance (:{})", addr.port());
    let server = chat::server_with_recovery(
        Some(exchanges.for_instance().await?),
        &label,
        exchanges.history_for_instance().await?,
    );
    let options = ChatOptions::new(&neffos_js).instance(label);
    let app = chat::router(&server, options);

    tracing::info!(%addr, exchange = %exchanges.kind(), neffos_js = %neffos_js.display(), "chat listening");
    let shown = if addr.ip().is_unspecified() {
        format!("localhost:{}", addr.port())
    } else {
        addr.to_string()
    };
    println!("Open http://{shown} in two browser tabs (Ctrl-C to stop).");

    serve::serve(listener, app, serve::ctrl_c_then_shutdown(server)).await?;
    Ok(())
}
