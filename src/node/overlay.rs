//! The node's side of room gossip (`crate::gossip`): one [`RoomGossip`] per
//! joined room, fed by the driver with the rooms' members (from the
//! trackers and from greetings), the neighbors' control messages and the
//! messages taken live; what they decide comes back as [`Effect`]s for the
//! driver to carry out (connections to keep or drop, control messages,
//! forwards, syncs). Private rooms of two (`@…`) are not gossiped: their
//! messages go straight to the one peer.

use std::collections::{HashMap, VecDeque};
use std::hash::{Hash, Hasher};
use std::time::Instant;

use crate::gossip::{Action, Control, GossipConfig, RoomGossip};
use crate::identity::PeerId;
use crate::protocol::{GossipControl, MessageId};

/// Control messages held for a peer until it may hear them, at most.
const HELD_PER_PEER: usize = 64;

/// What the driver must do for the rooms' gossip.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) enum Effect {
    /// Keep a connection to `peer`.
    Link(PeerId),
    /// No room needs a connection to `peer` any more.
    Unlink(PeerId),
    Control {
        to: PeerId,
        room: String,
        control: GossipControl,
    },
    Forward {
        to: PeerId,
        id: MessageId,
    },
    Sync {
        peer: PeerId,
    },
}

pub(super) struct Overlay {
    me: PeerId,
    config: GossipConfig,
    rooms: HashMap<String, RoomGossip<PeerId, MessageId>>,
    /// Control messages waiting for a gate to the peer, or for its proof
    /// of the room's password, oldest first.
    waiting: HashMap<PeerId, VecDeque<(String, GossipControl)>>,
    effects: VecDeque<Effect>,
}

pub(super) fn is_private(room: &str) -> bool {
    room.starts_with('@')
}

impl Overlay {
    pub fn new(me: PeerId, config: GossipConfig) -> Self {
        Self {
            me,
            config,
            rooms: HashMap::new(),
            waiting: HashMap::new(),
            effects: VecDeque::new(),
        }
    }

    fn room(&mut self, room: &str, now: Instant) -> &mut RoomGossip<PeerId, MessageId> {
        let (me, config) = (self.me, &self.config);
        self.rooms.entry(room.to_string()).or_insert_with(|| {
            // Members choose apart: the seed is this node's id and the room.
            let mut hasher = std::collections::hash_map::DefaultHasher::new();
            me.hash(&mut hasher);
            room.hash(&mut hasher);
            let config = GossipConfig {
                seed: config.seed ^ hasher.finish(),
                ..config.clone()
            };
            RoomGossip::new(me, config, now)
        })
    }

    /// `peer` is (or is no longer) a member of `room`.
    pub fn member(&mut self, room: &str, peer: PeerId, joined: bool, now: Instant) {
        if is_private(room) || peer == self.me {
            return;
        }
        if joined {
            self.room(room, now).handle_member_joined(peer, now);
        } else if let Some(gossip) = self.rooms.get_mut(room) {
            gossip.handle_member_left(peer, now);
        }
        self.collect(room);
    }

    /// This node left `room`: its links there go.
    pub fn left_room(&mut self, room: &str) {
        if let Some(gossip) = self.rooms.remove(room) {
            for peer in gossip.active().collect::<Vec<_>>() {
                if !self.needs(&peer) {
                    self.effects.push_back(Effect::Unlink(peer));
                }
            }
        }
    }

    /// No connection to `peer` could be made, or its connection ended.
    pub fn unreachable(&mut self, peer: PeerId, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            if let Some(gossip) = self.rooms.get_mut(&room) {
                gossip.handle_unreachable(peer, now);
            }
            self.collect(&room);
        }
    }

    /// A control message from `from` (a member of `room`, proven there).
    pub fn control(&mut self, room: &str, from: PeerId, control: GossipControl, now: Instant) {
        if is_private(room) {
            return;
        }
        self.room(room, now)
            .handle_control(from, from_wire(control), now);
        self.collect(room);
    }

    /// This node wrote `id` in `room`.
    pub fn publish(&mut self, room: &str, id: MessageId, now: Instant) {
        self.room(room, now).publish(id);
        self.collect(room);
    }

    /// Message `id` of `room` arrived live from `from` and was new here.
    pub fn received(&mut self, room: &str, id: MessageId, from: PeerId) {
        if let Some(gossip) = self.rooms.get_mut(room) {
            gossip.handle_message(id, from);
        }
        self.collect(room);
    }

    /// Whether any room keeps a link (or a request) to `peer`.
    pub fn needs(&self, peer: &PeerId) -> bool {
        self.rooms.values().any(|g| g.active().any(|p| p == *peer))
    }

    /// Whether `peer` is a member of a room this node gossips in.
    pub fn knows(&self, peer: &PeerId) -> bool {
        self.rooms.values().any(|g| g.members().contains(peer))
    }

    pub fn poll_timeout(&self) -> Option<Instant> {
        self.rooms.values().map(RoomGossip::poll_timeout).min()
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        let rooms: Vec<String> = self.rooms.keys().cloned().collect();
        for room in rooms {
            if let Some(gossip) = self.rooms.get_mut(&room) {
                if gossip.poll_timeout() <= now {
                    gossip.handle_timeout(now);
                }
            }
            self.collect(&room);
        }
    }

    /// Keeps `control` for `to` until it may be sent ([`Overlay::take_waiting`]).
    pub fn hold(&mut self, to: PeerId, room: String, control: GossipControl) {
        let queue = self.waiting.entry(to).or_default();
        if queue.len() >= HELD_PER_PEER {
            queue.pop_front();
        }
        queue.push_back((room, control));
    }

    /// What waits for `peer`, oldest first.
    pub fn take_waiting(&mut self, peer: &PeerId) -> Vec<(String, GossipControl)> {
        self.waiting.remove(peer).map(Vec::from).unwrap_or_default()
    }

    pub fn poll_effect(&mut self) -> Option<Effect> {
        self.effects.pop_front()
    }

    /// Moves `room`'s actions into the effects.
    fn collect(&mut self, room: &str) {
        let Some(gossip) = self.rooms.get_mut(room) else {
            return;
        };
        let mut actions = Vec::new();
        while let Some(action) = gossip.poll_action() {
            actions.push(action);
        }
        for action in actions {
            let effect = match action {
                Action::Control { to, control } => Effect::Control {
                    to,
                    room: room.to_string(),
                    control: to_wire(control),
                },
                Action::Forward { to, id } => Effect::Forward { to, id },
                Action::Sync { peer } => Effect::Sync { peer },
                Action::Link(peer) => Effect::Link(peer),
                Action::Unlink(peer) => {
                    if self.needs(&peer) {
                        continue;
                    }
                    Effect::Unlink(peer)
                }
            };
            self.effects.push_back(effect);
        }
    }
}

fn to_wire(control: Control) -> GossipControl {
    match control {
        Control::Neighbor { lonely } => GossipControl::Neighbor { lonely },
        Control::Accept => GossipControl::Accept,
        Control::Refuse => GossipControl::Refuse,
        Control::Disconnect => GossipControl::Disconnect,
    }
}

fn from_wire(control: GossipControl) -> Control {
    match control {
        GossipControl::Neighbor { lonely } => Control::Neighbor { lonely },
        GossipControl::Accept => Control::Accept,
        GossipControl::Refuse => Control::Refuse,
        GossipControl::Disconnect => Control::Disconnect,
    }
}
