//! Channel names: one per topic, under the configured prefix, escaped so user data can
//! never name another channel.

use std::fmt::Write as _;

use neffos::Topic;

use crate::error::{Error, Result};

/// The prefix used when none is configured.
pub const DEFAULT_PREFIX: &str = "neffos";

const MAX_PREFIX_LEN: usize = 64;

/// Builds the channel name of each [`Topic`] under one prefix.
///
/// - namespace `ns`: `<prefix>:ns:<len>:<ns>`
/// - connection ID `id`: `<prefix>:conn:<len>:<id>`
/// - the inbox of instance `u`: `<prefix>:inbox:<u>` (hyphenated UUID)
///
/// `<len>` is the byte length of what follows, in decimal. Reading a name from the left is
/// unambiguous (the prefix has no `:`, the kind is one of three words, the length says
/// where the user's bytes end and the name ends there), so two different topics, or the
/// same topic under two different prefixes, never share a channel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Channels {
    prefix: String,
}

impl Channels {
    pub(crate) fn new(prefix: &str) -> Result<Self> {
        let valid = !prefix.is_empty()
            && prefix.len() <= MAX_PREFIX_LEN
            && prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'.' | b'-'));
        if !valid {
            return Err(Error::InvalidPrefix(prefix.to_owned()));
        }
        Ok(Channels {
            prefix: prefix.to_owned(),
        })
    }

    pub(crate) fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The channel of `topic`, or `None` for a kind of topic this version does not know.
    pub(crate) fn name(&self, topic: &Topic) -> Option<String> {
        let mut name = String::with_capacity(self.prefix.len() + 48);
        name.push_str(&self.prefix);
        match topic {
            Topic::Namespace(ns) => segment(&mut name, "ns", ns),
            Topic::Conn(id) => segment(&mut name, "conn", id),
            Topic::Inbox(instance) => {
                let _ = write!(name, ":inbox:{}", instance.hyphenated());
            }
            _ => return None,
        }
        Some(name)
    }
}

fn segment(name: &mut String, kind: &str, value: &str) {
    let _ = write!(name, ":{kind}:{}:{value}", value.len());
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;

    use uuid::Uuid;

    use super::*;

    fn ch(prefix: &str, topic: Topic) -> String {
        Channels::new(prefix)
            .and_then(|c| c.name(&topic).ok_or(Error::InvalidPrefix(String::new())))
            .unwrap_or_default()
    }

    #[test]
    fn names() {
        assert_eq!(ch("app", Topic::Namespace("chat".into())), "app:ns:4:chat");
        assert_eq!(ch("app", Topic::Namespace(String::new())), "app:ns:0:");
        assert_eq!(ch("app", Topic::Conn("x".into())), "app:conn:1:x");
        assert_eq!(ch("app", Topic::Conn("é".into())), "app:conn:2:é");
        let id = Uuid::nil();
        assert_eq!(
            ch("app", Topic::Inbox(id)),
            "app:inbox:00000000-0000-0000-0000-000000000000"
        );
    }

    #[test]
    fn user_data_cannot_collide() {
        // Values crafted to look like other channels, separators and wildcards included.
        let values = [
            "",
            "x",
            ":",
            "x:",
            ":x",
            "1:x",
            "x:ns:1:x",
            "x:conn:1:x",
            "ns:1:x",
            "conn:1:x",
            "*",
            "?",
            "[a]",
            "a b",
            "app:ns:1:x",
            "inbox:00000000-0000-0000-0000-000000000000",
            "0:",
            "10:abc",
        ];
        let mut seen = HashSet::new();
        for prefix in ["app", "app.x", "a", "app-1"] {
            for v in values {
                for topic in [Topic::Namespace(v.into()), Topic::Conn(v.into())] {
                    let name = ch(prefix, topic.clone());
                    assert!(
                        seen.insert(name.clone()),
                        "{topic} under {prefix} collides: {name}"
                    );
                }
            }
            let inbox = ch(prefix, Topic::Inbox(Uuid::nil()));
            assert!(seen.insert(inbox));
        }
    }

    #[test]
    fn prefixes_are_validated() {
        for bad in ["", "a:b", "a b", "a*", "ü", &"x".repeat(65)] {
            assert!(
                matches!(Channels::new(bad), Err(Error::InvalidPrefix(_))),
                "{bad:?} accepted"
            );
        }
        for good in ["neffos", "my-app.v1", "A_1", &"x".repeat(64)] {
            assert!(Channels::new(good).is_ok(), "{good:?} refused");
        }
    }
}
