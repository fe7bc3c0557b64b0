//! Parked registrations: the tracker's side of the doorbell
//! (`crate::doorbell`). A parked peer keeps its registration (its rooms,
//! its findability, its place under the tracker's and its address's limits)
//! without a connection: it knocks on the tracker's second port now and
//! then, and the tracker answers, rings it when a peer asks to be
//! introduced, and holds those introductions until it resumes.
//!
//! Pure, like the rest of the registry: the caller passes `now`, sends the
//! datagrams returned, and calls [`Registry::expire_parked`] and
//! [`Registry::poll_rings`] every [`SWEEP_EVERY`] or so.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

#[cfg(test)]
use super::Introduction;
use super::{offered, Generation, Outbox, Registry};
use crate::doorbell;
use crate::identity::PeerId;
use crate::protocol::{
    DoorId, DoorbellTag, Member, ParkTicket, Presence, ProbeMessage, TrackerRefusal,
};

/// How often a parked node knocks, by default: well inside the 30 s that
/// the shortest-lived NAT mappings for UDP commonly last.
pub const KNOCK_EVERY: Duration = Duration::from_secs(25);
/// Introductions held for one parked peer at most; the oldest goes first.
pub const MAX_HELD: usize = 16;
/// A held introduction older than this is dropped: the peer that asked has
/// given up its attempt by then.
pub const HELD_FOR: Duration = Duration::from_secs(10);
/// Rings per held introduction at most, one every [`RING_EVERY`]: a lost
/// ring is sent again, and the next knock's answer rings too.
pub const RINGS: u8 = 5;
pub const RING_EVERY: Duration = Duration::from_secs(1);
/// How often the caller should expire and ring: rings go out within this
/// of when they are due.
pub const SWEEP_EVERY: Duration = Duration::from_millis(250);
/// Knocks that may be missed (lost, or late) before a parked registration
/// is dropped, plus [`EXPIRY_SLACK`].
const MISSED_KNOCKS: u32 = 3;
const EXPIRY_SLACK: Duration = Duration::from_secs(5);

/// What the tracker holds of a parked registration, besides the
/// registration itself.
pub(super) struct Parked {
    ticket: ParkTicket,
    /// What its knocks call it ([`doorbell::door_of`] the ticket).
    door: DoorId,
    /// Where the last genuine knock came from (at first, where the
    /// connection did): where answers and rings go.
    knock_from: SocketAddr,
    /// The highest knock number seen: a knock must exceed it.
    last_seq: Option<u64>,
    last_knock: Instant,
    /// Introductions asked for while parked, oldest first.
    held: VecDeque<Held>,
    rings_left: u8,
    next_ring: Instant,
    /// When it was last rung: at most one ring every [`RING_EVERY`].
    last_ring: Option<Instant>,
}

/// An introduction to a parked peer, waiting for it to resume.
struct Held {
    attempt: u64,
    dialer: PeerId,
    at: Instant,
}

/// A held introduction handed back on resume: `dialer` asked for
/// `acceptor` (the resumed peer) under `attempt`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeldIntroduction {
    pub attempt: u64,
    pub dialer: Member,
    pub acceptor: Member,
}

/// What [`Registry::hold_introduction`] did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Holding {
    /// The acceptor is not parked: introduce it as usual.
    NotParked,
    /// Held; ring now if there is a ring (none if the peer was rung less
    /// than [`RING_EVERY`] ago: [`Registry::poll_rings`] rings it next).
    Held(Option<Ring>),
}

/// A datagram for the tracker's second port to send.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ring {
    pub to: SocketAddr,
    pub message: ProbeMessage,
}

/// Compares two tickets in time independent of where they differ.
fn same_ticket(a: &ParkTicket, b: &ParkTicket) -> bool {
    a.0.iter().zip(&b.0).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

impl Parked {
    fn fresh_held(&mut self, now: Instant) {
        self.held
            .retain(|h| now.saturating_duration_since(h.at) < HELD_FOR);
    }

    /// The ring to the knock address, answering the last knock's number.
    fn ring(&self) -> Ring {
        let seq = self.last_seq.unwrap_or(0);
        Ring {
            to: self.knock_from,
            message: doorbell::answer(&self.ticket, seq, true),
        }
    }
}

impl Registry {
    /// How often parked nodes are told to knock (default [`KNOCK_EVERY`]);
    /// a parked registration not knocked for three times this plus 5 s is
    /// dropped.
    pub fn set_knock_every(&mut self, every: Duration) {
        self.knock_every = every;
    }

    pub fn knock_every(&self) -> Duration {
        self.knock_every
    }

    /// Parked registrations now.
    pub fn parked_count(&self) -> usize {
        self.parked.len()
    }

    /// Forgets `peer_id`'s parked registration, door and all.
    pub(super) fn unpark(&mut self, peer_id: &PeerId) -> Option<Parked> {
        let parked = self.parked.remove(peer_id)?;
        self.doors.remove(&parked.door);
        Some(parked)
    }

    pub fn is_parked(&self, peer_id: &PeerId) -> bool {
        self.parked.contains_key(peer_id)
    }

    /// Parks the registration `generation` of `peer_id`, whose connection is
    /// about to close: it keeps its rooms and its place, under a new
    /// generation so that the closing connection's `unregister` does not
    /// remove it, and without its relay stream. Guests cannot park.
    pub fn park(
        &mut self,
        peer_id: PeerId,
        generation: Generation,
        now: Instant,
    ) -> Result<(ParkTicket, Generation), TrackerRefusal> {
        let registration = self
            .peers
            .get_mut(&peer_id)
            .filter(|r| r.generation == generation)
            .ok_or(TrackerRefusal::NotRegistered)?;
        if registration.presence == Presence::Guest {
            return Err(TrackerRefusal::GuestOnly);
        }
        if registration.relaying {
            registration.relaying = false;
            self.sources.close_relay(registration.source);
        }
        self.next_generation += 1;
        registration.generation = self.next_generation;
        let ticket = ParkTicket::random();
        let door = doorbell::door_of(&ticket);
        self.doors.insert(door, peer_id);
        self.parked.insert(
            peer_id,
            Parked {
                ticket,
                door,
                knock_from: registration.member.reflexive,
                last_seq: None,
                last_knock: now,
                held: VecDeque::new(),
                rings_left: 0,
                next_ring: now,
                last_ring: None,
            },
        );
        Ok((ticket, self.next_generation))
    }

    /// A knock on `door` from `from`: if genuine (its tag is right under
    /// the ticket of the registration parked behind that door) and newer
    /// than the last, keeps the registration and returns the answer to send
    /// back to `from`, ringing while introductions are held. Anything else
    /// is ignored: no answer, nothing changed.
    pub fn knock(
        &mut self,
        door: &DoorId,
        seq: u64,
        tag: &DoorbellTag,
        from: SocketAddr,
        now: Instant,
    ) -> Option<ProbeMessage> {
        let peer = self.doors.get(door)?;
        let parked = self.parked.get_mut(peer)?;
        if parked.last_seq.is_some_and(|last| seq <= last)
            || !doorbell::knock_is_genuine(&parked.ticket, seq, tag)
        {
            return None;
        }
        parked.last_seq = Some(seq);
        parked.last_knock = now;
        parked.knock_from = from;
        parked.fresh_held(now);
        let ring = !parked.held.is_empty();
        Some(doorbell::answer(&parked.ticket, seq, ring))
    }

    /// `dialer` was introduced to the parked `acceptor` under `attempt`
    /// ([`Self::introduce_at`]): the introduction waits for `acceptor` to
    /// resume, and the first ring is returned to send, unless the peer was
    /// rung within [`RING_EVERY`] (however many ask, a parked peer is rung
    /// at most once a second).
    pub fn hold_introduction(
        &mut self,
        acceptor: PeerId,
        attempt: u64,
        dialer: PeerId,
        now: Instant,
    ) -> Holding {
        let Some(parked) = self.parked.get_mut(&acceptor) else {
            return Holding::NotParked;
        };
        parked.fresh_held(now);
        parked.held.retain(|h| h.dialer != dialer);
        if parked.held.len() >= MAX_HELD {
            parked.held.pop_front();
        }
        parked.held.push_back(Held {
            attempt,
            dialer,
            at: now,
        });
        self.ringing.insert(acceptor);
        let rung_lately = parked
            .last_ring
            .is_some_and(|at| now.saturating_duration_since(at) < RING_EVERY);
        if rung_lately {
            parked.rings_left = RINGS;
            return Holding::Held(None);
        }
        parked.rings_left = RINGS - 1;
        parked.next_ring = now + RING_EVERY;
        parked.last_ring = Some(now);
        Holding::Held(Some(parked.ring()))
    }

    /// The rings due by `now`: each parked peer with introductions held
    /// is rung every [`RING_EVERY`], [`RINGS`] times per introduction.
    pub fn poll_rings(&mut self, now: Instant) -> Vec<Ring> {
        let mut rings = Vec::new();
        let parked = &mut self.parked;
        self.ringing.retain(|peer| {
            let Some(parked) = parked.get_mut(peer) else {
                return false;
            };
            parked.fresh_held(now);
            if parked.held.is_empty() || parked.rings_left == 0 {
                return false;
            }
            if now >= parked.next_ring {
                rings.push(parked.ring());
                parked.rings_left -= 1;
                parked.next_ring = now + RING_EVERY;
                parked.last_ring = Some(now);
            }
            parked.rings_left > 0
        });
        rings
    }

    /// Takes back the parked registration of `peer_id` for a new
    /// connection seen from `reflexive`, if `ticket` is its ticket and the
    /// connection comes from the same source (IPv4 address or IPv6 /64)
    /// whose limits it counts under; else [`TrackerRefusal::NotParked`] and
    /// the node registers afresh. Returns the new generation and the
    /// introductions held for it that are still fresh and whose dialer is
    /// still registered.
    pub fn resume(
        &mut self,
        peer_id: PeerId,
        ticket: &ParkTicket,
        reflexive: SocketAddr,
        now: Instant,
    ) -> Result<(Generation, Vec<HeldIntroduction>), TrackerRefusal> {
        let matches = self
            .parked
            .get(&peer_id)
            .is_some_and(|p| same_ticket(&p.ticket, ticket));
        let same_source = self
            .peers
            .get(&peer_id)
            .is_some_and(|r| r.source == super::SourceKey::of(reflexive.ip()));
        if !matches || !same_source {
            return Err(TrackerRefusal::NotParked);
        }
        let mut parked = self.unpark(&peer_id).ok_or(TrackerRefusal::NotParked)?;
        let registration = self
            .peers
            .get_mut(&peer_id)
            .ok_or(TrackerRefusal::NotParked)?;
        self.ringing.remove(&peer_id);
        self.next_generation += 1;
        registration.generation = self.next_generation;
        registration.member.reflexive = reflexive;
        offered::keep_candidates(&mut registration.member.local_addrs, &reflexive);
        parked.fresh_held(now);
        let acceptor = registration.member.clone();
        // Introductions whose dialer went away since went with it.
        let still: Vec<Held> = parked
            .held
            .into_iter()
            .filter(|h| registration.introduced.contains(&h.dialer))
            .collect();
        let held = still
            .into_iter()
            .filter_map(|h| {
                let dialer = self.peers.get(&h.dialer)?.member.clone();
                Some(HeldIntroduction {
                    attempt: h.attempt,
                    dialer,
                    acceptor: acceptor.clone(),
                })
            })
            .collect();
        Ok((self.next_generation, held))
    }

    /// A parked node behind `door` says it is going away: if the leave is
    /// genuine, its registration is dropped as a closed connection's is,
    /// and the events telling its rooms are returned. Anything else is
    /// ignored.
    pub fn leave_parked(&mut self, door: &DoorId, tag: &DoorbellTag) -> Option<Outbox> {
        let peer = *self.doors.get(door)?;
        let parked = self.parked.get(&peer)?;
        if !doorbell::leave_is_genuine(&parked.ticket, tag) {
            return None;
        }
        let generation = self.peers.get(&peer)?.generation;
        let outbox = self.unregister(peer, generation);
        self.unpark(&peer);
        Some(outbox)
    }

    /// Drops, as a lost connection would be, every parked registration not
    /// knocked for three knock intervals and 5 s more; returns the events
    /// telling their rooms.
    pub fn expire_parked(&mut self, now: Instant) -> Outbox {
        let grace = self.knock_every * MISSED_KNOCKS + EXPIRY_SLACK;
        let expired: Vec<PeerId> = self
            .parked
            .iter()
            .filter(|(_, p)| now.saturating_duration_since(p.last_knock) > grace)
            .map(|(peer, _)| *peer)
            .collect();
        let mut outbox = Outbox::new();
        for peer in expired {
            if let Some(generation) = self.peers.get(&peer).map(|r| r.generation) {
                outbox.extend(self.unregister(peer, generation));
            }
            // unregister drops it from `parked`; a parked entry without a
            // registration would be a bug, but is not kept either.
            self.unpark(&peer);
        }
        outbox
    }
}

#[cfg(test)]
#[path = "parked_tests.rs"]
mod tests;
