//! What each decoder of untrusted bytes is fed, and the checks a node runs
//! on what it decoded: shared by the `cargo fuzz` targets (fuzz_targets/)
//! and the property test over random inputs (tests/decoders.rs, which
//! includes this file). Every function takes arbitrary bytes and must never
//! panic; a wrong round trip is a panic too.

use std::pin::Pin;
use std::str::FromStr;
use std::task::{Context, Poll};

use punchgate::dht::record::{ReachRecord, TrackerRef, MAX_TRACKERS};
use punchgate::dht::room_record::{encode_entries, MemberEntry, RoomSpot, MAX_ENTRIES};
use punchgate::endpoint::Target;
use punchgate::gate_socket::{is_probe, probe_datagram, PROBE_MAGIC};
use punchgate::hlc;
use punchgate::holdings::Held;
use punchgate::identity::{Identity, PeerId};
use punchgate::pake::{Exchange, Side};
use punchgate::protocol::{
    is_lan_candidate, validate_label, AuthFrame, ChatBody, ChatFrame, ChunkReply, ChunkRequest,
    ContentId, ControlMessage, FileOffer, ManifestReply, ManifestRequest, Member, MessageId,
    ProbeMessage, RelayFrame, RelayRefusal, Role, SignedMessage, StreamKind, SyncFrame,
    TrackerEvent, TrackerMessage, TrackerRefusal, TrackerRequest, TrackerRequestBody,
    TrackerResponse, MAX_NAME_LEN, MAX_ROOM_LEN,
};
use punchgate::transfer::manifest::{check_relative_path, FileEntry, Layout, Manifest};
use punchgate::transfer::{Ticket, TicketTracker};
use punchgate::wire::{self, FrameReader, HEADER_LEN};
use serde::de::DeserializeOwned;
use tokio::io::{AsyncRead, ReadBuf};

/// One reader of one stream kind, in one direction: what the first byte of
/// a [`stream`] input picks.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reader {
    /// The tracker reading a node's requests.
    TrackerRequests,
    /// A node reading its tracker's responses and events.
    TrackerMessages,
    Control,
    Chat,
    Sync,
    Auth,
    ManifestRequests,
    ManifestReplies,
    ChunkRequests,
    ChunkReplies,
    Relay,
}

impl Reader {
    pub const ALL: [Reader; 11] = [
        Reader::TrackerRequests,
        Reader::TrackerMessages,
        Reader::Control,
        Reader::Chat,
        Reader::Sync,
        Reader::Auth,
        Reader::ManifestRequests,
        Reader::ManifestReplies,
        Reader::ChunkRequests,
        Reader::ChunkReplies,
        Reader::Relay,
    ];

    pub fn kind(self) -> StreamKind {
        match self {
            Reader::TrackerRequests | Reader::TrackerMessages => StreamKind::Tracker,
            Reader::Control => StreamKind::Control,
            Reader::Chat => StreamKind::Chat,
            Reader::Sync => StreamKind::Sync,
            Reader::Auth => StreamKind::Auth,
            Reader::ManifestRequests | Reader::ManifestReplies => StreamKind::Manifest,
            Reader::ChunkRequests | Reader::ChunkReplies => StreamKind::Chunks,
            Reader::Relay => StreamKind::Relay,
        }
    }

    /// The selector byte of a [`stream`] input for this reader (low nibble;
    /// the high nibble sets how the bytes trickle in).
    pub fn selector(self) -> u8 {
        Self::ALL
            .iter()
            .position(|r| *r == self)
            .map_or(0, |i| i as u8)
    }
}

/// A stream's bytes that arrive in pieces of a few sizes, so the frame
/// reader's buffer growth is exercised, not only one whole read.
struct Trickle<'a> {
    bytes: &'a [u8],
    pattern: u8,
    reads: usize,
}

impl AsyncRead for Trickle<'_> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let sizes = [1usize, 3, 4, 7, 4096, 65_536, usize::MAX, 2];
        let step = match self.pattern {
            0 => usize::MAX,
            p => sizes[(usize::from(p) + self.reads) % sizes.len()],
        };
        let n = step.min(buf.remaining()).min(self.bytes.len());
        let (now, rest) = self.bytes.split_at(n);
        buf.put_slice(now);
        self.bytes = rest;
        self.reads += 1;
        Poll::Ready(Ok(()))
    }
}

/// Runs `future` to its end: the readers here never wait (every read is
/// ready), but the frame reader arms its deadlines on tokio's clock.
fn run<F: std::future::Future>(future: F) -> F::Output {
    thread_local! {
        static RUNTIME: tokio::runtime::Runtime = tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .unwrap_or_else(|e| panic!("cannot start a tokio runtime: {e}"));
    }
    RUNTIME.with(|runtime| runtime.block_on(future))
}

/// A stream as a peer (or tracker) could send it, after its header: the
/// first byte picks the [`Reader`] and how the bytes arrive, the rest is
/// the stream. Every frame decoded gets the checks its receiver runs.
pub fn stream(data: &[u8]) {
    let Some((&selector, bytes)) = data.split_first() else {
        return;
    };
    let reader = Reader::ALL[usize::from(selector & 0x0f) % Reader::ALL.len()];
    let input = Trickle {
        bytes,
        pattern: selector >> 4,
        reads: 0,
    };
    match reader {
        Reader::TrackerRequests => frames(reader, input, check_tracker_request),
        Reader::TrackerMessages => frames(reader, input, check_tracker_message),
        Reader::Control => frames(reader, input, check_control),
        Reader::Chat => frames(reader, input, check_chat),
        Reader::Sync => frames(reader, input, check_sync),
        Reader::Auth => frames(reader, input, check_auth),
        Reader::ManifestRequests => frames(reader, input, |_: ManifestRequest| {}),
        Reader::ManifestReplies => frames(reader, input, check_manifest_reply),
        Reader::ChunkRequests => frames(reader, input, |_: ChunkRequest| {}),
        Reader::ChunkReplies => frames(reader, input, |_: ChunkReply| {}),
        Reader::Relay => frames(reader, input, check_relay),
    }
}

/// Reads frames until the stream ends or fails; the error must format.
fn frames<T: DeserializeOwned>(reader: Reader, input: Trickle<'_>, check: impl Fn(T)) {
    run(async {
        let mut frames = FrameReader::new(input, reader.kind());
        loop {
            match frames.recv::<T>().await {
                Ok(Some(frame)) => check(frame),
                Ok(None) => break,
                Err(error) => {
                    let _ = error.to_string();
                    break;
                }
            }
        }
    })
}

/// A stream header: four arbitrary bytes.
pub fn header(data: &[u8]) {
    if let Some(bytes) = data.get(..HEADER_LEN) {
        let mut header = [0u8; HEADER_LEN];
        header.copy_from_slice(bytes);
        if let Err(error) = wire::parse_header::<StreamKind>(header) {
            let _ = error.to_string();
        }
    }
}

fn label(what: &str, text: &str, max: usize) {
    let _ = validate_label(what, text, max);
}

fn check_member(member: &Member) {
    label("name", &member.name, MAX_NAME_LEN);
    let _ = member.candidates();
    let _ = member
        .local_addrs
        .iter()
        .filter(|a| is_lan_candidate(a))
        .count();
    let _ = member.peer_id.to_string();
}

fn check_tracker_request(request: TrackerRequest) {
    match request.body {
        TrackerRequestBody::Register {
            name, local_addrs, ..
        } => {
            label("name", &name, MAX_NAME_LEN);
            let _ = local_addrs.iter().filter(|a| is_lan_candidate(a)).count();
        }
        TrackerRequestBody::Join { room }
        | TrackerRequestBody::Leave { room }
        | TrackerRequestBody::Members { room } => label("room", &room, MAX_ROOM_LEN),
        TrackerRequestBody::Connect { peer } => {
            let _ = peer.short();
        }
        TrackerRequestBody::Netcheck { .. }
        | TrackerRequestBody::ReportNat { .. }
        | TrackerRequestBody::Park
        | TrackerRequestBody::Resume { .. } => {}
        TrackerRequestBody::PortMapped { addr } => {
            let _ = addr.map(|a| is_lan_candidate(&a));
        }
    }
}

fn check_tracker_message(message: TrackerMessage) {
    match message {
        TrackerMessage::Response { result, .. } => match result {
            Ok(TrackerResponse::Joined { room, members })
            | Ok(TrackerResponse::Members { room, members }) => {
                label("room", &room, MAX_ROOM_LEN);
                members.iter().for_each(check_member);
            }
            Ok(TrackerResponse::Left { room }) => label("room", &room, MAX_ROOM_LEN),
            Ok(_) => {}
            Err(refusal) => {
                let _ = refusal.to_string();
            }
        },
        TrackerMessage::Event(TrackerEvent::Joined { room, member }) => {
            label("room", &room, MAX_ROOM_LEN);
            check_member(&member);
        }
        TrackerMessage::Event(TrackerEvent::Left { room, .. }) => {
            label("room", &room, MAX_ROOM_LEN)
        }
        TrackerMessage::Event(TrackerEvent::Introduce { peer, .. }) => check_member(&peer),
    }
}

fn check_control(message: ControlMessage) {
    match message {
        ControlMessage::Hello { name, rooms, .. } => {
            label("name", &name, MAX_NAME_LEN);
            rooms.iter().for_each(|r| label("room", r, MAX_ROOM_LEN));
        }
        ControlMessage::Rooms { rooms } => {
            rooms.iter().for_each(|r| label("room", r, MAX_ROOM_LEN))
        }
        ControlMessage::Offer(offer) => {
            label("room", &offer.room, MAX_ROOM_LEN);
            label("file name", &offer.name, 255);
            let text = offer.content.to_string();
            assert_eq!(ContentId::from_str(&text).ok(), Some(offer.content));
            let _ = offer.content.short();
        }
        ControlMessage::Gossip { room, .. } => label("room", &room, MAX_ROOM_LEN),
        ControlMessage::Goodbye { .. }
        | ControlMessage::Ping { .. }
        | ControlMessage::Pong { .. } => {}
    }
}

/// What a node checks of a message before it shows or stores it.
fn check_message(message: &SignedMessage) {
    let _ = message.verify().map_err(|e| e.to_string());
    let _ = hlc::check_received(message.body.hlc, 1_800_000_000_000).map_err(|e| e.to_string());
    let mut clock = hlc::Hlc::restored(message.body.hlc, 1_800_000_000_000);
    clock.observe(message.body.hlc, 1_800_000_000_000);
    let _ = clock.tick(1_800_000_000_000);
    let _ = message.body.id.to_string();
}

fn check_chat(frame: ChatFrame) {
    match frame {
        ChatFrame::Message(message) => check_message(&message),
        ChatFrame::Ack(id) | ChatFrame::Reject { id, .. } => {
            let _ = id.to_string();
        }
    }
}

fn check_sync(frame: SyncFrame) {
    match frame {
        SyncFrame::Request { room, have, .. } => {
            label("room", &room, MAX_ROOM_LEN);
            for (_, ranges) in have {
                if let Ok(held) = Held::from_summary(ranges) {
                    for seq in [0, 1, u64::MAX - 1, u64::MAX] {
                        let _ = held.contains(seq);
                    }
                    let _ = held.summary();
                }
            }
        }
        SyncFrame::Batch { room, messages } => {
            label("room", &room, MAX_ROOM_LEN);
            messages.iter().for_each(check_message);
        }
        SyncFrame::Done { room } => label("room", &room, MAX_ROOM_LEN),
    }
}

/// The password proof with the peer's SPAKE2 message and confirmation as
/// received (the exchange's own decoder sees hostile bytes too).
fn check_auth(frame: AuthFrame) {
    let (theirs, confirm) = match frame {
        AuthFrame::Start { room, spake } => {
            label("room", &room, MAX_ROOM_LEN);
            (spake, Vec::new())
        }
        AuthFrame::Reply { spake } => (spake, Vec::new()),
        AuthFrame::Confirm { confirm } | AuthFrame::Accepted { confirm } => (Vec::new(), confirm),
        AuthFrame::Refused { .. } => return,
    };
    let (exchange, _) = Exchange::start("room", "password", [7; 32]);
    if let Ok(confirmed) = exchange.finish(&theirs) {
        let _ = confirmed.confirmation(Side::Initiator);
        let _ = confirmed.check(Side::Responder, &confirm);
    }
}

fn check_manifest_reply(reply: ManifestReply) {
    if let ManifestReply::Found(encoded) = reply {
        manifest(&encoded);
    }
}

fn check_relay(frame: RelayFrame) {
    if let RelayFrame::Refused { reason, .. } = frame {
        let _ = reason.to_string();
    }
}

/// An encoded manifest: decoded, checked, and when it passes laid out and
/// walked chunk by chunk, as a download does.
pub fn manifest(data: &[u8]) {
    let Ok(manifest) = Manifest::decode(data) else {
        return;
    };
    let id = ContentId::of_manifest(data);
    match manifest.check() {
        Ok(()) => {
            let layout = match Layout::from_wire(id, data) {
                Ok(layout) => layout,
                Err(error) => panic!("a checked manifest was refused: {error}"),
            };
            assert_eq!(layout.total_bytes, manifest.total_bytes());
            let mut covered = 0u64;
            for file in 0..layout.manifest.files.len() {
                for index in layout.chunks_of(file) {
                    let place = layout.place(index);
                    let place = place.unwrap_or_else(|| panic!("chunk {index} has no place"));
                    assert_eq!(place.file, file);
                    covered += place.len as u64;
                }
            }
            assert_eq!(covered, layout.total_bytes);
            assert!(layout.place(layout.total_chunks).is_none());
        }
        Err(error) => {
            let _ = error.to_string();
            assert!(Layout::from_wire(id, data).is_err());
        }
    }
}

/// A relative path a manifest names.
pub fn relative_path(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(components) = check_relative_path(text) {
            assert_eq!(components.join("/"), text);
        }
    }
}

/// A ticket as text (what `get` is given) and as its encoded bytes.
pub fn ticket(data: &[u8]) {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(ticket) = Ticket::from_str(text) {
            assert_eq!(Ticket::from_str(&ticket.to_string()), Ok(ticket));
        }
        if let Ok(tracker) = TicketTracker::from_str(text) {
            assert_eq!(TicketTracker::from_str(&tracker.to_string()), Ok(tracker));
        }
    }
    if let Ok(ticket) = wire::decode_value::<Ticket>("ticket", data) {
        assert_eq!(Ticket::from_str(&ticket.to_string()), Ok(ticket));
    }
}

/// A probe datagram as the gate socket tells it from QUIC, and its payload.
pub fn probe(data: &[u8]) {
    if is_probe(data) {
        probe_payload(&data[PROBE_MAGIC.len()..]);
    }
    probe_payload(data);
}

/// What the gateway (or anyone on the LAN) sends the port-mapping client:
/// a NAT-PMP or PCP datagram, and UPnP's search answers, HTTP responses,
/// descriptions and SOAP faults. Whatever decodes must be consistent.
pub fn port_mapping(data: &[u8]) {
    use punchgate::portmap::{upnp, wire as pm};
    if let Some(pm::Response::PcpMap { external, .. }) = pm::decode(data) {
        assert!(
            data.len() >= pm::PCP_MAP_LEN,
            "decoded from {} bytes",
            data.len()
        );
        let _ = external.to_string();
    }
    let gateway = std::net::Ipv4Addr::new(10, 0, 1, 1);
    let text = String::from_utf8_lossy(data);
    if let Some((addr, path)) = upnp::location_on(&text, gateway) {
        assert_eq!(*addr.ip(), gateway, "followed an answer off the gateway");
        assert!(path.starts_with('/'), "{path}");
    }
    let base = std::net::SocketAddrV4::new(gateway, 5000);
    if let Some((_, control)) = upnp::control_url(&text, base) {
        assert!(control.starts_with('/'), "{control}");
    }
    if let Some((_, body)) = upnp::http_body(data) {
        assert!(body.len() <= data.len());
    }
    let _ = upnp::fault_code(&text);
}

fn probe_payload(data: &[u8]) {
    if let Ok(message) = ProbeMessage::decode(data) {
        let encoded = message
            .encode()
            .unwrap_or_else(|e| panic!("a decoded probe does not encode: {e}"));
        assert_eq!(ProbeMessage::decode(&encoded).ok(), Some(message));
    }
}

/// Peer ids and content ids as text.
pub fn peer_id_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match PeerId::from_str(text) {
        Ok(peer) => assert_eq!(PeerId::from_str(&peer.to_string()).ok(), Some(peer)),
        Err(error) => {
            let _ = error.to_string();
        }
    }
    if let Ok(content) = ContentId::from_str(text) {
        assert_eq!(
            ContentId::from_str(&content.to_string()).ok(),
            Some(content)
        );
    }
}

/// A tracker or peer address as text (`[PEERID@]host:port`).
pub fn target_text(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    match Target::from_str(text) {
        Ok(target) => {
            let _ = target.require_peer();
            let again = Target::from_str(&target.to_string())
                .unwrap_or_else(|e| panic!("{target} does not parse again: {e}"));
            assert_eq!(again, target);
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// A chat message as the history store keeps it on disk.
pub fn stored_message(data: &[u8]) {
    if let Ok(message) = wire::decode_stored::<SignedMessage>(data) {
        check_message(&message);
    }
}

/// A peer's DHT record as a lookup returns it (after the DHT checked its
/// signature): a record that decodes encodes to the same bytes.
pub fn dht_record(data: &[u8]) {
    match ReachRecord::decode(data) {
        Ok(record) => {
            assert!(record.trackers().len() <= MAX_TRACKERS);
            assert_eq!(
                record.encode(),
                data,
                "a decoded record encodes differently"
            );
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

/// A room's DHT record as a key holder may write it. Byte 0 picks what
/// the rest is: odd, a slot's sealed value for the open room `lobby`
/// (slot = byte 0 / 2); even, the plaintext inside a sealed value (anyone
/// with the room's secret can seal any plaintext). Kept entries are at
/// most `MAX_ENTRIES`, each signed by its member for this room.
pub fn room_record(data: &[u8]) {
    let Some((&mode, rest)) = data.split_first() else {
        return;
    };
    let spot = RoomSpot::open("lobby");
    let entries = if mode % 2 == 1 {
        spot.open_value(mode / 2, rest)
    } else {
        spot.decode_entries(rest)
    };
    match entries {
        Ok(entries) => {
            assert!(entries.len() <= MAX_ENTRIES);
            assert!(entries.iter().all(|entry| entry.verify(&spot.public_key())));
        }
        Err(error) => {
            let _ = error.to_string();
        }
    }
}

#[path = "seeds.rs"]
mod seeds;
pub use seeds::seeds;

/// A fuzz target: arbitrary bytes in, a panic on any fault.
pub type FuzzTarget = fn(&[u8]);

/// Every target by name, as the fuzz targets and the property test call them.
pub const TARGETS: [(&str, FuzzTarget); 12] = [
    ("stream", stream),
    ("header", header),
    ("manifest", manifest),
    ("relative_path", relative_path),
    ("ticket", ticket),
    ("probe", probe),
    ("peer_id_text", peer_id_text),
    ("target_text", target_text),
    ("stored_message", stored_message),
    ("dht_record", dht_record),
    ("room_record", room_record),
    ("port_mapping", port_mapping),
];
