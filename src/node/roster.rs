//! Who is who, as every part of the node sees it: the peers this node knows
//! (name, rooms, status, proofs, gate), the rooms it joined, and the
//! passwords and keys of its password rooms. Services read it through their
//! [`super::context::Context`]; each keeps its own state to itself.

use std::collections::{BTreeSet, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use super::gate::Gate;
use super::names::KnownNames;
use super::{dm_room, manager, path_of, PathKind, PeerStatus};
use crate::identity::PeerId;
use crate::pake::Secret;
use crate::room_key::RoomKey;

pub(super) struct PeerRecord {
    pub name: String,
    pub status: PeerStatus,
    pub candidates: Vec<SocketAddr>,
    pub rooms: BTreeSet<String>,
    /// Which tracker lists the peer in which room: it has left a room only
    /// when no tracker lists it there any more.
    pub listed_at: BTreeSet<(String, manager::TrackerIx)>,
    /// Password rooms the peer has proven the password of, on this connection.
    pub verified: BTreeSet<String>,
    /// Failed password proofs on this connection.
    pub auth_failures: u32,
    /// When this node last heard from the peer.
    pub last_seen: Option<Instant>,
    pub gate: Option<Arc<Gate>>,
    /// When this node last asked a tracker to introduce it to the peer.
    pub asked_at: Option<Instant>,
}

impl PeerRecord {
    pub fn new(name: String) -> Self {
        Self {
            name,
            status: PeerStatus::Known,
            candidates: Vec::new(),
            rooms: BTreeSet::new(),
            listed_at: BTreeSet::new(),
            verified: BTreeSet::new(),
            auth_failures: 0,
            last_seen: None,
            gate: None,
            asked_at: None,
        }
    }

    fn has_open_gate(&self) -> bool {
        self.gate.as_ref().is_some_and(|g| g.is_open())
    }
}

#[derive(Default)]
pub(super) struct Roster {
    pub peers: HashMap<PeerId, PeerRecord>,
    /// Joined rooms in the order joined; plain lines go to the last.
    pub rooms: Vec<String>,
    /// Passwords of this node's password rooms.
    pub passwords: HashMap<String, Secret>,
    /// The keys of the same rooms, that tag their messages.
    pub room_keys: HashMap<String, RoomKey>,
    /// Set once shutdown began: nothing new starts.
    pub closing: bool,
    /// Names of peers met in earlier runs.
    pub known_names: KnownNames,
    /// The peer plain lines go to privately (`/switch PEER`), instead of
    /// the current room.
    pub talking_to: Option<PeerId>,
    /// Connections this node closed as duplicates of another to the same
    /// peer ([`super::Node::duplicates_closed`]).
    pub duplicates_closed: u64,
}

/// A peer joining or leaving one of this node's rooms.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(super) struct MemberChange {
    pub room: String,
    pub joined: bool,
}

impl Roster {
    pub fn open_gate_count(&self) -> usize {
        self.peers.values().filter(|r| r.has_open_gate()).count()
    }

    /// Whether `record`'s peer counts as a member of `room`: it says it is
    /// in the room and, for a password room, has proven the password.
    pub fn is_member(&self, record: &PeerRecord, room: &str) -> bool {
        // Private rooms of two are never joined, only derived (`dm_room`).
        !room.starts_with('@')
            && record.rooms.contains(room)
            && (!self.passwords.contains_key(room) || record.verified.contains(room))
    }

    /// Whether `peer` takes part in `room` as seen from `me`: a member, or
    /// the other one of a private room of two.
    pub fn takes_part(&self, me: &PeerId, peer: &PeerId, room: &str) -> bool {
        room == dm_room(me, peer)
            || self
                .peers
                .get(peer)
                .is_some_and(|record| self.is_member(record, room))
    }

    /// Whether `peer`, with no connection of its own, is reached by the
    /// gossip of a room both are members of: this node holds a link to
    /// another member of that room.
    pub fn reached_through_room(&self, peer: &PeerId) -> bool {
        let Some(record) = self.peers.get(peer) else {
            return false;
        };
        !record.has_open_gate()
            && self
                .rooms
                .iter()
                .filter(|room| self.is_member(record, room))
                .any(|room| {
                    self.peers.iter().any(|(id, other)| {
                        id != peer && other.has_open_gate() && self.is_member(other, room)
                    })
                })
    }

    /// Rooms `me` and `peer` are both in, their private room included.
    pub fn shared_rooms(&self, me: &PeerId, peer: &PeerId) -> Vec<String> {
        let Some(record) = self.peers.get(peer) else {
            return Vec::new();
        };
        let mut rooms: Vec<String> = self
            .rooms
            .iter()
            .filter(|room| self.is_member(record, room))
            .cloned()
            .collect();
        rooms.push(dm_room(me, peer));
        rooms
    }

    /// Password rooms this node is in that `peer` claims to be in and has
    /// not proven yet.
    pub fn unproven_password_rooms(&self, peer: &PeerId) -> Vec<String> {
        let Some(record) = self.peers.get(peer) else {
            return Vec::new();
        };
        self.passwords
            .keys()
            .filter(|room| {
                self.rooms.contains(*room)
                    && record.rooms.contains(*room)
                    && !record.verified.contains(*room)
            })
            .cloned()
            .collect()
    }

    /// Whether messages for `room` may come from `via`: any peer for an
    /// open room, only one that proved the password for a password room.
    pub fn may_speak_for(&self, via: &PeerId, room: &str) -> bool {
        !self.passwords.contains_key(room)
            || self
                .peers
                .get(via)
                .is_some_and(|r| r.verified.contains(room))
    }

    /// The peer's name as the user knows it: from this run, else from an
    /// earlier one, else its short id.
    pub fn name_of(&self, peer: &PeerId) -> String {
        match self.peers.get(peer) {
            Some(record) if record.name != peer.short() => record.name.clone(),
            _ => self.remembered_name(peer),
        }
    }

    /// The name remembered from an earlier run, else the short id: what a
    /// record starts with before the peer says its name.
    pub fn remembered_name(&self, peer: &PeerId) -> String {
        self.known_names
            .get(peer)
            .cloned()
            .unwrap_or_else(|| peer.short())
    }

    /// Sets the rooms `peer` says it is in, with those a tracker lists it
    /// in (a peer greets with the rooms it had joined when its hello left,
    /// and may be listed in one more by the time it arrives); returns the
    /// changes in rooms this node is in, for join and leave notices. A peer
    /// this node knows nothing of yet changes nothing.
    pub fn set_peer_rooms(
        &mut self,
        peer: &PeerId,
        mut rooms: BTreeSet<String>,
    ) -> Vec<MemberChange> {
        let Some(record) = self.peers.get_mut(peer) else {
            return Vec::new();
        };
        rooms.extend(record.listed_at.iter().map(|(room, _)| room.clone()));
        let old = std::mem::replace(&mut record.rooms, rooms);
        let new = &record.rooms;
        self.rooms
            .iter()
            .filter(|room| !room.starts_with('@'))
            .filter_map(|room| match (old.contains(room), new.contains(room)) {
                (false, true) => Some(MemberChange {
                    room: room.clone(),
                    joined: true,
                }),
                (true, false) => Some(MemberChange {
                    room: room.clone(),
                    joined: false,
                }),
                _ => None,
            })
            .collect()
    }

    pub fn has_open_gate(&self, peer: &PeerId) -> bool {
        self.open_gate(peer).is_some()
    }

    /// The peer's gate, if it is open.
    pub fn open_gate(&self, peer: &PeerId) -> Option<Arc<Gate>> {
        self.peers.get(peer)?.gate.clone().filter(|g| g.is_open())
    }

    /// Every open gate.
    pub fn open_gates(&self) -> Vec<Arc<Gate>> {
        self.peers
            .values()
            .filter_map(|r| r.gate.clone())
            .filter(|g| g.is_open())
            .collect()
    }

    /// An open gate on a direct path: nothing left to punch for.
    pub fn has_direct_gate(&self, peer: &PeerId) -> bool {
        self.open_gate(peer)
            .is_some_and(|g| path_of(&g.connection) == PathKind::Direct)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn roster_with(peer: PeerId, rooms: &[&str]) -> Roster {
        let mut record = PeerRecord::new("alice".into());
        record.rooms = rooms.iter().map(|r| r.to_string()).collect();
        let mut roster = Roster {
            rooms: vec!["lobby".into(), "vault".into()],
            ..Roster::default()
        };
        roster
            .passwords
            .insert("vault".into(), Secret::new("password"));
        roster.peers.insert(peer, record);
        roster
    }

    #[test]
    fn a_password_room_is_shared_only_once_proven() {
        let me = Identity::generate().unwrap().peer_id();
        let alice = Identity::generate().unwrap().peer_id();
        let mut roster = roster_with(alice, &["lobby", "vault", "elsewhere"]);
        let private = dm_room(&me, &alice);
        assert_eq!(
            roster.shared_rooms(&me, &alice),
            vec!["lobby".to_string(), private.clone()]
        );
        assert_eq!(
            roster.unproven_password_rooms(&alice),
            vec!["vault".to_string()]
        );
        assert!(!roster.may_speak_for(&alice, "vault"));
        assert!(!roster.takes_part(&me, &alice, "vault"));
        if let Some(record) = roster.peers.get_mut(&alice) {
            record.verified.insert("vault".into());
        }
        assert!(roster.may_speak_for(&alice, "vault"));
        assert!(roster.takes_part(&me, &alice, "vault"));
        assert!(roster.unproven_password_rooms(&alice).is_empty());
        assert_eq!(roster.shared_rooms(&me, &alice).len(), 3);
        // The private room of two is theirs whatever rooms they are in,
        // and nobody else's.
        assert!(roster.takes_part(&me, &alice, &private));
        let bob = Identity::generate().unwrap().peer_id();
        assert!(!roster.takes_part(&me, &bob, &private));
        assert!(!roster.is_member(&roster.peers[&alice], &private));
    }

    #[test]
    fn an_unknown_peer_shares_nothing_and_is_named_by_its_short_id() {
        let me = Identity::generate().unwrap().peer_id();
        let stranger = Identity::generate().unwrap().peer_id();
        let roster = Roster::default();
        assert!(roster.shared_rooms(&me, &stranger).is_empty());
        assert_eq!(roster.name_of(&stranger), stranger.short());
        assert!(!roster.has_open_gate(&stranger));
    }

    #[test]
    fn a_peer_met_in_an_earlier_run_is_named_by_its_remembered_name() {
        let stranger = Identity::generate().unwrap().peer_id();
        let mut roster = Roster::default();
        let _ = roster.known_names.remember(stranger, "carol");
        assert_eq!(roster.name_of(&stranger), "carol");
        // A record made before the peer said its name starts with the short id.
        roster
            .peers
            .insert(stranger, PeerRecord::new(stranger.short()));
        assert_eq!(roster.name_of(&stranger), "carol");
        roster.peers.insert(stranger, PeerRecord::new("caz".into()));
        assert_eq!(roster.name_of(&stranger), "caz");
    }

    #[test]
    fn a_hello_sent_before_its_join_was_done_does_not_take_a_listed_room_away() {
        let me = Identity::generate().unwrap().peer_id();
        let alice = Identity::generate().unwrap().peer_id();
        let mut roster = roster_with(alice, &["lobby"]);
        if let Some(record) = roster.peers.get_mut(&alice) {
            record.listed_at.insert(("lobby".into(), 0));
        }
        assert!(roster.set_peer_rooms(&alice, BTreeSet::new()).is_empty());
        assert!(roster.takes_part(&me, &alice, "lobby"));
        // Once no tracker lists it there, its own word decides.
        if let Some(record) = roster.peers.get_mut(&alice) {
            record.listed_at.clear();
        }
        let changes = roster.set_peer_rooms(&alice, BTreeSet::new());
        assert_eq!(
            changes,
            vec![MemberChange {
                room: "lobby".into(),
                joined: false
            }]
        );
    }

    #[test]
    fn joins_and_leaves_are_reported_only_for_rooms_this_node_is_in() {
        let alice = Identity::generate().unwrap().peer_id();
        let mut roster = roster_with(alice, &["lobby"]);
        let rooms = |list: &[&str]| list.iter().map(|r| r.to_string()).collect();
        let changes = roster.set_peer_rooms(&alice, rooms(&["lobby", "vault", "elsewhere"]));
        assert_eq!(
            changes,
            vec![MemberChange {
                room: "vault".into(),
                joined: true
            }]
        );
        assert!(roster
            .set_peer_rooms(&alice, rooms(&["lobby", "vault"]))
            .is_empty());
        let changes = roster.set_peer_rooms(&alice, rooms(&["vault"]));
        assert_eq!(
            changes,
            vec![MemberChange {
                room: "lobby".into(),
                joined: false
            }]
        );
        let stranger = Identity::generate().unwrap().peer_id();
        assert!(roster
            .set_peer_rooms(&stranger, rooms(&["lobby"]))
            .is_empty());
    }
}
