//! The node: one QUIC endpoint on one gate socket, the session with the
//! tracker, and the gates (one connection per peer, capped). It takes
//! commands ([`Node::execute`] and the methods it calls) and reports
//! everything as [`Event`]s; interfaces only render those.
//!
//! Connection set-up: through a tracker, a coordinated hole punch
//! ([`Node::run_punch`]); when it finds no direct path by its deadline, the
//! same pinned QUIC connection through the tracker's relay, with direct
//! punches retried in the background until one replaces it
//! ([`Node::upgrade_to_direct`]). Without a tracker, a peer is dialed at each
//! of its known addresses, staggered, and the first authenticated handshake
//! wins.

mod auth;
pub mod events;
mod files;
mod gate;
pub mod manager;
mod netcheck;
mod relay;
mod sync;

use std::collections::{BTreeSet, HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::timeout;

pub use events::{Event, Events, PathKind, PeerInfo, PeerStatus};
pub use files::{
    FetchError, FetchReport, FetchRequest, FileInfo, SourceCount, TransferConfig, PIPELINE_DEPTH,
};
use gate::{describe_close, Gate, GateError, Greeted};
pub use relay::RelayPolicy;
use relay::RelayState;

use crate::command::{self, Command};
use crate::endpoint::{self, Liveness, Target};
use crate::gate_socket::{is_relay_addr, GateSocket};
use crate::hlc::{self, Hlc};
use crate::identity::{Identity, PeerId};
use crate::pake::Secret;
use crate::protocol::{
    validate_label, ChatBody, ChatFrame, ControlMessage, Member, MessageId, ProbeMessage,
    SignedMessage, TrackerEvent, TrackerRequestBody, MAX_NAME_LEN, MAX_ROOMS, MAX_ROOM_LEN,
};
use crate::punch::{order_candidates, Punch, PunchAction, PunchSchedule, Role};
use crate::store::{Store, StoreError};
use crate::tls::{self, CertifiedIdentity};
use crate::tracker::client::Registration;
use crate::tracker::{TrackerError, TrackerSession};
use crate::wire::{self, CloseCode, FrameReader, FrameWriter, StreamKind, WireError};

/// The private room of two peers: `@` and the first characters of both ids,
/// in order. Only messages whose author addressed this node this way are
/// taken into it; only the two ever sync it.
pub fn dm_room(a: &PeerId, b: &PeerId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let (low, high) = (low.to_string(), high.to_string());
    format!("@{}+{}", &low[..DM_ID_CHARS], &high[..DM_ID_CHARS])
}

/// Id characters per side in a private room's name (100 bits each).
const DM_ID_CHARS: usize = 20;

/// Pauses before successive reconnection attempts after a path died.
const RECONNECT_BACKOFF: [Duration; 7] = [
    Duration::from_millis(500),
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(16),
    Duration::from_secs(30),
];

/// True when a connection ended because its path failed, not because
/// someone closed it on purpose.
fn path_died(error: &quinn::ConnectionError) -> bool {
    match error {
        quinn::ConnectionError::TimedOut | quinn::ConnectionError::Reset => true,
        quinn::ConnectionError::ApplicationClosed(_)
        | quinn::ConnectionError::ConnectionClosed(_)
        | quinn::ConnectionError::LocallyClosed
        | quinn::ConnectionError::VersionMismatch
        | quinn::ConnectionError::TransportError(_)
        | quinn::ConnectionError::CidsExhausted => false,
    }
}

/// Pauses between attempts to replace a relayed connection with a direct
/// one; the last repeats for as long as the connection is relayed.
const UPGRADE_BACKOFF: [Duration; 6] = [
    Duration::from_secs(1),
    Duration::from_secs(2),
    Duration::from_secs(4),
    Duration::from_secs(8),
    Duration::from_secs(15),
    Duration::from_secs(30),
];

/// How a connection's packets travel: a relay address means through the
/// tracker.
fn path_of(connection: &Connection) -> PathKind {
    if is_relay_addr(&connection.remote_address()) {
        PathKind::Relay
    } else {
        PathKind::Direct
    }
}

/// Delay between handshakes to successive candidates of one peer.
const CANDIDATE_STAGGER: Duration = Duration::from_millis(100);
/// Identifies this implementation in greetings.
const AGENT: &str = concat!("punchgate/", env!("CARGO_PKG_VERSION"));

#[derive(Clone, Debug)]
pub struct NodeConfig {
    /// Shown to other peers. Default: `anon`.
    pub name: String,
    /// Where the gate socket binds. Default `0.0.0.0:0`.
    pub bind: SocketAddr,
    pub tracker: Option<Target>,
    /// Rooms to join at start; the last one is where plain lines go.
    /// Default `lobby`.
    pub rooms: Vec<String>,
    /// Peers to dial at start by address (`PEERID@host:port`).
    pub connect: Vec<Target>,
    /// If set, only these peers may connect in.
    pub allow: Option<Vec<PeerId>>,
    /// Most gates at once. Default 64.
    pub max_gates: usize,
    pub liveness: Liveness,
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
}

impl NodeConfig {
    pub fn new(name: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            bind: SocketAddr::from(([0, 0, 0, 0], 0)),
            tracker: None,
            rooms: vec!["lobby".to_string()],
            connect: Vec::new(),
            allow: None,
            max_gates: 64,
            liveness: Liveness::default(),
            connect_timeout: Duration::from_secs(10),
            send_timeout: Duration::from_secs(10),
            punch: PunchSchedule::default(),
            passwords: HashMap::new(),
            bench_serve: false,
            transfer: TransferConfig::default(),
            relay: RelayPolicy::default(),
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
    #[error(transparent)]
    Addr(#[from] endpoint::AddrError),
    #[error("invalid {0}")]
    Invalid(String),
    #[error("could not connect to {peer}: {tried}")]
    Unreachable { peer: String, tried: String },
    #[error("no peer named {0:?} is known; give PEERID@host:port")]
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
    #[error(transparent)]
    Message(#[from] crate::protocol::MessageError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

struct PeerRecord {
    name: String,
    status: PeerStatus,
    candidates: Vec<SocketAddr>,
    rooms: BTreeSet<String>,
    /// Password rooms the peer has proven the password of, on this connection.
    verified: BTreeSet<String>,
    /// Failed password proofs on this connection.
    auth_failures: u32,
    /// When this node last heard from the peer.
    last_seen: Option<Instant>,
    gate: Option<Arc<Gate>>,
}

impl PeerRecord {
    fn new(name: String) -> Self {
        Self {
            name,
            status: PeerStatus::Known,
            candidates: Vec::new(),
            rooms: BTreeSet::new(),
            verified: BTreeSet::new(),
            auth_failures: 0,
            last_seen: None,
            gate: None,
        }
    }
}

/// A sent message waiting for acknowledgements.
struct Outgoing {
    sent_at: Instant,
    waiting_for: HashSet<PeerId>,
}

/// Sent messages whose acknowledgements are still awaited, at most.
const OUTGOING_CAPACITY: usize = 10_000;

#[derive(Default)]
struct State {
    peers: HashMap<PeerId, PeerRecord>,
    /// Joined rooms in the order joined; plain lines go to the last.
    rooms: Vec<String>,
    /// This node's hybrid logical clock (restored from the store).
    clock: Hlc,
    /// Passwords of this node's password rooms.
    passwords: HashMap<String, Secret>,
    outgoing: HashMap<MessageId, Outgoing>,
    /// Running punches by attempt id: where their probes go.
    punches: HashMap<u64, mpsc::UnboundedSender<SocketAddr>>,
    /// Where netcheck's probes go while it runs.
    netcheck: Option<mpsc::UnboundedSender<(SocketAddr, ProbeMessage)>>,
    /// Callers waiting for a punch toward a peer to end.
    punch_waiters: HashMap<PeerId, Vec<oneshot::Sender<Result<(), String>>>>,
    /// Shared content and offers heard.
    files: files::FileState,
    /// Whether the tracker's relay can carry connections.
    relay: RelayState,
    closing: bool,
}

impl State {
    fn open_gate_count(&self) -> usize {
        self.peers
            .values()
            .filter(|r| r.gate.as_ref().is_some_and(|g| g.is_open()))
            .count()
    }

    /// Whether `record`'s peer counts as a member of `room`: it says it is
    /// in the room and, for a password room, has proven the password.
    fn is_member(&self, record: &PeerRecord, room: &str) -> bool {
        // Private rooms of two are never joined, only derived (`dm_room`).
        !room.starts_with('@')
            && record.rooms.contains(room)
            && (!self.passwords.contains_key(room) || record.verified.contains(room))
    }

    fn has_open_gate(&self, peer: &PeerId) -> bool {
        self.open_gate(peer).is_some()
    }

    /// The peer's gate, if it is open.
    fn open_gate(&self, peer: &PeerId) -> Option<Arc<Gate>> {
        self.peers.get(peer)?.gate.clone().filter(|g| g.is_open())
    }

    /// An open gate on a direct path: nothing left to punch for.
    fn has_direct_gate(&self, peer: &PeerId) -> bool {
        self.peers.get(peer).is_some_and(|r| {
            r.gate
                .as_ref()
                .is_some_and(|g| g.is_open() && path_of(&g.connection) == PathKind::Direct)
        })
    }
}

struct Inner {
    identity: Identity,
    config: NodeConfig,
    endpoint: Endpoint,
    socket: Arc<GateSocket>,
    client: quinn::ClientConfig,
    tracker: Option<TrackerSession>,
    allowed: Option<HashSet<PeerId>>,
    events: mpsc::UnboundedSender<Event>,
    /// Woken whenever a gate is installed (punches watch for theirs).
    gate_installed: Notify,
    state: Mutex<State>,
    next_seq: AtomicU64,
    /// Durable history.
    store: Arc<Store>,
    /// Bounds the chunks read from disk for peers at once.
    chunk_reads: Arc<tokio::sync::Semaphore>,
    /// Paces chunks served when an upload limit is set.
    upload_limit: Option<Mutex<crate::rate::TokenBucket>>,
}

/// A running node. Cloning gives another handle to the same node.
#[derive(Clone)]
pub struct Node {
    inner: Arc<Inner>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// The addresses this node can be reached at on its own networks. Loopback
/// is left out unless the node is bound to it: a remote peer dialing
/// 127.0.0.1 reaches itself, and peers on one host share a LAN address anyway.
fn local_candidates(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|ip| ip.is_ipv4() == bound.is_ipv4() && !ip.is_loopback())
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect()
}

impl Node {
    /// Starts a node with the identity of the data directory `home`: binds,
    /// registers with the tracker if one is configured, joins the configured
    /// rooms and dials the configured peers. Events arrive on the returned
    /// stream, starting with [`Event::Ready`].
    pub async fn start(home: &Path, config: NodeConfig) -> Result<(Node, Events), NodeError> {
        validate_label("name", &config.name, MAX_NAME_LEN).map_err(NodeError::Invalid)?;
        let identity = Identity::load_or_create(home)?;
        let store_home = home.to_path_buf();
        let store = tokio::task::spawn_blocking(move || Store::open(&store_home))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        let (next_seq, clock) = (store.next_seq()?, store.clock()?);
        let store = Arc::new(store);
        let certified = CertifiedIdentity::new(&identity)?;
        let allowed: Option<HashSet<PeerId>> =
            config.allow.clone().map(|list| list.into_iter().collect());
        let policy: tls::IncomingPolicy = match allowed.clone() {
            Some(allowed) => Arc::new(move |peer: &PeerId| allowed.contains(peer)),
            None => tls::allow_any_peer(),
        };
        let transport = config.liveness.transport_config();
        let mut server = certified.server(tls::ALPN_PEER, policy)?;
        server.transport_config(transport.clone());
        let mut client = certified.pinned_client(tls::ALPN_PEER)?;
        client.transport_config(transport);
        let bound =
            endpoint::bind(config.bind, Some(server)).map_err(|source| NodeError::Bind {
                addr: config.bind,
                source,
            })?;
        let addr = bound
            .endpoint
            .local_addr()
            .map_err(|source| NodeError::Bind {
                addr: config.bind,
                source,
            })?;
        let probes = bound.probes;

        let passwords = config.passwords.clone();
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let mut tracker_events = None;
        let mut tracker_ms = None;
        let tracker = match &config.tracker {
            Some(target) => {
                let started = Instant::now();
                let registration = Registration {
                    name: &config.name,
                    local_addrs: local_candidates(addr),
                };
                let (session, events) = TrackerSession::connect(
                    &bound.endpoint,
                    &certified,
                    home,
                    target,
                    config.liveness,
                    registration,
                )
                .await?;
                tracker_ms = Some(events::millis(started.elapsed()));
                tracker_events = Some(events);
                Some(session)
            }
            None => None,
        };
        let upload_limit = config.transfer.upload_limit.map(|rate| {
            // A burst of a quarter second keeps pacing smooth.
            Mutex::new(crate::rate::TokenBucket::new(
                rate,
                rate / 4,
                Instant::now(),
            ))
        });
        let node = Node {
            inner: Arc::new(Inner {
                config,
                endpoint: bound.endpoint,
                socket: bound.socket,
                client,
                tracker,
                allowed,
                events: events_tx,
                gate_installed: Notify::new(),
                state: Mutex::new(State {
                    clock: Hlc::starting_at(clock),
                    passwords,
                    ..State::default()
                }),
                next_seq: AtomicU64::new(next_seq),
                store,
                identity,
                chunk_reads: Arc::new(tokio::sync::Semaphore::new(files::MAX_CHUNK_READS)),
                upload_limit,
            }),
        };
        node.emit(Event::Ready {
            peer_id: node.peer_id().to_string(),
            name: node.inner.config.name.clone(),
            addr,
            reflexive: node.inner.tracker.as_ref().map(TrackerSession::reflexive),
            tracker: node.tracker_target(),
            tracker_ms,
        });
        tokio::spawn(node.clone().accept_loop());
        tokio::spawn(route_probes(Arc::downgrade(&node.inner), probes));
        node.open_relay().await;
        if let Some(events) = tracker_events {
            tokio::spawn(node.clone().tracker_loop(events));
        }
        for room in node.inner.config.rooms.clone() {
            if let Err(error) = node.join(&room).await {
                node.emit(Event::error(format!("cannot join {room}: {error}")));
            }
        }
        for target in node.inner.config.connect.clone() {
            let node = node.clone();
            tokio::spawn(async move {
                if let Err(error) = node.connect_target(&target).await {
                    node.emit(Event::error(error));
                }
            });
        }
        Ok((node, Events::new(events_rx)))
    }

    /// The tracker as `PEERID@host:port` (pinned, even if it was given
    /// without its id), if this node has one.
    pub fn tracker_target(&self) -> Option<String> {
        self.inner
            .tracker
            .as_ref()
            .map(|t| format!("{}@{}", t.tracker_id(), t.tracker_addr()))
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }

    /// Opens the relay stream to the tracker (unless this node never
    /// relays) and starts pumping packets through it.
    async fn open_relay(&self) {
        let Some(tracker) = &self.inner.tracker else {
            return;
        };
        if self.inner.config.relay == RelayPolicy::Never {
            return;
        }
        let state = match tracker.open_relay().await {
            Ok((
                crate::tracker::client::RelayOffer::Ready {
                    bytes_per_second, ..
                },
                Some(stream),
            )) => {
                let outgoing = self.inner.socket.attach_relay();
                let socket = self.inner.socket.clone();
                let node = Arc::downgrade(&self.inner);
                tokio::spawn(relay::pump(node, socket, stream, outgoing));
                RelayState::Ready { bytes_per_second }
            }
            Ok((crate::tracker::client::RelayOffer::Unavailable(reason), _)) => {
                RelayState::Unavailable(reason)
            }
            Ok((_, None)) => RelayState::Unavailable("no relay stream".into()),
            Err(error) => RelayState::Unavailable(format!("cannot open the relay stream: {error}")),
        };
        self.state().relay = state;
    }

    /// Where a connection's packets go, as the user should see it: the
    /// tracker's address for a relayed one.
    fn shown_remote(&self, connection: &Connection) -> SocketAddr {
        let remote = connection.remote_address();
        match (path_of(connection), &self.inner.tracker) {
            (PathKind::Relay, Some(tracker)) => tracker.tracker_addr(),
            _ => remote,
        }
    }

    /// The gate socket's address.
    pub fn local_addr(&self) -> std::io::Result<SocketAddr> {
        self.inner.endpoint.local_addr()
    }

    /// `PEERID@addr` of this node, for another node's `--connect`.
    pub fn target(&self) -> std::io::Result<String> {
        Ok(format!("{}@{}", self.peer_id(), self.local_addr()?))
    }

    pub fn socket(&self) -> &Arc<GateSocket> {
        &self.inner.socket
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.inner
            .state
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    fn emit(&self, event: Event) {
        // Nobody listening is fine: a library user may not want events.
        let _ = self.inner.events.send(event);
    }

    fn hello(&self) -> ControlMessage {
        ControlMessage::Hello {
            name: self.inner.config.name.clone(),
            agent: AGENT.to_string(),
            rooms: self.state().rooms.clone(),
        }
    }

    fn is_allowed(&self, peer: &PeerId) -> bool {
        self.inner
            .allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(peer))
    }

    /// Whether messages for `room` may come from `via`: any peer for an
    /// open room, only one that proved the password for a password room.
    fn may_speak_for(&self, via: &PeerId, room: &str) -> bool {
        let state = self.state();
        !state.passwords.contains_key(room)
            || state
                .peers
                .get(via)
                .is_some_and(|r| r.verified.contains(room))
    }

    fn name_of(&self, peer: &PeerId) -> String {
        self.state()
            .peers
            .get(peer)
            .map(|r| r.name.clone())
            .unwrap_or_else(|| peer.short())
    }

    fn set_status(&self, peer: PeerId, status: PeerStatus, reason: Option<String>) {
        let name = {
            let mut state = self.state();
            let connected = state.has_open_gate(&peer);
            let record = state
                .peers
                .entry(peer)
                .or_insert_with(|| PeerRecord::new(peer.short()));
            // An open gate outranks any report of trouble or news.
            if record.status == status || (connected && status != PeerStatus::Connected) {
                return;
            }
            record.status = status;
            record.name.clone()
        };
        self.emit(Event::Peer {
            peer_id: peer.to_string(),
            name,
            status,
            reason,
        });
    }

    // ------------------------------------------------------------ commands --

    /// Runs one REPL / `--json` command. Returns `false` on `/quit`, after
    /// the node has shut down.
    pub async fn execute(&self, command: Command) -> bool {
        let result = match command {
            Command::Say(text) => self.say(&text).await.map(|_| ()),
            Command::Help => {
                self.emit(Event::Help {
                    commands: command::help_lines(),
                });
                Ok(())
            }
            Command::Peers => {
                self.emit(Event::Peers {
                    peers: self.peers(),
                });
                Ok(())
            }
            Command::Show => {
                self.emit(Event::Gates {
                    gates: self.gates(),
                });
                Ok(())
            }
            Command::Rooms => {
                self.emit(Event::Rooms {
                    rooms: self.state().rooms.clone(),
                });
                Ok(())
            }
            Command::Connect(what) => {
                // Connecting can take seconds; the REPL stays responsive.
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = node.connect_by_text(&what).await {
                        node.emit(Event::error(error));
                    }
                });
                Ok(())
            }
            Command::Join(room) => self.join(&room).await,
            Command::Leave(room) => self.leave(&room).await,
            Command::History(count) => self.history(count).await,
            Command::Password(password) => self.set_password(password),
            Command::Msg { to, text } => self.direct_message(&to, &text).await.map(|_| ()),
            Command::Send(path) => {
                // Hashing a large folder takes a while; the REPL stays responsive.
                let node = self.clone();
                tokio::spawn(async move {
                    if let Err(error) = node.send_files(vec![PathBuf::from(path)]).await {
                        node.emit(Event::error(error));
                    }
                });
                Ok(())
            }
            Command::Files => {
                self.emit(Event::Files {
                    files: self.files(),
                });
                Ok(())
            }
            Command::Get { what, dir } => {
                let target = dir
                    .map(PathBuf::from)
                    .unwrap_or_else(|| self.inner.config.transfer.downloads.clone());
                self.get_offered(&what, target, false)
            }
            Command::Quit => {
                self.shutdown().await;
                return false;
            }
        };
        if let Err(error) = result {
            self.emit(Event::error(error));
        }
        true
    }

    /// Reports a command that could not be parsed, as an [`Event::Error`].
    pub fn execute_error(&self, error: command::CommandError) {
        self.emit(Event::error(error));
    }

    /// Makes the current room a password room: from now on only peers that
    /// prove `password` share it. Proofs start with every connected peer in
    /// the room.
    pub fn set_password(&self, password: Secret) -> Result<(), NodeError> {
        let room = {
            let mut state = self.state();
            let room = state.rooms.last().cloned().ok_or(NodeError::NoRoom)?;
            state.passwords.insert(room.clone(), password);
            for record in state.peers.values_mut() {
                record.verified.remove(&room);
            }
            room
        };
        self.emit(Event::Info {
            message: format!(
                "#{room} is a password room: peers share it once they prove the password"
            ),
        });
        for gate in self.open_gates() {
            self.authenticate_all(&gate);
        }
        Ok(())
    }

    /// Every live connection.
    pub fn gates(&self) -> Vec<events::GateInfo> {
        let state = self.state();
        let mut gates: Vec<events::GateInfo> = state
            .peers
            .iter()
            .filter_map(|(id, record)| {
                let gate = record.gate.as_ref().filter(|g| g.is_open())?;
                let stats = gate.connection.stats();
                Some(events::GateInfo {
                    peer_id: id.to_string(),
                    name: record.name.clone(),
                    path: path_of(&gate.connection),
                    remote: self.shown_remote(&gate.connection),
                    rtt_ms: events::millis(gate.connection.rtt()),
                    bytes_in: stats.udp_rx.bytes,
                    bytes_out: stats.udp_tx.bytes,
                    age_secs: gate.since.elapsed().as_secs(),
                })
            })
            .collect();
        gates.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        gates
    }

    /// Every known peer.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let state = self.state();
        let mut peers: Vec<PeerInfo> = state
            .peers
            .iter()
            .map(|(id, record)| {
                let gate = record.gate.as_ref().filter(|g| g.is_open());
                PeerInfo {
                    peer_id: id.to_string(),
                    name: record.name.clone(),
                    status: record.status,
                    path: gate.map(|g| path_of(&g.connection)),
                    remote: gate
                        .map(|g| self.shown_remote(&g.connection))
                        .or(record.candidates.first().copied()),
                    rtt_ms: gate.map(|g| events::millis(g.connection.rtt())),
                    connected_secs: gate.map(|g| g.since.elapsed().as_secs()),
                    last_seen_secs: record.last_seen.map(|at| at.elapsed().as_secs()),
                    rooms: record.rooms.iter().cloned().collect(),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        peers
    }

    /// Joins `room` (through the tracker, if any) and dials its members.
    pub async fn join(&self, room: &str) -> Result<(), NodeError> {
        validate_label("room", room, MAX_ROOM_LEN).map_err(NodeError::Invalid)?;
        if room.starts_with('@') {
            return Err(NodeError::Invalid(format!(
                "room {room}: names starting with @ are private rooms of two; use /msg"
            )));
        }
        if self.state().rooms.len() >= MAX_ROOMS {
            return Err(NodeError::Invalid(format!(
                "room count: at most {MAX_ROOMS}"
            )));
        }
        let members = match &self.inner.tracker {
            Some(tracker) => tracker.join(room).await?,
            None => Vec::new(),
        };
        {
            let mut state = self.state();
            state.rooms.retain(|r| r != room);
            state.rooms.push(room.to_string());
        }
        self.emit(Event::Joined {
            room: room.to_string(),
            members: members.len(),
        });
        self.announce_rooms().await;
        for gate in self.open_gates() {
            self.catch_up(gate);
        }
        for member in members {
            self.learn_member(room, &member);
            let node = self.clone();
            tokio::spawn(async move {
                if let Err(error) = node.connect_peer(member.peer_id).await {
                    node.emit(Event::error(error));
                }
            });
        }
        Ok(())
    }

    pub async fn leave(&self, room: &str) -> Result<(), NodeError> {
        if let Some(tracker) = &self.inner.tracker {
            tracker.leave(room).await?;
        }
        self.state().rooms.retain(|r| r != room);
        self.emit(Event::Left {
            room: room.to_string(),
        });
        self.announce_rooms().await;
        Ok(())
    }

    async fn announce_rooms(&self) {
        let rooms = self.state().rooms.clone();
        for gate in self.open_gates() {
            let message = ControlMessage::Rooms {
                rooms: rooms.clone(),
            };
            if let Err(error) = gate.send_control(&message).await {
                tracing::debug!(peer = %gate.peer_id.short(), %error, "cannot announce rooms");
            }
        }
    }

    fn open_gates(&self) -> Vec<Arc<Gate>> {
        self.state()
            .peers
            .values()
            .filter_map(|r| r.gate.clone())
            .filter(|g| g.is_open())
            .collect()
    }

    /// The room plain lines go to: the last one joined.
    fn current_room(&self) -> Result<String, NodeError> {
        self.state().rooms.last().cloned().ok_or(NodeError::NoRoom)
    }

    /// Sends `text` to the current room. See [`Node::post`].
    pub async fn say(&self, text: &str) -> Result<MessageId, NodeError> {
        let room = self.current_room()?;
        self.post(room, text).await
    }

    /// `/msg`: sends `text` to one peer only (by name, id prefix or id), in
    /// the private room of the two.
    pub async fn direct_message(&self, to: &str, text: &str) -> Result<MessageId, NodeError> {
        let peer = self.resolve_peer(to)?;
        self.post(dm_room(&self.peer_id(), &peer), text).await
    }

    /// Signs `text` for `room`, commits it to this node's history, and
    /// writes it to every connected member. Acknowledgements arrive as
    /// [`Event::Delivered`]; members not connected get it by history sync
    /// when they are (they are listed as pending).
    async fn post(&self, room: String, text: &str) -> Result<MessageId, NodeError> {
        let (id, hlc) = {
            let mut state = self.state();
            let seq = self.inner.next_seq.fetch_add(1, Ordering::Relaxed);
            let id = MessageId {
                author: self.peer_id(),
                seq,
            };
            (id, state.clock.tick(now_ms()))
        };
        let body = ChatBody {
            id,
            hlc,
            room: room.clone(),
            text: text.to_string(),
        };
        let message = SignedMessage::sign(&self.inner.identity, body)?;
        // Durable before anyone hears of it: a crash cannot unsay it, and
        // sync can deliver it later.
        self.store_messages(vec![message.clone()], Some(id.seq + 1))
            .await?;
        let (recipients, pending) = {
            let mut state = self.state();
            let members = state
                .peers
                .iter()
                .filter(|(id, r)| state.is_member(r, &room) || room == dm_room(&self.peer_id(), id))
                .map(|(_, r)| r);
            let (connected, offline): (Vec<&PeerRecord>, Vec<&PeerRecord>) =
                members.partition(|r| r.gate.as_ref().is_some_and(|g| g.is_open()));
            let recipients: Vec<Arc<Gate>> =
                connected.iter().filter_map(|r| r.gate.clone()).collect();
            let pending: Vec<String> = offline.iter().map(|r| r.name.clone()).collect();
            if !recipients.is_empty() {
                if state.outgoing.len() >= OUTGOING_CAPACITY {
                    // Peers that never acknowledge must not grow this forever.
                    let oldest = state
                        .outgoing
                        .iter()
                        .min_by_key(|(_, o)| o.sent_at)
                        .map(|(id, _)| *id);
                    if let Some(oldest) = oldest {
                        state.outgoing.remove(&oldest);
                    }
                }
                state.outgoing.insert(
                    id,
                    Outgoing {
                        sent_at: Instant::now(),
                        waiting_for: recipients.iter().map(|g| g.peer_id).collect(),
                    },
                );
            }
            (recipients, pending)
        };
        self.emit(Event::Sent {
            id: id.to_string(),
            room,
            text: text.to_string(),
            peers: recipients.len(),
            pending,
        });
        let frame = ChatFrame::Message(message);
        let send_timeout = self.inner.config.send_timeout;
        for gate in recipients {
            let node = self.clone();
            let frame = frame.clone();
            tokio::spawn(async move {
                let on_open = |acks| {
                    tokio::spawn(node.clone().read_acks(gate.clone(), acks));
                };
                let sent = timeout(send_timeout, gate.send_chat(&frame, on_open)).await;
                let problem = match sent {
                    Ok(Ok(())) => return,
                    Ok(Err(error)) => error.to_string(),
                    Err(_) => format!("no progress within {send_timeout:?}"),
                };
                // The path changed under the send: once more over the new gate.
                let replacement = node
                    .state()
                    .open_gate(&gate.peer_id)
                    .filter(|g| g.connection.stable_id() != gate.connection.stable_id());
                if let Some(replacement) = replacement {
                    let on_open = |acks| {
                        tokio::spawn(node.clone().read_acks(replacement.clone(), acks));
                    };
                    let resent = timeout(send_timeout, replacement.send_chat(&frame, on_open));
                    if let Ok(Ok(())) = resent.await {
                        return;
                    }
                }
                let name = node.name_of(&gate.peer_id);
                node.emit(Event::error(format!(
                    "message {id} to {name} is pending ({problem}); history sync delivers it when they reconnect"
                )));
            });
        }
        Ok(id)
    }

    /// Commits messages to the history; returns which were new.
    async fn store_messages(
        &self,
        messages: Vec<SignedMessage>,
        next_seq: Option<u64>,
    ) -> Result<Vec<bool>, NodeError> {
        let store = self.inner.store.clone();
        let clock = self.state().clock.last();
        let fresh = tokio::task::spawn_blocking(move || store.insert(&messages, next_seq, clock))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(fresh)
    }

    /// Reports a message as an [`Event::Message`].
    fn show(&self, message: &SignedMessage, history: bool) {
        let body = &message.body;
        let from_name = if body.id.author == self.peer_id() {
            self.inner.config.name.clone()
        } else {
            self.state()
                .peers
                .get(&body.id.author)
                .map(|r| r.name.clone())
                .unwrap_or_else(|| body.id.author.short())
        };
        self.emit(Event::Message {
            id: body.id.to_string(),
            from: body.id.author.to_string(),
            from_name,
            room: body.room.clone(),
            text: body.text.clone(),
            ts: hlc::millis_of(body.hlc),
            history,
        });
    }

    /// `/history [N]`: the current room's last `count` messages, in order.
    pub async fn history(&self, count: usize) -> Result<(), NodeError> {
        let room = self.current_room()?;
        let store = self.inner.store.clone();
        let messages = tokio::task::spawn_blocking(move || store.history(&room, count))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        for message in &messages {
            self.show(message, true);
        }
        Ok(())
    }

    // --------------------------------------------------------- connecting --

    /// `/connect`: `PEERID@host:port`, or a known peer's name or id prefix.
    pub async fn connect_by_text(&self, what: &str) -> Result<(), NodeError> {
        if what.contains('@') {
            return self.connect_target(&what.parse()?).await;
        }
        let peer = self.resolve_peer(what)?;
        self.connect_peer(peer).await
    }

    /// A known peer by name, id prefix or whole id.
    pub fn resolve_peer(&self, what: &str) -> Result<PeerId, NodeError> {
        if let Ok(peer) = what.parse::<PeerId>() {
            return Ok(peer);
        }
        let state = self.state();
        let matches: Vec<&PeerId> = state
            .peers
            .iter()
            .filter(|(id, r)| r.name == what || id.to_string().starts_with(what))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [] => Err(NodeError::UnknownPeer(what.to_string())),
            [id] => Ok(**id),
            _ => Err(NodeError::AmbiguousPeer(what.to_string())),
        }
    }

    /// Connects to a known peer: through a tracker-coordinated punch when
    /// there is a tracker, else by dialing its known addresses.
    pub async fn connect_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        let Some(tracker) = &self.inner.tracker else {
            let candidates = self
                .state()
                .peers
                .get(&peer)
                .map(|r| r.candidates.clone())
                .unwrap_or_default();
            return self.connect_to(peer, candidates).await;
        };
        self.check_dialable(&peer)?;
        let (outcome_tx, outcome_rx) = oneshot::channel();
        let first = {
            let mut state = self.state();
            // A relayed peer is punched for again: that is the upgrade.
            if state.closing || state.has_direct_gate(&peer) {
                return Ok(());
            }
            let waiters = state.punch_waiters.entry(peer).or_default();
            waiters.push(outcome_tx);
            waiters.len() == 1
        };
        if first {
            // The introduction comes back as an event and starts the punch.
            if let Err(error) = tracker.request(TrackerRequestBody::Connect { peer }).await {
                self.finish_punch_waiters(peer, Err(error.to_string()));
            }
        }
        let config = &self.inner.config;
        let limit = config.punch.deadline + config.connect_timeout + gate::GREETING_TIMEOUT;
        match timeout(limit, outcome_rx).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(tried))) => Err(NodeError::Unreachable {
                peer: self.name_of(&peer),
                tried,
            }),
            Ok(Err(_)) | Err(_) => Err(NodeError::Unreachable {
                peer: self.name_of(&peer),
                tried: "the punch did not report back".into(),
            }),
        }
    }

    fn finish_punch_waiters(&self, peer: PeerId, outcome: Result<(), String>) {
        let waiters = self.state().punch_waiters.remove(&peer).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(outcome.clone());
        }
    }

    /// Runs one punch, in the role the tracker gave, toward `member`.
    async fn run_punch(self, attempt: u64, member: Member, role: Role) {
        let peer = member.peer_id;
        let started = Instant::now();
        let reflexive = self.inner.tracker.as_ref().map(TrackerSession::reflexive);
        let candidates = order_candidates(reflexive, member.reflexive, &member.local_addrs);
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let allowed = self.is_allowed(&peer);
        let relay_only = self.inner.config.relay == RelayPolicy::Only;
        {
            let mut state = self.state();
            if state.closing || !allowed {
                drop(state);
                self.finish_punch_waiters(peer, Err("not allowed".into()));
                return;
            }
            if relay_only && role == Role::Acceptor {
                // The dialer comes through the relay; nothing to open here.
                return;
            }
            state.punches.insert(attempt, probe_tx);
        }
        if role == Role::Dialer {
            self.set_status(peer, PeerStatus::Connecting, None);
        }
        let payload = wire::encode_probe(&ProbeMessage::Punch {
            attempt,
            sender: self.peer_id(),
        })
        .map_err(|e| e.to_string());
        let payload = match payload {
            Ok(payload) => payload,
            Err(error) => {
                self.state().punches.remove(&attempt);
                self.finish_punch_waiters(peer, Err(error));
                return;
            }
        };
        let mut punch = Punch::new(role, &candidates, self.inner.config.punch.clone(), started);
        let mut dials = JoinSet::new();
        let outcome: Result<Option<Connection>, String> = if relay_only {
            Err("direct attempts are off (--relay-only)".into())
        } else {
            loop {
                let installed = self.inner.gate_installed.notified();
                if self.state().has_direct_gate(&peer) {
                    break Ok(None);
                }
                let now = Instant::now();
                while let Some(action) = punch.poll_action(now) {
                    match action {
                        PunchAction::Probe(addr) => {
                            if let Err(error) = self.inner.socket.send_probe(addr, &payload).await {
                                tracing::debug!(%addr, %error, "probe not sent");
                            }
                        }
                        PunchAction::Dial(addr) => {
                            self.spawn_handshake(&mut dials, addr, peer, Duration::ZERO)
                        }
                    }
                }
                if punch.is_expired(now) {
                    break Err(punch.summary());
                }
                let wake = tokio::time::Instant::from_std(punch.poll_timeout());
                tokio::select! {
                    _ = tokio::time::sleep_until(wake) => {}
                    Some(from) = probe_rx.recv() => punch.handle_probe(from, Instant::now()),
                    Some(joined) = dials.join_next(), if !dials.is_empty() => match joined {
                        Ok((_, Ok(connection))) => break Ok(Some(connection)),
                        Ok((addr, Err(error))) => punch.handle_dial_failed(addr, error),
                        Err(_) => {}
                    },
                    _ = installed => {}
                }
            }
        };
        close_losers(dials, self.inner.config.punch.deadline);
        self.state().punches.remove(&attempt);
        let result = match outcome {
            Ok(None) => Ok(()),
            Ok(Some(connection)) => self
                .greet_and_install(connection, peer, started)
                .await
                .map_err(|error| error.to_string()),
            // Still connected through the relay: the upgrade tries again later.
            Err(_) if self.state().has_open_gate(&peer) => Ok(()),
            Err(tried) if role == Role::Dialer => {
                self.connect_via_relay(peer, started, tried).await
            }
            Err(tried) => Err(tried),
        };
        if let Err(tried) = &result {
            if role == Role::Dialer {
                self.set_status(peer, PeerStatus::Offline, Some("unreachable".into()));
                self.emit(Event::error(format!(
                    "could not connect to {}: {tried}",
                    self.name_of(&peer)
                )));
            }
        }
        self.finish_punch_waiters(peer, result);
    }

    /// After a punch found no direct path (`punch_failure` says what was
    /// tried): the same pinned connection through the tracker's relay, if
    /// this node and the tracker allow it.
    async fn connect_via_relay(
        &self,
        peer: PeerId,
        started: Instant,
        punch_failure: String,
    ) -> Result<(), String> {
        let relay = self.state().relay.clone();
        match relay {
            RelayState::Ready { .. } => {}
            RelayState::Off if self.inner.config.relay == RelayPolicy::Never => {
                return Err(format!(
                    "{punch_failure}; relaying is off on this node (--no-relay)"
                ))
            }
            RelayState::Off => return Err(format!("{punch_failure}; no relay")),
            RelayState::Unavailable(reason) => {
                return Err(format!("{punch_failure}; no relay: {reason}"))
            }
        }
        let addr = self
            .inner
            .socket
            .relay_addr(&peer)
            .ok_or_else(|| format!("{punch_failure}; too many relayed peers"))?;
        tracing::debug!(peer = %peer.short(), "no direct path; connecting through the relay");
        let connection = self
            .dial(peer, &[addr])
            .await
            .map_err(|error| format!("{punch_failure}; through the relay: {error}"))?;
        self.greet_and_install(connection, peer, started)
            .await
            .map_err(|error| format!("through the relay: {error}"))
    }

    /// While `peer` is connected through the relay on the connection
    /// `relayed`, punches again with backoff; a direct connection that
    /// succeeds replaces the relayed one ([`Node::install`]), and the user
    /// sees a [`Event::Path`].
    async fn upgrade_to_direct(self, peer: PeerId, relayed: usize) {
        for attempt in 0usize.. {
            let pause = UPGRADE_BACKOFF[attempt.min(UPGRADE_BACKOFF.len() - 1)];
            tokio::time::sleep(pause).await;
            let still_relayed = {
                let state = self.state();
                !state.closing
                    && state
                        .peers
                        .get(&peer)
                        .and_then(|r| r.gate.as_ref())
                        .is_some_and(|g| g.is_open() && g.connection.stable_id() == relayed)
            };
            if !still_relayed {
                return;
            }
            tracing::debug!(peer = %peer.short(), attempt, "trying a direct path again");
            let _ = self.connect_peer(peer).await;
        }
    }

    /// Dials `PEERID@host:port`.
    pub async fn connect_target(&self, target: &Target) -> Result<(), NodeError> {
        let peer = target.require_peer()?;
        let addr = target.resolve().await?;
        self.connect_to(peer, vec![addr]).await
    }

    /// Dials `peer` at its candidate addresses, staggered; the first
    /// authenticated handshake wins and the others are dropped.
    pub async fn connect_to(
        &self,
        peer: PeerId,
        candidates: Vec<SocketAddr>,
    ) -> Result<(), NodeError> {
        self.check_dialable(&peer)?;
        // Claim the peer for this dial in one step, so two dials never race.
        let name = {
            let mut state = self.state();
            if state.closing || state.has_open_gate(&peer) {
                return Ok(());
            }
            if state.open_gate_count() >= self.inner.config.max_gates {
                return Err(NodeError::TooManyGates(self.inner.config.max_gates));
            }
            let record = state
                .peers
                .entry(peer)
                .or_insert_with(|| PeerRecord::new(peer.short()));
            if record.status == PeerStatus::Connecting {
                return Ok(());
            }
            record.status = PeerStatus::Connecting;
            if record.candidates.is_empty() {
                // Remembered for reconnecting to a peer given by address.
                record.candidates = candidates.clone();
            }
            record.name.clone()
        };
        self.emit(Event::Peer {
            peer_id: peer.to_string(),
            name,
            status: PeerStatus::Connecting,
            reason: None,
        });
        let started = Instant::now();
        let result = self.dial(peer, &candidates).await;
        let connection = match result {
            Ok(connection) => connection,
            Err(tried) => {
                self.set_status(peer, PeerStatus::Offline, Some("unreachable".into()));
                return Err(NodeError::Unreachable {
                    peer: self.name_of(&peer),
                    tried,
                });
            }
        };
        let attempt = connection.clone();
        match self.greet_and_install(connection, peer, started).await {
            Ok(()) => Ok(()),
            // The peer dialed us at the same moment and kept its own
            // connection: ours lost the race, the peer is still reached.
            Err(_)
                if gate::closed_as_duplicate(&attempt)
                    && self.wait_for_gate(peer, gate::GREETING_TIMEOUT).await =>
            {
                Ok(())
            }
            Err(error) => {
                self.set_status(peer, PeerStatus::Offline, Some(error.to_string()));
                Err(NodeError::Unreachable {
                    peer: self.name_of(&peer),
                    tried: error.to_string(),
                })
            }
        }
    }

    /// After a gate to `peer` ended while another one carries on (a change
    /// of path): messages that were in flight on the old one are pulled
    /// again over the current one (sync only fetches what is missing).
    fn resync_over_current_gate(&self, peer: PeerId) {
        let gate = self.state().open_gate(&peer);
        if let Some(gate) = gate {
            tokio::spawn(self.clone().sync_with(gate));
        }
    }

    /// Waits up to `limit` for `peer` to have an open gate.
    async fn wait_for_gate(&self, peer: PeerId, limit: Duration) -> bool {
        let deadline = Instant::now() + limit;
        loop {
            let installed = self.inner.gate_installed.notified();
            if self.state().has_open_gate(&peer) {
                return true;
            }
            if timeout(
                deadline.saturating_duration_since(Instant::now()),
                installed,
            )
            .await
            .is_err()
            {
                return false;
            }
        }
    }

    /// Greets over an authenticated connection this node dialed (set-up
    /// began at `started`) and makes it the peer's gate.
    async fn greet_and_install(
        &self,
        connection: Connection,
        peer: PeerId,
        started: Instant,
    ) -> Result<(), GateError> {
        let handshake = started.elapsed();
        let greeting = timeout(
            gate::GREETING_TIMEOUT,
            Gate::greet_as_dialer(connection.clone(), self.peer_id(), peer, &self.hello()),
        )
        .await
        .unwrap_or(Err(GateError::GreetingTimeout(gate::GREETING_TIMEOUT)));
        match greeting {
            Ok(greeted) => {
                self.install(greeted, started, Some(handshake), true);
                Ok(())
            }
            Err(error) => {
                error.close(&connection);
                Err(error)
            }
        }
    }

    /// One pinned handshake to `peer` at `addr`, nothing more (benchmarks).
    pub async fn dial_once(&self, addr: SocketAddr, peer: PeerId) -> Result<Connection, String> {
        endpoint::connect_pinned(&self.inner.endpoint, self.inner.client.clone(), addr, &peer)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| e.to_string())
    }

    /// Sends `bytes` on a bench stream to a connected `peer` running
    /// `bench serve`; returns the count it reports back.
    pub async fn bench_send(&self, peer: PeerId, bytes: u64) -> Result<u64, String> {
        let gate = self
            .state()
            .peers
            .get(&peer)
            .and_then(|r| r.gate.clone())
            .ok_or("not connected to that peer")?;
        let (mut send, mut recv) = gate.connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&crate::wire::header(StreamKind::Bench))
            .await
            .map_err(|e| e.to_string())?;
        crate::bench::write_zeros(&mut send, bytes).await?;
        let mut count = [0u8; 8];
        recv.read_exact(&mut count)
            .await
            .map_err(|e| format!("no count back (is the peer running `bench serve`?): {e}"))?;
        Ok(u64::from_be_bytes(count))
    }

    /// Starts a pinned handshake to `peer` at `addr` after `delay`, into `set`.
    fn spawn_handshake(
        &self,
        set: &mut Handshakes,
        addr: SocketAddr,
        peer: PeerId,
        delay: Duration,
    ) {
        let endpoint = self.inner.endpoint.clone();
        let config = self.inner.client.clone();
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = match endpoint::connect_pinned(&endpoint, config, addr, &peer) {
                Ok(connecting) => connecting.await.map_err(|e| e.to_string()),
                Err(error) => Err(error.to_string()),
            };
            (addr, result)
        });
    }

    /// Refuses dialing this node itself or a peer outside `--allow`.
    fn check_dialable(&self, peer: &PeerId) -> Result<(), NodeError> {
        if *peer == self.peer_id() {
            return Err(NodeError::SelfConnect);
        }
        if !self.is_allowed(peer) {
            return Err(NodeError::Invalid(format!(
                "peer {}: not in --allow",
                peer.short()
            )));
        }
        Ok(())
    }

    /// Closes the connection to `peer` on purpose (no reconnection follows).
    pub fn disconnect(&self, peer: &PeerId) {
        let gate = self.state().peers.get(peer).and_then(|r| r.gate.clone());
        if let Some(gate) = gate {
            gate.connection
                .close(CloseCode::Normal.varint(), b"disconnect");
        }
    }

    /// Races handshakes to `candidates`; returns the first authenticated
    /// connection, or what went wrong with each candidate.
    async fn dial(&self, peer: PeerId, candidates: &[SocketAddr]) -> Result<Connection, String> {
        if candidates.is_empty() {
            return Err("no known address".into());
        }
        let mut attempts = JoinSet::new();
        for (index, addr) in candidates.iter().copied().enumerate() {
            self.spawn_handshake(&mut attempts, addr, peer, CANDIDATE_STAGGER * index as u32);
        }
        let mut failures = Vec::new();
        let deadline = tokio::time::sleep(self.inner.config.connect_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = attempts.join_next() => match joined {
                    Some(Ok((_, Ok(connection)))) => {
                        close_losers(attempts, self.inner.config.connect_timeout);
                        return Ok(connection);
                    }
                    Some(Ok((addr, Err(error)))) => failures.push(format!("{addr}: {error}")),
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = &mut deadline => {
                    attempts.abort_all();
                    failures.push(format!("no answer within {:?}", self.inner.config.connect_timeout));
                    break;
                }
            }
        }
        Err(failures.join("; "))
    }

    async fn accept_loop(self) {
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let node = self.clone();
            tokio::spawn(async move { node.accept_one(incoming).await });
        }
    }

    async fn accept_one(&self, incoming: quinn::Incoming) {
        let started = Instant::now();
        {
            let state = self.state();
            if state.closing || state.open_gate_count() >= self.inner.config.max_gates {
                incoming.refuse();
                return;
            }
        }
        let connection = match timeout(gate::GREETING_TIMEOUT, incoming).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::debug!(%error, "incoming handshake failed");
                return;
            }
            Err(_) => return,
        };
        let peer = match tls::peer_id_of(&connection) {
            Ok(peer) => peer,
            Err(error) => {
                connection.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
                return;
            }
        };
        match Gate::greet_as_acceptor(connection.clone(), peer, &self.hello()).await {
            Ok(greeted) => self.install(greeted, started, None, false),
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "incoming greeting failed");
                error.close(&connection);
            }
        }
    }

    /// Makes a greeted connection the peer's gate, deciding in one critical
    /// section. Of two live connections to one peer (both dialed at once),
    /// both sides keep the one dialed by the smaller peer id, so they agree
    /// without talking; a new connection from the same dialer replaces the
    /// old (a reconnect).
    fn install(
        &self,
        greeted: Greeted,
        started: Instant,
        handshake: Option<Duration>,
        dialed: bool,
    ) {
        let Greeted {
            gate,
            greeting,
            control,
        } = greeted;
        let gate = Arc::new(gate);
        let peer = gate.peer_id;
        let decision = {
            let mut state = self.state();
            let open_elsewhere = state.open_gate_count() - usize::from(state.has_open_gate(&peer));
            if state.closing {
                Err((CloseCode::Normal, "shutting down"))
            } else if !self.is_allowed(&peer) {
                Err((CloseCode::Refused, "not allowed"))
            } else if open_elsewhere >= self.inner.config.max_gates {
                Err((CloseCode::Refused, "too many connections"))
            } else {
                let record = state
                    .peers
                    .entry(peer)
                    .or_insert_with(|| PeerRecord::new(greeting.name.clone()));
                let previous = record.gate.take();
                let existing = previous.clone().filter(|g| g.is_open());
                let keep_existing = existing.as_ref().is_some_and(|old| keeps_over(old, &gate));
                if keep_existing {
                    record.gate = existing;
                    Err((CloseCode::Duplicate, "duplicate"))
                } else {
                    // The peer may have closed the gate this one replaces
                    // (as a duplicate) before this side installed it: that
                    // is still a change of path, not a new connection.
                    let existing = existing.or(previous.filter(|old| {
                        gate::closed_as_duplicate(&old.connection)
                            && old.connection.stable_id() != gate.connection.stable_id()
                    }));
                    record.name = greeting.name.clone();
                    record.rooms = greeting.rooms.iter().cloned().collect();
                    // Password proofs belong to a connection.
                    record.verified.clear();
                    record.auth_failures = 0;
                    record.last_seen = Some(Instant::now());
                    record.gate = Some(gate.clone());
                    record.status = PeerStatus::Connected;
                    Ok(existing)
                }
            }
        };
        let replaced = match decision {
            Ok(replaced) => replaced,
            Err((code, reason)) => {
                gate.connection.close(code.varint(), reason.as_bytes());
                return;
            }
        };
        let path = path_of(&gate.connection);
        let remote = self.shown_remote(&gate.connection);
        let path_before = replaced.as_ref().map(|old| path_of(&old.connection));
        if let Some(old) = replaced.filter(|old| old.is_open()) {
            old.connection
                .close(CloseCode::Duplicate.varint(), b"duplicate");
        }
        // Punches waiting for this peer's gate stop.
        self.inner.gate_installed.notify_waiters();
        if path_before.is_some_and(|before| before != path) {
            self.emit(Event::Path {
                peer_id: peer.to_string(),
                name: greeting.name,
                path,
                remote,
            });
        } else {
            self.emit(Event::Connected {
                peer_id: peer.to_string(),
                name: greeting.name,
                path,
                remote,
                rtt_ms: events::millis(gate.connection.rtt()),
                setup_ms: events::millis(started.elapsed()),
                handshake_ms: handshake.map(events::millis),
                dialed,
            });
        }
        if path == PathKind::Relay && dialed && self.inner.config.relay == RelayPolicy::Fallback {
            let relayed = gate.connection.stable_id();
            tokio::spawn(self.clone().upgrade_to_direct(peer, relayed));
        }
        tokio::spawn(self.clone().read_control(gate.clone(), control));
        tokio::spawn(self.clone().serve_gate(gate.clone()));
        self.authenticate_all(&gate);
        // Catch up on what was said while apart.
        self.catch_up(gate);
    }

    // ----------------------------------------------------------- per gate --

    /// Accepts the peer's streams until the connection ends, then reports it.
    async fn serve_gate(self, gate: Arc<Gate>) {
        let connection = gate.connection.clone();
        let error = loop {
            tokio::select! {
                stream = connection.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        tokio::spawn(self.clone().serve_stream(gate.clone(), send, recv));
                    }
                    Err(error) => break error,
                },
                stream = connection.accept_uni() => match stream {
                    Ok(mut recv) => {
                        // No stream kind is unidirectional yet.
                        let connection = connection.clone();
                        tokio::spawn(async move {
                            let error = match timeout(gate::GREETING_TIMEOUT, crate::wire::read_header(&mut recv)).await {
                                Ok(Ok(kind)) => WireError::UnexpectedKind { expected: "bidirectional", got: kind.name() },
                                Ok(Err(error)) => error,
                                Err(_) => WireError::Truncated("stream header"),
                            };
                            GateError::from(error).close(&connection);
                        });
                    }
                    Err(error) => break error,
                },
            }
        };
        let reason = describe_close(&error);
        // The peer closed this gate because it keeps another connection to
        // this node (an upgrade, or a simultaneous dial): the peer is not
        // gone once that connection is installed here.
        if gate::closed_as_duplicate(&connection)
            && self
                .wait_for_gate(gate.peer_id, gate::GREETING_TIMEOUT)
                .await
        {
            self.resync_over_current_gate(gate.peer_id);
            return;
        }
        let name = {
            let mut state = self.state();
            let Some(record) = state.peers.get_mut(&gate.peer_id) else {
                return;
            };
            let current = record
                .gate
                .as_ref()
                .is_some_and(|g| g.connection.stable_id() == connection.stable_id());
            if !current {
                // A duplicate that lost; the peer is still connected.
                drop(state);
                self.resync_over_current_gate(gate.peer_id);
                return;
            }
            record.gate = None;
            record.status = PeerStatus::Offline;
            record.name.clone()
        };
        self.emit(Event::Disconnected {
            peer_id: gate.peer_id.to_string(),
            name,
            reason,
        });
        if path_died(&error) {
            tokio::spawn(self.reconnect(gate.peer_id));
        }
    }

    /// After a path died: punch again with backoff while the peer shares a
    /// room with this node and nobody has reconnected yet. Both sides try;
    /// the duplicate rule keeps one connection if both succeed.
    async fn reconnect(self, peer: PeerId) {
        for (attempt, pause) in RECONNECT_BACKOFF.iter().enumerate() {
            tokio::time::sleep(*pause).await;
            let wanted = {
                let state = self.state();
                let shares_room = state
                    .peers
                    .get(&peer)
                    .is_some_and(|r| r.rooms.iter().any(|room| state.rooms.contains(room)));
                !state.closing && shares_room && !state.has_open_gate(&peer)
            };
            if !wanted {
                return;
            }
            tracing::debug!(peer = %peer.short(), attempt, "reconnecting");
            if self.connect_peer(peer).await.is_ok() && self.state().has_open_gate(&peer) {
                return;
            }
        }
        self.emit(Event::error(format!(
            "gave up reconnecting to {} after {} attempts",
            self.name_of(&peer),
            RECONNECT_BACKOFF.len()
        )));
    }

    /// A stream the peer opened: chat messages to take, or a history sync
    /// to answer.
    async fn serve_stream(self, gate: Arc<Gate>, send: SendStream, mut recv: RecvStream) {
        let result = async {
            let kind = timeout(gate::GREETING_TIMEOUT, crate::wire::read_header(&mut recv))
                .await
                .map_err(|_| WireError::Truncated("stream header"))??;
            match kind {
                StreamKind::Chat => self.serve_chat(&gate, send, recv).await,
                StreamKind::Sync => self.serve_sync(&gate, send, recv).await,
                StreamKind::Auth => self.serve_auth(&gate, send, recv).await,
                StreamKind::Bench if self.inner.config.bench_serve => serve_bench(send, recv).await,
                StreamKind::Manifest => self.serve_manifest(send, recv).await,
                StreamKind::Chunks => self.serve_chunks(send, recv).await,
                other => Err(WireError::UnexpectedKind {
                    expected: "chat or sync",
                    got: other.name(),
                }),
            }
        }
        .await;
        if let Err(error) = result {
            GateError::from(error).close(&gate.connection);
        }
    }

    /// Takes the peer's chat messages, acknowledging each once it is on disk.
    async fn serve_chat(
        &self,
        gate: &Gate,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Chat);
        let mut writer = FrameWriter::answering(send, StreamKind::Chat);
        while let Some(frame) = reader.recv::<ChatFrame>().await? {
            let ChatFrame::Message(message) = frame else {
                return Err(WireError::Malformed {
                    kind: "chat",
                    reason: "only messages travel this way".into(),
                });
            };
            let id = message.body.id;
            let verdict = self.take_messages(vec![message], gate.peer_id).await;
            let answer = match verdict.into_iter().next() {
                Some(Ok(())) => ChatFrame::Ack(id),
                Some(Err(reason)) => ChatFrame::Reject { id, reason },
                None => continue,
            };
            writer.send(&answer).await?;
        }
        Ok(())
    }

    /// Takes messages that arrived from `via` (live or by sync): keeps those
    /// whose signature verifies against their author and whose room this
    /// node is in, commits them to disk, then shows the new ones in clock
    /// order. Returns, per message, `Ok` (stored, or already had it) or why
    /// it was refused. Only after this returns may a message be acknowledged.
    async fn take_messages(
        &self,
        messages: Vec<SignedMessage>,
        via: PeerId,
    ) -> Vec<Result<(), String>> {
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut accepted = Vec::new();
        for message in messages {
            let verdict = match message.verify() {
                Err(error) => {
                    let via_name = self.name_of(&via);
                    self.emit(Event::error(format!(
                        "refused a message from {via_name}: {error}"
                    )));
                    Err(error.to_string())
                }
                Ok(())
                    if !self.state().rooms.contains(&message.body.room)
                        && message.body.room
                            != dm_room(&self.peer_id(), &message.body.id.author) =>
                {
                    Err(format!("not in room {}", message.body.room))
                }
                Ok(()) if !self.may_speak_for(&via, &message.body.room) => Err(format!(
                    "#{} needs the room password first",
                    message.body.room
                )),
                Ok(()) => {
                    let mut state = self.state();
                    state.clock.observe(message.body.hlc);
                    if let Some(record) = state.peers.get_mut(&via) {
                        record.last_seen = Some(Instant::now());
                    }
                    drop(state);
                    accepted.push(message);
                    Ok(())
                }
            };
            verdicts.push(verdict);
        }
        if accepted.is_empty() {
            return verdicts;
        }
        match self.store_messages(accepted.clone(), None).await {
            Ok(fresh) => {
                let mut new: Vec<&SignedMessage> = accepted
                    .iter()
                    .zip(fresh)
                    .filter(|(_, f)| *f)
                    .map(|(m, _)| m)
                    .collect();
                new.sort_by_key(|m| m.body.hlc);
                for message in new {
                    self.show(message, false);
                }
            }
            Err(error) => {
                // Not on disk, so not acknowledged: the sender keeps it pending.
                self.emit(Event::error(format!("cannot store messages: {error}")));
                for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
                    *verdict = Err(format!("not stored: {error}"));
                }
            }
        }
        verdicts
    }

    /// Reads acknowledgements on a chat stream this node opened.
    async fn read_acks(self, gate: Arc<Gate>, mut reader: FrameReader<RecvStream>) {
        loop {
            match reader.recv::<ChatFrame>().await {
                Ok(Some(ChatFrame::Ack(id))) => self.delivered(id, gate.peer_id),
                Ok(Some(ChatFrame::Reject { id, reason })) => {
                    let name = self.name_of(&gate.peer_id);
                    self.emit(Event::error(format!(
                        "{name} refused message {id}: {reason}"
                    )));
                }
                Ok(Some(ChatFrame::Message(_))) => {
                    let error = WireError::Malformed {
                        kind: "chat",
                        reason: "a message on the acknowledgement side".into(),
                    };
                    GateError::from(error).close(&gate.connection);
                    return;
                }
                Ok(None) => return,
                Err(error) => {
                    GateError::from(error).close(&gate.connection);
                    return;
                }
            }
        }
    }

    fn delivered(&self, id: MessageId, peer: PeerId) {
        let ack_ms = {
            let mut state = self.state();
            let Some(outgoing) = state.outgoing.get_mut(&id) else {
                return;
            };
            if !outgoing.waiting_for.remove(&peer) {
                return; // not expected from this peer, or a repeat
            }
            let elapsed = outgoing.sent_at.elapsed();
            if outgoing.waiting_for.is_empty() {
                state.outgoing.remove(&id);
            }
            events::millis(elapsed)
        };
        self.emit(Event::Delivered {
            id: id.to_string(),
            peer_id: peer.to_string(),
            ack_ms,
        });
    }

    /// Reads the peer's control stream: goodbye, ping, room changes.
    async fn read_control(self, gate: Arc<Gate>, mut reader: FrameReader<RecvStream>) {
        loop {
            let message = match reader.recv::<ControlMessage>().await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(error) => {
                    GateError::from(error).close(&gate.connection);
                    return;
                }
            };
            match message {
                ControlMessage::Goodbye { reason } => {
                    tracing::debug!(peer = %gate.peer_id.short(), %reason, "goodbye");
                    gate.connection
                        .close(CloseCode::Normal.varint(), reason.as_bytes());
                    return;
                }
                ControlMessage::Ping { nonce } => {
                    let _ = gate.send_control(&ControlMessage::Pong { nonce }).await;
                }
                ControlMessage::Pong { .. } => {}
                ControlMessage::Rooms { rooms } => {
                    let valid = rooms.len() <= MAX_ROOMS
                        && rooms
                            .iter()
                            .all(|r| validate_label("room", r, MAX_ROOM_LEN).is_ok());
                    if !valid {
                        GateError::BadGreeting("invalid room list".into()).close(&gate.connection);
                        return;
                    }
                    if let Some(record) = self.state().peers.get_mut(&gate.peer_id) {
                        record.rooms = rooms.into_iter().collect();
                    }
                    // A newly shared room has history to catch up on, or a
                    // password to prove first.
                    self.authenticate_all(&gate);
                    self.catch_up(gate.clone());
                }
                ControlMessage::Hello { .. } => {
                    GateError::BadGreeting("a second hello".into()).close(&gate.connection);
                    return;
                }
                ControlMessage::Offer(offer) => {
                    if let Err(reason) = self.take_offer(&gate, offer) {
                        let reason = format!("invalid offer: {reason}");
                        GateError::from(WireError::Malformed {
                            kind: "control",
                            reason,
                        })
                        .close(&gate.connection);
                        return;
                    }
                }
            }
        }
    }

    // ------------------------------------------------------------ tracker --

    fn learn_member(&self, room: &str, member: &Member) -> bool {
        let mut state = self.state();
        let record = state
            .peers
            .entry(member.peer_id)
            .or_insert_with(|| PeerRecord::new(member.name.clone()));
        let first_seen = record.candidates.is_empty() && record.gate.is_none();
        record.name = member.name.clone();
        record.candidates = member.candidates();
        record.rooms.insert(room.to_string());
        first_seen
    }

    async fn tracker_loop(self, mut events: mpsc::UnboundedReceiver<TrackerEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                TrackerEvent::Joined { room, member } => {
                    let peer = member.peer_id;
                    self.learn_member(&room, &member);
                    // The joiner dials; this side waits for it.
                    // Only news for a peer nobody is connecting to or connected with.
                    let idle = self.state().peers.get(&peer).is_none_or(|r| {
                        matches!(r.status, PeerStatus::Known | PeerStatus::Offline)
                    });
                    if idle {
                        self.set_status(peer, PeerStatus::Known, Some(format!("joined {room}")));
                    }
                }
                TrackerEvent::Introduce {
                    attempt,
                    peer,
                    role,
                } => {
                    {
                        let mut state = self.state();
                        let record = state
                            .peers
                            .entry(peer.peer_id)
                            .or_insert_with(|| PeerRecord::new(peer.name.clone()));
                        record.candidates = peer.candidates();
                    }
                    tokio::spawn(self.clone().run_punch(attempt, peer, role));
                }
                TrackerEvent::Left { room, peer_id } => {
                    let gone = {
                        let mut state = self.state();
                        let Some(record) = state.peers.get_mut(&peer_id) else {
                            continue;
                        };
                        record.rooms.remove(&room);
                        record.rooms.is_empty()
                            && !record.gate.as_ref().is_some_and(|g| g.is_open())
                    };
                    if gone {
                        self.set_status(peer_id, PeerStatus::Offline, Some(format!("left {room}")));
                    }
                }
            }
        }
        if !self.state().closing {
            self.emit(Event::error(
                "lost the connection to the tracker; connected peers stay connected",
            ));
        }
    }

    // ----------------------------------------------------------- shutdown --

    /// Tells every connected peer goodbye, leaves the tracker, and waits
    /// (briefly) for the connections to close.
    pub async fn shutdown(&self) {
        let gates = {
            let mut state = self.state();
            state.closing = true;
            state
                .peers
                .values()
                .filter_map(|r| r.gate.clone())
                .collect::<Vec<_>>()
        };
        let mut goodbyes = JoinSet::new();
        for gate in gates {
            goodbyes.spawn(async move { gate.goodbye("quit").await });
        }
        while goodbyes.join_next().await.is_some() {}
        if let Some(tracker) = &self.inner.tracker {
            tracker.close();
        }
        self.inner
            .endpoint
            .close(CloseCode::Normal.varint(), b"quit");
        let _ = timeout(Duration::from_secs(2), self.inner.endpoint.wait_idle()).await;
    }

    /// The data directory default, for callers without one.
    pub fn default_home() -> Result<PathBuf, crate::home::HomeError> {
        crate::home::resolve(None)
    }
}

/// Hands each probe to the punch whose attempt it names. Holds the node
/// weakly: the socket owns the probe channel, so a strong reference here
/// would keep the node alive forever.
async fn route_probes(
    node: std::sync::Weak<Inner>,
    mut probes: mpsc::Receiver<crate::gate_socket::Probe>,
) {
    while let Some(probe) = probes.recv().await {
        let Some(inner) = node.upgrade() else { return };
        let Ok(message) = wire::decode_probe(&probe.payload) else {
            continue;
        };
        let state = inner.state.lock().unwrap_or_else(PoisonError::into_inner);
        match message {
            ProbeMessage::Punch { attempt, .. } => {
                if let Some(route) = state.punches.get(&attempt) {
                    let _ = route.send(probe.from);
                }
            }
            other => {
                if let Some(netcheck) = &state.netcheck {
                    let _ = netcheck.send((probe.from, other));
                }
            }
        }
    }
}

/// Of two open connections to one peer, whether `old` stays rather than
/// `new`. Both sides decide alike without talking: a direct path beats a
/// relayed one; otherwise the connection dialed by the smaller id wins, and
/// a new one from the same dialer replaces the old (a reconnect).
fn keeps_over(old: &Gate, new: &Gate) -> bool {
    match (path_of(&old.connection), path_of(&new.connection)) {
        (PathKind::Direct, PathKind::Relay) => true,
        (PathKind::Relay, PathKind::Direct) => false,
        _ => old.dialer != new.dialer && old.dialer < new.dialer,
    }
}

/// Reads a bench stream to its end and answers with the byte count.
async fn serve_bench(mut send: SendStream, mut recv: RecvStream) -> Result<(), WireError> {
    let mut total = 0u64;
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .map_err(|e| WireError::Io(e.into()))?
    {
        total += chunk.bytes.len() as u64;
    }
    send.write_all(&total.to_be_bytes())
        .await
        .map_err(|e| WireError::Io(e.into()))?;
    let _ = send.finish();
    Ok(())
}

/// Handshakes racing toward one peer, each with the address it went to.
type Handshakes = JoinSet<(SocketAddr, Result<Connection, String>)>;

/// Closes the handshakes that lost a race once they finish, as duplicates.
/// Dropping one mid-handshake would close it with keys the other side may
/// already have discarded, leaving it half-open there until its idle timeout.
fn close_losers(mut losers: Handshakes, limit: Duration) {
    if losers.is_empty() {
        return;
    }
    tokio::spawn(async move {
        let drain = async {
            while let Some(joined) = losers.join_next().await {
                if let Ok((_, Ok(connection))) = joined {
                    connection.close(CloseCode::Duplicate.varint(), b"another path won");
                }
            }
        };
        // Whatever has not finished by then has failed; dropping aborts it.
        let _ = timeout(limit, drain).await;
    });
}
