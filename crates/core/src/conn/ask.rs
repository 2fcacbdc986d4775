//! Asks this side sent and is waiting for: matched strictly by token, per connection, and
//! removed on every exit (reply, deadline, cancellation, close).

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use bytestring::ByteString;
use neffos_protocol::{Message, WaitToken};
use parking_lot::Mutex;
use tokio::sync::oneshot;

use super::{ConnInner, Role};
use crate::error::{AskError, AskErrorKind, RemoteError, WriteErrorKind};

/// A short list, not a map: a connection has a few Asks in flight at most (bounded by
/// [`Config::max_pending_asks`](crate::Config::max_pending_asks)), and most none, so the
/// idle connection pays 24 bytes instead of a hash map's 48.
pub(crate) struct PendingAsks {
    next: AtomicU64,
    waiters: Mutex<Vec<(ByteString, oneshot::Sender<Message>)>>,
}

impl PendingAsks {
    pub(crate) fn new() -> Self {
        PendingAsks {
            next: AtomicU64::new(1),
            waiters: Mutex::new(Vec::new()),
        }
    }

    /// Takes the waiter for `token`.
    fn remove(&self, token: &ByteString) -> Option<oneshot::Sender<Message>> {
        let mut waiters = self.waiters.lock();
        let at = waiters.iter().position(|(t, _)| t == token)?;
        let (_, tx) = waiters.swap_remove(at);
        if waiters.is_empty() {
            // A burst of Asks grew it: an idle connection holds no list.
            *waiters = Vec::new();
        }
        Some(tx)
    }

    /// Hands a reply to its waiter; gives the message back when nobody waits for its
    /// token (late or unknown).
    pub(crate) fn resolve(&self, msg: Message) -> Option<Message> {
        let waiter = self.remove(msg.wait.as_byte_string());
        match waiter {
            // A waiter that gave up in the meantime is the same as no waiter.
            Some(tx) => tx.send(msg).err(),
            None => Some(msg),
        }
    }

    /// Drops every waiter: their asks fail with "connection closed".
    pub(crate) fn clear(&self) {
        *self.waiters.lock() = Vec::new();
    }
}

/// Removes the waiter when the asking future ends, whatever the way.
struct Registration<'a> {
    asks: &'a PendingAsks,
    token: ByteString,
}

impl Drop for Registration<'_> {
    fn drop(&mut self) {
        self.asks.remove(&self.token);
    }
}

impl ConnInner {
    /// Sends `msg` with a fresh token and waits for the reply carrying it.
    pub(crate) async fn ask(
        &self,
        mut msg: Message,
        deadline: Duration,
    ) -> Result<Message, AskError> {
        let n = self.asks.next.fetch_add(1, Ordering::Relaxed);
        msg.wait = match self.role {
            Role::Client => WaitToken::client(n),
            Role::Server => WaitToken::server(n),
        };
        let (tx, rx) = oneshot::channel();
        let token = msg.wait.as_byte_string().clone();
        {
            let mut waiters = self.asks.waiters.lock();
            let limit = self.config.max_pending_asks;
            if waiters.len() >= limit {
                let context = format!("{} (limit {limit})", ask_context(&msg, &self.id));
                return Err(AskError::new(AskErrorKind::TooManyPending, context));
            }
            waiters.push((token.clone(), tx));
        }
        let _registration = Registration {
            asks: &self.asks,
            token,
        };
        if let Err(kind) = self.write(&msg) {
            let write = self.write_error(kind, &msg);
            let ask_kind = match kind {
                WriteErrorKind::Closed => AskErrorKind::Closed,
                _ => AskErrorKind::NotSent,
            };
            return Err(self.ask_error(ask_kind, &msg, write));
        }
        let started = std::time::Instant::now();
        let reply = tokio::select! {
            reply = tokio::time::timeout(deadline, rx) => match reply {
                Ok(Ok(reply)) => reply,
                Ok(Err(_)) => return Err(AskError::new(AskErrorKind::Closed, ask_context(&msg, &self.id))),
                Err(_) => {
                    let context = format!("{} within {deadline:?}", ask_context(&msg, &self.id));
                    return Err(AskError::new(AskErrorKind::Timeout, context));
                }
            },
            () = self.cancel.cancelled() => return Err(AskError::new(AskErrorKind::Closed, ask_context(&msg, &self.id))),
        };
        self.server.ask_took(started.elapsed().as_secs_f64());
        match reply.error() {
            Some(text) => Err(self.ask_error(AskErrorKind::Remote, &msg, RemoteError::new(text))),
            None => Ok(reply),
        }
    }

    fn ask_error(
        &self,
        kind: AskErrorKind,
        msg: &Message,
        source: impl Into<crate::error::BoxError>,
    ) -> AskError {
        AskError::new(kind, ask_context(msg, &self.id)).with_source(source)
    }
}

/// `ask "event" on namespace "ns" of connection "id"`.
pub(crate) fn ask_context(msg: &Message, id: &str) -> String {
    format!("ask {}", super::describe(msg, id))
}
