//! The node: one QUIC endpoint on one gate socket, the session with the
//! tracker, and the gates (one connection per peer, capped). It takes
//! commands (its public methods; `command::execute` runs a parsed one) and
//! reports everything as [`Event`]s; interfaces only render those.
//!
//! Who decides: the sans-IO [`manager`] makes every connection decision
//! (which path to try, when the relay joins a punch, which of two
//! connections stays, what to retry, resend or resync, when the tracker is
//! tried again); one node task ([`driver`]) owns it and starts the I/O it
//! asks for ([`connect`], [`tracker_link`]); gates are served in [`serve`],
//! which hands each stream the peer opens to its service: chat ([`chat`]),
//! history sync ([`sync`]), password proofs ([`auth`]) and files
//! ([`files`]). A service holds its own state and a narrow [`context`]
//! (this node's id, the shared [`roster`], the event stream, the node
//! task's inputs, the task set), never the node.

mod auth;
mod birthday;
mod budget;
mod by_address;
mod chat;
mod config;
mod connect;
mod context;
mod dht;
mod driver;
pub mod events;
mod files;
mod gate;
mod guesses;
mod lan;
mod listing;
pub mod manager;
mod names;
mod nat_report;
mod netcheck;
mod notices;
mod outbox;
mod overlay;
mod page;
mod parking;
mod portmap;
mod relay;
pub mod room_passwords;
mod roster;
mod serve;
mod sync;
mod tracker_link;
mod trackers;

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use quinn::{Connection, Endpoint};
use tokio::sync::{mpsc, oneshot, Notify};
use tokio::task::JoinSet;
use tokio::time::timeout;
use tokio_util::sync::CancellationToken;

use auth::Auth;
use budget::DestinationBudget;
use chat::Chat;
pub use config::{NodeConfig, NodeError, DEFAULT_PARK_AFTER};
use context::Context;
use driver::Input;
pub use events::{Event, Events, PathKind, PeerInfo, PeerStatus, SourceChange};
use files::Files;
pub use files::{
    FetchError, FetchReport, FetchRequest, FileInfo, SourceCount, TransferConfig, PIPELINE_DEPTH,
};
use manager::{Manager, ManagerConfig};
pub use relay::RelayPolicy;
use roster::{PeerRecord, Roster};
pub use serve::write_zeros;
use serve::Services;
use sync::{CatchUp, HistorySync};
use trackers::Trackers;

use crate::endpoint;
use crate::gate_socket::{canonical, is_relay_addr, GateSocket};
use crate::hlc::Hlc;
use crate::identity::{Identity, PeerId};
use crate::protocol::{validate_label, ControlMessage, ProbeMessage, MAX_NAME_LEN};
use crate::store::{Store, StoreError};
use crate::tls::{self, CertifiedIdentity};
use crate::wire::CloseCode;

/// The private room of two peers: `@` and the first characters of both ids,
/// in order. Only messages whose author addressed this node this way are
/// taken into it; only the two ever sync it.
pub fn dm_room(a: &PeerId, b: &PeerId) -> String {
    let (low, high) = if a <= b { (a, b) } else { (b, a) };
    let (low, high) = (low.to_string(), high.to_string());
    format!("@{}+{}", &low[..DM_ID_CHARS], &high[..DM_ID_CHARS])
}

/// The longest [`Node::shutdown`] waits for connections to finish closing.
const SHUTDOWN_DRAIN: Duration = Duration::from_secs(3);

/// Id characters per side in a private room's name (100 bits each).
const DM_ID_CHARS: usize = 20;

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

/// How a connection's packets travel: a relay address means through the
/// tracker.
fn path_of(connection: &Connection) -> PathKind {
    if is_relay_addr(&connection.remote_address()) {
        PathKind::Relay
    } else {
        PathKind::Direct
    }
}

/// Identifies this implementation in greetings.
const AGENT: &str = concat!("punchgate/", env!("CARGO_PKG_VERSION"));

struct Inner {
    identity: Arc<Identity>,
    config: NodeConfig,
    endpoint: Endpoint,
    socket: Arc<GateSocket>,
    client: quinn::ClientConfig,
    /// The data directory (known trackers live there).
    home: PathBuf,
    /// The trackers: pinned targets, current sessions, relay streams.
    trackers: Trackers,
    /// The roster, the event stream, the node task's inputs, the tasks.
    cx: Context,
    allowed: Option<HashSet<PeerId>>,
    /// Woken whenever a gate is installed (punches watch for theirs).
    gate_installed: Notify,
    /// The services, one per stream kind.
    services: Services,
    /// Where probes that arrive on the gate socket go.
    probe_routes: Mutex<ProbeRoutes>,
    /// Unsolicited traffic (punch probes, handshakes) per destination IP.
    budget: Mutex<DestinationBudget>,
    /// Punches running at once, at most [`MAX_PUNCHES`].
    punch_slots: Arc<tokio::sync::Semaphore>,
    /// One birthday punch at a time (either side): it costs hundreds of
    /// sockets or a thousand probes.
    birthday_slot: Arc<tokio::sync::Semaphore>,
    /// Birthday punches per destination IP (`birthday::SprayBudget`).
    sprays: Mutex<crate::birthday::SprayBudget>,
    /// Cancelled once shutdown is complete: the event stream ends.
    ended: CancellationToken,
    /// The DHT client, when the node uses the DHT.
    dht: Option<dht::DhtLink>,
    /// Router port mapping ([`portmap`]).
    portmap: portmap::PortMapSlot,
}

/// Where probes arriving on the gate socket go: to the punch whose attempt
/// they name, or to netcheck while it runs.
#[derive(Default)]
struct ProbeRoutes {
    /// Running punches by attempt id.
    punches: HashMap<u64, mpsc::UnboundedSender<SocketAddr>>,
    netcheck: Option<mpsc::UnboundedSender<(SocketAddr, ProbeMessage)>>,
    /// NAT measurements at session start, by nonce (`nat_report`).
    nat_checks: HashMap<u64, mpsc::UnboundedSender<(SocketAddr, ProbeMessage)>>,
    /// The peer of each recent introduction, by attempt id, and when it
    /// came (`note_introduction`).
    introduced: HashMap<u64, (PeerId, Instant)>,
    /// Easy sides of birthday punches by peer (`birthday`).
    birthdays: HashMap<PeerId, mpsc::UnboundedSender<SocketAddr>>,
}

impl ProbeRoutes {
    /// Whether `attempt` is a recent introduction to `peer`. Attempt ids
    /// are random and known only to the two sides (and their tracker), so a
    /// probe naming one comes from that peer. When both sides asked for an
    /// introduction at once, there are two, and each side's birthday punch
    /// may run under either: any recent one will do.
    fn is_live(&self, attempt: u64, peer: &PeerId) -> bool {
        self.introduced
            .get(&attempt)
            .is_some_and(|(p, _)| p == peer)
    }

    /// Remembers the introduction `attempt` to `peer` for [`Self::is_live`]
    /// until `forget_after` has passed (at most [`INTRODUCTIONS_KEPT`], the
    /// oldest forgotten first).
    fn note_introduction(&mut self, attempt: u64, peer: PeerId, forget_after: Duration) {
        let now = Instant::now();
        self.introduced
            .retain(|_, (_, at)| now.saturating_duration_since(*at) < forget_after);
        if self.introduced.len() >= INTRODUCTIONS_KEPT {
            // The newest matter: a punch under the oldest is long running.
            let oldest = self.introduced.iter().min_by_key(|(_, (_, at))| *at);
            if let Some(oldest) = oldest.map(|(attempt, _)| *attempt) {
                self.introduced.remove(&oldest);
            }
        }
        self.introduced.insert(attempt, (peer, now));
    }
}

/// Recent introductions remembered for birthday probes, at most.
const INTRODUCTIONS_KEPT: usize = 256;

/// Punches running at once, at most: beyond, a dialer's punch fails (the
/// relay carries the connection) and an acceptor's is not run.
const MAX_PUNCHES: usize = 32;

impl Inner {
    fn budget(&self) -> MutexGuard<'_, DestinationBudget> {
        self.budget.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn probe_routes(&self) -> MutexGuard<'_, ProbeRoutes> {
        self.probe_routes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Runs `task` as one of the node's tasks (see [`Context::spawn`]).
    fn spawn<F>(&self, task: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send,
    {
        self.cx.spawn(task);
    }
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

/// The addresses this node can be reached at on its own networks and, for
/// IPv6, on the internet: a global IPv6 address has no NAT in front of it,
/// only (at most) a stateful firewall that a punch opens. Loopback is left
/// out unless the node is bound to it: a remote peer dialing 127.0.0.1
/// reaches itself, and peers on one host share a LAN address anyway. IPv6
/// link-local addresses are left out too: they need an interface index no
/// other host shares. A dual-stack socket (bound to `[::]`) offers both
/// families; global IPv6 addresses come first, as they are preferred.
fn local_candidates(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.ip().is_unspecified() {
        return vec![bound];
    }
    let mut out: Vec<SocketAddr> = if_addrs::get_if_addrs()
        .unwrap_or_default()
        .into_iter()
        .map(|interface| interface.ip())
        .filter(|ip| bound.is_ipv6() || ip.is_ipv4())
        .filter(|ip| !ip.is_loopback() && !is_v6_link_local(ip))
        .map(|ip| SocketAddr::new(ip, bound.port()))
        .collect();
    out.sort_by_key(|addr| !crate::protocol::is_global_ipv6(addr));
    out
}

fn is_v6_link_local(ip: &std::net::IpAddr) -> bool {
    matches!(ip, std::net::IpAddr::V6(v6) if (v6.segments()[0] & 0xffc0) == 0xfe80)
}

/// This node's global IPv6 addresses (on its gate socket's port), if its
/// gate socket serves IPv6.
pub(crate) fn global_ipv6_candidates(bound: SocketAddr) -> Vec<SocketAddr> {
    if !bound.is_ipv6() {
        return Vec::new();
    }
    local_candidates(bound)
        .into_iter()
        .filter(crate::protocol::is_global_ipv6)
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
        let limits = config.history;
        let store = tokio::task::spawn_blocking(move || {
            Store::open(&store_home).map(|store| store.with_limits(limits))
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
        let (next_seq, stored_clock) = (store.next_seq()?, store.clock()?);
        let clock = Hlc::restored(stored_clock, now_ms());
        if clock.last() != stored_clock {
            // Poisoned by a far-future timestamp before such were refused.
            store.reset_clock(clock.last())?;
        }
        let store = Arc::new(store);
        let identity = Arc::new(identity);
        let certified = CertifiedIdentity::new(&identity)?;
        let allowed: Option<HashSet<PeerId>> =
            config.allow.clone().map(|list| list.into_iter().collect());
        let policy: tls::IncomingPolicy = match allowed.clone() {
            Some(allowed) => Arc::new(move |peer: &PeerId| allowed.contains(peer)),
            None => tls::allow_any_peer(),
        };
        let transport = config
            .liveness
            .transport_config(endpoint::PEER_STREAMS, config.congestion);
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
        let room_keys = auth::derive_room_keys(&passwords).await;
        let (events_tx, events_rx) = mpsc::unbounded_channel();
        let started = Instant::now();
        let starting =
            tracker_link::connect_trackers(&bound.endpoint, &identity, home, &config).await?;
        let tracker_ms = starting
            .reached
            .iter()
            .any(|r| matches!(r, Some(Ok(_))))
            .then(|| events::millis(started.elapsed()));
        let trackers = Trackers::new(&config.trackers, config.liveness.keep_alive);
        let publishes = !config.trackers.is_empty();
        let dht = match &config.dht {
            Some(dht_config) => Some(dht::DhtLink::start(dht_config, publishes)?),
            None => None,
        };
        let me = identity.peer_id();
        let manager_config = ManagerConfig {
            relay: config.relay,
            introduction_timeout: config.punch.deadline,
            accept_timeout: config.punch.deadline * 3 / 2,
            seed: u64::from_le_bytes(me.as_bytes()[..8].try_into().unwrap_or_default()) ^ now_ms(),
            answer_strangers: dht.as_ref().is_some_and(dht::DhtLink::publishes),
            ..ManagerConfig::default()
        };
        let mut manager = Manager::new(me, manager_config, trackers.len(), Instant::now());
        let mut tracker_events = Vec::new();
        for (ix, reached) in starting.reached.into_iter().enumerate() {
            match reached {
                Some(Ok((session, events))) => {
                    manager.handle_tracker_registered(ix, session.rtt(), Instant::now());
                    trackers.set_up(ix, Arc::new(session));
                    tracker_events.push((ix, events));
                }
                Some(Err(error)) => manager.handle_tracker_failed(ix, error, Instant::now()),
                // Still connecting: reported to the node task when done.
                None => {}
            }
        }
        let (inputs, inputs_rx) = mpsc::unbounded_channel();
        let roster = Roster {
            passwords,
            room_keys,
            known_names: names::KnownNames::load(home),
            ..Roster::default()
        };
        let cx = Context::new(identity.peer_id(), roster, events_tx, inputs);
        let chat = Arc::new(
            Chat::new(
                cx.clone(),
                identity.clone(),
                config.name.clone(),
                store,
                clock,
                next_seq,
                config.send_timeout,
            )
            .with_full_mesh_up_to(config.gossip.active),
        );
        let files = Arc::new(Files::new(cx.clone(), &config.transfer));
        let sync = Arc::new(HistorySync::new(cx.clone(), chat.clone()));
        let catch_up = Arc::new(CatchUp::new(cx.clone(), sync.clone(), files.clone()));
        let auth = Arc::new(Auth::new(cx.clone(), catch_up.clone()));
        let services = Services {
            cx: cx.clone(),
            chat,
            sync,
            auth,
            files,
            catch_up,
            bench: config.bench_serve,
        };
        let node = Node {
            inner: Arc::new(Inner {
                config,
                endpoint: bound.endpoint,
                socket: bound.socket,
                client,
                home: home.to_path_buf(),
                trackers,
                cx,
                allowed,
                gate_installed: Notify::new(),
                services,
                probe_routes: Mutex::default(),
                identity,
                budget: Mutex::new(DestinationBudget::default()),
                punch_slots: Arc::new(tokio::sync::Semaphore::new(MAX_PUNCHES)),
                birthday_slot: Arc::new(tokio::sync::Semaphore::new(1)),
                sprays: Mutex::default(),
                ended: CancellationToken::new(),
                dht,
                portmap: portmap::PortMapSlot::default(),
            }),
        };
        node.emit(Event::Ready {
            peer_id: node.peer_id().to_string(),
            name: node.inner.config.name.clone(),
            addr,
            reflexive: node.inner.trackers.first_session().map(|t| t.reflexive()),
            tracker: node.tracker_target(),
            trackers: node.inner.trackers.targets(),
            tracker_ms,
        });
        node.inner.spawn(node.clone().accept_loop());
        node.inner
            .spawn(connect::route_probes(Arc::downgrade(&node.inner), probes));
        node.inner.spawn(relay::route(
            Arc::downgrade(&node.inner),
            node.inner.socket.attach_relay(),
        ));
        for (tracker, _) in node.inner.trackers.sessions() {
            node.inner.spawn(node.clone().report_nat(tracker));
            node.open_relay(tracker).await;
        }
        node.inner.spawn(driver::run(
            node.clone(),
            manager,
            inputs_rx,
            tracker_events,
        ));
        let mut late = starting.late;
        let reporter = node.clone();
        node.inner.spawn(async move {
            while let Some(Ok((tracker, result))) = late.join_next().await {
                reporter.tracker_reached(tracker, result);
            }
        });
        // Before the rooms: a mapping the router grants at once reaches the
        // trackers before the first introductions.
        if node.inner.config.port_mapping {
            node.start_port_mapping();
        }
        for room in node.inner.config.rooms.clone() {
            if let Err(error) = node.join(&room).await {
                node.emit(Event::error(format!("cannot join {room}: {error}")));
            }
        }
        if node.inner.config.lan_discovery {
            node.start_lan_discovery();
        }
        for target in node.inner.config.connect.clone() {
            let task_node = node.clone();
            node.inner.spawn(async move {
                let node = task_node;
                match node.connect_target(&target).await {
                    // The manager told it already, with when it tries again.
                    Ok(()) | Err(NodeError::Unreachable { .. }) => {}
                    Err(error) => node.emit(Event::error(error)),
                }
            });
        }
        for peer in node.inner.config.connect_ids.clone() {
            let task_node = node.clone();
            node.inner.spawn(async move {
                match task_node.connect_peer(peer).await {
                    Ok(()) | Err(NodeError::Unreachable { .. }) => {}
                    Err(error) => task_node.emit(Event::error(error)),
                }
            });
        }
        node.inner.spawn(node.clone().publish_loop());
        node.inner.spawn(node.clone().rooms_loop());
        let ended = node.inner.ended.clone();
        Ok((node, Events::new(events_rx, ended)))
    }

    /// The first tracker as `PEERID@host:port` (pinned, even if it was
    /// given without its id), if this node has one whose key is known.
    pub fn tracker_target(&self) -> Option<String> {
        self.inner.trackers.targets().into_iter().next()
    }

    pub fn peer_id(&self) -> PeerId {
        self.inner.identity.peer_id()
    }

    /// Where a connection's packets go, as the user should see it: the
    /// tracker's address for a relayed one.
    fn shown_remote(&self, connection: &Connection) -> SocketAddr {
        let remote = canonical(connection.remote_address());
        let relayed_peer = self.inner.socket.relayed_peer(&remote);
        relayed_peer
            .and_then(|peer| self.inner.trackers.relay_addr_of(&peer))
            .unwrap_or(remote)
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

    fn roster(&self) -> MutexGuard<'_, Roster> {
        self.inner.cx.roster()
    }

    /// Adds `event` to this node's event stream, after every event before
    /// it: frontends answer commands this way, in order with the rest.
    pub fn emit(&self, event: Event) {
        self.inner.cx.emit(event);
    }

    fn hello(&self) -> ControlMessage {
        ControlMessage::Hello {
            name: self.inner.config.name.clone(),
            agent: AGENT.to_string(),
            rooms: self.roster().rooms.clone(),
        }
    }

    fn is_allowed(&self, peer: &PeerId) -> bool {
        self.inner
            .allowed
            .as_ref()
            .is_none_or(|allowed| allowed.contains(peer))
    }

    fn name_of(&self, peer: &PeerId) -> String {
        self.inner.cx.name_of(peer)
    }

    fn set_status(&self, peer: PeerId, status: PeerStatus, reason: Option<String>) {
        let name = {
            let mut roster = self.roster();
            let connected = roster.has_open_gate(&peer);
            let fallback = roster.remembered_name(&peer);
            let record = roster
                .peers
                .entry(peer)
                .or_insert_with(|| PeerRecord::new(fallback));
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

    /// Runs a command that takes a while (connecting, hashing a folder) as
    /// one of the node's tasks, so the caller stays responsive and shutdown
    /// stops and awaits it; its error becomes an [`Event::Error`].
    pub fn run_in_background<F>(&self, task: F)
    where
        F: std::future::Future<Output = Result<(), NodeError>> + Send + 'static,
    {
        let node = self.clone();
        self.inner.spawn(async move {
            if let Err(error) = task.await {
                node.emit(Event::error(error));
            }
        });
    }

    /// The rooms joined, in the order joined (plain lines go to the last).
    pub fn rooms(&self) -> Vec<String> {
        self.roster().rooms.clone()
    }

    /// Where downloads go when no folder is given.
    pub fn downloads_dir(&self) -> PathBuf {
        self.inner.config.transfer.downloads.clone()
    }

    /// The room plain lines go to: the last one joined.
    fn current_room(&self) -> Result<String, NodeError> {
        self.roster().rooms.last().cloned().ok_or(NodeError::NoRoom)
    }

    /// `room`, if this node has joined it.
    fn joined_room(&self, room: &str) -> Result<String, NodeError> {
        match self.roster().rooms.iter().any(|r| r == room) {
            true => Ok(room.to_string()),
            false => Err(NodeError::Invalid(format!(
                "#{room} is not joined; /join it first"
            ))),
        }
    }

    // --------------------------------------------------------- connecting --

    // ----------------------------------------------------------- per gate --

    // ------------------------------------------------------------ tracker --

    // ----------------------------------------------------------- shutdown --

    /// Stops the connection manager (nothing new starts), tells every
    /// connected peer goodbye, leaves the trackers, closes every connection
    /// with a reason, stops every task the node started and waits for them,
    /// and waits for the close frames to go out. The event stream ends
    /// after the last event.
    pub async fn shutdown(&self) {
        let gates = {
            let mut roster = self.roster();
            roster.closing = true;
            roster
                .peers
                .values()
                .filter_map(|r| r.gate.clone())
                .collect::<Vec<_>>()
        };
        let (done, stopped) = oneshot::channel();
        if self.inner.cx.input(Input::Shutdown(done)) {
            let _ = stopped.await;
        }
        let mut goodbyes = JoinSet::new();
        for gate in gates {
            goodbyes.spawn(async move { gate.goodbye("quit").await });
        }
        while goodbyes.join_next().await.is_some() {}
        tracing::debug!("shutdown: goodbyes sent");
        self.stop_port_mapping().await;
        self.inner.trackers.close_all();
        self.inner
            .endpoint
            .close(CloseCode::Normal.varint(), b"quit");
        // One signal stops every task at its next await; a task stuck in
        // blocking code cannot hold shutdown longer than the bound.
        self.inner.cx.stop();
        let tasks = self.inner.cx.tasks();
        tasks.close();
        if timeout(SHUTDOWN_DRAIN, tasks.wait()).await.is_err() {
            tracing::debug!(left = tasks.len(), "tasks still running at shutdown");
        }
        tracing::debug!("shutdown: tasks ended");
        // Every connection is closed with a reason; wait_idle lets the
        // close frames go out (quinn bounds it by three PTOs per connection).
        let _ = timeout(SHUTDOWN_DRAIN, self.inner.endpoint.wait_idle()).await;
        self.inner.ended.cancel();
    }

    /// Hands what happened to the node task.
    fn input(&self, input: Input) {
        self.inner.cx.input(input);
    }

    fn is_closing(&self) -> bool {
        self.roster().closing
    }

    /// The manager found `peer`'s gate ended for good.
    fn gone(&self, peer: PeerId, reason: String) {
        let name = {
            let mut roster = self.roster();
            let Some(record) = roster.peers.get_mut(&peer) else {
                return;
            };
            if record.gate.as_ref().is_some_and(|g| g.is_open()) {
                return;
            }
            record.gate = None;
            record.status = PeerStatus::Offline;
            record.name.clone()
        };
        self.inner.services.files.forget_peer(&peer);
        self.emit(Event::Disconnected {
            peer_id: peer.to_string(),
            name,
            reason,
        });
    }

    /// The peer's link closed because no room's gossip needs it: still a
    /// member, reached through the room's other members.
    fn through_room(&self, peer: PeerId) {
        {
            let mut roster = self.roster();
            if !roster.reached_through_room(&peer) {
                // Let go because it left every room this node is in (or
                // nothing else reaches it): gone, not in the room.
                drop(roster);
                self.gone(peer, "no longer in a room with this node".into());
                return;
            }
            let Some(record) = roster.peers.get_mut(&peer) else {
                return;
            };
            record.gate = None;
        }
        self.inner.services.files.forget_peer(&peer);
        self.set_status(
            peer,
            PeerStatus::InRoom,
            Some("reached through the room's other members".into()),
        );
    }

    /// The data directory default, for callers without one.
    pub fn default_home() -> Result<PathBuf, crate::home::HomeError> {
        crate::home::resolve(None)
    }
}

#[cfg(test)]
#[path = "probe_route_tests.rs"]
mod probe_route_tests;
