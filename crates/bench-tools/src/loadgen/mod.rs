//! The load generator behind `neffos-loadgen`: it opens many WebSocket connections to a
//! peer server (neffos, Socket.IO or raw WebSocket), drives one scenario for a bounded
//! time, and reports what it measured as a [`Report`] (JSON).
//!
//! # Scenarios
//!
//! - **fanout**: `senders` extra connections emit `fanout` events that the server
//!   broadcasts to every receiving client of the namespace (or of one room per message
//!   with `rooms > 0`). With `rate > 0` the senders follow an open-loop schedule of `rate`
//!   messages per second in total; with `rate = 0` each sender saturates the server,
//!   keeping at most `window` messages not yet delivered to every receiver (the maximum
//!   sustainable rate).
//! - **cluster-fanout**: the same with several `--url`s (instances of one cluster): the
//!   receivers are spread over them and the senders use the first.
//! - **ask**: `clients` connections, Asks at `rate` per second in total (open loop), each
//!   answered with its own body.
//! - **cluster-ask**: Asks that cross instances (neffos only). `responders` connections on
//!   the last `--url` answer the server's Asks by echoing them (same wait token, same
//!   body); `clients` asking connections on the first `--url` send `ask-peer` Asks at
//!   `rate` per second in total, round-robin over the responders, whose body names a
//!   responder's connection ID: the server Asks that connection (through the exchange when
//!   it lives on another instance) and replies with its reply. With one `--url` asker and
//!   responder share the instance. Latency is the reply time minus the intended send time,
//!   as for `ask`; error replies are counted (`error_replies`) and lost. The bench server
//!   writes how long its `Server::ask` call took into the padding of each reply (body size
//!   of at least 48 bytes): those durations make `server_ask_latency`.
//! - **idle**: `clients` connections that only stay connected; with `--server-pid` the
//!   server's `VmRSS` is read before and after, giving KiB per connection.
//! - **churn**: `concurrency` loops that connect (handshake, namespace), then disconnect,
//!   for `duration` seconds.
//!
//! # Measuring
//!
//! Every measured message carries a [stamp](stamp): sender, sequence number and the
//! *intended* send time of the open-loop schedule (nanoseconds since the Unix epoch, the
//! clock all processes of the machine share). A receiver records `now - intended` in an
//! HDR histogram, so a late sender (or a stalled server) shows as latency instead of
//! silently sending fewer messages: coordinated omission is accounted for. The senders run
//! on their own threads with a timer slack of 1 ns, so that a sleep until the intended
//! time does not overshoot by Linux's default 50 µs (which would count as latency of the
//! server). Messages are
//! numbered, expected deliveries are `sent × connected receivers`, and the difference is
//! reported as lost. The first `warmup` seconds are delivered and counted but not recorded
//! in the histogram.
//!
//! # Processes
//!
//! With `--workers K` the coordinator starts K copies of itself (`neffos-loadgen worker`),
//! each with its share of the connections (a process may hold at most 20,000 file
//! descriptors), waits until every worker is connected, starts them at one shared instant
//! and merges their results. Connections are bound to source addresses 127.0.0.2,
//! 127.0.0.3, … (`source_ips` of them) before connecting, so that each address has its own
//! ephemeral port range. Every connection is read (pings answered) from the moment it is
//! open, so connecting a hundred thousand clients may take longer than the server's idle
//! timeout.
//!
//! # One message at a time
//!
//! With `--per-message` (fan-out scenarios) every message is followed on its own: how many
//! receivers got it, its latency percentiles, and the time from its intended send time
//! until the *last* receiver got it (the time a broadcast takes to reach everyone). Use it
//! with a low `--rate` (e.g. `--rate 1 --duration 5`: five broadcasts) and a longer
//! `--drain-quiet` when one broadcast takes longer than 300 ms to reach everyone.

mod coord;
pub mod proto;
pub mod stamp;
pub mod stats;
mod worker;
pub mod ws;

use std::fmt;

use serde::{Deserialize, Serialize};

pub use coord::{START_DELAY, run, run_observed, run_worker};
pub use proto::Proto;
pub use stats::Latency;

/// What a run does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
#[serde(rename_all = "kebab-case")]
pub enum Scenario {
    /// Senders → every client of a namespace or room.
    #[default]
    Fanout,
    /// Fan-out with the clients spread over several instances.
    ClusterFanout,
    /// Ask round trips.
    Ask,
    /// Asks relayed by the server to a responder connection on another instance.
    ClusterAsk,
    /// Idle connections and the server's memory.
    Idle,
    /// Connects and disconnects per second.
    Churn,
}

impl fmt::Display for Scenario {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Scenario::Fanout => "fanout",
            Scenario::ClusterFanout => "cluster-fanout",
            Scenario::Ask => "ask",
            Scenario::ClusterAsk => "cluster-ask",
            Scenario::Idle => "idle",
            Scenario::Churn => "churn",
        })
    }
}

/// Everything a run needs; the command line of every scenario.
#[derive(Debug, Clone, Serialize, Deserialize, clap::Args)]
pub struct Spec {
    /// The scenario (set by the subcommand).
    #[arg(skip)]
    pub scenario: Scenario,
    /// WebSocket URL of the server (repeat for the instances of a cluster).
    #[arg(long = "url", required = true)]
    pub urls: Vec<String>,
    /// Protocol spoken to the server.
    #[arg(long, value_enum, default_value_t = Proto::Neffos)]
    pub proto: Proto,
    /// Receiving connections (fanout), asking connections (ask, cluster-ask), idle
    /// connections (idle).
    #[arg(long, default_value_t = 1000)]
    pub clients: usize,
    /// Sending connections (fanout).
    #[arg(long, default_value_t = 1)]
    pub senders: usize,
    /// Responding connections on the last `--url` (cluster-ask; 0: as many as `--clients`).
    #[arg(long, default_value_t = 0)]
    #[serde(default)]
    pub responders: usize,
    /// Rooms (0: broadcast to the namespace). Client i joins room `r{i % rooms}`; message
    /// k goes to room `r{k % rooms}`.
    #[arg(long, default_value_t = 0)]
    pub rooms: usize,
    /// Body size in bytes (at least the 35-byte stamp).
    #[arg(long, default_value_t = 64)]
    pub size: usize,
    /// Messages (fanout) or Asks (ask) per second, over all senders; 0: saturate (fanout).
    #[arg(long, default_value_t = 1000.0)]
    pub rate: f64,
    /// Messages per sender not yet delivered to every receiver, when saturating.
    #[arg(long, default_value_t = 32)]
    pub window: usize,
    /// Seconds of sending (fanout, ask), holding (idle) or churning (churn).
    #[arg(long, default_value_t = 5.0)]
    pub duration: f64,
    /// Seconds at the start whose latencies are not recorded.
    #[arg(long, default_value_t = 0.5)]
    pub warmup: f64,
    /// Worker processes sharing the connections.
    #[arg(long, default_value_t = 1)]
    pub workers: usize,
    /// Source addresses 127.0.0.2 … used round-robin.
    #[arg(long, default_value_t = 16)]
    pub source_ips: usize,
    /// Connections being opened at once.
    #[arg(long, default_value_t = 128)]
    pub connect_concurrency: usize,
    /// Concurrent connect/disconnect loops (churn).
    #[arg(long, default_value_t = 16)]
    pub concurrency: usize,
    /// The server's process ID: its CPU time is measured, and its memory (idle).
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// Seconds to wait after connecting before reading the server's memory (idle).
    #[arg(long, default_value_t = 2.0)]
    pub settle: f64,
    /// A label copied into the report.
    #[arg(long)]
    pub label: Option<String>,
    /// Per-message statistics (fanout, cluster-fanout): for each of the first
    /// [`MAX_TRACKED_SEQ`] messages of every sender, its deliveries, losses, latency
    /// percentiles and the time until the last receiver got it.
    #[arg(long)]
    #[serde(default)]
    pub per_message: bool,
    /// Once sending is over, the run ends after this many seconds without a delivery…
    #[arg(long, default_value_t = 0.3)]
    #[serde(default = "default_drain_quiet")]
    pub drain_quiet: f64,
    /// …or at the latest this many seconds after sending is over.
    #[arg(long, default_value_t = 5.0)]
    #[serde(default = "default_drain_max")]
    pub drain_max: f64,
    /// Seconds the workers may take to open every connection.
    #[arg(long, default_value_t = 180.0)]
    #[serde(default = "default_connect_deadline")]
    pub connect_deadline: f64,
    /// Every connection presents its own connection-state recovery session key (query
    /// parameter `X-Websocket-Header-X-Neffos-Session`, as a neffos.js app sends it), so
    /// that a server with recovery on keeps and checkpoints a session for each (neffos).
    #[arg(long)]
    #[serde(default)]
    pub sessions: bool,
}

/// Messages per sender tracked one by one with `--per-message` (sequence numbers below
/// this): keeps the memory of a long run bounded.
pub const MAX_TRACKED_SEQ: u64 = 256;

fn default_drain_quiet() -> f64 {
    0.3
}

fn default_drain_max() -> f64 {
    5.0
}

fn default_connect_deadline() -> f64 {
    180.0
}

impl Default for Spec {
    fn default() -> Self {
        Spec {
            scenario: Scenario::Fanout,
            urls: Vec::new(),
            proto: Proto::Neffos,
            clients: 1000,
            senders: 1,
            responders: 0,
            rooms: 0,
            size: 64,
            rate: 1000.0,
            window: 32,
            duration: 5.0,
            warmup: 0.5,
            workers: 1,
            source_ips: 16,
            connect_concurrency: 128,
            concurrency: 16,
            server_pid: None,
            settle: 2.0,
            label: None,
            per_message: false,
            drain_quiet: default_drain_quiet(),
            drain_max: default_drain_max(),
            connect_deadline: default_connect_deadline(),
            sessions: false,
        }
    }
}

/// The result of a run (merged over workers).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Report {
    /// What was run.
    pub spec: Spec,
    /// Connections established (receivers, askers or idle ones; senders not included).
    pub connected: usize,
    /// Connections that failed to connect or join.
    pub connect_failed: usize,
    /// Seconds to establish them.
    pub connect_s: f64,
    /// Messages or Asks sent.
    pub sent: u64,
    /// Deliveries (or replies) expected.
    pub expected: u64,
    /// Deliveries (or replies) received.
    pub received: u64,
    /// `expected - received` (never negative).
    pub lost: u64,
    /// Connections that the server closed or lost during the run.
    pub disconnects: u64,
    /// Deliveries that reached a connection after a later message of the same sender, or
    /// twice (fanout): per-sender order broken.
    #[serde(default)]
    pub out_of_order: u64,
    /// Responding connections established (cluster-ask).
    #[serde(default)]
    pub responders_connected: usize,
    /// Server Asks the responders answered (cluster-ask).
    #[serde(default)]
    pub answered: u64,
    /// Error replies to Asks (ask, cluster-ask); counted in `lost` as well.
    #[serde(default)]
    pub error_replies: u64,
    /// Offered messages (Asks) per second.
    pub offered_per_s: f64,
    /// Offered deliveries per second (`offered_per_s × recipients`).
    pub offered_deliveries_per_s: f64,
    /// Deliveries (or replies) per second, from the start to the last delivery.
    pub deliveries_per_s: f64,
    /// Seconds from the start to the last delivery.
    pub elapsed_s: f64,
    /// Latency from the intended send time (fanout, ask) or connect time (churn).
    pub latency: Latency,
    /// Cluster-ask: how long the bench server's `Server::ask` call took (from the call to
    /// the responder's reply, measured on the server and carried back in each `ask-peer`
    /// reply); `None` for other scenarios, or when the replies carried no duration.
    #[serde(default)]
    pub server_ask_latency: Option<Latency>,
    /// Saturating senders that gave up waiting for a window slot (lost messages).
    pub stalls: u64,
    /// Connect/disconnect cycles completed (churn).
    pub cycles: u64,
    /// Failed cycles (churn).
    pub cycle_failures: u64,
    /// Cycles per second (churn).
    pub cycles_per_s: f64,
    /// Server `VmRSS` before connecting, KiB (idle).
    pub rss_before_kib: Option<u64>,
    /// Server `VmRSS` with every connection open, KiB (idle).
    pub rss_after_kib: Option<u64>,
    /// `(after - before) / connected`, KiB (idle).
    pub kib_per_conn: Option<f64>,
    /// Server CPU seconds during the measured phase.
    pub server_cpu_s: Option<f64>,
    /// Server CPU microseconds per delivery (or reply).
    pub server_cpu_us_per_delivery: Option<f64>,
    /// Load generator CPU time during the measured phase, in cores (1.0 = one core busy).
    pub loadgen_cores: f64,
    /// CPU used meanwhile by every other process of the machine, in cores: above a few
    /// tenths the measurement was disturbed.
    #[serde(default)]
    pub other_cores: Option<f64>,
    /// The first errors seen.
    pub errors: Vec<String>,
    /// One entry per message sent, in order (`--per-message`; the first
    /// [`MAX_TRACKED_SEQ`] of each sender).
    #[serde(default)]
    pub per_message: Vec<MessageStat>,
}

/// What became of one message (`--per-message`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct MessageStat {
    /// Sender number.
    pub sender: u32,
    /// Sequence number of the message for its sender.
    pub seq: u64,
    /// Receivers it was meant for (connected receivers of its namespace or room).
    pub expected: u64,
    /// Receivers that got it.
    pub received: u64,
    /// `expected - received` (never negative).
    pub lost: u64,
    /// Latency of its deliveries from the intended send time (p50, p99, …).
    pub latency: Latency,
    /// Microseconds from the intended send time until the last receiver got it, when
    /// every receiver did (`None` when some never did).
    pub reach_all_us: Option<f64>,
}
