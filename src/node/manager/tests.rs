//! The connection manager on a virtual clock: several managers, a simulated
//! tracker (introductions, rate limit, relay) and simulated paths (direct
//! or not, delays, loss of what is in flight when a path closes, a NAT that
//! rebinds), run to quiescence with an iteration cap. No sockets, no sleeps.

use std::cmp::Reverse;
use std::collections::{BTreeMap, BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::*;
use crate::identity::Identity;

const MS: Duration = Duration::from_millis(1);

/// Something the simulated network delivers to node `to` at a time.
#[derive(Clone, Debug)]
enum Delivery {
    TrackerUp,
    TrackerFailed,
    Introduced {
        peer: usize,
        attempt: u64,
        role: Role,
    },
    Refused {
        peer: usize,
        refusal: IntroductionRefused,
    },
    PunchFailed {
        peer: usize,
        attempt: u64,
    },
    RelayFailed {
        peer: usize,
    },
    GateReady {
        peer: usize,
        gate: GateFacts,
    },
    GateClosed {
        peer: usize,
        gate: GateId,
        end: GateEnd,
    },
    Message {
        from: usize,
        gate: GateId,
        id: MessageId,
    },
    Ack {
        from: usize,
        gate: GateId,
        id: MessageId,
    },
}

/// How the simulated network treats a pair of nodes.
#[derive(Clone, Copy)]
struct PairPath {
    /// Whether a punch finds a direct path, and how long it takes.
    direct: Option<Duration>,
}

struct Sim {
    start: Instant,
    now: Instant,
    nodes: Vec<Manager>,
    ids: Vec<PeerId>,
    queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    deliveries: HashMap<u64, Delivery>,
    next_event: u64,
    /// One-way delay between any node and the tracker.
    tracker_delay: Duration,
    /// One-way delay between two nodes, direct.
    peer_delay: Duration,
    tracker_up: bool,
    relay: bool,
    /// Introduction requests the tracker takes per node per second.
    tracker_rate: Option<u32>,
    requests: HashMap<usize, Vec<Instant>>,
    paths: HashMap<(usize, usize), PairPath>,
    next_attempt: u64,
    next_gate: GateId,
    /// Open connections: gate id → (dialer node, acceptor node, path).
    open: HashMap<GateId, (usize, usize, PathKind)>,
    /// Per node, messages received in order of first arrival.
    received: Vec<Vec<MessageId>>,
    seen: Vec<HashSet<MessageId>>,
    reports: Vec<Vec<Report>>,
    installed: Vec<Vec<(PeerId, GateId, Instant)>>,
    restored: Vec<usize>,
    next_seq: Vec<u64>,
}

impl Sim {
    fn new(nodes: usize, config: ManagerConfig) -> Sim {
        let start = Instant::now();
        let ids: Vec<PeerId> = (0..nodes)
            .map(|_| Identity::generate().unwrap().peer_id())
            .collect();
        let managers = (0..nodes)
            .map(|i| {
                let mut config = config.clone();
                config.seed = 1000 + i as u64;
                Manager::new(config, 1, start)
            })
            .collect();
        Sim {
            start,
            now: start,
            nodes: managers,
            ids,
            queue: BinaryHeap::new(),
            deliveries: HashMap::new(),
            next_event: 0,
            tracker_delay: 10 * MS,
            peer_delay: 10 * MS,
            tracker_up: true,
            relay: true,
            tracker_rate: None,
            requests: HashMap::new(),
            paths: HashMap::new(),
            next_attempt: 1,
            next_gate: 1,
            open: HashMap::new(),
            received: vec![Vec::new(); nodes],
            seen: vec![HashSet::new(); nodes],
            reports: vec![Vec::new(); nodes],
            installed: vec![Vec::new(); nodes],
            restored: Vec::new(),
            next_seq: vec![1; nodes],
        }
    }

    /// Every node registered, relays ready, each wanting the others.
    fn all_up(&mut self) {
        for node in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[node].handle_relay_ready(0, Ok(()));
            self.nodes[node].handle_tracker_registered(0, 2 * self.tracker_delay, now);
        }
    }

    fn node_of(&self, peer: &PeerId) -> usize {
        self.ids.iter().position(|id| id == peer).unwrap()
    }

    fn path(&self, a: usize, b: usize) -> PairPath {
        let key = (a.min(b), a.max(b));
        self.paths.get(&key).copied().unwrap_or(PairPath {
            direct: Some(30 * MS),
        })
    }

    fn set_path(&mut self, a: usize, b: usize, path: PairPath) {
        self.paths.insert((a.min(b), a.max(b)), path);
    }

    fn deliver(&mut self, to: usize, after: Duration, what: Delivery) {
        let id = self.next_event;
        self.next_event += 1;
        self.deliveries.insert(id, what);
        self.queue.push(Reverse((self.now + after, id, to)));
    }

    fn connect(&mut self, node: usize, peer: usize) {
        let now = self.now;
        let id = self.ids[peer];
        self.nodes[node].learn_tracker(id, 0);
        self.nodes[node].connect(id, now);
    }

    /// Node `node` posts a message to every other node.
    fn post(&mut self, node: usize) -> MessageId {
        let id = MessageId {
            author: self.ids[node],
            seq: self.next_seq[node],
        };
        self.next_seq[node] += 1;
        let others: Vec<PeerId> = (0..self.ids.len())
            .filter(|n| *n != node)
            .map(|n| self.ids[n])
            .collect();
        self.nodes[node].post(id, &others);
        id
    }

    fn new_gate(&mut self, dialer: usize, acceptor: usize, path: PathKind, after: Duration) {
        let gate = self.next_gate;
        self.next_gate += 1;
        self.open.insert(gate, (dialer, acceptor, path));
        let facts = GateFacts {
            id: gate,
            path,
            dialer: self.ids[dialer],
            ipv6: false,
        };
        self.deliver(
            dialer,
            after,
            Delivery::GateReady {
                peer: acceptor,
                gate: facts,
            },
        );
        self.deliver(
            acceptor,
            after + self.peer_delay,
            Delivery::GateReady {
                peer: dialer,
                gate: facts,
            },
        );
    }

    /// Closes a connection at both ends, as `end` (whatever is in flight on
    /// it is lost).
    fn close_gate(&mut self, gate: GateId, end: GateEnd) {
        if let Some((a, b, _)) = self.open.remove(&gate) {
            self.deliver(
                a,
                Duration::ZERO,
                Delivery::GateClosed {
                    peer: b,
                    gate,
                    end: end.clone(),
                },
            );
            self.deliver(
                b,
                self.peer_delay,
                Delivery::GateClosed { peer: a, gate, end },
            );
        }
    }

    fn link_delay(&self, gate: GateId) -> Duration {
        match self.open.get(&gate) {
            Some((_, _, PathKind::Relay)) => 2 * self.tracker_delay,
            _ => self.peer_delay,
        }
    }

    /// Carries out node `node`'s actions.
    fn act(&mut self, node: usize) {
        while let Some(action) = self.nodes[node].poll_action() {
            match action {
                Action::ConnectTracker(_) => {
                    let what = if self.tracker_up {
                        Delivery::TrackerUp
                    } else {
                        Delivery::TrackerFailed
                    };
                    self.deliver(node, 2 * self.tracker_delay, what);
                }
                Action::RestoreTracker(_) => self.restored.push(node),
                Action::RequestIntroduction { peer, .. } => self.introduce(node, peer),
                Action::Punch {
                    peer,
                    attempt,
                    role: Role::Dialer,
                } => {
                    let peer = self.node_of(&peer);
                    match self.path(node, peer).direct {
                        Some(delay) => self.new_gate(node, peer, PathKind::Direct, delay),
                        None => self.deliver(
                            node,
                            Duration::from_secs(10),
                            Delivery::PunchFailed { peer, attempt },
                        ),
                    }
                }
                Action::Punch { .. } => {}
                Action::DialRelay { peer, .. } => {
                    let peer = self.node_of(&peer);
                    if self.relay && self.tracker_up {
                        let rtt = 4 * self.tracker_delay;
                        self.new_gate(node, peer, PathKind::Relay, rtt);
                    } else {
                        self.deliver(node, 2 * self.tracker_delay, Delivery::RelayFailed { peer });
                    }
                }
                Action::DialDirect { .. } => panic!("the sim has a tracker"),
                Action::Install { peer, gate, .. } => {
                    self.installed[node].push((peer, gate, self.now));
                }
                Action::CloseDuplicate { gate, .. } => self.close_gate(gate, GateEnd::Duplicate),
                Action::Send { peer, id } => {
                    let gate = self.nodes[node].gate(&peer).map(|g| g.id);
                    let to = self.node_of(&peer);
                    if let Some(gate) = gate.filter(|g| self.open.contains_key(g)) {
                        let delay = self.link_delay(gate);
                        self.deliver(
                            to,
                            delay,
                            Delivery::Message {
                                from: node,
                                gate,
                                id,
                            },
                        );
                    }
                }
                // No peer here is found through the DHT.
                Action::Sync { .. } | Action::LookUp { .. } => {}
                Action::Report(report) => self.reports[node].push(report),
            }
        }
    }

    fn introduce(&mut self, node: usize, peer: PeerId) {
        let peer = self.node_of(&peer);
        if !self.tracker_up {
            return;
        }
        if let Some(rate) = self.tracker_rate {
            let now = self.now;
            let recent = self.requests.entry(node).or_default();
            recent.retain(|at| now.duration_since(*at) < Duration::from_secs(1));
            if recent.len() >= rate as usize {
                self.deliver(
                    node,
                    2 * self.tracker_delay,
                    Delivery::Refused {
                        peer,
                        refusal: IntroductionRefused::RateLimited,
                    },
                );
                return;
            }
            recent.push(now);
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        let at = 2 * self.tracker_delay;
        self.deliver(
            node,
            at,
            Delivery::Introduced {
                peer,
                attempt,
                role: Role::Dialer,
            },
        );
        self.deliver(
            peer,
            at,
            Delivery::Introduced {
                peer: node,
                attempt,
                role: Role::Acceptor,
            },
        );
    }

    fn handle(&mut self, to: usize, what: Delivery) {
        let now = self.now;
        let ids = self.ids.clone();
        let node = &mut self.nodes[to];
        match what {
            Delivery::TrackerUp => node.handle_tracker_up(0, 2 * self.tracker_delay, now),
            Delivery::TrackerFailed => node.handle_tracker_failed(0, "refused".into(), now),
            Delivery::Introduced {
                peer,
                attempt,
                role,
            } => node.handle_introduced(0, ids[peer], attempt, role, now),
            Delivery::Refused { peer, refusal } => {
                node.handle_introduction_refused(ids[peer], refusal, now)
            }
            Delivery::PunchFailed { peer, attempt } => {
                node.handle_punch_failed(ids[peer], attempt, "no answer".into(), now)
            }
            Delivery::RelayFailed { peer } => {
                node.handle_relay_failed(ids[peer], "relay down".into(), now)
            }
            Delivery::GateReady { peer, gate } => {
                // A connection that closed before its greeting finished.
                if self.open.contains_key(&gate.id) {
                    node.handle_gate_ready(ids[peer], gate, now)
                }
            }
            Delivery::GateClosed { peer, gate, end } => {
                node.handle_gate_closed(ids[peer], gate, end, now)
            }
            Delivery::Message { from, gate, id } => {
                if !self.open.contains_key(&gate) {
                    return; // lost with its connection
                }
                if self.seen[to].insert(id) {
                    self.received[to].push(id);
                }
                let delay = self.link_delay(gate);
                self.deliver(from, delay, Delivery::Ack { from: to, gate, id });
            }
            Delivery::Ack { from, gate, id } => {
                if self.open.contains_key(&gate) {
                    node.handle_acked(ids[from], id);
                }
            }
        }
    }

    /// Runs until nothing is left to happen before `limit` from now.
    fn run_for(&mut self, limit: Duration) {
        let end = self.now + limit;
        for _ in 0..200_000 {
            for node in 0..self.nodes.len() {
                self.act(node);
            }
            let next_delivery = self.queue.peek().map(|Reverse((at, _, _))| *at);
            let next_timer = self.nodes.iter().filter_map(Manager::poll_timeout).min();
            let Some(next) = [next_delivery, next_timer].into_iter().flatten().min() else {
                return;
            };
            if next > end {
                self.now = end;
                return;
            }
            self.now = self.now.max(next);
            if next_delivery == Some(next) {
                let Reverse((_, id, to)) = self.queue.pop().unwrap();
                let what = self.deliveries.remove(&id).unwrap();
                self.handle(to, what);
            } else {
                let now = self.now;
                for node in &mut self.nodes {
                    if node.poll_timeout().is_some_and(|at| at <= now) {
                        node.handle_timeout(now);
                    }
                }
            }
        }
        panic!("no quiescence within the iteration cap");
    }

    /// The gate id node `a` uses for node `b`, and the path.
    fn gate(&self, a: usize, b: usize) -> Option<GateFacts> {
        self.nodes[a].gate(&self.ids[b])
    }

    /// Both ends agree on one open connection.
    fn assert_one_connection(&self, a: usize, b: usize) -> GateFacts {
        let ga = self.gate(a, b).expect("a has a gate");
        let gb = self.gate(b, a).expect("b has a gate");
        assert_eq!(ga.id, gb.id, "both ends use the same connection");
        assert!(self.open.contains_key(&ga.id), "and it is open");
        let between = self
            .open
            .values()
            .filter(|(x, y, _)| (*x, *y) == (a, b) || (*x, *y) == (b, a))
            .count();
        assert_eq!(between, 1, "no other connection stays open");
        ga
    }

    fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

fn gone(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r, Report::Gone { .. }))
        .count()
}

#[test]
fn simultaneous_dials_from_both_sides_end_with_one_connection() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.connect(1, 0);
    sim.run_for(Duration::from_secs(60));
    let gate = sim.assert_one_connection(0, 1);
    assert_eq!(gate.path, PathKind::Direct);
    assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
}

#[test]
fn a_punchable_pair_ends_direct_even_when_the_relay_joined_the_race() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    // The punch needs longer than the relay race delay: the relay wins
    // first, the direct path replaces it.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(Duration::from_millis(800)),
        },
    );
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
    assert_eq!(sim.installed[0].len(), 2, "relay first, then direct");
}

#[test]
fn relay_first_then_direct_with_messages_in_flight_delivered_once_in_order() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.tracker_delay = 40 * MS; // a slow relay: much in flight when it closes
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Relay);
    // A direct path opens; messages keep flowing through the switch.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(5 * MS),
        },
    );
    let mut sent = Vec::new();
    for _ in 0..400 {
        sent.push(sim.post(0));
        sim.run_for(7 * MS);
    }
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
    assert_eq!(sim.received[1], sent, "each message once, in order");
    assert!(sim.nodes[0].unacked(&sim.ids[1]).is_empty());
    assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
}

#[test]
fn a_hard_pair_is_relayed_within_a_few_round_trips_of_the_introduction() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    let started = sim.elapsed();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Relay);
    let installed_at = sim.installed[0][0].2 - sim.start - started;
    assert!(installed_at < Duration::from_secs(1), "{installed_at:?}");
}

#[test]
fn a_punch_timeout_while_the_relay_is_up_keeps_the_relay_and_retries_direct() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    // The punch gives up after 10 s; the relayed gate stays and upgrades are
    // tried with backoff.
    sim.run_for(Duration::from_secs(120));
    let gate = sim.assert_one_connection(0, 1);
    assert_eq!(gate.path, PathKind::Relay);
    assert_eq!(gone(&sim.reports[0]), 0);
    let unreachable = sim.reports[0]
        .iter()
        .filter(|r| matches!(r, Report::Unreachable { .. }))
        .count();
    assert_eq!(unreachable, 0, "a failed upgrade is not a failure to reach");
    // Still relayed when a direct path opens: the next upgrade takes it.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(20 * MS),
        },
    );
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
}

#[test]
fn tracker_lost_and_back_restores_and_keeps_gates() {
    let mut sim = Sim::new(3, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    sim.assert_one_connection(0, 1);
    sim.tracker_up = false;
    let now = sim.now;
    for node in &mut sim.nodes {
        node.handle_tracker_lost(0, "connection lost".into(), now);
    }
    // Down for a while: retries back off, no gate is touched.
    sim.run_for(Duration::from_secs(40));
    sim.assert_one_connection(0, 1);
    assert!(sim.reports[0]
        .iter()
        .any(|r| matches!(r, Report::TrackerLost { .. })));
    assert!(sim.restored.is_empty());
    // While down, a newcomer's connect waits for the tracker.
    sim.connect(2, 0);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.gate(2, 0).is_none());
    sim.tracker_up = true;
    // The capped backoff brings every node back within its cap.
    sim.run_for(Duration::from_secs(31));
    for node in 0..3 {
        assert_eq!(sim.nodes[node].tracker_state(0), Some(TrackerState::Up));
        assert!(sim.reports[node].contains(&Report::TrackerBack(0)));
    }
    let mut restored = sim.restored.clone();
    restored.sort();
    assert_eq!(restored, vec![0, 1, 2]);
    sim.run_for(Duration::from_secs(5));
    sim.assert_one_connection(0, 1);
    sim.assert_one_connection(2, 0);
}

#[test]
fn rate_limited_introductions_are_retried_until_a_big_room_is_whole() {
    let members = 25;
    let mut sim = Sim::new(members, ManagerConfig::default());
    sim.tracker_rate = Some(5); // stricter than our pacing: refusals happen
    sim.all_up();
    for node in 0..members {
        for peer in 0..node {
            sim.connect(node, peer);
        }
    }
    sim.run_for(Duration::from_secs(600));
    for a in 0..members {
        for b in 0..a {
            sim.assert_one_connection(a, b);
        }
    }
}

#[test]
fn a_nat_that_changes_the_source_port_ends_in_one_new_connection() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let before = sim.assert_one_connection(0, 1);
    // The mapping changed: the old path dies at both ends (idle timeout).
    sim.close_gate(before.id, GateEnd::PathDied("timed out".into()));
    sim.run_for(Duration::from_secs(60));
    let after = sim.assert_one_connection(0, 1);
    assert_ne!(after.id, before.id);
    assert_eq!(gone(&sim.reports[0]), 1);
}

#[test]
fn messages_to_a_peer_whose_path_died_are_resent_on_the_next_gate() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    let first = sim.post(0);
    // Lost in flight with the path.
    sim.close_gate(gate.id, GateEnd::PathDied("timed out".into()));
    sim.run_for(Duration::from_secs(60));
    let second = sim.post(0);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.received[1], vec![first, second]);
}

#[test]
fn shutdown_while_attempts_are_in_flight_starts_nothing_more() {
    let mut sim = Sim::new(3, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.set_path(
        0,
        2,
        PairPath {
            direct: Some(Duration::from_millis(300)),
        },
    );
    sim.relay = false;
    sim.connect(0, 1);
    sim.connect(0, 2);
    sim.run_for(50 * MS);
    sim.nodes[0].shutdown();
    assert_eq!(sim.nodes[0].poll_action(), None);
    assert_eq!(sim.nodes[0].poll_timeout(), None);
    sim.run_for(Duration::from_secs(60));
    // Late results are refused, not installed.
    assert!(sim.gate(0, 1).is_none());
    assert!(sim.gate(0, 2).is_none());
    assert!(sim.open.is_empty(), "{:?}", sim.open);
}

#[test]
fn a_peer_closed_as_duplicate_with_no_replacement_is_reported_gone_after_the_grace() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    sim.nodes[1].set_wanted(sim.ids[0], false);
    // Only node 0 hears the close; node 1 never brings a replacement.
    sim.open.remove(&gate.id);
    let now = sim.now;
    let peer = sim.ids[1];
    sim.nodes[0].handle_gate_closed(peer, gate.id, GateEnd::Duplicate, now);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        gone(&sim.reports[0]),
        0,
        "not yet: a replacement may follow"
    );
    sim.run_for(Duration::from_secs(10));
    assert_eq!(gone(&sim.reports[0]), 1);
}

#[test]
fn a_link_closed_as_unneeded_is_reported_through_the_room_and_not_redialed() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    sim.close_gate(gate.id, GateEnd::Unneeded);
    sim.run_for(Duration::from_secs(120));
    for (node, peer) in [(0, 1), (1, 0)] {
        let reports = &sim.reports[node];
        assert_eq!(gone(reports), 0, "{reports:?}");
        assert!(
            reports.contains(&Report::ThroughRoom(sim.ids[peer])),
            "{reports:?}"
        );
    }
    assert!(sim.gate(0, 1).is_none(), "nobody dials again unasked");
    assert!(sim.open.is_empty(), "{:?}", sim.open);
}

#[test]
fn unacked_messages_are_bounded_per_peer() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let ids: BTreeMap<u64, MessageId> = (0..peer::MAX_UNACKED_PER_PEER as u64 + 5)
        .map(|seq| {
            let id = MessageId {
                author: sim.ids[0],
                seq,
            };
            (seq, id)
        })
        .collect();
    let peer = sim.ids[1];
    for id in ids.values() {
        sim.nodes[0].post(*id, &[peer]);
    }
    let unacked = sim.nodes[0].unacked(&peer);
    assert_eq!(unacked.len(), peer::MAX_UNACKED_PER_PEER);
    assert_eq!(unacked[0].seq, 5, "the oldest are left to history sync");
}

#[test]
fn a_direct_path_over_ipv6_replaces_one_over_ipv4_whichever_came_first() {
    let me = Identity::generate().unwrap().peer_id();
    let peer = Identity::generate().unwrap().peer_id();
    let gate = |id, ipv6, dialer| GateFacts {
        id,
        path: PathKind::Direct,
        dialer,
        ipv6,
    };
    for (first, second) in [
        (gate(1, false, me), gate(2, true, peer)),
        (gate(1, true, peer), gate(2, false, me)),
    ] {
        let mut manager = Manager::new(ManagerConfig::default(), 1, Instant::now());
        manager.handle_gate_ready(peer, first, Instant::now());
        manager.handle_gate_ready(peer, second, Instant::now());
        assert_eq!(manager.gate(&peer).map(|g| g.ipv6), Some(true));
        let closed: Vec<GateId> = std::iter::from_fn(|| manager.poll_action())
            .filter_map(|action| match action {
                Action::CloseDuplicate { gate, .. } => Some(gate),
                _ => None,
            })
            .collect();
        let ipv4 = if first.ipv6 { second.id } else { first.id };
        assert_eq!(closed, vec![ipv4]);
    }
}
