//! The wire format, and the only module that calls the codec.
//!
//! Every QUIC stream opens with a 4-byte header: the magic `PG`, the protocol
//! version, and a byte naming the stream's kind. After it come frames: a
//! big-endian `u32` length, then that many bytes of bincode (standard config,
//! varint integers). Each kind has a hard frame-size limit checked before
//! the body is read; a frame's buffer grows with the bytes that arrive,
//! never to the announced length; a frame must decode to exactly its
//! length, within an allocation budget of 8 times its size. A frame that
//! stops coming ([`FRAME_STALL`]), or a stream that idles where its kind may
//! not ([`FrameKind::idle_limit`]), fails. Every failure is a [`WireError`];
//! callers close the connection with [`CloseCode::Protocol`] (or
//! [`CloseCode::Refused`] for a stall or idle stream) and the error's text
//! as the reason. See docs/PROTOCOL.md and docs/SECURITY.md.
//!
//! This module knows no message and no stream kind: the kinds and their
//! limits are [`crate::protocol`]'s, given here through [`FrameKind`].
//!
//! bincode is marked unmaintained (RUSTSEC-2025-0141): keeping every encode
//! and decode here means a codec swap touches one file.

use std::time::Duration;

use serde::de::DeserializeOwned;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::time::Instant;

/// Version byte of every stream header; a peer speaking another is refused.
pub const PROTOCOL_VERSION: u8 = 6;
const MAGIC: [u8; 2] = *b"PG";
pub const HEADER_LEN: usize = 4;
const LENGTH_PREFIX: usize = 4;
/// A frame that has begun must keep coming: no gap between its bytes longer
/// than this, or the stream fails with [`WireError::Stalled`]. Longer than
/// a connection's idle timeout (10 s by default), so on a live connection
/// only a peer that withholds the rest of a frame on purpose reaches it.
pub const FRAME_STALL: Duration = Duration::from_secs(15);
/// A frame's buffer grows by at most this much at a time, and by no more
/// than the bytes that already arrived (but [`FIRST_PIECE`] at first): it
/// follows what was received, never the length a prefix announced.
const READ_PIECE: usize = 64 * 1024;
const FIRST_PIECE: usize = 4 * 1024;
/// A reader keeps a buffer up to this size between frames; a larger one
/// (left by a large frame) is given back.
const KEPT_BUFFER: usize = 64 * 1024;
/// What decoding one value may claim to allocate (bincode counts each
/// decoded integer at its size in memory and each string or vector at its
/// announced length, before reading it) is 8 times its encoded length: a
/// byte never decodes to more than 8 (a one-byte varint to a `u64`), so an
/// honest value stays within it, and a length inside a value that lies can
/// claim no more. At least this much, for small values.
const MIN_DECODE_BUDGET: usize = 1 << 20;
/// No value larger than this decodes (the largest is a 16 MiB manifest).
pub const MAX_DECODED_LEN: usize = 32 << 20;

/// The encoding: bincode's standard configuration (varint integers).
fn codec() -> bincode::config::Configuration {
    bincode::config::standard()
}

/// Decodes a value from the start of `bytes` within an allocation budget of
/// 8 times their length (see [`MIN_DECODE_BUDGET`]). bincode takes the
/// budget as a type-level constant, so it is rounded up to a power of four.
fn decode_within_budget<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(T, usize), bincode::error::DecodeError> {
    macro_rules! with_limit {
        ($limit:expr) => {
            bincode::serde::decode_from_slice(bytes, codec().with_limit::<{ $limit }>())
        };
    }
    let budget = bytes.len().saturating_mul(8).max(MIN_DECODE_BUDGET);
    if bytes.len() > MAX_DECODED_LEN {
        Err(bincode::error::DecodeError::LimitExceeded)
    } else if budget <= 1 << 20 {
        with_limit!(1 << 20)
    } else if budget <= 1 << 22 {
        with_limit!(1 << 22)
    } else if budget <= 1 << 24 {
        with_limit!(1 << 24)
    } else if budget <= 1 << 26 {
        with_limit!(1 << 26)
    } else {
        with_limit!(1 << 28)
    }
}

/// Why bytes did not decode, in words (bincode's own text is a debug print
/// of its error).
fn describe_decode(error: &bincode::error::DecodeError) -> String {
    use bincode::error::DecodeError as E;
    match error {
        E::UnexpectedEnd { additional } => format!("{additional} byte(s) missing at the end"),
        E::LimitExceeded => "larger than allowed".into(),
        E::InvalidIntegerType { .. } | E::NonZeroTypeIsZero { .. } => {
            "a number out of range".into()
        }
        E::UnexpectedVariant { found, .. } => format!("an unknown kind of value ({found})"),
        E::Utf8 { .. } | E::InvalidCharEncoding(_) => "text that is not UTF-8".into(),
        E::InvalidBooleanValue(value) => format!("a yes/no that is {value}"),
        E::ArrayLengthMismatch { found, required } => {
            format!("a list of {found} where {required} belong")
        }
        E::OutsideUsizeRange(value) => format!("a length of {value}, too large here"),
        E::Io { .. } => "cut short".into(),
        E::Other(text) => (*text).to_string(),
        E::OtherString(text) => text.clone(),
        _ => "bytes that do not decode".into(),
    }
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
    /// How long a reader of this kind waits for the next frame to begin
    /// before the stream fails with [`WireError::Idle`]; `None` for streams
    /// that may rightly stay quiet (the connection's idle timeout and
    /// keep-alives govern those).
    fn idle_limit(self) -> Option<Duration> {
        None
    }
}

/// One kind's framing facts, taken once when a reader or writer is made.
#[derive(Clone, Copy, Debug)]
struct KindFacts {
    name: &'static str,
    max_frame_len: usize,
    idle_limit: Option<Duration>,
}

impl KindFacts {
    fn of<K: FrameKind>(kind: K) -> Self {
        Self {
            name: kind.name(),
            max_frame_len: kind.max_frame_len(),
            idle_limit: kind.idle_limit(),
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
    /// No room's gossip needs the link any more: the peer stays a member,
    /// reached through the others.
    Unneeded = 4,
}

impl CloseCode {
    pub fn varint(self) -> quinn::VarInt {
        quinn::VarInt::from_u32(self as u32)
    }

    pub fn from_varint(code: quinn::VarInt) -> Option<Self> {
        [
            Self::Normal,
            Self::Protocol,
            Self::Refused,
            Self::Duplicate,
            Self::Unneeded,
        ]
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
    #[error("a {kind} frame stalled: no byte of it for {} s", limit.as_secs())]
    Stalled { kind: &'static str, limit: Duration },
    #[error("the {kind} stream sent nothing for {} s", limit.as_secs())]
    Idle { kind: &'static str, limit: Duration },
    #[error("malformed {kind}: {reason}")]
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
        decode_within_budget(bytes).map_err(|e| malformed(describe_decode(&e)))?;
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

/// A value kept on disk (the history store's messages). A type whose
/// stored layout changed overrides [`Stored::from_stored`] to read the old
/// one too, beside the type.
pub trait Stored: Serialize + DeserializeOwned {
    fn from_stored(bytes: &[u8]) -> Result<Self, WireError> {
        decode_value("stored value", bytes)
    }
}

/// Encodes a value kept on disk.
pub fn encode_stored<T: Stored>(value: &T) -> Result<Vec<u8>, WireError> {
    encode_value("stored value", value)
}

/// Decodes a value kept on disk; trailing bytes are an error.
pub fn decode_stored<T: Stored>(bytes: &[u8]) -> Result<T, WireError> {
    T::from_stored(bytes)
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
///
/// Memory follows the bytes that arrived: a frame's buffer grows as its
/// bytes come (to at most twice what arrived, and 4 KiB at first), whatever
/// length its prefix announced (within the kind's limit). A frame that has begun must keep
/// coming ([`FRAME_STALL`]); a kind with an [`FrameKind::idle_limit`] must
/// also begin its next frame in time.
///
/// [`FrameReader::recv`] is cancel safe: the bytes of a frame read so far
/// stay in the reader, so it may be raced in `select!` against other events.
pub struct FrameReader<R> {
    inner: R,
    kind: KindFacts,
    prefix: [u8; LENGTH_PREFIX],
    prefix_filled: usize,
    /// The body's length, once the prefix is complete.
    body_len: Option<usize>,
    /// The body's bytes so far are `body[..body_filled]`; the rest is room
    /// for the next read.
    body: Vec<u8>,
    body_filled: usize,
    /// When the wait in progress fails: the stall deadline inside a frame,
    /// the idle deadline between frames.
    deadline: Option<Instant>,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// Reads from a stream whose header was already read and checked.
    pub fn new<K: FrameKind>(inner: R, kind: K) -> Self {
        Self {
            inner,
            kind: KindFacts::of(kind),
            prefix: [0; LENGTH_PREFIX],
            prefix_filled: 0,
            body_len: None,
            body: Vec::new(),
            body_filled: 0,
            deadline: None,
        }
    }

    /// Reads the header, checks it is `kind`, and returns the reader.
    pub async fn accept<K: FrameKind>(mut inner: R, kind: K) -> Result<Self, WireError> {
        expect_header(&mut inner, kind).await?;
        Ok(Self::new(inner, kind))
    }

    /// The next message; `Ok(None)` when the stream ended cleanly between frames.
    pub async fn recv<T: DeserializeOwned>(&mut self) -> Result<Option<T>, WireError> {
        loop {
            if self.body_len == Some(self.body_filled) {
                return self.take_frame().map(Some);
            }
            if self.deadline.is_none() {
                let wait = if self.prefix_filled > 0 {
                    Some(FRAME_STALL)
                } else {
                    self.kind.idle_limit
                };
                self.deadline = wait.map(|wait| Instant::now() + wait);
            }
            let read = match self.deadline {
                Some(deadline) => match tokio::time::timeout_at(deadline, self.read_some()).await {
                    Ok(read) => read?,
                    Err(_) => return Err(self.late()),
                },
                None => self.read_some().await?,
            };
            if read == 0 {
                return match (self.prefix_filled, self.body_len) {
                    (0, _) => Ok(None),
                    (_, Some(_)) => Err(WireError::Truncated("frame")),
                    (_, None) => Err(WireError::Truncated("frame length")),
                };
            }
            // Progress: a frame's stall deadline starts again.
            self.deadline = None;
            if self.body_len.is_none() && self.prefix_filled == LENGTH_PREFIX {
                let len = u32::from_be_bytes(self.prefix) as usize;
                if len > self.kind.max_frame_len {
                    return Err(WireError::FrameTooLarge {
                        len,
                        limit: self.kind.max_frame_len,
                        kind: self.kind.name,
                    });
                }
                self.body_len = Some(len);
            }
        }
    }

    /// Decodes the complete frame in the buffer and makes ready for the next.
    fn take_frame<T: DeserializeOwned>(&mut self) -> Result<T, WireError> {
        let message = decode_exact(self.kind.name, &self.body[..self.body_filled]);
        self.prefix_filled = 0;
        self.body_len = None;
        self.body_filled = 0;
        if self.body.capacity() > KEPT_BUFFER {
            self.body = Vec::new();
        }
        message
    }

    /// Reads what has arrived into the prefix or, once the length is known,
    /// the body (at most [`READ_PIECE`] at a time); 0 at the end of the
    /// stream. Dropping the future loses nothing: only a completed read
    /// moves the counts on.
    async fn read_some(&mut self) -> Result<usize, WireError> {
        let Some(len) = self.body_len else {
            let n = self
                .inner
                .read(&mut self.prefix[self.prefix_filled..])
                .await?;
            self.prefix_filled += n;
            return Ok(n);
        };
        // Grow only once the room so far is full of received bytes, by as
        // much as arrived so far (at least 4 KiB, at most READ_PIECE).
        if self.body.len() <= self.body_filled {
            let step = self.body_filled.clamp(FIRST_PIECE, READ_PIECE);
            self.body.resize(len.min(self.body_filled + step), 0);
        }
        let end = len.min(self.body.len());
        let n = self
            .inner
            .read(&mut self.body[self.body_filled..end])
            .await?;
        self.body_filled += n;
        Ok(n)
    }

    /// The error for a deadline that passed.
    fn late(&self) -> WireError {
        if self.prefix_filled > 0 {
            WireError::Stalled {
                kind: self.kind.name,
                limit: FRAME_STALL,
            }
        } else {
            WireError::Idle {
                kind: self.kind.name,
                limit: self.kind.idle_limit.unwrap_or_default(),
            }
        }
    }

    pub fn get_mut(&mut self) -> &mut R {
        &mut self.inner
    }
}

#[cfg(test)]
mod tests;
