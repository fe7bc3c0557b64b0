//! What the connection manager knows about one peer: whether it is wanted,
//! its gate (the one live connection), the attempt under way, the retry and
//! upgrade timers, and the messages it still owes an acknowledgement for.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::Instant;

use super::{GateFacts, TrackerIx};
use crate::node::events::PathKind;
use crate::protocol::MessageId;
use crate::punch::Role;

/// Messages remembered per peer for resending; beyond this the oldest are
/// left to history sync (a peer that never acknowledges must not grow it).
pub const MAX_UNACKED_PER_PEER: usize = 10_000;

#[derive(Debug, Default)]
pub(super) struct PeerEntry {
    /// Keep this peer connected: it shares a room with this node, or was
    /// asked for (`--connect`, `/connect`, bootstrap). Retries run only
    /// while it is wanted.
    pub wanted: bool,
    /// Shares a room with this node, wanted or not: its introductions are
    /// answered (with gossip, a member this node does not seek may seek it).
    pub welcome: bool,
    /// Addresses to dial without a tracker (a `PEERID@host:port` target).
    pub addrs: Vec<SocketAddr>,
    /// Trackers that know this peer (it shares a room there).
    pub trackers: Vec<TrackerIx>,
    /// Only those trackers can introduce it (found through its DHT
    /// record, it shares no room with this node): while none of them is
    /// up, the attempt waits instead of asking another tracker.
    pub only_known_trackers: bool,
    /// When its DHT record was last looked up (for such a peer).
    pub looked_up_at: Option<Instant>,
    pub gate: Option<GateFacts>,
    pub attempt: Attempt,
    /// Consecutive failed attempts; sets the retry delay.
    pub failures: u32,
    pub retry_at: Option<Instant>,
    /// While the gate is relayed: when to try a direct path again.
    pub upgrade_at: Option<Instant>,
    pub upgrade_failures: u32,
    /// The peer closed the gate as a duplicate: it keeps another connection
    /// to this node, which should arrive by this deadline. Until then the
    /// peer is not reported gone.
    pub replacement: Option<(GateFacts, Instant)>,
    /// Sent over a gate and not acknowledged yet, in the order sent.
    pub unacked: VecDeque<MessageId>,
}

/// The connection attempt toward a peer: one at a time, led by this node
/// or (`Accepting`) by the peer.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) enum Attempt {
    #[default]
    Idle,
    /// Waiting for the tracker's request pacing.
    Queued { tracker: TrackerIx },
    /// Asked the tracker for an introduction; it should come by `deadline`.
    Introducing {
        tracker: TrackerIx,
        deadline: Instant,
    },
    /// Introduced as the dialer: the punch runs, and the relay joins the race
    /// at `relay_at` unless a path authenticated first.
    Punching {
        attempt: u64,
        tracker: TrackerIx,
        punch_running: bool,
        relay: RelayLeg,
        deadline: Instant,
    },
    /// Introduced as the acceptor: the peer leads attempt `attempt` (it
    /// dials, and brings the relay in); this node answers its probes and
    /// starts no attempt of its own toward the peer until this one ends
    /// (a gate, or `deadline`).
    Accepting {
        attempt: u64,
        tracker: TrackerIx,
        deadline: Instant,
    },
    /// Dialing known addresses without a tracker.
    Dialing,
}

impl Attempt {
    /// The punch under way toward the peer and which side dials it, if any.
    pub fn punch(&self) -> Option<(u64, Role)> {
        match self {
            Attempt::Punching { attempt, .. } => Some((*attempt, Role::Dialer)),
            Attempt::Accepting { attempt, .. } => Some((*attempt, Role::Acceptor)),
            _ => None,
        }
    }
}

/// The relay's part in one attempt.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum RelayLeg {
    /// Joins the race at this time, if nothing authenticated by then.
    At(Instant),
    Dialing,
    /// Not used in this attempt: not allowed, not available, or it failed.
    Out,
}

impl PeerEntry {
    pub fn has_direct_gate(&self) -> bool {
        self.gate.is_some_and(|g| g.path == PathKind::Direct)
    }

    /// Remembers a message sent over the current gate.
    pub fn remember_unacked(&mut self, id: MessageId) {
        if self.unacked.len() >= MAX_UNACKED_PER_PEER {
            self.unacked.pop_front();
        }
        self.unacked.push_back(id);
    }

    pub fn acked(&mut self, id: MessageId) {
        if let Some(at) = self.unacked.iter().position(|m| *m == id) {
            self.unacked.remove(at);
        }
    }

    /// The earliest of this peer's timers.
    pub fn next_timer(&self) -> Option<Instant> {
        let attempt = match &self.attempt {
            Attempt::Introducing { deadline, .. } => Some(*deadline),
            Attempt::Punching {
                relay: RelayLeg::At(at),
                deadline,
                ..
            } => Some((*at).min(*deadline)),
            Attempt::Punching { deadline, .. } | Attempt::Accepting { deadline, .. } => {
                Some(*deadline)
            }
            Attempt::Idle | Attempt::Queued { .. } | Attempt::Dialing => None,
        };
        [
            attempt,
            self.retry_at,
            self.upgrade_at,
            self.replacement.map(|(_, at)| at),
        ]
        .into_iter()
        .flatten()
        .min()
    }
}
