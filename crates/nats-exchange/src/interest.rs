//! Interest changes waiting for the task, coalesced into one net count per topic (or raw
//! subject): the command queue then holds at most one [`Cmd::Interest`] wake-up for all of
//! them, so a room flapping between 0 and 1 members while the task is busy costs one
//! entry, not a command per change. Publishes stay bounded by the exchange's queue
//! capacity; flushes and the close belong to callers that await them.
//!
//! Order: a change made before a flush is applied before it (its wake-up is queued before
//! the flush, or an earlier one still waits); a change may be applied earlier than
//! publishes queued before it, which only makes a subscription start sooner.
//!
//! [`Cmd::Interest`]: crate::actor::Cmd::Interest

use std::collections::HashMap;
use std::collections::hash_map::Entry;

use neffos::Topic;
use parking_lot::Mutex;

/// What a net interest count is about.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(crate) enum Key {
    /// A topic of the server.
    Topic(Topic),
    /// A subject named by the caller (Go compatibility mode).
    Subject(String),
}

/// The pending changes.
#[derive(Debug, Default)]
pub(crate) struct Interest(Mutex<HashMap<Key, i64>>);

impl Interest {
    /// Adds `delta` to `key`'s pending change; true when the table was empty before (the
    /// caller then queues a wake-up).
    pub(crate) fn add(&self, key: Key, delta: i64) -> bool {
        let mut table = self.0.lock();
        let was_empty = table.is_empty();
        match table.entry(key) {
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
        was_empty && !table.is_empty()
    }

    /// Every pending change, taken.
    pub(crate) fn take(&self) -> HashMap<Key, i64> {
        std::mem::take(&mut *self.0.lock())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flapping_costs_one_entry_and_one_wake_up() {
        let interest = Interest::default();
        let key = Key::Topic(Topic::Namespace("chat".into()));
        let mut wake_ups = 0;
        for _ in 0..10_000 {
            wake_ups += usize::from(interest.add(key.clone(), 1));
            wake_ups += usize::from(interest.add(key.clone(), -1));
        }
        // Each 0→1 of an empty table wakes; nothing accumulates.
        assert_eq!(interest.take().len(), 0);
        assert!(interest.add(key.clone(), 1));
        assert!(!interest.add(Key::Subject("s".into()), 1));
        let taken = interest.take();
        assert_eq!(taken.len(), 2);
        assert_eq!(taken[&key], 1);
        assert!(wake_ups > 0);
    }
}
