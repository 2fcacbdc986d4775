//! Remote operations on connections by ID, applied on whichever instance holds them, and
//! the acknowledgement that says where.

use std::sync::Arc;

use neffos_protocol::cluster::Answer;
use uuid::Uuid;

use super::query::Answers;
use crate::conn::{Conn, close_code};
use crate::server::ServerShared;

/// Where a remote operation was applied.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
#[non_exhaustive]
pub struct Applied {
    /// Instances that applied it, with the number of connections affected there.
    pub applied: Vec<(Uuid, usize)>,
    /// Instances holding the ID where it failed, with the reason (e.g. the client refused
    /// the join, or is not connected to the namespace).
    pub failed: Vec<(Uuid, String)>,
    /// Live instances that did not acknowledge by the deadline: the ID may be there.
    pub missing: Vec<Uuid>,
}

impl Applied {
    /// Connections affected, over all instances.
    pub fn connections(&self) -> usize {
        self.applied.iter().map(|(_, n)| n).sum()
    }

    /// True when every live instance answered and none holds the ID.
    pub fn nowhere(&self) -> bool {
        self.applied.is_empty() && self.failed.is_empty() && self.missing.is_empty()
    }

    pub(crate) fn from_answers(answers: Answers) -> Self {
        let mut out = Applied {
            missing: answers.missing,
            ..Applied::default()
        };
        for (instance, answer) in answers.value {
            match answer {
                Answer::Applied(0) => {}
                Answer::Applied(n) => out
                    .applied
                    .push((instance, usize::try_from(n).unwrap_or(usize::MAX))),
                Answer::Failed(reason) => out.failed.push((instance, reason)),
                _ => {}
            }
        }
        out
    }
}

fn local_conns(shared: &ServerShared, id: &str) -> Vec<Conn> {
    shared
        .registry
        .read()
        .by_id
        .get(id)
        .map(|m| m.iter().map(|c| Conn(c.clone())).collect())
        .unwrap_or_default()
}

pub(crate) fn disconnect(shared: &Arc<ServerShared>, id: &str, reason: &str) -> Answer {
    let conns = local_conns(shared, id);
    for conn in &conns {
        conn.close_with(close_code::NORMAL, reason);
    }
    Answer::Applied(conns.len() as u64)
}

pub(crate) async fn join_room(
    shared: &Arc<ServerShared>,
    id: &str,
    namespace: &str,
    room: &str,
) -> Answer {
    let mut applied = 0u64;
    let mut error = None;
    for conn in local_conns(shared, id) {
        let result = match conn.namespace(namespace) {
            Some(ns) => ns
                .join_room(room)
                .await
                .map(|_| ())
                .map_err(|e| e.to_string()),
            None => Err(not_connected(namespace)),
        };
        match result {
            Ok(()) => applied += 1,
            Err(e) => error = Some(e),
        }
    }
    outcome(applied, error)
}

pub(crate) async fn leave_room(
    shared: &Arc<ServerShared>,
    id: &str,
    namespace: &str,
    room: &str,
) -> Answer {
    let mut applied = 0u64;
    let mut error = None;
    for conn in local_conns(shared, id) {
        let result = match conn.namespace(namespace) {
            Some(ns) => ns.leave_room(room).await.map_err(|e| e.to_string()),
            None => Err(not_connected(namespace)),
        };
        match result {
            Ok(()) => applied += 1,
            Err(e) => error = Some(e),
        }
    }
    outcome(applied, error)
}

fn not_connected(namespace: &str) -> String {
    format!("not connected to namespace {namespace:?}")
}

/// Applied somewhere wins over a failure on another connection with the same ID.
fn outcome(applied: u64, error: Option<String>) -> Answer {
    match error {
        Some(e) if applied == 0 => Answer::Failed(e),
        _ => Answer::Applied(applied),
    }
}
