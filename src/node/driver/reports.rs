//! What the node task makes of the connection manager's reports: a peer's
//! status and the errors and events the user sees, answers to whoever
//! waits for a connection, and the rooms' gossip told of unreachable
//! peers.

use std::time::Instant;

use super::Driver;
use crate::node::events::{Event, TrackerLink};
use crate::node::manager::Report;
use crate::node::PeerStatus;

impl Driver {
    pub(super) fn report(&mut self, report: Report) {
        let node = &self.node;
        match report {
            Report::Connecting(peer) => node.set_status(peer, PeerStatus::Connecting, None),
            Report::Unreachable {
                peer,
                why,
                retry_in,
            } => {
                node.set_status(peer, PeerStatus::Offline, Some("unreachable".into()));
                let name = node.name_of(&peer);
                let retry = retry_in
                    .map(|delay| {
                        format!(
                            "; trying again in {}",
                            crate::node::events::seconds_text(delay)
                        )
                    })
                    .unwrap_or_default();
                node.emit(Event::error(format!(
                    "could not connect to {name}: {why}{retry}"
                )));
                for waiter in self.waiters.remove(&peer).unwrap_or_default() {
                    let _ = waiter.send(Err(why.clone()));
                }
                self.overlay.unreachable(peer, Instant::now());
            }
            Report::ThroughRoom(peer) => node.through_room(peer),
            Report::Gone { peer, reason } => {
                node.gone(peer, reason);
                self.overlay.unreachable(peer, Instant::now());
            }
            Report::TrackerLost {
                tracker,
                reason,
                retry_in,
            } => node.tracker_news(
                tracker,
                TrackerLink::Lost,
                Some(format!(
                    "{reason}; connected peers stay connected; trying again in {}",
                    crate::node::events::seconds_text(retry_in)
                )),
            ),
            Report::TrackerBack(tracker) => node.tracker_news(tracker, TrackerLink::Back, None),
        }
    }
}
