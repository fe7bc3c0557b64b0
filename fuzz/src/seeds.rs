//! The fuzz targets' valid inputs: the fuzzers' starting corpus, and what
//! the property test in tests/decoders.rs mutates.

use super::*;
use punchgate::protocol::ParkTicket;

/// Valid inputs for each target: the fuzzers' seeds, and what the
/// property test mutates. Each is `(target name, input)`.
pub fn seeds() -> Vec<(&'static str, Vec<u8>)> {
    let identity = Identity::generate().unwrap_or_else(|e| panic!("no identity: {e}"));
    let peer = identity.peer_id();
    let other = PeerId::from_bytes([3; 32]);
    let content = ContentId([9; 32]);
    let body = ChatBody {
        id: MessageId {
            author: peer,
            seq: 7,
        },
        hlc: 1_700_000_000_000 << 16,
        room: "lobby".into(),
        text: "hello there".into(),
    };
    let message =
        SignedMessage::sign(&identity, body).unwrap_or_else(|e| panic!("cannot sign: {e}"));
    let member = Member {
        peer_id: other,
        name: "bob".into(),
        reflexive: "127.0.0.1:4000".parse().unwrap(),
        local_addrs: vec!["192.168.1.2:4000".parse().unwrap()],
        nat: Default::default(),
    };
    let file = |path: &str, size: u64| FileEntry {
        path: path.into(),
        size,
        chunks: vec![[1; 32]; size.div_ceil(16 << 10) as usize],
    };
    let manifest = Manifest {
        name: "photos".into(),
        chunk_size: 16 << 10,
        files: vec![
            file("photos/a.jpg", 40_000),
            file("photos/b/c.png", 0),
            file("z", 16 << 10),
        ],
    };
    let encoded_manifest = manifest.encode().unwrap();
    let ticket = Ticket {
        tracker: TicketTracker {
            id: other,
            host: "127.0.0.1:4000".into(),
        },
        sender: peer,
        content,
    };
    let (_, spake) = Exchange::start("lobby", "pw", [1; 32]);

    fn frames<T: serde::Serialize>(reader: Reader, trickle: u8, items: &[T]) -> Vec<u8> {
        let mut out = vec![reader.selector() | (trickle << 4)];
        for item in items {
            let frame = wire::encode_frame(reader.kind(), item)
                .unwrap_or_else(|e| panic!("cannot encode a {:?} seed: {e}", reader));
            out.extend_from_slice(&frame);
        }
        out
    }
    let mut seeds = vec![
        (
            "stream",
            frames(
                Reader::TrackerRequests,
                0,
                &[
                    TrackerRequest {
                        id: 1,
                        body: TrackerRequestBody::Register {
                            name: "alice".into(),
                            local_addrs: member.local_addrs.clone(),
                            presence: Default::default(),
                        },
                    },
                    TrackerRequest {
                        id: 2,
                        body: TrackerRequestBody::Join {
                            room: "lobby".into(),
                        },
                    },
                    TrackerRequest {
                        id: 3,
                        body: TrackerRequestBody::Connect { peer: other },
                    },
                    TrackerRequest {
                        id: 4,
                        body: TrackerRequestBody::Park,
                    },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::TrackerRequests,
                0,
                &[TrackerRequest {
                    id: 1,
                    body: TrackerRequestBody::Resume {
                        ticket: ParkTicket([4; 32]),
                    },
                }],
            ),
        ),
        (
            "stream",
            frames(
                Reader::TrackerMessages,
                0,
                &[
                    TrackerMessage::Response {
                        id: 4,
                        result: Ok(TrackerResponse::Parked {
                            ticket: ParkTicket([4; 32]),
                            aux_port: 7001,
                            knock_every_secs: 25,
                        }),
                    },
                    TrackerMessage::Response {
                        id: 1,
                        result: Ok(TrackerResponse::Resumed {
                            reflexive: "127.0.0.1:4000".parse().unwrap(),
                        }),
                    },
                    TrackerMessage::Response {
                        id: 1,
                        result: Err(TrackerRefusal::NotParked),
                    },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::TrackerMessages,
                1,
                &[
                    TrackerMessage::Response {
                        id: 2,
                        result: Ok(TrackerResponse::Joined {
                            room: "lobby".into(),
                            members: vec![member.clone()],
                        }),
                    },
                    TrackerMessage::Response {
                        id: 3,
                        result: Err(TrackerRefusal::RoomFull { limit: 256 }),
                    },
                    TrackerMessage::Event(TrackerEvent::Introduce {
                        attempt: 5,
                        peer: member.clone(),
                        role: Role::Dialer,
                        assumed_rtt_us: 150_000,
                    }),
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::Control,
                2,
                &[
                    ControlMessage::Hello {
                        name: "alice".into(),
                        agent: "punchgate".into(),
                        rooms: vec!["lobby".into()],
                    },
                    ControlMessage::Offer(FileOffer {
                        room: "lobby".into(),
                        content,
                        name: "photos".into(),
                        bytes: 56_384,
                        files: 3,
                    }),
                    ControlMessage::Ping { nonce: 9 },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::Chat,
                3,
                &[
                    ChatFrame::Message(message.clone()),
                    ChatFrame::Ack(message.body.id),
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::Sync,
                4,
                &[
                    SyncFrame::Request {
                        room: "lobby".into(),
                        have: vec![(peer, vec![(1, 4), (7, 9)])],
                        new_authors: true,
                    },
                    SyncFrame::Batch {
                        room: "lobby".into(),
                        messages: vec![message.clone(), message.clone()],
                    },
                    SyncFrame::Done {
                        room: "lobby".into(),
                    },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::Auth,
                5,
                &[
                    AuthFrame::Start {
                        room: "lobby".into(),
                        spake: spake.clone(),
                    },
                    AuthFrame::Confirm {
                        confirm: vec![4; 32],
                    },
                ],
            ),
        ),
        (
            "stream",
            frames(Reader::ManifestRequests, 6, &[ManifestRequest { content }]),
        ),
        (
            "stream",
            frames(
                Reader::ManifestReplies,
                7,
                &[
                    ManifestReply::Found(encoded_manifest.clone()),
                    ManifestReply::Missing,
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::ChunkRequests,
                0,
                &[
                    ChunkRequest {
                        content,
                        index: 3,
                        count: 1,
                    },
                    ChunkRequest {
                        content,
                        index: 0,
                        count: 64,
                    },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::ChunkReplies,
                1,
                &[
                    ChunkReply::Data { index: 3, count: 1 },
                    ChunkReply::Missing { index: 4 },
                ],
            ),
        ),
        (
            "stream",
            frames(
                Reader::Relay,
                2,
                &[
                    RelayFrame::Ready {
                        bytes_per_second: 100_000,
                        burst: 200_000,
                    },
                    RelayFrame::Packet {
                        peer: other,
                        packet: vec![0xc3; 1200],
                    },
                    RelayFrame::Refused {
                        peer: other,
                        reason: RelayRefusal::Offline,
                    },
                ],
            ),
        ),
        ("header", wire::header(StreamKind::Chat).to_vec()),
        ("manifest", encoded_manifest),
        ("relative_path", b"photos/b/c.png".to_vec()),
        ("ticket", ticket.to_string().into_bytes()),
        ("ticket", wire::encode_value("ticket", &ticket).unwrap()),
        ("peer_id_text", peer.to_string().into_bytes()),
        ("peer_id_text", content.to_string().into_bytes()),
        (
            "target_text",
            format!("{other}@127.0.0.1:4000").into_bytes(),
        ),
        ("target_text", b"localhost:4000".to_vec()),
        ("stored_message", wire::encode_stored(&message).unwrap()),
        (
            "dht_record",
            ReachRecord::new(
                vec![TrackerRef {
                    id: other,
                    addr: "198.51.100.2:7000".parse().unwrap(),
                }],
                vec![
                    "203.0.113.9:41000".parse().unwrap(),
                    "[2001:db8::9]:4000".parse().unwrap(),
                ],
            )
            .encode(),
        ),
    ];
    let mut pcp = punchgate::portmap::wire::pcp_map_request(
        std::net::Ipv4Addr::new(10, 0, 1, 2),
        [7; 12],
        4000,
        4000,
        7200,
    );
    pcp[1] |= 0x80;
    seeds.extend([
        ("port_mapping", pcp.to_vec()),
        (
            "port_mapping",
            vec![0, 129, 0, 0, 0, 0, 0, 9, 15, 160, 15, 160, 0, 0, 28, 32],
        ),
        (
            "port_mapping",
            b"HTTP/1.1 200 OK\r\nLOCATION: http://10.0.1.1:5000/rootDesc.xml\r\n\r\n".to_vec(),
        ),
        (
            "port_mapping",
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\n<serv\r\n0\r\n\r\n"
                .to_vec(),
        ),
        (
            "port_mapping",
            b"<service><serviceType>urn:schemas-upnp-org:service:WANIPConnection:1</serviceType>\
              <controlURL>/ctl/IPConn</controlURL></service><errorCode>718</errorCode>"
                .to_vec(),
        ),
    ]);
    for probe in [
        ProbeMessage::Punch {
            attempt: 77,
            sender: peer,
        },
        ProbeMessage::Birthday {
            attempt: 78,
            sender: peer,
        },
        ProbeMessage::Reflected {
            nonce: 5,
            seen: "[fd00::1]:9".parse().unwrap(),
        },
        punchgate::doorbell::knock(&ParkTicket([4; 32]), 12),
        punchgate::doorbell::answer(&ParkTicket([4; 32]), 12, true),
        punchgate::doorbell::leave(&ParkTicket([4; 32])),
    ] {
        let payload = probe.encode().unwrap();
        seeds.push(("probe", probe_datagram(&payload)));
        seeds.push(("probe", payload));
    }
    let spot = RoomSpot::open("lobby");
    let entries = [
        MemberEntry::sign(&identity, &spot, 1_700_000_000),
        MemberEntry::sign(&identity, &spot, 1_700_000_600),
    ];
    let slot = spot.slot_of(&peer);
    let sealed = spot
        .seal(slot, &entries)
        .unwrap_or_else(|e| panic!("cannot seal: {e}"));
    seeds.push(("room_record", [vec![slot * 2 + 1], sealed].concat()));
    seeds.push(("room_record", [vec![0], encode_entries(&entries)].concat()));
    seeds
}
