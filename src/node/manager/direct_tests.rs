//! Single managers driven by hand, action by action: several trackers
//! (one lost, one unreachable at start, one late) and introductions nobody
//! asked for. The simulation of whole rooms is in `tests`.

use std::time::Instant;

use super::*;
use crate::identity::Identity;
use crate::punch::Role;

const MS: std::time::Duration = std::time::Duration::from_millis(1);

fn me() -> PeerId {
    Identity::generate().unwrap().peer_id()
}

/// The actions a manager has queued, taken.
fn drain(manager: &mut Manager) -> Vec<Action> {
    std::iter::from_fn(|| manager.poll_action()).collect()
}

#[test]
fn a_lost_tracker_leaves_introductions_to_another_that_is_up() {
    let now = Instant::now();
    let peer = Identity::generate().unwrap().peer_id();
    let mut manager = Manager::new(me(), ManagerConfig::default(), 2, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.handle_tracker_registered(1, 10 * MS, now);
    manager.learn_tracker(peer, 0);
    manager.learn_tracker(peer, 1);
    manager.set_wanted(peer, true);
    manager.connect(peer, now);
    let asked = |actions: &[Action], tracker: TrackerIx| {
        actions.iter().any(|a| {
            matches!(a, Action::RequestIntroduction { tracker: t, peer: p } if *t == tracker && *p == peer)
        })
    };
    assert!(asked(&drain(&mut manager), 0));
    manager.handle_tracker_lost(0, "killed".into(), now + MS);
    let actions = drain(&mut manager);
    assert!(asked(&actions, 1), "{actions:?}");
}

#[test]
fn a_tracker_unreachable_at_start_is_reported_and_restored_once_up() {
    let now = Instant::now();
    let mut manager = Manager::new(me(), ManagerConfig::default(), 2, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.handle_tracker_failed(1, "connection refused".into(), now);
    let actions = drain(&mut manager);
    let lost = actions.iter().any(|a| {
        matches!(a, Action::Report(Report::TrackerLost { tracker: 1, reason, .. }) if reason == "connection refused")
    });
    assert!(lost, "{actions:?}");
    // Nothing about the tracker that is up, and no restore for it.
    assert!(!actions
        .iter()
        .any(|a| matches!(a, Action::RestoreTracker(_))));
    // A second failure is not news.
    let retry_at = manager.poll_timeout().expect("a retry is due");
    manager.handle_timeout(retry_at);
    assert!(drain(&mut manager).contains(&Action::ConnectTracker(1)));
    manager.handle_tracker_failed(1, "connection refused".into(), retry_at);
    assert!(!drain(&mut manager)
        .iter()
        .any(|a| matches!(a, Action::Report(_))));
    // Reached at last: rooms are joined there and the relay opened.
    manager.handle_tracker_up(1, 10 * MS, retry_at);
    let actions = drain(&mut manager);
    assert!(actions.contains(&Action::RestoreTracker(1)), "{actions:?}");
    assert!(actions.contains(&Action::Report(Report::TrackerBack(1))));
}

#[test]
fn a_tracker_that_registers_late_joins_the_rooms_without_news() {
    let now = Instant::now();
    let mut manager = Manager::new(me(), ManagerConfig::default(), 2, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    // Still connecting when the node started; registered a moment later.
    manager.handle_tracker_up(1, 10 * MS, now + 300 * MS);
    let actions = drain(&mut manager);
    assert_eq!(actions, vec![Action::RestoreTracker(1)]);
}

#[test]
fn introductions_nobody_asked_for_start_no_punch() {
    let now = Instant::now();
    let stranger = Identity::generate().unwrap().peer_id();
    let mut manager = Manager::new(me(), ManagerConfig::default(), 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    // As the dialer, for a peer this node never asked to meet.
    manager.handle_introduced(0, stranger, 7, Role::Dialer, now);
    // As the acceptor, for a peer it shares no room with.
    manager.handle_introduced(0, stranger, 8, Role::Acceptor, now);
    assert_eq!(drain(&mut manager), vec![]);
    // Once it shares a room, the peer's introductions are welcome.
    manager.set_wanted(stranger, true);
    manager.handle_introduced(0, stranger, 9, Role::Acceptor, now);
    let actions = drain(&mut manager);
    assert!(
        actions
            .iter()
            .any(|a| matches!(a, Action::Punch { attempt: 9, .. })),
        "{actions:?}"
    );
}

#[test]
fn a_peer_found_through_the_dht_waits_for_its_own_tracker_as_a_guest() {
    let now = Instant::now();
    let peer = Identity::generate().unwrap().peer_id();
    let mut manager = Manager::new(me(), ManagerConfig::default(), 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    drain(&mut manager);
    // The peer's tracker is not ours: a guest session is added.
    let guest = manager.add_tracker(now);
    assert_eq!(guest, 1);
    assert_eq!(drain(&mut manager), vec![Action::ConnectTracker(1)]);
    manager.reach_through(peer, guest, now);
    manager.connect(peer, now);
    // Our own tracker would not know the peer: nothing is asked of it.
    let actions = drain(&mut manager);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::RequestIntroduction { .. })),
        "{actions:?}"
    );
    // The guest session is up: a first registration there is restored
    // (its relay opened) and the introduction asked through it.
    manager.handle_tracker_up(guest, 10 * MS, now + 5 * MS);
    let actions = drain(&mut manager);
    assert!(
        actions.contains(&Action::RestoreTracker(guest)),
        "{actions:?}"
    );
    assert!(
        actions.contains(&Action::RequestIntroduction {
            tracker: guest,
            peer
        }),
        "{actions:?}"
    );
}

#[test]
fn a_findable_node_answers_a_strangers_introduction() {
    let now = Instant::now();
    let stranger = Identity::generate().unwrap().peer_id();
    for answer_strangers in [false, true] {
        let config = ManagerConfig {
            answer_strangers,
            ..ManagerConfig::default()
        };
        let mut manager = Manager::new(me(), config, 1, now);
        manager.handle_tracker_registered(0, 10 * MS, now);
        drain(&mut manager);
        manager.handle_introduced(0, stranger, 7, Role::Acceptor, now);
        let punched = drain(&mut manager)
            .iter()
            .any(|a| matches!(a, Action::Punch { attempt: 7, .. }));
        assert_eq!(punched, answer_strangers);
    }
}

#[test]
fn a_peer_found_through_the_dht_is_looked_up_again_when_its_tracker_is_gone() {
    let now = Instant::now();
    let peer = Identity::generate().unwrap().peer_id();
    let config = ManagerConfig::default();
    let relookup = config.relookup;
    let mut manager = Manager::new(me(), config, 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    let guest = manager.add_tracker(now);
    manager.reach_through(peer, guest, now);
    manager.connect(peer, now);
    manager.handle_tracker_up(guest, 10 * MS, now);
    drain(&mut manager);
    // Its tracker is lost before it answered: the attempt has nowhere to
    // go, and the record was looked up a moment ago, so a retry waits
    // until a new lookup is allowed.
    let lost = now + 2 * MS;
    manager.handle_tracker_lost(guest, "killed".into(), lost);
    let actions = drain(&mut manager);
    assert!(!actions.contains(&Action::LookUp { peer }), "{actions:?}");
    let lookup_due = now + relookup;
    // Timers before then (the tracker's retries) change nothing for it.
    let mut at = lost;
    let mut looked_up = None;
    for _ in 0..100 {
        let Some(next) = manager.poll_timeout() else {
            break;
        };
        at = next;
        manager.handle_timeout(at);
        if drain(&mut manager).contains(&Action::LookUp { peer }) {
            looked_up = Some(at);
            break;
        }
    }
    assert_eq!(looked_up, Some(lookup_due), "last timer at {:?}", at - now);
    // The lookup failed (no record yet): retried with backoff, looked up
    // again no sooner than `relookup` later.
    manager.handle_lookup_failed(peer, "no DHT record".into(), lookup_due);
    let actions = drain(&mut manager);
    assert!(
        actions.iter().any(|a| matches!(
            a,
            Action::Report(Report::Unreachable {
                retry_in: Some(_),
                ..
            })
        )),
        "{actions:?}"
    );
    assert!(!actions.contains(&Action::LookUp { peer }));
}

#[test]
fn a_guest_session_is_in_use_until_its_peer_is_connected_and_reopens_when_needed() {
    let now = Instant::now();
    let me = Identity::generate().unwrap().peer_id();
    let peer = Identity::generate().unwrap().peer_id();
    let mut manager = Manager::new(me, ManagerConfig::default(), 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    let guest = manager.add_tracker(now);
    manager.reach_through(peer, guest, now);
    manager.connect(peer, now);
    assert!(manager.tracker_in_use(guest), "waited for");
    manager.handle_tracker_up(guest, 10 * MS, now);
    drain(&mut manager);
    assert!(manager.tracker_in_use(guest), "introducing through it");
    assert!(!manager.tracker_in_use(0), "our own tracker plays no part");

    // Connected: no attempt needs it any more (whether its relay carries
    // the gate is the node task's to tell).
    let direct = GateFacts {
        id: 2,
        path: PathKind::Direct,
        dialer: me,
        ipv6: false,
    };
    manager.handle_gate_ready(peer, direct, now);
    drain(&mut manager);
    assert_eq!(manager.gate(&peer).map(|g| g.path), Some(PathKind::Direct));
    assert!(!manager.tracker_in_use(guest));

    // Closed: its session's end is no loss, and nothing retries it.
    manager.handle_tracker_closed(guest);
    manager.handle_tracker_lost(guest, "closed".into(), now);
    assert_eq!(manager.tracker_state(guest), Some(TrackerState::Closed));
    let actions = drain(&mut manager);
    assert!(
        !actions
            .iter()
            .any(|a| matches!(a, Action::Report(Report::TrackerLost { .. }))),
        "{actions:?}"
    );
    assert_eq!(manager.poll_timeout(), None);

    // The peer is needed again through it (found again on the DHT): the
    // session opens again.
    manager.reach_through(peer, guest, now);
    assert_eq!(drain(&mut manager), vec![Action::ConnectTracker(guest)]);
    assert_eq!(manager.tracker_state(guest), Some(TrackerState::Connecting));
}
