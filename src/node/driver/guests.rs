//! The node task's side of guest sessions: each guest session that is up
//! is checked for use after every step, and closed once
//! [`GuestIdle`](crate::node::guests::GuestIdle) says it has been unused
//! long enough. The manager then leaves it closed until a peer needs it
//! again.

use std::time::Instant;

use super::Driver;
use crate::node::events::{Event, TrackerLink};
use crate::node::manager::{TrackerIx, TrackerState};

impl Driver {
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
