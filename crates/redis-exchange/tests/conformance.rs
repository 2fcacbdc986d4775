//! The exchange conformance suite on a real `redis-server` (started by the test harness,
//! one per test): three instances, each with its own `RedisExchange`.
#![allow(clippy::unwrap_used)]

mod support;

/// A factory of exchanges on a broker started for this test; the broker stops when the
/// last exchange made by the factory is dropped.
fn redis() -> impl Fn() -> std::pin::Pin<
    Box<dyn std::future::Future<Output = std::sync::Arc<dyn neffos::Exchange>> + Send>,
> {
    support::Fixture::new("conformance").factory()
}

neffos::conformance_tests!(redis());
