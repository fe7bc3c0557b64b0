//! The simulation the manager's tests run in: several managers, a
//! simulated tracker (introductions, rate limit, relay, and optionally the
//! folding of crossing requests into one introduction) and simulated paths
//! (direct or not, delays, loss of what is in flight when a path closes, a
//! NAT that rebinds), run to quiescence with an iteration cap on a virtual
//! clock. No sockets, no sleeps.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, HashSet};
use std::time::{Duration, Instant};

use super::*;
use crate::identity::Identity;
use crate::punch::Role;

pub(super) const MS: Duration = Duration::from_millis(1);

/// Something the simulated network delivers to node `to` at a time.
#[derive(Clone, Debug)]
pub(super) enum Delivery {
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
    /// A dialer's punch found the direct path (unless it was abandoned).
    PunchWon {
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
pub(super) struct PairPath {
    /// Whether a punch finds a direct path, and how long it takes.
    pub(super) direct: Option<Duration>,
}

pub(super) struct Sim {
    pub(super) start: Instant,
    pub(super) now: Instant,
    pub(super) nodes: Vec<Manager>,
    pub(super) ids: Vec<PeerId>,
    pub(super) queue: BinaryHeap<Reverse<(Instant, u64, usize)>>,
    pub(super) deliveries: HashMap<u64, Delivery>,
    pub(super) next_event: u64,
    /// One-way delay between any node and the tracker.
    pub(super) tracker_delay: Duration,
    /// One-way delay between two nodes, direct.
    pub(super) peer_delay: Duration,
    pub(super) tracker_up: bool,
    pub(super) relay: bool,
    /// Introduction requests the tracker takes per node per second.
    pub(super) tracker_rate: Option<u32>,
    pub(super) requests: HashMap<usize, Vec<Instant>>,
    pub(super) paths: HashMap<(usize, usize), PairPath>,
    pub(super) next_attempt: u64,
    pub(super) next_gate: GateId,
    /// Open connections: gate id → (dialer node, acceptor node, path).
    pub(super) open: HashMap<GateId, (usize, usize, PathKind)>,
    /// Per node, messages received in order of first arrival.
    pub(super) received: Vec<Vec<MessageId>>,
    pub(super) seen: Vec<HashSet<MessageId>>,
    pub(super) reports: Vec<Vec<Report>>,
    pub(super) installed: Vec<Vec<(PeerId, GateId, Instant)>>,
    pub(super) restored: Vec<usize>,
    pub(super) next_seq: Vec<u64>,
    /// Whether the tracker answers a request that crosses one from the
    /// other side (within [`CROSSING_WINDOW`]) with that introduction, as
    /// ours does, instead of making a second.
    pub(super) fold_crossing: bool,
    /// The tracker's recent introductions: (dialer, acceptor) → (attempt,
    /// when).
    pub(super) led: HashMap<(usize, usize), (u64, Instant)>,
    /// Punches a node abandoned, by (node, attempt).
    pub(super) abandoned: HashSet<(usize, u64)>,
    /// Introductions the tracker made (each a pair of `Introduced`).
    pub(super) introductions: usize,
    /// Punches started as the dialer, over all nodes.
    pub(super) dialer_punches: usize,
    /// Open connections some node closed as a duplicate.
    pub(super) duplicates_closed: usize,
}

/// As the tracker's `registry::CROSSING_WINDOW`.
pub(super) const CROSSING_WINDOW: Duration = crate::tracker::registry::CROSSING_WINDOW;

impl Sim {
    pub(super) fn new(nodes: usize, config: ManagerConfig) -> Sim {
        let start = Instant::now();
        let ids: Vec<PeerId> = (0..nodes)
            .map(|_| Identity::generate().unwrap().peer_id())
            .collect();
        let managers = (0..nodes)
            .map(|i| {
                let mut config = config.clone();
                config.seed = 1000 + i as u64;
                Manager::new(ids[i], config, 1, start)
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
            fold_crossing: true,
            led: HashMap::new(),
            abandoned: HashSet::new(),
            introductions: 0,
            dialer_punches: 0,
            duplicates_closed: 0,
        }
    }

    /// Every node registered, relays ready, each wanting the others.
    pub(super) fn all_up(&mut self) {
        for node in 0..self.nodes.len() {
            let now = self.now;
            self.nodes[node].handle_relay_ready(0, Ok(()));
            self.nodes[node].handle_tracker_registered(0, 2 * self.tracker_delay, now);
        }
    }

    pub(super) fn node_of(&self, peer: &PeerId) -> usize {
        self.ids.iter().position(|id| id == peer).unwrap()
    }

    pub(super) fn path(&self, a: usize, b: usize) -> PairPath {
        let key = (a.min(b), a.max(b));
        self.paths.get(&key).copied().unwrap_or(PairPath {
            direct: Some(30 * MS),
        })
    }

    pub(super) fn set_path(&mut self, a: usize, b: usize, path: PairPath) {
        self.paths.insert((a.min(b), a.max(b)), path);
    }

    pub(super) fn deliver(&mut self, to: usize, after: Duration, what: Delivery) {
        let id = self.next_event;
        self.next_event += 1;
        self.deliveries.insert(id, what);
        self.queue.push(Reverse((self.now + after, id, to)));
    }

    pub(super) fn connect(&mut self, node: usize, peer: usize) {
        let now = self.now;
        let id = self.ids[peer];
        self.nodes[node].learn_tracker(id, 0);
        self.nodes[node].connect(id, now);
    }

    /// Node `node` posts a message to every other node.
    pub(super) fn post(&mut self, node: usize) -> MessageId {
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

    pub(super) fn new_gate(
        &mut self,
        dialer: usize,
        acceptor: usize,
        path: PathKind,
        after: Duration,
    ) {
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
    pub(super) fn close_gate(&mut self, gate: GateId, end: GateEnd) {
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

    pub(super) fn link_delay(&self, gate: GateId) -> Duration {
        match self.open.get(&gate) {
            Some((_, _, PathKind::Relay)) => 2 * self.tracker_delay,
            _ => self.peer_delay,
        }
    }

    /// Carries out node `node`'s actions.
    pub(super) fn act(&mut self, node: usize) {
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
                    self.dialer_punches += 1;
                    match self.path(node, peer).direct {
                        Some(delay) => {
                            self.deliver(node, delay, Delivery::PunchWon { peer, attempt })
                        }
                        None => self.deliver(
                            node,
                            Duration::from_secs(10),
                            Delivery::PunchFailed { peer, attempt },
                        ),
                    }
                }
                Action::Punch { .. } => {}
                Action::AbandonPunch { attempt, .. } => {
                    self.abandoned.insert((node, attempt));
                }
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
                Action::CloseDuplicate { gate, .. } => {
                    if self.open.contains_key(&gate) {
                        self.duplicates_closed += 1;
                    }
                    self.close_gate(gate, GateEnd::Duplicate)
                }
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

    pub(super) fn introduce(&mut self, node: usize, peer: PeerId) {
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
        let now = self.now;
        let crossed = self
            .led
            .get(&(peer, node))
            .is_some_and(|(_, at)| now.duration_since(*at) < CROSSING_WINDOW);
        if self.fold_crossing && crossed {
            return; // the introduction on its way answers this request too
        }
        let attempt = self.next_attempt;
        self.next_attempt += 1;
        self.introductions += 1;
        self.led.insert((node, peer), (attempt, now));
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

    pub(super) fn handle(&mut self, to: usize, what: Delivery) {
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
            Delivery::PunchWon { peer, attempt } => {
                if !self.abandoned.contains(&(to, attempt)) {
                    self.new_gate(to, peer, PathKind::Direct, Duration::ZERO);
                }
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
    pub(super) fn run_for(&mut self, limit: Duration) {
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
    pub(super) fn gate(&self, a: usize, b: usize) -> Option<GateFacts> {
        self.nodes[a].gate(&self.ids[b])
    }

    /// Both ends agree on one open connection.
    pub(super) fn assert_one_connection(&self, a: usize, b: usize) -> GateFacts {
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

    pub(super) fn elapsed(&self) -> Duration {
        self.now - self.start
    }
}

pub(super) fn gone(reports: &[Report]) -> usize {
    reports
        .iter()
        .filter(|r| matches!(r, Report::Gone { .. }))
        .count()
}
