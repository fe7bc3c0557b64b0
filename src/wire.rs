//! The wire format, and the only module that calls the codec.
//!
//! Every QUIC stream opens with a 4-byte header: the magic `PG`, the protocol
//! version, and the [`StreamKind`]. After it come frames: a big-endian `u32`
//! length, then that many bytes of bincode (standard config, varint integers).
//! Each kind has a hard frame-size limit checked *before* anything is
//! allocated; a frame must decode to exactly its length. Every failure is a
//! [`WireError`]; callers close the connection with [`CloseCode::Protocol`]
//! and the error's text as the reason. See docs/PROTOCOL.md.
//!
//! bincode is marked unmaintained (RUSTSEC-2025-0141): keeping every encode
//! and decode here means a codec swap touches one file.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version byte of every stream header; a peer speaking another is refused.
pub const PROTOCOL_VERSION: u8 = 2;
const MAGIC: [u8; 2] = *b"PG";
pub const HEADER_LEN: usize = 4;
const LENGTH_PREFIX: usize = 4;
/// Bound on what bincode may claim to allocate while decoding one frame; no
/// frame is larger than this, so no honest frame ever reaches it.
const DECODE_LIMIT: usize = 1 << 20;

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// The largest packet a relay frame carries: a UDP datagram's payload.
pub const MAX_RELAYED_PACKET: usize = 65_535;

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
            StreamKind::Manifest => crate::transfer::manifest::MAX_MANIFEST_LEN + 16,
            // Requests and reply headers; chunk bytes travel unframed.
            StreamKind::Chunks => 128,
            // One UDP datagram (at most 64 KiB) and its peer id.
            StreamKind::Relay => MAX_RELAYED_PACKET + 64,
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

    fn from_byte(byte: u8) -> Result<Self, WireError> {
        Self::ALL
            .into_iter()
            .find(|kind| *kind as u8 == byte)
            .ok_or(WireError::UnknownKind(byte))
    }
}

/// Application close codes of QUIC connections (and stream resets).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u32)]
pub enum CloseCode {
    /// Orderly close: goodbye, or the process is shutting down.
    Normal = 0,
    /// The peer broke the wire format; the reason says how.
    Protocol = 1,
    /// A limit or policy refused the peer; the reason says which.
    Refused = 2,
    /// Both sides connected at once; this is the connection that lost.
    Duplicate = 3,
}

impl CloseCode {
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    pub fn from_varint(code: quinn::VarInt) -> Option<Self> {
        [Self::Normal, Self::Protocol, Self::Refused, Self::Duplicate]
            .into_iter()
            .find(|c| c.varint() == code)
    }
}

/// Why a stream's bytes were refused. The text is sent as a close reason.
#[derive(Debug, thiserror::Error)]
pub enum WireError {
    #[error("not a punchgate stream (header starts {0:02x?}, expected \"PG\")")]
    BadMagic([u8; 2]),
    #[error("unsupported protocol version {0} (this build speaks version {PROTOCOL_VERSION})")]
    UnsupportedVersion(u8),
    #[error("unknown stream kind {0}")]
    UnknownKind(u8),
    #[error("expected a {expected} stream, got a {got} stream")]
    UnexpectedKind {
        expected: &'static str,
        got: &'static str,
    },
    #[error("frame of {len} bytes exceeds the {limit}-byte limit of {kind} streams")]
    FrameTooLarge {
        len: usize,
        limit: usize,
        kind: &'static str,
    },
    #[error("stream ended in the middle of a {0}")]
    Truncated(&'static str),
    #[error("malformed {kind} frame: {reason}")]
    Malformed { kind: &'static str, reason: String },
    #[error("could not encode a {kind} frame: {reason}")]
    Encode { kind: &'static str, reason: String },
    #[error("stream i/o: {0}")]
    Io(#[from] std::io::Error),
}

/// Reads exactly `buf.len()` bytes; `Ok(false)` if the stream ended cleanly
/// before the first byte, [`WireError::Truncated`] if it ended later.
async fn read_full<R: AsyncRead + Unpin>(
    reader: &mut R,
    buf: &mut [u8],
    what: &'static str,
) -> Result<bool, WireError> {
    let mut filled = 0;
    while filled < buf.len() {
        let n = reader.read(&mut buf[filled..]).await?;
        if n == 0 {
            return if filled == 0 {
                Ok(false)
            } else {
                Err(WireError::Truncated(what))
            };
        }
        filled += n;
    }
    Ok(true)
}

/// The header every stream starts with.
pub fn header(kind: StreamKind) -> [u8; HEADER_LEN] {
    [MAGIC[0], MAGIC[1], PROTOCOL_VERSION, kind as u8]
}

/// Parses a stream header.
pub fn parse_header(bytes: [u8; HEADER_LEN]) -> Result<StreamKind, WireError> {
    if bytes[..2] != MAGIC {
        return Err(WireError::BadMagic([bytes[0], bytes[1]]));
    }
    if bytes[2] != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(bytes[2]));
    }
    StreamKind::from_byte(bytes[3])
}

/// Reads a stream's header. A stream that ends before it is truncated.
pub async fn read_header<R: AsyncRead + Unpin>(reader: &mut R) -> Result<StreamKind, WireError> {
    let mut bytes = [0u8; HEADER_LEN];
    if !read_full(reader, &mut bytes, "stream header").await? {
        return Err(WireError::Truncated("stream header"));
    }
    parse_header(bytes)
}

/// Reads a header and checks it names `expected`.
pub async fn expect_header<R: AsyncRead + Unpin>(
    reader: &mut R,
    expected: StreamKind,
) -> Result<(), WireError> {
    let got = read_header(reader).await?;
    if got != expected {
        return Err(WireError::UnexpectedKind {
            expected: expected.name(),
            got: got.name(),
        });
    }
    Ok(())
}

/// Encodes one frame (length prefix and body) of a stream of `kind`.
pub fn encode_frame<T: Serialize>(kind: StreamKind, message: &T) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0u8; LENGTH_PREFIX];
    bincode::serde::encode_into_std_write(message, &mut frame, codec()).map_err(|e| {
        WireError::Encode {
            kind: kind.name(),
            reason: e.to_string(),
        }
    })?;
    let len = frame.len() - LENGTH_PREFIX;
    if len > kind.max_frame_len() {
        return Err(WireError::FrameTooLarge {
            len,
            limit: kind.max_frame_len(),
            kind: kind.name(),
        });
    }
    let prefix = u32::try_from(len).map_err(|_| WireError::FrameTooLarge {
        len,
        limit: kind.max_frame_len(),
        kind: kind.name(),
    })?;
    frame[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Decodes one frame body of a stream of `kind`; trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(kind: StreamKind, body: &[u8]) -> Result<T, WireError> {
    decode_exact(kind.name(), body)
}

/// Decodes one value that must use every byte of `bytes`.
fn decode_exact<T: DeserializeOwned>(kind: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    let malformed = |reason: String| WireError::Malformed { kind, reason };
    let (message, used) =
        bincode::serde::decode_from_slice(bytes, codec()).map_err(|e| malformed(e.to_string()))?;
    if used != bytes.len() {
        return Err(malformed(format!("{} trailing bytes", bytes.len() - used)));
    }
    Ok(message)
}

/// Encodes one value that travels or is stored outside a frame.
fn encode_plain<T: Serialize>(kind: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, codec()).map_err(|e| WireError::Encode {
        kind,
        reason: e.to_string(),
    })
}

/// Encodes a message for the history store.
pub fn encode_stored(message: &crate::protocol::SignedMessage) -> Result<Vec<u8>, WireError> {
    encode_plain("stored message", message)
}

/// Decodes a message from the history store, also one stored before
/// messages carried a room tag (protocol version 1): it has none.
pub fn decode_stored(bytes: &[u8]) -> Result<crate::protocol::SignedMessage, WireError> {
    use crate::protocol::{ChatBody, SignedMessage};
    decode_exact("stored message", bytes).or_else(|error| {
        decode_exact::<(ChatBody, Vec<u8>)>("stored message", bytes)
            .map(|(body, signature)| SignedMessage {
                body,
                signature,
                room_tag: Vec::new(),
            })
            .map_err(|_| error)
    })
}

/// Encodes a probe's payload.
pub fn encode_probe(message: &crate::protocol::ProbeMessage) -> Result<Vec<u8>, WireError> {
    encode_plain("probe", message)
}

/// Decodes a probe's payload; trailing bytes are an error.
pub fn decode_probe(payload: &[u8]) -> Result<crate::protocol::ProbeMessage, WireError> {
    decode_exact("probe", payload)
}

/// Encodes a manifest: its BLAKE3 hash is the content id.
pub fn encode_manifest(
    manifest: &crate::transfer::manifest::Manifest,
) -> Result<Vec<u8>, WireError> {
    encode_plain("manifest", manifest)
}

/// Decodes a manifest; trailing bytes are an error (they would change the
/// content id without changing the content).
pub fn decode_manifest(bytes: &[u8]) -> Result<crate::transfer::manifest::Manifest, WireError> {
    decode_exact("manifest", bytes)
}

pub fn encode_ticket(ticket: &crate::transfer::Ticket) -> Result<Vec<u8>, WireError> {
    encode_plain("ticket", ticket)
}

pub fn decode_ticket(bytes: &[u8]) -> Result<crate::transfer::Ticket, WireError> {
    decode_exact("ticket", bytes)
}

/// Canonical bytes of `value` prefixed by a domain string, for signatures:
/// a signature made for one purpose can never verify for another.
pub fn signing_bytes<T: Serialize>(domain: &str, value: &T) -> Result<Vec<u8>, WireError> {
    let mut bytes = domain.as_bytes().to_vec();
    bytes.push(0);
    bincode::serde::encode_into_std_write(value, &mut bytes, codec()).map_err(|e| {
        WireError::Encode {
            kind: "signed",
            reason: e.to_string(),
        }
    })?;
    Ok(bytes)
}

/// Writes frames of one kind to a stream.
pub struct FrameWriter<W> {
    inner: W,
    kind: StreamKind,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Starts a stream of `kind`: writes its header.
    pub async fn open(mut inner: W, kind: StreamKind) -> Result<Self, WireError> {
        inner.write_all(&header(kind)).await?;
        Ok(Self { inner, kind })
    }

    /// Writes to a stream whose header the other side already sent (the
    /// answering half of a bidirectional stream).
    pub fn answering(inner: W, kind: StreamKind) -> Self {
        Self { inner, kind }
    }

    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), WireError> {
        let frame = encode_frame(self.kind, message)?;
        self.inner.write_all(&frame).await?;
        Ok(())
    }

    pub fn get_mut(&mut self) -> &mut W {
        &mut self.inner
    }
}

/// Reads frames of one kind from a stream.
pub struct FrameReader<R> {
    inner: R,
    kind: StreamKind,
    body: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from a stream whose header was already read and checked.
    pub fn new(inner: R, kind: StreamKind) -> Self {
        Self {
            inner,
            kind,
            body: Vec::new(),
        }
    }

    /// Reads the header, checks it is `kind`, and returns the reader.
    pub async fn accept(mut inner: R, kind: StreamKind) -> Result<Self, WireError> {
        expect_header(&mut inner, kind).await?;
        Ok(Self::new(inner, kind))
    }

    /// The next message; `Ok(None)` when the stream ended cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        let mut prefix = [0u8; LENGTH_PREFIX];
        if !read_full(&mut self.inner, &mut prefix, "frame length").await? {
            return Ok(None);
        }
        let len = u32::from_be_bytes(prefix) as usize;
        let limit = self.kind.max_frame_len();
        if len > limit {
            return Err(WireError::FrameTooLarge {
                len,
                limit,
                kind: self.kind.name(),
            });
        }
        self.body.resize(len, 0);
        if len > 0 && !read_full(&mut self.inner, &mut self.body, "frame").await? {
            return Err(WireError::Truncated("frame"));
        }
        decode_body(self.kind, &self.body).map(Some)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Sample {
        n: u64,
        text: String,
    }

    fn sample() -> Sample {
        Sample {
            n: 7,
            text: "hello".into(),
        }
    }

    #[tokio::test]
    async fn frames_round_trip_and_end_cleanly() {
        let mut bytes = Vec::new();
        let mut writer = FrameWriter::open(&mut bytes, StreamKind::Chat)
            .await
            .unwrap();
        writer.send(&sample()).await.unwrap();
        writer.send(&sample()).await.unwrap();
        let mut reader = FrameReader::accept(&bytes[..], StreamKind::Chat)
            .await
            .unwrap();
        assert_eq!(reader.recv::<Sample>().await.unwrap(), Some(sample()));
        assert_eq!(reader.recv::<Sample>().await.unwrap(), Some(sample()));
        assert_eq!(reader.recv::<Sample>().await.unwrap(), None);
    }

    #[tokio::test]
    async fn oversized_length_is_refused_before_allocation() {
        let mut bytes = header(StreamKind::Control).to_vec();
        bytes.extend_from_slice(&u32::MAX.to_be_bytes());
        let mut reader = FrameReader::accept(&bytes[..], StreamKind::Control)
            .await
            .unwrap();
        let err = reader.recv::<Sample>().await.unwrap_err();
        assert!(matches!(err, WireError::FrameTooLarge { len, .. } if len == u32::MAX as usize));
    }

    #[tokio::test]
    async fn truncated_frames_are_errors() {
        let frame = encode_frame(StreamKind::Chat, &sample()).unwrap();
        for cut in [2, LENGTH_PREFIX + 1, frame.len() - 1] {
            let mut bytes = header(StreamKind::Chat).to_vec();
            bytes.extend_from_slice(&frame[..cut]);
            let mut reader = FrameReader::accept(&bytes[..], StreamKind::Chat)
                .await
                .unwrap();
            let err = reader.recv::<Sample>().await.unwrap_err();
            assert!(
                matches!(err, WireError::Truncated(_)),
                "cut at {cut}: {err}"
            );
        }
    }

    #[tokio::test]
    async fn bad_headers_are_typed_errors() {
        type Check = fn(&WireError) -> bool;
        let cases: [(&[u8], Check); 4] = [
            (b"XX\x01\x01", |e| matches!(e, WireError::BadMagic(_))),
            (b"PG\x09\x01", |e| {
                matches!(e, WireError::UnsupportedVersion(9))
            }),
            (b"PG\x02\xee", |e| matches!(e, WireError::UnknownKind(0xee))),
            (b"PG", |e| matches!(e, WireError::Truncated(_))),
        ];
        for (bytes, check) in cases {
            let err = read_header(&mut &bytes[..]).await.unwrap_err();
            assert!(check(&err), "{bytes:?}: {err}");
        }
        let err = expect_header(&mut &header(StreamKind::Chat)[..], StreamKind::Tracker)
            .await
            .unwrap_err();
        assert!(matches!(err, WireError::UnexpectedKind { .. }));
    }

    #[test]
    fn garbage_and_trailing_bytes_are_malformed() {
        let mut body = encode_frame(StreamKind::Chat, &sample()).unwrap()[LENGTH_PREFIX..].to_vec();
        body.push(0);
        assert!(matches!(
            decode_body::<Sample>(StreamKind::Chat, &body),
            Err(WireError::Malformed { .. })
        ));
        // A length claim inside the body far beyond the bytes present.
        let lying = [7u8, 0xfc, 0xff, 0xff, 0xff, 0x7f];
        assert!(matches!(
            decode_body::<Sample>(StreamKind::Chat, &lying),
            Err(WireError::Malformed { .. })
        ));
    }

    #[test]
    fn random_bodies_never_panic() {
        // A cheap deterministic generator: the property is "no panic, typed error or value".
        let mut state = 0x9e3779b97f4a7c15u64;
        for len in 0..512usize {
            let body: Vec<u8> = (0..len)
                .map(|_| {
                    state ^= state << 13;
                    state ^= state >> 7;
                    state ^= state << 17;
                    state as u8
                })
                .collect();
            let _ = decode_body::<Sample>(StreamKind::Chat, &body);
        }
    }

    #[test]
    fn oversized_messages_are_refused_when_encoding() {
        let big = Sample {
            n: 1,
            text: "x".repeat(StreamKind::Control.max_frame_len() + 1),
        };
        assert!(matches!(
            encode_frame(StreamKind::Control, &big),
            Err(WireError::FrameTooLarge { .. })
        ));
    }
}
