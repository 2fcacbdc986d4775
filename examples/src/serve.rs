//! Serving an axum app until Ctrl-C, closing the neffos servers cleanly.

use std::net::SocketAddr;
use std::time::Duration;

use axum::Router;
use axum::serve::ListenerExt;
use neffos::Server;
use tokio::net::TcpListener;

/// How long open connections get to close on Ctrl-C.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` (with the peer address available to the server) until
/// `shutdown` completes.
///
/// Accepted sockets get `TCP_NODELAY`: a real-time server writes small frames, and with
/// Nagle's algorithm a frame written while the previous one is not yet acknowledged waits
/// for the peer's delayed ACK (about 40 ms).
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let listener = listener.tap_io(|tcp| {
        if let Err(e) = tcp.set_nodelay(true) {
            tracing::warn!(error = %e, "cannot set TCP_NODELAY");
        }
    });
    axum::serve(
        listener,
        app.into_make_service_with_connect_info::<SocketAddr>(),
    )
    .with_graceful_shutdown(shutdown)
    .await
}

/// Completes on Ctrl-C (or when the signal cannot be listened to), after closing every
/// connection of `server` with "server shutting down".
pub async fn ctrl_c_then_shutdown(server: Server) {
    if let Err(e) = tokio::signal::ctrl_c().await {
        tracing::error!(error = %e, "cannot listen for Ctrl-C; stopping");
    }
    tracing::info!("shutting down");
    let left = server.shutdown(SHUTDOWN_DEADLINE).await;
    if left > 0 {
        tracing::warn!(left, "connections still open at the deadline");
    }
}
