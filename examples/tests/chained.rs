//! Chained exchanges on real brokers: instances on Redis and NATS at once (a migration).
//! Every client gets a broadcast exactly once; with relaying, instances on only one of the
//! brokers see each other through a bridge instance; one broker down does not stop the
//! other.
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used)]

use std::sync::Arc;
use std::time::Duration;

use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::testkit::{chained, serve};
use neffos::{Client, Events, Exchange, Message, Namespaces, NsConn, Server, Target};
use neffos_nats::NatsExchange;
use neffos_redis::RedisExchange;
use tokio::sync::mpsc;

fn redis_factory(
    url: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Exchange>> + Send>> {
    move || {
        let url = url.clone();
        Box::pin(async move {
            Arc::new(RedisExchange::connect(url).await.unwrap()) as Arc<dyn Exchange>
        })
    }
}

fn nats_factory(
    url: String,
) -> impl Fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = Arc<dyn Exchange>> + Send>> {
    move || {
        let url = url.clone();
        Box::pin(async move {
            Arc::new(NatsExchange::connect(&url).await.unwrap()) as Arc<dyn Exchange>
        })
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_instance_on_redis_and_nats_delivers_exactly_once() {
    let (redis, nats) = (RedisServer::start(), NatsServer::start());
    chained::exactly_once_on_both(redis_factory(redis.url()), nats_factory(nats.url())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_with_a_relay_bridges_redis_only_and_nats_only_instances() {
    let (redis, nats) = (RedisServer::start(), NatsServer::start());
    chained::migration(redis_factory(redis.url()), nats_factory(nats.url()), true).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn migration_without_relay_keeps_the_two_sides_apart() {
    let (redis, nats) = (RedisServer::start(), NatsServer::start());
    chained::migration(redis_factory(redis.url()), nats_factory(nats.url()), false).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_down_does_not_stop_the_other() {
    let (redis, nats) = (RedisServer::start(), NatsServer::start());
    let (make_r, make_n) = (redis_factory(redis.url()), nats_factory(nats.url()));
    let namespaces = || Namespaces::new().namespace("chat", Events::new());
    let a = serve(
        Server::builder(namespaces())
            .exchange(make_r().await)
            .exchange(make_n().await)
            .build(),
    )
    .await
    .unwrap();
    let b = serve(
        Server::builder(namespaces())
            .exchange(make_r().await)
            .exchange(make_n().await)
            .build(),
    )
    .await
    .unwrap();
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = Client::builder(b.url())
        .namespaces(Namespaces::new().namespace(
            "chat",
            Events::new().on("news", move |_ns: NsConn, msg: Message| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(String::from_utf8_lossy(&msg.body).into_owned());
                }
            }),
        ))
        .connect()
        .await
        .unwrap();
    client.connect("chat").await.unwrap();
    b.server.flush_exchanges().await;
    a.server
        .broadcast(
            Target::namespace("chat"),
            Message::new("", "news", "both up"),
        )
        .unwrap();
    assert_eq!(next(&mut rx).await, "both up");
    redis.kill();
    for i in 0..20 {
        a.server
            .broadcast(
                Target::namespace("chat"),
                Message::new("", "news", format!("redis down {i}")),
            )
            .unwrap();
    }
    for i in 0..20 {
        assert_eq!(
            next(&mut rx).await,
            format!("redis down {i}"),
            "NATS alone carries everything, once"
        );
    }
    assert!(rx.try_recv().is_err());
    assert!(a.server.exchanges()[0].stats().publish_errors > 0);
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .unwrap()
        .unwrap()
}
