//! The connection manager's vocabulary: what it is told (gate facts, how a
//! gate ended, why an introduction was refused), how it is configured, and
//! what it asks for (actions) and reports to the user.

use std::net::SocketAddr;
use std::time::Duration;

use super::backoff::Backoff;
use crate::identity::PeerId;
use crate::node::events::PathKind;
use crate::node::relay::RelayPolicy;
use crate::protocol::MessageId;
use crate::punch::Role;

/// A gate's connection, by quinn's stable id.
pub type GateId = usize;
/// A tracker, by its place in the node's list of trackers.
pub type TrackerIx = usize;

/// What the manager needs to know of a greeted connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct GateFacts {
    pub id: GateId,
    pub path: PathKind,
    /// Which side dialed: decides which of two simultaneous connections stays.
    pub dialer: PeerId,
    /// Whether the path runs over IPv6 (both ends see the same family).
    pub ipv6: bool,
}

/// How a gate ended.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum GateEnd {
    /// The peer (or this node) keeps another connection instead.
    Duplicate,
    /// The path failed (idle timeout, reset): worth reconnecting.
    PathDied(String),
    /// Someone closed it on purpose (goodbye, refusal, protocol error).
    Closed(String),
    /// No room's gossip needs the link: the peer stays a member, reached
    /// through the others; not reconnected until wanted again.
    Unneeded,
}

/// Why the tracker did not introduce this node to a peer.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum IntroductionRefused {
    /// Too many requests: retried after a backoff.
    RateLimited,
    /// Anything else (the peer left, the tracker went away), in words.
    Other(String),
}

/// How the manager is tuned. Defaults in [`ManagerConfig::default`].
#[derive(Clone, Debug)]
pub struct ManagerConfig {
    pub relay: RelayPolicy,
    /// A punch runs alone for twice the tracker's round-trip time, within
    /// these bounds, before the relay joins the race (happy eyeballs).
    /// Default 200 ms to 1 s: a direct path on a LAN or loopback wins
    /// outright; across the world the relay starts well before a punch
    /// would give up.
    pub relay_race: (Duration, Duration),
    /// Retries of failed attempts to reach a wanted peer. Default 500 ms
    /// doubling to 30 s.
    pub retry: Backoff,
    /// Retries of direct paths while relayed. Default 1 s doubling to 30 s.
    pub upgrade: Backoff,
    /// Retries of a lost tracker session. Default 250 ms doubling to 30 s.
    pub tracker_retry: Backoff,
    /// How long an introduction may take before the request counts as
    /// failed. Default 10 s.
    pub introduction_timeout: Duration,
    /// The longest one attempt may take after its introduction (a punch
    /// that never reports back). Default 30 s.
    pub attempt_timeout: Duration,
    /// How long this node, introduced as the acceptor, leaves the attempt
    /// to the peer (starting none of its own toward it) when no gate
    /// comes of it. Default 15 s: longer than a punch (10 s), so that a
    /// dialer that failed and tries again renews it first.
    pub accept_timeout: Duration,
    /// After the peer closed a gate as a duplicate, how long its
    /// replacement may take before the peer counts as gone. Default 10 s.
    pub replacement_grace: Duration,
    /// Introduction requests per second per tracker (and the burst).
    /// Default 10, half the tracker's default per-peer limit, which also
    /// counts joins and other requests.
    pub introductions_per_second: u32,
    /// Seed of the retry jitter.
    pub seed: u64,
    /// Answer introductions from any peer, not only from those wanted or
    /// sharing a room: this node publishes its DHT record, so peers that
    /// found it there (and share no room) ask trackers to introduce them.
    /// The tracker introduces strangers only to nodes that registered as
    /// findable. Default off.
    pub answer_strangers: bool,
    /// How often the record of a peer found through the DHT may be looked
    /// up again when none of its trackers can introduce it (it may have
    /// moved to others). Default 20 s.
    pub relookup: Duration,
}

impl Default for ManagerConfig {
    fn default() -> Self {
        Self {
            relay: RelayPolicy::default(),
            relay_race: (Duration::from_millis(200), Duration::from_secs(1)),
            retry: Backoff::new(Duration::from_millis(500), Duration::from_secs(30)),
            upgrade: Backoff::new(Duration::from_secs(1), Duration::from_secs(30)),
            tracker_retry: Backoff::new(Duration::from_millis(250), Duration::from_secs(30)),
            introduction_timeout: Duration::from_secs(10),
            attempt_timeout: Duration::from_secs(30),
            accept_timeout: Duration::from_secs(15),
            replacement_grace: Duration::from_secs(10),
            introductions_per_second: 10,
            seed: 1,
            answer_strangers: false,
            relookup: Duration::from_secs(20),
        }
    }
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Connect and register with this tracker; report with
    /// [`Manager::handle_tracker_up`] or [`Manager::handle_tracker_failed`].
    ConnectTracker(TrackerIx),
    /// The tracker is back after a loss: join the rooms again, reopen the
    /// relay stream, announce the offers again.
    RestoreTracker(TrackerIx),
    /// Ask the tracker to introduce this node to `peer`; report the
    /// introduction ([`Manager::handle_introduced`]) or the refusal.
    RequestIntroduction { tracker: TrackerIx, peer: PeerId },
    /// Run the punch the introduction asked for; a dialer's failure comes
    /// back through [`Manager::handle_punch_failed`], success as a gate.
    Punch {
        peer: PeerId,
        attempt: u64,
        role: Role,
    },
    /// Stop the punch of `attempt` if it still runs: the pair settled on
    /// another attempt (both sides had asked for an introduction at once).
    AbandonPunch { peer: PeerId, attempt: u64 },
    /// Dial `peer` through the tracker's relay; failure comes back through
    /// [`Manager::handle_relay_failed`], success as a gate.
    DialRelay { peer: PeerId, tracker: TrackerIx },
    /// Dial `peer` at these addresses (no tracker); failure comes back
    /// through [`Manager::handle_dial_failed`].
    DialDirect {
        peer: PeerId,
        addrs: Vec<SocketAddr>,
    },
    /// Make this greeted connection the peer's gate. `replaces` is the
    /// gate it takes over from (a change of path), if any.
    Install {
        peer: PeerId,
        gate: GateId,
        replaces: Option<GateFacts>,
    },
    /// Close this connection as a duplicate: the peer keeps another.
    CloseDuplicate { peer: PeerId, gate: GateId },
    /// Write this message to the peer's current gate, after those before.
    Send { peer: PeerId, id: MessageId },
    /// Pull what the peer has that this node lacks, over the current gate.
    Sync { peer: PeerId },
    /// Look `peer`'s DHT record up again (none of its trackers can
    /// introduce it now); report a new tracker by connecting through it, or
    /// the failure ([`Manager::handle_lookup_failed`]).
    LookUp { peer: PeerId },
    /// Tell the user.
    Report(Report),
}

/// What the user should hear about.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Report {
    /// An attempt to reach a peer that has no gate began.
    Connecting(PeerId),
    /// An attempt failed; `retry_in` when it will be tried again.
    Unreachable {
        peer: PeerId,
        why: String,
        retry_in: Option<Duration>,
    },
    /// The peer's gate ended and no other replaced it.
    Gone {
        peer: PeerId,
        reason: String,
    },
    /// The peer's gate closed as no longer needed by any room's gossip:
    /// the peer is still in the room, reached through the others.
    ThroughRoom(PeerId),
    TrackerLost {
        tracker: TrackerIx,
        reason: String,
        retry_in: Duration,
    },
    TrackerBack(TrackerIx),
}
