//! The brokers of the cross-instance runs: a local `redis-server` or `nats-server` (started
//! with `neffos::testkit::broker`, the harness of the integration tests, and killed when
//! dropped), what the broker did during a run, and the broker's own ceiling.
//!
//! What the broker did, for the namespace broadcasts of one saturating run:
//!
//! - **NATS**: `in_msgs` / `out_msgs` of the monitoring endpoint `/varz` (nats-server is
//!   started with `-m <port>`) before and after the run: messages the broker received from
//!   publishers and delivered to subscriptions. *Deliveries per broadcast* is the
//!   `out_msgs` delta divided by the broadcasts the load generator's sender asked for.
//!   During the run `/varz` gives the connections and `/connz?subs=1` the subscriptions of
//!   the namespace subject.
//! - **Redis**: Redis has no delivery counter, but a `PUBLISH` to a channel is delivered
//!   once per subscriber of that channel (no pattern subscriptions here: `PUBSUB NUMPAT`
//!   is checked). So deliveries = `PUBLISH` calls (the `cmdstat_publish` delta of
//!   `INFO commandstats`) × `PUBSUB NUMSUB <namespace channel>` sampled during the run;
//!   broker connections are `connected_clients` of `INFO clients` during the run (minus
//!   the probe's own connection).
//!
//! The ceiling: raw publish → 2 subscribers on the broker's plain protocol (no neffos, no
//! client library), 64 B payloads, one pipelined publisher connection that keeps at most
//! [`CEILING_WINDOW`] messages not yet received by both subscribers. Its clients run on
//! the servers' CPU (where the two instances run in the cluster rows), the broker where it
//! runs in the cluster rows.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use neffos::testkit::broker::{NatsServer, RedisServer};
use serde::{Deserialize, Serialize};

/// Messages of the ceiling run not yet received by every subscriber, at most.
pub(super) const CEILING_WINDOW: u64 = 20_000;
/// Subscribers of the ceiling run (the two instances of the cluster rows).
pub(super) const CEILING_SUBSCRIBERS: usize = 2;

/// What a broker did during one saturating cross-instance run.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerStats {
    /// Server instances (processes) joined through the broker.
    pub instances: usize,
    /// The channel (Redis) or subject (NATS) of the namespace broadcasts.
    pub channel: String,
    /// Broadcasts the load generator's sender asked for (its messages sent).
    pub broadcasts: u64,
    /// Messages the broker received from publishers during the run (Redis: `PUBLISH`
    /// calls; NATS: `in_msgs`).
    pub published: Option<u64>,
    /// Messages the broker delivered to subscribers during the run (NATS: `out_msgs`;
    /// Redis: `PUBLISH` calls × subscribers of the namespace channel).
    pub delivered: Option<u64>,
    /// Subscriptions to the namespace channel or subject during the run (most seen).
    pub namespace_subscribers: Option<u64>,
    /// Connections to the broker during the run (most seen), over every instance.
    pub connections: Option<u64>,
    /// Redis pattern subscriptions (`PUBSUB NUMPAT`, most seen): must be 0 for
    /// `delivered` to be exact.
    #[serde(default)]
    pub pattern_subscriptions: Option<u64>,
}

impl BrokerStats {
    /// Broker deliveries per broadcast.
    pub fn deliveries_per_broadcast(&self) -> Option<f64> {
        let delivered = self.delivered?;
        (self.broadcasts > 0).then(|| delivered as f64 / self.broadcasts as f64)
    }

    /// Broker publishes per broadcast.
    pub fn publishes_per_broadcast(&self) -> Option<f64> {
        let published = self.published?;
        (self.broadcasts > 0).then(|| published as f64 / self.broadcasts as f64)
    }

    /// Broker connections per instance.
    pub fn connections_per_instance(&self) -> Option<f64> {
        let connections = self.connections?;
        (self.instances > 0).then(|| connections as f64 / self.instances as f64)
    }
}

/// A broker's own ceiling: raw publish → subscribers, no neffos.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct BrokerCeiling {
    /// `redis` or `nats`.
    pub broker: String,
    /// Subscribers of the channel.
    pub subscribers: usize,
    /// Payload bytes.
    pub size: usize,
    /// Messages published per second and received by every subscriber (`None`: failed).
    pub publishes_per_s: Option<f64>,
    /// `measured`, or what failed.
    pub status: String,
}

/// Which broker.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Kind {
    Redis,
    Nats,
}

impl Kind {
    pub(super) fn name(self) -> &'static str {
        match self {
            Kind::Redis => "redis",
            Kind::Nats => "nats",
        }
    }

    /// The channel or subject of namespace `bench` of the bench servers (prefix `bench`):
    /// see `neffos-redis` / `neffos-nats` for ours, and Go neffos's
    /// `stackexchange/redis` (`<prefix>.<namespace>.`) and `stackexchange/nats`
    /// (`<prefix>.<namespace>`) for theirs.
    pub(super) fn namespace_channel(self, ours: bool) -> &'static str {
        match (self, ours) {
            (Kind::Redis, true) => "bench:ns:5:bench",
            (Kind::Redis, false) => "bench.bench.",
            (Kind::Nats, true) => "bench.ns.bench",
            (Kind::Nats, false) => "bench.bench",
        }
    }
}

/// Where a running broker listens (copied into the sampling thread).
#[derive(Debug, Clone, Copy)]
pub(super) struct Endpoint {
    kind: Kind,
    port: u16,
    /// NATS monitoring port.
    monitor: u16,
}

/// A running broker, killed when dropped.
#[derive(Debug)]
pub(super) struct Broker {
    _redis: Option<RedisServer>,
    nats: Option<NatsServer>,
    /// JetStream's store directory (removed once the broker is gone).
    jetstream: Option<std::path::PathBuf>,
    pub(super) endpoint: Endpoint,
}

impl Drop for Broker {
    fn drop(&mut self) {
        drop(self.nats.take());
        if let Some(dir) = &self.jetstream {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn panic_text(e: &(dyn std::any::Any + Send)) -> String {
    e.downcast_ref::<String>()
        .cloned()
        .or_else(|| e.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "it panicked".into())
}

impl Broker {
    /// Starts a broker on free loopback ports (NATS with its monitoring endpoint).
    pub(super) fn start(kind: Kind) -> anyhow::Result<Broker> {
        Self::start_with(kind, false)
    }

    /// [`Self::start`], NATS with JetStream (`-js`, its store in a temporary directory)
    /// when `jetstream` is set.
    pub(super) fn start_with(kind: Kind, jetstream: bool) -> anyhow::Result<Broker> {
        match kind {
            Kind::Redis => {
                let server = std::panic::catch_unwind(RedisServer::start)
                    .map_err(|e| anyhow::anyhow!("redis-server: {}", panic_text(&*e)))?;
                let port = server.port();
                Ok(Broker {
                    _redis: Some(server),
                    nats: None,
                    jetstream: None,
                    endpoint: Endpoint {
                        kind,
                        port,
                        monitor: 0,
                    },
                })
            }
            Kind::Nats => {
                let monitor = free_port()?;
                let arg = monitor.to_string();
                let dir = jetstream.then(|| {
                    std::env::temp_dir()
                        .join(format!("neffos-bench-js-{}-{monitor}", std::process::id()))
                });
                let dir_arg = dir.as_ref().map(|d| d.to_string_lossy().into_owned());
                let mut args = vec!["-m", &arg];
                if let Some(dir) = &dir_arg {
                    args.extend(["-js", "-sd", dir]);
                }
                let server = std::panic::catch_unwind(|| NatsServer::start_with(&args))
                    .map_err(|e| anyhow::anyhow!("nats-server: {}", panic_text(&*e)))?;
                let port = server.port();
                let broker = Broker {
                    _redis: None,
                    nats: Some(server),
                    jetstream: dir,
                    endpoint: Endpoint {
                        kind,
                        port,
                        monitor,
                    },
                };
                // The monitoring endpoint may come up just after the client port.
                let deadline = Instant::now() + Duration::from_secs(5);
                while let Err(e) = broker.endpoint.counters() {
                    if Instant::now() > deadline {
                        return Err(e.context("nats-server's monitoring endpoint"));
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                Ok(broker)
            }
        }
    }

    /// `redis://127.0.0.1:<port>` or `nats://127.0.0.1:<port>`.
    pub(super) fn url(&self) -> String {
        format!(
            "{}://127.0.0.1:{}",
            self.endpoint.kind.name(),
            self.endpoint.port
        )
    }

    /// `127.0.0.1:<port>`.
    pub(super) fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.endpoint.port)
    }
}

/// Counters read before and after a run.
#[derive(Debug, Clone, Copy, Default)]
pub(super) struct Counters {
    published: u64,
    delivered: Option<u64>,
}

impl Counters {
    /// Messages published to the broker so far (Redis `PUBLISH` calls, NATS `in_msgs`).
    pub(super) fn published(&self) -> u64 {
        self.published
    }
}

/// The most seen while sampling during a run.
#[derive(Debug, Clone, Copy, Default)]
struct Sample {
    connections: Option<u64>,
    subscribers: Option<u64>,
    patterns: Option<u64>,
}

fn max_opt(a: Option<u64>, b: Option<u64>) -> Option<u64> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.max(b)),
        (a, b) => a.or(b),
    }
}

impl Sample {
    fn merge(&mut self, other: Sample) {
        self.connections = max_opt(self.connections, other.connections);
        self.subscribers = max_opt(self.subscribers, other.subscribers);
        self.patterns = max_opt(self.patterns, other.patterns);
    }
}

impl Endpoint {
    fn sock(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    /// Messages published to and delivered by the broker so far.
    pub(super) fn counters(&self) -> anyhow::Result<Counters> {
        match self.kind {
            Kind::Redis => {
                let mut redis = Resp::connect(self.sock())?;
                let info = redis.command(&["INFO", "commandstats"])?.text()?;
                // `cmdstat_publish:calls=12,usec=…`; absent before the first PUBLISH.
                let published = info
                    .lines()
                    .find_map(|l| l.strip_prefix("cmdstat_publish:calls="))
                    .and_then(|rest| rest.split(',').next())
                    .map(|n| n.trim().parse::<u64>())
                    .transpose()
                    .context("cmdstat_publish")?
                    .unwrap_or(0);
                Ok(Counters {
                    published,
                    delivered: None,
                })
            }
            Kind::Nats => {
                let varz = http_json(self.monitor, "/varz")?;
                let field = |name: &str| {
                    varz[name]
                        .as_u64()
                        .with_context(|| format!("/varz has no {name}"))
                };
                Ok(Counters {
                    published: field("in_msgs")?,
                    delivered: Some(field("out_msgs")?),
                })
            }
        }
    }

    /// Bytes the broker received and sent so far (Redis: `INFO stats`
    /// `total_net_{input,output}_bytes`, this reading's own traffic included; NATS: `/varz`
    /// `in_bytes + out_bytes`, payloads only).
    pub(super) fn net_bytes(&self) -> anyhow::Result<u64> {
        match self.kind {
            Kind::Redis => {
                let mut redis = Resp::connect(self.sock())?;
                let info = redis.command(&["INFO", "stats"])?.text()?;
                let field = |name: &str| -> anyhow::Result<u64> {
                    info.lines()
                        .find_map(|l| l.strip_prefix(name))
                        .with_context(|| format!("INFO stats has no {name}"))?
                        .trim()
                        .parse::<u64>()
                        .with_context(|| name.to_owned())
                };
                Ok(field("total_net_input_bytes:")? + field("total_net_output_bytes:")?)
            }
            Kind::Nats => {
                let varz = http_json(self.monitor, "/varz")?;
                Ok(
                    varz["in_bytes"].as_u64().unwrap_or(0)
                        + varz["out_bytes"].as_u64().unwrap_or(0),
                )
            }
        }
    }

    /// Samples connections and subscriptions of `channel` every 300 ms until stopped.
    pub(super) fn watch(&self, channel: &str) -> Watch {
        let stop = Arc::new(AtomicBool::new(false));
        let (endpoint, channel, flag) = (*self, channel.to_owned(), stop.clone());
        let handle = std::thread::spawn(move || {
            let mut most = Sample::default();
            let mut redis = None;
            while !flag.load(Ordering::Relaxed) {
                if let Ok(s) = endpoint.sample(&channel, &mut redis) {
                    most.merge(s);
                }
                let until = Instant::now() + Duration::from_millis(300);
                while Instant::now() < until && !flag.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(20));
                }
            }
            most
        });
        Watch { stop, handle }
    }

    fn sample(&self, channel: &str, redis: &mut Option<Resp>) -> anyhow::Result<Sample> {
        match self.kind {
            Kind::Redis => {
                let conn = match redis {
                    Some(conn) => conn,
                    None => redis.insert(Resp::connect(self.sock())?),
                };
                let numsub = conn.command(&["PUBSUB", "NUMSUB", channel])?;
                let subscribers = match numsub {
                    Value::Array(items) => items.get(1).and_then(Value::int),
                    _ => None,
                };
                let patterns = conn.command(&["PUBSUB", "NUMPAT"])?.int();
                let info = conn.command(&["INFO", "clients"])?.text()?;
                let connections = info
                    .lines()
                    .find_map(|l| l.strip_prefix("connected_clients:"))
                    .and_then(|n| n.trim().parse::<u64>().ok())
                    // Not counting the probe's own connection.
                    .map(|n| n.saturating_sub(1));
                Ok(Sample {
                    connections,
                    subscribers,
                    patterns,
                })
            }
            Kind::Nats => {
                let varz = http_json(self.monitor, "/varz")?;
                let connz = http_json(self.monitor, "/connz?subs=1&limit=100000")?;
                let subscribers = connz["connections"].as_array().map(|conns| {
                    conns
                        .iter()
                        .filter_map(|c| c["subscriptions_list"].as_array())
                        .flatten()
                        .filter(|s| s.as_str() == Some(channel))
                        .count() as u64
                });
                Ok(Sample {
                    connections: varz["connections"].as_u64(),
                    subscribers,
                    patterns: None,
                })
            }
        }
    }
}

/// A sampling thread; [`Watch::finish`] stops it.
#[derive(Debug)]
pub(super) struct Watch {
    stop: Arc<AtomicBool>,
    handle: JoinHandle<Sample>,
}

impl Watch {
    /// Stops sampling and turns the counters into the run's [`BrokerStats`].
    pub(super) fn finish(
        self,
        endpoint: &Endpoint,
        channel: &str,
        instances: usize,
        before: Option<Counters>,
        broadcasts: u64,
    ) -> BrokerStats {
        self.stop.store(true, Ordering::Relaxed);
        let most = self.handle.join().unwrap_or_default();
        let after = endpoint.counters().ok();
        let (published, delivered) = match (before, after) {
            (Some(b), Some(a)) => {
                let published = a.published.saturating_sub(b.published);
                let delivered = match (b.delivered, a.delivered) {
                    (Some(b), Some(a)) => Some(a.saturating_sub(b)),
                    // Redis: every PUBLISH reaches every subscriber of the channel.
                    _ => most.subscribers.map(|s| published * s),
                };
                (Some(published), delivered)
            }
            _ => (None, None),
        };
        BrokerStats {
            instances,
            channel: channel.to_owned(),
            broadcasts,
            published,
            delivered,
            namespace_subscribers: most.subscribers,
            connections: most.connections,
            pattern_subscriptions: most.patterns,
        }
    }
}

/// A RESP value.
#[derive(Debug)]
enum Value {
    Text(String),
    Int(i64),
    Nil,
    Array(Vec<Value>),
}

impl Value {
    fn int(&self) -> Option<u64> {
        match self {
            Value::Int(n) => u64::try_from(*n).ok(),
            _ => None,
        }
    }

    fn text(self) -> anyhow::Result<String> {
        match self {
            Value::Text(s) => Ok(s),
            other => bail!("expected text from Redis, got {other:?}"),
        }
    }
}

/// A minimal RESP2 client for the probe's few commands.
#[derive(Debug)]
struct Resp {
    reader: BufReader<TcpStream>,
}

impl Resp {
    fn connect(addr: SocketAddr) -> anyhow::Result<Resp> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
            .with_context(|| format!("connecting to Redis at {addr}"))?;
        stream.set_read_timeout(Some(Duration::from_secs(3)))?;
        stream.set_write_timeout(Some(Duration::from_secs(3)))?;
        Ok(Resp {
            reader: BufReader::new(stream),
        })
    }

    fn command(&mut self, args: &[&str]) -> anyhow::Result<Value> {
        let mut out = format!("*{}\r\n", args.len());
        for a in args {
            out.push_str(&format!("${}\r\n{a}\r\n", a.len()));
        }
        self.reader.get_mut().write_all(out.as_bytes())?;
        self.value(0)
    }

    fn line(&mut self) -> anyhow::Result<String> {
        let mut line = String::new();
        if self.reader.read_line(&mut line)? == 0 {
            bail!("Redis closed the connection");
        }
        Ok(line.trim_end_matches(['\r', '\n']).to_owned())
    }

    fn value(&mut self, depth: usize) -> anyhow::Result<Value> {
        if depth > 4 {
            bail!("Redis reply nested too deeply");
        }
        let line = self.line()?;
        let (kind, rest) = line.split_at_checked(1).context("empty Redis reply")?;
        match kind {
            "+" => Ok(Value::Text(rest.to_owned())),
            "-" => bail!("Redis: {rest}"),
            ":" => Ok(Value::Int(rest.parse()?)),
            "$" => {
                let len: i64 = rest.parse()?;
                let Ok(len) = usize::try_from(len) else {
                    return Ok(Value::Nil);
                };
                if len > 16 << 20 {
                    bail!("Redis reply of {len} bytes");
                }
                let mut buf = vec![0; len + 2];
                self.reader.read_exact(&mut buf)?;
                buf.truncate(len);
                Ok(Value::Text(String::from_utf8_lossy(&buf).into_owned()))
            }
            "*" => {
                let n: i64 = rest.parse()?;
                let n = usize::try_from(n).unwrap_or(0).min(1024);
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(self.value(depth + 1)?);
                }
                Ok(Value::Array(items))
            }
            _ => bail!("unexpected Redis reply {line:?}"),
        }
    }
}

/// `GET path` on nats-server's monitoring port, as JSON.
pub(super) fn http_json(port: u16, path: &str) -> anyhow::Result<serde_json::Value> {
    let addr = SocketAddr::from(([127, 0, 0, 1], port));
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))
        .with_context(|| format!("connecting to {addr}"))?;
    stream.set_read_timeout(Some(Duration::from_secs(3)))?;
    write!(
        stream,
        "GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )?;
    let mut body = Vec::new();
    stream.take(64 << 20).read_to_end(&mut body)?;
    let start = memchr::memmem::find(&body, b"\r\n\r\n").context("no HTTP header end")? + 4;
    if !body.starts_with(b"HTTP/1.1 200") && !body.starts_with(b"HTTP/1.0 200") {
        bail!(
            "GET {path}: {}",
            String::from_utf8_lossy(&body[..start.min(body.len())]).trim()
        );
    }
    Ok(serde_json::from_slice(&body[start..])?)
}

/// Pins the calling thread to `cpus` (`taskset -p` on its thread ID); best effort.
fn pin_thread(cpus: Option<&str>) {
    let Some(cpus) = cpus else { return };
    // `/proc/thread-self` links to `<pid>/task/<tid>`.
    let Ok(link) = std::fs::read_link("/proc/thread-self") else {
        return;
    };
    let Some(tid) = link.file_name().and_then(|t| t.to_str()).map(str::to_owned) else {
        return;
    };
    let _ = Command::new("taskset")
        .args(["-p", "-c", cpus, &tid])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// Occurrences of `marker` in a stream read in pieces.
#[derive(Debug)]
struct Counter<'a> {
    marker: &'a [u8],
    carry: Vec<u8>,
}

impl Counter<'_> {
    fn feed(&mut self, data: &[u8]) -> u64 {
        let keep = self.marker.len() - 1;
        // Matches across the previous piece's end.
        let mut edge = std::mem::take(&mut self.carry);
        edge.extend_from_slice(&data[..keep.min(data.len())]);
        let mut n = memchr::memmem::find_iter(&edge, self.marker).count() as u64;
        n += memchr::memmem::find_iter(data, self.marker).count() as u64;
        let tail = if data.len() >= keep {
            &data[data.len() - keep..]
        } else {
            let from = edge.len().saturating_sub(keep);
            &edge[from..]
        };
        self.carry = tail.to_vec();
        n
    }
}

/// The broker's protocol for the ceiling run.
struct Wire {
    hello_sub: Vec<u8>,
    ready: &'static [u8],
    marker: &'static [u8],
    hello_pub: Vec<u8>,
    frame: Vec<u8>,
}

fn wire(kind: Kind, size: usize) -> Wire {
    // `x`s never contain a marker.
    let payload = "x".repeat(size);
    let connect = "CONNECT {\"verbose\":false,\"pedantic\":false}\r\n";
    match kind {
        Kind::Redis => Wire {
            hello_sub: b"SUBSCRIBE ceiling\r\n".to_vec(),
            ready: b"subscribe\r\n",
            marker: b"\r\nmessage\r\n",
            hello_pub: Vec::new(),
            frame: format!("*3\r\n$7\r\nPUBLISH\r\n$7\r\nceiling\r\n${size}\r\n{payload}\r\n")
                .into_bytes(),
        },
        Kind::Nats => Wire {
            hello_sub: format!("{connect}SUB ceiling 1\r\nPING\r\n").into_bytes(),
            ready: b"PONG\r\n",
            marker: b"MSG ",
            hello_pub: connect.as_bytes().to_vec(),
            frame: format!("PUB ceiling {size}\r\n{payload}\r\n").into_bytes(),
        },
    }
}

/// One subscriber of the ceiling run: counts messages into `count` until stopped.
fn subscriber(
    addr: SocketAddr,
    kind: Kind,
    size: usize,
    cpus: Option<String>,
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    ready: std::sync::mpsc::Sender<anyhow::Result<()>>,
) {
    pin_thread(cpus.as_deref());
    let wire = wire(kind, size);
    let connected = (|| -> anyhow::Result<TcpStream> {
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_read_timeout(Some(Duration::from_millis(100)))?;
        stream.write_all(&wire.hello_sub)?;
        let deadline = Instant::now() + Duration::from_secs(5);
        let mut seen = Vec::new();
        let mut buf = [0u8; 4096];
        while memchr::memmem::find(&seen, wire.ready).is_none() {
            if Instant::now() > deadline {
                bail!("the subscription was not confirmed");
            }
            match stream.read(&mut buf) {
                Ok(0) => bail!("the broker closed the subscriber"),
                Ok(n) => seen.extend_from_slice(&buf[..n]),
                Err(e) if is_timeout(&e) => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(stream)
    })();
    let mut stream = match connected {
        Ok(s) => {
            let _ = ready.send(Ok(()));
            s
        }
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    let mut counter = Counter {
        marker: wire.marker,
        carry: Vec::new(),
    };
    let mut buf = vec![0u8; 256 << 10];
    while !stop.load(Ordering::Relaxed) {
        match stream.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => {
                count.fetch_add(counter.feed(&buf[..n]), Ordering::Relaxed);
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => break,
        }
    }
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(
        e.kind(),
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
    )
}

/// Raw publish → [`CEILING_SUBSCRIBERS`] subscribers for `secs` seconds: messages per
/// second received by every subscriber. The clients run on `cpus`.
pub(super) fn ceiling(
    endpoint: &Endpoint,
    size: usize,
    secs: f64,
    cpus: Option<&str>,
) -> anyhow::Result<f64> {
    let addr = endpoint.sock();
    let kind = endpoint.kind;
    let stop = Arc::new(AtomicBool::new(false));
    let counts: Vec<Arc<AtomicU64>> = (0..CEILING_SUBSCRIBERS)
        .map(|_| Arc::new(AtomicU64::new(0)))
        .collect();
    let (ready_tx, ready_rx) = std::sync::mpsc::channel();
    let subs: Vec<JoinHandle<()>> = counts
        .iter()
        .map(|count| {
            let (count, stop, ready) = (count.clone(), stop.clone(), ready_tx.clone());
            let cpus = cpus.map(str::to_owned);
            std::thread::spawn(move || subscriber(addr, kind, size, cpus, count, stop, ready))
        })
        .collect();
    drop(ready_tx);
    let cpus = cpus.map(str::to_owned);
    let publisher = std::thread::spawn(move || -> anyhow::Result<f64> {
        for _ in 0..CEILING_SUBSCRIBERS {
            ready_rx
                .recv_timeout(Duration::from_secs(10))
                .context("a subscriber did not start")??;
        }
        pin_thread(cpus.as_deref());
        let wire = wire(kind, size);
        let least = || {
            counts
                .iter()
                .map(|c| c.load(Ordering::Relaxed))
                .min()
                .unwrap_or(0)
        };
        let mut stream = TcpStream::connect_timeout(&addr, Duration::from_secs(2))?;
        stream.set_write_timeout(Some(Duration::from_secs(5)))?;
        stream.set_nodelay(true)?;
        stream.write_all(&wire.hello_pub)?;
        // Replies (Redis: the number of receivers of each PUBLISH) are read and dropped.
        let mut replies = stream.try_clone()?;
        let drain = std::thread::spawn(move || {
            let mut buf = vec![0u8; 64 << 10];
            while matches!(replies.read(&mut buf), Ok(n) if n > 0) {}
        });
        const BATCH: u64 = 64;
        let batch = wire.frame.repeat(BATCH as usize);
        let began = Instant::now();
        let until = began + Duration::from_secs_f64(secs);
        let mut published = 0u64;
        let result = (|| -> anyhow::Result<f64> {
            while Instant::now() < until {
                if published - least().min(published) > CEILING_WINDOW {
                    // Not spinning: the subscribers share this CPU.
                    std::thread::sleep(Duration::from_micros(50));
                    continue;
                }
                stream.write_all(&batch)?;
                published += BATCH;
            }
            let deadline = Instant::now() + Duration::from_secs(5);
            while least() < published {
                if Instant::now() > deadline {
                    bail!("subscribers received {} of {published} messages", least());
                }
                std::thread::sleep(Duration::from_micros(200));
            }
            Ok(published as f64 / began.elapsed().as_secs_f64())
        })();
        let _ = stream.shutdown(Shutdown::Both);
        let _ = drain.join();
        result
    });
    let result = publisher
        .join()
        .map_err(|e| anyhow::anyhow!("the publisher panicked: {}", panic_text(&*e)))?;
    stop.store(true, Ordering::Relaxed);
    for s in subs {
        let _ = s.join();
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn markers_are_counted_across_pieces() {
        let stream = b"MSG a 1 2\r\nxx\r\nMSG a 1 2\r\nxx\r\nMSG a 1 2\r\nxx\r\n";
        for split in 0..stream.len() {
            for second in split..stream.len() {
                let mut c = Counter {
                    marker: b"MSG ",
                    carry: Vec::new(),
                };
                let n = c.feed(&stream[..split])
                    + c.feed(&stream[split..second])
                    + c.feed(&stream[second..]);
                assert_eq!(n, 3, "split at {split}, {second}");
            }
        }
    }
}
