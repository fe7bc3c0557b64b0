//! One hostile peer flooding a node with frames that are each valid on
//! their own: offers, room changes, forged messages. What it can make the
//! node keep, open and print is bounded, and goes with it.

mod common;

use std::time::Duration;

use common::history::wall_clock_ms;
use common::{config, raw_peer, start_node, RawPeer, TestNode};
use punchgate::identity::Identity;
use punchgate::node::Event;
use punchgate::protocol::{
    ChatBody, ChatFrame, ContentId, ControlMessage, FileOffer, MessageId, SignedMessage, StreamKind,
};
use punchgate::wire::{FrameReader, FrameWriter};

/// Offers one peer may have listed (`node::files::MAX_OFFERS_PER_PEER`).
const OFFER_QUOTA: usize = 256;

fn offer(i: u32) -> ControlMessage {
    let mut content = [0u8; 32];
    content[..4].copy_from_slice(&i.to_le_bytes());
    ControlMessage::Offer(FileOffer {
        room: "lobby".into(),
        content: ContentId(content),
        name: format!("file-{i}"),
        bytes: 1,
        files: 1,
    })
}

/// Errors `node` reported until `pick` matched an event.
async fn errors_until(node: &mut TestNode, what: &str, pick: impl Fn(&Event) -> bool) -> usize {
    let mut errors = 0;
    node.sees(what, |e| {
        if matches!(e, Event::Error { .. }) {
            errors += 1;
        }
        pick(e).then_some(())
    })
    .await;
    errors
}

fn offered_by(node: &TestNode, name: &str) -> usize {
    node.node
        .files()
        .iter()
        .filter(|f| f.providers.iter().any(|p| p.starts_with(name)))
        .count()
}

#[tokio::test]
async fn twenty_thousand_offers_keep_at_most_the_peer_quota_and_go_with_it() {
    let mut node = start_node(config("target", None, "lobby")).await;
    let mut flood = raw_peer(&node, "flood", "lobby").await;
    for i in 0..20_000 {
        flood.send_control(&offer(i)).await;
    }
    let errors = errors_until(
        &mut node,
        "the offer quota notice",
        |e| matches!(e, Event::Error { message } if message.contains("offers more than")),
    )
    .await;
    assert!(errors <= 1, "{errors} error lines");
    // The quota notice comes once the quota is full; what follows is not kept.
    let listed = offered_by(&node, "flood");
    assert_eq!(listed, OFFER_QUOTA);

    let RawPeer { connection, .. } = flood;
    connection.close(0u32.into(), b"bye");
    node.sees("the flood gone", |e| {
        matches!(e, Event::Disconnected { name, .. } if name == "flood").then_some(())
    })
    .await;
    assert_eq!(offered_by(&node, "flood"), 0, "its offers outlived it");
}

#[tokio::test]
async fn two_thousand_room_changes_open_one_history_sync_at_a_time() {
    let mut node = start_node(config("target", None, "lobby")).await;
    let mut flood = raw_peer(&node, "flood", "lobby").await;
    // The sync streams the node opens back; never answered, so each stays
    // open until its deadline.
    let connection = flood.connection.clone();
    let opened = tokio::spawn(async move {
        let mut syncs = 0;
        while let Ok(Ok((_send, mut recv))) =
            tokio::time::timeout(Duration::from_secs(3), connection.accept_bi()).await
        {
            let kind = punchgate::wire::read_header::<StreamKind>(&mut recv).await;
            if matches!(kind, Ok(StreamKind::Sync)) {
                syncs += 1;
            }
            // Kept open: the node's sync waits for an answer.
            std::mem::forget(recv);
        }
        syncs
    });
    for _ in 0..2_000 {
        let rooms = ControlMessage::Rooms {
            rooms: vec!["lobby".into()],
        };
        flood.send_control(&rooms).await;
    }
    // Control frames are taken in order: once this offer is seen, every
    // room change before it was.
    flood.send_control(&offer(1)).await;
    node.sees("the offer after the room changes", |e| {
        matches!(e, Event::FileOffered { .. }).then_some(())
    })
    .await;
    let syncs = opened.await.unwrap();
    eprintln!("PEER FLOODS | 2,000 room changes | {syncs} history sync stream(s) opened back");
    assert!(syncs <= 2, "{syncs} sync streams for one peer");
}

#[tokio::test]
async fn two_thousand_joins_and_leaves_cost_a_handful_of_notices() {
    let mut node = start_node(config("target", None, "lobby")).await;
    let mut flood = raw_peer(&node, "flood", "lobby").await;
    for i in 0..2_000 {
        let rooms = if i % 2 == 0 {
            Vec::new()
        } else {
            vec!["lobby".to_string()]
        };
        flood.send_control(&ControlMessage::Rooms { rooms }).await;
    }
    // Control frames are taken in order: once this offer is seen, every
    // room change before it was.
    flood.send_control(&offer(1)).await;
    let mut notices = 0;
    node.sees("the offer after the room changes", |e| {
        if matches!(e, Event::Member { .. }) {
            notices += 1;
        }
        matches!(e, Event::FileOffered { .. }).then_some(())
    })
    .await;
    eprintln!("PEER FLOODS | 2,000 joins and leaves | {notices} member notices");
    assert!((1..=8).contains(&notices), "{notices} notices");
}

#[tokio::test]
async fn five_thousand_forged_messages_cost_a_handful_of_error_lines() {
    let mut node = start_node(config("target", None, "lobby")).await;
    let flood = raw_peer(&node, "flood", "lobby").await;
    let (send, recv) = flood.connection.open_bi().await.unwrap();
    let mut writer = FrameWriter::open(send, StreamKind::Chat).await.unwrap();
    // The node answers each message; read the answers so it never blocks.
    tokio::spawn(async move {
        let mut reader = FrameReader::new(recv, StreamKind::Chat);
        while let Ok(Some(_)) = reader.recv::<ChatFrame>().await {}
    });
    let message = |author: &Identity, seq: u64, text: &str| {
        let body = ChatBody {
            id: MessageId {
                author: author.peer_id(),
                seq,
            },
            hlc: wall_clock_ms() << 16,
            room: "lobby".into(),
            text: text.into(),
        };
        SignedMessage::sign(author, body).unwrap()
    };
    for seq in 1..=5_000 {
        let mut forged = message(&flood.identity, seq, "signed");
        forged.body.text = "not what was signed".into();
        writer.send(&ChatFrame::Message(forged)).await.unwrap();
    }
    let genuine = message(&flood.identity, 5_001, "a genuine one at last");
    writer.send(&ChatFrame::Message(genuine)).await.unwrap();
    let errors = errors_until(
        &mut node,
        "the genuine message",
        |e| matches!(e, Event::Message { text, .. } if text == "a genuine one at last"),
    )
    .await;
    eprintln!("PEER FLOODS | 5,000 forged messages | {errors} error line(s)");
    assert!(errors <= 3, "{errors} error lines for one peer's burst");
}

/// Handshakes under way at once on a node, at most
/// (`node::connect::MAX_INCOMING_HANDSHAKES`).
const HANDSHAKES_AT_ONCE: usize = 128;

#[tokio::test]
async fn two_hundred_connections_that_never_greet_hold_at_most_128_handshakes() {
    use punchgate::tls::{self, CertifiedIdentity};
    let node = start_node(config("target", None, "lobby")).await;
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let client = punchgate::endpoint::bind(common::loopback(), None).unwrap();
    let (mut held, mut refused) = (Vec::new(), 0);
    for _ in 0..200 {
        let connecting = punchgate::endpoint::connect_pinned(
            &client.endpoint,
            certified.pinned_client(tls::ALPN_PEER).unwrap(),
            node.node.local_addr().unwrap(),
            &node.node.peer_id(),
        )
        .unwrap();
        match connecting.await {
            // Authenticated, and then silent: no greeting ever comes.
            Ok(connection) => held.push(connection),
            // Refused at once (CONNECTION_REFUSED), not left hanging.
            Err(_) => refused += 1,
        }
    }
    eprintln!(
        "PEER FLOODS | 200 connections that never greet | {} held, {refused} refused",
        held.len()
    );
    assert!(held.len() <= HANDSHAKES_AT_ONCE, "{} held", held.len());
    assert_eq!(held.len() + refused, 200);
}

/// A dialer that allows the node no stream cannot take the control stream
/// the node's hello goes on: the node gives up after the greeting's time,
/// as with a dialer that never greets, and frees the handshake slot.
#[tokio::test]
async fn a_dialer_that_allows_no_stream_is_refused_after_the_greeting_time() {
    use punchgate::tls::{self, CertifiedIdentity};
    use punchgate::wire::CloseCode;
    let node = start_node(config("target", None, "lobby")).await;
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let client = punchgate::endpoint::bind(common::loopback(), None).unwrap();
    let mut config = certified.pinned_client(tls::ALPN_PEER).unwrap();
    let mut transport = quinn::TransportConfig::default();
    transport.max_concurrent_bidi_streams(0u32.into());
    config.transport_config(std::sync::Arc::new(transport));
    let connection = punchgate::endpoint::connect_pinned(
        &client.endpoint,
        config,
        node.node.local_addr().unwrap(),
        &node.node.peer_id(),
    )
    .unwrap()
    .await
    .unwrap();
    // The greeting's 10 s, and room for a loaded machine.
    let closed = tokio::time::timeout(Duration::from_secs(30), connection.closed())
        .await
        .expect("the node closes the connection");
    match closed {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                Some(CloseCode::Refused),
                "{close:?}"
            );
        }
        other => panic!("expected a refusal, got {other}"),
    }
}
