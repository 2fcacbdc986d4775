//! Envelopes arriving from the exchange: local delivery, Asks on behalf of another
//! instance, and replies to our own cross-instance Asks.

use std::sync::{Arc, Weak};

use bytes::Bytes;
use neffos_protocol::{Envelope, EnvelopeKind, EnvelopeTarget};
use tokio::sync::mpsc;

use super::{ServerShared, Target};
use crate::exchange::Topic;

pub(crate) async fn run(
    shared: Weak<ServerShared>,
    mut rx: mpsc::Receiver<crate::exchange::Tagged>,
) {
    while let Some((source, payload)) = rx.recv().await {
        let Some(shared) = shared.upgrade() else {
            return;
        };
        let env = match Envelope::decode(&payload) {
            Ok(env) => env,
            Err(e) => {
                shared.stats.malformed_envelope();
                tracing::warn!(error = %e, len = payload.len(), "dropped a malformed envelope from the exchange");
                continue;
            }
        };
        if env.origin == shared.instance {
            continue;
        }
        if shared.exchanges.len() > 1 && !shared.dedup.lock().first_time(env.origin, env.seq) {
            continue;
        }
        if shared.relay {
            relay(&shared, source, &env, &payload);
        }
        shared.stats.envelope_received();
        handle(&shared, env);
    }
}

fn handle(shared: &Arc<ServerShared>, env: Envelope) {
    match env.kind {
        EnvelopeKind::Broadcast | EnvelopeKind::Targeted => {
            let target = Target::from_envelope(&env.target);
            shared.deliver_local_at(&target, &env.to_message(), env.recorded);
        }
        EnvelopeKind::Ask => {
            let Some(id) = env.target.conn.clone() else {
                return;
            };
            let conn = shared
                .registry
                .read()
                .by_id
                .get(id.as_str())
                .and_then(|m| m.iter().next().cloned());
            let Some(conn) = conn else {
                return;
            };
            let shared = shared.clone();
            tokio::spawn(async move {
                let timeout = shared.config.ask_timeout;
                let (body, is_error) = match conn.ask(env.to_message(), timeout).await {
                    Ok(reply) => (reply.body, false),
                    Err(e) => match e.remote() {
                        Some(text) => (Bytes::from(text.to_owned()), true),
                        None => (Bytes::from(e.to_string()), true),
                    },
                };
                let mut reply = Envelope::new(
                    shared.instance,
                    shared.next_seq(),
                    EnvelopeKind::Reply,
                    EnvelopeTarget::namespace(env.target.namespace.clone()),
                    &neffos_protocol::Message::new(
                        env.target.namespace.clone(),
                        env.event.clone(),
                        body,
                    ),
                );
                reply.is_error = is_error;
                reply.token = env.token;
                if let Ok(bytes) = shared.encode(&reply) {
                    shared.publish(Topic::Inbox(env.origin), bytes);
                }
            });
        }
        EnvelopeKind::Reply => {
            let Some(token) = env.token else {
                return;
            };
            let waiter = shared.remote_asks.lock().remove(&token);
            match waiter {
                Some(tx) => {
                    let _ = tx.send(env);
                }
                None => {
                    shared.stats.late_reply();
                    tracing::debug!(token, "late cross-instance reply dropped");
                }
            }
        }
        EnvelopeKind::Cluster => crate::cluster::on_envelope(shared, &env),
        _ => {}
    }
}

/// Forwards an envelope received through exchange `source` to the other exchanges.
fn relay(shared: &ServerShared, source: usize, env: &Envelope, payload: &Bytes) {
    let topic = match (env.kind, &env.target.conn) {
        (EnvelopeKind::Broadcast, _) => Topic::Namespace(env.target.namespace.clone()),
        (EnvelopeKind::Targeted | EnvelopeKind::Ask, Some(id)) => Topic::Conn(id.clone()),
        // Replies go to an inbox that only the asker's exchanges know.
        _ => return,
    };
    for (i, exchange) in shared.exchanges.iter().enumerate() {
        if i != source {
            exchange.publish(topic.clone(), payload.clone());
        }
    }
}
