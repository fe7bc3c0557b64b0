//! The tracker's state: registered peers and rooms, with their limits,
//! tracker-wide and per source address ([`super::per_address`]).
//! Pure: no sockets, no clock of its own. Every change returns the events to
//! push and to whom; the server in [`super::server`] delivers them.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use super::offered;
use super::per_address::{SourceKey, Sources};
use crate::identity::PeerId;
use crate::protocol::{
    validate_label, Member, NatReport, Presence, RelayRefusal, TrackerEvent, TrackerRefusal,
    MAX_NAME_LEN, MAX_ROOM_LEN,
};

/// The tracker's limits. Defaults suit a small public tracker on one core.
///
/// The per-address limits count everything the peers of one source address
/// hold together (an IPv4 address, or an IPv6 /64: see
/// [`super::per_address`]), so that identities, which are free, cannot
/// exhaust the tracker-wide limits from one machine. Their defaults leave a
/// crowd behind one NAT workable (an office, a classroom, the 60 nodes of
/// `tests/big_room.rs` on 127.0.0.1) while it takes at least 40 addresses to
/// fill the tracker. A carrier-grade NAT that puts more than 256 users of one
/// tracker behind one address needs the operator to raise them; docs/SECURITY.md
/// has the trade-off.
#[derive(Clone, Debug)]
pub struct TrackerLimits {
    /// Registered peers at once. Default 10 000.
    pub max_peers: u32,
    /// Non-empty rooms at once. Default 10 000 (a room costs well under a
    /// KiB; the per-address limit is what keeps them from one source).
    pub max_rooms: u32,
    /// Members of one room. Default 256.
    pub max_room_members: u32,
    /// Rooms one peer may be in. Default 16.
    pub max_rooms_per_peer: u32,
    /// Requests per second per peer on average. Default 20.
    pub requests_per_second: u32,
    /// Requests one peer may send in a burst. Default 40.
    pub request_burst: u32,
    /// Registered peers from one source address at once. Default 256.
    pub max_peers_per_address: u32,
    /// Rooms that exist only because of peers from one source address
    /// (every member is from there). Default 256. Only the creation of a
    /// room is refused: a room that becomes one address's when the others
    /// leave is kept.
    pub max_rooms_per_address: u32,
    /// Relay streams of peers from one source address at once. Default 256
    /// (a node opens one when it registers, so this is at most the peers).
    pub max_relay_streams_per_address: u32,
    /// Bytes per second the relay forwards for all peers of one source
    /// address together. Default 10 MB/s: a tenth of the relay's default
    /// total.
    pub relay_bytes_per_second_per_address: u32,
    /// Bytes the peers of one source address may send through the relay in
    /// a burst. Default 2 MiB; at least one largest packet.
    pub relay_burst_per_address: u32,
    /// Guests ([`Presence::Guest`]) registered at once, also counted as
    /// peers. Default 1000.
    pub max_guests: u32,
    /// Peers one guest registration may be introduced to. Default 4.
    pub guest_introductions: u32,
}

impl Default for TrackerLimits {
    fn default() -> Self {
        Self {
            max_peers: 10_000,
            max_rooms: 10_000,
            max_room_members: 256,
            max_rooms_per_peer: 16,
            requests_per_second: 20,
            request_burst: 40,
            max_peers_per_address: 256,
            max_rooms_per_address: 256,
            max_relay_streams_per_address: 256,
            relay_bytes_per_second_per_address: 10_000_000,
            relay_burst_per_address: 2 << 20,
            max_guests: 1000,
            guest_introductions: 4,
        }
    }
}

/// Distinguishes successive registrations of one peer id, so the cleanup of
/// an old connection never removes the registration of a newer one.
pub type Generation = u64;

struct Registration {
    generation: Generation,
    member: Member,
    /// Where its connection comes from: what its per-address limits count.
    source: SourceKey,
    /// Whether it has a relay stream open (counted under `source`).
    relaying: bool,
    presence: Presence,
    rooms: BTreeSet<String>,
    /// Peers this one was introduced to (either way): the only ones the
    /// relay forwards its packets to. At most every member of its rooms.
    introduced: HashSet<PeerId>,
    /// Introductions it asked for within [`CROSSING_WINDOW`], by the peer
    /// asked for: the attempt and when (at most what its request rate
    /// allows in the window).
    led: HashMap<PeerId, (u64, Instant)>,
}

/// How long after introducing A to B (A dialing) a request from B for A is
/// answered with that same attempt instead of a second one: B asked before
/// the introduction reached it (both picked the other at about the same
/// time). Covers the introduction's delay (half the difference of the two
/// round trips) and B's request on its way, with room to spare; a request
/// that late is taken as a new attempt.
pub const CROSSING_WINDOW: Duration = Duration::from_secs(3);

/// What a `Connect` request becomes ([`Registry::introduce_at`]).
// Made once per request and taken apart at once: not worth boxing.
#[allow(clippy::large_enum_variant)]
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Introduction {
    /// A new attempt: `dialer` (who asked) and `acceptor` are introduced to
    /// each other.
    New {
        attempt: u64,
        dialer: Member,
        acceptor: Member,
    },
    /// The peer asked for the asker moments ago: that attempt, on its way
    /// to both already, answers this request too (one attempt per pair).
    Crossed { attempt: u64 },
}

/// Events to push: (recipient, event).
pub type Outbox = Vec<(PeerId, TrackerEvent)>;

/// A room's members, and how many come from each source.
#[derive(Default)]
struct Room {
    members: BTreeSet<PeerId>,
    sources: BTreeMap<SourceKey, u32>,
}

impl Room {
    /// The source the room exists because of: the one all members are from.
    fn owner(&self) -> Option<SourceKey> {
        let mut sources = self.sources.keys();
        match (sources.next(), sources.next()) {
            (Some(only), None) => Some(*only),
            _ => None,
        }
    }

    fn insert(&mut self, peer_id: PeerId, source: SourceKey) {
        if self.members.insert(peer_id) {
            *self.sources.entry(source).or_default() += 1;
        }
    }

    fn remove(&mut self, peer_id: &PeerId, source: SourceKey) {
        if self.members.remove(peer_id) {
            if let Some(count) = self.sources.get_mut(&source) {
                *count -= 1;
                if *count == 0 {
                    self.sources.remove(&source);
                }
            }
        }
    }
}

#[derive(Default)]
pub struct Registry {
    limits: TrackerLimits,
    peers: HashMap<PeerId, Registration>,
    rooms: BTreeMap<String, Room>,
    sources: Sources,
    next_generation: Generation,
    /// Registrations that are [`Presence::Guest`].
    guests: u32,
    /// The registrations parked without a connection ([`parked`]).
    parked: HashMap<PeerId, parked::Parked>,
    /// Whose parked registration each door names (`ProbeMessage::Knock`).
    doors: HashMap<crate::protocol::DoorId, PeerId>,
    /// Parked peers with rings still to send ([`Self::poll_rings`]).
    ringing: HashSet<PeerId>,
    /// How often a parked node knocks ([`Self::set_knock_every`]).
    knock_every: Duration,
}

impl Registry {
    pub fn new(limits: TrackerLimits) -> Self {
        Self {
            limits,
            knock_every: parked::KNOCK_EVERY,
            ..Self::default()
        }
    }

    pub fn peer_count(&self) -> usize {
        self.peers.len()
    }

    pub fn room_count(&self) -> usize {
        self.rooms.len()
    }

    /// Registers `peer_id` as a [`Presence::Member`] (see
    /// [`Self::register_as`]).
    pub fn register(
        &mut self,
        peer_id: PeerId,
        name: String,
        reflexive: SocketAddr,
        local_addrs: Vec<SocketAddr>,
    ) -> Result<(Generation, Outbox), TrackerRefusal> {
        self.register_as(peer_id, name, reflexive, local_addrs, Presence::Member)
    }

    /// Registers `peer_id` whose connection comes from `reflexive` (the
    /// source address its per-address limits count under). A peer already
    /// registered (a restart before its old connection timed out) replaces
    /// its old registration, which leaves all its rooms. A guest counts as
    /// a peer too, and against [`TrackerLimits::max_guests`].
    pub fn register_as(
        &mut self,
        peer_id: PeerId,
        name: String,
        reflexive: SocketAddr,
        mut local_addrs: Vec<SocketAddr>,
        presence: Presence,
    ) -> Result<(Generation, Outbox), TrackerRefusal> {
        validate_label("name", &name, MAX_NAME_LEN).map_err(TrackerRefusal::InvalidName)?;
        let replaces_guest = self
            .peers
            .get(&peer_id)
            .is_some_and(|r| r.presence == Presence::Guest);
        if presence == Presence::Guest && !replaces_guest && self.guests >= self.limits.max_guests {
            return Err(TrackerRefusal::TooManyGuests {
                limit: self.limits.max_guests,
            });
        }
        let source = SourceKey::of(reflexive.ip());
        let old = self.peers.get(&peer_id).map(|r| (r.generation, r.source));
        match old {
            // The old registration's place is taken over.
            Some((_, old_source)) if old_source == source => {}
            _ => {
                let peers = self.sources.peers_of(source);
                if peers >= self.limits.max_peers_per_address {
                    return Err(TrackerRefusal::TooManyPeersFromAddress {
                        limit: self.limits.max_peers_per_address,
                    });
                }
            }
        }
        let mut outbox = Outbox::new();
        if let Some((old, _)) = old {
            outbox = self.unregister(peer_id, old);
        } else if self.peers.len() >= self.limits.max_peers as usize {
            return Err(TrackerRefusal::TooManyPeers {
                limit: self.limits.max_peers,
            });
        }
        self.sources.admit_peer(source, &self.limits)?;
        offered::keep_candidates(&mut local_addrs, &reflexive);
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
                    nat: NatReport::default(),
                },
                source,
                relaying: false,
                presence,
                rooms: BTreeSet::new(),
                introduced: HashSet::new(),
                led: HashMap::new(),
            },
        );
        if presence == Presence::Guest {
            self.guests += 1;
        }
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
        self.unpark(&peer_id);
        self.ringing.remove(&peer_id);
        if let Some(gone) = self.peers.remove(&peer_id) {
            if gone.presence == Presence::Guest {
                self.guests = self.guests.saturating_sub(1);
            }
            if gone.relaying {
                self.sources.close_relay(gone.source);
            }
            self.sources.release_peer(gone.source);
            for other in gone.introduced {
                if let Some(other) = self.peers.get_mut(&other) {
                    other.introduced.remove(&peer_id);
                    // Its attempts died with it: a new registration's
                    // request is a new attempt.
                    other.led.remove(&peer_id);
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
        if registration.presence == Presence::Guest {
            return Err(TrackerRefusal::GuestOnly);
        }
        let member = registration.member.clone();
        let source = registration.source;
        if registration.rooms.contains(room) {
            return Ok((self.members_except(room, &peer_id), Outbox::new()));
        }
        if registration.rooms.len() >= self.limits.max_rooms_per_peer as usize {
            return Err(TrackerRefusal::TooManyRoomsForPeer {
                limit: self.limits.max_rooms_per_peer,
            });
        }
        match self.rooms.get(room) {
            None => {
                self.sources.may_create_room(source, &self.limits)?;
                if self.rooms.len() >= self.limits.max_rooms as usize {
                    return Err(TrackerRefusal::TooManyRooms {
                        limit: self.limits.max_rooms,
                    });
                }
            }
            Some(existing) if existing.members.len() >= self.limits.max_room_members as usize => {
                return Err(TrackerRefusal::RoomFull {
                    limit: self.limits.max_room_members,
                })
            }
            Some(_) => {}
        }
        let others = self.members_except(room, &peer_id);
        let entry = self.rooms.entry(room.to_string()).or_default();
        let owner_before = entry.owner();
        entry.insert(peer_id, source);
        let owner_after = entry.owner();
        self.sources.room_owner_changed(owner_before, owner_after);
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
        let source = registration.source;
        let mut outbox = Outbox::new();
        if let Some(existing) = self.rooms.get_mut(room) {
            let owner_before = existing.owner();
            existing.remove(&peer_id, source);
            let owner_after = existing.owner();
            self.sources.room_owner_changed(owner_before, owner_after);
            for other in existing.members.iter() {
                outbox.push((
                    *other,
                    TrackerEvent::Left {
                        room: room.to_string(),
                        peer_id,
                    },
                ));
            }
            if existing.members.is_empty() {
                self.rooms.remove(room);
            }
        }
        Ok(outbox)
    }

    /// The two peers to introduce to each other, if they share a room or
    /// `to` is [`Presence::Findable`] (a guest asking, within its
    /// [`TrackerLimits::guest_introductions`]). From now on the relay may
    /// carry packets between them.
    pub fn introduce(
        &mut self,
        from: PeerId,
        to: PeerId,
    ) -> Result<(Member, Member), TrackerRefusal> {
        let from_registration = self.registration(&from)?;
        let to_registration = self.peers.get(&to).ok_or(TrackerRefusal::UnknownPeer)?;
        if from_registration.rooms.is_disjoint(&to_registration.rooms) {
            let guest = from_registration.presence == Presence::Guest;
            if to_registration.presence != Presence::Findable {
                return Err(if guest {
                    TrackerRefusal::NotFindable
                } else {
                    TrackerRefusal::NoSharedRoom
                });
            }
            let limit = self.limits.guest_introductions;
            let known = from_registration.introduced.contains(&to);
            if guest && !known && from_registration.introduced.len() >= limit as usize {
                return Err(TrackerRefusal::TooManyGuestIntroductions { limit });
            }
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

    /// `from` asks to be introduced to `to`, with [`Self::introduce`]'s
    /// checks. If `to` asked for `from` within [`CROSSING_WINDOW`], that
    /// attempt answers ([`Introduction::Crossed`]); otherwise `fresh` is a
    /// new attempt that `from` dials.
    pub fn introduce_at(
        &mut self,
        from: PeerId,
        to: PeerId,
        fresh: u64,
        now: Instant,
    ) -> Result<Introduction, TrackerRefusal> {
        let (dialer, acceptor) = self.introduce(from, to)?;
        let recent = |at: &Instant| now.saturating_duration_since(*at) < CROSSING_WINDOW;
        let crossed = self
            .peers
            .get(&to)
            .and_then(|r| r.led.get(&from))
            .filter(|(_, at)| recent(at));
        if let Some((attempt, _)) = crossed {
            return Ok(Introduction::Crossed { attempt: *attempt });
        }
        if let Some(registration) = self.peers.get_mut(&from) {
            registration.led.retain(|_, (_, at)| recent(at));
            registration.led.insert(to, (fresh, now));
        }
        Ok(Introduction::New {
            attempt: fresh,
            dialer,
            acceptor,
        })
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

    /// Counts the relay stream of the registration `generation` of
    /// `peer_id` under its source address, unless that address has its
    /// limit of relay streams; the refusal is the reason to tell the node.
    /// Ends with [`Self::close_relay`] or with the registration.
    pub fn open_relay(&mut self, peer_id: PeerId, generation: Generation) -> Result<(), String> {
        let registration = self
            .peers
            .get_mut(&peer_id)
            .filter(|r| r.generation == generation)
            .ok_or_else(|| "register before opening the relay stream".to_string())?;
        if !registration.relaying {
            self.sources.open_relay(registration.source, &self.limits)?;
            registration.relaying = true;
        }
        Ok(())
    }

    /// The relay stream of that registration ended.
    pub fn close_relay(&mut self, peer_id: PeerId, generation: Generation) {
        if let Some(registration) = self
            .peers
            .get_mut(&peer_id)
            .filter(|r| r.generation == generation && r.relaying)
        {
            registration.relaying = false;
            self.sources.close_relay(registration.source);
        }
    }

    /// Takes `size` bytes from the relay budget of the source address of
    /// `peer_id` (shared by all its peers); false if that is spent, or the
    /// peer is gone.
    pub fn take_relay_bytes(&mut self, peer_id: &PeerId, size: u32, now: Instant) -> bool {
        let Some(registration) = self.peers.get(peer_id) else {
            return false;
        };
        self.sources
            .take_relay_bytes(registration.source, size, &self.limits, now)
    }

    /// `peer_id` reported how its NAT maps and filters; its introductions
    /// carry it from now on.
    pub fn note_nat(&mut self, peer_id: PeerId, nat: NatReport) -> Result<(), TrackerRefusal> {
        let registration = self
            .peers
            .get_mut(&peer_id)
            .ok_or(TrackerRefusal::NotRegistered)?;
        registration.member.nat = nat;
        Ok(())
    }

    /// The members of a room the peer is in, other than itself.
    pub fn members(&self, peer_id: PeerId, room: &str) -> Result<Vec<Member>, TrackerRefusal> {
        let registration = self.registration(&peer_id)?;
        if registration.presence == Presence::Guest {
            return Err(TrackerRefusal::GuestOnly);
        }
        if !registration.rooms.contains(room) {
            return Err(TrackerRefusal::NotInRoom(room.to_string()));
        }
        Ok(self.members_except(room, &peer_id))
    }

    /// A registered peer's port-mapped address changed: kept (first among
    /// its candidates) if it is on the peer's reflexive IP, else dropped.
    /// Returns what was kept.
    pub fn set_mapped(
        &mut self,
        peer_id: PeerId,
        addr: Option<SocketAddr>,
    ) -> Result<Option<SocketAddr>, TrackerRefusal> {
        let registration = self
            .peers
            .get_mut(&peer_id)
            .ok_or(TrackerRefusal::NotRegistered)?;
        let member = &mut registration.member;
        Ok(offered::replace_mapped(
            &mut member.local_addrs,
            &member.reflexive,
            addr,
        ))
    }

    fn members_except(&self, room: &str, peer_id: &PeerId) -> Vec<Member> {
        self.rooms
            .get(room)
            .into_iter()
            .flat_map(|existing| existing.members.iter())
            .filter(|id| *id != peer_id)
            .filter_map(|id| self.peers.get(id).map(|r| r.member.clone()))
            .collect()
    }
}

#[path = "parked.rs"]
pub mod parked;

#[cfg(test)]
#[path = "guest_tests.rs"]
mod guest_tests;

#[cfg(test)]
#[path = "registry_tests.rs"]
mod tests;
