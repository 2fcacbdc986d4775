//! Presence events: joins and leaves of namespaces and rooms, from every instance, for the
//! namespaces that turned them on.
//!
//! Each instance publishes its own changes in order (a sequence number per generation)
//! and delivers them to its own handler. The others deliver them to theirs once each, and
//! keep a view of every instance's members (a snapshot asked on first contact or after a
//! gap, then the changes). When an instance's lease expires, one survivor (the live
//! instance with the smallest ID) publishes a leave for each of its members; every
//! instance delivers the leaves of the first survivor that reports, so each leave reaches
//! each handler once. An expired instance that comes back is told so, takes a new
//! generation and publishes its members again (one join each).

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::Ordering;

use bytestring::ByteString;
use neffos_protocol::cluster::{Answer, ClusterMessage, PresenceBatch, PresenceChange, Query};
use parking_lot::Mutex;
use tokio::sync::{Notify, mpsc};
use uuid::Uuid;

use crate::server::ServerShared;

/// Changes per published batch.
const BATCH: usize = 1000;
/// Events waiting for the handler before new ones are dropped (and counted).
const HANDLER_QUEUE: usize = 65_536;
/// Batches kept while a view waits for its snapshot.
const MAX_BUFFERED: usize = 1024;

/// Whether a connection joined or left.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum PresenceKind {
    /// Connected to the namespace, or joined the room.
    Joined,
    /// Disconnected from the namespace, or left the room (or its instance died).
    Left,
}

/// One join or leave, as the presence handler receives it.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct PresenceEvent {
    /// Connection ID.
    pub id: String,
    /// Namespace.
    pub namespace: String,
    /// The room, or `None` for the namespace itself.
    pub room: Option<String>,
    /// Joined or left.
    pub kind: PresenceKind,
    /// The instance holding (or that held) the connection.
    pub instance: Uuid,
    /// The leave was reported because `instance`'s lease expired (it died or stalled).
    pub expired: bool,
    /// The instance that reported it: `instance` itself, or the survivor that reported
    /// the leaves of an expired instance.
    pub reported_by: Uuid,
}

type Key = (String, Option<String>, String);

#[derive(Debug, Default)]
struct View {
    generation: u64,
    /// Last change applied to `members`.
    seq: u64,
    /// Last change delivered to the handler.
    emitted: u64,
    synced: bool,
    /// Expired: its members were reported gone; a new generation announces them again.
    tombstone: bool,
    members: HashMap<Key, usize>,
    buffered: Vec<PresenceBatch>,
}

/// Presence state of one server.
pub(crate) struct Presence {
    outbox: Mutex<(u64, Vec<PresenceChange>)>,
    flush: Arc<Notify>,
    views: Mutex<HashMap<Uuid, View>>,
    reporters: Mutex<HashMap<(Uuid, u64), Uuid>>,
    events: Mutex<Option<mpsc::Sender<PresenceEvent>>>,
}

impl Presence {
    pub(crate) fn new() -> Self {
        Presence {
            outbox: Mutex::new((0, Vec::new())),
            flush: Arc::new(Notify::new()),
            views: Mutex::new(HashMap::new()),
            reporters: Mutex::new(HashMap::new()),
            events: Mutex::new(None),
        }
    }
}

/// Starts the handler's dispatcher and, with an exchange, the publisher of local changes.
pub(crate) fn start(shared: &Arc<ServerShared>) {
    let Some(handler) = shared.cluster.config.on_presence.clone() else {
        return;
    };
    let (tx, mut rx) = mpsc::channel::<PresenceEvent>(HANDLER_QUEUE);
    *shared.cluster.presence.events.lock() = Some(tx);
    tokio::spawn(async move {
        while let Some(event) = rx.recv().await {
            handler(event).await;
        }
    });
    if !shared.exchanges.is_empty() {
        tokio::spawn(publisher(Arc::downgrade(shared)));
    }
}

async fn publisher(weak: std::sync::Weak<ServerShared>) {
    loop {
        let flush = match weak.upgrade() {
            Some(shared) => {
                let (seq, changes) = {
                    let mut outbox = shared.cluster.presence.outbox.lock();
                    (outbox.0, std::mem::take(&mut outbox.1))
                };
                publish_changes(&shared, seq, changes, false);
                shared.cluster.presence.flush.clone()
            }
            None => return,
        };
        // Wakes on the next change (notify_one keeps a permit, so none is missed); holds
        // only a weak reference meanwhile, so the server can be dropped.
        tokio::select! {
            () = flush.notified() => {}
            () = tokio::time::sleep(std::time::Duration::from_secs(1)) => {}
        }
    }
}

/// Publishes `changes` whose last sequence number is `seq`, in chunks.
fn publish_changes(shared: &ServerShared, seq: u64, changes: Vec<PresenceChange>, snapshot: bool) {
    if changes.is_empty() && !snapshot {
        return;
    }
    let generation = shared.cluster.generation.load(Ordering::Acquire);
    let total = changes.len() as u64;
    let mut sent = 0u64;
    let mut chunks: Vec<Vec<PresenceChange>> = Vec::new();
    let mut rest = changes;
    while rest.len() > BATCH {
        let tail = rest.split_off(BATCH);
        chunks.push(std::mem::replace(&mut rest, tail));
    }
    chunks.push(rest);
    for (i, chunk) in chunks.into_iter().enumerate() {
        sent += chunk.len() as u64;
        let batch = PresenceBatch {
            instance: shared.instance,
            generation,
            seq: seq - (total - sent),
            // Only the first chunk of a snapshot replaces; the rest are deltas after it.
            snapshot: snapshot && i == 0,
            expired: false,
            changes: chunk,
        };
        if let Err(e) = super::publish_to_all(shared, &ClusterMessage::Presence(batch)) {
            tracing::warn!(error = %e, "presence changes not published");
        }
    }
}

/// Records a local change (called by the server with its index lock held, so changes are
/// numbered in the order they happened) and delivers it to the local handler.
pub(crate) fn local_change(
    shared: &ServerShared,
    id: &ByteString,
    namespace: &ByteString,
    room: Option<&ByteString>,
    joined: bool,
) {
    let state = &shared.cluster;
    if !state.config.presence.contains(&**namespace) {
        return;
    }
    let change = PresenceChange::new(
        id.to_string(),
        namespace.to_string(),
        room.map(|r| r.to_string()),
        joined,
    );
    emit(shared, &change, shared.instance, shared.instance, false);
    if shared.exchanges.is_empty() {
        return;
    }
    {
        let mut outbox = state.presence.outbox.lock();
        outbox.0 += 1;
        outbox.1.push(change);
    }
    state.presence.flush.notify_one();
}

fn emit(shared: &ServerShared, change: &PresenceChange, instance: Uuid, by: Uuid, expired: bool) {
    let events = shared.cluster.presence.events.lock();
    let Some(tx) = events.as_ref() else {
        return;
    };
    let event = PresenceEvent {
        id: change.id.clone(),
        namespace: change.namespace.clone(),
        room: change.room.clone(),
        kind: if change.joined {
            PresenceKind::Joined
        } else {
            PresenceKind::Left
        },
        instance,
        expired,
        reported_by: by,
    };
    shared.cluster.metrics.presence_events.increment(1);
    if tx.try_send(event).is_err() {
        tracing::warn!("presence handler queue full: event dropped");
    }
}

/// This instance's members of the presence namespaces, with the sequence number they
/// include.
pub(crate) fn snapshot(shared: &ServerShared) -> PresenceBatch {
    let registry = shared.registry.read();
    let seq = shared.cluster.presence.outbox.lock().0;
    let presence = &shared.cluster.config.presence;
    let mut changes = Vec::new();
    for (ns, members) in &registry.by_ns {
        if presence.contains(&**ns) {
            for c in members.iter() {
                changes.push(PresenceChange::new(
                    c.id.to_string(),
                    ns.to_string(),
                    None,
                    true,
                ));
            }
        }
    }
    for ((ns, room), members) in &registry.by_room {
        if presence.contains(&**ns) {
            for c in members.iter() {
                changes.push(PresenceChange::new(
                    c.id.to_string(),
                    ns.to_string(),
                    Some(room.to_string()),
                    true,
                ));
            }
        }
    }
    PresenceBatch {
        instance: shared.instance,
        generation: shared.cluster.generation.load(Ordering::Acquire),
        seq,
        snapshot: true,
        expired: false,
        changes,
    }
}

/// Publishes a full snapshot on the cluster topic (after coming back under a new generation).
pub(crate) fn announce(shared: &ServerShared) {
    if shared.cluster.config.presence.is_empty() {
        return;
    }
    let batch = snapshot(shared);
    publish_changes(shared, batch.seq, batch.changes, true);
}

fn apply(members: &mut HashMap<Key, usize>, change: &PresenceChange) {
    let key = (
        change.namespace.clone(),
        change.room.clone(),
        change.id.clone(),
    );
    if change.joined {
        *members.entry(key).or_insert(0) += 1;
    } else if let Some(n) = members.get_mut(&key) {
        *n -= 1;
        if *n == 0 {
            members.remove(&key);
        }
    }
}

/// A batch from another instance (`from` published it).
pub(crate) fn received(shared: &Arc<ServerShared>, from: Uuid, batch: PresenceBatch) {
    if batch.expired {
        return expired_report(shared, from, batch);
    }
    let mut resync = false;
    {
        let mut views = shared.cluster.presence.views.lock();
        let fresh = !views.contains_key(&batch.instance);
        let view = views.entry(batch.instance).or_default();
        if batch.generation < view.generation {
            return;
        }
        if fresh || batch.generation > view.generation {
            let tombstone = view.tombstone && !fresh;
            *view = View {
                generation: batch.generation,
                tombstone,
                ..View::default()
            };
        } else if view.tombstone && !batch.snapshot {
            // Changes of an expired generation: its members were already reported gone.
            return;
        }
        if batch.snapshot {
            apply_snapshot(shared, view, batch);
            return;
        }
        let first = batch.seq + 1 - (batch.changes.len() as u64).min(batch.seq);
        // Deliver what the handler has not seen, whatever the state of the view.
        for (i, change) in batch.changes.iter().enumerate() {
            if first + i as u64 > view.emitted {
                emit(shared, change, batch.instance, batch.instance, false);
            }
        }
        view.emitted = view.emitted.max(batch.seq);
        if !view.synced {
            if view.buffered.len() < MAX_BUFFERED {
                view.buffered.push(batch);
            }
            resync = view.buffered.len() == 1;
        } else if batch.seq <= view.seq {
            // Already applied.
        } else if first > view.seq + 1 {
            tracing::debug!(instance = %batch.instance, "presence gap: asking a snapshot");
            view.synced = false;
            view.buffered = vec![batch];
            resync = true;
        } else {
            for (i, change) in batch.changes.iter().enumerate() {
                if first + i as u64 > view.seq {
                    apply(&mut view.members, change);
                }
            }
            view.seq = batch.seq;
        }
    }
    if resync {
        let shared = shared.clone();
        let instance = from;
        tokio::spawn(async move {
            let deadline = shared.cluster.config.operation_deadline;
            if let Some(Answer::Snapshot(batch)) =
                super::query::ask_one(&shared, instance, Query::PresenceSnapshot, deadline).await
            {
                let mut views = shared.cluster.presence.views.lock();
                if let Some(view) = views.get_mut(&batch.instance)
                    && view.generation == batch.generation
                {
                    apply_snapshot(&shared, view, batch);
                }
            }
        });
    }
}

/// Replaces a view's members; after an expiry (tombstone), every member is a join.
fn apply_snapshot(shared: &ServerShared, view: &mut View, batch: PresenceBatch) {
    let rejoin = view.tombstone;
    view.members.clear();
    for change in &batch.changes {
        apply(&mut view.members, change);
        if rejoin {
            emit(shared, change, batch.instance, batch.instance, false);
        }
    }
    view.seq = batch.seq;
    view.emitted = view.emitted.max(batch.seq);
    view.synced = true;
    view.tombstone = false;
    for buffered in std::mem::take(&mut view.buffered) {
        let first = buffered.seq + 1 - (buffered.changes.len() as u64).min(buffered.seq);
        for (i, change) in buffered.changes.iter().enumerate() {
            if first + i as u64 > view.seq {
                apply(&mut view.members, change);
            }
        }
        view.seq = view.seq.max(buffered.seq);
    }
}

/// `instance` (generation `generation`) expired here: forget its members; if this instance
/// is the elected survivor, report their leaves to everyone (itself included).
pub(crate) fn instance_expired(
    shared: &ServerShared,
    instance: Uuid,
    generation: u64,
    elected: bool,
) {
    let members = {
        let mut views = shared.cluster.presence.views.lock();
        let Some(view) = views.get_mut(&instance) else {
            return;
        };
        if view.generation != generation {
            return;
        }
        view.tombstone = true;
        view.synced = false;
        view.buffered.clear();
        std::mem::take(&mut view.members)
    };
    if !elected || members.is_empty() {
        return;
    }
    let mut changes: Vec<PresenceChange> = Vec::new();
    for ((namespace, room, id), n) in members {
        for _ in 0..n {
            changes.push(PresenceChange::new(
                id.clone(),
                namespace.clone(),
                room.clone(),
                false,
            ));
        }
    }
    // Room leaves before namespace leaves, as a live connection reports them.
    changes.sort_by_key(|c| c.room.is_none());
    let mut rest = changes;
    while !rest.is_empty() {
        let tail = rest.split_off(rest.len().min(BATCH));
        let batch = PresenceBatch {
            instance,
            generation,
            seq: 0,
            snapshot: false,
            expired: true,
            changes: std::mem::replace(&mut rest, tail),
        };
        expired_report(shared, shared.instance, batch.clone());
        if let Err(e) = super::publish_to_all(shared, &ClusterMessage::Presence(batch)) {
            tracing::warn!(error = %e, "expired leaves not published");
        }
    }
}

/// Leaves of an expired instance reported by `reporter`: delivered if `reporter` is the
/// first to report that instance's generation.
fn expired_report(shared: &ServerShared, reporter: Uuid, batch: PresenceBatch) {
    {
        let mut reporters = shared.cluster.presence.reporters.lock();
        let first = *reporters
            .entry((batch.instance, batch.generation))
            .or_insert(reporter);
        if first != reporter {
            return;
        }
    }
    {
        let mut views = shared.cluster.presence.views.lock();
        if let Some(view) = views.get_mut(&batch.instance)
            && view.generation == batch.generation
        {
            view.tombstone = true;
            view.synced = false;
            view.members.clear();
            view.buffered.clear();
        }
    }
    for change in &batch.changes {
        emit(shared, change, batch.instance, reporter, true);
    }
}

/// Forgets an instance that said goodbye (its members left one by one before).
pub(crate) fn forget(shared: &ServerShared, instance: Uuid) {
    shared.cluster.presence.views.lock().remove(&instance);
}
