//! The exchange conformance suite on a real `nats-server` (started by the test harness,
//! one per test): three instances, each with its own `NatsExchange` (one NATS connection).
#![allow(clippy::unwrap_used)]

mod support;

/// A fresh broker for this test and a factory of exchanges on it; the broker stops when
/// the last server holding one of its exchanges is dropped.
fn nats() -> impl Fn() -> support::MakeFuture {
    support::factory(
        support::Broker::start(),
        "conformance",
        support::Made::default(),
    )
}

neffos::conformance_tests!(nats());
