//! The exchange conformance suite: the same scenarios for every [`Exchange`], run with
//! three server instances that each get their own exchange handle on one shared broker.
//!
//! A backend crate runs it with [`conformance_tests!`](crate::conformance_tests), giving
//! an async factory that returns a fresh exchange handle connected to its broker:
//!
//! ```ignore
//! neffos::conformance_tests!(async { Arc::new(MyExchange::connect(&broker_url).await) as Arc<dyn Exchange> });
//! ```

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::{TestServer, eventually, serve};
use crate::error::AskErrorKind;
use crate::{Client, Events, Exchange, Message, Namespaces, NsConn, Reply, Server, Target};

/// How long any single expectation may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// The namespace every scenario uses.
pub const NS: &str = "chat";

/// Three instances sharing one broker.
#[derive(Debug)]
pub struct Cluster {
    /// The instances, each serving on its own loopback port.
    pub instances: Vec<TestServer>,
}

/// A client connected to one instance, recording every event it receives.
#[derive(Debug)]
pub struct Recorder {
    /// The client.
    pub client: Client,
    /// Its connection to [`NS`].
    pub ns: NsConn,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Recorder {
    /// Wraps a client whose handlers send every received message to `rx`'s sender.
    pub fn new(client: Client, ns: NsConn, rx: mpsc::UnboundedReceiver<Message>) -> Self {
        Recorder { client, ns, rx }
    }

    /// The next recorded message, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> Message {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!("client {} closed", self.client.id()),
            Err(_) => panic!(
                "client {} received nothing within {WAIT:?}",
                self.client.id()
            ),
        }
    }

    /// Asserts that the next message has `event` and `body`.
    pub async fn expect(&mut self, event: &str, body: &str) {
        let msg = self.next().await;
        assert_eq!(
            (&*msg.event, &msg.body[..]),
            (event, body.as_bytes()),
            "client {} got an unexpected message",
            self.client.id()
        );
    }

    /// Asserts nothing else was received so far.
    pub fn expect_nothing(&mut self) {
        if let Ok(msg) = self.rx.try_recv() {
            panic!("client {} got an unexpected {msg:?}", self.client.id());
        }
    }
}

fn server_namespaces() -> Namespaces {
    Namespaces::new().namespace(NS, Events::new())
}

fn client_namespaces(tx: mpsc::UnboundedSender<Message>) -> Namespaces {
    let record = move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            if &*msg.event == "question" {
                if &msg.body[..] == b"fail" {
                    return Err("refused by client".to_string());
                }
                return Ok(Some(Reply::new(format!(
                    "answer:{}",
                    String::from_utf8_lossy(&msg.body)
                ))));
            }
            if !msg.event.starts_with('_') {
                let _ = tx.send(msg);
            }
            Ok(None)
        }
    };
    Namespaces::new().namespace(NS, Events::new().on(crate::events::ON_ANY_EVENT, record))
}

impl Cluster {
    /// Starts `n` instances, each with an exchange from `make`.
    /// The factory is borrowed, so whatever it owns (a broker guard) lives as long as the
    /// caller keeps it: for the whole scenario.
    pub async fn start<F, Fut>(n: usize, make: &F) -> Cluster
    where
        F: Fn() -> Fut,
        Fut: Future<Output = Arc<dyn Exchange>>,
    {
        super::watch_panics();
        let mut instances = Vec::new();
        for _ in 0..n {
            let server = Server::builder(server_namespaces())
                .id_generator(|parts| {
                    parts
                        .headers
                        .get("x-username")
                        .and_then(|v| v.to_str().ok())
                        .map(str::to_owned)
                        .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
                })
                .exchange(make().await)
                .build();
            instances.push(serve(server).await.expect("bind a loopback port"));
        }
        Cluster { instances }
    }

    /// The server of instance `i`.
    pub fn server(&self, i: usize) -> &Server {
        &self.instances[i].server
    }

    /// Connects a recording client named `name` to instance `i` and namespace [`NS`].
    pub async fn client(&self, i: usize, name: &str) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        let client = Client::builder(self.instances[i].url())
            .header("X-Username", name)
            .namespaces(client_namespaces(tx))
            .connect()
            .await
            .expect("client connects");
        let ns = client.connect(NS).await.expect("namespace connects");
        Recorder { client, ns, rx }
    }
}

/// Broadcasts to a namespace reach the clients of every instance, not the excluded one.
pub async fn broadcast_namespace<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    let mut c = cluster.client(2, "c").await;
    settle(&cluster).await;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "news", "to all"))
        .expect("broadcast");
    for r in [&mut a, &mut b, &mut c] {
        r.expect("news", "to all").await;
    }
    // Except one connection, on another instance.
    let except_b = cluster.server(1).connections_by_id("b");
    cluster
        .server(1)
        .broadcast(
            Target::namespace(NS).except(&except_b[0]),
            Message::new("", "news", "not b"),
        )
        .expect("broadcast");
    a.expect("news", "not b").await;
    c.expect("news", "not b").await;
    // Except by ID from another instance than the excluded client's.
    cluster
        .server(0)
        .broadcast(
            Target::namespace(NS).except_id("c"),
            Message::new("", "news", "not c"),
        )
        .expect("broadcast");
    a.expect("news", "not c").await;
    b.expect("news", "not c").await;
    // Fence: a message everyone gets proves the excluded ones got nothing before it.
    cluster
        .server(2)
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    a.expect("fence", "").await;
    b.expect("fence", "").await;
    c.expect("fence", "").await;
    for r in [&mut a, &mut b, &mut c] {
        r.expect_nothing();
    }
}

/// Room broadcasts reach room members on every instance and nobody else.
pub async fn broadcast_room<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    let mut c = cluster.client(2, "c").await;
    a.ns.join_room("lobby").await.expect("join");
    b.ns.join_room("lobby").await.expect("join");
    settle(&cluster).await;
    cluster
        .server(2)
        .broadcast(
            Target::room(NS, "lobby"),
            Message::new("", "room", "hi lobby"),
        )
        .expect("broadcast");
    let got = a.next().await;
    assert_eq!((&*got.room, &got.body[..]), ("lobby", &b"hi lobby"[..]));
    b.expect("room", "hi lobby").await;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    a.expect("fence", "").await;
    b.expect("fence", "").await;
    c.expect("fence", "").await;
    c.expect_nothing();
}

/// A send to one connection ID reaches it on whichever instance it is, and only it.
pub async fn targeted_send<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    let mut c = cluster.client(2, "c").await;
    settle(&cluster).await;
    cluster
        .server(0)
        .broadcast(Target::conn(NS, "c"), Message::new("", "private", "for c"))
        .expect("send");
    c.expect("private", "for c").await;
    cluster
        .server(2)
        .broadcast(
            Target::conn(NS, "a"),
            Message::new("", "private", "for a").with_binary(true),
        )
        .expect("send");
    let got = a.next().await;
    assert!(got.binary, "binary frame type survives the exchange");
    assert_eq!(&got.body[..], b"for a");
    cluster
        .server(1)
        .broadcast(Target::namespace(NS), Message::new("", "fence", ""))
        .expect("broadcast");
    a.expect("fence", "").await;
    b.expect("fence", "").await;
    c.expect("fence", "").await;
    b.expect_nothing();
}

/// `Server::ask` reaches a client on another instance: reply, error reply, unknown ID.
pub async fn ask_across_instances<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let _a = cluster.client(0, "a").await;
    let _c = cluster.client(2, "c").await;
    settle(&cluster).await;
    let reply = cluster
        .server(0)
        .ask("c", Message::new(NS, "question", "q1"), WAIT)
        .await
        .expect("reply from instance 2");
    assert_eq!(&reply.body[..], b"answer:q1");
    let reply = cluster
        .server(2)
        .ask("a", Message::new(NS, "question", "q2"), WAIT)
        .await
        .expect("reply from instance 0");
    assert_eq!(&reply.body[..], b"answer:q2");
    let err = cluster
        .server(1)
        .ask("c", Message::new(NS, "question", "fail"), WAIT)
        .await
        .expect_err("the client refuses");
    assert_eq!(err.kind(), AskErrorKind::Remote, "{err}");
    assert_eq!(err.remote(), Some("refused by client"));
    let short = Duration::from_millis(300);
    let err = cluster
        .server(1)
        .ask("nobody", Message::new(NS, "question", "?"), short)
        .await
        .expect_err("nobody answers");
    assert_eq!(err.kind(), AskErrorKind::Timeout, "{err}");
    assert!(
        err.to_string().contains("\"nobody\""),
        "names the ID: {err}"
    );
    assert_eq!(
        cluster.server(1).stats().pending_remote_asks,
        0,
        "waiters are cleaned"
    );
}

/// Broadcasts from one instance arrive in publication order.
pub async fn ordering<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(2, &make).await;
    let mut b = cluster.client(1, "b").await;
    settle(&cluster).await;
    const N: usize = 200;
    for i in 0..N {
        cluster
            .server(0)
            .broadcast(
                Target::namespace(NS),
                Message::new("", "seq", i.to_string()),
            )
            .expect("broadcast");
    }
    for i in 0..N {
        b.expect("seq", &i.to_string()).await;
    }
}

/// An instance without local interest in a namespace receives none of its broadcasts.
pub async fn interest_only<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let mut a = cluster.client(0, "a").await;
    let mut b = cluster.client(1, "b").await;
    settle(&cluster).await;
    let before = cluster.server(2).stats().envelopes_received;
    for i in 0..20 {
        cluster
            .server(0)
            .broadcast(Target::namespace(NS), Message::new("", "n", i.to_string()))
            .expect("broadcast");
    }
    for i in 0..20 {
        a.expect("n", &i.to_string()).await;
        b.expect("n", &i.to_string()).await;
    }
    assert_eq!(
        cluster.server(2).stats().envelopes_received,
        before,
        "instance 2 has no client in the namespace and must receive nothing"
    );
}

/// Interest is reference-counted per instance under concurrent joins and leaves: after
/// churn, an instance whose clients all left receives nothing, and one with a remaining
/// client still receives.
pub async fn interest_refcount<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(2, &make).await;
    let mut joined = Vec::new();
    for round in 0..3 {
        let mut tasks = Vec::new();
        for i in 0..10 {
            let url = cluster.instances[1].url();
            tasks.push(tokio::spawn(async move {
                let client = Client::builder(url)
                    .header("X-Username", format!("churn-{round}-{i}"))
                    .namespaces(server_namespaces())
                    .connect()
                    .await
                    .expect("connect");
                let ns = client.connect(NS).await.expect("ns");
                if i % 2 == 0 {
                    ns.disconnect().await.expect("disconnect");
                    client.close();
                    None
                } else {
                    Some(client)
                }
            }));
        }
        for t in tasks {
            if let Some(c) = t.await.expect("join") {
                joined.push(c);
            }
        }
    }
    let mut watcher = cluster.client(0, "watcher").await;
    settle(&cluster).await;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "ping", "1"))
        .expect("broadcast");
    watcher.expect("ping", "1").await;
    assert!(
        eventually(WAIT, || cluster.server(1).stats().envelopes_received >= 1).await,
        "instance 1 still has clients in the namespace"
    );
    for c in &joined {
        c.close();
    }
    assert!(eventually(WAIT, || cluster.server(1).stats().namespaces == 0).await);
    settle(&cluster).await;
    let before = cluster.server(1).stats().envelopes_received;
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "ping", "2"))
        .expect("broadcast");
    watcher.expect("ping", "2").await;
    // A round trip through instance 1's inbox: anything published before it has arrived.
    let _ = cluster
        .server(1)
        .ask("watcher", Message::new(NS, "question", "fence"), WAIT)
        .await
        .expect("fence ask");
    assert_eq!(
        cluster.server(1).stats().envelopes_received,
        before + 1,
        "instance 1 left the namespace: only the fence reply may arrive"
    );
}

/// A shut-down instance closes its clients; the others keep exchanging.
pub async fn instance_shutdown<F, Fut>(make: F)
where
    F: Fn() -> Fut,
    Fut: Future<Output = Arc<dyn Exchange>>,
{
    let cluster = Cluster::start(3, &make).await;
    let mut a = cluster.client(0, "a").await;
    let b = cluster.client(1, "b").await;
    let mut c = cluster.client(2, "c").await;
    settle(&cluster).await;
    let left = cluster.server(1).shutdown(WAIT).await;
    assert_eq!(left, 0);
    tokio::time::timeout(WAIT, b.client.closed())
        .await
        .expect("b is closed by the shutdown");
    cluster
        .server(0)
        .broadcast(Target::namespace(NS), Message::new("", "after", "x"))
        .expect("broadcast");
    a.expect("after", "x").await;
    c.expect("after", "x").await;
}

/// Waits until every instance's exchange applied the subscriptions queued so far
/// ([`Exchange::flush`]), so a broadcast sent next reaches every interested instance.
pub async fn settle(cluster: &Cluster) {
    assert_eq!(super::panics(), 0, "a task panicked");
    for inst in &cluster.instances {
        if let Some(exchange) = inst.server.exchange() {
            tokio::time::timeout(WAIT, exchange.flush())
                .await
                .expect("exchange flush");
        }
    }
}

/// Expands to one `#[tokio::test]` per conformance scenario, each calling `$make` (an
/// expression evaluating to an async factory `Fn() -> impl Future<Output = Arc<dyn Exchange>>`).
#[macro_export]
macro_rules! conformance_tests {
    ($make:expr) => {
        $crate::conformance_tests!(@each $make;
            broadcast_namespace, broadcast_room, targeted_send, ask_across_instances,
            ordering, interest_only, interest_refcount, instance_shutdown);
    };
    (@each $make:expr; $($name:ident),*) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                $crate::testkit::conformance::$name($make).await;
            }
        )*
    };
}
