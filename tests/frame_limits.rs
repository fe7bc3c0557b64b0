//! Half-sent frames cost what was sent, not what was announced: a real
//! `punchgate` process (node or tracker) is attacked by a raw QUIC client on
//! loopback, and its peak resident memory (`VmHWM`) is watched until it
//! gives up on the attacker (issue 12, row 1).

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::process::{reset_peak, status_bytes, Proc};
use common::*;
use punchgate::identity::{Identity, PeerId};
use punchgate::protocol::StreamKind;
use punchgate::tls::{self, CertifiedIdentity};
use punchgate::wire;
use quinn::ConnectionError;

const MIB: u64 = 1 << 20;
/// How often the victim's peak memory is looked at while waiting.
const LOOK_EVERY: Duration = Duration::from_millis(100);
/// Deadline of the whole wait: the victim gives up well within it (stalled
/// frames after 15 s, unregistered connections after 10 s).
const GIVE_UP_WITHIN: Duration = Duration::from_secs(90);

/// A stream header, a length prefix announcing the kind's largest frame,
/// and `sent` bytes of its body: a frame that will never be finished.
fn half_sent_frame(kind: StreamKind, sent: usize) -> Vec<u8> {
    let mut bytes = wire::header(kind).to_vec();
    bytes.extend_from_slice(&(kind.max_frame_len() as u32).to_be_bytes());
    bytes.resize(bytes.len() + sent, 0x5a);
    bytes
}

/// `peer_id` and `addr` of a `ready` event.
fn ready_at(proc: &Proc) -> (PeerId, SocketAddr) {
    let ready = proc.expect("ready", |_| true);
    let peer_id = ready["peer_id"].as_str().unwrap().parse().unwrap();
    let addr = ready["addr"].as_str().unwrap().parse().unwrap();
    (peer_id, addr)
}

/// Waits until every one of `connections` is closed, checking all along
/// that the process `pid` has not grown more than `bound` bytes over
/// `baseline`; returns the close reasons.
async fn closed_within_bound(
    pid: u32,
    baseline: u64,
    bound: u64,
    connections: Vec<quinn::Connection>,
) -> Vec<ConnectionError> {
    let mut closed = tokio::task::JoinSet::new();
    for connection in connections {
        closed.spawn(async move { connection.closed().await });
    }
    let deadline = tokio::time::Instant::now() + GIVE_UP_WITHIN;
    let mut reasons = Vec::new();
    loop {
        let grown = status_bytes(pid, "VmHWM").saturating_sub(baseline);
        assert!(
            grown < bound,
            "the victim grew by {} MiB (bound {} MiB)",
            grown / MIB,
            bound / MIB
        );
        tokio::select! {
            next = closed.join_next() => match next {
                Some(reason) => reasons.push(reason.unwrap()),
                None => {
                    eprintln!("peak growth {:.1} MiB", grown as f64 / MIB as f64);
                    return reasons;
                }
            },
            _ = tokio::time::sleep(LOOK_EVERY) => {}
            _ = tokio::time::sleep_until(deadline) => {
                panic!("{} connections still open after {GIVE_UP_WITHIN:?}", closed.len())
            }
        }
    }
}

fn application_reason(error: &ConnectionError) -> String {
    match error {
        ConnectionError::ApplicationClosed(close) => {
            String::from_utf8_lossy(&close.reason).into_owned()
        }
        other => format!("{other}"),
    }
}

#[tokio::test]
async fn forty_half_sent_maximal_frames_stay_under_32_mib() {
    let node = Proc::start(&["chat", "--bind", "127.0.0.1:0", "--room", "r"]);
    let (peer_id, addr) = ready_at(&node);
    let attacker = raw_peer_at(addr, &peer_id, "attacker", "r").await;
    let baseline = reset_peak(node.pid());

    // 40 manifest streams, each announcing a 16 MiB request and sending
    // 64 KiB of it. Beyond the node's stream cap, opening waits.
    let frame = half_sent_frame(StreamKind::Manifest, 64 * 1024);
    for _ in 0..40 {
        let connection = attacker.connection.clone();
        let frame = frame.clone();
        tokio::spawn(async move {
            let Ok((mut send, _recv)) = connection.open_bi().await else {
                return;
            };
            let _ = send.write_all(&frame).await;
            connection.closed().await;
        });
    }

    let reasons = closed_within_bound(
        node.pid(),
        baseline,
        32 * MIB,
        vec![attacker.connection.clone()],
    )
    .await;
    let reason = application_reason(&reasons[0]);
    assert!(reason.contains("manifest frame stalled"), "{reason}");
}

#[tokio::test]
async fn hundred_unregistered_tracker_connections_with_half_sent_frames_stay_under_16_mib() {
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let (tracker_id, addr) = ready_at(&tracker);
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let client = punchgate::endpoint::bind(loopback(), None).unwrap();
    let baseline = reset_peak(tracker.pid());

    // Each connection opens its tracker stream and sends a quarter of a
    // frame's worth of nothing: a length prefix announcing 256 KiB, and 1 KiB.
    let frame = half_sent_frame(StreamKind::Tracker, 1024);
    let mut connections = Vec::new();
    let mut streams = Vec::new();
    for _ in 0..100 {
        let connection = punchgate::endpoint::connect_pinned(
            &client.endpoint,
            certified.pinned_client(tls::ALPN_TRACKER).unwrap(),
            addr,
            &tracker_id,
        )
        .unwrap()
        .await
        .unwrap();
        let (mut send, recv) = connection.open_bi().await.unwrap();
        send.write_all(&frame).await.unwrap();
        streams.push((send, recv));
        connections.push(connection);
    }

    let reasons = closed_within_bound(tracker.pid(), baseline, 16 * MIB, connections).await;
    assert_eq!(reasons.len(), 100);
    for reason in &reasons {
        let reason = application_reason(reason);
        assert!(reason.contains("did not register in time"), "{reason}");
    }
}
