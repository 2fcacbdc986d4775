//! Broadcasts: the local fan-out over the indexes (no lock held while it loops) and the
//! publication to the exchanges for the other instances.

use std::sync::atomic::Ordering;

use bytes::Bytes;
use neffos_protocol::{Envelope, EnvelopeKind, Message};

use std::sync::Arc;

use super::{Server, ServerShared, Target, coalesce, registry};
use crate::conn::pressure;
use crate::error::{BroadcastError, BroadcastErrorKind, ExchangeError, ExchangeErrorKind};
use crate::exchange::Topic;
use crate::transport::WsOut;

impl Server {
    /// Sends `msg` (its namespace and room are taken from `target`) to every recipient:
    /// local ones directly, then one publication to the exchange for the other instances.
    /// The frame is encoded once for all local recipients.
    pub fn broadcast(&self, target: Target, mut msg: Message) -> Result<(), BroadcastError> {
        msg.namespace = target.namespace.clone();
        msg.room = target.room.clone().unwrap_or_default();
        if !msg.binary && std::str::from_utf8(&msg.body).is_err() {
            return Err(BroadcastError::new(
                BroadcastErrorKind::InvalidText,
                broadcast_context(&target, &msg),
            ));
        }
        // A recording namespace: appended to its history first, then delivered.
        if crate::recovery::submit(&self.0, &target, &msg) {
            return Ok(());
        }
        self.0.deliver_local(&target, &msg);
        if !self.0.exchanges.is_empty() {
            let kind = if target.to.is_some() {
                EnvelopeKind::Targeted
            } else {
                EnvelopeKind::Broadcast
            };
            let topic = match &target.to {
                Some(id) => Topic::Conn(id.to_string()),
                None => Topic::Namespace(target.namespace.to_string()),
            };
            let env = Envelope::new(
                self.0.instance,
                self.0.next_seq(),
                kind,
                target.envelope_target(),
                &msg,
            );
            let payload = self.0.encode(&env).map_err(|e| {
                e.into_kind(
                    BroadcastErrorKind::Exchange,
                    broadcast_context(&target, &msg),
                )
            })?;
            self.0.publish(topic, payload);
        }
        Ok(())
    }

    /// Broadcasts `event` with `value` as a JSON body to `target` (see [`Self::broadcast`]).
    ///
    /// ```no_run
    /// # fn run(server: neffos::Server) -> Result<(), neffos::BroadcastError> {
    /// #[derive(serde::Serialize)]
    /// struct Notice<'a> { text: &'a str }
    /// server.broadcast_json(neffos::Target::namespace("chat"), "notice", &Notice { text: "hi" })
    /// # }
    /// ```
    #[cfg(feature = "json")]
    #[cfg_attr(docsrs, doc(cfg(feature = "json")))]
    pub fn broadcast_json<T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        self.broadcast_as::<crate::body::Json<()>, T>(target, event, value)
    }

    /// Broadcasts `event` with `value` as a MessagePack body (binary frame) to `target`.
    #[cfg(feature = "msgpack")]
    #[cfg_attr(docsrs, doc(cfg(feature = "msgpack")))]
    pub fn broadcast_msgpack<T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        self.broadcast_as::<crate::body::MsgPack<()>, T>(target, event, value)
    }

    #[cfg(any(feature = "json", feature = "msgpack"))]
    fn broadcast_as<F: crate::body::Format, T: serde::Serialize + ?Sized>(
        &self,
        target: Target,
        event: &str,
        value: &T,
    ) -> Result<(), BroadcastError> {
        let msg = crate::body::message::<F, T>(&target.namespace, event, value).map_err(|e| {
            let context = broadcast_context(&target, &Message::new("", event, ""));
            e.into_kind(BroadcastErrorKind::Encode, context)
        })?;
        self.broadcast(target, msg)
    }
}

impl ServerShared {
    pub(super) fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn encode(&self, env: &Envelope) -> Result<Bytes, ExchangeError> {
        env.encode().map(Bytes::from).map_err(|e| {
            ExchangeError::new(ExchangeErrorKind::Encode, format!("encode {:?}", env.kind))
                .with_source(e)
        })
    }

    /// Publishes one encoded envelope on every exchange.
    pub(crate) fn publish(&self, topic: Topic, payload: Bytes) {
        self.stats
            .metrics
            .exchange_publishes
            .increment(self.exchanges.len() as u64);
        if let Some((last, rest)) = self.exchanges.split_last() {
            for exchange in rest {
                exchange.publish(topic.clone(), payload.clone());
            }
            last.publish(topic, payload);
        }
    }

    /// Local fan-out: recipients from the indexes, one encoding, a cheap clone per
    /// recipient. Inside a coalescing task ([`coalesce`]) a broadcast to a namespace or a
    /// room joins the task's burst to the same recipients, delivered at the latest when the
    /// task's poll ends.
    pub(crate) fn deliver_local(self: &Arc<Self>, target: &Target, msg: &Message) {
        let Some(recipients) = self.members_of(target) else {
            return;
        };
        let out = WsOut::shared(msg.to_frame());
        if target.to.is_some() {
            self.deliver_frames(target, &recipients, &[out], Some((msg, None)));
            return;
        }
        if let Err((recipients, out)) = coalesce::offer(self, target, recipients, out) {
            self.deliver_frames(target, &recipients, &[out], Some((msg, None)));
        }
    }

    /// [`Self::deliver_local`] for a broadcast recorded at `recorded` in its namespace's
    /// history: connections with a session get it through their session.
    pub(crate) fn deliver_local_at(
        &self,
        target: &Target,
        msg: &Message,
        recorded: Option<crate::recovery::Position>,
    ) -> usize {
        let Some(recipients) = self.members_of(target) else {
            return 0;
        };
        let out = WsOut::shared(msg.to_frame());
        self.deliver_frames(target, &recipients, &[out], Some((msg, recorded)))
    }

    /// The recipients of `target` now. The index lock is held only to take the list (and
    /// the keys of the connections excluded by ID), never for the loop over it.
    pub(crate) fn members_of(&self, target: &Target) -> Option<registry::Recipients> {
        let registry = self.registry.read();
        let members = match (&target.to, &target.room) {
            (Some(id), _) => registry.by_id.get(&**id),
            (None, Some(room)) => registry
                .by_room
                .get(&(target.namespace.clone(), room.clone())),
            (None, None) => registry.by_ns.get(&target.namespace),
        }?
        .snapshot();
        // Resolved once: the loop then compares keys, not an ID's bytes per recipient
        // (another cache line each).
        let except = target
            .except_id
            .as_ref()
            .and_then(|id| registry.by_id.get(&**id))
            .map(|m| m.iter().map(|c| c.key).collect())
            .unwrap_or_default();
        Some(registry::Recipients { members, except })
    }

    /// Queues `frames` (one broadcast, or a burst to the same target) for every one of
    /// `recipients` that `target` selects; `msg` is the one broadcast (the targeted filter, and
    /// its recorded position for connections with a session). Returns the recipients.
    pub(crate) fn deliver_frames(
        &self,
        target: &Target,
        recipients: &registry::Recipients,
        frames: &[WsOut],
        msg: Option<(&Message, Option<crate::recovery::Position>)>,
    ) -> usize {
        // A burst this thread still holds goes first (the fan-out below queues without
        // looking for one, per recipient).
        coalesce::deliver_pending();
        let mut tagged = None;
        let mut delivered = 0;
        let mut lag = pressure::Lagging::default();
        let shed_counter = self.shedding.get(&target.namespace);
        let mut shed = 0u64;
        for conn in recipients.members.iter() {
            if target.except_key == Some(conn.key) || recipients.except.contains(&conn.key) {
                continue;
            }
            // A targeted send must still respect the namespace/room filter.
            if let (Some(_), Some((msg, _))) = (&target.to, msg)
                && !conn.can_receive(&msg.namespace, &msg.room)
            {
                continue;
            }
            // A recorded broadcast (always a single frame) goes through the recipient's
            // session, if it has one; the session is only looked up then.
            let session = match (msg, frames) {
                (Some((msg, Some(pos))), [out]) => {
                    crate::recovery::attached_session(conn).map(|session| (session, msg, pos, out))
                }
                _ => None,
            };
            let sent = match session {
                Some((session, msg, pos, out)) => session.offer(conn, msg, pos, out, &mut tagged),
                None if shed_counter.is_some() => match conn.enqueue_or_shed_all(frames) {
                    Ok((fill, 0)) => Ok(fill),
                    Ok((fill, n)) => {
                        shed += n as u64;
                        if n == frames.len() {
                            continue;
                        }
                        Ok(fill)
                    }
                    Err(e) => Err(e),
                },
                None => conn.enqueue_all(frames),
            };
            if let Ok(fill) = sent {
                delivered += 1;
                lag.add(conn, fill);
            }
        }
        if let Some(counter) = shed_counter
            && shed > 0
        {
            self.stats.shed_frames.fetch_add(shed, Ordering::Relaxed);
            counter.increment(shed);
        }
        // Recipients behind while they read: the publisher (if a handler broadcast) is
        // pushed back instead of them being closed.
        lag.note(delivered, &self.rounds);
        for _ in frames {
            self.stats
                .metrics
                .broadcast_recipients
                .record(delivered as f64);
        }
        delivered
    }
}

/// `broadcast "event" to namespace "ns" [room "r"] [connection "id"]`.
fn broadcast_context(target: &Target, msg: &Message) -> String {
    let mut text = format!(
        "broadcast {:?} to namespace {:?}",
        &*msg.event, &*target.namespace
    );
    if let Some(room) = &target.room {
        text.push_str(&format!(" room {:?}", &**room));
    }
    if let Some(id) = &target.to {
        text.push_str(&format!(" connection {:?}", &**id));
    }
    text
}
