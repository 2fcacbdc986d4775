//! Records each broadcast of a recovering namespace before delivering it: append to the
//! store, then deliver locally and publish with the position. One task per server keeps
//! the order of submission; what was submitted while the store was busy is appended as
//! one batch (one call per run of broadcasts to the same namespace).

use std::sync::{Arc, Weak};

use bytes::Bytes;
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

/// Broadcasts appended in one call to the store at most.
const MAX_BATCH: usize = 256;

async fn run(
    shared: Weak<ServerShared>,
    store: Arc<dyn HistoryStore>,
    mut rx: mpsc::UnboundedReceiver<Submitted>,
) {
    let store = &*store;
    let mut submitted = Vec::with_capacity(MAX_BATCH);
    // The current run of broadcasts to one namespace, and their encoded envelopes.
    let mut run: Vec<(Submitted, Envelope)> = Vec::new();
    let mut payloads = Vec::new();
    // One batch at a time: what is submitted while a batch is being appended makes the
    // next one, so batches grow with the load and the order of positions is the order of
    // submission whatever the store does with concurrent calls.
    while rx.recv_many(&mut submitted, MAX_BATCH).await > 0 {
        let Some(server) = shared.upgrade() else {
            return;
        };
        for item in submitted.drain(..) {
            if run
                .first()
                .is_some_and(|(first, _)| first.target.namespace != item.target.namespace)
            {
                append_run(&server, store, &mut run, &mut payloads).await;
            }
            let env = Envelope::new(
                server.instance,
                server.next_token(),
                EnvelopeKind::Broadcast,
                item.target.envelope_target(),
                &item.msg,
            );
            match env.encode() {
                Ok(payload) => {
                    payloads.push(Bytes::from(payload));
                    run.push((item, env));
                }
                Err(e) => {
                    // Delivered in its place, unrecorded.
                    append_run(&server, store, &mut run, &mut payloads).await;
                    deliver(&server, Err(StoreError(e.to_string())), item, env);
                }
            }
        }
        append_run(&server, store, &mut run, &mut payloads).await;
    }
}

/// Appends `run` (broadcasts to one namespace, `payloads` encoded) in one call and
/// delivers each with its position, in order; leaves both empty.
async fn append_run(
    server: &ServerShared,
    store: &dyn HistoryStore,
    run: &mut Vec<(Submitted, Envelope)>,
    payloads: &mut Vec<Bytes>,
) {
    let Some((first, _)) = run.first() else {
        return;
    };
    let positions: Vec<Result<Position, StoreError>> = match store
        .append_all(&first.target.namespace, payloads)
        .await
    {
        Ok(positions) if positions.len() == run.len() => positions.into_iter().map(Ok).collect(),
        Ok(positions) => vec![
            Err(StoreError(format!(
                "{} positions for {} appended broadcasts",
                positions.len(),
                run.len()
            )));
            run.len()
        ],
        Err(e) => vec![Err(e); run.len()],
    };
    payloads.clear();
    for ((item, env), position) in run.drain(..).zip(positions) {
        deliver(server, position, item, env);
        // A batch is many fan-outs: the thread's other tasks (the writers) get their turn
        // as between broadcasts submitted one at a time.
        tokio::task::consume_budget().await;
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

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::recovery::{HistoryLimits, MemoryHistory, Recovery, Replay, StoreFuture};
    use crate::{Events, Namespaces, Server};

    /// A store whose appends, if several ran at once, would take their positions in
    /// another order than they were called in: each call waits a different number of
    /// turns first. It counts what it recorded.
    #[derive(Debug)]
    struct Racing {
        inner: MemoryHistory,
        calls: AtomicUsize,
        recorded: tokio::sync::watch::Sender<usize>,
    }

    impl HistoryStore for Racing {
        fn append_all<'a>(
            &'a self,
            namespace: &'a str,
            payloads: &'a [Bytes],
        ) -> StoreFuture<'a, Vec<Position>> {
            let turns = 3 - self.calls.fetch_add(1, Ordering::Relaxed) % 4;
            Box::pin(async move {
                for _ in 0..turns {
                    tokio::task::yield_now().await;
                }
                let positions = self.inner.append_all(namespace, payloads).await?;
                self.recorded.send_modify(|n| *n += positions.len());
                Ok(positions)
            })
        }
        fn head<'a>(&'a self, namespace: &'a str) -> StoreFuture<'a, Position> {
            self.inner.head(namespace)
        }
        fn read_after<'a>(
            &'a self,
            namespace: &'a str,
            after: Position,
            limit: usize,
        ) -> StoreFuture<'a, Replay> {
            self.inner.read_after(namespace, after, limit)
        }
        fn save_session<'a>(
            &'a self,
            key: &'a str,
            session: Bytes,
            ttl: std::time::Duration,
        ) -> StoreFuture<'a, ()> {
            self.inner.save_session(key, session, ttl)
        }
        fn take_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, Option<Bytes>> {
            self.inner.take_session(key)
        }
        fn delete_session<'a>(&'a self, key: &'a str) -> StoreFuture<'a, ()> {
            self.inner.delete_session(key)
        }
    }

    /// The history holds a burst in the order it was broadcast, even from a store that
    /// would reorder concurrent appends (the Redis store did, through its shared
    /// connection, when up to 256 appends were in flight).
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn positions_follow_the_order_of_submission() {
        const N: usize = 500;
        let store = Arc::new(Racing {
            inner: MemoryHistory::new(HistoryLimits::default()),
            calls: AtomicUsize::new(0),
            recorded: tokio::sync::watch::Sender::new(0),
        });
        let mut recorded = store.recorded.subscribe();
        let start = store.head("chat").await.expect("head");
        let server = Server::builder(Namespaces::new().namespace("chat", Events::new()))
            .recovery(Recovery::new().namespace("chat").store(store.clone()))
            .build();
        for i in 0..N {
            server
                .broadcast(
                    Target::namespace("chat"),
                    Message::new("chat", "msg", i.to_string()),
                )
                .expect("broadcast");
        }
        tokio::time::timeout(
            std::time::Duration::from_secs(10),
            recorded.wait_for(|n| *n >= N),
        )
        .await
        .expect("all recorded in time")
        .expect("the store is alive");
        let Ok(Replay::Entries { entries, .. }) = store.read_after("chat", start, N).await else {
            panic!("the burst is in the history");
        };
        let bodies: Vec<String> = entries
            .iter()
            .map(|(_, payload)| {
                let env = Envelope::decode(payload).expect("an envelope");
                String::from_utf8(env.body.to_vec()).expect("text")
            })
            .collect();
        let sent: Vec<String> = (0..N).map(|i| i.to_string()).collect();
        assert_eq!(bodies, sent);
    }
}
