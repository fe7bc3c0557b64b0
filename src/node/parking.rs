//! A node's sessions parked and resumed (`crate::doorbell`): parking one
//! the node task found unused, and what a session that resumed needs
//! again — its relay stream, and its rooms' member lists (events pushed
//! while it was parked were not kept).

use super::events::TrackerLink;
use super::manager::TrackerIx;
use super::Node;

impl Node {
    /// Parks the session with `tracker`. A refusal (a tracker that does
    /// not park) leaves it connected and is not asked again.
    pub(super) async fn park(self, tracker: TrackerIx) {
        let Some(session) = self.inner.trackers.session(tracker) else {
            return;
        };
        match session
            .park(self.inner.socket.clone(), self.peer_id())
            .await
        {
            Ok(()) => self.tracker_news(tracker, TrackerLink::Parked, None),
            Err(error) => tracing::debug!(tracker, %error, "cannot park the tracker session"),
        }
    }

    /// The session with `tracker` resumed its parked registration: its
    /// relay stream is opened again before any event of the new
    /// connection is handled (an introduction may need it), and each room
    /// is joined again (the tracker kept it; joining again answers with
    /// today's members, and members that left meanwhile are dropped).
    pub(super) async fn resumed(&self, tracker: TrackerIx) {
        self.tracker_news(tracker, TrackerLink::Resumed, None);
        self.open_relay(tracker).await;
        let node = self.clone();
        // Not awaited: the session's reader may be waiting for the loop
        // that called this to take an event before it reads the answers.
        self.inner.spawn(async move {
            let rooms = node.roster().rooms.clone();
            for room in rooms {
                if let Err(error) = node.join_at_tracker(tracker, &room, true).await {
                    tracing::debug!(tracker, %room, %error, "cannot refresh a room after resuming");
                }
            }
        });
    }
}
