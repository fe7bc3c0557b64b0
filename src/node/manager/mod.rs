//! The connection manager: every decision about the node's connections,
//! with no sockets, no tasks and no clock of its own (the way quinn-proto
//! sits under quinn). It owns, per tracker, the session's state and retry
//! timer; per peer, whether it is wanted, its gate, the attempt under way
//! (introduction, punch, the relay racing it), retry and upgrade timers, and
//! the messages the peer has not acknowledged yet.
//!
//! Driving it: feed what happened through the `handle_*` methods and the
//! commands ([`Manager::connect`], [`Manager::set_wanted`],
//! [`Manager::post`]), each with the current time; then drain
//! [`Manager::poll_action`] until it returns `None` and carry the actions
//! out; sleep until [`Manager::poll_timeout`] and call
//! [`Manager::handle_timeout`]. The node task in `super::driver` does this;
//! the tests in `tests` do it with a virtual clock and a simulated network.

mod backoff;
#[cfg(test)]
mod crossing_tests;
#[cfg(test)]
mod direct_tests;
mod interface;
mod introduce;
mod peer;
#[cfg(test)]
mod sim;
#[cfg(test)]
mod tests;
mod tracker;

use std::collections::{HashMap, VecDeque};
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use backoff::{Backoff, Jitter};
pub use interface::{
    Action, GateEnd, GateFacts, GateId, IntroductionRefused, ManagerConfig, Report, TrackerIx,
};
use peer::{Attempt, PeerEntry, RelayLeg};
use tracker::TrackerEntry;
pub use tracker::TrackerState;

use super::events::PathKind;
use super::relay::RelayPolicy;
use crate::identity::PeerId;
use crate::protocol::MessageId;

/// The sans-IO connection manager. See the module's documentation for how
/// to drive it.
pub struct Manager {
    /// This node's id: of two attempts of one pair, the one dialed by the
    /// smaller id goes on.
    me: PeerId,
    config: ManagerConfig,
    trackers: Vec<TrackerEntry>,
    peers: HashMap<PeerId, PeerEntry>,
    /// Whether the relay of each tracker can carry connections now, or why
    /// not.
    relays: Vec<Result<(), String>>,
    actions: VecDeque<Action>,
    jitter: Jitter,
    closing: bool,
}

impl Manager {
    /// The manager of node `me` with `trackers` trackers, each assumed to
    /// be connecting (the driver connects them at start and reports).
    pub fn new(me: PeerId, config: ManagerConfig, trackers: usize, now: Instant) -> Self {
        let per_second = config.introductions_per_second;
        Self {
            me,
            jitter: Jitter::new(config.seed),
            config,
            trackers: (0..trackers)
                .map(|_| TrackerEntry::new(per_second, now))
                .collect(),
            peers: HashMap::new(),
            relays: vec![Err("no relay stream yet".into()); trackers],
            actions: VecDeque::new(),
            closing: false,
        }
    }

    pub fn poll_action(&mut self) -> Option<Action> {
        self.actions.pop_front()
    }

    /// Whether [`Manager::poll_action`] has something.
    pub fn has_actions(&self) -> bool {
        !self.actions.is_empty()
    }

    /// When [`Manager::handle_timeout`] should next be called, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.closing {
            return None;
        }
        let trackers = self.trackers.iter().filter_map(|t| match t.state {
            TrackerState::Down { retry_at } => Some(retry_at),
            _ => None,
        });
        let pacing = self
            .trackers
            .iter()
            .filter(|t| t.is_up() && !t.queue.is_empty())
            .map(|t| t.pacing.next_token_at());
        let peers = self.peers.values().filter_map(PeerEntry::next_timer);
        trackers.chain(pacing).chain(peers).min()
    }

    pub fn tracker_state(&self, tracker: TrackerIx) -> Option<TrackerState> {
        self.trackers.get(tracker).map(|t| t.state)
    }

    /// The peer's current gate, as the manager sees it.
    pub fn gate(&self, peer: &PeerId) -> Option<GateFacts> {
        self.peers.get(peer).and_then(|p| p.gate)
    }

    /// Messages `peer` has not acknowledged yet, oldest first.
    pub fn unacked(&self, peer: &PeerId) -> Vec<MessageId> {
        self.peers
            .get(peer)
            .map(|p| p.unacked.iter().copied().collect())
            .unwrap_or_default()
    }

    fn report(&mut self, report: Report) {
        self.actions.push_back(Action::Report(report));
    }

    fn entry(&mut self, peer: PeerId) -> &mut PeerEntry {
        self.peers.entry(peer).or_default()
    }

    // ------------------------------------------------------------ commands --

    /// Connect to `peer` now (`/connect`, `--connect`, a room member) and
    /// keep it connected: failures are retried while it stays wanted.
    pub fn connect(&mut self, peer: PeerId, now: Instant) {
        if self.closing {
            return;
        }
        let entry = self.entry(peer);
        entry.wanted = true;
        entry.retry_at = None;
        if entry.has_direct_gate() || entry.attempt != Attempt::Idle {
            return;
        }
        self.start_attempt(peer, now);
    }

    /// Like [`Manager::connect`], but the peer has the first move until
    /// `at` (it just joined a room, and the joiner dials): an introduction
    /// from it before then is this pair's one attempt; without one, this
    /// node starts its own then.
    pub fn connect_after(&mut self, peer: PeerId, at: Instant, now: Instant) {
        if at <= now {
            return self.connect(peer, now);
        }
        if self.closing {
            return;
        }
        let entry = self.entry(peer);
        entry.wanted = true;
        if entry.gate.is_some() || entry.attempt != Attempt::Idle {
            return;
        }
        entry.retry_at = Some(entry.retry_at.map_or(at, |r| r.min(at)));
    }

    /// Whether `peer` should be kept connected (shares a room, or was asked
    /// for). An unwanted peer's retries stop; its gate stays.
    pub fn set_wanted(&mut self, peer: PeerId, wanted: bool) {
        let entry = self.entry(peer);
        entry.wanted = wanted;
        if !wanted {
            entry.retry_at = None;
        }
    }

    /// Whether `peer` shares a room with this node: an introduction it asked
    /// for is answered even while this node does not seek it.
    pub fn set_welcome(&mut self, peer: PeerId, welcome: bool) {
        self.entry(peer).welcome = welcome;
    }

    /// Addresses at which `peer` can be dialed without a tracker.
    pub fn set_addrs(&mut self, peer: PeerId, addrs: Vec<SocketAddr>) {
        self.entry(peer).addrs = addrs;
    }

    /// Which trackers know `peer` (it shares a room there).
    pub fn learn_tracker(&mut self, peer: PeerId, tracker: TrackerIx) {
        let entry = self.entry(peer);
        if !entry.trackers.contains(&tracker) {
            entry.trackers.push(tracker);
        }
    }

    /// A message was committed and goes to `recipients`: those with a gate
    /// get it now; those without one that are wanted get it first thing on
    /// their next gate. Either way it is resent on every new gate until they
    /// acknowledge. The rest get it by history sync. Returns the peers that
    /// owe an acknowledgement.
    pub fn post(&mut self, id: MessageId, recipients: &[PeerId]) -> Vec<PeerId> {
        let mut owing = Vec::new();
        for peer in recipients {
            let Some(entry) = self.peers.get_mut(peer) else {
                continue;
            };
            let connected = entry.gate.is_some();
            if !connected && !entry.wanted {
                continue;
            }
            entry.remember_unacked(id);
            if connected {
                self.actions.push_back(Action::Send { peer: *peer, id });
            }
            owing.push(*peer);
        }
        owing
    }

    /// Stops every retry and attempt: nothing more is started.
    pub fn shutdown(&mut self) {
        self.closing = true;
        self.actions.clear();
        for entry in self.peers.values_mut() {
            entry.attempt = Attempt::Idle;
            entry.retry_at = None;
            entry.upgrade_at = None;
            entry.replacement = None;
        }
        for tracker in &mut self.trackers {
            tracker.queue.clear();
        }
    }

    // ---------------------------------------------------------- connecting --

    /// Begins an attempt toward `peer`: through an up tracker that knows it,
    /// else by address.
    fn start_attempt(&mut self, peer: PeerId, now: Instant) {
        let up = |ix: &TrackerIx| self.trackers.get(*ix).is_some_and(TrackerEntry::is_up);
        let entry = self.peers.get(&peer);
        let known_at = entry.and_then(|p| p.trackers.iter().copied().find(up));
        let only_known = entry.is_some_and(|p| p.only_known_trackers);
        let tracker =
            known_at.or_else(|| (0..self.trackers.len()).find(up).filter(|_| !only_known));
        let entry = self.peers.entry(peer).or_default();
        entry.retry_at = None;
        let relayed = entry.gate.is_some();
        if let Some(tracker) = tracker {
            entry.attempt = Attempt::Queued { tracker };
            self.trackers[tracker].queue.push_back(peer);
            self.release_queued(now);
        } else if !entry.addrs.is_empty() {
            entry.attempt = Attempt::Dialing;
            let addrs = entry.addrs.clone();
            self.actions.push_back(Action::DialDirect { peer, addrs });
        } else {
            // No way to reach it now; a tracker coming up retries it, and
            // one found through the DHT is looked up again.
            self.seek_route(peer, now);
            return;
        }
        if !relayed {
            self.report(Report::Connecting(peer));
        }
    }

    /// Sends the queued introduction requests the trackers' pacing allows.
    fn release_queued(&mut self, now: Instant) {
        let timeout = self.config.introduction_timeout;
        for (tracker, entry) in self.trackers.iter_mut().enumerate() {
            while let Some(peer) = entry.queue.front().copied() {
                let still_queued = self
                    .peers
                    .get(&peer)
                    .is_some_and(|p| p.attempt == Attempt::Queued { tracker });
                if !still_queued {
                    entry.queue.pop_front();
                    continue;
                }
                if !entry.pacing.try_take(now) {
                    break;
                }
                entry.queue.pop_front();
                if let Some(p) = self.peers.get_mut(&peer) {
                    p.attempt = Attempt::Introducing {
                        tracker,
                        deadline: now + timeout,
                    };
                }
                self.actions
                    .push_back(Action::RequestIntroduction { tracker, peer });
            }
        }
    }

    /// How long a punch runs alone before the relay joins.
    fn relay_race_delay(&self, tracker: TrackerIx) -> Duration {
        let rtt = self
            .trackers
            .get(tracker)
            .map_or(Duration::from_millis(100), |t| t.rtt);
        let (low, high) = self.config.relay_race;
        (rtt * 2).clamp(low, high)
    }

    /// The dialer's punch toward `peer` found no direct path (`why`).
    pub fn handle_punch_failed(&mut self, peer: PeerId, attempt: u64, why: String, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let Attempt::Punching {
            attempt: current,
            tracker,
            punch_running,
            relay,
            ..
        } = &mut entry.attempt
        else {
            return;
        };
        if *current != attempt {
            return;
        }
        *punch_running = false;
        let tracker = *tracker;
        if entry.gate.is_some() {
            // Relayed, and no direct path yet: try again later.
            entry.attempt = Attempt::Idle;
            self.schedule_upgrade(peer, now);
            return;
        }
        match *relay {
            RelayLeg::Dialing => {} // the relay may still win
            RelayLeg::At(_) => {
                // Nothing direct will come: the relay joins now.
                *relay = RelayLeg::Dialing;
                self.actions.push_back(Action::DialRelay { peer, tracker });
            }
            RelayLeg::Out => {
                let why = match (self.config.relay, self.relay_unavailable(tracker)) {
                    (RelayPolicy::Never, _) => {
                        format!("{why}; relaying is off on this node (--no-relay)")
                    }
                    (_, Some(missing)) => format!("{why}; no relay: {missing}"),
                    (_, None) => format!("{why}; the relay failed too"),
                };
                self.fail_attempt(peer, why, now);
            }
        }
    }

    /// Dialing `peer` through the relay failed.
    pub fn handle_relay_failed(&mut self, peer: PeerId, why: String, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let Attempt::Punching {
            punch_running,
            relay,
            ..
        } = &mut entry.attempt
        else {
            return;
        };
        *relay = RelayLeg::Out;
        if !*punch_running && entry.gate.is_none() {
            self.fail_attempt(peer, format!("through the relay: {why}"), now);
        }
    }

    /// Dialing `peer` by address (no tracker) failed.
    pub fn handle_dial_failed(&mut self, peer: PeerId, why: String, now: Instant) {
        if self.peers.get(&peer).map(|p| &p.attempt) == Some(&Attempt::Dialing) {
            self.fail_attempt(peer, why, now);
        }
    }

    fn fail_attempt(&mut self, peer: PeerId, why: String, now: Instant) {
        let entry = self.entry(peer);
        entry.attempt = Attempt::Idle;
        if entry.gate.is_some() {
            return;
        }
        entry.failures += 1;
        let (wanted, failures) = (entry.wanted, entry.failures);
        let retry_in =
            (wanted && !self.closing).then(|| self.config.retry.delay(failures, &mut self.jitter));
        self.entry(peer).retry_at = retry_in.map(|delay| now + delay);
        self.report(Report::Unreachable {
            peer,
            why,
            retry_in,
        });
        self.seek_route(peer, now);
    }

    fn schedule_upgrade(&mut self, peer: PeerId, now: Instant) {
        if self.config.relay != RelayPolicy::Fallback || self.closing {
            return;
        }
        let entry = self.entry(peer);
        entry.upgrade_failures += 1;
        let failures = entry.upgrade_failures;
        let delay = self.config.upgrade.delay(failures, &mut self.jitter);
        self.entry(peer).upgrade_at = Some(now + delay);
    }

    // ---------------------------------------------------------------- gates --

    /// A connection to `peer` authenticated and greeted (dialed or
    /// accepted). Decides whether it becomes the gate: of two live
    /// connections, a direct path beats a relayed one; otherwise the one
    /// dialed by the smaller id stays, and a new one from the same dialer
    /// replaces the old (a reconnect). Both sides decide alike without
    /// talking.
    pub fn handle_gate_ready(&mut self, peer: PeerId, gate: GateFacts, now: Instant) {
        let closing = self.closing;
        let entry = self.entry(peer);
        if closing {
            self.actions.push_back(Action::CloseDuplicate {
                peer,
                gate: gate.id,
            });
            return;
        }
        if entry.gate.is_some_and(|old| keeps_over(&old, &gate)) {
            self.actions.push_back(Action::CloseDuplicate {
                peer,
                gate: gate.id,
            });
            return;
        }
        let previous = entry.gate.take();
        let replaces = previous.or(entry.replacement.take().map(|(old, _)| old));
        entry.replacement = None;
        entry.gate = Some(gate);
        entry.failures = 0;
        entry.retry_at = None;
        if gate.path == PathKind::Direct {
            entry.upgrade_at = None;
            entry.upgrade_failures = 0;
            // Whatever attempt ran has what it wanted.
            if !matches!(entry.attempt, Attempt::Idle) {
                entry.attempt = Attempt::Idle;
            }
        } else if let Attempt::Punching { relay, .. } = &mut entry.attempt {
            // The relay is up; the punch may still find a direct path.
            *relay = RelayLeg::Out;
        }
        let resend: Vec<MessageId> = entry.unacked.iter().copied().collect();
        // The attempt (ours or the peer's) may still find a direct path.
        let punching = entry.attempt.punch().is_some();
        self.actions.push_back(Action::Install {
            peer,
            gate: gate.id,
            replaces,
        });
        if let Some(old) = previous {
            self.actions
                .push_back(Action::CloseDuplicate { peer, gate: old.id });
        }
        // Whatever the old path still owed, in order, on the new one.
        for id in resend {
            self.actions.push_back(Action::Send { peer, id });
        }
        self.actions.push_back(Action::Sync { peer });
        if gate.path == PathKind::Relay && !punching {
            self.entry(peer).attempt = Attempt::Idle;
            self.schedule_upgrade(peer, now);
        }
    }

    /// The connection `gate` to `peer` ended.
    pub fn handle_gate_closed(&mut self, peer: PeerId, gate: GateId, end: GateEnd, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        let current = entry.gate.filter(|g| g.id == gate);
        let Some(facts) = current else {
            // A connection that lost a race or was replaced; whatever was in
            // flight on it is pulled again over the current one.
            if entry.gate.is_some() {
                self.actions.push_back(Action::Sync { peer });
            }
            return;
        };
        entry.gate = None;
        entry.upgrade_at = None;
        match end {
            GateEnd::Duplicate => {
                entry.replacement = Some((facts, now + self.config.replacement_grace));
            }
            GateEnd::PathDied(reason) => {
                // The peer may have moved: its DHT record (if that is how
                // it was found) may be looked up again at once.
                entry.looked_up_at = None;
                self.report(Report::Gone { peer, reason });
                self.retry_soon(peer, now);
            }
            GateEnd::Closed(reason) => {
                // Closed on purpose: no reconnecting until wanted again.
                self.entry(peer).wanted = false;
                self.report(Report::Gone { peer, reason });
            }
            GateEnd::Unneeded => {
                self.entry(peer).wanted = false;
                self.report(Report::ThroughRoom(peer));
            }
        }
    }

    /// An acknowledgement: `peer` committed message `id`.
    pub fn handle_acked(&mut self, peer: PeerId, id: MessageId) {
        if let Some(entry) = self.peers.get_mut(&peer) {
            entry.acked(id);
        }
    }

    fn retry_soon(&mut self, peer: PeerId, now: Instant) {
        let closing = self.closing;
        let entry = self.entry(peer);
        if !entry.wanted || closing || entry.attempt != Attempt::Idle {
            return;
        }
        entry.failures += 1;
        let failures = entry.failures;
        let delay = self.config.retry.delay(failures, &mut self.jitter);
        self.entry(peer).retry_at = Some(now + delay);
    }

    // --------------------------------------------------------------- timers --

    /// Fires every timer due at `now`.
    pub fn handle_timeout(&mut self, now: Instant) {
        if self.closing {
            return;
        }
        for tracker in 0..self.trackers.len() {
            if let TrackerState::Down { retry_at } = self.trackers[tracker].state {
                if retry_at <= now {
                    self.trackers[tracker].state = TrackerState::Connecting;
                    self.actions.push_back(Action::ConnectTracker(tracker));
                }
            }
        }
        self.release_queued(now);
        let due: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.next_timer().is_some_and(|at| at <= now))
            .map(|(id, _)| *id)
            .collect();
        for peer in due {
            self.peer_timers(peer, now);
        }
    }

    fn peer_timers(&mut self, peer: PeerId, now: Instant) {
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry.replacement.is_some_and(|(_, at)| at <= now) {
            entry.replacement = None;
            self.report(Report::Gone {
                peer,
                reason: "closed as a duplicate, and no other connection followed".into(),
            });
            self.retry_soon(peer, now);
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        match entry.attempt.clone() {
            Attempt::Introducing { deadline, .. } if deadline <= now => {
                self.fail_attempt(peer, "the tracker did not introduce us in time".into(), now);
            }
            Attempt::Punching {
                relay: RelayLeg::At(at),
                tracker,
                ..
            } if at <= now => {
                if let Attempt::Punching { relay, .. } = &mut entry.attempt {
                    *relay = RelayLeg::Dialing;
                }
                if entry.gate.is_none() {
                    self.actions.push_back(Action::DialRelay { peer, tracker });
                }
            }
            Attempt::Punching { deadline, .. } if deadline <= now => {
                self.fail_attempt(peer, "the attempt did not finish in time".into(), now);
            }
            Attempt::Accepting { deadline, .. } if deadline <= now => {
                // The peer's attempt is over: this node may lead the next.
                entry.attempt = Attempt::Idle;
                match entry.gate {
                    Some(gate) if gate.path == PathKind::Relay => self.schedule_upgrade(peer, now),
                    Some(_) => {}
                    None if entry.wanted => {
                        let why = "the peer's attempt brought no connection in time";
                        self.fail_attempt(peer, why.into(), now);
                    }
                    None => {}
                }
            }
            _ => {}
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry.retry_at.is_some_and(|at| at <= now) {
            entry.retry_at = None;
            if entry.wanted && entry.gate.is_none() && entry.attempt == Attempt::Idle {
                self.start_attempt(peer, now);
            }
        }
        let Some(entry) = self.peers.get_mut(&peer) else {
            return;
        };
        if entry.upgrade_at.is_some_and(|at| at <= now) {
            entry.upgrade_at = None;
            let relayed = entry.gate.is_some_and(|g| g.path == PathKind::Relay);
            if relayed && entry.attempt == Attempt::Idle {
                self.start_attempt(peer, now);
            }
        }
    }
}

/// Of two open connections to one peer, whether `old` stays rather than
/// `new`: a direct path beats a relayed one, and a direct path over IPv6
/// one over IPv4 (no NAT on it to time out); otherwise the connection
/// dialed by the smaller id wins, and a new one from the same dialer
/// replaces the old (a reconnect).
fn keeps_over(old: &GateFacts, new: &GateFacts) -> bool {
    match (old.path, new.path) {
        (PathKind::Direct, PathKind::Relay) => true,
        (PathKind::Relay, PathKind::Direct) => false,
        (PathKind::Direct, PathKind::Direct) if old.ipv6 != new.ipv6 => old.ipv6,
        _ => old.dialer != new.dialer && old.dialer < new.dialer,
    }
}
