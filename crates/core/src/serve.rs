//! Serving an axum `Router` over TCP with the protections a public WebSocket endpoint needs
//! (feature `axum`).
//!
//! `axum::serve` gives hyper no timer, so a client that connects and stays silent, or sends
//! its request headers one byte a minute (slowloris), holds a socket and a task forever;
//! enough of them exhaust the file descriptors and lock every new client out. [`serve`]
//! is the same one-liner with limits that hold by default:
//!
//! | limit | default |
//! |---|---|
//! | time to receive a request's headers (also between requests on a kept-alive connection) | 10 s |
//! | time a connection may spend before its WebSocket upgrade (plain HTTP requests included) | 30 s |
//! | connections not upgraded yet, at once (past it, new TCP connections are closed at once) | 4,096 |
//! | time to let the peer read our close before the socket is dropped (lingering close) | 2 s |
//!
//! It also sets `TCP_NODELAY` (small real-time frames must not wait for Nagle's algorithm)
//! and hands each request the peer's address as axum's `ConnectInfo<SocketAddr>`, so
//! [`Config::max_connections_per_ip`](crate::Config::max_connections_per_ip) applies.
//!
//! ```no_run
//! # async fn run() -> std::io::Result<()> {
//! use neffos::{Events, Namespaces, Server};
//!
//! let server = Server::builder(Namespaces::new().namespace("default", Events::new())).build();
//! let app = axum::Router::new().route("/echo", server.route());
//! let listener = tokio::net::TcpListener::bind("127.0.0.1:8080").await?;
//! neffos::serve(listener, app).await
//! # }
//! ```

use std::convert::Infallible;
use std::future::{Future, IntoFuture};
use std::io;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use axum::Router;
use axum::extract::ConnectInfo;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

/// Serves `router` on `listener` with the limits above; await it (or
/// [`Serve::with_graceful_shutdown`]) to run.
pub fn serve(listener: TcpListener, router: Router) -> Serve {
    Serve {
        listener,
        router,
        limits: Limits::default(),
        shutdown: None,
    }
}

/// The limits of [`serve`].
#[derive(Debug, Clone, Copy)]
struct Limits {
    header_read_timeout: Duration,
    upgrade_timeout: Duration,
    max_unupgraded: usize,
    linger: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_read_timeout: Duration::from_secs(10),
            upgrade_timeout: Duration::from_secs(30),
            max_unupgraded: 4096,
            linger: Duration::from_secs(2),
        }
    }
}

/// A server being set up by [`serve`]; runs when awaited.
#[must_use = "a Serve does nothing until awaited"]
pub struct Serve {
    listener: TcpListener,
    router: Router,
    limits: Limits,
    shutdown: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
}

impl std::fmt::Debug for Serve {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Serve")
            .field("listener", &self.listener)
            .field("limits", &self.limits)
            .finish_non_exhaustive()
    }
}

impl Serve {
    /// Time a client has to send a request's headers, counted from the connection's start
    /// (and from the previous response on a kept-alive connection). Default 10 s.
    pub fn header_read_timeout(mut self, timeout: Duration) -> Self {
        self.limits.header_read_timeout = timeout;
        self
    }

    /// Time a connection may spend before its WebSocket upgrade; then it is asked to close
    /// (a request in progress may finish within as long again). Default 30 s.
    pub fn upgrade_timeout(mut self, timeout: Duration) -> Self {
        self.limits.upgrade_timeout = timeout;
        self
    }

    /// Connections not upgraded yet that may be open at once; past it new TCP connections
    /// are closed as soon as accepted (counted in `neffos_unupgraded_refused_total`).
    /// Default 4,096.
    pub fn max_unupgraded(mut self, max: usize) -> Self {
        self.limits.max_unupgraded = max;
        self
    }

    /// Time given to the peer to read what we sent last (e.g. a close frame) before the
    /// socket is dropped: the write side is shut down and unread input is drained, so the
    /// peer gets our close instead of a reset. Default 2 s.
    pub fn linger(mut self, timeout: Duration) -> Self {
        self.limits.linger = timeout;
        self
    }

    /// Stops accepting when `signal` completes (open connections are left to
    /// [`Server::shutdown`](crate::Server::shutdown)).
    pub fn with_graceful_shutdown(
        mut self,
        signal: impl Future<Output = ()> + Send + 'static,
    ) -> Self {
        self.shutdown = Some(Box::pin(signal));
        self
    }

    async fn run(self) -> io::Result<()> {
        let Serve {
            listener,
            router,
            limits,
            shutdown,
        } = self;
        let mut shutdown = shutdown.unwrap_or_else(|| Box::pin(std::future::pending()));
        let mut http = http1::Builder::new();
        http.timer(TokioTimer::new())
            .header_read_timeout(limits.header_read_timeout)
            .keep_alive(true);
        let http = Arc::new(http);
        let unupgraded = Arc::new(Semaphore::new(limits.max_unupgraded));
        let refused = metrics::counter!("neffos_unupgraded_refused_total");
        loop {
            let (tcp, peer) = tokio::select! {
                accepted = listener.accept() => match accepted {
                    Ok(accepted) => accepted,
                    Err(e) => {
                        accept_failed(e).await;
                        continue;
                    }
                },
                () = &mut shutdown => return Ok(()),
            };
            let Ok(permit) = unupgraded.clone().try_acquire_owned() else {
                refused.increment(1);
                tracing::debug!(%peer, "too many connections not upgraded yet: closed");
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let router = router.clone();
            let http = http.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(move |mut request| {
                    request.extensions_mut().insert(ConnectInfo(peer));
                    call(router.clone(), request)
                });
                let io = TokioIo::new(Lingering::new(tcp, limits.linger));
                let conn = http.serve_connection(io, service).with_upgrades();
                tokio::pin!(conn);
                // The connection future ends at the upgrade (the WebSocket lives on in its
                // own task) or when the connection closes.
                let timed_out = tokio::time::timeout(limits.upgrade_timeout, conn.as_mut())
                    .await
                    .is_err();
                if timed_out {
                    conn.as_mut().graceful_shutdown();
                    let _ = tokio::time::timeout(limits.upgrade_timeout, conn).await;
                }
                drop(permit);
            });
        }
    }
}

impl IntoFuture for Serve {
    type Output = io::Result<()>;
    type IntoFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send>>;

    fn into_future(self) -> Self::IntoFuture {
        Box::pin(self.run())
    }
}

async fn call(
    mut router: Router,
    request: hyper::Request<Incoming>,
) -> Result<axum::response::Response, Infallible> {
    // A Router is always ready: no `poll_ready` needed before `call`.
    tower_service::Service::call(&mut router, request).await
}

/// An accept error: the peer's own trouble is skipped; anything else (out of file
/// descriptors) is logged and waited out briefly instead of spinning.
async fn accept_failed(e: io::Error) {
    use io::ErrorKind::{ConnectionAborted, ConnectionRefused, ConnectionReset};
    if matches!(
        e.kind(),
        ConnectionAborted | ConnectionRefused | ConnectionReset
    ) {
        return;
    }
    tracing::error!(error = %e, "accept failed");
    tokio::time::sleep(Duration::from_millis(100)).await;
}

/// A TCP stream that, when dropped, shuts its write side down and drains unread input for
/// a while before closing: closing a socket with unread data sends a reset, and the peer
/// may then lose what we wrote last (the close frame).
struct Lingering {
    tcp: Option<TcpStream>,
    linger: Duration,
}

impl Lingering {
    fn new(tcp: TcpStream, linger: Duration) -> Self {
        Lingering {
            tcp: Some(tcp),
            linger,
        }
    }

    fn tcp(&mut self) -> Pin<&mut TcpStream> {
        // Taken only in `drop`.
        Pin::new(self.tcp.as_mut().expect("present until dropped"))
    }
}

impl Drop for Lingering {
    fn drop(&mut self) {
        let (Some(mut tcp), Ok(runtime)) = (self.tcp.take(), tokio::runtime::Handle::try_current())
        else {
            return;
        };
        let linger = self.linger;
        runtime.spawn(async move {
            let _ = tokio::time::timeout(linger, async {
                let _ = tcp.shutdown().await;
                let mut sink = [0u8; 512];
                while let Ok(1..) = tcp.read(&mut sink).await {}
            })
            .await;
        });
    }
}

impl AsyncRead for Lingering {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        self.tcp().poll_read(cx, buf)
    }
}

impl AsyncWrite for Lingering {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.tcp().poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        self.tcp().poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        self.tcp().poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tcp.as_ref().is_some_and(|t| t.is_write_vectored())
    }
}
