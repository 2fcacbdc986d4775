//! Envelopes arriving from the exchange: local delivery, Asks on behalf of another
//! instance, and replies to our own cross-instance Asks.
//!
//! One task handles them all. Asks from other instances wait for the local client's reply
//! in that task too (a set of futures polled beside the queue) rather than in one spawned
//! task each; each connection's pending Asks are capped ([`Config::max_pending_asks`]), so
//! the set is bounded by the connections.
//!
//! [`Config::max_pending_asks`]: crate::Config::max_pending_asks

use std::sync::{Arc, Weak};

use bytes::Bytes;
use futures_util::StreamExt;
use futures_util::stream::FuturesUnordered;
use neffos_protocol::{Envelope, EnvelopeKind, EnvelopeTarget};
use tokio::sync::mpsc;

use crate::conn::ConnInner;
use crate::handler::BoxFuture;

use super::{ServerShared, Target};
use crate::exchange::Topic;

/// Delivers what the exchanges bring until they are gone; envelopes that arrive together
/// are coalesced per recipient ([`crate::server::coalesce`]).
pub(crate) async fn run(shared: Weak<ServerShared>, rx: mpsc::Receiver<crate::exchange::Tagged>) {
    let deliveries = deliver_loop(shared, rx);
    tokio::pin!(deliveries);
    std::future::poll_fn(|cx| crate::conn::pressure::poll_inbound(|| deliveries.as_mut().poll(cx)))
        .await
}

async fn deliver_loop(shared: Weak<ServerShared>, mut rx: mpsc::Receiver<crate::exchange::Tagged>) {
    let mut asks: FuturesUnordered<BoxFuture<()>> = FuturesUnordered::new();
    loop {
        let (source, payload) = tokio::select! {
            Some(()) = asks.next(), if !asks.is_empty() => continue,
            item = rx.recv() => match item {
                Some(item) => item,
                None => return,
            },
        };
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
        if let Some(ask) = handle(&shared, env) {
            asks.push(ask);
        }
    }
}

/// Handles `env`; an Ask for a local connection comes back as the future that answers it.
fn handle(shared: &Arc<ServerShared>, env: Envelope) -> Option<BoxFuture<()>> {
    match env.kind {
        EnvelopeKind::Broadcast | EnvelopeKind::Targeted => {
            let target = Target::from_envelope(&env.target);
            match env.recorded {
                None => shared.deliver_local(&target, &env.to_message()),
                Some(_) => {
                    shared.deliver_local_at(&target, &env.to_message(), env.recorded);
                }
            }
        }
        EnvelopeKind::Ask => {
            let id = env.target.conn.clone()?;
            let conn = shared
                .registry
                .read()
                .by_id
                .get(id.as_str())
                .and_then(|m| m.iter().next().cloned());
            return Some(Box::pin(answer_ask(shared.clone(), conn?, env)));
        }
        EnvelopeKind::Reply => {
            let token = env.token?;
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
    None
}

/// Asks local connection `conn` on behalf of another instance and publishes the reply (or
/// the error) to that instance's inbox.
async fn answer_ask(shared: Arc<ServerShared>, conn: Arc<ConnInner>, env: Envelope) {
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
        &neffos_protocol::Message::new(env.target.namespace.clone(), env.event.clone(), body),
    );
    reply.is_error = is_error;
    reply.token = env.token;
    if let Ok(bytes) = shared.encode(&reply) {
        shared.publish(Topic::Inbox(env.origin), bytes);
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
