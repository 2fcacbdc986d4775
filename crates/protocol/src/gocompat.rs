//! Go neffos v0.0.25 stack-exchange compatibility (PROTOCOL.md §7.2, §7.3, §12.3): the
//! translation between our [`Envelope`]s and the bare neffos frames that Go neffos's Redis
//! and NATS exchanges publish, so that Go and Rust instances can share one broker during a
//! rolling migration. No I/O: the exchanges name the channels and move the bytes.
//!
//! What travels where:
//!
//! | we publish | Go frame (in addition to the envelope) | on route |
//! |---|---|---|
//! | broadcast | `<mirror marker>;ns;room;event;isErr;0;body` | [`GoRoute::Namespace`] |
//! | send to an ID | same | [`GoRoute::Conn`] |
//! | `Server::ask` | `~!<token>;ns;;event;0;0;body` (reply awaited on [`GoRoute::Ask`]) | [`GoRoute::Conn`] |
//! | reply to a Go `Server.Ask` | `;ns;room;event;isErr;0;body` (instead of an envelope) | [`GoRoute::Ask`] |
//!
//! The mirror marker is an exclusion marker (`neffos(0x…`) that no Go connection owns: Go
//! delivers the frame to every connection and strips the marker before writing, and every
//! neffos-rs instance recognises it and drops the frame (it already got the envelope).
//! Frames from Go become envelopes of a synthetic origin ([`GoBridge::origin`]); the server
//! answers a Go Ask by publishing its reply to that origin's inbox, which the exchange hands
//! back to [`GoBridge::outbound`].

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, MutexGuard};
use std::time::{Duration, Instant};

use bytes::Bytes;
use uuid::Uuid;

use crate::envelope::{Envelope, EnvelopeKind, EnvelopeTarget};
use crate::frame::{DecodeOptions, Message, decode};
use crate::token::{EXCLUSION_PREFIX, WaitKind, WaitToken};

/// The wait slot of every broadcast and send we mirror: an exclusion marker no Go
/// connection has (Go's are `neffos(0x<uuid>(<id><pointer>))`), so Go delivers to all.
pub const MIRROR_MARKER: &str = "neffos(0x~neffos-rs)";

/// First bytes of the wait token of an Ask we mirror (`~` then Go's `!` exchange marker).
const ASK_MARK: &str = "~!";

/// How long a mirrored Ask waits for its reply from Go, and a Go Ask for our reply, before
/// its entry (and its reply subscription) is dropped.
pub const ASK_TTL: Duration = Duration::from_secs(120);

/// A Go channel (Redis) or subject (NATS), by meaning; the exchange names it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum GoRoute {
    /// `<P>.<ns>.` / `<P>.<t(ns)>`: broadcasts to a namespace and its rooms.
    Namespace(String),
    /// `<P>.<id>.` / `<P>.<t(id)>`: messages to one connection ID.
    Conn(String),
    /// `<P>.ask.<token>` / `<P>.ask.<t(token)>`: the reply to one `Server.Ask`.
    Ask(String),
}

/// One frame to publish in Go's scheme.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GoFrame {
    /// Where.
    pub route: GoRoute,
    /// A neffos frame, exactly as Go's `Message.Serialize` writes it.
    pub payload: Bytes,
}

/// What to publish in Go's scheme for one envelope we publish.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Outbound {
    /// Nothing: Go has nothing to do with it (or cannot carry it).
    Nothing,
    /// Publish the envelope and this frame.
    Mirror(GoFrame),
    /// Publish the envelope; subscribe [`GoRoute::Ask`]`(reply)`, and once the broker
    /// confirmed it, publish `frame`. Unsubscribe the `expired` ask routes (answered or
    /// past [`ASK_TTL`]; they are swept here rather than from the broker's reader).
    Ask {
        /// The Ask in Go's form.
        frame: GoFrame,
        /// The token whose ask route carries the reply.
        reply: String,
        /// Ask routes whose wait is over.
        expired: Vec<String>,
    },
    /// Publish only this frame, not the envelope: it is our reply to a Go `Server.Ask`.
    Reply(GoFrame),
}

/// Counters of a [`GoBridge`], as a snapshot.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct GoStats {
    /// Frames we published in Go's scheme.
    pub mirrored: u64,
    /// Go frames turned into envelopes.
    pub translated: u64,
    /// Frames mirrored by a neffos-rs instance (this one included) that came back: dropped.
    pub own_dropped: u64,
    /// Envelopes Go's format cannot carry (a binary body that is not UTF-8): not mirrored.
    pub not_mirrored: u64,
    /// Go frames that were malformed or that we cannot serve (a `Server.Ask` without a
    /// connection ID, a reply nobody waits for): dropped.
    pub dropped: u64,
}

/// The live counters behind [`GoStats`].
#[derive(Debug, Default)]
struct GoCounters {
    mirrored: AtomicU64,
    translated: AtomicU64,
    own_dropped: AtomicU64,
    not_mirrored: AtomicU64,
    dropped: AtomicU64,
}

impl GoCounters {
    fn inc(counter: &AtomicU64) {
        counter.fetch_add(1, Ordering::Relaxed);
    }

    fn snapshot(&self) -> GoStats {
        GoStats {
            mirrored: self.mirrored.load(Ordering::Relaxed),
            translated: self.translated.load(Ordering::Relaxed),
            own_dropped: self.own_dropped.load(Ordering::Relaxed),
            not_mirrored: self.not_mirrored.load(Ordering::Relaxed),
            dropped: self.dropped.load(Ordering::Relaxed),
        }
    }
}

#[derive(Debug)]
struct Pending<T> {
    value: T,
    deadline: Instant,
}

/// The translator of one exchange in compatibility mode.
#[derive(Debug)]
pub struct GoBridge {
    origin: Uuid,
    seq: AtomicU64,
    /// Our mirrored Asks: the token Go echoes → the server's Ask token.
    asks_out: Mutex<HashMap<String, Pending<u64>>>,
    /// Ask routes answered since the last mirrored Ask (unsubscribed then).
    answered: Mutex<Vec<String>>,
    /// Go Asks handed to the server: our token → Go's token.
    asks_in: Mutex<HashMap<u64, Pending<String>>>,
    /// What each subscribed Go channel carries, with a count per meaning.
    routes: Mutex<HashMap<String, Vec<(GoRoute, usize)>>>,
    stats: GoCounters,
}

impl Default for GoBridge {
    fn default() -> Self {
        Self::new()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Drops the entries past their deadline; returns their keys.
fn prune<K: Clone + Eq + std::hash::Hash, V>(map: &mut HashMap<K, Pending<V>>) -> Vec<K> {
    let now = Instant::now();
    let expired: Vec<K> = map
        .iter()
        .filter(|(_, p)| p.deadline <= now)
        .map(|(k, _)| k.clone())
        .collect();
    for k in &expired {
        map.remove(k);
    }
    expired
}

/// The connection ID inside a Go exclusion marker `neffos(0x<uuid>(<id><pointer>))`.
fn excluded_id(marker: &str) -> Option<&str> {
    let (_uuid, inner) = marker.strip_prefix(EXCLUSION_PREFIX)?.split_once('(')?;
    let inner = inner.strip_suffix("))")?;
    inner.rfind("0x").map(|at| &inner[..at])
}

impl GoBridge {
    /// A bridge with a fresh synthetic origin.
    pub fn new() -> Self {
        GoBridge {
            origin: Uuid::new_v4(),
            seq: AtomicU64::new(0),
            asks_out: Mutex::new(HashMap::new()),
            answered: Mutex::new(Vec::new()),
            asks_in: Mutex::new(HashMap::new()),
            routes: Mutex::new(HashMap::new()),
            stats: GoCounters::default(),
        }
    }

    /// The origin of the envelopes made from Go frames: the server publishes its replies to
    /// Go Asks to this origin's inbox, which the exchange passes to [`Self::outbound`].
    pub fn origin(&self) -> Uuid {
        self.origin
    }

    /// The counters.
    pub fn stats(&self) -> GoStats {
        self.stats.snapshot()
    }

    fn next_seq(&self) -> u64 {
        self.seq.fetch_add(1, Ordering::Relaxed) + 1
    }

    /// Records that `channel` (subscribed or about to be) carries `route`.
    pub fn add_route(&self, channel: &str, route: GoRoute) {
        let mut routes = lock(&self.routes);
        let entry = routes.entry(channel.to_owned()).or_default();
        match entry.iter_mut().find(|(r, _)| *r == route) {
            Some((_, n)) => *n += 1,
            None => entry.push((route, 1)),
        }
    }

    /// Undoes one [`Self::add_route`]. True when `channel` carries nothing any more.
    pub fn remove_route(&self, channel: &str, route: &GoRoute) -> bool {
        let mut routes = lock(&self.routes);
        let Some(entry) = routes.get_mut(channel) else {
            return true;
        };
        if let Some(i) = entry.iter().position(|(r, _)| r == route) {
            entry[i].1 -= 1;
            if entry[i].1 == 0 {
                entry.remove(i);
            }
        }
        if entry.is_empty() {
            routes.remove(channel);
            return true;
        }
        false
    }

    /// True when `channel` is a Go channel of this bridge.
    pub fn is_go_channel(&self, channel: &str) -> bool {
        lock(&self.routes).contains_key(channel)
    }

    /// The Go frame (if any) to publish along with `payload`, an encoded envelope the server
    /// publishes. `to_go_inbox`: it is published to the inbox of [`Self::origin`].
    pub fn outbound(&self, to_go_inbox: bool, payload: &[u8]) -> Outbound {
        let Ok(env) = Envelope::decode(payload) else {
            return Outbound::Nothing;
        };
        if to_go_inbox {
            return self.reply_to_go(&env);
        }
        let route = match (env.kind, env.target.conn.clone()) {
            (EnvelopeKind::Broadcast, _) => GoRoute::Namespace(env.target.namespace.clone()),
            (EnvelopeKind::Targeted | EnvelopeKind::Ask, Some(id)) => GoRoute::Conn(id),
            _ => return Outbound::Nothing,
        };
        // Go writes every exchanged frame as text: a body that is not UTF-8 would make
        // browsers close the connection (1007).
        if env.binary && std::str::from_utf8(&env.body).is_err() {
            GoCounters::inc(&self.stats.not_mirrored);
            return Outbound::Nothing;
        }
        if env.kind == EnvelopeKind::Ask {
            let Some(token) = env.token else {
                return Outbound::Nothing;
            };
            // Unguessable: whoever echoes it answers the Ask.
            let reply = format!("~{:032x}", Uuid::new_v4().as_u128());
            let wait = format!("{ASK_MARK}{}", &reply[1..]);
            let expired = {
                let mut asks = lock(&self.asks_out);
                let mut expired = prune(&mut asks);
                expired.append(&mut lock(&self.answered));
                asks.insert(
                    reply.clone(),
                    Pending {
                        value: token,
                        deadline: Instant::now() + ASK_TTL,
                    },
                );
                expired
            };
            GoCounters::inc(&self.stats.mirrored);
            return Outbound::Ask {
                frame: GoFrame {
                    route,
                    payload: go_frame(&env, &wait),
                },
                reply,
                expired,
            };
        }
        GoCounters::inc(&self.stats.mirrored);
        Outbound::Mirror(GoFrame {
            route,
            payload: go_frame(&env, MIRROR_MARKER),
        })
    }

    /// Our reply to a Go `Server.Ask`, in Go's form, to the Ask's own route.
    fn reply_to_go(&self, env: &Envelope) -> Outbound {
        let Some(token) = env.token.filter(|_| env.kind == EnvelopeKind::Reply) else {
            return Outbound::Nothing;
        };
        let Some(pending) = lock(&self.asks_in).remove(&token) else {
            GoCounters::inc(&self.stats.dropped);
            return Outbound::Nothing;
        };
        GoCounters::inc(&self.stats.mirrored);
        Outbound::Reply(GoFrame {
            route: GoRoute::Ask(pending.value),
            payload: go_frame(env, ""),
        })
    }

    /// What a frame received on Go channel `channel` means to the server: the encoded
    /// envelopes to hand to it (none for our own mirrors, garbage, what we cannot serve).
    pub fn inbound(&self, channel: &str, payload: Bytes) -> Vec<Bytes> {
        let routes: Vec<GoRoute> = lock(&self.routes)
            .get(channel)
            .map(|e| e.iter().map(|(r, _)| r.clone()).collect())
            .unwrap_or_default();
        let opts = DecodeOptions::default().max_frame_size(payload.len().max(1));
        let Ok(msg) = decode(payload, false, &opts) else {
            GoCounters::inc(&self.stats.dropped);
            return Vec::new();
        };
        if let Some(token) = routes.iter().find_map(|r| match r {
            GoRoute::Ask(t) => Some(t.clone()),
            _ => None,
        }) {
            return self.reply_from_go(token, &msg);
        }
        let wait = msg.wait.as_str();
        if wait.starts_with(MIRROR_MARKER) || wait.starts_with(ASK_MARK) {
            GoCounters::inc(&self.stats.own_dropped);
            return Vec::new();
        }
        let ns_route = routes
            .iter()
            .any(|r| matches!(r, GoRoute::Namespace(ns) if *ns == *msg.namespace));
        let conns: Vec<&str> = routes
            .iter()
            .filter_map(|r| match r {
                GoRoute::Conn(id) => Some(id.as_str()),
                _ => None,
            })
            .collect();
        let go_ask = msg.wait.kind() == WaitKind::ExchangeMarked;
        let mut envelopes = Vec::new();
        if go_ask {
            // A Go `Server.Ask`: only one to a connection ID can be answered (ours ask one
            // connection); Go's clean token is the marked one without its `!`.
            let Some(id) = conns.first() else {
                GoCounters::inc(&self.stats.dropped);
                return envelopes;
            };
            let go_token = format!("{}{}", &wait[..1], &wait[2..]);
            let token = self.next_seq();
            {
                let mut asks = lock(&self.asks_in);
                prune(&mut asks);
                asks.insert(
                    token,
                    Pending {
                        value: go_token,
                        deadline: Instant::now() + ASK_TTL,
                    },
                );
            }
            let target = target_of(&msg).with_conn(*id);
            let env = self
                .envelope(EnvelopeKind::Ask, target, &msg)
                .with_token(token);
            envelopes.extend(encode(&env));
        } else {
            let mut target = target_of(&msg);
            if msg.wait.kind() == WaitKind::Exclusion
                && let Some(id) = excluded_id(wait).filter(|id| !id.is_empty())
            {
                target = target.with_except(id);
            }
            if ns_route {
                let env = self.envelope(EnvelopeKind::Broadcast, target, &msg);
                envelopes.extend(encode(&env));
            } else {
                for id in conns {
                    let env =
                        self.envelope(EnvelopeKind::Targeted, target.clone().with_conn(id), &msg);
                    envelopes.extend(encode(&env));
                }
            }
        }
        if envelopes.is_empty() {
            GoCounters::inc(&self.stats.dropped);
        } else {
            self.stats
                .translated
                .fetch_add(envelopes.len() as u64, Ordering::Relaxed);
        }
        envelopes
    }

    /// A Go node's reply (published by its `NotifyAsk`) to an Ask we mirrored.
    fn reply_from_go(&self, token: String, msg: &Message) -> Vec<Bytes> {
        let Some(pending) = lock(&self.asks_out).remove(&token) else {
            GoCounters::inc(&self.stats.dropped);
            return Vec::new();
        };
        lock(&self.answered).push(token);
        let env = self
            .envelope(EnvelopeKind::Reply, target_of(msg), msg)
            .with_token(pending.value);
        GoCounters::inc(&self.stats.translated);
        encode(&env).into_iter().collect()
    }

    fn envelope(&self, kind: EnvelopeKind, target: EnvelopeTarget, msg: &Message) -> Envelope {
        let mut env = Envelope::new(self.origin, self.next_seq(), kind, target, msg);
        // Go's frames are text; a body that is not UTF-8 can only travel as binary.
        env.binary = std::str::from_utf8(&msg.body).is_err();
        env
    }
}

fn target_of(msg: &Message) -> EnvelopeTarget {
    let target = EnvelopeTarget::namespace(msg.namespace.to_string());
    if msg.room.is_empty() {
        target
    } else {
        target.with_room(msg.room.to_string())
    }
}

fn encode(env: &Envelope) -> Option<Bytes> {
    env.encode().ok().map(Bytes::from)
}

/// The frame Go's `Message.Serialize` would write for `env`, with `wait` in the wait slot.
fn go_frame(env: &Envelope, wait: &str) -> Bytes {
    let mut msg = Message::new(
        env.target.namespace.clone(),
        env.event.clone(),
        env.body.clone(),
    )
    .with_wait(WaitToken::new(wait.to_owned()));
    if let Some(room) = &env.target.room {
        msg.room = room.clone().into();
    }
    msg.is_error = env.is_error;
    msg.to_frame().bytes
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::panic)]

    use super::*;
    use crate::frame::decode;

    fn env(kind: EnvelopeKind, target: EnvelopeTarget, body: &'static [u8]) -> Envelope {
        let msg = Message::new(target.namespace.clone(), "chat;x", Bytes::from_static(body));
        Envelope::new(Uuid::from_u128(7), 1, kind, target, &msg)
    }

    fn bytes(env: &Envelope) -> Vec<u8> {
        env.encode().unwrap_or_default()
    }

    fn mirrored(out: Outbound) -> GoFrame {
        match out {
            Outbound::Mirror(f) | Outbound::Reply(f) | Outbound::Ask { frame: f, .. } => f,
            Outbound::Nothing => panic!("nothing mirrored"),
        }
    }

    #[test]
    fn broadcast_is_mirrored_with_the_marker_and_escaped_fields() {
        let bridge = GoBridge::new();
        let e = env(
            EnvelopeKind::Broadcast,
            EnvelopeTarget::namespace("default")
                .with_room("r;1")
                .with_except("me"),
            b"hi;neffos(0x;1!x",
        );
        let f = mirrored(bridge.outbound(false, &bytes(&e)));
        assert_eq!(f.route, GoRoute::Namespace("default".into()));
        assert_eq!(
            &f.payload[..],
            b"neffos(0x~neffos-rs);default;r@%!semicolon@%!1;chat@%!semicolon@%!x;0;0;hi;neffos(0x;1!x"
        );
    }

    #[test]
    fn own_mirrors_coming_back_are_dropped() {
        let a = GoBridge::new();
        let b = GoBridge::new();
        b.add_route("P.default.", GoRoute::Namespace("default".into()));
        b.add_route("P.x.", GoRoute::Conn("x".into()));
        let bc = env(
            EnvelopeKind::Broadcast,
            EnvelopeTarget::namespace("default"),
            b"hi",
        );
        let f = mirrored(a.outbound(false, &bytes(&bc)));
        assert!(b.inbound("P.default.", f.payload).is_empty());
        let mut ask = env(
            EnvelopeKind::Ask,
            EnvelopeTarget::namespace("default").with_conn("x"),
            b"?",
        );
        ask.token = Some(5);
        let f = mirrored(a.outbound(false, &bytes(&ask)));
        assert!(b.inbound("P.x.", f.payload).is_empty());
        assert_eq!(b.stats().own_dropped, 2);
    }

    #[test]
    fn go_broadcast_with_exclusion_becomes_an_envelope() {
        let bridge = GoBridge::new();
        bridge.add_route("P.default.", GoRoute::Namespace("default".into()));
        let frame = Bytes::from_static(
            b"neffos(0x5ea82d08-1111-4222-8333-444455556666(alice0xc000123456));default;room1;chat;0;0;hi",
        );
        let got = bridge.inbound("P.default.", frame);
        let env = Envelope::decode(&got[0]).unwrap();
        assert_eq!(env.kind, EnvelopeKind::Broadcast);
        assert_eq!(env.origin, bridge.origin());
        assert_eq!(env.target.room.as_deref(), Some("room1"));
        assert_eq!(env.target.except.as_deref(), Some("alice"));
        assert!(!env.binary);
    }

    #[test]
    fn ask_round_trips_both_ways() {
        // Ours to Go: the marked token goes out, Go's NotifyAsk reply comes back.
        let bridge = GoBridge::new();
        let mut ask = env(
            EnvelopeKind::Ask,
            EnvelopeTarget::namespace("default").with_conn("gopher"),
            b"?",
        );
        ask.token = Some(42);
        let Outbound::Ask { frame, reply, .. } = bridge.outbound(false, &bytes(&ask)) else {
            panic!("not an ask");
        };
        let sent = decode(frame.payload, false, &DecodeOptions::default()).unwrap();
        assert_eq!(sent.wait.kind(), WaitKind::ExchangeMarked);
        // Go strips the `!`, its client echoes, NotifyAsk publishes with the wait cleared.
        assert_eq!(
            format!("{}{}", &sent.wait.as_str()[..1], &sent.wait.as_str()[2..]),
            reply
        );
        let channel = format!("P.ask.{reply}");
        bridge.add_route(&channel, GoRoute::Ask(reply));
        let got = bridge.inbound(&channel, Bytes::from_static(b";default;;chat;0;0;42!"));
        let env = Envelope::decode(&got[0]).unwrap();
        assert_eq!((env.kind, env.token), (EnvelopeKind::Reply, Some(42)));
        assert_eq!(&env.body[..], b"42!");
        // A second (late or forged) reply finds nothing.
        assert!(
            bridge
                .inbound(&channel, Bytes::from_static(b";default;;chat;0;0;x"))
                .is_empty()
        );

        // Go to ours: Go's marked ask to a connection, our reply to its ask route.
        bridge.add_route("P.rusty.", GoRoute::Conn("rusty".into()));
        let got = bridge.inbound(
            "P.rusty.",
            Bytes::from_static(b"d!n4kkjd7rjrx-2-5ea82d08;default;;q;0;0;status?"),
        );
        let asked = Envelope::decode(&got[0]).unwrap();
        assert_eq!(asked.kind, EnvelopeKind::Ask);
        assert_eq!(asked.target.conn.as_deref(), Some("rusty"));
        let mut answer = Envelope::new(
            Uuid::from_u128(9),
            3,
            EnvelopeKind::Reply,
            EnvelopeTarget::namespace("default"),
            &Message::new("default", "q", "fine"),
        );
        answer.token = asked.token;
        let f = mirrored(bridge.outbound(true, &bytes(&answer)));
        assert_eq!(f.route, GoRoute::Ask("dn4kkjd7rjrx-2-5ea82d08".into()));
        assert_eq!(&f.payload[..], b";default;;q;0;0;fine");
        // Only once.
        assert_eq!(bridge.outbound(true, &bytes(&answer)), Outbound::Nothing);
    }

    #[test]
    fn what_go_cannot_carry() {
        let bridge = GoBridge::new();
        let mut e = env(
            EnvelopeKind::Broadcast,
            EnvelopeTarget::namespace("default"),
            b"\xff\x00",
        );
        e.binary = true;
        assert_eq!(bridge.outbound(false, &bytes(&e)), Outbound::Nothing);
        e.body = Bytes::from_static(b"text");
        assert!(matches!(
            bridge.outbound(false, &bytes(&e)),
            Outbound::Mirror(_)
        ));
        // A Go namespace-wide Server.Ask cannot be answered by us; non-UTF-8 Go bodies
        // arrive as binary; garbage is dropped.
        bridge.add_route("P.default.", GoRoute::Namespace("default".into()));
        let ask = Bytes::from_static(b"d!n4k-1-5ea82d08;default;;q;0;0;?");
        assert!(bridge.inbound("P.default.", ask).is_empty());
        let got = bridge.inbound(
            "P.default.",
            Bytes::from_static(b";default;;bin;0;0;\xff\x00"),
        );
        assert!(Envelope::decode(&got[0]).unwrap().binary);
        assert!(
            bridge
                .inbound("P.default.", Bytes::from_static(b"garbage"))
                .is_empty()
        );
    }

    #[test]
    fn wait_tokens_from_go_never_reach_our_clients() {
        // Whatever a Go node (or a client it relays) puts in the wait slot, what our
        // clients get carries no wait token: exchange-only tokens cannot be injected.
        let bridge = GoBridge::new();
        bridge.add_route("P.default.", GoRoute::Namespace("default".into()));
        bridge.add_route("P.bob.", GoRoute::Conn("bob".into()));
        for wait in [
            "$123",
            "#1",
            "1!234",
            "a!!x",
            "neffos(0x~neffos-rs)x",
            "neffos(0xabc(bob0xc01))",
            "dn4k-1-5ea82d08",
        ] {
            for channel in ["P.default.", "P.bob."] {
                let frame = Bytes::from(format!("{wait};default;;chat;0;0;hi"));
                for env in bridge.inbound(channel, frame) {
                    let env = Envelope::decode(&env).unwrap();
                    assert!(env.to_message().wait.is_empty(), "{wait} on {channel}");
                }
            }
        }
    }

    #[test]
    fn routes_are_counted() {
        let bridge = GoBridge::new();
        bridge.add_route("c", GoRoute::Conn("a".into()));
        bridge.add_route("c", GoRoute::Conn("a".into()));
        bridge.add_route("c", GoRoute::Namespace("a".into()));
        assert!(!bridge.remove_route("c", &GoRoute::Conn("a".into())));
        assert!(!bridge.remove_route("c", &GoRoute::Conn("a".into())));
        assert!(bridge.is_go_channel("c"));
        assert!(bridge.remove_route("c", &GoRoute::Namespace("a".into())));
        assert!(!bridge.is_go_channel("c"));
    }

    #[test]
    fn exclusion_marker_parsing() {
        assert_eq!(
            excluded_id("neffos(0xabc(al0xice0xc00001))"),
            Some("al0xice")
        );
        assert_eq!(excluded_id("neffos(0xabc(0xc00001))"), Some(""));
        assert_eq!(excluded_id(MIRROR_MARKER), None);
        assert_eq!(excluded_id("neffos(0xabc"), None);
    }
}
