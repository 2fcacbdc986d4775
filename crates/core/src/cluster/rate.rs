//! A token bucket: at most `rate` operations per second, in bursts of up to `rate`.

use std::time::Instant;

use parking_lot::Mutex;

#[derive(Debug)]
pub(crate) struct TokenBucket {
    rate: f64,
    state: Mutex<(f64, Instant)>,
}

impl TokenBucket {
    pub(crate) fn new(rate: u32) -> Self {
        let rate = f64::from(rate.max(1));
        TokenBucket {
            rate,
            state: Mutex::new((rate, Instant::now())),
        }
    }

    /// Takes one token if there is one.
    pub(crate) fn try_take(&self) -> bool {
        let mut state = self.state.lock();
        let now = Instant::now();
        let (tokens, last) = *state;
        let refilled = (tokens + now.duration_since(last).as_secs_f64() * self.rate).min(self.rate);
        if refilled < 1.0 {
            *state = (refilled, now);
            return false;
        }
        *state = (refilled - 1.0, now);
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_bounded_by_the_rate() {
        let bucket = TokenBucket::new(10);
        let taken = (0..100).filter(|_| bucket.try_take()).count();
        // 10 in the burst, plus what refills during the loop (microseconds: none).
        assert!((10..=11).contains(&taken), "{taken}");
    }
}
