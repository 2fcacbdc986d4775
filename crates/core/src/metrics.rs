//! Counters, gauges and histograms through the [`metrics`] facade: attach any exporter
//! (e.g. `metrics-exporter-prometheus`) and they appear; without one they cost an atomic
//! load. Handles are registered once per server, so the hot path never looks names up.
//!
//! | name | kind | meaning |
//! |---|---|---|
//! | `neffos_connections` | gauge | open connections |
//! | `neffos_connections_accepted_total` | counter | connections accepted |
//! | `neffos_namespaces` / `neffos_rooms` | gauge | namespaces / rooms with a local member |
//! | `neffos_frames_in_total` / `neffos_bytes_in_total` | counter | frames and bytes read |
//! | `neffos_frames_out_total` / `neffos_bytes_out_total` | counter | frames and bytes written |
//! | `neffos_broadcast_recipients` | histogram | local recipients of one broadcast |
//! | `neffos_slow_consumer_closes_total` | counter | stuck clients closed (outbound queue over its budget) |
//! | `neffos_budget_closes_total` | counter | connections closed or refused for going over a byte budget (outbound, before the handshake, request head) |
//! | `neffos_publisher_pushbacks_total` | counter | publishers whose reading paused until the recipients their broadcast left behind (while reading) caught up |
//! | `neffos_publisher_paces_total` | counter | publishers whose next read waited for the recipients' writers to have their turn (their broadcast found most recipients with frames still waiting) |
//! | `neffos_shed_frames_total` | counter (label `namespace`) | broadcast frames skipped for recipients over their outbound budget, in namespaces with [`OverloadPolicy::Shed`](crate::OverloadPolicy::Shed) |
//! | `neffos_unupgraded_refused_total` | counter | TCP connections dropped by [`serve`](crate::serve) at its cap of connections not upgraded yet |
//! | `neffos_invalid_frames_total` | counter | frames dropped as not neffos messages |
//! | `neffos_late_replies_total` | counter | replies without a waiting Ask |
//! | `neffos_rejected_messages_total` | counter | messages answered with an error because a handler argument (a typed body) could not be taken |
//! | `neffos_envelopes_in_total` / `neffos_malformed_envelopes_total` | counter | envelopes from other instances |
//! | `neffos_exchange_publishes_total` | counter | envelopes published (per exchange) |
//! | `neffos_exchange_publish_errors_total` | counter | publishes an exchange failed or dropped (broker down, queue full): lost, at most once ([`ExchangeStats::publish_errors`](crate::ExchangeStats::publish_errors)) |
//! | `neffos_exchange_reconnects_total` | counter | broker connections re-established ([`ExchangeStats::reconnects`](crate::ExchangeStats::reconnects)) |
//! | `neffos_ask_seconds` | histogram | Ask round-trip time (server side) |
//! | `neffos_cluster_queries_total` / `neffos_cluster_query_seconds` | counter / histogram | cluster queries and remote operations started, and their duration |
//! | `neffos_cluster_query_timeouts_total` / `neffos_cluster_missing_instances_total` | counter | queries with a live instance missing at the deadline, and how many were missing |
//! | `neffos_cluster_rate_limited_total` / `neffos_cluster_answers_dropped_total` | counter | queries refused, and others' queries left unanswered, by the rate limits |
//! | `neffos_cluster_heartbeats_total` | counter | heartbeats sent |
//! | `neffos_cluster_instances` / `neffos_cluster_heartbeat_age_seconds` | gauge | live instances (this one included), age of the oldest live heartbeat |
//! | `neffos_cluster_expired_instances_total` / `neffos_cluster_presence_events_total` | counter | leases that ran out, presence events delivered |

use metrics::{Counter, Gauge, Histogram, counter, gauge, histogram};

/// The server's metric handles.
#[derive(Debug, Clone)]
pub(crate) struct Metrics {
    pub(crate) connections: Gauge,
    pub(crate) accepted: Counter,
    pub(crate) namespaces: Gauge,
    pub(crate) rooms: Gauge,
    pub(crate) frames_in: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) frames_out: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) broadcast_recipients: Histogram,
    pub(crate) slow_consumer_closes: Counter,
    pub(crate) budget_closes: Counter,
    pub(crate) publisher_pushbacks: Counter,
    pub(crate) publisher_paces: Counter,
    pub(crate) invalid_frames: Counter,
    pub(crate) late_replies: Counter,
    pub(crate) rejected_messages: Counter,
    pub(crate) envelopes_in: Counter,
    pub(crate) malformed_envelopes: Counter,
    pub(crate) exchange_publishes: Counter,
    pub(crate) ask_seconds: Histogram,
}

impl Metrics {
    pub(crate) fn register() -> Self {
        Metrics {
            connections: gauge!("neffos_connections"),
            accepted: counter!("neffos_connections_accepted_total"),
            namespaces: gauge!("neffos_namespaces"),
            rooms: gauge!("neffos_rooms"),
            frames_in: counter!("neffos_frames_in_total"),
            bytes_in: counter!("neffos_bytes_in_total"),
            frames_out: counter!("neffos_frames_out_total"),
            bytes_out: counter!("neffos_bytes_out_total"),
            broadcast_recipients: histogram!("neffos_broadcast_recipients"),
            slow_consumer_closes: counter!("neffos_slow_consumer_closes_total"),
            budget_closes: counter!("neffos_budget_closes_total"),
            publisher_pushbacks: counter!("neffos_publisher_pushbacks_total"),
            publisher_paces: counter!("neffos_publisher_paces_total"),
            invalid_frames: counter!("neffos_invalid_frames_total"),
            late_replies: counter!("neffos_late_replies_total"),
            rejected_messages: counter!("neffos_rejected_messages_total"),
            envelopes_in: counter!("neffos_envelopes_in_total"),
            malformed_envelopes: counter!("neffos_malformed_envelopes_total"),
            exchange_publishes: counter!("neffos_exchange_publishes_total"),
            ask_seconds: histogram!("neffos_ask_seconds"),
        }
    }
}
