//! Connection-state recovery across processes: three `scale-out` processes on one real
//! Redis (history and sessions in Redis), a loopback proxy playing the load balancer. Our
//! Rust client is in room R on instance A; A is killed (kill -9: it saves nothing, the
//! session is its last checkpoint); a client on C publishes 1,000 room messages over 2 s;
//! the client comes back through the proxy on B with its ID and room and receives all
//! 1,000 exactly once, in order, before what is published after its reconnect.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used)]

mod support;

use std::time::{Duration, Instant};

use neffos::protocol::recovery::SessionState;
use neffos::recovery::Outcome;
use neffos::testkit::broker::RedisServer;
use neffos::testkit::proxy::LoadBalancer;
use neffos::{Client, Events, Message, Namespaces, NsConn, Reconnect, Room};
use serde_json::Value;
use support::ScaleOut;
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(20);

/// A chat user in room "R" of "default" reporting the text of every `chat` it receives.
async fn user(
    url: &str,
    name: &str,
    recovery: bool,
) -> (Client, Room, mpsc::UnboundedReceiver<String>) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("chat", move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            let body: Value = serde_json::from_slice(&msg.body).unwrap_or(Value::Null);
            let _ = tx.send(body["text"].as_str().unwrap_or_default().to_owned());
        }
    });
    let client = Client::builder(url)
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace("default", events))
        .reconnect(Reconnect::new(
            Duration::from_millis(20),
            Duration::from_millis(100),
        ))
        .recovery(recovery)
        .connect()
        .await
        .unwrap();
    let room = client
        .connect("default")
        .await
        .unwrap()
        .join_room("R")
        .await
        .unwrap();
    (client, room, rx)
}

async fn next(rx: &mut mpsc::UnboundedReceiver<String>) -> String {
    tokio::time::timeout(T, rx.recv())
        .await
        .expect("a message in time")
        .unwrap()
}

/// The next `n` numbered messages (probes skipped).
async fn numbers(rx: &mut mpsc::UnboundedReceiver<String>, n: usize) -> Vec<String> {
    let mut got = Vec::with_capacity(n);
    while got.len() < n {
        let text = next(rx).await;
        if !text.starts_with("probe") {
            got.push(text);
        }
    }
    got
}

/// `got` is exactly `range`, in order (a short message when not).
fn assert_in_order(got: &[String], range: std::ops::Range<usize>) {
    let expected: Vec<String> = range.map(|i| i.to_string()).collect();
    if let Some(i) = (0..got.len().max(expected.len())).find(|&i| got.get(i) != expected.get(i)) {
        panic!(
            "first difference at {i}: got {:?}, expected {:?} ({} received, {} expected)",
            got.get(i),
            expected.get(i),
            got.len(),
            expected.len()
        );
    }
}

/// Emits one numbered message per `pace` on average (all at once when zero).
async fn emit_range(room: &Room, range: std::ops::Range<usize>, pace: Duration) {
    let mut tick = (!pace.is_zero()).then(|| tokio::time::interval(pace));
    for i in range {
        if let Some(tick) = &mut tick {
            tick.tick().await;
        }
        room.emit("chat", i.to_string()).unwrap();
    }
}

/// Until a message of `from` reaches every receiver (subscriptions across processes
/// become active asynchronously).
async fn probe(from: &Room, receivers: &mut [&mut mpsc::UnboundedReceiver<String>]) {
    for rx in receivers.iter_mut() {
        let mut ok = false;
        for i in 0..100 {
            from.emit("chat", format!("probe {i}")).unwrap();
            if tokio::time::timeout(Duration::from_millis(100), rx.recv())
                .await
                .is_ok_and(|m| m.is_some())
            {
                ok = true;
                break;
            }
        }
        assert!(ok, "no probe arrived");
    }
}

/// Waits until instance A's checkpoint kept a session with room R (kill -9 leaves nothing
/// else behind).
async fn checkpointed(redis: &mut redis::aio::MultiplexedConnection) {
    let deadline = Instant::now() + T;
    loop {
        let keys: Vec<Vec<u8>> = redis::cmd("KEYS")
            .arg("neffos:recovery:k:*")
            .query_async(redis)
            .await
            .unwrap();
        for key in keys {
            let bytes: Option<Vec<u8>> =
                redis::cmd("GET").arg(key).query_async(redis).await.unwrap();
            if let Some(s) = bytes.and_then(|b| SessionState::decode(&b).ok())
                && s.namespaces.iter().any(|ns| ns.rooms == ["R"])
            {
                return;
            }
        }
        assert!(Instant::now() < deadline, "no checkpoint of the session");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rust_client_recovers_on_another_process_after_kill_9() {
    let broker = RedisServer::start();
    let args: Vec<String> = ["--exchange", "redis", "--redis-url", &broker.url()]
        .map(str::to_owned)
        .to_vec();
    let mut a = ScaleOut::start(&args);
    let b = ScaleOut::start(&args);
    let c = ScaleOut::start(&args);
    let a_addr = ([127, 0, 0, 1], a.port).into();
    let lb = LoadBalancer::start(a_addr).await.unwrap();
    let (client, _room, mut rx) = user(&lb.url(), "sub", true).await;
    let (_publisher, p, _) = user(&c.ws(), "pub", false).await;
    // A witness on B: once it has every message, all were recorded (appended, then sent).
    let (_witness, _, mut witness) = user(&b.ws(), "witness", false).await;
    probe(&p, &mut [&mut rx, &mut witness]).await;
    emit_range(&p, 0..100, Duration::ZERO).await;
    assert_in_order(&numbers(&mut rx, 100).await, 0..100);
    assert_in_order(&numbers(&mut witness, 100).await, 0..100);
    let mut redis = redis::Client::open(broker.url())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    checkpointed(&mut redis).await;

    lb.route_to(None);
    a.kill();
    let started = Instant::now();
    emit_range(&p, 100..1100, Duration::from_millis(2)).await;
    assert_in_order(&numbers(&mut witness, 1000).await, 100..1100);
    eprintln!(
        "1,000 published and delivered to B in {:?}",
        started.elapsed()
    );

    lb.route_to(Some(([127, 0, 0, 1], b.port).into()));
    client.wait_reconnects(0, T).await.unwrap();
    let back = Instant::now();
    emit_range(&p, 1100..1200, Duration::ZERO).await;
    assert_in_order(&numbers(&mut rx, 1100).await, 100..1200);
    eprintln!("caught up {:?} after the reconnect", back.elapsed());
    assert_eq!(
        client.wait_recovery("default", T).await.unwrap(),
        Outcome::Recovered
    );
    assert_eq!(client.id(), "sub");
    assert_eq!(
        client.namespace("default").unwrap().rooms(),
        vec!["R".to_owned()]
    );
    assert!(rx.try_recv().is_err(), "no duplicate");
}
