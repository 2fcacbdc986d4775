//! [`LoadBalancer`]: a loopback TCP proxy that plays the load balancer in front of
//! instances: it forwards new connections to the instance currently chosen, refuses them
//! while none is (or holds them until one is), and can cut every open connection at once
//! (both sides see the socket end without a WebSocket close, as when an instance or the
//! network dies).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

/// A loopback TCP proxy with a switchable upstream; stops when dropped.
#[derive(Debug)]
pub struct LoadBalancer {
    addr: SocketAddr,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    /// New connections wait for an upstream instead of being refused.
    holding: watch::Sender<bool>,
    cuts: watch::Sender<u64>,
    forwarded: Arc<Mutex<Option<Instant>>>,
    task: JoinHandle<()>,
}

impl Drop for LoadBalancer {
    fn drop(&mut self) {
        self.task.abort();
        self.cuts.send_modify(|n| *n += 1);
    }
}

impl LoadBalancer {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let upstream = Arc::new(Mutex::new(Some(upstream)));
        let (cuts, _) = watch::channel(0u64);
        let forwarded = Arc::new(Mutex::new(None));
        let (holding, _) = watch::channel(false);
        let task = tokio::spawn(accept(
            listener,
            upstream.clone(),
            holding.clone(),
            cuts.clone(),
            forwarded.clone(),
        ));
        Ok(LoadBalancer {
            addr,
            upstream,
            holding,
            cuts,
            forwarded,
            task,
        })
    }

    /// Where clients connect.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// The WebSocket URL of the neffos endpoint behind it (`ws://addr/echo`).
    pub fn url(&self) -> String {
        format!("ws://{}/echo", self.addr)
    }

    /// Sends new connections (and those held) to `upstream`, or refuses them (closed at
    /// once) with `None`.
    pub fn route_to(&self, upstream: Option<SocketAddr>) {
        *self.upstream.lock() = upstream;
        self.holding.send_replace(false);
    }

    /// Holds new connections (accepted, nothing forwarded) until the next
    /// [`Self::route_to`], as a load balancer waiting for a healthy instance. Some clients
    /// never retry a connection closed before any answer (neffos.js's reconnect probe under
    /// Node waits forever on it), so this is how they see an outage.
    pub fn hold(&self) {
        *self.upstream.lock() = None;
        self.holding.send_replace(true);
    }

    /// Ends every connection open now, on both sides, without a WebSocket close.
    pub fn cut(&self) {
        self.cuts.send_modify(|n| *n += 1);
    }

    /// When the last connection sent to an upstream was accepted (a reconnect's start, for
    /// timing what follows it).
    pub fn last_forwarded(&self) -> Option<Instant> {
        *self.forwarded.lock()
    }
}

async fn accept(
    listener: TcpListener,
    upstream: Arc<Mutex<Option<SocketAddr>>>,
    holding: watch::Sender<bool>,
    cuts: watch::Sender<u64>,
    forwarded: Arc<Mutex<Option<Instant>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let accepted = Instant::now();
        let mut held = holding.subscribe();
        if !*held.borrow_and_update() && upstream.lock().is_none() {
            drop(client);
            continue;
        }
        let mut cut = cuts.subscribe();
        cut.borrow_and_update();
        let upstream = upstream.clone();
        let forwarded = forwarded.clone();
        tokio::spawn(async move {
            if held.wait_for(|held| !*held).await.is_err() {
                return;
            }
            let Some(to) = *upstream.lock() else {
                return;
            };
            *forwarded.lock() = Some(accepted);
            let Ok(mut server) = TcpStream::connect(to).await else {
                return;
            };
            let mut client = client;
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            tokio::select! {
                _ = tokio::io::copy_bidirectional(&mut client, &mut server) => {}
                _ = cut.changed() => {}
            }
        });
    }
}
