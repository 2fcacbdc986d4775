//! The pub/sub client seen by the exchange's tasks: connect, publish a batch, subscribe,
//! unsubscribe, ping. [`redis`] implements it on the `redis` crate; the unit tests use an
//! in-memory stub with fault injection, so the tasks' logic (batching, reconciliation,
//! reconnection, flush) is tested without a broker, and a broker is only needed for the
//! broker's side of the contract.

pub(crate) mod redis;
#[cfg(test)]
pub(crate) mod stub;

use std::future::Future;
use std::sync::{Arc, OnceLock};

use bytes::Bytes;
use neffos::{ExchangeCounters, Inbound};
use tokio::sync::Notify;

use crate::error::Result;
use crate::gocompat::GoCompat;

/// Opens broker connections.
pub(crate) trait Driver: Send + Sync + 'static {
    /// One connection.
    type Conn: Connection;

    /// Opens a connection. Messages received on its subscriptions, and the news that it
    /// closed, go to `pushes` (from the driver's own task, without blocking it).
    fn connect(&self, pushes: Pushes) -> impl Future<Output = Result<Self::Conn>> + Send;
}

/// One open broker connection. Every method resolves once the broker answered (or failed).
pub(crate) trait Connection: Send + 'static {
    /// Names the connection (`CLIENT SETNAME`), so operators can tell whose it is.
    fn set_name(&mut self, name: &str) -> impl Future<Output = Result<()>> + Send;
    /// Publishes every `(channel, payload)` in order, in one round trip.
    fn publish(&mut self, batch: &[(String, Bytes)]) -> impl Future<Output = Result<()>> + Send;
    /// Subscribes `channels` (plain channels, never patterns), confirmed by the broker.
    fn subscribe(&mut self, channels: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// Unsubscribes `channels`, confirmed by the broker.
    fn unsubscribe(&mut self, channels: &[String]) -> impl Future<Output = Result<()>> + Send;
    /// A round trip, to find out whether the connection still works.
    fn ping(&mut self) -> impl Future<Output = Result<()>> + Send;
}

/// Where a connection's driver hands what the broker pushes: payloads go to the server's
/// inbound queue (never blocking), a closed connection wakes the task that owns it.
#[derive(Debug, Clone)]
pub(crate) struct Pushes {
    inbound: Option<Arc<OnceLock<Inbound>>>,
    go: Option<Arc<GoCompat>>,
    stats: Arc<ExchangeCounters>,
    lost: Arc<Notify>,
}

impl Pushes {
    /// For the subscriber connection: payloads go to `inbound` once it is set.
    pub(crate) fn subscriber(
        inbound: Arc<OnceLock<Inbound>>,
        stats: Arc<ExchangeCounters>,
        lost: Arc<Notify>,
    ) -> Self {
        Pushes {
            inbound: Some(inbound),
            go: None,
            stats,
            lost,
        }
    }

    /// For the publisher connection: only its loss matters.
    pub(crate) fn publisher(stats: Arc<ExchangeCounters>, lost: Arc<Notify>) -> Self {
        Pushes {
            inbound: None,
            go: None,
            stats,
            lost,
        }
    }

    /// In Go compatibility mode: payloads of Go's channels are translated by `go`.
    pub(crate) fn with_go(mut self, go: Option<Arc<GoCompat>>) -> Self {
        self.go = go;
        self
    }

    /// A payload arrived on one of our channels. What it contains is the server's business
    /// (it decodes envelopes and counts malformed ones); here it is only bytes, except on
    /// Go's channels in compatibility mode, whose frames become envelopes first.
    pub(crate) fn message(&self, channel: &[u8], payload: Bytes) {
        let Some(inbound) = self.inbound.as_ref().and_then(|slot| slot.get()) else {
            return;
        };
        self.stats.add_received(1);
        if let Some(go) = &self.go
            && let Ok(channel) = std::str::from_utf8(channel)
            && let Some(envelopes) = go.received(channel, &payload)
        {
            for envelope in envelopes {
                inbound.deliver(envelope);
            }
            return;
        }
        inbound.deliver(payload);
    }

    /// The connection closed.
    pub(crate) fn disconnected(&self) {
        self.lost.notify_one();
    }
}
