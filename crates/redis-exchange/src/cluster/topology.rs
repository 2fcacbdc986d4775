//! Who serves which slot: the slot map read with `CLUSTER SLOTS`, refreshed when the
//! cluster says it changed (a `MOVED`, a lost node, a server-side `sunsubscribe`), and the
//! connector that opens RESP3 connections to any node with the seeds' credentials and TLS.

use std::convert::Infallible;
use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use redis::aio::MultiplexedConnection;
use redis::{
    AsyncConnectionConfig, ConnectionAddr, ConnectionInfo, IntoConnectionInfo, ProtocolVersion,
    PushInfo, Value,
};

use super::slot::{SLOTS, key_slot};
use crate::backoff::Reconnected;
use crate::error::{Error, Result};

/// A node's address, `host:port`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) struct NodeAddr {
    pub(crate) host: String,
    pub(crate) port: u16,
}

impl fmt::Display for NodeAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.host, self.port)
    }
}

/// Opens connections to cluster nodes: the first seed's settings (user, password, TLS,
/// RESP3) with another address.
#[derive(Clone)]
pub(crate) struct Connector {
    template: ConnectionInfo,
    pub(crate) seeds: Vec<NodeAddr>,
    connect_timeout: Duration,
    response_timeout: Duration,
}

impl fmt::Debug for Connector {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Connector")
            .field("seeds", &self.seeds)
            .finish_non_exhaustive()
    }
}

impl Connector {
    /// Parses the seed URLs (`redis://[user][:password@]host:port`, `rediss://…` with the
    /// `tls` feature); they must share their credentials and scheme.
    pub(crate) fn new(
        seeds: &[String],
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Self> {
        let mut template = None;
        let mut addrs = Vec::new();
        for url in seeds {
            let scheme = url.split("://").next().unwrap_or_default();
            if cfg!(not(feature = "tls")) && matches!(scheme, "rediss" | "valkeys") {
                return Err(Error::TlsNotEnabled);
            }
            let info = url
                .as_str()
                .into_connection_info()
                .map_err(|e| Error::InvalidUrl {
                    source: Box::new(e),
                })?;
            let addr = match info.addr() {
                ConnectionAddr::Tcp(host, port) | ConnectionAddr::TcpTls { host, port, .. } => {
                    NodeAddr {
                        host: host.clone(),
                        port: *port,
                    }
                }
                _ => {
                    return Err(Error::InvalidUrl {
                        source: "a Redis Cluster node needs a TCP address".into(),
                    });
                }
            };
            addrs.push(addr);
            template.get_or_insert(info);
        }
        let Some(template) = template else {
            return Err(Error::InvalidUrl {
                source: "no seed node".into(),
            });
        };
        let settings = template
            .redis_settings()
            .clone()
            .set_protocol(ProtocolVersion::RESP3);
        Ok(Connector {
            template: template.set_redis_settings(settings),
            seeds: addrs,
            connect_timeout,
            response_timeout,
        })
    }

    fn info(&self, node: &NodeAddr) -> ConnectionInfo {
        let addr = match self.template.addr() {
            ConnectionAddr::TcpTls {
                insecure,
                tls_params,
                ..
            } => ConnectionAddr::TcpTls {
                host: node.host.clone(),
                port: node.port,
                insecure: *insecure,
                tls_params: tls_params.clone(),
            },
            _ => ConnectionAddr::Tcp(node.host.clone(), node.port),
        };
        self.template.clone().set_addr(addr)
    }

    /// Opens a RESP3 connection to `node`; its pushes go to `on_push` (from the
    /// connection's driver task: must not block).
    pub(crate) async fn connect(
        &self,
        node: &NodeAddr,
        on_push: impl Fn(PushInfo) + Send + Sync + 'static,
    ) -> Result<MultiplexedConnection> {
        let client = redis::Client::open(self.info(node)).map_err(Error::connect)?;
        let config = AsyncConnectionConfig::new()
            .set_connection_timeout(Some(self.connect_timeout))
            .set_response_timeout(Some(self.response_timeout))
            .set_push_sender(move |info: PushInfo| {
                on_push(info);
                Ok::<(), Infallible>(())
            });
        client
            .get_multiplexed_async_connection_with_config(&config)
            .await
            .map_err(Error::connect)
    }
}

/// A range of slots, its master and its replicas.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Range {
    start: u16,
    end: u16,
    master: NodeAddr,
    replicas: Vec<NodeAddr>,
}

/// Slot ranges and their masters, sorted by first slot.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(crate) struct SlotMap {
    ranges: Vec<Range>,
}

impl SlotMap {
    fn range(&self, slot: u16) -> Option<&Range> {
        let i = self.ranges.partition_point(|r| r.end < slot);
        self.ranges.get(i).filter(|r| r.start <= slot)
    }

    /// The master serving `slot`, if any.
    pub(crate) fn owner(&self, slot: u16) -> Option<&NodeAddr> {
        self.range(slot).map(|r| &r.master)
    }

    /// The master serving `channel`'s slot.
    pub(crate) fn owner_of(&self, channel: &str) -> Option<&NodeAddr> {
        self.owner(key_slot(channel.as_bytes()))
    }

    /// Where to subscribe to `channel`: the first replica of its shard listed by the
    /// cluster when `replica` is set and there is one, else its master.
    pub(crate) fn subscriber_of(&self, channel: &str, replica: bool) -> Option<&NodeAddr> {
        self.range(key_slot(channel.as_bytes()))
            .map(|r| match r.replicas.first() {
                Some(first) if replica => first,
                _ => &r.master,
            })
    }

    /// The distinct masters.
    pub(crate) fn masters(&self) -> Vec<NodeAddr> {
        let mut v: Vec<NodeAddr> = self.ranges.iter().map(|r| r.master.clone()).collect();
        v.sort();
        v.dedup();
        v
    }

    /// Slots served by a master.
    pub(crate) fn covered(&self) -> u32 {
        self.ranges
            .iter()
            .map(|r| u32::from(r.end) - u32::from(r.start) + 1)
            .sum()
    }

    /// Parses a `CLUSTER SLOTS` reply given by `asked` (whose address stands for an empty
    /// or `?` host).
    pub(crate) fn parse(reply: &Value, asked: &NodeAddr) -> Option<SlotMap> {
        let Value::Array(entries) = reply else {
            return None;
        };
        let mut ranges = Vec::new();
        for entry in entries {
            let Value::Array(fields) = entry else {
                return None;
            };
            let start = int(fields.first()?)?;
            let end = int(fields.get(1)?)?;
            let master = node_of(fields.get(2)?, asked)?;
            // Replicas the cluster lists (failed ones are left out by Redis).
            let replicas = fields
                .iter()
                .skip(3)
                .map(|f| node_of(f, asked))
                .collect::<Option<Vec<_>>>()?;
            if start > end || end >= SLOTS {
                return None;
            }
            ranges.push(Range {
                start,
                end,
                master,
                replicas,
            });
        }
        ranges.sort_by_key(|r| r.start);
        Some(SlotMap { ranges })
    }
}

/// A node of a `CLUSTER SLOTS` entry (`[host, port, id, …]`), `asked`'s host standing for
/// an empty or `?` one.
fn node_of(v: &Value, asked: &NodeAddr) -> Option<NodeAddr> {
    let Value::Array(node) = v else {
        return None;
    };
    let host = match node.first()? {
        Value::BulkString(b) => String::from_utf8(b.clone()).ok()?,
        Value::SimpleString(s) => s.clone(),
        Value::Nil => String::new(),
        _ => return None,
    };
    let port = int(node.get(1)?)?;
    let host = if host.is_empty() || host == "?" {
        asked.host.clone()
    } else {
        host
    };
    Some(NodeAddr { host, port })
}

fn int(v: &Value) -> Option<u16> {
    match v {
        Value::Int(i) => u16::try_from(*i).ok(),
        _ => None,
    }
}

/// The current slot map, shared by the publisher and the subscriber, and how to refresh it.
#[derive(Debug)]
pub(crate) struct Topology {
    pub(crate) connector: Connector,
    map: RwLock<Arc<SlotMap>>,
    /// Bumped by every refresh that changed the map.
    generation: AtomicU64,
    /// Serialises refreshes: one `CLUSTER SLOTS` at a time, and who waited for a running
    /// one uses its result.
    refreshing: tokio::sync::Mutex<()>,
    /// Refreshes done (for stats).
    pub(crate) refreshes: AtomicU64,
    /// Announced when the map changed or the publisher got through to a node: the
    /// subscriber stops waiting out its backoff and applies the table at once.
    pub(crate) wake: Reconnected,
}

impl Topology {
    pub(crate) fn new(connector: Connector) -> Self {
        Topology {
            connector,
            map: RwLock::new(Arc::new(SlotMap::default())),
            generation: AtomicU64::new(0),
            refreshing: tokio::sync::Mutex::new(()),
            refreshes: AtomicU64::new(0),
            wake: Reconnected::default(),
        }
    }

    pub(crate) fn map(&self) -> Arc<SlotMap> {
        self.map.read().clone()
    }

    pub(crate) fn generation(&self) -> u64 {
        self.generation.load(Ordering::Acquire)
    }

    /// Reads `CLUSTER SLOTS` from the first node that answers (known masters first, then
    /// the seeds), unless the map changed since `seen` (another task refreshed it meanwhile).
    /// Returns whether the map is now complete (every slot has a master).
    pub(crate) async fn refresh(&self, seen: u64) -> Result<bool> {
        let _guard = self.refreshing.lock().await;
        if self.generation() != seen {
            return Ok(self.map().covered() == u32::from(SLOTS));
        }
        let mut candidates = self.map().masters();
        for seed in &self.connector.seeds {
            if !candidates.contains(seed) {
                candidates.push(seed.clone());
            }
        }
        let mut last = None;
        for node in &candidates {
            match self.ask_slots(node).await {
                Ok(map) => {
                    self.refreshes.fetch_add(1, Ordering::Relaxed);
                    let complete = map.covered() == u32::from(SLOTS);
                    let changed = *self.map() != map;
                    if changed {
                        tracing::info!(
                            masters = map.masters().len(),
                            covered = map.covered(),
                            from = %node,
                            "Redis Cluster slot map changed"
                        );
                        *self.map.write() = Arc::new(map);
                        self.generation.fetch_add(1, Ordering::AcqRel);
                        self.wake.announce();
                    }
                    if complete {
                        return Ok(true);
                    }
                    // A node that still lists a failed master, or a slot without owner:
                    // try another view.
                    last = None;
                }
                Err(e) => last = Some(e),
            }
        }
        match last {
            Some(e) => Err(e),
            None => Ok(false),
        }
    }

    async fn ask_slots(&self, node: &NodeAddr) -> Result<SlotMap> {
        let mut conn = self.connector.connect(node, |_| {}).await?;
        let reply: Value = redis::cmd("CLUSTER")
            .arg("SLOTS")
            .query_async(&mut conn)
            .await
            .map_err(Error::command)?;
        SlotMap::parse(&reply, node).ok_or_else(|| {
            Error::command(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                "unexpected CLUSTER SLOTS reply",
            ))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn node(port: u16) -> NodeAddr {
        NodeAddr {
            host: "127.0.0.1".into(),
            port,
        }
    }

    fn entry(start: i64, end: i64, host: &str, port: i64) -> Value {
        Value::Array(vec![
            Value::Int(start),
            Value::Int(end),
            Value::Array(vec![
                Value::BulkString(host.as_bytes().to_vec()),
                Value::Int(port),
                Value::BulkString(b"id".to_vec()),
            ]),
        ])
    }

    #[test]
    fn parses_and_looks_up() {
        let reply = Value::Array(vec![
            entry(5461, 10922, "127.0.0.1", 7001),
            entry(0, 5460, "", 7000),
            entry(10923, 16383, "127.0.0.1", 7002),
        ]);
        let map = SlotMap::parse(&reply, &node(7000)).expect("parsed");
        assert_eq!(map.owner(0), Some(&node(7000)));
        assert_eq!(map.owner(5460), Some(&node(7000)));
        assert_eq!(map.owner(5461), Some(&node(7001)));
        assert_eq!(map.owner(16383), Some(&node(7002)));
        assert_eq!(map.covered(), 16384);
        assert_eq!(map.masters().len(), 3);
        let partial =
            SlotMap::parse(&Value::Array(vec![entry(0, 99, "h", 1)]), &node(1)).expect("parsed");
        assert_eq!(partial.owner(100), None);
        assert!(SlotMap::parse(&Value::Int(1), &node(1)).is_none());
        assert_eq!(map.subscriber_of("foo", true), map.owner_of("foo"));
    }

    #[test]
    fn replicas_are_kept() {
        let Value::Array(mut fields) = entry(0, 16383, "127.0.0.1", 7000) else {
            unreachable!()
        };
        fields.push(Value::Array(vec![
            Value::BulkString(b"".to_vec()),
            Value::Int(7003),
            Value::BulkString(b"id2".to_vec()),
        ]));
        let map =
            SlotMap::parse(&Value::Array(vec![Value::Array(fields)]), &node(7003)).expect("parsed");
        assert_eq!(map.owner_of("foo"), Some(&node(7000)));
        assert_eq!(map.subscriber_of("foo", false), Some(&node(7000)));
        assert_eq!(map.subscriber_of("foo", true), Some(&node(7003)));
        assert_eq!(map.masters(), vec![node(7000)]);
    }
}
