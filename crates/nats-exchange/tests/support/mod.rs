//! Shared by the NATS integration tests: a broker per test (with its monitoring endpoint),
//! exchange factories that keep a handle on every exchange they make, and servers and
//! recording clients for any namespace and connection ID.
#![allow(dead_code, unreachable_pub)]

use std::future::Future;
use std::net::TcpListener;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use neffos::testkit::broker::NatsServer;
use neffos::testkit::{TestServer, serve};
use neffos::{Client, Events, Exchange, Message, Namespaces, Reply, Server};
use neffos_nats::NatsExchange;
use parking_lot::Mutex;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::mpsc;

/// How long any expectation may take.
pub const WAIT: Duration = Duration::from_secs(10);

/// A boxed exchange future, as `Cluster::start` and `conformance_tests!` take.
pub type MakeFuture = Pin<Box<dyn Future<Output = Arc<dyn Exchange>> + Send>>;

/// A `nats-server` with its HTTP monitoring endpoint on another free loopback port.
#[derive(Debug)]
pub struct Broker {
    pub nats: NatsServer,
    pub monitor: u16,
}

impl Broker {
    /// Starts a fresh `nats-server` (`-m <port>`), plus `args`.
    pub fn start_with(args: &[&str]) -> Arc<Broker> {
        let monitor = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .map(|a| a.port())
            .expect("a free port for the monitoring endpoint");
        let port = monitor.to_string();
        let mut all = vec!["-m", &port];
        all.extend_from_slice(args);
        Arc::new(Broker {
            nats: NatsServer::start_with(&all),
            monitor,
        })
    }

    /// Starts a fresh `nats-server` with its monitoring endpoint.
    pub fn start() -> Arc<Broker> {
        Broker::start_with(&[])
    }

    pub fn url(&self) -> String {
        self.nats.url()
    }

    /// GET `path` on the monitoring endpoint, as JSON.
    pub async fn monitor(&self, path: &str) -> serde_json::Value {
        let get = async {
            let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.monitor))
                .await
                .expect("monitoring endpoint");
            let request = format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n");
            stream.write_all(request.as_bytes()).await.unwrap();
            let mut response = Vec::new();
            stream.read_to_end(&mut response).await.unwrap();
            response
        };
        let response = tokio::time::timeout(WAIT, get)
            .await
            .expect("monitoring answers in time");
        let text = String::from_utf8(response).unwrap();
        let (head, body) = text.split_once("\r\n\r\n").expect("an HTTP response");
        assert!(
            head.starts_with("HTTP/1.1 200") || head.starts_with("HTTP/1.0 200"),
            "{head}"
        );
        serde_json::from_str(body).unwrap()
    }

    /// `/connz?subs=1`: the client connections and their subscriptions.
    pub async fn connz(&self) -> serde_json::Value {
        self.monitor("/connz?subs=1").await
    }

    /// Waits until the broker counts `n` client connections (it notices a closed socket
    /// asynchronously); polls `/connz` every 10 ms, at most [`WAIT`].
    pub async fn wait_connections(&self, n: u64) {
        let deadline = tokio::time::Instant::now() + WAIT;
        loop {
            let connz = self.connz().await;
            if connz["num_connections"] == n {
                return;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "the broker still has {} connections, not {n}",
                connz["num_connections"]
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    /// Every subject subscribed on the broker, over all connections.
    pub async fn subscriptions(&self) -> Vec<String> {
        let connz = self.connz().await;
        let mut subjects = Vec::new();
        for conn in connz["connections"].as_array().into_iter().flatten() {
            for s in conn["subscriptions_list"].as_array().into_iter().flatten() {
                subjects.push(s.as_str().unwrap().to_owned());
            }
        }
        subjects
    }
}

/// The exchanges made by a factory, in creation order.
#[derive(Debug, Clone, Default)]
pub struct Made(pub Arc<Mutex<Vec<Arc<NatsExchange>>>>);

impl Made {
    pub fn get(&self, i: usize) -> Arc<NatsExchange> {
        self.0.lock()[i].clone()
    }
}

/// An async factory of exchanges on `broker` under `prefix`, for `Cluster::start` and
/// `conformance_tests!`. Each exchange is also kept in `made`; the factory owns the broker,
/// so the broker runs as long as a scenario holds the factory.
pub fn factory(broker: Arc<Broker>, prefix: &str, made: Made) -> impl Fn() -> MakeFuture + use<> {
    let prefix = prefix.to_owned();
    move || {
        let broker = broker.clone();
        let prefix = prefix.clone();
        let made = made.clone();
        Box::pin(async move {
            let exchange = Arc::new(
                NatsExchange::builder(broker.url())
                    .prefix(prefix)
                    .connect()
                    .await
                    .expect("connect to the test broker"),
            );
            made.0.lock().push(exchange.clone());
            exchange as Arc<dyn Exchange>
        })
    }
}

/// The connection ID a test client asks for, hex-encoded in a header so any string
/// (spaces, non-ASCII…) survives HTTP.
const ID_HEADER: &str = "x-id-hex";

fn hex(s: &str) -> String {
    s.bytes().map(|b| format!("{b:02x}")).collect()
}

fn unhex(s: &str) -> Option<String> {
    let bytes: Option<Vec<u8>> = (0..s.len())
        .step_by(2)
        .map(|i| s.get(i..i + 2).and_then(|h| u8::from_str_radix(h, 16).ok()))
        .collect();
    String::from_utf8(bytes?).ok()
}

/// A server instance serving `namespaces` (no handlers), IDs from the test header, with
/// `exchange`.
pub async fn instance(namespaces: &[&str], exchange: Arc<dyn Exchange>) -> TestServer {
    let mut ns = Namespaces::new();
    for name in namespaces {
        ns = ns.namespace(*name, Events::new());
    }
    let server = Server::builder(ns)
        .id_generator(|parts| {
            parts
                .headers
                .get(ID_HEADER)
                .and_then(|v| v.to_str().ok())
                .and_then(unhex)
                .unwrap_or_else(|| uuid::Uuid::new_v4().to_string())
        })
        .exchange(exchange)
        .build();
    serve(server).await.expect("bind a loopback port")
}

/// A client connected to namespace `ns` with ID `id`, recording every non-system event
/// and answering the event `question` with `answer:<id>:<body>`.
#[derive(Debug)]
pub struct Recorder {
    pub client: Client,
    pub id: String,
    rx: mpsc::UnboundedReceiver<Message>,
}

impl Recorder {
    pub async fn connect(url: &str, ns: &str, id: &str) -> Recorder {
        let (tx, rx) = mpsc::unbounded_channel();
        let me = id.to_owned();
        let record = move |_ns: neffos::NsConn, msg: Message| {
            let tx = tx.clone();
            let me = me.clone();
            async move {
                if &*msg.event == "question" {
                    let body = String::from_utf8_lossy(&msg.body).into_owned();
                    return Some(Reply::new(format!("answer:{me}:{body}")));
                }
                if !msg.event.starts_with('_') {
                    let _ = tx.send(msg);
                }
                None
            }
        };
        let client = Client::builder(url)
            .header(ID_HEADER, hex(id))
            .namespaces(
                Namespaces::new()
                    .namespace(ns, Events::new().on(neffos::events::ON_ANY_EVENT, record)),
            )
            .connect()
            .await
            .expect("client connects");
        assert_eq!(client.id(), id, "the server took the ID from the header");
        client.connect(ns).await.expect("namespace connects");
        Recorder {
            client,
            id: id.to_owned(),
            rx,
        }
    }

    /// The next recorded message, or a panic after [`WAIT`].
    pub async fn next(&mut self) -> Message {
        match tokio::time::timeout(WAIT, self.rx.recv()).await {
            Ok(Some(msg)) => msg,
            Ok(None) => panic!("client {:?} closed", self.id),
            Err(_) => panic!("client {:?} received nothing within {WAIT:?}", self.id),
        }
    }

    /// Asserts that the next message has `event` and `body`.
    pub async fn expect(&mut self, event: &str, body: &str) {
        let msg = self.next().await;
        assert_eq!(
            (&*msg.event, &msg.body[..]),
            (event, body.as_bytes()),
            "client {:?} got an unexpected message",
            self.id
        );
    }

    /// Asserts nothing else was received so far.
    pub fn expect_nothing(&mut self) {
        if let Ok(msg) = self.rx.try_recv() {
            panic!("client {:?} got an unexpected {msg:?}", self.id);
        }
    }
}

/// Waits until every server's exchange applied what was queued so far.
pub async fn settle(servers: &[&TestServer]) {
    for s in servers {
        tokio::time::timeout(WAIT, s.server.flush_exchanges())
            .await
            .expect("exchange flush");
    }
}
