//! Test helpers and the exchange conformance suite (feature `testkit`).
//!
//! [`serve`] runs a [`Server`] on a free loopback port; [`conformance`] holds the suite
//! every [`Exchange`](crate::Exchange) must pass, given a factory of exchanges sharing one
//! broker.

pub mod broker;
pub mod broker_cluster;
pub mod chained;
pub mod conformance;
pub mod local;
pub mod numbered;
pub mod proxy;
pub mod recovery;

use std::net::SocketAddr;
use std::time::Duration;

use tokio::task::JoinHandle;

use crate::Server;

/// A server listening on a free loopback port; stops when dropped.
#[derive(Debug)]
pub struct TestServer {
    /// The neffos server.
    pub server: Server,
    /// Where it listens.
    pub addr: SocketAddr,
    task: JoinHandle<()>,
}

impl TestServer {
    /// The WebSocket URL of the endpoint (`ws://addr/echo`).
    pub fn url(&self) -> String {
        format!("ws://{}/echo", self.addr)
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Serves `server` at `/echo` on `127.0.0.1:0`.
pub async fn serve(server: Server) -> std::io::Result<TestServer> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let app = axum::Router::new().route("/echo", server.route());
    // The documented way to serve: timeouts, TCP_NODELAY and the peer's address.
    let task = tokio::spawn(async move {
        let _ = crate::serve(listener, app).await;
    });
    Ok(TestServer { server, addr, task })
}

/// Polls `condition` every millisecond until it holds or `timeout` passes; returns whether
/// it held. For state that has no event to await (counters of another task).
pub async fn eventually(timeout: Duration, mut condition: impl FnMut() -> bool) -> bool {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        if condition() {
            return true;
        }
        if tokio::time::Instant::now() >= deadline {
            return false;
        }
        tokio::time::sleep(Duration::from_millis(1)).await;
    }
}

/// Panics seen in this process since [`watch_panics`] was first called, in any thread or
/// task. A panic inside a spawned task does not fail a test by itself; tests that drive
/// the server hard call [`watch_panics`] first and assert this stays 0.
pub fn panics() -> usize {
    PANICS.load(std::sync::atomic::Ordering::SeqCst)
}

static PANICS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);

/// Starts counting panics (see [`panics`]); the previous panic hook still runs.
pub fn watch_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let previous = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            PANICS.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            previous(info);
        }));
    });
}
