//! [`NatsExchange`] and its builder.

use std::fmt;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Duration;

use async_nats::{Event, ServerAddr, ServerError};
use bytes::Bytes;
use neffos::protocol::gocompat::GoStats;
use neffos::{Exchange, ExchangeCounters, ExchangeFuture, ExchangeStats, Inbound, Topic};
use tokio::sync::{Notify, mpsc, oneshot};
use uuid::Uuid;

use crate::actor::{Actor, Cmd, Timings};
use crate::error::{Error, Result};
use crate::gocompat::GoCompat;
use crate::interest::{Interest, Key};
use crate::options::{ConnectOptions, NatsEvent};
use crate::subject::{DEFAULT_PREFIX, Subjects};

type OnEvent = Arc<dyn Fn(&NatsEvent) + Send + Sync>;

/// Configures a [`NatsExchange`]; from [`NatsExchange::builder`].
///
/// ```no_run
/// # async fn run() -> Result<(), neffos_nats::Error> {
/// use std::time::Duration;
/// use neffos_nats::{ConnectOptions, NatsExchange};
///
/// let exchange = NatsExchange::builder("nats://10.0.0.1:4222,nats://10.0.0.2:4222")
///     .prefix("chat.prod")
///     .options(
///         ConnectOptions::with_user_and_password("chat", "secret")
///             .name("chat-server")
///             .connection_timeout(Duration::from_secs(2)),
///     )
///     .connect()
///     .await?;
/// # let _ = exchange; Ok(()) }
/// ```
#[must_use]
pub struct NatsExchangeBuilder {
    urls: String,
    prefix: String,
    options: Option<ConnectOptions>,
    queue_capacity: usize,
    timings: Timings,
    on_event: Option<OnEvent>,
    go_prefix: Option<String>,
}

impl fmt::Debug for NatsExchangeBuilder {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsExchangeBuilder")
            .field("urls", &redact_urls(&self.urls))
            .field("prefix", &self.prefix)
            .field("options", &self.options)
            .field("queue_capacity", &self.queue_capacity)
            .field("timings", &self.timings)
            .finish_non_exhaustive()
    }
}

impl NatsExchangeBuilder {
    /// The prefix of every subject (default `neffos`): give each application sharing one
    /// NATS account its own. 1 to 128 characters: dot-separated non-empty tokens of
    /// `A-Z a-z 0-9 - _`.
    pub fn prefix(mut self, prefix: impl Into<String>) -> Self {
        self.prefix = prefix.into();
        self
    }

    /// The connection options: credentials (user/password, token, NKey, JWT credentials
    /// file), TLS, timeouts, connection name (default `neffos`). Options without
    /// credentials use those of the URL.
    ///
    /// The exchange always sets `no_echo` (an instance does not receive what it
    /// publishes; it would drop it anyway), the reconnect delay (see
    /// [`reconnect_max_delay`](Self::reconnect_max_delay)) and the event callback (to count
    /// reconnections; use [`on_event`](Self::on_event) to see the events too); it
    /// reconnects without limit. NKeys and credentials files need the `nkeys` feature, TLS
    /// the `tls` feature.
    pub fn options(mut self, options: ConnectOptions) -> Self {
        self.options = Some(options);
        self
    }

    /// Publishes that may wait for the exchange's task (default 65,536). When full, further
    /// publishes are dropped and counted in `publish_errors`: memory stays bounded and the
    /// caller never waits.
    pub fn queue_capacity(mut self, capacity: usize) -> Self {
        self.queue_capacity = capacity.max(1);
        self
    }

    /// How long one publish may wait for room in `async-nats`'s command queue (default
    /// 1 s). After such a wait, publishes are dropped (and counted) without waiting until
    /// one fits at once again.
    pub fn publish_timeout(mut self, timeout: Duration) -> Self {
        self.timings.publish = timeout;
        self
    }

    /// How long [`Exchange::flush`] (and `close`) may wait for the broker's answer (default
    /// 5 s): bounded even while the broker is unreachable.
    pub fn flush_timeout(mut self, timeout: Duration) -> Self {
        self.timings.flush = timeout;
        self
    }

    /// The longest wait between two reconnection attempts (default 100 ms). The exchange
    /// sets `async-nats`'s reconnect delay: the first pass over the configured servers is
    /// immediate (another node of a cluster takes over at once), then attempts are spaced
    /// `10 ms, 20 ms…` up to this cap, with jitter, so delivery resumes soon after a broker
    /// accepts connections again. Slow attempts are spaced by the connection timeout anyway.
    pub fn reconnect_max_delay(mut self, max: Duration) -> Self {
        self.timings.reconnect_max = max;
        self
    }

    /// Called with every connection event (connected, disconnected, slow consumer, server
    /// error…) after the exchange accounted for it. Keep it short: events are handled one
    /// at a time.
    pub fn on_event(mut self, f: impl Fn(&NatsEvent) + Send + Sync + 'static) -> Self {
        self.on_event = Some(Arc::new(f));
        self
    }

    /// Go neffos v0.0.25 compatibility mode (off by default), for a rolling migration from
    /// Go neffos: the instance also subscribes to and publishes on the subjects of Go's
    /// `stackexchange/nats` whose `SubjectPrefix` is `go_prefix` (Go's default is
    /// `neffos`), so Go and Rust instances on this NATS see each other's broadcasts, sends
    /// to an ID and `Server.Ask`s. Rust instances still talk to each other on their own
    /// subjects; only what Go must see is also published in Go's format. See the README's
    /// "Migrating from Go neffos" for what Go's format cannot carry. `go_prefix` follows
    /// the rules of [`prefix`](Self::prefix).
    pub fn go_compat(mut self, go_prefix: impl Into<String>) -> Self {
        self.go_prefix = Some(go_prefix.into());
        self
    }

    /// Validates the configuration and opens the connection, so a wrong address or
    /// credentials fail here. Must run inside a tokio runtime.
    pub async fn connect(self) -> Result<NatsExchange> {
        let subjects = Subjects::new(&self.prefix)?;
        let go = match self.go_prefix {
            Some(go_prefix) => {
                Subjects::new(&go_prefix)?;
                Some(GoCompat::new(go_prefix))
            }
            None => None,
        };
        let addrs = parse_urls(&self.urls)?;
        let stats = Arc::new(ExchangeCounters::default());
        let closed = Arc::new(Notify::new());
        let options = self.options.unwrap_or_default();
        let url_auth = !options.has_auth();
        let mut options = options.build().await?;
        if url_auth {
            options = url_credentials(options, &addrs);
        }
        let options = options
            .no_echo()
            .reconnect_delay_callback(crate::reconnect::callback(
                addrs.len(),
                self.timings.reconnect_max,
            ))
            .event_callback(events(stats.clone(), closed.clone(), self.on_event));
        let client = options.connect(addrs).await.map_err(Error::connect)?;
        let id = Uuid::new_v4();
        let (tx, rx) = mpsc::unbounded_channel();
        let interest = Arc::new(Interest::default());
        let queued = Arc::new(AtomicUsize::new(0));
        let server = client
            .try_server_info()
            .map(|info| format!("{}:{}", info.host, info.port))
            .unwrap_or_default();
        tracing::info!(
            %server,
            prefix = subjects.prefix(),
            "connected to NATS"
        );
        tokio::spawn(
            Actor {
                client,
                flush_subject: subjects.flush(id),
                subjects: subjects.clone(),
                stats: stats.clone(),
                queued: queued.clone(),
                rx,
                timings: self.timings,
                closed,
                go: go.clone(),
                interest: interest.clone(),
            }
            .run(),
        );
        Ok(NatsExchange {
            subjects,
            urls: self.urls,
            tx,
            queued,
            queue_capacity: self.queue_capacity,
            stats,
            started: AtomicBool::new(false),
            go,
            interest,
        })
    }
}

/// `nats://a:4222, tls://b:4222` → server addresses; `tls://` only with a TLS provider.
fn parse_urls(urls: &str) -> Result<Vec<ServerAddr>> {
    let mut addrs = Vec::new();
    for url in urls.split(',').map(str::trim).filter(|u| !u.is_empty()) {
        let addr: ServerAddr = url.parse().map_err(|e| Error::InvalidUrl {
            url: url.to_owned(),
            source: Box::new(e),
        })?;
        if addr.tls_required() && !tls_available() {
            return Err(Error::TlsNotEnabled);
        }
        addrs.push(addr);
    }
    if addrs.is_empty() {
        return Err(Error::NoUrl);
    }
    Ok(addrs)
}

/// `options` with the credentials of the first URL that has some: `user:password@` or
/// `token@` (async-nats takes credentials from its options only).
fn url_credentials(
    options: async_nats::ConnectOptions,
    addrs: &[ServerAddr],
) -> async_nats::ConnectOptions {
    let Some(addr) = addrs.iter().find(|a| a.has_user_pass()) else {
        return options;
    };
    let Some(user) = addr.username().map(percent_decode) else {
        return options;
    };
    match addr.password() {
        Some(password) => options.user_and_password(user, percent_decode(password)),
        None => options.token(user),
    }
}

/// A comma-separated URL list without its secrets, for `Debug` and logs.
fn redact_urls(urls: &str) -> String {
    urls.split(',')
        .map(|u| neffos::redact::url(u.trim()).to_string())
        .collect::<Vec<_>>()
        .join(",")
}

/// Decodes the `%XX` escapes of a URL's user information.
fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let escaped = (bytes[i] == b'%')
            .then(|| s.get(i + 1..i + 3))
            .flatten()
            .and_then(|hex| u8::from_str_radix(hex, 16).ok());
        match escaped {
            Some(b) => {
                out.push(b);
                i += 3;
            }
            None => {
                out.push(bytes[i]);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

fn tls_available() -> bool {
    cfg!(feature = "tls") || async_nats::rustls::crypto::CryptoProvider::get_default().is_some()
}

/// The event callback: counts reconnections, logs, signals the end of the connection.
fn events(
    stats: Arc<ExchangeCounters>,
    closed: Arc<Notify>,
    on_event: Option<OnEvent>,
) -> impl Fn(Event) -> std::future::Ready<()> + Send + Sync + 'static {
    let connects = AtomicU64::new(0);
    move |event| {
        match &event {
            Event::Connected => {
                // The first is the initial connection (also with `retry_on_initial_connect`).
                if connects.fetch_add(1, Ordering::Relaxed) > 0 {
                    stats.add_reconnect();
                    tracing::info!("reconnected to NATS; async-nats subscribes again");
                }
            }
            Event::Disconnected => {
                tracing::warn!("disconnected from NATS; reconnecting");
            }
            Event::Closed => {
                tracing::debug!("NATS connection closed");
                closed.notify_one();
            }
            Event::SlowConsumer(sid) => {
                tracing::warn!(
                    sid,
                    "NATS messages dropped by async-nats: a subscription's queue was full"
                );
            }
            Event::ServerError(e) => {
                if let ProtocolError::PublishDenied { subject } = ProtocolError::of(e) {
                    stats.add_publish_errors(1);
                    tracing::warn!(subject, "NATS refused a publication (permissions)");
                } else {
                    tracing::warn!(error = %e, "NATS server error");
                }
            }
            Event::ClientError(e) => {
                tracing::error!(error = %e, "NATS client error");
            }
            other => {
                tracing::info!(event = %other, "NATS connection event");
            }
        }
        if let Some(f) = &on_event {
            f(&NatsEvent::from(&event));
        }
        std::future::ready(())
    }
}

/// The `-ERR` messages of the NATS protocol this exchange tells apart. async-nats types
/// only "Authorization Violation" and hands every other `-ERR` over as the protocol line's
/// text, so the protocol grammar (`Permissions Violation for Publish to <subject>`) is
/// parsed here, once, into a type.
#[derive(Debug, PartialEq, Eq)]
enum ProtocolError<'a> {
    /// The user may not publish to `subject`; the connection stays open.
    PublishDenied { subject: &'a str },
    /// Anything else.
    Other,
}

impl<'a> ProtocolError<'a> {
    fn of(e: &'a ServerError) -> Self {
        match e {
            ServerError::Other(line) => {
                match line.strip_prefix("Permissions Violation for Publish to ") {
                    Some(subject) => ProtocolError::PublishDenied {
                        subject: subject.trim_matches('"'),
                    },
                    None => ProtocolError::Other,
                }
            }
            _ => ProtocolError::Other,
        }
    }
}

/// Scales a neffos [`Server`](neffos::Server) out over NATS. See the
/// [crate documentation](crate) for how it works.
///
/// Give each server its own `NatsExchange` (one per instance, one NATS connection each);
/// all instances with the same prefix on the same NATS account form one cluster. Dropping
/// the exchange (with the server) closes its connection; [`Exchange::close`] does it
/// gracefully.
pub struct NatsExchange {
    subjects: Subjects,
    urls: String,
    tx: mpsc::UnboundedSender<Cmd>,
    queued: Arc<AtomicUsize>,
    queue_capacity: usize,
    stats: Arc<ExchangeCounters>,
    started: AtomicBool,
    go: Option<Arc<GoCompat>>,
    /// Interest changes waiting for the task, coalesced.
    interest: Arc<Interest>,
}

impl fmt::Debug for NatsExchange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NatsExchange")
            .field("urls", &redact_urls(&self.urls))
            .field("prefix", &self.subjects.prefix())
            .field("queued", &self.queued.load(Ordering::Relaxed))
            .finish_non_exhaustive()
    }
}

impl NatsExchange {
    /// Connects to the NATS server(s) at `urls` (comma-separated, e.g.
    /// `nats://127.0.0.1:4222`) with the default prefix and options. Credentials may be in
    /// the URL (`nats://user:pass@host`, `nats://token@host`); with
    /// [`NatsExchangeBuilder::options`] they come from the options only.
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), neffos_nats::Error> {
    /// use neffos::{Events, Namespaces, Server};
    /// let exchange = neffos_nats::NatsExchange::connect("nats://127.0.0.1:4222").await?;
    /// let server = Server::builder(Namespaces::new().namespace("default", Events::new()))
    ///     .exchange(exchange)
    ///     .build();
    /// # let _ = server; Ok(()) }
    /// ```
    pub async fn connect(urls: impl Into<String>) -> Result<NatsExchange> {
        NatsExchange::builder(urls).connect().await
    }

    /// Starts configuring an exchange for the NATS server(s) at `urls` (comma-separated).
    pub fn builder(urls: impl Into<String>) -> NatsExchangeBuilder {
        NatsExchangeBuilder {
            urls: urls.into(),
            prefix: DEFAULT_PREFIX.to_owned(),
            options: None,
            queue_capacity: 65_536,
            timings: Timings {
                publish: Duration::from_secs(1),
                flush: Duration::from_secs(5),
                reconnect_max: crate::reconnect::DEFAULT_MAX_DELAY,
            },
            on_event: None,
            go_prefix: None,
        }
    }

    /// The subject of `topic` under this exchange's prefix (for operators: what to
    /// `nats sub`), or `None` for a kind of topic this version does not know.
    pub fn subject(&self, topic: &Topic) -> Option<String> {
        self.subjects.subject(topic)
    }

    /// The subject prefix.
    pub fn prefix(&self) -> &str {
        self.subjects.prefix()
    }

    /// The counters of the [Go compatibility mode](NatsExchangeBuilder::go_compat), when on.
    pub fn go_stats(&self) -> Option<GoStats> {
        self.go.as_deref().map(GoCompat::stats)
    }

    fn send(&self, cmd: Cmd) -> bool {
        match cmd {
            Cmd::Subscribe(topic) => self.change(Key::Topic(topic), 1),
            Cmd::Unsubscribe(topic) => self.change(Key::Topic(topic), -1),
            Cmd::SubscribeRaw(subject) => self.change(Key::Subject(subject), 1),
            Cmd::UnsubscribeRaw(subject) => self.change(Key::Subject(subject), -1),
            cmd => self.tx.send(cmd).is_ok(),
        }
    }

    /// Records an interest change; the first one of an empty table wakes the task.
    fn change(&self, key: Key, delta: i64) -> bool {
        if self.interest.add(key, delta) {
            self.tx.send(Cmd::Interest).is_ok()
        } else {
            !self.tx.is_closed()
        }
    }

    /// Queues a publish within the queue's capacity; else drops and counts it.
    fn enqueue_publish(&self, cmd: Cmd) {
        if self.queued.fetch_add(1, Ordering::Relaxed) >= self.queue_capacity {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.add_publish_errors(1);
            tracing::debug!("NATS publish queue full: dropped");
            return;
        }
        if !self.send(cmd) {
            self.queued.fetch_sub(1, Ordering::Relaxed);
            self.stats.add_publish_errors(1);
        }
    }
}

impl Exchange for NatsExchange {
    fn start(&self, instance: Uuid, inbound: Inbound) {
        if self.started.swap(true, Ordering::AcqRel) {
            tracing::warn!(%instance, "NatsExchange::start called twice; ignored");
            return;
        }
        self.send(Cmd::Start(instance, inbound));
    }

    fn publish(&self, topic: Topic, payload: Bytes) {
        let Some(go) = &self.go else {
            self.enqueue_publish(Cmd::Publish(topic, payload));
            return;
        };
        let (mirror, publish_envelope) = go.publish(&topic, &payload);
        if publish_envelope {
            self.enqueue_publish(Cmd::Publish(topic, payload));
        }
        for cmd in mirror {
            match cmd {
                Cmd::PublishRaw(..) => self.enqueue_publish(cmd),
                cmd => {
                    self.send(cmd);
                }
            }
        }
    }

    fn subscribe(&self, topic: Topic) {
        if let Some(cmd) = self.go.as_ref().and_then(|go| go.interest(&topic, true)) {
            self.send(cmd);
        }
        self.send(Cmd::Subscribe(topic));
    }

    fn unsubscribe(&self, topic: Topic) {
        if let Some(cmd) = self.go.as_ref().and_then(|go| go.interest(&topic, false)) {
            self.send(cmd);
        }
        self.send(Cmd::Unsubscribe(topic));
    }

    fn flush(&self) -> ExchangeFuture<'_> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Cmd::Flush(done));
        Box::pin(async move {
            if sent {
                let _ = wait.await;
            }
        })
    }

    fn close(&self) -> ExchangeFuture<'_> {
        let (done, wait) = oneshot::channel();
        let sent = self.send(Cmd::Close(done));
        Box::pin(async move {
            if sent {
                let _ = wait.await;
            }
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

#[cfg(test)]
mod protocol_error_tests {
    use super::*;

    #[test]
    fn publish_permission_violations_are_told_apart() {
        let denied = ServerError::Other("Permissions Violation for Publish to \"app.ns.x\"".into());
        assert_eq!(
            ProtocolError::of(&denied),
            ProtocolError::PublishDenied {
                subject: "app.ns.x"
            }
        );
        let subscribe =
            ServerError::Other("Permissions Violation for Subscription to \"app.>\"".into());
        assert_eq!(ProtocolError::of(&subscribe), ProtocolError::Other);
        let unrelated = ServerError::Other("Maximum Payload Violation (publish)".into());
        assert_eq!(ProtocolError::of(&unrelated), ProtocolError::Other);
        assert_eq!(
            ProtocolError::of(&ServerError::AuthorizationViolation),
            ProtocolError::Other
        );
    }
}
