//! One gate: an authenticated QUIC connection to one peer, its greeting, and
//! the streams the node opens on it. The node in [`super`] decides which gates
//! live; this module only speaks the per-connection protocol.

use std::time::{Duration, Instant};

use quinn::{Connection, ConnectionError, RecvStream, SendStream};
use tokio::sync::Mutex;
use tokio::time::timeout;

use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{
    validate_label, ChatFrame, ControlMessage, MAX_NAME_LEN, MAX_ROOMS, MAX_ROOM_LEN,
};
use crate::transfer::window::WindowSizer;
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// Time the other side has to greet after the handshake.
pub(super) const GREETING_TIMEOUT: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error(transparent)]
    Wire(#[from] WireError),
    #[error("connection failed: {0}")]
    Connection(#[from] ConnectionError),
    #[error("the peer did not greet within {0:?}")]
    GreetingTimeout(Duration),
    #[error("the peer's greeting is invalid: {0}")]
    BadGreeting(String),
    #[error("the peer closed the control stream before greeting")]
    NoGreeting,
}

impl GateError {
    /// Closes `connection` with the code and reason this error deserves.
    pub fn close(&self, connection: &Connection) {
        let code = match self {
            GateError::Wire(WireError::Io(_)) | GateError::Connection(_) => return,
            GateError::GreetingTimeout(_)
            | GateError::NoGreeting
            | GateError::Wire(WireError::Stalled { .. } | WireError::Idle { .. }) => {
                CloseCode::Refused
            }
            GateError::Wire(_) | GateError::BadGreeting(_) => CloseCode::Protocol,
        };
        connection.close(code.varint(), self.to_string().as_bytes());
    }
}

/// What a peer said about itself in its greeting.
#[derive(Clone, Debug)]
pub struct Greeting {
    pub name: String,
    pub rooms: Vec<String>,
}

impl Greeting {
    fn from_message(message: Option<ControlMessage>) -> Result<Self, GateError> {
        match message {
            Some(ControlMessage::Hello { name, rooms, .. }) => {
                validate_label("name", &name, MAX_NAME_LEN).map_err(GateError::BadGreeting)?;
                if rooms.len() > MAX_ROOMS {
                    return Err(GateError::BadGreeting(format!(
                        "more than {MAX_ROOMS} rooms"
                    )));
                }
                for room in &rooms {
                    validate_label("room", room, MAX_ROOM_LEN).map_err(GateError::BadGreeting)?;
                }
                Ok(Self { name, rooms })
            }
            Some(other) => Err(GateError::BadGreeting(format!(
                "expected hello, got {other:?}"
            ))),
            None => Err(GateError::NoGreeting),
        }
    }
}

/// A greeted connection to one peer.
pub struct Gate {
    pub connection: Connection,
    pub peer_id: PeerId,
    /// Which side dialed: decides which of two simultaneous connections stays.
    pub dialer: PeerId,
    pub since: Instant,
    control: Mutex<FrameWriter<SendStream>>,
    chat: Mutex<Option<FrameWriter<SendStream>>>,
    /// Chunk reads this peer may have in flight (`files::upload`).
    pub(super) upload_permits: std::sync::Arc<tokio::sync::Semaphore>,
    /// Whether a catch-up (offers, history sync) runs on this gate, and
    /// whether another was asked for meanwhile (`Node::catch_up`).
    pub(super) catching_up: std::sync::Mutex<CatchUp>,
    /// The connection's flow-control windows, sized as transfers run.
    windows: std::sync::Mutex<Windows>,
    /// This side closed it as a duplicate or as no longer needed
    /// ([`Gate::close_as`]).
    closed_as: std::sync::Mutex<Option<CloseCode>>,
}

/// The sizers of a connection's receive and send windows.
#[derive(Default)]
struct Windows {
    receive: WindowSizer,
    send: WindowSizer,
}

/// The catch-ups of one gate: many asked for while one runs cost one more
/// after it, not one each.
#[derive(Default)]
pub(super) struct CatchUp {
    pub running: bool,
    pub again: bool,
}

/// The acceptor's control stream once its hello is out.
pub struct AcceptorHello {
    writer: FrameWriter<SendStream>,
    reader: FrameReader<RecvStream>,
}

/// A gate fresh from its greeting, with the control stream's reading half.
pub struct Greeted {
    pub gate: Gate,
    pub greeting: Greeting,
    pub control: FrameReader<RecvStream>,
}

async fn read_greeting(reader: &mut FrameReader<RecvStream>) -> Result<Greeting, GateError> {
    let message = timeout(GREETING_TIMEOUT, reader.recv::<ControlMessage>())
        .await
        .map_err(|_| GateError::GreetingTimeout(GREETING_TIMEOUT))??;
    Greeting::from_message(message)
}

impl Gate {
    fn new(
        connection: Connection,
        peer_id: PeerId,
        dialer: PeerId,
        control: FrameWriter<SendStream>,
    ) -> Self {
        Self {
            connection,
            peer_id,
            dialer,
            since: Instant::now(),
            control: Mutex::new(control),
            chat: Mutex::new(None),
            upload_permits: std::sync::Arc::new(tokio::sync::Semaphore::new(
                super::files::MAX_CHUNK_READS_PER_PEER,
            )),
            catching_up: std::sync::Mutex::new(CatchUp::default()),
            windows: std::sync::Mutex::default(),
            closed_as: std::sync::Mutex::new(None),
        }
    }

    /// Closes the connection with `code` and `reason`, remembering the
    /// code for [`Gate::ended_as`] (quinn keeps no code for a local close).
    pub(super) fn close_as(&self, code: CloseCode, reason: &[u8]) {
        *self
            .closed_as
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(code);
        self.connection.close(code.varint(), reason);
    }

    /// Closes a link no room's gossip needs any more; the peer stays a
    /// member, reached through the others.
    pub(super) fn close_unneeded(&self) {
        self.close_as(CloseCode::Unneeded, b"not a neighbour in any room");
    }

    /// How the connection ended once it has, by either side: a duplicate,
    /// a link no longer needed, or neither.
    pub fn ended_as(&self) -> Option<CloseCode> {
        let local = *self
            .closed_as
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if local.is_some() {
            return local;
        }
        match self.connection.close_reason() {
            Some(ConnectionError::ApplicationClosed(close)) => {
                CloseCode::from_varint(close.error_code)
                    .filter(|code| matches!(code, CloseCode::Duplicate | CloseCode::Unneeded))
            }
            _ => None,
        }
    }

    /// Sizes the connection's windows to the bandwidth-delay product it
    /// measures ([`WindowSizer`]): the receive window from the bytes that
    /// arrive, the send window (what this side may have unacknowledged)
    /// from those that leave. Transfers call it as they go (a fetch per
    /// chunk received, an upload per chunk sent); between a sizer's samples
    /// it only reads the connection's counters. Returns the receive window.
    pub(super) fn size_windows(&self) -> u64 {
        let now = Instant::now();
        let stats = self.connection.stats();
        let rtt = stats.path.rtt;
        let mut windows = self
            .windows
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(window) = windows.receive.handle_sample(now, stats.udp_rx.bytes, rtt) {
            self.connection
                .set_receive_window(quinn::VarInt::from_u64(window).unwrap_or(quinn::VarInt::MAX));
        }
        if let Some(window) = windows.send.handle_sample(now, stats.udp_tx.bytes, rtt) {
            self.connection.set_send_window(window);
        }
        windows.receive.window()
    }

    /// The dialer takes the control stream the acceptor opened, answers
    /// with its own hello at once (in the flight that carries its TLS
    /// Finished, when the acceptor's hello came as 0.5-RTT data), then
    /// reads the acceptor's hello.
    pub async fn greet_as_dialer(
        connection: Connection,
        me: PeerId,
        peer_id: PeerId,
        hello: &ControlMessage,
    ) -> Result<Greeted, GateError> {
        let (send, recv) = timeout(GREETING_TIMEOUT, connection.accept_bi())
            .await
            .map_err(|_| GateError::GreetingTimeout(GREETING_TIMEOUT))??;
        let mut writer = FrameWriter::answering(send, StreamKind::Control);
        writer.send(hello).await?;
        let mut control = timeout(
            GREETING_TIMEOUT,
            FrameReader::accept(recv, StreamKind::Control),
        )
        .await
        .map_err(|_| GateError::GreetingTimeout(GREETING_TIMEOUT))??;
        let greeting = read_greeting(&mut control).await?;
        Ok(Greeted {
            gate: Self::new(connection, peer_id, me, writer),
            greeting,
            control,
        })
    }

    /// The acceptor opens the control stream and says its hello. Called on
    /// a connection still in its handshake, this is 0.5-RTT data: it goes
    /// out with the acceptor's handshake flight, before the dialer has
    /// proven its key, so only what any peer may learn belongs in it.
    /// Bounded by [`GREETING_TIMEOUT`]: a dialer that allows no stream (or
    /// no bytes) must not hold the acceptor's handshake slot longer than
    /// one that never greets.
    pub async fn hello_as_acceptor(
        connection: &Connection,
        hello: &ControlMessage,
    ) -> Result<AcceptorHello, GateError> {
        let said = async {
            let (send, recv) = connection.open_bi().await?;
            let mut writer = FrameWriter::open(send, StreamKind::Control).await?;
            writer.send(hello).await?;
            Ok(AcceptorHello {
                writer,
                reader: FrameReader::new(recv, StreamKind::Control),
            })
        };
        timeout(GREETING_TIMEOUT, said)
            .await
            .map_err(|_| GateError::GreetingTimeout(GREETING_TIMEOUT))?
    }

    /// The acceptor, its hello said and the connection authenticated as
    /// `peer_id`, reads the dialer's hello. Never before authentication:
    /// nothing the dialer says is trusted before its certificate is.
    pub async fn greet_as_acceptor(
        connection: Connection,
        peer_id: PeerId,
        said: AcceptorHello,
    ) -> Result<Greeted, GateError> {
        let AcceptorHello {
            writer,
            reader: mut control,
        } = said;
        let greeting = read_greeting(&mut control).await?;
        Ok(Greeted {
            gate: Self::new(connection, peer_id, peer_id, writer),
            greeting,
            control,
        })
    }

    /// Sends a control message (goodbye, pong, room changes).
    pub async fn send_control(&self, message: &ControlMessage) -> Result<(), WireError> {
        self.control.lock().await.send(message).await
    }

    /// Sends a chat frame on this node's chat stream to the peer, opening it
    /// first if needed; a new stream's receiving half (acknowledgements) is
    /// handed to `on_open`.
    pub async fn send_chat(
        &self,
        frame: &ChatFrame,
        on_open: impl FnOnce(FrameReader<RecvStream>),
    ) -> Result<(), GateError> {
        let mut chat = self.chat.lock().await;
        if chat.is_none() {
            let (send, recv) = self.connection.open_bi().await?;
            *chat = Some(FrameWriter::open(send, StreamKind::Chat).await?);
            on_open(FrameReader::new(recv, StreamKind::Chat));
        }
        let result = match chat.as_mut() {
            Some(writer) => writer.send(frame).await,
            None => return Err(GateError::NoGreeting),
        };
        if result.is_err() {
            // The stream is broken; the next message opens a new one.
            *chat = None;
        }
        Ok(result?)
    }

    /// Says goodbye and closes the connection.
    pub async fn goodbye(&self, reason: &str) {
        let goodbye = ControlMessage::Goodbye {
            reason: reason.to_string(),
        };
        let _ = timeout(Duration::from_secs(1), self.send_control(&goodbye)).await;
        self.connection
            .close(CloseCode::Normal.varint(), reason.as_bytes());
    }

    pub fn is_open(&self) -> bool {
        self.connection.close_reason().is_none()
    }
}

/// Words for why a connection ended, as the user should read them.
pub fn describe_close(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            let reason = String::from_utf8_lossy(&close.reason);
            match CloseCode::from_varint(close.error_code) {
                Some(CloseCode::Normal) => format!("left ({reason})"),
                Some(CloseCode::Protocol) => format!("protocol error: {reason}"),
                Some(CloseCode::Refused) => format!("refused: {reason}"),
                Some(CloseCode::Duplicate) => "replaced by a simultaneous connection".to_string(),
                Some(CloseCode::Unneeded) => {
                    "no longer a neighbour: reached through the room's other members".to_string()
                }
                None => format!("closed with code {}: {reason}", close.error_code),
            }
        }
        ConnectionError::LocallyClosed => "closed".to_string(),
        ConnectionError::TimedOut => "timed out: no packets from the peer".to_string(),
        ConnectionError::TransportError(error) => {
            // rustls words a refused certificate as a debug print of its
            // error (`…: Other(OtherError(peer id mismatch: …))`): the
            // innermost text is ours and says what happened.
            let reason = error.reason.as_str();
            let reason = reason
                .rsplit_once("OtherError(")
                .map_or(reason, |(_, ours)| ours.trim_end_matches(')'));
            format!("the secure handshake failed: {reason}")
        }
        other => other.to_string(),
    }
}
