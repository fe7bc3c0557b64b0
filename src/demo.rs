//! `punchgate demo`: a tracker and two peers in one process on loopback. They
//! find each other through the tracker, connect over pinned QUIC, exchange a
//! message each way, Bob fetches a 16 MiB file Alice shares (verified chunk
//! by chunk), and the demo reports what happened with timings.

use std::io::Write;
use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{bail, Context};

use crate::identity::Identity;
use crate::node::{Event, Events, Node, NodeConfig};
use crate::tracker::{Tracker, TrackerConfig};

/// How long the demo waits for any one step.
const STEP_TIMEOUT: Duration = Duration::from_secs(15);
const ROOM: &str = "demo";

/// What the demo measured, in milliseconds.
#[derive(Debug, Clone)]
pub struct DemoReport {
    pub registration_ms: [f64; 2],
    pub handshake_ms: f64,
    pub rtt_ms: f64,
    pub round_trip_ms: [f64; 2],
    /// The file transfer's rate, MiB/s.
    pub transfer_mib_per_s: f64,
}

/// Bytes of the demo's file.
const DEMO_FILE_LEN: usize = 16 << 20;

async fn start_peer(
    home: &std::path::Path,
    name: &str,
    tracker: &str,
) -> anyhow::Result<(Node, Events, f64)> {
    let mut config = NodeConfig::new(name);
    config.bind = SocketAddr::from(([127, 0, 0, 1], 0));
    config.trackers = vec![tracker.parse()?];
    config.rooms = vec![ROOM.to_string()];
    let (node, mut events) = Node::start(home, config)
        .await
        .with_context(|| format!("starting {name}"))?;
    let registered = events
        .wait_for(STEP_TIMEOUT, |e| match e {
            Event::Ready { tracker_ms, .. } => Some(tracker_ms.unwrap_or_default()),
            _ => None,
        })
        .await?;
    Ok((node, events, registered))
}

async fn exchange(
    sender: &Node,
    sender_events: &mut Events,
    receiver_events: &mut Events,
    text: &str,
) -> anyhow::Result<f64> {
    let id = sender.say(text).await?.to_string();
    let received = receiver_events
        .wait_for(STEP_TIMEOUT, |e| match e {
            Event::Message { id: got, text, .. } if *got == id => Some(text.clone()),
            _ => None,
        })
        .await
        .context("waiting for the message to arrive")?;
    if received != text {
        bail!("the message arrived altered: {received:?}");
    }
    let ack_ms = sender_events
        .wait_for(STEP_TIMEOUT, |e| match e {
            Event::Delivered {
                id: got, ack_ms, ..
            } if *got == id => Some(*ack_ms),
            _ => None,
        })
        .await
        .context("waiting for the acknowledgement")?;
    Ok(ack_ms)
}

/// Runs the demo, writing its story to `out`.
pub async fn run(out: &mut impl Write) -> anyhow::Result<DemoReport> {
    let homes = [
        tempfile::tempdir()?,
        tempfile::tempdir()?,
        tempfile::tempdir()?,
    ];
    writeln!(out, "punchgate demo: one tracker and two peers on loopback")?;
    let tracker_identity = Identity::generate()?;
    let tracker = Tracker::start(
        &tracker_identity,
        TrackerConfig::new(SocketAddr::from(([127, 0, 0, 1], 0))),
    )?;
    writeln!(out, "tracker      {}", tracker.target())?;

    let (alice, mut alice_events, alice_ms) =
        start_peer(homes[0].path(), "alice", &tracker.target()).await?;
    writeln!(
        out,
        "alice        {} registered in {alice_ms:.1} ms",
        alice.peer_id().short()
    )?;
    let (bob, mut bob_events, bob_ms) =
        start_peer(homes[1].path(), "bob", &tracker.target()).await?;
    writeln!(
        out,
        "bob          {} registered in {bob_ms:.1} ms; found alice in #{ROOM}",
        bob.peer_id().short()
    )?;

    // Bob joined second, so Bob dials Alice.
    let (handshake_ms, rtt_ms, remote) = bob_events
        .wait_for(STEP_TIMEOUT, |e| match e {
            Event::Connected {
                setup_ms,
                rtt_ms,
                remote,
                ..
            } => Some((*setup_ms, *rtt_ms, *remote)),
            _ => None,
        })
        .await
        .context("waiting for bob to connect to alice")?;
    alice_events
        .wait_for(STEP_TIMEOUT, |e| {
            matches!(e, Event::Connected { .. }).then_some(())
        })
        .await
        .context("waiting for alice to see bob")?;
    writeln!(
        out,
        "bob → alice  pinned QUIC handshake + greeting in {handshake_ms:.1} ms to {remote} (rtt {rtt_ms:.2} ms)"
    )?;

    let to_bob = exchange(
        &alice,
        &mut alice_events,
        &mut bob_events,
        "hello bob, this is alice",
    )
    .await?;
    writeln!(
        out,
        "alice → bob  \"hello bob, this is alice\" delivered; round trip {to_bob:.1} ms"
    )?;
    let to_alice = exchange(
        &bob,
        &mut bob_events,
        &mut alice_events,
        "hi alice, bob here",
    )
    .await?;
    writeln!(
        out,
        "bob → alice  \"hi alice, bob here\" delivered; round trip {to_alice:.1} ms"
    )?;

    let transfer_mib_per_s = share_a_file(&alice, &bob, homes[2].path(), out).await?;

    bob.shutdown().await;
    let reason = alice_events
        .wait_for(STEP_TIMEOUT, |e| match e {
            Event::Disconnected { reason, .. } => Some(reason.clone()),
            _ => None,
        })
        .await
        .context("waiting for alice to see bob leave")?;
    writeln!(out, "bob quit     alice saw: {reason}")?;
    alice.shutdown().await;
    tracker.shutdown().await;
    writeln!(
        out,
        "demo ok: messages delivered both ways and a file verified, over mutually authenticated QUIC"
    )?;
    Ok(DemoReport {
        registration_ms: [alice_ms, bob_ms],
        handshake_ms,
        rtt_ms,
        round_trip_ms: [to_bob, to_alice],
        transfer_mib_per_s,
    })
}

/// Alice shares a file of varied bytes; Bob fetches it into `scratch` and
/// checks it byte for byte. Returns the rate in MiB/s.
async fn share_a_file(
    alice: &Node,
    bob: &Node,
    scratch: &std::path::Path,
    out: &mut impl Write,
) -> anyhow::Result<f64> {
    let original: Vec<u8> = (0..DEMO_FILE_LEN as u32)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
        .collect();
    let path = scratch.join("demo-file.bin");
    std::fs::write(&path, &original)?;
    let share = alice.share(vec![path]).await?;
    let target = scratch.join("received");
    let report = bob
        .fetch(crate::node::FetchRequest {
            content: share.layout.id,
            sources: vec![alice.peer_id()],
            target: target.clone(),
            force: false,
        })
        .await?;
    if std::fs::read(target.join("demo-file.bin"))? != original {
        bail!("the received file differs from the original");
    }
    let rate = DEMO_FILE_LEN as f64 / (1 << 20) as f64 / report.secs;
    writeln!(
        out,
        "alice → bob  16 MiB file {}: {} chunks verified (BLAKE3) in {:.0} ms, {rate:.0} MiB/s",
        share.layout.id.short(),
        report.chunks_fetched,
        report.secs * 1e3
    )?;
    Ok(rate)
}
