//! A server connection's session: its positions, the broadcasts held back while it is
//! being restored, how it ended, and the restore itself.

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use bytestring::ByteString;
use neffos_protocol::recovery::{NamespaceState, Position, RECOVERY_EVENT, SessionState};
use neffos_protocol::{Envelope, Message};
use parking_lot::Mutex;

use super::outcome::{Outcome, Reason};
use super::store::Replay;
use crate::conn::{ConnInner, Fill, close_code, force_connect, force_join};
use crate::error::WriteErrorKind;
use crate::server::ServerShared;
use crate::transport::WsOut;

/// How the peer's side of the connection ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PeerEnd {
    /// A close frame, with its code if it had one.
    CloseFrame(Option<u16>),
    /// The socket ended or failed without a close frame.
    Dropped,
}

/// What the reconnecting client presented, and what the store had under its key.
#[derive(Debug)]
pub(crate) struct Presented {
    pub(crate) saved: Option<SessionState>,
    pub(crate) positions: Vec<(String, Position)>,
    pub(crate) lookup_failed: bool,
}

/// One recorded broadcast that arrived while the session was being restored.
struct Held {
    namespace: ByteString,
    position: Position,
    out: WsOut,
}

#[derive(Default)]
struct State {
    positions: HashMap<ByteString, Position>,
    /// `Some` while the session is being restored: live broadcasts wait here.
    held: Option<Vec<Held>>,
    /// Per namespace, the newest position the restore replayed: a live broadcast at or
    /// before it (appended before the history was read, still on its way through the
    /// exchange) was replayed already.
    replayed: HashMap<ByteString, Position>,
    peer_end: Option<PeerEnd>,
    presented: Option<Presented>,
    /// Sent after each namespace the client connects itself (no session came back).
    signal: Option<Outcome>,
    /// The connection ended: its final snapshot is taken, checkpoints take none.
    ended: bool,
}

/// The server side of one connection that presented a session key.
pub(crate) struct ConnSession {
    pub(crate) key: String,
    /// The client asked for position tags (our Rust client).
    pub(crate) tagged: bool,
    state: Mutex<State>,
    /// Writes of this session to the store, one at a time: a checkpoint taken before the
    /// connection ended must not land after (and overwrite) the final save.
    saves: tokio::sync::Mutex<()>,
}

impl ConnSession {
    pub(crate) fn new(key: String, tagged: bool, presented: Presented) -> Self {
        let signal = if presented.saved.is_some() {
            None
        } else if presented.lookup_failed {
            Some(Outcome::NotRecovered(Reason::StoreFailed))
        } else {
            Some(Outcome::NotRecovered(Reason::NoSession))
        };
        let held = presented.saved.as_ref().map(|_| Vec::new());
        ConnSession {
            key,
            tagged,
            state: Mutex::new(State {
                held,
                presented: Some(presented),
                signal,
                ..State::default()
            }),
            saves: tokio::sync::Mutex::new(()),
        }
    }

    /// Hands a recorded broadcast to the connection (or holds it while restoring) and
    /// remembers its position.
    pub(crate) fn offer(
        &self,
        conn: &ConnInner,
        msg: &Message,
        position: Position,
        plain: &WsOut,
        tagged: &mut Option<WsOut>,
    ) -> Result<Fill, WriteErrorKind> {
        let out = if self.tagged {
            tagged
                .get_or_insert_with(|| WsOut::Frame(tag(msg, position).to_frame()))
                .clone()
        } else {
            plain.clone()
        };
        let mut state = self.state.lock();
        if let Some(held) = &mut state.held {
            held.push(Held {
                namespace: msg.namespace.clone(),
                position,
                out,
            });
            return Ok(Fill::Within);
        }
        if replayed(&state.replayed, &msg.namespace, position) {
            return Ok(Fill::Within);
        }
        advance(&mut state.positions, &msg.namespace, position);
        // Under the lock: a release racing this keeps the order.
        conn.enqueue(out)
    }

    /// Sets the position of a namespace that has none yet (just connected).
    pub(crate) fn start_at(&self, namespace: &ByteString, position: Position) {
        self.state
            .lock()
            .positions
            .entry(namespace.clone())
            .or_insert(position);
    }

    pub(crate) fn peer_ended(&self, end: PeerEnd) {
        self.state.lock().peer_end.get_or_insert(end);
    }

    /// Whether the session is kept after the connection ended: the client did not leave
    /// on purpose (no close frame, or 1001 going-away / 1006), or the server went away
    /// (shutdown, idle timeout).
    pub(crate) fn keep(&self, conn: &ConnInner) -> bool {
        match self.state.lock().peer_end {
            Some(PeerEnd::CloseFrame(Some(1001 | 1006))) | Some(PeerEnd::Dropped) => true,
            Some(PeerEnd::CloseFrame(_)) => false,
            None => {
                matches!(conn.close_reason(), Some((code, _)) if code == close_code::GOING_AWAY)
            }
        }
    }

    /// The recovery event to send after the client connected `namespace` itself.
    pub(crate) fn signal(&self) -> Option<Outcome> {
        self.state.lock().signal
    }

    /// Waits until no other write of this session to the store is under way; the next one
    /// is the caller's until the guard drops.
    pub(crate) async fn saving(&self) -> tokio::sync::MutexGuard<'_, ()> {
        self.saves.lock().await
    }

    /// A checkpoint's snapshot (as [`Self::end`] takes one); `None` once the connection
    /// ended. Take it while [`Self::saving`].
    pub(crate) fn checkpoint(
        &self,
        id: &str,
        table: &crate::conn::NsTable,
    ) -> Option<SessionState> {
        let state = self.state.lock();
        (!state.ended).then(|| snapshot(&state, id, table))
    }

    /// The connection ended; `table` is its namespaces as they were when it closed, and
    /// `None` means the session is forgotten. Returns what to keep: ID, namespaces, rooms,
    /// positions. Checkpoints take no snapshot after this.
    pub(crate) fn end(
        &self,
        id: &str,
        table: Option<&crate::conn::NsTable>,
    ) -> Option<SessionState> {
        let mut state = self.state.lock();
        state.ended = true;
        table.map(|table| snapshot(&state, id, table))
    }

    /// Ends the restore: held broadcasts not already replayed go out, in order; later ones
    /// already replayed are dropped too.
    fn release(&self, conn: &ConnInner, replayed_up_to: HashMap<ByteString, Position>) {
        let mut state = self.state.lock();
        let held = state.held.take().unwrap_or_default();
        state.replayed = replayed_up_to;
        for h in held {
            if replayed(&state.replayed, &h.namespace, h.position) {
                continue;
            }
            advance(&mut state.positions, &h.namespace, h.position);
            let _ = conn.enqueue(h.out);
        }
    }
}

/// Whether the restore's replay already sent the broadcast at `pos`.
fn replayed(replayed: &HashMap<ByteString, Position>, ns: &ByteString, pos: Position) -> bool {
    replayed
        .get(ns)
        .is_some_and(|up_to| up_to.epoch == pos.epoch && pos <= *up_to)
}

fn advance(positions: &mut HashMap<ByteString, Position>, ns: &ByteString, pos: Position) {
    match positions.get_mut(ns) {
        Some(p) if p.epoch == pos.epoch && p.offset >= pos.offset => {}
        Some(p) => *p = pos,
        None => {
            positions.insert(ns.clone(), pos);
        }
    }
}

/// `msg` with its position in the wait field, for clients that asked for tags.
fn tag(msg: &Message, position: Position) -> Message {
    msg.clone()
        .with_wait(neffos_protocol::WaitToken::new(position.tag()))
}

/// Restores a presented session on its new connection: namespaces and rooms first (the
/// client is asked, as a server-initiated connect/join), then the replay of what was
/// missed, then the broadcasts held meanwhile; finally the recovery event per namespace.
pub(crate) async fn restore(server: Arc<ServerShared>, conn: Arc<ConnInner>) {
    let Some(session) = super::attached_session(&conn) else {
        return;
    };
    let presented = session.state.lock().presented.take();
    let Some(Presented {
        saved: Some(saved),
        positions: client_positions,
        ..
    }) = presented
    else {
        return;
    };
    let Some(recovery) = server.recovery.as_ref() else {
        return;
    };
    let mut outcomes: Vec<(ByteString, Outcome)> = Vec::new();
    let mut restored = Vec::new();
    for ns in &saved.namespaces {
        let name = ByteString::from(ns.name.as_str());
        if !recovery.config.covers(&ns.name) {
            continue;
        }
        // Connected here first, then the client is asked: it applies a request as it reads
        // it, so it is in the namespace and rooms before the replay, and its own requests
        // (neffos.js restores by itself too) find them here.
        if let Err(e) = force_connect(&conn, &name).await {
            tracing::debug!(id = %conn.id, ns = %ns.name, error = %e, "namespace not restored");
            outcomes.push((name, Outcome::NotRecovered(Reason::Refused)));
            continue;
        }
        for room in &ns.rooms {
            if let Err(e) = force_join(&conn, &name, &ByteString::from(room.as_str())).await {
                tracing::debug!(id = %conn.id, ns = %ns.name, room, error = %e, "room not restored");
            }
        }
        restored.push(ns);
    }
    // Subscriptions confirmed before the history is read: whatever is appended after the
    // read is published after it, so it arrives live (and is held until the release).
    for exchange in &server.exchanges {
        exchange.flush().await;
    }
    let mut replayed_up_to = HashMap::new();
    for ns in restored {
        let name = ByteString::from(ns.name.as_str());
        // The client's own report is exact; the kept one is the last checkpoint.
        let from = client_positions
            .iter()
            .find(|(n, _)| *n == ns.name)
            .map(|(_, p)| *p)
            .or(ns.position);
        tracing::debug!(id = %conn.id, ns = %ns.name, ?from, checkpoint = ?ns.position, "replaying");
        let outcome = match from {
            None => Outcome::NotRecovered(Reason::HistoryTrimmed),
            Some(from) => {
                match recovery
                    .config
                    .store
                    .read_after(&ns.name, from, recovery.config.max_replay)
                    .await
                {
                    Ok(Replay::Entries { entries, head }) => {
                        if replay(&session, &conn, &name, entries).await {
                            replayed_up_to.insert(name.clone(), head);
                            session.start_at(&name, head);
                            Outcome::Recovered
                        } else {
                            return;
                        }
                    }
                    Ok(Replay::EpochChanged) => Outcome::NotRecovered(Reason::EpochChanged),
                    Ok(Replay::Trimmed) => Outcome::NotRecovered(Reason::HistoryTrimmed),
                    Ok(Replay::TooMany) => Outcome::NotRecovered(Reason::TooMany),
                    Err(e) => {
                        tracing::warn!(id = %conn.id, ns = %ns.name, error = %e, "history not read");
                        Outcome::NotRecovered(Reason::StoreFailed)
                    }
                }
            }
        };
        if !outcome.is_recovered()
            && let Ok(head) = recovery.config.store.head(&ns.name).await
        {
            session.start_at(&name, head);
        }
        outcomes.push((name, outcome));
    }
    session.release(&conn, replayed_up_to);
    tracing::debug!(id = %conn.id, ?outcomes, "session restored");
    recovery.count(&outcomes);
    for (ns, outcome) in outcomes {
        if conn.namespaces.lock().contains_key(&ns) {
            send_outcome(&conn, &ns, outcome);
        }
    }
}

/// Sends the broadcasts of `entries` that this connection would have received. False
/// once the connection is gone.
async fn replay(
    session: &ConnSession,
    conn: &ConnInner,
    namespace: &ByteString,
    entries: Vec<(Position, Bytes)>,
) -> bool {
    for (position, payload) in entries {
        let env = match Envelope::decode(&payload) {
            Ok(env) => env,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable history entry skipped");
                continue;
            }
        };
        if env.target.except.as_deref() == Some(&*conn.id) {
            continue;
        }
        let mut msg = env.to_message();
        msg.namespace = namespace.clone();
        if !conn.can_receive(namespace, &msg.room) {
            continue;
        }
        if session.tagged {
            msg = tag(&msg, position);
        }
        // Waits for room in the outbound queue: a replay is a burst, not a slow consumer.
        if conn.send_frame(msg.to_frame()).await.is_err() {
            return false;
        }
    }
    true
}

/// Sends the recovery event in `namespace`.
pub(crate) fn send_outcome(conn: &ConnInner, namespace: &ByteString, outcome: Outcome) {
    let msg = Message::new(namespace.clone(), RECOVERY_EVENT, outcome.body());
    let _ = conn.write(&msg);
}

fn snapshot(state: &State, id: &str, table: &crate::conn::NsTable) -> SessionState {
    SessionState {
        id: id.to_owned(),
        namespaces: table
            .iter()
            .map(|(ns, rooms)| NamespaceState {
                name: ns.to_string(),
                rooms: rooms.iter().map(|r| r.to_string()).collect(),
                position: state.positions.get(ns).copied(),
            })
            .collect(),
    }
}
