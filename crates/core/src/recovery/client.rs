//! The Rust client's side: its session key, the exact position of the last recorded
//! broadcast it received per namespace (from the tags only it asks for), and the outcome
//! the server reported.

// Only the Rust client (feature `client`) creates a tracker; the server side matches on it.
#![cfg_attr(not(feature = "client"), allow(dead_code))]

use std::collections::HashMap;

use neffos_protocol::Message;
use neffos_protocol::recovery::{
    CAPABILITY_HEADER, POSITIONS_HEADER, Position, RECOVERY_EVENT, SESSION_HEADER, encode_positions,
};
use parking_lot::Mutex;
use tokio::sync::Notify;

use super::outcome::Outcome;

/// Lives as long as the [`Client`](crate::Client), across its reconnections.
#[derive(Debug)]
pub(crate) struct Tracker {
    key: String,
    positions: Mutex<HashMap<String, Position>>,
    outcomes: Mutex<HashMap<String, (u64, Outcome)>>,
    pub(crate) changed: Notify,
}

impl Tracker {
    pub(crate) fn new() -> Self {
        Tracker {
            key: uuid::Uuid::new_v4().simple().to_string(),
            positions: Mutex::new(HashMap::new()),
            outcomes: Mutex::new(HashMap::new()),
            changed: Notify::new(),
        }
    }

    /// Headers of a dial: the session key, the ask for tags and, on a reconnect, where the
    /// client stands.
    pub(crate) fn headers(&self, reconnect: bool) -> Vec<(&'static str, String)> {
        let mut headers = vec![
            (SESSION_HEADER, self.key.clone()),
            (CAPABILITY_HEADER, "tags".to_owned()),
        ];
        let positions = self.positions.lock();
        if reconnect && !positions.is_empty() {
            let encoded = encode_positions(positions.iter().map(|(ns, p)| (ns.as_str(), *p)));
            headers.push((POSITIONS_HEADER, encoded));
        }
        headers
    }

    /// Takes the tag out of a received message (recording its position) and notes a
    /// recovery event; returns the message as the handlers see it.
    pub(crate) fn received(&self, mut msg: Message, connection: u64) -> Message {
        if let Some(pos) = Position::from_tag(msg.wait.as_str()) {
            msg.wait = neffos_protocol::WaitToken::empty();
            self.positions.lock().insert(msg.namespace.to_string(), pos);
        } else if &*msg.event == RECOVERY_EVENT
            && let Some(outcome) = Outcome::from_body(&msg.body)
        {
            if !outcome.is_recovered() {
                // Positions of a history that is not ours any more.
                self.positions.lock().remove(&*msg.namespace);
            }
            self.outcomes
                .lock()
                .insert(msg.namespace.to_string(), (connection, outcome));
            self.changed.notify_waiters();
        }
        msg
    }

    /// The outcome reported for `namespace` on connection number `connection` (its key).
    pub(crate) fn outcome(&self, namespace: &str, connection: u64) -> Option<Outcome> {
        self.outcomes
            .lock()
            .get(namespace)
            .filter(|(c, _)| *c == connection)
            .map(|(_, o)| *o)
    }

    /// The last recorded position received in `namespace`.
    pub(crate) fn position(&self, namespace: &str) -> Option<Position> {
        self.positions.lock().get(namespace).copied()
    }
}
