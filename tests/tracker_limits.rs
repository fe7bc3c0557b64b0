//! The tracker's limits hold and each is a clear error to the client.

mod common;

use common::*;
use punchgate::endpoint;
use punchgate::identity::Identity;
use punchgate::node::Node;
use punchgate::protocol::TrackerRefusal;
use punchgate::tls::CertifiedIdentity;
use punchgate::tracker::{SessionEvent, TrackerConfig, TrackerError, TrackerLimits};

#[tokio::test]
async fn a_full_tracker_refuses_with_its_limit() {
    let mut config = TrackerConfig::new(loopback());
    config.limits = TrackerLimits {
        max_peers: 1,
        ..TrackerLimits::default()
    };
    let tracker = start_tracker_with(config);
    let _first = start_node(config_for(&tracker, "first")).await;
    let home = tempfile::tempdir().unwrap();
    let error = Node::start(home.path(), config_for(&tracker, "second"))
        .await
        .err()
        .unwrap();
    assert!(
        error.to_string().contains("the tracker is full (1 peers)"),
        "{error}"
    );
}

fn config_for(tracker: &punchgate::tracker::Tracker, name: &str) -> punchgate::node::NodeConfig {
    config(name, Some(tracker), "r")
}

#[tokio::test]
async fn a_flooding_client_is_rate_limited_and_others_are_served() {
    let mut config = TrackerConfig::new(loopback());
    config.limits = TrackerLimits {
        requests_per_second: 1,
        request_burst: 5,
        ..TrackerLimits::default()
    };
    let tracker = start_tracker_with(config);
    let raw = raw_session(&tracker, "flood").await;
    let session = &raw.session;
    session.join("r").await.unwrap();
    let mut refused = None;
    for _ in 0..20 {
        if let Err(error) = session.members("r").await {
            refused = Some(error);
            break;
        }
    }
    match refused {
        Some(TrackerError::Refused(TrackerRefusal::RateLimited { per_second: 1 })) => {}
        other => panic!("expected a rate-limit refusal, got {other:?}"),
    }
    // Another peer is unaffected and meets the flooder's room.
    let mut other = start_node(config_for(&tracker, "other")).await;
    other
        .sees("the join", |e| {
            matches!(e, punchgate::node::Event::Joined { members: 1, .. }).then_some(())
        })
        .await;
}

#[tokio::test]
async fn regression_a_connection_that_never_registers_is_closed() {
    use punchgate::wire::CloseCode;
    let mut config = TrackerConfig::new(loopback());
    config.handshake_timeout = std::time::Duration::from_millis(300);
    let tracker = start_tracker_with(config);
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let bound = endpoint::bind(loopback(), None).unwrap();
    let client = certified
        .pinned_client(punchgate::tls::ALPN_TRACKER)
        .unwrap();
    let connection = endpoint::connect_pinned(
        &bound.endpoint,
        client,
        tracker.local_addr(),
        &tracker.peer_id(),
    )
    .unwrap()
    .await
    .unwrap();
    // Open the stream with its header but never register.
    let (send, _recv) = connection.open_bi().await.unwrap();
    let _writer =
        punchgate::wire::FrameWriter::open(send, punchgate::protocol::StreamKind::Tracker)
            .await
            .unwrap();
    match tokio::time::timeout(WAIT, connection.closed())
        .await
        .unwrap()
    {
        quinn::ConnectionError::ApplicationClosed(close) => {
            assert_eq!(
                CloseCode::from_varint(close.error_code),
                Some(CloseCode::Refused)
            );
            assert_eq!(&close.reason[..], b"did not register in time");
        }
        other => panic!("expected a refusal, got {other}"),
    }
}

/// Issue 12 row 10: 64 throwaway identities from one address joined 16
/// rooms each and filled the tracker's rooms in half a second; every later
/// `send` and new room was refused, for everyone. Now the rooms one address
/// keeps alive are limited (default 256 of the tracker's 10 000), and so are
/// its registrations (64 here, to reach that limit too; 256 by default), each
/// with a refusal that says so, while a peer from another address (bound to
/// 127.0.0.2) still registers, creates rooms and shares files.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_identities_joining_sixteen_rooms_each_from_one_address_leave_the_tracker_to_others(
) {
    let mut config = TrackerConfig::new(loopback());
    config.limits.max_peers_per_address = 64;
    let rooms_limit = config.limits.max_rooms_per_address;
    let tracker = start_tracker_with(config);
    let mut sessions = Vec::new();
    let mut created = 0;
    let mut refused = Vec::new();
    for i in 0..64 {
        let raw = raw_session(&tracker, &format!("throwaway{i}")).await;
        for room in 0..16 {
            match raw.session.join(&format!("junk-{i}-{room}")).await {
                Ok(_) => created += 1,
                Err(error) => refused.push(error),
            }
        }
        sessions.push(raw);
    }
    assert_eq!(created, rooms_limit, "rooms created from one address");
    assert_eq!(refused.len(), 64 * 16 - rooms_limit as usize);
    for error in &refused {
        assert!(
            matches!(
                error,
                TrackerError::Refused(TrackerRefusal::TooManyRoomsFromAddress { limit })
                    if *limit == rooms_limit
            ),
            "{error}"
        );
    }
    assert!(
        refused[0]
            .to_string()
            .contains("too many rooms kept open only by peers from your address (256)"),
        "{}",
        refused[0]
    );

    // A 65th identity from the same address is refused at registration.
    let home = tempfile::tempdir().unwrap();
    let error = Node::start(home.path(), config_for(&tracker, "sixty-fifth"))
        .await
        .err()
        .unwrap();
    assert!(
        error
            .to_string()
            .contains("too many peers registered from your address (64)"),
        "{error}"
    );

    // A peer from another address registers, creates rooms and shares.
    let mut elsewhere = config_for(&tracker, "elsewhere");
    elsewhere.bind = "127.0.0.2:0".parse().unwrap();
    let other = start_node(elsewhere).await;
    other.node.join("a-new-room").await.unwrap();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("shared.bin");
    std::fs::write(&file, pattern(10_000, 3)).unwrap();
    let ticket = other.node.share_with_ticket(vec![file]).await.unwrap();
    assert_eq!(ticket.sender, other.node.peer_id());
    drop(sessions);
}

/// Relay streams count per source address: past the limit a node hears
/// why on its relay stream, and its registration stays; once a stream from
/// that address has ended with its session, the next one is served.
#[tokio::test]
async fn relay_streams_past_the_per_address_limit_are_told_why() {
    use punchgate::protocol::TrackerEvent;
    use punchgate::tracker::client::RelayOffer;
    let mut config = TrackerConfig::new(loopback());
    config.limits.max_relay_streams_per_address = 1;
    let tracker = start_tracker_with(config);
    let first = raw_session(&tracker, "first").await;
    let mut second = raw_session(&tracker, "second").await;
    first.session.join("r").await.unwrap();
    second.session.join("r").await.unwrap();
    let (offer, first_stream) = first.session.open_relay().await.unwrap();
    assert!(matches!(offer, RelayOffer::Ready { .. }), "{offer:?}");
    assert!(first_stream.is_some());
    let (offer, stream) = second.session.open_relay().await.unwrap();
    match offer {
        RelayOffer::Unavailable(reason) => assert!(
            reason.contains("too many relay streams from your address (1)"),
            "{reason}"
        ),
        other => panic!("expected a refusal, got {other:?}"),
    }
    assert!(stream.is_none());
    assert_eq!(second.session.members("r").await.unwrap().len(), 1);
    // The first one goes away; once the tracker has let it go (the second
    // hears it leave), its stream no longer counts.
    first.session.close();
    drop((first, first_stream));
    tokio::time::timeout(WAIT, async {
        while let Some(event) = second.events.recv().await {
            if matches!(event, SessionEvent::Tracker(TrackerEvent::Left { .. })) {
                return;
            }
        }
    })
    .await
    .unwrap();
    let third = raw_session(&tracker, "third").await;
    let (offer, _stream) = third.session.open_relay().await.unwrap();
    assert!(matches!(offer, RelayOffer::Ready { .. }), "{offer:?}");
}
