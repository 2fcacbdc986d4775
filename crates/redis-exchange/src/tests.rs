//! The exchange's tasks on the in-memory stub broker: conformance, batching, ordering,
//! reconciliation, reconnection, flush and close, without Redis.
#![allow(clippy::unwrap_used)]

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use neffos::testkit::eventually;
use neffos::{Exchange, ExchangeCounters, ExchangeStats, Namespaces, Server, Topic};

use crate::channel::Channels;
use crate::driver::stub::StubBroker;
use crate::exchange::{Options, RedisExchange};

const WAIT: Duration = Duration::from_secs(10);

fn options() -> Options {
    Options {
        backoff_min: Duration::from_millis(5),
        backoff_max: Duration::from_millis(20),
        health_check_interval: Some(Duration::from_millis(50)),
        ..Options::default()
    }
}

fn exchange(broker: &StubBroker, options: Options) -> Arc<RedisExchange> {
    Arc::new(RedisExchange::assemble(
        broker.clone(),
        Channels::new("t").unwrap(),
        options,
        Arc::new(ExchangeCounters::default()),
        Arc::new(OnceLock::new()),
        None,
        None,
    ))
}

/// A server on `exchange`, without clients: the tests drive the exchange directly.
fn server(exchange: &Arc<RedisExchange>) -> Server {
    Server::builder(Namespaces::new())
        .exchange(exchange.clone())
        .build()
}

fn stat(x: &RedisExchange, f: impl Fn(ExchangeStats) -> u64) -> u64 {
    f(x.stats())
}

async fn flush(x: &RedisExchange) {
    tokio::time::timeout(WAIT, x.flush()).await.unwrap();
}

fn ns(name: &str) -> Topic {
    Topic::Namespace(name.to_owned())
}

mod conformance {
    use super::*;

    fn stub() -> impl Fn() -> std::future::Ready<Arc<dyn Exchange>> {
        let broker = StubBroker::default();
        move || std::future::ready(exchange(&broker, options()) as Arc<dyn Exchange>)
    }

    neffos::conformance_tests!(stub());
}

#[tokio::test]
async fn two_named_connections_and_the_inbox() {
    let broker = StubBroker::default();
    let x = exchange(&broker, options());
    let s = server(&x);
    flush(&x).await;
    assert_eq!(broker.connections(), 2);
    let name = format!("neffos:{}", s.instance_id());
    assert_eq!(x.client_name().as_deref(), Some(name.as_str()));
    assert!(
        broker
            .names()
            .iter()
            .all(|n| n.as_deref() == Some(name.as_str()))
    );
    let inbox = x.channel(&Topic::Inbox(s.instance_id())).unwrap();
    assert_eq!(broker.numsub(&inbox), 1);
}

#[tokio::test]
async fn publishes_are_batched_and_ordered() {
    let broker = StubBroker::default();
    let x = exchange(&broker, options());
    let _s = server(&x);
    flush(&x).await;
    for i in 0..2000u32 {
        x.publish(ns("a"), Bytes::from(i.to_string()));
    }
    flush(&x).await;
    let got = broker.published(&x.channel(&ns("a")).unwrap());
    let want: Vec<Bytes> = (0..2000u32).map(|i| Bytes::from(i.to_string())).collect();
    assert_eq!(got, want);
    assert_eq!(stat(&x, |s| s.published), 2000);
    assert!(broker.batches() < 2000, "{} round trips", broker.batches());
}

#[tokio::test]
async fn interest_is_counted_not_set() {
    let broker = StubBroker::default();
    let x = exchange(&broker, options());
    let _s = server(&x);
    // A 1→0 report overtaking its 0→1 (two threads): the net interest is 0.
    x.unsubscribe(ns("a"));
    x.subscribe(ns("a"));
    // 0→1, then 1→0 overtaken by the next 0→1: the net interest is 1.
    x.subscribe(ns("b"));
    x.subscribe(ns("b"));
    x.unsubscribe(ns("b"));
    flush(&x).await;
    assert_eq!(broker.numsub(&x.channel(&ns("a")).unwrap()), 0);
    assert_eq!(broker.numsub(&x.channel(&ns("b")).unwrap()), 1);
    x.unsubscribe(ns("b"));
    flush(&x).await;
    assert_eq!(broker.numsub(&x.channel(&ns("b")).unwrap()), 0);
}

#[tokio::test]
async fn broker_loss_reconnects_and_resubscribes() {
    let broker = StubBroker::default();
    let (a, b) = (exchange(&broker, options()), exchange(&broker, options()));
    let (_sa, _sb) = (server(&a), server(&b));
    b.subscribe(ns("room"));
    flush(&a).await;
    flush(&b).await;
    a.publish(ns("room"), Bytes::from_static(b"before"));
    assert!(eventually(WAIT, || stat(&b, |s| s.received) == 1).await);

    broker.kill();
    // Publishes fail fast and are counted; the caller never waits.
    assert!(
        eventually(WAIT, || {
            a.publish(ns("room"), Bytes::from_static(b"lost"));
            stat(&a, |s| s.publish_errors) > 0
        })
        .await
    );
    // Subscription changes during the outage are kept for the reconnection.
    b.subscribe(ns("later"));
    let waiting = tokio::spawn({
        let b = b.clone();
        async move { b.flush().await }
    });
    broker.revive();
    tokio::time::timeout(WAIT, waiting).await.unwrap().unwrap();
    flush(&a).await;
    assert!(stat(&a, |s| s.reconnects) >= 1);
    assert!(stat(&b, |s| s.reconnects) >= 1);
    assert_eq!(broker.numsub(&b.channel(&ns("room")).unwrap()), 1);
    assert_eq!(broker.numsub(&b.channel(&ns("later")).unwrap()), 1);
    let received = stat(&b, |s| s.received);
    a.publish(ns("room"), Bytes::from_static(b"after"));
    a.publish(ns("later"), Bytes::from_static(b"after"));
    assert!(eventually(WAIT, || stat(&b, |s| s.received) == received + 2).await);
    assert_eq!(broker.connections(), 4, "two per instance, old ones gone");
}

#[tokio::test]
async fn lazy_start_without_broker() {
    let broker = StubBroker::default();
    broker.kill();
    let x = exchange(
        &broker,
        Options {
            queue_capacity: 4,
            ..options()
        },
    );
    let _s = server(&x);
    // Never blocks, whatever the number of publishes: the queue is bounded.
    for _ in 0..1000 {
        x.publish(ns("a"), Bytes::from_static(b"x"));
    }
    assert!(eventually(WAIT, || stat(&x, |s| s.publish_errors) == 1000).await);
    broker.revive();
    flush(&x).await;
    assert_eq!(broker.connections(), 2);
    assert_eq!(
        stat(&x, |s| s.reconnects),
        0,
        "a first connection is not a reconnection"
    );
    x.publish(ns("a"), Bytes::from_static(b"x"));
    flush(&x).await;
    assert_eq!(stat(&x, |s| s.published), 1);
}

#[tokio::test]
async fn close_releases_the_connections() {
    let broker = StubBroker::default();
    let x = exchange(&broker, options());
    let _s = server(&x);
    x.subscribe(ns("a"));
    x.publish(ns("a"), Bytes::from_static(b"last"));
    tokio::time::timeout(WAIT, x.close()).await.unwrap();
    assert_eq!(
        broker.published(&x.channel(&ns("a")).unwrap()).len(),
        1,
        "queued publishes are sent"
    );
    assert!(eventually(WAIT, || broker.connections() == 0).await);
    // Closed: publishing counts an error, flush and close return at once.
    x.publish(ns("a"), Bytes::from_static(b"late"));
    assert_eq!(stat(&x, |s| s.publish_errors), 1);
    tokio::time::timeout(WAIT, x.flush()).await.unwrap();
    tokio::time::timeout(WAIT, x.close()).await.unwrap();
}

#[tokio::test]
async fn close_before_start() {
    let broker = StubBroker::default();
    let x = exchange(&broker, options());
    tokio::time::timeout(WAIT, x.close()).await.unwrap();
    tokio::time::timeout(WAIT, x.flush()).await.unwrap();
    assert_eq!(broker.connections(), 0);
}
