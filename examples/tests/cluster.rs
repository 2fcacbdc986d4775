//! The scale-out promise end to end: three OS processes of the `scale-out` example, one
//! instance each, joined through one real Redis (then one real NATS); our Rust client and neffos.js spread over
//! them. A chat message on instance 1 reaches clients on 2 and 3; a targeted send and a
//! `Server::ask` from instance 1 reach clients on instance 3; killing instance 2 (kill -9)
//! does not disturb 1 and 3.
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used)]

mod support;

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::Duration;

use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::{Client, Events, Message, Namespaces, NsConn, Reply};
use serde_json::Value;
use support::JsUser;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(10);

/// One `scale-out` process with one instance on a free port; killed on drop.
struct Instance {
    child: Child,
    port: u16,
}

impl Instance {
    fn start(broker: &Broker, bundle: &Path) -> Instance {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scale-out"))
            .args(["--ports", "0"])
            .args(broker.args())
            .arg("--neffos-js")
            .arg(bundle)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(url) = line.split("open http://").nth(1) {
                    let _ = tx.send(
                        url.rsplit(':')
                            .next()
                            .unwrap()
                            .trim()
                            .parse::<u16>()
                            .unwrap(),
                    );
                }
            }
        });
        let port = rx.recv_timeout(T).expect("scale-out printed its address");
        Instance { child, port }
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill();
    }
}

/// A Rust chat user recording `chat`/`private` events and answering `question`.
async fn rust_user(url: &str, name: &str) -> (Client, mpsc::UnboundedReceiver<(String, Value)>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut events = Events::new().on("question", {
        let name = name.to_owned();
        move |_ns: NsConn, msg: Message| {
            let name = name.clone();
            async move {
                Reply::new(format!(
                    "rust {name}: {}",
                    String::from_utf8_lossy(&msg.body)
                ))
            }
        }
    });
    for event in ["chat", "private"] {
        let tx = tx.clone();
        events = events.on(event, move |_ns: NsConn, msg: Message| {
            let tx = tx.clone();
            async move {
                let _ = tx.send((
                    msg.event.to_string(),
                    serde_json::from_slice(&msg.body).unwrap_or(Value::Null),
                ));
            }
        });
    }
    let client = Client::builder(url)
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace("default", events))
        .connect()
        .await
        .unwrap();
    client.connect("default").await.unwrap();
    (client, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<(String, Value)>) -> (String, Value) {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("event within timeout")
        .unwrap()
}

async fn http_get(port: u16, path: &str) -> (u16, String) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n");
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = String::new();
    tokio::time::timeout(T, tcp.read_to_string(&mut out))
        .await
        .unwrap()
        .unwrap();
    let status = out[9..12].parse().unwrap();
    let body = out.split("\r\n\r\n").nth(1).unwrap_or("").to_owned();
    (status, body)
}

/// The broker joining the processes.
enum Broker {
    Redis(RedisServer),
    Nats(NatsServer),
}

impl Broker {
    fn args(&self) -> Vec<String> {
        match self {
            Broker::Redis(r) => vec![
                "--exchange".into(),
                "redis".into(),
                "--redis-url".into(),
                r.url(),
            ],
            Broker::Nats(n) => vec![
                "--exchange".into(),
                "nats".into(),
                "--nats-url".into(),
                n.url(),
            ],
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_redis() {
    three_processes(Broker::Redis(RedisServer::start())).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_processes_share_one_nats() {
    three_processes(Broker::Nats(NatsServer::start())).await;
}

async fn three_processes(broker: Broker) {
    let kind = if matches!(broker, Broker::Nats(_)) {
        "nats"
    } else {
        "redis"
    };
    let bundle = std::env::temp_dir().join(format!(
        "neffos-cluster-test-{}-{kind}.js",
        std::process::id()
    ));
    std::fs::write(&bundle, "// not used by this test\n").unwrap();
    let one = Instance::start(&broker, &bundle);
    let mut two = Instance::start(&broker, &bundle);
    let three = Instance::start(&broker, &bundle);

    let (sender, _rx1) = rust_user(&one.ws(), "rust1").await;
    let (_c2, mut rx2) = rust_user(&two.ws(), "rust2").await;
    let (_c3, mut rx3) = rust_user(&three.ws(), "rust3").await;
    let mut js3 = tokio::task::block_in_place(|| JsUser::start(&three.ws(), "js3"));
    let ns1 = sender.namespace("default").unwrap();

    // Subscriptions on other processes become active asynchronously: probe until a
    // message from instance 1 has reached instance 2's and 3's clients.
    let mut ready = false;
    for i in 0..50 {
        ns1.emit("chat", format!("probe {i}")).unwrap();
        let got2 = tokio::time::timeout(Duration::from_millis(200), rx2.recv())
            .await
            .is_ok();
        let got3 = tokio::time::timeout(Duration::from_millis(200), rx3.recv())
            .await
            .is_ok();
        if got2 && got3 {
            ready = true;
            break;
        }
    }
    assert!(ready, "instances 2 and 3 never received from instance 1");
    // Drain probes: from here on every instance is subscribed.
    ns1.emit("chat", "sync").unwrap();
    loop {
        if next(&mut rx2).await.1["text"] == "sync" {
            break;
        }
    }
    loop {
        if next(&mut rx3).await.1["text"] == "sync" {
            break;
        }
    }
    tokio::task::block_in_place(|| {
        loop {
            if js3.next_event().1["text"] == "sync" {
                break;
            }
        }
    });

    // A chat message on instance 1 reaches the clients on instances 2 and 3.
    ns1.emit("chat", "hello cluster").unwrap();
    assert_eq!(next(&mut rx2).await.1["text"], "hello cluster");
    assert_eq!(next(&mut rx3).await.1["text"], "hello cluster");
    let (event, body) = tokio::task::block_in_place(|| js3.next_event());
    assert_eq!(
        (event.as_str(), body["text"].as_str()),
        ("chat", Some("hello cluster"))
    );
    assert_eq!(body["from"], "rust1");

    // A targeted send from instance 1 reaches js3 on instance 3, and nobody else.
    ns1.emit("private", r#"{"to":"js3","text":"psst"}"#)
        .unwrap();
    let (event, body) = tokio::task::block_in_place(|| js3.next_event());
    assert_eq!(
        (event.as_str(), body["text"].as_str()),
        ("private", Some("psst"))
    );
    ns1.emit("chat", "fence").unwrap();
    assert_eq!(
        next(&mut rx2).await.1["text"],
        "fence",
        "rust2 got nothing before the fence"
    );
    assert_eq!(
        next(&mut rx3).await.1["text"],
        "fence",
        "rust3 got nothing before the fence"
    );
    let (_, body) = tokio::task::block_in_place(|| js3.next_event());
    assert_eq!(body["text"], "fence", "js3 got the private message once");

    // Server::ask from instance 1 to clients on instance 3 (Rust and neffos.js).
    let (status, body) = http_get(one.port, "/ask?to=rust3&question=ping").await;
    assert_eq!((status, body.as_str()), (200, "rust rust3: ping"));
    let (status, body) = http_get(one.port, "/ask?to=js3&question=ping").await;
    assert_eq!((status, body.as_str()), (200, "js js3: ping"));
    // Nobody has that name: 404 at once once the instances know each other (the cluster
    // settles one heartbeat after start); before that the Ask waits for its 5 s timeout.
    let mut statuses = Vec::new();
    loop {
        let started = std::time::Instant::now();
        let (status, _) = http_get(one.port, "/ask?to=nobody&question=ping").await;
        statuses.push(status);
        if status == 404 {
            assert!(
                started.elapsed() < Duration::from_secs(1),
                "{:?}",
                started.elapsed()
            );
            break;
        }
        assert!(status == 504 && statuses.len() < 3, "{statuses:?}");
    }

    // Killing instance 2 does not disturb instances 1 and 3.
    two.kill();
    ns1.emit("chat", "after the kill").unwrap();
    assert_eq!(next(&mut rx3).await.1["text"], "after the kill");
    let (_, body) = tokio::task::block_in_place(|| js3.next_event());
    assert_eq!(body["text"], "after the kill");
    let (status, body) = http_get(one.port, "/ask?to=js3&question=still%20there").await;
    assert_eq!((status, body.as_str()), (200, "js js3: still there"));
    let _ = std::fs::remove_file(&bundle);
}
