//! Error notices about what a peer did, rate-limited per peer and kind: the
//! first is shown at once, the same kind about the same peer at most once
//! per [`NOTICE_INTERVAL`] after that, saying how many were not shown. A
//! peer sending thousands of bad frames costs the user one line every few
//! seconds, not thousands. Pure: the caller passes the time.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::identity::PeerId;

/// The same notice about the same peer is shown at most this often.
pub const NOTICE_INTERVAL: Duration = Duration::from_secs(10);
/// (peer, kind) pairs remembered at most; beyond, those quiet for an
/// interval are forgotten (nothing is lost: they would be shown anyway).
const REMEMBERED: usize = 1024;

#[derive(Default)]
pub struct Notices {
    /// When each was last shown, and how many were held back since.
    last: HashMap<(PeerId, &'static str), (Instant, u64)>,
}

impl Notices {
    /// Whether a notice of `kind` about `peer` is shown now; if so, how
    /// many like it were held back since the last one shown.
    pub fn admit(&mut self, peer: PeerId, kind: &'static str, now: Instant) -> Option<u64> {
        if let Some((shown_at, held)) = self.last.get_mut(&(peer, kind)) {
            if now.saturating_duration_since(*shown_at) < NOTICE_INTERVAL {
                *held += 1;
                return None;
            }
            let held_back = *held;
            *shown_at = now;
            *held = 0;
            return Some(held_back);
        }
        if self.last.len() >= REMEMBERED {
            self.last
                .retain(|_, (at, _)| now.saturating_duration_since(*at) < NOTICE_INTERVAL);
        }
        if self.last.len() < REMEMBERED {
            self.last.insert((peer, kind), (now, 0));
        }
        Some(0)
    }
}

/// Notices of one kind a peer may cause at once (joins and leaves of
/// rooms): a burst of [`MemberBudget::BURST`], then one more per
/// [`NOTICE_INTERVAL`]. A peer toggling its rooms in a loop costs the user a
/// few lines, while a person joining and leaving rooms is never held back.
#[derive(Default)]
pub struct MemberBudget {
    /// Per peer: notices left, and when the last one was refilled.
    left: HashMap<PeerId, (u32, Instant)>,
}

impl MemberBudget {
    pub const BURST: u32 = 8;

    /// Whether a notice caused by `peer` is shown at `now`.
    pub fn admit(&mut self, peer: PeerId, now: Instant) -> bool {
        if self.left.len() >= REMEMBERED && !self.left.contains_key(&peer) {
            // Those refilled to the full burst by now lose nothing.
            let full = NOTICE_INTERVAL * Self::BURST;
            self.left
                .retain(|_, (_, at)| now.saturating_duration_since(*at) < full);
        }
        let (left, at) = self.left.entry(peer).or_insert((Self::BURST, now));
        let earned = now.saturating_duration_since(*at).as_secs() / NOTICE_INTERVAL.as_secs();
        if earned > 0 {
            *left = (*left).saturating_add(earned as u32).min(Self::BURST);
            *at = now;
        }
        if *left == 0 {
            return false;
        }
        *left -= 1;
        true
    }
}

/// `text`, with how many like it were not shown, for people.
pub fn with_held_back(text: String, held_back: u64) -> String {
    match held_back {
        0 => text,
        1 => format!("{text} (and 1 more like it not shown)"),
        n => format!("{text} (and {n} more like it not shown)"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_burst_shows_one_notice_then_one_per_interval_with_the_count() {
        let now = Instant::now();
        let peer = Identity::generate().unwrap().peer_id();
        let other = Identity::generate().unwrap().peer_id();
        let mut notices = Notices::default();
        assert_eq!(notices.admit(peer, "refused", now), Some(0));
        for _ in 0..4999 {
            assert_eq!(notices.admit(peer, "refused", now), None);
        }
        // Another kind, another peer: shown.
        assert_eq!(notices.admit(peer, "rejected", now), Some(0));
        assert_eq!(notices.admit(other, "refused", now), Some(0));
        let later = now + NOTICE_INTERVAL;
        assert_eq!(notices.admit(peer, "refused", later), Some(4999));
        assert_eq!(notices.admit(peer, "refused", later), None);
    }

    #[test]
    fn a_peer_toggling_rooms_gets_a_burst_of_notices_then_one_per_interval() {
        let now = Instant::now();
        let peer = Identity::generate().unwrap().peer_id();
        let other = Identity::generate().unwrap().peer_id();
        let mut budget = MemberBudget::default();
        let shown = (0..1000).filter(|_| budget.admit(peer, now)).count();
        assert_eq!(shown, MemberBudget::BURST as usize);
        assert!(budget.admit(other, now), "others are not held back");
        let later = now + NOTICE_INTERVAL;
        assert!(budget.admit(peer, later));
        assert!(!budget.admit(peer, later));
        // Quiet for long enough, the whole burst is back.
        let much_later = later + NOTICE_INTERVAL * 100;
        let shown = (0..1000).filter(|_| budget.admit(peer, much_later)).count();
        assert_eq!(shown, MemberBudget::BURST as usize);
    }

    #[test]
    fn memory_is_bounded() {
        let now = Instant::now();
        let mut notices = Notices::default();
        for _ in 0..(2 * REMEMBERED) {
            let peer = Identity::generate().unwrap().peer_id();
            assert_eq!(notices.admit(peer, "refused", now), Some(0));
        }
        assert!(notices.last.len() <= REMEMBERED);
    }

    #[test]
    fn the_count_is_said_in_words() {
        assert_eq!(with_held_back("x".into(), 0), "x");
        assert_eq!(
            with_held_back("x".into(), 3),
            "x (and 3 more like it not shown)"
        );
    }
}
