//! Go neffos v0.0.25 compatibility ([`NatsExchangeBuilder::go_compat`](crate::NatsExchangeBuilder::go_compat)):
//! Go's subjects, and the glue between the exchange's task and the [`GoBridge`] that
//! translates frames and envelopes.
//!
//! Go's NATS exchange (`stackexchange/nats`) publishes bare neffos frames on
//! `<P>.<t(namespace)>`, `<P>.<t(connID)>` and `<P>.ask.<t(token)>`, where `t` turns
//! `.`, `*`, `>`, space, tab, CR and LF into `_` and the empty string into `_`
//! (PROTOCOL.md §7.3, §12.3).

use std::sync::Arc;

use bytes::Bytes;
use neffos::Topic;
use neffos::protocol::gocompat::{GoBridge, GoRoute, GoStats, Outbound};

use crate::actor::Cmd;

/// Compatibility mode state of one exchange.
#[derive(Debug)]
pub(crate) struct GoCompat {
    prefix: String,
    bridge: GoBridge,
}

/// Go's `subjectToken`.
fn token(s: &str) -> String {
    if s.is_empty() {
        return "_".to_owned();
    }
    s.chars()
        .map(|c| match c {
            '.' | '*' | '>' | ' ' | '\t' | '\r' | '\n' => '_',
            c => c,
        })
        .collect()
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

    /// Go's subject for `route`.
    pub(crate) fn subject(&self, route: &GoRoute) -> String {
        match route {
            GoRoute::Namespace(name) | GoRoute::Conn(name) => {
                format!("{}.{}", self.prefix, token(name))
            }
            GoRoute::Ask(t) => format!("{}.ask.{}", self.prefix, token(t)),
        }
    }

    /// True when `subject` is one of Go's that this exchange follows.
    pub(crate) fn is_go_subject(&self, subject: &str) -> bool {
        self.bridge.is_go_channel(subject)
    }

    /// The server's interest in `topic` went 0→1 (`gained`) or 1→0: the command that
    /// follows it on Go's subject too.
    pub(crate) fn interest(&self, topic: &Topic, gained: bool) -> Option<Cmd> {
        let route = match topic {
            Topic::Namespace(ns) => GoRoute::Namespace(ns.clone()),
            Topic::Conn(id) => GoRoute::Conn(id.clone()),
            _ => return None,
        };
        let subject = self.subject(&route);
        Some(if gained {
            self.bridge.add_route(&subject, route);
            Cmd::SubscribeRaw(subject)
        } else {
            self.bridge.remove_route(&subject, &route);
            Cmd::UnsubscribeRaw(subject)
        })
    }

    /// The commands that publish what Go must see of `payload`, published by the server on
    /// `topic`, and whether the envelope itself is published (not for a reply to a Go Ask).
    /// One connection carries everything in order, so an Ask's reply subscription reaches
    /// the broker before the Ask.
    pub(crate) fn publish(&self, topic: &Topic, payload: &Bytes) -> (Vec<Cmd>, bool) {
        let to_go_inbox = matches!(topic, Topic::Inbox(id) if *id == self.bridge.origin());
        if matches!(topic, Topic::Inbox(_)) && !to_go_inbox {
            return (Vec::new(), true);
        }
        match self.bridge.outbound(to_go_inbox, payload) {
            Outbound::Mirror(frame) => (
                vec![Cmd::PublishRaw(self.subject(&frame.route), frame.payload)],
                true,
            ),
            Outbound::Reply(frame) => (
                vec![Cmd::PublishRaw(self.subject(&frame.route), frame.payload)],
                false,
            ),
            Outbound::Ask {
                frame,
                reply,
                expired,
            } => {
                let mut cmds = Vec::with_capacity(expired.len() + 2);
                for t in expired {
                    let route = GoRoute::Ask(t);
                    let subject = self.subject(&route);
                    self.bridge.remove_route(&subject, &route);
                    cmds.push(Cmd::UnsubscribeRaw(subject));
                }
                let route = GoRoute::Ask(reply);
                let subject = self.subject(&route);
                self.bridge.add_route(&subject, route);
                cmds.push(Cmd::SubscribeRaw(subject));
                cmds.push(Cmd::PublishRaw(self.subject(&frame.route), frame.payload));
                (cmds, true)
            }
            _ => (Vec::new(), true),
        }
    }

    /// The envelopes to hand to the server for a frame received on Go subject `subject`.
    pub(crate) fn received(&self, subject: &str, payload: Bytes) -> Vec<Bytes> {
        self.bridge.inbound(subject, payload)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn subjects_are_gos() {
        let go = GoCompat::new("neffos".into());
        let ns = |s: &str| go.subject(&GoRoute::Namespace(s.into()));
        assert_eq!(ns("default"), "neffos.default");
        assert_eq!(ns(""), "neffos._");
        assert_eq!(ns("a.b*c>d e\tf"), "neffos.a_b_c_d_e_f");
        assert_eq!(
            go.subject(&GoRoute::Ask("d-1.x".into())),
            "neffos.ask.d-1_x"
        );
    }
}
