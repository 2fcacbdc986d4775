//! The exchange conformance suite on the in-process `MemoryExchange`.
#![cfg(feature = "testkit")]

use std::sync::Arc;

use neffos::{Exchange, MemoryExchange};

/// Each test gets its own bus; each instance its own handle on it.
fn bus() -> impl Fn() -> std::future::Ready<Arc<dyn Exchange>> {
    let bus = MemoryExchange::new();
    move || std::future::ready(Arc::new(bus.clone()) as Arc<dyn Exchange>)
}

neffos::conformance_tests!(bus());

/// Two independent buses stand for two brokers.
mod chained {
    use super::bus;

    #[tokio::test]
    async fn exactly_once_on_both() {
        neffos::testkit::chained::exactly_once_on_both(bus(), bus()).await;
    }

    #[tokio::test]
    async fn migration_with_relay() {
        neffos::testkit::chained::migration(bus(), bus(), true).await;
    }

    #[tokio::test]
    async fn migration_without_relay() {
        neffos::testkit::chained::migration(bus(), bus(), false).await;
    }
}
