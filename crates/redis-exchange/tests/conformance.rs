//! The exchange conformance suite on a real Redis, one per test: a container when a Docker
//! engine is reachable, else the local `redis-server` (see `neffos-test-brokers`); three
//! instances, each with its own `RedisExchange`.
#![allow(clippy::unwrap_used)]

use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use neffos::Exchange;
use neffos_redis::RedisExchange;

/// A factory of exchanges on a broker started for this test; the factory owns the broker,
/// which stops when the scenario drops it.
fn redis() -> impl Fn() -> Pin<Box<dyn Future<Output = Arc<dyn Exchange>> + Send>> {
    let broker = Arc::new(neffos_test_brokers::redis());
    move || {
        let url = broker.url();
        Box::pin(async move {
            let exchange = RedisExchange::builder(url)
                .prefix("conformance")
                .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
                .response_timeout(Duration::from_secs(2))
                .connect()
                .await
                .expect("connect to the test broker");
            Arc::new(exchange) as Arc<dyn Exchange>
        })
    }
}

neffos::conformance_tests!(redis());
