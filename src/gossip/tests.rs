//! The room's gossip alone (one member fed by hand) and hundreds of members
//! over the simulated network (`sim`) on a virtual clock.

use std::time::{Duration, Instant};

use super::sim::{Id, Sim};
use super::{Action, Control, GossipConfig, RoomGossip};

fn drain(gossip: &mut RoomGossip<u32, u32>) -> Vec<Action<u32, u32>> {
    std::iter::from_fn(|| gossip.poll_action()).collect()
}

fn asked(actions: &[Action<u32, u32>]) -> Vec<u32> {
    actions
        .iter()
        .filter_map(|a| match a {
            Action::Control {
                to,
                control: Control::Neighbor { .. },
            } => Some(*to),
            _ => None,
        })
        .collect()
}

/// A member of a room of `others` + 1 with every request it made accepted.
fn linked(others: u32, now: Instant) -> (RoomGossip<u32, u32>, Vec<u32>) {
    let mut gossip = RoomGossip::new(0, GossipConfig::default(), now);
    for peer in 1..=others {
        gossip.handle_member_joined(peer, now);
    }
    let neighbors = asked(&drain(&mut gossip));
    for peer in &neighbors {
        gossip.handle_control(*peer, Control::Accept, now);
    }
    drain(&mut gossip);
    (gossip, neighbors)
}

#[test]
fn a_member_asks_eight_random_members_and_only_the_first_request_is_lonely() {
    let now = Instant::now();
    let mut gossip: RoomGossip<u32, u32> = RoomGossip::new(0, GossipConfig::default(), now);
    for peer in 1..=50 {
        gossip.handle_member_joined(peer, now);
    }
    let actions = drain(&mut gossip);
    let lonely: Vec<bool> = actions
        .iter()
        .filter_map(|a| match a {
            Action::Control {
                control: Control::Neighbor { lonely },
                ..
            } => Some(*lonely),
            _ => None,
        })
        .collect();
    assert_eq!(lonely.len(), 8);
    assert_eq!(lonely.iter().filter(|l| **l).count(), 1);
    assert_eq!(
        gossip.neighbors().count(),
        0,
        "nothing is up before an answer"
    );
    assert_eq!(gossip.active().count(), 8);
}

#[test]
fn a_lost_link_is_replaced_by_another_member_and_the_lost_one_waits() {
    let now = Instant::now();
    let (mut gossip, neighbors) = linked(30, now);
    assert_eq!(gossip.neighbors().count(), 8);
    let lost = neighbors[0];
    gossip.handle_unreachable(lost, now);
    let actions = drain(&mut gossip);
    assert!(actions.contains(&Action::Unlink(lost)));
    let replacement = asked(&actions);
    assert_eq!(replacement.len(), 1);
    assert_ne!(replacement[0], lost);
    assert!(!neighbors.contains(&replacement[0]));
    assert_eq!(gossip.active().count(), 8);
}

#[test]
fn a_full_member_refuses_but_takes_a_lonely_one_in_place_of_another_link() {
    let now = Instant::now();
    let mut gossip: RoomGossip<u32, u32> = RoomGossip::new(0, GossipConfig::default(), now);
    for peer in 1..=40 {
        gossip.handle_member_joined(peer, now);
    }
    drain(&mut gossip);
    // Others ask until it is full: 8 of its own requests pending, 2 more
    // taken from askers.
    for peer in 20..=40 {
        gossip.handle_control(peer, Control::Neighbor { lonely: false }, now);
    }
    assert_eq!(gossip.active().count(), 10);
    let actions = drain(&mut gossip);
    let refused = actions
        .iter()
        .filter(|a| {
            matches!(
                a,
                Action::Control {
                    control: Control::Refuse,
                    ..
                }
            )
        })
        .count();
    assert!(refused > 0, "a full member refuses");
    gossip.handle_control(99, Control::Neighbor { lonely: true }, now);
    let actions = drain(&mut gossip);
    assert!(actions.contains(&Action::Control {
        to: 99,
        control: Control::Accept
    }));
    assert!(actions.iter().any(|a| matches!(
        a,
        Action::Control {
            control: Control::Disconnect,
            ..
        }
    )));
    assert!(gossip.is_neighbor(&99));
    assert_eq!(gossip.active().count(), 10, "never more than max_active");
}

#[test]
fn a_message_is_passed_on_once_to_every_neighbor_but_its_sender() {
    let now = Instant::now();
    let (mut gossip, neighbors) = linked(30, now);
    let from = neighbors[3];
    assert!(gossip.handle_message(7, from));
    let forwarded: Vec<u32> = drain(&mut gossip)
        .iter()
        .filter_map(|a| match a {
            Action::Forward { to, id: 7 } => Some(*to),
            _ => None,
        })
        .collect();
    assert_eq!(forwarded.len(), 7);
    assert!(!forwarded.contains(&from));
    assert!(!gossip.handle_message(7, neighbors[4]), "seen: not again");
    assert!(drain(&mut gossip).is_empty());
    gossip.handle_synced(8);
    assert!(!gossip.handle_message(8, from), "synced counts as seen");
}

#[test]
fn a_room_of_nine_is_a_full_mesh() {
    let mut sim = Sim::new(GossipConfig::default());
    for id in 0..9 {
        sim.join(id);
    }
    sim.run_for(Duration::from_secs(60));
    for id in 0..9 {
        assert_eq!(sim.degree(id), 8, "member {id}");
        assert!(sim.members[&id].gossip.is_full_mesh());
    }
    assert!(sim.links_are_symmetric());
    // The author sends to each; nobody passes it on.
    let before = sim.forwards;
    sim.publish(4, 1);
    sim.run_for(Duration::from_secs(1));
    assert_eq!(sim.forwards - before, 8);
    assert!(sim.members.values().all(|m| m.has.contains(&1)));
}

/// 200 members joining 50 ms apart, settled for a minute.
fn settled(members: Id) -> Sim {
    let mut sim = Sim::new(GossipConfig::default());
    for id in 0..members {
        sim.join(id);
        sim.run_for(Duration::from_millis(50));
    }
    sim.run_for(Duration::from_secs(60));
    sim
}

fn assert_bounded_and_whole(sim: &Sim) {
    let degrees: Vec<usize> = sim.members.keys().map(|id| sim.degree(*id)).collect();
    let max = degrees.iter().max().copied().unwrap_or(0);
    let min = degrees.iter().min().copied().unwrap_or(0);
    assert!(max <= 10, "a member holds {max} links");
    assert!(min >= 1, "a member holds no link");
    let mean = degrees.iter().sum::<usize>() as f64 / degrees.len() as f64;
    assert!(mean >= 8.0, "mean degree {mean}");
    assert!(sim.links_are_symmetric());
    assert!(sim.is_connected(), "the room fell apart");
}

#[test]
fn two_hundred_members_keep_at_most_ten_links_and_every_message_reaches_all() {
    let mut sim = settled(200);
    assert_bounded_and_whole(&sim);
    let before = sim.forwards;
    for (n, author) in [0, 41, 87, 130, 199].into_iter().enumerate() {
        sim.publish(author, n as u32);
    }
    // Less than the shortest repair interval: gossip alone.
    sim.run_for(Duration::from_secs(2));
    for (id, member) in &sim.members {
        for m in 0..5 {
            assert!(member.has.contains(&m), "member {id} lacks message {m}");
        }
        assert!(member.duplicates <= 5 * 10, "member {id}");
    }
    let per_message_per_member = (sim.forwards - before) as f64 / 5.0 / 199.0;
    assert!(
        per_message_per_member <= 10.0,
        "{per_message_per_member} copies per member"
    );
}

#[test]
fn under_churn_every_member_ends_with_every_message_over_a_bounded_room() {
    let mut sim = settled(200);
    // 40 leave (20 %) and 40 join, one of each every 250 ms, while a
    // message is written every 250 ms by a member that stays.
    for step in 0..40u32 {
        sim.leave(step * 5 + 1);
        sim.join(200 + step);
        let author = step * 5 + 2;
        sim.publish(author, step);
        sim.run_for(Duration::from_millis(250));
    }
    sim.run_for(Duration::from_secs(60));
    assert_eq!(sim.members.len(), 200);
    assert_bounded_and_whole(&sim);
    for (id, member) in &sim.members {
        for m in 0..40 {
            assert!(member.has.contains(&m), "member {id} lacks message {m}");
        }
    }
    // Those that stayed throughout had the live ones by gossip, not repair:
    // within a few hops of latency.
    for id in (0..200).filter(|id| id % 5 != 1) {
        let member = &sim.members[&id];
        for (m, (_, at)) in &sim.published {
            let took = member.arrived[m].duration_since(*at);
            assert!(
                took < Duration::from_secs(3),
                "member {id}, message {m}: {took:?}"
            );
        }
    }
}

fn halves(a: Id, b: Id) -> bool {
    (a < 100) != (b < 100)
}

#[test]
fn a_split_room_heals_and_both_halves_end_with_every_message() {
    let mut sim = settled(200);
    sim.cut(halves);
    sim.run_for(Duration::from_secs(60));
    for m in 0..3 {
        sim.publish(m * 7, m);
        sim.publish(100 + m * 7, 100 + m);
    }
    sim.run_for(Duration::from_secs(30));
    for (id, member) in &sim.members {
        let own = if *id < 100 { 0 } else { 100 };
        let other = 100 - own;
        for m in 0..3 {
            assert!(member.has.contains(&(own + m)), "member {id}");
            assert!(!member.has.contains(&(other + m)), "the split leaks");
        }
    }
    assert!(!sim.is_connected());
    sim.heal();
    sim.run_for(Duration::from_secs(300));
    for (id, member) in &sim.members {
        for m in [0, 1, 2, 100, 101, 102] {
            assert!(member.has.contains(&m), "member {id} lacks message {m}");
        }
    }
    assert_bounded_and_whole(&sim);
}

/// The broadcast bench of docs/BENCHMARKS.md: per room size, the hops (20 ms
/// each on the simulated network) until 50 %, 99 % and 100 % of the members
/// have a message, and the copies sent per message per member, for gossip
/// and for a full mesh of 50. Run with `cargo test --lib gossip::tests::bench
/// -- --ignored --nocapture`.
#[test]
#[ignore]
fn bench_broadcast_latency_and_copies() {
    let runs: [(&str, Id, usize); 4] = [
        ("gossip", 50, 8),
        ("gossip", 100, 8),
        ("gossip", 200, 8),
        ("full mesh", 50, 49),
    ];
    for (kind, members, active) in runs {
        let config = GossipConfig {
            active,
            max_active: active.max(10),
            ..GossipConfig::default()
        };
        let mut sim = Sim::new(config);
        for id in 0..members {
            sim.join(id);
            sim.run_for(Duration::from_millis(50));
        }
        sim.run_for(Duration::from_secs(60));
        let (mut p50, mut p99, mut p100) = (Vec::new(), Vec::new(), Vec::new());
        let before = sim.forwards;
        let messages = 20;
        for m in 0..messages {
            let author = (m * 7) % members;
            sim.publish(author, 1000 + m);
            let sent = sim.now;
            sim.run_for(Duration::from_secs(2));
            let mut took: Vec<Duration> = sim
                .members
                .iter()
                .filter(|(id, _)| **id != author)
                .map(|(_, member)| member.arrived[&(1000 + m)].duration_since(sent))
                .collect();
            took.sort();
            let at = |share: f64| took[((took.len() as f64 * share).ceil() as usize).max(1) - 1];
            p50.push(at(0.5));
            p99.push(at(0.99));
            p100.push(at(1.0));
        }
        let mean = |v: &[Duration]| v.iter().sum::<Duration>() / v.len() as u32;
        let copies = (sim.forwards - before) as f64 / f64::from(messages) / f64::from(members - 1);
        eprintln!(
            "BENCH | {kind} {members}: 50 % {:?}, 99 % {:?}, 100 % {:?} (20 ms a hop); {copies:.2} copies per message per member",
            mean(&p50),
            mean(&p99),
            mean(&p100)
        );
    }
}
