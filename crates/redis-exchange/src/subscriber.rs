//! The subscriber task: owns the subscription connection and the subscription table, and
//! reconciles the broker with the table: whatever the server asked for is subscribed,
//! nothing else. After a reconnection the table is subscribed again as a whole.

use std::collections::hash_map::Entry;
use std::collections::{HashMap, HashSet};
use std::sync::{Arc, OnceLock};

use neffos::{ExchangeCounters, Inbound, Topic};
use tokio::sync::{Notify, oneshot};
use tokio::time::{Instant, MissedTickBehavior};

use crate::backoff::{Backoff, Reconnected};
use crate::channel::Channels;
use crate::control::ControlReceiver;
use crate::driver::{Connection, Driver, Pushes};
use crate::error::Result;
use crate::exchange::{Live, Options};
use crate::gocompat::GoCompat;

/// Channels per SUBSCRIBE / UNSUBSCRIBE command.
const CHUNK: usize = 256;

/// What the exchange asks of the subscriber.
#[derive(Debug)]
pub(crate) enum SubCmd {
    /// The server's interest in a topic went 0→1.
    Subscribe(Topic),
    /// The server's interest in a topic went 1→0.
    Unsubscribe(Topic),
    /// Subscribe a channel named by the caller (Go compatibility mode); counted like topics.
    SubscribeChannel(String),
    /// Undoes one [`SubCmd::SubscribeChannel`].
    UnsubscribeChannel(String),
    /// Resolve once the broker confirmed every change queued before it.
    Flush(oneshot::Sender<()>),
    /// Stop (the connection closes, which ends its subscriptions).
    Close(oneshot::Sender<()>),
}

enum Flow {
    Continue,
    Stop,
}

pub(crate) struct Subscriber<D: Driver> {
    pub(crate) driver: Arc<D>,
    pub(crate) channels: Channels,
    pub(crate) stats: Arc<ExchangeCounters>,
    pub(crate) options: Options,
    pub(crate) name: String,
    pub(crate) inbound: Arc<OnceLock<Inbound>>,
    pub(crate) go: Option<Arc<GoCompat>>,
    pub(crate) rx: ControlReceiver,
    pub(crate) conn: Option<Live<D::Conn>>,
    /// Shared with the instance's other connection (see [`Reconnected`]).
    pub(crate) reconnected: Reconnected,
}

struct State<D: Driver> {
    s: Subscriber<D>,
    backoff: Backoff,
    ever_connected: bool,
    /// Per channel: transitions 0→1 minus 1→0 reported by the server. Counting instead
    /// of setting makes the table right even if two transitions of one topic arrive in
    /// the opposite order (two threads reporting them): the sum does not depend on order.
    interest: HashMap<String, i64>,
    /// Channels the broker confirmed on the current connection.
    applied: HashSet<String>,
    /// Flushes waiting for the next successful reconciliation.
    parked: Vec<oneshot::Sender<()>>,
}

impl<D: Driver> Subscriber<D> {
    /// Runs until [`SubCmd::Close`] or until the exchange is dropped.
    pub(crate) async fn run(mut self) {
        if let Some(live) = self.conn.as_mut() {
            name_connection(&mut live.conn, &self.name).await;
        }
        let mut state = State {
            backoff: Backoff::new(self.options.backoff_min, self.options.backoff_max),
            ever_connected: self.conn.is_some(),
            s: self,
            interest: HashMap::new(),
            applied: HashSet::new(),
            parked: Vec::new(),
        };
        state.run().await;
    }
}

async fn name_connection<C: Connection>(conn: &mut C, name: &str) {
    if let Err(e) = conn.set_name(name).await {
        tracing::warn!(error = %e, name, "cannot name the Redis connection (CLIENT SETNAME)");
    }
}

impl<D: Driver> State<D> {
    async fn run(&mut self) {
        let period = self.s.options.health_check_interval;
        let mut health = period.map(|p| {
            let mut i = tokio::time::interval_at(Instant::now() + p, p);
            i.set_missed_tick_behavior(MissedTickBehavior::Delay);
            i
        });
        let mut buf = Vec::new();
        loop {
            if self.s.conn.is_none() {
                if let Flow::Stop = self.reconnect().await {
                    return;
                }
                continue;
            }
            if let Err(e) = self.reconcile().await {
                self.lose(&e.to_string());
                continue;
            }
            for done in self.parked.drain(..) {
                let _ = done.send(());
            }
            let Some(live) = self.s.conn.as_ref() else {
                continue;
            };
            let lost = live.lost.clone();
            let tick = async {
                match health.as_mut() {
                    Some(h) => {
                        h.tick().await;
                    }
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                biased;
                () = lost.notified() => self.lose("connection closed"),
                n = self.s.rx.recv_many(&mut buf, 1024) => {
                    if let Flow::Stop = self.apply_taken(n, &mut buf) {
                        return;
                    }
                }
                () = tick => self.health_check().await,
            }
        }
    }

    /// Applies the `n` commands just taken into `buf` (0: the exchange is gone).
    fn apply_taken(&mut self, n: usize, buf: &mut Vec<SubCmd>) -> Flow {
        if n == 0 {
            return Flow::Stop;
        }
        for cmd in buf.drain(..) {
            if let Flow::Stop = self.apply(cmd) {
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    /// Updates the table (no I/O).
    fn apply(&mut self, cmd: SubCmd) -> Flow {
        match cmd {
            SubCmd::Subscribe(topic) => self.count(&topic, 1),
            SubCmd::Unsubscribe(topic) => self.count(&topic, -1),
            SubCmd::SubscribeChannel(channel) => self.count_channel(channel, 1),
            SubCmd::UnsubscribeChannel(channel) => self.count_channel(channel, -1),
            SubCmd::Flush(done) => self.parked.push(done),
            SubCmd::Close(done) => {
                self.s.rx.close();
                let _ = done.send(());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    fn count(&mut self, topic: &Topic, delta: i64) {
        let Some(channel) = self.s.channels.name(topic) else {
            tracing::warn!(%topic, "cannot subscribe to a kind of topic this exchange does not know");
            return;
        };
        self.count_channel(channel, delta);
    }

    fn count_channel(&mut self, channel: String, delta: i64) {
        match self.interest.entry(channel) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += delta;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            Entry::Vacant(e) => {
                e.insert(delta);
            }
        }
    }

    /// Makes the broker's subscriptions on this connection match the table.
    async fn reconcile(&mut self) -> Result<()> {
        let Some(live) = self.s.conn.as_mut() else {
            return Ok(());
        };
        let wanted = |ch: &String| self.interest.get(ch).is_some_and(|n| *n > 0);
        let to_unsubscribe: Vec<String> = self
            .applied
            .iter()
            .filter(|ch| !wanted(ch))
            .cloned()
            .collect();
        let to_subscribe: Vec<String> = self
            .interest
            .iter()
            .filter(|(ch, n)| **n > 0 && !self.applied.contains(*ch))
            .map(|(ch, _)| ch.clone())
            .collect();
        for chunk in to_unsubscribe.chunks(CHUNK) {
            live.conn.unsubscribe(chunk).await?;
            for ch in chunk {
                self.applied.remove(ch);
            }
        }
        for chunk in to_subscribe.chunks(CHUNK) {
            live.conn.subscribe(chunk).await?;
            self.applied.extend(chunk.iter().cloned());
        }
        Ok(())
    }

    async fn health_check(&mut self) {
        let Some(live) = self.s.conn.as_mut() else {
            return;
        };
        if let Err(e) = live.conn.ping().await {
            self.lose(&format!("health check failed: {e}"));
        }
    }

    fn lose(&mut self, why: &str) {
        if self.s.conn.take().is_some() {
            tracing::warn!(
                reason = why,
                "Redis subscriber connection lost; reconnecting (messages published meanwhile are not received)"
            );
        }
        self.applied.clear();
    }

    /// Connects, retrying with backoff; meanwhile the table keeps being updated and flushes
    /// wait. A fresh connection has no subscription: the next reconciliation restores them.
    async fn reconnect(&mut self) -> Flow {
        // Another connection of this instance getting through ends the wait below.
        let mut others = self.s.reconnected.listen();
        loop {
            let lost = Arc::new(Notify::new());
            let attempt = tokio::time::Instant::now();
            let pushes =
                Pushes::subscriber(self.s.inbound.clone(), self.s.stats.clone(), lost.clone())
                    .with_go(self.s.go.clone());
            match self.s.driver.connect(pushes).await {
                Ok(mut conn) => {
                    name_connection(&mut conn, &self.s.name).await;
                    if self.ever_connected {
                        self.s.stats.add_reconnect();
                        tracing::info!(
                            subscriptions = self.interest.len(),
                            "Redis subscriber reconnected; subscribing again"
                        );
                    }
                    self.ever_connected = true;
                    self.backoff.reset();
                    self.s.reconnected.announce();
                    self.applied.clear();
                    self.s.conn = Some(Live { conn, lost });
                    return Flow::Continue;
                }
                Err(e) => {
                    let delay = self
                        .backoff
                        .after_failure(attempt.elapsed(), e.is_refusal());
                    tracing::warn!(error = %e, retry_in = ?delay, "Redis subscriber cannot connect");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    let mut buf = Vec::new();
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            Ok(()) = others.changed() => break,
                            n = self.s.rx.recv_many(&mut buf, 1024) => {
                                if let Flow::Stop = self.apply_taken(n, &mut buf) {
                                    return Flow::Stop;
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}
