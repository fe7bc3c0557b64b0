//! Hostile bytes: oversized, truncated, unknown and random streams, and
//! random datagrams. Each gets a typed error that closes only the offender's
//! connection, with a reason; the tracker and the node keep serving others.

mod common;

use common::*;
use punchgate::endpoint;
use punchgate::identity::{Identity, PeerId};
use punchgate::protocol::StreamKind;
use punchgate::tls::{self, CertifiedIdentity};
use punchgate::tracker::Tracker;
use punchgate::wire::{self, CloseCode, FrameWriter};
use quinn::{Connection, ConnectionError};

/// A bare QUIC client with a valid identity, to send whatever bytes we like.
async fn raw_connection(
    addr: std::net::SocketAddr,
    server: PeerId,
    alpn: &[u8],
) -> (Connection, endpoint::BoundEndpoint) {
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let bound = endpoint::bind(loopback(), None).unwrap();
    let connection = endpoint::connect_pinned(
        &bound.endpoint,
        certified.pinned_client(alpn).unwrap(),
        addr,
        &server,
    )
    .unwrap()
    .await
    .unwrap();
    (connection, bound)
}

/// Writes `bytes` as a new stream, ends it, and returns the reason the other
/// side gave for closing the connection.
async fn send_and_get_close_reason(connection: &Connection, bytes: &[u8]) -> String {
    let (mut send, _recv) = connection.open_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    match connection.closed().await {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                Some(CloseCode::Protocol)
            );
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => panic!("expected a protocol close, got {other}"),
    }
}

/// Takes the control stream the node opened (its hello on it), writes
/// `bytes` on the answering half where the hello belongs, and returns the
/// reason the node gave for closing the connection.
async fn answer_control_and_get_close_reason(connection: &Connection, bytes: &[u8]) -> String {
    let (mut send, _recv) = connection.accept_bi().await.unwrap();
    send.write_all(bytes).await.unwrap();
    send.finish().unwrap();
    match connection.closed().await {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                Some(CloseCode::Protocol)
            );
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => panic!("expected a protocol close, got {other}"),
    }
}

fn frame_header(kind: StreamKind, len: u32) -> Vec<u8> {
    let mut bytes = wire::header(kind).to_vec();
    bytes.extend_from_slice(&len.to_be_bytes());
    bytes
}

fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut state = seed | 1;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect()
}

/// The hostile streams and the words their close reason must contain.
fn hostile_streams(kind: StreamKind) -> Vec<(&'static str, Vec<u8>, &'static str)> {
    let mut truncated = frame_header(kind, 100);
    truncated.extend_from_slice(&[0u8; 10]);
    let mut malformed = frame_header(kind, 5);
    malformed.extend_from_slice(&[0xff; 5]);
    vec![
        ("oversized length", frame_header(kind, u32::MAX), "exceeds"),
        (
            "truncated frame",
            truncated,
            "ended in the middle of a frame",
        ),
        (
            "unknown stream kind",
            vec![b'P', b'G', wire::PROTOCOL_VERSION, 0xee],
            "unknown stream kind 238",
        ),
        (
            "random bytes",
            random_bytes(64, 7),
            "not a punchgate stream",
        ),
        ("malformed frame", malformed, "malformed"),
    ]
}

/// Proves the tracker still serves: two fresh nodes meet through it and chat.
async fn tracker_still_serves(tracker: &Tracker, round: usize) {
    let room = format!("check{round}");
    let mut a = start_node(config("a", Some(tracker), &room)).await;
    let mut b = start_node(config("b", Some(tracker), &room)).await;
    b.connected_to(&a).await;
    a.connected_to(&b).await;
    a.node.say("still here").await.unwrap();
    b.receives("still here").await;
    a.node.shutdown().await;
    b.node.shutdown().await;
}

#[tokio::test]
async fn tracker_closes_only_the_offender_on_bad_streams() {
    let tracker = start_tracker();
    // A well-behaved node, connected throughout.
    let mut witness = start_node(config("witness", Some(&tracker), "w")).await;
    for (round, (what, bytes, expected)) in
        hostile_streams(StreamKind::Tracker).into_iter().enumerate()
    {
        let (connection, _bound) =
            raw_connection(tracker.local_addr(), tracker.peer_id(), tls::ALPN_TRACKER).await;
        let reason = send_and_get_close_reason(&connection, &bytes).await;
        assert!(
            reason.contains(expected),
            "{what}: reason {reason:?} lacks {expected:?}"
        );
        tracker_still_serves(&tracker, round).await;
    }
    // The witness's session survived all of it.
    witness.node.join("w2").await.unwrap();
    witness
        .sees("the join", |e| {
            matches!(e, punchgate::node::Event::Joined { room, .. } if room == "w2").then_some(())
        })
        .await;
}

#[tokio::test]
async fn tracker_refuses_a_second_stream() {
    let tracker = start_tracker();
    let (connection, _bound) =
        raw_connection(tracker.local_addr(), tracker.peer_id(), tls::ALPN_TRACKER).await;
    let (send, _recv) = connection.open_bi().await.unwrap();
    let _writer = FrameWriter::open(send, StreamKind::Tracker).await.unwrap();
    let reason = send_and_get_close_reason(&connection, &wire::header(StreamKind::Chat)).await;
    assert!(
        reason.contains("expected a single tracker or relay stream, got a chat stream"),
        "{reason}"
    );
}

#[tokio::test]
async fn tracker_refuses_a_relay_stream_before_registration() {
    let tracker = start_tracker();
    let (connection, _bound) =
        raw_connection(tracker.local_addr(), tracker.peer_id(), tls::ALPN_TRACKER).await;
    let (send, _recv) = connection.open_bi().await.unwrap();
    let _writer = FrameWriter::open(send, StreamKind::Tracker).await.unwrap();
    let (mut relay, _) = connection.open_bi().await.unwrap();
    relay
        .write_all(&wire::header(StreamKind::Relay))
        .await
        .unwrap();
    match connection.closed().await {
        ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                Some(CloseCode::Refused)
            );
            assert_eq!(&close.reason[..], b"relay stream opened before registering");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

#[tokio::test]
async fn node_closes_only_the_offender_on_bad_streams() {
    let mut alice = start_node(config("alice", None, "lobby")).await;
    let mut bob_config = config("bob", None, "lobby");
    bob_config.connect = vec![alice.node.target().unwrap().parse().unwrap()];
    let mut bob = start_node(bob_config).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;

    for (what, bytes, expected) in hostile_streams(StreamKind::Chat) {
        // Before the greeting: the bytes land where the dialer's hello
        // should be, on the control stream the acceptor opened.
        let (connection, _bound) = raw_connection(
            alice.node.local_addr().unwrap(),
            alice.node.peer_id(),
            tls::ALPN_PEER,
        )
        .await;
        // That stream has its header already: a hostile stream's frames go
        // there without theirs; one with no valid header goes whole, and its
        // first bytes read as a length far beyond the hello's limit.
        let header = wire::header(StreamKind::Chat);
        let (in_place, first_expected) = match bytes.strip_prefix(&header[..]) {
            Some(frames) => (frames, expected),
            None => (&bytes[..], "exceeds"),
        };
        let reason = answer_control_and_get_close_reason(&connection, in_place).await;
        assert!(
            reason.contains(first_expected),
            "{what} in place of the hello: {reason:?}"
        );
        // After the greeting, on a fresh stream.
        let greeted = raw_peer(&alice, "probe", "lobby").await;
        let reason = send_and_get_close_reason(&greeted.connection, &bytes).await;
        assert!(
            reason.contains(expected),
            "{what} on a gate: reason {reason:?} lacks {expected:?}"
        );

        // Bob's gate to Alice is untouched.
        let text = format!("after {what}");
        bob.node.say(&text).await.unwrap();
        alice.receives(&text).await;
    }
}

#[tokio::test]
async fn random_datagrams_do_not_disturb_the_tracker_or_a_node() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "r")).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;

    let spray = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let targets = [tracker.local_addr(), alice.node.local_addr().unwrap()];
    for i in 0..2000u64 {
        let len = 1 + (i as usize * 37) % 1400;
        let mut datagram = random_bytes(len, i + 1);
        match i % 4 {
            0 => datagram[0] = 0xc0, // looks like a QUIC long header
            1 => datagram[0] = 0x40, // looks like a QUIC short header
            2 => datagram
                .splice(0..0, punchgate::gate_socket::PROBE_MAGIC.iter().copied())
                .for_each(drop),
            _ => {}
        }
        for target in targets {
            spray.send_to(&datagram, target).unwrap();
        }
    }
    alice.node.say("through the noise").await.unwrap();
    bob.receives("through the noise").await;
    tracker_still_serves(&tracker, 99).await;
}

/// Chunk requests for runs a fetcher never asks for: no chunk, more than
/// `MAX_CHUNK_RUN` chunks, or more bytes than one chunk of the content.
/// Each closes only the asker's connection, with a reason, before the node
/// reads anything from disk for it; a run that fits is served.
#[tokio::test]
async fn chunk_runs_beyond_the_limits_close_the_askers_connection() {
    use punchgate::protocol::{ChunkReply, ChunkRequest, MAX_CHUNK_RUN};
    use punchgate::wire::FrameReader;
    let alice = start_node(config("alice", None, "lobby")).await;
    let source = tempfile::tempdir().unwrap();
    let folder = source.path().join("album");
    std::fs::create_dir(&folder).unwrap();
    // Three files of 600 KiB (one chunk each at the default 1 MiB), then
    // 200 files of one byte.
    for index in 0..3u8 {
        std::fs::write(folder.join(format!("a{index}")), pattern(600 << 10, index)).unwrap();
    }
    for index in 0..200 {
        std::fs::write(folder.join(format!("b{index:03}")), [index as u8]).unwrap();
    }
    let share = alice.node.share(vec![folder]).await.unwrap();
    let content = share.layout.id;
    let request = |index, count| {
        let mut bytes = wire::header(StreamKind::Chunks).to_vec();
        bytes.extend(
            wire::encode_frame(
                StreamKind::Chunks,
                &ChunkRequest {
                    content,
                    index,
                    count,
                },
            )
            .unwrap(),
        );
        bytes
    };
    for (what, index, count, expected) in [
        ("no chunk", 3, 0, "a run of 0 chunks"),
        (
            "too many chunks",
            3,
            MAX_CHUNK_RUN + 1,
            "a run of 65 chunks",
        ),
        ("more than a chunk's bytes", 0, 2, "over the chunk size"),
    ] {
        let peer = raw_peer(&alice, "asker", "lobby").await;
        let reason = send_and_get_close_reason(&peer.connection, &request(index, count)).await;
        assert!(
            reason.contains("malformed chunk request") && reason.contains(expected),
            "{what}: {reason:?}"
        );
    }

    // The longest run allowed, of one-byte files, arrives whole.
    let peer = raw_peer(&alice, "asker", "lobby").await;
    let (mut send, recv) = peer.connection.open_bi().await.unwrap();
    send.write_all(&request(3, MAX_CHUNK_RUN)).await.unwrap();
    let mut reader = FrameReader::new(recv, StreamKind::Chunks);
    let reply: ChunkReply = reader.recv().await.unwrap().unwrap();
    assert_eq!(
        reply,
        ChunkReply::Data {
            index: 3,
            count: MAX_CHUNK_RUN
        }
    );
    let mut bytes = vec![0u8; MAX_CHUNK_RUN as usize];
    reader.get_mut().read_exact(&mut bytes).await.unwrap();
    let expected: Vec<u8> = (0..MAX_CHUNK_RUN).map(|i| i as u8).collect();
    assert_eq!(bytes, expected);
}
