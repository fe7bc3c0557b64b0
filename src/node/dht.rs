//! The node's side of the DHT ([`crate::dht`]): publishing its record
//! while it is registered with trackers (when, decided by the sans-IO
//! [`Publisher`]; what, by [`super::trackers::Trackers::reach`]), and
//! connecting to a peer by id alone: its record looked up, then an
//! introduction through one of the trackers it lists — as a *guest* of
//! that tracker when this node is not registered there.

use std::time::Instant;

use tokio::sync::{oneshot, Notify};

use super::driver::Input;
use super::events::{DhtState, Event};
use super::{Node, NodeError};
use crate::dht::publisher::{PublishConfig, Publisher};
use crate::dht::record::TrackerRef;
use crate::dht::{DhtConfig, PeerDirectory};
use crate::identity::PeerId;

#[path = "dht_rooms.rs"]
mod rooms;

/// Trackers of a peer's record tried at once as guests, at most.
const MAX_ROUTES: usize = 2;

/// Guest sessions one node holds at once, at most.
pub(super) const MAX_GUEST_TRACKERS: usize = 8;

/// The node's DHT client and what wakes its publisher.
pub(super) struct DhtLink {
    pub(super) directory: PeerDirectory,
    /// Notified when the facts of the record may have changed (a tracker
    /// up or lost).
    changed: Notify,
    /// Notified when the rooms (or a room's password) may have changed
    /// (`dht_rooms`).
    pub(super) rooms_changed: Notify,
    /// Whether this node publishes (it has trackers of its own).
    publishes: bool,
    /// On the public DHT: LAN addresses are left out of the record.
    public: bool,
}

impl DhtLink {
    /// Starts the DHT client; `publishes` when the node has trackers.
    pub fn start(config: &DhtConfig, publishes: bool) -> Result<Self, crate::dht::DhtError> {
        Ok(Self {
            directory: PeerDirectory::start(config)?,
            changed: Notify::new(),
            rooms_changed: Notify::new(),
            publishes,
            public: config.bootstrap == crate::dht::Bootstrap::Public,
        })
    }

    pub fn publishes(&self) -> bool {
        self.publishes
    }
}

/// Seconds since the Unix epoch, by this machine's clock.
fn unix_secs() -> u64 {
    super::now_ms() / 1000
}

impl Node {
    /// The facts of this node's record may have changed.
    pub(super) fn dht_changed(&self) {
        if let Some(link) = &self.inner.dht {
            link.changed.notify_one();
        }
    }

    /// Publishes this node's record until shutdown: after each change of
    /// the trackers it is registered with, and before it expires.
    pub(super) async fn publish_loop(self) {
        let Some(link) = self.inner.dht.as_ref().filter(|link| link.publishes) else {
            return;
        };
        let mut publisher = Publisher::new(PublishConfig::default());
        loop {
            let mut record = self.inner.trackers.reach();
            if link.public {
                record = record.public_only();
            }
            publisher.handle_contents(Some(record), Instant::now());
            if let Some(publication) = publisher.poll_publish(Instant::now(), unix_secs()) {
                let result = link
                    .directory
                    .publish(&self.inner.identity, &publication)
                    .await;
                let event = match &result {
                    Ok(()) => Event::Dht {
                        state: DhtState::Published,
                        seq: Some(publication.seq),
                        trackers: publication.record.trackers().len(),
                        reason: None,
                    },
                    Err(error) => Event::Dht {
                        state: DhtState::Failed,
                        seq: None,
                        trackers: publication.record.trackers().len(),
                        reason: Some(error.to_string()),
                    },
                };
                self.emit(event);
                let outcome = result.map_err(|error| error.to_string());
                publisher.handle_published(&publication.record, outcome, Instant::now());
                continue;
            }
            let wake = publisher.poll_timeout();
            let sleep = crate::wake::until(wake);
            tokio::select! {
                () = link.changed.notified() => {}
                () = sleep => {}
            }
        }
    }

    /// Whether `peer` must be looked up on the DHT to be reached: the node
    /// uses the DHT, no tracker of this node lists the peer in a room, and
    /// it is not connected.
    pub(super) fn needs_lookup(&self, peer: &PeerId) -> bool {
        if self.inner.dht.is_none() {
            return false;
        }
        let state = self.roster();
        !state.has_open_gate(peer)
            && state
                .peers
                .get(peer)
                .is_none_or(|record| record.listed_at.is_empty())
    }

    /// Looks `peer` up on the DHT and connects through the trackers its
    /// record lists ([`Node::routes_of`]).
    pub(super) async fn connect_by_dht(&self, peer: PeerId) -> Result<(), NodeError> {
        self.check_connectable(&peer)?;
        let Some(link) = &self.inner.dht else {
            return Err(NodeError::UnknownPeer(peer.to_string()));
        };
        let trackers = self.routes_of(link, peer).await?;
        let (reply, outcome) = oneshot::channel();
        self.input(Input::ConnectThrough {
            peer,
            trackers,
            reply: Some(reply),
        });
        self.first_outcome(peer, outcome).await
    }

    /// The manager's `LookUp`: `peer`'s record again, and through which
    /// trackers to reach it now.
    pub(super) async fn relookup(self, peer: PeerId) {
        let Some(link) = &self.inner.dht else {
            return;
        };
        match self.routes_of(link, peer).await {
            Ok(trackers) => self.input(Input::ConnectThrough {
                peer,
                trackers,
                reply: None,
            }),
            Err(error) => self.input(Input::LookupFailed {
                peer,
                why: error.to_string(),
            }),
        }
    }

    /// Looks `peer`'s record up and picks the trackers to reach it
    /// through: the listed ones this node is registered with, else the
    /// first [`MAX_ROUTES`] listed (as guests). Whichever comes up first
    /// introduces it, so one dead tracker in the record costs nothing.
    pub(super) async fn routes_of(
        &self,
        link: &DhtLink,
        peer: PeerId,
    ) -> Result<Vec<TrackerRef>, NodeError> {
        let record = link.directory.lookup(peer).await?;
        let trackers = &self.inner.trackers;
        let ours: Vec<TrackerRef> = record
            .trackers()
            .iter()
            .filter(|tracker| {
                trackers
                    .find(&tracker.id)
                    .is_some_and(|ix| !trackers.is_guest(ix))
            })
            .copied()
            .collect();
        let routes = if ours.is_empty() {
            record.trackers().iter().take(MAX_ROUTES).copied().collect()
        } else {
            ours
        };
        if routes.is_empty() {
            return Err(NodeError::Invalid(format!(
                "the DHT record of {peer} lists no tracker; connect with PEERID@HOST:PORT"
            )));
        }
        tracing::debug!(peer = %peer.short(), trackers = routes.len(), "reaching a peer through its DHT record");
        Ok(routes)
    }
}
