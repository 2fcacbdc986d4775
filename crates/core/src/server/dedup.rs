//! Handling an envelope that arrives through two chained exchanges only once: the recent
//! sequence numbers of each origin instance are remembered, and origins that went quiet
//! (an instance restarted under a new ID, or left) are forgotten.

use std::collections::{BTreeSet, HashMap};
use std::time::{Duration, Instant};

use uuid::Uuid;

/// Sequence numbers remembered per origin instance.
const WINDOW: usize = 4096;

/// An origin unseen for this long is forgotten: its copies through every exchange arrived
/// long ago, and an instance that restarts comes back with a new ID.
const FORGET_AFTER: Duration = Duration::from_secs(600);

/// Origins remembered at most; past it, the least recently seen is forgotten first.
const MAX_ORIGINS: usize = 1024;

/// Calls between two sweeps of the quiet origins.
const SWEEP_EVERY: u32 = 4096;

/// One origin's recently seen sequence numbers.
#[derive(Debug)]
struct Window {
    seqs: BTreeSet<u64>,
    last_seen: Instant,
}

/// Recently seen (origin, seq) pairs, bounded in origins and in sequence numbers per origin.
#[derive(Debug, Default)]
pub(crate) struct Dedup {
    origins: HashMap<Uuid, Window>,
    since_sweep: u32,
}

impl Dedup {
    /// True the first time (origin, seq) is seen. A seq older than the whole window is
    /// treated as seen (it can only be a late duplicate).
    pub(crate) fn first_time(&mut self, origin: Uuid, seq: u64) -> bool {
        self.first_time_at(origin, seq, Instant::now())
    }

    fn first_time_at(&mut self, origin: Uuid, seq: u64, now: Instant) -> bool {
        self.since_sweep += 1;
        if self.since_sweep >= SWEEP_EVERY {
            self.since_sweep = 0;
            self.origins
                .retain(|_, w| now.saturating_duration_since(w.last_seen) < FORGET_AFTER);
        }
        if !self.origins.contains_key(&origin) && self.origins.len() >= MAX_ORIGINS {
            self.forget_least_recent();
        }
        let window = self.origins.entry(origin).or_insert_with(|| Window {
            seqs: BTreeSet::new(),
            last_seen: now,
        });
        window.last_seen = now;
        let seqs = &mut window.seqs;
        if seqs.len() >= WINDOW && seqs.first().is_some_and(|&oldest| seq < oldest) {
            return false;
        }
        if !seqs.insert(seq) {
            return false;
        }
        if seqs.len() > WINDOW {
            seqs.pop_first();
        }
        true
    }

    fn forget_least_recent(&mut self) {
        let oldest = self
            .origins
            .iter()
            .min_by_key(|(_, w)| w.last_seen)
            .map(|(id, _)| *id);
        if let Some(id) = oldest {
            self.origins.remove(&id);
        }
    }

    /// Origins remembered now.
    #[cfg(test)]
    fn origins(&self) -> usize {
        self.origins.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pair_is_new_once() {
        let mut dedup = Dedup::default();
        let origin = Uuid::new_v4();
        assert!(dedup.first_time(origin, 1));
        assert!(!dedup.first_time(origin, 1));
        assert!(dedup.first_time(origin, 2));
        assert!(dedup.first_time(Uuid::new_v4(), 1));
    }

    #[test]
    fn a_seq_older_than_the_window_counts_as_seen() {
        let mut dedup = Dedup::default();
        let origin = Uuid::new_v4();
        for seq in 1..=(WINDOW as u64 + 10) {
            assert!(dedup.first_time(origin, seq));
        }
        assert!(!dedup.first_time(origin, 5));
    }

    #[test]
    fn quiet_origins_are_forgotten() {
        let mut dedup = Dedup::default();
        let start = Instant::now();
        // Instances that restarted: each sent a little and is gone.
        for _ in 0..100 {
            assert!(dedup.first_time_at(Uuid::new_v4(), 1, start));
        }
        let live = Uuid::new_v4();
        let later = start + FORGET_AFTER + Duration::from_secs(1);
        for seq in 0..u64::from(SWEEP_EVERY) {
            assert!(dedup.first_time_at(live, seq, later));
        }
        assert_eq!(dedup.origins(), 1, "only the live origin is remembered");
        // The live origin kept its window: an old pair is still a duplicate.
        assert!(!dedup.first_time_at(live, 7, later));
    }

    #[test]
    fn origins_are_capped_least_recent_first() {
        let mut dedup = Dedup::default();
        let start = Instant::now();
        let first = Uuid::new_v4();
        assert!(dedup.first_time_at(first, 1, start));
        let kept = Uuid::new_v4();
        assert!(dedup.first_time_at(kept, 1, start + Duration::from_millis(1)));
        for i in 0..(MAX_ORIGINS as u64 * 3) {
            let now = start + Duration::from_millis(2 + i);
            assert!(dedup.first_time_at(Uuid::new_v4(), 1, now));
            if i % 8 == 0 {
                // `kept` keeps sending; `first` does not.
                dedup.first_time_at(kept, 2 + i, now);
            }
        }
        assert!(dedup.origins() <= MAX_ORIGINS);
        assert!(
            !dedup.first_time_at(kept, 1, start + Duration::from_secs(10)),
            "an active origin keeps its window"
        );
        assert!(
            dedup.first_time_at(first, 1, start + Duration::from_secs(10)),
            "the least recently seen origin was forgotten"
        );
    }
}
