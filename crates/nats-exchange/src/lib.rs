//! `neffos-nats`: scale a neffos-rs server out over NATS.
//!
//! Status: planned. This crate will own `NatsExchange`, an implementation of
//! `neffos::Exchange` on `async-nats`: one NATS connection per instance, interest-based
//! subscriptions reference-counted by the server, a subject encoding that accepts every
//! legal namespace, room and connection ID (including the default namespace `""` and the
//! wildcard characters) without collisions, and a per-instance inbox for cross-instance
//! Ask replies. No NATS type leaks into `neffos`.
