//! What a node holds of a room's history, as the history-sync summary: per
//! author, the ranges of sequence numbers held. Pure; the store builds it
//! and answers it, the sync service carries it.
//!
//! A summary of only the contiguous prefix (the classic version vector)
//! cannot say "I have 2..641 but not 1": an author who skipped a number, or
//! a message that never reached anyone, would make every sync send the same
//! messages again, forever. Ranges say exactly what is held, so a message a
//! peer already has is never sent to it again, and a gap nobody can fill
//! costs nothing.

use std::collections::BTreeMap;

use crate::identity::PeerId;

/// Most ranges a summary lists per author. An honest author never skips a
/// number, so its messages here have a gap only while a sync is under way;
/// an author with more gaps than this is taken to have made them on
/// purpose, and what lies between its later ranges is claimed as held
/// (never asked for again).
pub const MAX_RANGES: usize = 16;

/// One author's sequence numbers held: sorted, disjoint, inclusive ranges
/// with a gap between any two.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Held {
    ranges: Vec<(u64, u64)>,
}

/// A room's holdings: per author, what is held.
pub type Holdings = BTreeMap<PeerId, Held>;

/// Why a summary from a peer was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum SummaryError {
    #[error("more than {MAX_RANGES} ranges for one author")]
    TooManyRanges,
    #[error("a range that ends before it starts")]
    Inverted,
}

impl Held {
    /// Every sequence number: "send me nothing more of this author".
    pub fn everything() -> Self {
        Self {
            ranges: vec![(0, u64::MAX)],
        }
    }

    /// Adds `seq`, which must not be below any number added before (the
    /// store adds them in key order); a repeat is ignored.
    pub fn push(&mut self, seq: u64) {
        match self.ranges.last_mut() {
            Some((_, last)) if seq <= *last => {}
            Some((_, last)) if seq == *last + 1 => *last = seq,
            _ => self.ranges.push((seq, seq)),
        }
    }

    pub fn contains(&self, seq: u64) -> bool {
        self.ranges
            .iter()
            .any(|&(first, last)| first <= seq && seq <= last)
    }

    /// The ranges to send a peer: at most [`MAX_RANGES`]; beyond that the
    /// last one listed stretches to the highest number held.
    pub fn summary(&self) -> Vec<(u64, u64)> {
        let mut out: Vec<(u64, u64)> = self.ranges.iter().take(MAX_RANGES).copied().collect();
        if let (Some(kept), Some(&(_, highest))) = (out.last_mut(), self.ranges.last()) {
            kept.1 = highest;
        }
        out
    }

    /// A peer's summary for one author, as received. Its ranges need not be
    /// sorted or disjoint: [`Held::contains`] does not care.
    pub fn from_summary(ranges: Vec<(u64, u64)>) -> Result<Self, SummaryError> {
        if ranges.len() > MAX_RANGES {
            return Err(SummaryError::TooManyRanges);
        }
        if ranges.iter().any(|&(first, last)| first > last) {
            return Err(SummaryError::Inverted);
        }
        Ok(Self { ranges })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn held(seqs: impl IntoIterator<Item = u64>) -> Held {
        let mut held = Held::default();
        for seq in seqs {
            held.push(seq);
        }
        held
    }

    #[test]
    fn ranges_say_exactly_what_is_held() {
        let held = held([2, 3, 4, 7, 7, 8, 10]);
        assert_eq!(held.summary(), vec![(2, 4), (7, 8), (10, 10)]);
        for seq in [2, 3, 4, 7, 8, 10] {
            assert!(held.contains(seq), "{seq}");
        }
        for seq in [0, 1, 5, 6, 9, 11] {
            assert!(!held.contains(seq), "{seq}");
        }
    }

    #[test]
    fn a_summary_is_bounded_and_claims_the_gaps_of_an_author_that_skips_numbers() {
        // Every other number: 100 gaps.
        let held = held((1..=200).step_by(2));
        let summary = held.summary();
        assert_eq!(summary.len(), MAX_RANGES);
        assert_eq!(summary.last(), Some(&(31, 199)));
        let theirs = Held::from_summary(summary).unwrap();
        assert!((1..=199).step_by(2).all(|seq| theirs.contains(seq)));
        assert!(!theirs.contains(200) && !theirs.contains(2));
    }

    #[test]
    fn hostile_summaries_are_refused() {
        let too_many = (0..=MAX_RANGES as u64).map(|n| (2 * n, 2 * n)).collect();
        assert_eq!(
            Held::from_summary(too_many),
            Err(SummaryError::TooManyRanges)
        );
        assert_eq!(
            Held::from_summary(vec![(5, 4)]),
            Err(SummaryError::Inverted)
        );
        assert!(Held::everything().contains(u64::MAX) && Held::everything().contains(0));
    }
}
