use super::*;
use crate::identity::Identity;

#[test]
fn a_birthday_probe_counts_only_under_a_recent_introduction_to_its_sender() {
    let peer = Identity::generate().unwrap().peer_id();
    let stranger = Identity::generate().unwrap().peer_id();
    let mut routes = ProbeRoutes::default();
    routes.note_introduction(7, peer, Duration::from_secs(60));
    assert!(routes.is_live(7, &peer));
    // Another attempt id, or the right one from someone else: no.
    assert!(!routes.is_live(8, &peer));
    assert!(!routes.is_live(7, &stranger));
    // Forgotten once its time is up (here: at once).
    routes.note_introduction(9, peer, Duration::ZERO);
    assert!(!routes.is_live(7, &peer));
    // Bounded, the newest kept.
    let last = 100 + 2 * INTRODUCTIONS_KEPT as u64;
    for attempt in 100..=last {
        routes.note_introduction(attempt, peer, Duration::from_secs(60));
    }
    assert!(routes.introduced.len() <= INTRODUCTIONS_KEPT);
    assert!(routes.is_live(last, &peer));
}
