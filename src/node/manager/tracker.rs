//! What the connection manager knows about one tracker session: up,
//! connecting, or down until a retry time; its round-trip time (which sets
//! how long a punch runs alone before the relay joins); and the pacing of
//! introduction requests, which keeps a node joining a big room under the
//! tracker's per-peer request limit instead of being refused.

use std::collections::VecDeque;
use std::time::{Duration, Instant};

use crate::identity::PeerId;
use crate::rate::TokenBucket;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TrackerState {
    /// A connection and registration are under way.
    Connecting,
    Up,
    /// Lost, or a connection attempt failed; the next one starts then.
    Down {
        retry_at: Instant,
    },
}

#[derive(Debug)]
pub(super) struct TrackerEntry {
    pub state: TrackerState,
    /// Whether it was ever up: the first registration restores nothing.
    pub ever_up: bool,
    /// Consecutive failed connection attempts.
    pub failures: u32,
    pub rtt: Duration,
    /// Peers waiting for a pacing slot to ask for an introduction, in order.
    pub queue: VecDeque<PeerId>,
    pub pacing: TokenBucket,
}

impl TrackerEntry {
    pub fn new(per_second: u32, now: Instant) -> Self {
        Self {
            state: TrackerState::Connecting,
            ever_up: false,
            failures: 0,
            rtt: Duration::from_millis(100),
            queue: VecDeque::new(),
            pacing: TokenBucket::new(per_second, per_second, now),
        }
    }

    pub fn is_up(&self) -> bool {
        self.state == TrackerState::Up
    }
}
