//! The cluster knows itself, on real brokers and real processes: five `cluster-node`
//! processes joined through one `redis-server`, then one `nats-server`; 10,000 Rust client
//! connections spread over them in 100 rooms (env `NEFFOS_CLUSTER_CONNECTIONS` scales it).
//!
//! Checked against the ground truth collected from the clients: every query from every
//! instance; `Server::ask` to an unknown ID fails in one cluster round trip (p50/p99
//! printed); remote join/leave/disconnect of a neffos.js client on another instance, as the
//! client sees them; SIGSTOP of one instance for 10 s (queries meanwhile are partial and
//! say so; its members leave once when its lease expires and come back once, no storm);
//! kill -9 of another (a query right after answers by its deadline with the instance
//! missing; after the lease only live instances answer; each of its members left exactly
//! once, reported by one survivor, on every surviving instance).
#![cfg(all(feature = "redis", feature = "nats"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::print_stderr)]

mod support;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc as std_mpsc;
use std::time::{Duration, Instant};

use futures_util::StreamExt;
use neffos::testkit::broker::{NatsServer, RedisServer};
use neffos::{Client, Events, Namespaces};
use serde_json::Value;
use support::JsUser;

const NODES: usize = 5;
const ROOMS: usize = 100;
const LEASE: Duration = Duration::from_secs(6);
const T: Duration = Duration::from_secs(30);

fn connections() -> usize {
    std::env::var("NEFFOS_CLUSTER_CONNECTIONS")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(10_000)
}

/// One `cluster-node` process (default heartbeat 2 s, lease 6 s, deadline 200 ms).
struct Node {
    child: Child,
    port: u16,
    instance: String,
}

impl Node {
    fn start(broker: &[String]) -> Node {
        let mut child = Command::new(env!("CARGO_BIN_EXE_cluster-node"))
            .args(["--port", "0"])
            .args(broker)
            .env("RUST_LOG", "warn")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, rx) = std_mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                // "cluster-node <uuid>: http://127.0.0.1:<port>"
                if let Some(rest) = line.strip_prefix("cluster-node ")
                    && let Some((id, url)) = rest.split_once(": http://")
                    && let Some(port) = url.rsplit(':').next().and_then(|p| p.parse().ok())
                {
                    let _ = tx.send((id.to_owned(), port));
                }
            }
        });
        let (instance, port) = rx
            .recv_timeout(T)
            .expect("cluster-node printed its address");
        Node {
            child,
            port,
            instance,
        }
    }

    fn ws(&self) -> String {
        format!("ws://127.0.0.1:{}/echo", self.port)
    }

    fn signal(&self, signal: &str) {
        let status = Command::new("kill")
            .args([signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success(), "kill {signal}");
    }

    async fn get(&self, path: &str) -> Value {
        http(self.port, "GET", path).await
    }

    async fn post(&self, path: &str) -> Value {
        http(self.port, "POST", path).await
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn http(port: u16, method: &str, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
        .await
        .unwrap();
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
    );
    tcp.write_all(req.as_bytes()).await.unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(T, tcp.read_to_end(&mut out))
        .await
        .expect("HTTP answer in time")
        .unwrap();
    let text = String::from_utf8_lossy(&out);
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(
        head.starts_with("HTTP/1.1 200"),
        "{method} {path}: {head}\n{body}"
    );
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{path}: {e}: {body}"))
}

/// Waits (bounded) until `cond` holds.
async fn until(what: &str, timeout: Duration, mut cond: impl AsyncFnMut() -> bool) {
    let start = Instant::now();
    while !cond().await {
        assert!(start.elapsed() < timeout, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn missing(v: &Value) -> Vec<String> {
    v["missing"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m.as_str().unwrap().to_owned())
        .collect()
}

fn id_set(v: &Value) -> BTreeSet<String> {
    v["value"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["id"].as_str().unwrap().to_owned())
        .collect()
}

/// The ground truth: who is connected where, in which room.
struct Truth {
    node_of: BTreeMap<String, usize>,
    room_of: BTreeMap<String, String>,
}

impl Truth {
    fn ids(&self, alive: &[bool]) -> BTreeSet<String> {
        self.node_of
            .iter()
            .filter(|(_, n)| alive[**n])
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn rooms(&self, alive: &[bool]) -> BTreeMap<String, usize> {
        let mut out = BTreeMap::new();
        for (id, room) in &self.room_of {
            if alive[self.node_of[id]] {
                *out.entry(room.clone()).or_insert(0usize) += 1;
            }
        }
        out
    }

    fn members(&self, room: &str, alive: &[bool]) -> BTreeSet<String> {
        self.room_of
            .iter()
            .filter(|(id, r)| *r == room && alive[self.node_of[*id]])
            .map(|(id, _)| id.clone())
            .collect()
    }

    fn on(&self, node: usize) -> usize {
        self.node_of.values().filter(|n| **n == node).count()
    }
}

/// Every query from `from` equals the truth restricted to the `alive` instances.
async fn check_queries(from: &Node, truth: &Truth, alive: &[bool], nodes: &[Node]) {
    let count = from.get("/cluster/count?ns=default").await;
    assert!(missing(&count).is_empty(), "{count}");
    assert_eq!(
        count["value"].as_u64().unwrap() as usize,
        truth.ids(alive).len()
    );
    let conns = from.get("/cluster/connections?ns=default").await;
    assert_eq!(id_set(&conns), truth.ids(alive));
    let rooms = from.get("/cluster/rooms?ns=default").await;
    let got: BTreeMap<String, usize> = rooms["value"]
        .as_object()
        .unwrap()
        .iter()
        .map(|(r, n)| (r.clone(), n.as_u64().unwrap() as usize))
        .collect();
    assert_eq!(got, truth.rooms(alive));
    for r in (0..ROOMS).step_by(7) {
        let room = format!("room{r}");
        let members = from
            .get(&format!("/cluster/room_members?ns=default&room={room}"))
            .await;
        assert_eq!(id_set(&members), truth.members(&room, alive), "{room}");
        let n = from
            .get(&format!("/cluster/room_count?ns=default&room={room}"))
            .await;
        assert_eq!(
            n["value"].as_u64().unwrap() as usize,
            truth.members(&room, alive).len()
        );
    }
    for (id, node) in truth.node_of.iter().step_by(997) {
        let found = from.get(&format!("/cluster/find?id={id}")).await;
        let holders: Vec<&str> = found["value"]
            .as_array()
            .unwrap()
            .iter()
            .map(|h| h["instance"].as_str().unwrap())
            .collect();
        if alive[*node] {
            assert_eq!(holders, vec![nodes[*node].instance.as_str()], "{id}");
        } else {
            assert!(holders.is_empty(), "{id} is on a dead instance: {found}");
        }
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

/// Where to read the bytes a broker moved (in + out).
enum Traffic {
    /// `redis-cli INFO stats` on this port.
    Redis(u16),
    /// The NATS monitoring endpoint `/varz` on this port.
    Nats(u16),
}

impl Traffic {
    async fn bytes(&self) -> u64 {
        match self {
            Traffic::Redis(port) => {
                let out = Command::new("redis-cli")
                    .args(["-p", &port.to_string(), "info", "stats"])
                    .output()
                    .expect("redis-cli (installed with redis-server)");
                let text = String::from_utf8_lossy(&out.stdout);
                ["total_net_input_bytes:", "total_net_output_bytes:"]
                    .iter()
                    .map(|key| {
                        text.lines()
                            .find_map(|l| l.strip_prefix(key))
                            .and_then(|v| v.trim().parse::<u64>().ok())
                            .unwrap_or_else(|| panic!("{key} in INFO stats"))
                    })
                    .sum()
            }
            Traffic::Nats(port) => {
                let varz = http(*port, "GET", "/varz").await;
                varz["in_bytes"].as_u64().unwrap() + varz["out_bytes"].as_u64().unwrap()
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn five_processes_on_redis_then_nats() {
    {
        let redis = tokio::task::block_in_place(RedisServer::start);
        let args = vec![
            "--exchange".into(),
            "redis".into(),
            "--redis-url".into(),
            redis.url(),
        ];
        scenario("redis", &args, Traffic::Redis(redis.port())).await;
    }
    {
        let monitor = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let nats =
            tokio::task::block_in_place(|| NatsServer::start_with(&["-m", &monitor.to_string()]));
        let args = vec![
            "--exchange".into(),
            "nats".into(),
            "--nats-url".into(),
            nats.url(),
        ];
        scenario("nats", &args, Traffic::Nats(monitor)).await;
    }
}

/// p50/p99 (server-side µs) and broker bytes per query of `rounds` queries from `from`
/// (heartbeats during the window included: a few hundred bytes per second).
async fn measure(
    from: &Node,
    traffic: &Traffic,
    rounds: usize,
    path: impl Fn(usize) -> String,
) -> (u64, u64, u64) {
    let before = traffic.bytes().await;
    let mut micros = Vec::with_capacity(rounds);
    for i in 0..rounds {
        let r = from.get(&path(i)).await;
        assert!(missing(&r).is_empty(), "{r}");
        micros.push(r["micros"].as_u64().unwrap());
    }
    let bytes = (traffic.bytes().await - before) / rounds as u64;
    micros.sort_unstable();
    (percentile(&micros, 0.5), percentile(&micros, 0.99), bytes)
}

async fn scenario(broker: &str, args: &[String], traffic: Traffic) {
    let n = connections();
    let nodes: Vec<Node> =
        tokio::task::block_in_place(|| (0..NODES).map(|_| Node::start(args)).collect());
    for node in &nodes {
        until("five live instances, settled", T, async || {
            let s = node.get("/cluster/stats").await;
            s["instances"] == NODES && s["settled"] == true
        })
        .await;
    }
    let instances = nodes[0].get("/cluster/instances").await;
    assert_eq!(instances.as_array().unwrap().len(), NODES);

    // Heartbeat overhead at rest: broker messages per second per instance, over 10 s.
    let window = Duration::from_secs(10);
    let mut at_rest = Vec::new();
    for node in &nodes {
        at_rest.push(node.get("/cluster/stats").await);
    }
    tokio::time::sleep(window).await;
    let (mut sent, mut got) = (0.0, 0.0);
    for (node, before) in nodes.iter().zip(&at_rest) {
        let after = node.get("/cluster/stats").await;
        let delta = |k: &str| after[k].as_u64().unwrap() - before[k].as_u64().unwrap();
        sent += delta("exchange_published") as f64;
        got += delta("exchange_received") as f64;
    }
    let per = |n: f64| n / NODES as f64 / window.as_secs_f64();
    eprintln!(
        "[{broker}] at rest: {:.2} messages/s published and {:.2} received per instance (heartbeat 2 s, {NODES} instances)",
        per(sent),
        per(got)
    );
    assert!(
        per(sent) <= 1.0,
        "at most one heartbeat per second and instance"
    );

    // The clients: u<i> on node i % 5, in room<i % 100>.
    let started = Instant::now();
    let mut truth = Truth {
        node_of: BTreeMap::new(),
        room_of: BTreeMap::new(),
    };
    let specs: Vec<(String, usize, String)> = (0..n)
        .map(|i| (format!("u{i}"), i % NODES, format!("room{}", i % ROOMS)))
        .collect();
    let urls: Vec<String> = nodes.iter().map(Node::ws).collect();
    let clients: HashMap<String, Client> = futures_util::stream::iter(specs.clone())
        .map(|(id, node, room)| {
            let url = urls[node].clone();
            async move {
                let client = Client::builder(url)
                    .header("X-Username", &id)
                    .namespaces(Namespaces::new().namespace("default", Events::new()))
                    .connect()
                    .await
                    .unwrap_or_else(|e| panic!("{id}: {e}"));
                let ns = client.connect("default").await.unwrap();
                ns.join_room(&room).await.unwrap();
                (id, client)
            }
        })
        .buffer_unordered(64)
        .collect()
        .await;
    for (id, node, room) in specs {
        truth.node_of.insert(id.clone(), node);
        truth.room_of.insert(id, room);
    }
    eprintln!(
        "[{broker}] {n} connections over {NODES} processes in {:?}",
        started.elapsed()
    );

    // Every query from every instance equals the ground truth.
    let mut alive = [true; NODES];
    for node in &nodes {
        check_queries(node, &truth, &alive, &nodes).await;
    }
    // Query latency (server side) and broker bytes per query, 200 of each.
    let per_room = n / ROOMS;
    for what in ["room_count", "room_members"] {
        let (p50, p99, bytes) = measure(&nodes[0], &traffic, 200, |i| {
            format!("/cluster/{what}?ns=default&room=room{}", i % ROOMS)
        })
        .await;
        eprintln!(
            "[{broker}] {what} ({per_room} members of {n}, {NODES} instances): p50 {p50} µs, p99 {p99} µs, {bytes} broker bytes per query"
        );
    }

    // Server::ask to unknown IDs: an error within one cluster round trip.
    let mut micros = Vec::new();
    for k in 0..200 {
        let r = nodes[k % NODES]
            .get(&format!(
                "/cluster/ask?to=nobody{k}&question=hi&timeout_ms=5000"
            ))
            .await;
        assert_eq!(r["outcome"], "unknown", "{r}");
        micros.push(r["micros"].as_u64().unwrap());
    }
    micros.sort_unstable();
    let (p50, p99) = (percentile(&micros, 0.5), percentile(&micros, 0.99));
    eprintln!(
        "[{broker}] ask to an unknown ID: p50 {p50} µs, p99 {p99} µs (200 asks, timeout 5 s)"
    );
    assert!(p99 < 1_000_000, "ask to an unknown ID took {p99} µs at p99");

    // Remote operations on a neffos.js client held by instance 3, from instance 0.
    let mut js = tokio::task::block_in_place(|| JsUser::start(&nodes[3].ws(), "js"));
    let joined = nodes[0]
        .post("/cluster/join?id=js&ns=default&room=vip")
        .await;
    assert_eq!(
        joined["applied"][0]["instance"],
        nodes[3].instance.as_str(),
        "{joined}"
    );
    assert_eq!(
        tokio::task::block_in_place(|| js.event("_OnRoomJoined")),
        "vip"
    );
    let members = nodes[1]
        .get("/cluster/room_members?ns=default&room=vip")
        .await;
    assert_eq!(id_set(&members), BTreeSet::from(["js".to_owned()]));
    let left = nodes[0]
        .post("/cluster/leave?id=js&ns=default&room=vip")
        .await;
    assert_eq!(left["applied"][0]["connections"], 1, "{left}");
    assert_eq!(
        tokio::task::block_in_place(|| js.event("_OnRoomLeft")),
        "vip"
    );
    let kicked = nodes[0].post("/cluster/disconnect?id=js&reason=bye").await;
    assert_eq!(kicked["applied"][0]["instance"], nodes[3].instance.as_str());
    tokio::task::block_in_place(|| js.event("_OnNamespaceDisconnect"));
    let nowhere = nodes[2]
        .post("/cluster/disconnect?id=js&reason=again")
        .await;
    assert_eq!(nowhere["nowhere"], true, "{nowhere}");
    // A Rust client on instance 1, disconnected from instance 4.
    let kicked = nodes[4].post("/cluster/disconnect?id=u1&reason=bye").await;
    assert_eq!(kicked["applied"][0]["instance"], nodes[1].instance.as_str());
    tokio::time::timeout(T, clients["u1"].closed())
        .await
        .unwrap();
    truth.node_of.remove("u1");
    truth.room_of.remove("u1");
    until("u1 gone", T, async || {
        nodes[0].get("/cluster/count?ns=default").await["value"] == truth.ids(&alive).len()
    })
    .await;

    // SIGSTOP instance 3 for 10 s: partial answers that say so, then one leave and one
    // join per member, no storm.
    let stopped = 3;
    let mut before = Vec::new();
    for node in &nodes {
        before.push(node.get("/cluster/presence").await);
    }
    nodes[stopped].signal("-STOP");
    let t = Instant::now();
    let partial = nodes[0].get("/cluster/count?ns=default").await;
    let took = t.elapsed();
    eprintln!("[{broker}] count with instance 3 stopped: {partial} in {took:?}");
    assert_eq!(missing(&partial), vec![nodes[stopped].instance.clone()]);
    assert!(took < Duration::from_millis(600), "{took:?}");
    alive[stopped] = false;
    until(
        "instance 3 expired",
        LEASE + Duration::from_secs(4),
        async || {
            let c = nodes[0].get("/cluster/count?ns=default").await;
            missing(&c).is_empty() && c["value"] == truth.ids(&alive).len()
        },
    )
    .await;
    let during = t.elapsed();
    tokio::time::sleep(Duration::from_secs(10).saturating_sub(during)).await;
    nodes[stopped].signal("-CONT");
    alive[stopped] = true;
    for node in &nodes {
        until("instance 3 back", T, async || {
            let c = node.get("/cluster/count?ns=default").await;
            missing(&c).is_empty() && c["value"] == truth.ids(&alive).len()
        })
        .await;
    }
    let members3 = truth.on(stopped);
    let key = nodes[stopped].instance.as_str();
    let joins_before = |i: usize| before[i]["joins_by_instance"][key].as_u64().unwrap_or(0);
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != stopped) {
        until("rejoins delivered", T, async || {
            let p = node.get("/cluster/presence").await;
            p["joins_by_instance"][key].as_u64().unwrap_or(0)
                >= joins_before(i) + 2 * members3 as u64
        })
        .await;
    }
    // No storm: a few heartbeats later, nothing more about instance 3.
    tokio::time::sleep(Duration::from_secs(3)).await;
    for (i, node) in nodes.iter().enumerate().filter(|(i, _)| *i != stopped) {
        let p = node.get("/cluster/presence").await;
        let expired = &p["expired"][key];
        assert_eq!(
            expired["leaves"],
            2 * members3,
            "each member (namespace + room) left once: {expired}"
        );
        assert_eq!(expired["distinct"], 2 * members3);
        assert_eq!(
            expired["reporters"].as_array().unwrap().len(),
            1,
            "{expired}"
        );
        // The joins of instance 3 before the stop on this node, plus one rejoin per member.
        let joins = p["joins_by_instance"][key].as_u64().unwrap();
        assert_eq!(
            joins,
            joins_before(i) + 2 * members3 as u64,
            "one rejoin each, no storm"
        );
    }
    check_queries(&nodes[1], &truth, &alive, &nodes).await;

    // kill -9 instance 4: missing right after, absent after its lease; each of its members
    // left once, reported by one survivor, on every surviving instance.
    let dead = 4;
    let dead_id = nodes[dead].instance.clone();
    nodes[dead].signal("-KILL");
    let t = Instant::now();
    let partial = nodes[0].get("/cluster/count?ns=default").await;
    let took = t.elapsed();
    assert_eq!(missing(&partial), vec![dead_id.clone()], "{partial}");
    assert!(took < Duration::from_millis(600), "{took:?}");
    let ask = nodes[0]
        .get("/cluster/ask?to=nobody&question=hi&timeout_ms=1000")
        .await;
    assert_eq!(ask["outcome"], "timeout", "an instance is missing: {ask}");
    alive[dead] = false;
    until(
        "instance 4 expired",
        LEASE + Duration::from_secs(4),
        async || {
            let c = nodes[0].get("/cluster/count?ns=default").await;
            missing(&c).is_empty() && c["value"] == truth.ids(&alive).len()
        },
    )
    .await;
    eprintln!(
        "[{broker}] instance 4 dropped out {:?} after kill -9",
        t.elapsed()
    );
    for node in nodes.iter().take(dead) {
        check_queries(node, &truth, &alive, &nodes).await;
        let members = 2 * truth.on(dead) as u64;
        until("expired leaves delivered", T, async || {
            node.get("/cluster/presence").await["expired"][dead_id.as_str()]["leaves"]
                .as_u64()
                .unwrap_or(0)
                >= members
        })
        .await;
        let p = node.get("/cluster/presence").await;
        let expired = &p["expired"][dead_id.as_str()];
        assert_eq!(expired["leaves"], members, "{expired}");
        assert_eq!(expired["distinct"], members, "{expired}");
        assert_eq!(
            expired["reporters"].as_array().unwrap().len(),
            1,
            "{expired}"
        );
    }
    let ask = nodes[0]
        .get("/cluster/ask?to=nobody&question=hi&timeout_ms=5000")
        .await;
    assert_eq!(
        ask["outcome"], "unknown",
        "every live instance answered: {ask}"
    );
    drop(clients);
}
