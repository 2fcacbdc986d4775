//! The server's counters: kept as atomics, mirrored to the `metrics` facade, read as a
//! [`StatsSnapshot`].

use std::sync::atomic::{AtomicU64, Ordering};

use super::Server;

/// Server-wide counters, mirrored to the `metrics` facade.
#[derive(Debug)]
pub(crate) struct Stats {
    pub(crate) metrics: crate::metrics::Metrics,
    pub(crate) slow_consumer_closes: AtomicU64,
    pub(crate) budget_closes: AtomicU64,
    pub(crate) publisher_pushbacks: AtomicU64,
    pub(crate) publisher_paces: AtomicU64,
    pub(crate) shed_frames: AtomicU64,
    pub(crate) late_replies: AtomicU64,
    pub(crate) invalid_frames: AtomicU64,
    pub(crate) malformed_envelopes: AtomicU64,
    pub(crate) accepted: AtomicU64,
    pub(crate) envelopes_received: AtomicU64,
    pub(crate) rejected_messages: AtomicU64,
}

impl Stats {
    pub(super) fn new() -> Self {
        Stats {
            metrics: crate::metrics::Metrics::register(),
            slow_consumer_closes: AtomicU64::new(0),
            budget_closes: AtomicU64::new(0),
            publisher_pushbacks: AtomicU64::new(0),
            publisher_paces: AtomicU64::new(0),
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

    /// A publisher's reading waits for the writers' round.
    pub(crate) fn publisher_paced(&self) {
        self.publisher_paces.fetch_add(1, Ordering::Relaxed);
        self.metrics.publisher_paces.increment(1);
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
    /// progress ([`Config::outbound_budget`](crate::Config::outbound_budget)).
    pub slow_consumer_closes: u64,
    /// Connections closed or refused for going over a byte budget (outbound queue, frames
    /// before the handshake, request head); see [`Config`](crate::Config).
    pub budget_closes: u64,
    /// Times a publisher's reading was paused because its broadcast found recipients behind
    /// while they read (a quarter of them over their outbound budget, or one over twice it):
    /// the server, not they, could not keep up.
    pub publisher_pushbacks: u64,
    /// Times a publisher read its next messages only once the recipients' writers had their
    /// turn, because its broadcast found most of them with frames still waiting (the server
    /// behind): the broadcasts read then reach each recipient together, at a fraction of
    /// the work. Not an error; at most a few milliseconds each.
    pub publisher_paces: u64,
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

impl Server {
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
            publisher_paces: s.publisher_paces.load(Ordering::Relaxed),
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
}
