//! Jittered, capped exponential backoff for everything the connection
//! manager retries (tracker sessions, introductions, punches, upgrades).
//! Deterministic: the jitter comes from a seeded generator the caller owns,
//! so a test replays the same delays every run.

use std::time::Duration;

/// How retries space out: `first`, doubling per failure, never beyond `cap`,
/// each delay scaled by a random factor in [0.5, 1.0] so that many nodes
/// that failed together (a tracker restart, a rate limit) do not come back
/// together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Backoff {
    pub first: Duration,
    pub cap: Duration,
}

impl Backoff {
    pub const fn new(first: Duration, cap: Duration) -> Self {
        Self { first, cap }
    }

    /// The pause before retry number `failures` (1 for the first retry).
    pub fn delay(&self, failures: u32, jitter: &mut Jitter) -> Duration {
        let exponent = failures.saturating_sub(1).min(20);
        let full = self.first.saturating_mul(1 << exponent).min(self.cap);
        full.mul_f64(0.5 + 0.5 * jitter.next_unit())
    }
}

/// A small deterministic generator (xorshift64*): jitter needs spread, not
/// secrecy.
#[derive(Clone, Debug)]
pub struct Jitter(u64);

impl Jitter {
    pub fn new(seed: u64) -> Self {
        // xorshift never leaves zero.
        Self(seed | 1)
    }

    /// A number in [0, 1).
    pub fn next_unit(&mut self) -> f64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        (x.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 11) as f64 / (1u64 << 53) as f64
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn delays_double_up_to_the_cap_and_stay_within_the_jitter() {
        let backoff = Backoff::new(Duration::from_millis(500), Duration::from_secs(30));
        let mut jitter = Jitter::new(7);
        for failures in 1..40 {
            let full = Duration::from_millis(500)
                .saturating_mul(1 << (failures - 1).min(20))
                .min(Duration::from_secs(30));
            let delay = backoff.delay(failures, &mut jitter);
            assert!(delay >= full / 2 && delay <= full, "{failures}: {delay:?}");
        }
    }

    #[test]
    fn nodes_with_different_seeds_spread_out() {
        let backoff = Backoff::new(Duration::from_secs(1), Duration::from_secs(30));
        let delays: std::collections::BTreeSet<Duration> = (0..20)
            .map(|seed| backoff.delay(1, &mut Jitter::new(seed * 7919 + 1)))
            .collect();
        assert!(delays.len() > 15, "{delays:?}");
    }
}
