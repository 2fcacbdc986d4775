//! Connection-state recovery: a client whose connection drops (network change, instance
//! killed, deploy) comes back — on any instance sharing the store — with its connection ID,
//! namespaces and rooms, and gets every broadcast it missed, in order, before any newer
//! one; or it is told plainly that this was impossible.
//!
//! Opt-in per namespace ([`Recovery::namespace`]); other namespaces pay nothing. In a
//! recording namespace, every namespace or room broadcast is appended to the namespace's
//! history ([`HistoryStore`]) before it is delivered, and carries its [`Position`] to the
//! other instances. A connection that presented a session key (header
//! [`neffos_protocol::recovery::SESSION_HEADER`]) has its session
//! checkpointed while it lives and kept for [`Recovery::window`] after an unexpected end.
//!
//! | | Rust client ([`ClientBuilder::recovery`](crate::ClientBuilder::recovery)) | neffos.js / Go client sending the session header |
//! |---|---|---|
//! | what comes back | connection ID, namespaces, rooms; then every broadcast missed | the same |
//! | replayed from | the last broadcast it received (it reports its exact position) | the last position the server handed to its socket; after the instance itself died, the last checkpoint ([`Recovery::checkpoint_interval`]) |
//! | duplicates | none | none after a dropped connection; after a killed instance, what arrived after the last checkpoint may come again |
//! | order | kept: replay in history order, then the newer broadcasts | the same |
//! | for how long | [`Recovery::window`] after the drop, while the history holds every missed broadcast ([`HistoryLimits`]) | the same |
//! | when impossible | event `_OnRecovery` with body `not-recovered:<reason>` in each namespace (and [`Client::recovery`](crate::Client::recovery)); nothing is replayed | the event `_OnRecovery` |
//!
//! Not recorded: sends to one connection ID ([`Target::conn`](crate::Target::conn)), Asks.
//! With several instances broadcasting into one namespace at once, a broadcast still in
//! flight from another instance when the client dropped can be missed (positions are per
//! history, live delivery is per sender).

mod client;
mod config;
mod memory;
mod outcome;
mod sequencer;
mod session;
mod store;

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock, Weak};

use bytes::Bytes;
use bytestring::ByteString;
use neffos_protocol::Message;
use neffos_protocol::recovery::{
    CAPABILITY_HEADER, POSITIONS_HEADER, SESSION_HEADER, SessionState, decode_positions,
};
use parking_lot::Mutex;
use tokio::sync::mpsc;

pub(crate) use client::Tracker;
pub use config::Recovery;
pub use memory::MemoryHistory;
pub use neffos_protocol::recovery::Position;
pub use outcome::{Outcome, Reason};
pub(crate) use session::PeerEnd;
pub use store::{HistoryLimits, HistoryStore, Replay, StoreError, StoreFuture};

use crate::conn::{ConnInner, RequestInfo};
use crate::server::{ServerShared, Target};
pub(crate) use session::ConnSession;
use session::Presented;

/// What a connection carries for recovery.
pub(crate) enum Attached {
    /// Server side: the session it presented.
    Server(Arc<ConnSession>),
    /// Client side: the client's tracker.
    #[cfg_attr(not(feature = "client"), allow(dead_code))]
    Client(Arc<Tracker>),
}

/// Counters of [`Server::recovery_stats`](crate::Server::recovery_stats).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct RecoveryStats {
    /// Live connections with a session.
    pub live_sessions: usize,
    /// Namespaces recovered.
    pub recovered: u64,
    /// Namespaces (or sessions) not recovered.
    pub not_recovered: u64,
    /// Broadcasts delivered without being recorded (the store failed).
    pub unrecorded: u64,
}

/// A server's recovery: its configuration and the tasks that record and checkpoint.
pub(crate) struct RecoveryState {
    pub(crate) config: Recovery,
    sequencer: OnceLock<mpsc::UnboundedSender<sequencer::Submitted>>,
    live: Mutex<HashMap<u64, Weak<ConnInner>>>,
    recovered: AtomicU64,
    not_recovered: AtomicU64,
    unrecorded: AtomicU64,
}

impl RecoveryState {
    pub(crate) fn new(config: Recovery) -> Self {
        RecoveryState {
            config,
            sequencer: OnceLock::new(),
            live: Mutex::new(HashMap::new()),
            recovered: AtomicU64::new(0),
            not_recovered: AtomicU64::new(0),
            unrecorded: AtomicU64::new(0),
        }
    }

    fn count(&self, outcomes: &[(ByteString, Outcome)]) {
        for (_, outcome) in outcomes {
            let counter = if outcome.is_recovered() {
                &self.recovered
            } else {
                &self.not_recovered
            };
            counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    pub(crate) fn unrecorded(&self) {
        self.unrecorded.fetch_add(1, Ordering::Relaxed);
    }

    pub(crate) fn stats(&self) -> RecoveryStats {
        RecoveryStats {
            live_sessions: self.live.lock().len(),
            recovered: self.recovered.load(Ordering::Relaxed),
            not_recovered: self.not_recovered.load(Ordering::Relaxed),
            unrecorded: self.unrecorded.load(Ordering::Relaxed),
        }
    }
}

/// Starts the recording and checkpoint tasks (inside the runtime, once).
pub(crate) fn start(shared: &Arc<ServerShared>) {
    let Some(recovery) = &shared.recovery else {
        return;
    };
    let tx = sequencer::spawn(Arc::downgrade(shared), recovery.config.store.clone());
    let _ = recovery.sequencer.set(tx);
    tokio::spawn(checkpoints(Arc::downgrade(shared)));
}

/// Takes a broadcast of a recording namespace; false when it is not one (deliver as usual).
pub(crate) fn submit(shared: &ServerShared, target: &Target, msg: &Message) -> bool {
    let Some(recovery) = &shared.recovery else {
        return false;
    };
    if target.to.is_some() || !recovery.config.covers(&target.namespace) {
        return false;
    }
    let Some(tx) = recovery.sequencer.get() else {
        return false;
    };
    tx.send(sequencer::Submitted {
        target: target.clone(),
        msg: msg.clone(),
    })
    .is_ok()
}

/// A session key presented by a connecting client.
pub(crate) struct Presentation {
    key: String,
    tagged: bool,
    positions: Vec<(String, neffos_protocol::recovery::Position)>,
}

/// The session key (and, from our client, its positions) of an upgrade request.
pub(crate) fn presentation(
    shared: &ServerShared,
    request: &RequestInfo,
    parts: Option<&http::request::Parts>,
) -> Option<Presentation> {
    let recovery = shared.recovery.as_ref()?;
    let header = |name: &str| {
        request
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    let key = match (&recovery.config.session_key, parts) {
        (Some(f), Some(parts)) => f(parts),
        _ => header(SESSION_HEADER),
    }
    .filter(|k| !k.is_empty() && k.len() <= 256)?;
    Some(Presentation {
        key,
        tagged: header(CAPABILITY_HEADER).is_some(),
        positions: header(POSITIONS_HEADER)
            .map(|h| decode_positions(&h))
            .unwrap_or_default(),
    })
}

/// Claims the presented session: its connection ID (else `generated`) and the state the
/// new connection carries.
pub(crate) async fn claim(
    shared: &ServerShared,
    presentation: Presentation,
    generated: String,
) -> (String, Arc<ConnSession>) {
    let mut lookup_failed = false;
    let saved = match &shared.recovery {
        Some(recovery) => match recovery.config.store.take_session(&presentation.key).await {
            Ok(Some(bytes)) => match SessionState::decode(&bytes) {
                Ok(s) => Some(s),
                Err(e) => {
                    tracing::warn!(error = %e, "unreadable kept session dropped");
                    None
                }
            },
            Ok(None) => None,
            Err(e) => {
                tracing::warn!(error = %e, "kept session not read");
                lookup_failed = true;
                None
            }
        },
        None => None,
    };
    tracing::debug!(found = saved.is_some(), lookup_failed, "session presented");
    let id = saved.as_ref().map_or(generated, |s| s.id.clone());
    let session = ConnSession::new(
        presentation.key,
        presentation.tagged,
        Presented {
            saved,
            positions: presentation.positions,
            lookup_failed,
        },
    );
    (id, Arc::new(session))
}

/// Attaches a claimed session to its new connection.
pub(crate) fn attach(conn: &ConnInner, session: Arc<ConnSession>) {
    let _ = conn.recovery.set(Attached::Server(session));
}

pub(crate) fn attached_session(conn: &ConnInner) -> Option<Arc<ConnSession>> {
    match conn.recovery.get() {
        Some(Attached::Server(s)) => Some(s.clone()),
        _ => None,
    }
}

/// The connection is registered: checkpoint it from now on and restore what it presented.
pub(crate) fn on_ready(conn: &Arc<ConnInner>) {
    let (Some(shared), Some(_)) = (conn.server.shared(), attached_session(conn)) else {
        return;
    };
    let Some(recovery) = &shared.recovery else {
        return;
    };
    recovery.live.lock().insert(conn.key, Arc::downgrade(conn));
    tokio::spawn(session::restore(shared.clone(), conn.clone()));
}

/// A namespace was connected: a session starts at the history's head (so a client that
/// receives nothing before it drops still gets what it missed).
pub(crate) fn on_namespace_added(shared: &ServerShared, conn: &ConnInner, ns: &str) {
    let (Some(recovery), Some(session)) = (&shared.recovery, attached_session(conn)) else {
        return;
    };
    if !recovery.config.covers(ns) {
        return;
    }
    let store = recovery.config.store.clone();
    let ns = ByteString::from(ns);
    tokio::spawn(async move {
        match store.head(&ns).await {
            Ok(head) => session.start_at(&ns, head),
            Err(e) => tracing::debug!(error = %e, "history head not read"),
        }
    });
}

/// After the client connected `ns` itself: tells it when its session did not come back.
pub(crate) fn after_namespace_connect(conn: &ConnInner, ns: &ByteString) {
    let Some(session) = attached_session(conn) else {
        return;
    };
    let covered = conn
        .server
        .shared()
        .and_then(|s| s.recovery.as_ref())
        .is_some_and(|r| r.config.covers(ns));
    if covered && let Some(outcome) = session.signal() {
        session::send_outcome(conn, ns, outcome);
    }
}

/// The peer's side ended (close frame or dropped socket).
pub(crate) fn peer_ended(conn: &ConnInner, end: PeerEnd) {
    if let Some(session) = attached_session(conn) {
        session.peer_ended(end);
    }
}

/// The connection is gone: keep its session for the window, or forget it.
pub(crate) fn on_closed(shared: &ServerShared, conn: &ConnInner) {
    let (Some(recovery), Some(session)) = (&shared.recovery, attached_session(conn)) else {
        return;
    };
    recovery.live.lock().remove(&conn.key);
    let store = recovery.config.store.clone();
    let window = recovery.config.window;
    let kept = if session.keep(conn) {
        let empty = crate::conn::NsTable::default();
        let last = conn.last_namespaces.lock();
        session.end(&conn.id, Some(last.as_deref().unwrap_or(&empty)))
    } else {
        session.end(&conn.id, None)
    };
    tokio::spawn(async move {
        // After any checkpoint under way, which would otherwise overwrite this.
        let _saving = session.saving().await;
        let Some(kept) = kept else {
            let _ = store.delete_session(&session.key).await;
            return;
        };
        let saved = match kept.encode() {
            Ok(bytes) => store
                .save_session(&session.key, Bytes::from(bytes), window)
                .await
                .map_err(|e| e.to_string()),
            Err(e) => Err(e.to_string()),
        };
        if let Err(e) = saved {
            tracing::warn!(error = %e, "session not kept");
        }
    });
}

/// Writes the sessions of live connections every checkpoint interval, so they survive
/// the instance (kill -9): the window runs from the last checkpoint.
async fn checkpoints(shared: Weak<ServerShared>) {
    let Some(interval) = shared
        .upgrade()
        .and_then(|s| s.recovery.as_ref().map(|r| r.config.checkpoint))
    else {
        return;
    };
    let mut tick = tokio::time::interval(interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let Some(server) = shared.upgrade() else {
            return;
        };
        let Some(recovery) = &server.recovery else {
            return;
        };
        let store = recovery.config.store.clone();
        let ttl = recovery.config.window + interval;
        let live: Vec<Arc<ConnInner>> = recovery
            .live
            .lock()
            .values()
            .filter_map(Weak::upgrade)
            .collect();
        drop(server);
        let saves = live.into_iter().filter_map(|conn| {
            let session = attached_session(&conn)?;
            let store = store.clone();
            Some(async move {
                let _saving = session.saving().await;
                // Taken under the save guard: none once the connection ended (its final
                // save is then under way or done, and must stay the last).
                let bytes = session
                    .checkpoint(&conn.id, &conn.namespaces.lock())?
                    .encode()
                    .ok()?;
                if let Err(e) = store
                    .save_session(&session.key, Bytes::from(bytes), ttl)
                    .await
                {
                    tracing::debug!(error = %e, "session checkpoint failed");
                }
                Some(())
            })
        });
        futures_util::future::join_all(saves).await;
    }
}

/// Client side: a received message, with its tag taken out.
pub(crate) fn client_received(conn: &ConnInner, msg: Message) -> Message {
    match conn.recovery.get() {
        Some(Attached::Client(tracker)) => tracker.received(msg, conn.key),
        _ => msg,
    }
}
