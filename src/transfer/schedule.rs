//! Which chunk to ask which source for next: a plain state machine with no
//! I/O and no clock, driven by the fetcher. Fresh chunks go out in order;
//! once none are left, an idle source steals the oldest chunk still in
//! flight at another source (asking for it too), so one slow source cannot
//! hold the end of a transfer back. The first verified copy of a chunk wins.
//! A source that sent a corrupt chunk is dropped and its chunks go back to
//! the queue.
//!
//! Drive it with [`Schedule::next`] for each free request slot of a source
//! (and [`Schedule::extend_run`] to ask for the fresh chunks after it in
//! the same request), then report each chunk's answer with
//! [`Schedule::delivered`], [`Schedule::corrupt`] or [`Schedule::lost`].

use std::collections::{BTreeMap, BTreeSet};

/// A source's index in the fetcher's list of sources.
pub type SourceId = usize;

/// What a source should do next.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// Ask for this chunk.
    Fetch(u64),
    /// Every missing chunk is in flight: ask again after the next answer.
    Wait,
    /// Nothing left for this source: the transfer is complete, or the
    /// source was dropped.
    Stop,
}

/// Whether a delivered chunk was the first verified copy.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Delivery {
    New,
    Duplicate,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum ChunkState {
    Needed,
    /// Asked of these sources; `order` is when it was first asked, for
    /// stealing the oldest first.
    InFlight {
        holders: Vec<SourceId>,
        order: u64,
    },
    Done,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SourceState {
    Active,
    /// Sent a chunk that failed verification.
    Dropped,
    /// Went away or does not have the content.
    Gone,
}

#[derive(Clone, Debug)]
struct Source {
    state: SourceState,
    in_flight: BTreeSet<u64>,
    delivered: u64,
}

#[derive(Clone, Debug)]
pub struct Schedule {
    chunks: Vec<ChunkState>,
    /// Chunks below this index were handed out at least once.
    cursor: u64,
    /// Chunks handed out before and needed again (lowest first).
    requeued: BTreeSet<u64>,
    /// Chunks in flight at exactly one source, by when they were asked:
    /// the candidates for stealing.
    stealable: BTreeMap<u64, u64>,
    next_order: u64,
    sources: Vec<Source>,
    remaining: u64,
}

impl Schedule {
    /// A schedule for `total` chunks of which `have` are already verified.
    pub fn new(total: u64, have: impl IntoIterator<Item = u64>) -> Self {
        let mut chunks = vec![ChunkState::Needed; total as usize];
        let mut remaining = total;
        for index in have {
            if let Some(chunk) = chunks.get_mut(index as usize) {
                if *chunk != ChunkState::Done {
                    *chunk = ChunkState::Done;
                    remaining -= 1;
                }
            }
        }
        Self {
            chunks,
            cursor: 0,
            requeued: BTreeSet::new(),
            stealable: BTreeMap::new(),
            next_order: 0,
            sources: Vec::new(),
            remaining,
        }
    }

    /// Adds a source; returns its id.
    pub fn add_source(&mut self) -> SourceId {
        self.sources.push(Source {
            state: SourceState::Active,
            in_flight: BTreeSet::new(),
            delivered: 0,
        });
        self.sources.len() - 1
    }

    pub fn next(&mut self, source: SourceId) -> Next {
        if self.remaining == 0 || self.state(source) != Some(SourceState::Active) {
            return Next::Stop;
        }
        let fresh = self.requeued.pop_first().or_else(|| self.next_fresh());
        if let Some(index) = fresh {
            self.assign(source, index);
            return Next::Fetch(index);
        }
        // Steal the oldest chunk that only another source is working on.
        let stolen = self
            .stealable
            .iter()
            .find(|(_, index)| !self.sources[source].in_flight.contains(index))
            .map(|(order, index)| (*order, *index));
        if let Some((order, index)) = stolen {
            self.stealable.remove(&order);
            if let ChunkState::InFlight { holders, .. } = &mut self.chunks[index as usize] {
                holders.push(source);
            }
            self.sources[source].in_flight.insert(index);
            return Next::Fetch(index);
        }
        Next::Wait
    }

    /// After [`Schedule::next`] gave `source` chunk `first`: gives it the
    /// fresh chunks right after `first` too, as long as `fits(count)` allows
    /// a run of `count` chunks from `first`, so that one request carries
    /// many small chunks. Only chunks never handed out and not had join a
    /// run, so it is consecutive. Returns the run's length (1 when nothing
    /// follows).
    pub fn extend_run(
        &mut self,
        source: SourceId,
        first: u64,
        mut fits: impl FnMut(u64) -> bool,
    ) -> u64 {
        let mut count = 1;
        while self.cursor == first + count
            && self.chunks.get(self.cursor as usize) == Some(&ChunkState::Needed)
            && self.state(source) == Some(SourceState::Active)
            && fits(count + 1)
        {
            self.cursor += 1;
            self.assign(source, first + count);
            count += 1;
        }
        count
    }

    fn next_fresh(&mut self) -> Option<u64> {
        while (self.cursor as usize) < self.chunks.len() {
            let index = self.cursor;
            self.cursor += 1;
            if self.chunks[index as usize] == ChunkState::Needed {
                return Some(index);
            }
        }
        None
    }

    fn assign(&mut self, source: SourceId, index: u64) {
        let order = self.next_order;
        self.next_order += 1;
        self.chunks[index as usize] = ChunkState::InFlight {
            holders: vec![source],
            order,
        };
        self.stealable.insert(order, index);
        self.sources[source].in_flight.insert(index);
    }

    /// `source` delivered chunk `index` and it verified.
    pub fn delivered(&mut self, source: SourceId, index: u64) -> Delivery {
        if let Some(s) = self.sources.get_mut(source) {
            s.in_flight.remove(&index);
        }
        let Some(chunk) = self.chunks.get_mut(index as usize) else {
            return Delivery::Duplicate;
        };
        let previous = std::mem::replace(chunk, ChunkState::Done);
        match previous {
            ChunkState::Done => Delivery::Duplicate,
            ChunkState::Needed => {
                self.requeued.remove(&index);
                self.finish(source);
                Delivery::New
            }
            ChunkState::InFlight { holders, order } => {
                self.stealable.remove(&order);
                for holder in holders {
                    self.sources[holder].in_flight.remove(&index);
                }
                self.finish(source);
                Delivery::New
            }
        }
    }

    fn finish(&mut self, source: SourceId) {
        self.remaining -= 1;
        if let Some(s) = self.sources.get_mut(source) {
            s.delivered += 1;
        }
    }

    /// `source` sent chunk `index` and it did not verify: the source is
    /// dropped and everything it held is asked of others.
    pub fn corrupt(&mut self, source: SourceId, index: u64) {
        if let Some(s) = self.sources.get_mut(source) {
            s.in_flight.insert(index);
        }
        self.release(source, SourceState::Dropped);
    }

    /// `source` went away or does not have the content.
    pub fn lost(&mut self, source: SourceId) {
        self.release(source, SourceState::Gone);
    }

    /// `source`, lost before, can deliver again (its peer is back). A
    /// source dropped for a corrupt chunk stays dropped. Returns whether
    /// the source is active now.
    pub fn revive(&mut self, source: SourceId) -> bool {
        let Some(s) = self.sources.get_mut(source) else {
            return false;
        };
        if s.state == SourceState::Gone {
            s.state = SourceState::Active;
        }
        s.state == SourceState::Active
    }

    fn release(&mut self, source: SourceId, state: SourceState) {
        let Some(s) = self.sources.get_mut(source) else {
            return;
        };
        if s.state == SourceState::Active {
            s.state = state;
        }
        let held = std::mem::take(&mut s.in_flight);
        for index in held {
            let chunk = &mut self.chunks[index as usize];
            if let ChunkState::InFlight { holders, order } = chunk {
                holders.retain(|h| *h != source);
                match holders.as_slice() {
                    [] => {
                        self.stealable.remove(order);
                        *chunk = ChunkState::Needed;
                        self.requeued.insert(index);
                    }
                    // Back to one holder: stealable again.
                    [_] => {
                        self.stealable.insert(*order, index);
                    }
                    _ => {}
                }
            }
        }
    }

    pub fn state(&self, source: SourceId) -> Option<SourceState> {
        self.sources.get(source).map(|s| s.state)
    }

    /// Chunks each source delivered first, by source id.
    pub fn delivered_by(&self) -> Vec<u64> {
        self.sources.iter().map(|s| s.delivered).collect()
    }

    /// Whether chunk `index` is verified already.
    pub fn is_done(&self, index: u64) -> bool {
        self.chunks.get(index as usize) == Some(&ChunkState::Done)
    }

    pub fn remaining(&self) -> u64 {
        self.remaining
    }

    pub fn is_complete(&self) -> bool {
        self.remaining == 0
    }

    /// Whether any source can still deliver.
    pub fn has_active_source(&self) -> bool {
        self.sources.iter().any(|s| s.state == SourceState::Active)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn chunks_go_out_in_order_and_skip_what_is_had() {
        let mut s = Schedule::new(5, [1, 3]);
        let a = s.add_source();
        assert_eq!(s.next(a), Next::Fetch(0));
        assert_eq!(s.next(a), Next::Fetch(2));
        assert_eq!(s.next(a), Next::Fetch(4));
        assert_eq!(s.next(a), Next::Wait, "a cannot steal from itself");
        for i in [0, 2, 4] {
            assert_eq!(s.delivered(a, i), Delivery::New);
        }
        assert!(s.is_complete());
        assert_eq!(s.next(a), Next::Stop);
        assert_eq!(s.delivered_by(), vec![3]);
    }

    #[test]
    fn a_run_takes_only_fresh_consecutive_chunks_that_fit() {
        let mut s = Schedule::new(10, [5]);
        let (a, b) = (s.add_source(), s.add_source());
        assert_eq!(s.next(a), Next::Fetch(0));
        assert_eq!(s.extend_run(a, 0, |count| count <= 3), 3, "0, 1, 2");
        assert_eq!(s.next(b), Next::Fetch(3));
        // 5 is had: the run ends before it.
        assert_eq!(s.extend_run(b, 3, |_| true), 2, "3, 4");
        assert_eq!(s.next(a), Next::Fetch(6));
        assert_eq!(s.extend_run(a, 6, |_| true), 4, "6 to 9");
        // Nothing fresh: b steals a single chunk, which no run extends.
        assert_eq!(s.next(b), Next::Fetch(0));
        assert_eq!(s.extend_run(b, 0, |_| true), 1);
        // b is lost: its chunks go back, and a run of requeued chunks is
        // one chunk at a time.
        s.lost(b);
        assert_eq!(s.next(a), Next::Fetch(3));
        assert_eq!(s.extend_run(a, 3, |_| true), 1);
        for i in (0..10).filter(|i| *i != 5) {
            assert_eq!(s.delivered(a, i), Delivery::New, "chunk {i}");
        }
        assert!(s.is_complete());
    }

    #[test]
    fn an_idle_source_steals_the_oldest_chunk_and_the_first_copy_wins() {
        let mut s = Schedule::new(3, []);
        let (slow, fast) = (s.add_source(), s.add_source());
        assert_eq!(s.next(slow), Next::Fetch(0));
        assert_eq!(s.next(slow), Next::Fetch(1));
        assert_eq!(s.next(fast), Next::Fetch(2));
        assert_eq!(s.delivered(fast, 2), Delivery::New);
        // Nothing fresh: fast steals slow's oldest, then the next one.
        assert_eq!(s.next(fast), Next::Fetch(0));
        assert_eq!(s.next(fast), Next::Fetch(1));
        assert_eq!(s.next(fast), Next::Wait, "each chunk is stolen once");
        assert_eq!(s.delivered(fast, 0), Delivery::New);
        assert_eq!(s.delivered(slow, 0), Delivery::Duplicate);
        assert_eq!(s.delivered(slow, 1), Delivery::New);
        assert_eq!(s.delivered(fast, 1), Delivery::Duplicate);
        assert!(s.is_complete());
        assert_eq!(s.delivered_by(), vec![1, 2]);
    }

    #[test]
    fn a_corrupt_source_is_dropped_and_its_chunks_are_asked_of_others() {
        let mut s = Schedule::new(4, []);
        let (bad, good) = (s.add_source(), s.add_source());
        assert_eq!(s.next(bad), Next::Fetch(0));
        assert_eq!(s.next(bad), Next::Fetch(1));
        s.corrupt(bad, 0);
        assert_eq!(s.state(bad), Some(SourceState::Dropped));
        assert_eq!(s.next(bad), Next::Stop);
        assert_eq!(s.next(good), Next::Fetch(0));
        assert_eq!(s.next(good), Next::Fetch(1));
        assert_eq!(s.next(good), Next::Fetch(2));
        assert_eq!(s.next(good), Next::Fetch(3));
        // A late answer from the dropped source changes nothing it should not.
        for i in 0..4 {
            assert_eq!(s.delivered(good, i), Delivery::New);
        }
        assert!(s.is_complete());
    }

    #[test]
    fn a_lost_source_gives_back_stolen_chunks_without_losing_them() {
        let mut s = Schedule::new(2, []);
        let (a, b) = (s.add_source(), s.add_source());
        assert_eq!(s.next(a), Next::Fetch(0));
        assert_eq!(s.next(a), Next::Fetch(1));
        assert_eq!(s.next(b), Next::Fetch(0), "stolen");
        s.lost(a);
        // Chunk 0 is still with b; chunk 1 is needed again.
        assert_eq!(s.next(b), Next::Fetch(1));
        assert_eq!(s.next(b), Next::Wait);
        s.lost(b);
        assert!(!s.has_active_source());
        assert_eq!(s.remaining(), 2);
        let c = s.add_source();
        assert_eq!(s.next(c), Next::Fetch(0));
        assert_eq!(s.next(c), Next::Fetch(1));
    }

    #[test]
    fn a_lost_source_that_comes_back_delivers_again_but_a_corrupt_one_does_not() {
        let mut s = Schedule::new(3, [0]);
        let (lost, bad) = (s.add_source(), s.add_source());
        assert_eq!(s.next(lost), Next::Fetch(1));
        assert_eq!(s.next(bad), Next::Fetch(2));
        s.lost(lost);
        s.corrupt(bad, 2);
        assert!(!s.has_active_source());
        assert_eq!(s.next(lost), Next::Stop);
        assert!(!s.revive(bad), "a corrupt source stays dropped");
        assert_eq!(s.next(bad), Next::Stop);
        assert!(s.revive(lost));
        assert_eq!(s.next(lost), Next::Fetch(1), "what it held is asked again");
        assert_eq!(s.next(lost), Next::Fetch(2));
        assert_eq!(s.delivered(lost, 1), Delivery::New);
        assert_eq!(s.delivered(lost, 2), Delivery::New);
        assert!(s.is_complete());
        assert_eq!(s.delivered_by(), vec![2, 0]);
    }
}
