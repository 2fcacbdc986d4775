//! The exchange → subscriber command queue, bounded by what it describes rather than by how
//! often it changed: interest changes coalesce into one net count per topic (or raw
//! channel), so a room that flaps between 0 and 1 members a million times while the
//! broker is down costs one entry, not two million commands. Flushes and the close
//! request wait beside them (each belongs to a caller that awaits it).
//!
//! The receiver sees the same [`SubCmd`]s an unbounded channel would deliver, in an order
//! with the same meaning: the interest changes taken together, then the flushes that were
//! queued after them, then the close.

use std::collections::HashMap;
use std::collections::hash_map::Entry;
use std::sync::Arc;

use neffos::Topic;
use parking_lot::Mutex;
use tokio::sync::{Notify, oneshot};

use crate::subscriber::SubCmd;

/// What a net interest count is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Topic(Topic),
    Channel(String),
}

#[derive(Default)]
struct Pending {
    /// Net interest changes not taken yet (never 0).
    deltas: HashMap<Key, i64>,
    flushes: Vec<oneshot::Sender<()>>,
    close: Option<oneshot::Sender<()>>,
    /// The receiver closed: nothing more is taken.
    closed: bool,
    /// The sender is gone: once drained, the receiver ends.
    sender_gone: bool,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.deltas.is_empty() && self.flushes.is_empty() && self.close.is_none()
    }

    fn count(&mut self, key: Key, delta: i64) {
        match self.deltas.entry(key) {
            Entry::Occupied(mut e) => {
                *e.get_mut() += delta;
                if *e.get() == 0 {
                    e.remove();
                }
            }
            Entry::Vacant(e) => {
                e.insert(delta);
            }
        }
    }
}

struct Shared {
    pending: Mutex<Pending>,
    wake: Notify,
}

/// The exchange's end.
pub(crate) struct ControlSender(Arc<Shared>);

/// The subscriber's end.
pub(crate) struct ControlReceiver(Arc<Shared>);

/// A new queue.
pub(crate) fn channel() -> (ControlSender, ControlReceiver) {
    let shared = Arc::new(Shared {
        pending: Mutex::new(Pending::default()),
        wake: Notify::new(),
    });
    (ControlSender(shared.clone()), ControlReceiver(shared))
}

impl ControlSender {
    /// Queues `cmd`; hands it back once the receiver closed.
    pub(crate) fn send(&self, cmd: SubCmd) -> Result<(), SubCmd> {
        {
            let mut pending = self.0.pending.lock();
            if pending.closed {
                return Err(cmd);
            }
            match cmd {
                SubCmd::Subscribe(topic) => pending.count(Key::Topic(topic), 1),
                SubCmd::Unsubscribe(topic) => pending.count(Key::Topic(topic), -1),
                SubCmd::SubscribeChannel(channel) => pending.count(Key::Channel(channel), 1),
                SubCmd::UnsubscribeChannel(channel) => pending.count(Key::Channel(channel), -1),
                SubCmd::Flush(done) => pending.flushes.push(done),
                SubCmd::Close(done) => pending.close = Some(done),
            }
        }
        self.0.wake.notify_one();
        Ok(())
    }
}

impl Drop for ControlSender {
    fn drop(&mut self) {
        self.0.pending.lock().sender_gone = true;
        self.0.wake.notify_one();
    }
}

impl ControlReceiver {
    /// Waits for commands and appends them to `buf` (at most `limit` interest changes at
    /// a time, then the flushes and the close); 0 once the sender is gone and everything
    /// was taken, or after [`Self::close`].
    pub(crate) async fn recv_many(&mut self, buf: &mut Vec<SubCmd>, limit: usize) -> usize {
        loop {
            let notified = self.0.wake.notified();
            {
                let mut pending = self.0.pending.lock();
                if pending.closed {
                    return 0;
                }
                if !pending.is_empty() {
                    let before = buf.len();
                    take(&mut pending, buf, limit.max(1));
                    return buf.len() - before;
                }
                if pending.sender_gone {
                    return 0;
                }
            }
            notified.await;
        }
    }

    /// Takes nothing more; later sends are refused.
    pub(crate) fn close(&mut self) {
        let mut pending = self.0.pending.lock();
        pending.closed = true;
        pending.deltas.clear();
    }
}

impl Drop for ControlReceiver {
    /// The subscriber is gone: later sends are refused, and waiting flushes and closes are
    /// dropped (their callers stop waiting).
    fn drop(&mut self) {
        let mut pending = self.0.pending.lock();
        pending.closed = true;
        pending.deltas.clear();
        pending.flushes.clear();
        pending.close = None;
    }
}

/// Moves up to `limit` interest changes, then (when every change was taken) the flushes and
/// the close, from `pending` to `buf`.
fn take(pending: &mut Pending, buf: &mut Vec<SubCmd>, limit: usize) {
    let keys: Vec<Key> = pending.deltas.keys().take(limit).cloned().collect();
    for key in keys {
        let Some(delta) = pending.deltas.remove(&key) else {
            continue;
        };
        for _ in 0..delta.unsigned_abs() {
            buf.push(match (&key, delta > 0) {
                (Key::Topic(t), true) => SubCmd::Subscribe(t.clone()),
                (Key::Topic(t), false) => SubCmd::Unsubscribe(t.clone()),
                (Key::Channel(c), true) => SubCmd::SubscribeChannel(c.clone()),
                (Key::Channel(c), false) => SubCmd::UnsubscribeChannel(c.clone()),
            });
        }
    }
    // A flush resolves after every change queued before it: only once none is left.
    if pending.deltas.is_empty() {
        buf.extend(pending.flushes.drain(..).map(SubCmd::Flush));
        if let Some(done) = pending.close.take() {
            buf.push(SubCmd::Close(done));
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn topic(n: u32) -> Topic {
        Topic::Namespace(format!("ns{n}"))
    }

    #[tokio::test]
    async fn flapping_interest_costs_one_entry() {
        let (tx, mut rx) = channel();
        for _ in 0..100_000 {
            tx.send(SubCmd::Subscribe(topic(1))).unwrap();
            tx.send(SubCmd::Unsubscribe(topic(1))).unwrap();
        }
        tx.send(SubCmd::Subscribe(topic(1))).unwrap();
        assert_eq!(rx.0.pending.lock().deltas.len(), 1);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 1024).await, 1);
        assert!(matches!(&buf[0], SubCmd::Subscribe(t) if *t == topic(1)));
    }

    #[tokio::test]
    async fn a_flush_comes_after_the_changes_queued_before_it() {
        let (tx, mut rx) = channel();
        for n in 0..10 {
            tx.send(SubCmd::Subscribe(topic(n))).unwrap();
        }
        let (done, _wait) = oneshot::channel();
        tx.send(SubCmd::Flush(done)).unwrap();
        let mut buf = Vec::new();
        // Four at a time: the flush is not handed out before the last change.
        let mut seen = Vec::new();
        while seen.len() < 11 {
            rx.recv_many(&mut buf, 4).await;
            seen.append(&mut buf);
        }
        assert!(seen[..10].iter().all(|c| matches!(c, SubCmd::Subscribe(_))));
        assert!(matches!(seen[10], SubCmd::Flush(_)));
    }

    #[tokio::test]
    async fn ends_when_the_sender_is_gone_or_after_close() {
        let (tx, mut rx) = channel();
        tx.send(SubCmd::Subscribe(topic(1))).unwrap();
        drop(tx);
        let mut buf = Vec::new();
        assert_eq!(rx.recv_many(&mut buf, 8).await, 1);
        assert!(matches!(buf[0], SubCmd::Subscribe(_)));
        assert_eq!(rx.recv_many(&mut buf, 8).await, 0);

        let (tx, mut rx) = channel();
        rx.close();
        assert!(tx.send(SubCmd::Subscribe(topic(1))).is_err());
        assert_eq!(rx.recv_many(&mut buf, 8).await, 0);

        // A receiver dropped with a flush waiting: its caller stops waiting.
        let (tx, rx) = channel();
        let (done, wait) = oneshot::channel();
        tx.send(SubCmd::Flush(done)).unwrap();
        drop(rx);
        assert!(wait.await.is_err());
        assert!(tx.send(SubCmd::Subscribe(topic(1))).is_err());
    }
}
