//! NATS-specific behaviour on a real `nats-server`: one connection per instance whatever
//! the number of clients (counted on the broker), broker loss (`kill -9`) and restart,
//! every kind of namespace and ID name, cross-instance Asks, credentials, configuration
//! errors.
#![allow(clippy::unwrap_used)]

mod support;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use neffos::error::{AskErrorKind, ExchangeErrorKind};
use neffos::testkit::eventually;
use neffos::{Client, Events, Exchange, Message, Namespaces, Target};
use neffos_nats::{ConnectOptions, Error, NatsExchange};
use support::{Broker, Recorder, WAIT, instance, settle};

async fn exchange(broker: &Broker, prefix: &str, name: &str) -> Arc<NatsExchange> {
    Arc::new(
        NatsExchange::builder(broker.url())
            .prefix(prefix)
            .options(ConnectOptions::new().name(name))
            .connect()
            .await
            .unwrap(),
    )
}

/// The client connections the broker has, by connection name.
async fn connections_named(broker: &Broker, name: &str) -> Vec<serde_json::Value> {
    let connz = broker.connz().await;
    connz["connections"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["name"] == name)
        .cloned()
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_broker_connection_per_instance_with_1000_clients() {
    const CLIENTS: usize = 1000;
    let broker = Broker::start();
    let a = instance(&["chat"], exchange(&broker, "load", "instance-a").await).await;
    let b = instance(&["chat"], exchange(&broker, "load", "instance-b").await).await;

    let received = Arc::new(AtomicUsize::new(0));
    let mut clients = Vec::with_capacity(CLIENTS);
    for batch in 0..CLIENTS / 100 {
        let mut tasks = tokio::task::JoinSet::new();
        for i in 0..100 {
            let url = a.url();
            let received = received.clone();
            tasks.spawn(async move {
                let count = move |_ns: neffos::NsConn, _msg: Message| {
                    received.fetch_add(1, Ordering::Relaxed);
                    async {}
                };
                let client = Client::builder(url)
                    .header("x-id-hex", hex(&format!("client-{batch}-{i}")))
                    .namespaces(
                        Namespaces::new().namespace("chat", Events::new().on("news", count)),
                    )
                    .connect()
                    .await
                    .unwrap();
                client.connect("chat").await.unwrap();
                client
            });
        }
        while let Some(client) = tasks.join_next().await {
            clients.push(client.unwrap());
        }
    }
    assert_eq!(a.server.connection_count(), CLIENTS);
    settle(&[&a, &b]).await;

    // Counted on the broker: exactly one connection per instance.
    let varz = broker.monitor("/varz").await;
    assert_eq!(varz["connections"], 2, "{varz}");
    let connz = broker.connz().await;
    assert_eq!(connz["num_connections"], 2);
    let conns_a = connections_named(&broker, "instance-a").await;
    let conns_b = connections_named(&broker, "instance-b").await;
    assert_eq!((conns_a.len(), conns_b.len()), (1, 1), "{connz}");
    // All of instance a's interest is multiplexed on its one connection: one subject per
    // client ID, the namespace, its inbox and async-nats's reply subscription.
    let subs_a = conns_a[0]["subscriptions"].as_u64().unwrap();
    assert!(subs_a >= CLIENTS as u64 + 2, "{subs_a} subscriptions");

    // One publication from instance b reaches the 1,000 clients of instance a.
    b.server
        .broadcast(Target::namespace("chat"), Message::new("", "news", "hello"))
        .unwrap();
    assert!(eventually(WAIT, || received.load(Ordering::Relaxed) == CLIENTS).await);
    let in_msgs = connections_named(&broker, "instance-a").await[0]["out_msgs"].clone();
    assert_eq!(
        in_msgs, 1,
        "the broker sent instance a one message, not one per client"
    );
    for c in &clients {
        c.close();
    }
}

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn kill_9_mid_stream_then_restart_on_the_same_port() {
    let broker = Broker::start();
    let ex_a = exchange(&broker, "kill", "a").await;
    let ex_b = exchange(&broker, "kill", "b").await;
    let a = instance(&["chat"], ex_a.clone()).await;
    let b = instance(&["chat"], ex_b.clone()).await;
    let mut local = Recorder::connect(&a.url(), "chat", "local").await;
    let mut remote = Recorder::connect(&b.url(), "chat", "remote").await;
    settle(&[&a, &b]).await;

    // A steady broadcast stream from instance a, numbered.
    let next = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let streamer = {
        let server = a.server.clone();
        let (next, stop) = (next.clone(), stop.clone());
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(1));
            while !stop.load(Ordering::Relaxed) {
                tick.tick().await;
                let seq = next.fetch_add(1, Ordering::Relaxed);
                server
                    .broadcast(
                        Target::namespace("chat"),
                        Message::new("", "seq", seq.to_string()),
                    )
                    .unwrap();
            }
        })
    };
    let seq_of = |m: &Message| -> u64 { std::str::from_utf8(&m.body).unwrap().parse().unwrap() };

    // The remote client follows the stream through NATS…
    let mut remote_seen = Vec::new();
    while remote_seen.len() < 100 {
        remote_seen.push(seq_of(&remote.next().await));
    }
    // …until the broker dies without a word.
    let killed = broker.clone();
    tokio::task::spawn_blocking(move || killed.nats.kill())
        .await
        .unwrap();
    let errors_before = ex_a.stats().publish_errors;
    assert!(
        eventually(WAIT, || ex_a.stats().publish_errors > errors_before + 10).await,
        "publishes during the outage are counted as errors"
    );
    let restarted = broker.clone();
    tokio::task::spawn_blocking(move || restarted.nats.restart())
        .await
        .unwrap();
    let restarted_at = Instant::now();
    let first_after_restart = next.load(Ordering::Relaxed);

    // Cross-instance delivery resumes within a few seconds, in order, with a gap.
    loop {
        let seq = seq_of(&remote.next().await);
        assert!(seq > *remote_seen.last().unwrap(), "in order");
        remote_seen.push(seq);
        if seq >= first_after_restart {
            break;
        }
    }
    let resumed_in = restarted_at.elapsed();
    assert!(
        resumed_in < Duration::from_secs(5),
        "resumed after {resumed_in:?}"
    );
    // And it keeps flowing, without further gaps.
    for _ in 0..50 {
        let seq = seq_of(&remote.next().await);
        assert_eq!(
            seq,
            *remote_seen.last().unwrap() + 1,
            "no loss once reconnected"
        );
        remote_seen.push(seq);
    }
    stop.store(true, Ordering::Relaxed);
    streamer.await.unwrap();
    let total = next.load(Ordering::Relaxed);
    assert!(
        remote_seen.windows(2).any(|w| w[1] > w[0] + 1),
        "messages published during the outage are lost across instances"
    );

    // Local delivery lost nothing: every message, in order.
    for expected in 0..total {
        let got = seq_of(&local.next().await);
        assert_eq!(
            got, expected,
            "local delivery must not depend on the broker"
        );
    }
    local.expect_nothing();

    // Both instances counted their reconnection; the broker sees one connection each.
    assert!(eventually(WAIT, || ex_a.stats().reconnects >= 1).await);
    assert!(eventually(WAIT, || ex_b.stats().reconnects >= 1).await);
    let connz = broker.connz().await;
    assert_eq!(connz["num_connections"], 2, "{connz}");
    // async-nats subscribed again: the subjects are back on the new broker.
    let subjects = broker.subscriptions().await;
    for topic in [
        neffos::Topic::Namespace("chat".into()),
        neffos::Topic::Conn("remote".into()),
    ] {
        let subject = ex_b.subject(&topic).unwrap();
        assert!(
            subjects.contains(&subject),
            "{subject} missing from {subjects:?}"
        );
    }
    println!(
        "kill -9 test: {total} published, {} reached the other instance, delivery resumed {resumed_in:?} after the restart",
        remote_seen.len()
    );
}

/// Namespaces that break naive subject mappings: the default `""`, separators, wildcards,
/// spaces, the encoding's own markers, non-ASCII.
const NAMESPACES: &[&str] = &[
    "", "a", "a.b", "a.*", "a.>", "*", ">", "a b", " ", "a\tb", "%", "~", "%25", "ns", "ü.x",
    "日本", ".", "..",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_namespace_name_scales_out_to_exactly_its_members() {
    let broker = Broker::start();
    let a = instance(NAMESPACES, exchange(&broker, "names", "a").await).await;
    let b = instance(NAMESPACES, exchange(&broker, "names", "b").await).await;
    // On instance b, one client per namespace.
    let mut members = Vec::new();
    for (i, ns) in NAMESPACES.iter().enumerate() {
        members.push(Recorder::connect(&b.url(), ns, &format!("member-{i}")).await);
    }
    settle(&[&a, &b]).await;
    for ns in NAMESPACES {
        a.server
            .broadcast(
                Target::namespace(ns),
                Message::new("", "hello", format!("to {ns:?}")),
            )
            .unwrap();
    }
    for ns in NAMESPACES {
        a.server
            .broadcast(Target::namespace(ns), Message::new("", "fence", ""))
            .unwrap();
    }
    for (ns, member) in NAMESPACES.iter().zip(&mut members) {
        let got = member.next().await;
        assert_eq!(&*got.namespace, *ns);
        assert_eq!(
            (&*got.event, &got.body[..]),
            ("hello", format!("to {ns:?}").as_bytes()),
            "namespace {ns:?} got another namespace's broadcast"
        );
        member.expect("fence", "").await;
        member.expect_nothing();
    }
    // The broker carries each namespace on its own subject, and no wildcard.
    let subjects: Vec<String> = broker
        .subscriptions()
        .await
        .into_iter()
        .filter(|s| s.starts_with("names."))
        .collect();
    for s in &subjects {
        assert!(
            s.split('.').all(|t| !t.is_empty() && t != "*" && t != ">"),
            "wildcard or empty token in {s:?}"
        );
    }
    let ns_subjects = subjects
        .iter()
        .filter(|s| s.starts_with("names.ns."))
        .count();
    assert_eq!(ns_subjects, NAMESPACES.len(), "{subjects:?}");
}

/// Connection IDs that break naive subject mappings.
const IDS: &[&str] = &[
    "u", "u.x", "u.*", "u.>", "*", ">", "a b", "é", "%", "~", "ns", "x.y.z", "😀",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_id_is_reachable_across_instances_by_send_and_ask() {
    let broker = Broker::start();
    let a = instance(&[""], exchange(&broker, "ids", "a").await).await;
    let b = instance(&[""], exchange(&broker, "ids", "b").await).await;
    let mut on_b = Vec::new();
    for id in IDS {
        on_b.push(Recorder::connect(&b.url(), "", id).await);
    }
    settle(&[&a, &b]).await;
    // Targeted sends in the default namespace, from the other instance.
    for id in IDS {
        a.server
            .broadcast(
                Target::conn("", id),
                Message::new("", "private", format!("for {id}")),
            )
            .unwrap();
    }
    for (id, r) in IDS.iter().zip(&mut on_b) {
        r.expect("private", &format!("for {id}")).await;
    }
    // Server::ask across instances through NATS: each ID answers for itself.
    for id in IDS {
        let reply = a
            .server
            .ask(id, Message::new("", "question", "q"), WAIT)
            .await
            .unwrap();
        assert_eq!(&reply.body[..], format!("answer:{id}:q").as_bytes());
    }
    // An ID nobody has: a timeout, not another client's answer.
    let short = Duration::from_millis(200);
    let err = a
        .server
        .ask("u.y", Message::new("", "question", "q"), short)
        .await
        .unwrap_err();
    assert_eq!(err.kind(), AskErrorKind::Timeout, "{err}");
    // Nobody got anything else.
    a.server
        .broadcast(Target::namespace(""), Message::new("", "fence", ""))
        .unwrap();
    for r in &mut on_b {
        r.expect("fence", "").await;
        r.expect_nothing();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_asks_across_instances() {
    let broker = Broker::start();
    let a = instance(&["chat"], exchange(&broker, "ask", "a").await).await;
    let b = instance(&["chat"], exchange(&broker, "ask", "b").await).await;
    let _c1 = Recorder::connect(&b.url(), "chat", "c1").await;
    let _c2 = Recorder::connect(&b.url(), "chat", "c2").await;
    settle(&[&a, &b]).await;
    let mut asks = tokio::task::JoinSet::new();
    for i in 0..200 {
        let server = a.server.clone();
        asks.spawn(async move {
            let id = if i % 2 == 0 { "c1" } else { "c2" };
            let reply = server
                .ask(id, Message::new("chat", "question", i.to_string()), WAIT)
                .await
                .unwrap();
            assert_eq!(&reply.body[..], format!("answer:{id}:{i}").as_bytes());
        });
    }
    while let Some(done) = asks.join_next().await {
        done.unwrap();
    }
    assert_eq!(a.server.stats().pending_remote_asks, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn subscriptions_follow_interest_on_the_broker() {
    let broker = Broker::start();
    let ex = exchange(&broker, "interest", "a").await;
    let a = instance(&["chat", "other"], ex.clone()).await;
    let ns = ex
        .subject(&neffos::Topic::Namespace("chat".into()))
        .unwrap();
    let conn = ex.subject(&neffos::Topic::Conn("x y".into())).unwrap();
    assert_eq!(
        (ns.as_str(), conn.as_str()),
        ("interest.ns.chat", "interest.conn.x%20y")
    );
    let inbox = ex
        .subject(&neffos::Topic::Inbox(a.server.instance_id()))
        .unwrap();
    settle(&[&a]).await;
    let subs = broker.subscriptions().await;
    assert!(
        subs.contains(&inbox),
        "the inbox is subscribed at start: {subs:?}"
    );
    assert!(!subs.contains(&ns));

    let first = Recorder::connect(&a.url(), "chat", "x y").await;
    let second = Recorder::connect(&a.url(), "chat", "x y").await;
    settle(&[&a]).await;
    let subs = broker.subscriptions().await;
    assert_eq!(subs.iter().filter(|s| **s == ns).count(), 1, "{subs:?}");
    assert_eq!(subs.iter().filter(|s| **s == conn).count(), 1, "{subs:?}");

    first.client.close();
    assert!(eventually(WAIT, || a.server.connection_count() == 1).await);
    settle(&[&a]).await;
    let subs = broker.subscriptions().await;
    assert!(
        subs.contains(&ns) && subs.contains(&conn),
        "one client is left: {subs:?}"
    );

    second.client.close();
    assert!(eventually(WAIT, || a.server.stats().namespaces == 0).await);
    assert!(eventually(WAIT, || a.server.connection_count() == 0).await);
    settle(&[&a]).await;
    let subs = broker.subscriptions().await;
    assert!(!subs.contains(&ns) && !subs.contains(&conn), "{subs:?}");
    assert!(subs.contains(&inbox));

    // Close drains and releases the connection; so does dropping an exchange.
    let other = exchange(&broker, "interest", "b").await;
    broker.wait_connections(2).await;
    ex.close().await;
    broker.wait_connections(1).await;
    drop(other);
    broker.wait_connections(0).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn credentials_come_from_connect_options() {
    let broker = Broker::start_with(&["--user", "neffos", "--pass", "s3cret"]);
    let good = NatsExchange::builder(broker.url())
        .options(ConnectOptions::with_user_and_password("neffos", "s3cret"))
        .connect()
        .await;
    assert!(good.is_ok(), "{good:?}");
    let in_url = broker.url().replace("nats://", "nats://neffos:s3cret@");
    let from_url = NatsExchange::connect(&in_url).await;
    assert!(from_url.is_ok(), "{from_url:?}");
    // Neither the builder nor the exchange shows the password, in Debug or pretty Debug.
    let builder = NatsExchange::builder(in_url.as_str())
        .options(ConnectOptions::with_user_and_password("neffos", "s3cret"));
    let shown = format!("{builder:?} {builder:#?} {:?}", from_url.unwrap());
    assert!(!shown.contains("s3cret"), "{shown}");
    assert!(shown.contains("neffos:<redacted>@"), "{shown}");
    let bad = NatsExchange::builder(broker.url())
        .options(
            ConnectOptions::with_user_and_password("neffos", "wrong")
                .connection_timeout(Duration::from_secs(2)),
        )
        .connect()
        .await;
    assert!(matches!(bad, Err(Error::Connect { .. })), "{bad:?}");

    let token = Broker::start_with(&["--auth", "t0ken"]);
    let ok = NatsExchange::builder(token.url())
        .options(ConnectOptions::with_token("t0ken"))
        .connect()
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let in_url = token.url().replace("nats://", "nats://t0ken@");
    let from_url = NatsExchange::connect(&in_url).await;
    assert!(from_url.is_ok(), "{from_url:?}");
    let shown = format!(
        "{:?} {:?}",
        from_url.unwrap(),
        ConnectOptions::with_token("t0ken")
    );
    assert!(
        !shown.contains("t0ken"),
        "a token in the URL or the options is hidden: {shown}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn configuration_errors_are_typed() {
    let broker = Broker::start();
    for prefix in ["", "a..b", "a.*", "a b", "a.>"] {
        let err = NatsExchange::builder(broker.url())
            .prefix(prefix)
            .connect()
            .await
            .unwrap_err();
        assert!(matches!(err, Error::InvalidPrefix(_)), "{prefix:?}: {err}");
    }
    assert!(matches!(NatsExchange::connect("").await, Err(Error::NoUrl)));
    assert!(matches!(
        NatsExchange::connect(" , ").await,
        Err(Error::NoUrl)
    ));
    assert!(matches!(
        NatsExchange::connect("nats://[::1").await,
        Err(Error::InvalidUrl { .. })
    ));
    #[cfg(not(feature = "tls"))]
    assert!(matches!(
        NatsExchange::connect("tls://127.0.0.1:4222").await,
        Err(Error::TlsNotEnabled)
    ));
    // Nobody listens on a just-released port: refused at once, not retried forever.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let err = NatsExchange::connect(&format!("nats://127.0.0.1:{port}"))
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Connect { .. }), "{err}");
    // A URL list: the first server is down, the second answers.
    let list = format!("nats://127.0.0.1:{port}, {}", broker.url());
    let ok = NatsExchange::builder(list)
        .options(ConnectOptions::new().retain_servers_order())
        .connect()
        .await;
    assert!(ok.is_ok(), "{ok:?}");
    let neffos_error: neffos::ExchangeError = Error::NoUrl.into();
    assert_eq!(neffos_error.kind(), ExchangeErrorKind::Config);
    let source = std::error::Error::source(&neffos_error).expect("the NATS error is the source");
    assert!(matches!(source.downcast_ref::<Error>(), Some(Error::NoUrl)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn outage_flush_is_bounded_and_new_interest_is_applied_after_reconnection() {
    let broker = Broker::start();
    let ex_a = exchange(&broker, "outage", "a").await;
    let ex_b = Arc::new(
        NatsExchange::builder(broker.url())
            .prefix("outage")
            .flush_timeout(Duration::from_millis(300))
            .connect()
            .await
            .unwrap(),
    );
    let a = instance(&["chat"], ex_a.clone()).await;
    let b = instance(&["chat"], ex_b.clone()).await;
    settle(&[&a, &b]).await;

    let killed = broker.clone();
    tokio::task::spawn_blocking(move || killed.nats.kill())
        .await
        .unwrap();
    // A client joins instance b while NATS is down: local service goes on.
    let mut late = Recorder::connect(&b.url(), "chat", "late").await;
    let started = Instant::now();
    ex_b.flush().await;
    let waited = started.elapsed();
    assert!(
        waited >= Duration::from_millis(250) && waited < Duration::from_secs(3),
        "flush waits for the broker, at most its timeout: {waited:?}"
    );
    b.server
        .broadcast(
            Target::namespace("chat"),
            Message::new("", "local", "still"),
        )
        .unwrap();
    late.expect("local", "still").await;

    let restarted = broker.clone();
    tokio::task::spawn_blocking(move || restarted.nats.restart())
        .await
        .unwrap();
    assert!(eventually(WAIT, || ex_b.stats().reconnects >= 1).await);
    assert!(eventually(WAIT, || ex_a.stats().reconnects >= 1).await);
    settle(&[&a, &b]).await;
    // The subscription asked for during the outage is on the new broker.
    a.server
        .broadcast(
            Target::namespace("chat"),
            Message::new("", "remote", "back"),
        )
        .unwrap();
    late.expect("remote", "back").await;
}
