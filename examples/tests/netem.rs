//! Network faults between the instances and the broker. This kernel has no `sch_netem`
//! (`tc qdisc add ... netem` answers "Specified qdisc kind is unknown"), so the faults come
//! from a userspace TCP proxy on loopback that sits between each instance and Redis: added
//! latency each way, a partition (the proxy stops forwarding, connections hang), and a cut
//! (every proxied connection reset). Bounded and self-cleaning: the proxy stops with the test.
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use neffos::testkit::broker::RedisServer;
use neffos::testkit::{TestServer, eventually, serve};
use neffos::{Client, Events, Message, Namespaces, NsConn, Reply, Server, Target};
use neffos_redis::RedisExchange;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{mpsc, watch};

const T: Duration = Duration::from_secs(20);

/// A TCP proxy with switchable faults.
struct FaultyLink {
    addr: SocketAddr,
    delay_ms: Arc<AtomicU64>,
    partitioned: Arc<AtomicBool>,
    cut: watch::Sender<u64>,
}

impl FaultyLink {
    async fn start(upstream: SocketAddr) -> FaultyLink {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let delay_ms = Arc::new(AtomicU64::new(0));
        let partitioned = Arc::new(AtomicBool::new(false));
        let (cut, cuts) = watch::channel(0u64);
        let (d, p) = (delay_ms.clone(), partitioned.clone());
        tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let Ok(server) = TcpStream::connect(upstream).await else {
                    continue;
                };
                let (cr, cw) = client.into_split();
                let (sr, sw) = server.into_split();
                for (r, w) in [
                    (
                        Box::new(cr) as Box<dyn tokio::io::AsyncRead + Send + Unpin>,
                        Box::new(sw) as Box<dyn tokio::io::AsyncWrite + Send + Unpin>,
                    ),
                    (Box::new(sr), Box::new(cw)),
                ] {
                    let (d, p, mut cuts) = (d.clone(), p.clone(), cuts.clone());
                    cuts.borrow_and_update();
                    tokio::spawn(async move {
                        let (mut r, mut w) = (r, w);
                        let mut buf = vec![0u8; 16 * 1024];
                        loop {
                            let n = tokio::select! {
                                n = r.read(&mut buf) => match n { Ok(0) | Err(_) => break, Ok(n) => n },
                                _ = cuts.changed() => break,
                            };
                            // Partition: hold the bytes until it heals (or the link is cut).
                            while p.load(Ordering::Relaxed) {
                                tokio::select! {
                                    () = tokio::time::sleep(Duration::from_millis(10)) => {}
                                    _ = cuts.changed() => return,
                                }
                            }
                            let delay = d.load(Ordering::Relaxed);
                            if delay > 0 {
                                tokio::time::sleep(Duration::from_millis(delay)).await;
                            }
                            if w.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    });
                }
            }
        });
        FaultyLink {
            addr,
            delay_ms,
            partitioned,
            cut,
        }
    }

    fn url(&self) -> String {
        format!("redis://{}", self.addr)
    }
}

async fn instance(link: &FaultyLink) -> TestServer {
    let exchange = RedisExchange::builder(link.url())
        .response_timeout(Duration::from_millis(500))
        .reconnect_backoff(Duration::from_millis(20), Duration::from_millis(200))
        .connect()
        .await
        .unwrap();
    let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
        .exchange(exchange)
        .build();
    serve(server).await.unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn latency_partition_and_cut_between_instances_and_redis() {
    neffos::testkit::watch_panics();
    let redis = RedisServer::start();
    let upstream: SocketAddr = format!("127.0.0.1:{}", redis.port()).parse().unwrap();
    let (link_a, link_b) = (
        FaultyLink::start(upstream).await,
        FaultyLink::start(upstream).await,
    );
    let (a, b) = (instance(&link_a).await, instance(&link_b).await);
    let (tx, mut rx) = mpsc::unbounded_channel();
    let client = Client::builder(b.url())
        .namespaces(
            Namespaces::new().namespace(
                "chat",
                Events::new()
                    .on("seq", move |_ns: NsConn, msg: Message| {
                        let tx = tx.clone();
                        async move {
                            let _ =
                                tx.send(String::from_utf8_lossy(&msg.body).parse::<u64>().unwrap());
                        }
                    })
                    .on("q", |_ns, _msg| async { Reply::new("a") }),
            ),
        )
        .connect()
        .await
        .unwrap();
    client.connect("chat").await.unwrap();
    a.server.flush_exchanges().await;
    b.server.flush_exchanges().await;
    let send = |from: u64, to: u64| {
        for n in from..to {
            a.server
                .broadcast(
                    Target::namespace("chat"),
                    Message::new("", "seq", n.to_string()),
                )
                .unwrap();
        }
    };

    // 1. 20 ms each way on both links: everything arrives, in order; Asks succeed.
    link_a.delay_ms.store(20, Ordering::Relaxed);
    link_b.delay_ms.store(20, Ordering::Relaxed);
    let started = Instant::now();
    send(0, 300);
    for n in 0..300u64 {
        assert_eq!(
            tokio::time::timeout(T, rx.recv()).await.unwrap().unwrap(),
            n
        );
    }
    let id = client.id();
    let reply = a
        .server
        .ask(&id, Message::new("chat", "q", "?"), T)
        .await
        .unwrap();
    assert_eq!(&reply.body[..], b"a");
    println!(
        "with 20 ms each way: 300 broadcasts and one ask in {:?}",
        started.elapsed()
    );
    link_a.delay_ms.store(0, Ordering::Relaxed);
    link_b.delay_ms.store(0, Ordering::Relaxed);

    // 2. Partition instance A from Redis: its publishes time out and are counted, local
    //    work and shutdown-free operation go on; after healing, delivery resumes.
    let exchange_a = a.server.exchanges()[0].clone();
    let errors = || exchange_a.stats().publish_errors;
    let before = errors();
    link_a.partitioned.store(true, Ordering::Relaxed);
    let started = Instant::now();
    send(1000, 1010);
    assert!(
        started.elapsed() < Duration::from_millis(100),
        "broadcast waited for the partition"
    );
    assert!(
        eventually(T, || errors() > before).await,
        "timeouts counted"
    );
    link_a.partitioned.store(false, Ordering::Relaxed);
    // After healing (the partitioned connection may have been replaced), delivery resumes.
    let mut seen_after_heal = false;
    let deadline = Instant::now() + T;
    while !seen_after_heal {
        assert!(
            Instant::now() < deadline,
            "delivery did not resume after the partition healed"
        );
        send(3000, 3001);
        if let Ok(Some(n)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            seen_after_heal = n >= 1000;
        }
    }

    // 3. Cut every connection of both links: both instances reconnect and resubscribe.
    let exchange_b = b.server.exchanges()[0].clone();
    let reconnects_b = || exchange_b.stats().reconnects;
    let before = reconnects_b();
    link_a.cut.send_modify(|n| *n += 1);
    link_b.cut.send_modify(|n| *n += 1);
    assert!(
        eventually(T, || reconnects_b() > before).await,
        "reconnect counted"
    );
    let deadline = Instant::now() + T;
    loop {
        assert!(
            Instant::now() < deadline,
            "delivery did not resume after the cut"
        );
        send(5000, 5001);
        if let Ok(Some(5000)) = tokio::time::timeout(Duration::from_millis(200), rx.recv()).await {
            break;
        }
    }
    assert_eq!(neffos::testkit::panics(), 0);
}
