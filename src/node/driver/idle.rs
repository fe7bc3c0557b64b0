//! When a tracker session has been unused long enough to act on: a guest
//! session is closed ([`super::guests`]), one of this node's own trackers
//! parked ([`super::parking`]). Sans I/O: the node task says after every
//! step which sessions are in use, and asks what is due.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::node::manager::TrackerIx;

#[derive(Debug)]
pub(in crate::node) struct IdleTimer {
    grace: Duration,
    /// Sessions up and unused, since when.
    idle_since: HashMap<TrackerIx, Instant>,
}

impl IdleTimer {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            idle_since: HashMap::new(),
        }
    }

    /// Whether the session with `tracker`, which is up, is in use at
    /// `now`.
    pub fn handle_use(&mut self, tracker: TrackerIx, in_use: bool, now: Instant) {
        if in_use {
            self.idle_since.remove(&tracker);
        } else {
            self.idle_since.entry(tracker).or_insert(now);
        }
    }

    /// The session with `tracker` is not up (lost, closed, parked):
    /// nothing to time.
    pub fn forget(&mut self, tracker: TrackerIx) {
        self.idle_since.remove(&tracker);
    }

    /// Moves the start of `tracker`'s idle time to `at` if that is later:
    /// it was last used then, as seen from elsewhere (a request sent).
    pub fn touch(&mut self, tracker: TrackerIx, at: Instant) {
        if let Some(since) = self.idle_since.get_mut(&tracker) {
            *since = (*since).max(at);
        }
    }

    /// A session to act on at `now` (close, park), if one has been unused
    /// for the grace period.
    pub fn poll_due(&mut self, now: Instant) -> Option<TrackerIx> {
        let due = self
            .idle_since
            .iter()
            .filter(|(_, since)| now.saturating_duration_since(**since) >= self.grace)
            .map(|(tracker, _)| *tracker)
            .min()?;
        self.idle_since.remove(&due);
        Some(due)
    }

    /// When [`Self::poll_due`] may next have something.
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
    use std::time::Duration;

    #[test]
    fn an_unused_guest_session_closes_after_the_grace_and_use_resets_it() {
        let grace = Duration::from_secs(15);
        let mut idle = IdleTimer::new(grace);
        let start = Instant::now();
        assert_eq!(idle.poll_timeout(), None);
        idle.handle_use(2, true, start);
        assert_eq!(idle.poll_timeout(), None, "in use: nothing to close");
        idle.handle_use(2, false, start);
        // Reported unused again: the idle time counts from the first.
        idle.handle_use(2, false, start + Duration::from_secs(5));
        assert_eq!(idle.poll_timeout(), Some(start + grace));
        assert_eq!(idle.poll_due(start + Duration::from_secs(14)), None);
        // Used again before the grace ran out: the count starts over.
        idle.handle_use(2, true, start + Duration::from_secs(14));
        idle.handle_use(2, false, start + Duration::from_secs(20));
        assert_eq!(idle.poll_due(start + Duration::from_secs(34)), None);
        assert_eq!(idle.poll_due(start + Duration::from_secs(35)), Some(2));
        assert_eq!(idle.poll_due(start + Duration::from_secs(99)), None, "once");
        assert_eq!(idle.poll_timeout(), None);
    }

    #[test]
    fn use_seen_elsewhere_moves_the_idle_time_on() {
        let mut idle = IdleTimer::new(Duration::from_secs(60));
        let start = Instant::now();
        idle.handle_use(0, false, start);
        idle.touch(0, start + Duration::from_secs(30));
        // Older news changes nothing.
        idle.touch(0, start + Duration::from_secs(10));
        assert_eq!(idle.poll_timeout(), Some(start + Duration::from_secs(90)));
        assert_eq!(idle.poll_due(start + Duration::from_secs(89)), None);
        assert_eq!(idle.poll_due(start + Duration::from_secs(90)), Some(0));
        // A session not timed is not started by a touch.
        idle.touch(4, start);
        assert_eq!(idle.poll_timeout(), None);
    }

    #[test]
    fn a_lost_guest_session_is_not_closed_later() {
        let mut idle = IdleTimer::new(Duration::from_secs(15));
        let start = Instant::now();
        idle.handle_use(1, false, start);
        idle.handle_use(3, false, start + Duration::from_secs(1));
        idle.forget(1);
        assert_eq!(idle.poll_due(start + Duration::from_secs(60)), Some(3));
        assert_eq!(idle.poll_due(start + Duration::from_secs(60)), None);
    }
}
