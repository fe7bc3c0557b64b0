use super::*;
use crate::identity::Identity;

fn id() -> PeerId {
    Identity::generate().unwrap().peer_id()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

#[test]
fn join_tells_members_and_leave_or_death_tells_them_again() {
    let mut registry = Registry::new(TrackerLimits::default());
    let (a, b) = (id(), id());
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.register(b, "b".into(), addr(2), vec![]).unwrap();
    let (members, outbox) = registry.join(a, "r").unwrap();
    assert!(members.is_empty() && outbox.is_empty());
    let (members, outbox) = registry.join(b, "r").unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].peer_id, a);
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, a);
    let outbox = registry.unregister(a, gen_a);
    assert_eq!(
        outbox,
        vec![(
            b,
            TrackerEvent::Left {
                room: "r".into(),
                peer_id: a
            }
        )]
    );
    assert_eq!(registry.members(b, "r").unwrap(), vec![]);
}

#[test]
fn introductions_need_a_shared_room() {
    let mut registry = Registry::new(TrackerLimits::default());
    let (a, b, c) = (id(), id(), id());
    for (peer, port) in [(a, 1), (b, 2), (c, 3)] {
        registry
            .register(peer, "x".into(), addr(port), vec![])
            .unwrap();
    }
    registry.join(a, "r").unwrap();
    registry.join(b, "r").unwrap();
    registry.join(c, "other").unwrap();
    let (from, to) = registry.introduce(a, b).unwrap();
    assert_eq!((from.peer_id, to.peer_id), (a, b));
    assert_eq!(
        registry.introduce(a, c).unwrap_err(),
        TrackerRefusal::NoSharedRoom
    );
    assert_eq!(
        registry.introduce(a, id()).unwrap_err(),
        TrackerRefusal::UnknownPeer
    );
}

#[test]
fn relaying_needs_an_introduction_or_a_shared_room_and_ends_with_the_registration() {
    let mut registry = Registry::new(TrackerLimits::default());
    let (a, b, c) = (id(), id(), id());
    let mut generations = Vec::new();
    for (peer, port, room) in [(a, 1, "r"), (b, 2, "r"), (c, 3, "elsewhere")] {
        let (generation, _) = registry
            .register(peer, "x".into(), addr(port), vec![])
            .unwrap();
        generations.push(generation);
        registry.join(peer, room).unwrap();
    }
    // A shared room is enough, both ways.
    assert_eq!(registry.may_relay(&a, &b), Ok(()));
    assert_eq!(registry.may_relay(&b, &a), Ok(()));
    // Strangers are refused.
    assert_eq!(registry.may_relay(&a, &c), Err(RelayRefusal::NotIntroduced));
    assert_eq!(registry.may_relay(&c, &b), Err(RelayRefusal::NotIntroduced));
    // An introduction outlives the room.
    registry.introduce(a, b).unwrap();
    registry.leave(b, "r").unwrap();
    registry.join(b, "other").unwrap();
    assert_eq!(registry.may_relay(&a, &b), Ok(()));
    assert_eq!(registry.may_relay(&b, &a), Ok(()));
    registry.unregister(b, generations[1]);
    assert_eq!(registry.may_relay(&a, &b), Err(RelayRefusal::Offline));
    // A new registration of b starts without introductions.
    registry.register(b, "b".into(), addr(4), vec![]).unwrap();
    assert_eq!(registry.may_relay(&b, &a), Err(RelayRefusal::NotIntroduced));
}

#[test]
fn a_request_crossing_the_peers_own_is_answered_with_its_introduction() {
    let mut registry = Registry::new(TrackerLimits::default());
    let (a, b, c) = (id(), id(), id());
    let mut generations = Vec::new();
    for (peer, port) in [(a, 1), (b, 2), (c, 3)] {
        let (generation, _) = registry
            .register(peer, "x".into(), addr(port), vec![])
            .unwrap();
        generations.push(generation);
        registry.join(peer, "r").unwrap();
    }
    let now = Instant::now();
    let new = |attempt, dialer: PeerId, acceptor: PeerId| {
        move |introduction: Introduction| match introduction {
            Introduction::New {
                attempt: got,
                dialer: d,
                acceptor: x,
            } => got == attempt && d.peer_id == dialer && x.peer_id == acceptor,
            Introduction::Crossed { .. } => false,
        }
    };
    // a asks for b: a new attempt, a dials.
    let first = registry.introduce_at(a, b, 1, now).unwrap();
    assert!(new(1, a, b)(first));
    // b asks for a before that reached it: the same attempt answers.
    let crossed = registry.introduce_at(b, a, 2, now + Duration::from_millis(30));
    assert_eq!(crossed, Ok(Introduction::Crossed { attempt: 1 }));
    // The same direction again is a new attempt (a retry), and so is
    // another pair.
    let again = registry.introduce_at(a, b, 3, now + Duration::from_millis(40));
    assert!(new(3, a, b)(again.unwrap()));
    let other = registry.introduce_at(c, a, 4, now + Duration::from_millis(40));
    assert!(new(4, c, a)(other.unwrap()));
    // Once the window has passed, b's request makes its own attempt.
    let late = now + Duration::from_millis(40) + CROSSING_WINDOW;
    assert!(new(5, b, a)(registry.introduce_at(b, a, 5, late).unwrap()));
    // A request that would be refused is refused, crossing or not.
    let d = id();
    registry.register(d, "d".into(), addr(5), vec![]).unwrap();
    assert_eq!(
        registry.introduce_at(d, c, 6, late),
        Err(TrackerRefusal::NoSharedRoom)
    );
    // The attempts of a peer that left die with it: its new registration's
    // request makes a new one.
    registry.introduce_at(b, c, 7, late).unwrap();
    registry.unregister(c, generations[2]);
    registry.register(c, "x".into(), addr(3), vec![]).unwrap();
    registry.join(c, "r").unwrap();
    let fresh = registry.introduce_at(c, b, 8, late + Duration::from_millis(10));
    assert!(new(8, c, b)(fresh.unwrap()));
}

#[test]
fn stale_connection_cleanup_keeps_the_newer_registration() {
    let mut registry = Registry::new(TrackerLimits::default());
    let a = id();
    let (old, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    let (new, _) = registry.register(a, "a".into(), addr(2), vec![]).unwrap();
    registry.join(a, "r").unwrap();
    assert!(registry.unregister(a, old).is_empty());
    assert_eq!(registry.peer_count(), 1);
    registry.unregister(a, new);
    assert_eq!(registry.peer_count(), 0);
    assert_eq!(registry.room_count(), 0);
}

#[test]
fn limits_are_refusals_that_name_the_limit() {
    let limits = TrackerLimits {
        max_peers: 2,
        max_rooms: 1,
        max_room_members: 1,
        max_rooms_per_peer: 1,
        ..TrackerLimits::default()
    };
    let mut registry = Registry::new(limits);
    let (a, b, c) = (id(), id(), id());
    registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.register(b, "b".into(), addr(2), vec![]).unwrap();
    assert_eq!(
        registry
            .register(c, "c".into(), addr(3), vec![])
            .unwrap_err(),
        TrackerRefusal::TooManyPeers { limit: 2 }
    );
    registry.join(a, "r").unwrap();
    assert_eq!(
        registry.join(b, "r").unwrap_err(),
        TrackerRefusal::RoomFull { limit: 1 }
    );
    assert_eq!(
        registry.join(b, "s").unwrap_err(),
        TrackerRefusal::TooManyRooms { limit: 1 }
    );
    assert_eq!(
        registry.join(a, "s").unwrap_err(),
        TrackerRefusal::TooManyRoomsForPeer { limit: 1 }
    );
    assert_eq!(
        registry.join(c, "r").unwrap_err(),
        TrackerRefusal::NotRegistered
    );
    assert!(matches!(
        registry.register(c, "".into(), addr(3), vec![]),
        Err(TrackerRefusal::InvalidName(_))
    ));
}

fn from(ip: [u8; 4], port: u16) -> SocketAddr {
    SocketAddr::from((ip, port))
}

#[test]
fn sixty_four_identities_from_one_address_cannot_fill_the_tracker_with_rooms() {
    let mut registry = Registry::new(TrackerLimits::default());
    let attacker = [192, 0, 2, 66];
    let mut refused = Vec::new();
    for i in 0..64u16 {
        let peer = id();
        registry
            .register(peer, "x".into(), from(attacker, 1000 + i), vec![])
            .unwrap();
        for room in 0..16 {
            if let Err(refusal) = registry.join(peer, &format!("junk-{i}-{room}")) {
                refused.push(refusal);
            }
        }
    }
    let limit = TrackerLimits::default().max_rooms_per_address;
    assert_eq!(registry.room_count(), limit as usize);
    assert_eq!(refused.len(), 64 * 16 - limit as usize);
    assert!(refused
        .iter()
        .all(|r| *r == TrackerRefusal::TooManyRoomsFromAddress { limit }));
    // Someone elsewhere still creates rooms, and the attacker may still
    // join them (that creates nothing).
    let honest = id();
    registry
        .register(honest, "h".into(), from([198, 51, 100, 7], 4000), vec![])
        .unwrap();
    registry.join(honest, "real").unwrap();
    let attacker_peer = id();
    registry
        .register(attacker_peer, "x".into(), from(attacker, 9), vec![])
        .unwrap();
    registry.join(attacker_peer, "real").unwrap();
}

#[test]
fn registrations_per_address_are_limited_and_freed_by_leaving() {
    let limits = TrackerLimits {
        max_peers_per_address: 2,
        ..TrackerLimits::default()
    };
    let mut registry = Registry::new(limits);
    let nat = [203, 0, 113, 1];
    let (a, b, c) = (id(), id(), id());
    registry
        .register(a, "a".into(), from(nat, 1), vec![])
        .unwrap();
    registry
        .register(b, "b".into(), from(nat, 2), vec![])
        .unwrap();
    assert_eq!(
        registry
            .register(c, "c".into(), from(nat, 3), vec![])
            .unwrap_err(),
        TrackerRefusal::TooManyPeersFromAddress { limit: 2 }
    );
    // Another address is not affected.
    registry
        .register(c, "c".into(), from([203, 0, 113, 2], 3), vec![])
        .unwrap();
    // A restart of a registered peer from the same address takes its
    // own place.
    let (gen_a, _) = registry
        .register(a, "a".into(), from(nat, 4), vec![])
        .unwrap();
    registry.unregister(a, gen_a);
    let d = id();
    registry
        .register(d, "d".into(), from(nat, 5), vec![])
        .unwrap();
    assert_eq!(registry.peer_count(), 3);
}

#[test]
fn a_room_counts_against_an_address_only_while_it_alone_keeps_it() {
    let limits = TrackerLimits {
        max_rooms_per_address: 1,
        ..TrackerLimits::default()
    };
    let mut registry = Registry::new(limits);
    let (here, there) = ([192, 0, 2, 1], [192, 0, 2, 2]);
    let (a, b) = (id(), id());
    registry
        .register(a, "a".into(), from(here, 1), vec![])
        .unwrap();
    registry
        .register(b, "b".into(), from(there, 1), vec![])
        .unwrap();
    registry.join(a, "first").unwrap();
    assert_eq!(
        registry.join(a, "second").unwrap_err(),
        TrackerRefusal::TooManyRoomsFromAddress { limit: 1 }
    );
    // Once someone from elsewhere is in it, the room is not only `here`'s.
    registry.join(b, "first").unwrap();
    assert_eq!(registry.sources.rooms_of(SourceKey::of(here.into())), 0);
    registry.join(a, "second").unwrap();
    // When b leaves, "first" is here's again: kept, but no third room.
    registry.leave(b, "first").unwrap();
    assert_eq!(registry.room_count(), 2);
    assert_eq!(
        registry.join(a, "third").unwrap_err(),
        TrackerRefusal::TooManyRoomsFromAddress { limit: 1 }
    );
    registry.leave(a, "first").unwrap();
    registry.leave(a, "second").unwrap();
    registry.join(a, "third").unwrap();
}

#[test]
fn relay_streams_per_address_are_limited_and_end_with_the_registration() {
    let limits = TrackerLimits {
        max_relay_streams_per_address: 1,
        ..TrackerLimits::default()
    };
    let mut registry = Registry::new(limits);
    let nat = [203, 0, 113, 9];
    let (a, b) = (id(), id());
    let (gen_a, _) = registry
        .register(a, "a".into(), from(nat, 1), vec![])
        .unwrap();
    let (gen_b, _) = registry
        .register(b, "b".into(), from(nat, 2), vec![])
        .unwrap();
    registry.open_relay(a, gen_a).unwrap();
    let refusal = registry.open_relay(b, gen_b).unwrap_err();
    assert!(
        refusal.contains("too many relay streams from your address (1)"),
        "{refusal}"
    );
    registry.close_relay(a, gen_a);
    registry.open_relay(b, gen_b).unwrap();
    registry.unregister(b, gen_b);
    registry.open_relay(a, gen_a).unwrap();
    // A stale generation opens nothing.
    assert!(registry.open_relay(a, gen_a + 100).is_err());
}
