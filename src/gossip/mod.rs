//! Gossip for rooms of hundreds: which room members to keep a connection
//! to, and whom to pass a message on to — with no sockets, no tasks and no
//! clock of its own (like `punch` and the connection manager).
//!
//! Membership is a simplified HyParView. Every member keeps a small
//! *active view* of the room: symmetric links (both ends count them), at
//! least [`GossipConfig::active`] (8) when the room has that many others and
//! never more than [`GossipConfig::max_active`] (10). The *passive view* is every
//! other member the tracker lists: the tracker already tells each member who
//! is in the room, so no shuffle protocol is needed to learn it. A member
//! short of links asks random passive members to become neighbors
//! ([`Control::Neighbor`]); a full one refuses, unless the asker has no link
//! at all (then it drops one of its own links for it, so nobody is left
//! out). Lost links (a member left, a connection died, a request went
//! unanswered) are replaced from the passive view. Every
//! [`GossipConfig::refresh_interval`] a member swaps one link for a random
//! new one, which keeps the views random and joins two halves of a room
//! that were split. A room with at most `active` other members is a full
//! mesh: everyone links to everyone, as before gossip.
//!
//! Broadcast: a new message goes to the active view (linked neighbors, and
//! members asked whose answer is on its way); a member that takes a message
//! it has not seen passes it once to its active view but the one it came
//! from (message ids remembered in a bounded [`seen::Seen`]).
//! In a full mesh nobody passes anything on: the author reached everyone.
//! Repair is lazy: every [`GossipConfig::repair_interval`], and on every new
//! link, a member pulls what it lacks from one neighbor by history sync.
//!
//! Driving it: one [`RoomGossip`] per room. Feed it the room's members
//! ([`RoomGossip::handle_member_joined`], [`RoomGossip::handle_member_left`]),
//! the neighbors' control messages ([`RoomGossip::handle_control`]),
//! connections that failed ([`RoomGossip::handle_unreachable`]) and messages
//! ([`RoomGossip::publish`], [`RoomGossip::handle_message`],
//! [`RoomGossip::handle_synced`]), each with the time; drain
//! [`RoomGossip::poll_action`]; call [`RoomGossip::handle_timeout`] at
//! [`RoomGossip::poll_timeout`]. The tests drive hundreds of them over a
//! simulated network on a virtual clock (`sim`).

mod seen;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::hash::Hash;
use std::time::{Duration, Instant};

pub use seen::Seen;

/// How a room's gossip is tuned. Defaults in [`GossipConfig::default`].
#[derive(Clone, Debug)]
pub struct GossipConfig {
    /// Links a member seeks (default 8). A room with at most this many other
    /// members is a full mesh.
    pub active: usize,
    /// Links a member accepts at most (default 10, at least `active`). The
    /// room between `active` and this absorbs askers; the room above it (a
    /// connection made only to ask, and refused) keeps a member's
    /// connections within `max_active` + 2 in practice.
    pub max_active: usize,
    /// Message ids remembered for deduplication (default 10 000).
    pub seen: usize,
    /// How long a neighbor request may go unanswered (default 10 s).
    pub neighbor_timeout: Duration,
    /// How long a member that refused, dropped or could not be reached is
    /// left alone before it may be asked again (default 5 s).
    pub cooldown: Duration,
    /// How often a member pulls from one neighbor by history sync
    /// (default 10 s, jittered).
    pub repair_interval: Duration,
    /// How often a member swaps a link for a random new one (default 30 s,
    /// jittered).
    pub refresh_interval: Duration,
    /// Seed of the random choices.
    pub seed: u64,
}

impl Default for GossipConfig {
    fn default() -> Self {
        Self {
            active: 8,
            max_active: 10,
            seen: 10_000,
            neighbor_timeout: Duration::from_secs(10),
            cooldown: Duration::from_secs(5),
            repair_interval: Duration::from_secs(10),
            refresh_interval: Duration::from_secs(30),
            seed: 1,
        }
    }
}

/// What neighbors tell each other about their link in one room.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Control {
    /// Be my neighbor. `lonely`: the asker has no link at all, and must not
    /// be refused.
    Neighbor { lonely: bool },
    /// Yes: the link is up on both ends.
    Accept,
    /// No: this member has all the links it takes.
    Refuse,
    /// The link is dropped.
    Disconnect,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action<P, M> {
    /// Send `control` to `to`, connecting first if need be; a connection
    /// that cannot be made comes back as [`RoomGossip::handle_unreachable`].
    Control { to: P, control: Control },
    /// Send message `id` to `to`.
    Forward { to: P, id: M },
    /// Pull what `peer` holds of the room and this node lacks.
    Sync { peer: P },
    /// `peer` joined the active view: keep a connection to it.
    Link(P),
    /// `peer` left the active view: this room no longer needs a connection
    /// to it.
    Unlink(P),
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Link {
    /// Asked; the answer is due by this time.
    Pending(Instant),
    Up,
}

/// A small deterministic generator (xorshift64*): random views need spread,
/// not secrecy.
#[derive(Clone, Debug)]
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        // Spread nearby seeds apart; xorshift never leaves zero.
        Self(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1)
    }

    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// An index below `n` (> 0).
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    /// `base` scaled by a factor in [0.5, 1.5).
    fn jitter(&mut self, base: Duration) -> Duration {
        let unit = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        base.mul_f64(0.5 + unit)
    }
}

/// One room's membership and broadcast, as one member sees it. `P` names a
/// member, `M` a message. See the module's documentation for how to drive
/// it.
#[derive(Debug)]
pub struct RoomGossip<P, M> {
    me: P,
    config: GossipConfig,
    /// Every other member the tracker lists (the passive view is those not
    /// in `active`).
    members: BTreeSet<P>,
    active: BTreeMap<P, Link>,
    /// Members not to ask until then.
    cooling: BTreeMap<P, Instant>,
    /// A link asked for by a refresh: once it is up, one other goes.
    refreshing: Option<P>,
    seen: Seen<M>,
    rng: Rng,
    repair_at: Instant,
    refresh_at: Instant,
    actions: VecDeque<Action<P, M>>,
}

impl<P, M> RoomGossip<P, M>
where
    P: Copy + Ord,
    M: Copy + Eq + Hash,
{
    pub fn new(me: P, mut config: GossipConfig, now: Instant) -> Self {
        config.active = config.active.max(1);
        config.max_active = config.max_active.max(config.active);
        let mut rng = Rng::new(config.seed);
        let repair_at = now + rng.jitter(config.repair_interval);
        let refresh_at = now + rng.jitter(config.refresh_interval);
        Self {
            me,
            seen: Seen::new(config.seen),
            config,
            members: BTreeSet::new(),
            active: BTreeMap::new(),
            cooling: BTreeMap::new(),
            refreshing: None,
            rng,
            repair_at,
            refresh_at,
            actions: VecDeque::new(),
        }
    }

    pub fn poll_action(&mut self) -> Option<Action<P, M>> {
        self.actions.pop_front()
    }

    /// When [`RoomGossip::handle_timeout`] should next be called.
    pub fn poll_timeout(&self) -> Instant {
        let pending = self.active.values().filter_map(|link| match link {
            Link::Pending(deadline) => Some(*deadline),
            Link::Up => None,
        });
        let short = self.active.len() < self.target();
        let cooling = self.cooling.values().copied().filter(|_| short);
        pending
            .chain(cooling)
            .chain([self.repair_at, self.refresh_at])
            .min()
            .unwrap_or(self.repair_at)
    }

    /// Members in the active view (asked or linked): the peers this room
    /// needs a connection to.
    pub fn active(&self) -> impl Iterator<Item = P> + '_ {
        self.active.keys().copied()
    }

    /// Neighbors whose link is up on both ends.
    pub fn neighbors(&self) -> impl Iterator<Item = P> + '_ {
        self.active
            .iter()
            .filter(|(_, link)| **link == Link::Up)
            .map(|(peer, _)| *peer)
    }

    pub fn is_neighbor(&self, peer: &P) -> bool {
        self.active.get(peer) == Some(&Link::Up)
    }

    /// Every other member, linked or not.
    pub fn members(&self) -> &BTreeSet<P> {
        &self.members
    }

    /// Whether the room is small enough that everyone links to everyone.
    pub fn is_full_mesh(&self) -> bool {
        self.members.len() <= self.config.active
    }

    /// How many links this member seeks now.
    fn target(&self) -> usize {
        self.config.active.min(self.members.len())
    }

    // ----------------------------------------------------------- members --

    /// The tracker lists `peer` in the room.
    pub fn handle_member_joined(&mut self, peer: P, now: Instant) {
        if peer == self.me {
            return;
        }
        self.members.insert(peer);
        self.maintain(now);
    }

    /// `peer` left the room: its link goes without a word, and another
    /// replaces it.
    pub fn handle_member_left(&mut self, peer: P, now: Instant) {
        self.members.remove(&peer);
        self.cooling.remove(&peer);
        self.drop_link(peer);
        self.maintain(now);
    }

    /// No connection to `peer` could be made, or its connection died.
    pub fn handle_unreachable(&mut self, peer: P, now: Instant) {
        if self.drop_link(peer) {
            self.cool(peer, now);
        }
        self.maintain(now);
    }

    // ------------------------------------------------------------- links --

    /// A neighbor's control message.
    pub fn handle_control(&mut self, from: P, control: Control, now: Instant) {
        if from == self.me {
            return;
        }
        match control {
            Control::Neighbor { lonely } => self.asked(from, lonely, now),
            Control::Accept => match self.active.get(&from) {
                Some(Link::Pending(_)) => {
                    self.link_up(from);
                    if self.refreshing == Some(from) {
                        self.refreshing = None;
                        if self.active.len() > self.config.active {
                            self.drop_random(Some(from), now);
                        }
                    }
                }
                Some(Link::Up) => {}
                // Given up on meanwhile: the asker's end goes too.
                None => self.send(from, Control::Disconnect),
            },
            Control::Refuse | Control::Disconnect => {
                if self.drop_link(from) {
                    self.cool(from, now);
                }
                self.maintain(now);
            }
        }
    }

    fn asked(&mut self, from: P, lonely: bool, now: Instant) {
        // The driver passes only members of the room (proven, in a password
        // room); the tracker's word of it may still be on its way.
        self.members.insert(from);
        self.cooling.remove(&from);
        match self.active.get(&from) {
            Some(Link::Up) => self.send(from, Control::Accept),
            Some(Link::Pending(_)) => {
                // Both asked at once: the link is up.
                self.send(from, Control::Accept);
                self.link_up(from);
            }
            None => {
                if self.active.len() >= self.config.max_active {
                    if !lonely {
                        self.send(from, Control::Refuse);
                        return;
                    }
                    self.drop_random(None, now);
                }
                self.actions.push_back(Action::Link(from));
                self.send(from, Control::Accept);
                self.link_up(from);
            }
        }
    }

    fn link_up(&mut self, peer: P) {
        self.active.insert(peer, Link::Up);
        // What it holds and this member lacks, now that they are linked.
        self.actions.push_back(Action::Sync { peer });
    }

    /// Removes `peer` from the active view; whether it was there.
    fn drop_link(&mut self, peer: P) -> bool {
        if self.refreshing == Some(peer) {
            self.refreshing = None;
        }
        let was = self.active.remove(&peer).is_some();
        if was {
            self.actions.push_back(Action::Unlink(peer));
        }
        was
    }

    /// Drops a random up link (not `keep`), telling the neighbor.
    fn drop_random(&mut self, keep: Option<P>, now: Instant) {
        let up: Vec<P> = self.neighbors().filter(|p| Some(*p) != keep).collect();
        if up.is_empty() {
            return;
        }
        let peer = up[self.rng.below(up.len())];
        self.drop_link(peer);
        self.cool(peer, now);
        self.send(peer, Control::Disconnect);
    }

    fn cool(&mut self, peer: P, now: Instant) {
        self.cooling.insert(peer, now + self.config.cooldown);
    }

    fn send(&mut self, to: P, control: Control) {
        self.actions.push_back(Action::Control { to, control });
    }

    /// A random passive member that may be asked now.
    fn candidate(&mut self, now: Instant) -> Option<P> {
        let candidates: Vec<P> = self
            .members
            .iter()
            .filter(|p| !self.active.contains_key(p))
            .filter(|p| self.cooling.get(p).is_none_or(|until| *until <= now))
            .copied()
            .collect();
        (!candidates.is_empty()).then(|| candidates[self.rng.below(candidates.len())])
    }

    fn ask(&mut self, peer: P, now: Instant) {
        let lonely = self.active.is_empty();
        self.active
            .insert(peer, Link::Pending(now + self.config.neighbor_timeout));
        self.actions.push_back(Action::Link(peer));
        self.send(peer, Control::Neighbor { lonely });
    }

    /// Asks random passive members until the active view is full enough.
    fn maintain(&mut self, now: Instant) {
        while self.active.len() < self.target() {
            let Some(peer) = self.candidate(now) else {
                break;
            };
            self.ask(peer, now);
        }
    }

    // ----------------------------------------------------------- messages --

    /// This member wrote message `id`: it goes to the active view (every
    /// member, in a full mesh). Returns to how many.
    pub fn publish(&mut self, id: M) -> usize {
        self.seen.insert(id);
        self.forward(id, None)
    }

    /// Message `id` arrived from `from`. If it is new, it goes on to every
    /// neighbor but `from` — unless the room is a full mesh, where its
    /// author sent it to everyone; returns whether it was new.
    pub fn handle_message(&mut self, id: M, from: P) -> bool {
        if !self.seen.insert(id) {
            return false;
        }
        if !self.is_full_mesh() {
            self.forward(id, Some(from));
        }
        true
    }

    /// Message `id` arrived by history sync: remembered, not passed on
    /// (whoever lacks it pulls it the same way).
    pub fn handle_synced(&mut self, id: M) {
        self.seen.insert(id);
    }

    /// Sends `id` to the active view but `from`: neighbors, and members
    /// asked whose answer is on its way (a member that just connected gets
    /// it at once; the driver keeps it for one not connected yet).
    fn forward(&mut self, id: M, from: Option<P>) -> usize {
        let to: Vec<P> = self.active().filter(|p| Some(*p) != from).collect();
        let count = to.len();
        for to in to {
            self.actions.push_back(Action::Forward { to, id });
        }
        count
    }

    // ------------------------------------------------------------- timers --

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        let overdue: Vec<P> = self
            .active
            .iter()
            .filter(|(_, link)| matches!(link, Link::Pending(at) if *at <= now))
            .map(|(peer, _)| *peer)
            .collect();
        for peer in overdue {
            self.drop_link(peer);
            self.cool(peer, now);
            // It may still answer; a late accept is met with a disconnect.
        }
        self.cooling.retain(|_, until| *until > now);
        if self.repair_at <= now {
            self.repair_at = now + self.rng.jitter(self.config.repair_interval);
            let up: Vec<P> = self.neighbors().collect();
            if !up.is_empty() {
                let peer = up[self.rng.below(up.len())];
                self.actions.push_back(Action::Sync { peer });
            }
        }
        if self.refresh_at <= now {
            self.refresh_at = now + self.rng.jitter(self.config.refresh_interval);
            let room = !self.is_full_mesh() && self.active.len() < self.config.max_active;
            if room && self.refreshing.is_none() {
                if let Some(peer) = self.candidate(now) {
                    self.refreshing = Some(peer);
                    self.ask(peer, now);
                }
            }
        }
        self.maintain(now);
    }
}
