//! Minimal socketioxide server, a peer of the neffos-rs benchmark: the same behaviour as
//! the neffos bench servers, in Socket.IO terms.
//!
//! Namespace `/bench`:
//! - `join` (ack): joins the room named by the argument, then acknowledges.
//! - `fanout` `[room, body]`: emits `msg` with `body` to every other socket of the
//!   namespace (room `""`) or of the room.
//! - `ask` (ack): acknowledges with the same body.
//!
//! `GET /fetch_sockets?room=<room>` (the cluster-query phase of the suite): how many
//! sockets of namespace `/bench` are in the room across every instance
//! (`io.of("/bench").to(room).fetch_sockets()`, through the adapter), timed on the server:
//! `{"value":n,"micros":t,"error":false}`.
//!
//! ```sh
//! peer-socketioxide --addr 127.0.0.1:0 --lifetime-secs 600 [--redis-url redis://127.0.0.1:6379]
//! peer-socketioxide --redis-cluster-urls redis://127.0.0.1:7000,redis://127.0.0.1:7001
//! ```
//!
//! With `--redis-url`, instances are joined through `socketioxide-redis` (the Redis adapter
//! of the socketioxide project), so a broadcast reaches the clients of every instance; with
//! `--redis-cluster-urls` (seed nodes), through its cluster driver (`ClusterAdapter`,
//! sharded pub/sub over `redis`'s `ClusterClient`).
//!
//! Prints `{"event":"listening","addr":"127.0.0.1:<port>"}` once listening, then exits when
//! its standard input closes or after the lifetime.

use std::io::Read;
use std::net::SocketAddr;
use std::time::Duration;

use axum::serve::ListenerExt;
use socketioxide::SocketIo;
use socketioxide::adapter::Adapter;
use socketioxide::extract::{AckSender, Data, SocketRef};
use socketioxide_redis::{
    ClusterAdapter, RedisAdapter, RedisAdapterCtr, drivers::redis::redis_client,
};

fn main() -> std::io::Result<()> {
    let mut addr: SocketAddr = ([127, 0, 0, 1], 0).into();
    let mut lifetime = Duration::from_secs(600);
    let mut redis_url: Option<String> = None;
    let mut cluster_urls: Option<String> = None;
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let value = args.next().unwrap_or_default();
        match arg.as_str() {
            "--addr" => addr = value.parse().map_err(std::io::Error::other)?,
            "--redis-url" => redis_url = Some(value),
            "--redis-cluster-urls" => cluster_urls = Some(value),
            "--lifetime-secs" => {
                lifetime = Duration::from_secs(value.parse().map_err(std::io::Error::other)?)
            }
            other => return Err(std::io::Error::other(format!("unknown argument {other}"))),
        }
    }
    std::thread::spawn(|| {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        std::process::exit(0);
    });
    std::thread::spawn(move || {
        std::thread::sleep(lifetime);
        std::process::exit(0);
    });

    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let app = match (redis_url, cluster_urls) {
            (_, Some(urls)) => {
                // RESP3: the driver's subscriptions need push messages.
                let urls: Vec<String> = urls
                    .split(',')
                    .map(|u| {
                        if u.contains('?') {
                            u.to_owned()
                        } else {
                            format!("{u}?protocol=resp3")
                        }
                    })
                    .collect();
                let client = redis_client::cluster::ClusterClient::new(urls)
                    .map_err(std::io::Error::other)?;
                let adapter = RedisAdapterCtr::new_with_cluster(&client)
                    .await
                    .map_err(std::io::Error::other)?;
                let (layer, io) = SocketIo::builder()
                    .with_adapter::<ClusterAdapter<_>>(adapter)
                    .build_layer();
                io.ns("/bench", on_connect)
                    .await
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                fetch_router(io).layer(layer)
            }
            (None, None) => {
                let (layer, io) = SocketIo::new_layer();
                io.ns("/bench", on_connect);
                fetch_router(io).layer(layer)
            }
            (Some(url), None) => {
                // RESP3: the adapter's subscriber needs push messages.
                let url = if url.contains('?') { url } else { format!("{url}?protocol=resp3") };
                let client = redis_client::Client::open(url).map_err(std::io::Error::other)?;
                let adapter = RedisAdapterCtr::new_with_redis(&client)
                    .await
                    .map_err(std::io::Error::other)?;
                let (layer, io) = SocketIo::builder()
                    .with_adapter::<RedisAdapter<_>>(adapter)
                    .build_layer();
                io.ns("/bench", on_connect)
                    .await
                    .map_err(|e| std::io::Error::other(format!("{e:?}")))?;
                fetch_router(io).layer(layer)
            }
        };
        let listener = tokio::net::TcpListener::bind(addr).await?;
        println!(
            "{{\"event\":\"listening\",\"addr\":\"{}\"}}",
            listener.local_addr()?
        );
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        axum::serve(listener, app).await
    })
}

/// `GET /fetch_sockets?room=<room>`: the sockets of `/bench` in the room, on every instance.
fn fetch_router<A: Adapter>(io: SocketIo<A>) -> axum::Router {
    axum::Router::new().route(
        "/fetch_sockets",
        axum::routing::get(move |uri: axum::http::Uri| async move {
            let room = uri
                .query()
                .unwrap_or_default()
                .split('&')
                .find_map(|kv| kv.strip_prefix("room="))
                .unwrap_or_default()
                .to_owned();
            let started = std::time::Instant::now();
            let found = match io.of("/bench") {
                Some(ns) => ns.to(room).fetch_sockets().await.map_err(|_| ()),
                None => Err(()),
            };
            let micros = started.elapsed().as_micros();
            let (value, error) = match found {
                Ok(sockets) => (sockets.len(), false),
                Err(()) => (0, true),
            };
            format!("{{\"value\":{value},\"micros\":{micros},\"error\":{error}}}")
        }),
    )
}

async fn on_connect<A: Adapter>(s: SocketRef<A>) {
    s.on(
        "join",
        async |s: SocketRef<A>, Data(room): Data<String>, ack: AckSender<A>| {
            s.join(room);
            let _ = ack.send(&());
        },
    );
    s.on(
        "fanout",
        async |s: SocketRef<A>, Data((room, body)): Data<(String, String)>| {
            let _ = if room.is_empty() {
                s.broadcast().emit("msg", &body).await
            } else {
                s.to(room).emit("msg", &body).await
            };
        },
    );
    s.on("ask", async |Data(body): Data<String>, ack: AckSender<A>| {
        let _ = ack.send(&body);
    });
}
