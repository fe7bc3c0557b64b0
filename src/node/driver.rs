//! The node task: the one owner of the [`Manager`]. I/O tasks (punches,
//! dials, handshakes, tracker sessions, gates) report what happened as
//! [`Input`]s on one channel; this task feeds them to the manager, sleeps
//! until its next timer, and carries out its actions by starting those
//! tasks again. Greeted connections wait here until the manager says which
//! one becomes the peer's gate; messages wait here until every peer they
//! went to has acknowledged them. It also owns the rooms' gossip
//! ([`Overlay`]): which members to keep connected, whom to pass messages on
//! to.

use std::collections::{HashMap, HashSet, VecDeque};
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, oneshot};

use super::gate::{Gate, Greeted};
use super::manager::{
    Action, GateEnd, GateFacts, GateId, IntroductionRefused, Manager, TrackerIx, TrackerState,
};
use super::outbox::{Outbox, OUTBOX_BYTES, OUTBOX_MESSAGES};
use super::overlay::{is_private, Overlay};
use super::{path_of, Node, PathKind};
use crate::gate_socket::canonical;
use crate::identity::PeerId;
use crate::protocol::{ChatFrame, GossipControl, Member, MessageId, SignedMessage};
use crate::punch::Role;
use crate::tracker::{TrackerError, TrackerSession};
use crate::wire::CloseCode;

mod gossip;
mod guests;
mod idle;
mod introductions;
mod parking;
mod reports;

/// What happened, for the node task.
pub(super) enum Input {
    /// Connect to `peer` and keep it connected; `reply` hears the first
    /// outcome.
    /// `via`: a tracker that lists the peer in a room.
    Connect {
        peer: PeerId,
        addrs: Vec<SocketAddr>,
        via: Option<TrackerIx>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// Connect to `peer`, found through its DHT record, through
    /// `trackers` (each added as a guest session if it is not one of this
    /// node's; whichever is up first introduces it).
    ConnectThrough {
        peer: PeerId,
        trackers: Vec<crate::dht::record::TrackerRef>,
        reply: Option<oneshot::Sender<Result<(), String>>>,
    },
    /// `peer`, found in `room`'s DHT records, can be introduced through
    /// `trackers` (from its own DHT record): a member of the room like one
    /// a tracker lists.
    RoomMemberFound {
        room: String,
        peer: PeerId,
        trackers: Vec<crate::dht::record::TrackerRef>,
    },
    /// Looking `peer`'s DHT record up again failed.
    LookupFailed {
        peer: PeerId,
        why: String,
    },
    /// Whether `peer` shares a room with this node (from tracker `via`).
    Wanted {
        peer: PeerId,
        wanted: bool,
        via: Option<TrackerIx>,
    },
    Introduced {
        tracker: TrackerIx,
        attempt: u64,
        member: Member,
        role: Role,
        /// How late the peer's introduction is expected after this node's.
        peer_late: Duration,
    },
    IntroductionFailed {
        peer: PeerId,
        error: TrackerError,
    },
    /// The tracker took this node's request for `peer` as `attempt`.
    IntroductionAnswered {
        peer: PeerId,
        attempt: u64,
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
    /// `peer` is (or is no longer) a member of `room`, as tracker `via`
    /// lists it.
    Member {
        room: String,
        peer: PeerId,
        joined: bool,
        /// It joined after this node (the tracker's `Joined`), rather
        /// than being listed when this node joined.
        newcomer: bool,
        via: Option<TrackerIx>,
    },
    /// This node left `room`.
    RoomLeft {
        room: String,
    },
    /// The rooms `peer` shares with this node may have changed (greeting,
    /// room list, a password proven).
    PeerRooms {
        peer: PeerId,
    },
    /// A room's gossip control message from `peer`.
    Gossip {
        peer: PeerId,
        room: String,
        control: GossipControl,
    },
    /// A message taken live from `from` that was new here: passed on to
    /// the room's other neighbors.
    Received {
        message: SignedMessage,
        from: PeerId,
    },
    TrackerUp {
        tracker: TrackerIx,
        session: Arc<TrackerSession>,
        events: TrackerEvents,
    },
    TrackerFailed {
        tracker: TrackerIx,
        reason: String,
    },
    /// The session `generation` with `tracker` ended.
    TrackerLost {
        tracker: TrackerIx,
        generation: u64,
        reason: String,
    },
    /// Whether `tracker`'s relay can carry connections, or why not.
    RelayReady {
        tracker: TrackerIx,
        ready: Result<(), String>,
    },
    Shutdown(oneshot::Sender<()>),
}

/// A greeted connection waiting for the manager's word.
pub(super) struct Ready {
    pub greeted: Greeted,
    pub started: Instant,
    pub handshake: Option<Duration>,
    pub dialed: bool,
    pub phases: super::events::SetupPhases,
}

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
    outbox: Outbox,
    /// Introductions by attempt (and the tracker that made them), until
    /// their punch starts.
    introductions: HashMap<u64, (TrackerIx, Member, Duration)>,
    /// Recent introductions as the acceptor, for a moment: the manager
    /// declines one whose peer it does not know to share a room yet (it
    /// came before the member list), and this node's own request may then
    /// be answered with it (the tracker folds crossing requests), when it
    /// is offered again.
    declined: VecDeque<(u64, Instant, TrackerIx, Member, Duration)>,
    /// Members that joined a room after this node, and when: the joiner
    /// dials them, so this node leaves the first move to it for
    /// [`JOINER_DIALS`] (one attempt per pair, in a known direction).
    newcomers: HashMap<PeerId, Instant>,
    /// Sessions started so far: a loss reported by an older session of a
    /// tracker than its current one is stale.
    tracker_generation: u64,
    current_generation: HashMap<TrackerIx, u64>,
    overlay: Overlay,
    /// Control messages from peers that have not proven the password of
    /// their room yet on this connection.
    unproven: HashMap<PeerId, Vec<(String, GossipControl)>>,
    /// Since when each open gate has been needed by no room's gossip.
    unneeded: HashMap<PeerId, Instant>,
    /// Peers asked for by hand (`--connect`, `/connect`, `/msg`): kept
    /// whatever the gossip decides.
    asked: HashSet<PeerId>,
    /// When to close guest sessions no longer needed.
    guests: idle::IdleTimer,
    /// When to park sessions with this node's own trackers.
    parking: idle::IdleTimer,
}

/// How long a member leaves the first move to one that just joined (which
/// asks for every member it links to at once): an introduction round trip
/// and the joiner's request pacing, with room to spare. Then it asks itself.
const JOINER_DIALS: Duration = Duration::from_secs(2);
const MAX_NEWCOMERS: usize = 1024;

/// How long a gate no room's gossip needs stays open (the other side may
/// be about to ask for it).
const UNNEEDED_GRACE: Duration = Duration::from_secs(15);

/// A time no session idles for (parking off).
const NEVER: Duration = Duration::from_secs(365 * 24 * 3600);

/// Control messages held per peer until it proves a room's password.
const UNPROVEN_HELD: usize = 16;

/// A tracker session's pushed events.
pub(super) type TrackerEvents = mpsc::Receiver<crate::tracker::client::SessionEvent>;

/// Runs the node task until shutdown.
pub(super) async fn run(
    node: Node,
    manager: Manager,
    inputs: mpsc::UnboundedReceiver<Input>,
    tracker_events: Vec<(TrackerIx, TrackerEvents)>,
) {
    let mut driver = Driver {
        node: node.clone(),
        manager,
        inputs,
        waiters: HashMap::new(),
        ready: HashMap::new(),
        gates: HashMap::new(),
        chat: HashMap::new(),
        outbox: Outbox::new(OUTBOX_MESSAGES, OUTBOX_BYTES),
        introductions: HashMap::new(),
        declined: VecDeque::new(),
        newcomers: HashMap::new(),
        tracker_generation: 0,
        current_generation: HashMap::new(),
        overlay: Overlay::new(node.peer_id(), node.inner.config.gossip.clone()),
        asked: HashSet::new(),
        unneeded: HashMap::new(),
        unproven: HashMap::new(),
        guests: idle::IdleTimer::new(guests::GUEST_GRACE),
        parking: idle::IdleTimer::new(node.inner.config.park_after.unwrap_or(NEVER)),
    };
    for (tracker, events) in tracker_events {
        driver.watch_tracker(tracker, events);
    }
    driver.act();
    loop {
        let wake = [
            driver.manager.poll_timeout(),
            driver.overlay.poll_timeout(),
            driver.guests.poll_timeout(),
            driver.parking.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min();
        let sleep = crate::wake::until(wake);
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
            _ = sleep => {
                let now = Instant::now();
                driver.manager.handle_timeout(now);
                driver.overlay.handle_timeout(now);
                driver.prune(now);
            }
        }
        driver.act();
        driver.watch_guests(Instant::now());
        driver.watch_parking(Instant::now());
        driver.act();
    }
}

impl Driver {
    fn handle(&mut self, input: Input) {
        let now = Instant::now();
        match input {
            Input::Connect {
                peer,
                addrs,
                via,
                reply,
            } => {
                if let Some(reply) = reply {
                    // Connected is connected: a relayed peer's upgrade goes on
                    // in the background and never reports as a failure.
                    // A gate already closing is not connected: the waiter
                    // hears of its replacement or of why there is none.
                    let open = self
                        .manager
                        .gate(&peer)
                        .and_then(|facts| self.gates.get(&facts.id))
                        .is_some_and(|gate| gate.is_open());
                    if open {
                        let _ = reply.send(Ok(()));
                    } else {
                        self.waiters.entry(peer).or_default().push(reply);
                    }
                }
                if !addrs.is_empty() {
                    self.manager.set_addrs(peer, addrs);
                }
                if let Some(tracker) = via {
                    self.manager.learn_tracker(peer, tracker);
                }
                self.asked.insert(peer);
                self.manager.connect(peer, now);
            }
            Input::ConnectThrough {
                peer,
                trackers,
                reply,
            } => {
                if !self.reach_through(peer, &trackers, now) {
                    let why = format!(
                        "this node holds {} guest sessions in use already",
                        super::dht::MAX_GUEST_TRACKERS
                    );
                    match reply {
                        Some(reply) => drop(reply.send(Err(why))),
                        None => self.manager.handle_lookup_failed(peer, why, now),
                    }
                    return;
                }
                match reply {
                    Some(reply) if self.manager.gate(&peer).is_some() => drop(reply.send(Ok(()))),
                    Some(reply) => self.waiters.entry(peer).or_default().push(reply),
                    None => {}
                }
                self.asked.insert(peer);
                self.manager.connect(peer, now);
            }
            Input::RoomMemberFound {
                room,
                peer,
                trackers,
            } => {
                let joined = self.node.roster().rooms.contains(&room);
                if !joined || self.node.is_closing() || !self.node.is_allowed(&peer) {
                    return;
                }
                if !self.reach_through(peer, &trackers, now) {
                    tracing::debug!(peer = %peer.short(), "no guest session left for a room member");
                    return;
                }
                // The room's gossip decides whether to connect it.
                self.manager.set_welcome(peer, true);
                self.overlay.member(&room, peer, true, now);
            }
            Input::LookupFailed { peer, why } => self.manager.handle_lookup_failed(peer, why, now),
            Input::Wanted { peer, wanted, via } => {
                if let (true, Some(tracker)) = (wanted, via) {
                    self.manager.learn_tracker(peer, tracker);
                }
                self.manager.set_wanted(peer, wanted);
            }
            Input::Introduced {
                tracker,
                attempt,
                member,
                role,
                peer_late,
            } => self.introduced(tracker, attempt, member, role, peer_late, now),
            Input::IntroductionFailed { peer, error } => {
                let refusal = match error {
                    TrackerError::Refused(crate::protocol::TrackerRefusal::RateLimited {
                        ..
                    }) => IntroductionRefused::RateLimited,
                    other => IntroductionRefused::Other(other.to_string()),
                };
                self.manager.handle_introduction_refused(peer, refusal, now);
            }
            Input::IntroductionAnswered { peer, attempt } => self.answered(peer, attempt, now),
            Input::PunchFailed { peer, attempt, why } => {
                self.manager.handle_punch_failed(peer, attempt, why, now)
            }
            Input::RelayFailed { peer, why } => self.manager.handle_relay_failed(peer, why, now),
            Input::DialFailed { peer, why } => self.manager.handle_dial_failed(peer, why, now),
            Input::GateReady(ready) => self.gate_ready(*ready, now),
            Input::GateClosed { peer, gate, end } => {
                self.gates.remove(&gate);
                self.chat.remove(&gate);
                let current = self.manager.gate(&peer).is_some_and(|g| g.id == gate);
                // Closed on purpose: nothing follows for whoever waits.
                let closed = match (&end, current) {
                    (GateEnd::Closed(reason), true) => Some(reason.clone()),
                    (GateEnd::Unneeded, true) => Some("closed as no longer needed".into()),
                    _ => None,
                };
                self.manager.handle_gate_closed(peer, gate, end, now);
                if let Some(reason) = closed {
                    for waiter in self.waiters.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Err(reason.clone()));
                    }
                }
            }
            Input::Posted {
                message,
                recipients,
            } => {
                let id = message.body.id;
                if is_private(&message.body.room) {
                    // Straight to the one peer, connecting if need be.
                    for peer in &recipients {
                        self.asked.insert(*peer);
                        self.manager.connect(*peer, now);
                    }
                    let owing = self.manager.post(id, &recipients);
                    self.outbox.insert(message, owing.len());
                } else {
                    self.overlay.publish(&message.body.room, id, now);
                    self.gossip(Some(message), now);
                }
            }
            Input::Received { message, from } => {
                self.overlay
                    .received(&message.body.room, message.body.id, from);
                self.gossip(Some(message), now);
            }
            Input::Member {
                room,
                peer,
                joined,
                newcomer,
                via,
            } => {
                if let (true, Some(tracker)) = (joined, via) {
                    self.manager.learn_tracker(peer, tracker);
                }
                self.newcomers
                    .retain(|_, at| now.duration_since(*at) < JOINER_DIALS);
                if joined && newcomer && self.newcomers.len() < MAX_NEWCOMERS {
                    self.newcomers.insert(peer, now);
                }
                let me = self.node.peer_id();
                let shares = !self.node.roster().shared_rooms(&me, &peer).is_empty();
                self.manager.set_welcome(peer, joined || shares);
                if self.node.roster().rooms.contains(&room) {
                    self.overlay.member(&room, peer, joined, now);
                }
            }
            Input::RoomLeft { room } => self.overlay.left_room(&room),
            Input::PeerRooms { peer } => {
                let me = self.node.peer_id();
                let shared = self.node.roster().shared_rooms(&me, &peer);
                for room in shared {
                    self.overlay.member(&room, peer, true, now);
                }
                // Held for a proof that may have come, both ways.
                self.send_waiting(peer);
                for (room, control) in self.unproven.remove(&peer).unwrap_or_default() {
                    if self.node.roster().takes_part(&me, &peer, &room) {
                        self.overlay.control(&room, peer, control, now);
                    }
                }
            }
            Input::Gossip {
                peer,
                room,
                control,
            } => {
                let me = self.node.peer_id();
                let (takes_part, joined) = {
                    let roster = self.node.roster();
                    let joined = roster.rooms.contains(&room);
                    (roster.takes_part(&me, &peer, &room), joined)
                };
                if takes_part {
                    self.overlay.control(&room, peer, control, now);
                } else if joined {
                    // A password room whose proof on this connection is
                    // still running: heard once it succeeds.
                    let held = self.unproven.entry(peer).or_default();
                    if held.len() < UNPROVEN_HELD {
                        held.push((room, control));
                    }
                }
            }
            Input::Acked { peer, id } => {
                if self.manager.unacked(&peer).contains(&id) {
                    self.manager.handle_acked(peer, id);
                    self.outbox.acked(id);
                }
            }
            Input::TrackerUp {
                tracker,
                session,
                events,
            } => {
                if self.manager.tracker_state(tracker) == Some(TrackerState::Closed) {
                    // A guest session closed while it was connecting.
                    session.close();
                    return;
                }
                let rtt = session.rtt();
                self.node.inner.trackers.set_up(tracker, session);
                self.watch_tracker(tracker, events);
                self.manager.handle_tracker_up(tracker, rtt, now);
                self.node.dht_changed();
            }
            Input::TrackerFailed { tracker, reason } => {
                tracing::debug!(tracker, %reason, "tracker still unreachable");
                self.manager.handle_tracker_failed(tracker, reason, now);
            }
            Input::TrackerLost {
                tracker,
                generation,
                reason,
            } => {
                if self.current_generation.get(&tracker) == Some(&generation) {
                    self.node.inner.trackers.set_down(tracker);
                    self.manager.handle_tracker_lost(tracker, reason, now);
                    self.node.dht_changed();
                }
            }
            Input::RelayReady { tracker, ready } => self.manager.handle_relay_ready(tracker, ready),
            Input::Shutdown(_) => {}
        }
    }

    /// Reads a session's events until it ends, then reports it lost.
    fn watch_tracker(&mut self, tracker: TrackerIx, events: TrackerEvents) {
        self.tracker_generation += 1;
        let generation = self.tracker_generation;
        self.current_generation.insert(tracker, generation);
        let node = self.node.clone();
        self.node.inner.spawn(async move {
            node.clone().tracker_loop(tracker, events).await;
            node.input(Input::TrackerLost {
                tracker,
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
            ipv6: canonical(gate.connection.remote_address()).is_ipv6(),
        };
        if facts.path == PathKind::Direct {
            let remote = canonical(ready.greeted.gate.connection.remote_address());
            self.node.inner.budget().prove(remote.ip());
        }
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

    /// Carries out the manager's actions and the gossip's effects, until
    /// neither has more.
    fn act(&mut self) {
        loop {
            self.act_manager();
            self.gossip(None, Instant::now());
            if self.manager.has_actions() {
                continue;
            }
            return;
        }
    }

    /// Carries out the manager's actions.
    fn act_manager(&mut self) {
        while let Some(action) = self.manager.poll_action() {
            let node = &self.node;
            match action {
                Action::ConnectTracker(tracker) => {
                    node.inner.spawn(node.clone().reconnect_tracker(tracker));
                }
                Action::RestoreTracker(tracker) => {
                    node.inner.spawn(node.clone().restore_tracker(tracker));
                }
                Action::LookUp { peer } => node.inner.spawn(node.clone().relookup(peer)),
                Action::RequestIntroduction { tracker, peer } => {
                    node.inner
                        .spawn(node.clone().request_introduction(tracker, peer));
                }
                Action::Punch {
                    peer,
                    attempt,
                    role,
                } => match self.introductions.remove(&attempt) {
                    Some((tracker, member, peer_late)) => {
                        let punch = node
                            .clone()
                            .run_punch(tracker, attempt, member, role, peer_late);
                        node.inner.spawn(punch);
                    }
                    None => tracing::debug!(peer = %peer.short(), "a punch without introduction"),
                },
                Action::AbandonPunch { peer, attempt } => {
                    // Its probe route gone, the punch stops (`run_punch`).
                    tracing::debug!(peer = %peer.short(), attempt, "punch abandoned");
                    node.inner.probe_routes().punches.remove(&attempt);
                }
                Action::DialRelay { peer, tracker } => {
                    node.inner.spawn(node.clone().dial_relay(peer, tracker));
                }
                Action::DialDirect { peer, addrs } => {
                    node.inner.spawn(node.clone().dial_direct(peer, addrs));
                }
                Action::Install {
                    peer,
                    gate,
                    replaces,
                } => {
                    let Some(ready) = self.ready.remove(&gate) else {
                        continue;
                    };
                    let dialed_by_me = ready.greeted.gate.dialer == node.peer_id();
                    let installed = node.install(ready, replaces);
                    let (queue, writer) = mpsc::unbounded_channel();
                    node.inner.spawn(
                        node.inner
                            .services
                            .chat
                            .clone()
                            .writer(installed.clone(), writer),
                    );
                    self.chat.insert(gate, queue);
                    self.gates.insert(gate, installed);
                    let me = node.peer_id();
                    let shared = node.roster().shared_rooms(&me, &peer);
                    for room in shared {
                        self.overlay.member(&room, peer, true, Instant::now());
                    }
                    self.send_waiting(peer);
                    // Dialed for a request given up on meanwhile: nobody
                    // needs it (a gate the peer dialed waits for its ask).
                    let unneeded = self.overlay.knows(&peer)
                        && !self.overlay.needs(&peer)
                        && !self.asked.contains(&peer);
                    if dialed_by_me && unneeded {
                        self.manager.set_wanted(peer, false);
                        self.send_controls(peer, true);
                    }
                    for waiter in self.waiters.remove(&peer).unwrap_or_default() {
                        let _ = waiter.send(Ok(()));
                    }
                }
                Action::CloseDuplicate { gate, .. } => {
                    if let Some(ready) = self.ready.remove(&gate) {
                        ready
                            .greeted
                            .gate
                            .connection
                            .close(CloseCode::Duplicate.varint(), b"duplicate");
                    } else if let Some(installed) = self.gates.get(&gate) {
                        // Whatever runs on it sees why it ended.
                        installed.close_as(CloseCode::Duplicate, b"duplicate");
                    } else {
                        continue;
                    }
                    node.roster().duplicates_closed += 1;
                }
                Action::Send { peer, id } => {
                    let frame = self.outbox.frame(id);
                    let queue = self.manager.gate(&peer).and_then(|g| self.chat.get(&g.id));
                    if let (Some(frame), Some(queue)) = (frame, queue) {
                        let _ = queue.send(frame);
                    }
                }
                Action::Sync { peer } => {
                    let gate = self.node.roster().open_gate(&peer);
                    if let Some(gate) = gate {
                        self.node.inner.services.catch_up.catch_up(gate);
                    }
                }
                Action::Report(report) => self.report(report),
            }
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
