//! What only a real `redis-server` can show: the subscriptions and connections the broker
//! sees, broker loss (`kill -9`, restart, `SIGSTOP`), credentials, foreign payloads.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use neffos::error::{AskErrorKind, ExchangeErrorKind};
use neffos::testkit::broker::RedisServer;
use neffos::testkit::conformance::{Cluster, NS, Recorder, settle};
use neffos::testkit::{eventually, serve};
use neffos::{Client, Events, Exchange, Message, Namespaces, Server, Target, Topic};
use neffos_redis::RedisExchange;
use support::{Fixture, WAIT, until};

fn stat(x: &RedisExchange, f: impl Fn(neffos::ExchangeStats) -> u64) -> u64 {
    f(x.stats())
}

async fn flush_all(fixture: &Fixture) {
    let made: Vec<Arc<RedisExchange>> = fixture.made.lock().clone();
    for x in made {
        tokio::time::timeout(WAIT, x.flush()).await.expect("flush");
    }
}

/// Only instances with local interest subscribe, with plain channels (no patterns), and
/// every channel has at most one subscription per instance.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_local_interest() {
    let fixture = Fixture::new("interest");
    let cluster = Cluster::start(3, &fixture.factory()).await;
    let _a = cluster.client(0, "a").await;
    let _a2 = cluster.client(0, "a2").await;
    let _b = cluster.client(1, "b").await;
    settle(&cluster).await;
    let x0 = fixture.exchange(0);
    let ns = x0.channel(&Topic::Namespace(NS.into())).unwrap();
    assert_eq!(ns, format!("interest:ns:{}:{NS}", NS.len()));
    let admin = fixture.admin().await;
    assert_eq!(admin.numsub(&ns).await, 2, "instances 0 and 1, once each");
    assert_eq!(admin.numpat().await, 0, "no pattern subscription");
    let mut expected: Vec<String> = ["a", "a2", "b"]
        .iter()
        .map(|id| x0.channel(&Topic::Conn((*id).into())).unwrap())
        .collect();
    expected.push(ns);
    for i in 0..3 {
        expected.push(
            x0.channel(&Topic::Inbox(cluster.server(i).instance_id()))
                .unwrap(),
        );
    }
    expected.sort();
    assert_eq!(
        admin.channels("interest:*").await,
        expected,
        "instance 2 has no client: only its inbox"
    );
    for i in 0..3 {
        let inbox = x0
            .channel(&Topic::Inbox(cluster.server(i).instance_id()))
            .unwrap();
        assert_eq!(admin.numsub(&inbox).await, 1);
    }
}

/// Many clients joining and leaving at once on two instances: the broker ends with one
/// subscription per interested instance, and none once everybody left.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_under_concurrent_joins_and_leaves() {
    let fixture = Fixture::new("churn");
    let cluster = Cluster::start(2, &fixture.factory()).await;
    let ns = fixture
        .exchange(0)
        .channel(&Topic::Namespace(NS.into()))
        .unwrap();
    let mut kept = Vec::new();
    for round in 0..4 {
        let mut tasks = Vec::new();
        for i in 0..40 {
            let url = cluster.instances[i % 2].url();
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(url)
                    .header("X-Username", format!("c{round}-{i}"))
                    .namespaces(Namespaces::new().namespace(NS, Events::new()))
                    .connect()
                    .await
                    .unwrap();
                let ns = client.connect(NS).await.unwrap();
                if i % 3 == 0 {
                    Some(client)
                } else {
                    ns.disconnect().await.unwrap();
                    client.close();
                    None
                }
            }));
        }
        for t in tasks {
            kept.extend(t.await.unwrap());
        }
    }
    let admin = fixture.admin().await;
    assert!(until(WAIT, || async { admin.numsub(&ns).await == 2 }).await);
    assert_eq!(admin.numpat().await, 0);
    for c in &kept {
        c.close();
    }
    assert!(
        eventually(WAIT, || (0..2)
            .all(|i| cluster.server(i).connection_count() == 0))
        .await
    );
    assert!(
        until(WAIT, || async { admin.numsub(&ns).await == 0 }).await,
        "every client left: no instance is subscribed"
    );
    assert!(
        until(WAIT, || async {
            admin.channels("churn:conn:*").await.is_empty()
        })
        .await,
        "no connection channel left"
    );
    // Only the two inboxes remain.
    assert_eq!(admin.channels("churn:*").await.len(), 2);
}

/// Two broker connections per instance, whatever the number of clients, namespaces,
/// subscriptions: 1,000 clients in 10 namespaces.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_broker_connections_for_a_thousand_clients() {
    const CLIENTS: usize = 1000;
    const NAMESPACES: usize = 10;
    let fixture = Fixture::new("conns");
    let factory = fixture.factory();
    let names: Vec<String> = (0..NAMESPACES).map(|i| format!("ns{i}")).collect();
    let namespaces = || {
        names.iter().fold(Namespaces::new(), |n, name| {
            n.namespace(name.as_str(), Events::new())
        })
    };
    let mut servers = Vec::new();
    for _ in 0..2 {
        let server = Server::builder(namespaces())
            .exchange(factory().await)
            .build();
        servers.push(serve(server).await.unwrap());
    }
    let url = servers[0].url();
    let mut clients = Vec::with_capacity(CLIENTS);
    for chunk in 0..CLIENTS / 100 {
        let mut tasks = Vec::new();
        for i in chunk * 100..(chunk + 1) * 100 {
            let url = url.clone();
            let ns = names[i % NAMESPACES].clone();
            let namespaces = namespaces();
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(url)
                    .namespaces(namespaces)
                    .connect()
                    .await
                    .unwrap();
                client.connect(&ns).await.unwrap();
                client
            }));
        }
        for t in tasks {
            clients.push(t.await.unwrap());
        }
    }
    assert_eq!(servers[0].server.connection_count(), CLIENTS);
    assert_eq!(servers[0].server.stats().namespaces, NAMESPACES);
    flush_all(&fixture).await;

    let admin = fixture.admin().await;
    let names_on_broker = admin.client_names().await;
    let x0 = fixture.exchange(0);
    let me = x0.client_name().unwrap();
    let mine = names_on_broker.iter().filter(|n| **n == me).count();
    assert!(mine <= 2, "instance 0 holds {mine} broker connections");
    assert_eq!(mine, 2, "publisher and subscriber, both named {me}");
    let neffos = names_on_broker
        .iter()
        .filter(|n| n.starts_with("neffos:"))
        .count();
    assert_eq!(
        neffos, 4,
        "two instances, two connections each: {names_on_broker:?}"
    );
    // 10 namespace channels + 1,000 connection channels + inbox on one connection; each
    // namespace channel once, not once per client.
    for name in &names {
        let ch = x0.channel(&Topic::Namespace(name.clone())).unwrap();
        assert_eq!(admin.numsub(&ch).await, 1);
    }
    assert_eq!(admin.channels("conns:conn:*").await.len(), CLIENTS);

    // A broadcast from the other instance reaches a client of instance 0 through Redis.
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let probe = Client::builder(url)
        .namespaces(namespaces().namespace(
            "ns3",
            Events::new().on("hello", move |_ns, msg: Message| {
                let tx = tx.clone();
                async move {
                    let _ = tx.send(msg.body);
                }
            }),
        ))
        .connect()
        .await
        .unwrap();
    probe.connect("ns3").await.unwrap();
    flush_all(&fixture).await;
    servers[1]
        .server
        .broadcast(
            Target::namespace("ns3"),
            Message::new("", "hello", "via redis"),
        )
        .unwrap();
    let body = tokio::time::timeout(WAIT, rx.recv())
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&body[..], b"via redis");
    drop(clients);
}

/// `Server::ask` to a client on another instance, through the asker's inbox channel.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ask_across_instances() {
    let fixture = Fixture::new("ask");
    let cluster = Cluster::start(2, &fixture.factory()).await;
    let _b = cluster.client(1, "b").await;
    settle(&cluster).await;
    let reply = cluster
        .server(0)
        .ask("b", Message::new(NS, "question", "ping"), WAIT)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"answer:ping");
    let err = cluster
        .server(0)
        .ask("b", Message::new(NS, "question", "fail"), WAIT)
        .await
        .unwrap_err();
    assert_eq!(
        (err.kind(), err.remote()),
        (AskErrorKind::Remote, Some("refused by client"))
    );
    // One inbox per instance, however many Asks: no per-Ask channel or connection.
    let admin = fixture.admin().await;
    assert_eq!(admin.channels("ask:inbox:*").await.len(), 2);
    assert_eq!(
        admin
            .client_names()
            .await
            .iter()
            .filter(|n| n.starts_with("neffos:"))
            .count(),
        4
    );
}

/// Collects `seq` bodies until the `marker` event, which must come.
async fn drain_until(r: &mut Recorder, marker: &str) -> Vec<u32> {
    let mut seen = Vec::new();
    for _ in 0..10_000 {
        let msg = r.next().await;
        if &*msg.event == marker {
            return seen;
        }
        assert_eq!(&*msg.event, "seq", "unexpected {msg:?}");
        seen.push(std::str::from_utf8(&msg.body).unwrap().parse().unwrap());
    }
    panic!("no {marker} within 10,000 messages");
}

/// `kill -9` of the broker in the middle of a broadcast stream, then a restart on the same
/// port: local deliveries lose nothing, cross-instance delivery is at most once and in
/// order, and resumes (subscriptions restored, reconnections counted).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn broker_kill_and_restart_mid_stream() {
    const N: u32 = 400;
    let fixture = Fixture::new("kill");
    let cluster = Cluster::start(2, &fixture.factory()).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    settle(&cluster).await;
    for i in 0..N {
        if i == N / 2 {
            // The stream flows across instances up to here; then the broker dies.
            for j in 0..i {
                b.expect("seq", &j.to_string()).await;
            }
            fixture.broker.kill();
        }
        cluster
            .server(0)
            .broadcast(
                Target::namespace(NS),
                Message::new("", "seq", i.to_string()),
            )
            .expect("broadcast never fails for a broker outage");
    }
    for i in 0..N {
        a.expect("seq", &i.to_string()).await;
    }
    let (x0, x1) = (fixture.exchange(0), fixture.exchange(1));
    assert!(
        eventually(WAIT, || stat(&x0, |s| s.publish_errors) > 0).await,
        "publishes during the outage are counted as errors"
    );

    fixture.broker.restart();
    assert!(
        eventually(WAIT, || stat(&x0, |s| s.reconnects) >= 2
            && stat(&x1, |s| s.reconnects) >= 2)
        .await,
        "both connections of both instances reconnect"
    );
    settle(&cluster).await;
    let admin = fixture.admin().await;
    let ns = x0.channel(&Topic::Namespace(NS.into())).unwrap();
    assert_eq!(admin.numsub(&ns).await, 2, "subscriptions restored");

    // The first message after the restart arrives, after whatever part of the stream
    // made it through, in order.
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "after", ""))
        .unwrap();
    a.expect("after", "").await;
    // Whatever of the second half was in flight when the broker died: at most once, in
    // order, then the message sent after the restart.
    let got = drain_until(&mut b, "after").await;
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
    assert!(got.iter().all(|i| (N / 2..N).contains(i)), "{got:?}");
    // And the other way, and an Ask (inbox restored).
    cluster
        .server(1)
        .broadcast(Target::namespace(NS), Message::new("", "back", ""))
        .unwrap();
    a.expect("back", "").await;
    b.expect("back", "").await;
    let reply = cluster
        .server(1)
        .ask("a", Message::new(NS, "question", "up?"), WAIT)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"answer:up?");
}

/// A frozen broker (`SIGSTOP`): broadcasting never waits for it, local clients get
/// everything; after `SIGCONT` the cluster works again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_broker_never_blocks_broadcasts() {
    let broker = Arc::new(RedisServer::start());
    let url = broker.url();
    let make = move || {
        let url = url.clone();
        async move {
            Arc::new(
                RedisExchange::builder(url)
                    .prefix("pause")
                    .response_timeout(Duration::from_millis(300))
                    .connect_timeout(Duration::from_millis(300))
                    .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
                    .connect()
                    .await
                    .unwrap(),
            ) as Arc<dyn Exchange>
        }
    };
    let cluster = Cluster::start(2, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    settle(&cluster).await;
    broker.pause();
    let started = tokio::time::Instant::now();
    for i in 0..200 {
        cluster
            .server(0)
            .broadcast(
                Target::namespace(NS),
                Message::new("", "seq", i.to_string()),
            )
            .unwrap();
    }
    let spent = started.elapsed();
    for i in 0..200 {
        a.expect("seq", &i.to_string()).await;
    }
    assert!(
        spent < Duration::from_secs(2),
        "200 broadcasts took {spent:?} with a frozen broker"
    );
    broker.resume();
    settle(&cluster).await;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "after", ""))
        .unwrap();
    a.expect("after", "").await;
    let got = drain_until(&mut b, "after").await;
    assert!(got.windows(2).all(|w| w[0] < w[1]), "out of order: {got:?}");
}

/// Anything published on our channels by someone else is dropped and counted by the
/// server; the exchange keeps working.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn foreign_payloads_are_counted_and_dropped() {
    let fixture = Fixture::new("foreign");
    let cluster = Cluster::start(2, &fixture.factory()).await;
    let _a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    settle(&cluster).await;
    let x1 = fixture.exchange(1);
    let admin = fixture.admin().await;
    let garbage: [&[u8]; 5] = [b"", b"hello", &[0xff; 64], &[0x93, 0x01], b"\x81\xa1x\xc0"];
    let channels = [
        x1.channel(&Topic::Namespace(NS.into())).unwrap(),
        x1.channel(&Topic::Conn("b".into())).unwrap(),
        x1.channel(&Topic::Inbox(cluster.server(1).instance_id()))
            .unwrap(),
    ];
    for (ch, listeners) in channels.iter().zip([2, 1, 1]) {
        for g in garbage {
            assert_eq!(admin.publish(ch, g).await, listeners, "listeners of {ch}");
        }
    }
    let sent = (channels.len() * garbage.len()) as u64;
    assert!(
        eventually(WAIT, || cluster.server(1).stats().malformed_envelopes
            == sent)
        .await
    );
    assert_eq!(stat(&x1, |s| s.received), sent);
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "still", "ok"))
        .unwrap();
    b.expect("still", "ok").await;
}

/// Password (`requirepass`) and ACL user in the URL; wrong credentials fail at connect.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_from_the_url() {
    let broker = RedisServer::start_with(&[
        "--requirepass",
        "s3cret",
        "--user",
        "app",
        "on",
        ">apppw",
        "&acl:*",
        "+publish",
        "+subscribe",
        "+unsubscribe",
        "+ping",
        "+hello",
        "+client|setname",
    ]);
    let port = broker.port();
    let err = RedisExchange::builder(format!("redis://127.0.0.1:{port}"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, neffos_redis::Error::Connect { .. }), "{err}");
    let err = RedisExchange::builder(format!("redis://:wrong@127.0.0.1:{port}"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, neffos_redis::Error::Connect { .. }), "{err}");

    let urls = [
        format!("redis://:s3cret@127.0.0.1:{port}/3"),
        format!("redis://app:apppw@127.0.0.1:{port}"),
    ];
    for url in urls {
        let make = {
            let url = url.clone();
            move || {
                let url = url.clone();
                async move {
                    Arc::new(
                        RedisExchange::builder(url)
                            .prefix("acl")
                            .connect()
                            .await
                            .unwrap(),
                    ) as Arc<dyn Exchange>
                }
            }
        };
        let cluster = Cluster::start(2, &make).await;
        let _a = cluster.client(0, "a").await;
        let mut b = cluster.client(1, "b").await;
        settle(&cluster).await;
        cluster
            .server(0)
            .broadcast(
                Target::namespace(NS),
                Message::new("", "hi", "authenticated"),
            )
            .unwrap();
        b.expect("hi", "authenticated").await;
        for inst in &cluster.instances {
            let x = inst.server.exchange().unwrap();
            assert_eq!(x.stats().publish_errors, 0, "{url}");
        }
    }
}

/// Configuration errors are typed and happen before any connection.
#[tokio::test]
async fn configuration_errors() {
    use neffos_redis::Error as E;
    let err = RedisExchange::builder("redis://127.0.0.1:1")
        .prefix("a:b")
        .build()
        .unwrap_err();
    assert!(matches!(err, E::InvalidPrefix(_)), "{err}");
    let err = RedisExchange::builder("http://127.0.0.1")
        .build()
        .unwrap_err();
    assert!(matches!(err, E::InvalidUrl { .. }), "{err}");
    let tls = RedisExchange::builder("rediss://127.0.0.1:1").build();
    if cfg!(feature = "tls") {
        assert!(tls.is_ok());
    } else {
        assert!(matches!(tls.unwrap_err(), E::TlsNotEnabled));
    }
    // Nothing listens on a port the OS just gave back: connect fails, typed.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = RedisExchange::builder(format!("redis://127.0.0.1:{port}"))
        .connect()
        .await
        .unwrap_err();
    assert!(matches!(err, E::Connect { .. }), "{err}");
    let core: neffos::ExchangeError = err.into();
    assert_eq!(core.kind(), ExchangeErrorKind::Connect);
    let source = std::error::Error::source(&core).expect("the Redis error is the source");
    assert!(matches!(
        source.downcast_ref::<E>(),
        Some(E::Connect { .. })
    ));
}

/// Built without a broker: the server starts, local delivery works, publishes are counted
/// as failed; once the broker comes up the exchange connects by itself.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn lazy_exchange_connects_when_the_broker_appears() {
    let broker = RedisServer::start();
    let url = broker.url();
    broker.kill();
    let make = move || {
        let url = url.clone();
        async move {
            Arc::new(
                RedisExchange::builder(url)
                    .prefix("lazy")
                    .reconnect_backoff(Duration::from_millis(10), Duration::from_millis(100))
                    .build()
                    .unwrap(),
            ) as Arc<dyn Exchange>
        }
    };
    let cluster = Cluster::start(2, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "local", ""))
        .unwrap();
    a.expect("local", "").await;
    let x0 = cluster.server(0).exchange().unwrap().clone();
    assert!(eventually(WAIT, || x0.stats().publish_errors == 1).await);
    broker.restart();
    settle(&cluster).await;
    assert_eq!(x0.stats().reconnects, 0);
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "remote", ""))
        .unwrap();
    a.expect("remote", "").await;
    b.expect("remote", "").await;
}

/// A password in the URL never shows: not in the builder's `Debug`, not in a connect
/// error (whose sources are the broker library's errors).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_url_password_is_not_shown() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let url = format!("redis://app:hunter2@127.0.0.1:{port}/0");
    let builder = RedisExchange::builder(url.as_str()).prefix("secret-test");
    let shown = format!("{builder:?} {builder:#?}");
    assert!(!shown.contains("hunter2"), "{shown}");
    assert!(shown.contains("app:<redacted>@127.0.0.1"), "{shown}");
    let err = builder.connect().await.unwrap_err();
    let mut chain = format!("{err} {err:?}");
    let mut source = std::error::Error::source(&err);
    while let Some(e) = source {
        chain.push_str(&format!(" {e} {e:?}"));
        source = e.source();
    }
    assert!(!chain.contains("hunter2"), "{chain}");
}
