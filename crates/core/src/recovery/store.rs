//! The [`HistoryStore`] trait: where recorded broadcasts and kept sessions live.

use std::fmt;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;

pub(super) use neffos_protocol::recovery::Position;

/// The future a [`HistoryStore`] returns.
pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, StoreError>> + Send + 'a>>;

/// A store that could not do what was asked (broker down, bad reply).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("history store: {0}")]
pub struct StoreError(pub String);

/// How much history a stream keeps: at most `max_entries` broadcasts, none older than
/// `max_age`. A client that missed more than that is told "not recovered".
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HistoryLimits {
    /// Broadcasts kept per namespace (default 10,000). Stores that trim approximately
    /// (Redis `MAXLEN ~`) may keep somewhat more, never fewer.
    pub max_entries: usize,
    /// Age after which a broadcast is dropped (default 5 minutes).
    pub max_age: Duration,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        HistoryLimits {
            max_entries: 10_000,
            max_age: Duration::from_secs(300),
        }
    }
}

impl HistoryLimits {
    /// Keeps at most `n` broadcasts per namespace.
    pub fn max_entries(mut self, n: usize) -> Self {
        self.max_entries = n.max(1);
        self
    }

    /// Drops broadcasts older than `age`.
    pub fn max_age(mut self, age: Duration) -> Self {
        self.max_age = age;
        self
    }
}

/// What a read from a position found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Replay {
    /// Every broadcast recorded after the position, oldest first, and the position of the
    /// newest entry of the stream at the time of the read (the position itself when there
    /// was nothing new).
    Entries {
        /// `(position, payload)` in append order.
        entries: Vec<(Position, Bytes)>,
        /// The stream's newest position when it was read.
        head: Position,
    },
    /// The history the position belongs to is gone: a different epoch now.
    EpochChanged,
    /// Entries after the position were trimmed (count or age bound): a replay would have a gap.
    Trimmed,
    /// More than the caller's `limit` entries were recorded since the position.
    TooMany,
}

/// Where recorded broadcasts (one stream per namespace) and kept sessions live.
///
/// Implementations: [`MemoryHistory`](crate::recovery::MemoryHistory) (one instance), and
/// the Redis Streams and NATS JetStream stores of `neffos-redis` and `neffos-nats` (shared
/// by every instance, so a client can come back on any of them).
pub trait HistoryStore: Send + Sync + fmt::Debug + 'static {
    /// Records `payloads` at the end of `namespace`'s stream, in this order, and returns
    /// their positions (one per payload; positions of one stream increase in append order).
    /// The recording task calls it with what was submitted while its previous call ran,
    /// one call at a time, so a store needs no ordering across concurrent calls; it should
    /// append the batch in one round trip where it can (the Redis store runs one script,
    /// the NATS store awaits the acknowledgements after publishing them all).
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [Bytes],
    ) -> StoreFuture<'a, Vec<Position>>;

    /// Records one `payload` ([`Self::append_all`] of one) and returns its position.
    fn append<'a>(&'a self, namespace: &'a str, payload: Bytes) -> StoreFuture<'a, Position> {
        Box::pin(async move {
            let payloads = [payload];
            self.append_all(namespace, &payloads)
                .await?
                .into_iter()
                .next()
                .ok_or_else(|| StoreError("no position for the appended broadcast".into()))
        })
    }

    /// The stream's newest position (an empty stream has offset 0 of its epoch; a stream
    /// that never existed gets its epoch now).
    fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position>;

    /// Everything recorded after `after`, if the history still holds all of it and it is at
    /// most `limit` entries.
    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: Position,
        limit: usize,
    ) -> StoreFuture<'a, Replay>;

    /// Keeps `session` under `key` for `ttl` (replacing what was there).
    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, ()>;

    /// Removes and returns the session kept under `key`: only one reconnect gets it.
    fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>>;

    /// Forgets the session kept under `key` (the client left on purpose).
    fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()>;
}

impl<S: HistoryStore + ?Sized> HistoryStore for std::sync::Arc<S> {
    fn append<'a>(&'a self, namespace: &'a str, payload: Bytes) -> StoreFuture<'a, Position> {
        (**self).append(namespace, payload)
    }
    fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position> {
        (**self).head(namespace)
    }
    fn read_after<'a>(
        &'a self,
        namespace: &'a str,
        after: Position,
        limit: usize,
    ) -> StoreFuture<'a, Replay> {
        (**self).read_after(namespace, after, limit)
    }
    fn save_session<'a>(
        &'a self,
        key: &'a str,
        session: Bytes,
        ttl: Duration,
    ) -> StoreFuture<'a, ()> {
        (**self).save_session(key, session, ttl)
    }
    fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
        (**self).take_session(key)
    }
    fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
        (**self).delete_session(key)
    }
    fn append_all<'a>(
        &'a self,
        namespace: &'a str,
        payloads: &'a [Bytes],
    ) -> StoreFuture<'a, Vec<Position>> {
        (**self).append_all(namespace, payloads)
    }
}
