//! LAN discovery without a tracker: a node multicasts a small beacon on its
//! LAN ([`GROUP`], [`PORT`], TTL 1) saying which peer it is, which port its
//! gate socket listens on, and — hidden — which rooms it is in. Nodes that
//! hear a beacon naming one of their rooms dial its sender, pinned by the
//! peer id the beacon gives: a forged beacon leads to a handshake that
//! fails, never to a connection with someone else.
//!
//! Room names never travel in clear. Each beacon carries a fresh random
//! nonce and, per room, `BLAKE3-keyed(key(room), nonce)` cut to 16 bytes,
//! where `key(room)` is BLAKE3's key derivation from the room's name. A
//! listener recomputes the tag for each of its own rooms; anyone else sees
//! unlinkable random bytes (it can test a guessed room name, as anyone who
//! can guess a room's name can join it).
//!
//! This module is the sans-IO part: the beacon's format and the
//! [`Discovery`] state machine, which decides when to send a beacon and
//! whom to dial, on a caller-supplied clock. `node::lan` drives it.
//!
//! Bounds: one beacon per [`BEACON_INTERVAL`], plus at most one early answer
//! per [`ANSWER_GAP`] when a new peer appears; at most [`MAX_DIALS`] dials
//! per [`BEACON_INTERVAL`], and one peer is dialed again only after
//! [`REDIAL_AFTER`]; at most [`MAX_ROOMS`] rooms per beacon.

use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant};

use crate::identity::{PeerId, PEER_ID_LEN};

/// The multicast group beacons go to (administratively scoped, RFC 2365).
pub const GROUP: Ipv4Addr = Ipv4Addr::new(239, 255, 71, 80);
/// The UDP port beacons go to.
pub const PORT: u16 = 7071;
/// A node beacons this often.
pub const BEACON_INTERVAL: Duration = Duration::from_secs(5);
/// Least time between two early answers to new peers.
pub const ANSWER_GAP: Duration = Duration::from_secs(1);
/// A peer dialed is not dialed again before this (unless it is forgotten).
pub const REDIAL_AFTER: Duration = Duration::from_secs(30);
/// Most dials started per [`BEACON_INTERVAL`], whatever the beacons say.
pub const MAX_DIALS: usize = 8;
/// Most rooms one beacon names.
pub const MAX_ROOMS: usize = 16;
/// Most peers remembered (the least recently heard is forgotten first).
const MAX_PEERS: usize = 256;

const MAGIC: &[u8; 7] = b"PGLAN1\0";
const NONCE_LEN: usize = 16;
const TAG_LEN: usize = 16;
const HEADER_LEN: usize = MAGIC.len() + PEER_ID_LEN + 2 + NONCE_LEN + 1;
/// Largest beacon on the wire.
pub const MAX_BEACON_LEN: usize = HEADER_LEN + MAX_ROOMS * TAG_LEN;

/// The key a room's tags are made with.
fn room_key(room: &str) -> [u8; 32] {
    blake3::derive_key("punchgate 2026-12 lan beacon room tag", room.as_bytes())
}

fn tag(key: &[u8; 32], nonce: &[u8; NONCE_LEN]) -> [u8; TAG_LEN] {
    let hash = blake3::keyed_hash(key, nonce);
    let mut out = [0u8; TAG_LEN];
    out.copy_from_slice(&hash.as_bytes()[..TAG_LEN]);
    out
}

/// A decoded beacon.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Beacon {
    pub peer: PeerId,
    /// The sender's gate socket port (the address is the beacon's source).
    pub port: u16,
    nonce: [u8; NONCE_LEN],
    tags: Vec<[u8; TAG_LEN]>,
}

impl Beacon {
    /// A beacon from `peer` (gate port `port`) naming `rooms` (the first
    /// [`MAX_ROOMS`]) under a fresh `nonce`.
    pub fn new(peer: PeerId, port: u16, rooms: &[String], nonce: [u8; NONCE_LEN]) -> Self {
        let tags = rooms
            .iter()
            .take(MAX_ROOMS)
            .map(|room| tag(&room_key(room), &nonce))
            .collect();
        Self {
            peer,
            port,
            nonce,
            tags,
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(HEADER_LEN + self.tags.len() * TAG_LEN);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(self.peer.as_bytes());
        out.extend_from_slice(&self.port.to_be_bytes());
        out.extend_from_slice(&self.nonce);
        out.push(self.tags.len() as u8);
        for tag in &self.tags {
            out.extend_from_slice(tag);
        }
        out
    }

    /// `None` for anything that is not exactly a well-formed beacon.
    pub fn decode(bytes: &[u8]) -> Option<Self> {
        let rest = bytes.strip_prefix(MAGIC.as_slice())?;
        let (peer, rest) = rest.split_first_chunk::<PEER_ID_LEN>()?;
        let (port, rest) = rest.split_first_chunk::<2>()?;
        let (nonce, rest) = rest.split_first_chunk::<NONCE_LEN>()?;
        let (&count, rest) = rest.split_first()?;
        let count = usize::from(count);
        if count > MAX_ROOMS || rest.len() != count * TAG_LEN {
            return None;
        }
        let port = u16::from_be_bytes(*port);
        if port == 0 {
            return None;
        }
        let tags = rest
            .chunks_exact(TAG_LEN)
            .filter_map(|chunk| chunk.try_into().ok())
            .collect();
        Some(Self {
            peer: PeerId::from_bytes(*peer),
            port,
            nonce: *nonce,
            tags,
        })
    }

    /// True if the beacon names one of `rooms`.
    pub fn shares_a_room(&self, rooms: &[String]) -> bool {
        rooms
            .iter()
            .any(|room| self.tags.contains(&tag(&room_key(room), &self.nonce)))
    }
}

/// What the driver should do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Multicast a beacon now.
    Beacon,
    /// Dial `peer` at `addr`, pinned.
    Dial { peer: PeerId, addr: SocketAddr },
}

/// The decisions of LAN discovery, on the caller's clock.
pub struct Discovery {
    me: PeerId,
    /// The next periodic beacon.
    next_beacon: Instant,
    /// An early answer to a new peer, if one is due.
    answer: Option<Instant>,
    last_answer: Option<Instant>,
    /// When each peer was last heard and last dialed.
    peers: HashMap<PeerId, (Instant, Option<Instant>)>,
    /// Dials started in the current window, and when it began.
    window: (Instant, usize),
}

impl Discovery {
    /// Beacons at once, then every [`BEACON_INTERVAL`].
    pub fn new(me: PeerId, now: Instant) -> Self {
        Self {
            me,
            next_beacon: now,
            answer: None,
            last_answer: None,
            peers: HashMap::new(),
            window: (now, 0),
        }
    }

    /// When [`Discovery::poll`] has something to do next.
    pub fn next_wakeup(&self) -> Instant {
        self.answer
            .map_or(self.next_beacon, |at| at.min(self.next_beacon))
    }

    /// A beacon, if one is due (periodic, or an answer; one covers both).
    pub fn poll(&mut self, now: Instant) -> Option<Action> {
        if now >= self.next_beacon {
            self.next_beacon = now + BEACON_INTERVAL;
            self.answer = None;
            return Some(Action::Beacon);
        }
        match self.answer {
            Some(at) if now >= at => {
                self.answer = None;
                self.last_answer = Some(now);
                Some(Action::Beacon)
            }
            _ => None,
        }
    }

    /// A beacon `beacon` came from `from`; `shared` says whether it names one
    /// of this node's rooms, `connected` whether a gate to its peer is open.
    /// Of two nodes the one with the smaller id dials; the other answers
    /// with an early beacon so that the dialer hears it soon.
    pub fn on_beacon(
        &mut self,
        now: Instant,
        from: IpAddr,
        beacon: &Beacon,
        shared: bool,
        connected: bool,
    ) -> Option<Action> {
        if beacon.peer == self.me || !shared {
            return None;
        }
        let new = !self.peers.contains_key(&beacon.peer);
        if new && self.peers.len() >= MAX_PEERS {
            let oldest = self
                .peers
                .iter()
                .min_by_key(|(_, (heard, _))| *heard)
                .map(|(peer, _)| *peer);
            if let Some(oldest) = oldest {
                self.peers.remove(&oldest);
            }
        }
        let entry = self.peers.entry(beacon.peer).or_insert((now, None));
        entry.0 = now;
        if connected {
            return None;
        }
        if self.me.as_bytes() > beacon.peer.as_bytes() {
            // The other side dials: make sure it hears this node soon.
            if new {
                let earliest = self.last_answer.map_or(now, |at| at + ANSWER_GAP).max(now);
                self.answer = Some(self.answer.map_or(earliest, |at| at.min(earliest)));
            }
            return None;
        }
        if entry.1.is_some_and(|dialed| now < dialed + REDIAL_AFTER) {
            return None;
        }
        if now >= self.window.0 + BEACON_INTERVAL {
            self.window = (now, 0);
        }
        if self.window.1 >= MAX_DIALS {
            return None;
        }
        self.window.1 += 1;
        entry.1 = Some(now);
        Some(Action::Dial {
            peer: beacon.peer,
            addr: SocketAddr::new(from, beacon.port),
        })
    }

    /// The connection to `peer` ended: it may be dialed again at once.
    pub fn forget(&mut self, peer: &PeerId) {
        self.peers.remove(peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    fn ids() -> (PeerId, PeerId) {
        let a = Identity::generate().unwrap().peer_id();
        let b = Identity::generate().unwrap().peer_id();
        if a.as_bytes() < b.as_bytes() {
            (a, b)
        } else {
            (b, a)
        }
    }

    fn rooms(names: &[&str]) -> Vec<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    const LAN: IpAddr = IpAddr::V4(Ipv4Addr::new(10, 0, 1, 3));

    #[test]
    fn beacons_round_trip_and_hide_room_names() {
        let (a, _) = ids();
        let beacon = Beacon::new(a, 4000, &rooms(&["lab", "secret plans"]), [7; 16]);
        let bytes = beacon.encode();
        assert!(bytes.len() <= MAX_BEACON_LEN);
        let back = Beacon::decode(&bytes).unwrap();
        assert_eq!(back, beacon);
        assert!(back.shares_a_room(&rooms(&["other", "lab"])));
        assert!(!back.shares_a_room(&rooms(&["Lab", "secret"])));
        for name in ["lab", "secret plans", "secret"] {
            assert!(!bytes.windows(name.len()).any(|w| w == name.as_bytes()));
        }
        // Another nonce, other tags: two beacons of one room do not match.
        let again = Beacon::new(a, 4000, &rooms(&["lab"]), [8; 16]);
        assert_ne!(again.tags[0], beacon.tags[0]);
    }

    #[test]
    fn malformed_beacons_are_refused() {
        let (a, _) = ids();
        let good = Beacon::new(a, 4000, &rooms(&["lab"]), [1; 16]).encode();
        assert!(Beacon::decode(&good[..good.len() - 1]).is_none());
        assert!(Beacon::decode(&[good.as_slice(), &[0]].concat()).is_none());
        assert!(Beacon::decode(b"PGPROBE").is_none());
        let mut too_many = good[..HEADER_LEN].to_vec();
        *too_many.last_mut().unwrap() = (MAX_ROOMS + 1) as u8;
        too_many.extend(std::iter::repeat_n(0u8, (MAX_ROOMS + 1) * TAG_LEN));
        assert!(Beacon::decode(&too_many).is_none());
        let zero_port = Beacon::new(a, 0, &rooms(&["lab"]), [1; 16]).encode();
        assert!(Beacon::decode(&zero_port).is_none());
        let many = rooms(&["r"; 40]);
        assert_eq!(Beacon::new(a, 1, &many, [1; 16]).tags.len(), MAX_ROOMS);
    }

    #[test]
    fn beacons_are_periodic() {
        let (a, _) = ids();
        let start = Instant::now();
        let mut discovery = Discovery::new(a, start);
        assert_eq!(discovery.poll(start), Some(Action::Beacon));
        assert_eq!(discovery.poll(start + Duration::from_secs(1)), None);
        assert_eq!(discovery.next_wakeup(), start + BEACON_INTERVAL);
        assert_eq!(
            discovery.poll(start + BEACON_INTERVAL),
            Some(Action::Beacon)
        );
    }

    #[test]
    fn the_smaller_id_dials_once_and_the_larger_answers_early() {
        let (small, large) = ids();
        let start = Instant::now();
        let mut dialer = Discovery::new(small, start);
        let mut answerer = Discovery::new(large, start);
        dialer.poll(start);
        answerer.poll(start);
        let from_large = Beacon::new(large, 4001, &rooms(&["lab"]), [2; 16]);
        let from_small = Beacon::new(small, 4000, &rooms(&["lab"]), [3; 16]);
        let t = start + Duration::from_millis(200);
        assert_eq!(
            dialer.on_beacon(t, LAN, &from_large, true, false),
            Some(Action::Dial {
                peer: large,
                addr: SocketAddr::new(LAN, 4001)
            })
        );
        // Heard again before REDIAL_AFTER: no second dial.
        assert_eq!(
            dialer.on_beacon(t + BEACON_INTERVAL, LAN, &from_large, true, false),
            None
        );
        let later = t + REDIAL_AFTER;
        assert!(dialer
            .on_beacon(later, LAN, &from_large, true, false)
            .is_some());
        // The larger id never dials, but answers a new peer at once...
        assert_eq!(answerer.on_beacon(t, LAN, &from_small, true, false), None);
        assert_eq!(answerer.next_wakeup(), t);
        assert_eq!(answerer.poll(t), Some(Action::Beacon));
        assert_eq!(answerer.next_wakeup(), start + BEACON_INTERVAL);
        // ...a peer it knows only on schedule...
        assert_eq!(answerer.on_beacon(t, LAN, &from_small, true, false), None);
        assert_eq!(answerer.next_wakeup(), start + BEACON_INTERVAL);
        // ...and another new one no sooner than ANSWER_GAP after its answer.
        let (third, _) = ids();
        let mut big = Discovery::new(PeerId::from_bytes([0xff; PEER_ID_LEN]), start);
        big.poll(start);
        let first = Beacon::new(third, 1, &rooms(&["lab"]), [4; 16]);
        let second = Beacon::new(small, 2, &rooms(&["lab"]), [5; 16]);
        big.on_beacon(t, LAN, &first, true, false);
        assert_eq!(big.poll(t), Some(Action::Beacon));
        big.on_beacon(t, LAN, &second, true, false);
        assert_eq!(big.next_wakeup(), t + ANSWER_GAP);
        assert_eq!(big.poll(t + ANSWER_GAP - Duration::from_millis(1)), None);
        assert_eq!(big.poll(t + ANSWER_GAP), Some(Action::Beacon));
    }

    #[test]
    fn own_beacons_strangers_and_connected_peers_are_not_dialed() {
        let (small, large) = ids();
        let start = Instant::now();
        let mut discovery = Discovery::new(small, start);
        let own = Beacon::new(small, 4000, &rooms(&["lab"]), [1; 16]);
        let theirs = Beacon::new(large, 4000, &rooms(&["lab"]), [1; 16]);
        assert_eq!(discovery.on_beacon(start, LAN, &own, true, false), None);
        assert_eq!(discovery.on_beacon(start, LAN, &theirs, false, false), None);
        assert_eq!(discovery.on_beacon(start, LAN, &theirs, true, true), None);
        assert!(discovery
            .on_beacon(start, LAN, &theirs, true, false)
            .is_some());
        discovery.forget(&large);
        assert!(discovery
            .on_beacon(start, LAN, &theirs, true, false)
            .is_some());
    }

    #[test]
    fn dials_are_bounded_per_interval_whatever_the_beacons_say() {
        let start = Instant::now();
        let me = PeerId::from_bytes([0; PEER_ID_LEN]);
        let mut discovery = Discovery::new(me, start);
        let flood: Vec<Beacon> = (1..=40u8)
            .map(|i| {
                Beacon::new(
                    PeerId::from_bytes([i; PEER_ID_LEN]),
                    4000,
                    &rooms(&["lab"]),
                    [i; 16],
                )
            })
            .collect();
        let dials = |discovery: &mut Discovery, at: Instant| {
            flood
                .iter()
                .filter(|b| discovery.on_beacon(at, LAN, b, true, false).is_some())
                .count()
        };
        assert_eq!(dials(&mut discovery, start), MAX_DIALS);
        assert_eq!(dials(&mut discovery, start + Duration::from_secs(1)), 0);
        assert_eq!(dials(&mut discovery, start + BEACON_INTERVAL), MAX_DIALS);
    }
}
