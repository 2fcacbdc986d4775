//! [`RedisClusterExchange`]: the exchange on a Redis Cluster, with sharded pub/sub
//! (`SPUBLISH` / `SSUBSCRIBE`, Redis 7 or newer, RESP3). Feature `cluster`.
//!
//! # Channels and shards
//!
//! The channels are those of [`RedisExchange`](crate::RedisExchange) (no hash tag), so each
//! namespace, connection ID and instance inbox hashes to its own slot and the channels of an
//! application spread over every shard. A channel is served by the master of its slot only:
//! a sharded publish travels inside one shard, so capacity grows with shards as long as the
//! traffic is spread over several namespaces.
//!
//! One namespace is one channel, hence one shard: a single hot namespace is bounded by its
//! shard (its rooms travel on the namespace's channel). When one namespace carries most of
//! the traffic, [`RedisClusterExchangeBuilder::namespace_partitions`] spreads it over
//! several channels at evenly spaced slots: each instance publishes on one of them (order
//! per instance and namespace kept) and subscribes to all, so the namespace's publishes
//! from several instances are served by several shards.
//!
//! # Connections
//!
//! Per instance, at most one publisher connection per master it publishes to and one
//! subscriber connection per shard serving a channel it needs, all named
//! `neffos:<instance ID>`: broker connections grow with shards, never with clients. The
//! subscriber connection goes to the shard's master, or to one of its replicas with
//! [`RedisClusterExchangeBuilder::subscribe_to_replicas`] (sharded messages reach every
//! node of the shard), which leaves the masters only the publishes.
//!
//! # Topology changes
//!
//! The slot map comes from `CLUSTER SLOTS` (the known masters first, then the seeds), read
//! at start, on every sign of change (a `MOVED`/`ASK` answer, a lost connection, a
//! `sunsubscribe` pushed by Redis when a slot moves) and every second.
//!
//! - **Publishes** answered with `MOVED`/`ASK` are sent again to the new owner (up to 3
//!   times): they did not run, so nothing is delivered twice, and per-channel order is kept
//!   (a batch is settled before the next one). A publish whose slot has no reachable master
//!   (a killed master, until its replica is promoted) fails at once and is counted in
//!   `ExchangeStats::publish_errors` and [`ClusterStats::unowned_publishes`]; a pipeline cut
//!   by a connection failure is not sent again (at most once).
//! - **Subscriptions** lost without our asking (connection closed, slot migrated, master
//!   demoted) are restored at the slot's new owner without any user action. The time a
//!   channel had no subscription is the gap: messages published meanwhile are not received.
//!   Every gap is logged (`gap_ms`), recorded in [`ClusterStats`] (count, total, worst)
//!   and in the `neffos_redis_cluster_subscription_gap_seconds` histogram (`metrics`).
//!
//! # Requirements
//!
//! Redis 7 or newer in cluster mode (or a compatible server with sharded pub/sub). With
//! ACLs, the user needs `SPUBLISH`, `SSUBSCRIBE`, `SUNSUBSCRIBE`, `CLUSTER SLOTS`, `PING`,
//! `HELLO` and `CLIENT SETNAME` (optional: a refusal is logged), and access to the prefix's
//! channels (`&<prefix>:*`). Every node must be reachable at the address it announces in
//! `CLUSTER SLOTS` (`cluster-announce-ip` behind NAT); TLS and credentials are those of the
//! first seed URL.
//!
//! Delivery stays at most once and ordered per (origin instance, namespace); during a
//! failover the same message can reach a subscriber through two nodes, so every payload
//! carries the publishing instance's sequence number and receivers drop duplicates and
//! late copies (see `sequence`): nothing is delivered twice or out of order.

mod partition;
mod publisher;
mod sequence;
mod slot;
mod subscriber;
mod topology;

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use neffos::{Exchange, ExchangeCounters, ExchangeFuture, ExchangeStats, Inbound, Topic};
use parking_lot::Mutex;
use tokio::sync::{mpsc, oneshot};
use uuid::Uuid;

use crate::channel::{Channels, DEFAULT_PREFIX};
use crate::error::Result;
use crate::exchange::Options;
use crate::publisher::PubCmd;
use crate::subscriber::SubCmd;
use partition::ClusterChannels;
use publisher::ClusterPublisher;
use subscriber::ClusterSubscriber;
use topology::{Connector, Topology};

/// Counters of what topology changes did (see [`ClusterStats`]).
#[derive(Debug, Default)]
pub(crate) struct ClusterCounters {
    redirects: AtomicU64,
    unowned_publishes: AtomicU64,
    gaps: AtomicU64,
    gap_total_us: AtomicU64,
    gap_max_us: AtomicU64,
}

/// Also reported through the [`metrics`] facade, for operators:
/// `neffos_redis_cluster_redirects_total`, `neffos_redis_cluster_unowned_publishes_total`,
/// `neffos_redis_cluster_subscription_gaps_total` and the histogram
/// `neffos_redis_cluster_subscription_gap_seconds`.
impl ClusterCounters {
    fn redirect(&self) {
        self.redirects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("neffos_redis_cluster_redirects_total").increment(1);
    }

    fn unowned(&self, n: u64) {
        self.unowned_publishes.fetch_add(n, Ordering::Relaxed);
        metrics::counter!("neffos_redis_cluster_unowned_publishes_total").increment(n);
    }

    fn record_gap(&self, gap: Duration) {
        let us = u64::try_from(gap.as_micros()).unwrap_or(u64::MAX);
        self.gaps.fetch_add(1, Ordering::Relaxed);
        self.gap_total_us.fetch_add(us, Ordering::Relaxed);
        self.gap_max_us.fetch_max(us, Ordering::Relaxed);
        metrics::counter!("neffos_redis_cluster_subscription_gaps_total").increment(1);
        metrics::histogram!("neffos_redis_cluster_subscription_gap_seconds")
            .record(gap.as_secs_f64());
    }
}

/// What topology changes did to an instance's exchange, from [`RedisClusterExchange::cluster_stats`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// `MOVED`/`ASK` answers followed (publishes sent again, subscriptions moved).
    pub redirects: u64,
    /// Publishes dropped because their slot had no master (also in `publish_errors`).
    pub unowned_publishes: u64,
    /// `CLUSTER SLOTS` reads.
    pub topology_refreshes: u64,
    /// Subscriptions restored after Redis dropped them (one per channel and change).
    pub gaps: u64,
    /// Their summed duration: how long channels went without a subscription.
    pub gap_total: Duration,
    /// The longest of them.
    pub gap_max: Duration,
}

/// Configures a [`RedisClusterExchange`]; from [`RedisClusterExchange::builder`].
#[derive(Clone)]
#[must_use]
pub struct RedisClusterExchangeBuilder {
    seeds: Vec<String>,
    prefix: String,
    options: Options,
    partitions: u16,
    partition_index: Option<u16>,
    replicas: bool,
}

impl fmt::Debug for RedisClusterExchangeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seeds: Vec<_> = self.seeds.iter().map(|s| neffos::redact::url(s)).collect();
        f.debug_struct("RedisClusterExchangeBuilder")
            .field("seeds", &seeds)
            .field("prefix", &self.prefix)
            .field("options", &self.options)
            .field("partitions", &self.partitions)
            .field("partition_index", &self.partition_index)
            .field("replicas", &self.replicas)
            .finish()
    }
}

impl RedisClusterExchangeBuilder {
    /// The prefix of every channel name (default `neffos`), as for
    /// [`RedisExchangeBuilder::prefix`](crate::RedisExchangeBuilder::prefix).
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Publishes that may wait for the publisher (default 65,536); beyond, dropped and
    /// counted.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.options.queue_capacity = capacity.max(1);
        self
    }

    /// Most publishes per batch (default 4,096), split into one pipeline per master.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.options.max_batch = max.max(1);
        self
    }

    /// Delays between attempts to restore subscriptions (defaults 50 ms and 5 s; at most
    /// 100 ms while nodes refuse connections quickly).
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.options.backoff_min = min;
        self.options.backoff_max = max;
        self
    }

    /// How long opening a connection may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its answer (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.options.response_timeout = timeout;
        self
    }

    /// How often subscriber connections are pinged (default 5 s; `None`: never).
    pub fn health_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.options.health_check_interval = interval;
        self
    }

    /// Spreads each namespace over `partitions` channels (default 1: one channel per
    /// namespace), so that one busy namespace is served by several shards instead of one.
    ///
    /// Each instance publishes a namespace's messages on one partition (see
    /// [`partition_index`](Self::partition_index)) and subscribes to all of them: the
    /// messages of a namespace published by different instances travel through different
    /// shards, while those of one instance keep their order (one channel). What it costs:
    /// `partitions` subscriptions per namespace instead of one, and a namespace's capacity
    /// grows with shards only when several instances publish into it. The partitions sit
    /// at evenly spaced slots; with as many partitions as masters, each master serves one.
    ///
    /// Every instance of an application must use the same value: instances with different
    /// values do not hear each other's namespace broadcasts.
    pub fn namespace_partitions(mut self, partitions: u16) -> Self {
        self.partitions = partitions.max(1);
        self
    }

    /// The partition this instance publishes on (taken modulo
    /// [`namespace_partitions`](Self::namespace_partitions)). Default: derived from the
    /// random instance ID, so instances spread over the partitions on average; numbered
    /// deployments (e.g. a StatefulSet ordinal) spread exactly by passing their number.
    pub fn partition_index(mut self, index: u16) -> Self {
        self.partition_index = Some(index);
        self
    }

    /// Subscribes at a replica of each shard instead of its master (default `false`):
    /// sharded pub/sub messages reach every node of the shard, so the subscriber
    /// connections (and the work of pushing messages to them) leave the masters, which
    /// keep the publishes. Shards without a known replica are subscribed at their master.
    /// After a failover or a replica's loss, subscriptions move like those on masters do
    /// (see [Topology changes](self#topology-changes)).
    pub fn subscribe_to_replicas(mut self, replicas: bool) -> Self {
        self.replicas = replicas;
        self
    }

    /// Validates the configuration and reads the slot map from a seed, so a wrong address,
    /// password or a server that is not a cluster fails here. Must run inside a tokio
    /// runtime.
    pub async fn connect(self) -> Result<RedisClusterExchange> {
        let exchange = self.build()?;
        exchange
            .topology
            .refresh(exchange.topology.generation())
            .await?;
        Ok(exchange)
    }

    /// Validates the configuration without connecting: the exchange reads the slot map
    /// when the server starts it, and keeps retrying while no seed answers.
    pub fn build(self) -> Result<RedisClusterExchange> {
        let channels = Channels::new(&self.prefix)?;
        let connector = Connector::new(
            &self.seeds,
            self.options.connect_timeout,
            self.options.response_timeout,
        )?;
        Ok(RedisClusterExchange::assemble(
            Arc::new(Topology::new(connector)),
            ClusterChannels::new(channels, self.partitions, self.partition_index),
            self.options,
            self.replicas,
        ))
    }
}

type Spawn = Box<dyn FnOnce(Uuid) + Send>;

/// Scales a neffos [`Server`](neffos::Server) out over a Redis Cluster with sharded
/// pub/sub. See the [module documentation](self).
///
/// ```no_run
/// # async fn run() -> Result<(), neffos_redis::Error> {
/// use neffos_redis::RedisClusterExchange;
/// let exchange = RedisClusterExchange::builder([
///     "redis://10.0.0.1:6379",
///     "redis://10.0.0.2:6379",
///     "redis://10.0.0.3:6379",
/// ])
/// .prefix("chat")
/// .connect()
/// .await?;
/// # let _ = exchange; Ok(()) }
/// ```
pub struct RedisClusterExchange {
    channels: ClusterChannels,
    topology: Arc<Topology>,
    stats: Arc<ExchangeCounters>,
    counters: Arc<ClusterCounters>,
    publish_tx: mpsc::Sender<PubCmd>,
    control_tx: crate::control::ControlSender,
    inbound: Arc<OnceLock<Inbound>>,
    instance: OnceLock<Uuid>,
    spawn: Mutex<Option<Spawn>>,
    queue_full: AtomicU64,
}

impl fmt::Debug for RedisClusterExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisClusterExchange")
            .field("prefix", &self.channels.prefix())
            .field("instance", &self.instance.get())
            .field("masters", &self.topology.map().masters().len())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RedisClusterExchange {
    /// Starts configuring an exchange for the cluster reachable through `seeds`
    /// (`redis://[<user>][:<password>@]<host>:<port>`, or `rediss://…` with the `tls`
    /// feature; all with the same credentials and scheme). A few nodes are enough: the
    /// others are found in the slot map.
    pub fn builder<S: Into<String>>(
        seeds: impl IntoIterator<Item = S>,
    ) -> RedisClusterExchangeBuilder {
        RedisClusterExchangeBuilder {
            seeds: seeds.into_iter().map(Into::into).collect(),
            prefix: DEFAULT_PREFIX.to_owned(),
            options: Options::default(),
            partitions: 1,
            partition_index: None,
            replicas: false,
        }
    }

    /// The Redis channel this instance publishes `topic` on (for operators and tests);
    /// `None` before the server started the exchange when namespaces are partitioned (the
    /// partition depends on the instance ID).
    pub fn channel(&self, topic: &Topic) -> Option<String> {
        match (topic, self.instance.get()) {
            (Topic::Namespace(_), None) if self.channels.partitioned() => None,
            (_, instance) => self
                .channels
                .publish_name(topic, instance.copied().unwrap_or_default()),
        }
    }

    /// Every Redis channel that carries `topic`: all the partitions of a namespace (see
    /// [`RedisClusterExchangeBuilder::namespace_partitions`]), else the one channel.
    pub fn channels(&self, topic: &Topic) -> Vec<String> {
        self.channels.subscribe_names(topic)
    }

    /// The name every connection of this exchange carries on the brokers once started:
    /// `neffos:<instance ID>`.
    pub fn client_name(&self) -> Option<String> {
        self.instance.get().map(|id| format!("neffos:{id}"))
    }

    /// What topology changes did so far.
    pub fn cluster_stats(&self) -> ClusterStats {
        let c = &self.counters;
        ClusterStats {
            redirects: c.redirects.load(Ordering::Relaxed),
            unowned_publishes: c.unowned_publishes.load(Ordering::Relaxed),
            topology_refreshes: self.topology.refreshes.load(Ordering::Relaxed),
            gaps: c.gaps.load(Ordering::Relaxed),
            gap_total: Duration::from_micros(c.gap_total_us.load(Ordering::Relaxed)),
            gap_max: Duration::from_micros(c.gap_max_us.load(Ordering::Relaxed)),
        }
    }

    fn assemble(
        topology: Arc<Topology>,
        channels: ClusterChannels,
        options: Options,
        replicas: bool,
    ) -> Self {
        let stats = Arc::new(ExchangeCounters::default());
        let counters = Arc::new(ClusterCounters::default());
        let inbound = Arc::new(OnceLock::new());
        let (publish_tx, publish_rx) = mpsc::channel(options.queue_capacity.max(1));
        let (control_tx, control_rx) = crate::control::channel();
        let spawn: Spawn = {
            let topology = topology.clone();
            let channels = channels.clone();
            let stats = stats.clone();
            let counters = counters.clone();
            let inbound = inbound.clone();
            Box::new(move |instance: Uuid| {
                let name = format!("neffos:{instance}");
                let dedup = Arc::new(sequence::Dedup::default());
                let publisher = ClusterPublisher {
                    instance,
                    topology: topology.clone(),
                    channels: channels.clone(),
                    stats: stats.clone(),
                    counters: counters.clone(),
                    options: options.clone(),
                    name: name.clone(),
                    rx: publish_rx,
                };
                let subscriber = ClusterSubscriber {
                    topology,
                    channels,
                    stats,
                    counters,
                    options,
                    replicas,
                    name,
                    inbound,
                    dedup,
                    rx: control_rx,
                };
                tokio::spawn(publisher.run());
                tokio::spawn(subscriber.run());
            })
        };
        RedisClusterExchange {
            channels,
            topology,
            stats,
            counters,
            publish_tx,
            control_tx,
            inbound,
            instance: OnceLock::new(),
            spawn: Mutex::new(Some(spawn)),
            queue_full: AtomicU64::new(0),
        }
    }

    fn control(&self, cmd: SubCmd) {
        let _ = self.control_tx.send(cmd);
    }
}

impl Exchange for RedisClusterExchange {
    fn start(&self, instance: Uuid, inbound: Inbound) {
        if self.instance.set(instance).is_err() {
            tracing::warn!(%instance, "RedisClusterExchange started twice; give each server its own");
            return;
        }
        let _ = self.inbound.set(inbound);
        self.control(SubCmd::Subscribe(Topic::Inbox(instance)));
        let Some(spawn) = self.spawn.lock().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(
                "RedisClusterExchange::start must run inside a tokio runtime; the exchange stays idle"
            );
            return;
        }
        spawn(instance);
    }

    fn publish(&self, topic: Topic, payload: Bytes) {
        if let Err(e) = self.publish_tx.try_send(PubCmd::Publish(topic, payload)) {
            self.stats.add_publish_errors(1);
            let n = self.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
            if n.is_power_of_two() {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "publish queue full",
                    mpsc::error::TrySendError::Closed(_) => "exchange closed",
                };
                tracing::warn!(dropped_so_far = n, why, "Redis Cluster publish dropped");
            }
        }
    }

    fn subscribe(&self, topic: Topic) {
        self.control(SubCmd::Subscribe(topic));
    }

    fn unsubscribe(&self, topic: Topic) {
        self.control(SubCmd::Unsubscribe(topic));
    }

    /// Resolves once the publishes queued before it were sent (or counted as failed) and
    /// every subscription change was confirmed by the masters. While a wanted channel's slot
    /// has no reachable master it waits; wrap it in a timeout.
    fn flush(&self) -> ExchangeFuture<'_> {
        Box::pin(async move {
            if self.instance.get().is_none() {
                return;
            }
            let (sub_done, sub_wait) = oneshot::channel();
            self.control(SubCmd::Flush(sub_done));
            let (pub_done, pub_wait) = oneshot::channel();
            if self.publish_tx.send(PubCmd::Flush(pub_done)).await.is_ok() {
                let _ = pub_wait.await;
            }
            let _ = sub_wait.await;
        })
    }

    /// Sends what is queued, then closes every connection.
    fn close(&self) -> ExchangeFuture<'_> {
        Box::pin(async move {
            drop(self.spawn.lock().take());
            let (sub_done, sub_wait) = oneshot::channel();
            self.control(SubCmd::Close(sub_done));
            let (pub_done, pub_wait) = oneshot::channel();
            if self.publish_tx.send(PubCmd::Close(pub_done)).await.is_ok() {
                let _ = pub_wait.await;
            }
            let _ = sub_wait.await;
        })
    }

    fn stats(&self) -> ExchangeStats {
        self.stats.snapshot()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_redacts_passwords() {
        let b = RedisClusterExchange::builder([
            "redis://user:s3cret@10.0.0.1:6379",
            "redis://:s3cret@10.0.0.2:6379",
            "redis://10.0.0.3:6379?token=s3cret",
        ]);
        let text = format!("{b:?}");
        assert!(!text.contains("s3cret"), "{text}");
        assert!(text.contains("user:<redacted>@10.0.0.1:6379"), "{text}");
        assert!(
            text.contains("redis://10.0.0.3:6379?token=<redacted>"),
            "{text}"
        );
    }

    #[test]
    fn seeds_are_validated() {
        assert!(
            RedisClusterExchange::builder(Vec::<String>::new())
                .build()
                .is_err()
        );
        assert!(
            RedisClusterExchange::builder(["redis+unix:///tmp/r.sock"])
                .build()
                .is_err()
        );
        assert!(
            RedisClusterExchange::builder(["redis://127.0.0.1:1"])
                .prefix("a b")
                .build()
                .is_err()
        );
        assert!(
            RedisClusterExchange::builder(["redis://127.0.0.1:1"])
                .build()
                .is_ok()
        );
    }
}
