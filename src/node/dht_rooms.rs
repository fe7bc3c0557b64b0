//! The node's rooms on the DHT: each room it is in announced in the room's
//! records (when it has trackers of its own, so finders can reach it) and
//! looked up, so that members registered with other trackers meet. What to
//! do when is decided by the sans-IO [`RoomFinder`]; the records' I/O is
//! [`PeerDirectory`]'s; a member found is met by id alone — its own DHT
//! record looked up, then an introduction through one of its trackers
//! (as a guest there when need be), as `--connect PEERID` does — and then
//! it is a member like one its tracker listed: the room's gossip decides
//! whether to keep it connected.
//!
//! A password room's records are derived from its password-derived key, so
//! a node that knows only the name finds nothing; setting a password moves
//! the room to its new records.

use std::collections::HashMap;
use std::time::Instant;

use tokio::sync::mpsc;

use crate::dht::room_record::RoomSpot;
use crate::dht::rooms::{Announced, Found, RoomFinder, RoomTask, RoomsConfig};
use crate::dht::PeerDirectory;
use crate::identity::PeerId;
use crate::node::driver::Input;
use crate::node::events::{DhtRoomState, Event};
use crate::node::Node;

/// A room as the finder knows it: its name and its records' public key (a
/// password set on it makes it another room).
type RoomKey = (String, [u8; 32]);

/// Spots of rooms left kept for their withdrawal, at most.
const MAX_LEFT: usize = 64;

/// What a DHT task reports back to the rooms loop.
enum Outcome {
    Announced(RoomKey, Announced),
    Looked(RoomKey, Option<Vec<Found>>),
}

impl Node {
    /// The rooms, or a room's password, may have changed.
    pub(in crate::node) fn dht_rooms_changed(&self) {
        if let Some(link) = &self.inner.dht {
            link.rooms_changed.notify_one();
        }
    }

    /// The rooms this node is in, with the spot of each on the DHT.
    fn room_spots(&self) -> HashMap<RoomKey, RoomSpot> {
        let roster = self.roster();
        roster
            .rooms
            .iter()
            .filter(|room| !crate::node::overlay::is_private(room))
            .map(|room| {
                let spot = match roster.room_keys.get(room) {
                    Some(key) => RoomSpot::from_secret(&key.dht_secret()),
                    None => RoomSpot::open(room),
                };
                ((room.clone(), spot.public_key()), spot)
            })
            .collect()
    }

    /// Announces and looks up this node's rooms on the DHT until shutdown.
    pub(in crate::node) async fn rooms_loop(self) {
        let Some(link) = self.inner.dht.as_ref() else {
            return;
        };
        let directory = link.directory.clone();
        let mut finder = RoomFinder::new(RoomsConfig::default(), link.publishes());
        let mut spots: HashMap<RoomKey, RoomSpot> = HashMap::new();
        // Spots of rooms left, until their withdrawal ran.
        let mut left: HashMap<RoomKey, RoomSpot> = HashMap::new();
        let (done, mut outcomes) = mpsc::unbounded_channel::<Outcome>();
        loop {
            let now = Instant::now();
            let current = self.room_spots();
            for (key, spot) in spots.drain() {
                if !current.contains_key(&key) {
                    left.insert(key, spot);
                }
            }
            spots = current;
            let keys: Vec<RoomKey> = spots.keys().cloned().collect();
            finder.handle_rooms(&keys, now);
            while let Some(task) = finder.poll_task(now) {
                self.start_room_task(task, &directory, &spots, &mut left, &done);
            }
            // Rooms joined again, or whose withdrawal the finder dropped
            // (a node that does not announce, or too many at once): their
            // entries go stale on their own.
            left.retain(|key, _| !spots.contains_key(key));
            if !link.publishes() || left.len() > MAX_LEFT {
                left.clear();
            }
            while let Some(((room, _), peer)) = finder.poll_meet() {
                self.inner.spawn(self.clone().meet_room_member(room, peer));
            }
            let wake = finder.poll_timeout();
            let sleep = crate::wake::until(wake);
            tokio::select! {
                () = link.rooms_changed.notified() => {}
                () = sleep => {}
                outcome = outcomes.recv() => match outcome {
                    Some(outcome) => self.room_outcome(&mut finder, outcome),
                    None => return,
                },
            }
        }
    }

    fn start_room_task(
        &self,
        task: RoomTask<RoomKey>,
        directory: &PeerDirectory,
        spots: &HashMap<RoomKey, RoomSpot>,
        left: &mut HashMap<RoomKey, RoomSpot>,
        done: &mpsc::UnboundedSender<Outcome>,
    ) {
        let directory = directory.clone();
        let done = done.clone();
        match task {
            RoomTask::Announce(key) => {
                let Some(spot) = spots.get(&key).cloned() else {
                    return;
                };
                let identity = self.inner.identity.clone();
                self.inner.spawn(async move {
                    let outcome = directory
                        .announce_in_room(&identity, &spot, super::unix_secs())
                        .await;
                    let _ = done.send(Outcome::Announced(key, outcome));
                });
            }
            RoomTask::Look(key) => {
                let Some(spot) = spots.get(&key).cloned() else {
                    return;
                };
                self.inner.spawn(async move {
                    let found = directory.look_up_room(&spot, super::unix_secs()).await;
                    let _ = done.send(Outcome::Looked(key, found));
                });
            }
            RoomTask::Withdraw(key) => {
                let Some(spot) = left.remove(&key) else {
                    return;
                };
                let me = self.peer_id();
                let node = self.clone();
                self.inner.spawn(async move {
                    let (state, reason) = match directory
                        .withdraw_from_room(&me, &spot, super::unix_secs())
                        .await
                    {
                        true => (DhtRoomState::Withdrawn, None),
                        false => (
                            DhtRoomState::Failed,
                            Some(
                                "could not remove this node's entry; it goes stale within an hour"
                                    .to_string(),
                            ),
                        ),
                    };
                    node.emit(Event::DhtRoom {
                        room: key.0,
                        state,
                        members: None,
                        reason,
                    });
                });
            }
        }
    }

    fn room_outcome(&self, finder: &mut RoomFinder<RoomKey>, outcome: Outcome) {
        let now = Instant::now();
        match outcome {
            Outcome::Announced(key, outcome) => {
                let (state, reason) = match outcome {
                    Announced::Done => (Some(DhtRoomState::Announced), None),
                    Announced::Conflict => (None, None),
                    Announced::Failed => (
                        Some(DhtRoomState::Failed),
                        Some("no DHT node took the room's record; trying again".to_string()),
                    ),
                };
                if let Some(state) = state {
                    self.emit(Event::DhtRoom {
                        room: key.0.clone(),
                        state,
                        members: None,
                        reason,
                    });
                }
                finder.handle_announced(&key, outcome, now);
            }
            Outcome::Looked(key, found) => {
                let me = self.peer_id();
                if let Some(found) = &found {
                    let others = found.iter().filter(|f| f.peer != me).count();
                    self.emit(Event::DhtRoom {
                        room: key.0.clone(),
                        state: DhtRoomState::Found,
                        members: Some(others),
                        reason: None,
                    });
                }
                let reached = |peer: &PeerId| self.reaches_in_room(peer, &key.0);
                finder.handle_looked(&key, found, reached, now);
            }
        }
    }

    /// Whether this node reaches `peer` in `room` without the DHT: itself,
    /// connected, or listed in the room by one of this node's trackers.
    fn reaches_in_room(&self, peer: &PeerId, room: &str) -> bool {
        if *peer == self.peer_id() || self.check_dialable(peer).is_err() {
            return true;
        }
        let roster = self.roster();
        roster.has_open_gate(peer)
            || roster
                .peers
                .get(peer)
                .is_some_and(|record| record.listed_at.iter().any(|(r, _)| r == room))
    }

    /// Meets `peer`, found in `room`'s records: its own record says which
    /// tracker introduces it; from then on the room's gossip treats it as
    /// a member.
    async fn meet_room_member(self, room: String, peer: PeerId) {
        let Some(link) = &self.inner.dht else {
            return;
        };
        match self.routes_of(link, peer).await {
            Ok(trackers) => self.input(Input::RoomMemberFound {
                room,
                peer,
                trackers,
            }),
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "a room member found on the DHT cannot be reached");
            }
        }
    }
}
