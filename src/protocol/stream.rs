//! The kinds of stream a connection carries, each with its frame limit. The
//! framing itself ([`crate::wire`]) knows kinds only through [`FrameKind`].

use std::time::Duration;

use crate::wire::FrameKind;

/// The largest packet a relay frame carries: a UDP datagram's payload.
pub const MAX_RELAYED_PACKET: usize = 65_535;

/// How long a stream that exists for one exchange (sync, a password proof,
/// a manifest) may wait for the other side's next frame. Each answer is
/// computed at once from local state, so only a peer that holds the stream
/// open on purpose comes near it.
pub const EXCHANGE_IDLE: Duration = Duration::from_secs(30);

/// What a stream carries; the last byte of its header names it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
pub enum StreamKind {
    /// Node ⇄ tracker requests, responses and pushed events (bidirectional).
    Tracker = 1,
    /// Peer ⇄ peer hello, goodbye, ping (bidirectional, opened by the dialer).
    Control = 2,
    /// Chat messages one way and acknowledgements back (bidirectional).
    Chat = 3,
    /// History sync: requests one way, batches back (bidirectional).
    Sync = 4,
    /// A room-password proof (bidirectional).
    Auth = 5,
    /// `punchgate bench throughput`: raw bytes one way, their count back.
    Bench = 6,
    /// One manifest request and its answer (bidirectional).
    Manifest = 7,
    /// Chunk requests one way; per request a reply frame, then the chunk's
    /// raw bytes, back (bidirectional).
    Chunks = 8,
    /// Node ⇄ tracker: peers' QUIC packets the tracker relays by peer id
    /// (bidirectional, opened by the node).
    Relay = 9,
}

impl StreamKind {
    pub const ALL: [StreamKind; 9] = [
        StreamKind::Tracker,
        StreamKind::Control,
        StreamKind::Chat,
        StreamKind::Sync,
        StreamKind::Auth,
        StreamKind::Bench,
        StreamKind::Manifest,
        StreamKind::Chunks,
        StreamKind::Relay,
    ];

    /// The largest frame body accepted on a stream of this kind.
    pub fn max_frame_len(self) -> usize {
        match self {
            // A full room's member list (256 members of at most ~300 bytes)
            // must fit in one response.
            StreamKind::Tracker => 256 * 1024,
            StreamKind::Control => 4 * 1024,
            StreamKind::Chat => 16 * 1024,
            StreamKind::Sync => 1024 * 1024,
            StreamKind::Auth => 4 * 1024,
            // Bench streams carry raw bytes, not frames.
            StreamKind::Bench => 0,
            // The largest manifest and its enum tag and length.
            StreamKind::Manifest => super::MAX_MANIFEST_LEN + 16,
            // Requests and reply headers; chunk bytes travel unframed.
            StreamKind::Chunks => 128,
            // One UDP datagram (at most 64 KiB) and its peer id.
            StreamKind::Relay => MAX_RELAYED_PACKET + 64,
        }
    }

    /// How long a reader waits for the next frame: [`EXCHANGE_IDLE`] on
    /// streams of one exchange, unbounded on long-lived ones (tracker,
    /// control, chat, relay, and chunk streams, which wait while the
    /// fetcher has nothing to ask of this source), where the connection's
    /// keep-alives and idle timeout decide.
    pub fn idle_limit(self) -> Option<Duration> {
        match self {
            StreamKind::Sync | StreamKind::Auth | StreamKind::Manifest => Some(EXCHANGE_IDLE),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            StreamKind::Tracker => "tracker",
            StreamKind::Control => "control",
            StreamKind::Chat => "chat",
            StreamKind::Sync => "sync",
            StreamKind::Auth => "auth",
            StreamKind::Bench => "bench",
            StreamKind::Manifest => "manifest",
            StreamKind::Chunks => "chunks",
            StreamKind::Relay => "relay",
        }
    }
}

impl FrameKind for StreamKind {
    fn from_byte(byte: u8) -> Option<Self> {
        Self::ALL.into_iter().find(|kind| *kind as u8 == byte)
    }

    fn byte(self) -> u8 {
        self as u8
    }

    fn name(self) -> &'static str {
        StreamKind::name(self)
    }

    fn max_frame_len(self) -> usize {
        StreamKind::max_frame_len(self)
    }

    fn idle_limit(self) -> Option<Duration> {
        StreamKind::idle_limit(self)
    }
}
