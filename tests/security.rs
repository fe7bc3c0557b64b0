//! Pinning, both ways: a peer or tracker presenting a key other than the one
//! expected is refused during the handshake, and so is a certificate whose
//! signature does not verify.

mod common;

use common::*;
use punchgate::endpoint;
use punchgate::identity::Identity;
use punchgate::node::{Event, Node, NodeError, PeerStatus};
use punchgate::tls::{self, CertifiedIdentity};
use punchgate::tracker::{TrackerConfig, TrackerError};
use rustls::pki_types::CertificateDer;

#[tokio::test]
async fn dialer_refuses_a_server_with_another_key() {
    let alice = start_node(config("alice", None, "lobby")).await;
    let bob = start_node(config("bob", None, "lobby")).await;
    let impostor_id = Identity::generate().unwrap().peer_id();
    // Bob's address, but a different expected id: whoever answers there is not it.
    let target = format!("{impostor_id}@{}", bob.node.local_addr().unwrap());
    let error = alice.node.connect_by_text(&target).await.unwrap_err();
    assert!(matches!(error, NodeError::Unreachable { .. }), "{error}");
    assert!(error.to_string().contains("peer id mismatch"), "{error}");
    assert!(bob
        .node
        .peers()
        .iter()
        .all(|p| p.status != PeerStatus::Connected));
}

#[tokio::test]
async fn acceptor_refuses_a_client_it_does_not_allow() {
    let alice = start_node(config("alice", None, "lobby")).await;
    let mallory = start_node(config("mallory", None, "lobby")).await;
    let mut bob_config = config("bob", None, "lobby");
    bob_config.allow = Some(vec![alice.node.peer_id()]);
    let mut bob = start_node(bob_config).await;
    let bob_target = bob.node.target().unwrap();

    let error = mallory.node.connect_by_text(&bob_target).await.unwrap_err();
    assert!(matches!(error, NodeError::Unreachable { .. }), "{error}");
    alice.node.connect_by_text(&bob_target).await.unwrap();
    bob.connected_to(&alice).await;
    let peers = bob.node.peers();
    assert_eq!(peers.len(), 1, "only alice got in: {peers:?}");
    assert_eq!(peers[0].peer_id, alice.id());
}

#[tokio::test]
async fn a_node_with_an_allow_list_says_nothing_to_a_stranger() {
    // Without --allow the acceptor's hello goes out as 0.5-RTT data, before
    // the dialer's certificate is checked; with it, only after.
    let alice = Identity::generate().unwrap();
    let mut bob_config = config("bob", None, "secret-room");
    bob_config.allow = Some(vec![alice.peer_id()]);
    let bob = start_node(bob_config).await;
    let stranger = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let bound = endpoint::bind(loopback(), None).unwrap();
    let connecting = endpoint::connect_pinned(
        &bound.endpoint,
        stranger.pinned_client(tls::ALPN_PEER).unwrap(),
        bob.node.local_addr().unwrap(),
        &bob.node.peer_id(),
    )
    .unwrap();
    // The client's side of a TLS 1.3 handshake ends before the server has
    // judged its certificate; whatever follows must be the refusal.
    let error = match connecting.await {
        Err(error) => error,
        Ok(connection) => match connection.accept_bi().await {
            Err(error) => error,
            Ok(_) => panic!("bob opened a stream to a peer outside --allow"),
        },
    };
    assert!(error.to_string().contains("not allowed"), "{error}");
    assert!(bob.node.peers().is_empty());
}

#[tokio::test]
async fn certificate_with_a_broken_signature_is_refused_in_the_handshake() {
    let bob = start_node(config("bob", None, "lobby")).await;
    let bob_addr = bob.node.local_addr().unwrap();
    let mallory = Identity::generate().unwrap();
    let honest = CertifiedIdentity::new(&mallory).unwrap();
    let mut der = honest.cert.to_vec();
    let last = der.len() - 1;
    der[last] ^= 0x80;
    let broken = tls::danger::with_certificate(&mallory, CertificateDer::from(der));
    let client = broken.pinned_client(tls::ALPN_PEER).unwrap();
    let bound = endpoint::bind(loopback(), None).unwrap();
    let result = endpoint::connect_pinned(&bound.endpoint, client, bob_addr, &bob.node.peer_id())
        .unwrap()
        .await;
    // In TLS 1.3 the client finishes before the server has judged its
    // certificate, so the refusal arrives as the connection's close.
    let error = match result {
        Err(error) => error,
        Ok(connection) => connection.closed().await,
    };
    assert!(error.to_string().contains("certificate"), "{error}");
    assert!(bob.node.peers().is_empty());
}

#[tokio::test]
async fn tracker_pinned_by_id_refuses_another_key() {
    let tracker = start_tracker();
    let wrong = Identity::generate().unwrap().peer_id();
    let mut bad = config("alice", None, "lobby");
    bad.trackers = vec![format!("{wrong}@{}", tracker.local_addr()).parse().unwrap()];
    let home = tempfile::tempdir().unwrap();
    let error = Node::start(home.path(), bad)
        .await
        .err()
        .expect("must refuse");
    assert!(error.to_string().contains("peer id mismatch"), "{error}");
}

#[tokio::test]
async fn tracker_trusted_on_first_use_is_refused_when_its_key_changes() {
    let first = start_tracker();
    let addr = first.local_addr();
    let home = tempfile::tempdir().unwrap();
    let mut tofu = config("alice", None, "lobby");
    tofu.trackers = vec![addr.to_string().parse().unwrap()];

    let (node, _events) = Node::start(home.path(), tofu.clone()).await.unwrap();
    node.shutdown().await;
    drop(node);
    first.shutdown().await;

    // Same address, new key: a different tracker, or an impostor.
    let second = start_tracker_with(TrackerConfig::new(addr));
    let error = Node::start(home.path(), tofu.clone())
        .await
        .err()
        .expect("must refuse");
    assert!(
        matches!(&error, NodeError::Tracker(TrackerError::Home(_))),
        "{error}"
    );
    assert!(error.to_string().contains("TRACKER KEY CHANGED"), "{error}");
    assert_eq!(
        second.peer_count(),
        0,
        "nothing was registered with the impostor"
    );
}

#[tokio::test]
async fn forged_message_from_a_peer_is_refused_and_not_shown() {
    use punchgate::protocol::StreamKind;
    use punchgate::protocol::{ChatBody, ChatFrame, MessageId, SignedMessage};
    use punchgate::wire::{FrameReader, FrameWriter};

    let mut bob = start_node(config("bob", None, "lobby")).await;
    let alice = Identity::generate().unwrap();
    let peer = raw_peer(&bob, "mallory", "lobby").await;
    let (mallory, connection) = (&peer.identity, &peer.connection);

    // A message claiming Alice as author, signed by Mallory.
    let body = ChatBody {
        id: MessageId {
            author: alice.peer_id(),
            seq: 1,
        },
        hlc: 0,
        room: "lobby".into(),
        text: "alice owes mallory".into(),
    };
    let mut forged = SignedMessage::sign(&alice, body).unwrap();
    forged.signature = mallory.sign(b"anything").to_vec();
    let (send, recv) = connection.open_bi().await.unwrap();
    let mut chat = FrameWriter::open(send, StreamKind::Chat).await.unwrap();
    chat.send(&ChatFrame::Message(forged)).await.unwrap();
    let mut answers = FrameReader::new(recv, StreamKind::Chat);
    let answer = answers.recv::<ChatFrame>().await.unwrap().unwrap();
    assert!(
        matches!(answer, ChatFrame::Reject { ref reason, .. } if reason.contains("signature")),
        "{answer:?}"
    );
    bob.sees("the refusal report", |e| match e {
        Event::Error { message } if message.contains("refused a message") => Some(()),
        Event::Message { .. } => panic!("a forged message was shown"),
        _ => None,
    })
    .await;
}

#[tokio::test]
async fn regression_joining_a_room_does_not_bypass_the_allow_list() {
    let tracker = start_tracker();
    let alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mallory = start_node(config("mallory", Some(&tracker), "r")).await;
    let mut bob_config = config("bob", Some(&tracker), "r");
    bob_config.allow = Some(vec![alice.node.peer_id()]);
    let mut bob = start_node(bob_config).await;
    // Bob joined last, so Bob dials both members; only Alice is allowed.
    bob.connected_to(&alice).await;
    let mallory_id = mallory.id();
    let refusal = bob
        .sees("the refusal to dial mallory", |e| match e {
            Event::Error { message } if message.contains("not in --allow") => Some(message.clone()),
            Event::Connected { peer_id, .. } if *peer_id == mallory_id => {
                panic!("connected to mallory")
            }
            _ => None,
        })
        .await;
    assert!(
        refusal.contains(&mallory.node.peer_id().short()),
        "{refusal}"
    );
    // Mallory dialing Bob is refused in the handshake.
    let error = mallory
        .node
        .connect_by_text(&bob.node.target().unwrap())
        .await
        .unwrap_err();
    assert!(matches!(error, NodeError::Unreachable { .. }), "{error}");
    assert!(bob
        .node
        .peers()
        .iter()
        .all(|p| p.peer_id != mallory_id || p.status != PeerStatus::Connected));
}
