//! A lying tracker cannot aim a node's traffic at a third party. The
//! tracker here is the test's own: it registers the node, then says fifty
//! made-up peers joined the node's room and introduces each of them — as the
//! peer to dial and as the peer that dials — with a victim's address as
//! their public and LAN addresses. The victim is a UDP socket that counts
//! what reaches it.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::time::{Duration, Instant};

use common::{config, start_node};
use punchgate::endpoint;
use punchgate::identity::{Identity, PeerId};
use punchgate::node::RelayPolicy;
use punchgate::protocol::{
    Member, StreamKind, TrackerEvent, TrackerMessage, TrackerRequest, TrackerRequestBody,
    TrackerResponse,
};
use punchgate::punch::Role;
use punchgate::tls::{self, CertifiedIdentity};
use punchgate::wire::{FrameReader, FrameWriter};

/// The bar for fifty forged introductions.
const AT_MOST: usize = 64 * 1024;
const FORGED: usize = 50;

/// Serves one node's tracker stream: answers its requests, and once it has
/// joined a room, pushes the forged members and introductions.
async fn lie(endpoint: quinn::Endpoint, victim: SocketAddr) {
    let incoming = endpoint.accept().await.expect("the node never came");
    let connection = incoming.await.expect("tracker handshake");
    let (send, recv) = connection.accept_bi().await.expect("tracker stream");
    let mut reader = FrameReader::accept(recv, StreamKind::Tracker)
        .await
        .expect("tracker stream header");
    let mut writer = FrameWriter::answering(send, StreamKind::Tracker);
    let made_up = || Member {
        peer_id: Identity::generate().unwrap().peer_id(),
        name: "ghost".into(),
        reflexive: victim,
        local_addrs: vec![victim; 8],
        nat: Default::default(),
    };
    while let Ok(Some(request)) = reader.recv::<TrackerRequest>().await {
        let (result, joined) = match request.body {
            TrackerRequestBody::Register { .. } => (
                Ok(TrackerResponse::Registered {
                    reflexive: connection.remote_address(),
                }),
                None,
            ),
            TrackerRequestBody::Join { room } => (
                Ok(TrackerResponse::Joined {
                    room: room.clone(),
                    members: Vec::new(),
                }),
                Some(room),
            ),
            TrackerRequestBody::Connect { .. } => {
                (Ok(TrackerResponse::Introducing { attempt: 1 }), None)
            }
            other => panic!("the fake tracker does not answer {other:?}"),
        };
        let response = TrackerMessage::Response {
            id: request.id,
            result,
        };
        writer.send(&response).await.unwrap();
        let Some(room) = joined else { continue };
        for i in 0..FORGED {
            let ghost = made_up();
            let joined = TrackerEvent::Joined {
                room: room.clone(),
                member: ghost.clone(),
            };
            writer.send(&TrackerMessage::Event(joined)).await.unwrap();
            for (attempt, role) in [
                (2 * i as u64, Role::Acceptor),
                (2 * i as u64 + 1, Role::Dialer),
            ] {
                let introduce = TrackerEvent::Introduce {
                    attempt,
                    peer: ghost.clone(),
                    role,
                    assumed_rtt_us: 0,
                };
                writer
                    .send(&TrackerMessage::Event(introduce))
                    .await
                    .unwrap();
            }
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_forged_introductions_send_less_than_64_kib_to_the_named_address() {
    // The victim, on an address of its own.
    let victim = UdpSocket::bind("127.0.0.2:0").unwrap();
    let victim_addr = victim.local_addr().unwrap();
    victim
        .set_read_timeout(Some(Duration::from_millis(200)))
        .unwrap();

    let tracker_identity = Identity::generate().unwrap();
    let tracker_id: PeerId = tracker_identity.peer_id();
    let server = CertifiedIdentity::new(&tracker_identity)
        .unwrap()
        .server(tls::ALPN_TRACKER, tls::allow_any_peer())
        .unwrap();
    let bound = endpoint::bind(common::loopback(), Some(server)).unwrap();
    let tracker_addr = bound.endpoint.local_addr().unwrap();
    tokio::spawn(lie(bound.endpoint.clone(), victim_addr));

    let mut node_config = config("target", None, "lobby");
    node_config.trackers = vec![format!("{tracker_id}@{tracker_addr}").parse().unwrap()];
    // The fake tracker has no relay to offer.
    node_config.relay = RelayPolicy::Never;
    let node = start_node(node_config).await;

    // Every punch these could start ends within its deadline and the
    // handshakes within the connect timeout; count until well after.
    let window = node_config_window();
    let counted = tokio::task::spawn_blocking(move || {
        let until = Instant::now() + window;
        let (mut bytes, mut datagrams) = (0usize, 0usize);
        let mut buf = [0u8; 2048];
        while Instant::now() < until {
            if let Ok(len) = victim.recv(&mut buf) {
                bytes += len;
                datagrams += 1;
            }
        }
        (bytes, datagrams)
    })
    .await
    .unwrap();
    let (bytes, datagrams) = counted;
    eprintln!(
        "HOSTILE TRACKER | {FORGED} forged members, each introduced both ways at {victim_addr} | the victim received {datagrams} datagrams, {bytes} bytes in {window:?} (bar {AT_MOST})"
    );
    assert!(bytes < AT_MOST, "{bytes} bytes reached the victim");
    node.node.shutdown().await;
}

/// The punch deadline plus the connect timeout, and a margin.
fn node_config_window() -> Duration {
    let defaults = punchgate::node::NodeConfig::new("x");
    defaults.punch.deadline + defaults.connect_timeout + Duration::from_secs(2)
}
