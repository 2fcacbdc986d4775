//! Reconnection delays: exponential, capped, with jitter so many instances that lost the
//! same broker do not reconnect in lockstep.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Delays `min, 2·min, 4·min, …` up to `max`, each drawn uniformly from its upper half
/// ("equal jitter"): the delay before attempt `n` is in `[d/2, d]` with `d = min(max, min·2ⁿ)`.
#[derive(Debug, Clone)]
pub(crate) struct Backoff {
    min: Duration,
    max: Duration,
    attempt: u32,
    random: RandomState,
    draws: u64,
}

impl Backoff {
    pub(crate) fn new(min: Duration, max: Duration) -> Self {
        let min = min.max(Duration::from_millis(1));
        Backoff {
            min,
            max: max.max(min),
            attempt: 0,
            random: RandomState::new(),
            draws: 0,
        }
    }

    /// The delay before the next attempt.
    pub(crate) fn next_delay(&mut self) -> Duration {
        let factor = 1u32 << self.attempt.min(20);
        let ceiling = self.min.saturating_mul(factor).min(self.max);
        self.attempt = self.attempt.saturating_add(1);
        let half = ceiling / 2;
        let span = (ceiling - half).as_nanos().max(1);
        self.draws = self.draws.wrapping_add(1);
        let r = u128::from(self.random.hash_one(self.draws));
        half + Duration::from_nanos(u64::try_from(r % span).unwrap_or(0))
    }

    /// After a successful connection: start again from `min`.
    pub(crate) fn reset(&mut self) {
        self.attempt = 0;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grows_and_is_capped() {
        let min = Duration::from_millis(10);
        let max = Duration::from_millis(100);
        let mut b = Backoff::new(min, max);
        let expected_ceilings = [10, 20, 40, 80, 100, 100, 100];
        for ceiling in expected_ceilings {
            let ceiling = Duration::from_millis(ceiling);
            let d = b.next_delay();
            assert!(
                d >= ceiling / 2 && d <= ceiling,
                "{d:?} not in [{:?}, {ceiling:?}]",
                ceiling / 2
            );
        }
        for _ in 0..100 {
            assert!(b.next_delay() <= max);
        }
        b.reset();
        assert!(b.next_delay() <= min);
    }

    #[test]
    fn has_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "delays are not jittered: {delays:?}");
    }
}
