//! When to publish this node's record: a sans-IO state machine with no
//! clock and no socket. It publishes what it was given shortly after it
//! changes (changes that come together are published once), again before
//! DHT nodes would drop the item, and after a failure with backoff. Each
//! publication gets a sequence number above every earlier one, taken from
//! the wall clock so a restarted node (which remembers nothing) still
//! supersedes its old record.
//!
//! Driving it: [`Publisher::handle_contents`] whenever the facts may have
//! changed; [`Publisher::poll_publish`] when [`Publisher::poll_timeout`]
//! is reached, carrying out the publication it returns; then
//! [`Publisher::handle_published`] with the outcome.

use std::time::{Duration, Instant};

use super::record::ReachRecord;

/// How the publisher is tuned. Defaults in [`PublishConfig::default`].
#[derive(Clone, Debug)]
pub struct PublishConfig {
    /// How long after a publication it is published again unchanged.
    /// Default 1 hour: BEP 44 asks nodes to keep items at least 2 hours,
    /// so one refresh may fail and the record still stands.
    pub refresh: Duration,
    /// How long after a change the record is published, so that changes
    /// coming together (several trackers registering at start) make one
    /// publication. Default 1 s.
    pub settle: Duration,
    /// The first retry after a failed publication; doubles per failure up
    /// to `retry_max`. Default 5 s, at most 5 minutes.
    pub retry: Duration,
    pub retry_max: Duration,
}

impl Default for PublishConfig {
    fn default() -> Self {
        Self {
            refresh: Duration::from_secs(3600),
            settle: Duration::from_secs(1),
            retry: Duration::from_secs(5),
            retry_max: Duration::from_secs(300),
        }
    }
}

/// One publication to carry out.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Publication {
    pub seq: i64,
    pub record: ReachRecord,
}

#[derive(Debug)]
pub struct Publisher {
    config: PublishConfig,
    /// What should be out there now; `None`: nothing worth publishing (no
    /// tracker up), so nothing is refreshed.
    wanted: Option<ReachRecord>,
    /// What was last published successfully.
    published: Option<ReachRecord>,
    in_flight: bool,
    /// When to publish next, if anything is due.
    due: Option<Instant>,
    failures: u32,
    last_seq: i64,
}

impl Publisher {
    pub fn new(config: PublishConfig) -> Self {
        Self {
            config,
            wanted: None,
            published: None,
            in_flight: false,
            due: None,
            failures: 0,
            last_seq: 0,
        }
    }

    /// The facts now. A change is published `settle` from now (unless one
    /// is due sooner); the same facts again change nothing.
    pub fn handle_contents(&mut self, record: Option<ReachRecord>, now: Instant) {
        let record = record.filter(|r| !r.is_empty());
        if record == self.wanted {
            return;
        }
        self.wanted = record;
        if self.wanted.is_none() {
            self.due = None;
            return;
        }
        if self.wanted == self.published && self.failures == 0 && self.due.is_some() {
            // Back to what is out there: keep its refresh time.
            return;
        }
        self.failures = 0;
        let at = now + self.config.settle;
        self.due = Some(self.due.map_or(at, |due| due.min(at)));
    }

    /// When [`Publisher::poll_publish`] has something, if ever (nothing
    /// while a publication is under way).
    pub fn poll_timeout(&self) -> Option<Instant> {
        if self.in_flight {
            return None;
        }
        self.due
    }

    /// The publication due at `now`, if any. `unix_secs` is the wall clock,
    /// the floor of the sequence number.
    pub fn poll_publish(&mut self, now: Instant, unix_secs: u64) -> Option<Publication> {
        if self.in_flight || self.due.is_none_or(|due| due > now) {
            return None;
        }
        let record = self.wanted.clone()?;
        let seq = i64::try_from(unix_secs)
            .unwrap_or(i64::MAX)
            .max(self.last_seq.saturating_add(1));
        self.last_seq = seq;
        self.in_flight = true;
        self.due = None;
        Some(Publication { seq, record })
    }

    /// How the last publication went. `record` is the one it carried.
    pub fn handle_published(
        &mut self,
        record: &ReachRecord,
        outcome: Result<(), String>,
        now: Instant,
    ) {
        self.in_flight = false;
        match outcome {
            Ok(()) => {
                self.failures = 0;
                self.published = Some(record.clone());
                if self.wanted.is_none() {
                    self.due = None;
                } else if self.wanted.as_ref() == Some(record) {
                    self.due = Some(now + self.config.refresh);
                } else {
                    // Changed meanwhile.
                    self.due = Some(now + self.config.settle);
                }
            }
            Err(_) => {
                self.failures = self.failures.saturating_add(1);
                let doublings = self.failures.saturating_sub(1).min(16);
                let delay = self
                    .config
                    .retry
                    .saturating_mul(1 << doublings)
                    .min(self.config.retry_max);
                if self.wanted.is_some() {
                    self.due = Some(now + delay);
                }
            }
        }
    }

    /// The record last published successfully.
    pub fn published(&self) -> Option<&ReachRecord> {
        self.published.as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dht::record::TrackerRef;
    use crate::identity::PeerId;

    fn record(port: u16) -> ReachRecord {
        ReachRecord::new(
            vec![TrackerRef {
                id: PeerId::from_bytes([7; 32]),
                addr: format!("192.0.2.1:{port}").parse().unwrap(),
            }],
            vec!["198.51.100.1:4000".parse().unwrap()],
        )
    }

    /// Runs the publisher on a virtual clock for `until`, with `outcome`
    /// deciding each publication's fate; returns when each was made.
    fn run(
        publisher: &mut Publisher,
        start: Instant,
        until: Duration,
        mut outcome: impl FnMut(&Publication) -> Result<(), String>,
    ) -> Vec<(Duration, Publication)> {
        let mut made = Vec::new();
        let mut now = start;
        for _ in 0..10_000 {
            let Some(at) = publisher.poll_timeout() else {
                break;
            };
            if at > start + until {
                break;
            }
            now = now.max(at);
            let unix = 1_000_000 + (now - start).as_secs();
            let publication = publisher.poll_publish(now, unix).unwrap();
            let result = outcome(&publication);
            publisher.handle_published(&publication.record, result, now);
            made.push((now - start, publication));
        }
        made
    }

    #[test]
    fn a_change_is_published_after_settling_and_refreshed_hourly() {
        let config = PublishConfig::default();
        let mut publisher = Publisher::new(config.clone());
        let start = Instant::now();
        assert_eq!(publisher.poll_timeout(), None);
        publisher.handle_contents(Some(record(1)), start);
        let made = run(&mut publisher, start, Duration::from_secs(3 * 3600), |_| {
            Ok(())
        });
        let times: Vec<Duration> = made.iter().map(|(at, _)| *at).collect();
        assert_eq!(
            times,
            vec![
                config.settle,
                config.settle + config.refresh,
                config.settle + config.refresh * 2,
            ]
        );
        let seqs: Vec<i64> = made.iter().map(|(_, p)| p.seq).collect();
        assert!(seqs.windows(2).all(|w| w[0] < w[1]), "{seqs:?}");
        assert_eq!(publisher.published(), Some(&record(1)));
    }

    #[test]
    fn changes_that_come_together_make_one_publication() {
        let mut publisher = Publisher::new(PublishConfig::default());
        let start = Instant::now();
        publisher.handle_contents(Some(record(1)), start);
        publisher.handle_contents(Some(record(2)), start + Duration::from_millis(300));
        let made = run(&mut publisher, start, Duration::from_secs(60), |_| Ok(()));
        assert_eq!(made.len(), 1);
        assert_eq!(made[0].1.record, record(2));
        // The first change's deadline held.
        assert_eq!(made[0].0, Duration::from_secs(1));
    }

    #[test]
    fn a_change_during_a_publication_is_published_after_it() {
        let mut publisher = Publisher::new(PublishConfig::default());
        let start = Instant::now();
        publisher.handle_contents(Some(record(1)), start);
        let now = start + Duration::from_secs(1);
        let first = publisher.poll_publish(now, 100).unwrap();
        publisher.handle_contents(Some(record(2)), now);
        assert_eq!(publisher.poll_timeout(), None, "nothing while in flight");
        publisher.handle_published(&first.record, Ok(()), now + Duration::from_secs(2));
        let next = publisher.poll_timeout().unwrap();
        assert_eq!(next, now + Duration::from_secs(3));
        let second = publisher.poll_publish(next, 100).unwrap();
        assert_eq!(second.record, record(2));
        assert_eq!(
            second.seq,
            first.seq + 1,
            "above the last even with a stuck clock"
        );
    }

    #[test]
    fn failures_back_off_and_a_success_resets() {
        let config = PublishConfig::default();
        let mut publisher = Publisher::new(config.clone());
        let start = Instant::now();
        publisher.handle_contents(Some(record(1)), start);
        let mut calls = 0;
        let made = run(&mut publisher, start, Duration::from_secs(1200), |_| {
            calls += 1;
            if calls <= 8 {
                Err("no nodes".into())
            } else {
                Ok(())
            }
        });
        let gaps: Vec<u64> = made
            .windows(2)
            .map(|w| (w[1].0 - w[0].0).as_secs())
            .collect();
        // 5, 10, 20, 40, 80, 160, then capped at 300; then the refresh.
        assert_eq!(gaps, vec![5, 10, 20, 40, 80, 160, 300, 300]);
        assert_eq!(
            publisher.poll_timeout(),
            Some(start + made[8].0 + config.refresh)
        );
    }

    #[test]
    fn nothing_to_publish_stops_refreshing_and_the_same_facts_change_nothing() {
        let mut publisher = Publisher::new(PublishConfig::default());
        let start = Instant::now();
        publisher.handle_contents(Some(record(1)), start);
        run(&mut publisher, start, Duration::from_secs(2), |_| Ok(()));
        let refresh = publisher.poll_timeout();
        publisher.handle_contents(Some(record(1)), start + Duration::from_secs(5));
        assert_eq!(publisher.poll_timeout(), refresh);
        publisher.handle_contents(None, start + Duration::from_secs(6));
        assert_eq!(publisher.poll_timeout(), None);
        publisher.handle_contents(Some(ReachRecord::default()), start);
        assert_eq!(publisher.poll_timeout(), None, "an empty record is nothing");
        // Back to what is out there: published again promptly (its refresh
        // time was dropped), once.
        let back = start + Duration::from_secs(10);
        publisher.handle_contents(Some(record(1)), back);
        assert_eq!(
            publisher.poll_timeout(),
            Some(back + Duration::from_secs(1))
        );
    }
}
