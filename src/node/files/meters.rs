//! Upload progress per receiver: bytes served to each peer of each content,
//! and when to tell the user (the first chunk, then at most every
//! [`UPLOAD_REPORT_EVERY`], and once everything has been served). Plain
//! state with explicit times; the file service emits what it returns.

use std::collections::HashMap;
use std::time::{Duration, Instant};

use crate::identity::PeerId;
use crate::transfer::manifest::ContentId;

/// How often one receiver's progress on one content is reported, at most.
pub const UPLOAD_REPORT_EVERY: Duration = Duration::from_millis(250);
/// Receivers and contents tracked at once; beyond, the least recently
/// served is forgotten (its next chunk starts a new count).
const MAX_METERS: usize = 1024;

struct Meter {
    served: u64,
    reported_at: Option<Instant>,
    last_served: Instant,
}

#[derive(Default)]
pub struct UploadMeters {
    meters: HashMap<(PeerId, ContentId), Meter>,
}

impl UploadMeters {
    /// `bytes` of `content` (of `total` in all) went to `peer` at `now`:
    /// the bytes served to it so far, when that is worth reporting.
    pub fn served(
        &mut self,
        peer: PeerId,
        content: ContentId,
        bytes: u64,
        total: u64,
        now: Instant,
    ) -> Option<u64> {
        if !self.meters.contains_key(&(peer, content)) && self.meters.len() >= MAX_METERS {
            let oldest = self
                .meters
                .iter()
                .min_by_key(|(_, m)| m.last_served)
                .map(|(key, _)| *key);
            if let Some(oldest) = oldest {
                self.meters.remove(&oldest);
            }
        }
        let meter = self.meters.entry((peer, content)).or_insert(Meter {
            served: 0,
            reported_at: None,
            last_served: now,
        });
        let before = meter.served;
        meter.served = meter.served.saturating_add(bytes);
        meter.last_served = now;
        let finished = before < total && meter.served >= total;
        let due = meter
            .reported_at
            .is_none_or(|at| now.saturating_duration_since(at) >= UPLOAD_REPORT_EVERY);
        (finished || due).then(|| {
            meter.reported_at = Some(now);
            meter.served
        })
    }

    /// `peer` is gone: its counts with it.
    pub fn forget(&mut self, peer: &PeerId) {
        self.meters.retain(|(p, _), _| p != peer);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn the_first_chunk_then_every_interval_then_the_end_are_reported() {
        let peer = Identity::generate().unwrap().peer_id();
        let content = ContentId::of_manifest(b"m");
        let mut meters = UploadMeters::default();
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        assert_eq!(meters.served(peer, content, 10, 40, at(0)), Some(10));
        assert_eq!(meters.served(peer, content, 10, 40, at(100)), None);
        assert_eq!(meters.served(peer, content, 10, 40, at(300)), Some(30));
        // The last bytes are reported at once, however soon.
        assert_eq!(meters.served(peer, content, 10, 40, at(310)), Some(40));
        // A second receiver counts on its own.
        let other = Identity::generate().unwrap().peer_id();
        assert_eq!(meters.served(other, content, 40, 40, at(320)), Some(40));
        meters.forget(&peer);
        assert_eq!(meters.served(peer, content, 10, 40, at(330)), Some(10));
    }

    #[test]
    fn memory_is_bounded_by_forgetting_the_least_recently_served() {
        let mut meters = UploadMeters::default();
        let start = Instant::now();
        let first = Identity::generate().unwrap().peer_id();
        meters.served(first, ContentId::of_manifest(b"0"), 1, 10, start);
        for index in 1..=MAX_METERS as u64 {
            let content = ContentId::of_manifest(&index.to_le_bytes());
            meters.served(first, content, 1, 10, start + Duration::from_millis(index));
        }
        assert_eq!(meters.meters.len(), MAX_METERS);
        assert!(!meters
            .meters
            .contains_key(&(first, ContentId::of_manifest(b"0"))));
    }
}
