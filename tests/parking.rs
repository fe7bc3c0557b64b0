//! Parked registrations (the doorbell), end to end on loopback: idle nodes
//! park and cost the tracker no connection, yet a newcomer to their room
//! reaches them (the tracker rings, they resume); a parked node resumes by
//! itself for a command, and says it leaves when it quits; and a parked
//! node whose tracker died registers again once it is back, and one whose
//! tracker forgot it registers afresh as it comes back.

mod common;

use std::time::Duration;

use common::{config, loopback, start_node, start_tracker_with, TestNode, WAIT};
use punchgate::identity::Identity;
use punchgate::node::events::TrackerLink;
use punchgate::node::{Event, NodeConfig};
use punchgate::tracker::{Tracker, TrackerConfig};

/// Parks after a second unused: the tests wait for it rather than a minute.
const PARK_AFTER: Duration = Duration::from_secs(1);

/// Knocks every second, so that a tracker gone is noticed in seconds.
fn quick_knocks(listen: std::net::SocketAddr) -> TrackerConfig {
    let mut config = TrackerConfig::new(listen);
    config.knock_every = Duration::from_secs(1);
    config
}

fn parking(name: &str, tracker: &Tracker, room: &str) -> NodeConfig {
    let mut config = config(name, Some(tracker), room);
    config.park_after = Some(PARK_AFTER);
    config
}

fn never_parks(name: &str, tracker: &Tracker, room: &str) -> NodeConfig {
    let mut config = config(name, Some(tracker), room);
    config.park_after = None;
    config
}

/// Waits for a `tracker` event in `state`.
async fn sees_tracker(node: &mut TestNode, state: TrackerLink) {
    node.sees(&format!("the tracker {state:?}"), |e| match e {
        Event::Tracker { state: got, .. } if *got == state => Some(()),
        _ => None,
    })
    .await
}

/// Waits until `tracker` holds `parked` parked registrations.
async fn tracker_parks(tracker: &Tracker, parked: u64) {
    tokio::time::timeout(WAIT, async {
        loop {
            if tracker.stats().parked == parked {
                return;
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| {
        panic!(
            "the tracker never held {parked} parked: {:?}",
            tracker.stats()
        )
    });
}

/// The tracker `identity` again, on the address in `config` (its second
/// port wherever is free).
fn restart(identity: &Identity, mut config: TrackerConfig) -> Tracker {
    config.aux_port = Some(0);
    Tracker::start(identity, config).unwrap()
}

/// Bob, who never parks, joins `room` and connects to `alice`; then all stop.
async fn bob_reaches(alice: TestNode, tracker: Tracker, room: &str) {
    let mut bob = start_node(never_parks("bob", &tracker, room)).await;
    bob.connected_to(&alice).await;
    for node in [&alice, &bob] {
        node.node.shutdown().await;
    }
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_members_park_and_a_newcomer_still_reaches_them() {
    let tracker = start_tracker_with(TrackerConfig::new(loopback()));
    // Alice on the CLI's default socket, dual-stack: her knocks leave it
    // for an IPv4 tracker, and its answers and rings must find her there.
    let mut dual_stack = parking("alice", &tracker, "lobby");
    dual_stack.bind = "[::]:0".parse().unwrap();
    let mut alice = start_node(dual_stack).await;
    let mut bob = start_node(parking("bob", &tracker, "lobby")).await;
    bob.connected_to(&alice).await;
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    sees_tracker(&mut bob, TrackerLink::Parked).await;
    tracker_parks(&tracker, 2).await;
    assert_eq!(tracker.stats().peers, 2, "parked peers stay registered");

    // Carol joins: both are rung, resume, and are introduced to her.
    let mut carol = start_node(never_parks("carol", &tracker, "lobby")).await;
    carol.connected_to(&alice).await;
    carol.connected_to(&bob).await;
    sees_tracker(&mut alice, TrackerLink::Resumed).await;
    sees_tracker(&mut bob, TrackerLink::Resumed).await;
    carol.node.say("hello, sleepers").await.unwrap();
    alice.receives("hello, sleepers").await;
    bob.receives("hello, sleepers").await;
    // Unused again, they park again.
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    sees_tracker(&mut bob, TrackerLink::Parked).await;
    for node in [&alice, &bob, &carol] {
        node.node.shutdown().await;
    }
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_node_that_quits_is_dropped_by_its_tracker_at_once() {
    let tracker = start_tracker_with(TrackerConfig::new(loopback()));
    let mut alice = start_node(parking("alice", &tracker, "lobby")).await;
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    tracker_parks(&tracker, 1).await;
    alice.node.shutdown().await;
    // Its leave on the second port, not the 80 s without knocks.
    tokio::time::timeout(WAIT, async {
        while tracker.stats().peers > 0 {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    })
    .await
    .unwrap_or_else(|_| panic!("still registered: {:?}", tracker.stats()));
    assert_eq!(tracker.stats().parked, 0);
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_node_resumes_by_itself_to_join_a_room() {
    let tracker = start_tracker_with(TrackerConfig::new(loopback()));
    let mut alice = start_node(parking("alice", &tracker, "lobby")).await;
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    tracker_parks(&tracker, 1).await;
    alice.node.join("side").await.unwrap();
    sees_tracker(&mut alice, TrackerLink::Resumed).await;
    bob_reaches(alice, tracker, "side").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_parked_node_whose_tracker_died_registers_again_when_it_is_back() {
    let identity = Identity::generate().unwrap();
    let tracker = Tracker::start(&identity, quick_knocks(loopback())).unwrap();
    let listen = tracker.local_addr();
    let mut alice = start_node(parking("alice", &tracker, "lobby")).await;
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    tracker.shutdown().await;
    // Its knocks go unanswered: lost, as a connection that dies is.
    sees_tracker(&mut alice, TrackerLink::Lost).await;
    let tracker = restart(&identity, quick_knocks(listen));
    sees_tracker(&mut alice, TrackerLink::Back).await;
    bob_reaches(alice, tracker, "lobby").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_parked_at_a_tracker_that_forgot_it_registers_afresh() {
    let identity = Identity::generate().unwrap();
    let mut config = TrackerConfig::new(loopback());
    // Knocks too rare to notice the restart before the command does.
    config.knock_every = Duration::from_secs(600);
    let tracker = Tracker::start(&identity, config).unwrap();
    let listen = tracker.local_addr();
    let mut alice = start_node(parking("alice", &tracker, "lobby")).await;
    sees_tracker(&mut alice, TrackerLink::Parked).await;
    tracker.shutdown().await;
    let tracker = restart(&identity, TrackerConfig::new(listen));
    // The restarted tracker holds no parked registration: the resume for
    // this join is refused, and the session registers afresh on the same
    // connection; the join goes through, and the rooms are joined again.
    alice.node.join("side").await.unwrap();
    sees_tracker(&mut alice, TrackerLink::Back).await;
    let lost = alice.unmatched().iter().any(|e| {
        matches!(
            e,
            Event::Tracker {
                state: TrackerLink::Lost,
                ..
            }
        )
    });
    assert!(!lost, "{:#?}", alice.unmatched());
    bob_reaches(alice, tracker, "side").await;
}
