//! The exchange conformance suite on a real NATS server, one per test: a container when a
//! Docker engine is reachable, else the local `nats-server` (see `neffos-test-brokers`);
//! three instances, each with its own `NatsExchange` (one NATS connection).
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use neffos::Exchange;
use neffos_nats::NatsExchange;

/// A fresh broker for this test and a factory of exchanges on it; the factory owns the
/// broker, which stops when the scenario drops it.
fn nats() -> impl Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Exchange>> + Send>> {
    let broker = Arc::new(neffos_test_brokers::nats());
    move || {
        let url = broker.url();
        Box::pin(async move {
            let exchange = NatsExchange::builder(url)
                .prefix("conformance")
                .connect()
                .await
                .expect("connect to the test broker");
            Arc::new(exchange) as Arc<dyn Exchange>
        })
    }
}

neffos::conformance_tests!(nats());
