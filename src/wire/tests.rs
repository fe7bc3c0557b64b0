//! The wire format's unit tests: framing, limits, deadlines (on paused
//! time), decode budgets.

use super::*;
use serde::Deserialize;

/// Kinds with the limits of three of the protocol's.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StreamKind {
    Tracker = 1,
    Control = 2,
    Chat = 3,
    /// One exchange: may not idle.
    Exchange = 4,
}

impl FrameKind for StreamKind {
    fn from_byte(byte: u8) -> Option<Self> {
        [Self::Tracker, Self::Control, Self::Chat, Self::Exchange]
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
            Self::Exchange => "exchange",
        }
    }
    fn max_frame_len(self) -> usize {
        match self {
            Self::Tracker => 256 * 1024,
            Self::Control => 4 * 1024,
            Self::Chat | Self::Exchange => 16 * 1024,
        }
    }
    fn idle_limit(self) -> Option<Duration> {
        (self == Self::Exchange).then_some(Duration::from_secs(30))
    }
}

/// Gives `bytes`, then nothing ever again: a peer that stopped sending
/// without closing its stream.
struct Withheld {
    bytes: Vec<u8>,
    at: usize,
}

impl Withheld {
    fn new(bytes: Vec<u8>) -> Self {
        Self { bytes, at: 0 }
    }
}

impl AsyncRead for Withheld {
    fn poll_read(
        self: std::pin::Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        buf: &mut tokio::io::ReadBuf<'_>,
    ) -> std::task::Poll<std::io::Result<()>> {
        let this = self.get_mut();
        if this.at == this.bytes.len() {
            return std::task::Poll::Pending;
        }
        let n = buf.remaining().min(this.bytes.len() - this.at);
        buf.put_slice(&this.bytes[this.at..this.at + n]);
        this.at += n;
        std::task::Poll::Ready(Ok(()))
    }
}

fn half_sent(kind: StreamKind, sent: usize) -> Vec<u8> {
    let mut bytes = (kind.max_frame_len() as u32).to_be_bytes().to_vec();
    bytes.resize(LENGTH_PREFIX + sent, 7);
    bytes
}

#[tokio::test(start_paused = true)]
async fn a_half_sent_maximal_frame_holds_only_what_arrived_then_stalls() {
    let mut reader = FrameReader::new(
        Withheld::new(half_sent(StreamKind::Tracker, 1000)),
        StreamKind::Tracker,
    );
    let started = Instant::now();
    let error = tokio::time::timeout(FRAME_STALL * 4, reader.recv::<Sample>())
        .await
        .expect("a frame that stopped coming must fail")
        .unwrap_err();
    assert!(
        matches!(
            error,
            WireError::Stalled {
                kind: "tracker",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(started.elapsed(), FRAME_STALL);
    assert!(
        reader.body.capacity() <= FIRST_PIECE,
        "{} bytes held for 1000 received",
        reader.body.capacity()
    );
}

#[tokio::test(start_paused = true)]
async fn an_exchange_stream_that_sends_nothing_fails_after_its_idle_limit() {
    let mut reader = FrameReader::new(Withheld::new(vec![]), StreamKind::Exchange);
    let error = tokio::time::timeout(Duration::from_secs(300), reader.recv::<Sample>())
        .await
        .expect("an idle exchange must fail")
        .unwrap_err();
    assert!(
        matches!(
            error,
            WireError::Idle {
                kind: "exchange",
                ..
            }
        ),
        "{error}"
    );
    assert_eq!(
        error.to_string(),
        "the exchange stream sent nothing for 30 s"
    );
}

#[tokio::test(start_paused = true)]
async fn a_long_lived_stream_may_stay_quiet_between_frames() {
    let mut reader = FrameReader::new(Withheld::new(vec![]), StreamKind::Chat);
    let day = Duration::from_secs(86_400);
    assert!(tokio::time::timeout(day, reader.recv::<Sample>())
        .await
        .is_err());
}

#[tokio::test(start_paused = true)]
async fn recv_cancelled_in_the_middle_of_a_frame_loses_nothing() {
    let frame = encode_frame(StreamKind::Chat, &sample()).unwrap();
    let (mut near, far) = tokio::io::duplex(1024);
    let mut reader = FrameReader::new(far, StreamKind::Chat);
    near.write_all(&frame[..LENGTH_PREFIX + 2]).await.unwrap();
    let cut_short = tokio::time::timeout(Duration::from_secs(1), reader.recv::<Sample>());
    assert!(cut_short.await.is_err(), "the frame is not complete yet");
    near.write_all(&frame[LENGTH_PREFIX + 2..]).await.unwrap();
    assert_eq!(reader.recv::<Sample>().await.unwrap(), Some(sample()));
}

#[test]
fn a_value_claiming_more_than_a_mebibyte_decodes_within_its_budget() {
    // 200,000 small integers: 200 kB encoded, 1.6 MB as bincode counts
    // them (8 bytes each), beyond the flat 1 MiB limit of old.
    let numbers: Vec<u64> = (0..200_000).map(|n| n % 100).collect();
    let encoded = encode_value("numbers", &numbers).unwrap();
    assert_eq!(
        decode_value::<Vec<u64>>("numbers", &encoded).unwrap(),
        numbers
    );
}

#[test]
fn a_lying_length_inside_a_large_value_is_refused_without_allocating_it() {
    // A byte string announcing 2^40 bytes in a 2 MB body.
    let mut body = vec![0xfd];
    body.extend_from_slice(&(1u64 << 40).to_le_bytes());
    body.resize(2 << 20, 0);
    assert!(matches!(
        decode_value::<Vec<u8>>("bytes", &body),
        Err(WireError::Malformed { .. })
    ));
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
    let unknown_kind = [b'P', b'G', PROTOCOL_VERSION, 0xee];
    let cases: [(&[u8], Check); 4] = [
        (b"XX\x01\x01", |e| matches!(e, WireError::BadMagic(_))),
        (b"PG\x09\x01", |e| {
            matches!(e, WireError::UnsupportedVersion(9))
        }),
        (&unknown_kind, |e| matches!(e, WireError::UnknownKind(0xee))),
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
