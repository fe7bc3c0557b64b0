//! The node task's side of introductions: handing one to the manager with
//! what its punch will need, and, when the tracker answers this node's own
//! request with the peer's attempt (it folds crossing requests into one),
//! offering that introduction again if the manager declined it because it
//! came before this node knew the peer shared a room.

use std::time::{Duration, Instant};

use super::Driver;
use crate::identity::PeerId;
use crate::node::manager::TrackerIx;
use crate::protocol::Member;
use crate::punch::Role;

/// How long an introduction as the acceptor is kept for a second offer,
/// and how many at most (`Driver::declined`): as long as the tracker folds
/// a crossing request into it.
const DECLINED_KEPT: Duration = crate::tracker::registry::CROSSING_WINDOW;
const MAX_DECLINED: usize = 64;

impl Driver {
    /// The tracker introduced this node to `member` for `attempt`.
    pub(super) fn introduced(
        &mut self,
        tracker: TrackerIx,
        attempt: u64,
        member: Member,
        role: Role,
        peer_late: Duration,
        now: Instant,
    ) {
        let peer = member.peer_id;
        if !self.node.is_allowed(&peer) || self.node.is_closing() {
            return;
        }
        self.manager.learn_tracker(peer, tracker);
        // The relay's head start is measured in the tracker's round
        // trips: the freshest estimate, not the one from registering.
        if let Some(session) = self.node.inner.trackers.session(tracker) {
            tracing::debug!(tracker, rtt = ?session.rtt(), "tracker round trip");
            self.manager.handle_tracker_rtt(tracker, session.rtt());
        }
        self.introductions
            .insert(attempt, (tracker, member.clone(), peer_late));
        self.manager
            .handle_introduced(tracker, peer, attempt, role, now);
        // Introductions whose punch did not start are not kept, but for a
        // moment those as the acceptor.
        self.introductions.retain(|a, _| *a == attempt);
        self.declined
            .retain(|(_, at, ..)| now.duration_since(*at) < DECLINED_KEPT);
        if role == Role::Acceptor && self.declined.len() < MAX_DECLINED {
            self.declined
                .push_back((attempt, now, tracker, member, peer_late));
        }
    }

    /// The tracker took this node's request for `peer` as `attempt`. If
    /// that is the peer's own attempt, whose introduction came before this
    /// node knew the peer, it is offered to the manager again (taken now,
    /// as this node asked for the peer; ignored if taken already).
    pub(super) fn answered(&mut self, peer: PeerId, attempt: u64, now: Instant) {
        let Some(at) = self.declined.iter().position(|d| d.0 == attempt) else {
            return;
        };
        let Some((_, _, tracker, member, peer_late)) = self.declined.remove(at) else {
            return;
        };
        if member.peer_id != peer {
            return;
        }
        self.introductions
            .insert(attempt, (tracker, member, peer_late));
        self.manager
            .handle_introduced(tracker, peer, attempt, Role::Acceptor, now);
    }
}
