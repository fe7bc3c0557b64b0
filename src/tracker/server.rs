//! The tracker server: accepts nodes over pinned QUIC, registers them, answers
//! room requests, pushes presence events, and relays packets between peers
//! that found no direct path. One [`StreamKind::Tracker`] stream per
//! connection carries the requests and events; at most one
//! [`StreamKind::Relay`] stream carries relayed packets (see the `relay`
//! module). Anything else a node sends is a protocol error that
//! closes only that node's connection. A node may park its registration
//! and come back for it on a new connection (the doorbell: the `doorbell`
//! module, which also runs the second UDP port).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use quinn::{Connection, Endpoint};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio::time::{timeout, Instant};

use super::doorbell::{self, After};
use super::registry::parked::Holding;
use super::registry::{self, Generation, Introduction, Registry, TrackerLimits};
use super::relay::{serve_relay, RelayConfig, RelayOutbox};
use crate::endpoint::{self, Liveness};
use crate::gate_socket::probe_datagram;
use crate::identity::{Identity, PeerId};
use crate::protocol::{
    ProbeMessage, StreamKind, TrackerMessage, TrackerRefusal, TrackerRequest, TrackerRequestBody,
    TrackerResponse,
};
use crate::rate::TokenBucket;
use crate::tls::{self, CertifiedIdentity};
use crate::wire::{self, CloseCode, FrameReader, FrameWriter, WireError};

/// Messages waiting for one node's stream. Events beyond this are dropped;
/// responses wait (the node is rate-limited anyway).
const EVENT_QUEUE: usize = 256;
/// A node whose stream takes no data for this long is not reading: it is
/// closed rather than allowed to pin the tracker's memory.
const WRITE_STALL: Duration = Duration::from_secs(10);

/// Counters of what the tracker did since it started (`--stats`).
#[derive(Clone, Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct TrackerStats {
    /// Peers registered now, parked ones included.
    pub peers: u64,
    /// Peers parked now: registered without a connection (the doorbell).
    pub parked: u64,
    /// Genuine knocks of parked peers taken (each answered, within the
    /// second port's answer budget).
    pub knocks: u64,
    /// Relay streams open now.
    pub relay_streams: u64,
    pub registrations: u64,
    pub introductions: u64,
    /// Packets and bytes forwarded by the relay.
    pub relayed_packets: u64,
    pub relayed_bytes: u64,
    /// Packets dropped because their destination's queue was full.
    pub relay_dropped: u64,
    /// Packets dropped because their sender was over its rate limit.
    pub relay_throttled: u64,
    /// Packets refused: no introduction, or the destination is gone.
    pub relay_refused: u64,
}

#[derive(Default)]
pub(super) struct Counters {
    pub(super) registrations: AtomicU64,
    pub(super) introductions: AtomicU64,
    pub(super) relayed_packets: AtomicU64,
    pub(super) relayed_bytes: AtomicU64,
    pub(super) relay_dropped: AtomicU64,
    pub(super) relay_throttled: AtomicU64,
    pub(super) relay_refused: AtomicU64,
    pub(super) knocks: AtomicU64,
}

pub(super) fn bump(counter: &AtomicU64, by: u64) {
    counter.fetch_add(by, Ordering::Relaxed);
}

#[derive(Clone, Debug)]
pub struct TrackerConfig {
    pub listen: SocketAddr,
    pub limits: TrackerLimits,
    pub relay: RelayConfig,
    pub liveness: Liveness,
    /// Time a node has to finish the handshake, open its tracker stream and
    /// register. Default 10 s.
    pub handshake_timeout: Duration,
    /// Connections in their handshake or not yet registered, at most; more
    /// are refused at once (QUIC's CONNECTION_REFUSED) until one registers
    /// or gives up. Default 256: each costs a few KiB while it waits, and
    /// honest nodes register within a round trip or two.
    pub max_pending: usize,
    /// The second UDP port netcheck and parked nodes' knocks use (same
    /// address as `listen`). Default: `listen`'s port + 1, or any free
    /// port when that is 0.
    pub aux_port: Option<u16>,
    /// How often a parked node is told to knock. Default 25 s, inside the
    /// 30 s the shortest NAT mappings for UDP commonly last; a parked
    /// registration not knocked for three times this and 5 s is dropped.
    pub knock_every: Duration,
    /// If set, every request the tracker receives is appended here, in full:
    /// for audits and tests of what the tracker gets to see. Unbounded.
    pub request_log: Option<Arc<Mutex<Vec<TrackerRequest>>>>,
}

impl TrackerConfig {
    pub fn new(listen: SocketAddr) -> Self {
        Self {
            listen,
            limits: TrackerLimits::default(),
            relay: RelayConfig::default(),
            liveness: Liveness::default(),
            handshake_timeout: Duration::from_secs(10),
            max_pending: 256,
            aux_port: None,
            knock_every: registry::parked::KNOCK_EVERY,
            request_log: None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TrackerStartError {
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

pub(super) struct Shared {
    /// The second port: unsolicited probes and reflections for netcheck,
    /// knocks and rings for parked nodes.
    pub(super) aux: tokio::net::UdpSocket,
    pub(super) config: TrackerConfig,
    registry: Mutex<Registry>,
    /// Where to push each registered node's events, by generation, with
    /// its connection (whose RTT times introductions).
    pub(super) outboxes: Mutex<HashMap<PeerId, Outbox>>,
    /// Where to write packets relayed to each node with a relay stream.
    pub(super) relays: Mutex<HashMap<PeerId, RelayOutbox>>,
    /// The relay's tracker-wide byte budget.
    pub(super) relay_total: Mutex<TokenBucket>,
    pub(super) counters: Counters,
}

pub(super) struct Outbox {
    pub(super) generation: Generation,
    pub(super) sender: mpsc::Sender<Box<TrackerMessage>>,
    pub(super) connection: Connection,
}

impl Shared {
    pub(super) fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(super) fn aux_port(&self) -> u16 {
        self.aux.local_addr().map(|a| a.port()).unwrap_or(0)
    }

    pub(super) fn deliver(&self, outbox: registry::Outbox) {
        let outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        for (recipient, event) in outbox {
            if let Some(outbox) = outboxes.get(&recipient) {
                if outbox
                    .sender
                    .try_send(Box::new(TrackerMessage::Event(event)))
                    .is_err()
                {
                    tracing::warn!(peer = %recipient.short(), "event queue full; dropping an event");
                }
            }
        }
    }
}

/// A running tracker.
pub struct Tracker {
    endpoint: Endpoint,
    socket_released: tokio::sync::oneshot::Receiver<()>,
    peer_id: PeerId,
    local_addr: SocketAddr,
    shared: Arc<Shared>,
    accept_task: JoinHandle<()>,
    aux_task: JoinHandle<()>,
    sweep_task: JoinHandle<()>,
}

impl Tracker {
    /// Binds and starts serving. Must be called inside a tokio runtime.
    pub fn start(identity: &Identity, config: TrackerConfig) -> Result<Self, TrackerStartError> {
        let certified = CertifiedIdentity::new(identity)?;
        let mut server = certified.server(tls::ALPN_TRACKER, tls::allow_any_peer())?;
        server.transport_config(config.liveness.transport_config_with(
            endpoint::TRACKER_STREAMS,
            Default::default(),
            endpoint::Windows::signalling(config.relay.burst()),
        ));
        let bound = endpoint::bind(config.listen, Some(server)).map_err(|source| {
            TrackerStartError::Bind {
                addr: config.listen,
                source,
            }
        })?;
        let endpoint = bound.endpoint;
        let socket_released = bound.socket.when_released();
        let local_addr = endpoint
            .local_addr()
            .map_err(|source| TrackerStartError::Bind {
                addr: config.listen,
                source,
            })?;
        // A tracker on an ephemeral port (`--listen HOST:0`) takes an
        // ephemeral second port too: its port + 1 may be anyone's.
        let aux_port = config.aux_port.unwrap_or(if config.listen.port() == 0 {
            0
        } else {
            local_addr.port().wrapping_add(1)
        });
        let aux_addr = SocketAddr::new(config.listen.ip(), aux_port);
        let aux = crate::gate_socket::bind_udp(aux_addr)
            .and_then(|socket| {
                socket.set_nonblocking(true)?;
                tokio::net::UdpSocket::from_std(socket)
            })
            .map_err(|source| TrackerStartError::Bind {
                addr: aux_addr,
                source,
            })?;
        let relay_total = TokenBucket::new(
            config.relay.total_bytes_per_second,
            config
                .relay
                .total_bytes_per_second
                .max(config.relay.burst()),
            Instant::now().into_std(),
        );
        let mut registry = Registry::new(config.limits.clone());
        registry.set_knock_every(config.knock_every);
        let shared = Arc::new(Shared {
            aux,
            registry: Mutex::new(registry),
            outboxes: Mutex::new(HashMap::new()),
            relays: Mutex::new(HashMap::new()),
            relay_total: Mutex::new(relay_total),
            counters: Counters::default(),
            config,
        });
        let accept_task = tokio::spawn(accept_loop(endpoint.clone(), shared.clone()));
        let aux_task = tokio::spawn(doorbell::aux_loop(shared.clone()));
        let sweep_task = tokio::spawn(doorbell::sweep_loop(shared.clone()));
        tracing::info!(%local_addr, tracker = %identity.peer_id(), "tracker listening");
        Ok(Self {
            endpoint,
            socket_released,
            peer_id: identity.peer_id(),
            local_addr,
            shared,
            accept_task,
            aux_task,
            sweep_task,
        })
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// `PEERID@addr`, what nodes pass as `--tracker`.
    pub fn target(&self) -> String {
        format!("{}@{}", self.peer_id, self.local_addr)
    }

    /// The second UDP port (netcheck, knocks).
    pub fn aux_addr(&self) -> SocketAddr {
        self.shared.aux.local_addr().unwrap_or(self.local_addr)
    }

    pub fn peer_count(&self) -> usize {
        self.shared.registry().peer_count()
    }

    /// What the tracker has done so far.
    pub fn stats(&self) -> TrackerStats {
        let shared = &self.shared;
        let read = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        let counters = &shared.counters;
        let (peers, parked) = {
            let registry = shared.registry();
            (registry.peer_count() as u64, registry.parked_count() as u64)
        };
        TrackerStats {
            peers,
            parked,
            knocks: read(&counters.knocks),
            relay_streams: shared
                .relays
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .len() as u64,
            registrations: read(&counters.registrations),
            introductions: read(&counters.introductions),
            relayed_packets: read(&counters.relayed_packets),
            relayed_bytes: read(&counters.relayed_bytes),
            relay_dropped: read(&counters.relay_dropped),
            relay_throttled: read(&counters.relay_throttled),
            relay_refused: read(&counters.relay_refused),
        }
    }

    /// Closes every connection with a reason, waits until they are gone, and
    /// returns once the socket is closed (its port can be bound again).
    pub async fn shutdown(self) {
        let Self {
            endpoint,
            socket_released,
            accept_task,
            aux_task,
            sweep_task,
            ..
        } = self;
        aux_task.abort();
        sweep_task.abort();
        endpoint.close(CloseCode::Normal.varint(), b"tracker shutting down");
        endpoint.wait_idle().await;
        accept_task.abort();
        let _ = accept_task.await;
        drop(endpoint);
        // quinn's driver lets go of the socket once the last handle is gone.
        let _ = tokio::time::timeout(Duration::from_secs(5), socket_released).await;
    }
}

async fn accept_loop(endpoint: Endpoint, shared: Arc<Shared>) {
    let pending = Arc::new(Semaphore::new(shared.config.max_pending));
    while let Some(incoming) = endpoint.accept().await {
        match pending.clone().try_acquire_owned() {
            Ok(permit) => {
                tokio::spawn(serve_connection(shared.clone(), incoming, permit));
            }
            Err(_) => {
                tracing::debug!(remote = %incoming.remote_address(), "too many pending connections; refusing");
                incoming.refuse();
            }
        }
    }
}

/// How a node's session ended.
pub(super) enum SessionEnd {
    /// The node closed its stream or its connection, or we shut down.
    Closed,
    /// The node broke the protocol.
    Protocol(WireError),
    /// The node overstayed a limit: never registered, or stopped reading.
    Refused(&'static str),
    /// The node parked its registration: the tracker closes.
    Parked,
}

impl From<WireError> for SessionEnd {
    /// A stream that fails because its connection went away is a close, not
    /// a protocol error.
    fn from(error: WireError) -> Self {
        match error {
            WireError::Io(_) => SessionEnd::Closed,
            error => SessionEnd::Protocol(error),
        }
    }
}

/// Serves one node's connection. `pending` is held until the node registers
/// (or the connection ends): it counts against [`TrackerConfig::max_pending`].
async fn serve_connection(
    shared: Arc<Shared>,
    incoming: quinn::Incoming,
    pending: OwnedSemaphorePermit,
) {
    let handshake_timeout = shared.config.handshake_timeout;
    let connection = match timeout(handshake_timeout, incoming).await {
        Ok(Ok(connection)) => connection,
        Ok(Err(error)) => {
            tracing::debug!(%error, "tracker handshake failed");
            return;
        }
        Err(_) => {
            tracing::debug!("tracker handshake timed out");
            return;
        }
    };
    let peer_id = match tls::peer_id_of(&connection) {
        Ok(peer_id) => peer_id,
        Err(error) => {
            connection.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
            return;
        }
    };
    let mut generation = None;
    let end = session(&shared, &connection, peer_id, &mut generation, pending).await;
    end.close(&connection, peer_id);
    if let Some(generation) = generation {
        let outbox = shared.registry().unregister(peer_id, generation);
        shared.deliver(outbox);
        let mut outboxes = shared
            .outboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if outboxes.get(&peer_id).map(|o| o.generation) == Some(generation) {
            outboxes.remove(&peer_id);
        }
        drop(outboxes);
        let mut relays = shared.relays.lock().unwrap_or_else(PoisonError::into_inner);
        if relays.get(&peer_id).map(|r| r.generation) == Some(generation) {
            relays.remove(&peer_id);
        }
    }
}

impl SessionEnd {
    /// Closes the node's connection with the code and reason this end deserves.
    pub(super) fn close(&self, connection: &Connection, peer_id: PeerId) {
        match self {
            SessionEnd::Protocol(error) => {
                tracing::debug!(peer = %peer_id.short(), %error, "closing a node that broke the protocol");
                // A frame that stopped coming broke no rule of the format: a
                // limit refused it.
                let code = match error {
                    WireError::Stalled { .. } | WireError::Idle { .. } => CloseCode::Refused,
                    _ => CloseCode::Protocol,
                };
                connection.close(code.varint(), error.to_string().as_bytes());
            }
            SessionEnd::Refused(reason) => {
                tracing::debug!(peer = %peer_id.short(), reason, "closing a node");
                connection.close(CloseCode::Refused.varint(), reason.as_bytes());
            }
            SessionEnd::Parked => {
                connection.close(CloseCode::Normal.varint(), b"parked");
            }
            SessionEnd::Closed => {}
        }
    }
}

/// Aborts a task when dropped: a node's relay lives as long as its session.
struct AbortOnDrop(JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

async fn session(
    shared: &Arc<Shared>,
    connection: &Connection,
    peer_id: PeerId,
    generation: &mut Option<Generation>,
    pending: OwnedSemaphorePermit,
) -> SessionEnd {
    let mut pending = Some(pending);
    // The stream, its header and the registration must all come within the
    // handshake timeout: a connection that never registers holds nothing long.
    let register_by = Instant::now() + shared.config.handshake_timeout;
    let (send, recv) = match tokio::time::timeout_at(register_by, connection.accept_bi()).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(_)) => return SessionEnd::Closed,
        Err(_) => return SessionEnd::Refused("no tracker stream opened in time"),
    };
    let mut reader =
        match tokio::time::timeout_at(register_by, FrameReader::accept(recv, StreamKind::Tracker))
            .await
        {
            Ok(Ok(reader)) => reader,
            Ok(Err(error)) => return SessionEnd::Protocol(error),
            Err(_) => return SessionEnd::Refused("no stream header in time"),
        };
    let writer = FrameWriter::answering(send, StreamKind::Tracker);
    // Responses and pushed events share one queue drained by the writer, so
    // the reader is never cancelled in the middle of a frame.
    // Boxed: a queue's memory comes in blocks of 32 slots, taken when it is
    // made, and a message is larger than a pointer by far.
    let (out_tx, out_rx) = mpsc::channel::<Box<TrackerMessage>>(EVENT_QUEUE);
    let write_all = drain_into(writer, out_rx, "not reading its tracker stream", is_parked);
    let limits = &shared.config.limits;
    let mut bucket = TokenBucket::new(
        limits.requests_per_second,
        limits.request_burst,
        Instant::now().into_std(),
    );
    let read_all = async {
        let mut relay: Option<AbortOnDrop> = None;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(register_by), if generation.is_none() => {
                    return Err(SessionEnd::Refused("did not register in time"));
                }
                frame = reader.recv::<TrackerRequest>() => {
                    let Some(request) = frame? else { return Ok(()) };
                    if let Some(log) = &shared.config.request_log {
                        log.lock().unwrap_or_else(PoisonError::into_inner).push(request.clone());
                    }
                    let mut after = After::Nothing;
                    let result = if bucket.try_take(Instant::now().into_std()) {
                        handle_request(shared, connection, peer_id, request.body, generation, &out_tx, &mut after)
                    } else {
                        Err(TrackerRefusal::RateLimited { per_second: limits.requests_per_second })
                    };
                    if generation.is_some() {
                        pending.take();
                    }
                    let response = TrackerMessage::Response { id: request.id, result };
                    if out_tx.send(Box::new(response)).await.is_err() {
                        return Ok(());
                    }
                    match after {
                        After::Nothing => {}
                        // The writer ends the session once `Parked` is out.
                        After::Close => return std::future::pending().await,
                        After::Introduce(held) => {
                            for h in held {
                                shared.introduce(h.attempt, h.dialer, h.acceptor);
                            }
                        }
                    }
                }
                stream = connection.accept_uni() => {
                    let Ok(mut recv) = stream else { return Ok(()) };
                    return Err(unexpected_stream(&mut recv).await);
                }
                stream = connection.accept_bi() => {
                    let Ok((send, mut recv)) = stream else { return Ok(()) };
                    let kind = match timeout(Duration::from_secs(5), wire::read_header::<StreamKind>(&mut recv)).await {
                        Ok(Ok(kind)) => kind,
                        Ok(Err(error)) => return Err(SessionEnd::Protocol(error)),
                        Err(_) => return Err(SessionEnd::Protocol(WireError::Truncated("stream header"))),
                    };
                    match (*generation, kind, &relay) {
                        (Some(generation), StreamKind::Relay, None) => {
                            let task = serve_relay(shared.clone(), connection.clone(), peer_id, generation, send, recv);
                            relay = Some(AbortOnDrop(tokio::spawn(task)));
                        }
                        (None, StreamKind::Relay, _) => {
                            return Err(SessionEnd::Refused("relay stream opened before registering"));
                        }
                        (_, StreamKind::Relay, Some(_)) => {
                            return Err(SessionEnd::Protocol(WireError::UnexpectedKind {
                                expected: "single relay",
                                got: "second relay",
                            }));
                        }
                        (_, kind, _) => {
                            return Err(SessionEnd::Protocol(WireError::UnexpectedKind {
                                expected: "single tracker or relay",
                                got: kind.name(),
                            }));
                        }
                    }
                }
            }
        }
    };
    let result: Result<(), SessionEnd> = tokio::select! {
        result = read_all => result,
        result = write_all => result,
    };
    match result {
        Ok(()) => SessionEnd::Closed,
        Err(end) => end,
    }
}

/// Writes queued frames to a node's stream until the queue closes; a node
/// whose stream takes nothing for [`WRITE_STALL`] is refused with
/// `stalled`, rather than allowed to pin the tracker's memory. A frame
/// that is `last` finishes the stream: once the node has it (or after
/// [`doorbell::PARKED_ACK`]) the session ends as [`SessionEnd::Parked`].
pub(super) async fn drain_into<T: serde::Serialize>(
    mut writer: FrameWriter<quinn::SendStream>,
    mut queue: mpsc::Receiver<T>,
    stalled: &'static str,
    last: fn(&T) -> bool,
) -> Result<(), SessionEnd> {
    while let Some(frame) = queue.recv().await {
        match timeout(WRITE_STALL, writer.send(&frame)).await {
            Ok(result) => result?,
            Err(_) => return Err(SessionEnd::Refused(stalled)),
        }
        if last(&frame) {
            let stream = writer.get_mut();
            let _ = stream.finish();
            let _ = timeout(doorbell::PARKED_ACK, stream.stopped()).await;
            return Err(SessionEnd::Parked);
        }
    }
    Ok(())
}

// `drain_into` takes the queue's item type, which is boxed.
#[allow(clippy::borrowed_box)]
fn is_parked(message: &Box<TrackerMessage>) -> bool {
    matches!(
        **message,
        TrackerMessage::Response {
            result: Ok(TrackerResponse::Parked { .. }),
            ..
        }
    )
}

/// The error for a stream a node should not have opened: whatever is wrong
/// with its header, or that it is not the tracker stream.
async fn unexpected_stream(recv: &mut quinn::RecvStream) -> SessionEnd {
    match timeout(
        Duration::from_secs(5),
        wire::read_header::<StreamKind>(recv),
    )
    .await
    {
        Ok(Err(error)) => SessionEnd::Protocol(error),
        Ok(Ok(kind)) => SessionEnd::Protocol(WireError::UnexpectedKind {
            expected: "single tracker",
            got: kind.name(),
        }),
        Err(_) => SessionEnd::Protocol(WireError::Truncated("stream header")),
    }
}

fn handle_request(
    shared: &Shared,
    connection: &Connection,
    peer_id: PeerId,
    body: TrackerRequestBody,
    generation: &mut Option<Generation>,
    events: &mpsc::Sender<Box<TrackerMessage>>,
    after: &mut After,
) -> Result<TrackerResponse, TrackerRefusal> {
    let first = matches!(
        body,
        TrackerRequestBody::Register { .. } | TrackerRequestBody::Resume { .. }
    );
    if generation.is_none() && !first {
        return Err(TrackerRefusal::NotRegistered);
    }
    if generation.is_some() && first {
        return Err(TrackerRefusal::AlreadyRegistered);
    }
    match body {
        TrackerRequestBody::Register {
            name,
            local_addrs,
            presence,
        } => {
            let reflexive = crate::gate_socket::canonical(connection.remote_address());
            let (new_generation, outbox) =
                shared
                    .registry()
                    .register_as(peer_id, name, reflexive, local_addrs, presence)?;
            shared.deliver(outbox);
            shared.connected(peer_id, new_generation, events, connection);
            *generation = Some(new_generation);
            bump(&shared.counters.registrations, 1);
            tracing::debug!(peer = %peer_id.short(), %reflexive, ?presence, "registered");
            Ok(TrackerResponse::Registered { reflexive })
        }
        TrackerRequestBody::Join { room } => {
            let (members, outbox) = shared.registry().join(peer_id, &room)?;
            shared.deliver(outbox);
            Ok(TrackerResponse::Joined { room, members })
        }
        TrackerRequestBody::Leave { room } => {
            let outbox = shared.registry().leave(peer_id, &room)?;
            shared.deliver(outbox);
            Ok(TrackerResponse::Left { room })
        }
        TrackerRequestBody::Members { room } => {
            let members = shared.registry().members(peer_id, &room)?;
            Ok(TrackerResponse::Members { room, members })
        }
        TrackerRequestBody::Netcheck { nonce } => {
            let probe = (ProbeMessage::Unsolicited { nonce })
                .encode()
                .map(|payload| probe_datagram(&payload));
            if let Ok(datagram) = probe {
                // Best effort: a full socket buffer loses it, as a network could.
                let _ = shared
                    .aux
                    .try_send_to(&datagram, connection.remote_address());
            }
            Ok(TrackerResponse::NetcheckStarted {
                aux_port: shared.aux_port(),
            })
        }
        TrackerRequestBody::ReportNat { nat } => {
            shared.registry().note_nat(peer_id, nat)?;
            Ok(TrackerResponse::NatNoted)
        }
        TrackerRequestBody::PortMapped { addr } => {
            let kept = shared.registry().set_mapped(peer_id, addr)?;
            Ok(TrackerResponse::PortMapped { kept })
        }
        TrackerRequestBody::Connect { peer } => {
            let now = std::time::Instant::now();
            let mut registry = shared.registry();
            let introduction = registry.introduce_at(peer_id, peer, random_u64(), now)?;
            match introduction {
                Introduction::New {
                    attempt,
                    dialer,
                    acceptor,
                } => {
                    bump(&shared.counters.introductions, 1);
                    // A parked acceptor is rung; the introduction waits
                    // for it to resume.
                    let held = registry.hold_introduction(peer, attempt, peer_id, now);
                    drop(registry);
                    match held {
                        Holding::Held(ring) => ring.iter().for_each(|r| doorbell::send(shared, r)),
                        Holding::NotParked => shared.introduce(attempt, dialer, acceptor),
                    }
                    Ok(TrackerResponse::Introducing { attempt })
                }
                // Both asked for each other at once: the introduction on
                // its way to both answers this request too.
                Introduction::Crossed { attempt } => Ok(TrackerResponse::Introducing { attempt }),
            }
        }
        TrackerRequestBody::Park => {
            let current = generation.ok_or(TrackerRefusal::NotRegistered)?;
            doorbell::park(shared, peer_id, current, after)
        }
        TrackerRequestBody::Resume { ticket } => {
            let (new_generation, response) =
                doorbell::resume(shared, connection, peer_id, &ticket, after)?;
            shared.connected(peer_id, new_generation, events, connection);
            *generation = Some(new_generation);
            Ok(response)
        }
    }
}

fn random_u64() -> u64 {
    let mut bytes = [0u8; 8];
    // ring's system RNG only fails if the OS has none; a zero id still works.
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}
