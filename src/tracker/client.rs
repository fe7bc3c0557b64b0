//! A node's session with its tracker: connect (pinned, or trusted on first
//! use), register, then requests with responses matched by id, and the
//! tracker's pushed events on a channel; and the relay stream
//! ([`TrackerSession::open_relay`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use quinn::{Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::doorbell::{self, Doorbell};
use crate::endpoint::{AddrError, Liveness, Target};
use crate::gate_socket::GateSocket;
use crate::home::{HomeError, KnownKeys};
use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{
    DoorbellTag, Member, NatReport, Presence, RelayFrame, TrackerEvent, TrackerRefusal,
    TrackerRequest, TrackerRequestBody, TrackerResponse,
};
use crate::tls::{self, CertifiedIdentity};
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// How long a request may wait for its response.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Tracker events waiting for the node, at most.
const EVENTS_QUEUE: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum TrackerError {
    #[error(transparent)]
    Addr(#[from] AddrError),
    #[error("cannot connect to the tracker at {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    #[error(transparent)]
    Home(#[from] HomeError),
    #[error("the tracker refused: {0}")]
    Refused(#[from] TrackerRefusal),
    #[error("tracker protocol error: {0}")]
    Protocol(#[from] WireError),
    /// The connection ended; the text says how, when the tracker said.
    #[error("lost the connection to the tracker{0}")]
    Lost(LostReason),
    #[error("the tracker did not answer within {0:?}")]
    Timeout(Duration),
    #[error("the tracker answered with an unexpected response")]
    UnexpectedResponse,
    #[error(transparent)]
    Tls(#[from] tls::TlsError),
}

/// Why a tracker connection ended, shown after "lost the connection to
/// the tracker": what the tracker said when it closed it (a newer or older
/// protocol version, a refusal), or nothing when it just went away.
#[derive(Debug)]
pub struct LostReason(Option<quinn::ConnectionError>);

impl LostReason {
    /// A connection that ended with no word.
    pub fn unknown() -> Self {
        Self(None)
    }
}

impl std::fmt::Display for LostReason {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.0 {
            Some(quinn::ConnectionError::ApplicationClosed(close)) if !close.reason.is_empty() => {
                let said = String::from_utf8_lossy(&close.reason);
                if said.contains("protocol version") {
                    write!(
                        f,
                        ": it said {said}; run the same punchgate version as the tracker"
                    )
                } else {
                    write!(f, ": it said {said}")
                }
            }
            Some(quinn::ConnectionError::TimedOut) => f.write_str(": no answer for too long"),
            _ => Ok(()),
        }
    }
}

mod link;

use link::{dial, knock, lock, micros, open_link, Link, LinkState, Parked};

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<TrackerResponse, TrackerRefusal>>>>>;

/// What a session hands the node: the tracker's pushed events, and word
/// that a parked session is back.
#[derive(Clone, Debug, PartialEq)]
pub enum SessionEvent {
    Tracker(TrackerEvent),
    /// A parked session resumed its registration on a new connection: its
    /// relay stream is gone, and events pushed while it was parked were
    /// lost. Comes before any event of the new connection.
    Resumed,
    /// A parked session came back to a tracker that no longer held its
    /// registration, and registered afresh on the new connection: its
    /// rooms are to be joined again, as after a loss.
    Registered,
}

/// How a parked session came back.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Comeback {
    Resumed,
    RegisteredAfresh,
}

/// A registered session with a tracker: one connection at a time, or none
/// while the registration is parked ([`TrackerSession::park`]); a request
/// made while parked resumes it first. The event channel closes when the
/// registration is lost: the connection ended (not on purpose), a resume
/// failed, or the parked tracker stopped answering knocks.
pub struct TrackerSession {
    shared: Arc<Shared>,
}

struct Shared {
    endpoint: Endpoint,
    /// Pinned to the tracker's id (learned, when the target gave none).
    client: quinn::ClientConfig,
    server_name: String,
    addr: SocketAddr,
    tracker: PeerId,
    reflexive: Mutex<SocketAddr>,
    state: Mutex<LinkState>,
    /// One resume at a time; the others wait and take its link.
    resuming: tokio::sync::Mutex<()>,
    /// `None` once the registration is lost: the channel closes.
    events: Mutex<Option<mpsc::Sender<SessionEvent>>>,
    next_id: AtomicU32,
    /// The shortest request round trip seen, in microseconds (`u64::MAX`:
    /// none yet).
    fastest_request_us: AtomicU64,
    /// The round trip when the session parked, in microseconds.
    parked_rtt_us: AtomicU64,
    /// A park under way: the end of its connection is no loss.
    parking: AtomicBool,
    /// The tracker refused to park this registration: not asked again.
    park_refused: AtomicBool,
    /// The last request sent or event received.
    last_active: Mutex<Instant>,
    /// This node's NAT as measured through this session (unknown until then).
    nat: Mutex<NatReport>,
    /// What it registered as: told again to a tracker that forgot it.
    name: String,
    local_addrs: Vec<SocketAddr>,
    presence: Presence,
}

/// The tracker's answer to a relay stream.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RelayOffer {
    /// It relays, each peer within this many bytes per second.
    Ready { bytes_per_second: u32, burst: u32 },
    /// It does not relay, and why.
    Unavailable(String),
}

/// An open relay stream: frames to the tracker, and frames from it.
pub struct RelayStream {
    pub writer: FrameWriter<SendStream>,
    pub reader: FrameReader<RecvStream>,
}

/// What a node tells the tracker about itself.
pub struct Registration<'a> {
    pub name: &'a str,
    pub local_addrs: Vec<SocketAddr>,
    pub presence: Presence,
}

impl TrackerSession {
    /// Connects to `target` and registers. A bare `host:port` target is
    /// trusted on first use and checked against `home`'s known trackers.
    /// Returns the session and the tracker's pushed events.
    pub async fn connect(
        endpoint: &Endpoint,
        certified: &CertifiedIdentity,
        home: &Path,
        target: &Target,
        liveness: Liveness,
        registration: Registration<'_>,
    ) -> Result<(Self, mpsc::Receiver<SessionEvent>), TrackerError> {
        let addr = target.resolve().await?;
        let transport = liveness.transport_config(crate::endpoint::NO_STREAMS, Default::default());
        let (mut first, first_name) = match &target.peer {
            Some(peer) => (
                certified.pinned_client(tls::ALPN_TRACKER)?,
                tls::server_name_for(peer),
            ),
            None => (
                tls::danger::trust_on_first_use_client(certified, tls::ALPN_TRACKER)?,
                "tracker.punchgate".to_string(),
            ),
        };
        first.transport_config(transport.clone());
        let connection = dial(endpoint, first, addr, &first_name).await?;
        let tracker = tls::peer_id_of(&connection)?;
        if target.peer.is_none() {
            if let Err(error) = KnownKeys::trackers(home).check_or_remember(&target.host, tracker) {
                connection.close(CloseCode::Refused.varint(), b"tracker key changed");
                return Err(error.into());
            }
        }
        // Later connections (resuming a parked registration) are pinned to
        // the key this one proved.
        let mut client = certified.pinned_client(tls::ALPN_TRACKER)?;
        client.transport_config(transport);
        let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUE);
        let shared = Arc::new(Shared {
            endpoint: endpoint.clone(),
            client,
            server_name: tls::server_name_for(&tracker),
            addr,
            tracker,
            reflexive: Mutex::new(addr),
            state: Mutex::new(LinkState::Lost),
            resuming: tokio::sync::Mutex::new(()),
            events: Mutex::new(Some(events_tx)),
            next_id: AtomicU32::new(0),
            fastest_request_us: AtomicU64::new(u64::MAX),
            parked_rtt_us: AtomicU64::new(0),
            parking: AtomicBool::new(false),
            park_refused: AtomicBool::new(false),
            last_active: Mutex::new(Instant::now()),
            nat: Mutex::new(NatReport::default()),
            name: registration.name.to_string(),
            local_addrs: registration.local_addrs,
            presence: registration.presence,
        });
        let link = open_link(&shared, connection).await?;
        *lock(&shared.state) = LinkState::Connected(link.clone());
        let session = Self { shared };
        let response = session
            .request_on(&link, session.shared.register_body())
            .await;
        match response {
            Ok(TrackerResponse::Registered { reflexive }) => {
                *lock(&session.shared.reflexive) = reflexive;
            }
            Ok(_) => return Err(TrackerError::UnexpectedResponse),
            Err(error) => {
                session.close();
                return Err(error);
            }
        }
        Ok((session, events_rx))
    }

    /// The connection to use now: the current one, or a new one resuming
    /// the parked registration.
    async fn link(&self) -> Result<Link, TrackerError> {
        match &*lock(&self.shared.state) {
            LinkState::Connected(link) => return Ok(link.clone()),
            LinkState::Lost => return Err(TrackerError::Lost(LostReason::unknown())),
            LinkState::Parked(_) => {}
        }
        self.resume_link().await
    }

    /// Takes the parked registration back on a new connection. A tracker
    /// that no longer holds it (it restarted, or the registration expired)
    /// is registered with afresh on that connection, and the node hears
    /// [`SessionEvent::Registered`] to join its rooms there again; one
    /// that cannot be reached loses the registration, as any loss does.
    pub async fn resume(&self) -> Result<(), TrackerError> {
        self.resume_link().await.map(drop)
    }

    async fn resume_link(&self) -> Result<Link, TrackerError> {
        let result = self.resume_once().await;
        if let Ok((_, Comeback::RegisteredAfresh)) = &result {
            // Sent outside the resume's lock: whoever reads the events may
            // be waiting for this session.
            if let Some(events) = self.shared.events() {
                let _ = events.send(SessionEvent::Registered).await;
            }
        }
        result.map(|(link, _)| link)
    }

    async fn resume_once(&self) -> Result<(Link, Comeback), TrackerError> {
        let _one_at_a_time = self.shared.resuming.lock().await;
        let ticket = match &*lock(&self.shared.state) {
            LinkState::Connected(link) => return Ok((link.clone(), Comeback::Resumed)),
            LinkState::Lost => return Err(TrackerError::Lost(LostReason::unknown())),
            LinkState::Parked(parked) => parked.ticket,
        };
        let shared = &self.shared;
        let resumed = async {
            let connection = dial(
                &shared.endpoint,
                shared.client.clone(),
                shared.addr,
                &shared.server_name,
            )
            .await?;
            let link = open_link(shared, connection).await?;
            let resume = TrackerRequestBody::Resume { ticket };
            let answer = match self.request_on(&link, resume).await {
                Ok(TrackerResponse::Resumed { reflexive }) => Ok((reflexive, Comeback::Resumed)),
                Err(TrackerError::Refused(TrackerRefusal::NotParked)) => {
                    match self.request_on(&link, shared.register_body()).await {
                        Ok(TrackerResponse::Registered { reflexive }) => {
                            Ok((reflexive, Comeback::RegisteredAfresh))
                        }
                        Ok(_) => Err(TrackerError::UnexpectedResponse),
                        Err(error) => Err(error),
                    }
                }
                Ok(_) => Err(TrackerError::UnexpectedResponse),
                Err(error) => Err(error),
            };
            match answer {
                Ok((reflexive, how)) => Ok((link, reflexive, how)),
                Err(error) => {
                    link.connection.close(CloseCode::Normal.varint(), b"bye");
                    Err(error)
                }
            }
        }
        .await;
        match resumed {
            Ok((link, reflexive, how)) => {
                let mut state = lock(&shared.state);
                if !matches!(&*state, LinkState::Parked(_)) {
                    // Closed while the resume was under way.
                    drop(state);
                    link.connection.close(CloseCode::Normal.varint(), b"bye");
                    return Err(TrackerError::Lost(LostReason::unknown()));
                }
                *state = LinkState::Connected(link.clone());
                drop(state);
                *lock(&shared.reflexive) = reflexive;
                tracing::debug!(tracker = %shared.tracker.short(), ?how, "back from parking");
                Ok((link, how))
            }
            Err(error) => {
                tracing::debug!(tracker = %shared.tracker.short(), %error, "cannot resume the parked registration");
                shared.lose();
                Err(error)
            }
        }
    }

    /// Parks the registration: the tracker keeps it (rooms, findability)
    /// without this connection, which closes; `socket` knocks on the
    /// tracker's second port until a request or a ring resumes
    /// it. Refused by a tracker that does not park (then never asked
    /// again: [`Self::may_park`]).
    pub async fn park(&self, socket: Arc<GateSocket>) -> Result<(), TrackerError> {
        let link = match &*lock(&self.shared.state) {
            LinkState::Connected(link) => link.clone(),
            _ => return Ok(()),
        };
        let shared = &self.shared;
        let rtt = self.rtt();
        shared.parking.store(true, Ordering::SeqCst);
        let response = self.request_on(&link, TrackerRequestBody::Park).await;
        let result = match response {
            Ok(TrackerResponse::Parked {
                ticket,
                aux_port,
                knock_every_secs,
            }) => {
                shared.parked_rtt_us.store(micros(rtt), Ordering::Relaxed);
                let doorbell = SocketAddr::new(shared.addr.ip(), aux_port);
                let every = Duration::from_secs(u64::from(knock_every_secs.max(1)));
                let bell = Doorbell::new(ticket, every, Instant::now());
                let (answers, answers_rx) = mpsc::channel(8);
                let knocking = tokio::spawn(knock(
                    Arc::downgrade(shared),
                    socket.clone(),
                    doorbell,
                    bell,
                    answers_rx,
                ));
                *lock(&shared.state) = LinkState::Parked(Parked {
                    ticket,
                    doorbell,
                    answers,
                    knocking,
                    socket,
                });
                link.connection.close(CloseCode::Normal.varint(), b"parked");
                tracing::debug!(tracker = %shared.tracker.short(), %doorbell, "parked the registration");
                Ok(())
            }
            Ok(_) => Err(TrackerError::UnexpectedResponse),
            Err(TrackerError::Refused(refusal)) => {
                shared.park_refused.store(true, Ordering::Relaxed);
                Err(TrackerError::Refused(refusal))
            }
            Err(error) => Err(error),
        };
        shared.parking.store(false, Ordering::SeqCst);
        if result.is_err() && link.connection.close_reason().is_some() {
            // The connection ended while the park was under way.
            shared.lose_link(&link.connection);
        }
        result
    }

    /// Whether the registration is parked now.
    pub fn is_parked(&self) -> bool {
        matches!(&*lock(&self.shared.state), LinkState::Parked(_))
    }

    /// Whether parking may be asked: connected, and never refused.
    pub fn may_park(&self) -> bool {
        !self.shared.park_refused.load(Ordering::Relaxed)
            && matches!(&*lock(&self.shared.state), LinkState::Connected(_))
    }

    /// When a request was last sent or an event received.
    pub fn last_active(&self) -> Instant {
        *lock(&self.shared.last_active)
    }

    /// The second port of the tracker this parked session knocks on.
    pub fn doorbell(&self) -> Option<SocketAddr> {
        match &*lock(&self.shared.state) {
            LinkState::Parked(parked) => Some(parked.doorbell),
            _ => None,
        }
    }

    /// An answer that came from [`Self::doorbell`]: checked by the
    /// knocking task.
    pub fn handle_answer(&self, seq: u64, ring: bool, tag: DoorbellTag) {
        if let LinkState::Parked(parked) = &*lock(&self.shared.state) {
            let _ = parked.answers.try_send((seq, ring, tag));
        }
    }

    /// Sends a request and waits for its response (resuming a parked
    /// registration first).
    pub async fn request(&self, body: TrackerRequestBody) -> Result<TrackerResponse, TrackerError> {
        let link = self.link().await?;
        match self.request_on(&link, body.clone()).await {
            // The session parked under this request (its connection closed
            // before the answer came): asked again on a resumed one.
            Err(TrackerError::Lost(_)) if self.is_parked() => {
                let link = self.link().await?;
                self.request_on(&link, body).await
            }
            result => result,
        }
    }

    async fn request_on(
        &self,
        link: &Link,
        body: TrackerRequestBody,
    ) -> Result<TrackerResponse, TrackerError> {
        let shared = &self.shared;
        *lock(&shared.last_active) = Instant::now();
        let id = shared.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        lock(&link.pending).insert(id, reply_tx);
        let mut writer = link.writer.lock().await;
        let sent_at = Instant::now();
        writer.send(&TrackerRequest { id, body }).await?;
        drop(writer);
        let reply = timeout(REQUEST_TIMEOUT, reply_rx).await;
        if let Ok(Ok(_)) = &reply {
            shared
                .fastest_request_us
                .fetch_min(micros(sent_at.elapsed()), Ordering::Relaxed);
        }
        lock(&link.pending).remove(&id);
        match reply {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(TrackerError::Lost(LostReason(
                link.connection.close_reason(),
            ))),
            Err(_) => Err(TrackerError::Timeout(REQUEST_TIMEOUT)),
        }
    }

    /// Joins `room`; returns its other members.
    pub async fn join(&self, room: &str) -> Result<Vec<Member>, TrackerError> {
        match self
            .request(TrackerRequestBody::Join { room: room.into() })
            .await?
        {
            TrackerResponse::Joined { members, .. } => Ok(members),
            _ => Err(TrackerError::UnexpectedResponse),
        }
    }

    pub async fn leave(&self, room: &str) -> Result<(), TrackerError> {
        match self
            .request(TrackerRequestBody::Leave { room: room.into() })
            .await?
        {
            TrackerResponse::Left { .. } => Ok(()),
            _ => Err(TrackerError::UnexpectedResponse),
        }
    }

    pub async fn members(&self, room: &str) -> Result<Vec<Member>, TrackerError> {
        match self
            .request(TrackerRequestBody::Members { room: room.into() })
            .await?
        {
            TrackerResponse::Members { members, .. } => Ok(members),
            _ => Err(TrackerError::UnexpectedResponse),
        }
    }

    /// Opens the relay stream and reads the tracker's first answer: whether
    /// it relays, and within which limits. The stream is returned only if
    /// it does.
    pub async fn open_relay(&self) -> Result<(RelayOffer, Option<RelayStream>), TrackerError> {
        let link = self.link().await?;
        let (send, recv) = link
            .connection
            .open_bi()
            .await
            .map_err(|_| TrackerError::Lost(LostReason(link.connection.close_reason())))?;
        let writer = FrameWriter::open(send, StreamKind::Relay).await?;
        let mut reader = FrameReader::new(recv, StreamKind::Relay);
        let first = timeout(REQUEST_TIMEOUT, reader.recv::<RelayFrame>())
            .await
            .map_err(|_| TrackerError::Timeout(REQUEST_TIMEOUT))??;
        match first {
            Some(RelayFrame::Ready {
                bytes_per_second,
                burst,
            }) => Ok((
                RelayOffer::Ready {
                    bytes_per_second,
                    burst,
                },
                Some(RelayStream { writer, reader }),
            )),
            Some(RelayFrame::Unavailable { reason }) => Ok((RelayOffer::Unavailable(reason), None)),
            Some(_) | None => Err(TrackerError::UnexpectedResponse),
        }
    }

    /// This node's NAT as last measured through this session.
    pub fn nat(&self) -> NatReport {
        *lock(&self.shared.nat)
    }

    /// Remembers what was measured of this node's NAT through this session.
    pub fn set_nat(&self, nat: NatReport) {
        *lock(&self.shared.nat) = nat;
    }

    /// The address the tracker sees this node at.
    pub fn reflexive(&self) -> SocketAddr {
        *lock(&self.shared.reflexive)
    }

    pub fn tracker_id(&self) -> PeerId {
        self.shared.tracker
    }

    pub fn tracker_addr(&self) -> SocketAddr {
        crate::gate_socket::canonical(self.shared.addr)
    }

    /// The round-trip time to the tracker: QUIC's smoothed estimate, or the
    /// fastest request answered if shorter (the estimate starts high and
    /// takes many samples to settle; a punch's head start is measured in
    /// it). While parked, the one measured when it parked.
    pub fn rtt(&self) -> Duration {
        let smoothed = match &*lock(&self.shared.state) {
            LinkState::Connected(link) => link.connection.rtt(),
            _ => return Duration::from_micros(self.shared.parked_rtt_us.load(Ordering::Relaxed)),
        };
        match self.shared.fastest_request_us.load(Ordering::Relaxed) {
            u64::MAX => smoothed,
            us => smoothed.min(Duration::from_micros(us)),
        }
    }

    /// Closes the session; the tracker drops the registration at once. A
    /// parked one says so with a `Leave` on the second port (one datagram,
    /// best effort: lost, the registration expires when no knock comes,
    /// within three knock intervals).
    pub fn close(&self) {
        let state = std::mem::replace(&mut *lock(&self.shared.state), LinkState::Lost);
        match &state {
            LinkState::Connected(link) => {
                link.connection.close(CloseCode::Normal.varint(), b"bye");
            }
            LinkState::Parked(parked) => {
                let (socket, door_at) = (parked.socket.clone(), parked.doorbell);
                let leave = doorbell::leave(&parked.ticket).encode();
                if let (Ok(payload), Ok(runtime)) = (leave, tokio::runtime::Handle::try_current()) {
                    runtime.spawn(async move {
                        let _ = socket.send_probe(door_at, &payload).await;
                    });
                }
            }
            LinkState::Lost => {}
        }
        drop(state);
        self.shared.lose();
    }
}
