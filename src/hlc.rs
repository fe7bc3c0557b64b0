//! A hybrid logical clock: timestamps that follow wall-clock time but never
//! go backwards and always order a message after every message its author
//! had seen. Packed in a `u64`: milliseconds since the Unix epoch in the high
//! 48 bits, a counter in the low 16. Pure: callers pass the wall clock.

/// Bits of the logical counter.
const COUNTER_BITS: u32 = 16;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

/// The wall-clock milliseconds of a packed timestamp.
pub fn millis_of(timestamp: u64) -> u64 {
    timestamp >> COUNTER_BITS
}

impl Hlc {
    /// A clock that has already seen `last` (e.g. restored from disk).
    pub fn starting_at(last: u64) -> Self {
        Self { last }
    }

    /// A timestamp for a new local event at wall-clock `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        let physical = now_ms << COUNTER_BITS;
        self.last = physical.max(self.last.saturating_add(1));
        self.last
    }

    /// Takes in a timestamp seen on a received message.
    pub fn observe(&mut self, timestamp: u64) {
        self.last = self.last.max(timestamp);
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn follows_the_wall_clock_and_never_goes_back() {
        let mut clock = Hlc::default();
        let a = clock.tick(1_000);
        assert_eq!(millis_of(a), 1_000);
        let b = clock.tick(1_000);
        assert!(b > a && millis_of(b) == 1_000);
        // The wall clock stepped back: time still moves forward.
        let c = clock.tick(500);
        assert!(c > b);
    }

    #[test]
    fn orders_a_reply_after_what_it_answers_even_from_a_fast_clock() {
        let mut fast = Hlc::default();
        let mut slow = Hlc::default();
        let question = fast.tick(10_000);
        slow.observe(question);
        let answer = slow.tick(2_000);
        assert!(answer > question);
    }
}
