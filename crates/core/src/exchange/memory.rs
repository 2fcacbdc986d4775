//! An exchange inside one process: several [`Server`](crate::Server)s sharing one
//! `MemoryExchange` behave as several instances. The demo's default, and the reference
//! implementation of the conformance suite.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use bytes::Bytes;
use parking_lot::Mutex;
use uuid::Uuid;

use super::{Exchange, ExchangeCounters, ExchangeFuture, ExchangeStats, Inbound, Topic};

#[derive(Default, Debug)]
struct Bus {
    instances: HashMap<Uuid, Inbound>,
    subscribers: HashMap<Topic, HashSet<Uuid>>,
}

/// The in-process exchange. Clone it and give each server a clone: clones share one bus.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use neffos::{MemoryExchange, Namespaces, Server};
/// let bus = MemoryExchange::new();
/// let a = Server::builder(Namespaces::new()).exchange(bus.clone()).build();
/// let b = Server::builder(Namespaces::new()).exchange(bus.clone()).build();
/// assert_ne!(a.instance_id(), b.instance_id());
/// # }
/// ```
#[derive(Debug, Default)]
pub struct MemoryExchange {
    bus: Arc<Mutex<Bus>>,
    me: Mutex<Option<Uuid>>,
    stats: ExchangeCounters,
}

/// A clone shares the bus but not the identity or counters: give each server its own.
impl Clone for MemoryExchange {
    fn clone(&self) -> Self {
        MemoryExchange {
            bus: self.bus.clone(),
            me: Mutex::new(None),
            stats: ExchangeCounters::default(),
        }
    }
}

impl MemoryExchange {
    /// A new, empty bus.
    pub fn new() -> Self {
        Self::default()
    }

    fn instance(&self) -> Option<Uuid> {
        *self.me.lock()
    }

    /// Instances subscribed to `topic` (for tests: interest is per instance, not per client).
    pub fn subscribers(&self, topic: &Topic) -> usize {
        self.bus
            .lock()
            .subscribers
            .get(topic)
            .map_or(0, HashSet::len)
    }
}

impl Exchange for MemoryExchange {
    fn start(&self, instance: Uuid, inbound: Inbound) {
        *self.me.lock() = Some(instance);
        let mut bus = self.bus.lock();
        bus.instances.insert(instance, inbound);
        bus.subscribers
            .entry(Topic::Inbox(instance))
            .or_default()
            .insert(instance);
    }

    fn publish(&self, topic: Topic, payload: Bytes) {
        self.stats.add_published(1);
        let bus = self.bus.lock();
        let Some(subs) = bus.subscribers.get(&topic) else {
            return;
        };
        for id in subs {
            if let Some(inbound) = bus.instances.get(id) {
                inbound.deliver(payload.clone());
            }
        }
    }

    fn subscribe(&self, topic: Topic) {
        if let Some(me) = self.instance() {
            self.bus
                .lock()
                .subscribers
                .entry(topic)
                .or_default()
                .insert(me);
        }
    }

    fn unsubscribe(&self, topic: Topic) {
        if let Some(me) = self.instance() {
            let mut bus = self.bus.lock();
            if let Some(subs) = bus.subscribers.get_mut(&topic) {
                subs.remove(&me);
                if subs.is_empty() {
                    bus.subscribers.remove(&topic);
                }
            }
        }
    }

    fn flush(&self) -> ExchangeFuture<'_> {
        // Every operation is applied synchronously.
        Box::pin(async {})
    }

    fn close(&self) -> ExchangeFuture<'_> {
        Box::pin(async move {
            if let Some(me) = self.me.lock().take() {
                let mut bus = self.bus.lock();
                bus.instances.remove(&me);
                bus.subscribers.retain(|_, subs| {
                    subs.remove(&me);
                    !subs.is_empty()
                });
            }
        })
    }

    fn stats(&self) -> ExchangeStats {
        self.stats.snapshot()
    }
}
