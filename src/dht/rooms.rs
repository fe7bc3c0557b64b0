//! When to announce this node in its rooms on the DHT, when to look the
//! rooms up, and which members found there to meet: a sans-IO state
//! machine with no clock and no socket, like [`super::publisher`].
//!
//! Per room (keyed by whatever the caller uses to tell rooms apart — a
//! room whose password changes is another room): an announcement shortly
//! after joining, refreshed well before entries go stale
//! ([`super::room_record::MAX_AGE_SECS`]), tried again soon after a write
//! conflict (another member wrote the slot at the same time) and with
//! backoff after a failure; a lookup on joining, then at growing
//! intervals. Members found are met at most a few per lookup,
//! newest entry first, skipping those the caller already reaches and those
//! met recently.
//!
//! Driving it: [`RoomFinder::handle_rooms`] whenever the rooms may have
//! changed; at [`RoomFinder::poll_timeout`], take every
//! [`RoomFinder::poll_task`] and carry it out, reporting with
//! [`RoomFinder::handle_announced`] / [`RoomFinder::handle_looked`]; then
//! meet every peer [`RoomFinder::poll_meet`] returns.

use std::collections::{HashMap, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

use crate::identity::PeerId;

/// How the finder is tuned. Defaults in [`RoomsConfig::default`].
#[derive(Clone, Debug)]
pub struct RoomsConfig {
    /// From joining to the first announcement (the first lookup is at
    /// once). Default 1 s: the node's own record goes out about then, so
    /// finders can route to it.
    pub settle: Duration,
    /// How often an announcement is renewed. Default 20 min: entries are
    /// stale after an hour, so two renewals may fail.
    pub refresh: Duration,
    /// After a write conflict, the next try comes within this (random, so
    /// two writers part). Default 3 s.
    pub conflict_retry: Duration,
    /// The first retry after a failure; doubles up to `retry_max`.
    /// Default 5 s, at most 5 min.
    pub retry: Duration,
    pub retry_max: Duration,
    /// The gap after the first lookup; doubles after each up to
    /// `look_max`. Default 10 s, at most 10 min.
    pub look_first: Duration,
    pub look_max: Duration,
    /// Members met per lookup, at most. Default 4: the room's gossip
    /// brings the rest.
    pub meet_per_look: usize,
    /// A member met is not met again through the DHT before this.
    /// Default 1 min.
    pub meet_again: Duration,
    /// Seed of the conflict jitter.
    pub seed: u64,
}

impl Default for RoomsConfig {
    fn default() -> Self {
        Self {
            settle: Duration::from_secs(1),
            refresh: Duration::from_secs(20 * 60),
            conflict_retry: Duration::from_secs(3),
            retry: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
            look_first: Duration::from_secs(10),
            look_max: Duration::from_secs(600),
            meet_per_look: 4,
            meet_again: Duration::from_secs(60),
            seed: 0x9e37_79b9_7f4a_7c15,
        }
    }
}

/// Work to carry out for a room.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RoomTask<K> {
    /// Write this node's entry into its slot (read, merge, write back).
    Announce(K),
    /// Read every slot of the room.
    Look(K),
    /// Remove this node's entry (the room was left).
    Withdraw(K),
}

/// How an announcement went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Announced {
    Done,
    /// Another member wrote the slot meanwhile: read again and retry.
    Conflict,
    Failed,
}

/// A member found in a room's records.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Found {
    pub peer: PeerId,
    /// When its entry was written (Unix seconds): newer first.
    pub at: u64,
}

#[derive(Debug)]
struct Room {
    announce_at: Option<Instant>,
    announcing: bool,
    announce_failures: u32,
    look_at: Option<Instant>,
    looking: bool,
    look_gap: Duration,
}

/// Rooms kept withdrawing at most (a node that leaves many rooms at once).
const MAX_WITHDRAWALS: usize = 64;

#[derive(Debug)]
pub struct RoomFinder<K> {
    config: RoomsConfig,
    /// Whether this node announces itself (it can be reached: it has
    /// trackers of its own) or only looks.
    announces: bool,
    rooms: HashMap<K, Room>,
    /// Rooms left whose entry is still to be removed, since when.
    withdrawals: VecDeque<(K, Instant)>,
    met: HashMap<PeerId, Instant>,
    meets: VecDeque<(K, PeerId)>,
    rng: u64,
}

impl<K: Clone + Eq + Hash> RoomFinder<K> {
    pub fn new(config: RoomsConfig, announces: bool) -> Self {
        let rng = config.seed | 1;
        Self {
            config,
            announces,
            rooms: HashMap::new(),
            withdrawals: VecDeque::new(),
            met: HashMap::new(),
            meets: VecDeque::new(),
            rng,
        }
    }

    /// The rooms this node is in now. A new one is looked up at once and
    /// announced `settle` from now; one no longer listed is withdrawn (if it was
    /// announced) and forgotten.
    pub fn handle_rooms(&mut self, rooms: &[K], now: Instant) {
        let gone: Vec<K> = self
            .rooms
            .keys()
            .filter(|key| !rooms.contains(key))
            .cloned()
            .collect();
        for key in gone {
            self.rooms.remove(&key);
            self.meets.retain(|(room, _)| *room != key);
            if self.announces && self.withdrawals.len() < MAX_WITHDRAWALS {
                self.withdrawals.push_back((key, now));
            }
        }
        for key in rooms {
            self.withdrawals.retain(|(k, _)| k != key);
            if self.rooms.contains_key(key) {
                continue;
            }
            let at = now + self.config.settle;
            self.rooms.insert(
                key.clone(),
                Room {
                    announce_at: self.announces.then_some(at),
                    announcing: false,
                    announce_failures: 0,
                    // Reading needs nothing of this node's: at once.
                    look_at: Some(now),
                    looking: false,
                    look_gap: self.config.look_first,
                },
            );
        }
    }

    /// When [`Self::poll_task`] has something next, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        let withdrawals = self.withdrawals.iter().map(|(_, at)| *at);
        self.rooms
            .values()
            .flat_map(|room| {
                let announce = room.announce_at.filter(|_| !room.announcing);
                let look = room.look_at.filter(|_| !room.looking);
                [announce, look]
            })
            .flatten()
            .chain(withdrawals)
            .min()
    }

    /// The next task due at `now`; it stays in flight until reported.
    pub fn poll_task(&mut self, now: Instant) -> Option<RoomTask<K>> {
        if let Some((key, _)) = self.withdrawals.pop_front() {
            return Some(RoomTask::Withdraw(key));
        }
        for (key, room) in &mut self.rooms {
            if !room.announcing && room.announce_at.is_some_and(|at| at <= now) {
                room.announcing = true;
                room.announce_at = None;
                return Some(RoomTask::Announce(key.clone()));
            }
            if !room.looking && room.look_at.is_some_and(|at| at <= now) {
                room.looking = true;
                room.look_at = None;
                return Some(RoomTask::Look(key.clone()));
            }
        }
        None
    }

    /// How the announcement in `room` went.
    pub fn handle_announced(&mut self, room: &K, outcome: Announced, now: Instant) {
        let jitter = self.jitter(self.config.conflict_retry);
        let config = &self.config;
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        state.announcing = false;
        let delay = match outcome {
            Announced::Done => {
                state.announce_failures = 0;
                config.refresh
            }
            Announced::Conflict => jitter,
            Announced::Failed => {
                state.announce_failures = state.announce_failures.saturating_add(1);
                let doublings = state.announce_failures.saturating_sub(1).min(16);
                config
                    .retry
                    .saturating_mul(1 << doublings)
                    .min(config.retry_max)
            }
        };
        state.announce_at = Some(now + delay);
    }

    /// What a lookup of `room` found (`None`: it failed). `reached` says
    /// whether this node already reaches a peer (itself, connected, or
    /// listed in the room by one of its trackers): those are not met.
    pub fn handle_looked(
        &mut self,
        room: &K,
        found: Option<Vec<Found>>,
        reached: impl Fn(&PeerId) -> bool,
        now: Instant,
    ) {
        let config = &self.config;
        let Some(state) = self.rooms.get_mut(room) else {
            return;
        };
        state.looking = false;
        state.look_at = Some(now + state.look_gap);
        state.look_gap = (state.look_gap * 2).min(config.look_max);
        let Some(mut found) = found else {
            return;
        };
        let meet_again = config.meet_again;
        self.met
            .retain(|_, at| now.saturating_duration_since(*at) < meet_again);
        found.sort_by_key(|f| std::cmp::Reverse(f.at));
        let mut met = 0;
        for entry in found {
            if met >= config.meet_per_look {
                break;
            }
            if reached(&entry.peer) || self.met.contains_key(&entry.peer) {
                continue;
            }
            self.met.insert(entry.peer, now);
            self.meets.push_back((room.clone(), entry.peer));
            met += 1;
        }
    }

    /// The next member to meet, and the room it was found in.
    pub fn poll_meet(&mut self) -> Option<(K, PeerId)> {
        self.meets.pop_front()
    }

    /// A random delay in [`max`/3, `max`].
    fn jitter(&mut self, max: Duration) -> Duration {
        // xorshift64: enough to part two writers.
        self.rng ^= self.rng << 13;
        self.rng ^= self.rng >> 7;
        self.rng ^= self.rng << 17;
        let third = max / 3;
        let span = (max - third).as_millis().max(1) as u64;
        third + Duration::from_millis(self.rng % span)
    }
}

#[cfg(test)]
#[path = "rooms_tests.rs"]
mod tests;
