//! The Rust client (feature `client`): dial a neffos server (ours, or Go neffos), connect
//! namespaces, emit, Ask, join and leave rooms, and handle the server's events.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use parking_lot::RwLock;
use tokio::sync::Notify;

use bytestring::ByteString;
use http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::conn::link::Link;
use crate::conn::{Conn, ConnInner, NewConn, NsConn, RequestInfo, Role, engine};
use crate::error::{
    BoxError, DialError, DialErrorKind, NamespaceError, NamespaceErrorKind, WaitError,
    WaitErrorKind,
};
use crate::handler::Namespaces;
use crate::transport::tungstenite_ws;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Configures and dials a [`Client`].
///
/// ```no_run
/// # async fn run() -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
/// use std::time::Duration;
/// use neffos::{Client, Events, Namespaces, Reconnect};
/// let client = Client::builder("ws://127.0.0.1:8080/echo")
///     .header("X-Username", "alice")
///     .namespaces(Namespaces::new().namespace(
///         "default",
///         Events::new().on("chat", |_ns, msg| async move {
///             tracing::info!(body = ?msg.body, "chat");
///         }),
///     ))
///     .reconnect(Reconnect::default())
///     .connect()
///     .await?;
/// let ns = client.connect("default").await?;
/// ns.emit("chat", "hello")?;
/// # Ok(()) }
/// ```
#[must_use]
pub struct ClientBuilder {
    url: String,
    headers: Vec<(String, String)>,
    namespaces: Namespaces,
    config: Config,
    reconnect: Option<Reconnect>,
    recovery: Option<Arc<crate::recovery::Tracker>>,
}

/// Without secrets: the URL's password and token parameters are hidden, and so are the
/// header values (an `Authorization` header is a credential).
impl std::fmt::Debug for ClientBuilder {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClientBuilder")
            .field("url", &crate::redact::url(&self.url))
            .field("headers", &RedactedHeaders(&self.headers))
            .field("namespaces", &self.namespaces)
            .field("config", &self.config)
            .field("reconnect", &self.reconnect)
            .finish_non_exhaustive()
    }
}

/// Header names with their values hidden.
struct RedactedHeaders<'a>(&'a [(String, String)]);

impl std::fmt::Debug for RedactedHeaders<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_map()
            .entries(
                self.0
                    .iter()
                    .map(|(name, _)| (name, crate::redact::REDACTED)),
            )
            .finish()
    }
}

/// Automatic reconnection: exponential backoff with jitter between `initial` and `max`.
/// After reconnecting, the client reconnects its namespaces and rejoins its rooms, and
/// sends `X-Websocket-Reconnect: <attempt>` as neffos.js does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct Reconnect {
    /// First delay.
    pub initial: Duration,
    /// Largest delay.
    pub max: Duration,
    /// Give up after this many failed attempts in a row (`None`: never).
    pub max_attempts: Option<u32>,
}

impl Default for Reconnect {
    fn default() -> Self {
        Reconnect {
            initial: Duration::from_millis(100),
            max: Duration::from_secs(10),
            max_attempts: None,
        }
    }
}

impl Reconnect {
    /// Backoff from `initial` doubling up to `max`.
    pub fn new(initial: Duration, max: Duration) -> Self {
        Reconnect {
            initial,
            max,
            max_attempts: None,
        }
    }

    /// Gives up after `n` failed attempts in a row.
    pub fn max_attempts(mut self, n: u32) -> Self {
        self.max_attempts = Some(n);
        self
    }

    fn delay(&self, attempt: u32) -> Duration {
        let exp = self
            .initial
            .saturating_mul(1u32 << attempt.min(16))
            .min(self.max);
        // Full jitter on the upper half avoids a thundering herd when a server returns.
        let half = exp / 2;
        half + half.mul_f64(fastrand::f64())
    }
}

impl ClientBuilder {
    /// Asks servers with recovery on ([`crate::recovery`]) to keep this client's session:
    /// after a reconnect it gets back its connection ID, namespaces and rooms, and every
    /// broadcast it missed exactly once, in order (it reports the last one it received);
    /// [`Client::recovery`] tells whether that happened. Use with [`Self::reconnect`].
    pub fn recovery(mut self, on: bool) -> Self {
        self.recovery = on.then(|| Arc::new(crate::recovery::Tracker::new()));
        self
    }

    /// Adds a header to the upgrade request.
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// The namespaces and events this client handles.
    pub fn namespaces(mut self, namespaces: Namespaces) -> Self {
        self.namespaces = namespaces;
        self
    }

    /// Limits and timings (pings are off by default on the client: servers ping).
    pub fn config(mut self, config: Config) -> Self {
        self.config = config;
        self
    }

    /// Reconnects automatically when the connection drops (not after [`Client::close`]).
    pub fn reconnect(mut self, policy: Reconnect) -> Self {
        self.reconnect = Some(policy);
        self
    }

    /// Dials, performs the neffos handshake, and returns the connected client.
    /// A refusal by the server is a [`DialError`] of kind
    /// [`Refused`](DialErrorKind::Refused) whose [`remote`](crate::error::Error::remote) is the reason.
    pub async fn connect(self) -> Result<Client, DialError> {
        let url = if self.url.contains("://") {
            self.url
        } else {
            format!("ws://{}", self.url)
        };
        let dialer = Dialer {
            url,
            headers: self.headers,
            namespaces: Arc::new(self.namespaces),
            config: Arc::new(self.config),
            recovery: self.recovery,
        };
        let conn = dialer.dial(0).await?;
        let shared = Arc::new(ClientShared {
            current: RwLock::new(conn),
            user_closed: AtomicBool::new(false),
            reconnects: AtomicU64::new(0),
            changed: Notify::new(),
        });
        if let Some(policy) = self.reconnect {
            tokio::spawn(supervise(Arc::downgrade(&shared), dialer, policy));
        }
        Ok(Client { shared })
    }
}

/// What it takes to dial again.
struct Dialer {
    url: String,
    headers: Vec<(String, String)>,
    namespaces: Arc<Namespaces>,
    config: Arc<Config>,
    recovery: Option<Arc<crate::recovery::Tracker>>,
}

impl std::fmt::Debug for Dialer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dialer")
            .field("url", &crate::redact::url(&self.url))
            .field("headers", &RedactedHeaders(&self.headers))
            .finish_non_exhaustive()
    }
}

impl Dialer {
    async fn dial(&self, attempt: u32) -> Result<Conn, DialError> {
        let context = || format!("dial {}", crate::redact::url(&self.url));
        let invalid =
            |e: BoxError| DialError::new(DialErrorKind::InvalidRequest, context()).with_source(e);
        let mut request = self
            .url
            .as_str()
            .into_client_request()
            .map_err(|e| invalid(e.into()))?;
        for (name, value) in &self.headers {
            let name = HeaderName::try_from(name.as_str()).map_err(|e| invalid(e.into()))?;
            let value = HeaderValue::try_from(value.as_str()).map_err(|e| invalid(e.into()))?;
            request.headers_mut().append(name, value);
        }
        if attempt > 0 {
            request
                .headers_mut()
                .insert("x-websocket-reconnect", HeaderValue::from(attempt));
        }
        if let Some(tracker) = &self.recovery {
            for (name, value) in tracker.headers(attempt > 0) {
                let value = HeaderValue::try_from(value).map_err(|e| {
                    DialError::new(DialErrorKind::Transport, format!("header {name}"))
                        .with_source(e)
                })?;
                request.headers_mut().insert(name, value);
            }
        }
        let config = &self.config;
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(config.read_buffer_size)
            .write_buffer_size(config.write_buffer_size)
            .max_message_size(Some(config.max_message_size))
            .max_frame_size(Some(config.max_frame_size.min(config.max_message_size)));
        let (socket, _response) = tokio::time::timeout(
            config.handshake_timeout,
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true),
        )
        .await
        .map_err(|_| {
            let context = format!("{} within {:?}", context(), config.handshake_timeout);
            DialError::new(DialErrorKind::Timeout, context)
        })?
        .map_err(|e| DialError::new(DialErrorKind::Transport, context()).with_source(e))?;
        let mut link = Link::new(tungstenite_ws::socket(socket));

        let native_only = self.namespaces.native_mode() == neffos_protocol::NativeMode::Only;
        // The handshake runs before the connection exists: the ID comes with `A<id>`.
        let (id, early) = if native_only {
            (String::new(), Default::default())
        } else {
            engine::client_handshake(&mut link, config.handshake_timeout).await?
        };

        let inner = ConnInner::new(NewConn {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: ByteString::from(id),
            role: Role::Client,
            request: RequestInfo::default(),
            handlers: self.namespaces.clone(),
            config: self.config.clone(),
            server: crate::conn::Hub::client(),
        });
        if let Some(tracker) = &self.recovery {
            let _ = inner
                .recovery
                .set(crate::recovery::Attached::Client(tracker.clone()));
        }
        inner.acknowledged.store(true, Ordering::Release);
        if native_only {
            engine::connect_native(&inner);
        }
        tokio::spawn(engine::run(inner.clone(), link, early));
        Ok(Conn(inner))
    }
}

/// Redials after an unexpected close and restores namespaces and rooms.
async fn supervise(shared: std::sync::Weak<ClientShared>, dialer: Dialer, policy: Reconnect) {
    loop {
        let Some(current) = shared.upgrade().map(|s| s.current.read().clone()) else {
            return;
        };
        current.0.finished.cancelled().await;
        let Some(s) = shared.upgrade() else { return };
        if s.user_closed.load(Ordering::Acquire) {
            return;
        }
        drop(s);
        let snapshot: HashMap<String, Vec<String>> = current
            .0
            .last_namespaces
            .lock()
            .iter()
            .flat_map(|table| table.iter())
            .map(|(ns, rooms)| {
                (
                    ns.to_string(),
                    rooms.iter().map(|r| r.to_string()).collect(),
                )
            })
            .collect();
        let mut attempt = 0u32;
        let conn = loop {
            attempt += 1;
            if policy.max_attempts.is_some_and(|max| attempt > max) {
                tracing::warn!(attempts = attempt - 1, "giving up reconnecting");
                return;
            }
            tokio::time::sleep(policy.delay(attempt - 1)).await;
            if shared
                .upgrade()
                .is_none_or(|s| s.user_closed.load(Ordering::Acquire))
            {
                return;
            }
            match dialer.dial(attempt).await {
                Ok(conn) => break conn,
                Err(e) => tracing::debug!(attempt, error = %e, "reconnect failed"),
            }
        };
        for (ns, rooms) in snapshot {
            match conn.connect(&ns).await {
                Ok(ns_conn) => {
                    for room in rooms {
                        if let Err(e) = ns_conn.join_room(&room).await {
                            tracing::warn!(ns, room, error = %e, "room not restored");
                        }
                    }
                }
                Err(e) => tracing::warn!(ns, error = %e, "namespace not restored"),
            }
        }
        let Some(s) = shared.upgrade() else { return };
        *s.current.write() = conn;
        s.reconnects.fetch_add(1, Ordering::Relaxed);
        s.changed.notify_waiters();
    }
}

/// Writes the handshake frames, then hands the sink back.
#[derive(Debug)]
struct ClientShared {
    current: RwLock<Conn>,
    user_closed: AtomicBool,
    reconnects: AtomicU64,
    changed: Notify,
}

/// A connected client. Cheap to clone. Dropping it does not close the connection
/// (call [`Client::close`]); with [`ClientBuilder::reconnect`] it survives drops of the
/// connection, and [`Client::conn`] is then the newest one.
#[derive(Debug, Clone)]
pub struct Client {
    shared: Arc<ClientShared>,
}

impl Client {
    /// Starts configuring a client for `url` (`ws://` is added when no scheme is given).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            headers: Vec::new(),
            namespaces: Namespaces::new(),
            config: Config::default().ping_interval(None).idle_timeout(None),
            reconnect: None,
            recovery: None,
        }
    }

    /// The ID the server gave the current connection.
    pub fn id(&self) -> String {
        self.conn().id().to_owned()
    }

    /// The current connection.
    pub fn conn(&self) -> Conn {
        self.shared.current.read().clone()
    }

    /// How many times the client reconnected.
    pub fn reconnects(&self) -> u64 {
        self.shared.reconnects.load(Ordering::Relaxed)
    }

    /// Waits until the client has reconnected more than `n` times, at most `timeout`.
    pub async fn wait_reconnects(&self, n: u64, timeout: Duration) -> Result<(), WaitError> {
        let wait = async {
            loop {
                let changed = self.shared.changed.notified();
                if self.reconnects() > n {
                    return;
                }
                changed.await;
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            WaitError::new(
                WaitErrorKind::Timeout,
                format!("wait for reconnection {} within {timeout:?}", n + 1),
            )
        })
    }

    fn tracker(&self) -> Option<Arc<crate::recovery::Tracker>> {
        match self.conn().0.recovery.get() {
            Some(crate::recovery::Attached::Client(tracker)) => Some(tracker.clone()),
            _ => None,
        }
    }

    /// What the server said about this client's session in namespace `ns` on the current
    /// connection ([`ClientBuilder::recovery`]): `None` until it said something (and on a
    /// first connection, which presents nothing to recover).
    pub fn recovery(&self, ns: &str) -> Option<crate::recovery::Outcome> {
        self.tracker()?.outcome(ns, self.conn().0.key)
    }

    /// The position of the last recorded broadcast this client received in `ns`.
    pub fn recovery_position(&self, ns: &str) -> Option<crate::recovery::Position> {
        self.tracker()?.position(ns)
    }

    /// Waits until the server said whether this client's session came back in `ns` on the
    /// current connection, at most `timeout`.
    pub async fn wait_recovery(
        &self,
        ns: &str,
        timeout: Duration,
    ) -> Result<crate::recovery::Outcome, WaitError> {
        let wait = async {
            loop {
                let reconnected = self.shared.changed.notified();
                let tracker = self.tracker();
                let said = tracker.as_ref().map(|t| t.changed.notified());
                if let Some(outcome) = self.recovery(ns) {
                    return outcome;
                }
                match said {
                    Some(said) => tokio::select! {
                        () = said => {}
                        () = reconnected => {}
                    },
                    None => reconnected.await,
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            WaitError::new(
                WaitErrorKind::Timeout,
                format!("wait for the recovery outcome of namespace {ns:?} within {timeout:?}"),
            )
        })
    }

    /// Connects namespace `ns` (it must be declared in this client's namespaces).
    pub async fn connect(&self, ns: &str) -> Result<NsConn, NamespaceError> {
        self.conn().connect(ns).await
    }

    /// The connected namespace `ns` of the current connection.
    pub fn namespace(&self, ns: &str) -> Option<NsConn> {
        self.conn().namespace(ns)
    }

    /// Waits until the server connected namespace `ns` to us, at most `timeout`.
    pub async fn wait_server_connect(
        &self,
        ns: &str,
        timeout: Duration,
    ) -> Result<NsConn, NamespaceError> {
        let conn = self.conn();
        let context = || format!("wait for the server to connect namespace {ns:?}");
        let wait = async {
            loop {
                let changed = conn.0.namespaces_changed().notified();
                if let Some(ns) = conn.namespace(ns) {
                    return Ok(ns);
                }
                if conn.is_closed() {
                    return Err(NamespaceError::new(NamespaceErrorKind::Closed, context()));
                }
                tokio::select! {
                    () = changed => {}
                    () = conn.closed() => {}
                }
            }
        };
        tokio::time::timeout(timeout, wait).await.map_err(|_| {
            let context = format!("{} within {timeout:?}", context());
            NamespaceError::new(NamespaceErrorKind::Timeout, context)
        })?
    }

    /// Closes the connection (1000) and stops reconnecting.
    pub fn close(&self) {
        self.shared.user_closed.store(true, Ordering::Release);
        self.conn().close();
    }

    /// Waits until the current connection is closed.
    pub async fn closed(&self) {
        self.conn().closed().await;
    }
}

#[cfg(test)]
mod secret_tests {
    use super::*;

    #[test]
    fn the_builder_shows_no_password_token_or_header_value() {
        let builder = Client::builder("ws://user:hunter2@host/echo?token=hunter3")
            .header("Authorization", "Bearer hunter4");
        let shown = format!("{builder:?} {builder:#?}");
        for secret in ["hunter2", "hunter3", "hunter4"] {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
        assert!(shown.contains("Authorization"), "{shown}");
    }
}
