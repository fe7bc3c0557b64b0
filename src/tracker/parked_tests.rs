use super::*;
use crate::identity::Identity;
use crate::protocol::TrackerEvent;
use crate::tracker::TrackerLimits;

fn id() -> PeerId {
    Identity::generate().unwrap().peer_id()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn secs(n: u64) -> Duration {
    Duration::from_secs(n)
}

/// A registry with `a` and `b` registered and in room "r".
fn two_in_a_room() -> (Registry, PeerId, Generation, PeerId) {
    let mut registry = Registry::new(TrackerLimits::default());
    let (a, b) = (id(), id());
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.register(b, "b".into(), addr(2), vec![]).unwrap();
    registry.join(a, "r").unwrap();
    registry.join(b, "r").unwrap();
    (registry, a, gen_a, b)
}

fn knock_parts(ticket: &ParkTicket, seq: u64) -> DoorbellTag {
    let ProbeMessage::Knock { tag, .. } = doorbell::knock(ticket, seq) else {
        panic!("not a knock");
    };
    tag
}

/// `a`, parked in room "r" with `b`, is gone: `outbox` tells `b` only that
/// it left, and the registry no longer holds it.
fn assert_gone_from_the_room(registry: &Registry, outbox: Outbox, a: PeerId, b: PeerId) {
    let left = TrackerEvent::Left {
        room: "r".into(),
        peer_id: a,
    };
    assert_eq!(outbox, vec![(b, left)]);
    assert!(!registry.is_parked(&a));
    assert_eq!(registry.peer_count(), 1);
}

fn door(ticket: &ParkTicket) -> DoorId {
    doorbell::door_of(ticket)
}

fn rings(answer: &ProbeMessage) -> bool {
    matches!(answer, ProbeMessage::Answer { ring: true, .. })
}

#[test]
fn a_parked_registration_keeps_its_rooms_and_survives_its_connections_cleanup() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (_ticket, parked_gen) = registry.park(a, gen_a, t0).unwrap();
    assert_ne!(parked_gen, gen_a);
    // The closing connection's cleanup is a no-op.
    assert!(registry.unregister(a, gen_a).is_empty());
    assert!(registry.is_parked(&a));
    assert_eq!(registry.peer_count(), 2);
    assert_eq!(registry.parked_count(), 1);
    let members = registry.members(b, "r").unwrap();
    assert_eq!(members.len(), 1);
    assert_eq!(members[0].peer_id, a);
    // A stale generation parks nothing.
    assert_eq!(
        registry.park(a, gen_a, t0).unwrap_err(),
        TrackerRefusal::NotRegistered
    );
}

#[test]
fn a_guest_cannot_park() {
    let mut registry = Registry::new(TrackerLimits::default());
    let guest = id();
    let (generation, _) = registry
        .register_as(guest, "g".into(), addr(1), vec![], Presence::Guest)
        .unwrap();
    assert_eq!(
        registry
            .park(guest, generation, Instant::now())
            .unwrap_err(),
        TrackerRefusal::GuestOnly
    );
    assert!(!registry.is_parked(&guest));
}

#[test]
fn parking_gives_up_the_relay_stream_count() {
    let mut registry = Registry::new(TrackerLimits {
        max_relay_streams_per_address: 1,
        ..TrackerLimits::default()
    });
    let (a, b) = (id(), id());
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    let (gen_b, _) = registry.register(b, "b".into(), addr(2), vec![]).unwrap();
    registry.open_relay(a, gen_a).unwrap();
    assert!(registry.open_relay(b, gen_b).is_err());
    registry.park(a, gen_a, Instant::now()).unwrap();
    // The old connection's relay cleanup, with the old generation, is a no-op.
    registry.close_relay(a, gen_a);
    registry.open_relay(b, gen_b).unwrap();
}

#[test]
fn knocks_are_answered_only_when_genuine_and_newer() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let from = addr(9);
    let tag = knock_parts(&ticket, 1);
    let answer = registry
        .knock(&door(&ticket), 1, &tag, from, t0 + secs(1))
        .unwrap();
    assert_eq!(answer, doorbell::answer(&ticket, 1, false));
    // Replayed: the same number again, or an older one.
    assert_eq!(
        registry.knock(&door(&ticket), 1, &tag, from, t0 + secs(2)),
        None
    );
    let tag5 = knock_parts(&ticket, 5);
    assert!(registry
        .knock(&door(&ticket), 5, &tag5, from, t0 + secs(2))
        .is_some());
    let tag3 = knock_parts(&ticket, 3);
    assert_eq!(
        registry.knock(&door(&ticket), 3, &tag3, from, t0 + secs(3)),
        None
    );
    // Forged: another ticket, another door, a number the tag is not for.
    let forged = knock_parts(&ParkTicket::random(), 6);
    assert_eq!(
        registry.knock(&door(&ticket), 6, &forged, from, t0 + secs(3)),
        None
    );
    let elsewhere = ParkTicket::random();
    assert_eq!(
        registry.knock(&door(&elsewhere), 6, &tag5, from, t0 + secs(3)),
        None
    );
    assert_eq!(
        registry.knock(&door(&ticket), 6, &tag5, from, t0 + secs(3)),
        None
    );
    // A door nobody is parked behind gets no answer either, genuine or not.
    let tag_elsewhere = knock_parts(&elsewhere, 7);
    assert_eq!(
        registry.knock(&door(&elsewhere), 7, &tag_elsewhere, from, t0 + secs(3)),
        None
    );
    let _ = b;
    // Ignored knocks kept nothing alive: the last genuine one was at 2 s.
    let grace = KNOCK_EVERY * MISSED_KNOCKS + EXPIRY_SLACK;
    assert!(registry.expire_parked(t0 + secs(2) + grace).is_empty());
    assert!(!registry.expire_parked(t0 + secs(3) + grace).is_empty());
}

#[test]
fn a_registration_not_knocked_for_is_dropped_as_a_lost_connection_is() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let grace = KNOCK_EVERY * MISSED_KNOCKS + EXPIRY_SLACK;
    // Knocks keep it.
    let mut now = t0;
    for seq in 1..=10 {
        now += KNOCK_EVERY;
        let tag = knock_parts(&ticket, seq);
        assert!(registry
            .knock(&door(&ticket), seq, &tag, addr(9), now)
            .is_some());
        assert!(registry.expire_parked(now).is_empty());
    }
    assert!(registry.expire_parked(now + grace).is_empty());
    let outbox = registry.expire_parked(now + grace + Duration::from_millis(1));
    assert_gone_from_the_room(&registry, outbox, a, b);
    // Gone: neither knocks nor resumes bring it back.
    let tag = knock_parts(&ticket, 11);
    assert_eq!(
        registry.knock(&door(&ticket), 11, &tag, addr(9), now + grace),
        None
    );
    assert_eq!(
        registry
            .resume(a, &ticket, addr(1), now + grace)
            .unwrap_err(),
        TrackerRefusal::NotParked
    );
}

#[test]
fn the_knock_interval_sets_the_expiry() {
    let (mut registry, a, gen_a, _) = two_in_a_room();
    registry.set_knock_every(secs(5));
    let t0 = Instant::now();
    registry.park(a, gen_a, t0).unwrap();
    assert!(registry.expire_parked(t0 + secs(20)).is_empty());
    assert_eq!(registry.expire_parked(t0 + secs(21)).len(), 1);
}

#[test]
fn resume_needs_the_ticket_and_the_same_source() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, parked_gen) = registry.park(a, gen_a, t0).unwrap();
    assert_eq!(
        registry
            .resume(a, &ParkTicket::random(), addr(1), t0)
            .unwrap_err(),
        TrackerRefusal::NotParked
    );
    assert_eq!(
        registry.resume(b, &ticket, addr(2), t0).unwrap_err(),
        TrackerRefusal::NotParked
    );
    let elsewhere = SocketAddr::from(([192, 0, 2, 7], 1));
    assert_eq!(
        registry.resume(a, &ticket, elsewhere, t0).unwrap_err(),
        TrackerRefusal::NotParked
    );
    // Still parked after the failures; the right ticket from a new port of
    // the same address takes it back.
    assert!(registry.is_parked(&a));
    let (generation, held) = registry.resume(a, &ticket, addr(4444), t0).unwrap();
    assert!(generation > parked_gen && held.is_empty());
    assert!(!registry.is_parked(&a));
    let members = registry.members(b, "r").unwrap();
    assert_eq!(members[0].reflexive, addr(4444));
    // Once: the ticket is spent.
    assert_eq!(
        registry.resume(a, &ticket, addr(4444), t0).unwrap_err(),
        TrackerRefusal::NotParked
    );
    // The resumed registration dies with its new connection.
    assert_eq!(registry.unregister(a, generation).len(), 1);
}

#[test]
fn a_new_registration_replaces_a_parked_one() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let (_, outbox) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    assert_eq!(outbox.len(), 1);
    assert_eq!(outbox[0].0, b);
    assert!(!registry.is_parked(&a));
    assert_eq!(registry.peer_count(), 2);
    assert_eq!(
        registry.resume(a, &ticket, addr(1), t0).unwrap_err(),
        TrackerRefusal::NotParked
    );
}

#[test]
fn an_introduction_to_a_parked_peer_is_held_rung_and_handed_over_on_resume() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let knocker = addr(9);
    let tag = knock_parts(&ticket, 4);
    registry
        .knock(&door(&ticket), 4, &tag, knocker, t0)
        .unwrap();
    let Introduction::New { attempt, .. } = registry.introduce_at(b, a, 77, t0).unwrap() else {
        panic!("not a new attempt");
    };
    let ring = registry.hold_introduction(a, attempt, b, t0);
    assert_eq!(
        ring,
        Holding::Held(Some(Ring {
            to: knocker,
            message: doorbell::answer(&ticket, 4, true)
        }))
    );
    // Rung again every second, five rings in all.
    assert!(registry
        .poll_rings(t0 + Duration::from_millis(500))
        .is_empty());
    let mut rung = 1;
    for n in 1..=10 {
        rung += registry.poll_rings(t0 + secs(n)).len();
    }
    assert_eq!(rung, usize::from(RINGS));
    // A knock's answer rings while it is held.
    let tag = knock_parts(&ticket, 5);
    let answer = registry
        .knock(&door(&ticket), 5, &tag, knocker, t0 + secs(2))
        .unwrap();
    assert!(rings(&answer));
    let (_, held) = registry.resume(a, &ticket, addr(1), t0 + secs(3)).unwrap();
    assert_eq!(held.len(), 1);
    assert_eq!(held[0].attempt, 77);
    assert_eq!(held[0].dialer.peer_id, b);
    assert_eq!(held[0].acceptor.peer_id, a);
}

#[test]
fn rings_follow_the_knocks_address_and_stop_on_resume() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let Holding::Held(Some(ring)) = registry.hold_introduction(a, 1, b, t0) else {
        panic!("not rung");
    };
    // No knock yet: the ring goes where the connection came from.
    assert_eq!(ring.to, addr(1));
    let tag = knock_parts(&ticket, 1);
    registry
        .knock(&door(&ticket), 1, &tag, addr(9), t0)
        .unwrap();
    let rings_now = registry.poll_rings(t0 + secs(1));
    assert_eq!(rings_now.len(), 1);
    assert_eq!(rings_now[0].to, addr(9));
    registry.resume(a, &ticket, addr(1), t0 + secs(1)).unwrap();
    assert!(registry.poll_rings(t0 + secs(2)).is_empty());
}

#[test]
fn held_introductions_are_bounded_and_aged() {
    let mut registry = Registry::new(TrackerLimits::default());
    let a = id();
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.join(a, "r").unwrap();
    let dialers: Vec<PeerId> = (0..MAX_HELD as u16 + 4).map(|_| id()).collect();
    for (n, dialer) in dialers.iter().enumerate() {
        registry
            .register(*dialer, "d".into(), addr(100 + n as u16), vec![])
            .unwrap();
        registry.join(*dialer, "r").unwrap();
    }
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    for (n, dialer) in dialers.iter().enumerate() {
        registry.introduce(*dialer, a).unwrap();
        assert!(matches!(
            registry.hold_introduction(a, n as u64, *dialer, t0),
            Holding::Held(_)
        ));
    }
    let (_, held) = registry.resume(a, &ticket, addr(1), t0 + secs(1)).unwrap();
    assert_eq!(held.len(), MAX_HELD);
    // The oldest went first.
    let attempts: Vec<u64> = held.iter().map(|h| h.attempt).collect();
    let want: Vec<u64> = (4..MAX_HELD as u64 + 4).collect();
    assert_eq!(attempts, want);

    // Aged: held longer than HELD_FOR, dropped; and no more rings or
    // ringing answers for it.
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.join(a, "r").unwrap();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    registry.introduce(dialers[0], a).unwrap();
    registry.hold_introduction(a, 1, dialers[0], t0);
    let later = t0 + HELD_FOR + secs(1);
    assert!(registry.poll_rings(later).is_empty());
    let tag = knock_parts(&ticket, 1);
    assert!(!rings(
        &registry
            .knock(&door(&ticket), 1, &tag, addr(9), later)
            .unwrap()
    ));
    let (_, held) = registry.resume(a, &ticket, addr(1), later).unwrap();
    assert!(held.is_empty());
}

#[test]
fn a_held_introduction_whose_dialer_left_is_not_handed_over() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    let Introduction::New { attempt, .. } = registry.introduce_at(b, a, 5, t0).unwrap() else {
        panic!("not a new attempt");
    };
    registry.hold_introduction(a, attempt, b, t0);
    // b's connection died and it came back: its old attempt died with it.
    let gen_b = registry.register(b, "b".into(), addr(2), vec![]).unwrap().0;
    assert!(gen_b > 0);
    let (_, held) = registry.resume(a, &ticket, addr(1), t0).unwrap();
    assert!(held.is_empty());
}

#[test]
fn a_peer_not_parked_holds_nothing() {
    let (mut registry, a, _, b) = two_in_a_room();
    assert_eq!(
        registry.hold_introduction(a, 1, b, Instant::now()),
        Holding::NotParked
    );
}

#[test]
fn a_parked_peer_is_rung_at_most_once_a_second_however_many_ask() {
    let mut registry = Registry::new(TrackerLimits::default());
    let a = id();
    let (gen_a, _) = registry.register(a, "a".into(), addr(1), vec![]).unwrap();
    registry.join(a, "r").unwrap();
    let askers: Vec<PeerId> = (0..8).map(|_| id()).collect();
    for (n, asker) in askers.iter().enumerate() {
        registry
            .register(*asker, "x".into(), addr(10 + n as u16), vec![])
            .unwrap();
        registry.join(*asker, "r").unwrap();
    }
    let t0 = Instant::now();
    registry.park(a, gen_a, t0).unwrap();
    let mut rung = Vec::new();
    // Eight introductions asked over 2 s, the sweep polled every 250 ms.
    for step in 0..40u32 {
        let now = t0 + Duration::from_millis(250) * step;
        if let Some(asker) = askers.get(step as usize / 2) {
            registry.introduce(*asker, a).unwrap();
            if let Holding::Held(Some(_)) = registry.hold_introduction(a, 1, *asker, now) {
                rung.push(now);
            }
        }
        rung.extend(registry.poll_rings(now).iter().map(|_| now));
    }
    assert!(
        rung.windows(2).all(|w| w[1] - w[0] >= RING_EVERY),
        "{rung:?}"
    );
    // The last introduction was held at 3.75 s: five rings from then on.
    let last_held = t0 + Duration::from_millis(250) * 15;
    let after = rung.iter().filter(|at| **at >= last_held).count();
    assert_eq!(after, usize::from(RINGS), "{rung:?}");
}

#[test]
fn a_genuine_leave_drops_the_parked_registration_at_once() {
    let (mut registry, a, gen_a, b) = two_in_a_room();
    let t0 = Instant::now();
    let (ticket, _) = registry.park(a, gen_a, t0).unwrap();
    // Forged: another ticket's tag on this door, or a knock's tag.
    let ProbeMessage::Leave { tag: forged, .. } = doorbell::leave(&ParkTicket::random()) else {
        panic!("not a leave");
    };
    assert_eq!(registry.leave_parked(&door(&ticket), &forged), None);
    let knock_tag = knock_parts(&ticket, 1);
    assert_eq!(registry.leave_parked(&door(&ticket), &knock_tag), None);
    assert!(registry.is_parked(&a));
    let ProbeMessage::Leave { door: at, tag } = doorbell::leave(&ticket) else {
        panic!("not a leave");
    };
    let outbox = registry.leave_parked(&at, &tag).unwrap();
    assert_gone_from_the_room(&registry, outbox, a, b);
    // Replayed: nobody is behind the door any more.
    assert_eq!(registry.leave_parked(&at, &tag), None);
    let knock_tag = knock_parts(&ticket, 2);
    assert_eq!(registry.knock(&at, 2, &knock_tag, addr(9), t0), None);
}
