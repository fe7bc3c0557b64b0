//! The connections under a [`TrackerSession`]: dialing the tracker, its
//! stream's reader (responses to their requests, events to the node, and
//! the loss of the registration when a connection ends unplanned), and the
//! knocking of a parked session (`crate::doorbell`).

use std::net::SocketAddr;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::{Duration, Instant};

use quinn::{Connection, Endpoint, RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::{Pending, SessionEvent, Shared, TrackerError, TrackerSession, REQUEST_TIMEOUT};
use crate::doorbell::{Doorbell, DoorbellAction};
use crate::gate_socket::GateSocket;
use crate::protocol::{
    DoorbellTag, ParkTicket, StreamKind, TrackerMessage, TrackerRequestBody, TrackerResponse,
};
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// One connection to the tracker and its stream.
#[derive(Clone)]
pub(super) struct Link {
    pub(super) connection: Connection,
    pub(super) writer: Arc<tokio::sync::Mutex<FrameWriter<SendStream>>>,
    pub(super) pending: Pending,
}

pub(super) enum LinkState {
    Connected(Link),
    Parked(Parked),
    /// The registration is lost; the session stays only for its handles.
    Lost,
}

pub(super) struct Parked {
    pub(super) ticket: ParkTicket,
    /// Where the knocks go: the tracker's second port.
    pub(super) doorbell: SocketAddr,
    pub(super) answers: mpsc::Sender<(u64, bool, DoorbellTag)>,
    /// The knocking task; stopped when the state changes.
    pub(super) knocking: tokio::task::JoinHandle<()>,
    /// Where the knocks leave from (the gate socket), and a leave too.
    pub(super) socket: Arc<GateSocket>,
}

impl Drop for Parked {
    fn drop(&mut self) {
        self.knocking.abort();
    }
}

impl Shared {
    /// The registration is lost: the event channel closes.
    pub(super) fn lose(&self) {
        let state = std::mem::replace(&mut *lock(&self.state), LinkState::Lost);
        drop(state);
        lock(&self.events).take();
    }

    /// `connection` ended: a loss if it is the current one and not being
    /// parked.
    pub(super) fn lose_link(&self, connection: &Connection) {
        if self.parking.load(Ordering::SeqCst) {
            return;
        }
        let current = match &*lock(&self.state) {
            LinkState::Connected(link) => link.connection.stable_id() == connection.stable_id(),
            _ => false,
        };
        if current {
            self.lose();
        }
    }

    /// The `Register` this session registers with.
    pub(super) fn register_body(&self) -> TrackerRequestBody {
        TrackerRequestBody::Register {
            name: self.name.clone(),
            local_addrs: self.local_addrs.clone(),
            presence: self.presence,
        }
    }

    pub(super) fn events(&self) -> Option<mpsc::Sender<SessionEvent>> {
        lock(&self.events).clone()
    }
}

pub(super) fn lock<T>(mutex: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

pub(super) fn micros(duration: Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

/// Connects to the tracker at `addr`.
pub(super) async fn dial(
    endpoint: &Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    server_name: &str,
) -> Result<Connection, TrackerError> {
    let connect_error = |reason: String| TrackerError::Connect { addr, reason };
    let connecting = endpoint
        .connect_with(config, addr, server_name)
        .map_err(|e| connect_error(e.to_string()))?;
    timeout(REQUEST_TIMEOUT, connecting)
        .await
        .map_err(|_| TrackerError::Timeout(REQUEST_TIMEOUT))?
        .map_err(|e| connect_error(e.to_string()))
}

/// Opens the tracker stream on `connection` and starts reading it.
pub(super) async fn open_link(
    shared: &Arc<Shared>,
    connection: Connection,
) -> Result<Link, TrackerError> {
    let (send, recv) = connection
        .open_bi()
        .await
        .map_err(|e| TrackerError::Connect {
            addr: shared.addr,
            reason: e.to_string(),
        })?;
    let writer = FrameWriter::open(send, StreamKind::Tracker).await?;
    let pending: Pending = Arc::default();
    tokio::spawn(read_messages(
        Arc::downgrade(shared),
        connection.clone(),
        FrameReader::new(recv, StreamKind::Tracker),
        pending.clone(),
    ));
    Ok(Link {
        connection,
        writer: Arc::new(tokio::sync::Mutex::new(writer)),
        pending,
    })
}

/// Dispatches responses to their requests and events to the node until the
/// stream ends or breaks; then its pending requests fail, and, unless the
/// connection was parked or replaced, the registration is lost (the event
/// channel closes, which is how the node learns the tracker is gone).
async fn read_messages(
    shared: Weak<Shared>,
    connection: Connection,
    mut reader: FrameReader<RecvStream>,
    pending: Pending,
) {
    loop {
        match reader.recv::<TrackerMessage>().await {
            Ok(Some(TrackerMessage::Response { id, result })) => {
                if matches!(result, Ok(TrackerResponse::Resumed { .. })) {
                    // Before anything the new connection brings.
                    let events = shared.upgrade().and_then(|s| s.events());
                    if let Some(events) = events {
                        let _ = events.send(SessionEvent::Resumed).await;
                    }
                }
                let waiter = lock(&pending).remove(&id);
                if let Some(waiter) = waiter {
                    let _ = waiter.send(result);
                }
            }
            Ok(Some(TrackerMessage::Event(event))) => {
                let Some(session) = shared.upgrade() else {
                    break;
                };
                *lock(&session.last_active) = Instant::now();
                let Some(events) = session.events() else {
                    break;
                };
                drop(session);
                // A full queue holds the tracker stream back (QUIC flow
                // control) instead of growing: a tracker cannot flood this
                // node's memory with events.
                if events.send(SessionEvent::Tracker(event)).await.is_err() {
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
    lock(&pending).clear();
    if let Some(shared) = shared.upgrade() {
        shared.lose_link(&connection);
    }
}

/// Knocks on the tracker's second port for a parked registration until it
/// rings (then resumes it) or stops answering (then the registration is
/// lost). Stopped when the session leaves the parked state.
pub(super) async fn knock(
    shared: Weak<Shared>,
    socket: Arc<GateSocket>,
    doorbell: SocketAddr,
    mut bell: Doorbell,
    mut answers: mpsc::Receiver<(u64, bool, DoorbellTag)>,
) {
    loop {
        while let Some(action) = bell.poll_action(Instant::now()) {
            match action {
                DoorbellAction::Knock(message) => {
                    if let Ok(payload) = message.encode() {
                        // A knock lost to a full buffer is a lost datagram.
                        let _ = socket.send_probe(doorbell, &payload).await;
                    }
                }
                DoorbellAction::Ring => {
                    let Some(shared) = shared.upgrade() else {
                        return;
                    };
                    tracing::debug!(tracker = %shared.tracker.short(), "the tracker rang");
                    // Its own task: the resume ends this one.
                    tokio::spawn(async move {
                        let session = TrackerSession { shared };
                        let _ = session.resume().await;
                    });
                    return;
                }
                DoorbellAction::Lost => {
                    if let Some(shared) = shared.upgrade() {
                        tracing::debug!(tracker = %shared.tracker.short(), "the parked tracker stopped answering");
                        shared.lose();
                    }
                    return;
                }
            }
        }
        let wake = crate::wake::until(bell.poll_timeout().map(tokio::time::Instant::from_std));
        tokio::select! {
            answer = answers.recv() => match answer {
                Some((seq, ring, tag)) => bell.handle_answer(seq, ring, &tag, Instant::now()),
                None => return,
            },
            () = wake => {}
        }
    }
}
