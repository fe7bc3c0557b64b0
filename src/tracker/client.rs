//! A node's session with its tracker: connect (pinned, or trusted on first
//! use), register, then requests with responses matched by id, and the
//! tracker's pushed events on a channel; and the relay stream
//! ([`TrackerSession::open_relay`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::{mpsc, oneshot};
use tokio::time::timeout;

use crate::endpoint::{AddrError, Liveness, Target};
use crate::home::{HomeError, KnownKeys};
use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{
    Member, NatReport, Presence, RelayFrame, TrackerEvent, TrackerMessage, TrackerRefusal,
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

type Pending = Arc<Mutex<HashMap<u32, oneshot::Sender<Result<TrackerResponse, TrackerRefusal>>>>>;

/// An open, registered session with a tracker.
pub struct TrackerSession {
    connection: Connection,
    tracker: PeerId,
    reflexive: SocketAddr,
    writer: tokio::sync::Mutex<FrameWriter<SendStream>>,
    pending: Pending,
    next_id: AtomicU32,
    /// The shortest request round trip seen, in microseconds (`u64::MAX`:
    /// none yet).
    fastest_request_us: AtomicU64,
    /// This node's NAT as measured through this session (unknown until then).
    nat: std::sync::Mutex<NatReport>,
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
    ) -> Result<(Self, mpsc::Receiver<TrackerEvent>), TrackerError> {
        let addr = target.resolve().await?;
        let connect_error = |reason: String| TrackerError::Connect { addr, reason };
        let (mut config, server_name) = match &target.peer {
            Some(peer) => (
                certified.pinned_client(tls::ALPN_TRACKER)?,
                tls::server_name_for(peer),
            ),
            None => (
                tls::danger::trust_on_first_use_client(certified, tls::ALPN_TRACKER)?,
                "tracker.punchgate".to_string(),
            ),
        };
        config.transport_config(
            liveness.transport_config(crate::endpoint::NO_STREAMS, Default::default()),
        );
        let connecting = endpoint
            .connect_with(config, addr, &server_name)
            .map_err(|e| connect_error(e.to_string()))?;
        let connection = timeout(REQUEST_TIMEOUT, connecting)
            .await
            .map_err(|_| TrackerError::Timeout(REQUEST_TIMEOUT))?
            .map_err(|e| connect_error(e.to_string()))?;
        let tracker = tls::peer_id_of(&connection)?;
        if target.peer.is_none() {
            if let Err(error) = KnownKeys::trackers(home).check_or_remember(&target.host, tracker) {
                connection.close(CloseCode::Refused.varint(), b"tracker key changed");
                return Err(error.into());
            }
        }
        let (send, recv) = connection
            .open_bi()
            .await
            .map_err(|e| connect_error(e.to_string()))?;
        let writer = FrameWriter::open(send, StreamKind::Tracker).await?;
        let pending: Pending = Arc::default();
        let (events_tx, events_rx) = mpsc::channel(EVENTS_QUEUE);
        tokio::spawn(read_messages(
            connection.clone(),
            FrameReader::new(recv, StreamKind::Tracker),
            pending.clone(),
            events_tx,
        ));
        let mut session = Self {
            connection,
            tracker,
            reflexive: addr,
            writer: tokio::sync::Mutex::new(writer),
            pending,
            next_id: AtomicU32::new(0),
            fastest_request_us: AtomicU64::new(u64::MAX),
            nat: std::sync::Mutex::new(NatReport::default()),
        };
        let response = session
            .request(TrackerRequestBody::Register {
                name: registration.name.to_string(),
                local_addrs: registration.local_addrs,
                presence: registration.presence,
            })
            .await;
        match response {
            Ok(TrackerResponse::Registered { reflexive }) => session.reflexive = reflexive,
            Ok(_) => return Err(TrackerError::UnexpectedResponse),
            Err(error) => {
                session.close();
                return Err(error);
            }
        }
        Ok((session, events_rx))
    }

    /// How the connection ended, as far as it has.
    fn lost_reason(&self) -> LostReason {
        LostReason(self.connection.close_reason())
    }

    /// Sends a request and waits for its response.
    pub async fn request(&self, body: TrackerRequestBody) -> Result<TrackerResponse, TrackerError> {
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let (reply_tx, reply_rx) = oneshot::channel();
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(id, reply_tx);
        let mut writer = self.writer.lock().await;
        let sent_at = Instant::now();
        writer.send(&TrackerRequest { id, body }).await?;
        drop(writer);
        let reply = timeout(REQUEST_TIMEOUT, reply_rx).await;
        if let Ok(Ok(_)) = &reply {
            let took = u64::try_from(sent_at.elapsed().as_micros()).unwrap_or(u64::MAX);
            self.fastest_request_us.fetch_min(took, Ordering::Relaxed);
        }
        self.pending
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(&id);
        match reply {
            Ok(Ok(result)) => Ok(result?),
            Ok(Err(_)) => Err(TrackerError::Lost(self.lost_reason())),
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
        let (send, recv) = self
            .connection
            .open_bi()
            .await
            .map_err(|_| TrackerError::Lost(self.lost_reason()))?;
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
        *self
            .nat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Remembers what was measured of this node's NAT through this session.
    pub fn set_nat(&self, nat: NatReport) {
        *self
            .nat
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = nat;
    }

    /// The address the tracker sees this node at.
    pub fn reflexive(&self) -> SocketAddr {
        self.reflexive
    }

    pub fn tracker_id(&self) -> PeerId {
        self.tracker
    }

    pub fn tracker_addr(&self) -> SocketAddr {
        crate::gate_socket::canonical(self.connection.remote_address())
    }

    /// The round-trip time to the tracker: QUIC's smoothed estimate, or the
    /// fastest request answered if shorter (the estimate starts high and
    /// takes many samples to settle; a punch's head start is measured in
    /// it).
    pub fn rtt(&self) -> Duration {
        let fastest = self.fastest_request_us.load(Ordering::Relaxed);
        let smoothed = self.connection.rtt();
        match fastest {
            u64::MAX => smoothed,
            us => smoothed.min(Duration::from_micros(us)),
        }
    }

    /// Closes the session; the tracker drops the registration at once.
    pub fn close(&self) {
        self.connection.close(CloseCode::Normal.varint(), b"bye");
    }
}

/// Dispatches responses to their requests and events to the node until the
/// stream ends or breaks; then pending requests fail and the event channel
/// closes, which is how the node learns the tracker is gone.
async fn read_messages(
    connection: Connection,
    mut reader: FrameReader<RecvStream>,
    pending: Pending,
    events: mpsc::Sender<TrackerEvent>,
) {
    loop {
        match reader.recv::<TrackerMessage>().await {
            Ok(Some(TrackerMessage::Response { id, result })) => {
                let waiter = pending
                    .lock()
                    .unwrap_or_else(PoisonError::into_inner)
                    .remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            Ok(Some(TrackerMessage::Event(event))) => {
                // A full queue holds the tracker stream back (QUIC flow
                // control) instead of growing: a tracker cannot flood this
                // node's memory with events.
                if events.send(event).await.is_err() {
                    break;
                }
            }
            Ok(None) => break,
            Err(error) => {
                if !matches!(error, WireError::Io(_)) {
                    tracing::warn!(%error, "the tracker broke the protocol");
                    connection.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
                }
                break;
            }
        }
    }
    pending
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .clear();
}
