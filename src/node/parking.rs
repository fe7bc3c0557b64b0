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
        match session.park(self.inner.socket.clone()).await {
            Ok(()) => self.tracker_news(tracker, TrackerLink::Parked, None),
            Err(error) => tracing::debug!(tracker, %error, "cannot park the tracker session"),
        }
    }

    /// The session with `tracker` resumed its parked registration: each
    /// room is joined again (the tracker kept it; joining again answers
    /// with today's members, and members that left meanwhile are dropped)
    /// before the loop that called this handles the next event — an
    /// introduction the tracker held for this node, most likely from a
    /// member that joined while it was parked, which the manager takes
    /// only from a peer it knows shares a room. The relay stream is opened
    /// again beside that, not awaited: it is open a round trip later, well
    /// before a relay leg would race the punch, and QUIC resends whatever
    /// reached the relay before it.
    pub(super) async fn resumed(&self, tracker: TrackerIx) {
        self.tracker_news(tracker, TrackerLink::Resumed, None);
        // The address the tracker sees may have moved while parked: the
        // DHT record is published again if it changed.
        self.dht_changed();
        let node = self.clone();
        self.inner
            .spawn(async move { node.open_relay(tracker).await });
        let rooms = self.roster().rooms.clone();
        let joins = rooms.iter().map(|room| async move {
            if let Err(error) = self.join_at_tracker(tracker, room, true).await {
                tracing::debug!(tracker, %room, %error, "cannot refresh a room after resuming");
            }
        });
        // The answers are read while the events before them wait in the
        // session's queue: at most the introductions the tracker held.
        futures_util::future::join_all(joins).await;
    }

    /// The session with `tracker` came back from parking to a tracker that
    /// had forgotten it (restarted, or the registration expired), and
    /// registered afresh: as after a loss, its rooms are joined again and
    /// its relay reopened (`restore_tracker`), and it is news.
    pub(super) fn registered_afresh(&self, tracker: TrackerIx) {
        self.tracker_news(
            tracker,
            TrackerLink::Back,
            Some("it had forgotten this node while it was parked".into()),
        );
        self.dht_changed();
        self.inner.spawn(self.clone().restore_tracker(tracker));
    }
}
