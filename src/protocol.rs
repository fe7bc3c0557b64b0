//! Every message that crosses the network, by stream kind ([`stream`]), and
//! the vocabulary they share: peer roles, content ids, limits.
//! docs/PROTOCOL.md describes the same types; change both together. Encoding
//! is [`crate::wire`]'s.
//!
//! Enums only ever gain variants at the end, and a new field means a new
//! [`crate::wire::PROTOCOL_VERSION`]: bincode is not self-describing.

mod nat;
pub mod stream;

use std::fmt;
use std::net::SocketAddr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::{Identity, PeerId, SIGNATURE_LEN};
use crate::wire::{self, WireError};
pub use nat::{NatFiltering, NatMapping, NatReport};
pub use stream::{StreamKind, MAX_RELAYED_PACKET};

/// Longest display name, in bytes.
pub const MAX_NAME_LEN: usize = 64;
/// Longest room name, in bytes.
pub const MAX_ROOM_LEN: usize = 64;
/// Longest chat text, in bytes.
pub const MAX_TEXT_LEN: usize = 8 * 1024;
/// Most addresses a node may list as its local candidates.
pub const MAX_LOCAL_ADDRS: usize = 8;
/// Most rooms a peer may announce.
pub const MAX_ROOMS: usize = 16;

// ---------------------------------------------------------------- tracker --

/// Node → tracker, on the [`StreamKind::Tracker`] stream the node opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct TrackerRequest {
    /// Chosen by the node; echoed in the response.
    pub id: u32,
    pub body: TrackerRequestBody,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerRequestBody {
    /// Must come first. `local_addrs` are the node's own interface addresses
    /// (LAN candidates); the tracker adds the address it sees.
    Register {
        name: String,
        local_addrs: Vec<SocketAddr>,
        presence: Presence,
    },
    Join {
        room: String,
    },
    Leave {
        room: String,
    },
    Members {
        room: String,
    },
    /// Introduce this node to `peer` (they must share a room, or `peer`
    /// registered [`Presence::Findable`]): both receive
    /// [`TrackerEvent::Introduce`] at the same moment, this node as dialer.
    Connect {
        peer: PeerId,
    },
    /// netcheck: send [`ProbeMessage::Unsolicited`] from the tracker's second
    /// port to the address this connection comes from.
    Netcheck {
        nonce: u64,
    },
    /// How this node's NAT maps and filters, as it measured from its gate
    /// socket (version 5): the tracker hands it to the peers it is
    /// introduced to ([`Member::nat`]), which decide on birthday punching.
    ReportNat {
        nat: NatReport,
    },
    /// The router mapped this node's gate socket at `addr` (port mapping),
    /// or no longer does (`None`). The tracker keeps it among the node's
    /// candidates only if it is on the address the tracker sees the node at
    /// ([`is_mapped_candidate`]).
    PortMapped {
        addr: Option<SocketAddr>,
    },
    /// Keep this registration (its rooms, its findability) without a
    /// connection (version 6): the tracker answers [`TrackerResponse::Parked`]
    /// and closes the connection. The node then knocks on the tracker's
    /// second port ([`ProbeMessage::Knock`]) to keep it, and comes back with
    /// [`TrackerRequestBody::Resume`] when it needs the tracker or is rung
    /// ([`ProbeMessage::Answer`]). See `crate::doorbell`.
    Park,
    /// The first request of a new connection, instead of `Register`: take
    /// back the parked registration `ticket` names (version 6). Refused with
    /// [`TrackerRefusal::NotParked`] when the tracker no longer holds it; the
    /// node then registers afresh.
    Resume {
        ticket: ParkTicket,
    },
}

/// How a node registers (protocol version 5).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum Presence {
    /// Joins rooms; introduced only to peers it shares a room with.
    #[default]
    Member,
    /// A member that publishes where it can be reached (its DHT record):
    /// any peer registered with the tracker may be introduced to it.
    Findable,
    /// Here only to be introduced to a few findable peers and to reach them
    /// through the relay: joins no room and is listed nowhere.
    Guest,
}

/// The secret a tracker hands a node that parks its registration
/// ([`TrackerResponse::Parked`]): it travels only inside the TLS
/// connection, and keys the tags of the knocks and answers exchanged in the
/// clear (`crate::doorbell`). Never printed.
#[derive(Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ParkTicket(pub [u8; 32]);

impl fmt::Debug for ParkTicket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ParkTicket(..)")
    }
}

/// A knock's or an answer's proof of the park ticket: a keyed hash,
/// truncated.
pub type DoorbellTag = [u8; 16];

/// The name a parked registration's knocks go by: a keyed hash of its park
/// ticket, truncated (`crate::doorbell::door_of`).
pub type DoorId = [u8; 16];

/// Tracker → node, on the same stream.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerMessage {
    Response {
        id: u32,
        result: Result<TrackerResponse, TrackerRefusal>,
    },
    Event(TrackerEvent),
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerResponse {
    /// `reflexive` is the address the tracker saw the node's packets come from.
    Registered {
        reflexive: SocketAddr,
    },
    /// The room's members other than the node itself.
    Joined {
        room: String,
        members: Vec<Member>,
    },
    Left {
        room: String,
    },
    Members {
        room: String,
        members: Vec<Member>,
    },
    /// The introduction is on its way, under this attempt id.
    Introducing {
        attempt: u64,
    },
    /// The unsolicited probe is on its way from `aux_port` of the tracker's
    /// address, which also answers [`ProbeMessage::Reflect`].
    NetcheckStarted {
        aux_port: u16,
    },
    /// The [`TrackerRequestBody::ReportNat`] is noted.
    NatNoted,
    /// What the tracker kept of a [`TrackerRequestBody::PortMapped`].
    PortMapped {
        kept: Option<SocketAddr>,
    },
    /// The registration is parked: knock on `aux_port` of the tracker's
    /// address every `knock_every_secs` with `ticket`, or it is dropped.
    Parked {
        ticket: ParkTicket,
        aux_port: u16,
        knock_every_secs: u16,
    },
    /// The parked registration is this connection's again; `reflexive` as
    /// for `Registered`. Introductions held for the node follow as events.
    Resumed {
        reflexive: SocketAddr,
    },
}

/// Why the tracker refused a request. Each names the limit that was hit.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum TrackerRefusal {
    #[error("the tracker is full ({limit} peers); try again later")]
    TooManyPeers { limit: u32 },
    #[error("the tracker has too many rooms ({limit}); try again later")]
    TooManyRooms { limit: u32 },
    #[error("room is full ({limit} members)")]
    RoomFull { limit: u32 },
    #[error("a peer may be in at most {limit} rooms")]
    TooManyRoomsForPeer { limit: u32 },
    #[error("too many requests (limit {per_second}/s); slow down")]
    RateLimited { per_second: u32 },
    #[error("register before anything else")]
    NotRegistered,
    #[error("already registered")]
    AlreadyRegistered,
    #[error("invalid name: {0}")]
    InvalidName(String),
    #[error("not in room {0}")]
    NotInRoom(String),
    #[error("that peer is not registered with the tracker")]
    UnknownPeer,
    #[error("you share no room with that peer")]
    NoSharedRoom,
    #[error("too many peers registered from your address ({limit}); try again later, or ask the tracker's operator to raise --max-peers-per-address")]
    TooManyPeersFromAddress { limit: u32 },
    #[error("too many rooms kept open only by peers from your address ({limit}); leave some first, or ask the tracker's operator to raise --max-rooms-per-address")]
    TooManyRoomsFromAddress { limit: u32 },
    #[error("a guest may only ask for introductions; register with this tracker to join rooms")]
    GuestOnly,
    #[error("that peer takes introductions only from peers in its rooms (it does not publish a DHT record)")]
    NotFindable,
    #[error("the tracker has too many guests ({limit}); try again later")]
    TooManyGuests { limit: u32 },
    #[error(
        "a guest may be introduced to at most {limit} peers; register with this tracker instead"
    )]
    TooManyGuestIntroductions { limit: u32 },
    #[error("the tracker no longer holds this node's parked registration; register again")]
    NotParked,
}

/// A room member as the tracker knows it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Member {
    pub peer_id: PeerId,
    pub name: String,
    pub reflexive: SocketAddr,
    pub local_addrs: Vec<SocketAddr>,
    /// What the member reported of its NAT ([`NatReport::default`]: nothing).
    pub nat: NatReport,
}

impl Member {
    /// Addresses worth trying to reach this member, most likely first.
    pub fn candidates(&self) -> Vec<SocketAddr> {
        let mut out = vec![self.reflexive];
        for addr in &self.local_addrs {
            if !out.contains(addr) {
                out.push(*addr);
            }
        }
        out
    }
}

/// Pushed by the tracker to every other member of a room.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum TrackerEvent {
    Joined {
        room: String,
        member: Member,
    },
    /// The peer left the room, or its tracker connection died.
    Left {
        room: String,
        peer_id: PeerId,
    },
    /// Punch toward `peer` now, in `role`; probes carry `attempt`. Sent to
    /// both sides so that they arrive at the same moment.
    Introduce {
        attempt: u64,
        peer: Member,
        role: Role,
        /// The round trip to the recipient, in microseconds, that the
        /// tracker assumed when it timed the two copies: the recipient
        /// compares it with its own measurement to know how late the
        /// peer's copy is (`punch::peer_lateness`).
        assumed_rtt_us: u64,
    },
}

/// Which side of a punch a node plays, as the tracker assigned it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum Role {
    /// Starts QUIC handshakes.
    Dialer,
    /// Accepts the handshake; probes to open its NAT.
    Acceptor,
}

// ------------------------------------------------------------------ relay --

/// On the [`StreamKind::Relay`] stream a node opens to its tracker:
/// the QUIC packets of peer connections that found no direct path. The
/// tracker forwards them by peer id and can read none of them (they are the
/// peers' own end-to-end encrypted QUIC).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum RelayFrame {
    /// Node → tracker: relay `packet` to `peer`. Tracker → node: `packet`
    /// came from `peer`. One UDP datagram's payload each.
    Packet { peer: PeerId, packet: Vec<u8> },
    /// Tracker → node, the first frame: relaying is on, and each peer may
    /// send this many bytes per second on average, in bursts of `burst`.
    Ready { bytes_per_second: u32, burst: u32 },
    /// Tracker → node, the first and only frame: this tracker does not relay.
    Unavailable { reason: String },
    /// Tracker → node: packets to `peer` were dropped because the sender
    /// went over its limit (sent at most once a second).
    Throttled { peer: PeerId, bytes_per_second: u32 },
    /// Tracker → node: packets to `peer` cannot be relayed (sent at most
    /// once a second).
    Refused { peer: PeerId, reason: RelayRefusal },
}

/// Why the tracker will not relay to a peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
pub enum RelayRefusal {
    #[error("the tracker relays only between peers it introduced to each other")]
    NotIntroduced,
    #[error("that peer is not connected to the tracker's relay")]
    Offline,
}

/// True for characters that change how text around them is shown without
/// being visible themselves: controls, bidirectional overrides, zero-width
/// characters. A name containing them could pass for another.
pub fn is_deceptive_char(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{00ad}' | '\u{061c}' | '\u{180e}' | '\u{200b}'..='\u{200f}'
            | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{206f}' | '\u{feff}'
            | '\u{fff9}'..='\u{fffb}')
}

/// Checks a user-chosen name or room: non-empty, bounded, nothing invisible
/// or deceptive, no leading or trailing space.
pub fn validate_label(what: &str, text: &str, max: usize) -> Result<(), String> {
    if text.is_empty() {
        return Err(format!("{what} is empty"));
    }
    if text.len() > max {
        return Err(format!("{what} is longer than {max} bytes"));
    }
    if text.chars().any(is_deceptive_char) {
        return Err(format!("{what} contains control or invisible characters"));
    }
    if text.trim() != text {
        return Err(format!("{what} starts or ends with spaces"));
    }
    Ok(())
}

/// True for addresses a node may offer as candidates besides its reflexive
/// one: LAN addresses ([`is_lan_candidate`]) and global IPv6 addresses
/// ([`is_global_ipv6`]).
pub fn is_candidate(addr: &SocketAddr) -> bool {
    is_lan_candidate(addr) || is_global_ipv6(addr)
}

/// True for a port-mapped address a node may offer besides its reflexive
/// one (`reflexive`, as the tracker sees it): the same IP, another port.
/// Such an address points only at the node's own public address (or its
/// router's), never at someone else's host: that is what keeps a node from
/// making the tracker hand peers addresses of its choosing.
pub fn is_mapped_candidate(addr: &SocketAddr, reflexive: &SocketAddr) -> bool {
    addr.ip() == reflexive.ip() && addr.port() != 0 && addr.port() != reflexive.port()
}

/// True for a global unicast IPv6 address (2000::/3) with a port, the kind a
/// host has with no NAT in front of it, only a stateful firewall. Tunnel
/// ranges (6to4, Teredo) are not a host's own and are left out.
pub fn is_global_ipv6(addr: &SocketAddr) -> bool {
    let SocketAddr::V6(v6) = addr else {
        return false;
    };
    let first = v6.ip().segments()[0];
    // 2002::/16 (6to4) and 2001::/32 (Teredo) are tunnels, not hosts' own.
    addr.port() != 0
        && (first & 0xe000) == 0x2000
        && first != 0x2002
        && !(first == 0x2001 && v6.ip().segments()[1] == 0)
}

/// True for addresses a node may offer as its LAN candidates: private,
/// shared (carrier-grade NAT), loopback and link-local ranges. Anything else
/// is either the reflexive address (which the tracker already knows) or an
/// attempt to make other nodes send handshakes somewhere.
pub fn is_lan_candidate(addr: &SocketAddr) -> bool {
    if addr.port() == 0 {
        return false;
    }
    match addr.ip() {
        std::net::IpAddr::V4(ip) => {
            let shared = ip.octets()[0] == 100 && (ip.octets()[1] & 0xc0) == 64;
            ip.is_private() || ip.is_loopback() || ip.is_link_local() || shared
        }
        std::net::IpAddr::V6(ip) => {
            let unique_local = (ip.segments()[0] & 0xfe00) == 0xfc00;
            let link_local = (ip.segments()[0] & 0xffc0) == 0xfe80;
            ip.is_loopback() || unique_local || link_local
        }
    }
}

// ----------------------------------------------------------------- probes --

/// The payload of a probe datagram (after the probe magic; see
/// [`crate::gate_socket`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ProbeMessage {
    /// Hole punching: opens the sender's NAT toward the receiver and proves
    /// the path to it.
    Punch { attempt: u64, sender: PeerId },
    /// netcheck: asks the tracker's second port which address it sees.
    Reflect { nonce: u64 },
    /// The answer: the address the `Reflect` came from.
    Reflected { nonce: u64, seen: SocketAddr },
    /// netcheck: sent by the tracker from a port the node never contacted.
    Unsolicited { nonce: u64 },
    /// netcheck: sent to the node's own public address (hairpinning).
    Hairpin { nonce: u64 },
    /// Birthday punching (`crate::birthday`): like `Punch`, but from or to
    /// one of the extra sockets of a side behind a symmetric NAT, so that
    /// it goes to that side's birthday search rather than its punch.
    Birthday { attempt: u64, sender: PeerId },
    /// Node → tracker's second port, while its registration is parked
    /// (version 6): keeps the registration and the node's NAT mapping
    /// toward the tracker alive. `door` names the parked registration
    /// without naming the peer (it is derived from the park ticket, so an
    /// observer of the knocks learns no peer id); `seq` only grows; `tag`
    /// proves the sender holds the ticket (`crate::doorbell`).
    Knock {
        door: DoorId,
        seq: u64,
        tag: DoorbellTag,
    },
    /// Tracker's second port → node: the answer to the knock `seq`, or,
    /// with `ring`, unasked: a peer waits for an introduction, come back
    /// ([`TrackerRequestBody::Resume`]). `tag` as for `Knock`.
    Answer {
        seq: u64,
        ring: bool,
        tag: DoorbellTag,
    },
    /// Node → tracker's second port: the parked node behind `door` is
    /// going away; drop its registration now, as a closed connection's
    /// (version 6). `tag` proves the ticket, as for `Knock`.
    Leave { door: DoorId, tag: DoorbellTag },
}

impl ProbeMessage {
    /// The probe's payload bytes.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode_value("probe", self)
    }

    /// Decodes a probe's payload; trailing bytes are an error.
    pub fn decode(payload: &[u8]) -> Result<Self, WireError> {
        wire::decode_value("probe", payload)
    }
}

// -------------------------------------------------------------- peer-peer --

/// On the [`StreamKind::Control`] stream, which the acceptor opens.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ControlMessage {
    /// First message each way: who the sender is and which rooms it is in.
    Hello {
        name: String,
        agent: String,
        rooms: Vec<String>,
    },
    /// The sender's rooms changed (it joined or left one).
    Rooms {
        rooms: Vec<String>,
    },
    /// The sender is leaving; the receiver shows it gone at once.
    Goodbye {
        reason: String,
    },
    Ping {
        nonce: u64,
    },
    Pong {
        nonce: u64,
    },
    /// The sender offers content to a room it shares with the receiver.
    Offer(FileOffer),
    /// About the link between sender and receiver in a room's gossip
    /// (`crate::gossip`): only between members of the room (proven ones, in
    /// a password room).
    Gossip {
        room: String,
        control: GossipControl,
    },
}

/// A room's gossip link, as neighbors speak of it (see `crate::gossip`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum GossipControl {
    /// Be my neighbor in the room; `lonely`: the sender has no neighbor
    /// there and must not be refused.
    Neighbor { lonely: bool },
    /// Yes: the link is up on both ends.
    Accept,
    /// No: the receiver has all the neighbors it takes.
    Refuse,
    /// The link is dropped.
    Disconnect,
}

// ------------------------------------------------------------------ files --

/// Largest encoded manifest accepted (about 500k chunks: 500 GiB at 1 MiB).
pub const MAX_MANIFEST_LEN: usize = 16 << 20;

/// The BLAKE3 hash of an encoded manifest: names content everywhere.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct ContentId(pub [u8; 32]);

impl ContentId {
    pub fn of_manifest(encoded: &[u8]) -> Self {
        Self(*blake3::hash(encoded).as_bytes())
    }

    /// The first characters of the text form, for people.
    pub fn short(&self) -> String {
        self.to_string()[..10].to_string()
    }
}

impl fmt::Display for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for ContentId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ContentId({})", self.short())
    }
}

impl FromStr for ContentId {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let bytes = data_encoding::BASE32_NOPAD
            .decode(text.trim().to_ascii_uppercase().as_bytes())
            .map_err(|_| format!("{text:?} is not a content hash (52 base32 characters)"))?;
        let bytes: [u8; 32] = bytes
            .try_into()
            .map_err(|_| format!("{text:?} is not a content hash (52 base32 characters)"))?;
        Ok(Self(bytes))
    }
}

/// Content a peer offers to a room (`/send`).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileOffer {
    pub room: String,
    pub content: ContentId,
    /// The manifest's display name; checked like a label before it is shown.
    pub name: String,
    pub bytes: u64,
    pub files: u32,
}

/// Receiver → sender, the one frame of a [`StreamKind::Manifest`] stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ManifestRequest {
    pub content: ContentId,
}

/// Sender → receiver, the answer on the same stream.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ManifestReply {
    /// The encoded manifest: the receiver checks it hashes to the content id.
    Found(Vec<u8>),
    /// The sender does not serve that content.
    Missing,
}

/// Most chunks one [`ChunkRequest`] asks for: a run of small files' chunks
/// travels as one request and one reply, not one per file.
pub const MAX_CHUNK_RUN: u64 = 64;

/// Receiver → sender on a [`StreamKind::Chunks`] stream: chunks `index` to
/// `index + count - 1` of the content (a run: `count` from 1 to
/// [`MAX_CHUNK_RUN`], together at most the manifest's chunk size). Several
/// may be outstanding, and they are answered in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkRequest {
    pub content: ContentId,
    pub index: u64,
    pub count: u64,
}

/// Sender → receiver, one per request, in order.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum ChunkReply {
    /// Followed by exactly the run's bytes, chunk after chunk, raw (the
    /// receiver knows each length from the manifest); `index` and `count`
    /// are the request's.
    Data { index: u64, count: u64 },
    /// The sender does not have that run (content unknown or unreadable).
    Missing { index: u64 },
}

/// Identifies a chat message: its author and the author's sequence number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct MessageId {
    pub author: PeerId,
    pub seq: u64,
}

impl std::fmt::Display for MessageId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}-{}", self.author, self.seq)
    }
}

/// What an author signs.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChatBody {
    pub id: MessageId,
    /// Hybrid logical clock of the author ([`crate::hlc`]): milliseconds
    /// since the Unix epoch << 16 | a counter. Orders history.
    pub hlc: u64,
    pub room: String,
    pub text: String,
}

/// A chat message with its author's Ed25519 signature over the body, and
/// in a password room the room tag ([`crate::room_key`]).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct SignedMessage {
    pub body: ChatBody,
    pub signature: Vec<u8>,
    /// Empty, or [`ROOM_TAG_LEN`] bytes: the HMAC of the body under the key
    /// of the room's password. Required in a password room.
    pub room_tag: Vec<u8>,
}

/// Length of a room tag.
pub const ROOM_TAG_LEN: usize = 32;

/// Kept in the history store as encoded here. A message stored before
/// messages carried a room tag (protocol version 1, `body ‖ signature`)
/// still reads: it has none.
impl wire::Stored for SignedMessage {
    fn from_stored(bytes: &[u8]) -> Result<Self, WireError> {
        wire::decode_value("stored message", bytes).or_else(|error| {
            wire::decode_value::<(ChatBody, Vec<u8>)>("stored message", bytes)
                .map(|(body, signature)| SignedMessage {
                    body,
                    signature,
                    room_tag: Vec::new(),
                })
                .map_err(|_| error)
        })
    }
}

const CHAT_SIGNING_DOMAIN: &str = "punchgate chat message v1";

#[derive(Debug, thiserror::Error)]
pub enum MessageError {
    #[error("message signature does not verify against its author (forged or corrupted)")]
    BadSignature,
    #[error("message text is longer than {MAX_TEXT_LEN} bytes")]
    TooLong,
    #[error("invalid room: {0}")]
    BadRoom(String),
    #[error("message room tag is neither empty nor {ROOM_TAG_LEN} bytes")]
    BadRoomTag,
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl SignedMessage {
    /// Signs `body` as `author`; the body's author must be `author`.
    pub fn sign(author: &Identity, body: ChatBody) -> Result<Self, MessageError> {
        debug_assert_eq!(body.id.author, author.peer_id());
        body.check()?;
        let bytes = wire::signing_bytes(CHAT_SIGNING_DOMAIN, &body)?;
        Ok(Self {
            signature: author.sign(&bytes).to_vec(),
            body,
            room_tag: Vec::new(),
        })
    }

    /// Checks bounds and the author's signature. Only verified messages may
    /// be shown, stored or forwarded.
    pub fn verify(&self) -> Result<(), MessageError> {
        self.body.check()?;
        if self.signature.len() != SIGNATURE_LEN {
            return Err(MessageError::BadSignature);
        }
        if !self.room_tag.is_empty() && self.room_tag.len() != ROOM_TAG_LEN {
            return Err(MessageError::BadRoomTag);
        }
        let bytes = wire::signing_bytes(CHAT_SIGNING_DOMAIN, &self.body)?;
        self.body
            .id
            .author
            .verify(&bytes, &self.signature)
            .map_err(|_| MessageError::BadSignature)
    }
}

impl ChatBody {
    fn check(&self) -> Result<(), MessageError> {
        if self.text.len() > MAX_TEXT_LEN {
            return Err(MessageError::TooLong);
        }
        validate_label("room", &self.room, MAX_ROOM_LEN).map_err(MessageError::BadRoom)
    }
}

/// On a [`StreamKind::Auth`] stream: one password proof for one room
/// (see [`crate::pake`]). The opener is the initiator, and confirms first.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum AuthFrame {
    /// Initiator → responder: its SPAKE2 message.
    Start { room: String, spake: Vec<u8> },
    /// Responder → initiator: its SPAKE2 message (no confirmation yet).
    Reply { spake: Vec<u8> },
    /// Initiator → responder: its key confirmation.
    Confirm { confirm: Vec<u8> },
    /// Either way: the proof failed or cannot be made, and why.
    Refused { reason: String },
    /// Responder → initiator, after checking the initiator's confirmation:
    /// its own.
    Accepted { confirm: Vec<u8> },
}

/// On a [`StreamKind::Sync`] stream, which the side that wants to
/// catch up opens: requests from it, batches and an end marker back.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum SyncFrame {
    /// "Of `room` I hold, per author, the messages with these sequence
    /// numbers (inclusive ranges, at most [`crate::holdings::MAX_RANGES`]);
    /// send me the others."
    /// With `new_authors` false (the requester's room is at its quota of
    /// authors), send only messages of the authors listed.
    Request {
        room: String,
        have: Vec<(PeerId, Vec<(u64, u64)>)>,
        new_authors: bool,
    },
    /// Messages the requester lacks, at most [`SYNC_BATCH`] per frame.
    Batch {
        room: String,
        messages: Vec<SignedMessage>,
    },
    /// Everything for `room` has been sent (nothing, if the requester may
    /// not have it).
    Done { room: String },
}

/// Messages per [`SyncFrame::Batch`]: 64 of the largest fit the frame limit.
pub const SYNC_BATCH: usize = 64;

/// On a [`StreamKind::Chat`] stream: messages from the opener,
/// acknowledgements back from the receiver.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub enum ChatFrame {
    Message(SignedMessage),
    /// The receiver accepted the message (verified it and took it in).
    Ack(MessageId),
    /// The receiver refused the message, and why.
    Reject {
        id: MessageId,
        reason: String,
    },
}

#[cfg(test)]
#[path = "protocol_tests.rs"]
mod tests;
