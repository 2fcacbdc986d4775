//! Connection-state recovery across instances through a real `nats-server` with JetStream:
//! history in a stream per namespace, sessions in a sessions stream. The scenarios are
//! `neffos::testkit::recovery`'s (shared with the Redis store): a client cut off from
//! instance A comes back through the load balancer on instance B with its ID and room and
//! gets the 1,000 broadcasts a client on instance C published meanwhile, exactly once, in
//! order, before newer ones; a lost history, a passed window or a bound exceeded is
//! reported, never replayed with a gap.
#![cfg(feature = "history")]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;

use neffos::Exchange;
use neffos::recovery::{HistoryLimits, HistoryStore, Reason};
use neffos::testkit::broker::NatsServer;
use neffos::testkit::recovery::{Backend, KeptSessions, Scenario, Settings};
use neffos_nats::{NatsExchange, NatsHistory};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// The stream of namespace "chat" (`NEFFOS_H_<hex>`).
const CHAT_STREAM: &str = "NEFFOS_H_63686174";

/// A JetStream `nats-server` with its monitoring port (for `/varz`).
struct Nats {
    broker: NatsServer,
    monitor: u16,
}

impl Nats {
    fn start() -> Nats {
        let monitor = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let broker = NatsServer::start_with(&["-js", "-m", &monitor.to_string()]);
        Nats { broker, monitor }
    }

    async fn js(&self) -> async_nats::jetstream::Context {
        async_nats::jetstream::new(async_nats::connect(self.broker.url()).await.unwrap())
    }

    /// The monitoring endpoint `/varz` (server counters).
    async fn varz(&self) -> serde_json::Value {
        let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor))
            .await
            .unwrap();
        tcp.write_all(b"GET /varz HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n")
            .await
            .unwrap();
        let mut response = String::new();
        tcp.read_to_string(&mut response).await.unwrap();
        let body = response.split_once("\r\n\r\n").unwrap().1;
        serde_json::from_str(body).unwrap()
    }
}

impl Backend for Nats {
    async fn exchange(&self) -> Arc<dyn Exchange> {
        Arc::new(NatsExchange::connect(&self.broker.url()).await.unwrap())
    }

    async fn history(&self, limits: HistoryLimits) -> Arc<dyn HistoryStore> {
        Arc::new(
            NatsHistory::connect(&self.broker.url(), limits)
                .await
                .unwrap(),
        )
    }

    async fn broker_bytes(&self) -> u64 {
        let varz = self.varz().await;
        varz["in_bytes"].as_u64().unwrap() + varz["out_bytes"].as_u64().unwrap()
    }

    /// Sessions not expired, and the bytes the sessions stream stores (records, subjects,
    /// message overhead).
    async fn kept_sessions(&self) -> KeptSessions {
        let store = NatsHistory::connect(&self.broker.url(), HistoryLimits::default())
            .await
            .unwrap();
        let count = store.kept_sessions().await.unwrap().len();
        let bytes = match self.js().await.get_stream("NEFFOS_SESSIONS").await {
            Ok(mut stream) => stream.info().await.unwrap().state.bytes,
            Err(_) => 0,
        };
        KeptSessions { count, bytes }
    }
}

neffos::recovery_tests!(Nats::start());

/// A purged stream keeps its sequence numbers: the missed ones are a gap.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purged_stream_is_not_recovered() {
    let s = Scenario::start(Nats::start(), Settings::default()).await;
    s.not_recovered_after(
        100,
        || async {
            let js = s.backend.js().await;
            js.get_stream(CHAT_STREAM)
                .await
                .unwrap()
                .purge()
                .await
                .unwrap();
        },
        &[Reason::HistoryTrimmed],
    )
    .await;
}

/// A stream deleted (and created again by the next broadcast) is a new epoch.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deleted_stream_is_an_epoch_change() {
    let s = Scenario::start(Nats::start(), Settings::default()).await;
    s.not_recovered_after(
        100,
        || async {
            s.backend
                .js()
                .await
                .delete_stream(CHAT_STREAM)
                .await
                .unwrap();
        },
        &[Reason::EpochChanged],
    )
    .await;
}
