//! The connection manager on a virtual clock, in the simulation of
//! `sim`: simultaneous dials, relay then direct, a hard pair relayed, a
//! punch timeout while relayed, tracker lost and back, a rate-limited room
//! becoming whole, a NAT rebinding, resends, shutdown mid-attempt.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use super::sim::*;
use super::*;
use crate::identity::Identity;

#[test]
fn simultaneous_dials_from_both_sides_end_with_one_connection() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.connect(1, 0);
    sim.run_for(Duration::from_secs(60));
    let gate = sim.assert_one_connection(0, 1);
    assert_eq!(gate.path, PathKind::Direct);
    assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
}

#[test]
fn a_punchable_pair_ends_direct_even_when_the_relay_joined_the_race() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    // The punch needs longer than the relay race delay: the relay wins
    // first, the direct path replaces it.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(Duration::from_millis(800)),
        },
    );
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
    assert_eq!(sim.installed[0].len(), 2, "relay first, then direct");
}

#[test]
fn relay_first_then_direct_with_messages_in_flight_delivered_once_in_order() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.tracker_delay = 40 * MS; // a slow relay: much in flight when it closes
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Relay);
    // A direct path opens; messages keep flowing through the switch.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(5 * MS),
        },
    );
    let mut sent = Vec::new();
    for _ in 0..400 {
        sent.push(sim.post(0));
        sim.run_for(7 * MS);
    }
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
    assert_eq!(sim.received[1], sent, "each message once, in order");
    assert!(sim.nodes[0].unacked(&sim.ids[1]).is_empty());
    assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
}

#[test]
fn a_hard_pair_is_relayed_within_a_few_round_trips_of_the_introduction() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    let started = sim.elapsed();
    sim.run_for(Duration::from_secs(2));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Relay);
    let installed_at = sim.installed[0][0].2 - sim.start - started;
    assert!(installed_at < Duration::from_secs(1), "{installed_at:?}");
}

#[test]
fn a_punch_timeout_while_the_relay_is_up_keeps_the_relay_and_retries_direct() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.connect(0, 1);
    // The punch gives up after 10 s; the relayed gate stays and upgrades are
    // tried with backoff.
    sim.run_for(Duration::from_secs(120));
    let gate = sim.assert_one_connection(0, 1);
    assert_eq!(gate.path, PathKind::Relay);
    assert_eq!(gone(&sim.reports[0]), 0);
    let unreachable = sim.reports[0]
        .iter()
        .filter(|r| matches!(r, Report::Unreachable { .. }))
        .count();
    assert_eq!(unreachable, 0, "a failed upgrade is not a failure to reach");
    // Still relayed when a direct path opens: the next upgrade takes it.
    sim.set_path(
        0,
        1,
        PairPath {
            direct: Some(20 * MS),
        },
    );
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.assert_one_connection(0, 1).path, PathKind::Direct);
}

#[test]
fn tracker_lost_and_back_restores_and_keeps_gates() {
    let mut sim = Sim::new(3, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    sim.assert_one_connection(0, 1);
    sim.tracker_up = false;
    let now = sim.now;
    for node in &mut sim.nodes {
        node.handle_tracker_lost(0, "connection lost".into(), now);
    }
    // Down for a while: retries back off, no gate is touched.
    sim.run_for(Duration::from_secs(40));
    sim.assert_one_connection(0, 1);
    assert!(sim.reports[0]
        .iter()
        .any(|r| matches!(r, Report::TrackerLost { .. })));
    assert!(sim.restored.is_empty());
    // While down, a newcomer's connect waits for the tracker.
    sim.connect(2, 0);
    sim.run_for(Duration::from_secs(1));
    assert!(sim.gate(2, 0).is_none());
    sim.tracker_up = true;
    // The capped backoff brings every node back within its cap.
    sim.run_for(Duration::from_secs(31));
    for node in 0..3 {
        assert_eq!(sim.nodes[node].tracker_state(0), Some(TrackerState::Up));
        assert!(sim.reports[node].contains(&Report::TrackerBack(0)));
    }
    let mut restored = sim.restored.clone();
    restored.sort();
    assert_eq!(restored, vec![0, 1, 2]);
    sim.run_for(Duration::from_secs(5));
    sim.assert_one_connection(0, 1);
    sim.assert_one_connection(2, 0);
}

#[test]
fn rate_limited_introductions_are_retried_until_a_big_room_is_whole() {
    let members = 25;
    let mut sim = Sim::new(members, ManagerConfig::default());
    sim.tracker_rate = Some(5); // stricter than our pacing: refusals happen
    sim.all_up();
    for node in 0..members {
        for peer in 0..node {
            sim.connect(node, peer);
        }
    }
    sim.run_for(Duration::from_secs(600));
    for a in 0..members {
        for b in 0..a {
            sim.assert_one_connection(a, b);
        }
    }
}

#[test]
fn a_nat_that_changes_the_source_port_ends_in_one_new_connection() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let before = sim.assert_one_connection(0, 1);
    // The mapping changed: the old path dies at both ends (idle timeout).
    sim.close_gate(before.id, GateEnd::PathDied("timed out".into()));
    sim.run_for(Duration::from_secs(60));
    let after = sim.assert_one_connection(0, 1);
    assert_ne!(after.id, before.id);
    assert_eq!(gone(&sim.reports[0]), 1);
}

#[test]
fn messages_to_a_peer_whose_path_died_are_resent_on_the_next_gate() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    let first = sim.post(0);
    // Lost in flight with the path.
    sim.close_gate(gate.id, GateEnd::PathDied("timed out".into()));
    sim.run_for(Duration::from_secs(60));
    let second = sim.post(0);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(sim.received[1], vec![first, second]);
}

#[test]
fn shutdown_while_attempts_are_in_flight_starts_nothing_more() {
    let mut sim = Sim::new(3, ManagerConfig::default());
    sim.all_up();
    sim.set_path(0, 1, PairPath { direct: None });
    sim.set_path(
        0,
        2,
        PairPath {
            direct: Some(Duration::from_millis(300)),
        },
    );
    sim.relay = false;
    sim.connect(0, 1);
    sim.connect(0, 2);
    sim.run_for(50 * MS);
    sim.nodes[0].shutdown();
    assert_eq!(sim.nodes[0].poll_action(), None);
    assert_eq!(sim.nodes[0].poll_timeout(), None);
    sim.run_for(Duration::from_secs(60));
    // Late results are refused, not installed.
    assert!(sim.gate(0, 1).is_none());
    assert!(sim.gate(0, 2).is_none());
    assert!(sim.open.is_empty(), "{:?}", sim.open);
}

#[test]
fn a_peer_closed_as_duplicate_with_no_replacement_is_reported_gone_after_the_grace() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    sim.nodes[1].set_wanted(sim.ids[0], false);
    // Only node 0 hears the close; node 1 never brings a replacement.
    sim.open.remove(&gate.id);
    let now = sim.now;
    let peer = sim.ids[1];
    sim.nodes[0].handle_gate_closed(peer, gate.id, GateEnd::Duplicate, now);
    sim.run_for(Duration::from_secs(5));
    assert_eq!(
        gone(&sim.reports[0]),
        0,
        "not yet: a replacement may follow"
    );
    sim.run_for(Duration::from_secs(10));
    assert_eq!(gone(&sim.reports[0]), 1);
}

#[test]
fn a_link_closed_as_unneeded_is_reported_through_the_room_and_not_redialed() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let gate = sim.assert_one_connection(0, 1);
    sim.close_gate(gate.id, GateEnd::Unneeded);
    sim.run_for(Duration::from_secs(120));
    for (node, peer) in [(0, 1), (1, 0)] {
        let reports = &sim.reports[node];
        assert_eq!(gone(reports), 0, "{reports:?}");
        assert!(
            reports.contains(&Report::ThroughRoom(sim.ids[peer])),
            "{reports:?}"
        );
    }
    assert!(sim.gate(0, 1).is_none(), "nobody dials again unasked");
    assert!(sim.open.is_empty(), "{:?}", sim.open);
}

#[test]
fn unacked_messages_are_bounded_per_peer() {
    let mut sim = Sim::new(2, ManagerConfig::default());
    sim.all_up();
    sim.connect(0, 1);
    sim.run_for(Duration::from_secs(5));
    let ids: BTreeMap<u64, MessageId> = (0..peer::MAX_UNACKED_PER_PEER as u64 + 5)
        .map(|seq| {
            let id = MessageId {
                author: sim.ids[0],
                seq,
            };
            (seq, id)
        })
        .collect();
    let peer = sim.ids[1];
    for id in ids.values() {
        sim.nodes[0].post(*id, &[peer]);
    }
    let unacked = sim.nodes[0].unacked(&peer);
    assert_eq!(unacked.len(), peer::MAX_UNACKED_PER_PEER);
    assert_eq!(unacked[0].seq, 5, "the oldest are left to history sync");
}

#[test]
fn a_direct_path_over_ipv6_replaces_one_over_ipv4_whichever_came_first() {
    let me = Identity::generate().unwrap().peer_id();
    let peer = Identity::generate().unwrap().peer_id();
    let gate = |id, ipv6, dialer| GateFacts {
        id,
        path: PathKind::Direct,
        dialer,
        ipv6,
    };
    for (first, second) in [
        (gate(1, false, me), gate(2, true, peer)),
        (gate(1, true, peer), gate(2, false, me)),
    ] {
        let mut manager = Manager::new(me, ManagerConfig::default(), 1, Instant::now());
        manager.handle_gate_ready(peer, first, Instant::now());
        manager.handle_gate_ready(peer, second, Instant::now());
        assert_eq!(manager.gate(&peer).map(|g| g.ipv6), Some(true));
        let closed: Vec<GateId> = std::iter::from_fn(|| manager.poll_action())
            .filter_map(|action| match action {
                Action::CloseDuplicate { gate, .. } => Some(gate),
                _ => None,
            })
            .collect();
        let ipv4 = if first.ipv6 { second.id } else { first.id };
        assert_eq!(closed, vec![ipv4]);
    }
}
