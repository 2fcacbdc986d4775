//! Scenarios for chained exchanges (several exchanges on one server), run with two
//! exchange factories `a` and `b` that stand for two different brokers.

use std::future::Future;
use std::sync::Arc;

use super::conformance::{NS, Recorder, WAIT};
use super::{TestServer, serve};
use crate::{Client, Events, Exchange, Message, Namespaces, NsConn, Server, Target};
use tokio::sync::mpsc;

/// Which exchanges an instance uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Brokers {
    /// Only the first broker.
    A,
    /// Only the second broker.
    B,
    /// Both, without relaying.
    Both,
    /// Both, relaying between them.
    BothRelay,
}

async fn instance<FA, FutA, FB, FutB>(brokers: Brokers, a: &FA, b: &FB) -> TestServer
where
    FA: Fn() -> FutA,
    FutA: Future<Output = Arc<dyn Exchange>>,
    FB: Fn() -> FutB,
    FutB: Future<Output = Arc<dyn Exchange>>,
{
    let mut builder =
        Server::builder(Namespaces::new().namespace(NS, Events::new())).id_generator(|parts| {
            parts
                .headers
                .get("x-username")
                .and_then(|v| v.to_str().ok())
                .unwrap_or("anonymous")
                .to_owned()
        });
    if matches!(brokers, Brokers::A | Brokers::Both | Brokers::BothRelay) {
        builder = builder.exchange(a().await);
    }
    if matches!(brokers, Brokers::B | Brokers::Both | Brokers::BothRelay) {
        builder = builder.exchange(b().await);
    }
    serve(builder.relay(brokers == Brokers::BothRelay).build())
        .await
        .expect("bind a loopback port")
}

async fn recorder(ts: &TestServer, name: &str) -> Recorder {
    let (tx, rx) = mpsc::unbounded_channel();
    let record = move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            if msg.event.starts_with('_') {
                return None;
            }
            let answer = (&*msg.event == "question").then(|| crate::Reply::new("answer"));
            let _ = tx.send(msg);
            answer
        }
    };
    let client = Client::builder(ts.url())
        .header("X-Username", name)
        .namespaces(
            Namespaces::new().namespace(NS, Events::new().on(crate::events::ON_ANY_EVENT, record)),
        )
        .connect()
        .await
        .expect("client connects");
    let ns = client.connect(NS).await.expect("namespace connects");
    Recorder::new(client, ns, rx)
}

async fn flush(servers: &[&TestServer]) {
    for s in servers {
        tokio::time::timeout(WAIT, s.server.flush_exchanges())
            .await
            .expect("exchanges flush");
    }
}

/// Every instance on both brokers: a broadcast from any instance reaches every client
/// exactly once, and a cross-instance Ask is answered once.
pub async fn exactly_once_on_both<FA, FutA, FB, FutB>(a: FA, b: FB)
where
    FA: Fn() -> FutA,
    FutA: Future<Output = Arc<dyn Exchange>>,
    FB: Fn() -> FutB,
    FutB: Future<Output = Arc<dyn Exchange>>,
{
    let s1 = instance(Brokers::Both, &a, &b).await;
    let s2 = instance(Brokers::Both, &a, &b).await;
    let s3 = instance(Brokers::Both, &a, &b).await;
    let mut c1 = recorder(&s1, "c1").await;
    let mut c2 = recorder(&s2, "c2").await;
    let mut c3 = recorder(&s3, "c3").await;
    flush(&[&s1, &s2, &s3]).await;
    for (i, s) in [&s1, &s2, &s3].into_iter().enumerate() {
        s.server
            .broadcast(
                Target::namespace(NS),
                Message::new("", "news", format!("from {i}")),
            )
            .expect("broadcast");
        for c in [&mut c1, &mut c2, &mut c3] {
            c.expect("news", &format!("from {i}")).await;
        }
    }
    // A fence through both brokers: a duplicate would have arrived before it.
    s1.server
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    for c in [&mut c1, &mut c2, &mut c3] {
        c.expect("fence", "").await;
        c.expect_nothing();
    }
    let before = s2.server.stats().late_replies;
    let reply = s2
        .server
        .ask("c3", Message::new(NS, "question", "?"), WAIT)
        .await
        .expect("answered");
    assert_eq!(&reply.body[..], b"answer");
    let got = c3.next().await;
    assert_eq!(&*got.event, "question");
    s3.server
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    c3.expect("fence", "").await;
    c3.expect_nothing();
    assert_eq!(s2.server.stats().late_replies, before);
}

/// Migration: instance 0 on broker A only, instance 1 on both, instance 2 on broker B only.
/// With `relay` on instance 1, broadcasts from 0 reach 2's clients exactly once and the
/// reverse; with it off, 0 and 2 do not see each other (the documented behaviour).
pub async fn migration<FA, FutA, FB, FutB>(a: FA, b: FB, relay: bool)
where
    FA: Fn() -> FutA,
    FutA: Future<Output = Arc<dyn Exchange>>,
    FB: Fn() -> FutB,
    FutB: Future<Output = Arc<dyn Exchange>>,
{
    let bridge = if relay {
        Brokers::BothRelay
    } else {
        Brokers::Both
    };
    let s0 = instance(Brokers::A, &a, &b).await;
    let s1 = instance(bridge, &a, &b).await;
    let s2 = instance(Brokers::B, &a, &b).await;
    let mut c0 = recorder(&s0, "c0").await;
    let mut c1 = recorder(&s1, "c1").await;
    let mut c2 = recorder(&s2, "c2").await;
    flush(&[&s0, &s1, &s2]).await;
    s0.server
        .broadcast(
            Target::namespace(NS),
            Message::new("", "news", "from A-only"),
        )
        .expect("broadcast");
    c0.expect("news", "from A-only").await;
    c1.expect("news", "from A-only").await;
    if relay {
        c2.expect("news", "from A-only").await;
    }
    s2.server
        .broadcast(
            Target::namespace(NS),
            Message::new("", "news", "from B-only"),
        )
        .expect("broadcast");
    c2.expect("news", "from B-only").await;
    c1.expect("news", "from B-only").await;
    if relay {
        c0.expect("news", "from B-only").await;
    }
    // Fences from the bridge instance reach everybody; nothing else may come before them.
    s1.server
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    for c in [&mut c0, &mut c1, &mut c2] {
        c.expect("fence", "").await;
        c.expect_nothing();
    }
}
