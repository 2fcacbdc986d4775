//! One instance of a cluster with its cluster API over HTTP: what `server.cluster()` answers
//! (who is connected, where, in which rooms), remote disconnect/join/leave, `Server::ask`
//! with its outcome, and the presence events it received.
//!
//! ```sh
//! redis-server &
//! cargo run -p neffos-examples --features redis --bin cluster-node -- --port 8080 --exchange redis &
//! cargo run -p neffos-examples --features redis --bin cluster-node -- --port 8081 --exchange redis &
//! curl 'http://127.0.0.1:8080/cluster/instances'
//! curl 'http://127.0.0.1:8080/cluster/count?ns=default'
//! curl -X POST 'http://127.0.0.1:8081/cluster/disconnect?id=alice&reason=bye'
//! ```
//!
//! Clients connect to `ws://…/echo` with the header `X-Username` (their connection ID),
//! namespace `default`, and join any room. Endpoints (see `neffos_examples::cluster_api`):
//! `GET /cluster/{instances,stats,count,connections,rooms,room_members,room_count,find,ask,presence}`,
//! `POST /cluster/{disconnect,join,leave}`, `GET /online`. There is no authentication:
//! keep it on a private network. Used by `tests/cluster_queries.rs` (five of them per broker).
#![allow(clippy::print_stdout)]

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use anyhow::Context;
use clap::Parser;
use neffos::{ClusterConfig, Events, Namespaces, Server};
use neffos_examples::cluster_api::{self, PresenceLog};
use neffos_examples::exchange::ExchangeArgs;
use neffos_examples::{log, serve};

/// The namespace clients connect to.
const NAMESPACE: &str = "default";

#[derive(Parser, Debug)]
#[command(about = "neffos-rs cluster node: one instance and its cluster API over HTTP")]
struct Args {
    /// Port (0 picks a free one).
    #[arg(long, env = "PORT", default_value_t = 8080)]
    port: u16,
    /// Address to listen on.
    #[arg(long, env = "HOST", default_value = "127.0.0.1")]
    host: IpAddr,
    /// Heartbeat interval in milliseconds.
    #[arg(long, default_value_t = 2000)]
    heartbeat_ms: u64,
    /// Lease in milliseconds.
    #[arg(long, default_value_t = 6000)]
    lease_ms: u64,
    /// Query deadline in milliseconds.
    #[arg(long, default_value_t = 200)]
    deadline_ms: u64,
    #[command(flatten)]
    exchange: ExchangeArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    log::init();
    let args = Args::parse();
    let listener = tokio::net::TcpListener::bind(SocketAddr::new(args.host, args.port))
        .await
        .with_context(|| format!("cannot listen on {}:{}", args.host, args.port))?;
    let addr = listener.local_addr()?;
    let presence = PresenceLog::default();
    let recorder = presence.clone();
    let config = ClusterConfig::default()
        .heartbeat(
            Duration::from_millis(args.heartbeat_ms),
            Duration::from_millis(args.lease_ms),
        )
        .query_deadline(Duration::from_millis(args.deadline_ms))
        .label(format!(":{}", addr.port()))
        .presence(NAMESPACE, move |event| {
            recorder.record(event);
            async {}
        });
    let exchange = args.exchange.exchanges().for_instance().await?;
    let server = Server::builder(Namespaces::new().namespace(NAMESPACE, Events::new()))
        .id_generator(|parts| {
            parts
                .headers
                .get("x-username")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned()
        })
        .cluster(config)
        .exchange(exchange)
        .build();
    let app = axum::Router::new()
        .route("/echo", server.route())
        .merge(cluster_api::admin_router(&server, Some(presence)))
        .merge(cluster_api::online_router(&server, NAMESPACE));
    println!("cluster-node {}: http://{addr}", server.instance_id());
    serve::serve(listener, app, serve::ctrl_c_then_shutdown(server.clone())).await?;
    Ok(())
}
