//! The exchange's task: owns the NATS client, forwards publications and subscription
//! changes to it in order, and drains every subscription into the server's inbound queue.
//!
//! One task, one queue: what the server asked for reaches `async-nats` in the order it was
//! asked, so a flush barrier sent after them is answered by the broker only once the broker
//! processed them all (a NATS server handles one connection's operations in order).

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::client::RequestErrorKind;
use async_nats::connection::State;
use async_nats::{Client, Subscriber};
use bytes::Bytes;
use futures_util::FutureExt as _;
use futures_util::StreamExt as _;
use futures_util::stream::FuturesUnordered;
use neffos::{ExchangeCounters, Inbound, Topic};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::gocompat::GoCompat;
use crate::subject::Subjects;

/// What the exchange asks of its task, in order.
#[derive(Debug)]
pub(crate) enum Cmd {
    /// The server started: where to deliver, and whose inbox to subscribe.
    Start(Uuid, Inbound),
    /// Publish a payload.
    Publish(Topic, Bytes),
    /// The server's interest in a topic went 0→1.
    Subscribe(Topic),
    /// The server's interest in a topic went 1→0.
    Unsubscribe(Topic),
    /// Publish a payload on a subject named by the caller (Go compatibility mode).
    PublishRaw(String, Bytes),
    /// Subscribe a subject named by the caller (Go compatibility mode); counted like topics.
    SubscribeRaw(String),
    /// Undoes one [`Cmd::SubscribeRaw`].
    UnsubscribeRaw(String),
    /// Apply the interest changes waiting in [`Actor::interest`] (one wake-up for all).
    Interest,
    /// Resolve once the broker processed everything queued before.
    Flush(oneshot::Sender<()>),
    /// Flush, close the connection, stop.
    Close(oneshot::Sender<()>),
}

/// Timings of the task.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Timings {
    /// How long a publish may wait for room in `async-nats`'s command queue.
    pub(crate) publish: Duration,
    /// How long a flush (or close) may wait for the broker's answer.
    pub(crate) flush: Duration,
    /// The longest delay between two reconnection attempts.
    pub(crate) reconnect_max: Duration,
}

/// One subscription being drained: ends when cancelled or when the stream ends.
type Draining = Pin<Box<dyn Future<Output = Ended> + Send>>;

/// Why a drained subscription stopped.
struct Ended {
    subject: String,
    key: u64,
    subscriber: Subscriber,
    cancelled: bool,
}

/// A subscription the broker has (or was asked for).
#[derive(Debug)]
struct Live {
    key: u64,
    cancel: oneshot::Sender<()>,
}

/// The server's interest in one subject: 0→1 transitions minus 1→0 transitions (counted,
/// so that two transitions reported from two threads in the opposite order still add up),
/// and the subscription if there is one.
#[derive(Debug, Default)]
struct Interest {
    count: i64,
    live: Option<Live>,
}

/// The task's state.
pub(crate) struct Actor {
    pub(crate) client: Client,
    pub(crate) subjects: Subjects,
    pub(crate) flush_subject: String,
    pub(crate) stats: Arc<ExchangeCounters>,
    /// Publishes queued and not yet taken by the task (shared with the exchange, which
    /// refuses publishes beyond its capacity).
    pub(crate) queued: Arc<AtomicUsize>,
    pub(crate) rx: mpsc::UnboundedReceiver<Cmd>,
    pub(crate) timings: Timings,
    /// Signalled by the event callback when the connection is closed for good.
    pub(crate) closed: Arc<Notify>,
    /// Go compatibility mode.
    pub(crate) go: Option<Arc<GoCompat>>,
    /// Interest changes waiting, coalesced (shared with the exchange).
    pub(crate) interest: Arc<crate::interest::Interest>,
}

struct Task {
    a: Actor,
    inbound: Option<Inbound>,
    interest: HashMap<String, Interest>,
    draining: FuturesUnordered<Draining>,
    next_key: u64,
    /// Cancelled subscriptions whose `UNSUB` is not sent yet.
    cancelling: usize,
    /// A publish timed out: until one goes through at once, do not wait for room.
    congested: bool,
    /// Publishes dropped since the connection was lost (logged once per outage).
    dropped_in_outage: u64,
}

enum Flow {
    Continue,
    Stop,
}

impl Actor {
    /// Runs until [`Cmd::Close`] or until the exchange is dropped.
    pub(crate) async fn run(self) {
        let mut state = Task {
            a: self,
            inbound: None,
            interest: HashMap::new(),
            draining: FuturesUnordered::new(),
            next_key: 0,
            cancelling: 0,
            congested: false,
            dropped_in_outage: 0,
        };
        state.run().await;
    }
}

impl Task {
    async fn run(&mut self) {
        let mut buf = Vec::with_capacity(256);
        loop {
            tokio::select! {
                n = self.a.rx.recv_many(&mut buf, 256) => {
                    if n == 0 {
                        // The exchange was dropped: dropping the client closes the connection.
                        return;
                    }
                    for cmd in buf.drain(..) {
                        if let Flow::Stop = self.handle(cmd).await {
                            return;
                        }
                    }
                }
                Some(ended) = self.draining.next(), if !self.draining.is_empty() => {
                    self.ended(ended).await;
                }
            }
        }
    }

    async fn handle(&mut self, cmd: Cmd) -> Flow {
        match cmd {
            Cmd::Start(instance, inbound) => self.start(instance, inbound).await,
            Cmd::Publish(topic, payload) => {
                self.a.queued.fetch_sub(1, Ordering::Relaxed);
                self.publish(&topic, payload).await;
            }
            Cmd::Subscribe(topic) => self.count(&topic, 1).await,
            Cmd::Unsubscribe(topic) => self.count(&topic, -1).await,
            Cmd::Interest => {
                for (key, delta) in self.a.interest.take() {
                    let step = delta.signum();
                    for _ in 0..delta.unsigned_abs() {
                        match &key {
                            crate::interest::Key::Topic(topic) => self.count(topic, step).await,
                            crate::interest::Key::Subject(subject) => {
                                self.count_subject(subject.clone(), step).await;
                            }
                        }
                    }
                }
            }
            Cmd::PublishRaw(subject, payload) => {
                self.a.queued.fetch_sub(1, Ordering::Relaxed);
                self.publish_subject(subject, payload).await;
            }
            Cmd::SubscribeRaw(subject) => self.count_subject(subject, 1).await,
            Cmd::UnsubscribeRaw(subject) => self.count_subject(subject, -1).await,
            Cmd::Flush(done) => {
                self.send_cancellations().await;
                let client = self.a.client.clone();
                let subject = self.a.flush_subject.clone();
                let timeout = self.a.timings.flush;
                // The barrier goes out now, after everything before it; its answer is
                // awaited elsewhere so the task keeps draining meanwhile.
                let barrier = barrier(client, subject, timeout);
                tokio::spawn(async move {
                    barrier.await;
                    let _ = done.send(());
                });
            }
            Cmd::Close(done) => {
                self.close().await;
                let _ = done.send(());
                return Flow::Stop;
            }
        }
        Flow::Continue
    }

    async fn start(&mut self, instance: Uuid, inbound: Inbound) {
        if self.inbound.is_some() {
            tracing::warn!(%instance, "NatsExchange started twice; keeping the first start");
            return;
        }
        self.inbound = Some(inbound);
        tracing::debug!(%instance, prefix = self.a.subjects.prefix(), "NATS exchange started");
        self.count(&Topic::Inbox(instance), 1).await;
        // Interest reported before the start.
        let pending: Vec<String> = self
            .interest
            .iter()
            .filter(|(_, i)| i.count > 0 && i.live.is_none())
            .map(|(s, _)| s.clone())
            .collect();
        for subject in pending {
            self.reconcile(&subject).await;
        }
    }

    async fn count(&mut self, topic: &Topic, delta: i64) {
        let Some(subject) = self.a.subjects.subject(topic) else {
            tracing::warn!(%topic, "cannot subscribe to a kind of topic this exchange does not know");
            return;
        };
        self.count_subject(subject, delta).await;
    }

    async fn count_subject(&mut self, subject: String, delta: i64) {
        self.interest.entry(subject.clone()).or_default().count += delta;
        self.reconcile(&subject).await;
    }

    /// Subscribes or unsubscribes `subject` so that the broker matches the interest.
    async fn reconcile(&mut self, subject: &str) {
        let Entry::Occupied(mut entry) = self.interest.entry(subject.to_owned()) else {
            return;
        };
        let wanted = entry.get().count > 0;
        let live = entry.get().live.is_some();
        if wanted && !live {
            let Some(inbound) = self.inbound.clone() else {
                return; // subscribed at the start
            };
            match self.a.client.subscribe(subject.to_owned()).await {
                Ok(subscriber) => {
                    let key = self.next_key;
                    self.next_key += 1;
                    let (cancel, cancelled) = oneshot::channel();
                    entry.get_mut().live = Some(Live { key, cancel });
                    let go = self.a.go.clone().filter(|go| go.is_go_subject(subject));
                    self.draining.push(Box::pin(drain(
                        subject.to_owned(),
                        key,
                        subscriber,
                        cancelled,
                        Sink { inbound, go },
                        self.a.stats.clone(),
                    )));
                }
                Err(e) => {
                    tracing::error!(error = %e, subject, "cannot subscribe on NATS");
                }
            }
        } else if !wanted
            && live
            && let Some(live) = entry.get_mut().live.take()
        {
            // The drain future stops at once and hands the subscriber back, whose `UNSUB`
            // is then sent in order (see `ended`).
            if live.cancel.send(()).is_ok() {
                self.cancelling += 1;
            }
        }
        if entry.get().count == 0 && entry.get().live.is_none() {
            entry.remove();
        }
    }

    /// A drain future finished.
    async fn ended(&mut self, ended: Ended) {
        let Ended {
            subject,
            key,
            mut subscriber,
            cancelled,
        } = ended;
        if cancelled {
            self.cancelling = self.cancelling.saturating_sub(1);
            if let Err(e) = subscriber.unsubscribe().await {
                tracing::debug!(error = %e, subject, "cannot unsubscribe (connection closed)");
            }
            return;
        }
        // The stream ended without being cancelled: async-nats dropped the subscription
        // (client closed for good). Forget it so a later interest subscribes again.
        if let Some(interest) = self.interest.get_mut(&subject)
            && interest.live.as_ref().is_some_and(|l| l.key == key)
        {
            interest.live = None;
            tracing::warn!(subject, "NATS subscription ended; the connection is closed");
        }
    }

    /// Sends the `UNSUB`s of every cancelled subscription (the drain futures are ready).
    async fn send_cancellations(&mut self) {
        while self.cancelling > 0 {
            match self.draining.next().await {
                Some(ended) => self.ended(ended).await,
                None => {
                    self.cancelling = 0;
                }
            }
        }
    }

    async fn publish(&mut self, topic: &Topic, payload: Bytes) {
        let Some(subject) = self.a.subjects.subject(topic) else {
            self.a.stats.add_publish_errors(1);
            tracing::warn!(%topic, "cannot publish to a kind of topic this exchange does not know");
            return;
        };
        self.publish_subject(subject, payload).await;
    }

    async fn publish_subject(&mut self, subject: String, payload: Bytes) {
        let stats = &self.a.stats;
        if self.a.client.connection_state() != State::Connected {
            stats.add_publish_errors(1);
            if self.dropped_in_outage == 0 {
                tracing::warn!(
                    subject,
                    "NATS is disconnected: publications are dropped and counted until it reconnects"
                );
            }
            self.dropped_in_outage += 1;
            return;
        }
        if self.dropped_in_outage > 0 {
            tracing::info!(
                dropped = self.dropped_in_outage,
                "NATS connected again: publishing"
            );
            self.dropped_in_outage = 0;
        }
        let publish = self.a.client.publish(subject, payload);
        let result = if self.congested {
            // Do not wait again: take room if there is some now, else drop.
            publish.now_or_never()
        } else {
            tokio::time::timeout(self.a.timings.publish, publish)
                .await
                .ok()
        };
        match result {
            Some(Ok(())) => {
                stats.add_published(1);
                if self.congested {
                    tracing::info!("NATS accepts publications again");
                    self.congested = false;
                }
            }
            Some(Err(e)) => {
                stats.add_publish_errors(1);
                tracing::warn!(error = %e, "NATS publish failed");
            }
            None => {
                stats.add_publish_errors(1);
                if !self.congested {
                    tracing::warn!(
                        timeout = ?self.a.timings.publish,
                        "NATS publish queue is full (slow or frozen broker): publications are dropped and counted"
                    );
                    self.congested = true;
                }
            }
        }
    }

    async fn close(&mut self) {
        self.send_cancellations().await;
        barrier(
            self.a.client.clone(),
            self.a.flush_subject.clone(),
            self.a.timings.flush,
        )
        .await;
        let closed = self.a.closed.notified();
        match tokio::time::timeout(self.a.timings.flush, self.a.client.drain()).await {
            Ok(Ok(())) => {
                // Bounded: the connection handler ends right after the drain.
                let _ = tokio::time::timeout(self.a.timings.flush, closed).await;
            }
            Ok(Err(e)) => tracing::debug!(error = %e, "NATS drain failed (already closed)"),
            Err(_) => tracing::warn!("NATS drain timed out"),
        }
    }
}

/// Where one subscription's messages go: the server's inbound queue, through the Go
/// translation for Go's subjects in compatibility mode.
struct Sink {
    inbound: Inbound,
    go: Option<Arc<GoCompat>>,
}

impl Sink {
    fn deliver(&self, subject: &str, payload: Bytes) {
        match &self.go {
            Some(go) => {
                for envelope in go.received(subject, payload) {
                    self.inbound.deliver(envelope);
                }
            }
            None => self.inbound.deliver(payload),
        }
    }
}

/// Delivers every message of one subscription until cancelled or ended.
async fn drain(
    subject: String,
    key: u64,
    mut subscriber: Subscriber,
    mut cancelled: oneshot::Receiver<()>,
    sink: Sink,
    stats: Arc<ExchangeCounters>,
) -> Ended {
    loop {
        tokio::select! {
            biased;
            _ = &mut cancelled => {
                return Ended { subject, key, subscriber, cancelled: true };
            }
            message = subscriber.next() => match message {
                Some(message) => {
                    stats.add_received(1);
                    sink.deliver(&subject, message.payload);
                }
                None => return Ended { subject, key, subscriber, cancelled: false },
            },
        }
    }
}

/// A round trip through the broker after everything sent before: a request to a subject
/// nobody subscribes, answered by the server with "no responders" once it processed this
/// connection's earlier operations. Bounded by `timeout`.
async fn barrier(client: Client, subject: String, timeout: Duration) {
    match tokio::time::timeout(timeout, client.request(subject, Bytes::new())).await {
        Ok(Err(e)) if e.kind() == RequestErrorKind::NoResponders => {}
        Ok(Ok(_)) => {}
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "NATS flush barrier got no answer");
        }
        Err(_) => {
            tracing::warn!(?timeout, "NATS flush timed out (broker unreachable?)");
        }
    }
}
