//! The node task's side of guest sessions (sessions with a peer's
//! tracker, opened only to be introduced to that peer): each one that is
//! up, or down and waiting to be retried, is checked for use after every
//! step ([`Manager::tracker_in_use`]), and closed once the sans-IO
//! [`IdleTimer`](super::idle::IdleTimer) says it has been unused for [`GUEST_GRACE`] — the
//! introduced connection is up on a direct path, or the attempt failed and
//! is not being retried through it. The manager then leaves it closed
//! until a peer needs it again. A peer's tracker becomes a guest session
//! here too: a new one while fewer than [`MAX_GUEST_TRACKERS`] exist, else
//! a closed one pointed at the new tracker.

use std::time::{Duration, Instant};

use super::Driver;
use crate::dht::record::TrackerRef;
use crate::node::dht::MAX_GUEST_TRACKERS;
use crate::node::events::{PathKind, TrackerLink};
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
                    let in_use = self.session_in_use(tracker);
                    self.guests.handle_use(tracker, in_use, now);
                }
            }
        }
        while let Some(tracker) = self.guests.poll_due(now) {
            self.close_guest(tracker);
        }
    }

    /// Whether the session with `tracker` is needed now: a peer's attempt
    /// runs through it or waits for it, or its relay carries a connection
    /// that is relayed now.
    pub(super) fn session_in_use(&self, tracker: TrackerIx) -> bool {
        let relaying = self
            .node
            .inner
            .trackers
            .routed_through(tracker)
            .iter()
            .any(|peer| {
                self.manager
                    .gate(peer)
                    .is_some_and(|g| g.path == PathKind::Relay)
            });
        relaying || self.manager.tracker_in_use(tracker)
    }

    fn close_guest(&mut self, tracker: TrackerIx) {
        let trackers = &self.node.inner.trackers;
        // The session's end, reported by its event loop, is no loss.
        self.current_generation.remove(&tracker);
        let session = trackers.session(tracker);
        self.node.tracker_news(
            tracker,
            TrackerLink::Closed,
            Some("a guest session no longer needed".into()),
        );
        trackers.set_down(tracker);
        self.manager.handle_tracker_closed(tracker);
        if let Some(session) = session {
            session.close();
        }
        tracing::debug!(tracker, "guest session closed: no longer needed");
    }
}

/// How long an unused guest session stays open: a connection just made
/// may still fall back to that tracker's relay, and the peer may be asked
/// for again.
pub(in crate::node) const GUEST_GRACE: Duration = Duration::from_secs(15);
