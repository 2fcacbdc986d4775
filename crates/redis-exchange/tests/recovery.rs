//! Connection-state recovery across instances through a real `redis-server`: history in a
//! Redis Stream, sessions as keys with a TTL. The scenarios are `neffos::testkit::recovery`'s
//! (shared with the NATS store): a client cut off from instance A comes back through the
//! load balancer on instance B with its ID and room and gets the 1,000 broadcasts a client
//! on instance C published meanwhile, exactly once, in order, before newer ones; a lost
//! history, a passed window or a bound exceeded is reported, never replayed with a gap.
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use neffos::Exchange;
use neffos::recovery::{HistoryLimits, HistoryStore, Reason};
use neffos::testkit::broker::RedisServer;
use neffos::testkit::recovery::{Backend, KeptSessions, Scenario, Settings};
use neffos_redis::{RedisExchange, RedisHistory};

struct Redis(RedisServer);

impl Redis {
    async fn admin(&self) -> redis::aio::MultiplexedConnection {
        redis::Client::open(self.0.url())
            .unwrap()
            .get_multiplexed_async_connection()
            .await
            .unwrap()
    }
}

impl Backend for Redis {
    async fn exchange(&self) -> Arc<dyn Exchange> {
        Arc::new(RedisExchange::connect(&self.0.url()).await.unwrap())
    }

    async fn history(&self, limits: HistoryLimits) -> Arc<dyn HistoryStore> {
        Arc::new(RedisHistory::connect(&self.0.url(), limits).await.unwrap())
    }

    async fn broker_bytes(&self) -> u64 {
        let info: String = redis::cmd("INFO")
            .arg("stats")
            .query_async(&mut self.admin().await)
            .await
            .unwrap();
        ["total_net_input_bytes:", "total_net_output_bytes:"]
            .iter()
            .map(|key| {
                info.lines()
                    .find_map(|l| l.strip_prefix(key))
                    .and_then(|v| v.trim().parse::<u64>().ok())
                    .unwrap()
            })
            .sum()
    }

    /// The session keys and what `MEMORY USAGE` says of each (key, value, bookkeeping).
    async fn kept_sessions(&self) -> KeptSessions {
        let mut admin = self.admin().await;
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("neffos:recovery:k:*")
            .query_async(&mut admin)
            .await
            .unwrap();
        let mut bytes = 0;
        for key in &keys {
            let usage: Option<u64> = redis::cmd("MEMORY")
                .arg("USAGE")
                .arg(key)
                .query_async(&mut admin)
                .await
                .unwrap();
            bytes += usage.unwrap_or(0);
        }
        KeptSessions {
            count: keys.len(),
            bytes,
        }
    }
}

neffos::recovery_tests!(Redis(RedisServer::start()));

/// The stream and its epoch gone (purged), sessions kept.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_history_is_reported_as_an_epoch_change() {
    let s = Scenario::start(Redis(RedisServer::start()), Settings::default()).await;
    s.not_recovered_after(
        100,
        || async {
            redis::cmd("DEL")
                .arg("neffos:recovery:s:chat")
                .arg("neffos:recovery:m:chat")
                .exec_async(&mut s.backend.admin().await)
                .await
                .unwrap();
        },
        &[Reason::EpochChanged],
    )
    .await;
}

/// FLUSHALL loses the kept session too: the client starts afresh and is told.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn flushed_redis_is_not_recovered() {
    let s = Scenario::start(Redis(RedisServer::start()), Settings::default()).await;
    s.not_recovered_after(
        100,
        || async {
            redis::cmd("FLUSHALL")
                .exec_async(&mut s.backend.admin().await)
                .await
                .unwrap();
        },
        &[Reason::NoSession, Reason::EpochChanged],
    )
    .await;
}
