//! The Rust client (feature `client`): dial a neffos server (ours, or Go neffos), connect
//! namespaces, emit, Ask, join and leave rooms, and handle the server's events.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use http::{HeaderName, HeaderValue};
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::protocol::WebSocketConfig;

use crate::config::Config;
use crate::conn::{Conn, ConnInner, NewConn, NsConn, RequestInfo, Role, engine};
use crate::error::{Error, Result};
use crate::handler::Namespaces;
use crate::transport::tungstenite_ws;

static NEXT_KEY: AtomicU64 = AtomicU64::new(1);

/// Configures and dials a [`Client`].
///
/// ```no_run
/// # async fn run() -> neffos::Result<()> {
/// use neffos::{Client, Events, Namespaces};
/// let client = Client::builder("ws://127.0.0.1:8080/echo")
///     .header("X-Username", "alice")
///     .namespaces(Namespaces::new().namespace(
///         "default",
///         Events::new().on("chat", |_ns, msg| async move {
///             tracing::info!(body = ?msg.body, "chat");
///         }),
///     ))
///     .connect()
///     .await?;
/// let ns = client.connect("default").await?;
/// ns.emit("chat", "hello")?;
/// # Ok(()) }
/// ```
#[derive(Debug)]
#[must_use]
pub struct ClientBuilder {
    url: String,
    headers: Vec<(String, String)>,
    namespaces: Namespaces,
    config: Config,
}

impl ClientBuilder {
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

    /// Dials, performs the neffos handshake, and returns the connected client.
    /// A refusal by the server is [`Error::Refused`] with its reason.
    pub async fn connect(self) -> Result<Client> {
        let url = if self.url.contains("://") {
            self.url
        } else {
            format!("ws://{}", self.url)
        };
        let mut request = url
            .as_str()
            .into_client_request()
            .map_err(|e| Error::Transport(e.to_string()))?;
        for (name, value) in &self.headers {
            let name =
                HeaderName::try_from(name.as_str()).map_err(|e| Error::Transport(e.to_string()))?;
            let value = HeaderValue::try_from(value.as_str())
                .map_err(|e| Error::Transport(e.to_string()))?;
            request.headers_mut().append(name, value);
        }
        let ws_config = WebSocketConfig::default()
            .read_buffer_size(self.config.read_buffer_size)
            .write_buffer_size(self.config.write_buffer_size)
            .max_message_size(Some(self.config.max_frame_size))
            .max_frame_size(Some(self.config.max_frame_size));
        let (socket, _response) = tokio::time::timeout(
            self.config.handshake_timeout,
            tokio_tungstenite::connect_async_with_config(request, Some(ws_config), true),
        )
        .await
        .map_err(|_| Error::Transport("dial timed out".into()))?
        .map_err(|e| Error::Transport(e.to_string()))?;
        let (mut stream, sink) = tungstenite_ws::split(socket);

        // The handshake runs before the connection exists: the ID comes with `A<id>`.
        let config = Arc::new(self.config);
        let (tx, rx) = tokio::sync::mpsc::channel(config.outbound_queue.max(1));
        let (sink_tx, writer_rx) = (tx, rx);
        let handshake_writer = tokio::spawn(forward_handshake(sink, writer_rx));
        let id = engine::client_handshake(&mut stream, &sink_tx, config.handshake_timeout).await;
        drop(sink_tx);
        let sink = handshake_writer
            .await
            .map_err(|e| Error::Transport(e.to_string()))??;
        let id = id?;

        let (inner, rx) = ConnInner::new(NewConn {
            key: NEXT_KEY.fetch_add(1, Ordering::Relaxed),
            id: ByteString::from(id),
            role: Role::Client,
            request: RequestInfo::default(),
            handlers: Arc::new(self.namespaces),
            config,
            server: None,
        });
        inner.acknowledged.store(true, Ordering::Release);
        if inner.native == neffos_protocol::NativeMode::Only {
            crate::conn::engine::connect_native(&inner);
        }
        let writer = engine::spawn_writer(&inner, sink, rx);
        let reader_inner = inner.clone();
        tokio::spawn(async move {
            engine::run_loop(&reader_inner, stream, Default::default()).await;
            let _ = writer.await;
        });
        Ok(Client { conn: Conn(inner) })
    }
}

/// Writes the handshake frames, then hands the sink back.
async fn forward_handshake<W>(
    mut sink: W,
    mut rx: tokio::sync::mpsc::Receiver<crate::transport::WsOut>,
) -> Result<W>
where
    W: futures_util::Sink<crate::transport::WsOut, Error = crate::transport::TransportError>
        + Unpin,
{
    use futures_util::SinkExt;
    while let Some(item) = rx.recv().await {
        sink.send(item).await.map_err(|e| Error::Transport(e.0))?;
    }
    Ok(sink)
}

/// A connected client. Cheap to clone; dropping it does not close the connection
/// (call [`Client::close`]).
#[derive(Debug, Clone)]
pub struct Client {
    conn: Conn,
}

impl Client {
    /// Starts configuring a client for `url` (`ws://` is added when no scheme is given).
    pub fn builder(url: impl Into<String>) -> ClientBuilder {
        ClientBuilder {
            url: url.into(),
            headers: Vec::new(),
            namespaces: Namespaces::new(),
            config: Config::default().ping_interval(None).idle_timeout(None),
        }
    }

    /// The ID the server gave this connection.
    pub fn id(&self) -> &str {
        self.conn.id()
    }

    /// The underlying connection.
    pub fn conn(&self) -> &Conn {
        &self.conn
    }

    /// Connects namespace `ns` (it must be declared in this client's namespaces).
    pub async fn connect(&self, ns: &str) -> Result<NsConn> {
        self.conn.connect(ns).await
    }

    /// Waits until the server connected namespace `ns` to us, at most `timeout`.
    pub async fn wait_server_connect(&self, ns: &str, timeout: Duration) -> Result<NsConn> {
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            if let Some(ns) = self.conn.namespace(ns) {
                return Ok(ns);
            }
            if self.conn.is_closed() {
                return Err(Error::ConnectionClosed);
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(Error::Timeout(timeout));
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }

    /// Closes the connection (1000).
    pub fn close(&self) {
        self.conn.close();
    }

    /// Waits until the connection is closed.
    pub async fn closed(&self) {
        self.conn.closed().await;
    }
}
