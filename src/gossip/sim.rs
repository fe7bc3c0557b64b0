//! A simulated network for [`RoomGossip`]: members numbered 0.., one
//! virtual clock, every delivery after a fixed latency, members that leave
//! and join, and a partition that makes pairs unreachable. Runs to a time
//! under an iteration cap; no sockets, no sleeps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BTreeSet, BinaryHeap};
use std::time::{Duration, Instant};

use super::{Action, Control, GossipConfig, RoomGossip};

pub type Id = u32;
pub type Msg = u32;

/// Roughly what each travels as on the wire, for the bytes per message.
pub const MESSAGE_BYTES: u64 = 200;
pub const CONTROL_BYTES: u64 = 40;

#[derive(Debug)]
enum Delivery {
    Control { from: Id, to: Id, control: Control },
    Message { from: Id, to: Id, id: Msg },
    Unreachable { at: Id, peer: Id },
    Synced { to: Id, ids: Vec<Msg> },
    SyncAsk { from: Id, to: Id },
    Joined { at: Id, peer: Id },
    Left { at: Id, peer: Id },
}

pub struct Member {
    pub gossip: RoomGossip<Id, Msg>,
    /// Messages held (the history): each is taken once.
    pub has: BTreeSet<Msg>,
    /// When each message first arrived.
    pub arrived: BTreeMap<Msg, Instant>,
    /// Copies that arrived again (dropped by the history).
    pub duplicates: u64,
}

pub struct Sim {
    pub now: Instant,
    pub latency: Duration,
    /// How long a connection attempt to an unreachable member takes to fail.
    pub unreachable_after: Duration,
    pub config: GossipConfig,
    pub members: BTreeMap<Id, Member>,
    queue: BinaryHeap<Reverse<(Instant, u64)>>,
    pending: BTreeMap<u64, Delivery>,
    seq: u64,
    /// Pairs that cannot reach each other while set.
    pub split: Option<fn(Id, Id) -> bool>,
    /// When each message was published, and by whom.
    pub published: BTreeMap<Msg, (Id, Instant)>,
    pub bytes: u64,
    pub forwards: u64,
}

impl Sim {
    pub fn new(config: GossipConfig) -> Self {
        let now = Instant::now();
        Self {
            now,
            latency: Duration::from_millis(20),
            unreachable_after: Duration::from_secs(2),
            config,
            members: BTreeMap::new(),
            queue: BinaryHeap::new(),
            pending: BTreeMap::new(),
            seq: 0,
            split: None,
            published: BTreeMap::new(),
            bytes: 0,
            forwards: 0,
        }
    }

    fn at(&mut self, after: Duration, delivery: Delivery) {
        self.seq += 1;
        self.queue.push(Reverse((self.now + after, self.seq)));
        self.pending.insert(self.seq, delivery);
    }

    fn reachable(&self, a: Id, b: Id) -> bool {
        self.members.contains_key(&b) && !self.split.is_some_and(|split| split(a, b))
    }

    /// `id` joins: the tracker tells it every member, and every member of it.
    pub fn join(&mut self, id: Id) {
        let config = GossipConfig {
            seed: u64::from(id) + 1,
            ..self.config.clone()
        };
        let mut gossip = RoomGossip::new(id, config, self.now);
        let others: Vec<Id> = self.members.keys().copied().collect();
        for peer in &others {
            gossip.handle_member_joined(*peer, self.now);
        }
        self.members.insert(
            id,
            Member {
                gossip,
                has: BTreeSet::new(),
                arrived: BTreeMap::new(),
                duplicates: 0,
            },
        );
        for peer in others {
            self.at(self.latency, Delivery::Joined { at: peer, peer: id });
        }
        self.flush(id);
    }

    /// `id` leaves: the tracker tells the others; its links die with it.
    pub fn leave(&mut self, id: Id) {
        self.members.remove(&id);
        let others: Vec<Id> = self.members.keys().copied().collect();
        for peer in others {
            self.at(self.latency, Delivery::Left { at: peer, peer: id });
        }
    }

    /// While split, linked pairs across the split notice their connection
    /// died (an idle timeout later).
    pub fn cut(&mut self, split: fn(Id, Id) -> bool) {
        self.split = Some(split);
        let cut: Vec<(Id, Id)> = self
            .members
            .iter()
            .flat_map(|(id, m)| m.gossip.neighbors().map(move |p| (*id, p)))
            .filter(|(a, b)| split(*a, *b))
            .collect();
        for (at, peer) in cut {
            self.at(Duration::from_secs(10), Delivery::Unreachable { at, peer });
        }
    }

    pub fn heal(&mut self) {
        self.split = None;
    }

    pub fn publish(&mut self, author: Id, id: Msg) {
        let now = self.now;
        if let Some(member) = self.members.get_mut(&author) {
            member.has.insert(id);
            member.arrived.insert(id, now);
            member.gossip.publish(id);
            self.published.insert(id, (author, now));
        }
        self.flush(author);
    }

    /// Carries out `id`'s actions.
    fn flush(&mut self, id: Id) {
        loop {
            let Some(member) = self.members.get_mut(&id) else {
                return;
            };
            let Some(action) = member.gossip.poll_action() else {
                return;
            };
            match action {
                Action::Control { to, control } => {
                    self.bytes += CONTROL_BYTES;
                    if self.reachable(id, to) {
                        self.at(
                            self.latency,
                            Delivery::Control {
                                from: id,
                                to,
                                control,
                            },
                        );
                    } else {
                        let peer = to;
                        self.at(
                            self.unreachable_after,
                            Delivery::Unreachable { at: id, peer },
                        );
                    }
                }
                Action::Forward { to, id: msg } => {
                    self.bytes += MESSAGE_BYTES;
                    self.forwards += 1;
                    if self.reachable(id, to) {
                        let delivery = Delivery::Message {
                            from: id,
                            to,
                            id: msg,
                        };
                        self.at(self.latency, delivery);
                    }
                }
                Action::Sync { peer } => {
                    if self.reachable(id, peer) {
                        self.at(self.latency, Delivery::SyncAsk { from: id, to: peer });
                    }
                }
                Action::Link(_) | Action::Unlink(_) => {}
            }
        }
    }

    fn deliver(&mut self, delivery: Delivery) {
        let now = self.now;
        let target = match &delivery {
            Delivery::Control { to, .. }
            | Delivery::Message { to, .. }
            | Delivery::Synced { to, .. }
            | Delivery::SyncAsk { to, .. } => *to,
            Delivery::Unreachable { at, .. }
            | Delivery::Joined { at, .. }
            | Delivery::Left { at, .. } => *at,
        };
        let mut answer = None;
        {
            let Some(member) = self.members.get_mut(&target) else {
                return;
            };
            match delivery {
                Delivery::Control { from, control, .. } => {
                    member.gossip.handle_control(from, control, now)
                }
                Delivery::Message { from, id, .. } => {
                    member.gossip.handle_message(id, from);
                    if member.has.insert(id) {
                        member.arrived.insert(id, now);
                    } else {
                        member.duplicates += 1;
                    }
                }
                Delivery::Unreachable { peer, .. } => member.gossip.handle_unreachable(peer, now),
                Delivery::Synced { ids, .. } => {
                    for id in ids {
                        member.gossip.handle_synced(id);
                        if member.has.insert(id) {
                            member.arrived.insert(id, now);
                        }
                    }
                }
                Delivery::SyncAsk { from, .. } => answer = Some((from, member.has.clone())),
                Delivery::Joined { peer, .. } => member.gossip.handle_member_joined(peer, now),
                Delivery::Left { peer, .. } => member.gossip.handle_member_left(peer, now),
            }
        }
        if let Some((to, held)) = answer {
            if self.reachable(target, to) {
                let lacking: Vec<Msg> = self
                    .members
                    .get(&to)
                    .map(|m| held.difference(&m.has).copied().collect())
                    .unwrap_or_default();
                self.bytes += MESSAGE_BYTES * lacking.len() as u64;
                self.at(self.latency, Delivery::Synced { to, ids: lacking });
            }
        }
        self.flush(target);
    }

    /// Runs until `until` (virtual), under an iteration cap.
    pub fn run_for(&mut self, span: Duration) {
        let until = self.now + span;
        for _ in 0..5_000_000 {
            let next_delivery = self.queue.peek().map(|Reverse((at, _))| *at);
            let next_timer = self
                .members
                .iter()
                .map(|(id, m)| (m.gossip.poll_timeout(), *id))
                .min();
            let timer_first = match (next_delivery, next_timer) {
                (Some(d), Some((t, _))) => t < d,
                (None, Some(_)) => true,
                _ => false,
            };
            if timer_first {
                let Some((at, id)) = next_timer else { break };
                if at > until {
                    break;
                }
                self.now = self.now.max(at);
                let now = self.now;
                if let Some(member) = self.members.get_mut(&id) {
                    member.gossip.handle_timeout(now);
                }
                self.flush(id);
            } else {
                let Some(Reverse((at, seq))) = self.queue.peek().copied() else {
                    break;
                };
                if at > until {
                    break;
                }
                self.queue.pop();
                self.now = self.now.max(at);
                if let Some(delivery) = self.pending.remove(&seq) {
                    self.deliver(delivery);
                }
            }
        }
        self.now = self.now.max(until);
    }

    /// Up links of `id`.
    pub fn degree(&self, id: Id) -> usize {
        self.members
            .get(&id)
            .map_or(0, |m| m.gossip.neighbors().count())
    }

    /// Whether every up link is up on both ends.
    pub fn links_are_symmetric(&self) -> bool {
        self.members.iter().all(|(id, m)| {
            m.gossip.neighbors().all(|p| {
                self.members
                    .get(&p)
                    .is_some_and(|other| other.gossip.is_neighbor(id))
            })
        })
    }

    /// Whether the up links join every member into one piece.
    pub fn is_connected(&self) -> bool {
        let Some(first) = self.members.keys().next().copied() else {
            return true;
        };
        let mut reached = BTreeSet::from([first]);
        let mut frontier = vec![first];
        while let Some(id) = frontier.pop() {
            if let Some(m) = self.members.get(&id) {
                for p in m.gossip.neighbors() {
                    if self.members.contains_key(&p) && reached.insert(p) {
                        frontier.push(p);
                    }
                }
            }
        }
        reached.len() == self.members.len()
    }
}
