//! What a node reports: one [`Event`] per thing that happened. Serialised as
//! one JSON object per line with a string field `event`, this is the `--json`
//! contract of DESIGN.md and README.md; fields are only ever added.

use std::net::SocketAddr;
use std::time::Duration;

use serde::Serialize;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

/// Where a peer stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PeerStatus {
    /// Known (from the tracker), not connected yet.
    Known,
    Connecting,
    Connected,
    /// A member of a shared room with no connection of its own: the room's
    /// gossip reaches it through other members (`/peers` shows an offline
    /// peer so while the trackers still list it in a room both are in).
    InRoom,
    /// Left, unreachable, or its connection died.
    Offline,
}

/// How a gate's packets travel.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum PathKind {
    Direct,
    Relay,
}

impl std::fmt::Display for PathKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            PathKind::Direct => "direct",
            PathKind::Relay => "relay",
        })
    }
}

/// One line of `/peers`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct PeerInfo {
    pub peer_id: String,
    pub name: String,
    pub status: PeerStatus,
    pub path: Option<PathKind>,
    pub remote: Option<SocketAddr>,
    pub rtt_ms: Option<f64>,
    /// How long the current connection has been up.
    pub connected_secs: Option<u64>,
    /// Seconds since this node last heard from the peer.
    pub last_seen_secs: Option<u64>,
    pub rooms: Vec<String>,
}

/// One line of `/show`: a live connection.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct GateInfo {
    pub peer_id: String,
    pub name: String,
    pub path: PathKind,
    pub remote: SocketAddr,
    pub rtt_ms: f64,
    /// UDP bytes received and sent on this connection.
    pub bytes_in: u64,
    pub bytes_out: u64,
    pub age_secs: u64,
}

/// Phases of a dialed punch, for the `connected` event (absent when they
/// do not apply: an accepted connection, a relayed or addressed dial).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct SetupPhases {
    /// From asking the tracker for the introduction to receiving it: the
    /// time before `setup_ms` starts.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub introduction_ms: Option<f64>,
    /// From the introduction to the peer's first probe arriving (the peer's
    /// NAT is open toward this node from half a round trip before).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub first_probe_ms: Option<f64>,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum Event {
    /// The node is up: its id, its socket, and what the tracker sees.
    Ready {
        peer_id: String,
        name: String,
        addr: SocketAddr,
        reflexive: Option<SocketAddr>,
        /// The first tracker, `PEERID@host:port`.
        tracker: Option<String>,
        /// Every tracker whose key is known, in the order given.
        trackers: Vec<String>,
        /// Connecting and registering with the trackers, in milliseconds.
        tracker_ms: Option<f64>,
    },
    /// A tracker started (the `tracker` command); `target` is what nodes
    /// pass as `--tracker`.
    #[serde(rename = "ready")]
    TrackerReady {
        peer_id: String,
        addr: SocketAddr,
        target: String,
        role: &'static str,
    },
    /// The session with a tracker was lost (`state: "lost"`; the node
    /// retries with backoff, connected peers stay connected) or is back
    /// (`"back"`: registered again, rooms joined again), or a guest
    /// session (with a peer's tracker) was closed as no longer needed
    /// (`"closed"`; opened again when needed), or a session unused for a
    /// while was parked (`"parked"`: the tracker keeps the registration
    /// without a connection) or is on a connection again (`"resumed"`).
    Tracker {
        state: TrackerLink,
        tracker_id: Option<String>,
        addr: Option<String>,
        reason: Option<String>,
    },
    /// This node's record on the DHT was published (`state:
    /// "published"`, with its sequence number and how many trackers it
    /// lists) or could not be (`"failed"`, with the reason; tried again
    /// with backoff).
    Dht {
        state: DhtState,
        seq: Option<i64>,
        trackers: usize,
        reason: Option<String>,
    },
    /// This node's entry in a room's DHT records was written (`state:
    /// "announced"`), removed after leaving the room (`"withdrawn"`), or
    /// could not be (`"failed"`, with the reason; an announcement is tried
    /// again with backoff), or a lookup of the room's records found
    /// `members` other members (`"found"`; those not reached yet are met
    /// through their own trackers).
    DhtRoom {
        room: String,
        state: DhtRoomState,
        members: Option<usize>,
        reason: Option<String>,
    },
    /// A peer's status changed.
    Peer {
        peer_id: String,
        name: String,
        status: PeerStatus,
        reason: Option<String>,
    },
    Connected {
        peer_id: String,
        name: String,
        path: PathKind,
        remote: SocketAddr,
        rtt_ms: f64,
        /// From the first dial (or the first packet in) to an authenticated,
        /// greeted connection.
        setup_ms: f64,
        /// Of that, up to the authenticated QUIC connection (dialer only);
        /// the rest is the greeting.
        handshake_ms: Option<f64>,
        /// Whether this node dialed.
        dialed: bool,
        /// The dialer's set-up before `setup_ms` began, and within it.
        #[serde(flatten)]
        phases: SetupPhases,
    },
    Disconnected {
        peer_id: String,
        name: String,
        reason: String,
    },
    /// A connected peer's path changed: a relayed connection was replaced
    /// by a direct one (or the reverse). `remote` is where packets go now
    /// (the tracker's address for the relay).
    Path {
        peer_id: String,
        name: String,
        path: PathKind,
        remote: SocketAddr,
    },
    /// The tracker's counters (`punchgate tracker --stats SECS`).
    TrackerStats {
        #[serde(flatten)]
        stats: crate::tracker::TrackerStats,
    },
    Message {
        id: String,
        from: String,
        from_name: String,
        room: String,
        text: String,
        /// Milliseconds since the Unix epoch, by the author's clock.
        ts: u64,
        #[serde(skip_serializing_if = "std::ops::Not::not")]
        history: bool,
    },
    /// This node sent a message to `peers` connected room members.
    Sent {
        id: String,
        room: String,
        text: String,
        peers: usize,
        /// Names of room members not connected now: history sync delivers
        /// the message to them when they are. Empty in a room large enough
        /// for gossip, where members not connected get it through others.
        pending: Vec<String>,
    },
    /// `peer_id` acknowledged the message `id`.
    Delivered {
        id: String,
        peer_id: String,
        /// From sending to the acknowledgement.
        ack_ms: f64,
    },
    Joined {
        room: String,
        members: usize,
    },
    /// Another peer joined (`change: "joined"`) or left (`"left"`) a room
    /// this node is in, as the peer itself or a tracker says.
    Member {
        room: String,
        peer_id: String,
        name: String,
        change: MemberChange,
    },
    /// Plain lines now go privately to one peer (`/switch PEER`), or back
    /// to the current room (`/switch`: `peer_id` and `name` are null).
    Switched {
        peer_id: Option<String>,
        name: Option<String>,
        room: Option<String>,
    },
    /// A peer reached by address alone presented a key seen for the first
    /// time at that address: it is trusted from now on (remembered in
    /// `known_peers`) and a different key there will be refused.
    Trusted {
        addr: String,
        peer_id: String,
        fingerprint: String,
    },
    Left {
        room: String,
    },
    Peers {
        peers: Vec<PeerInfo>,
    },
    Gates {
        gates: Vec<GateInfo>,
    },
    /// The answer of `punchgate bench`: `kind` is handshake, punch or
    /// throughput; `report` its figures.
    Bench {
        kind: String,
        peer: String,
        report: serde_json::Value,
    },
    /// This node measured its NAT through a tracker session (at every
    /// session's start) and told that tracker, which hands it to peers for
    /// birthday punching (docs/NAT.md). `mapping`: `endpoint-independent`,
    /// `endpoint-dependent` or `unknown`; `filtering`: `open` (a new port
    /// of a contacted address gets in), `address-and-port-dependent` or
    /// `unknown`.
    Nat {
        tracker: usize,
        mapping: String,
        filtering: String,
    },
    /// The answer of `punchgate netcheck`.
    Netcheck {
        /// The address the tracker sees this node at.
        public: SocketAddr,
        /// The address the tracker's second port sees (same = endpoint-independent mapping).
        second_port_view: Option<SocketAddr>,
        mapping: String,
        filtering: String,
        /// A probe from a port this node never contacted got in.
        unsolicited_admitted: bool,
        /// A probe to this node's own public address came back.
        hairpin: bool,
        rtt_ms: f64,
        /// What it means for connecting to peers.
        verdict: String,
        /// This node's global IPv6 addresses (its IPv6 candidates).
        ipv6_addrs: Vec<SocketAddr>,
        /// IPv6 reachability: `"tracker"` (the tracker was reached over
        /// IPv6), `"global"` (global addresses, the tracker reached over
        /// IPv4), or `"none"` (IPv4 only).
        ipv6: String,
        /// Which protocol the router answered a port-mapping request in:
        /// `"pcp"`, `"nat-pmp"`, `"upnp"`; `"none"` when none did, `"off"`
        /// with `--no-port-mapping`.
        port_mapping: String,
        /// The address the router mapped the gate socket at.
        mapped_addr: Option<SocketAddr>,
        /// Why there is no mapping, when there is none (and it was on).
        port_mapping_note: Option<String>,
    },
    /// Router port mapping changed: `status` is `mapped` (a new external
    /// address), `renewed`, `lost` (the lease ran out unrenewed; asking
    /// again), `unavailable` (no PCP, NAT-PMP or UPnP-IGD server answered
    /// the gateway; asked again later) or `released` (at shutdown).
    PortMapping {
        status: String,
        /// `pcp`, `nat-pmp` or `upnp`, while mapped.
        protocol: Option<String>,
        /// The mapped address: peers reach the gate socket there.
        external: Option<SocketAddr>,
        /// The lease granted, in seconds (0: permanent).
        lifetime_s: Option<u64>,
    },
    Rooms {
        rooms: Vec<String>,
    },
    /// A peer offered content to a room this node is in (`/send`).
    FileOffered {
        from: String,
        from_name: String,
        room: String,
        hash: String,
        name: String,
        bytes: u64,
        files: u32,
    },
    /// The answer of `/files`.
    Files {
        files: Vec<crate::node::FileInfo>,
    },
    /// `punchgate send` serves content: pass `ticket` to `punchgate get`.
    Ticket {
        ticket: String,
        hash: String,
        name: String,
        bytes: u64,
        files: u32,
    },
    /// A running fetch: `bytes` of `total` verified so far (a few times a
    /// second).
    TransferProgress {
        hash: String,
        name: String,
        bytes: u64,
        total: u64,
        /// Files whose every chunk is verified (empty ones from the start),
        /// of `files`.
        files_done: u64,
        files: u64,
        /// Fetch rate of this run so far.
        bytes_per_s: f64,
    },
    /// Chunks of shared content served to one receiver: `bytes` of the
    /// content's `total` so far (chunks it had from before are not asked
    /// for; a chunk asked twice counts twice). At most every 250 ms per
    /// receiver and content, and when the count reaches `total`.
    UploadProgress {
        peer_id: String,
        peer_name: String,
        hash: String,
        name: String,
        bytes: u64,
        total: u64,
    },
    /// A source of a running fetch stopped delivering (`state: "lost"`;
    /// `reason` says why: its connection died, it does not have the
    /// content, it sent a chunk that did not verify) or started (`"added"`:
    /// a holder that offered the content while the fetch ran, or a lost
    /// source back). `sources` counts those delivering now: at 0 the fetch
    /// keeps every verified chunk (`bytes` of `total`) and waits for another
    /// holder to offer the content.
    TransferSource {
        hash: String,
        name: String,
        peer_id: String,
        peer_name: String,
        state: SourceChange,
        reason: Option<String>,
        sources: usize,
        bytes: u64,
        total: u64,
    },
    /// A fetch completed: every byte verified and in place. `path` is the
    /// top-level file or folder it created.
    TransferDone {
        path: String,
        #[serde(flatten)]
        report: crate::node::FetchReport,
    },
    Help {
        commands: Vec<HelpLine>,
    },
    Info {
        message: String,
    },
    Error {
        message: String,
    },
    /// The local web page is served: open `url` (it carries the page's
    /// secret) in a browser.
    Web {
        url: String,
    },
}

/// One line of `/help`: a command's usage and what it does.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct HelpLine {
    pub usage: String,
    pub about: String,
}

impl Event {
    pub fn error(message: impl std::fmt::Display) -> Self {
        Event::Error {
            message: message.to_string(),
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).unwrap_or_else(|e| {
            format!(r#"{{"event":"error","message":"cannot serialise an event: {e}"}}"#)
        })
    }
}

/// Milliseconds of a duration, as shown in events.
/// How publishing this node's DHT record went, in an [`Event::Dht`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhtState {
    Published,
    Failed,
}

/// Whether a tracker session is there, in a [`Event::Tracker`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TrackerLink {
    Lost,
    Back,
    Closed,
    /// The registration is kept without a connection, idle (the doorbell).
    Parked,
    /// A parked registration is on a connection again.
    Resumed,
}

/// What happened to a room on the DHT, in an [`Event::DhtRoom`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DhtRoomState {
    Announced,
    Failed,
    Found,
    Withdrawn,
}

/// Whether a peer joined or left a room, in an [`Event::Member`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum MemberChange {
    Joined,
    Left,
}

/// What happened to a source of a fetch, in an [`Event::TransferSource`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum SourceChange {
    Lost,
    Added,
}

/// A delay as people read it: `800 ms`, `2.5 s`, `30 s`.
pub fn seconds_text(duration: Duration) -> String {
    if duration < Duration::from_secs(1) {
        format!("{} ms", duration.as_millis())
    } else {
        format!("{:.1} s", duration.as_secs_f64()).replace(".0 s", " s")
    }
}

pub fn millis(duration: Duration) -> f64 {
    (duration.as_secs_f64() * 1e6).round() / 1e3
}

/// A node's event stream, with a helper to wait for a particular event. It
/// ends once the node has shut down and every event before that was read.
pub struct Events {
    receiver: mpsc::UnboundedReceiver<Event>,
    /// Cancelled at the end of the node's shutdown.
    ended: CancellationToken,
}

#[derive(Debug, thiserror::Error)]
pub enum WaitError {
    #[error("timed out after {0:?} waiting for an event")]
    Timeout(Duration),
    #[error("the node stopped")]
    Closed,
}

impl Events {
    pub(crate) fn new(receiver: mpsc::UnboundedReceiver<Event>, ended: CancellationToken) -> Self {
        Self { receiver, ended }
    }

    /// An event already waiting, if any (never waits).
    pub fn try_next(&mut self) -> Option<Event> {
        self.receiver.try_recv().ok()
    }

    /// The next event; `None` once the node has shut down (or is gone) and
    /// every event it emitted was read.
    pub async fn next(&mut self) -> Option<Event> {
        tokio::select! {
            biased;
            event = self.receiver.recv() => event,
            () = self.ended.cancelled() => self.receiver.try_recv().ok(),
        }
    }

    /// Skips events until one makes `pick` return `Some`, with a deadline.
    pub async fn wait_for<T>(
        &mut self,
        deadline: Duration,
        mut pick: impl FnMut(&Event) -> Option<T>,
    ) -> Result<T, WaitError> {
        let wait = async {
            while let Some(event) = self.next().await {
                if let Some(found) = pick(&event) {
                    return Ok(found);
                }
            }
            Err(WaitError::Closed)
        };
        tokio::time::timeout(deadline, wait)
            .await
            .map_err(|_| WaitError::Timeout(deadline))?
    }
}
