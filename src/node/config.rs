//! How a node is configured ([`NodeConfig`], with its defaults) and what
//! can go wrong with it ([`NodeError`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::Duration;

use super::{RelayPolicy, TransferConfig};
use crate::congestion::Congestion;
use crate::endpoint::{self, Liveness, Target};
use crate::identity::PeerId;
use crate::pake::Secret;
use crate::punch::PunchSchedule;
use crate::quota::{HistoryLimits, QuotaExceeded};
use crate::store::StoreError;
use crate::tls;
use crate::tracker::TrackerError;

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Shown to other peers. Default: `anon`.
    pub name: String,
    /// Where the gate socket binds. Default `0.0.0.0:0`.
    pub bind: SocketAddr,
    /// Trackers to register with (`PEERID@host:port`, or `host:port` to
    /// trust on first use). The node meets peers through every one that is
    /// up; one going away changes nothing but a notice. Default: none.
    pub trackers: Vec<Target>,
    /// Rooms to join at start; the last one is where plain lines go.
    /// Default `lobby`.
    pub rooms: Vec<String>,
    /// Peers to dial at start by address (`PEERID@host:port`).
    pub connect: Vec<Target>,
    /// Peers to connect to at start by id alone: through a tracker that
    /// lists them, else through their DHT record (needs `dht`).
    pub connect_ids: Vec<PeerId>,
    /// The Mainline DHT: publish this node's record (while it has
    /// trackers; it registers with them as findable) and look up peers
    /// given by id alone. Default off here; `punchgate chat`, `send` and
    /// `get` turn it on unless `--no-dht` (docs/SECURITY.md says what the
    /// record reveals).
    pub dht: Option<crate::dht::DhtConfig>,
    /// If set, only these peers may connect in.
    pub allow: Option<Vec<PeerId>>,
    /// Most gates at once. Default 64.
    pub max_gates: usize,
    pub liveness: Liveness,
    /// The congestion controller of this node's peer connections (chat and
    /// files share a connection, so one choice serves both). Default: see
    /// [`Congestion`].
    pub congestion: Congestion,
    /// Deadline of one direct connection attempt to a peer. Default 10 s.
    pub connect_timeout: Duration,
    /// How long sending one message to one peer may take before it is left
    /// to history sync (the user sees it pending). Default 10 s.
    pub send_timeout: Duration,
    /// Timing of tracker-coordinated hole punches.
    pub punch: PunchSchedule,
    /// Passwords of password rooms, by room.
    pub passwords: HashMap<String, Secret>,
    /// Answer `punchgate bench` streams (only `bench serve` does).
    pub bench_serve: bool,
    /// How file transfers run.
    pub transfer: TransferConfig,
    /// Whether connections may run through the tracker's relay. Default:
    /// as a fallback when punching fails.
    pub relay: RelayPolicy,
    /// How much history this node keeps per author and per room (see
    /// [`HistoryLimits`] for the defaults).
    pub history: HistoryLimits,
    /// Find room members on the LAN by multicast beacons ([`crate::lan`]).
    /// Default off here; `punchgate chat` turns it on.
    pub lan_discovery: bool,
    /// Measure this node's NAT at each tracker session's start and report
    /// it, so that birthday punches can run where they are needed
    /// (docs/NAT.md). Default on; `punchgate netcheck` turns it off, since
    /// its own measurement must be the first contact with the tracker's
    /// second port.
    pub nat_report: bool,
    /// Ask the home router for a UDP mapping of the gate socket's port
    /// (PCP, NAT-PMP, UPnP-IGD; [`crate::portmap`]) and offer it as a
    /// candidate. Default off here (it talks to the router);
    /// `punchgate chat`, `send`, `get`, `web` and `netcheck` turn it on.
    pub port_mapping: bool,
    /// Rooms' gossip: how many neighbors each member keeps (a room of at
    /// most `gossip.active` + 1 members is a full mesh), and its timers.
    pub gossip: crate::gossip::GossipConfig,
    /// Park a session with one of this node's trackers after it has been
    /// unused this long: the tracker keeps the registration without a
    /// connection, at a few hundred bytes instead of ~44 KiB, and rings
    /// when a peer asks for this node (`crate::doorbell`). Default 60 s;
    /// `None`: never.
    pub park_after: Option<Duration>,
}

/// How long a tracker session stays unused before it parks, by default:
/// long enough that a user's next command or a peer's next connection
/// rarely finds it parked, short enough that an idle crowd costs its
/// tracker little.
pub const DEFAULT_PARK_AFTER: Duration = Duration::from_secs(60);

impl NodeConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            trackers: Vec::new(),
            rooms: vec!["lobby".to_string()],
            connect: Vec::new(),
            connect_ids: Vec::new(),
            dht: None,
            allow: None,
            max_gates: 64,
            liveness: Liveness::default(),
            congestion: Congestion::default(),
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            punch: PunchSchedule::default(),
            passwords: HashMap::new(),
            bench_serve: false,
            transfer: TransferConfig::default(),
            relay: RelayPolicy::default(),
            history: HistoryLimits::default(),
            lan_discovery: false,
            nat_report: true,
            port_mapping: false,
            gossip: crate::gossip::GossipConfig::default(),
            park_after: Some(DEFAULT_PARK_AFTER),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NodeError {
    #[error(transparent)]
    Identity(#[from] crate::identity::IdentityError),
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
    #[error("cannot bind the gate socket on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tracker(#[from] TrackerError),
    /// A key trusted on first use changed, or the data directory failed.
    #[error(transparent)]
    Home(#[from] crate::home::HomeError),
    #[error(transparent)]
    Addr(#[from] endpoint::AddrError),
    #[error(transparent)]
    Dht(#[from] crate::dht::DhtError),
    /// Not possible as asked; the text says why and what to do.
    #[error("{0}")]
    Invalid(String),
    #[error("could not connect to {peer}: {tried}")]
    Unreachable { peer: String, tried: String },
    #[error("no peer named {0:?} is known; give HOST:PORT or PEERID@HOST:PORT")]
    UnknownPeer(String),
    #[error("{0:?} matches several peers; use more of the id")]
    AmbiguousPeer(String),
    #[error("already at the limit of {0} connections")]
    TooManyGates(usize),
    #[error("that is this node's own id")]
    SelfConnect,
    #[error("not in any room: /join one first")]
    NoRoom,
    #[error("not connected to a tracker")]
    NoTracker,
    #[error("the node is shutting down")]
    ShuttingDown,
    #[error(transparent)]
    Message(#[from] crate::protocol::MessageError),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("not sent: #{room} is full here ({reason}); write in another room")]
    HistoryFull { room: String, reason: QuotaExceeded },
}
