//! The publisher task: owns the publishing connection and drains one in-order queue,
//! publishing everything queued so far in one pipelined round trip.

use std::sync::Arc;

use bytes::Bytes;
use neffos::{ExchangeCounters, Topic};
use tokio::sync::{Notify, mpsc, oneshot};

use crate::backoff::{Backoff, Reconnected};
use crate::channel::Channels;
use crate::driver::{Connection, Driver, Pushes};
use crate::exchange::{Live, Options};

/// What the exchange asks of the publisher, in order.
#[derive(Debug)]
pub(crate) enum PubCmd {
    /// Publish a payload.
    Publish(Topic, Bytes),
    /// Publish a payload on a channel named by the caller (Go compatibility mode).
    Raw(String, Bytes),
    /// Resolve once everything before it was published (or failed) and a connection is up.
    Flush(oneshot::Sender<()>),
    /// Publish what is before it, then stop.
    Close(oneshot::Sender<()>),
}

enum Flow {
    Continue,
    Stop,
}

pub(crate) struct Publisher<D: Driver> {
    pub(crate) driver: Arc<D>,
    pub(crate) channels: Channels,
    pub(crate) stats: Arc<ExchangeCounters>,
    pub(crate) options: Options,
    pub(crate) name: String,
    pub(crate) rx: mpsc::Receiver<PubCmd>,
    pub(crate) conn: Option<Live<D::Conn>>,
    /// Shared with the instance's other connection (see [`Reconnected`]).
    pub(crate) reconnected: Reconnected,
}

struct State<D: Driver> {
    p: Publisher<D>,
    backoff: Backoff,
    ever_connected: bool,
    /// Flushes waiting for a connection.
    parked: Vec<oneshot::Sender<()>>,
    /// Publishes that failed since the connection was lost.
    failed_in_outage: u64,
}

impl<D: Driver> Publisher<D> {
    /// Runs until [`PubCmd::Close`] or until the exchange is dropped.
    pub(crate) async fn run(self) {
        let backoff = Backoff::new(self.options.backoff_min, self.options.backoff_max);
        let ever_connected = self.conn.is_some();
        let mut state = State {
            p: self,
            backoff,
            ever_connected,
            parked: Vec::new(),
            failed_in_outage: 0,
        };
        if let Some(live) = state.p.conn.as_mut() {
            name_connection(&mut live.conn, &state.p.name).await;
        }
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
        let max_batch = self.p.options.max_batch.max(1);
        let mut buf = Vec::with_capacity(max_batch);
        loop {
            let Some(live) = self.p.conn.as_ref() else {
                match self.reconnect().await {
                    Flow::Continue => continue,
                    Flow::Stop => return,
                }
            };
            let lost = live.lost.clone();
            tokio::select! {
                biased;
                () = lost.notified() => self.lose("connection closed"),
                n = self.p.rx.recv_many(&mut buf, max_batch) => {
                    if n == 0 {
                        return;
                    }
                    if let Flow::Stop = self.process(&mut buf).await {
                        return;
                    }
                }
            }
        }
    }

    /// Publishes the commands in `buf` in order, one round trip per run of publishes.
    async fn process(&mut self, buf: &mut Vec<PubCmd>) -> Flow {
        let mut batch: Vec<(String, Bytes)> = Vec::with_capacity(buf.len());
        for cmd in buf.drain(..) {
            match cmd {
                PubCmd::Publish(topic, payload) => match self.p.channels.name(&topic) {
                    Some(channel) => batch.push((channel, payload)),
                    None => {
                        self.p.stats.add_publish_errors(1);
                        tracing::warn!(%topic, "cannot publish to a kind of topic this exchange does not know");
                    }
                },
                PubCmd::Raw(channel, payload) => batch.push((channel, payload)),
                PubCmd::Flush(done) => {
                    self.send(&mut batch).await;
                    if self.p.conn.is_some() {
                        let _ = done.send(());
                    } else {
                        self.parked.push(done);
                    }
                }
                PubCmd::Close(done) => {
                    self.send(&mut batch).await;
                    self.p.rx.close();
                    let _ = done.send(());
                    return Flow::Stop;
                }
            }
        }
        self.send(&mut batch).await;
        Flow::Continue
    }

    /// Publishes `batch` (then empties it); counts it as failed without a connection.
    async fn send(&mut self, batch: &mut Vec<(String, Bytes)>) {
        if batch.is_empty() {
            return;
        }
        let n = batch.len() as u64;
        let result = match self.p.conn.as_mut() {
            Some(live) => live.conn.publish(batch).await,
            None => {
                self.fail(n);
                batch.clear();
                return;
            }
        };
        batch.clear();
        match result {
            Ok(()) => {
                self.p.stats.add_published(n);
            }
            Err(e) => {
                self.fail(n);
                tracing::warn!(error = %e, count = n, "Redis publish failed");
                self.lose("publish failed");
            }
        }
    }

    fn fail(&mut self, n: u64) {
        self.p.stats.add_publish_errors(n);
        self.failed_in_outage += n;
    }

    /// Drops the connection; the next loop reconnects.
    fn lose(&mut self, why: &str) {
        if self.p.conn.take().is_some() {
            tracing::warn!(
                reason = why,
                "Redis publisher connection lost; publishes fail (counted) until it is back"
            );
        }
    }

    /// Connects, retrying with backoff. Meanwhile publishes fail at once (counted), flushes
    /// wait for the connection, and a close stops the task.
    async fn reconnect(&mut self) -> Flow {
        // Another connection of this instance getting through ends the wait below.
        let mut others = self.p.reconnected.listen();
        loop {
            let lost = Arc::new(Notify::new());
            let attempt = tokio::time::Instant::now();
            let pushes = Pushes::publisher(self.p.stats.clone(), lost.clone());
            match self.p.driver.connect(pushes).await {
                Ok(mut conn) => {
                    name_connection(&mut conn, &self.p.name).await;
                    if self.ever_connected {
                        self.p.stats.add_reconnect();
                        tracing::info!(
                            failed_publishes = self.failed_in_outage,
                            "Redis publisher reconnected"
                        );
                    }
                    self.ever_connected = true;
                    self.failed_in_outage = 0;
                    self.backoff.reset();
                    self.p.reconnected.announce();
                    self.p.conn = Some(Live { conn, lost });
                    for done in self.parked.drain(..) {
                        let _ = done.send(());
                    }
                    return Flow::Continue;
                }
                Err(e) => {
                    let delay = self
                        .backoff
                        .after_failure(attempt.elapsed(), e.is_refusal());
                    tracing::warn!(error = %e, retry_in = ?delay, "Redis publisher cannot connect");
                    let sleep = tokio::time::sleep(delay);
                    tokio::pin!(sleep);
                    loop {
                        tokio::select! {
                            () = &mut sleep => break,
                            Ok(()) = others.changed() => break,
                            cmd = self.p.rx.recv() => match cmd {
                                None => return Flow::Stop,
                                Some(PubCmd::Publish(..) | PubCmd::Raw(..)) => self.fail(1),
                                Some(PubCmd::Flush(done)) => self.parked.push(done),
                                Some(PubCmd::Close(done)) => {
                                    self.p.rx.close();
                                    let _ = done.send(());
                                    return Flow::Stop;
                                }
                            },
                        }
                    }
                }
            }
        }
    }
}
