//! The [`Server`]: accepts connections, keeps the indexes, broadcasts, asks, and bridges
//! to an [`Exchange`] for scale-out.

mod admission;
mod ask;
mod broadcast;
mod builder;
pub(crate) mod coalesce;
mod dedup;
mod inbound;
pub(crate) mod registry;
mod shutdown;
mod stats;
mod target;

use admission::Admitted;
pub(crate) use admission::Refusal;
pub use builder::ServerBuilder;
pub(crate) use stats::Stats;
pub use stats::StatsSnapshot;
pub use target::Target;

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use bytestring::ByteString;
use neffos_protocol::Envelope;
use parking_lot::{Mutex, RwLock};
use tokio::sync::{Notify, oneshot};
use uuid::Uuid;

use crate::config::{Config, OverloadPolicy};
use crate::conn::link::Link;
use crate::conn::{Conn, ConnInner, NewConn, RequestInfo, Role, close_code, engine};
use crate::exchange::{Exchange, Topic};
use crate::handler::{BoxFuture, Namespaces};
use crate::transport::Socket;
use registry::{Interest, Registry};

type OnConnect = Arc<dyn Fn(Conn) -> BoxFuture<Result<(), String>> + Send + Sync>;
type OnDisconnect = Arc<dyn Fn(Conn) -> BoxFuture<()> + Send + Sync>;
type IdGenerator = Arc<dyn Fn(&http::request::Parts) -> String + Send + Sync>;

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
    /// The writers' takes, which paced publishers wait for.
    pub(crate) rounds: crate::conn::Rounds,
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

impl Server {
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

    /// Sets up one upgraded WebSocket (any transport mapped to the engine's frames) and
    /// returns the future that serves it until it closes. Used by the axum integration.
    ///
    /// Everything that is needed only to set up (the request head, the sink, which the
    /// writer task takes) is consumed before the future is built, so the long-lived task
    /// does not carry it.
    pub(crate) fn serve_socket<S: Socket>(
        &self,
        request: RequestInfo,
        parts: Option<Box<http::request::Parts>>,
        socket: S,
        extensions: http::Extensions,
    ) -> impl Future<Output = ()> + Send + use<S> {
        let presented = crate::recovery::presentation(&self.0, &request, parts.as_deref());
        let generated = match (&self.0.id_generator, &parts) {
            (Some(generate), Some(parts)) => generate(parts),
            _ => Uuid::new_v4().to_string(),
        };
        // The request head still references hyper's read buffer; `request` holds copies.
        drop(parts);
        match presented {
            None => futures_util::future::Either::Left(
                self.serve_as(generated, None, request, socket, extensions),
            ),
            // A presented session: its connection ID comes from the store.
            Some(presented) => {
                let server = self.clone();
                futures_util::future::Either::Right(Box::pin(async move {
                    let (id, session) =
                        crate::recovery::claim(&server.0, presented, generated).await;
                    server
                        .serve_as(id, Some(session), request, socket, extensions)
                        .await;
                }))
            }
        }
    }

    /// [`Self::serve_socket`] once the connection ID is known.
    fn serve_as<S: Socket>(
        &self,
        id: String,
        session: Option<Arc<crate::recovery::ConnSession>>,
        request: RequestInfo,
        socket: S,
        extensions: http::Extensions,
    ) -> impl Future<Output = ()> + Send + use<S> {
        let inner = ConnInner::new(NewConn {
            key: self.0.next_key.fetch_add(1, Ordering::Relaxed),
            id: ByteString::from(id),
            role: Role::Server,
            request,
            handlers: self.0.namespaces.clone(),
            config: self.0.config.clone(),
            server: crate::conn::Hub::server(self.0.clone()),
        });
        inner.extend(extensions);
        if let Some(session) = session {
            crate::recovery::attach(&inner, session);
        }
        let link = Link::new(socket);
        let accept: Option<BoxFuture<Result<(), String>>> = if self.is_shutting_down() {
            inner.close(close_code::GOING_AWAY, "server shutting down");
            None
        } else {
            Some(match &self.0.on_connect {
                Some(hook) => hook(Conn(inner.clone())),
                None => Box::pin(async { Ok(()) }),
            })
        };
        let span = tracing::debug_span!("neffos_conn", id = %inner.id, key = inner.key);
        let served = engine::serve(inner, link, accept);
        // The span is entered on every poll, writes included: only when someone records it.
        if span.is_disabled() {
            futures_util::future::Either::Left(served)
        } else {
            futures_util::future::Either::Right(tracing::Instrument::instrument(served, span))
        }
    }
}

impl ServerShared {
    /// A fresh per-instance number (envelope sequence numbers, correlation tokens).
    pub(crate) fn next_token(&self) -> u64 {
        self.next_seq()
    }

    pub(crate) fn is_shutting_down(&self) -> bool {
        self.shutting_down.load(Ordering::Acquire)
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
