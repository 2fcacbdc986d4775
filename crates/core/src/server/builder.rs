//! [`ServerBuilder`]: what a [`Server`] is made of (namespaces, limits, hooks, exchanges,
//! cluster, recovery, overload policies).

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64};

use bytestring::ByteString;
use parking_lot::{Mutex, RwLock};
use tokio::sync::Notify;
use uuid::Uuid;

use super::registry::Registry;
use super::stats::Stats;
use super::{Admitted, IdGenerator, OnConnect, OnDisconnect, Server, ServerShared, dedup, inbound};
use crate::config::{Config, OverloadPolicy};
use crate::conn::Conn;
use crate::exchange::{Exchange, Inbound, Topic};
use crate::handler::Namespaces;

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
            rounds: crate::conn::Rounds::default(),
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
            let (tx, rx) = Inbound::channel(shared.config.exchange_inbound_queue.max(1));
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
}
