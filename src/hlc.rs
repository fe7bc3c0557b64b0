//! A hybrid logical clock: timestamps that follow wall-clock time but never
//! go backwards and always order a message after every message its author
//! had seen. Packed in a `u64`: milliseconds since the Unix epoch in the high
//! 48 bits, a counter in the low 16. Pure: callers pass the wall clock.
//!
//! A clock that adopts whatever it observes can be dragged anywhere by one
//! peer: a single message stamped 2^64−1 would make every later timestamp of
//! this node the same far-future value, for good (the clock is persisted).
//! So a received timestamp more than [`MAX_AHEAD_MS`] ahead of local time is
//! refused ([`check_received`]), the clock never adopts one, and a clock
//! restored from disk that is that far ahead is brought back to local time.

/// Bits of the logical counter.
const COUNTER_BITS: u32 = 16;

/// How far ahead of this node's wall clock a received timestamp may be:
/// 5 minutes. Generous for honest clocks (NTP keeps them within a second;
/// an unsynchronised laptop is rarely minutes off), small enough that a
/// hostile timestamp cannot push this node's own messages noticeably out of
/// order. A message refused for this is taken once local time catches up
/// (history sync offers it again).
pub const MAX_AHEAD_MS: u64 = 5 * 60 * 1000;

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Hlc {
    last: u64,
}

/// The wall-clock milliseconds of a packed timestamp.
pub fn millis_of(timestamp: u64) -> u64 {
    timestamp >> COUNTER_BITS
}

/// A received timestamp that lies too far in the future.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[error("its timestamp is {} s ahead of this node's clock (at most {} s are accepted); check the author's clock", .ahead_ms / 1000, MAX_AHEAD_MS / 1000)]
pub struct TooFarAhead {
    pub ahead_ms: u64,
}

/// Checks a timestamp seen on a received message against the local wall
/// clock `now_ms`: at most [`MAX_AHEAD_MS`] ahead.
pub fn check_received(timestamp: u64, now_ms: u64) -> Result<(), TooFarAhead> {
    let ahead_ms = millis_of(timestamp).saturating_sub(now_ms);
    if ahead_ms > MAX_AHEAD_MS {
        return Err(TooFarAhead { ahead_ms });
    }
    Ok(())
}

impl Hlc {
    /// A clock that has already seen `last` (restored from disk), at local
    /// wall-clock `now_ms`. A `last` too far ahead (written before this
    /// check existed, or by a wrong system clock) is dropped: the clock
    /// restarts from local time rather than carry it on forever.
    pub fn restored(last: u64, now_ms: u64) -> Self {
        match check_received(last, now_ms) {
            Ok(()) => Self { last },
            Err(_) => Self::default(),
        }
    }

    /// A timestamp for a new local event at wall-clock `now_ms`.
    pub fn tick(&mut self, now_ms: u64) -> u64 {
        let physical = now_ms << COUNTER_BITS;
        self.last = physical.max(self.last.saturating_add(1));
        self.last
    }

    /// Takes in a timestamp seen on a received message, at local wall-clock
    /// `now_ms`. A timestamp too far ahead ([`check_received`]) is not
    /// adopted; callers refuse its message.
    pub fn observe(&mut self, timestamp: u64, now_ms: u64) {
        if check_received(timestamp, now_ms).is_ok() {
            self.last = self.last.max(timestamp);
        }
    }

    pub fn last(&self) -> u64 {
        self.last
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: u64 = 1_700_000_000_000;

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
        // The asker's clock is four minutes ahead: within bounds.
        let question = fast.tick(NOW + 4 * 60 * 1000);
        slow.observe(question, NOW);
        let answer = slow.tick(NOW);
        assert!(answer > question);
    }

    #[test]
    fn a_message_from_the_far_future_is_refused_and_the_clock_stays_sane() {
        let mut clock = Hlc::default();
        assert!(check_received(u64::MAX, NOW).is_err());
        clock.observe(u64::MAX, NOW);
        let next = clock.tick(NOW);
        assert_eq!(millis_of(next), NOW);
        // Just past the bound is refused; just within it is taken.
        let beyond = (NOW + MAX_AHEAD_MS + 1) << COUNTER_BITS;
        let within = (NOW + MAX_AHEAD_MS) << COUNTER_BITS;
        assert!(check_received(beyond, NOW).is_err());
        assert!(check_received(within, NOW).is_ok());
        clock.observe(beyond, NOW);
        assert_eq!(millis_of(clock.tick(NOW)), NOW);
        // A clock already poisoned on disk restarts from local time.
        let mut restored = Hlc::restored(u64::MAX, NOW);
        assert_eq!(millis_of(restored.tick(NOW)), NOW);
        let sane = NOW << COUNTER_BITS;
        assert_eq!(Hlc::restored(sane, NOW).last(), sane);
    }
}
