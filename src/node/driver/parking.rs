//! The node task's side of parking (`crate::doorbell`): a session with one
//! of this node's own trackers that has been unused for
//! [`NodeConfig::park_after`](crate::node::NodeConfig::park_after) (no
//! request sent, no event received, no attempt through it or waiting for
//! it, no relayed connection through its relay) is parked: the tracker
//! keeps the registration without the connection, and the session comes
//! back by itself when it is needed or rung. Guest sessions are closed
//! instead ([`super::guests`]).

use std::time::Instant;

use super::Driver;
use crate::node::manager::TrackerState;

impl Driver {
    /// Tells the parking timer which sessions are in use, and parks those
    /// unused for the configured time.
    pub(super) fn watch_parking(&mut self, now: Instant) {
        if self.node.inner.config.park_after.is_none() || self.node.is_closing() {
            return;
        }
        let trackers = &self.node.inner.trackers;
        for tracker in 0..trackers.len() {
            let session = trackers.session(tracker);
            let parkable = !trackers.is_guest(tracker)
                && self.manager.tracker_state(tracker) == Some(TrackerState::Up)
                && session.as_ref().is_some_and(|s| s.may_park());
            let Some(session) = session.filter(|_| parkable) else {
                self.parking.forget(tracker);
                continue;
            };
            let in_use = self.session_in_use(tracker);
            self.parking.handle_use(tracker, in_use, now);
            self.parking.touch(tracker, session.last_active());
        }
        while let Some(tracker) = self.parking.poll_due(now) {
            self.node.inner.spawn(self.node.clone().park(tracker));
        }
    }
}
