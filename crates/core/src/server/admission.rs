//! Admission of new sockets: the caps on open connections, in total and per remote IP.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use super::{Server, ServerShared};

/// Sockets admitted and not yet gone, in total and per remote IP.
#[derive(Debug, Default)]
pub(super) struct Admitted {
    total: usize,
    per_ip: HashMap<IpAddr, usize>,
}

/// Why a new connection is refused before the upgrade.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Refusal {
    ShuttingDown,
    TooManyConnections,
    TooManyFromIp,
}

/// Holds one admitted connection's place; released when dropped.
pub(crate) struct Admission {
    shared: Arc<ServerShared>,
    ip: Option<IpAddr>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        let mut admitted = self.shared.admitted.lock();
        admitted.total = admitted.total.saturating_sub(1);
        if let Some(ip) = self.ip
            && let Some(n) = admitted.per_ip.get_mut(&ip)
        {
            *n -= 1;
            if *n == 0 {
                admitted.per_ip.remove(&ip);
            }
        }
    }
}

impl Server {
    /// Admits one more connection from `ip`, within [`Config::max_connections`] and
    /// [`Config::max_connections_per_ip`].
    pub(crate) fn admit(&self, ip: Option<IpAddr>) -> Result<Admission, Refusal> {
        if self.is_shutting_down() {
            return Err(Refusal::ShuttingDown);
        }
        let config = &self.0.config;
        let mut admitted = self.0.admitted.lock();
        if config
            .max_connections
            .is_some_and(|max| admitted.total >= max)
        {
            return Err(Refusal::TooManyConnections);
        }
        if let Some(ip) = ip {
            let n = admitted.per_ip.get(&ip).copied().unwrap_or(0);
            if config.max_connections_per_ip.is_some_and(|max| n >= max) {
                return Err(Refusal::TooManyFromIp);
            }
            admitted.per_ip.insert(ip, n + 1);
        }
        admitted.total += 1;
        Ok(Admission {
            shared: self.0.clone(),
            ip,
        })
    }

    /// Says once per server that [`Config::max_connections_per_ip`] cannot apply: the
    /// transport did not tell the peer's address.
    pub(crate) fn warn_no_peer_address(&self) {
        if !self.0.warned_no_peer_address.swap(true, Ordering::Relaxed) {
            tracing::warn!(
                "max_connections_per_ip is set but the peer address is unknown, so it does not \
                 apply: serve with neffos::serve, or axum::serve with \
                 into_make_service_with_connect_info::<SocketAddr>()"
            );
        }
    }
}
