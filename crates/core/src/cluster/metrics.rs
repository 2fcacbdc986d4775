//! The cluster layer's metric handles (see the table in [`crate::metrics`]).

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

#[derive(Debug, Clone)]
pub(crate) struct ClusterMetrics {
    pub(crate) queries: Counter,
    pub(crate) query_timeouts: Counter,
    pub(crate) missing_instances: Counter,
    pub(crate) query_seconds: Histogram,
    pub(crate) rate_limited: Counter,
    pub(crate) answers_dropped: Counter,
    pub(crate) heartbeats: Counter,
    pub(crate) instances: Gauge,
    pub(crate) heartbeat_age: Gauge,
    pub(crate) expired: Counter,
    pub(crate) presence_events: Counter,
}

impl ClusterMetrics {
    pub(crate) fn register() -> Self {
        ClusterMetrics {
            queries: counter!("neffos_cluster_queries_total"),
            query_timeouts: counter!("neffos_cluster_query_timeouts_total"),
            missing_instances: counter!("neffos_cluster_missing_instances_total"),
            query_seconds: histogram!("neffos_cluster_query_seconds"),
            rate_limited: counter!("neffos_cluster_rate_limited_total"),
            answers_dropped: counter!("neffos_cluster_answers_dropped_total"),
            heartbeats: counter!("neffos_cluster_heartbeats_total"),
            instances: gauge!("neffos_cluster_instances"),
            heartbeat_age: gauge!("neffos_cluster_heartbeat_age_seconds"),
            expired: counter!("neffos_cluster_expired_instances_total"),
            presence_events: counter!("neffos_cluster_presence_events_total"),
        }
    }
}
