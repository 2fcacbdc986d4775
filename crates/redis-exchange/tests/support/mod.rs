//! Shared by the Redis integration tests: a broker per test, exchange factories that keep
//! a handle on every exchange they make, and an admin connection to inspect the broker.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use neffos::Exchange;
use neffos::testkit::broker::RedisServer;
use neffos_redis::RedisExchange;
use parking_lot::Mutex;
use redis::aio::MultiplexedConnection;

/// How long any expectation may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A broker and the exchanges made for it, in creation order.
pub struct Fixture {
    pub broker: Arc<RedisServer>,
    pub prefix: String,
    pub made: Arc<Mutex<Vec<Arc<RedisExchange>>>>,
}

impl Fixture {
    /// A fresh `redis-server` for this test.
    pub fn new(prefix: &str) -> Fixture {
        Fixture {
            broker: Arc::new(RedisServer::start()),
            prefix: prefix.to_owned(),
            made: Arc::default(),
        }
    }

    /// An async factory of exchanges on this broker (fast reconnection for tests), for
    /// `Cluster::start` and `conformance_tests!`. Each exchange is also kept in `made`; the
    /// factory owns the broker, so the broker runs as long as a scenario holds the factory.
    pub fn factory(
        &self,
    ) -> impl Fn() -> std::pin::Pin<Box<dyn Future<Output = Arc<dyn Exchange>> + Send>> + use<>
    {
        let broker = self.broker.clone();
        let prefix = self.prefix.clone();
        let made = self.made.clone();
        move || {
            let url = broker.url();
            let prefix = prefix.clone();
            let made = made.clone();
            Box::pin(async move {
                let exchange = Arc::new(
                    RedisExchange::builder(url)
                        .prefix(prefix)
                        .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(200))
                        .response_timeout(Duration::from_secs(2))
                        .connect()
                        .await
                        .expect("connect to the test broker"),
                );
                made.lock().push(exchange.clone());
                exchange as Arc<dyn Exchange>
            })
        }
    }

    /// The `i`-th exchange made.
    pub fn exchange(&self, i: usize) -> Arc<RedisExchange> {
        self.made.lock()[i].clone()
    }

    /// An admin connection to the broker (RESP2, unnamed).
    pub async fn admin(&self) -> Admin {
        let client = redis::Client::open(self.broker.url()).unwrap();
        Admin(
            tokio::time::timeout(WAIT, client.get_multiplexed_async_connection())
                .await
                .expect("admin connects in time")
                .expect("admin connects"),
        )
    }
}

/// Broker introspection (cheap to clone).
#[derive(Clone)]
pub struct Admin(pub MultiplexedConnection);

impl Admin {
    /// Subscribers of `channel` (`PUBSUB NUMSUB`).
    pub async fn numsub(&self, channel: &str) -> i64 {
        let (_, n): (String, i64) = redis::cmd("PUBSUB")
            .arg("NUMSUB")
            .arg(channel)
            .query_async(&mut self.0.clone())
            .await
            .unwrap();
        n
    }

    /// Pattern subscriptions on the broker (`PUBSUB NUMPAT`).
    pub async fn numpat(&self) -> i64 {
        redis::cmd("PUBSUB")
            .arg("NUMPAT")
            .query_async(&mut self.0.clone())
            .await
            .unwrap()
    }

    /// Channels with at least one subscriber matching `pattern`, sorted.
    pub async fn channels(&self, pattern: &str) -> Vec<String> {
        let mut v: Vec<String> = redis::cmd("PUBSUB")
            .arg("CHANNELS")
            .arg(pattern)
            .query_async(&mut self.0.clone())
            .await
            .unwrap();
        v.sort();
        v
    }

    /// The `name=` of every client connected to the broker.
    pub async fn client_names(&self) -> Vec<String> {
        let list: String = redis::cmd("CLIENT")
            .arg("LIST")
            .query_async(&mut self.0.clone())
            .await
            .unwrap();
        list.lines()
            .filter_map(|line| {
                line.split(' ')
                    .find_map(|field| field.strip_prefix("name="))
                    .map(str::to_owned)
            })
            .collect()
    }

    /// `PUBLISH channel payload`, returning the number of receivers.
    pub async fn publish(&self, channel: &str, payload: &[u8]) -> i64 {
        redis::cmd("PUBLISH")
            .arg(channel)
            .arg(payload)
            .query_async(&mut self.0.clone())
            .await
            .unwrap()
    }
}

/// Polls the async `condition` until it holds or `timeout` passes; returns whether it held.
/// For broker state, which has no event to await.
pub async fn until<F, Fut>(timeout: Duration, mut condition: F) -> bool
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition().await {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}
