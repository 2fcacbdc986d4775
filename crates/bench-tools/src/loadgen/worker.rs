//! One worker's share of a run: its connections, its receivers and (worker 0) its senders.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use hdrhistogram::Histogram;
use parking_lot::Mutex;
use serde::{Deserialize, Serialize};
use tokio::sync::watch;

use super::proto::{self, Proto};
use super::stamp::{self, Stamp, now_ns};
use super::stats::{self, Recorder};
use super::ws::{self, Endpoint, StdWriter, WsClient};
use super::{MAX_TRACKED_SEQ, Scenario, Spec};

mod traffic;

use traffic::traffic;

/// Deadline of one connection's WebSocket handshake.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(20);
/// How long a saturating sender waits for one window slot before counting a stall.
const STALL: Duration = Duration::from_secs(2);
/// Errors kept per worker.
const MAX_ERRORS: usize = 5;

/// What a worker tells the coordinator once connected.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct ReadyInfo {
    pub(crate) connected: usize,
    pub(crate) connect_failed: usize,
}

/// A worker's measurements.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct WorkerOut {
    pub(crate) connected: usize,
    pub(crate) connect_failed: usize,
    pub(crate) connect_s: f64,
    /// Connected receivers per room (one entry, the namespace, without rooms).
    pub(crate) receivers_per_room: Vec<u64>,
    /// Messages sent per room (fanout; one entry without rooms), or Asks sent.
    pub(crate) sent_per_room: Vec<u64>,
    pub(crate) received: u64,
    pub(crate) disconnects: u64,
    pub(crate) hist: Vec<(u64, u64)>,
    pub(crate) last_recv_ns: u64,
    pub(crate) stalls: u64,
    pub(crate) cycles: u64,
    pub(crate) cycle_failures: u64,
    pub(crate) cpu_s: f64,
    pub(crate) errors: Vec<String>,
    /// Messages sent per sender (fanout; worker 0).
    #[serde(default)]
    pub(crate) sent_per_sender: Vec<u64>,
    /// Deliveries per message (`--per-message`).
    #[serde(default)]
    pub(crate) per_message: Vec<MessageOut>,
    /// Responding connections (cluster-ask).
    #[serde(default)]
    pub(crate) responders_connected: usize,
    /// Server Asks answered by the responders (cluster-ask).
    #[serde(default)]
    pub(crate) answered: u64,
    /// Error replies to Asks.
    #[serde(default)]
    pub(crate) error_replies: u64,
    /// Durations of the bench server's `Server::ask` calls, as the `ask-peer` replies
    /// carried them (cluster-ask).
    #[serde(default)]
    pub(crate) server_ask_hist: Vec<(u64, u64)>,
    /// Deliveries that came to a connection after a later message of the same sender (or
    /// twice): per-sender order broken.
    #[serde(default)]
    pub(crate) out_of_order: u64,
}

/// One message's deliveries to a worker's receivers (`--per-message`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub(crate) struct MessageOut {
    pub(crate) sender: u32,
    pub(crate) seq: u64,
    pub(crate) received: u64,
    /// The largest latency, exact (the histogram rounds).
    pub(crate) max_ns: u64,
    pub(crate) hist: Vec<(u64, u64)>,
}

/// Deliveries of one message so far.
#[derive(Debug)]
struct Tracked {
    received: u64,
    max_ns: u64,
    hist: Histogram<u64>,
}

/// Deliveries per message (`--per-message`), for sequence numbers below
/// [`MAX_TRACKED_SEQ`].
#[derive(Debug, Default)]
struct PerMessage(Mutex<HashMap<(u32, u64), Tracked>>);

impl PerMessage {
    fn record(&self, stamp: Stamp, latency_ns: u64) {
        if stamp.seq >= MAX_TRACKED_SEQ {
            return;
        }
        let mut map = self.0.lock();
        let tracked = map
            .entry((stamp.sender, stamp.seq))
            .or_insert_with(|| Tracked {
                received: 0,
                max_ns: 0,
                hist: stats::new_message_histogram(),
            });
        tracked.received += 1;
        tracked.max_ns = tracked.max_ns.max(latency_ns);
        let _ = tracked.hist.record(latency_ns.max(1));
    }

    fn take(&self) -> Vec<MessageOut> {
        let mut out: Vec<MessageOut> = self
            .0
            .lock()
            .drain()
            .map(|((sender, seq), t)| MessageOut {
                sender,
                seq,
                received: t.received,
                max_ns: t.max_ns,
                hist: stats::to_pairs(&t.hist),
            })
            .collect();
        out.sort_by_key(|m| (m.sender, m.seq));
        out
    }
}

impl WorkerOut {
    fn error(&mut self, e: impl std::fmt::Display) {
        if self.errors.len() < MAX_ERRORS {
            self.errors.push(e.to_string());
        }
    }
}

/// State shared by a worker's receiving tasks.
#[derive(Debug, Default)]
struct Shared {
    recorder: Recorder,
    received: AtomicU64,
    disconnects: AtomicU64,
    out_of_order: AtomicU64,
    last_recv_ns: AtomicU64,
    /// Latencies of messages meant to be sent before this instant are not recorded
    /// (`u64::MAX` until the start).
    record_from_ns: AtomicU64,
    window: Option<Window>,
    per_message: Option<PerMessage>,
    /// Asks: error replies are counted (neffos), and the first one kept.
    check_errors: bool,
    error_replies: AtomicU64,
    first_error: Mutex<Option<String>>,
    /// Server Asks answered by responders (cluster-ask).
    answered: AtomicU64,
    /// Durations of the server's `Server::ask` calls carried by the replies (cluster-ask).
    server_ask: Option<Recorder>,
}

impl Shared {
    fn on_stamp(&self, conn: usize, stamp: Stamp, payload: &[u8]) {
        let now = now_ns();
        let latency = now.saturating_sub(stamp.t_ns);
        self.received.fetch_add(1, Ordering::Relaxed);
        self.last_recv_ns.fetch_max(now, Ordering::Relaxed);
        if stamp.t_ns >= self.record_from_ns.load(Ordering::Relaxed) {
            self.recorder.record(conn, latency);
            if let Some(server_ask) = &self.server_ask
                && let Some(ns) = stamp::decode_server_ns(payload)
            {
                server_ask.record(conn, ns);
            }
        }
        if let Some(per_message) = &self.per_message {
            per_message.record(stamp, latency);
        }
        if let Some(window) = &self.window {
            window.ack(stamp);
        }
    }

    fn on_error_reply(&self, payload: &[u8]) {
        self.error_replies.fetch_add(1, Ordering::Relaxed);
        let mut first = self.first_error.lock();
        if first.is_none() {
            *first = Some(format!(
                "error reply: {}",
                String::from_utf8_lossy(&payload[..payload.len().min(200)])
            ));
        }
    }
}

/// Delivery counters of the messages in flight of saturating senders: slot `k % window` of
/// sender `s` counts the receivers that got message `k`.
#[derive(Debug)]
struct Window {
    size: usize,
    slots: Vec<AtomicU32>,
}

impl Window {
    fn new(senders: usize, size: usize) -> Self {
        Window {
            size,
            slots: (0..senders * size).map(|_| AtomicU32::new(0)).collect(),
        }
    }

    fn slot(&self, sender: usize, seq: u64) -> &AtomicU32 {
        &self.slots[sender * self.size + (seq % self.size as u64) as usize]
    }

    fn ack(&self, stamp: Stamp) {
        let sender = stamp.sender as usize;
        if sender * self.size < self.slots.len() {
            self.slot(sender, stamp.seq).fetch_add(1, Ordering::AcqRel);
        }
    }
}

/// The source address of connection `i`: 127.0.0.2, 127.0.0.3, …
fn source_ip(spec: &Spec, i: usize) -> Option<IpAddr> {
    (spec.source_ips > 0).then(|| {
        let n = (i % spec.source_ips.min(250)) as u8;
        IpAddr::V4(Ipv4Addr::new(127, 0, 0, 2 + n))
    })
}

fn room_names(spec: &Spec) -> Vec<String> {
    (0..spec.rooms).map(|r| format!("r{r}")).collect()
}

/// `endpoint` with a session key of connection `i` of this run (`Spec::sessions`): unique
/// across workers and runs, so that no connection claims another's kept session.
fn session_endpoint(endpoint: &Endpoint, i: usize) -> Endpoint {
    static RUN: std::sync::OnceLock<u128> = std::sync::OnceLock::new();
    let run = RUN.get_or_init(|| {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos())
    });
    let sep = if endpoint.path.contains('?') {
        '&'
    } else {
        '?'
    };
    Endpoint {
        path: format!(
            "{}{sep}X-Websocket-Header-X-Neffos-Session=lg-{}-{run:x}-{i}",
            endpoint.path,
            std::process::id()
        ),
        ..endpoint.clone()
    }
}

/// Opens connection `i` to `endpoint` and joins the namespace and `rooms`; returns it and
/// its ID (neffos).
async fn open(
    spec: &Spec,
    endpoint: &Endpoint,
    i: usize,
    rooms: &[String],
) -> anyhow::Result<(WsClient, Option<String>)> {
    let with_session;
    let endpoint = if spec.sessions {
        with_session = session_endpoint(endpoint, i);
        &with_session
    } else {
        endpoint
    };
    let mut ws = WsClient::connect(endpoint, source_ip(spec, i), CONNECT_TIMEOUT).await?;
    let id = spec.proto.join(&mut ws, rooms).await?;
    Ok((ws, id))
}

/// Reads until `stop` (then hands the connection back for a clean close) or until the
/// server closes; answers keep-alives; records stamps unless `count` is false.
async fn receive(
    mut ws: WsClient,
    conn: usize,
    proto: Proto,
    shared: Arc<Shared>,
    count: bool,
    mut stop: watch::Receiver<bool>,
) -> Option<WsClient> {
    // The next sequence number expected from each sender on this connection.
    let mut next_seq: Vec<u64> = Vec::new();
    loop {
        let frame = tokio::select! {
            biased;
            _ = async { drop(stop.wait_for(|s| *s).await) } => return Some(ws),
            frame = ws.recv() => frame,
        };
        let lost = match frame {
            Ok(Some(f)) => match f.opcode {
                ws::TEXT | ws::BINARY => {
                    if let Some(answer) = proto.keepalive_answer(&f.payload) {
                        ws.send_text(answer).await.is_err()
                    } else {
                        if count
                            && shared.check_errors
                            && proto == Proto::Neffos
                            && proto::neffos_is_error(&f.payload)
                        {
                            shared.on_error_reply(&f.payload);
                        } else if count && let Some(stamp) = stamp::decode(&f.payload) {
                            if !in_order(&mut next_seq, stamp) {
                                shared.out_of_order.fetch_add(1, Ordering::Relaxed);
                            }
                            shared.on_stamp(conn, stamp, &f.payload);
                        }
                        false
                    }
                }
                ws::PING => ws.pong(&f.payload).await.is_err(),
                ws::CLOSE => true,
                _ => false,
            },
            Ok(None) | Err(_) => true,
        };
        if lost {
            if count {
                shared.disconnects.fetch_add(1, Ordering::Relaxed);
            }
            return None;
        }
    }
}

/// Whether `stamp` comes after every earlier delivery of its sender on this connection
/// (`next_seq`: the next sequence number expected per sender; a gap is a loss, not a
/// reordering).
fn in_order(next_seq: &mut Vec<u64>, stamp: Stamp) -> bool {
    let sender = stamp.sender as usize;
    if sender >= 1024 {
        return true; // not one of ours: the load generator has far fewer senders
    }
    if next_seq.len() <= sender {
        next_seq.resize(sender + 1, 0);
    }
    let ordered = stamp.seq >= next_seq[sender];
    next_seq[sender] = next_seq[sender].max(stamp.seq + 1);
    ordered
}

/// A responder (cluster-ask): answers every server Ask by echoing it (same wait token, same
/// body) until `stop` (then hands the connection back) or until the server closes.
async fn respond(
    mut ws: WsClient,
    proto: Proto,
    shared: Arc<Shared>,
    mut stop: watch::Receiver<bool>,
) -> Option<WsClient> {
    loop {
        let frame = tokio::select! {
            biased;
            _ = async { drop(stop.wait_for(|s| *s).await) } => return Some(ws),
            frame = ws.recv() => frame,
        };
        let lost = match frame {
            Ok(Some(f)) => match f.opcode {
                ws::TEXT | ws::BINARY => match proto.server_ask_echo(&f.payload) {
                    Some(echo) => {
                        let failed = ws.send_text(echo).await.is_err();
                        if !failed {
                            shared.answered.fetch_add(1, Ordering::Relaxed);
                        }
                        failed
                    }
                    None => false,
                },
                ws::PING => ws.pong(&f.payload).await.is_err(),
                ws::CLOSE => true,
                _ => false,
            },
            Ok(None) | Err(_) => true,
        };
        if lost {
            shared.disconnects.fetch_add(1, Ordering::Relaxed);
            return None;
        }
    }
}

/// Connects `ids` (with their rooms) with bounded concurrency, hands each open connection
/// to `opened` right away (so that it is read, and pings answered, while the others
/// connect), and counts successes and failures in `out`.
async fn connect_all(
    spec: &Spec,
    endpoints: &[Endpoint],
    ids: Vec<usize>,
    rooms: &[String],
    connected_counter: &AtomicU64,
    out: &mut WorkerOut,
    mut opened: impl FnMut(usize, WsClient, Option<String>) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut connected = 0;
    let mut attempts = futures_util::stream::iter(ids)
        .map(|i| {
            let endpoint = &endpoints[i % endpoints.len()];
            let joined: Vec<String> = if rooms.is_empty() {
                Vec::new()
            } else {
                vec![rooms[i % rooms.len()].clone()]
            };
            async move { (i, open(spec, endpoint, i, &joined).await) }
        })
        .buffer_unordered(spec.connect_concurrency.max(1));
    while let Some((i, result)) = attempts.next().await {
        match result {
            Ok((ws, id)) => {
                connected_counter.fetch_add(1, Ordering::Relaxed);
                connected += 1;
                opened(i, ws, id)?;
            }
            Err(e) => {
                out.connect_failed += 1;
                out.error(format_args!("connection {i}: {e:#}"));
            }
        }
    }
    out.connected = connected;
    out.connect_s = started.elapsed().as_secs_f64();
    Ok(())
}

/// Closes every connection cleanly (bounded in time).
async fn close_all(conns: Vec<WsClient>) {
    let closing = futures_util::stream::iter(conns)
        .map(|ws| ws.close(Duration::from_millis(500)))
        .buffer_unordered(512)
        .collect::<Vec<()>>();
    let _ = tokio::time::timeout(Duration::from_secs(10), closing).await;
}

/// Waits until `ns` (Unix nanoseconds).
async fn sleep_until_ns(ns: u64) {
    let now = now_ns();
    if ns > now {
        tokio::time::sleep(Duration::from_nanos(ns - now)).await;
    }
}

/// Runs worker `index` of `workers`. `ready` is called once connected and returns the
/// shared start instant (Unix nanoseconds). `connected` counts connections as they open
/// (for progress display).
pub(crate) async fn run<F, Fut>(
    spec: &Spec,
    index: usize,
    workers: usize,
    connected: Arc<AtomicU64>,
    ready: F,
) -> anyhow::Result<WorkerOut>
where
    F: FnOnce(ReadyInfo) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let endpoints = spec
        .urls
        .iter()
        .map(|u| Endpoint::parse(u))
        .collect::<anyhow::Result<Vec<_>>>()?;
    match spec.scenario {
        Scenario::Fanout
        | Scenario::ClusterFanout
        | Scenario::Ask
        | Scenario::ClusterAsk
        | Scenario::Idle => traffic(spec, &endpoints, index, workers, &connected, ready).await,
        Scenario::Churn => churn(spec, &endpoints, index, ready).await,
    }
}

/// A sender's schedule.
#[derive(Debug, Clone)]
struct SendPlan {
    proto: Proto,
    rooms: Vec<String>,
    /// Connection IDs of the responders (cluster-ask; empty otherwise).
    responders: Vec<String>,
    size: usize,
    sender: usize,
    senders: usize,
    /// Messages per second over all senders (0: saturate).
    rate: f64,
    t0: u64,
    t_end: u64,
}

/// What a sender thread did.
#[derive(Debug, Default)]
struct Sent {
    per_room: Vec<u64>,
    stalls: u64,
    error: Option<String>,
}

/// Makes the calling thread's sleeps end on time: Linux lets a sleep overshoot by the
/// thread's timer slack (50 µs by default), which an open-loop schedule would count as
/// latency (every message late by that much). Best effort.
fn precise_sleeps() {
    let _ = rustix::thread::set_current_timer_slack(std::num::NonZeroU64::new(1));
}

/// Sleeps the calling thread until `ns` (Unix nanoseconds).
fn wait_until(ns: u64) {
    let now = now_ns();
    if ns > now {
        std::thread::sleep(Duration::from_nanos(ns - now));
    }
}

fn frame_for(
    plan: &SendPlan,
    frame: &mut Vec<u8>,
    body: &mut Vec<u8>,
    seq: u64,
    t_ns: u64,
) -> usize {
    let room = if plan.rooms.is_empty() {
        0
    } else {
        (seq % plan.rooms.len() as u64) as usize
    };
    body.clear();
    stamp::encode(
        body,
        Stamp {
            sender: plan.sender as u32,
            seq,
            t_ns,
        },
        plan.size,
    );
    frame.clear();
    let name = plan.rooms.get(room).map(String::as_str).unwrap_or("");
    plan.proto.fanout_frame(frame, name, body);
    room
}

/// Open loop: message `k` of sender `s` is meant for `t0 + (k·S + s) / rate`.
fn send_open_loop(plan: &SendPlan, mut writer: StdWriter, abort: &AtomicBool) -> Sent {
    let mut sent = Sent {
        per_room: vec![0; plan.rooms.len().max(1)],
        ..Sent::default()
    };
    precise_sleeps();
    let step = 1e9 / plan.rate;
    let (mut frame, mut body) = (Vec::new(), Vec::new());
    for seq in 0u64.. {
        let intended =
            plan.t0 + ((seq as f64 * plan.senders as f64 + plan.sender as f64) * step) as u64;
        if intended >= plan.t_end || abort.load(Ordering::Relaxed) {
            break;
        }
        wait_until(intended);
        let room = frame_for(plan, &mut frame, &mut body, seq, intended);
        if let Err(e) = writer.send_text(&frame) {
            sent.error = Some(format!("sender {}: {e}", plan.sender));
            break;
        }
        sent.per_room[room] += 1;
    }
    sent
}

/// Saturation: send as fast as the slowest receiver allows, with at most `window` messages
/// not yet delivered to every receiver.
fn send_saturating(
    plan: &SendPlan,
    mut writer: StdWriter,
    shared: &Shared,
    targets: &[u64],
    abort: &AtomicBool,
) -> Sent {
    let mut sent = Sent {
        per_room: vec![0; plan.rooms.len().max(1)],
        ..Sent::default()
    };
    let Some(window) = &shared.window else {
        return sent;
    };
    let target_of = |seq: u64| -> u32 {
        let room = if plan.rooms.is_empty() {
            0
        } else {
            (seq % plan.rooms.len() as u64) as usize
        };
        targets.get(room).copied().unwrap_or(0) as u32
    };
    let (mut frame, mut body) = (Vec::new(), Vec::new());
    for seq in 0u64.. {
        if now_ns() >= plan.t_end || abort.load(Ordering::Relaxed) {
            break;
        }
        if seq >= window.size as u64 {
            let previous = seq - window.size as u64;
            let slot = window.slot(plan.sender, previous);
            let target = target_of(previous);
            let give_up = Instant::now() + STALL;
            let mut spins = 0u32;
            while slot.load(Ordering::Acquire) < target {
                if Instant::now() > give_up || abort.load(Ordering::Relaxed) {
                    sent.stalls += 1;
                    break;
                }
                spins += 1;
                if spins < 64 {
                    std::thread::yield_now();
                } else {
                    std::thread::sleep(Duration::from_micros(20));
                }
            }
            slot.store(0, Ordering::Release);
        }
        let room = frame_for(plan, &mut frame, &mut body, seq, now_ns());
        if let Err(e) = writer.send_text(&frame) {
            sent.error = Some(format!("sender {}: {e}", plan.sender));
            break;
        }
        sent.per_room[room] += 1;
    }
    sent
}

/// Open-loop Asks over `writers`, round-robin: Ask `k` of worker `w` is meant for
/// `t0 + (k·W + w) / rate`. With responders (cluster-ask), Ask `k` is an `ask-peer` to
/// responder `k mod R`.
fn send_asks(plan: &SendPlan, mut writers: Vec<StdWriter>, abort: &AtomicBool) -> Sent {
    let mut sent = Sent {
        per_room: vec![0],
        ..Sent::default()
    };
    precise_sleeps();
    let step = 1e9 / plan.rate.max(1e-3);
    let (mut frame, mut body) = (Vec::new(), Vec::new());
    let n = writers.len();
    for seq in 0u64.. {
        let intended =
            plan.t0 + ((seq as f64 * plan.senders as f64 + plan.sender as f64) * step) as u64;
        if intended >= plan.t_end || abort.load(Ordering::Relaxed) {
            break;
        }
        wait_until(intended);
        body.clear();
        stamp::encode(
            &mut body,
            Stamp {
                sender: plan.sender as u32,
                seq,
                t_ns: intended,
            },
            plan.size,
        );
        frame.clear();
        if plan.responders.is_empty() {
            plan.proto.ask_frame(&mut frame, 100 + seq, &body);
        } else {
            let responder = &plan.responders[(seq % plan.responders.len() as u64) as usize];
            Proto::ask_peer_frame(&mut frame, 100 + seq, responder, &body);
        }
        let writer = &mut writers[(seq % n as u64) as usize];
        if let Err(e) = writer.send_text(&frame) {
            sent.error = Some(format!("ask {seq}: {e}"));
            break;
        }
        sent.per_room[0] += 1;
    }
    sent
}

/// Churn: `concurrency` loops that connect, join and close until the end.
async fn churn<F, Fut>(
    spec: &Spec,
    endpoints: &[Endpoint],
    index: usize,
    ready: F,
) -> anyhow::Result<WorkerOut>
where
    F: FnOnce(ReadyInfo) -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let t0 = ready(ReadyInfo::default()).await?;
    sleep_until_ns(t0).await;
    let cpu_start = stats::cpu_seconds(None);
    let t_end = t0 + (spec.duration.max(0.0) * 1e9) as u64;
    let recorder = Recorder::default();
    let next = AtomicU64::new((index as u64) << 40);
    let cycles = AtomicU64::new(0);
    let failures = AtomicU64::new(0);
    let errors = parking_lot::Mutex::new(Vec::<String>::new());
    let lane = |lane: usize| {
        let (recorder, next, cycles, failures, errors) =
            (&recorder, &next, &cycles, &failures, &errors);
        async move {
            while now_ns() < t_end {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let endpoint = &endpoints[i % endpoints.len()];
                let started = now_ns();
                match open(spec, endpoint, i, &[]).await {
                    Ok((ws, _)) => {
                        recorder.record(lane, now_ns().saturating_sub(started));
                        ws.close(Duration::from_millis(500)).await;
                        cycles.fetch_add(1, Ordering::Relaxed);
                    }
                    Err(e) => {
                        failures.fetch_add(1, Ordering::Relaxed);
                        {
                            let mut errors = errors.lock();
                            if errors.len() < MAX_ERRORS {
                                errors.push(format!("{e:#}"));
                            }
                        }
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                }
            }
        }
    };
    futures_util::future::join_all((0..spec.concurrency.max(1)).map(lane)).await;
    let mut out = WorkerOut {
        cycles: cycles.load(Ordering::Relaxed),
        cycle_failures: failures.load(Ordering::Relaxed),
        hist: stats::to_pairs(&recorder.merged()),
        last_recv_ns: now_ns(),
        errors: errors.into_inner(),
        ..WorkerOut::default()
    };
    if let (Some(start), Some(end)) = (cpu_start, stats::cpu_seconds(None)) {
        out.cpu_s = end - start;
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stamp(sender: u32, seq: u64) -> Stamp {
        Stamp {
            sender,
            seq,
            t_ns: 0,
        }
    }

    #[test]
    fn gaps_are_in_order_while_late_and_repeated_deliveries_are_not() {
        let mut next = Vec::new();
        assert!(in_order(&mut next, stamp(0, 0)));
        assert!(in_order(&mut next, stamp(0, 5)), "a gap is a loss");
        assert!(!in_order(&mut next, stamp(0, 3)), "late");
        assert!(!in_order(&mut next, stamp(0, 5)), "twice");
        assert!(in_order(&mut next, stamp(2, 1)), "senders are independent");
        assert!(in_order(&mut next, stamp(0, 6)));
    }
}
