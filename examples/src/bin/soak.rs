//! Soak test: two instances joined through Redis under churn for N minutes, sampling the
//! process's RSS, its live tokio tasks and the Redis channels subscribed, to show they
//! stay flat.
//!
//! ```sh
//! cargo xtask soak --minutes 10
//! # or directly (starts its own redis-server on a free loopback port unless --redis-url):
//! cargo run --release -p neffos-examples --features redis --bin soak -- --minutes 10
//! ```
//!
//! Load, all on loopback and bounded: clients connect to either instance, connect the
//! namespace, join one of 20 rooms, chat, then leave or vanish (keeping about
//! `--clients` alive); instance 1 broadcasts to the namespace and instance 2 to a room
//! every 10 ms. The report (a table on stdout, JSON in `target/soak/soak.json`) gives one
//! sample per `--sample-secs`; the run fails if, between the first and the last third of
//! the samples, RSS grows by more than 25 % or tasks or Redis channels by more than 10 %.
#![allow(clippy::print_stdout)]

use std::net::SocketAddr;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use clap::Parser;
use neffos::{Client, Events, Message, Namespaces, Server, Target};
use neffos_redis::RedisExchange;
use serde::Serialize;

#[derive(Parser, Debug)]
#[command(about = "neffos-rs soak test: churn across two instances joined through Redis")]
struct Args {
    /// How long to run.
    #[arg(long, default_value_t = 10.0)]
    minutes: f64,
    /// Clients kept connected at any time.
    #[arg(long, default_value_t = 200)]
    clients: usize,
    /// Seconds between samples.
    #[arg(long, default_value_t = 10)]
    sample_secs: u64,
    /// An existing Redis; by default a `redis-server` is started on a free port.
    #[arg(long)]
    redis_url: Option<String>,
}

#[derive(Serialize, Debug, Clone)]
struct Sample {
    seconds: u64,
    rss_kib: u64,
    tasks: usize,
    redis_channels: usize,
    connections: usize,
    connects_total: u64,
    broadcasts_total: u64,
    deliveries_total: u64,
}

/// A resource to judge: its name, how to read it from a sample, the largest allowed
/// last-third / first-third ratio.
type Check = (&'static str, fn(&Sample) -> f64, f64);

struct RedisProcess(Child);

impl Drop for RedisProcess {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_redis() -> anyhow::Result<(RedisProcess, String)> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port();
    let child = Command::new("redis-server")
        .args([
            "--port",
            &port.to_string(),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ])
        .stdout(Stdio::null())
        .spawn()
        .context("cannot start redis-server (apt-get install redis-server)")?;
    let process = RedisProcess(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        if Instant::now() > deadline {
            bail!("redis-server did not start on port {port}");
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    Ok((process, format!("redis://127.0.0.1:{port}")))
}

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

async fn instance(redis_url: &str) -> anyhow::Result<(Server, SocketAddr)> {
    let exchange = RedisExchange::connect(redis_url.to_owned()).await?;
    let server = Server::builder(Namespaces::new().namespace(
        "soak",
        Events::new().on("chat", |ns: neffos::NsConn, msg: Message| async move {
            ns.broadcast_others(msg)
        }),
    ))
    .id_generator(|_| format!("u{}", fastrand::u64(..)))
    .exchange(exchange)
    .build();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/echo", server.route());
    tokio::spawn(async move {
        let _ = axum::serve(listener, app).await;
    });
    Ok((server, addr))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    neffos_examples::log::init();
    let args = Args::parse();
    let (_redis, redis_url) = match &args.redis_url {
        Some(url) => (None, url.clone()),
        None => {
            let (p, url) = start_redis()?;
            (Some(p), url)
        }
    };
    let (a, addr_a) = instance(&redis_url).await?;
    let (b, addr_b) = instance(&redis_url).await?;
    let redis = redis::Client::open(redis_url.as_str())?;
    let mut probe = redis.get_multiplexed_async_connection().await?;

    let connects = Arc::new(AtomicU64::new(0));
    let broadcasts = Arc::new(AtomicU64::new(0));
    let deliveries = Arc::new(AtomicU64::new(0));
    let run_for = Duration::from_secs_f64(args.minutes * 60.0);
    let started = Instant::now();

    // Broadcasters.
    for (server, room) in [(a.clone(), None), (b.clone(), Some("room-7"))] {
        let broadcasts = broadcasts.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            while started.elapsed() < run_for {
                tick.tick().await;
                let target = match room {
                    Some(room) => Target::room("soak", room),
                    None => Target::namespace("soak"),
                };
                if server
                    .broadcast(target, Message::new("", "news", "tick"))
                    .is_ok()
                {
                    broadcasts.fetch_add(1, Ordering::Relaxed);
                }
            }
        });
    }

    // Churning clients: each slot reconnects for the whole run.
    let urls = [format!("ws://{addr_a}/echo"), format!("ws://{addr_b}/echo")];
    let mut slots = Vec::new();
    for slot in 0..args.clients {
        let url = urls[slot % 2].clone();
        let (connects, deliveries) = (connects.clone(), deliveries.clone());
        slots.push(tokio::spawn(async move {
            while started.elapsed() < run_for {
                let d = deliveries.clone();
                let events = Events::new().on(neffos::events::ON_ANY_EVENT, move |_ns, _msg| {
                    let d = d.clone();
                    async move {
                        d.fetch_add(1, Ordering::Relaxed);
                    }
                });
                let Ok(client) = Client::builder(url.as_str())
                    .namespaces(Namespaces::new().namespace("soak", events))
                    .connect()
                    .await
                else {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                };
                connects.fetch_add(1, Ordering::Relaxed);
                if let Ok(ns) = client.connect("soak").await {
                    let _ = ns.join_room(&format!("room-{}", fastrand::u8(..20))).await;
                    let _ = ns.emit("chat", "hello");
                    tokio::time::sleep(Duration::from_millis(fastrand::u64(200..3000))).await;
                    if fastrand::bool() {
                        let _ = ns.disconnect().await;
                    }
                }
                client.close();
                client.closed().await;
            }
        }));
    }

    let mut samples = Vec::new();
    let handle = tokio::runtime::Handle::current();
    let mut tick = tokio::time::interval(Duration::from_secs(args.sample_secs));
    tick.tick().await;
    while started.elapsed() < run_for {
        tick.tick().await;
        let channels: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .query_async(&mut probe)
            .await
            .unwrap_or_default();
        let sample = Sample {
            seconds: started.elapsed().as_secs(),
            rss_kib: rss_kib(),
            tasks: handle.metrics().num_alive_tasks(),
            redis_channels: channels.len(),
            connections: a.connection_count() + b.connection_count(),
            connects_total: connects.load(Ordering::Relaxed),
            broadcasts_total: broadcasts.load(Ordering::Relaxed),
            deliveries_total: deliveries.load(Ordering::Relaxed),
        };
        println!(
            "{:>6}s rss {:>8} KiB  tasks {:>6}  redis channels {:>5}  connections {:>5}  connects {:>8}  broadcasts {:>8}  deliveries {:>10}",
            sample.seconds,
            sample.rss_kib,
            sample.tasks,
            sample.redis_channels,
            sample.connections,
            sample.connects_total,
            sample.broadcasts_total,
            sample.deliveries_total
        );
        samples.push(sample);
    }
    for s in slots {
        let _ = s.await;
    }
    // Stop the instances before the broker goes away with this process.
    a.shutdown(Duration::from_secs(5)).await;
    b.shutdown(Duration::from_secs(5)).await;
    let out_dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/soak");
    std::fs::create_dir_all(&out_dir)?;
    std::fs::write(
        out_dir.join("soak.json"),
        serde_json::to_string_pretty(&samples)?,
    )?;

    if samples.len() < 3 {
        bail!(
            "too few samples ({}) to judge flatness: run longer or sample more often",
            samples.len()
        );
    }
    let third = samples.len() / 3;
    let mean =
        |xs: &[Sample], f: fn(&Sample) -> f64| xs.iter().map(f).sum::<f64>() / xs.len() as f64;
    let (first, last) = (&samples[..third], &samples[samples.len() - third..]);
    let checks: [Check; 3] = [
        ("RSS", |s| s.rss_kib as f64, 1.25),
        ("tasks", |s| s.tasks as f64, 1.10),
        ("Redis channels", |s| s.redis_channels as f64, 1.10),
    ];
    let mut flat = true;
    for (name, f, limit) in checks {
        let (early, late) = (mean(first, f), mean(last, f));
        let ratio = if early > 0.0 { late / early } else { 1.0 };
        println!(
            "{name}: first third {early:.0}, last third {late:.0}, ratio {ratio:.3} (limit {limit})"
        );
        flat &= ratio <= limit;
    }
    println!("samples written to {}", out_dir.join("soak.json").display());
    if !flat {
        bail!("resource use is not flat");
    }
    println!("flat: RSS, tasks and Redis channels stay bounded under churn");
    Ok(())
}
