//! The manager's side of introductions: a refusal, an introduction as the
//! dialer or the acceptor, and how a pair that asked for each other at
//! about the same time settles on one attempt instead of two.
//!
//! One attempt per pair: an introduction as the acceptor is the peer's
//! attempt, and this node takes it as its own (`Attempt::Accepting`): a
//! request of its own still queued is dropped, and none is started while it
//! runs. A request already sent may still bring a second introduction (a
//! tracker that does not fold crossing requests, or two trackers); of two
//! attempts of one pair, the one dialed by the smaller peer id goes on, and
//! the other's punch is abandoned. Both sides hold both introductions in
//! the end and so decide alike, in whatever order they came.

use std::time::Instant;

use super::peer::{Attempt, RelayLeg};
use super::{Action, IntroductionRefused, Manager, TrackerIx};
use crate::identity::PeerId;
use crate::node::relay::RelayPolicy;
use crate::punch::Role;

impl Manager {
    /// The tracker refused to introduce this node to `peer`.
    pub fn handle_introduction_refused(
        &mut self,
        peer: PeerId,
        refusal: IntroductionRefused,
        now: Instant,
    ) {
        let Some(entry) = self.peers.get(&peer) else {
            return;
        };
        if !matches!(entry.attempt, Attempt::Introducing { .. }) {
            return;
        }
        let why = match refusal {
            IntroductionRefused::RateLimited => {
                // Our own pacing was not enough (other requests count too):
                // quietly again after a pause.
                let entry = self.entry(peer);
                entry.attempt = Attempt::Idle;
                entry.failures += 1;
                let failures = entry.failures;
                let delay = self.config.retry.delay(failures, &mut self.jitter);
                self.entry(peer).retry_at = Some(now + delay);
                return;
            }
            IntroductionRefused::Other(why) => why,
        };
        self.fail_attempt(peer, why, now);
    }

    /// The tracker introduced this node to `peer` for punch `attempt`.
    /// `--allow` and the gate cap are the driver's to check before.
    pub fn handle_introduced(
        &mut self,
        tracker: TrackerIx,
        peer: PeerId,
        attempt: u64,
        role: Role,
        now: Instant,
    ) {
        if self.closing {
            return;
        }
        let entry = self.peers.get(&peer);
        let current = entry.map(|p| p.attempt.clone()).unwrap_or_default();
        // Only for what this node asked for, or a peer it shares a room
        // with: an introduction is not a way to aim its probes at others.
        let welcome = match (role, &current) {
            (
                Role::Dialer,
                Attempt::Queued { .. } | Attempt::Introducing { .. } | Attempt::Accepting { .. },
            ) => true,
            (Role::Dialer, _) => false,
            (Role::Acceptor, _) => {
                self.config.answer_strangers || entry.is_some_and(|p| p.wanted || p.welcome)
            }
        };
        if !welcome {
            return;
        }
        if let Some((running, running_role)) = current.punch() {
            if running == attempt {
                return;
            }
            if !self.replaces(peer, running_role, role) {
                tracing::debug!(peer = %peer.short(), attempt, running, "crossing introduction: the running attempt goes on");
                return;
            }
            tracing::debug!(peer = %peer.short(), attempt, running, "crossing introduction: this one goes on instead");
            self.actions.push_back(Action::AbandonPunch {
                peer,
                attempt: running,
            });
        }
        match role {
            Role::Acceptor => self.accept(tracker, peer, attempt, now),
            Role::Dialer => self.dial(tracker, peer, attempt, now),
        }
    }

    /// Of two attempts of one pair, whether a new one in which this node is
    /// `new` replaces the running one in which it is `running`: a peer that
    /// leads a new attempt gave its old one up; of two attempts led by
    /// different sides, the one dialed by the smaller peer id goes on.
    fn replaces(&self, peer: PeerId, running: Role, new: Role) -> bool {
        if running == new {
            return true;
        }
        let dialer_of_new = match new {
            Role::Dialer => self.me,
            Role::Acceptor => peer,
        };
        let dialer_of_running = if dialer_of_new == peer { self.me } else { peer };
        dialer_of_new < dialer_of_running
    }

    /// The peer leads `attempt`: open this side for it, and start nothing
    /// of our own toward it while it runs.
    fn accept(&mut self, tracker: TrackerIx, peer: PeerId, attempt: u64, now: Instant) {
        if self.config.relay == RelayPolicy::Only {
            if let Some(why) = self.relay_unavailable(tracker) {
                // Only this node's relay stream could bring the peer's
                // dial: the attempt cannot succeed, and the user hears why
                // now, as the dialer would.
                let entry = self.peers.get(&peer);
                if entry.is_some_and(|p| p.wanted && p.gate.is_none()) {
                    let why = format!("direct attempts are off (--relay-only); no relay: {why}");
                    self.fail_attempt(peer, why, now);
                }
                return;
            }
        }
        let deadline = now + self.config.accept_timeout;
        let entry = self.entry(peer);
        // A dial by address (no tracker) goes on beside it.
        if entry.attempt != Attempt::Dialing {
            entry.attempt = Attempt::Accepting {
                attempt,
                tracker,
                deadline,
            };
            entry.retry_at = None;
        }
        // Under --relay-only it comes through the relay, with nothing to open.
        if self.config.relay != RelayPolicy::Only {
            self.actions.push_back(Action::Punch {
                peer,
                attempt,
                role: Role::Acceptor,
            });
        }
    }

    /// This node leads `attempt`: the punch, and the relay racing it.
    fn dial(&mut self, tracker: TrackerIx, peer: PeerId, attempt: u64, now: Instant) {
        let policy = self.config.relay;
        let race = self.relay_race_delay(tracker);
        let relay_missing = self.relay_unavailable(tracker);
        let relay_allowed = policy != RelayPolicy::Never && relay_missing.is_none();
        let deadline = now + self.config.attempt_timeout;
        let entry = self.entry(peer);
        entry.retry_at = None;
        let relayed = entry.gate.is_some();
        let relay = if !relay_allowed || relayed {
            RelayLeg::Out
        } else if policy == RelayPolicy::Only {
            RelayLeg::Dialing
        } else {
            RelayLeg::At(now + race)
        };
        let punch_running = policy != RelayPolicy::Only;
        entry.attempt = Attempt::Punching {
            attempt,
            tracker,
            punch_running,
            relay,
            deadline,
        };
        if punch_running {
            self.actions.push_back(Action::Punch {
                peer,
                attempt,
                role: Role::Dialer,
            });
        } else if relay == RelayLeg::Dialing {
            self.actions.push_back(Action::DialRelay { peer, tracker });
        } else {
            let why = relay_missing.unwrap_or_default();
            self.fail_attempt(
                peer,
                format!("direct attempts are off (--relay-only); no relay: {why}"),
                now,
            );
        }
    }
}
