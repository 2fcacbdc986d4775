//! [`Outcome`]: what a client is told about its session, and the event that carries it.

use std::fmt;

use neffos_protocol::recovery::{NOT_RECOVERED_PREFIX, RECOVERED};

/// Whether a presented session came back, per namespace. Sent to the client as the event
/// [`RECOVERY_EVENT`](neffos_protocol::recovery::RECOVERY_EVENT) in the namespace, body
/// `recovered` or `not-recovered:<reason>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Outcome {
    /// The namespace and its rooms were restored and every broadcast missed was replayed,
    /// in order, before any newer one.
    Recovered,
    /// Nothing was replayed; the client starts afresh (and must rejoin what it needs).
    NotRecovered(Reason),
}

/// Why a session (or one of its namespaces) was not recovered.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Reason {
    /// No session under the presented key: the window passed, the client left on purpose,
    /// or the key was never known.
    NoSession,
    /// The namespace's history was lost (broker flushed, stream purged): a new epoch.
    EpochChanged,
    /// Broadcasts missed were already dropped by the history's count or age bound.
    HistoryTrimmed,
    /// More broadcasts were missed than [`Recovery::max_replay`](super::Recovery::max_replay).
    TooMany,
    /// The store could not be read.
    StoreFailed,
    /// Restoring the namespace was refused (a handler said no, or the client did not answer).
    Refused,
}

impl Reason {
    fn as_str(self) -> &'static str {
        match self {
            Reason::NoSession => "no-session",
            Reason::EpochChanged => "epoch-changed",
            Reason::HistoryTrimmed => "history-trimmed",
            Reason::TooMany => "too-many",
            Reason::StoreFailed => "store-failed",
            Reason::Refused => "refused",
        }
    }

    fn parse(s: &str) -> Option<Reason> {
        [
            Reason::NoSession,
            Reason::EpochChanged,
            Reason::HistoryTrimmed,
            Reason::TooMany,
            Reason::StoreFailed,
            Reason::Refused,
        ]
        .into_iter()
        .find(|r| r.as_str() == s)
    }
}

impl fmt::Display for Reason {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl Outcome {
    /// The body of the recovery event.
    pub fn body(&self) -> String {
        match self {
            Outcome::Recovered => RECOVERED.to_owned(),
            Outcome::NotRecovered(reason) => format!("{NOT_RECOVERED_PREFIX}{reason}"),
        }
    }

    /// Parses the body of the recovery event.
    pub fn from_body(body: &[u8]) -> Option<Outcome> {
        let body = std::str::from_utf8(body).ok()?;
        if body == RECOVERED {
            return Some(Outcome::Recovered);
        }
        Reason::parse(body.strip_prefix(NOT_RECOVERED_PREFIX)?).map(Outcome::NotRecovered)
    }

    /// True for [`Outcome::Recovered`].
    pub fn is_recovered(&self) -> bool {
        matches!(self, Outcome::Recovered)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_round_trip() {
        for outcome in [
            Outcome::Recovered,
            Outcome::NotRecovered(Reason::NoSession),
            Outcome::NotRecovered(Reason::EpochChanged),
            Outcome::NotRecovered(Reason::HistoryTrimmed),
            Outcome::NotRecovered(Reason::TooMany),
            Outcome::NotRecovered(Reason::StoreFailed),
            Outcome::NotRecovered(Reason::Refused),
        ] {
            assert_eq!(Outcome::from_body(outcome.body().as_bytes()), Some(outcome));
        }
        assert_eq!(Outcome::from_body(b"not-recovered:nope"), None);
    }
}
