//! Reconnection delays: exponential, capped, with jitter so many instances that lost the
//! same broker do not reconnect in lockstep; kept short while the broker refuses quickly,
//! and cut short when another connection of the instance got through.

use std::hash::{BuildHasher, RandomState};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;

/// A failed attempt that took less than this was refused by a reachable host (nothing
/// listens on the port, e.g. a broker being restarted), not lost in the network.
pub(crate) const QUICK_REFUSAL: Duration = Duration::from_millis(50);

/// The longest delay after a quick refusal: retrying a refusing host is cheap (one SYN and
/// one RST), and resumption then depends on the broker coming back, not on where an
/// exponential timer happens to be.
pub(crate) const REFUSED_RETRY_MAX: Duration = Duration::from_millis(100);

/// Shared by the connections of one instance: when one of them gets through, the others
/// stop waiting out their backoff and retry at once.
#[derive(Debug, Clone)]
pub(crate) struct Reconnected(Arc<watch::Sender<u64>>);

impl Default for Reconnected {
    fn default() -> Self {
        Reconnected(Arc::new(watch::Sender::new(0)))
    }
}

impl Reconnected {
    /// A connection got through.
    pub(crate) fn announce(&self) {
        self.0.send_modify(|n| *n = n.wrapping_add(1));
    }

    /// Resolves at the next [`announce`](Self::announce) after this call.
    pub(crate) fn listen(&self) -> watch::Receiver<u64> {
        self.0.subscribe()
    }
}

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

    /// The delay after an attempt that failed after `took`: the next exponential delay,
    /// capped at [`REFUSED_RETRY_MAX`] when the attempt was refused (`refused`: the host
    /// said nothing listens; on a loaded machine that answer can take longer than
    /// [`QUICK_REFUSAL`]) or failed quickly.
    pub(crate) fn after_failure(&mut self, took: Duration, refused: bool) -> Duration {
        let delay = self.next_delay();
        if refused || took < QUICK_REFUSAL {
            delay.min(REFUSED_RETRY_MAX)
        } else {
            delay
        }
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
    fn quick_refusals_retry_soon() {
        let mut b = Backoff::new(Duration::from_millis(50), Duration::from_secs(5));
        for _ in 0..20 {
            assert!(b.after_failure(Duration::from_millis(1), false) <= REFUSED_RETRY_MAX);
            assert!(b.after_failure(Duration::from_secs(1), true) <= REFUSED_RETRY_MAX);
        }
        // A slow failure (timeout) keeps the exponential delay.
        assert!(b.after_failure(Duration::from_secs(2), false) > REFUSED_RETRY_MAX);
    }

    #[tokio::test]
    async fn an_announcement_wakes_listeners() {
        let signal = Reconnected::default();
        let mut rx = signal.listen();
        signal.announce();
        tokio::time::timeout(Duration::from_secs(1), rx.changed())
            .await
            .expect("woken")
            .expect("sender alive");
    }

    #[test]
    fn has_jitter() {
        let mut b = Backoff::new(Duration::from_secs(1), Duration::from_secs(1));
        let delays: std::collections::HashSet<Duration> = (0..20).map(|_| b.next_delay()).collect();
        assert!(delays.len() > 10, "delays are not jittered: {delays:?}");
    }
}
