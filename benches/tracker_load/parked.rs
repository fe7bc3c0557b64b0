//! The doorbell under load: parked peers knocking on the tracker's second
//! port, what a parked registration costs the tracker, and introductions to
//! parked peers (ring → resume on a new connection → introduce).
//!
//! Knocks come from one UDP socket per source address (50), each knocking
//! for its peers in turn, evenly spread over the knock interval: the
//! tracker does the same work per knock as with one socket per peer, and
//! rings go to the socket a peer's knocks came from. A knock's number
//! carries the peer's index in its low 20 bits, so that a ring (which
//! answers the last knock) tells the bench which peer to resume.

use std::collections::HashSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use punchgate::doorbell;
use punchgate::endpoint::{self, Target};
use punchgate::gate_socket::{is_probe, probe_datagram, PROBE_MAGIC};
use punchgate::identity::PeerId;
use punchgate::protocol::{
    ParkTicket, ProbeMessage, StreamKind, TrackerEvent, TrackerMessage, TrackerRequest,
    TrackerRequestBody, TrackerResponse,
};
use punchgate::tls::CertifiedIdentity;
use punchgate::tracker::{SessionEvent, TrackerSession};
use punchgate::wire::{FrameReader, FrameWriter};
use tokio::net::UdpSocket;
use tokio::sync::{mpsc, Semaphore};
use tokio::task::JoinSet;

/// Low bits of a knock's number: the peer's index.
const INDEX_BITS: u32 = 20;

/// A parked peer, as the bench keeps it.
pub struct ParkedPeer {
    pub index: usize,
    pub id: PeerId,
    pub certified: CertifiedIdentity,
    pub source: usize,
}

/// What parking answered.
pub struct ParkedAt {
    pub ticket: ParkTicket,
    pub aux: SocketAddr,
    pub knock_every: Duration,
}

/// Asks `session`'s registration to park.
pub async fn park(session: &TrackerSession, tracker_ip: std::net::IpAddr) -> ParkedAt {
    match session.request(TrackerRequestBody::Park).await {
        Ok(TrackerResponse::Parked {
            ticket,
            aux_port,
            knock_every_secs,
        }) => ParkedAt {
            ticket,
            aux: SocketAddr::new(tracker_ip, aux_port),
            knock_every: Duration::from_secs(knock_every_secs.into()),
        },
        other => panic!("not parked: {other:?}"),
    }
}

/// Registers a peer as a node does (register, join its room), parks it,
/// and lets its connection go.
pub async fn register_and_park(
    endpoint: quinn::Endpoint,
    target: Target,
    home: std::path::PathBuf,
    index: usize,
    source: usize,
    room: String,
) -> (ParkedPeer, ParkedAt) {
    // Its events are read until it parks: a session whose event queue is
    // dropped stops reading its tracker stream.
    let super::Fresh {
        identity,
        certified,
        session,
        events: _events,
    } = super::register_fresh(&endpoint, &target, &home, &format!("p{index}")).await;
    session.join(&room).await.unwrap();
    let tracker_ip = target.resolve().await.unwrap().ip();
    let at = park(&session, tracker_ip).await;
    session.close();
    let peer = ParkedPeer {
        index,
        id: identity.peer_id(),
        certified,
        source,
    };
    (peer, at)
}

/// The knocking side of every parked peer: one socket per source address.
pub struct Doorbells {
    pub tickets: Arc<Mutex<Vec<Option<ParkTicket>>>>,
    /// Knocks sent, and genuine answers received.
    pub sent: Arc<AtomicU64>,
    pub answered: Arc<AtomicU64>,
    /// Milliseconds between two knocks of one peer.
    pub every_ms: Arc<AtomicU64>,
    tasks: JoinSet<()>,
}

impl Doorbells {
    /// Starts knocking for `peers` (indexed by `ParkedPeer::index`) with
    /// their tickets; rings go to `rings` (the peer's index).
    pub async fn start(
        peers: &[(usize, PeerId, usize, ParkTicket)],
        count: usize,
        sources: usize,
        aux: SocketAddr,
        every: Duration,
        rings: mpsc::UnboundedSender<usize>,
    ) -> Self {
        let mut tickets = vec![None; count];
        for (index, _, _, ticket) in peers {
            tickets[*index] = Some(*ticket);
        }
        let tickets = Arc::new(Mutex::new(tickets));
        let sent = Arc::new(AtomicU64::new(0));
        let answered = Arc::new(AtomicU64::new(0));
        let every_ms = Arc::new(AtomicU64::new(every.as_millis() as u64));
        let mut tasks = JoinSet::new();
        for source in 0..sources {
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 1, source as u8 + 1), 0));
            let socket = Arc::new(UdpSocket::bind(addr).await.unwrap());
            let mine: Vec<usize> = peers
                .iter()
                .filter(|(_, _, s, _)| *s == source)
                .map(|(index, ..)| *index)
                .collect();
            if mine.is_empty() {
                continue;
            }
            tasks.spawn(knock_loop(
                socket.clone(),
                aux,
                mine,
                tickets.clone(),
                every_ms.clone(),
                sent.clone(),
            ));
            tasks.spawn(answer_loop(
                socket,
                tickets.clone(),
                answered.clone(),
                rings.clone(),
            ));
        }
        Self {
            tickets,
            sent,
            answered,
            every_ms,
            tasks,
        }
    }

    pub fn stop(&mut self) {
        self.tasks.abort_all();
    }
}

async fn knock_loop(
    socket: Arc<UdpSocket>,
    aux: SocketAddr,
    mine: Vec<usize>,
    tickets: Arc<Mutex<Vec<Option<ParkTicket>>>>,
    every_ms: Arc<AtomicU64>,
    sent: Arc<AtomicU64>,
) {
    // Spread this socket's peers over the interval, from a random start so
    // that the sockets do not knock in step.
    let offset = Duration::from_millis(u64::from(rand_u16()) % every_ms.load(Ordering::Relaxed));
    tokio::time::sleep(offset).await;
    for round in 1u64.. {
        let gap = Duration::from_millis(every_ms.load(Ordering::Relaxed)) / mine.len() as u32;
        let mut tick = tokio::time::interval(gap);
        for &index in &mine {
            tick.tick().await;
            let Some(ticket) = tickets.lock().unwrap()[index] else {
                continue;
            };
            let seq = (round << INDEX_BITS) | index as u64;
            let knock = doorbell::knock(&ticket, seq);
            let datagram = probe_datagram(&knock.encode().unwrap());
            if socket.send_to(&datagram, aux).await.is_ok() {
                sent.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
}

async fn answer_loop(
    socket: Arc<UdpSocket>,
    tickets: Arc<Mutex<Vec<Option<ParkTicket>>>>,
    answered: Arc<AtomicU64>,
    rings: mpsc::UnboundedSender<usize>,
) {
    let mut buf = [0u8; 2048];
    loop {
        let Ok((len, _)) = socket.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = &buf[..len];
        if !is_probe(datagram) {
            continue;
        }
        let Ok(ProbeMessage::Answer { seq, ring, tag }) =
            ProbeMessage::decode(&datagram[PROBE_MAGIC.len()..])
        else {
            continue;
        };
        let index = (seq & ((1 << INDEX_BITS) - 1)) as usize;
        let Some(Some(ticket)) = tickets.lock().unwrap().get(index).copied() else {
            continue;
        };
        if !doorbell::answer_is_genuine(&ticket, seq, ring, &tag) {
            continue;
        }
        answered.fetch_add(1, Ordering::Relaxed);
        if ring {
            let _ = rings.send(index);
        }
    }
}

fn rand_u16() -> u16 {
    let mut bytes = [0u8; 2];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).unwrap();
    u16::from_le_bytes(bytes)
}

/// A node's new connection that resumes its parked registration and
/// waits for the introduction held for it; returns when that arrived.
pub async fn resume_and_wait_introduction(
    endpoint: &quinn::Endpoint,
    target: &Target,
    certified: &CertifiedIdentity,
    ticket: ParkTicket,
) -> Result<quinn::Connection, String> {
    let addr = target.resolve().await.map_err(|e| e.to_string())?;
    let tracker = target.peer.ok_or("the tracker's id")?;
    let client = certified
        .pinned_client(punchgate::tls::ALPN_TRACKER)
        .map_err(|e| e.to_string())?;
    let connection = endpoint::connect_pinned(endpoint, client, addr, &tracker)
        .map_err(|e| e.to_string())?
        .await
        .map_err(|e| e.to_string())?;
    let (send, recv) = connection.open_bi().await.map_err(|e| e.to_string())?;
    let mut writer = FrameWriter::open(send, StreamKind::Tracker)
        .await
        .map_err(|e| e.to_string())?;
    let mut reader = FrameReader::new(recv, StreamKind::Tracker);
    writer
        .send(&TrackerRequest {
            id: 1,
            body: TrackerRequestBody::Resume { ticket },
        })
        .await
        .map_err(|e| e.to_string())?;
    loop {
        let message = reader
            .recv::<TrackerMessage>()
            .await
            .map_err(|e| e.to_string())?
            .ok_or("the tracker ended the stream")?;
        match message {
            TrackerMessage::Response {
                result: Ok(TrackerResponse::Resumed { .. }),
                ..
            } => {}
            TrackerMessage::Response { result, .. } => {
                return Err(format!("not resumed: {result:?}"))
            }
            TrackerMessage::Event(TrackerEvent::Introduce { .. }) => return Ok(connection),
            TrackerMessage::Event(_) => {}
        }
    }
}

/// Resumes each rung peer once (at most `in_flight` at a time, within the
/// tracker's pending-connection limit), counting the introductions that
/// reach them; the connections are closed once they have.
#[allow(clippy::too_many_arguments)]
pub fn spawn_resumer(
    mut rings: mpsc::UnboundedReceiver<usize>,
    peers: Arc<Vec<ParkedPeer>>,
    doorbells_tickets: Arc<Mutex<Vec<Option<ParkTicket>>>>,
    endpoints: Arc<Vec<quinn::Endpoint>>,
    target: Target,
    introduced: Arc<AtomicU64>,
    latencies: Arc<Mutex<Vec<Duration>>>,
    asked_at: Arc<Mutex<std::collections::HashMap<usize, Instant>>>,
    in_flight: usize,
) -> tokio::task::JoinHandle<()> {
    tokio::spawn(async move {
        let gate = Arc::new(Semaphore::new(in_flight));
        let mut resuming = HashSet::new();
        let failed = Arc::new(AtomicBool::new(false));
        while let Some(index) = rings.recv().await {
            if !resuming.insert(index) {
                continue;
            }
            let Some(ticket) = doorbells_tickets.lock().unwrap()[index] else {
                continue;
            };
            let permit = gate.clone().acquire_owned().await.unwrap();
            let (peers, endpoints, target) = (peers.clone(), endpoints.clone(), target.clone());
            let (introduced, latencies, asked_at) =
                (introduced.clone(), latencies.clone(), asked_at.clone());
            let (tickets, failed) = (doorbells_tickets.clone(), failed.clone());
            tokio::spawn(async move {
                let peer = &peers[index];
                let endpoint = &endpoints[peer.source];
                match resume_and_wait_introduction(endpoint, &target, &peer.certified, ticket).await
                {
                    Ok(connection) => {
                        tickets.lock().unwrap()[index] = None;
                        if let Some(at) = asked_at.lock().unwrap().get(&index) {
                            latencies.lock().unwrap().push(at.elapsed());
                        }
                        introduced.fetch_add(1, Ordering::Relaxed);
                        connection.close(0u32.into(), b"done");
                    }
                    Err(error) => {
                        if !failed.swap(true, Ordering::Relaxed) {
                            eprintln!("resume failed: {error}");
                        }
                    }
                }
                drop(permit);
            });
        }
    })
}

/// A connected asker in `room`, counting the introductions it receives.
pub async fn asker(
    endpoint: &quinn::Endpoint,
    target: &Target,
    home: &Path,
    room: &str,
    introduced: Arc<AtomicU64>,
) -> TrackerSession {
    let super::Fresh {
        session,
        mut events,
        ..
    } = super::register_fresh(endpoint, target, home, "asker").await;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if matches!(event, SessionEvent::Tracker(TrackerEvent::Introduce { .. })) {
                introduced.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    session.join(room).await.unwrap();
    session
}
