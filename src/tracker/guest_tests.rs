//! The registry's rules for findable members and guests: who may be
//! introduced to whom without a shared room, and what a guest may not do.

use super::*;
use crate::identity::Identity;

fn id() -> PeerId {
    Identity::generate().unwrap().peer_id()
}

fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn registry_with(limits: TrackerLimits) -> Registry {
    Registry::new(limits)
}

#[test]
fn a_findable_member_takes_introductions_from_anyone_registered() {
    let mut registry = registry_with(TrackerLimits::default());
    let (findable, member, guest, plain) = (id(), id(), id(), id());
    registry
        .register_as(findable, "f".into(), addr(1), vec![], Presence::Findable)
        .unwrap();
    registry
        .register(member, "m".into(), addr(2), vec![])
        .unwrap();
    registry
        .register_as(guest, "g".into(), addr(3), vec![], Presence::Guest)
        .unwrap();
    registry
        .register(plain, "p".into(), addr(4), vec![])
        .unwrap();
    registry.introduce(member, findable).unwrap();
    let (from, to) = registry.introduce(guest, findable).unwrap();
    assert_eq!((from.peer_id, to.peer_id), (guest, findable));
    // Introduced: the relay may carry their packets both ways.
    registry.may_relay(&guest, &findable).unwrap();
    registry.may_relay(&findable, &guest).unwrap();
    // A plain member is reached only through a room, by anyone.
    assert_eq!(
        registry.introduce(guest, plain).unwrap_err(),
        TrackerRefusal::NotFindable
    );
    assert_eq!(
        registry.introduce(member, plain).unwrap_err(),
        TrackerRefusal::NoSharedRoom
    );
    // Nor is a guest, which is never findable.
    assert_eq!(
        registry.introduce(findable, guest).unwrap_err(),
        TrackerRefusal::NoSharedRoom
    );
}

#[test]
fn a_guest_joins_no_room_and_is_listed_nowhere() {
    let mut registry = registry_with(TrackerLimits::default());
    let (guest, member) = (id(), id());
    registry
        .register_as(guest, "g".into(), addr(1), vec![], Presence::Guest)
        .unwrap();
    registry
        .register(member, "m".into(), addr(2), vec![])
        .unwrap();
    registry.join(member, "r").unwrap();
    assert_eq!(
        registry.join(guest, "r").unwrap_err(),
        TrackerRefusal::GuestOnly
    );
    assert_eq!(
        registry.members(guest, "r").unwrap_err(),
        TrackerRefusal::GuestOnly
    );
    assert!(registry.members(member, "r").unwrap().is_empty());
}

#[test]
fn guests_are_bounded_in_number_and_in_introductions() {
    let limits = TrackerLimits {
        max_guests: 2,
        guest_introductions: 2,
        ..TrackerLimits::default()
    };
    let mut registry = registry_with(limits);
    let findable: Vec<PeerId> = (0..3).map(|_| id()).collect();
    for (i, peer) in findable.iter().enumerate() {
        registry
            .register_as(
                *peer,
                "f".into(),
                addr(10 + i as u16),
                vec![],
                Presence::Findable,
            )
            .unwrap();
    }
    let (g1, g2, g3) = (id(), id(), id());
    let (gen1, _) = registry
        .register_as(g1, "g".into(), addr(1), vec![], Presence::Guest)
        .unwrap();
    registry
        .register_as(g2, "g".into(), addr(2), vec![], Presence::Guest)
        .unwrap();
    assert_eq!(
        registry
            .register_as(g3, "g".into(), addr(3), vec![], Presence::Guest)
            .unwrap_err(),
        TrackerRefusal::TooManyGuests { limit: 2 }
    );
    // A guest registering again takes its own place.
    registry
        .register_as(g2, "g".into(), addr(2), vec![], Presence::Guest)
        .unwrap();
    registry.introduce(g1, findable[0]).unwrap();
    registry.introduce(g1, findable[1]).unwrap();
    // The same peer again is not a new one.
    registry.introduce(g1, findable[1]).unwrap();
    assert_eq!(
        registry.introduce(g1, findable[2]).unwrap_err(),
        TrackerRefusal::TooManyGuestIntroductions { limit: 2 }
    );
    // A guest gone frees its place.
    registry.unregister(g1, gen1);
    registry
        .register_as(g3, "g".into(), addr(3), vec![], Presence::Guest)
        .unwrap();
}
