//! The cluster knows itself: which instances are alive (leases renewed by heartbeats),
//! cluster-wide queries with a deadline and partial results, remote operations on
//! connections by ID, and presence events. Everything rides on the server's exchanges
//! (one cluster topic every instance listens to, and each instance's inbox), so it works
//! on memory, Redis, NATS and chains of them, with no extra broker connection.
//!
//! | guarantee | how |
//! |---|---|
//! | live set | eventual: an instance appears with its first heartbeat, drops out when its lease runs out (or at once when it shuts down) |
//! | queries | answered by every live instance by the deadline, or the result lists who did not; never an error because an instance is slow or dead |
//! | counts | each instance sends a number, never its members |
//! | remote operations | applied by the instances holding the ID; the acknowledgement says where, or that no live instance holds it |
//! | `Server::ask` to an unknown ID | fails once every live instance said it does not hold the ID; waits for its timeout when one did not answer |
//! | presence | each change reaches each handler once; a dead instance's members leave once, reported by one survivor after its lease |

mod answer;
mod config;
mod error;
mod membership;
mod metrics;
mod presence;
mod query;
mod rate;
mod remote;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use neffos_protocol::cluster::{CLUSTER_TOPIC, ClusterMessage, Heartbeat, Query};
use neffos_protocol::{Envelope, EnvelopeKind, EnvelopeTarget, Message};
use parking_lot::Mutex;
use uuid::Uuid;

pub use config::ClusterConfig;
pub use error::{ClusterError, ClusterErrorKind};
pub use membership::InstanceInfo;
pub use presence::{PresenceEvent, PresenceKind};
pub use query::{Member, Partial};
pub use remote::Applied;

use crate::exchange::Topic;
use crate::server::{Server, ServerShared};
use membership::{Heard, Membership};
use metrics::ClusterMetrics;
use query::PendingQueries;
use rate::TokenBucket;

/// The cluster state of one server.
pub(crate) struct ClusterState {
    /// Set with [`ServerBuilder::cluster`](crate::ServerBuilder::cluster); otherwise this
    /// instance neither announces itself nor answers, and queries cover it alone.
    enabled: bool,
    pub(crate) config: ClusterConfig,
    membership: Mutex<Membership>,
    pending: PendingQueries,
    generation: AtomicU64,
    query_bucket: TokenBucket,
    answer_bucket: TokenBucket,
    metrics: ClusterMetrics,
    presence: presence::Presence,
    queries_answered: AtomicU64,
}

impl ClusterState {
    pub(crate) fn new(config: Option<ClusterConfig>) -> Self {
        let enabled = config.is_some();
        let config = config.unwrap_or_default();
        ClusterState {
            enabled,
            query_bucket: TokenBucket::new(config.max_queries_per_second),
            answer_bucket: TokenBucket::new(config.max_answers_per_second),
            config,
            membership: Mutex::new(Membership::new()),
            pending: PendingQueries::default(),
            generation: AtomicU64::new(0),
            metrics: ClusterMetrics::register(),
            presence: presence::Presence::new(),
            queries_answered: AtomicU64::new(0),
        }
    }

    fn live_peers(&self, now: Instant) -> Vec<Uuid> {
        self.membership.lock().live(now)
    }
}

fn cluster_topic() -> Topic {
    Topic::Namespace(CLUSTER_TOPIC.to_owned())
}

fn envelope(shared: &ServerShared, msg: &ClusterMessage) -> Result<Bytes, ClusterError> {
    let body = msg.encode().map_err(|e| {
        ClusterError::new(ClusterErrorKind::Encode, "cluster message").with_source(e)
    })?;
    let env = Envelope::new(
        shared.instance,
        shared.next_token(),
        EnvelopeKind::Cluster,
        EnvelopeTarget::namespace(""),
        &Message::new("", "", body),
    );
    env.encode()
        .map(Bytes::from)
        .map_err(|e| ClusterError::new(ClusterErrorKind::Encode, "cluster envelope").with_source(e))
}

/// Publishes on the cluster topic (every instance).
fn publish_to_all(shared: &ServerShared, msg: &ClusterMessage) -> Result<(), ClusterError> {
    let bytes = envelope(shared, msg)?;
    shared.publish(cluster_topic(), bytes);
    Ok(())
}

/// Publishes to one instance's inbox.
fn publish_to(
    shared: &ServerShared,
    instance: Uuid,
    msg: &ClusterMessage,
) -> Result<(), ClusterError> {
    let bytes = envelope(shared, msg)?;
    shared.publish(Topic::Inbox(instance), bytes);
    Ok(())
}

/// Subscribes the cluster topic and starts the heartbeat (with an exchange), and the
/// presence handler. Called once by [`ServerBuilder::build`](crate::ServerBuilder::build).
pub(crate) fn start(shared: &Arc<ServerShared>) {
    if !shared.cluster.enabled {
        return;
    }
    presence::start(shared);
    if shared.exchanges.is_empty() {
        return;
    }
    for exchange in &shared.exchanges {
        exchange.subscribe(cluster_topic());
    }
    tokio::spawn(heartbeats(Arc::downgrade(shared)));
}

fn heartbeat(shared: &ServerShared, reply: bool) -> ClusterMessage {
    let config = &shared.cluster.config;
    ClusterMessage::Heartbeat(Heartbeat::new(
        config.label.clone(),
        shared.cluster.generation.load(Ordering::Acquire),
        u64::try_from(config.lease.as_millis()).unwrap_or(u64::MAX),
        reply,
    ))
}

/// Renews this instance's lease every heartbeat interval and expires the others.
async fn heartbeats(weak: std::sync::Weak<ServerShared>) {
    // The first heartbeat asks for replies: wait until our inbox and the cluster topic are
    // subscribed so those replies are not lost.
    let Some(shared) = weak.upgrade() else {
        return;
    };
    for exchange in shared.exchanges.clone() {
        exchange.flush().await;
    }
    let interval = shared.cluster.config.heartbeat;
    let tick = (interval / 4).max(Duration::from_millis(10));
    let mut next_beat = Instant::now();
    let mut first = true;
    drop(shared);
    loop {
        let Some(shared) = weak.upgrade() else {
            return;
        };
        if shared.is_shutting_down() {
            return;
        }
        let now = Instant::now();
        if now >= next_beat {
            if let Err(e) = publish_to_all(&shared, &heartbeat(&shared, first)) {
                tracing::warn!(error = %e, "heartbeat not sent");
            }
            shared.cluster.metrics.heartbeats.increment(1);
            if first {
                shared
                    .cluster
                    .membership
                    .lock()
                    .settle_after(now + interval);
                first = false;
            }
            next_beat = now + interval;
        }
        sweep(&shared, now, interval * 2);
        drop(shared);
        tokio::time::sleep(tick).await;
    }
}

/// Expires the instances whose lease ran out, and updates the gauges.
fn sweep(shared: &ServerShared, now: Instant, stall: Duration) {
    let state = &shared.cluster;
    let (gone, live, oldest) = {
        let mut membership = state.membership.lock();
        let gone = membership.sweep(now, stall);
        (gone, membership.live(now), membership.oldest_heartbeat(now))
    };
    state.metrics.instances.set((live.len() + 1) as f64);
    state.metrics.heartbeat_age.set(oldest.as_secs_f64());
    if gone.is_empty() {
        return;
    }
    let elected = live.iter().all(|id| *id > shared.instance);
    for (instance, generation) in gone {
        tracing::info!(%instance, generation, elected, "instance lease expired");
        state.metrics.expired.increment(1);
        presence::instance_expired(shared, instance, generation, elected);
    }
}

/// A cluster envelope from another instance.
pub(crate) fn on_envelope(shared: &Arc<ServerShared>, env: &Envelope) {
    if !shared.cluster.enabled {
        return;
    }
    let msg = match ClusterMessage::decode(&env.body) {
        Ok(msg) => msg,
        Err(e) => {
            shared.stats.malformed_envelope();
            tracing::warn!(error = %e, "dropped a malformed cluster message");
            return;
        }
    };
    let from = env.origin;
    let state = &shared.cluster;
    match msg {
        ClusterMessage::Heartbeat(hb) => {
            let now = Instant::now();
            let (heard, elected) = {
                let mut membership = state.membership.lock();
                let heard = membership.heard(from, &hb, now);
                let elected = membership.live(now).iter().all(|id| *id > shared.instance);
                (heard, elected)
            };
            match heard {
                Heard::Zombie(generation) if elected => {
                    let _ = publish_to(shared, from, &ClusterMessage::Expired { generation });
                }
                Heard::New | Heard::Renewed if hb.reply => {
                    let _ = publish_to(shared, from, &heartbeat(shared, false));
                }
                _ => {}
            }
        }
        ClusterMessage::Bye { .. } => {
            state.membership.lock().bye(from);
            presence::forget(shared, from);
        }
        ClusterMessage::Query { token, query } => {
            if !state.answer_bucket.try_take() {
                state.metrics.answers_dropped.increment(1);
                return;
            }
            state.queries_answered.fetch_add(1, Ordering::Relaxed);
            let shared = shared.clone();
            tokio::spawn(async move {
                let answer = answer::local(&shared, &query).await;
                let msg = ClusterMessage::Answer { token, answer };
                if let Err(e) = publish_to(&shared, from, &msg) {
                    tracing::warn!(error = %e, "cluster answer not sent");
                }
            });
        }
        ClusterMessage::Answer { token, answer } => {
            let delivered = state.pending.answer(token, from, answer);
            if !delivered {
                tracing::trace!(token, "late cluster answer dropped");
            }
        }
        ClusterMessage::Presence(batch) => presence::received(shared, from, batch),
        ClusterMessage::Expired { generation } => {
            let current = state.generation.load(Ordering::Acquire);
            if generation == current
                && state
                    .generation
                    .compare_exchange(current, current + 1, Ordering::AcqRel, Ordering::Acquire)
                    .is_ok()
            {
                tracing::warn!(
                    generation,
                    "the cluster expired this instance (it stalled): announcing it again"
                );
                let _ = publish_to_all(shared, &heartbeat(shared, true));
                presence::announce(shared);
            }
        }
        _ => {}
    }
}

/// Tells the others this instance is going away (from [`Server::shutdown`]).
pub(crate) fn bye(shared: &ServerShared) {
    if !shared.cluster.enabled || shared.exchanges.is_empty() {
        return;
    }
    let generation = shared.cluster.generation.load(Ordering::Acquire);
    let _ = publish_to_all(shared, &ClusterMessage::Bye { generation });
}

/// Resolves only when every live instance answered that none holds connection `id` (and
/// the live set is complete); otherwise never. Lets [`Server::ask`] fail fast.
pub(crate) async fn absent(shared: &Arc<ServerShared>, id: &str, within: Duration) {
    let settled = shared.cluster.membership.lock().is_settled(Instant::now());
    // Instances the cluster cannot hear (Go neffos behind a compatibility mode) may hold it.
    let foreign = shared.exchanges.iter().any(|x| x.has_foreign_instances());

    if settled && !foreign {
        let deadline = shared.cluster.config.query_deadline.min(within);
        let query = Query::Find { id: id.to_owned() };
        if let Ok(found) = query::ask_all(shared, query, deadline, false).await {
            let found = query::holders(found);
            if found.is_complete() && found.value.is_empty() {
                return;
            }
        }
    }
    std::future::pending::<()>().await;
}

/// Counters of the cluster layer, for tests and dashboards.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct ClusterStats {
    /// Live instances, this one included.
    pub instances: usize,
    /// Queries of other instances answered by this one.
    pub queries_answered: u64,
    /// Queries of this instance still waiting for answers.
    pub pending_queries: usize,
    /// This instance's generation (incremented each time the cluster expired it).
    pub generation: u64,
    /// One heartbeat interval passed since this instance announced itself: every live
    /// instance has been heard, so "no live instance holds this ID" can be trusted.
    pub settled: bool,
}

/// The cluster seen from one instance: `server.cluster()`. Cheap to clone.
///
/// The instance takes part once built with
/// [`ServerBuilder::cluster`](crate::ServerBuilder::cluster); otherwise queries and
/// operations cover this instance only.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neffos::{Events, Namespaces, Server};
/// use neffos::ClusterConfig;
/// let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
///     .cluster(ClusterConfig::default())
///     .build();
/// let online = server.cluster().count("chat").await.unwrap();
/// assert_eq!(online.value, 0);
/// assert!(online.is_complete());
/// # }
/// ```
#[derive(Clone)]
pub struct Cluster {
    shared: Arc<ServerShared>,
    deadline: Option<Duration>,
}

impl std::fmt::Debug for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Cluster")
            .field("instance", &self.shared.instance)
            .field("deadline", &self.deadline)
            .finish_non_exhaustive()
    }
}

impl Server {
    /// The cluster this instance belongs to (through its exchanges; alone without one).
    pub fn cluster(&self) -> Cluster {
        Cluster {
            shared: self.0.clone(),
            deadline: None,
        }
    }
}

impl Cluster {
    /// The same handle with another deadline for its queries and operations.
    pub fn with_deadline(mut self, deadline: Duration) -> Self {
        self.deadline = Some(deadline);
        self
    }

    fn query_deadline(&self) -> Duration {
        self.deadline
            .unwrap_or(self.shared.cluster.config.query_deadline)
    }

    fn operation_deadline(&self) -> Duration {
        self.deadline
            .unwrap_or(self.shared.cluster.config.operation_deadline)
    }

    /// The live instances (leases running), this one first.
    pub fn instances(&self) -> Vec<InstanceInfo> {
        let state = &self.shared.cluster;
        let mut out = vec![InstanceInfo {
            id: self.shared.instance,
            label: state.config.label.clone(),
            last_seen: SystemTime::now(),
            generation: state.generation.load(Ordering::Acquire),
            is_self: true,
        }];
        let mut others = state.membership.lock().infos(Instant::now());
        others.sort_by_key(|i| i.id);
        out.extend(others);
        out
    }

    /// Counters.
    pub fn stats(&self) -> ClusterStats {
        let state = &self.shared.cluster;
        ClusterStats {
            instances: state.live_peers(Instant::now()).len() + 1,
            queries_answered: state.queries_answered.load(Ordering::Relaxed),
            pending_queries: state.pending.len(),
            generation: state.generation.load(Ordering::Acquire),
            settled: state.membership.lock().is_settled(Instant::now()),
        }
    }

    async fn ask(&self, query: Query, deadline: Duration) -> Result<query::Answers, ClusterError> {
        query::ask_all(&self.shared, query, deadline, true).await
    }

    /// Every connection of `namespace`, on every instance that answered.
    pub async fn connections(&self, namespace: &str) -> Result<Partial<Vec<Member>>, ClusterError> {
        let q = Query::Connections {
            namespace: namespace.to_owned(),
        };
        Ok(query::members(self.ask(q, self.query_deadline()).await?))
    }

    /// The number of connections of `namespace` (each instance sends a number).
    pub async fn count(&self, namespace: &str) -> Result<Partial<usize>, ClusterError> {
        let q = Query::Count {
            namespace: namespace.to_owned(),
        };
        Ok(query::sum(self.ask(q, self.query_deadline()).await?))
    }

    /// The rooms of `namespace` with their number of members.
    pub async fn rooms(
        &self,
        namespace: &str,
    ) -> Result<Partial<BTreeMap<String, usize>>, ClusterError> {
        let q = Query::Rooms {
            namespace: namespace.to_owned(),
        };
        Ok(query::rooms(self.ask(q, self.query_deadline()).await?))
    }

    /// The members of `room` in `namespace`.
    pub async fn room_members(
        &self,
        namespace: &str,
        room: &str,
    ) -> Result<Partial<Vec<Member>>, ClusterError> {
        let q = Query::RoomMembers {
            namespace: namespace.to_owned(),
            room: room.to_owned(),
        };
        Ok(query::members(self.ask(q, self.query_deadline()).await?))
    }

    /// The number of members of `room` in `namespace` (each instance sends a number).
    pub async fn room_count(
        &self,
        namespace: &str,
        room: &str,
    ) -> Result<Partial<usize>, ClusterError> {
        let q = Query::RoomCount {
            namespace: namespace.to_owned(),
            room: room.to_owned(),
        };
        Ok(query::sum(self.ask(q, self.query_deadline()).await?))
    }

    /// The instances holding connection ID `id`, with how many connections each.
    pub async fn find(&self, id: &str) -> Result<Partial<Vec<(Uuid, usize)>>, ClusterError> {
        let q = Query::Find { id: id.to_owned() };
        Ok(query::holders(self.ask(q, self.query_deadline()).await?))
    }

    /// Closes the connections with ID `id` wherever they are (close 1000 with `reason`).
    pub async fn disconnect(&self, id: &str, reason: &str) -> Result<Applied, ClusterError> {
        let q = Query::Disconnect {
            id: id.to_owned(),
            reason: reason.to_owned(),
        };
        Ok(Applied::from_answers(
            self.ask(q, self.operation_deadline()).await?,
        ))
    }

    /// Makes the connections with ID `id` join `room` of `namespace` (the server asks each
    /// client, as [`NsConn::join_room`](crate::NsConn::join_room) does).
    pub async fn join_room(
        &self,
        id: &str,
        namespace: &str,
        room: &str,
    ) -> Result<Applied, ClusterError> {
        let q = Query::JoinRoom {
            id: id.to_owned(),
            namespace: namespace.to_owned(),
            room: room.to_owned(),
        };
        Ok(Applied::from_answers(
            self.ask(q, self.operation_deadline()).await?,
        ))
    }

    /// Makes the connections with ID `id` leave `room` of `namespace`.
    pub async fn leave_room(
        &self,
        id: &str,
        namespace: &str,
        room: &str,
    ) -> Result<Applied, ClusterError> {
        let q = Query::LeaveRoom {
            id: id.to_owned(),
            namespace: namespace.to_owned(),
            room: room.to_owned(),
        };
        Ok(Applied::from_answers(
            self.ask(q, self.operation_deadline()).await?,
        ))
    }
}

/// A local connection joined or left a namespace (`room` None) or a room: the server's
/// hook, called with its index lock held.
pub(crate) fn presence_changed(
    shared: &ServerShared,
    id: &bytestring::ByteString,
    namespace: &bytestring::ByteString,
    room: Option<&bytestring::ByteString>,
    joined: bool,
) {
    presence::local_change(shared, id, namespace, room, joined);
}
