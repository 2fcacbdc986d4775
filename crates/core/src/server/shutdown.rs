//! Graceful shutdown: refuse new connections, close the open ones, wait for them.

use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use super::Server;
use crate::conn::{ConnInner, close_code};

impl Server {
    /// Stops accepting, closes every connection with 1001 "server shutting down", waits for
    /// them to be gone (at most `deadline`), then closes the exchange. Returns the number of
    /// connections still open at the deadline.
    pub async fn shutdown(&self, deadline: Duration) -> usize {
        self.0.shutting_down.store(true, Ordering::Release);
        let conns: Vec<Arc<ConnInner>> = self.0.registry.read().conns.values().cloned().collect();
        for c in conns {
            c.close(close_code::GOING_AWAY, "server shutting down");
        }
        let wait_empty = async {
            loop {
                let notified = self.0.changed.notified();
                if self.connection_count() == 0 {
                    break;
                }
                notified.await;
            }
        };
        let _ = tokio::time::timeout(deadline, wait_empty).await;
        crate::cluster::bye(&self.0);
        for exchange in &self.0.exchanges {
            let _ = tokio::time::timeout(deadline, async {
                exchange.flush().await;
                exchange.close().await;
            })
            .await;
        }
        self.connection_count()
    }

    /// True once [`Server::shutdown`] was called.
    pub fn is_shutting_down(&self) -> bool {
        self.0.shutting_down.load(Ordering::Acquire)
    }
}
