//! Our server under test (`neffos-bench-server`), with the behaviour every peer of the
//! benchmark shares:
//!
//! - `--mode neffos`: namespace `bench`; event `fanout` broadcasts `msg` with the same
//!   body to every other connection of the namespace, or of the message's room when it
//!   has one; event `ask` replies with the same body; event `ask-peer` (body
//!   `<connection ID>|<rest>`) Asks that connection, on any instance of the cluster, with
//!   `<rest>` and replies with its reply, the time the `Server::ask` call took written over
//!   the padding after the stamp (`@` and 12 digits of nanoseconds, see
//!   `loadgen::stamp::put_server_ns`). Default [`Config`] (as shipped).
//! - `--mode raw`: the raw WebSocket floor on the same stack (axum's WebSocket, i.e.
//!   tokio-tungstenite 0.29), no protocol: every frame a client sends is broadcast to every
//!   other client; one `tokio::sync::broadcast` channel, a reader task and a writer loop per
//!   connection that writes every frame queued before one flush.
//!
//! `--instances K` serves K instances (one port each) joined by the exchange:
//! `--exchange memory` (in-process), `redis` (cargo feature `redis`, `--redis-url`),
//! `redis-cluster` (same feature, `--redis-url` a comma-separated list of seed nodes) or
//! `nats` (cargo feature `nats`, `--nats-url`, comma-separated for a cluster); the
//! broker-backed exchanges use the prefix `bench` (Redis namespace channel
//! `bench:ns:5:bench`, NATS subject `bench.ns.bench`). Each instance prints
//! `{"event":"listening","addr":"127.0.0.1:<port>","instance":<i>}`; the process exits when
//! its standard input closes or after `--lifetime-secs`.
//!
//! Loss counters for outside tests: `GET /stats` on an instance's port answers
//! [`stats_json`] (its exchange's `published`, `publish_errors`, `received`,
//! `reconnects`; with `redis-cluster` also `redirects`, `unowned_publishes`,
//! `subscription_gaps` and `gap_max_ms`; the server's `envelopes_received`,
//! `malformed_envelopes`, and the overload counters `slow_consumer_closes`,
//! `budget_closes`, `publisher_pushbacks`, `publisher_paces`, `shed_frames`), `--stats-every-ms N` also prints it as a `{"event":"stats",…}`
//! line every N ms, and every instance prints it one last time (`"final":true`) when the
//! process exits (input closed or lifetime over).
//!
//! `--recovery` turns connection-state recovery on for namespace `bench` (issue 17): every
//! broadcast is recorded before it is delivered, and connections presenting a session key
//! are checkpointed and kept after a drop. The history lives where the instances meet:
//! this process's memory without a broker (`MemoryHistory`, shared by the instances of
//! `--exchange memory`), Redis Streams with `--exchange redis` (`RedisHistory`, keys under
//! `bench:recovery:`), JetStream with `--exchange nats` (`NatsHistory`; the broker must run
//! with `-js`).

use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use anyhow::{Context, bail};
use axum::extract::ws::{Message as WsMessage, WebSocket, WebSocketUpgrade};
use axum::serve::ListenerExt;
use futures_util::{SinkExt, StreamExt};
use neffos::recovery::{HistoryLimits, MemoryHistory, Recovery};
use neffos::{
    ClusterConfig, Events, Exchange, MemoryExchange, Message, Namespaces, OverloadPolicy, Reply,
    Server, Target,
};
use tokio::sync::broadcast;

/// What the server speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// neffos-rs.
    Neffos,
    /// Raw axum WebSocket broadcast (the floor of our stack).
    Raw,
}

/// The exchange joining instances.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum ExchangeKind {
    /// None (one instance).
    None,
    /// In-process `MemoryExchange`.
    Memory,
    /// `neffos-redis` (cargo feature `redis`).
    Redis,
    /// `neffos-nats` (cargo feature `nats`).
    Nats,
    /// `neffos-redis`'s `RedisClusterExchange` (cargo feature `redis`): `--redis-url` lists
    /// the seed nodes, comma-separated.
    RedisCluster,
}

/// The command line of `neffos-bench-server`.
#[derive(Debug, Clone, clap::Parser)]
#[command(about = "neffos-rs bench server: the same minimal behaviour as every benchmark peer")]
pub struct ServerArgs {
    /// Listen address of the first instance (port 0: any free port; the next instances
    /// take the following ports, or free ports).
    #[arg(long, default_value = "127.0.0.1:0")]
    pub addr: SocketAddr,
    /// neffos, or the raw WebSocket floor.
    #[arg(long, value_enum, default_value_t = Mode::Neffos)]
    pub mode: Mode,
    /// Instances in this process.
    #[arg(long, default_value_t = 1)]
    pub instances: usize,
    /// The exchange joining the instances (and other processes, for brokers).
    #[arg(long, value_enum, default_value_t = ExchangeKind::None)]
    pub exchange: ExchangeKind,
    /// Redis URL for `--exchange redis` (seed node URLs, comma-separated, for
    /// `--exchange redis-cluster`).
    #[arg(long, default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    /// NATS URL for `--exchange nats`.
    #[arg(long, default_value = "nats://127.0.0.1:4222")]
    pub nats_url: String,
    /// Exit after this many seconds.
    #[arg(long, default_value_t = 600)]
    pub lifetime_secs: u64,
    /// Print every instance's loss counters (`{"event":"stats",…}`) every N milliseconds
    /// (0: never; they are always at `GET /stats`).
    #[arg(long, default_value_t = 0)]
    pub stats_every_ms: u64,
    /// Turn the cluster on (`ClusterConfig::default()`: heartbeat 2 s) and serve its room
    /// queries at `GET /cluster/{room_count,room_members}?room=<room>` (namespace `bench`).
    #[arg(long)]
    pub cluster: bool,
    /// Turn connection-state recovery on for namespace `bench`, with the history of the
    /// exchange (memory, Redis Streams or JetStream) and default limits.
    #[arg(long)]
    pub recovery: bool,
    /// Namespace `bench` sheds broadcasts for recipients over their outbound budget
    /// (`OverloadPolicy::Shed`) instead of pushing back on the publisher.
    #[arg(long)]
    pub shed: bool,
}

/// Counters of an exchange beyond [`neffos::ExchangeStats`], as JSON (the Redis Cluster's
/// topology counters).
pub type ExtraStats = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

/// Instance `instance`'s counters as one JSON object: what its exchanges published, failed
/// to publish (lost: at most once across instances), received and how often they
/// reconnected, what the server received from other instances, and its recovery counters
/// (`unrecorded`: broadcasts delivered but not in the history, the store failed); `extra`
/// adds the exchange's own counters under `"exchange"`.
pub fn stats_json(instance: usize, server: &Server, extra: Option<&ExtraStats>) -> String {
    stats_value(instance, server, extra).to_string()
}

fn stats_value(instance: usize, server: &Server, extra: Option<&ExtraStats>) -> serde_json::Value {
    let sum = |f: fn(neffos::ExchangeStats) -> u64| -> u64 {
        server.exchanges().iter().map(|x| f(x.stats())).sum()
    };
    let snapshot = server.stats();
    let cluster = server.cluster().stats();
    let recovery = server.recovery_stats();
    let mut json = serde_json::json!({
        "event": "stats",
        "instance": instance,
        "exchange": {
            "published": sum(|s| s.published),
            "publish_errors": sum(|s| s.publish_errors),
            "received": sum(|s| s.received),
            "reconnects": sum(|s| s.reconnects),
        },
        "server": {
            "connections": snapshot.connections,
            "envelopes_received": snapshot.envelopes_received,
            "malformed_envelopes": snapshot.malformed_envelopes,
            "slow_consumer_closes": snapshot.slow_consumer_closes,
            "budget_closes": snapshot.budget_closes,
            "publisher_pushbacks": snapshot.publisher_pushbacks,
            "publisher_paces": snapshot.publisher_paces,
            "shed_frames": snapshot.shed_frames,
        },
        "cluster": {
            "instances": cluster.instances,
            "settled": cluster.settled,
        },
        "recovery": {
            "live_sessions": recovery.live_sessions,
            "recovered": recovery.recovered,
            "not_recovered": recovery.not_recovered,
            "unrecorded": recovery.unrecorded,
        },
    });
    if let Some(extra) = extra
        && let (Some(exchange), serde_json::Value::Object(more)) =
            (json["exchange"].as_object_mut(), extra())
    {
        exchange.extend(more);
    }
    json
}

/// The neffos server of the benchmark, optionally joined to others by `exchange`, with the
/// cluster on when `cluster` is set, recovery when `recovery` is given, and `overload` as
/// the overload policy of namespace `bench`.
pub fn neffos_server(
    exchange: Option<Arc<dyn Exchange>>,
    cluster: bool,
    recovery: Option<Recovery>,
    overload: OverloadPolicy,
) -> Server {
    let events = Events::new()
        .on("fanout", |ns, msg: Message| async move {
            let Some(server) = ns.conn().server() else {
                return;
            };
            let target = if msg.room.is_empty() {
                Target::namespace(ns.namespace())
            } else {
                Target::room(ns.namespace(), &msg.room)
            };
            let out = Message::new("", "msg", msg.body);
            // A failed broadcast shows as losses in the load generator's report.
            let _ = server.broadcast(target.except(ns.conn()), out);
        })
        .on(
            "ask",
            |_ns, msg: Message| async move { Reply::new(msg.body) },
        )
        .on("ask-peer", ask_peer);
    let mut builder =
        Server::builder(Namespaces::new().namespace("bench", events)).overload("bench", overload);
    if let Some(exchange) = exchange {
        builder = builder.exchange(exchange);
    }
    if cluster {
        builder = builder.cluster(ClusterConfig::default());
    }
    if let Some(recovery) = recovery {
        builder = builder.recovery(recovery);
    }
    builder.build()
}

/// The room queries of the cluster, timed on the server: `{"value": n, "missing": m,
/// "micros": t}` (`value`: members counted, or listed, across every instance; `missing`:
/// live instances that did not answer by the deadline).
fn cluster_router(server: &Server) -> axum::Router {
    // The room from `?room=<room>` (names without escapes, as the load generator's).
    fn room(uri: &axum::http::Uri) -> String {
        uri.query()
            .unwrap_or_default()
            .split('&')
            .find_map(|kv| kv.strip_prefix("room="))
            .unwrap_or_default()
            .to_owned()
    }
    let (count_server, members_server) = (server.clone(), server.clone());
    let answer = |value: usize, missing: usize, started: std::time::Instant| {
        let body = serde_json::json!({
            "value": value,
            "missing": missing,
            "micros": u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
        });
        ([("content-type", "application/json")], body.to_string())
    };
    axum::Router::new()
        .route(
            "/cluster/room_count",
            axum::routing::get(move |uri: axum::http::Uri| async move {
                let room = room(&uri);
                let started = std::time::Instant::now();
                match count_server.cluster().room_count("bench", &room).await {
                    Ok(p) => answer(p.value, p.missing.len(), started),
                    Err(_) => answer(0, usize::MAX, started),
                }
            }),
        )
        .route(
            "/cluster/room_members",
            axum::routing::get(move |uri: axum::http::Uri| async move {
                let room = room(&uri);
                let started = std::time::Instant::now();
                match members_server.cluster().room_members("bench", &room).await {
                    Ok(p) => answer(p.value.len(), p.missing.len(), started),
                    Err(_) => answer(0, usize::MAX, started),
                }
            }),
        )
}

/// How long `ask-peer` waits for the responder's reply.
const ASK_PEER_TIMEOUT: Duration = Duration::from_secs(5);

/// Event `ask-peer`: the body is `<connection ID>|<rest>`; the server Asks that connection
/// (on this instance or, through the exchange, any other) with `<rest>` and replies with
/// the responder's reply body, or with an error reply when the Ask failed. The time the
/// `Server::ask` call took is written over the padding after the reply's stamp
/// (`loadgen::stamp::put_server_ns`), when it has room for it.
async fn ask_peer(ns: neffos::NsConn, msg: Message) -> Result<Reply, String> {
    let server = ns.conn().server().ok_or("no server")?;
    let at = memchr::memchr(b'|', &msg.body).ok_or("expected `<id>|<body>`")?;
    let id = std::str::from_utf8(&msg.body[..at]).map_err(|_| "the ID is not UTF-8")?;
    let ask = Message::new(ns.namespace(), "ask-peer", msg.body.slice(at + 1..));
    let started = std::time::Instant::now();
    let reply = server
        .ask(id, ask, ASK_PEER_TIMEOUT)
        .await
        .map_err(|e| format!("ask-peer {id}: {e}"))?;
    let took = started.elapsed();
    // The `Server::ask` duration rides in the padding after the stamp (same body length).
    let mut body = reply.body.to_vec();
    let took_ns = u64::try_from(took.as_nanos()).unwrap_or(u64::MAX);
    if crate::loadgen::stamp::put_server_ns(&mut body, took_ns) {
        Ok(Reply::new(body))
    } else {
        Ok(Reply::new(reply.body))
    }
}

async fn exchange_for(
    args: &ServerArgs,
    memory: &MemoryExchange,
) -> anyhow::Result<(Option<Arc<dyn Exchange>>, Option<ExtraStats>)> {
    let exchange: Option<Arc<dyn Exchange>> = match args.exchange {
        ExchangeKind::None => None,
        ExchangeKind::Memory => Some(Arc::new(memory.clone())),
        #[cfg(feature = "redis")]
        ExchangeKind::RedisCluster => {
            let (exchange, extra) = redis_cluster(args).await?;
            return Ok((Some(exchange), Some(extra)));
        }
        #[cfg(feature = "redis")]
        ExchangeKind::Redis => Some(Arc::new(
            neffos_redis::RedisExchange::builder(args.redis_url.clone())
                .prefix("bench")
                .connect()
                .await
                .context("connecting to Redis")?,
        )),
        #[cfg(not(feature = "redis"))]
        ExchangeKind::Redis | ExchangeKind::RedisCluster => {
            bail!(
                "--exchange redis and redis-cluster need the `redis` cargo feature of neffos-bench-tools"
            )
        }
        #[cfg(feature = "nats")]
        ExchangeKind::Nats => Some(Arc::new(
            neffos_nats::NatsExchange::builder(args.nats_url.clone())
                .prefix("bench")
                .connect()
                .await
                .context("connecting to NATS")?,
        )),
        #[cfg(not(feature = "nats"))]
        ExchangeKind::Nats => {
            bail!("--exchange nats needs the `nats` cargo feature of neffos-bench-tools")
        }
    };
    Ok((exchange, None))
}

/// A `RedisClusterExchange` on the seeds of `--redis-url`, and its topology counters.
#[cfg(feature = "redis")]
async fn redis_cluster(args: &ServerArgs) -> anyhow::Result<(Arc<dyn Exchange>, ExtraStats)> {
    let exchange = Arc::new(
        neffos_redis::RedisClusterExchange::builder(
            args.redis_url.split(',').map(str::trim).map(str::to_owned),
        )
        .prefix("bench")
        .connect()
        .await
        .context("connecting to the Redis Cluster")?,
    );
    let probe = exchange.clone();
    let extra: ExtraStats = Arc::new(move || {
        let s = probe.cluster_stats();
        serde_json::json!({
            "redirects": s.redirects,
            "unowned_publishes": s.unowned_publishes,
            "subscription_gaps": s.gaps,
            "gap_max_ms": s.gap_max.as_secs_f64() * 1000.0,
        })
    });
    Ok((exchange, extra))
}

/// Recovery of namespace `bench` with the history of `args.exchange` (`memory`: one store
/// for every instance of this process).
async fn recovery_for(args: &ServerArgs, memory: &MemoryHistory) -> anyhow::Result<Recovery> {
    let recovery = Recovery::new().namespace("bench");
    let limits = HistoryLimits::default();
    Ok(match args.exchange {
        ExchangeKind::None => recovery,
        ExchangeKind::Memory => recovery.store(memory.clone()),
        #[cfg(feature = "redis")]
        ExchangeKind::Redis => recovery.store(
            neffos_redis::RedisHistory::connect_with_prefix(
                &args.redis_url,
                limits,
                "bench:recovery:",
            )
            .await
            .context("connecting the Redis history")?,
        ),
        #[cfg(feature = "nats")]
        ExchangeKind::Nats => recovery.store(
            neffos_nats::NatsHistory::connect(&args.nats_url, limits)
                .await
                .context("connecting the NATS history")?,
        ),
        ExchangeKind::RedisCluster => {
            bail!("--recovery has no history on a Redis Cluster (use --exchange redis)")
        }
        #[cfg(not(all(feature = "redis", feature = "nats")))]
        _ => {
            let _ = limits;
            bail!("--recovery over a broker needs the exchange's cargo feature")
        }
    })
}

static NEXT_RAW_ID: AtomicU64 = AtomicU64::new(1);

type Bus = broadcast::Sender<(u64, WsMessage)>;

async fn raw_socket(socket: WebSocket, bus: Bus) {
    let id = NEXT_RAW_ID.fetch_add(1, Ordering::Relaxed);
    let mut rx = bus.subscribe();
    let (mut sink, mut stream) = socket.split();
    let mut reader = tokio::spawn(async move {
        while let Some(Ok(msg)) = stream.next().await {
            match msg {
                WsMessage::Text(_) | WsMessage::Binary(_) => {
                    let _ = bus.send((id, msg));
                }
                WsMessage::Close(_) => break,
                _ => {}
            }
        }
    });
    'outer: loop {
        let first = tokio::select! {
            received = rx.recv() => match received {
                Ok(m) => m,
                Err(broadcast::error::RecvError::Lagged(_)) => continue,
                Err(broadcast::error::RecvError::Closed) => break,
            },
            // The peer closed: flush tungstenite's close reply and stop.
            _ = &mut reader => {
                let _ = sink.close().await;
                return;
            }
        };
        let mut pending = Some(first);
        // Write everything queued so far, then flush once.
        while let Some((from, msg)) = pending.take() {
            if from != id && sink.feed(msg).await.is_err() {
                break 'outer;
            }
            pending = match rx.try_recv() {
                Ok(m) => Some(m),
                Err(broadcast::error::TryRecvError::Lagged(_)) => rx.try_recv().ok(),
                Err(_) => None,
            };
        }
        if sink.flush().await.is_err() {
            break;
        }
    }
    reader.abort();
}

fn raw_router() -> axum::Router {
    let (bus, _) = broadcast::channel::<(u64, WsMessage)>(4096);
    let config = neffos::Config::default();
    axum::Router::new().route(
        "/echo",
        axum::routing::any(move |ws: WebSocketUpgrade| {
            let bus = bus.clone();
            async move {
                ws.read_buffer_size(config.read_buffer_size)
                    .write_buffer_size(config.write_buffer_size)
                    .on_upgrade(move |socket| raw_socket(socket, bus))
            }
        }),
    )
}

/// Runs the bench server until its input closes or its lifetime ends.
#[allow(clippy::print_stdout)]
pub async fn run(args: ServerArgs) -> anyhow::Result<()> {
    if args.instances == 0 {
        bail!("--instances must be at least 1");
    }
    if args.instances > 1 && args.exchange == ExchangeKind::None {
        bail!("several instances need an exchange (--exchange memory|redis|nats)");
    }
    let (input_closed, mut closed_rx) = tokio::sync::oneshot::channel::<()>();
    std::thread::spawn(move || {
        let mut sink = Vec::new();
        let _ = std::io::stdin().read_to_end(&mut sink);
        let _ = input_closed.send(());
    });
    let lifetime = Duration::from_secs(args.lifetime_secs);
    let memory = MemoryExchange::new();
    let history = MemoryHistory::default();
    let mut tasks = tokio::task::JoinSet::new();
    let mut servers: Vec<(Server, Option<ExtraStats>)> = Vec::new();
    for i in 0..args.instances {
        let addr = if args.addr.port() == 0 || i == 0 {
            args.addr
        } else {
            SocketAddr::new(args.addr.ip(), args.addr.port() + i as u16)
        };
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .with_context(|| format!("listening on {addr}"))?;
        let local = listener.local_addr()?;
        let app = match args.mode {
            Mode::Neffos => {
                let recovery = if args.recovery {
                    Some(recovery_for(&args, &history).await?)
                } else {
                    None
                };
                let (exchange, extra) = exchange_for(&args, &memory).await?;
                let server = neffos_server(
                    exchange,
                    args.cluster,
                    recovery,
                    if args.shed {
                        OverloadPolicy::Shed
                    } else {
                        OverloadPolicy::PushBack
                    },
                );
                let (stats_server, stats_extra) = (server.clone(), extra.clone());
                let mut app = axum::Router::new().route("/echo", server.route()).route(
                    "/stats",
                    axum::routing::get(move || {
                        let body = stats_json(i, &stats_server, stats_extra.as_ref());
                        async move { ([("content-type", "application/json")], body) }
                    }),
                );
                if args.cluster {
                    app = app.merge(cluster_router(&server));
                }
                servers.push((server, extra));
                app
            }
            Mode::Raw => raw_router(),
        };
        println!("{{\"event\":\"listening\",\"addr\":\"{local}\",\"instance\":{i}}}");
        let listener = listener.tap_io(|tcp| {
            let _ = tcp.set_nodelay(true);
        });
        tasks.spawn(async move {
            axum::serve(
                listener,
                app.into_make_service_with_connect_info::<SocketAddr>(),
            )
            .await
        });
    }
    if args.stats_every_ms > 0 {
        let servers = servers.clone();
        let period = Duration::from_millis(args.stats_every_ms);
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                for (i, (server, extra)) in servers.iter().enumerate() {
                    println!("{}", stats_json(i, server, extra.as_ref()));
                }
            }
        });
    }
    let input_gone = tokio::select! {
        _ = tokio::time::sleep(lifetime) => false,
        _ = &mut closed_rx => true,
        Some(done) = tasks.join_next() => {
            done.context("an instance panicked")?.context("an instance stopped")?;
            false
        }
    };
    // The loss counters as they end, for whoever reads this output.
    for (i, (server, extra)) in servers.iter().enumerate() {
        let mut json = stats_value(i, server, extra.as_ref());
        json["final"] = true.into();
        println!("{json}");
    }
    if input_gone {
        // As before: closing the input ends the process at once.
        std::process::exit(0);
    }
    for (server, _) in &servers {
        server.shutdown(Duration::from_secs(2)).await;
    }
    Ok(())
}
