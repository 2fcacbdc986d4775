//! The cluster publisher task: drains one in-order queue, sends each batch as one pipeline
//! of `SPUBLISH`es per master (the masters in parallel), and re-sends what a master
//! answered with `MOVED`/`ASK` to the new owner after refreshing the slot map.
//!
//! A `MOVED`/`ASK` answer means the command did not run, so re-sending it cannot deliver it
//! twice. A pipeline that failed on the connection (node killed, timeout) is not re-sent:
//! some of it may have been delivered (at most once); it is counted in `publish_errors`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use tokio::time::Instant;

use bytes::Bytes;
use futures_util::future::join_all;
use neffos::ExchangeCounters;
use redis::aio::{ConnectionLike, MultiplexedConnection};
use redis::{PushKind, ServerErrorKind, Value};
use tokio::sync::mpsc;

use super::ClusterCounters;
use super::partition::ClusterChannels;
use super::topology::{NodeAddr, Topology};
use crate::exchange::Options;
use crate::publisher::PubCmd;

/// Re-sends after `MOVED`/`ASK` before a publish counts as failed.
const MAX_REDIRECTS: usize = 3;

/// A publisher connection to one master, and whether it was lost.
struct NodeConn {
    conn: MultiplexedConnection,
    lost: Arc<AtomicBool>,
}

pub(crate) struct ClusterPublisher {
    /// Stamped on every payload with a sequence number (see [`super::sequence`]).
    pub(crate) instance: uuid::Uuid,
    pub(crate) topology: Arc<Topology>,
    pub(crate) channels: ClusterChannels,
    pub(crate) stats: Arc<ExchangeCounters>,
    pub(crate) counters: Arc<ClusterCounters>,
    pub(crate) options: Options,
    pub(crate) name: String,
    pub(crate) rx: mpsc::Receiver<PubCmd>,
}

/// After a failed connection attempt to a master, publishes for it fail at once for this
/// long instead of each batch waiting for another attempt (up to the connect timeout on a
/// host that does not answer).
const RETRY_CONNECT_AFTER: Duration = Duration::from_millis(100);

struct State {
    p: ClusterPublisher,
    /// Masters that could not be reached, and when to try again.
    unreachable: HashMap<NodeAddr, Instant>,
    /// A failure was seen since the slot map was last read: read it again before the
    /// next batch (the master may have been replaced).
    suspect_map: bool,
    /// The last sequence number stamped.
    seq: u64,
    conns: HashMap<NodeAddr, NodeConn>,
    /// Masters whose connection failed and was not opened again yet (a new one is a
    /// reconnect).
    lost: std::collections::HashSet<NodeAddr>,
    /// Per master: publishes failed since the last success (logged once per outage).
    failing: HashMap<NodeAddr, u64>,
}

/// What happened to one master's pipeline.
enum Sent {
    /// Replies, one per publish.
    Replies(Vec<Value>),
    /// The connection failed: the whole pipeline counts as failed.
    Failed(String),
}

impl ClusterPublisher {
    /// Runs until [`PubCmd::Close`] or until the exchange is dropped.
    pub(crate) async fn run(self) {
        let mut state = State {
            p: self,
            unreachable: HashMap::new(),
            suspect_map: false,
            seq: 0,
            conns: HashMap::new(),
            lost: std::collections::HashSet::new(),
            failing: HashMap::new(),
        };
        state.run().await;
    }
}

impl State {
    async fn run(&mut self) {
        let max_batch = self.p.options.max_batch.max(1);
        let mut buf = Vec::with_capacity(max_batch);
        loop {
            if self.p.rx.recv_many(&mut buf, max_batch).await == 0 {
                return;
            }
            let mut batch: Vec<(String, Bytes)> = Vec::with_capacity(buf.len());
            for cmd in buf.drain(..) {
                match cmd {
                    PubCmd::Publish(topic, payload) => {
                        match self.p.channels.publish_name(&topic, self.p.instance) {
                            Some(channel) => {
                                self.seq += 1;
                                let stamped =
                                    super::sequence::stamp(self.p.instance, self.seq, &payload);
                                batch.push((channel, stamped));
                            }
                            None => {
                                self.p.stats.add_publish_errors(1);
                                tracing::warn!(%topic, "cannot publish to a kind of topic this exchange does not know");
                            }
                        }
                    }
                    // Only the Go compatibility mode sends these; a cluster exchange has none.
                    PubCmd::Raw(..) => self.p.stats.add_publish_errors(1),
                    PubCmd::Flush(done) => {
                        self.send(std::mem::take(&mut batch)).await;
                        let _ = done.send(());
                    }
                    PubCmd::Close(done) => {
                        self.send(std::mem::take(&mut batch)).await;
                        self.p.rx.close();
                        let _ = done.send(());
                        return;
                    }
                }
            }
            self.send(batch).await;
        }
    }

    /// Publishes `batch`, in order per channel, following redirections.
    async fn send(&mut self, mut pending: Vec<(String, Bytes)>) {
        for attempt in 0..=MAX_REDIRECTS {
            if pending.is_empty() {
                return;
            }
            let seen = self.p.topology.generation();
            if self.p.topology.map().covered() == 0 || attempt > 0 || self.suspect_map {
                self.suspect_map = false;
                let _ = self.p.topology.refresh(seen).await;
            }
            let map = self.p.topology.map();
            let mut groups: BTreeMap<NodeAddr, Vec<(String, Bytes)>> = BTreeMap::new();
            let mut unowned = 0u64;
            for (channel, payload) in pending.drain(..) {
                match map.owner_of(&channel) {
                    Some(node) => groups
                        .entry(node.clone())
                        .or_default()
                        .push((channel, payload)),
                    None => unowned += 1,
                }
            }
            if unowned > 0 {
                self.p.counters.unowned(unowned);
                self.fail(None, unowned, "no master serves the slot");
            }
            let mut sends = Vec::with_capacity(groups.len());
            for (node, msgs) in groups {
                match self.conn(&node).await {
                    Some(conn) => sends.push(async move {
                        let sent = publish(conn, &msgs).await;
                        (node, msgs, sent)
                    }),
                    None => {
                        let n = msgs.len() as u64;
                        self.fail(Some(&node), n, "cannot connect");
                    }
                }
            }
            let mut redirected = false;
            for (node, msgs, sent) in join_all(sends).await {
                match sent {
                    Sent::Failed(e) => {
                        if self.conns.remove(&node).is_some() {
                            self.lost.insert(node.clone());
                        }
                        self.suspect_map = true;
                        self.fail(Some(&node), msgs.len() as u64, &e);
                    }
                    Sent::Replies(replies) => {
                        let mut ok = 0u64;
                        for (msg, reply) in msgs.into_iter().zip(replies) {
                            match reply {
                                Value::ServerError(e)
                                    if matches!(
                                        e.kind(),
                                        Some(ServerErrorKind::Moved | ServerErrorKind::Ask)
                                    ) =>
                                {
                                    self.p.counters.redirect();
                                    redirected = true;
                                    pending.push(msg);
                                }
                                Value::ServerError(e) => {
                                    self.fail(
                                        Some(&node),
                                        1,
                                        &format!(
                                            "{} {}",
                                            e.code(),
                                            e.details().unwrap_or_default()
                                        ),
                                    );
                                }
                                _ => ok += 1,
                            }
                        }
                        if ok > 0 {
                            self.p.stats.add_published(ok);
                            if let Some(failed) = self.failing.remove(&node) {
                                tracing::info!(node = %node, failed_publishes = failed, "Redis Cluster publishes to this master succeed again");
                            }
                        }
                    }
                }
            }
            if redirected {
                tracing::debug!(
                    count = pending.len(),
                    "Redis Cluster redirected publishes; following"
                );
            }
        }
        if !pending.is_empty() {
            let n = pending.len() as u64;
            self.fail(None, n, "too many redirections");
        }
    }

    /// The connection to `node`, opened (and named) if needed; `None` when it cannot be
    /// opened now.
    async fn conn(&mut self, node: &NodeAddr) -> Option<MultiplexedConnection> {
        if self
            .unreachable
            .get(node)
            .is_some_and(|until| Instant::now() < *until)
        {
            return None;
        }
        if let Some(c) = self.conns.get(node) {
            if !c.lost.load(Ordering::Acquire) {
                return Some(c.conn.clone());
            }
            self.conns.remove(node);
            self.lost.insert(node.clone());
        }
        let lost = Arc::new(AtomicBool::new(false));
        let flag = lost.clone();
        let connected = self
            .p
            .topology
            .connector
            .connect(node, move |info| {
                if info.kind == PushKind::Disconnection {
                    flag.store(true, Ordering::Release);
                }
            })
            .await;
        match connected {
            Ok(mut conn) => {
                if let Err(e) = redis::cmd("CLIENT")
                    .arg("SETNAME")
                    .arg(&self.p.name)
                    .exec_async(&mut conn)
                    .await
                {
                    tracing::warn!(error = %e, "cannot name the Redis connection (CLIENT SETNAME)");
                }
                self.unreachable.remove(node);
                if self.lost.remove(node) {
                    self.p.stats.add_reconnect();
                }
                // The node is back: the subscriber retries now rather than at its timer.
                self.p.topology.wake.announce();
                self.conns.insert(
                    node.clone(),
                    NodeConn {
                        conn: conn.clone(),
                        lost,
                    },
                );
                Some(conn)
            }
            Err(e) => {
                self.unreachable
                    .insert(node.clone(), Instant::now() + RETRY_CONNECT_AFTER);
                self.suspect_map = true;
                tracing::debug!(node = %node, error = %e, "Redis Cluster publisher cannot connect");
                None
            }
        }
    }

    fn fail(&mut self, node: Option<&NodeAddr>, n: u64, why: &str) {
        self.p.stats.add_publish_errors(n);
        let key = node.cloned().unwrap_or(NodeAddr {
            host: String::new(),
            port: 0,
        });
        let failed = self.failing.entry(key).or_insert(0);
        if *failed == 0 {
            tracing::warn!(
                node = %node.map(ToString::to_string).unwrap_or_default(),
                reason = why,
                "Redis Cluster publishes fail (counted in publish_errors) until the shard has a reachable master"
            );
        }
        *failed += n;
    }
}

/// One pipeline of `SPUBLISH`es on `conn`, with one reply per publish.
async fn publish(mut conn: MultiplexedConnection, msgs: &[(String, Bytes)]) -> Sent {
    let mut pipe = redis::pipe();
    for (channel, payload) in msgs {
        pipe.cmd("SPUBLISH").arg(channel.as_str()).arg(&payload[..]);
    }
    match conn.req_packed_commands(&pipe, 0, msgs.len()).await {
        Ok(replies) if replies.len() == msgs.len() => Sent::Replies(replies),
        Ok(replies) => Sent::Failed(format!(
            "{} replies to {} publishes",
            replies.len(),
            msgs.len()
        )),
        Err(e) => Sent::Failed(e.to_string()),
    }
}
