//! The tracker's relay on loopback: relayed connections carry chat and
//! history sync like direct ones, its limits hold for one peer without
//! hurting others, it forwards only between introduced peers, and a tracker
//! that does not relay is a clear error.

mod common;

use common::*;
use punchgate::node::{Event, NodeConfig, PathKind, RelayPolicy};
use punchgate::protocol::{RelayFrame, RelayRefusal};
use punchgate::tracker::client::{RelayOffer, RelayStream};
use punchgate::tracker::{RelayConfig, Tracker, TrackerConfig};

fn relayed(name: &str, tracker: &Tracker, room: &str) -> NodeConfig {
    let mut config = config(name, Some(tracker), room);
    config.relay = RelayPolicy::Only;
    config
}

/// Waits for a connection to `peer` and returns its path.
async fn connected_path(node: &mut TestNode, peer: &TestNode) -> PathKind {
    let want = peer.id();
    node.sees(&format!("a connection to {want}"), |e| match e {
        Event::Connected { peer_id, path, .. } if *peer_id == want => Some(*path),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn relayed_peers_chat_both_ways_and_sync_history() {
    let tracker = start_tracker();
    let mut alice = start_node(relayed("alice", &tracker, "r")).await;
    // Said before bob exists: only history sync can bring it to him.
    alice.node.say("said while alone").await.unwrap();
    let mut bob = start_node(relayed("bob", &tracker, "r")).await;
    assert_eq!(connected_path(&mut bob, &alice).await, PathKind::Relay);
    assert_eq!(connected_path(&mut alice, &bob).await, PathKind::Relay);
    bob.receives("said while alone").await;
    bob.node.say("hello over the relay").await.unwrap();
    alice.receives("hello over the relay").await;
    alice.node.say("and back").await.unwrap();
    bob.receives("and back").await;
    let gates = alice.node.gates();
    assert_eq!(gates.len(), 1);
    assert_eq!(gates[0].path, PathKind::Relay);
    // Shown as the tracker's address: that is where the packets go.
    assert_eq!(gates[0].remote, tracker.local_addr());
    let stats = tracker.stats();
    assert!(
        stats.relayed_packets > 0 && stats.relayed_bytes > 0,
        "{stats:?}"
    );
    assert_eq!(stats.relay_streams, 2, "{stats:?}");
}

/// A raw relay client: registered, in `room`, with its relay stream open.
async fn raw_relay_client(tracker: &Tracker, room: &str) -> (RawSession, RelayStream) {
    let raw = raw_session(tracker, "flood").await;
    raw.session.join(room).await.unwrap();
    let (offer, stream) = raw.session.open_relay().await.unwrap();
    assert!(matches!(offer, RelayOffer::Ready { .. }), "{offer:?}");
    (raw, stream.unwrap())
}

/// Reads relay frames until one `pick` accepts.
async fn relay_notice<T>(
    stream: &mut RelayStream,
    mut pick: impl FnMut(RelayFrame) -> Option<T>,
) -> T {
    let wait = async {
        loop {
            let frame = stream.reader.recv::<RelayFrame>().await.unwrap().unwrap();
            if let Some(found) = pick(frame) {
                return found;
            }
        }
    };
    tokio::time::timeout(WAIT, wait).await.unwrap()
}

#[tokio::test]
async fn a_relay_flood_is_throttled_while_another_pair_keeps_its_service() {
    let mut config = TrackerConfig::new(loopback());
    config.relay = RelayConfig {
        bytes_per_second: 20_000,
        burst: 65_535,
        ..RelayConfig::default()
    };
    let tracker = start_tracker_with(config);
    let carol = start_node(relayed("carol", &tracker, "quiet")).await;
    let mut dave = start_node(relayed("dave", &tracker, "quiet")).await;
    assert_eq!(connected_path(&mut dave, &carol).await, PathKind::Relay);
    let victim = start_node(relayed("victim", &tracker, "noisy")).await;

    let (raw, mut flood) = raw_relay_client(&tracker, "elsewhere").await;
    // No shared room and no introduction: the relay refuses to carry
    // anything to the victim.
    let packet = |peer| RelayFrame::Packet {
        peer,
        packet: vec![0x40; 1200],
    };
    flood
        .writer
        .send(&packet(victim.node.peer_id()))
        .await
        .unwrap();
    let refusal = relay_notice(&mut flood, |frame| match frame {
        RelayFrame::Refused { reason, .. } => Some(reason),
        _ => None,
    })
    .await;
    assert_eq!(refusal, RelayRefusal::NotIntroduced);
    // In the victim's room, it may.
    raw.session.join("noisy").await.unwrap();
    // Far beyond 20 kB/s: 300 packets of 1200 bytes at once.
    for _ in 0..300 {
        flood
            .writer
            .send(&packet(victim.node.peer_id()))
            .await
            .unwrap();
    }
    let limit = relay_notice(&mut flood, |frame| match frame {
        RelayFrame::Throttled {
            bytes_per_second, ..
        } => Some(bytes_per_second),
        _ => None,
    })
    .await;
    assert_eq!(limit, 20_000);
    // The other pair is served all the same.
    carol.node.say("still served").await.unwrap();
    dave.receives("still served").await;
    let stats = tracker.stats();
    assert!(stats.relay_throttled > 0, "{stats:?}");
    assert!(stats.relay_refused > 0, "{stats:?}");
    drop(carol);
}

#[tokio::test]
async fn a_second_relay_stream_is_a_protocol_error() {
    let tracker = start_tracker();
    let (raw, _relay) = raw_relay_client(&tracker, "r").await;
    assert!(raw.session.open_relay().await.is_err());
    assert_eq!(tracker.stats().relay_streams, 0);
}

#[tokio::test]
async fn a_tracker_that_does_not_relay_is_a_clear_error() {
    let mut config = TrackerConfig::new(loopback());
    config.relay = RelayConfig::disabled();
    let tracker = start_tracker_with(config);
    let _alice = start_node(relayed("alice", &tracker, "r")).await;
    let mut bob = start_node(relayed("bob", &tracker, "r")).await;
    let message = bob
        .sees("an error", |e| match e {
            Event::Error { message } => Some(message.clone()),
            _ => None,
        })
        .await;
    assert!(message.contains("could not connect to alice"), "{message}");
    assert!(
        message.contains("this tracker does not relay (it runs with --no-relay)"),
        "{message}"
    );
    assert_eq!(tracker.stats().relay_streams, 0);
}
