//! The node task: the one owner of the [`Manager`]. I/O tasks (punches,
//! dials, handshakes, tracker sessions, gates) report what happened as
//! [`Input`]s on one channel; this task feeds them to the manager, sleeps
//! until its next timer, and carries out its actions by starting those
//! tasks again. Greeted connections wait here until the manager says which
//! one becomes the peer's gate; messages wait here until every peer they
//! went to has acknowledged them.

use std::collections::{BTreeMap, HashMap};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::gate::{Gate, Greeted};
use super::manager::{Action, GateEnd, GateFacts, GateId, IntroductionRefused, Manager, Report};
use super::{path_of, Event, Node, PeerStatus};
use crate::identity::PeerId;
use crate::protocol::{ChatFrame, Member, MessageId, SignedMessage};
use crate::punch::Role;
use crate::tracker::{TrackerError, TrackerSession};
use crate::wire::CloseCode;

/// What happened, for the node task.
pub(super) enum Input {
    /// Connect to `peer` and keep it connected; `reply` hears the first
    /// outcome.
    Connect {
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Whether `peer` shares a room with this node (from the tracker).
    Wanted {
        peer: PeerId,
        wanted: bool,
    },
    Introduced {
        attempt: u64,
        member: Member,
        role: Role,
    },
    IntroductionFailed {
        peer: PeerId,
        error: TrackerError,
    },
    PunchFailed {
        peer: PeerId,
        attempt: u64,
        why: String,
    },
    RelayFailed {
        peer: PeerId,
        why: String,
    },
    DialFailed {
        peer: PeerId,
        why: String,
    },
    /// A connection authenticated and greeted.
    GateReady(Box<Ready>),
    GateClosed {
        peer: PeerId,
        gate: GateId,
        end: GateEnd,
    },
    /// A message committed to history, for these connected peers.
    Posted {
        message: SignedMessage,
        recipients: Vec<PeerId>,
    },
    Acked {
        peer: PeerId,
        id: MessageId,
    },
    TrackerUp {
        session: Arc<TrackerSession>,
        events: mpsc::UnboundedReceiver<crate::protocol::TrackerEvent>,
    },
    TrackerFailed {
        reason: String,
    },
    /// The session `generation` ended.
    TrackerLost {
        generation: u64,
        reason: String,
    },
    RelayReady(Result<(), String>),
    Shutdown(oneshot::Sender<()>),
}

/// A greeted connection waiting for the manager's word.
pub(super) struct Ready {
    pub greeted: Greeted,
    pub started: Instant,
    pub handshake: Option<Duration>,
    pub dialed: bool,
}

/// Messages kept for resending, at most; the oldest beyond are left to
/// history sync.
const OUTBOX_CAPACITY: usize = 10_000;

struct Driver {
    node: Node,
    manager: Manager,
    inputs: mpsc::UnboundedReceiver<Input>,
    waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Greeted connections the manager has not decided on yet.
    ready: HashMap<GateId, Ready>,
    /// Installed gates that are still open, current or not.
    gates: HashMap<GateId, Arc<Gate>>,
    /// Per gate, the ordered queue its chat writer sends from.
    chat: HashMap<GateId, mpsc::UnboundedSender<ChatFrame>>,
    /// Messages some peer has not acknowledged yet, by sequence number.
    outbox: BTreeMap<u64, (ChatFrame, usize)>,
    /// Introductions by attempt, until their punch starts.
    introductions: HashMap<u64, Member>,
    tracker_generation: u64,
}

/// Runs the node task until shutdown.
pub(super) async fn run(
    node: Node,
    manager: Manager,
    inputs: mpsc::UnboundedReceiver<Input>,
    tracker_events: Option<mpsc::UnboundedReceiver<crate::protocol::TrackerEvent>>,
) {
    let mut driver = Driver {
        node,
        manager,
        inputs,
        waiters: HashMap::new(),
        ready: HashMap::new(),
        gates: HashMap::new(),
        chat: HashMap::new(),
        outbox: BTreeMap::new(),
        introductions: HashMap::new(),
        tracker_generation: 0,
    };
    if let Some(events) = tracker_events {
        driver.watch_tracker(events);
    }
    driver.act();
    loop {
        let wake = driver.manager.poll_timeout();
        let sleep = async {
            match wake {
                Some(at) => tokio::time::sleep_until(tokio::time::Instant::from_std(at)).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            input = driver.inputs.recv() => match input {
                Some(Input::Shutdown(done)) => {
                    driver.shutdown();
                    let _ = done.send(());
                    return;
                }
                Some(input) => driver.handle(input),
                None => return,
            },
            _ = sleep => driver.manager.handle_timeout(Instant::now()),
        }
        driver.act();
    }
}

impl Driver {
    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Connect { peer, addrs, reply } => {
                if let Some(reply) = reply {
                    // Connected is connected: a relayed peer's upgrade goes on
                    // in the background and never reports as a failure.
                    if self.manager.gate(&peer).is_some() {
                        let _ = reply.send(Ok(()));
                    } else {
                        self.waiters.entry(peer).or_default().push(reply);
                    }
                }
                if !addrs.is_empty() {
                    self.manager.set_addrs(peer, addrs);
                }
                self.manager.learn_tracker(peer, 0);
                self.manager.connect(peer, now);
            }
            Input::Wanted { peer, wanted } => {
                if wanted {
                    self.manager.learn_tracker(peer, 0);
                }
                self.manager.set_wanted(peer, wanted);
            }
            Input::Introduced {
                attempt,
                member,
                role,
            } => {
                let peer = member.peer_id;
                if !self.node.is_allowed(&peer) || self.node.is_closing() {
                    return;
                }
                self.introductions.insert(attempt, member);
                self.manager.handle_introduced(0, peer, attempt, role, now);
                // Introductions whose punch did not start are not kept.
                self.introductions.retain(|a, _| *a == attempt);
            }
            Input::IntroductionFailed { peer, error } => {
                let refusal = match error {
                    TrackerError::Refused(crate::protocol::TrackerRefusal::RateLimited {
                        ..
                    }) => IntroductionRefused::RateLimited,
                    other => IntroductionRefused::Other(other.to_string()),
                };
                self.manager.handle_introduction_refused(peer, refusal, now);
            }
            Input::PunchFailed { peer, attempt, why } => {
                self.manager.handle_punch_failed(peer, attempt, why, now)
            }
            Input::RelayFailed { peer, why } => self.manager.handle_relay_failed(peer, why, now),
            Input::DialFailed { peer, why } => self.manager.handle_dial_failed(peer, why, now),
            Input::GateReady(ready) => self.gate_ready(*ready, now),
            Input::GateClosed { peer, gate, end } => {
                self.gates.remove(&gate);
                self.chat.remove(&gate);
                self.manager.handle_gate_closed(peer, gate, end, now);
            }
            Input::Posted {
                message,
                recipients,
            } => {
                let id = message.body.id;
                let sent = self.manager.post(id, &recipients);
                if !sent.is_empty() {
                    if self.outbox.len() >= OUTBOX_CAPACITY {
                        self.outbox.pop_first();
                    }
                    self.outbox
                        .insert(id.seq, (ChatFrame::Message(message), sent.len()));
                }
            }
            Input::Acked { peer, id } => {
                if self.manager.unacked(&peer).contains(&id) {
                    self.manager.handle_acked(peer, id);
                    if let Some((_, owed)) = self.outbox.get_mut(&id.seq) {
                        *owed = owed.saturating_sub(1);
                        if *owed == 0 {
                            self.outbox.remove(&id.seq);
                        }
                    }
                }
            }
            Input::TrackerUp { session, events } => {
                let rtt = session.rtt();
                self.node.inner.set_tracker(Some(session));
                self.watch_tracker(events);
                self.manager.handle_tracker_up(0, rtt, now);
            }
            Input::TrackerFailed { reason } => {
                tracing::debug!(%reason, "tracker still unreachable");
                self.manager.handle_tracker_failed(0, now);
            }
            Input::TrackerLost { generation, reason } => {
                if generation == self.tracker_generation {
                    self.node.inner.set_tracker(None);
                    self.manager.handle_tracker_lost(0, reason, now);
                }
            }
            Input::RelayReady(ready) => self.manager.handle_relay_ready(0, ready),
            Input::Shutdown(_) => {}
        }
    }

    /// Reads a tracker session's events until it ends, then reports it lost.
    fn watch_tracker(&mut self, events: mpsc::UnboundedReceiver<crate::protocol::TrackerEvent>) {
        self.tracker_generation += 1;
        let generation = self.tracker_generation;
        let node = self.node.clone();
        tokio::spawn(async move {
            node.clone().tracker_loop(events).await;
            node.input(Input::TrackerLost {
                generation,
                reason: "the connection to it was lost".into(),
            });
        });
    }

    fn gate_ready(&mut self, ready: Ready, now: Instant) {
        let gate = &ready.greeted.gate;
        let peer = gate.peer_id;
        let refusal = if self.node.is_closing() {
            Some((CloseCode::Normal, "shutting down"))
        } else if !self.node.is_allowed(&peer) {
            Some((CloseCode::Refused, "not allowed"))
        } else if self.open_elsewhere(&peer) >= self.node.inner.config.max_gates {
            Some((CloseCode::Refused, "too many connections"))
        } else {
            None
        };
        if let Some((code, reason)) = refusal {
            gate.connection.close(code.varint(), reason.as_bytes());
            return;
        }
        let facts = GateFacts {
            id: gate.connection.stable_id(),
            path: path_of(&gate.connection),
            dialer: gate.dialer,
        };
        self.ready.insert(facts.id, ready);
        self.manager.handle_gate_ready(peer, facts, now);
    }

    /// Open gates to peers other than `peer`.
    fn open_elsewhere(&self, peer: &PeerId) -> usize {
        self.gates
            .values()
            .filter(|g| g.peer_id != *peer && g.is_open())
            .map(|g| g.peer_id)
            .collect::<std::collections::HashSet<_>>()
            .len()
    }

    /// Carries out the manager's actions.
    fn act(&mut self) {
        while let Some(action) = self.manager.poll_action() {
            let node = &self.node;
            match action {
                Action::ConnectTracker(_) => {
                    tokio::spawn(node.clone().reconnect_tracker());
                }
                Action::RestoreTracker(_) => {
                    tokio::spawn(node.clone().restore_tracker());
                }
                Action::RequestIntroduction { peer, .. } => {
                    tokio::spawn(node.clone().request_introduction(peer));
                }
                Action::Punch {
                    peer,
                    attempt,
                    role,
                } => match self.introductions.remove(&attempt) {
                    Some(member) => {
                        tokio::spawn(node.clone().run_punch(attempt, member, role));
                    }
                    None => tracing::debug!(peer = %peer.short(), "a punch without introduction"),
                },
                Action::DialRelay { peer, .. } => {
                    tokio::spawn(node.clone().dial_relay(peer));
                }
                Action::DialDirect { peer, addrs } => {
                    tokio::spawn(node.clone().dial_direct(peer, addrs));
                }
                Action::Install {
                    peer,
                    gate,
                    replaces,
                } => {
                    let Some(ready) = self.ready.remove(&gate) else {
                        continue;
                    };
                    let installed = node.install(ready, replaces);
                    let (queue, writer) = mpsc::unbounded_channel();
                    tokio::spawn(node.clone().chat_writer(installed.clone(), writer));
                    self.chat.insert(gate, queue);
                    self.gates.insert(gate, installed);
                    for waiter in self.waiters.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Action::CloseDuplicate { gate, .. } => {
                    let connection = match self.ready.remove(&gate) {
                        Some(ready) => Some(ready.greeted.gate.connection),
                        None => self.gates.get(&gate).map(|g| g.connection.clone()),
                    };
                    if let Some(connection) = connection {
                        connection.close(CloseCode::Duplicate.varint(), b"duplicate");
                    }
                }
                Action::Send { peer, id } => {
                    let frame = self.outbox.get(&id.seq).map(|(frame, _)| frame.clone());
                    let queue = self.manager.gate(&peer).and_then(|g| self.chat.get(&g.id));
                    if let (Some(frame), Some(queue)) = (frame, queue) {
                        let _ = queue.send(frame);
                    }
                }
                Action::Sync { peer } => {
                    if let Some(gate) = self.node.state().open_gate(&peer) {
                        self.node.catch_up(gate);
                    }
                }
                Action::Report(report) => self.report(report),
            }
        }
    }

    fn report(&mut self, report: Report) {
        let node = &self.node;
        match report {
            Report::Connecting(peer) => node.set_status(peer, PeerStatus::Connecting, None),
            Report::Unreachable {
                peer,
                why,
                retry_in,
            } => {
                node.set_status(peer, PeerStatus::Offline, Some("unreachable".into()));
                let name = node.name_of(&peer);
                let retry = retry_in
                    .map(|delay| {
                        format!("; trying again in {}", super::events::seconds_text(delay))
                    })
                    .unwrap_or_default();
                node.emit(Event::error(format!(
                    "could not connect to {name}: {why}{retry}"
                )));
                for waiter in self.waiters.remove(&peer).unwrap_or_default() {
                    let _ = waiter.send(Err(why.clone()));
                }
            }
            Report::Gone { peer, reason } => node.gone(peer, reason),
            Report::TrackerLost {
                reason, retry_in, ..
            } => node.tracker_news(
                false,
                Some(format!(
                    "{reason}; connected peers stay connected; trying again in {}",
                    super::events::seconds_text(retry_in)
                )),
            ),
            Report::TrackerBack(_) => node.tracker_news(true, None),
        }
    }

    fn shutdown(&mut self) {
        self.manager.shutdown();
        for (_, ready) in self.ready.drain() {
            ready
                .greeted
                .gate
                .connection
                .close(CloseCode::Normal.varint(), b"shutting down");
        }
        for (_, waiters) in self.waiters.drain() {
            for waiter in waiters {
                let _ = waiter.send(Err("shutting down".into()));
            }
        }
    }
}
