//! The reconnection delays handed to `async-nats` (`reconnect_delay_callback`).
//!
//! Its default waits up to 4 s between attempts (exponential in the number of failed
//! attempts), so after an outage delivery came back anywhere between a few milliseconds and
//! seconds after the broker did. Here the first pass over the known servers is immediate
//! (another node of a cluster takes over at once) and later attempts wait at most a short
//! cap, with jitter: a refused attempt costs one SYN and one RST, and a slow one is already
//! spaced by the connection timeout.

use std::hash::{BuildHasher, RandomState};
use std::time::Duration;

/// Default cap of the delay between two attempts.
pub(crate) const DEFAULT_MAX_DELAY: Duration = Duration::from_millis(100);

/// The first delays grow from this.
const FIRST_DELAY: Duration = Duration::from_millis(10);

/// The delay before attempt `attempts` (1 = the first after the connection was lost) when
/// `servers` URLs were configured: none during the first pass over them, then
/// `10 ms, 20 ms, 40 ms…` capped at `max`, each drawn from its upper half.
pub(crate) fn delay(
    attempts: usize,
    servers: usize,
    max: Duration,
    random: &RandomState,
) -> Duration {
    if attempts <= servers.max(1) {
        return Duration::ZERO;
    }
    let exponent = u32::try_from(attempts - servers.max(1) - 1)
        .unwrap_or(u32::MAX)
        .min(16);
    let ceiling = FIRST_DELAY.saturating_mul(1 << exponent).min(max);
    let half = ceiling / 2;
    let span = (ceiling - half).as_nanos().max(1);
    let r = u128::from(random.hash_one(attempts))
        ^ u128::from(random.hash_one(std::time::Instant::now()));
    half + Duration::from_nanos(u64::try_from(r % span).unwrap_or(0))
}

/// The callback for `ConnectOptions::reconnect_delay_callback`.
pub(crate) fn callback(
    servers: usize,
    max: Duration,
) -> impl Fn(usize) -> Duration + Send + Sync + 'static {
    let random = RandomState::new();
    move |attempts| delay(attempts, servers, max, &random)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn first_pass_is_immediate_then_capped() {
        let r = RandomState::new();
        let max = Duration::from_millis(100);
        for a in 1..=3 {
            assert_eq!(delay(a, 3, max, &r), Duration::ZERO);
        }
        let d = delay(4, 3, max, &r);
        assert!(
            d >= Duration::from_millis(5) && d <= Duration::from_millis(10),
            "{d:?}"
        );
        for a in 5..1000 {
            assert!(delay(a, 3, max, &r) <= max);
        }
        assert!(delay(1000, 3, max, &r) >= max / 2);
    }
}
