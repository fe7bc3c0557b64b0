//! When to close a guest session (a session with a peer's tracker, opened
//! only to be introduced to that peer): once nothing has needed it for
//! [`GUEST_GRACE`] — the introduced connection is up on a direct path, or
//! the attempt failed and is not being retried through it. A sans-IO state
//! machine: the node task says, for each guest session that is up, whether
//! it is in use ([`super::manager::Manager::tracker_in_use`]); it answers
//! which to close.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::manager::TrackerIx;

/// How long an unused guest session stays open: a connection just made
/// may still fall back to that tracker's relay, and the peer may be asked
/// for again.
pub(super) const GUEST_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(super) struct GuestIdle {
    grace: Duration,
    /// Guest sessions up and unused, since when.
    idle_since: HashMap<TrackerIx, Instant>,
}

impl GuestIdle {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            idle_since: HashMap::new(),
        }
    }

    /// Whether the guest session with `tracker`, which is up, is in use
    /// at `now`.
    pub fn handle_use(&mut self, tracker: TrackerIx, in_use: bool, now: Instant) {
        if in_use {
            self.idle_since.remove(&tracker);
        } else {
            self.idle_since.entry(tracker).or_insert(now);
        }
    }

    /// The session with `tracker` is not up (lost, closed): nothing to
    /// time.
    pub fn forget(&mut self, tracker: TrackerIx) {
        self.idle_since.remove(&tracker);
    }

    /// A guest session to close at `now`, if one has been unused for the
    /// grace period.
    pub fn poll_close(&mut self, now: Instant) -> Option<TrackerIx> {
        let due = self
            .idle_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.grace)
            .map(|(tracker, _)| *tracker)
            .min()?;
        self.idle_since.remove(&due);
        Some(due)
    }

    /// When [`Self::poll_close`] may next have something.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.idle_since
            .values()
            .map(|since| *since + self.grace)
            .min()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_unused_guest_session_closes_after_the_grace_and_use_resets_it() {
        let grace = Duration::from_secs(15);
        let mut idle = GuestIdle::new(grace);
        let start = Instant::now();
        assert_eq!(idle.poll_timeout(), None);
        idle.handle_use(2, true, start);
        assert_eq!(idle.poll_timeout(), None, "in use: nothing to close");
        idle.handle_use(2, false, start);
        // Reported unused again: the idle time counts from the first.
        idle.handle_use(2, false, start + Duration::from_secs(5));
        assert_eq!(idle.poll_timeout(), Some(start + grace));
        assert_eq!(idle.poll_close(start + Duration::from_secs(14)), None);
        // Used again before the grace ran out: the count starts over.
        idle.handle_use(2, true, start + Duration::from_secs(14));
        idle.handle_use(2, false, start + Duration::from_secs(20));
        assert_eq!(idle.poll_close(start + Duration::from_secs(34)), None);
        assert_eq!(idle.poll_close(start + Duration::from_secs(35)), Some(2));
        assert_eq!(
            idle.poll_close(start + Duration::from_secs(99)),
            None,
            "once"
        );
        assert_eq!(idle.poll_timeout(), None);
    }

    #[test]
    fn a_lost_guest_session_is_not_closed_later() {
        let mut idle = GuestIdle::new(Duration::from_secs(15));
        let start = Instant::now();
        idle.handle_use(1, false, start);
        idle.handle_use(3, false, start + Duration::from_secs(1));
        idle.forget(1);
        assert_eq!(idle.poll_close(start + Duration::from_secs(60)), Some(3));
        assert_eq!(idle.poll_close(start + Duration::from_secs(60)), None);
    }
}
