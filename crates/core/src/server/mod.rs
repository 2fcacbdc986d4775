//! The [`Server`]: accepts connections, keeps the indexes, broadcasts, asks, and bridges
//! to an [`Exchange`] for scale-out.

mod dedup;
mod inbound;
pub(crate) mod registry;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use bytes::Bytes;
use bytestring::ByteString;
use neffos_protocol::{Envelope, EnvelopeKind, EnvelopeTarget, Message};
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::config::{Config, OverloadPolicy};
use crate::conn::{
    Conn, ConnInner, Fill, NewConn, RequestInfo, Role, close_code, engine, pressure,
};
use crate::error::{
    AskError, AskErrorKind, BroadcastError, BroadcastErrorKind, ExchangeError, ExchangeErrorKind,
    RemoteError,
};
use crate::exchange::{Exchange, Inbound, Topic};
use crate::handler::{BoxFuture, Namespaces};
use crate::transport::{TransportError, WsIn, WsOut};
use registry::{Interest, Registry};

type OnConnect = Arc<dyn Fn(Conn) -> BoxFuture<Result<(), String>> + Send + Sync>;
type OnDisconnect = Arc<dyn Fn(Conn) -> BoxFuture<()> + Send + Sync>;
type IdGenerator = Arc<dyn Fn(&http::request::Parts) -> String + Send + Sync>;

/// Server-wide counters, mirrored to the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) budget_closes: AtomicU64,
    pub(crate) publisher_pushbacks: AtomicU64,
    pub(crate) shed_frames: AtomicU64,
    pub(crate) late_replies: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
    pub(crate) malformed_envelopes: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) envelopes_received: AtomicU64,
    pub(crate) rejected_messages: AtomicU64,
}

impl Stats {
    fn new() -> Self {
        Stats {
            metrics: crate::metrics::Metrics::register(),
            slow_consumer_closes: AtomicU64::new(0),
            budget_closes: AtomicU64::new(0),
            publisher_pushbacks: AtomicU64::new(0),
            shed_frames: AtomicU64::new(0),
            late_replies: AtomicU64::new(0),
            invalid_frames: AtomicU64::new(0),
            malformed_envelopes: AtomicU64::new(0),
            accepted: AtomicU64::new(0),
            envelopes_received: AtomicU64::new(0),
            rejected_messages: AtomicU64::new(0),
        }
    }

    /// A message whose handler arguments could not be taken (a body that does not decode).
    pub(crate) fn message_rejected(&self) {
        self.rejected_messages.fetch_add(1, Ordering::Relaxed);
        self.metrics.rejected_messages.increment(1);
    }

    /// A stuck client closed (its outbound budget): counted as both.
    pub(crate) fn slow_consumer_close(&self) {
        self.slow_consumer_closes.fetch_add(1, Ordering::Relaxed);
        self.metrics.slow_consumer_closes.increment(1);
        self.budget_close();
    }

    /// A publisher's reading paused while the server is behind for everyone.
    pub(crate) fn publisher_pushback(&self) {
        self.publisher_pushbacks.fetch_add(1, Ordering::Relaxed);
        self.metrics.publisher_pushbacks.increment(1);
    }

    /// A connection closed or refused for going over one of its byte budgets.
    pub(crate) fn budget_close(&self) {
        self.budget_closes.fetch_add(1, Ordering::Relaxed);
        self.metrics.budget_closes.increment(1);
    }

    pub(crate) fn late_reply(&self) {
        self.late_replies.fetch_add(1, Ordering::Relaxed);
        self.metrics.late_replies.increment(1);
    }

    pub(crate) fn invalid_frame(&self) {
        self.invalid_frames.fetch_add(1, Ordering::Relaxed);
        self.metrics.invalid_frames.increment(1);
    }

    pub(crate) fn malformed_envelope(&self) {
        self.malformed_envelopes.fetch_add(1, Ordering::Relaxed);
        self.metrics.malformed_envelopes.increment(1);
    }

    pub(crate) fn envelope_received(&self) {
        self.envelopes_received.fetch_add(1, Ordering::Relaxed);
        self.metrics.envelopes_in.increment(1);
    }
}

/// A snapshot of the server's counters and index sizes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct StatsSnapshot {
    /// Connections currently registered.
    pub connections: usize,
    /// Distinct connection IDs in the ID index.
    pub ids: usize,
    /// Namespaces with at least one local connection.
    pub namespaces: usize,
    /// Rooms with at least one local member.
    pub rooms: usize,
    /// Connections ever accepted.
    pub accepted: u64,
    /// Stuck clients closed: outbound queue far over its budget, or over it without write
    /// progress ([`Config::outbound_budget`]).
    pub slow_consumer_closes: u64,
    /// Connections closed or refused for going over a byte budget (outbound queue, frames
    /// before the handshake, request head); see [`Config`].
    pub budget_closes: u64,
    /// Times a publisher's reading was paused because its broadcast found recipients behind
    /// while they read (a quarter of them over their outbound budget, or one over twice it):
    /// the server, not they, could not keep up.
    pub publisher_pushbacks: u64,
    /// Broadcast frames skipped for recipients over their outbound budget, in namespaces
    /// with [`OverloadPolicy::Shed`](crate::OverloadPolicy::Shed).
    pub shed_frames: u64,
    /// Replies that arrived after their Ask gave up (or for no Ask): dropped.
    pub late_replies: u64,
    /// Frames that were not neffos messages: dropped.
    pub invalid_frames: u64,
    /// Envelopes from the exchange that could not be decoded: dropped.
    pub malformed_envelopes: u64,
    /// Cross-instance Asks still waiting.
    pub pending_remote_asks: usize,
    /// Envelopes from other instances received through the exchange (own ones excluded).
    pub envelopes_received: u64,
    /// Messages answered with an error because a handler argument could not be taken from
    /// them (a typed body that does not decode, see [`Events::handle`](crate::Events::handle)).
    pub rejected_messages: u64,
}

/// Who a broadcast is for.
///
/// ```
/// use neffos::Target;
/// let everyone = Target::namespace("chat");
/// let room = Target::room("chat", "lobby");
/// let one = Target::conn("chat", "user-42");
/// # let _ = (everyone, room, one);
/// ```
#[derive(Debug, Clone, Default)]
pub struct Target {
    pub(crate) namespace: ByteString,
    pub(crate) room: Option<ByteString>,
    pub(crate) to: Option<ByteString>,
    pub(crate) except_key: Option<u64>,
    pub(crate) except_id: Option<ByteString>,
}

impl Target {
    /// Every connection of `namespace`, on every instance.
    pub fn namespace(namespace: &str) -> Self {
        Target {
            namespace: ByteString::from(namespace),
            ..Target::default()
        }
    }

    /// Every member of `room` in `namespace`, on every instance.
    pub fn room(namespace: &str, room: &str) -> Self {
        Target {
            room: Some(ByteString::from(room)),
            ..Target::namespace(namespace)
        }
    }

    /// The connection(s) with ID `id` in `namespace`, on whichever instance they are.
    pub fn conn(namespace: &str, id: &str) -> Self {
        Target {
            to: Some(ByteString::from(id)),
            ..Target::namespace(namespace)
        }
    }

    /// Skips `conn` (and, on other instances, connections with its ID).
    pub fn except(mut self, conn: &Conn) -> Self {
        self.except_key = Some(conn.0.key);
        self.except_id = Some(conn.0.id.clone());
        self
    }

    /// Skips every connection with ID `id`.
    pub fn except_id(mut self, id: &str) -> Self {
        self.except_id = Some(ByteString::from(id));
        self
    }

    pub(crate) fn envelope_target(&self) -> EnvelopeTarget {
        let mut t = EnvelopeTarget::namespace(self.namespace.to_string());
        t.room = self.room.as_ref().map(|r| r.to_string());
        t.conn = self.to.as_ref().map(|r| r.to_string());
        t.except = self.except_id.as_ref().map(|r| r.to_string());
        t
    }

    pub(crate) fn from_envelope(t: &EnvelopeTarget) -> Self {
        Target {
            namespace: ByteString::from(t.namespace.as_str()),
            room: t.room.as_deref().map(ByteString::from),
            to: t.conn.as_deref().map(ByteString::from),
            except_key: None,
            except_id: t.except.as_deref().map(ByteString::from),
        }
    }
}

pub(crate) struct ServerShared {
    pub(crate) instance: Uuid,
    pub(crate) config: Arc<Config>,
    pub(crate) namespaces: Arc<Namespaces>,
    on_connect: Option<OnConnect>,
    on_disconnect: Option<OnDisconnect>,
    id_generator: Option<IdGenerator>,
    pub(crate) registry: RwLock<Registry>,
    pub(crate) exchanges: Vec<Arc<dyn Exchange>>,
    pub(crate) relay: bool,
    pub(crate) dedup: Mutex<dedup::Dedup>,
    remote_asks: Mutex<HashMap<u64, oneshot::Sender<Envelope>>>,
    next_key: AtomicU64,
    seq: AtomicU64,
    pub(crate) stats: Stats,
    pub(crate) cluster: crate::cluster::ClusterState,
    /// Connection-state recovery, when on.
    pub(crate) recovery: Option<crate::recovery::RecoveryState>,
    shutting_down: AtomicBool,
    changed: Notify,
    admitted: Mutex<Admitted>,
    warned_no_peer_address: AtomicBool,
    /// Namespaces with [`OverloadPolicy::Shed`], and their shed-frame counters.
    shedding: HashMap<ByteString, metrics::Counter>,
}

/// Sockets admitted and not yet gone, in total and per remote IP.
#[derive(Debug, Default)]
struct Admitted {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a new connection is refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ShuttingDown,
    TooManyConnections,
    TooManyFromIp,
}

/// Holds one admitted connection's place; released when dropped.
pub(crate) struct Admission {
    shared: Arc<ServerShared>,
    ip: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut admitted = self.shared.admitted.lock();
        admitted.total = admitted.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = admitted.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                admitted.per_ip.remove(&ip);
            }
        }
    }
}

/// A neffos server. Cheap to clone (an `Arc`); every clone is the same server.
///
/// Build it with [`Server::builder`], mount it with [`Server::route`] (feature `axum`).
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neffos::{Events, Namespaces, Server};
/// let server = Server::builder(
///     Namespaces::new().namespace("default", Events::new().on("chat", |ns, msg| async move {
///         ns.broadcast_others(msg)
///     })),
/// )
/// .build();
/// assert_eq!(server.connection_count(), 0);
/// # }
/// ```
#[derive(Clone)]
pub struct Server(pub(crate) Arc<ServerShared>);

impl fmt::Debug for Server {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Server")
            .field("instance", &self.0.instance)
            .field("connections", &self.connection_count())
            .finish_non_exhaustive()
    }
}

/// Builds a [`Server`].
#[must_use]
pub struct ServerBuilder {
    namespaces: Namespaces,
    config: Config,
    on_connect: Option<OnConnect>,
    on_disconnect: Option<OnDisconnect>,
    id_generator: Option<IdGenerator>,
    exchanges: Vec<Arc<dyn Exchange>>,
    relay: bool,
    cluster: Option<crate::cluster::ClusterConfig>,
    recovery: Option<crate::recovery::Recovery>,
    overload: HashMap<ByteString, OverloadPolicy>,
}

impl fmt::Debug for ServerBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ServerBuilder").finish_non_exhaustive()
    }
}

impl ServerBuilder {
    /// Sets the limits and timings.
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Runs after the client's acknowledgement request and before the server's answer:
    /// `Err(reason)` refuses the connection (the client gets `H<reason>`, then close 1008).
    pub fn on_connect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<(), String>> + Send + 'static,
    {
        self.on_connect = Some(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Runs once after a connection is gone (its namespaces and rooms already left).
    pub fn on_disconnect<F, Fut>(mut self, f: F) -> Self
    where
        F: Fn(Conn) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.on_disconnect = Some(Arc::new(move |c| Box::pin(f(c))));
        self
    }

    /// Chooses each connection's ID from its upgrade request (default: a random UUID v4).
    /// IDs must not contain `;`.
    pub fn id_generator<F>(mut self, f: F) -> Self
    where
        F: Fn(&http::request::Parts) -> String + Send + Sync + 'static,
    {
        self.id_generator = Some(Arc::new(f));
        self
    }

    /// Gives every handler an application state value: the [`State`](crate::State)
    /// argument of [`Events::handle`](crate::Events::handle) handlers, or
    /// [`NsConn::state`](crate::NsConn::state). One value per type; call it again for
    /// another type. Share what handlers mutate through `Arc`s.
    pub fn with_state<S: Clone + Send + Sync + 'static>(mut self, state: S) -> Self {
        self.namespaces = self.namespaces.with_state(state);
        self
    }

    /// Scales out through `exchange`. Call it again to chain several exchanges (e.g. Redis
    /// and NATS during a migration): publications go to all of them, and an envelope that
    /// arrives through two of them is handled once.
    ///
    /// An `Arc<E>` is an exchange too: keep a clone to read its [`Exchange::stats`].
    pub fn exchange(mut self, exchange: impl Exchange) -> Self {
        self.exchanges.push(Arc::new(exchange));
        self
    }

    /// With several exchanges, forwards every broadcast, targeted send and Ask received
    /// through one exchange to the others (off by default). This lets instances that share
    /// no broker see each other through this one, e.g. during a migration. Loop-free: an
    /// envelope keeps its origin and sequence number, and every instance handles (and
    /// relays) it at most once. The relay subscribes to every declared namespace, so
    /// namespace and room broadcasts cross the bridge; sends and Asks to a connection ID
    /// cross it when the relay happens to be subscribed to that connection's topic.
    pub fn relay(mut self, relay: bool) -> Self {
        self.relay = relay;
        self
    }

    /// Turns connection-state recovery on for the namespaces `recovery` names: a client
    /// that drops comes back with its ID, namespaces and rooms and gets what it missed
    /// (see [`crate::recovery`]).
    pub fn recovery(mut self, recovery: crate::recovery::Recovery) -> Self {
        self.recovery = Some(recovery);
        self
    }

    /// Sets what broadcasts to `namespace` do when recipients that read are behind (default
    /// [`OverloadPolicy::PushBack`] for every namespace).
    pub fn overload(mut self, namespace: &str, policy: OverloadPolicy) -> Self {
        self.overload.insert(ByteString::from(namespace), policy);
        self
    }

    /// Makes this instance take part in its cluster (off by default): it announces itself
    /// and renews its lease through the exchanges, answers the others' queries, and
    /// [`Server::ask`] to an ID no live instance holds fails fast. `config` sets the
    /// heartbeat, deadlines, limits and presence events (see [`Server::cluster`]).
    pub fn cluster(mut self, config: crate::cluster::ClusterConfig) -> Self {
        self.cluster = Some(config);
        self
    }

    /// Builds the server. With an exchange or presence events, must run inside a tokio
    /// runtime (the exchange, the inbound and the cluster tasks start here).
    pub fn build(self) -> Server {
        if let Some(recovery) = &self.recovery
            && recovery.instance_memory
            && !self.exchanges.is_empty()
        {
            // Sessions and history in one instance's memory cannot follow a client that
            // reconnects to another instance: say so once rather than "not recovered" later.
            tracing::warn!(
                "connection-state recovery keeps its history in this instance's memory while \
                 an exchange joins other instances: a client reconnecting elsewhere will not be \
                 recovered; give Recovery::store a shared store (RedisHistory, NatsHistory)"
            );
        }
        let shared = Arc::new(ServerShared {
            instance: Uuid::new_v4(),
            config: Arc::new(self.config),
            namespaces: Arc::new(self.namespaces),
            on_connect: self.on_connect,
            on_disconnect: self.on_disconnect,
            id_generator: self.id_generator,
            registry: RwLock::new(Registry::default()),
            exchanges: self.exchanges,
            relay: self.relay,
            dedup: Mutex::new(dedup::Dedup::default()),
            remote_asks: Mutex::new(HashMap::new()),
            next_key: AtomicU64::new(1),
            seq: AtomicU64::new(0),
            stats: Stats::new(),
            cluster: crate::cluster::ClusterState::new(self.cluster),
            recovery: self.recovery.map(crate::recovery::RecoveryState::new),
            shutting_down: AtomicBool::new(false),
            changed: Notify::new(),
            admitted: Mutex::new(Admitted::default()),
            warned_no_peer_address: AtomicBool::new(false),
            shedding: self
                .overload
                .into_iter()
                .filter(|(_, policy)| *policy == OverloadPolicy::Shed)
                .map(|(ns, _)| {
                    let counter = metrics::counter!("neffos_shed_frames_total", "namespace" => ns.to_string());
                    (ns, counter)
                })
                .collect(),
        });
        if !shared.exchanges.is_empty() {
            let (tx, rx) = Inbound::channel(shared.config.outbound_queue.max(4096));
            for (source, exchange) in shared.exchanges.iter().enumerate() {
                exchange.start(shared.instance, Inbound::new(tx.clone(), source));
            }
            if shared.relay && shared.exchanges.len() > 1 {
                for ns in shared.namespaces.names() {
                    for exchange in &shared.exchanges {
                        exchange.subscribe(Topic::Namespace(ns.to_owned()));
                    }
                }
            }
            tokio::spawn(inbound::run(Arc::downgrade(&shared), rx));
        }
        crate::cluster::start(&shared);
        crate::recovery::start(&shared);
        Server(shared)
    }
}

impl Server {
    /// Starts building a server that serves `namespaces`.
    pub fn builder(namespaces: Namespaces) -> ServerBuilder {
        ServerBuilder {
            namespaces,
            config: Config::default(),
            on_connect: None,
            on_disconnect: None,
            id_generator: None,
            exchanges: Vec::new(),
            relay: false,
            cluster: None,
            recovery: None,
            overload: HashMap::new(),
        }
    }

    /// This instance's ID (origin of its envelopes).
    pub fn instance_id(&self) -> Uuid {
        self.0.instance
    }

    /// The configuration.
    pub fn config(&self) -> &Config {
        &self.0.config
    }

    /// Connections currently open on this instance.
    pub fn connection_count(&self) -> usize {
        self.0.registry.read().conns.len()
    }

    /// The local connections with ID `id`.
    pub fn connections_by_id(&self, id: &str) -> Vec<Conn> {
        self.0
            .registry
            .read()
            .by_id
            .get(id)
            .map(|m| m.iter().map(|c| Conn(c.clone())).collect())
            .unwrap_or_default()
    }

    /// Closes every local connection with ID `id` (1000); returns how many.
    pub fn disconnect(&self, id: &str) -> usize {
        let conns = self.connections_by_id(id);
        for c in &conns {
            c.close();
        }
        conns.len()
    }

    /// The [`OverloadPolicy`] of `namespace` (see [`ServerBuilder::overload`]).
    pub fn overload_policy(&self, namespace: &str) -> OverloadPolicy {
        if self.0.shedding.contains_key(namespace) {
            OverloadPolicy::Shed
        } else {
            OverloadPolicy::PushBack
        }
    }

    /// Counters and index sizes.
    pub fn stats(&self) -> StatsSnapshot {
        let (connections, ids, namespaces, rooms) = self.0.registry.read().sizes();
        let s = &self.0.stats;
        StatsSnapshot {
            connections,
            ids,
            namespaces,
            rooms,
            accepted: s.accepted.load(Ordering::Relaxed),
            slow_consumer_closes: s.slow_consumer_closes.load(Ordering::Relaxed),
            budget_closes: s.budget_closes.load(Ordering::Relaxed),
            publisher_pushbacks: s.publisher_pushbacks.load(Ordering::Relaxed),
            shed_frames: s.shed_frames.load(Ordering::Relaxed),
            late_replies: s.late_replies.load(Ordering::Relaxed),
            invalid_frames: s.invalid_frames.load(Ordering::Relaxed),
            malformed_envelopes: s.malformed_envelopes.load(Ordering::Relaxed),
            pending_remote_asks: self.0.remote_asks.lock().len(),
            envelopes_received: s.envelopes_received.load(Ordering::Relaxed),
            rejected_messages: s.rejected_messages.load(Ordering::Relaxed),
        }
    }

    /// Counters of connection-state recovery (all zero when it is off).
    pub fn recovery_stats(&self) -> crate::recovery::RecoveryStats {
        self.0
            .recovery
            .as_ref()
            .map(|r| r.stats())
            .unwrap_or_default()
    }

    /// The (first) exchange, if any.
    pub fn exchange(&self) -> Option<&Arc<dyn Exchange>> {
        self.0.exchanges.first()
    }

    /// Every exchange, in the order they were added.
    pub fn exchanges(&self) -> &[Arc<dyn Exchange>] {
        &self.0.exchanges
    }

    /// Waits until every exchange applied what was queued before the call
    /// ([`Exchange::flush`]).
    pub async fn flush_exchanges(&self) {
        for exchange in &self.0.exchanges {
            exchange.flush().await;
        }
    }

    /// Sends `msg` (its namespace and room are taken from `target`) to every recipient:
    /// local ones directly, then one publication to the exchange for the other instances.
    /// The frame is encoded once for all local recipients.
    pub fn broadcast(&self, target: Target, mut msg: Message) -> Result<(), BroadcastError> {
        msg.namespace = target.namespace.clone();
        msg.room = target.room.clone().unwrap_or_default();
        if !msg.binary && std::str::from_utf8(&msg.body).is_err() {
            return Err(BroadcastError::new(
                BroadcastErrorKind::InvalidText,
                broadcast_context(&target, &msg),
            ));
        }
        // A recording namespace: appended to its history first, then delivered.
        if crate::recovery::submit(&self.0, &target, &msg) {
            return Ok(());
        }
        self.0.deliver_local(&target, &msg);
        if !self.0.exchanges.is_empty() {
            let kind = if target.to.is_some() {
                EnvelopeKind::Targeted
            } else {
                EnvelopeKind::Broadcast
            };
            let topic = match &target.to {
                Some(id) => Topic::Conn(id.to_string()),
                None => Topic::Namespace(target.namespace.to_string()),
            };
            let env = Envelope::new(
                self.0.instance,
                self.0.next_seq(),
                kind,
                target.envelope_target(),
                &msg,
            );
            let payload = self.0.encode(&env).map_err(|e| {
                e.into_kind(
                    BroadcastErrorKind::Exchange,
                    broadcast_context(&target, &msg),
                )
            })?;
            self.0.publish(topic, payload);
        }
        Ok(())
    }

    /// Asks the connection with ID `id` (on this or, through the exchange, any instance)
    /// in `msg`'s namespace, and waits for its reply until `timeout`.
    ///
    /// ```no_run
    /// # async fn run(server: neffos::Server) -> Result<(), neffos::AskError> {
    /// use std::time::Duration;
    /// use neffos::Message;
    /// let reply = server
    ///     .ask("user-42", Message::new("chat", "question", "ready?"), Duration::from_secs(5))
    ///     .await?;
    /// # let _ = reply; Ok(()) }
    /// ```
    pub async fn ask(
        &self,
        id: &str,
        msg: Message,
        timeout: Duration,
    ) -> Result<Message, AskError> {
        let namespace = msg.namespace.clone();
        let namespace = &*namespace;
        if let Some(conn) = self.connections_by_id(id).into_iter().next() {
            return conn.0.ask(msg, timeout).await;
        }
        let context = || crate::conn::ask_context(&msg, id);
        if self.0.exchanges.is_empty() {
            return Err(AskError::new(AskErrorKind::UnknownConnection, context()));
        }
        let token = self.0.next_seq();
        let (tx, rx) = oneshot::channel();
        self.0.remote_asks.lock().insert(token, tx);
        let _guard = RemoteAskGuard {
            shared: &self.0,
            token,
        };
        let target = Target::conn(namespace, id);
        let env = Envelope::new(
            self.0.instance,
            token,
            EnvelopeKind::Ask,
            target.envelope_target(),
            &msg,
        )
        .with_token(token);
        let payload = self
            .0
            .encode(&env)
            .map_err(|e| e.into_kind(AskErrorKind::Exchange, context()))?;
        self.0.publish(Topic::Conn(id.to_owned()), payload);
        // Fails fast when every live instance says it does not hold `id` (cluster on).
        let reply = tokio::select! {
            reply = tokio::time::timeout(timeout, rx) => match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => {
                    let context = format!("{} (server shutting down)", context());
                    return Err(AskError::new(AskErrorKind::Closed, context));
                }
                Err(_) => {
                    // Nobody answered: no instance has this ID, or its owner did not reply.
                    let context = format!("{} within {timeout:?}", context());
                    return Err(AskError::new(AskErrorKind::Timeout, context));
                }
            },
            () = crate::cluster::absent(&self.0, id, timeout) => {
                let context = format!("{} (no live instance holds it)", context());
                return Err(AskError::new(AskErrorKind::UnknownConnection, context));
            }
        };
        let mut reply_msg = reply.to_message();
        reply_msg.namespace = ByteString::from(namespace);
        match reply_msg.error() {
            Some(text) => {
                Err(AskError::new(AskErrorKind::Remote, context())
                    .with_source(RemoteError::new(text)))
            }
            None => Ok(reply_msg),
        }
    }

    /// Broadcasts `event` with `value` as a JSON body to `target` (see [`Self::broadcast`]).
    ///
    /// ```no_run
    /// # fn run(server: neffos::Server) -> Result<(), neffos::BroadcastError> {
    /// #[derive(serde::Serialize)]
    /// struct Notice<'a> { text: &'a str }
    /// server.broadcast_json(neffos::Target::namespace("chat"), "notice", &Notice { text: "hi" })
    /// # }
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn broadcast_json<T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        self.broadcast_as::<crate::body::Json<()>, T>(target, event, value)
    }

    /// Broadcasts `event` with `value` as a MessagePack body (binary frame) to `target`.
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    pub fn broadcast_msgpack<T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        self.broadcast_as::<crate::body::MsgPack<()>, T>(target, event, value)
    }

    #[cfg(any(feature = "json", feature = "msgpack"))]
    fn broadcast_as<F: crate::body::Format, T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        let msg = crate::body::message::<F, T>(&target.namespace, event, value).map_err(|e| {
            let context = broadcast_context(&target, &Message::new("", event, ""));
            e.into_kind(BroadcastErrorKind::Encode, context)
        })?;
        self.broadcast(target, msg)
    }

    /// Asks connection `id` with `event` and `question` as a JSON body in `namespace`, and
    /// decodes the JSON reply into `R` (an undecodable reply is an [`AskError`] of kind
    /// [`Decode`](AskErrorKind::Decode)).
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub async fn ask_json<Q, R>(
        &self,
        namespace: &str,
        id: &str,
        event: &str,
        question: &Q,
        timeout: Duration,
    ) -> Result<R, AskError>
    where
        Q: serde::Serialize + ?Sized,
        R: serde::de::DeserializeOwned,
    {
        type F = crate::body::Json<()>;
        let context = || crate::conn::ask_context(&Message::new(namespace, event, ""), id);
        let msg = crate::body::message::<F, Q>(namespace, event, question)
            .map_err(|e| e.into_kind(AskErrorKind::NotSent, context()))?;
        let reply = self.ask(id, msg, timeout).await?;
        crate::body::decode::<F, R>(&reply)
            .map_err(|e| e.into_kind(AskErrorKind::Decode, context()))
    }

    /// Stops accepting, closes every connection with 1001 "server shutting down", waits for
    /// them to be gone (at most `deadline`), then closes the exchange. Returns the number of
    /// connections still open at the deadline.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.0.shutting_down.store(true, Ordering::Release);
        let conns: Vec<Arc<ConnInner>> = self.0.registry.read().conns.values().cloned().collect();
        for c in conns {
            c.close(close_code::GOING_AWAY, "server shutting down");
        }
        let wait_empty = async {
            loop {
                let notified = self.0.changed.notified();
                if self.connection_count() == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait_empty).await;
        crate::cluster::bye(&self.0);
        for exchange in &self.0.exchanges {
            let _ = tokio::time::timeout(deadline, async {
                exchange.flush().await;
                exchange.close().await;
            })
            .await;
        }
        self.connection_count()
    }

    /// Admits one more connection from `ip`, within [`Config::max_connections`] and
    /// [`Config::max_connections_per_ip`].
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Admission, Refusal> {
        if self.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        let config = &self.0.config;
        let mut admitted = self.0.admitted.lock();
        if config
            .max_connections
            .is_some_and(|max| admitted.total >= max)
        {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(ip) = ip {
            let n = admitted.per_ip.get(&ip).copied().unwrap_or(0);
            if config.max_connections_per_ip.is_some_and(|max| n >= max) {
                return Err(Refusal::TooManyFromIp);
            }
            admitted.per_ip.insert(ip, n + 1);
        }
        admitted.total += 1;
        Ok(Admission {
            shared: self.0.clone(),
            ip,
        })
    }

    /// Says once per server that [`Config::max_connections_per_ip`] cannot apply: the
    /// transport did not tell the peer's address.
    pub(crate) fn warn_no_peer_address(&self) {
        if !self.0.warned_no_peer_address.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "max_connections_per_ip is set but the peer address is unknown, so it does not \
                 apply: serve with neffos::serve, or axum::serve with \
                 into_make_service_with_connect_info::<SocketAddr>()"
            );
        }
    }

    /// True once [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }

    /// Sets up one upgraded WebSocket (any transport mapped to the engine's frames) and
    /// returns the future that serves it until it closes. Used by the axum integration.
    ///
    /// Everything that is needed only to set up (the request head, the sink, which the
    /// writer task takes) is consumed before the future is built, so the long-lived task
    /// does not carry it.
    pub(crate) fn serve_socket<R, W>(
        &self,
        request: RequestInfo,
        parts: Option<Box<http::request::Parts>>,
        stream: R,
        sink: W,
        extensions: http::Extensions,
    ) -> impl Future<Output = ()> + Send + use<R, W>
    where
        R: futures_util::Stream<Item = Result<WsIn, TransportError>> + Send + Unpin + 'static,
        W: futures_util::Sink<WsOut, Error = TransportError> + Send + Unpin + 'static,
    {
        let presented = crate::recovery::presentation(&self.0, &request, parts.as_deref());
        let generated = match (&self.0.id_generator, &parts) {
            (Some(generate), Some(parts)) => generate(parts),
            _ => Uuid::new_v4().to_string(),
        };
        // The request head still references hyper's read buffer; `request` holds copies.
        drop(parts);
        match presented {
            None => futures_util::future::Either::Left(
                self.serve_as(generated, None, request, stream, sink, extensions),
            ),
            // A presented session: its connection ID comes from the store.
            Some(presented) => {
                let server = self.clone();
                futures_util::future::Either::Right(Box::pin(async move {
                    let (id, session) =
                        crate::recovery::claim(&server.0, presented, generated).await;
                    server
                        .serve_as(id, Some(session), request, stream, sink, extensions)
                        .await;
                }))
            }
        }
    }

    /// [`Self::serve_socket`] once the connection ID is known.
    fn serve_as<R, W>(
        &self,
        id: String,
        session: Option<Arc<crate::recovery::ConnSession>>,
        request: RequestInfo,
        stream: R,
        sink: W,
        extensions: http::Extensions,
    ) -> impl Future<Output = ()> + Send + use<R, W>
    where
        R: futures_util::Stream<Item = Result<WsIn, TransportError>> + Send + Unpin + 'static,
        W: futures_util::Sink<WsOut, Error = TransportError> + Send + Unpin + 'static,
    {
        let inner = ConnInner::new(NewConn {
            key: self.0.next_key.fetch_add(1, Ordering::Relaxed),
            id: ByteString::from(id),
            role: Role::Server,
            request,
            handlers: self.0.namespaces.clone(),
            config: self.0.config.clone(),
            server: Some(self.0.clone()),
        });
        inner.extend(extensions);
        if let Some(session) = session {
            crate::recovery::attach(&inner, session);
        }
        let writer = engine::spawn_writer(&inner, sink);
        let accept: Option<BoxFuture<Result<(), String>>> = if self.is_shutting_down() {
            inner.close(close_code::GOING_AWAY, "server shutting down");
            None
        } else {
            Some(match &self.0.on_connect {
                Some(hook) => hook(Conn(inner.clone())),
                None => Box::pin(async { Ok(()) }),
            })
        };
        async move {
            if let Some(accept) = accept {
                let span = tracing::debug_span!("neffos_conn", id = %inner.id, key = inner.key);
                tracing::Instrument::instrument(engine::serve(inner.clone(), stream, accept), span)
                    .await;
            }
            inner.cancel.cancel();
            let _ = writer.await;
        }
    }
}

struct RemoteAskGuard<'a> {
    shared: &'a ServerShared,
    token: u64,
}

impl Drop for RemoteAskGuard<'_> {
    fn drop(&mut self) {
        self.shared.remote_asks.lock().remove(&self.token);
    }
}

impl ServerShared {
    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// A fresh per-instance number (envelope sequence numbers, correlation tokens).
    pub(crate) fn next_token(&self) -> u64 {
        self.next_seq()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
    }

    fn encode(&self, env: &Envelope) -> Result<Bytes, ExchangeError> {
        env.encode().map(Bytes::from).map_err(|e| {
            ExchangeError::new(ExchangeErrorKind::Encode, format!("encode {:?}", env.kind))
                .with_source(e)
        })
    }

    /// Publishes one encoded envelope on every exchange.
    pub(crate) fn publish(&self, topic: Topic, payload: Bytes) {
        self.stats
            .metrics
            .exchange_publishes
            .increment(self.exchanges.len() as u64);
        if let Some((last, rest)) = self.exchanges.split_last() {
            for exchange in rest {
                exchange.publish(topic.clone(), payload.clone());
            }
            last.publish(topic, payload);
        }
    }

    /// Tells the exchanges about interest transitions. Called with the registry lock held
    /// (the exchange calls only queue work), so transitions keep their order.
    fn apply(&self, changes: impl IntoIterator<Item = Interest>) {
        for change in changes {
            for exchange in &self.exchanges {
                match &change {
                    Interest::Gained(topic) => exchange.subscribe(topic.clone()),
                    // A relay keeps its namespace subscriptions for the instances it bridges.
                    Interest::Lost(Topic::Namespace(_))
                        if self.relay && self.exchanges.len() > 1 => {}
                    Interest::Lost(topic) => exchange.unsubscribe(topic.clone()),
                }
            }
        }
    }

    /// Local fan-out: recipients from the indexes, one encoding, a cheap clone per recipient.
    pub(crate) fn deliver_local(&self, target: &Target, msg: &Message) -> usize {
        self.deliver_local_at(target, msg, None)
    }

    /// [`Self::deliver_local`] for a broadcast recorded at `recorded` in its namespace's
    /// history: connections with a session get it through their session.
    pub(crate) fn deliver_local_at(
        &self,
        target: &Target,
        msg: &Message,
        recorded: Option<crate::recovery::Position>,
    ) -> usize {
        let out = WsOut::shared(msg.to_frame());
        let mut tagged = None;
        // The index lock is held only to take the recipients' list, never for the loop.
        let members = {
            let registry = self.registry.read();
            match (&target.to, &target.room) {
                (Some(id), _) => registry.by_id.get(&**id),
                (None, Some(room)) => registry
                    .by_room
                    .get(&(target.namespace.clone(), room.clone())),
                (None, None) => registry.by_ns.get(&target.namespace),
            }
            .map(registry::Members::snapshot)
        };
        let Some(members) = members else {
            return 0;
        };
        let mut delivered = 0;
        let mut lag = pressure::Lagging::default();
        let shed_counter = self.shedding.get(&target.namespace);
        let mut shed = 0u64;
        for conn in members.iter() {
            if target.except_key == Some(conn.key) || target.except_id.as_ref() == Some(&conn.id) {
                continue;
            }
            // A targeted send must still respect the namespace/room filter.
            if target.to.is_some() && !conn.can_receive(&msg.namespace, &msg.room) {
                continue;
            }
            let sent = match (recorded, crate::recovery::attached_session(conn)) {
                (Some(pos), Some(session)) => session.offer(conn, msg, pos, &out, &mut tagged),
                _ if shed_counter.is_some() => match conn.enqueue_or_shed(out.clone()) {
                    Ok(true) => Ok(Fill::Within),
                    Ok(false) => {
                        shed += 1;
                        continue;
                    }
                    Err(e) => Err(e),
                },
                _ => conn.enqueue(out.clone()),
            };
            if let Ok(fill) = sent {
                delivered += 1;
                if fill != Fill::Within {
                    lag.add(conn, fill);
                }
            }
        }
        if let Some(counter) = shed_counter
            && shed > 0
        {
            self.stats.shed_frames.fetch_add(shed, Ordering::Relaxed);
            counter.increment(shed);
        }
        // Recipients behind while they read: the publisher (if a handler broadcast) is
        // pushed back instead of them being closed.
        lag.note(delivered);
        self.stats
            .metrics
            .broadcast_recipients
            .record(delivered as f64);
        delivered
    }

    pub(crate) fn connection_ready(&self, conn: &Arc<ConnInner>) {
        self.stats.accepted.fetch_add(1, Ordering::Relaxed);
        self.stats.metrics.accepted.increment(1);
        self.stats.metrics.connections.increment(1.0);
        {
            let mut registry = self.registry.write();
            let change = registry.add_conn(conn);
            // Applied under the lock: interest transitions reach the exchange in the order
            // they happened, so a leave racing a join cannot end unsubscribed.
            self.apply(change);
        }
        crate::recovery::on_ready(conn);
        self.changed.notify_waiters();
    }

    /// A recording namespace's broadcast went out without being recorded.
    pub(crate) fn recovery_unrecorded(&self) {
        if let Some(recovery) = &self.recovery {
            recovery.unrecorded();
        }
    }

    pub(crate) async fn connection_closed(&self, conn: &Arc<ConnInner>) {
        let was_registered = {
            let mut registry = self.registry.write();
            let was = registry.conns.contains_key(&conn.key);
            let changes = registry.remove_conn(conn);
            self.set_index_gauges(&registry);
            self.apply(changes);
            was
        };
        if was_registered {
            self.stats.metrics.connections.decrement(1.0);
            crate::recovery::on_closed(self, conn);
        }
        if was_registered && let Some(hook) = &self.on_disconnect {
            hook(Conn(conn.clone())).await;
        }
        self.changed.notify_waiters();
    }

    fn set_index_gauges(&self, registry: &Registry) {
        let (_, _, namespaces, rooms) = registry.sizes();
        self.stats.metrics.namespaces.set(namespaces as f64);
        self.stats.metrics.rooms.set(rooms as f64);
    }

    pub(crate) fn namespace_added(&self, conn: &Arc<ConnInner>, ns: &ByteString) {
        let mut registry = self.registry.write();
        // Checked under the lock: a connection closes before its cleanup takes this lock,
        // so nothing can be indexed after the cleanup removed the connection's entries.
        if conn.is_closed() {
            return;
        }
        let change = registry.add_ns(ns, conn);
        self.set_index_gauges(&registry);
        self.apply(change);
        crate::cluster::presence_changed(self, &conn.id, ns, None, true);
        crate::recovery::on_namespace_added(self, conn, ns);
    }

    pub(crate) fn namespace_removed(&self, conn: &Arc<ConnInner>, ns: &ByteString) {
        let mut registry = self.registry.write();
        let change = registry.remove_ns(ns, conn.key);
        self.set_index_gauges(&registry);
        self.apply(change);
        crate::cluster::presence_changed(self, &conn.id, ns, None, false);
    }

    pub(crate) fn room_added(&self, conn: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
        let mut registry = self.registry.write();
        if conn.is_closed() {
            return;
        }
        registry.add_room(ns, room, conn);
        self.set_index_gauges(&registry);
        crate::cluster::presence_changed(self, &conn.id, ns, Some(room), true);
    }

    pub(crate) fn room_removed(&self, conn: &Arc<ConnInner>, ns: &ByteString, room: &ByteString) {
        let mut registry = self.registry.write();
        registry.remove_room(ns, room, conn.key);
        self.set_index_gauges(&registry);
        crate::cluster::presence_changed(self, &conn.id, ns, Some(room), false);
    }
}

/// `broadcast "event" to namespace "ns" [room "r"] [connection "id"]`.
fn broadcast_context(target: &Target, msg: &Message) -> String {
    let mut text = format!(
        "broadcast {:?} to namespace {:?}",
        &*msg.event, &*target.namespace
    );
    if let Some(room) = &target.room {
        text.push_str(&format!(" room {:?}", &**room));
    }
    if let Some(id) = &target.to {
        text.push_str(&format!(" connection {:?}", &**id));
    }
    text
}
