//! A source that has gone silent: a peer that is alive sends something at
//! least every keep-alive interval (acknowledgements while chunks are
//! asked for, a keep-alive ping otherwise), so a connection that has
//! received nothing for longer than that, plus a margin, has a dead peer
//! or a dead path behind it. A fetch drops such a source after seconds
//! rather than waiting for the connection's idle timeout. Plain state over
//! samples of the connection's datagram counter.

use std::time::{Duration, Instant};

/// The margin over the keep-alive interval before a quiet source counts as
/// silent: a keep-alive crosses a slow path and may be lost once.
pub const SILENCE_MARGIN: Duration = Duration::from_secs(2);

pub struct SilenceWatch {
    limit: Duration,
    last_count: Option<u64>,
    last_change: Instant,
}

impl SilenceWatch {
    /// Silence longer than `keep_alive` + [`SILENCE_MARGIN`] counts.
    pub fn new(keep_alive: Duration, now: Instant) -> Self {
        Self {
            limit: keep_alive + SILENCE_MARGIN,
            last_count: None,
            last_change: now,
        }
    }

    /// The connection had received `datagrams` in all by `now`: how long it
    /// has been silent, if longer than the limit.
    pub fn sample(&mut self, datagrams: u64, now: Instant) -> Option<Duration> {
        if self.last_count != Some(datagrams) {
            self.last_count = Some(datagrams);
            self.last_change = now;
            return None;
        }
        let silent = now.saturating_duration_since(self.last_change);
        (silent > self.limit).then_some(silent)
    }

    /// How often to sample: often enough to notice within a second of the
    /// limit.
    pub fn period(&self) -> Duration {
        (self.limit / 4).clamp(Duration::from_millis(100), Duration::from_secs(1))
    }
}

/// Resolves once `connection` has received nothing for longer than
/// `keep_alive` + [`SILENCE_MARGIN`]; says for how long, in words.
pub async fn silence_of(connection: &quinn::Connection, keep_alive: Duration) -> String {
    let mut watch = SilenceWatch::new(keep_alive, Instant::now());
    let mut ticker = tokio::time::interval(watch.period());
    loop {
        ticker.tick().await;
        let datagrams = connection.stats().udp_rx.datagrams;
        if let Some(silent) = watch.sample(datagrams, Instant::now()) {
            return format!("sent nothing for {:.0} s", silent.as_secs_f64());
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_silence_past_keep_alive_and_margin_counts() {
        let start = Instant::now();
        let at = |ms| start + Duration::from_millis(ms);
        let mut watch = SilenceWatch::new(Duration::from_secs(3), start);
        assert_eq!(watch.sample(10, at(0)), None);
        // Traffic keeps it quiet however long it runs.
        for (count, ms) in [(11, 2_000), (12, 4_900), (13, 9_800)] {
            assert_eq!(watch.sample(count, at(ms)), None);
        }
        // Nothing new: not yet at 4.9 s, silent at 5.1 s past the last.
        assert_eq!(watch.sample(13, at(14_700)), None);
        assert_eq!(
            watch.sample(13, at(14_900)),
            Some(Duration::from_millis(5_100))
        );
        // A keep-alive arrives: alive again.
        assert_eq!(watch.sample(14, at(15_000)), None);
        // 5 s of limit: sampled every second.
        assert_eq!(watch.period(), Duration::from_secs(1));
    }
}
