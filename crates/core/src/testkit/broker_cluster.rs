//! Multi-node brokers for tests: a [`RedisCluster`] (3 masters + 3 replicas) and a
//! [`NatsCluster`] (3 routed nodes), on free loopback ports, built from the same
//! [`broker`](super::broker) processes as the single-node guards: every node runs under the
//! watchdog that kills it when the test process ends, and each can be killed (`kill -9`),
//! restarted on its port, paused and resumed on its own.
//!
//! Both are operated with their own command-line tools only (`redis-cli`, the NATS
//! monitoring port), so the harness does not depend on the client libraries under test.
//! `NEFFOS_REDIS_CLI` overrides the path of `redis-cli`.
//!
//! ```no_run
//! use neffos::testkit::broker_cluster::{NatsCluster, RedisCluster};
//! let redis = RedisCluster::start();
//! let seeds = redis.urls(); // every node's redis:// URL
//! let master = redis.master_of_slot(0);
//! redis.node(master).kill(); // its replica is promoted
//! redis.wait_healthy();
//! let nats = NatsCluster::start();
//! let urls = nats.urls_from(1); // node 1 first, then the others
//! # let _ = (seeds, urls);
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::process::Command;
use std::time::{Duration, Instant};

use super::broker::{Kind, NatsServer, PORT_ATTEMPTS, Process, RedisServer, free_port};

/// How long the cluster may take to form, or to heal after a topology change.
pub const HEAL_TIMEOUT: Duration = Duration::from_secs(30);

/// The number of Redis Cluster hash slots.
pub const SLOTS: u16 = 16_384;

/// Failure detection of the test cluster (`cluster-node-timeout`): small, so a killed
/// master's replica is promoted within about a second.
pub const REDIS_NODE_TIMEOUT: Duration = Duration::from_millis(500);

fn redis_cli() -> String {
    std::env::var("NEFFOS_REDIS_CLI").unwrap_or_else(|_| "redis-cli".to_owned())
}

/// One line of `CLUSTER NODES`, as far as the tests need it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClusterNode {
    /// The node ID.
    pub id: String,
    /// The client port.
    pub port: u16,
    /// A master (else a replica).
    pub master: bool,
    /// Flagged `fail` or `fail?` by the node that answered.
    pub failing: bool,
    /// A replica's master ID.
    pub master_id: Option<String>,
    /// Slot ranges served (masters), inclusive.
    pub slots: Vec<(u16, u16)>,
}

fn parse_nodes(text: &str) -> Vec<ClusterNode> {
    text.lines()
        .filter_map(|line| {
            let fields: Vec<&str> = line.split_whitespace().collect();
            if fields.len() < 8 {
                return None;
            }
            // `127.0.0.1:30001@40001` (the bus port after `@`).
            let port = fields[1]
                .split('@')
                .next()?
                .rsplit(':')
                .next()?
                .parse()
                .ok()?;
            let flags = fields[2];
            let slots = fields[8..]
                .iter()
                .filter(|f| !f.starts_with('['))
                .filter_map(|f| match f.split_once('-') {
                    Some((a, b)) => Some((a.parse().ok()?, b.parse().ok()?)),
                    None => f.parse().ok().map(|s| (s, s)),
                })
                .collect();
            Some(ClusterNode {
                id: fields[0].to_owned(),
                port,
                master: flags.contains("master"),
                failing: flags.contains("fail"),
                master_id: (fields[3] != "-").then(|| fields[3].to_owned()),
                slots,
            })
        })
        .collect()
}

/// A Redis Cluster of 3 masters with one replica each, on loopback, without persistence.
///
/// Nodes run `--cluster-enabled yes` with a [`REDIS_NODE_TIMEOUT`] node timeout and
/// `cluster-require-full-coverage no` (a shard without owner does not stop the others),
/// and are joined with `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`.
/// Node indexes are fixed at start (0‥5, the first three start as masters); roles change
/// with failovers, so ask [`masters`](Self::masters) / [`master_of_slot`](Self::master_of_slot).
#[derive(Debug)]
pub struct RedisCluster {
    nodes: Vec<RedisServer>,
}

impl RedisCluster {
    /// Starts 6 nodes, creates the cluster and waits until every node reports it healthy.
    ///
    /// # Panics
    ///
    /// When `redis-server` / `redis-cli` are missing or the cluster does not form.
    pub fn start() -> RedisCluster {
        RedisCluster::start_with(3, &[])
    }

    /// `masters` masters (1 to 16) with one replica each, plus extra `redis-server`
    /// arguments for every node.
    pub fn start_with(masters: usize, extra: &[&str]) -> RedisCluster {
        assert!((1..=16).contains(&masters), "1 to 16 masters");
        let timeout = REDIS_NODE_TIMEOUT.as_millis().to_string();
        let mut buses = Vec::new();
        let nodes: Vec<RedisServer> = (0..masters * 2)
            .map(|_| {
                // The bus port is explicit: the default (port + 10000) may be taken or
                // beyond 65535.
                let bus = free_port().to_string();
                let mut args = vec![
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                    "--cluster-node-timeout",
                    &timeout,
                    "--cluster-port",
                    &bus,
                    "--cluster-require-full-coverage",
                    "no",
                    // A replica that just changed master may always take over.
                    "--cluster-replica-validity-factor",
                    "0",
                    // Replicas sync at once (the default waits 5 s for more replicas).
                    "--repl-diskless-sync-delay",
                    "0",
                ];
                args.extend_from_slice(extra);
                let node = RedisServer(Process::start(Kind::Redis, &args));
                buses.push(bus);
                node
            })
            .collect();
        let cluster = RedisCluster { nodes };
        if masters >= 3 {
            cluster.create();
        } else {
            // `redis-cli --cluster create` wants 3 masters: smaller clusters by hand.
            cluster.assemble(masters, &buses);
        }
        cluster.wait_healthy();
        cluster
    }

    /// `redis-cli --cluster create … --cluster-replicas 1 --cluster-yes`.
    fn create(&self) {
        let mut args: Vec<String> = vec!["--cluster".into(), "create".into()];
        args.extend(self.nodes.iter().map(|n| format!("127.0.0.1:{}", n.port())));
        args.extend(
            ["--cluster-replicas", "1", "--cluster-yes"]
                .iter()
                .map(|s| s.to_string()),
        );
        let out = Command::new(redis_cli())
            .args(&args)
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run `{}`: {e}; install redis-tools or set NEFFOS_REDIS_CLI",
                    redis_cli()
                )
            });
        assert!(
            out.status.success(),
            "redis-cli --cluster create failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// Joins the nodes by hand: the first `masters` share the slots, each of the others
    /// replicates one of them.
    fn assemble(&self, masters: usize, buses: &[String]) {
        let per = SLOTS as usize / masters;
        for m in 0..masters {
            let first = (m * per).to_string();
            let last = if m + 1 == masters {
                (SLOTS - 1).to_string()
            } else {
                ((m + 1) * per - 1).to_string()
            };
            let out = self.cli(m, &["CLUSTER", "ADDSLOTSRANGE", &first, &last]);
            assert!(out.trim() == "OK", "ADDSLOTSRANGE on node {m}: {out}");
        }
        for (i, bus) in buses.iter().enumerate().skip(1) {
            let port = self.nodes[i].port().to_string();
            let out = self.cli(0, &["CLUSTER", "MEET", "127.0.0.1", &port, bus]);
            assert!(out.trim() == "OK", "CLUSTER MEET of node {i}: {out}");
        }
        let n = self.nodes.len();
        self.wait_until("every node knows the others", || {
            (0..n).all(|i| {
                self.cli(i, &["CLUSTER", "INFO"])
                    .contains(&format!("cluster_known_nodes:{n}"))
            })
        });
        for r in masters..n {
            let id = self.node_id(r - masters);
            self.wait_until("replica configured", || {
                self.cli(r, &["CLUSTER", "REPLICATE", &id]).trim() == "OK"
            });
        }
    }

    /// Node `i` (kill, restart, pause, resume, port, URL).
    pub fn node(&self, i: usize) -> &RedisServer {
        &self.nodes[i]
    }

    /// The number of nodes (masters and replicas).
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's `redis://127.0.0.1:<port>`, in index order (seed list).
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(RedisServer::url).collect()
    }

    /// The index of the node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.port() == port)
    }

    /// Runs `redis-cli -p <port of node i> <args…>` and returns its standard output
    /// (RESP errors included, as `redis-cli` prints them).
    pub fn cli(&self, i: usize, args: &[&str]) -> String {
        let out = Command::new(redis_cli())
            .arg("-p")
            .arg(self.nodes[i].port().to_string())
            .args(args)
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", redis_cli()));
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Indexes of the running nodes.
    pub fn running(&self) -> Vec<usize> {
        (0..self.nodes.len())
            .filter(|i| self.nodes[*i].pid().is_some())
            .collect()
    }

    /// `CLUSTER NODES` as seen by the first running node.
    pub fn topology(&self) -> Vec<ClusterNode> {
        let Some(i) = self.running().first().copied() else {
            return Vec::new();
        };
        parse_nodes(&self.cli(i, &["CLUSTER", "NODES"]))
    }

    /// Indexes of the nodes that are healthy masters with slots.
    pub fn masters(&self) -> Vec<usize> {
        self.topology()
            .iter()
            .filter(|n| n.master && !n.failing && !n.slots.is_empty())
            .filter_map(|n| self.index_of_port(n.port))
            .collect()
    }

    /// The index of the master serving `slot`.
    ///
    /// # Panics
    ///
    /// When no healthy master serves it.
    pub fn master_of_slot(&self, slot: u16) -> usize {
        self.topology()
            .iter()
            .filter(|n| n.master && !n.failing)
            .find(|n| n.slots.iter().any(|(a, b)| (*a..=*b).contains(&slot)))
            .and_then(|n| self.index_of_port(n.port))
            .unwrap_or_else(|| panic!("no master serves slot {slot}"))
    }

    /// The index of a healthy replica of master `i`.
    pub fn replica_of(&self, i: usize) -> Option<usize> {
        let id = self.node_id(i);
        self.topology()
            .iter()
            .find(|n| !n.master && !n.failing && n.master_id.as_deref() == Some(id.as_str()))
            .and_then(|n| self.index_of_port(n.port))
    }

    /// The cluster node ID of node `i` (`CLUSTER MYID`).
    pub fn node_id(&self, i: usize) -> String {
        self.cli(i, &["CLUSTER", "MYID"]).trim().to_owned()
    }

    /// The hash slot of `key` (`CLUSTER KEYSLOT`).
    pub fn key_slot(&self, key: &str) -> u16 {
        let i = self.running()[0];
        let out = self.cli(i, &["CLUSTER", "KEYSLOT", key]);
        out.trim()
            .parse()
            .unwrap_or_else(|_| panic!("CLUSTER KEYSLOT answered {out:?}"))
    }

    /// Manual failover: replica `i` takes its master's slots (`CLUSTER FAILOVER`); waits
    /// until every running node agrees and the cluster is healthy.
    pub fn failover(&self, i: usize) {
        let out = self.cli(i, &["CLUSTER", "FAILOVER"]);
        assert!(out.trim() == "OK", "CLUSTER FAILOVER on node {i}: {out}");
        self.wait_until("node becomes master", || {
            self.cli(i, &["ROLE"]).starts_with("master")
        });
        self.wait_healthy();
    }

    /// Moves `count` slots from master `from` to master `to` with
    /// `redis-cli --cluster reshard` (slot migration, with `MIGRATING`/`IMPORTING` states
    /// and `ASK` redirections while it runs); waits until the cluster is healthy.
    pub fn reshard(&self, from: usize, to: usize, count: u16) {
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let out = Command::new(redis_cli())
            .args(["--cluster", "reshard"])
            .arg(format!("127.0.0.1:{}", self.nodes[from].port()))
            .args(["--cluster-from", &from_id, "--cluster-to", &to_id])
            .args(["--cluster-slots", &count.to_string(), "--cluster-yes"])
            .output()
            .unwrap_or_else(|e| panic!("cannot run `{}`: {e}", redis_cli()));
        assert!(
            out.status.success(),
            "redis-cli --cluster reshard failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        self.wait_healthy();
    }

    /// Moves one slot from its master to master `to` as `redis-cli --cluster reshard` does
    /// for each slot (`SETSLOT … IMPORTING` on the target, `MIGRATING` on the source, the
    /// keys with `MIGRATE`, then `SETSLOT … NODE` on both and the other masters); waits
    /// until the cluster is healthy and agrees.
    pub fn migrate_slot(&self, slot: u16, to: usize) {
        let from = self.master_of_slot(slot);
        if from == to {
            return;
        }
        let (from_id, to_id) = (self.node_id(from), self.node_id(to));
        let slot_arg = slot.to_string();
        let ok = |i: usize, args: &[&str]| {
            let out = self.cli(i, args);
            assert!(out.trim() == "OK", "{args:?} on node {i}: {out}");
        };
        ok(
            to,
            &["CLUSTER", "SETSLOT", &slot_arg, "IMPORTING", &from_id],
        );
        ok(
            from,
            &["CLUSTER", "SETSLOT", &slot_arg, "MIGRATING", &to_id],
        );
        loop {
            let keys = self.cli(from, &["CLUSTER", "GETKEYSINSLOT", &slot_arg, "100"]);
            let keys: Vec<&str> = keys.lines().filter(|k| !k.is_empty()).collect();
            if keys.is_empty() {
                break;
            }
            let port = self.nodes[to].port().to_string();
            let mut args = vec!["MIGRATE", "127.0.0.1", &port, "", "0", "5000", "KEYS"];
            args.extend(keys);
            ok(from, &args);
        }
        ok(to, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        ok(from, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
        for m in self.masters() {
            if m != from && m != to {
                let _ = self.cli(m, &["CLUSTER", "SETSLOT", &slot_arg, "NODE", &to_id]);
            }
        }
        self.wait_until("slot moved", || self.master_of_slot(slot) == to);
        self.wait_healthy();
    }

    /// Waits until every running node reports `cluster_state:ok` with all slots served by
    /// healthy running masters, agrees on who serves them, and every replica's link to its
    /// master is up.
    ///
    /// # Panics
    ///
    /// After [`HEAL_TIMEOUT`].
    pub fn wait_healthy(&self) {
        self.wait_until("cluster healthy", || {
            let running = self.running();
            let healthy = running.iter().all(|i| {
                let info = self.cli(*i, &["CLUSTER", "INFO"]);
                let replication = self.cli(*i, &["INFO", "replication"]);
                info.contains("cluster_state:ok")
                    && info.contains(&format!("cluster_slots_ok:{SLOTS}"))
                    // A replica is in sync with its master (so it can take over next).
                    && (replication.contains("role:master")
                        || replication.contains("master_link_status:up"))
            });
            healthy && self.views_agree(&running)
        });
    }

    /// Every running node sees the same running master for each slot range, and no
    /// running node is flagged failing.
    fn views_agree(&self, running: &[usize]) -> bool {
        let owners = |i: usize| {
            let mut v: Vec<(u16, u16, u16)> = parse_nodes(&self.cli(i, &["CLUSTER", "NODES"]))
                .iter()
                .filter(|n| n.master && !n.failing)
                .flat_map(|n| n.slots.iter().map(|(a, b)| (*a, *b, n.port)))
                .collect();
            v.sort_unstable();
            v
        };
        let first = owners(running[0]);
        let ports: Vec<u16> = running.iter().map(|i| self.nodes[*i].port()).collect();
        // A killed master stays the owner until its replica is promoted.
        if !first.iter().all(|(_, _, port)| ports.contains(port)) {
            return false;
        }
        running.iter().all(|i| {
            owners(*i) == first
                && parse_nodes(&self.cli(*i, &["CLUSTER", "NODES"]))
                    .iter()
                    .filter(|n| ports.contains(&n.port))
                    .all(|n| !n.failing)
        })
    }

    fn wait_until(&self, what: &str, mut condition: impl FnMut() -> bool) {
        let deadline = Instant::now() + HEAL_TIMEOUT;
        while !condition() {
            if Instant::now() >= deadline {
                let states: Vec<String> = self
                    .running()
                    .iter()
                    .map(|i| {
                        let info = self.cli(*i, &["CLUSTER", "INFO"]);
                        let repl = self.cli(*i, &["INFO", "replication"]);
                        let pick = |text: &str, key: &str| {
                            text.lines()
                                .find(|l| l.starts_with(key))
                                .unwrap_or_default()
                                .trim()
                                .to_owned()
                        };
                        format!(
                            "node {i}: {} {} {} {}",
                            pick(&info, "cluster_state"),
                            pick(&info, "cluster_slots_ok"),
                            pick(&repl, "role"),
                            pick(&repl, "master_link_status")
                        )
                    })
                    .collect();
                panic!(
                    "Redis Cluster: {what} not reached after {HEAL_TIMEOUT:?}: {states:?}\n{}",
                    self.running()
                        .first()
                        .map(|i| self.cli(*i, &["CLUSTER", "NODES"]))
                        .unwrap_or_default()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// One node of a [`NatsCluster`]: the server and its cluster (route) and monitoring ports.
#[derive(Debug)]
struct NatsNode {
    server: NatsServer,
    monitor: u16,
}

/// A cluster of 3 `nats-server`s joined by routes (`--cluster`, `--routes`, cluster name
/// `neffos`), each with a monitoring port; killed when dropped.
#[derive(Debug)]
pub struct NatsCluster {
    nodes: Vec<NatsNode>,
}

impl NatsCluster {
    /// Starts 3 nodes and waits until each has a route to both others.
    pub fn start() -> NatsCluster {
        NatsCluster::start_with(3)
    }

    /// Starts `n` (2 to 16) routed nodes. The route and monitor ports are chosen up front
    /// and can be taken before a node binds them (an outgoing connection's ephemeral port,
    /// often a route being dialled): then every node starts again on fresh ports.
    pub fn start_with(n: usize) -> NatsCluster {
        assert!((2..=16).contains(&n), "2 to 16 nodes");
        let mut last = String::new();
        for _ in 0..PORT_ATTEMPTS {
            match NatsCluster::try_start(n) {
                Ok(nodes) => {
                    let cluster = NatsCluster { nodes };
                    cluster.wait_routes();
                    return cluster;
                }
                Err(e) => last = e,
            }
        }
        panic!("a NATS cluster of {n} did not start after {PORT_ATTEMPTS} attempts: {last}");
    }

    /// One attempt at starting `n` nodes on fresh ports (the ones started are stopped on
    /// failure, when dropped).
    fn try_start(n: usize) -> Result<Vec<NatsNode>, String> {
        let routes: Vec<u16> = (0..n).map(|_| free_port()).collect();
        (0..n)
            .map(|i| {
                let monitor = free_port();
                let others: Vec<String> = routes
                    .iter()
                    .enumerate()
                    .filter(|(j, _)| *j != i)
                    .map(|(_, p)| format!("nats://127.0.0.1:{p}"))
                    .collect();
                let cluster = format!("nats://127.0.0.1:{}", routes[i]);
                let monitor_arg = monitor.to_string();
                let routes_arg = others.join(",");
                let args = [
                    "-m",
                    &monitor_arg,
                    "--cluster_name",
                    "neffos",
                    "--cluster",
                    &cluster,
                    "--routes",
                    &routes_arg,
                ];
                Process::try_start(Kind::Nats, &args).map(|process| NatsNode {
                    server: NatsServer(process),
                    monitor,
                })
            })
            .collect()
    }

    /// Node `i` (kill, restart, pause, resume, port, URL). After a restart, call
    /// [`wait_routes`](Self::wait_routes) before relying on cross-node delivery.
    pub fn node(&self, i: usize) -> &NatsServer {
        &self.nodes[i].server
    }

    /// The number of nodes.
    pub fn len(&self) -> usize {
        self.nodes.len()
    }

    /// Never true: a cluster has nodes.
    pub fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Every node's URL, comma-separated, starting with node `first` (the seed a client
    /// tries first), then the others in index order.
    pub fn urls_from(&self, first: usize) -> String {
        let mut order: Vec<usize> = vec![first];
        order.extend((0..self.nodes.len()).filter(|i| *i != first));
        order
            .iter()
            .map(|i| self.nodes[*i].server.url())
            .collect::<Vec<_>>()
            .join(",")
    }

    /// Every node's URL, comma-separated, in index order.
    pub fn urls(&self) -> String {
        self.urls_from(0)
    }

    /// The index of the node listening on `port`.
    pub fn index_of_port(&self, port: u16) -> Option<usize> {
        self.nodes.iter().position(|n| n.server.port() == port)
    }

    /// The body of `GET /<path>` on node `i`'s monitoring port (`varz`, `connz`,
    /// `routez`, `subsz`…), JSON; empty when the node does not answer.
    pub fn monitor(&self, i: usize, path: &str) -> String {
        http_get(
            SocketAddr::from(([127, 0, 0, 1], self.nodes[i].monitor)),
            path,
        )
        .unwrap_or_default()
    }

    /// Client connections on node `i` (`num_connections` of `/connz`), 0 when it is down.
    pub fn connections(&self, i: usize) -> usize {
        json_number(&self.monitor(i, "connz"), "num_connections").unwrap_or(0)
    }

    /// Waits until every running node has a route to every other running node.
    ///
    /// # Panics
    ///
    /// After [`HEAL_TIMEOUT`].
    pub fn wait_routes(&self) {
        let deadline = Instant::now() + HEAL_TIMEOUT;
        loop {
            let running: Vec<usize> = (0..self.nodes.len())
                .filter(|i| self.nodes[*i].server.pid().is_some())
                .collect();
            let want = running.len().saturating_sub(1);
            if running
                .iter()
                .all(|i| json_number(&self.monitor(*i, "routez"), "num_routes") == Some(want))
            {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "NATS cluster: routes not established after {HEAL_TIMEOUT:?}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }
}

/// `"key": 12` in a JSON text (the monitoring endpoints' top-level counters).
fn json_number(json: &str, key: &str) -> Option<usize> {
    let at = json.find(&format!("\"{key}\":"))? + key.len() + 3;
    let digits: String = json[at..]
        .trim_start()
        .chars()
        .take_while(char::is_ascii_digit)
        .collect();
    digits.parse().ok()
}

/// A minimal HTTP/1.0 GET: the body, or `None` on any failure.
fn http_get(addr: SocketAddr, path: &str) -> Option<String> {
    let mut stream = TcpStream::connect_timeout(&addr, Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(2))).ok()?;
    write!(stream, "GET /{path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").ok()?;
    let mut response = String::new();
    stream.read_to_string(&mut response).ok()?;
    let (head, body) = response.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then(|| body.to_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_cluster_nodes() {
        let text = "\
a1 127.0.0.1:30001@40001 myself,master - 0 0 1 connected 0-5460 7000 [5461->-b2]
b2 127.0.0.1:30002@40002 master,fail - 0 0 2 connected
c3 127.0.0.1:30004@40004 slave a1 0 0 1 connected
";
        let nodes = parse_nodes(text);
        assert_eq!(nodes.len(), 3);
        assert_eq!(nodes[0].slots, vec![(0, 5460), (7000, 7000)]);
        assert!(nodes[0].master && !nodes[0].failing);
        assert!(nodes[1].failing);
        assert_eq!(nodes[2].master_id.as_deref(), Some("a1"));
        assert_eq!(nodes[2].port, 30004);
    }

    #[test]
    fn reads_json_counters() {
        assert_eq!(
            json_number(r#"{"num_routes": 2, "x": 1}"#, "num_routes"),
            Some(2)
        );
        assert_eq!(json_number(r#"{"num_routes":0}"#, "num_routes"), Some(0));
        assert_eq!(json_number("{}", "num_routes"), None);
    }

    #[test]
    fn redis_cluster_forms_and_fails_over() {
        let cluster = RedisCluster::start();
        assert_eq!(cluster.masters().len(), 3);
        let slot = cluster.key_slot("neffos");
        let master = cluster.master_of_slot(slot);
        let replica = cluster
            .replica_of(master)
            .expect("every master has a replica");
        cluster.failover(replica);
        assert_eq!(cluster.master_of_slot(slot), replica);
        // kill -9 of the new master: the old one (now its replica) is promoted.
        cluster.node(replica).kill();
        cluster.wait_healthy();
        assert_eq!(cluster.master_of_slot(slot), master);
        cluster.node(replica).restart();
        cluster.wait_healthy();
        assert_eq!(cluster.masters().len(), 3);
        let target = cluster
            .masters()
            .into_iter()
            .find(|m| *m != master)
            .unwrap_or(master);
        cluster.reshard(master, target, 100);
        let port = cluster.node(0).port();
        drop(cluster);
        assert!(!Kind::Redis.ready(SocketAddr::from(([127, 0, 0, 1], port))));
    }

    #[test]
    fn redis_cluster_of_one_shard() {
        let cluster = RedisCluster::start_with(1, &[]);
        assert_eq!(cluster.masters(), vec![0]);
        assert_eq!(cluster.replica_of(0), Some(1));
    }

    #[test]
    fn nats_cluster_routes_and_restarts() {
        let cluster = NatsCluster::start();
        assert!(cluster.urls_from(2).starts_with(&cluster.node(2).url()));
        cluster.node(1).kill();
        cluster.wait_routes();
        cluster.node(1).restart();
        cluster.wait_routes();
        assert_eq!(
            json_number(&cluster.monitor(1, "routez"), "num_routes"),
            Some(2)
        );
        let port = cluster.node(0).port();
        drop(cluster);
        assert!(!Kind::Nats.ready(SocketAddr::from(([127, 0, 0, 1], port))));
    }
}
