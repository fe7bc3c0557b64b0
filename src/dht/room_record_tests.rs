//! Room records: sealing, signatures, merging, and refusing garbage.

use super::*;

const NOW: u64 = 1_800_000_000;

fn member() -> Identity {
    Identity::generate().unwrap()
}

#[test]
fn a_slot_seals_and_opens_with_the_rooms_key_only() {
    let spot = RoomSpot::open("lobby");
    let (a, b) = (member(), member());
    let entries = vec![
        MemberEntry::sign(&a, &spot, NOW),
        MemberEntry::sign(&b, &spot, NOW - 5),
    ];
    let value = spot.seal(2, &entries).unwrap();
    assert!(value.len() <= MAX_VALUE_LEN);
    assert_eq!(spot.open_value(2, &value).unwrap(), entries);
    // Same name, same spot; another name, another key and no opening.
    assert_eq!(RoomSpot::open("lobby").public_key(), spot.public_key());
    let other = RoomSpot::open("lobby2");
    assert_ne!(other.public_key(), spot.public_key());
    assert_eq!(other.open_value(2, &value), Err(RoomRecordError::Unsealed));
    // Bound to its slot: moved to another salt it does not open.
    assert_eq!(spot.open_value(1, &value), Err(RoomRecordError::Unsealed));
    // Sealed twice, different bytes (random nonce), same entries.
    assert_ne!(spot.seal(2, &entries).unwrap(), value);
}

#[test]
fn a_password_rooms_spot_is_not_the_open_rooms_of_the_same_name() {
    let key = crate::room_key::RoomKey::derive("vault", "pw");
    let spot = RoomSpot::from_secret(&key.dht_secret());
    assert_ne!(spot.public_key(), RoomSpot::open("vault").public_key());
    let again = crate::room_key::RoomKey::derive("vault", "pw");
    assert_eq!(
        RoomSpot::from_secret(&again.dht_secret()).public_key(),
        spot.public_key()
    );
    let wrong = crate::room_key::RoomKey::derive("vault", "pw2");
    assert_ne!(
        RoomSpot::from_secret(&wrong.dht_secret()).public_key(),
        spot.public_key()
    );
}

#[test]
fn a_full_slot_holds_the_maximum_within_bep44s_limit() {
    let spot = RoomSpot::open("big");
    let entries: Vec<MemberEntry> = (0..MAX_ENTRIES + 3)
        .map(|i| MemberEntry::sign(&member(), &spot, NOW - i as u64))
        .collect();
    let value = spot.seal(0, &entries).unwrap();
    assert_eq!(value.len(), MAX_VALUE_LEN);
    const { assert!(MAX_VALUE_LEN <= crate::dht::record::MAX_VALUE_LEN) };
    assert_eq!(spot.open_value(0, &value).unwrap().len(), MAX_ENTRIES);
}

#[test]
fn an_entry_signed_for_another_room_or_by_another_key_is_dropped() {
    let spot = RoomSpot::open("lobby");
    let elsewhere = RoomSpot::open("elsewhere");
    let (a, b) = (member(), member());
    let honest = MemberEntry::sign(&a, &spot, NOW);
    // Replayed from another room: its signature names that room's key.
    let replayed = MemberEntry::sign(&b, &elsewhere, NOW);
    // A key holder puts b's id on a's signature.
    let mut forged = MemberEntry::sign(&a, &spot, NOW);
    forged.peer = b.peer_id();
    // Or moves a's entry in time.
    let mut redated = honest;
    redated.at += 1;
    let value = spot.seal(0, &[honest, replayed, forged, redated]).unwrap();
    assert_eq!(spot.open_value(0, &value).unwrap(), vec![honest]);
}

#[test]
fn merging_puts_mine_first_and_drops_stale_duplicate_and_surplus_entries() {
    let spot = RoomSpot::open("lobby");
    let me = member();
    let old_mine = MemberEntry::sign(&me, &spot, NOW - 100);
    let stale = MemberEntry::sign(&member(), &spot, NOW - MAX_AGE_SECS - 1);
    let future = MemberEntry::sign(&member(), &spot, NOW + MAX_SKEW_SECS + 1);
    let other = member();
    let twice_old = MemberEntry::sign(&other, &spot, NOW - 50);
    let twice_new = MemberEntry::sign(&other, &spot, NOW - 10);
    let mine = MemberEntry::sign(&me, &spot, NOW);
    let merged = merge(&[old_mine, stale, future, twice_old, twice_new], mine, NOW);
    assert_eq!(merged, vec![mine, twice_new]);

    let crowd: Vec<MemberEntry> = (0..20)
        .map(|i| MemberEntry::sign(&member(), &spot, NOW - 20 + i))
        .collect();
    let merged = merge(&crowd, mine, NOW);
    assert_eq!(merged.len(), MAX_ENTRIES);
    assert_eq!(merged[0], mine);
    // The newest others stay.
    assert!(merged[1..].iter().all(|e| e.at >= NOW - 7));
    assert_eq!(without(&merged, &me.peer_id(), NOW).len(), MAX_ENTRIES - 1);
}

#[test]
fn garbage_is_refused_with_a_reason_and_never_panics() {
    let spot = RoomSpot::open("lobby");
    assert_eq!(spot.open_value(0, &[]), Err(RoomRecordError::Empty));
    assert_eq!(spot.open_value(0, &[9]), Err(RoomRecordError::Version(9)));
    assert_eq!(
        spot.open_value(0, &[ROOM_RECORD_VERSION, 1, 2]),
        Err(RoomRecordError::Truncated)
    );
    let value = spot
        .seal(0, &[MemberEntry::sign(&member(), &spot, NOW)])
        .unwrap();
    for at in 0..value.len() {
        let mut bytes = value.clone();
        bytes[at] ^= 0x10;
        assert!(spot.open_value(0, &bytes).is_err(), "flip at {at}");
    }
    for cut in 0..value.len() {
        assert!(spot.open_value(0, &value[..cut]).is_err(), "cut at {cut}");
    }
}

#[test]
fn members_spread_over_the_slots() {
    let spot = RoomSpot::open("lobby");
    let mut used = [0usize; SLOTS as usize];
    for _ in 0..200 {
        used[usize::from(spot.slot_of(&member().peer_id()))] += 1;
    }
    assert!(used.iter().all(|n| *n > 0), "{used:?}");
    assert_eq!(salt(3), b"pg-room-v1/3".to_vec());
}

#[test]
fn damaged_entries_inside_a_sealed_value_are_refused_or_dropped_never_a_panic() {
    // What a key holder could seal: any bytes. Mutations of a real
    // plaintext and random bytes go through the entry decoder.
    let spot = RoomSpot::open("lobby");
    let entries: Vec<MemberEntry> = (0..3)
        .map(|i| MemberEntry::sign(&member(), &spot, NOW - i))
        .collect();
    let mut plain = vec![entries.len() as u8];
    for entry in &entries {
        plain.extend_from_slice(entry.peer.as_bytes());
        plain.extend_from_slice(&entry.at.to_be_bytes());
        plain.extend_from_slice(&entry.signature);
    }
    assert_eq!(spot.decode_entries(&plain).unwrap(), entries);
    let mut rng: u64 = 0x2545_f491_4f6c_dd1d;
    let mut next = move || {
        rng ^= rng << 13;
        rng ^= rng >> 7;
        rng ^= rng << 17;
        rng
    };
    for round in 0..3000 {
        let input: Vec<u8> = if round % 4 == 0 {
            let len = (next() % 1200) as usize;
            (0..len).map(|_| next() as u8).collect()
        } else {
            let mut bytes = plain.clone();
            let at = (next() as usize) % bytes.len();
            bytes[at] ^= 1 << (next() % 8);
            if round % 3 == 0 {
                bytes.truncate((next() as usize) % bytes.len());
            }
            bytes
        };
        if let Ok(decoded) = spot.decode_entries(&input) {
            assert!(decoded.len() <= MAX_ENTRIES);
            // Only genuine entries survive a flipped bit.
            assert!(decoded.iter().all(|e| entries.contains(e)), "{round}");
        }
    }
}
