//! [`RedisExchange`] and its builder.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use bytes::Bytes;
use neffos::protocol::gocompat::GoStats;
use neffos::{Exchange, ExchangeCounters, ExchangeFuture, ExchangeStats, Inbound, Topic};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::backoff::Reconnected;
use crate::channel::{Channels, DEFAULT_PREFIX};
use crate::control::ControlSender;
use crate::driver::redis::RedisDriver;
use crate::driver::{Driver, Pushes};
use crate::error::Result;
use crate::gocompat::GoCompat;
use crate::publisher::{PubCmd, Publisher};
use crate::subscriber::{SubCmd, Subscriber};

/// Tunables shared by the exchange's tasks.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    pub(crate) queue_capacity: usize,
    pub(crate) max_batch: usize,
    pub(crate) backoff_min: Duration,
    pub(crate) backoff_max: Duration,
    pub(crate) connect_timeout: Duration,
    pub(crate) response_timeout: Duration,
    pub(crate) health_check_interval: Option<Duration>,
}

impl Default for Options {
    fn default() -> Self {
        Options {
            queue_capacity: 65_536,
            max_batch: 4096,
            backoff_min: Duration::from_millis(50),
            backoff_max: Duration::from_secs(5),
            connect_timeout: Duration::from_secs(2),
            response_timeout: Duration::from_secs(5),
            health_check_interval: Some(Duration::from_secs(5)),
        }
    }
}

/// An open connection and the signal that it closed.
#[derive(Debug)]
pub(crate) struct Live<C> {
    pub(crate) conn: C,
    pub(crate) lost: Arc<Notify>,
}

/// Configures a [`RedisExchange`]; from [`RedisExchange::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), neffos_redis::Error> {
/// use std::time::Duration;
/// let exchange = neffos_redis::RedisExchange::builder("redis://:secret@127.0.0.1:6379/0")
///     .prefix("chat-prod")
///     .reconnect_backoff(Duration::from_millis(100), Duration::from_secs(10))
///     .connect()
///     .await?;
/// # let _ = exchange; Ok(()) }
/// ```
#[derive(Clone)]
#[must_use]
pub struct RedisExchangeBuilder {
    url: String,
    prefix: String,
    options: Options,
    go_prefix: Option<String>,
}

/// Shows the URL without its password.
impl fmt::Debug for RedisExchangeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExchangeBuilder")
            .field("url", &neffos::redact::url(&self.url))
            .field("prefix", &self.prefix)
            .field("options", &self.options)
            .finish()
    }
}

impl RedisExchangeBuilder {
    /// The prefix of every channel name (default `neffos`): give each application sharing
    /// one Redis its own. 1 to 64 characters among `A-Z a-z 0-9 _ . -`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// Publishes that may wait for the publisher connection (default 65,536). When full,
    /// further publishes are dropped and counted in `publish_errors`: memory stays bounded
    /// and the caller never waits.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.options.queue_capacity = capacity.max(1);
        self
    }

    /// Most publishes sent in one pipelined round trip (default 4,096). One round trip is
    /// in flight at a time (that keeps them ordered); what queues meanwhile goes in the next.
    pub fn max_batch(mut self, max: usize) -> Self {
        self.options.max_batch = max.max(1);
        self
    }

    /// Delays between reconnection attempts: exponential from `min`, capped at `max`,
    /// with jitter (defaults 50 ms and 5 s). While the broker's host refuses connections
    /// quickly (within 50 ms: up, but nothing listens, as during a restart) the delay stays
    /// at most 100 ms, and when one of the instance's two connections gets through the
    /// other retries at once, so delivery resumes soon after the broker accepts again.
    pub fn reconnect_backoff(mut self, min: Duration, max: Duration) -> Self {
        self.options.backoff_min = min;
        self.options.backoff_max = max;
        self
    }

    /// How long opening a connection may take (default 2 s).
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.options.connect_timeout = timeout;
        self
    }

    /// How long a command may wait for its answer before the connection is considered
    /// broken and replaced (default 5 s).
    pub fn response_timeout(mut self, timeout: Duration) -> Self {
        self.options.response_timeout = timeout;
        self
    }

    /// How often the subscription connection is pinged to detect a silently dead broker
    /// (default 5 s; `None`: never).
    pub fn health_check_interval(mut self, interval: Option<Duration>) -> Self {
        self.options.health_check_interval = interval;
        self
    }

    /// Go neffos v0.0.25 compatibility mode (off by default), for a rolling migration from
    /// Go neffos: the instance also subscribes to and publishes in the channels of Go's
    /// `stackexchange/redis` created with `NewStackExchange(cfg, go_prefix)`, so Go and
    /// Rust instances on this Redis see each other's broadcasts, sends to an ID and
    /// `Server.Ask`s. Rust instances still talk to each other through their own channels;
    /// only what Go must see is also published in Go's format. See the README's
    /// "Migrating from Go neffos" for what Go's format cannot carry.
    pub fn go_compat(mut self, go_prefix: impl Into<String>) -> Self {
        self.go_prefix = Some(go_prefix.into());
        self
    }

    /// Validates the configuration and opens both connections, so a wrong address,
    /// password or a broker without RESP3 fails here. Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<RedisExchange> {
        let (driver, channels) = self.parts()?;
        let go = self.go_prefix.map(GoCompat::new);
        let stats = Arc::new(ExchangeCounters::default());
        let inbound = Arc::new(OnceLock::new());
        let pub_lost = Arc::new(Notify::new());
        let publisher = driver
            .connect(Pushes::publisher(stats.clone(), pub_lost.clone()))
            .await?;
        let sub_lost = Arc::new(Notify::new());
        let subscriber = driver
            .connect(
                Pushes::subscriber(inbound.clone(), stats.clone(), sub_lost.clone())
                    .with_go(go.clone()),
            )
            .await?;
        let live = (
            Live {
                conn: publisher,
                lost: pub_lost,
            },
            Live {
                conn: subscriber,
                lost: sub_lost,
            },
        );
        Ok(RedisExchange::assemble(
            driver,
            channels,
            self.options,
            stats,
            inbound,
            Some(live),
            go,
        ))
    }

    /// Validates the configuration without connecting: the exchange connects when the
    /// server starts it, and keeps retrying (with backoff) while the broker is unreachable.
    pub fn build(self) -> Result<RedisExchange> {
        let (driver, channels) = self.parts()?;
        Ok(RedisExchange::assemble(
            driver,
            channels,
            self.options,
            Arc::new(ExchangeCounters::default()),
            Arc::new(OnceLock::new()),
            None,
            self.go_prefix.map(GoCompat::new),
        ))
    }

    fn parts(&self) -> Result<(RedisDriver, Channels)> {
        let channels = Channels::new(&self.prefix)?;
        let driver = RedisDriver::new(
            &self.url,
            self.options.connect_timeout,
            self.options.response_timeout,
        )?;
        Ok((driver, channels))
    }
}

type Spawn = Box<dyn FnOnce(Uuid) + Send>;

/// The publisher's and the subscriber's connections, opened by [`RedisExchangeBuilder::connect`].
type Connected<C> = (Live<C>, Live<C>);

/// Scales a neffos [`Server`](neffos::Server) out over Redis pub/sub. See the
/// [crate documentation](crate) for how it works.
///
/// Give each server its own `RedisExchange` (one per instance); all instances with the same
/// prefix on the same Redis form one cluster.
pub struct RedisExchange {
    channels: Channels,
    stats: Arc<ExchangeCounters>,
    publish_tx: mpsc::Sender<PubCmd>,
    control_tx: ControlSender,
    inbound: Arc<OnceLock<Inbound>>,
    instance: OnceLock<Uuid>,
    spawn: Mutex<Option<Spawn>>,
    queue_full: AtomicU64,
    go: Option<Arc<GoCompat>>,
}

impl fmt::Debug for RedisExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisExchange")
            .field("prefix", &self.channels.prefix())
            .field("instance", &self.instance.get())
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl RedisExchange {
    /// Starts configuring an exchange for the Redis at `url`:
    /// `redis://[<user>][:<password>@]<host>[:<port>][/<db>]`, `rediss://…` (TLS, feature
    /// `tls`; `#insecure` skips hostname verification) or `redis+unix:///path`.
    ///
    /// Note that Redis pub/sub ignores the database number: channels are global to the
    /// server, which is what the [prefix](RedisExchangeBuilder::prefix) is for.
    pub fn builder(url: impl Into<String>) -> RedisExchangeBuilder {
        RedisExchangeBuilder {
            url: url.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            options: Options::default(),
            go_prefix: None,
        }
    }

    /// Connects with the default settings (prefix `neffos`).
    pub async fn connect(url: impl Into<String>) -> Result<RedisExchange> {
        RedisExchange::builder(url).connect().await
    }

    /// The Redis channel that carries `topic` under this exchange's prefix (for operators
    /// and tests), or `None` for a kind of topic this version does not know.
    pub fn channel(&self, topic: &Topic) -> Option<String> {
        self.channels.name(topic)
    }

    /// The name both connections carry on the broker (`CLIENT SETNAME`) once started:
    /// `neffos:<instance ID>`.
    pub fn client_name(&self) -> Option<String> {
        self.instance.get().map(|id| client_name(*id))
    }

    /// The counters of the [Go compatibility mode](RedisExchangeBuilder::go_compat), when on.
    pub fn go_stats(&self) -> Option<GoStats> {
        self.go.as_deref().map(GoCompat::stats)
    }

    pub(crate) fn assemble<D: Driver>(
        driver: D,
        channels: Channels,
        options: Options,
        stats: Arc<ExchangeCounters>,
        inbound: Arc<OnceLock<Inbound>>,
        live: Option<Connected<D::Conn>>,
        go: Option<Arc<GoCompat>>,
    ) -> RedisExchange {
        let (publish_tx, publish_rx) = mpsc::channel(options.queue_capacity.max(1));
        let (control_tx, control_rx) = crate::control::channel();
        let driver = Arc::new(driver);
        let (pub_conn, sub_conn) = match live {
            Some((p, s)) => (Some(p), Some(s)),
            None => (None, None),
        };
        let spawn: Spawn = {
            let channels = channels.clone();
            let stats = stats.clone();
            let inbound = inbound.clone();
            let go = go.clone();
            Box::new(move |instance: Uuid| {
                let name = client_name(instance);
                let reconnected = Reconnected::default();
                let publisher = Publisher {
                    driver: driver.clone(),
                    channels: channels.clone(),
                    stats: stats.clone(),
                    options: options.clone(),
                    name: name.clone(),
                    rx: publish_rx,
                    conn: pub_conn,
                    reconnected: reconnected.clone(),
                };
                let subscriber = Subscriber {
                    driver,
                    channels,
                    stats,
                    options,
                    name,
                    inbound,
                    go,
                    rx: control_rx,
                    conn: sub_conn,
                    reconnected,
                };
                tokio::spawn(publisher.run());
                tokio::spawn(subscriber.run());
            })
        };
        RedisExchange {
            channels,
            stats,
            publish_tx,
            control_tx,
            inbound,
            instance: OnceLock::new(),
            spawn: Mutex::new(Some(spawn)),
            queue_full: AtomicU64::new(0),
            go,
        }
    }

    fn control(&self, cmd: SubCmd) {
        // Fails only after close: nothing to subscribe any more.
        let _ = self.control_tx.send(cmd);
    }
}

fn client_name(instance: Uuid) -> String {
    format!("neffos:{instance}")
}

impl Exchange for RedisExchange {
    fn start(&self, instance: Uuid, inbound: Inbound) {
        if self.instance.set(instance).is_err() {
            tracing::warn!(%instance, "RedisExchange started twice; give each server its own");
            return;
        }
        let _ = self.inbound.set(inbound);
        self.control(SubCmd::Subscribe(Topic::Inbox(instance)));
        let Some(spawn) = self.spawn.lock().take() else {
            return;
        };
        if tokio::runtime::Handle::try_current().is_err() {
            tracing::error!(
                "RedisExchange::start must run inside a tokio runtime; the exchange stays idle"
            );
            return;
        }
        spawn(instance);
    }

    fn publish(&self, topic: Topic, payload: Bytes) {
        if let Some(go) = &self.go
            && !go.publish(&topic, &payload, &self.control_tx, &self.publish_tx)
        {
            return;
        }
        if let Err(e) = self.publish_tx.try_send(PubCmd::Publish(topic, payload)) {
            self.stats.add_publish_errors(1);
            let n = self.queue_full.fetch_add(1, Ordering::Relaxed) + 1;
            // Logged at 1, 2, 4, 8… so a long outage cannot flood the log.
            if n.is_power_of_two() {
                let why = match e {
                    mpsc::error::TrySendError::Full(_) => "publish queue full",
                    mpsc::error::TrySendError::Closed(_) => "exchange closed",
                };
                tracing::warn!(dropped_so_far = n, why, "Redis publish dropped");
            }
        }
    }

    fn subscribe(&self, topic: Topic) {
        if let Some(go) = &self.go {
            go.interest(&topic, true, &self.control_tx);
        }
        self.control(SubCmd::Subscribe(topic));
    }

    fn unsubscribe(&self, topic: Topic) {
        if let Some(go) = &self.go {
            go.interest(&topic, false, &self.control_tx);
        }
        self.control(SubCmd::Unsubscribe(topic));
    }

    /// Resolves once everything queued before it was applied: publishes sent (or counted
    /// as failed) and subscription changes confirmed by Redis. While the broker is
    /// unreachable it waits for the reconnection; wrap it in a timeout.
    fn flush(&self) -> ExchangeFuture<'_> {
        Box::pin(async move {
            if self.instance.get().is_none() {
                return;
            }
            let (sub_done, sub_wait) = oneshot::channel();
            self.control(SubCmd::Flush(sub_done));
            let (pub_done, pub_wait) = oneshot::channel();
            if self.publish_tx.send(PubCmd::Flush(pub_done)).await.is_ok() {
                let _ = pub_wait.await;
            }
            let _ = sub_wait.await;
        })
    }

    /// Sends what is queued, then closes both connections (which ends every subscription).
    fn close(&self) -> ExchangeFuture<'_> {
        Box::pin(async move {
            // Never started: dropping the tasks' parts closes the connections.
            drop(self.spawn.lock().take());
            let (sub_done, sub_wait) = oneshot::channel();
            self.control(SubCmd::Close(sub_done));
            let (pub_done, pub_wait) = oneshot::channel();
            if self.publish_tx.send(PubCmd::Close(pub_done)).await.is_ok() {
                let _ = pub_wait.await;
            }
            let _ = sub_wait.await;
        })
    }

    fn stats(&self) -> ExchangeStats {
        self.stats.snapshot()
    }

    /// True in Go compatibility mode: Go instances do not answer the cluster's queries.
    fn has_foreign_instances(&self) -> bool {
        self.go.is_some()
    }
}
