//! The node task's side of guest sessions: each guest session that is up
//! is checked for use after every step, and closed once
//! [`GuestIdle`](crate::node::guests::GuestIdle) says it has been unused
//! long enough. The manager then leaves it closed until a peer needs it
//! again. A peer's tracker becomes a guest session here too: a new one
//! while fewer than [`MAX_GUEST_TRACKERS`] exist, else a closed one
//! pointed at the new tracker.

use std::time::Instant;

use super::Driver;
use crate::dht::record::TrackerRef;
use crate::node::dht::MAX_GUEST_TRACKERS;
use crate::node::events::{Event, TrackerLink};
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

    /// Tells the guest-session timer which guest sessions are in use, and
    /// closes those unused for its grace period.
    pub(super) fn watch_guests(&mut self, now: Instant) {
        let trackers = &self.node.inner.trackers;
        for tracker in 0..trackers.len() {
            if !trackers.is_guest(tracker) {
                continue;
            }
            if self.manager.tracker_state(tracker) == Some(TrackerState::Up) {
                let in_use = self.manager.tracker_in_use(tracker);
                self.guests.handle_use(tracker, in_use, now);
            } else {
                self.guests.forget(tracker);
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
        let addr = session.as_ref().map(|s| s.tracker_addr().to_string());
        let tracker_id = session.as_ref().map(|s| s.tracker_id().to_string());
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
