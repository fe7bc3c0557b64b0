//! What the connection manager knows about one tracker session: up,
//! connecting, or down until a retry time; its round-trip time (which sets
//! how long a punch runs alone before the relay joins); and the pacing of
//! introduction requests, which keeps a node joining a big room under the
//! tracker's per-peer request limit instead of being refused.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use super::peer::Attempt;
use super::{Action, Manager, Report, TrackerIx};
use crate::identity::PeerId;
use crate::rate::TokenBucket;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerState {
    /// A connection and registration are under way.
    Connecting,
    Up,
    /// Lost, or a connection attempt failed; the next one starts then.
    Down {
        retry_at: Instant,
    },
    /// Closed on purpose (a guest session no longer needed): not tried
    /// again until a peer needs it ([`Manager::reach_through`]).
    Closed,
}

#[derive(Debug)]
pub(super) struct TrackerEntry {
    pub state: TrackerState,
    /// Whether it was ever up: the first registration restores nothing.
    pub ever_up: bool,
    /// Consecutive failed connection attempts.
    pub failures: u32,
    pub rtt: Duration,
    /// Peers waiting for a pacing slot to ask for an introduction, in order.
    pub queue: VecDeque<PeerId>,
    pub pacing: TokenBucket,
}

impl TrackerEntry {
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self {
            state: TrackerState::Connecting,
            ever_up: false,
            failures: 0,
            rtt: Duration::from_millis(100),
            queue: VecDeque::new(),
            pacing: TokenBucket::new(per_second, per_second, now),
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == TrackerState::Up
    }
}

/// The manager's inputs about tracker sessions.
impl Manager {
    /// Registered with `tracker` at start, before the node joined its
    /// rooms: there is nothing to restore.
    pub fn handle_tracker_registered(&mut self, tracker: TrackerIx, rtt: Duration, now: Instant) {
        self.tracker_up(tracker, rtt, now, false);
    }

    /// Registered with `tracker` any other time: again after a loss, or
    /// late (it was slow or unreachable at start). Rooms are joined there
    /// and its relay opened.
    pub fn handle_tracker_up(&mut self, tracker: TrackerIx, rtt: Duration, now: Instant) {
        self.tracker_up(tracker, rtt, now, true);
    }

    fn tracker_up(&mut self, tracker: TrackerIx, rtt: Duration, now: Instant, restore: bool) {
        let Some(entry) = self.trackers.get_mut(tracker) else {
            return;
        };
        // Back is news only to whoever heard it was lost.
        let reported_lost = entry.ever_up || entry.failures > 0;
        entry.state = TrackerState::Up;
        entry.ever_up = true;
        entry.failures = 0;
        entry.rtt = rtt;
        if self.closing {
            return;
        }
        if reported_lost {
            self.report(Report::TrackerBack(tracker));
        }
        if restore {
            self.actions.push_back(Action::RestoreTracker(tracker));
        }
        // Peers that waited for a tracker try again now.
        self.retry_waiting(now);
    }

    /// Starts an attempt for every wanted peer without a gate or attempt.
    fn retry_waiting(&mut self, now: Instant) {
        let waiting: Vec<PeerId> = self
            .peers
            .iter()
            .filter(|(_, p)| p.wanted && p.gate.is_none() && p.attempt == Attempt::Idle)
            .map(|(id, _)| *id)
            .collect();
        for peer in waiting {
            self.start_attempt(peer, now);
        }
    }

    /// Attempts a lost tracker left without an introduction go on through
    /// another tracker that is up, if there is one.
    fn retry_through_another_tracker(&mut self, now: Instant) {
        if !self.closing && self.trackers.iter().any(TrackerEntry::is_up) {
            self.retry_waiting(now);
        }
    }

    /// A tracker added at run time (a guest session toward a peer's own
    /// tracker): connecting from now on. Returns its place, which is the
    /// next one in the list.
    pub fn add_tracker(&mut self, now: Instant) -> TrackerIx {
        let per_second = self.config.introductions_per_second;
        self.trackers.push(TrackerEntry::new(per_second, now));
        self.relays.push(Err("no relay stream yet".into()));
        let tracker = self.trackers.len() - 1;
        if !self.closing {
            self.actions.push_back(Action::ConnectTracker(tracker));
        }
        tracker
    }

    /// `peer` can be introduced only through `tracker` (and trackers
    /// already known for it): found through its DHT record, it shares no
    /// room with this node, so no other tracker would introduce it.
    pub fn reach_through(&mut self, peer: PeerId, tracker: TrackerIx, now: Instant) {
        let closing = self.closing;
        if let Some(session) = self.trackers.get_mut(tracker) {
            if session.state == TrackerState::Closed && !closing {
                session.state = TrackerState::Connecting;
                self.actions.push_back(Action::ConnectTracker(tracker));
            }
        }
        let entry = self.entry(peer);
        entry.only_known_trackers = true;
        entry.looked_up_at = Some(now);
        if !entry.trackers.contains(&tracker) {
            entry.trackers.push(tracker);
        }
    }

    /// `peer`, found through its DHT record, has no tracker that can
    /// introduce it now (all down, or one failed): its record is looked up
    /// again (it may have moved), at most once per
    /// [`ManagerConfig::relookup`](super::ManagerConfig::relookup); before
    /// that, an attempt is tried again then.
    pub(super) fn seek_route(&mut self, peer: PeerId, now: Instant) {
        let (relookup, closing) = (self.config.relookup, self.closing);
        let entry = self.entry(peer);
        if !entry.only_known_trackers || !entry.wanted || closing {
            return;
        }
        let due = entry.looked_up_at.map_or(now, |at| at + relookup);
        if due <= now {
            entry.looked_up_at = Some(now);
            self.actions.push_back(Action::LookUp { peer });
        } else {
            entry.retry_at = Some(entry.retry_at.map_or(due, |at| at.min(due)));
        }
    }

    /// Looking `peer`'s record up again failed: a failed attempt, tried
    /// again with backoff while it is wanted.
    pub fn handle_lookup_failed(&mut self, peer: PeerId, why: String, now: Instant) {
        if self.peers.get(&peer).is_some_and(|p| p.gate.is_none()) {
            self.fail_attempt(peer, why, now);
        }
    }

    /// Whether any peer's attempt needs the session with `tracker`: one
    /// runs through it, or a wanted peer without a gate waits for it.
    /// (Whether a relayed gate runs through its relay is the caller's to
    /// know: the manager does not see which relay carries a gate.)
    pub fn tracker_in_use(&self, tracker: TrackerIx) -> bool {
        self.peers.values().any(|peer| {
            let attempt = match peer.attempt {
                Attempt::Queued { tracker: t }
                | Attempt::Introducing { tracker: t, .. }
                | Attempt::Punching { tracker: t, .. }
                | Attempt::Accepting { tracker: t, .. } => t == tracker,
                Attempt::Idle | Attempt::Dialing => false,
            };
            let waits = peer.wanted && peer.gate.is_none() && peer.trackers.contains(&tracker);
            attempt || waits
        })
    }

    /// The session with `tracker` was closed on purpose (a guest session
    /// no longer needed): nothing is retried through it until a peer needs
    /// it again.
    pub fn handle_tracker_closed(&mut self, tracker: TrackerIx) {
        let Some(entry) = self.trackers.get_mut(tracker) else {
            return;
        };
        entry.state = TrackerState::Closed;
        // Opened again later, it is news to nobody.
        entry.ever_up = false;
        entry.failures = 0;
        entry.queue.clear();
        self.relays[tracker] = Err("the guest session is closed".into());
    }

    /// The closed session `tracker` now stands for another tracker: no
    /// peer is known there any more.
    pub fn forget_tracker(&mut self, tracker: TrackerIx) {
        for peer in self.peers.values_mut() {
            peer.trackers.retain(|t| *t != tracker);
        }
    }

    /// A fresh measure of the tracker's round-trip time.
    pub fn handle_tracker_rtt(&mut self, tracker: TrackerIx, rtt: Duration) {
        if let Some(entry) = self.trackers.get_mut(tracker) {
            entry.rtt = rtt;
        }
    }

    /// Whether the tracker's relay stream is open and relaying, or why not.
    pub fn handle_relay_ready(&mut self, tracker: TrackerIx, ready: Result<(), String>) {
        if let Some(slot) = self.relays.get_mut(tracker) {
            *slot = ready;
        }
    }

    /// Why `tracker`'s relay cannot carry a connection, if it cannot.
    pub(super) fn relay_unavailable(&self, tracker: TrackerIx) -> Option<String> {
        match self.relays.get(tracker) {
            Some(Ok(())) => None,
            Some(Err(why)) => Some(why.clone()),
            None => Some("no such tracker".into()),
        }
    }

    /// The session with `tracker` ended. Gates stay; introductions through
    /// it are asked again elsewhere or when it is back.
    pub fn handle_tracker_lost(&mut self, tracker: TrackerIx, reason: String, now: Instant) {
        let Some(entry) = self.trackers.get_mut(tracker) else {
            return;
        };
        if entry.state == TrackerState::Closed {
            return;
        }
        let was_up = entry.is_up();
        entry.failures = 1;
        let retry_in = self.config.tracker_retry.delay(1, &mut self.jitter);
        self.set_tracker_down(tracker, now + retry_in);
        if was_up && !self.closing {
            self.report(Report::TrackerLost {
                tracker,
                reason,
                retry_in,
            });
        }
        self.retry_through_another_tracker(now);
    }

    /// A connection or registration attempt with `tracker` failed. The
    /// first failure of a tracker never reached is reported, like a loss.
    pub fn handle_tracker_failed(&mut self, tracker: TrackerIx, reason: String, now: Instant) {
        let Some(entry) = self.trackers.get_mut(tracker) else {
            return;
        };
        if entry.state == TrackerState::Closed {
            return;
        }
        entry.failures += 1;
        let failures = entry.failures;
        let never_reached = !entry.ever_up && failures == 1;
        let retry_in = self.config.tracker_retry.delay(failures, &mut self.jitter);
        self.set_tracker_down(tracker, now + retry_in);
        if never_reached && !self.closing {
            self.report(Report::TrackerLost {
                tracker,
                reason,
                retry_in,
            });
        }
        self.retry_through_another_tracker(now);
    }

    fn set_tracker_down(&mut self, tracker: TrackerIx, retry_at: Instant) {
        let entry = &mut self.trackers[tracker];
        entry.state = TrackerState::Down { retry_at };
        entry.queue.clear();
        self.relays[tracker] = Err("the tracker is lost".into());
        for peer in self.peers.values_mut() {
            let through_it = match peer.attempt {
                Attempt::Queued { tracker: t } | Attempt::Introducing { tracker: t, .. } => {
                    t == tracker
                }
                _ => false,
            };
            if through_it {
                // Not the peer's fault: tried again when a tracker is up.
                peer.attempt = Attempt::Idle;
            }
        }
    }
}
