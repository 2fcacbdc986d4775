//! The cluster subscriber task: owns the subscription table and one subscriber connection
//! per shard that serves at least one wanted channel (at its master, or at a replica when
//! asked), and keeps the brokers' sharded
//! subscriptions equal to the table as the cluster changes shape.
//!
//! A subscription is lost without our asking when the master's connection closes (kill,
//! failover) or when Redis unsubscribes us itself (a server-side `sunsubscribe` push: the
//! slot moved to another master). Either way the channel is marked orphaned with the time,
//! the slot map is refreshed, and the channel is subscribed at its new owner; the time it
//! had no subscription (the gap, during which messages for it were not received) is logged,
//! counted and recorded.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use neffos::{ExchangeCounters, Inbound};
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{PushInfo, PushKind, ServerErrorKind, Value};
use tokio::sync::{mpsc, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use super::ClusterCounters;
use super::partition::ClusterChannels;
use super::sequence::Dedup;
use super::topology::{NodeAddr, Topology};
use crate::backoff::Backoff;
use crate::exchange::Options;
use crate::subscriber::SubCmd;

/// Subscription commands per pipeline.
const CHUNK: usize = 256;

/// How often the slot map is re-read while nothing reports a change (a failover that
/// demoted a master we are subscribed to may not close our connection).
const TOPOLOGY_CHECK: Duration = Duration::from_secs(1);

/// What a connection's driver reports (from its own task, without blocking).
#[derive(Debug)]
enum Event {
    /// Connection `id` to the node closed.
    Lost(NodeAddr, u64),
    /// Redis unsubscribed connection `id` from `channel` (ours or the server's doing).
    Unsubscribed(NodeAddr, u64, String),
}

struct NodeConn {
    id: u64,
    conn: MultiplexedConnection,
    /// Channels Redis confirmed on this connection.
    applied: HashSet<String>,
    /// Cleared when the connection is given up: what it still receives is dropped. After a
    /// failover the demoted master keeps receiving the shard's messages as a replica, and
    /// would deliver them a second time next to the new master's subscription.
    active: Arc<AtomicBool>,
}

impl Drop for NodeConn {
    fn drop(&mut self) {
        self.active.store(false, Ordering::Release);
    }
}

pub(crate) struct ClusterSubscriber {
    pub(crate) topology: Arc<Topology>,
    pub(crate) channels: ClusterChannels,
    pub(crate) stats: Arc<ExchangeCounters>,
    pub(crate) counters: Arc<ClusterCounters>,
    pub(crate) options: Options,
    /// Subscribe at a replica of each shard when one is known.
    pub(crate) replicas: bool,
    pub(crate) name: String,
    pub(crate) inbound: Arc<OnceLock<Inbound>>,
    /// Drops duplicates and late copies, shared by the connections.
    pub(crate) dedup: Arc<Dedup>,
    pub(crate) rx: crate::control::ControlReceiver,
}

struct State {
    s: ClusterSubscriber,
    events_tx: mpsc::UnboundedSender<Event>,
    events: mpsc::UnboundedReceiver<Event>,
    next_id: u64,
    /// Per channel: 0→1 transitions minus 1→0 transitions reported by the server.
    interest: HashMap<String, i64>,
    nodes: HashMap<NodeAddr, NodeConn>,
    /// Nodes whose connection was lost and not opened again yet (a new one is a reconnect).
    lost_nodes: HashSet<NodeAddr>,
    /// Wanted channels that lost their subscription without our asking, since when.
    orphaned: HashMap<String, Instant>,
    /// The table and the brokers may differ.
    dirty: bool,
    /// The slot map must be read again before the next reconciliation.
    stale_map: bool,
    backoff: Backoff,
    /// The slot map generation the brokers were last reconciled with.
    reconciled: u64,
    retry_at: Option<Instant>,
    /// The last reconciliation waited out a timeout (a node unreachable or frozen), as
    /// opposed to being refused or told to wait by a cluster that answers.
    slow: bool,
    parked: Vec<oneshot::Sender<()>>,
}

enum Flow {
    Continue,
    Stop,
}

impl ClusterSubscriber {
    /// Runs until [`SubCmd::Close`] or until the exchange is dropped.
    pub(crate) async fn run(self) {
        let (events_tx, events) = mpsc::unbounded_channel();
        let mut state = State {
            backoff: Backoff::new(self.options.backoff_min, self.options.backoff_max),
            s: self,
            events_tx,
            events,
            next_id: 0,
            interest: HashMap::new(),
            nodes: HashMap::new(),
            lost_nodes: HashSet::new(),
            orphaned: HashMap::new(),
            dirty: true,
            stale_map: false,
            reconciled: 0,
            retry_at: None,
            slow: false,
            parked: Vec::new(),
        };
        state.run().await;
    }
}

impl State {
    async fn run(&mut self) {
        let mut health = self.s.options.health_check_interval.map(|p| {
            let mut i = tokio::time::interval_at(Instant::now() + p, p);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let mut topology =
            tokio::time::interval_at(Instant::now() + TOPOLOGY_CHECK, TOPOLOGY_CHECK);
        topology.set_missed_tick_behavior(MissedTickBehavior::Delay);
        // The publisher reaching a node, or a new slot map, ends a backoff wait.
        let mut wake = self.s.topology.wake.listen();
        let mut buf = Vec::new();
        loop {
            if self.s.topology.generation() != self.reconciled {
                // Someone (the publisher after a MOVED, the periodic check) read a new map.
                self.dirty = true;
            }
            if self.dirty && self.retry_at.is_none_or(|at| at <= Instant::now()) {
                let started = Instant::now();
                match self.reconcile().await {
                    Ok(()) => {
                        self.dirty = false;
                        self.retry_at = None;
                        self.backoff.reset();
                        for done in self.parked.drain(..) {
                            let _ = done.send(());
                        }
                    }
                    Err(why) => {
                        // While nodes refuse or the cluster answers "not yet", retrying
                        // soon is cheap; only timeouts let the delay grow.
                        let delay = self.backoff.after_failure(started.elapsed(), !self.slow);
                        tracing::debug!(reason = %why, retry_in = ?delay, "Redis Cluster subscriptions not all applied yet");
                        self.retry_at = Some(Instant::now() + delay);
                    }
                }
            }
            let retry = async {
                match (self.dirty, self.retry_at) {
                    (true, Some(at)) => tokio::time::sleep_until(at).await,
                    _ => std::future::pending().await,
                }
            };
            let tick = async {
                match health.as_mut() {
                    Some(h) => {
                        h.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                Some(event) = self.events.recv() => self.on_event(event),
                n = self.s.rx.recv_many(&mut buf, 1024) => {
                    if n == 0 {
                        return;
                    }
                    for cmd in buf.drain(..) {
                        if let Flow::Stop = self.apply(cmd) {
                            return;
                        }
                    }
                }
                () = retry => {}
                Ok(()) = wake.changed() => {
                    self.retry_at = None;
                }
                _ = topology.tick() => {
                    let seen = self.s.topology.generation();
                    let _ = self.s.topology.refresh(seen).await;
                }
                () = tick => self.health_check().await,
            }
        }
    }

    fn apply(&mut self, cmd: SubCmd) -> Flow {
        match cmd {
            SubCmd::Subscribe(topic) => self.count(&topic, 1),
            SubCmd::Unsubscribe(topic) => self.count(&topic, -1),
            // Only the Go compatibility mode sends these; a cluster exchange has none.
            SubCmd::SubscribeChannel(_) | SubCmd::UnsubscribeChannel(_) => {}
            SubCmd::Flush(done) => {
                if self.dirty {
                    self.parked.push(done);
                } else {
                    let _ = done.send(());
                }
            }
            SubCmd::Close(done) => {
                self.s.rx.close();
                self.nodes.clear();
                let _ = done.send(());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn count(&mut self, topic: &neffos::Topic, delta: i64) {
        let channels = self.s.channels.subscribe_names(topic);
        if channels.is_empty() {
            tracing::warn!(%topic, "cannot subscribe to a kind of topic this exchange does not know");
            return;
        }
        for channel in channels {
            match self.interest.entry(channel) {
                Entry::Occupied(mut e) => {
                    *e.get_mut() += delta;
                    if *e.get() == 0 {
                        self.orphaned.remove(e.key());
                        e.remove();
                    }
                }
                Entry::Vacant(e) => {
                    e.insert(delta);
                }
            }
        }
        self.dirty = true;
    }

    fn wanted(&self, channel: &str) -> bool {
        self.interest.get(channel).is_some_and(|n| *n > 0)
    }

    fn orphan(&mut self, channel: String, why: &str, node: &NodeAddr) {
        if self.wanted(&channel) {
            tracing::debug!(channel, node = %node, reason = why, "Redis Cluster subscription lost");
            self.orphaned.entry(channel).or_insert_with(Instant::now);
            self.dirty = true;
            self.stale_map = true;
            self.retry_at = None;
        }
    }

    fn on_event(&mut self, event: Event) {
        match event {
            Event::Lost(node, id) => {
                if self.nodes.get(&node).is_none_or(|c| c.id != id) {
                    return;
                }
                if let Some(mut conn) = self.nodes.remove(&node) {
                    self.lost_nodes.insert(node.clone());
                    tracing::warn!(node = %node, subscriptions = conn.applied.len(), "Redis Cluster subscriber connection lost; subscribing again where the slots are now");
                    for channel in std::mem::take(&mut conn.applied) {
                        self.orphan(channel, "connection lost", &node);
                    }
                }
                self.dirty = true;
                self.stale_map = true;
            }
            Event::Unsubscribed(node, id, channel) => {
                // Our own SUNSUBSCRIBE is for a channel no longer wanted here; anything
                // else is Redis telling us the slot moved.
                let ours = !self.wanted(&channel)
                    || self
                        .s
                        .topology
                        .map()
                        .subscriber_of(&channel, self.s.replicas)
                        .is_some_and(|owner| *owner != node);
                let Some(conn) = self.nodes.get_mut(&node).filter(|c| c.id == id) else {
                    return;
                };
                if !ours && conn.applied.remove(&channel) {
                    self.orphan(channel, "unsubscribed by Redis (slot moved)", &node);
                }
            }
        }
    }

    async fn health_check(&mut self) {
        let mut dead = Vec::new();
        for (node, c) in &mut self.nodes {
            if redis::cmd("PING").exec_async(&mut c.conn).await.is_err() {
                dead.push((node.clone(), c.id));
            }
        }
        for (node, id) in dead {
            self.on_event(Event::Lost(node, id));
        }
    }

    /// Makes the brokers' subscriptions match the table under the current slot map.
    async fn reconcile(&mut self) -> Result<(), String> {
        self.slow = false;
        if self.stale_map || self.s.topology.map().covered() == 0 {
            let seen = self.s.topology.generation();
            let complete = self.s.topology.refresh(seen).await.map_err(|e| {
                self.slow = e.is_timeout();
                e.to_string()
            })?;
            self.stale_map = !complete;
        }
        self.reconciled = self.s.topology.generation();
        let map = self.s.topology.map();
        let mut desired: HashMap<NodeAddr, Vec<String>> = HashMap::new();
        let mut unowned = 0usize;
        for (channel, n) in &self.interest {
            if *n <= 0 {
                continue;
            }
            match map.subscriber_of(channel, self.s.replicas) {
                Some(node) => desired
                    .entry(node.clone())
                    .or_default()
                    .push(channel.clone()),
                None => unowned += 1,
            }
        }
        let mut complete = unowned == 0;
        for (node, chans) in &desired {
            let node = node.clone();
            let missing: Vec<String> = match self.nodes.get(&node) {
                Some(c) => chans
                    .iter()
                    .filter(|ch| !c.applied.contains(*ch))
                    .cloned()
                    .collect(),
                None => chans.clone(),
            };
            if missing.is_empty() {
                continue;
            }
            if !self.nodes.contains_key(&node) {
                match self.open(&node).await {
                    Ok(c) => {
                        if self.lost_nodes.remove(&node) {
                            self.s.stats.add_reconnect();
                        }
                        self.nodes.insert(node.clone(), c);
                    }
                    Err(e) => {
                        complete = false;
                        self.stale_map = true;
                        self.slow |= e.is_timeout();
                        tracing::debug!(node = %node, error = %e, "Redis Cluster subscriber cannot connect");
                        continue;
                    }
                }
            }
            let Some(c) = self.nodes.get_mut(&node) else {
                continue;
            };
            for chunk in missing.chunks(CHUNK) {
                let replies = match command_each(&mut c.conn, "SSUBSCRIBE", chunk).await {
                    Ok(r) => r,
                    Err((e, timed_out)) => {
                        self.slow = timed_out;
                        let id = c.id;
                        self.on_event(Event::Lost(node.clone(), id));
                        return Err(e);
                    }
                };
                let now = Instant::now();
                for (channel, reply) in chunk.iter().zip(replies) {
                    match reply {
                        Value::ServerError(e) => {
                            if matches!(
                                e.kind(),
                                Some(ServerErrorKind::Moved | ServerErrorKind::Ask)
                            ) {
                                self.s.counters.redirect();
                            }
                            complete = false;
                            self.stale_map = true;
                        }
                        _ => {
                            c.applied.insert(channel.clone());
                            if let Some(since) = self.orphaned.remove(channel) {
                                let gap = now.duration_since(since);
                                self.s.counters.record_gap(gap);
                                tracing::info!(
                                    channel = channel.as_str(),
                                    node = %node,
                                    gap_ms = gap.as_millis() as u64,
                                    "Redis Cluster subscription restored; messages published during the gap were not received"
                                );
                            }
                        }
                    }
                }
            }
        }
        // Make before break: only now, with the channels subscribed at their new node
        // (a copy received twice meanwhile is dropped by `dedup`), do connections to nodes
        // no longer needed close (which ends their subscriptions) and the others drop what
        // moved away.
        let unneeded: Vec<NodeAddr> = self
            .nodes
            .keys()
            .filter(|n| !desired.contains_key(*n))
            .cloned()
            .collect();
        for node in unneeded {
            self.nodes.remove(&node);
        }
        for (node, chans) in &desired {
            let want: HashSet<&String> = chans.iter().collect();
            if let Some(c) = self.nodes.get_mut(node) {
                let extra: Vec<String> = c
                    .applied
                    .iter()
                    .filter(|ch| !want.contains(ch))
                    .cloned()
                    .collect();
                for chunk in extra.chunks(CHUNK) {
                    if let Err((e, timed_out)) =
                        command_each(&mut c.conn, "SUNSUBSCRIBE", chunk).await
                    {
                        self.slow = timed_out;
                        let id = c.id;
                        self.on_event(Event::Lost(node.clone(), id));
                        return Err(e);
                    }
                    for ch in chunk {
                        c.applied.remove(ch);
                    }
                }
            }
        }
        if complete {
            Ok(())
        } else {
            Err(format!(
                "{unowned} channels without a master, or refused subscriptions"
            ))
        }
    }

    /// A named subscriber connection to `node` whose pushes feed the server and this task.
    async fn open(&mut self, node: &NodeAddr) -> crate::error::Result<NodeConn> {
        self.next_id += 1;
        let id = self.next_id;
        let inbound = self.s.inbound.clone();
        let stats = self.s.stats.clone();
        let dedup = self.s.dedup.clone();
        let events = self.events_tx.clone();
        let addr = node.clone();
        let active = Arc::new(AtomicBool::new(true));
        let live = active.clone();
        let mut conn = self
            .s
            .topology
            .connector
            .connect(node, move |info: PushInfo| {
                if live.load(Ordering::Acquire) {
                    on_push(&inbound, &stats, &dedup, &events, &addr, id, info);
                }
            })
            .await?;
        if let Err(e) = redis::cmd("CLIENT")
            .arg("SETNAME")
            .arg(&self.s.name)
            .exec_async(&mut conn)
            .await
        {
            tracing::warn!(error = %e, "cannot name the Redis connection (CLIENT SETNAME)");
        }
        Ok(NodeConn {
            id,
            conn,
            applied: HashSet::new(),
            active,
        })
    }
}

/// Hands one push to the server (messages) or to the task (losses). Runs on the
/// connection's driver task: must not block.
fn on_push(
    inbound: &OnceLock<Inbound>,
    stats: &ExchangeCounters,
    dedup: &Dedup,
    events: &mpsc::UnboundedSender<Event>,
    node: &NodeAddr,
    id: u64,
    info: PushInfo,
) {
    match info.kind {
        PushKind::SMessage => {
            let mut data = info.data.into_iter();
            if let (Some(Value::BulkString(channel)), Some(Value::BulkString(payload)), None) =
                (data.next(), data.next(), data.next())
            {
                if let Some(inbound) = inbound.get()
                    && let Some(payload) = dedup.accept(&channel, payload)
                {
                    stats.add_received(1);
                    inbound.deliver(payload);
                }
            } else {
                tracing::debug!("ignored a malformed sharded pub/sub push from Redis");
            }
        }
        PushKind::SUnsubscribe => {
            if let Some(Value::BulkString(channel)) = info.data.into_iter().next()
                && let Ok(channel) = String::from_utf8(channel)
            {
                let _ = events.send(Event::Unsubscribed(node.clone(), id, channel));
            }
        }
        PushKind::Disconnection => {
            let _ = events.send(Event::Lost(node.clone(), id));
        }
        _ => {}
    }
}

/// Sends `<command> <channel>` for each channel (one channel per command: a sharded
/// subscription command takes channels of one slot only) in one pipeline; one reply each.
/// An error says whether the command timed out.
async fn command_each(
    conn: &mut MultiplexedConnection,
    command: &str,
    channels: &[String],
) -> Result<Vec<Value>, (String, bool)> {
    let mut pipe = redis::pipe();
    for channel in channels {
        pipe.cmd(command).arg(channel.as_str());
    }
    match conn.req_packed_commands(&pipe, 0, channels.len()).await {
        Ok(replies) if replies.len() == channels.len() => Ok(replies),
        Ok(replies) => Err((
            format!("{} replies to {} {command}s", replies.len(), channels.len()),
            false,
        )),
        Err(e) => Err((e.to_string(), e.is_timeout())),
    }
}
