//! The message ids a room's gossip has seen, bounded: once full, the oldest
//! are forgotten first. A forgotten id that comes back is forwarded once
//! more, which costs a little traffic and nothing else (the history stores
//! each message once).

use std::collections::{HashSet, VecDeque};
use std::hash::Hash;

#[derive(Debug)]
pub struct Seen<M> {
    capacity: usize,
    order: VecDeque<M>,
    set: HashSet<M>,
}

impl<M: Copy + Eq + Hash> Seen<M> {
    pub fn new(capacity: usize) -> Self {
        Self {
            capacity: capacity.max(1),
            order: VecDeque::new(),
            set: HashSet::new(),
        }
    }

    /// Remembers `id`; whether it was new.
    pub fn insert(&mut self, id: M) -> bool {
        if !self.set.insert(id) {
            return false;
        }
        self.order.push_back(id);
        if self.order.len() > self.capacity {
            if let Some(oldest) = self.order.pop_front() {
                self.set.remove(&oldest);
            }
        }
        true
    }

    pub fn contains(&self, id: &M) -> bool {
        self.set.contains(id)
    }

    pub fn len(&self) -> usize {
        self.order.len()
    }

    pub fn is_empty(&self) -> bool {
        self.order.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use super::Seen;

    #[test]
    fn remembers_up_to_its_capacity_and_forgets_the_oldest_first() {
        let mut seen = Seen::new(3);
        assert!(seen.insert(1));
        assert!(!seen.insert(1));
        assert!(seen.insert(2));
        assert!(seen.insert(3));
        assert!(seen.insert(4));
        assert_eq!(seen.len(), 3);
        assert!(!seen.contains(&1));
        assert!(seen.contains(&2) && seen.contains(&4));
        assert!(seen.insert(1), "a forgotten id counts as new again");
    }
}
