//! Subjects: one per topic, under the configured prefix, encoded so that user data can
//! never name another subject, a wildcard or an invalid subject.

use std::fmt::Write as _;

use neffos::Topic;
use sha2::{Digest, Sha256};
use uuid::Uuid;

use crate::error::{Error, Result};

/// The subject prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "neffos";

/// Longest prefix accepted.
const MAX_PREFIX_LEN: usize = 128;

/// Longest subject built with the readable encoding. A value that would make its subject
/// longer is hashed instead: `nats-server` closes a connection whose protocol line exceeds
/// `max_control_line` (4 KiB by default), which would make one long connection ID cut a
/// whole instance off the broker, again after every reconnection.
pub(crate) const MAX_SUBJECT_LEN: usize = 1024;

/// The token of the empty value (the default namespace `""`). A non-empty value never
/// encodes to it: `%` only appears followed by two hex digits.
const EMPTY: char = '%';

/// First character of a hashed value's token. Never produced by the readable encoding
/// (`~` is escaped).
const HASHED: char = '~';

const HEX: &[u8; 16] = b"0123456789ABCDEF";

/// Bytes kept as they are in a value's token; all others become `%XX`.
fn is_plain(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b == b'-' || b == b'_'
}

/// Builds the subject of each [`Topic`] under one prefix:
///
/// - namespace `ns`: `<prefix>.ns.<value(ns)>`
/// - connection ID `id`: `<prefix>.conn.<value(id)>`
/// - the inbox of instance `u`: `<prefix>.inbox.<u>` (hyphenated UUID)
/// - the flush barrier of exchange `x`: `<prefix>.flush.<x>` (never subscribed)
///
/// `value(v)` is exactly one token: `%` for the empty string; otherwise `v`'s UTF-8 bytes
/// with `A-Z a-z 0-9 - _` kept and every other byte written `%XX` (uppercase hex); or, when
/// that would make the subject longer than [`MAX_SUBJECT_LEN`], `~` and the SHA-256 of `v`
/// in lowercase hex.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subjects {
    prefix: String,
}

impl Subjects {
    /// Validates `prefix`: 1 to 128 characters, dot-separated non-empty tokens of
    /// `A-Z a-z 0-9 - _`.
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .split('.')
                .all(|token| !token.is_empty() && token.bytes().all(is_plain));
        if !valid {
            return Err(Error::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Subjects {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The subject of `topic`, or `None` for a kind of topic this version does not know.
    pub(crate) fn subject(&self, topic: &Topic) -> Option<String> {
        let mut out = String::with_capacity(self.prefix.len() + 48);
        out.push_str(&self.prefix);
        match topic {
            Topic::Namespace(ns) => self.value(&mut out, "ns", ns),
            Topic::Conn(id) => self.value(&mut out, "conn", id),
            Topic::Inbox(instance) => {
                let _ = write!(out, ".inbox.{}", instance.hyphenated());
            }
            _ => return None,
        }
        Some(out)
    }

    /// The subject the flush barrier requests (nobody subscribes it).
    pub(crate) fn flush(&self, exchange: Uuid) -> String {
        format!("{}.flush.{}", self.prefix, exchange.hyphenated())
    }

    fn value(&self, out: &mut String, kind: &str, value: &str) {
        out.push('.');
        out.push_str(kind);
        out.push('.');
        if value.is_empty() {
            out.push(EMPTY);
            return;
        }
        let readable: usize = value.bytes().map(|b| if is_plain(b) { 1 } else { 3 }).sum();
        if out.len() + readable > MAX_SUBJECT_LEN {
            out.push(HASHED);
            for b in Sha256::digest(value.as_bytes()) {
                let _ = write!(out, "{b:02x}");
            }
            return;
        }
        for b in value.bytes() {
            if is_plain(b) {
                out.push(char::from(b));
            } else {
                out.push('%');
                out.push(char::from(HEX[usize::from(b >> 4)]));
                out.push(char::from(HEX[usize::from(b & 0xF)]));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use std::collections::HashSet;

    use proptest::prelude::*;

    use super::*;

    /// Reads a subject back into its topic (readable encoding only): with
    /// `parse(subject(t)) == t` for every `t`, two different topics cannot share a subject.
    fn parse(subjects: &Subjects, subject: &str) -> Option<Topic> {
        let rest = subject.strip_prefix(subjects.prefix())?.strip_prefix('.')?;
        let (kind, value) = rest.split_once('.')?;
        match kind {
            "inbox" => Uuid::parse_str(value).ok().map(Topic::Inbox),
            "ns" => decode(value).map(Topic::Namespace),
            "conn" => decode(value).map(Topic::Conn),
            _ => None,
        }
    }

    fn decode(token: &str) -> Option<String> {
        if token == "%" {
            return Some(String::new());
        }
        let bytes = token.as_bytes();
        let mut out = Vec::new();
        let mut i = 0;
        while i < bytes.len() {
            if bytes[i] == b'%' {
                let hex = token.get(i + 1..i + 3)?;
                let b = u8::from_str_radix(hex, 16).ok()?;
                // Canonical form only: a plain byte is never escaped.
                if is_plain(b) || hex != format!("{b:02X}") {
                    return None;
                }
                out.push(b);
                i += 3;
            } else if is_plain(bytes[i]) {
                out.push(bytes[i]);
                i += 1;
            } else {
                return None;
            }
        }
        String::from_utf8(out).ok().filter(|s| !s.is_empty())
    }

    /// The structural rules a subject must follow to be a plain (non-wildcard) NATS
    /// subject that the server and async-nats accept.
    fn assert_well_formed(subject: &str) {
        assert!(!subject.is_empty());
        assert!(subject.len() <= MAX_SUBJECT_LEN, "{} bytes", subject.len());
        assert!(
            !subject.chars().any(char::is_whitespace),
            "whitespace in {subject:?}"
        );
        assert!(subject.is_ascii(), "non-ASCII in {subject:?}");
        for token in subject.split('.') {
            assert!(!token.is_empty(), "empty token in {subject:?}");
            assert_ne!(token, "*", "wildcard token in {subject:?}");
            assert_ne!(token, ">", "wildcard token in {subject:?}");
        }
        assert!(
            async_nats::Subject::validated(subject).is_ok(),
            "{subject:?}"
        );
    }

    fn subjects() -> Subjects {
        Subjects::new("app.v1").unwrap()
    }

    /// Values made of the characters that matter: separators, wildcards, escapes, markers,
    /// whitespace, non-ASCII; and any other string.
    fn value() -> impl Strategy<Value = String> {
        prop_oneof![
            proptest::collection::vec(
                prop_oneof![
                    Just('.'),
                    Just('*'),
                    Just('>'),
                    Just(' '),
                    Just('\t'),
                    Just('\n'),
                    Just('%'),
                    Just('~'),
                    Just('_'),
                    Just('-'),
                    Just('a'),
                    Just('A'),
                    Just('0'),
                    Just('é'),
                    Just('😀'),
                ],
                0..12
            )
            .prop_map(|cs| cs.into_iter().collect()),
            any::<String>(),
        ]
    }

    fn topic() -> impl Strategy<Value = Topic> {
        prop_oneof![
            value().prop_map(Topic::Namespace),
            value().prop_map(Topic::Conn),
            any::<u128>().prop_map(|n| Topic::Inbox(Uuid::from_u128(n))),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(4096))]

        #[test]
        fn every_topic_round_trips(t in topic()) {
            let s = subjects();
            let subject = s.subject(&t).unwrap();
            assert_well_formed(&subject);
            prop_assert_eq!(parse(&s, &subject), Some(t));
        }

        #[test]
        fn distinct_topics_have_distinct_subjects(a in topic(), b in topic()) {
            let s = subjects();
            prop_assert_eq!(a == b, s.subject(&a) == s.subject(&b));
        }

        /// Values from a tiny alphabet of separators and escape look-alikes, so that equal
        /// and near-equal pairs (`.` and `%2E`, `` and `%`) are drawn often.
        #[test]
        fn look_alikes_never_collide(
            a in proptest::collection::vec(prop_oneof![Just("."), Just("%"), Just("2E"), Just("~"), Just("a")], 0..4),
            b in proptest::collection::vec(prop_oneof![Just("."), Just("%"), Just("2E"), Just("~"), Just("a")], 0..4),
            kind_a in any::<bool>(),
            kind_b in any::<bool>(),
        ) {
            let topic = |v: Vec<&str>, ns: bool| {
                let v = v.concat();
                if ns { Topic::Namespace(v) } else { Topic::Conn(v) }
            };
            let (a, b) = (topic(a, kind_a), topic(b, kind_b));
            let s = subjects();
            prop_assert_eq!(a == b, s.subject(&a) == s.subject(&b));
        }

        #[test]
        fn long_values_are_hashed_and_well_formed(v in proptest::collection::vec(any::<char>(), 300..1200)) {
            let v: String = v.into_iter().collect();
            let s = subjects();
            for t in [Topic::Namespace(v.clone()), Topic::Conn(v)] {
                let subject = s.subject(&t).unwrap();
                assert_well_formed(&subject);
                if parse(&s, &subject).as_ref() != Some(&t) {
                    let token = subject.rsplit('.').next().unwrap();
                    prop_assert!(token.starts_with(HASHED) && token.len() == 65);
                }
            }
        }
    }

    #[test]
    fn readable_names() {
        let s = Subjects::new("neffos").unwrap();
        let subject = |t: Topic| s.subject(&t).unwrap();
        assert_eq!(subject(Topic::Namespace("chat".into())), "neffos.ns.chat");
        assert_eq!(subject(Topic::Namespace(String::new())), "neffos.ns.%");
        assert_eq!(subject(Topic::Namespace("a.*".into())), "neffos.ns.a%2E%2A");
        assert_eq!(subject(Topic::Namespace(">".into())), "neffos.ns.%3E");
        assert_eq!(subject(Topic::Conn("a b".into())), "neffos.conn.a%20b");
        assert_eq!(subject(Topic::Conn("é".into())), "neffos.conn.%C3%A9");
        assert_eq!(subject(Topic::Conn("%".into())), "neffos.conn.%25");
        assert_eq!(
            subject(Topic::Inbox(Uuid::nil())),
            "neffos.inbox.00000000-0000-0000-0000-000000000000"
        );
        assert_eq!(
            s.flush(Uuid::nil()),
            "neffos.flush.00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn kinds_and_prefixes_never_collide() {
        let values = [
            "", "x", "ns", "conn", "x.y", "ns.x", "%", "~", "*", ">", "inbox",
        ];
        let mut seen = HashSet::new();
        for prefix in ["a", "a.ns", "a.conn", "a.ns.x", "b", "a.inbox"] {
            let s = Subjects::new(prefix).unwrap();
            for v in values {
                for t in [Topic::Namespace(v.into()), Topic::Conn(v.into())] {
                    let subject = s.subject(&t).unwrap();
                    assert!(
                        seen.insert(subject.clone()),
                        "{t} under {prefix}: {subject}"
                    );
                }
            }
            assert!(seen.insert(s.subject(&Topic::Inbox(Uuid::nil())).unwrap()));
            assert!(seen.insert(s.flush(Uuid::nil())));
        }
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in [
            "",
            ".",
            "a.",
            ".a",
            "a..b",
            "a b",
            "a*",
            "*",
            ">",
            "a.>",
            "ü",
            "a%",
            "a~",
            &"x".repeat(129),
        ] {
            assert!(
                matches!(Subjects::new(bad), Err(Error::InvalidPrefix(_))),
                "{bad:?} accepted"
            );
        }
        for good in ["neffos", "my-app.v1", "A_1.b-2", &"x".repeat(128)] {
            assert!(Subjects::new(good).is_ok(), "{good:?} refused");
        }
    }
}
