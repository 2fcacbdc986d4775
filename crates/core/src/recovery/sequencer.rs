//! Records each broadcast of a recovering namespace before delivering it: append to the
//! store, then deliver locally and publish with the position. One task per server keeps
//! the order of submission; appends are pipelined when the store allows it (several in
//! flight, completed in order).

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesOrdered;
use neffos_protocol::{Envelope, EnvelopeKind, Message};
use tokio::sync::mpsc;

use super::store::{HistoryStore, Position, StoreError};
use crate::exchange::Topic;
use crate::server::{ServerShared, Target};

/// A broadcast waiting to be recorded.
pub(crate) struct Submitted {
    pub(crate) target: Target,
    pub(crate) msg: Message,
}

pub(crate) fn spawn(
    shared: Weak<ServerShared>,
    store: Arc<dyn HistoryStore>,
) -> mpsc::UnboundedSender<Submitted> {
    let (tx, rx) = mpsc::unbounded_channel();
    tokio::spawn(run(shared, store, rx));
    tx
}

async fn run(
    shared: Weak<ServerShared>,
    store: Arc<dyn HistoryStore>,
    mut rx: mpsc::UnboundedReceiver<Submitted>,
) {
    let store = &*store;
    // Pipelined (in order) as far as the store allows.
    let max_in_flight = store.max_in_flight().max(1);
    let mut in_flight = FuturesOrdered::new();
    let mut open = true;
    loop {
        tokio::select! {
            item = rx.recv(), if open && in_flight.len() < max_in_flight => {
                let Some(item) = item else {
                    open = false;
                    continue;
                };
                let Some(server) = shared.upgrade() else { return };
                let env = Envelope::new(
                    server.instance,
                    server.next_token(),
                    EnvelopeKind::Broadcast,
                    item.target.envelope_target(),
                    &item.msg,
                );
                drop(server);
                let payload = env.encode().map(Bytes::from);
                in_flight.push_back(async move {
                    let appended: Result<Position, StoreError> = match payload {
                        Ok(payload) => store.append(&item.target.namespace, payload).await,
                        Err(e) => Err(StoreError(e.to_string())),
                    };
                    (appended, item, env)
                });
            }
            Some((appended, item, env)) = in_flight.next() => {
                let Some(server) = shared.upgrade() else { return };
                deliver(&server, appended, item, env);
            }
            else => return,
        }
    }
}

/// Delivers one recorded (or, when the store failed, unrecorded) broadcast.
fn deliver(
    server: &ServerShared,
    appended: Result<Position, StoreError>,
    item: Submitted,
    mut env: Envelope,
) {
    let recorded = match appended {
        Ok(pos) => Some(pos),
        Err(e) => {
            // Live delivery goes on; a client away now may not get this one back.
            tracing::warn!(namespace = %item.target.namespace, error = %e, "broadcast not recorded");
            server.recovery_unrecorded();
            None
        }
    };
    server.deliver_local_at(&item.target, &item.msg, recorded);
    if !server.exchanges.is_empty() {
        env.recorded = recorded;
        match env.encode() {
            Ok(bytes) => server.publish(
                Topic::Namespace(item.target.namespace.to_string()),
                Bytes::from(bytes),
            ),
            Err(e) => tracing::warn!(error = %e, "recorded broadcast not encoded"),
        }
    }
}
