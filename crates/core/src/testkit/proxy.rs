//! [`LoadBalancer`]: a loopback TCP proxy that plays the load balancer in front of
//! instances: it forwards new connections to the instance currently chosen, refuses them
//! while none is, and can cut every open connection at once (both sides see the socket
//! end without a WebSocket close, as when an instance or the network dies).

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
        let task = tokio::spawn(accept(
            listener,
            upstream.clone(),
            cuts.clone(),
            forwarded.clone(),
        ));
        Ok(LoadBalancer {
            addr,
            upstream,
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

    /// Sends new connections to `upstream`, or refuses them (closed at once) with `None`.
    pub fn route_to(&self, upstream: Option<SocketAddr>) {
        *self.upstream.lock() = upstream;
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
    cuts: watch::Sender<u64>,
    forwarded: Arc<Mutex<Option<Instant>>>,
) {
    while let Ok((client, _)) = listener.accept().await {
        let accepted = Instant::now();
        let Some(to) = *upstream.lock() else {
            drop(client);
            continue;
        };
        *forwarded.lock() = Some(accepted);
        let mut cut = cuts.subscribe();
        cut.borrow_and_update();
        tokio::spawn(async move {
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
