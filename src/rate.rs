//! A token bucket: the rate limit used wherever a peer could flood us
//! (requests, reflections, relayed bytes).
//! Pure: the caller passes the time, so tests need no clock.

use std::time::Instant;

#[derive(Clone, Debug)]
pub struct TokenBucket {
    per_second: f64,
    burst: f64,
    tokens: f64,
    last: Instant,
}

impl TokenBucket {
    /// Allows `per_second` on average and bursts of up to `burst`; starts full.
    pub fn new(per_second: u32, burst: u32, now: Instant) -> Self {
        Self {
            per_second: f64::from(per_second),
            burst: f64::from(burst.max(1)),
            tokens: f64::from(burst.max(1)),
            last: now,
        }
    }

    /// Takes one token if there is one.
    pub fn try_take(&mut self, now: Instant) -> bool {
        self.try_take_amount(1, now)
    }

    /// Takes `amount` tokens (bytes, say) if there are that many; an amount
    /// beyond the burst never fits.
    pub fn try_take_amount(&mut self, amount: u32, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst);
        let amount = f64::from(amount);
        if self.tokens >= amount {
            self.tokens -= amount;
            true
        } else {
            false
        }
    }

    /// Whether the bucket has refilled to its burst by `now` (it holds no
    /// memory of past use worth keeping).
    pub fn is_full_at(&self, now: Instant) -> bool {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.tokens + elapsed * self.per_second >= self.burst
    }

    /// When the next whole token will be there (at once if one is).
    pub fn next_token_at(&self) -> Instant {
        if self.tokens >= 1.0 || self.per_second <= 0.0 {
            self.last
        } else {
            // Rounded up, so a caller woken then finds the token there.
            self.last
                + std::time::Duration::from_secs_f64((1.0 - self.tokens) / self.per_second)
                + std::time::Duration::from_micros(1)
        }
    }

    /// Takes `amount` tokens now, going into debt if need be, and returns
    /// how long the caller should wait before acting on them: pacing for a
    /// byte stream rather than refusal.
    pub fn pace(&mut self, amount: f64, now: Instant) -> std::time::Duration {
        let elapsed = now.saturating_duration_since(self.last).as_secs_f64();
        self.last = now;
        self.tokens = (self.tokens + elapsed * self.per_second).min(self.burst) - amount;
        if self.tokens >= 0.0 || self.per_second <= 0.0 {
            std::time::Duration::ZERO
        } else {
            std::time::Duration::from_secs_f64(-self.tokens / self.per_second)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn bursts_then_refills_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(10, 3, start);
        assert!((0..3).all(|_| bucket.try_take(start)));
        assert!(!bucket.try_take(start));
        assert!(bucket.try_take(start + Duration::from_millis(100)));
        assert!(!bucket.try_take(start + Duration::from_millis(100)));
        // A long pause refills only up to the burst.
        let later = start + Duration::from_secs(60);
        assert!((0..3).all(|_| bucket.try_take(later)));
        assert!(!bucket.try_take(later));
    }

    #[test]
    fn pacing_spreads_large_takes_at_the_rate() {
        let start = Instant::now();
        let mut bucket = TokenBucket::new(1000, 500, start);
        assert_eq!(bucket.pace(500.0, start), Duration::ZERO, "the burst");
        assert_eq!(bucket.pace(1000.0, start), Duration::from_secs(1));
        // After waiting that second the debt is paid.
        let later = start + Duration::from_secs(1);
        assert_eq!(bucket.pace(0.0, later), Duration::ZERO);
    }

    #[test]
    fn amounts_are_taken_whole_or_not_at_all() {
        let start = Instant::now();
        let mut bytes = TokenBucket::new(1000, 1500, start);
        assert!(bytes.try_take_amount(1200, start));
        assert!(!bytes.try_take_amount(1200, start));
        assert!(bytes.try_take_amount(300, start));
        assert!(!bytes.try_take_amount(2000, start + Duration::from_secs(60)));
        assert!(bytes.try_take_amount(1200, start + Duration::from_secs(60)));
    }
}
