//! Three OS processes of the `scale-out` example joined through a real Redis Cluster
//! (`--exchange redis-cluster`, 3 masters + 3 replicas started by the harness), a Rust chat
//! user on each. The user on process 1 sends a numbered chat message every 10 ms while the
//! harness fails over the master serving the chat namespace's channel (`CLUSTER FAILOVER`),
//! then kills its new master (kill -9): the users on processes 2 and 3 receive the numbers
//! in increasing order, never twice, and delivery resumes after each change.
#![cfg(feature = "redis")]
#![allow(clippy::unwrap_used, clippy::print_stdout)]

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use neffos::testkit::broker_cluster::RedisCluster;
use neffos::testkit::numbered::Numbered;
use neffos::{Client, Events, Message, Namespaces, NsConn};
use tokio::sync::mpsc;

const T: Duration = Duration::from_secs(15);

/// One `scale-out` process (one instance on a free port) on the cluster; killed on drop.
struct Process {
    child: Child,
    port: u16,
}

impl Process {
    fn start(seeds: &str, bundle: &std::path::Path) -> Process {
        let mut child = Command::new(env!("CARGO_BIN_EXE_scale-out"))
            .args([
                "--ports",
                "0",
                "--exchange",
                "redis-cluster",
                "--redis-url",
                seeds,
            ])
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
                if let Some(url) = line.split("open http://").nth(1)
                    && let Some(port) = url.rsplit(':').next().and_then(|p| p.trim().parse().ok())
                {
                    let _ = tx.send(port);
                }
            }
        });
        let port = rx.recv_timeout(T).expect("scale-out printed its address");
        Process { child, port }
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }
}

impl Drop for Process {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A chat user whose received chat texts that are numbers are checked by a [`Numbered`].
async fn user(url: &str, name: &str) -> (Client, Numbered) {
    let (tx, rx) = mpsc::unbounded_channel();
    let events = Events::new().on("chat", move |_ns: NsConn, msg: Message| {
        let tx = tx.clone();
        async move {
            let body: serde_json::Value = serde_json::from_slice(&msg.body).unwrap_or_default();
            if let Some(n) = body["text"].as_str().and_then(|t| t.parse().ok()) {
                let _ = tx.send((n, Instant::now()));
            }
        }
    });
    let client = Client::builder(url)
        .header("X-Username", name)
        .namespaces(Namespaces::new().namespace("default", events))
        .connect()
        .await
        .unwrap();
    client.connect("default").await.unwrap();
    (client, Numbered::new(rx))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn processes_keep_order_through_failover_and_master_kill() {
    let cluster = Arc::new(RedisCluster::start());
    let seeds = cluster.urls().join(",");
    // The page's script is not used here; the example only checks it exists.
    let bundle = std::env::temp_dir().join(format!(
        "neffos-redis-cluster-test-{}.js",
        std::process::id()
    ));
    std::fs::write(&bundle, "// not used by this test\n").unwrap();
    let processes: Vec<Process> = (0..3).map(|_| Process::start(&seeds, &bundle)).collect();
    let (sender, _rx1) = user(&processes[0].ws(), "sender").await;
    let (_c2, rx2) = user(&processes[1].ws(), "two").await;
    let (_c3, rx3) = user(&processes[2].ws(), "three").await;
    let ns = sender.namespace("default").unwrap();
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let stream = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_millis(10));
            let mut n = 0u64;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                tick.tick().await;
                let _ = ns.emit("chat", n.to_string());
                n += 1;
            }
        })
    };
    let mut seen = [rx2, rx3];
    // The other processes subscribe asynchronously: wait for the stream to flow.
    for s in &mut seen {
        s.until(30, Instant::now()).await;
    }
    let slot = cluster.key_slot("neffos:ns:7:default");
    for step in ["CLUSTER FAILOVER", "kill -9 of the master"] {
        let owner = cluster.master_of_slot(slot);
        let changed = Instant::now();
        let c = cluster.clone();
        tokio::task::spawn_blocking(move || {
            if step == "CLUSTER FAILOVER" {
                c.failover(c.replica_of(owner).unwrap());
            } else {
                c.node(owner).kill();
                c.wait_healthy();
            }
        })
        .await
        .unwrap();
        assert_ne!(cluster.master_of_slot(slot), owner);
        let mut report = Vec::new();
        for s in &mut seen {
            let target = s.last().unwrap_or(0) + 100;
            report.push(s.until(target, changed).await);
        }
        println!(
            "scale-out processes on Redis Cluster, {step}: healed and 100 more delivered after {:?}; per receiver {report:?}",
            changed.elapsed()
        );
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    stream.await.unwrap();
}
