//! One attempt per pair: two nodes that ask for each other at about the
//! same time, with a tracker that folds the crossing requests into one
//! introduction and with one that does not (two introductions, settled by
//! the tie-break), in every order they can arrive; a room whose members all
//! ask at once; and an adopted attempt that brings nothing.

use std::time::{Duration, Instant};

use super::sim::*;
use super::*;
use crate::identity::Identity;
use crate::punch::Role;

#[test]
fn crossing_requests_make_one_introduction_one_punch_and_one_gate() {
    // The second request leaves before the first introduction arrives
    // (tracker round trip 20 ms), at several offsets.
    for offset in [0, 5, 15, 19] {
        let mut sim = Sim::new(2, ManagerConfig::default());
        sim.all_up();
        sim.connect(0, 1);
        sim.run_for(offset * MS);
        sim.connect(1, 0);
        sim.run_for(Duration::from_secs(60));
        let gate = sim.assert_one_connection(0, 1);
        assert_eq!(gate.path, PathKind::Direct);
        assert_eq!(sim.introductions, 1, "offset {offset} ms");
        assert_eq!(sim.dialer_punches, 1, "offset {offset} ms");
        assert_eq!(sim.duplicates_closed, 0, "offset {offset} ms");
        assert_eq!(gate.dialer, sim.ids[0], "the first to ask dials");
        assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
    }
}

#[test]
fn without_folding_two_introductions_settle_on_one_attempt() {
    // A tracker that introduces twice (or two trackers): both sides get
    // both introductions and keep the attempt the smaller id dials.
    for offset in [0, 5, 15, 19] {
        let mut sim = Sim::new(2, ManagerConfig::default());
        sim.fold_crossing = false;
        sim.all_up();
        sim.connect(0, 1);
        sim.run_for(offset * MS);
        sim.connect(1, 0);
        sim.run_for(Duration::from_secs(60));
        let gate = sim.assert_one_connection(0, 1);
        assert_eq!(sim.introductions, 2, "offset {offset} ms");
        assert_eq!(sim.duplicates_closed, 0, "offset {offset} ms");
        assert_eq!(gate.dialer, sim.ids[0].min(sim.ids[1]));
        assert_eq!(gone(&sim.reports[0]) + gone(&sim.reports[1]), 0);
    }
}

/// The punch a manager's actions leave running: the last one started and
/// not abandoned since, with its role.
fn live_punch(actions: &[Action]) -> Option<(u64, Role)> {
    let mut live = None;
    for action in actions {
        match action {
            Action::Punch { attempt, role, .. } => live = Some((*attempt, *role)),
            Action::AbandonPunch { attempt, .. } if live.map(|(a, _)| a) == Some(*attempt) => {
                live = None;
            }
            _ => {}
        }
    }
    live
}

#[test]
fn the_tie_break_is_the_same_on_both_sides_in_every_order_of_arrival() {
    let now = Instant::now();
    for _ in 0..8 {
        let (a, b) = (
            Identity::generate().unwrap().peer_id(),
            Identity::generate().unwrap().peer_id(),
        );
        // Attempt 1 is a's request (a dials), attempt 2 is b's.
        let winner = if a < b { 1 } else { 2 };
        for a_first in [1, 2] {
            for b_first in [1, 2] {
                let mut sides = Vec::new();
                for (me, peer, first, dials) in [(a, b, a_first, 1), (b, a, b_first, 2)] {
                    let mut manager = Manager::new(me, ManagerConfig::default(), 1, now);
                    manager.handle_tracker_registered(0, 10 * MS, now);
                    manager.learn_tracker(peer, 0);
                    manager.connect(peer, now);
                    let mut actions: Vec<Action> = std::iter::from_fn(|| manager.poll_action())
                        .filter(|a| matches!(a, Action::RequestIntroduction { .. }))
                        .collect();
                    assert_eq!(actions.len(), 1);
                    let second = 3 - first;
                    for (i, attempt) in [first, second].into_iter().enumerate() {
                        let role = if attempt == dials {
                            Role::Dialer
                        } else {
                            Role::Acceptor
                        };
                        let at = now + (20 + i as u32) * MS;
                        manager.handle_introduced(0, peer, attempt, role, at);
                        actions.extend(std::iter::from_fn(|| manager.poll_action()));
                    }
                    sides.push(live_punch(&actions));
                }
                let (on_a, on_b) = (sides[0], sides[1]);
                let orders = format!("a got {a_first} first, b got {b_first} first");
                assert_eq!(on_a.map(|(x, _)| x), Some(winner), "{orders}");
                assert_eq!(on_b.map(|(x, _)| x), Some(winner), "{orders}");
                let dialer = if winner == 1 { on_a } else { on_b };
                assert_eq!(dialer.map(|(_, r)| r), Some(Role::Dialer), "{orders}");
                let acceptor = if winner == 1 { on_b } else { on_a };
                assert_eq!(acceptor.map(|(_, r)| r), Some(Role::Acceptor), "{orders}");
            }
        }
    }
}

#[test]
fn a_room_whose_members_all_ask_at_once_makes_one_attempt_per_pair() {
    let members = 25;
    let pairs = members * (members - 1) / 2;
    for fold in [true, false] {
        let mut sim = Sim::new(members, ManagerConfig::default());
        sim.fold_crossing = fold;
        sim.all_up();
        // Every member asks for every other (a room's member list), paced
        // at 10 a second: many requests cross.
        for node in 0..members {
            for peer in (0..members).filter(|p| *p != node) {
                sim.connect(node, peer);
            }
        }
        sim.run_for(Duration::from_secs(120));
        for a in 0..members {
            for b in 0..a {
                sim.assert_one_connection(a, b);
            }
        }
        assert_eq!(sim.duplicates_closed, 0, "fold {fold}");
        if fold {
            assert_eq!(sim.introductions, pairs);
            assert_eq!(sim.dialer_punches, pairs);
        }
    }
}

#[test]
fn a_peer_attempt_that_brings_nothing_is_followed_by_one_of_our_own() {
    let now = Instant::now();
    let (me, peer) = (
        Identity::generate().unwrap().peer_id(),
        Identity::generate().unwrap().peer_id(),
    );
    let config = ManagerConfig::default();
    let accept_timeout = config.accept_timeout;
    let mut manager = Manager::new(me, config, 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.learn_tracker(peer, 0);
    manager.connect(peer, now);
    let asks = |actions: &[Action]| {
        actions
            .iter()
            .filter(|a| matches!(a, Action::RequestIntroduction { .. }))
            .count()
    };
    let drain = |manager: &mut Manager| std::iter::from_fn(|| manager.poll_action()).collect();
    let actions: Vec<Action> = drain(&mut manager);
    assert_eq!(asks(&actions), 1);
    // The peer's introduction comes; the tracker folded our request into
    // it, so nothing else comes. The peer's dial never arrives.
    manager.handle_introduced(0, peer, 7, Role::Acceptor, now + 20 * MS);
    let mut actions: Vec<Action> = drain(&mut manager);
    assert!(actions.contains(&Action::Punch {
        peer,
        attempt: 7,
        role: Role::Acceptor
    }));
    // Asked again (a room's gossip): the peer's attempt is ours.
    manager.connect(peer, now + 30 * MS);
    actions.extend(drain(&mut manager));
    let mut at = now;
    while let Some(next) = manager.poll_timeout() {
        at = next;
        manager.handle_timeout(at);
        actions.extend(drain(&mut manager));
        if asks(&actions) > 0 || at > now + 2 * accept_timeout {
            break;
        }
    }
    assert_eq!(asks(&actions), 1, "{actions:?}");
    assert!(
        at >= now + 20 * MS + accept_timeout,
        "not before the deadline"
    );
    assert!(actions
        .iter()
        .any(|a| matches!(a, Action::Report(Report::Unreachable { .. }))));
}

#[test]
fn a_relay_only_acceptor_without_a_relay_says_so_at_once() {
    let now = Instant::now();
    let (me, peer) = (
        Identity::generate().unwrap().peer_id(),
        Identity::generate().unwrap().peer_id(),
    );
    let config = ManagerConfig {
        relay: RelayPolicy::Only,
        ..ManagerConfig::default()
    };
    let mut manager = Manager::new(me, config, 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.handle_relay_ready(0, Err("this tracker does not relay".into()));
    manager.learn_tracker(peer, 0);
    manager.connect(peer, now);
    // The peer's request got there first: this node is its acceptor.
    manager.handle_introduced(0, peer, 7, Role::Acceptor, now + 20 * MS);
    let actions: Vec<Action> = std::iter::from_fn(|| manager.poll_action()).collect();
    let said = actions.iter().any(|a| {
        matches!(a, Action::Report(Report::Unreachable { why, .. }) if why.contains("this tracker does not relay"))
    });
    assert!(said, "{actions:?}");
}

#[test]
fn a_member_leaves_the_first_move_to_one_that_just_joined() {
    let now = Instant::now();
    let (me, peer) = (
        Identity::generate().unwrap().peer_id(),
        Identity::generate().unwrap().peer_id(),
    );
    let drain = |manager: &mut Manager| -> Vec<Action> {
        std::iter::from_fn(|| manager.poll_action()).collect()
    };
    let asked = |actions: &[Action]| {
        actions
            .iter()
            .any(|a| matches!(a, Action::RequestIntroduction { .. }))
    };
    let at = now + Duration::from_secs(2);
    // The joiner's introduction comes in time: it is the pair's attempt.
    let mut manager = Manager::new(me, ManagerConfig::default(), 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.learn_tracker(peer, 0);
    manager.connect_after(peer, at, now);
    assert!(!asked(&drain(&mut manager)));
    manager.handle_introduced(0, peer, 7, Role::Acceptor, now + 100 * MS);
    let mut actions = drain(&mut manager);
    while let Some(next) = manager.poll_timeout().filter(|t| *t <= at + 10 * MS) {
        manager.handle_timeout(next);
        actions.extend(drain(&mut manager));
    }
    assert!(!asked(&actions), "{actions:?}");
    // None comes: this node asks itself, at `at`.
    let mut manager = Manager::new(me, ManagerConfig::default(), 1, now);
    manager.handle_tracker_registered(0, 10 * MS, now);
    manager.learn_tracker(peer, 0);
    manager.connect_after(peer, at, now);
    drain(&mut manager);
    assert_eq!(manager.poll_timeout(), Some(at));
    manager.handle_timeout(at);
    assert!(asked(&drain(&mut manager)));
}
