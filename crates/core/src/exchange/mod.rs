//! Scale-out: the [`Exchange`] trait that carries envelopes between server instances, and
//! the in-process [`MemoryExchange`].
//!
//! An exchange is a byte pipe with topics. The server does everything else: it keeps
//! the reference counts of local interest and tells the exchange only about 0→1 and 1→0
//! transitions, encodes each [`Envelope`](neffos_protocol::Envelope) once, delivers to local
//! recipients itself (local first), ignores its own envelopes, and correlates cross-instance
//! Asks through its inbox topic. So every backend gets the same semantics for free, and a
//! backend only has to move bytes.

mod memory;

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use bytes::Bytes;
use tokio::sync::mpsc;
use uuid::Uuid;

pub use memory::MemoryExchange;

/// What an instance listens to on the broker.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Topic {
    /// Every broadcast to a namespace (room broadcasts included).
    Namespace(String),
    /// Sends and Asks addressed to one connection ID.
    Conn(String),
    /// Replies to the Asks one instance sent.
    Inbox(Uuid),
}

impl fmt::Display for Topic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Topic::Namespace(ns) => write!(f, "namespace {ns:?}"),
            Topic::Conn(id) => write!(f, "connection {id:?}"),
            Topic::Inbox(id) => write!(f, "inbox {id}"),
        }
    }
}

/// A received payload and the index of the exchange it came through.
pub(crate) type Tagged = (usize, Bytes);

/// Where an exchange delivers what it receives: the server's inbound queue.
///
/// Delivery never blocks the exchange's reader: when the queue is full the envelope is
/// dropped and counted (see [`Inbound::dropped`]).
#[derive(Clone, Debug)]
pub struct Inbound {
    tx: mpsc::Sender<Tagged>,
    source: usize,
    dropped: Arc<AtomicU64>,
}

impl Inbound {
    /// One queue for all of a server's exchanges; each exchange gets a handle tagged with
    /// its index so the server knows where a payload came from (for relaying).
    pub(crate) fn channel(capacity: usize) -> (mpsc::Sender<Tagged>, mpsc::Receiver<Tagged>) {
        mpsc::channel(capacity)
    }

    pub(crate) fn new(tx: mpsc::Sender<Tagged>, source: usize) -> Self {
        Inbound {
            tx,
            source,
            dropped: Arc::new(AtomicU64::new(0)),
        }
    }

    /// Hands one received payload to the server. Never blocks.
    pub fn deliver(&self, payload: Bytes) {
        if self.tx.try_send((self.source, payload)).is_err() {
            self.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Payloads dropped because the server's inbound queue was full or gone.
    pub fn dropped(&self) -> u64 {
        self.dropped.load(Ordering::Relaxed)
    }

    /// True once the server stopped listening.
    pub fn is_closed(&self) -> bool {
        self.tx.is_closed()
    }
}

/// A snapshot of an exchange's counters ([`Exchange::stats`]).
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct ExchangeStats {
    /// Payloads published.
    pub published: u64,
    /// Publishes that failed (broker down, timeout).
    pub publish_errors: u64,
    /// Payloads received from the broker.
    pub received: u64,
    /// Reconnections to the broker.
    pub reconnects: u64,
}

/// The live counters behind [`ExchangeStats`], for exchange implementations: count with
/// the `add_*` methods (relaxed atomics, never blocking), report with [`Self::snapshot`].
#[derive(Debug, Default)]
pub struct ExchangeCounters {
    published: AtomicU64,
    publish_errors: AtomicU64,
    received: AtomicU64,
    reconnects: AtomicU64,
}

impl ExchangeCounters {
    /// Counts `n` payloads published.
    pub fn add_published(&self, n: u64) {
        self.published.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts `n` failed publishes (also `neffos_exchange_publish_errors_total`).
    pub fn add_publish_errors(&self, n: u64) {
        self.publish_errors.fetch_add(n, Ordering::Relaxed);
        // Off the hot path (failures only): the name is looked up per call.
        metrics::counter!("neffos_exchange_publish_errors_total").increment(n);
    }

    /// Counts `n` payloads received from the broker.
    pub fn add_received(&self, n: u64) {
        self.received.fetch_add(n, Ordering::Relaxed);
    }

    /// Counts one reconnection to the broker (also `neffos_exchange_reconnects_total`).
    pub fn add_reconnect(&self) {
        self.reconnects.fetch_add(1, Ordering::Relaxed);
        metrics::counter!("neffos_exchange_reconnects_total").increment(1);
    }

    /// The counters now.
    pub fn snapshot(&self) -> ExchangeStats {
        ExchangeStats {
            published: self.published.load(Ordering::Relaxed),
            publish_errors: self.publish_errors.load(Ordering::Relaxed),
            received: self.received.load(Ordering::Relaxed),
            reconnects: self.reconnects.load(Ordering::Relaxed),
        }
    }
}

/// The future returned by [`Exchange::flush`] and [`Exchange::close`].
pub type ExchangeFuture<'a> = Pin<Box<dyn Future<Output = ()> + Send + 'a>>;

/// A broker connection shared by one server instance (DESIGN.md §5).
///
/// Implementations hold a fixed number of broker connections whatever the number of
/// WebSocket clients, and must never block the caller: `publish`, `subscribe` and
/// `unsubscribe` queue work for the exchange's own task(s). Errors are counted and logged
/// there, and a lost broker is reconnected with every current subscription restored.
pub trait Exchange: Send + Sync + fmt::Debug + 'static {
    /// Starts the exchange for instance `instance`; received payloads go to `inbound`.
    /// Called once, inside a tokio runtime. The exchange subscribes `Topic::Inbox(instance)`.
    fn start(&self, instance: Uuid, inbound: Inbound);
    /// Publishes `payload` on `topic`.
    fn publish(&self, topic: Topic, payload: Bytes);
    /// Starts receiving `topic` (the server calls this on its 0→1 interest transition).
    fn subscribe(&self, topic: Topic);
    /// Stops receiving `topic` (the server calls this on its 1→0 interest transition).
    fn unsubscribe(&self, topic: Topic);
    /// Resolves once every publish, subscribe and unsubscribe queued before the call has
    /// been applied by the broker (subscriptions confirmed). Used before shutdown and by
    /// tests that must not race a subscription.
    fn flush(&self) -> ExchangeFuture<'_>;
    /// Flushes what is queued and releases the broker connections.
    fn close(&self) -> ExchangeFuture<'_>;
    /// A snapshot of the exchange's counters.
    fn stats(&self) -> ExchangeStats;
    /// True when instances outside neffos-rs's cluster protocol may hold connections behind
    /// this exchange (e.g. Go neffos instances in a compatibility mode): then "no live
    /// instance holds this ID" cannot be concluded from the cluster's answers.
    fn has_foreign_instances(&self) -> bool {
        false
    }
}

/// A shared exchange is an exchange: keep an `Arc` to read its stats or flush it from a
/// test while the server uses it.
impl<E: Exchange + ?Sized> Exchange for Arc<E> {
    fn start(&self, instance: Uuid, inbound: Inbound) {
        (**self).start(instance, inbound);
    }

    fn publish(&self, topic: Topic, payload: Bytes) {
        (**self).publish(topic, payload);
    }

    fn subscribe(&self, topic: Topic) {
        (**self).subscribe(topic);
    }

    fn unsubscribe(&self, topic: Topic) {
        (**self).unsubscribe(topic);
    }

    fn flush(&self) -> ExchangeFuture<'_> {
        (**self).flush()
    }

    fn close(&self) -> ExchangeFuture<'_> {
        (**self).close()
    }

    fn stats(&self) -> ExchangeStats {
        (**self).stats()
    }

    fn has_foreign_instances(&self) -> bool {
        (**self).has_foreign_instances()
    }
}
