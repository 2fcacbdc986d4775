//! An in-memory broker for unit tests: plain channels, per-connection subscriptions,
//! and a switch to take the whole broker down (every connection closes, connects fail)
//! and up again.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;

use super::{Connection, Driver, Pushes};
use crate::error::{Error, Result};

#[derive(Debug, Default)]
struct Bus {
    down: bool,
    next_id: u64,
    conns: HashMap<u64, Peer>,
    /// Publish round trips (batches) served.
    batches: u64,
    /// Every payload published, with its channel, in order.
    log: Vec<(String, Bytes)>,
}

#[derive(Debug)]
struct Peer {
    pushes: Pushes,
    subs: HashSet<String>,
    name: Option<String>,
}

/// The stub broker; clones share it.
#[derive(Debug, Clone, Default)]
pub(crate) struct StubBroker(Arc<Mutex<Bus>>);

fn refused() -> Error {
    Error::connect(std::io::Error::from(std::io::ErrorKind::ConnectionRefused))
}

fn closed() -> Error {
    Error::command(std::io::Error::from(std::io::ErrorKind::BrokenPipe))
}

impl StubBroker {
    /// Takes the broker down: every connection closes, new ones are refused.
    pub(crate) fn kill(&self) {
        let peers: Vec<Peer> = {
            let mut bus = self.0.lock();
            bus.down = true;
            bus.conns.drain().map(|(_, p)| p).collect()
        };
        for peer in peers {
            peer.pushes.disconnected();
        }
    }

    /// Brings the broker back, empty.
    pub(crate) fn revive(&self) {
        self.0.lock().down = false;
    }

    /// Connections currently open.
    pub(crate) fn connections(&self) -> usize {
        self.0.lock().conns.len()
    }

    /// Connections subscribed to `channel`.
    pub(crate) fn numsub(&self, channel: &str) -> usize {
        self.0
            .lock()
            .conns
            .values()
            .filter(|p| p.subs.contains(channel))
            .count()
    }

    /// Names of the open connections.
    pub(crate) fn names(&self) -> Vec<Option<String>> {
        self.0
            .lock()
            .conns
            .values()
            .map(|p| p.name.clone())
            .collect()
    }

    /// Publish round trips served so far.
    pub(crate) fn batches(&self) -> u64 {
        self.0.lock().batches
    }

    /// Payloads published on `channel`, in order.
    pub(crate) fn published(&self, channel: &str) -> Vec<Bytes> {
        self.0
            .lock()
            .log
            .iter()
            .filter(|(c, _)| c == channel)
            .map(|(_, p)| p.clone())
            .collect()
    }
}

impl Driver for StubBroker {
    type Conn = StubConn;

    async fn connect(&self, pushes: Pushes) -> Result<StubConn> {
        let mut bus = self.0.lock();
        if bus.down {
            return Err(refused());
        }
        bus.next_id += 1;
        let id = bus.next_id;
        bus.conns.insert(
            id,
            Peer {
                pushes,
                subs: HashSet::new(),
                name: None,
            },
        );
        Ok(StubConn {
            broker: self.clone(),
            id,
        })
    }
}

/// One connection to the stub broker; closed when dropped.
#[derive(Debug)]
pub(crate) struct StubConn {
    broker: StubBroker,
    id: u64,
}

impl StubConn {
    fn with_peer<T>(&self, f: impl FnOnce(&mut Peer) -> T) -> Result<T> {
        let mut bus = self.broker.0.lock();
        bus.conns.get_mut(&self.id).map(f).ok_or_else(closed)
    }
}

impl Drop for StubConn {
    fn drop(&mut self) {
        self.broker.0.lock().conns.remove(&self.id);
    }
}

impl Connection for StubConn {
    async fn set_name(&mut self, name: &str) -> Result<()> {
        self.with_peer(|p| p.name = Some(name.to_owned()))
    }

    async fn publish(&mut self, batch: &[(String, Bytes)]) -> Result<()> {
        let mut bus = self.broker.0.lock();
        if !bus.conns.contains_key(&self.id) {
            return Err(closed());
        }
        bus.batches += 1;
        for (channel, payload) in batch {
            bus.log.push((channel.clone(), payload.clone()));
            for peer in bus.conns.values().filter(|p| p.subs.contains(channel)) {
                peer.pushes.message(channel.as_bytes(), payload.clone());
            }
        }
        Ok(())
    }

    async fn subscribe(&mut self, channels: &[String]) -> Result<()> {
        self.with_peer(|p| p.subs.extend(channels.iter().cloned()))
    }

    async fn unsubscribe(&mut self, channels: &[String]) -> Result<()> {
        self.with_peer(|p| {
            for c in channels {
                p.subs.remove(c);
            }
        })
    }

    async fn ping(&mut self) -> Result<()> {
        self.with_peer(|_| ())
    }
}
