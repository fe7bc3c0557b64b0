//! The wire format, and the only module that calls the codec.
//!
//! Every QUIC stream opens with a 4-byte header: the magic `PG`, the protocol
//! version, and a byte naming the stream's kind. After it come frames: a
//! big-endian `u32` length, then that many bytes of bincode (standard config,
//! varint integers). Each kind has a hard frame-size limit checked *before*
//! anything is allocated; a frame must decode to exactly its length. Every
//! failure is a [`WireError`]; callers close the connection with
//! [`CloseCode::Protocol`] and the error's text as the reason. See
//! docs/PROTOCOL.md.
//!
//! This module knows no message and no stream kind: the kinds and their
//! limits are [`crate::protocol`]'s, given here through [`FrameKind`].
//!
//! bincode is marked unmaintained (RUSTSEC-2025-0141): keeping every encode
//! and decode here means a codec swap touches one file.

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Version byte of every stream header; a peer speaking another is refused.
pub const PROTOCOL_VERSION: u8 = 1;
const MAGIC: [u8; 2] = *b"PG";
pub const HEADER_LEN: usize = 4;
const LENGTH_PREFIX: usize = 4;
/// Bound on what bincode may claim to allocate while decoding one frame; no
/// frame is larger than this, so no honest frame ever reaches it.
const DECODE_LIMIT: usize = 1 << 20;

fn codec() -> impl bincode::config::Config {
    bincode::config::standard().with_limit::<DECODE_LIMIT>()
}

/// What the framing needs to know of a stream kind: the byte that names it
/// in the header, a name for errors, and the largest frame it carries. The
/// kinds themselves are the protocol's ([`crate::protocol::StreamKind`]).
pub trait FrameKind: Copy + Eq {
    /// The kind a header byte names, if any.
    fn from_byte(byte: u8) -> Option<Self>;
    /// The header byte naming this kind.
    fn byte(self) -> u8;
    /// A short lowercase name, for errors and close reasons.
    fn name(self) -> &'static str;
    /// The largest frame body accepted on a stream of this kind.
    fn max_frame_len(self) -> usize;
}

/// One kind's framing facts, taken once when a reader or writer is made.
#[derive(Clone, Copy, Debug)]
struct KindFacts {
    name: &'static str,
    max_frame_len: usize,
}

impl KindFacts {
    fn of<K: FrameKind>(kind: K) -> Self {
        Self {
            name: kind.name(),
            max_frame_len: kind.max_frame_len(),
        }
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
pub fn header<K: FrameKind>(kind: K) -> [u8; HEADER_LEN] {
    [MAGIC[0], MAGIC[1], PROTOCOL_VERSION, kind.byte()]
}

/// Parses a stream header.
pub fn parse_header<K: FrameKind>(bytes: [u8; HEADER_LEN]) -> Result<K, WireError> {
    if bytes[..2] != MAGIC {
        return Err(WireError::BadMagic([bytes[0], bytes[1]]));
    }
    if bytes[2] != PROTOCOL_VERSION {
        return Err(WireError::UnsupportedVersion(bytes[2]));
    }
    K::from_byte(bytes[3]).ok_or(WireError::UnknownKind(bytes[3]))
}

/// Reads a stream's header. A stream that ends before it is truncated.
pub async fn read_header<K: FrameKind>(
    reader: &mut (impl AsyncRead + Unpin),
) -> Result<K, WireError> {
    let mut bytes = [0u8; HEADER_LEN];
    if !read_full(reader, &mut bytes, "stream header").await? {
        return Err(WireError::Truncated("stream header"));
    }
    parse_header(bytes)
}

/// Reads a header and checks it names `expected`.
pub async fn expect_header<K: FrameKind, R: AsyncRead + Unpin>(
    reader: &mut R,
    expected: K,
) -> Result<(), WireError> {
    let got: K = read_header(reader).await?;
    if got != expected {
        return Err(WireError::UnexpectedKind {
            expected: expected.name(),
            got: got.name(),
        });
    }
    Ok(())
}

/// Encodes one frame (length prefix and body) of a stream of `kind`.
pub fn encode_frame<K: FrameKind, T: Serialize>(
    kind: K,
    message: &T,
) -> Result<Vec<u8>, WireError> {
    encode_frame_as(KindFacts::of(kind), message)
}

fn encode_frame_as<T: Serialize>(kind: KindFacts, message: &T) -> Result<Vec<u8>, WireError> {
    let mut frame = vec![0u8; LENGTH_PREFIX];
    bincode::serde::encode_into_std_write(message, &mut frame, codec()).map_err(|e| {
        WireError::Encode {
            kind: kind.name,
            reason: e.to_string(),
        }
    })?;
    let len = frame.len() - LENGTH_PREFIX;
    let too_large = WireError::FrameTooLarge {
        len,
        limit: kind.max_frame_len,
        kind: kind.name,
    };
    if len > kind.max_frame_len {
        return Err(too_large);
    }
    let prefix = u32::try_from(len).map_err(|_| too_large)?;
    frame[..LENGTH_PREFIX].copy_from_slice(&prefix.to_be_bytes());
    Ok(frame)
}

/// Decodes one frame body of a stream of `kind`; trailing bytes are an error.
pub fn decode_body<T: DeserializeOwned>(kind: impl FrameKind, body: &[u8]) -> Result<T, WireError> {
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

/// Encodes one value that travels or is stored outside a frame (a probe's
/// payload, a manifest, a ticket, a stored message); `what` names it in errors.
pub fn encode_value<T: Serialize>(what: &'static str, value: &T) -> Result<Vec<u8>, WireError> {
    bincode::serde::encode_to_vec(value, codec()).map_err(|e| WireError::Encode {
        kind: what,
        reason: e.to_string(),
    })
}

/// Decodes one value encoded by [`encode_value`]; it must use every byte
/// (trailing bytes are an error).
pub fn decode_value<T: DeserializeOwned>(what: &'static str, bytes: &[u8]) -> Result<T, WireError> {
    decode_exact(what, bytes)
}

/// Encodes a value kept on disk (the history store's messages).
pub fn encode_stored<T: Serialize>(value: &T) -> Result<Vec<u8>, WireError> {
    encode_value("stored value", value)
}

/// Decodes a value kept on disk; trailing bytes are an error.
pub fn decode_stored<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, WireError> {
    decode_value("stored value", bytes)
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
    kind: KindFacts,
}

impl<W: AsyncWrite + Unpin> FrameWriter<W> {
    /// Starts a stream of `kind`: writes its header.
    pub async fn open<K: FrameKind>(mut inner: W, kind: K) -> Result<Self, WireError> {
        inner.write_all(&header(kind)).await?;
        Ok(Self::answering(inner, kind))
    }

    /// Writes to a stream whose header the other side already sent (the
    /// answering half of a bidirectional stream).
    pub fn answering<K: FrameKind>(inner: W, kind: K) -> Self {
        Self {
            inner,
            kind: KindFacts::of(kind),
        }
    }

    pub async fn send<T: Serialize>(&mut self, message: &T) -> Result<(), WireError> {
        let frame = encode_frame_as(self.kind, message)?;
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
    kind: KindFacts,
    body: Vec<u8>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from a stream whose header was already read and checked.
    pub fn new<K: FrameKind>(inner: R, kind: K) -> Self {
        Self {
            inner,
            kind: KindFacts::of(kind),
            body: Vec::new(),
        }
    }

    /// Reads the header, checks it is `kind`, and returns the reader.
    pub async fn accept<K: FrameKind>(mut inner: R, kind: K) -> Result<Self, WireError> {
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
        let limit = self.kind.max_frame_len;
        if len > limit {
            return Err(WireError::FrameTooLarge {
                len,
                limit,
                kind: self.kind.name,
            });
        }
        self.body.resize(len, 0);
        if len > 0 && !read_full(&mut self.inner, &mut self.body, "frame").await? {
            return Err(WireError::Truncated("frame"));
        }
        decode_exact(self.kind.name, &self.body).map(Some)
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde::Deserialize;

    /// Kinds with the limits of three of the protocol's.
    #[derive(Clone, Copy, Debug, PartialEq, Eq)]
    enum StreamKind {
        Tracker = 1,
        Control = 2,
        Chat = 3,
    }

    impl FrameKind for StreamKind {
        fn from_byte(byte: u8) -> Option<Self> {
            [Self::Tracker, Self::Control, Self::Chat]
                .into_iter()
                .find(|kind| *kind as u8 == byte)
        }
        fn byte(self) -> u8 {
            self as u8
        }
        fn name(self) -> &'static str {
            match self {
                Self::Tracker => "tracker",
                Self::Control => "control",
                Self::Chat => "chat",
            }
        }
        fn max_frame_len(self) -> usize {
            match self {
                Self::Tracker => 256 * 1024,
                Self::Control => 4 * 1024,
                Self::Chat => 16 * 1024,
            }
        }
    }

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
            (b"PG\x01\xee", |e| matches!(e, WireError::UnknownKind(0xee))),
            (b"PG", |e| matches!(e, WireError::Truncated(_))),
        ];
        for (bytes, check) in cases {
            let err = read_header::<StreamKind>(&mut &bytes[..])
                .await
                .unwrap_err();
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
