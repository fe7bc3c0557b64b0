//! The tracker's limits hold and each is a clear error to the client.

mod common;

use common::*;
use punchgate::endpoint;
use punchgate::identity::Identity;
use punchgate::node::Node;
use punchgate::protocol::TrackerRefusal;
use punchgate::tls::CertifiedIdentity;
use punchgate::tracker::{TrackerConfig, TrackerError, TrackerLimits};

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
