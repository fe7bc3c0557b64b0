//! The node task's side of guest sessions (sessions with a peer's
//! tracker, opened only to be introduced to that peer): each one that is
//! up, or down and waiting to be retried, is checked for use after every
//! step ([`Manager::tracker_in_use`]), and closed once the sans-IO
//! [`GuestIdle`] says it has been unused for [`GUEST_GRACE`] — the
//! introduced connection is up on a direct path, or the attempt failed and
//! is not being retried through it. The manager then leaves it closed
//! until a peer needs it again. A peer's tracker becomes a guest session
//! here too: a new one while fewer than [`MAX_GUEST_TRACKERS`] exist, else
//! a closed one pointed at the new tracker.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use super::Driver;
use crate::dht::record::TrackerRef;
use crate::node::dht::MAX_GUEST_TRACKERS;
use crate::node::events::{Event, PathKind, TrackerLink};
#[cfg(doc)]
use crate::node::manager::Manager;
use crate::node::manager::{TrackerIx, TrackerState};

impl Driver {
    /// The tracker to reach a peer through, found in its DHT record: one
    /// of this node's, a guest session with it already, a new guest
    /// session, or a closed one pointed at it. `None` when every guest
    /// session is in use.
    pub(super) fn guest_for(&mut self, tracker: &TrackerRef, now: Instant) -> Option<TrackerIx> {
        let trackers = &self.node.inner.trackers;
        if let Some(ix) = trackers.find(&tracker.id) {
            return Some(ix);
        }
        let target = crate::endpoint::Target {
            peer: Some(tracker.id),
            host: tracker.addr.to_string(),
        };
        if trackers.guest_count() < MAX_GUEST_TRACKERS {
            let ix = trackers.add_guest(target);
            let managed = self.manager.add_tracker(now);
            debug_assert_eq!(managed, ix, "tracker lists out of step");
            return Some(ix);
        }
        let closed = (0..trackers.len()).find(|ix| {
            trackers.is_guest(*ix) && self.manager.tracker_state(*ix) == Some(TrackerState::Closed)
        })?;
        trackers.retarget_guest(closed, target);
        // Whom the old tracker knew, the new one does not.
        self.manager.forget_tracker(closed);
        self.guests.forget(closed);
        Some(closed)
    }

    /// Has the manager reach `peer` through `trackers` (guest sessions
    /// where need be); whether any could be used.
    pub(super) fn reach_through(
        &mut self,
        peer: crate::identity::PeerId,
        trackers: &[TrackerRef],
        now: Instant,
    ) -> bool {
        let mut any = false;
        for tracker in trackers {
            if let Some(ix) = self.guest_for(tracker, now) {
                self.manager.reach_through(peer, ix, now);
                any = true;
            }
        }
        any
    }

    /// Tells the guest-session timer which guest sessions are in use, and
    /// closes those unused for its grace period (also one that is down:
    /// it is no longer tried again).
    pub(super) fn watch_guests(&mut self, now: Instant) {
        let trackers = &self.node.inner.trackers;
        for tracker in 0..trackers.len() {
            if !trackers.is_guest(tracker) {
                continue;
            }
            // Up, down, or trying again (a dead tracker in a record): any
            // is dropped once unused; a connection attempt still under way
            // is dropped when it ends (`Input::TrackerUp`).
            match self.manager.tracker_state(tracker) {
                Some(TrackerState::Closed) | None => self.guests.forget(tracker),
                Some(_) => {
                    // Its relay carries a connection that is relayed now.
                    let relaying = trackers.routed_through(tracker).iter().any(|peer| {
                        self.manager
                            .gate(peer)
                            .is_some_and(|g| g.path == PathKind::Relay)
                    });
                    let in_use = relaying || self.manager.tracker_in_use(tracker);
                    self.guests.handle_use(tracker, in_use, now);
                }
            }
        }
        while let Some(tracker) = self.guests.poll_close(now) {
            self.close_guest(tracker);
        }
    }

    fn close_guest(&mut self, tracker: TrackerIx) {
        let trackers = &self.node.inner.trackers;
        // The session's end, reported by its event loop, is no loss.
        self.current_generation.remove(&tracker);
        let session = trackers.session(tracker);
        trackers.set_down(tracker);
        self.manager.handle_tracker_closed(tracker);
        let target = trackers.target(tracker);
        let addr = match &session {
            Some(session) => Some(session.tracker_addr().to_string()),
            None => target.as_ref().map(|t| t.host.clone()),
        };
        let tracker_id = target.and_then(|t| t.peer).map(|id| id.to_string());
        if let Some(session) = session {
            session.close();
        }
        tracing::debug!(tracker, "guest session closed: no longer needed");
        self.node.emit(Event::Tracker {
            state: TrackerLink::Closed,
            tracker_id,
            addr,
            reason: Some("a guest session no longer needed".into()),
        });
    }
}

/// How long an unused guest session stays open: a connection just made
/// may still fall back to that tracker's relay, and the peer may be asked
/// for again.
pub(in crate::node) const GUEST_GRACE: Duration = Duration::from_secs(15);

#[derive(Debug)]
pub(in crate::node) struct GuestIdle {
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
    use std::time::Duration;

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
