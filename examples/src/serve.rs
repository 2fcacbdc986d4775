//! Serving an axum app until Ctrl-C, closing the neffos servers cleanly.

use std::time::Duration;

use axum::Router;
use neffos::Server;
use tokio::net::TcpListener;

/// How long open connections get to close on Ctrl-C.
pub const SHUTDOWN_DEADLINE: Duration = Duration::from_secs(5);

/// Serves `app` on `listener` with [`neffos::serve`] (header-read and upgrade timeouts,
/// `TCP_NODELAY`, the peer address available to the server) until `shutdown` completes.
pub async fn serve(
    listener: TcpListener,
    app: Router,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    neffos::serve(listener, app)
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
