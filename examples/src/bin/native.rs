//! Native messages: a neffos-rs server that plain WebSocket clients can use.
//!
//! ```sh
//! cargo run -p neffos-examples --bin native            # serve; open the printed URL
//! cargo run -p neffos-examples --bin native -- --once  # self-check, then exit
//! ```
//!
//! When the only namespace is `""` and its only event is `_OnNativeMessage`, the server is
//! in native-only mode (PROTOCOL.md §1.6): no `M`/`A` handshake, no namespace connect, no
//! `;`-separated framing. Every frame a client sends reaches the `_OnNativeMessage` handler
//! as is, and this one echoes it back, text as text and binary as binary.
//!
//! At start-up a plain WebSocket client (tokio-tungstenite, no neffos) checks the echo of
//! one text and one binary frame; the page at `/` does the same from a browser with
//! `new WebSocket(..)`. Options: `--port` (env `PORT`, default 8083), `--once`.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, bail};
use axum::response::Html;
use axum::routing::get;
use clap::Parser;
use futures_util::{SinkExt, StreamExt};
use neffos::{Events, Message, Namespaces, NsConn, Server, events};
use neffos_examples::{log, serve};
use tokio_tungstenite::tungstenite::Message as WsMessage;

const PAGE: &str = include_str!("../../static/native.html");
const TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Parser, Debug)]
#[command(about = "neffos-rs native example: a plain WebSocket echo")]
struct Args {
    /// Port to listen on (0: any free port).
    #[arg(long, env = "PORT", default_value_t = 8083)]
    port: u16,
    /// Run the self-check and exit instead of serving.
    #[arg(long)]
    once: bool,
}

/// Native-only: namespace `""` with the single event `_OnNativeMessage`.
fn namespaces() -> Namespaces {
    Namespaces::new().namespace(
        "",
        Events::new().on(
            events::ON_NATIVE_MESSAGE,
            |ns: NsConn, msg: Message| async move {
                tracing::info!(
                    id = ns.conn().id(),
                    binary = msg.binary,
                    len = msg.body.len(),
                    "native message"
                );
                // A native message is written as its raw body.
                if let Err(e) = ns.conn().write(&Message::native(msg.body, msg.binary)) {
                    tracing::warn!(error = %e, "echo not sent");
                }
            },
        ),
    )
}

/// A plain WebSocket client: each frame must come back unchanged.
async fn self_check(addr: SocketAddr) -> anyhow::Result<()> {
    let (mut ws, _) = tokio_tungstenite::connect_async(format!("ws://{addr}/echo"))
        .await
        .context("dial")?;
    let frames = [
        WsMessage::text("hello; no neffos framing here"),
        WsMessage::binary(vec![0u8, 1, 2, 59, 255]),
    ];
    for frame in frames {
        ws.send(frame.clone()).await.context("send")?;
        let echo = loop {
            match tokio::time::timeout(TIMEOUT, ws.next()).await {
                Err(_) => bail!("no echo within {TIMEOUT:?}"),
                Ok(None) => bail!("closed before the echo"),
                Ok(Some(item)) => {
                    let item = item.context("read")?;
                    if item.is_text() || item.is_binary() {
                        break item;
                    }
                }
            }
        };
        if echo != frame {
            bail!("sent {frame:?}, got back {echo:?}");
        }
        tracing::info!(?echo, "self-check: echoed unchanged");
    }
    ws.close(None).await.context("close")?;
    Ok(())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    log::init();
    let args = Args::parse();
    let server = Server::builder(namespaces()).build();
    let listener = tokio::net::TcpListener::bind(SocketAddr::from(([127, 0, 0, 1], args.port)))
        .await
        .with_context(|| format!("cannot listen on port {}", args.port))?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new()
        .route("/", get(|| async { Html(PAGE) }))
        .route("/echo", server.route());
    let serving = tokio::spawn(serve::serve(
        listener,
        app,
        serve::ctrl_c_then_shutdown(server.clone()),
    ));
    tracing::info!(%addr, "native echo listening at /echo");

    self_check(addr).await?;
    if args.once {
        server.shutdown(TIMEOUT).await;
        serving.abort();
        return Ok(());
    }
    println!("Open http://{addr} (Ctrl-C to stop).");
    serving.await.context("server task")??;
    Ok(())
}
