//! The tracker's state: registered peers and rooms, with their limits.
//! Pure: no sockets. Every change returns the events to push and to whom;
//! the server in [`super::server`] delivers them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;

use crate::identity::PeerId;
use crate::protocol::{
    is_lan_candidate, validate_label, Member, RelayRefusal, TrackerEvent, TrackerRefusal,
    MAX_LOCAL_ADDRS, MAX_NAME_LEN, MAX_ROOM_LEN,
};

/// The tracker's limits. Defaults suit a small public tracker on one core.
#[derive(Clone, Debug)]
pub struct TrackerLimits {
    /// Registered peers at once. Default 10 000.
    pub max_peers: u32,
    /// Non-empty rooms at once. Default 1 000.
    pub max_rooms: u32,
    /// Members of one room. Default 256.
    pub max_room_members: u32,
    /// Rooms one peer may be in. Default 16.
    pub max_rooms_per_peer: u32,
    /// Requests per second per peer on average. Default 20.
    pub requests_per_second: u32,
    /// Requests one peer may send in a burst. Default 40.
    pub request_burst: u32,
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self {
            max_peers: 10_000,
            max_rooms: 1_000,
            max_room_members: 256,
            max_rooms_per_peer: 16,
            requests_per_second: 20,
            request_burst: 40,
        }
    }
}

/// Distinguishes successive registrations of one peer id, so the cleanup of
/// an old connection never removes the registration of a newer one.
pub type Generation = u64;

struct Registration {
    generation: Generation,
    member: Member,
    rooms: BTreeSet<String>,
    /// Peers this one was introduced to (either way): the only ones the
    /// relay forwards its packets to. At most every member of its rooms.
    introduced: HashSet<PeerId>,
}

/// Events to push: (recipient, event).
pub type Outbox = Vec<(PeerId, TrackerEvent)>;

#[derive(Default)]
pub struct Registry {
    limits: TrackerLimits,
    peers: HashMap<PeerId, Registration>,
    rooms: BTreeMap<String, BTreeSet<PeerId>>,
    next_generation: Generation,
}

impl Registry {
    pub fn new(limits: TrackerLimits) -> Self {
        Self {
            limits,
            ..Self::default()
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Registers `peer_id` seen at `reflexive`. A peer already registered (a
    /// restart before its old connection timed out) replaces its old
    /// registration, which leaves all its rooms.
    pub fn register(
        &mut self,
        peer_id: PeerId,
        name: String,
        reflexive: SocketAddr,
        mut local_addrs: Vec<SocketAddr>,
    ) -> Result<(Generation, Outbox), TrackerRefusal> {
        validate_label("name", &name, MAX_NAME_LEN).map_err(TrackerRefusal::InvalidName)?;
        let mut outbox = Outbox::new();
        if let Some(old) = self.peers.get(&peer_id).map(|r| r.generation) {
            outbox = self.unregister(peer_id, old);
        } else if self.peers.len() >= self.limits.max_peers as usize {
            return Err(TrackerRefusal::TooManyPeers {
                limit: self.limits.max_peers,
            });
        }
        local_addrs.retain(is_lan_candidate);
        local_addrs.truncate(MAX_LOCAL_ADDRS);
        self.next_generation += 1;
        let generation = self.next_generation;
        self.peers.insert(
            peer_id,
            Registration {
                generation,
                member: Member {
                    peer_id,
                    name,
                    reflexive,
                    local_addrs,
                },
                rooms: BTreeSet::new(),
                introduced: HashSet::new(),
            },
        );
        Ok((generation, outbox))
    }

    /// Removes a registration (its connection died), if it is still the
    /// current one, and tells its rooms.
    pub fn unregister(&mut self, peer_id: PeerId, generation: Generation) -> Outbox {
        let current = self.peers.get(&peer_id).map(|r| r.generation);
        if current != Some(generation) {
            return Outbox::new();
        }
        let rooms: Vec<String> = self.peers[&peer_id].rooms.iter().cloned().collect();
        let mut outbox = Outbox::new();
        for room in rooms {
            outbox.extend(self.leave(peer_id, &room).unwrap_or_default());
        }
        if let Some(gone) = self.peers.remove(&peer_id) {
            for other in gone.introduced {
                if let Some(other) = self.peers.get_mut(&other) {
                    other.introduced.remove(&peer_id);
                }
            }
        }
        outbox
    }

    fn registration(&self, peer_id: &PeerId) -> Result<&Registration, TrackerRefusal> {
        self.peers.get(peer_id).ok_or(TrackerRefusal::NotRegistered)
    }

    /// Adds the peer to `room`; returns the other members, and the events
    /// telling them.
    pub fn join(
        &mut self,
        peer_id: PeerId,
        room: &str,
    ) -> Result<(Vec<Member>, Outbox), TrackerRefusal> {
        validate_label("room", room, MAX_ROOM_LEN).map_err(TrackerRefusal::InvalidName)?;
        let registration = self.registration(&peer_id)?;
        let member = registration.member.clone();
        if registration.rooms.contains(room) {
            return Ok((self.members_except(room, &peer_id), Outbox::new()));
        }
        if registration.rooms.len() >= self.limits.max_rooms_per_peer as usize {
            return Err(TrackerRefusal::TooManyRoomsForPeer {
                limit: self.limits.max_rooms_per_peer,
            });
        }
        match self.rooms.get(room) {
            None if self.rooms.len() >= self.limits.max_rooms as usize => {
                return Err(TrackerRefusal::TooManyRooms {
                    limit: self.limits.max_rooms,
                })
            }
            Some(members) if members.len() >= self.limits.max_room_members as usize => {
                return Err(TrackerRefusal::RoomFull {
                    limit: self.limits.max_room_members,
                })
            }
            _ => {}
        }
        let others = self.members_except(room, &peer_id);
        self.rooms
            .entry(room.to_string())
            .or_default()
            .insert(peer_id);
        if let Some(registration) = self.peers.get_mut(&peer_id) {
            registration.rooms.insert(room.to_string());
        }
        let outbox = others
            .iter()
            .map(|other| {
                (
                    other.peer_id,
                    TrackerEvent::Joined {
                        room: room.to_string(),
                        member: member.clone(),
                    },
                )
            })
            .collect();
        Ok((others, outbox))
    }

    /// Removes the peer from `room` and tells the members left.
    pub fn leave(&mut self, peer_id: PeerId, room: &str) -> Result<Outbox, TrackerRefusal> {
        let registration = self
            .peers
            .get_mut(&peer_id)
            .ok_or(TrackerRefusal::NotRegistered)?;
        if !registration.rooms.remove(room) {
            return Err(TrackerRefusal::NotInRoom(room.to_string()));
        }
        let mut outbox = Outbox::new();
        if let Some(members) = self.rooms.get_mut(room) {
            members.remove(&peer_id);
            for other in members.iter() {
                outbox.push((
                    *other,
                    TrackerEvent::Left {
                        room: room.to_string(),
                        peer_id,
                    },
                ));
            }
            if members.is_empty() {
                self.rooms.remove(room);
            }
        }
        Ok(outbox)
    }

    /// The two members to introduce to each other, if they share a room.
    /// From now on the relay may carry packets between them.
    pub fn introduce(
        &mut self,
        from: PeerId,
        to: PeerId,
    ) -> Result<(Member, Member), TrackerRefusal> {
        let from_registration = self.registration(&from)?;
        let to_registration = self.peers.get(&to).ok_or(TrackerRefusal::UnknownPeer)?;
        if from_registration.rooms.is_disjoint(&to_registration.rooms) {
            return Err(TrackerRefusal::NoSharedRoom);
        }
        let members = (
            from_registration.member.clone(),
            to_registration.member.clone(),
        );
        for (a, b) in [(from, to), (to, from)] {
            if let Some(registration) = self.peers.get_mut(&a) {
                registration.introduced.insert(b);
            }
        }
        Ok(members)
    }

    /// Whether the relay may carry packets from `from` to `to`: both are
    /// registered, and they share a room or the tracker introduced them to
    /// each other. Nobody can spray packets at peers it could not have
    /// asked an introduction to. A shared room is enough so that a
    /// connection relayed by another tracker that went away can move here
    /// without a new introduction.
    pub fn may_relay(&self, from: &PeerId, to: &PeerId) -> Result<(), RelayRefusal> {
        let Some(sender) = self.peers.get(from) else {
            return Err(RelayRefusal::NotIntroduced);
        };
        let Some(receiver) = self.peers.get(to) else {
            return Err(RelayRefusal::Offline);
        };
        let introduced = sender.introduced.contains(to);
        if !introduced && sender.rooms.is_disjoint(&receiver.rooms) {
            return Err(RelayRefusal::NotIntroduced);
        }
        Ok(())
    }

    /// The members of a room the peer is in, other than itself.
    pub fn members(&self, peer_id: PeerId, room: &str) -> Result<Vec<Member>, TrackerRefusal> {
        if !self.registration(&peer_id)?.rooms.contains(room) {
            return Err(TrackerRefusal::NotInRoom(room.to_string()));
        }
        Ok(self.members_except(room, &peer_id))
    }

    fn members_except(&self, room: &str, peer_id: &PeerId) -> Vec<Member> {
        self.rooms
            .get(room)
            .into_iter()
            .flatten()
            .filter(|id| *id != peer_id)
            .filter_map(|id| self.peers.get(id).map(|r| r.member.clone()))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn id() -> PeerId {
        Identity::generate().unwrap().peer_id()
    }

    fn addr(port: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], port))
    }

    #[test]
    fn join_tells_members_and_leave_or_death_tells_them_again() {
        let mut registry = Registry::new(TrackerLimits::default());
        let (a, b) = (id(), id());
        let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
        registry.register(b, "b".into(), addr(2), vec![]).unwrap();
        let (members, outbox) = registry.join(a, "r").unwrap();
        assert!(members.is_empty() && outbox.is_empty());
        let (members, outbox) = registry.join(b, "r").unwrap();
        assert_eq!(members.len(), 1);
        assert_eq!(members[0].peer_id, a);
        assert_eq!(outbox.len(), 1);
        assert_eq!(outbox[0].0, a);
        let outbox = registry.unregister(a, gen_a);
        assert_eq!(
            outbox,
            vec![(
                b,
                TrackerEvent::Left {
                    room: "r".into(),
                    peer_id: a
                }
            )]
        );
        assert_eq!(registry.members(b, "r").unwrap(), vec![]);
    }

    #[test]
    fn introductions_need_a_shared_room() {
        let mut registry = Registry::new(TrackerLimits::default());
        let (a, b, c) = (id(), id(), id());
        for (peer, port) in [(a, 1), (b, 2), (c, 3)] {
            registry
                .register(peer, "x".into(), addr(port), vec![])
                .unwrap();
        }
        registry.join(a, "r").unwrap();
        registry.join(b, "r").unwrap();
        registry.join(c, "other").unwrap();
        let (from, to) = registry.introduce(a, b).unwrap();
        assert_eq!((from.peer_id, to.peer_id), (a, b));
        assert_eq!(
            registry.introduce(a, c).unwrap_err(),
            TrackerRefusal::NoSharedRoom
        );
        assert_eq!(
            registry.introduce(a, id()).unwrap_err(),
            TrackerRefusal::UnknownPeer
        );
    }

    #[test]
    fn relaying_needs_an_introduction_or_a_shared_room_and_ends_with_the_registration() {
        let mut registry = Registry::new(TrackerLimits::default());
        let (a, b, c) = (id(), id(), id());
        let mut generations = Vec::new();
        for (peer, port, room) in [(a, 1, "r"), (b, 2, "r"), (c, 3, "elsewhere")] {
            let (generation, _) = registry
                .register(peer, "x".into(), addr(port), vec![])
                .unwrap();
            generations.push(generation);
            registry.join(peer, room).unwrap();
        }
        // A shared room is enough, both ways.
        assert_eq!(registry.may_relay(&a, &b), Ok(()));
        assert_eq!(registry.may_relay(&b, &a), Ok(()));
        // Strangers are refused.
        assert_eq!(registry.may_relay(&a, &c), Err(RelayRefusal::NotIntroduced));
        assert_eq!(registry.may_relay(&c, &b), Err(RelayRefusal::NotIntroduced));
        // An introduction outlives the room.
        registry.introduce(a, b).unwrap();
        registry.leave(b, "r").unwrap();
        registry.join(b, "other").unwrap();
        assert_eq!(registry.may_relay(&a, &b), Ok(()));
        assert_eq!(registry.may_relay(&b, &a), Ok(()));
        registry.unregister(b, generations[1]);
        assert_eq!(registry.may_relay(&a, &b), Err(RelayRefusal::Offline));
        // A new registration of b starts without introductions.
        registry.register(b, "b".into(), addr(4), vec![]).unwrap();
        assert_eq!(registry.may_relay(&b, &a), Err(RelayRefusal::NotIntroduced));
    }

    #[test]
    fn stale_connection_cleanup_keeps_the_newer_registration() {
        let mut registry = Registry::new(TrackerLimits::default());
        let a = id();
        let (old, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
        let (new, _) = registry.register(a, "a".into(), addr(2), vec![]).unwrap();
        registry.join(a, "r").unwrap();
        assert!(registry.unregister(a, old).is_empty());
        assert_eq!(registry.peer_count(), 1);
        registry.unregister(a, new);
        assert_eq!(registry.peer_count(), 0);
        assert_eq!(registry.room_count(), 0);
    }

    #[test]
    fn limits_are_refusals_that_name_the_limit() {
        let limits = TrackerLimits {
            max_peers: 2,
            max_rooms: 1,
            max_room_members: 1,
            max_rooms_per_peer: 1,
            ..TrackerLimits::default()
        };
        let mut registry = Registry::new(limits);
        let (a, b, c) = (id(), id(), id());
        registry.register(a, "a".into(), addr(1), vec![]).unwrap();
        registry.register(b, "b".into(), addr(2), vec![]).unwrap();
        assert_eq!(
            registry
                .register(c, "c".into(), addr(3), vec![])
                .unwrap_err(),
            TrackerRefusal::TooManyPeers { limit: 2 }
        );
        registry.join(a, "r").unwrap();
        assert_eq!(
            registry.join(b, "r").unwrap_err(),
            TrackerRefusal::RoomFull { limit: 1 }
        );
        assert_eq!(
            registry.join(b, "s").unwrap_err(),
            TrackerRefusal::TooManyRooms { limit: 1 }
        );
        assert_eq!(
            registry.join(a, "s").unwrap_err(),
            TrackerRefusal::TooManyRoomsForPeer { limit: 1 }
        );
        assert_eq!(
            registry.join(c, "r").unwrap_err(),
            TrackerRefusal::NotRegistered
        );
        assert!(matches!(
            registry.register(c, "".into(), addr(3), vec![]),
            Err(TrackerRefusal::InvalidName(_))
        ));
    }
}
