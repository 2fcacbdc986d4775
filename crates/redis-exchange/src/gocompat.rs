//! Go neffos v0.0.25 compatibility ([`RedisExchangeBuilder::go_compat`](crate::RedisExchangeBuilder::go_compat)):
//! Go's channel names, and the glue between the exchange's tasks and the
//! [`GoBridge`] that translates frames and envelopes.
//!
//! Go's Redis exchange (`stackexchange/redis`) publishes bare neffos frames on
//! `<P>.<namespace>.`, `<P>.<connID>.` and `<P>.ask.<token>` (PROTOCOL.md §7.2, §12.3).

use std::sync::Arc;

use bytes::Bytes;
use neffos::Topic;
use neffos::protocol::gocompat::{GoBridge, GoFrame, GoRoute, GoStats, Outbound};
use tokio::sync::{mpsc, oneshot};

use crate::control::ControlSender;
use crate::publisher::PubCmd;
use crate::subscriber::SubCmd;

/// Compatibility mode state of one exchange.
#[derive(Debug)]
pub(crate) struct GoCompat {
    prefix: String,
    bridge: GoBridge,
}

impl GoCompat {
    pub(crate) fn new(prefix: String) -> Arc<Self> {
        Arc::new(GoCompat {
            prefix,
            bridge: GoBridge::new(),
        })
    }

    pub(crate) fn stats(&self) -> GoStats {
        self.bridge.stats()
    }

    /// Go's channel for `route`.
    pub(crate) fn channel(&self, route: &GoRoute) -> String {
        match route {
            GoRoute::Namespace(name) | GoRoute::Conn(name) => format!("{}.{name}.", self.prefix),
            GoRoute::Ask(token) => format!("{}.ask.{token}", self.prefix),
        }
    }

    /// The Go route that mirrors our `topic`, if Go has one (inboxes are ours only).
    fn route_of(topic: &Topic) -> Option<GoRoute> {
        match topic {
            Topic::Namespace(ns) => Some(GoRoute::Namespace(ns.clone())),
            Topic::Conn(id) => Some(GoRoute::Conn(id.clone())),
            _ => None,
        }
    }

    /// The server's interest in `topic` went 0→1 (`gained`) or 1→0: follow it on Go's
    /// channel too.
    pub(crate) fn interest(&self, topic: &Topic, gained: bool, control: &ControlSender) {
        let Some(route) = Self::route_of(topic) else {
            return;
        };
        let channel = self.channel(&route);
        if gained {
            self.bridge.add_route(&channel, route);
            let _ = control.send(SubCmd::SubscribeChannel(channel));
        } else {
            self.bridge.remove_route(&channel, &route);
            let _ = control.send(SubCmd::UnsubscribeChannel(channel));
        }
    }

    /// Publishes what Go must see of `payload`, published by the server on `topic`.
    /// Returns false when the envelope itself must not be published (a reply to a Go Ask).
    pub(crate) fn publish(
        &self,
        topic: &Topic,
        payload: &Bytes,
        control: &ControlSender,
        publish: &mpsc::Sender<PubCmd>,
    ) -> bool {
        let to_go_inbox = matches!(topic, Topic::Inbox(id) if *id == self.bridge.origin());
        if matches!(topic, Topic::Inbox(_)) && !to_go_inbox {
            return true;
        }
        match self.bridge.outbound(to_go_inbox, payload) {
            Outbound::Nothing => {}
            Outbound::Mirror(frame) => self.send(frame, publish),
            Outbound::Reply(frame) => {
                self.send(frame, publish);
                return false;
            }
            Outbound::Ask {
                frame,
                reply,
                expired,
            } => {
                for token in expired {
                    let route = GoRoute::Ask(token);
                    let channel = self.channel(&route);
                    self.bridge.remove_route(&channel, &route);
                    let _ = control.send(SubCmd::UnsubscribeChannel(channel));
                }
                let route = GoRoute::Ask(reply);
                let channel = self.channel(&route);
                self.bridge.add_route(&channel, route);
                let _ = control.send(SubCmd::SubscribeChannel(channel));
                // The Go node answers on the ask channel: publish once Redis confirmed our
                // subscription to it (the publisher is another connection).
                let (done, confirmed) = oneshot::channel();
                let _ = control.send(SubCmd::Flush(done));
                let publish = publish.clone();
                let channel = self.channel(&frame.route);
                if tokio::runtime::Handle::try_current().is_ok() {
                    tokio::spawn(async move {
                        if confirmed.await.is_ok() {
                            let _ = publish.send(PubCmd::Raw(channel, frame.payload)).await;
                        }
                    });
                }
            }
            _ => {}
        }
        true
    }

    fn send(&self, frame: GoFrame, publish: &mpsc::Sender<PubCmd>) {
        let channel = self.channel(&frame.route);
        // A full queue drops and counts like any publish (the publisher counts failures).
        if publish
            .try_send(PubCmd::Raw(channel, frame.payload))
            .is_err()
        {
            tracing::debug!("Redis publish queue full: a Go-compatible frame was dropped");
        }
    }

    /// A payload received on `channel`: the envelopes to hand to the server, or `None`
    /// when `channel` is not one of Go's (the payload is an envelope already).
    pub(crate) fn received(&self, channel: &str, payload: &Bytes) -> Option<Vec<Bytes>> {
        self.bridge
            .is_go_channel(channel)
            .then(|| self.bridge.inbound(channel, payload.clone()))
    }
}
