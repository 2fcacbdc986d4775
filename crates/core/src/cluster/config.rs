//! Timings, limits and presence settings of the cluster layer.

use std::collections::HashSet;
use std::fmt;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use super::presence::PresenceEvent;
use crate::handler::BoxFuture;

pub(crate) type PresenceHandler = Arc<dyn Fn(PresenceEvent) -> BoxFuture<()> + Send + Sync>;

/// How an instance takes part in its cluster (set with
/// [`ServerBuilder::cluster`](crate::ServerBuilder::cluster)). Only used with an exchange.
///
/// ```
/// use std::time::Duration;
/// let config = neffos::ClusterConfig::default()
///     .heartbeat(Duration::from_secs(1), Duration::from_secs(3))
///     .label("eu-1:8080")
///     .presence("chat", |event| async move { tracing::info!(?event, "presence") });
/// assert_eq!(config.lease, Duration::from_secs(3));
/// ```
#[derive(Clone)]
#[non_exhaustive]
pub struct ClusterConfig {
    /// How often this instance renews its lease (default 2 s).
    pub heartbeat: Duration,
    /// How long a lease lasts without renewal before the instance drops out of the live
    /// set (default 6 s).
    pub lease: Duration,
    /// Default deadline of queries (default 200 ms).
    pub query_deadline: Duration,
    /// Default deadline of remote operations, which may ask the client (default 2 s).
    pub operation_deadline: Duration,
    /// Queries and remote operations this instance may start per second (default 1000).
    pub max_queries_per_second: u32,
    /// Queries of other instances this instance answers per second (default 10000);
    /// beyond that it stays silent and is reported missing.
    pub max_answers_per_second: u32,
    /// Shown by [`Cluster::instances`](crate::Cluster::instances) (default empty).
    pub label: String,
    pub(crate) presence: HashSet<String>,
    pub(crate) on_presence: Option<PresenceHandler>,
}

impl Default for ClusterConfig {
    fn default() -> Self {
        ClusterConfig {
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(6),
            query_deadline: Duration::from_millis(200),
            operation_deadline: Duration::from_secs(2),
            max_queries_per_second: 1000,
            max_answers_per_second: 10_000,
            label: String::new(),
            presence: HashSet::new(),
            on_presence: None,
        }
    }
}

impl fmt::Debug for ClusterConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ClusterConfig")
            .field("heartbeat", &self.heartbeat)
            .field("lease", &self.lease)
            .field("query_deadline", &self.query_deadline)
            .field("operation_deadline", &self.operation_deadline)
            .field("max_queries_per_second", &self.max_queries_per_second)
            .field("max_answers_per_second", &self.max_answers_per_second)
            .field("label", &self.label)
            .field("presence", &self.presence)
            .finish_non_exhaustive()
    }
}

impl ClusterConfig {
    /// Sets the heartbeat interval and the lease (the lease should be a few heartbeats).
    pub fn heartbeat(mut self, interval: Duration, lease: Duration) -> Self {
        self.heartbeat = interval;
        self.lease = lease.max(interval);
        self
    }

    /// Sets the default query deadline.
    pub fn query_deadline(mut self, deadline: Duration) -> Self {
        self.query_deadline = deadline;
        self
    }

    /// Sets the default deadline of remote operations.
    pub fn operation_deadline(mut self, deadline: Duration) -> Self {
        self.operation_deadline = deadline;
        self
    }

    /// Sets the query rate limits: started by this instance, answered for others.
    pub fn rate_limits(mut self, queries_per_second: u32, answers_per_second: u32) -> Self {
        self.max_queries_per_second = queries_per_second.max(1);
        self.max_answers_per_second = answers_per_second.max(1);
        self
    }

    /// Sets this instance's label.
    pub fn label(mut self, label: impl Into<String>) -> Self {
        self.label = label.into();
        self
    }

    /// Turns presence events on for `namespace`: `handler` gets every join and leave of the
    /// namespace and its rooms, from every instance (one handler for all namespaces: the
    /// last one set wins).
    pub fn presence<F, Fut>(mut self, namespace: &str, handler: F) -> Self
    where
        F: Fn(PresenceEvent) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = ()> + Send + 'static,
    {
        self.presence.insert(namespace.to_owned());
        self.on_presence = Some(Arc::new(move |event| Box::pin(handler(event))));
        self
    }

    /// Whether presence events are on for `namespace`.
    pub fn has_presence(&self, namespace: &str) -> bool {
        self.presence.contains(namespace)
    }
}
