//! Flow-control windows sized to the bandwidth-delay product a connection
//! measures. A receiver lets a peer send at most one window per round trip,
//! so a window below the path's bandwidth × RTT caps the transfer however
//! fast the path is; a window far above it only raises what the peer can
//! make this node buffer. [`WindowSizer`] turns samples of a connection
//! (bytes received so far, smoothed RTT, at a time) into the window to
//! grant; it does no I/O and reads no clock: the node's gate samples its
//! connection as chunks arrive and leave and applies the result
//! (`quinn::Connection::set_receive_window`, and the same rule on bytes
//! sent for `set_send_window`). [`pipeline_depth`] says how many chunk
//! requests a fetch keeps outstanding to fill a window.

use std::time::{Duration, Instant};

/// The window a connection starts with and never goes below: what every
/// connection had before windows were sized (see `endpoint.rs`), enough for
/// about 1 Gbit/s at 60 ms.
pub const FLOOR: u64 = 16 << 20;
/// The largest window granted: 2 × the BDP of 1 Gbit/s at 250 ms, and the
/// most one peer can make a fetching node buffer.
pub const CEILING: u64 = 64 << 20;
/// The window is this many times the measured BDP: one BDP in flight and
/// one more, so that a lost packet holding back reassembly for a round trip,
/// or a rate that is still growing, does not stall the sender.
const HEADROOM: f64 = 2.0;
/// Shortest span one sample may cover: shorter spans measure bursts.
const MIN_SPAN: Duration = Duration::from_millis(50);

/// The window for a path that delivers `rate` bytes per second at `rtt`:
/// [`HEADROOM`] × the BDP, rounded up to a whole MiB, within
/// `floor..=ceiling`.
pub fn sized_window(rate: f64, rtt: Duration, floor: u64, ceiling: u64) -> u64 {
    const MIB: u64 = 1 << 20;
    let wanted = (HEADROOM * rate.max(0.0) * rtt.as_secs_f64()).round();
    // `as` saturates (NaN is 0): an absurd rate or RTT lands on a bound.
    let wanted = (wanted as u64).div_ceil(MIB).saturating_mul(MIB);
    wanted.clamp(floor, ceiling.max(floor))
}

/// Chunk requests each of `streams` chunk streams keeps outstanding so that
/// together they ask for half of `window` (the BDP, at [`HEADROOM`] 2) in
/// `chunk`-byte chunks: requests, not the window, would otherwise bound what
/// is in flight. Within `min..=max`.
pub fn pipeline_depth(window: u64, streams: usize, chunk: u64, min: usize, max: usize) -> usize {
    let per_stream = (window / 2) / (streams.max(1) as u64).saturating_mul(chunk.max(1));
    usize::try_from(per_stream)
        .unwrap_or(usize::MAX)
        .clamp(min, max.max(min))
}

/// The receive window of one connection, from samples of what it delivers.
///
/// Drive it with [`WindowSizer::handle_sample`] every so often (the gate
/// does it with each chunk received or sent); apply every window it
/// returns. While
/// the window limits the sender, the measured rate is one window per RTT, so
/// the next window is [`HEADROOM`] × larger: it doubles per sample until the
/// path, not the window, is the limit. When the rate falls (the transfer
/// ended, the path slowed) it gives back at most half per sample, so a pause
/// of a few hundred milliseconds does not make the next burst start small.
#[derive(Debug)]
pub struct WindowSizer {
    floor: u64,
    ceiling: u64,
    window: u64,
    /// The previous sample: when, and the bytes received by then.
    last: Option<(Instant, u64)>,
    /// Whether the current window was handed out yet.
    applied: bool,
}

impl Default for WindowSizer {
    fn default() -> Self {
        Self::new(FLOOR, CEILING)
    }
}

impl WindowSizer {
    /// A sizer whose windows stay within `floor..=ceiling`, starting at
    /// `floor`.
    pub fn new(floor: u64, ceiling: u64) -> Self {
        Self {
            floor,
            ceiling: ceiling.max(floor),
            window: floor,
            last: None,
            applied: false,
        }
    }

    /// The window granted now.
    pub fn window(&self) -> u64 {
        self.window
    }

    /// A sample taken at `now`: `received` bytes have arrived on the
    /// connection so far (a counter that only grows), its smoothed RTT is
    /// `rtt`. Returns the window to apply if it changed (the first sample
    /// always returns one, so a connection sized earlier is brought in line).
    pub fn handle_sample(&mut self, now: Instant, received: u64, rtt: Duration) -> Option<u64> {
        let Some((then, before)) = self.last else {
            self.last = Some((now, received));
            return self.hand_out();
        };
        let span = now.saturating_duration_since(then);
        if span < MIN_SPAN.max(rtt) {
            return None; // too short to tell a rate from a burst
        }
        self.last = Some((now, received));
        let rate = received.saturating_sub(before) as f64 / span.as_secs_f64();
        let sized = sized_window(rate, rtt, self.floor, self.ceiling);
        let next = sized.max(self.window / 2).max(self.floor);
        if next != self.window {
            self.window = next;
            self.applied = false;
        }
        self.hand_out()
    }

    fn hand_out(&mut self) -> Option<u64> {
        if self.applied {
            return None;
        }
        self.applied = true;
        Some(self.window)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MIB: u64 = 1 << 20;

    #[test]
    fn the_window_is_twice_the_bdp_within_its_bounds() {
        let ms = Duration::from_millis;
        // 125 MB/s (1 Gbit/s) at 100 ms: a 12.5 MB BDP, 25 MB → 24 MiB.
        assert_eq!(sized_window(125e6, ms(100), FLOOR, CEILING), 24 * MIB);
        // Loopback or a LAN: far below the floor.
        assert_eq!(
            sized_window(1e9, Duration::from_micros(50), FLOOR, CEILING),
            FLOOR
        );
        // 1 Gbit/s across the world (300 ms): capped.
        assert_eq!(sized_window(125e6, ms(300), FLOOR, CEILING), CEILING);
        // Nothing measured yet, or nonsense.
        assert_eq!(sized_window(0.0, ms(100), FLOOR, CEILING), FLOOR);
        assert_eq!(sized_window(-5.0, ms(100), FLOOR, CEILING), FLOOR);
        assert_eq!(
            sized_window(f64::INFINITY, ms(100), FLOOR, CEILING),
            CEILING
        );
        assert_eq!(sized_window(f64::NAN, ms(100), FLOOR, CEILING), FLOOR);
        // Rounded up to a whole MiB.
        assert_eq!(
            sized_window(1.5 * MIB as f64, ms(1000), MIB, CEILING),
            3 * MIB
        );
        assert_eq!(
            sized_window(1.6 * MIB as f64, ms(1000), MIB, CEILING),
            4 * MIB
        );
    }

    #[test]
    fn requests_cover_the_bdp_the_window_was_sized_for() {
        // The floor with the defaults (4 streams of 1 MiB chunks): 2 each,
        // 8 MiB asked for, as before windows were sized.
        assert_eq!(pipeline_depth(FLOOR, 4, MIB, 2, 8), 2);
        assert_eq!(pipeline_depth(CEILING, 4, MIB, 2, 8), 8);
        assert_eq!(pipeline_depth(40 * MIB, 4, MIB, 2, 8), 5);
        // One stream could ask for more than its stream window holds.
        assert_eq!(pipeline_depth(CEILING, 1, MIB, 2, 8), 8);
        // Small chunks, many streams, nonsense.
        assert_eq!(pipeline_depth(FLOOR, 16, 16 << 10, 2, 8), 8);
        assert_eq!(pipeline_depth(FLOOR, 64, 4 * MIB, 2, 8), 2);
        assert_eq!(pipeline_depth(FLOOR, 0, 0, 2, 8), 8);
        assert_eq!(pipeline_depth(0, 4, MIB, 2, 1), 2);
    }

    /// A connection on a virtual clock whose sender is limited by the
    /// window (one window per RTT) or by the path, whichever is less.
    struct Path {
        now: Instant,
        received: u64,
    }

    impl Path {
        fn new() -> Self {
            Self {
                now: Instant::now(),
                received: 0,
            }
        }

        /// `samples` samples 250 ms apart at `path_rate` and `rtt` (and one
        /// at the start); the windows the sizer applied.
        fn run(
            &mut self,
            sizer: &mut WindowSizer,
            path_rate: f64,
            rtt: Duration,
            samples: usize,
        ) -> Vec<u64> {
            let step = Duration::from_millis(250);
            let mut applied = Vec::new();
            applied.extend(sizer.handle_sample(self.now, self.received, rtt));
            for _ in 0..samples {
                let window_rate = sizer.window() as f64 / rtt.as_secs_f64();
                self.received += (window_rate.min(path_rate) * step.as_secs_f64()) as u64;
                self.now += step;
                applied.extend(sizer.handle_sample(self.now, self.received, rtt));
            }
            applied
        }
    }

    #[test]
    fn a_window_limited_connection_grows_until_the_path_limits_it() {
        // 100 MB/s at 200 ms: a 20 MB BDP, above the floor's 16 MiB.
        let mut sizer = WindowSizer::default();
        let mut path = Path::new();
        let rtt = Duration::from_millis(200);
        let applied = path.run(&mut sizer, 100e6, rtt, 12);
        assert_eq!(applied[0], FLOOR, "the first sample applies the floor");
        assert!(applied.windows(2).all(|w| w[1] > w[0]), "{applied:?}");
        // Twice the BDP, rounded up to a MiB: 40 MB → 39 MiB, and it stays.
        assert_eq!(sizer.window(), 39 * MIB);
        assert_eq!(path.run(&mut sizer, 100e6, rtt, 4), Vec::<u64>::new());
    }

    #[test]
    fn a_short_path_keeps_the_floor_and_a_long_fat_one_the_ceiling() {
        let mut lan = WindowSizer::default();
        assert_eq!(
            Path::new().run(&mut lan, 1e9, Duration::from_micros(300), 20),
            vec![FLOOR],
            "applied once, never changed"
        );
        let mut far = WindowSizer::default();
        Path::new().run(&mut far, 1e9, Duration::from_millis(400), 20);
        assert_eq!(far.window(), CEILING);
    }

    #[test]
    fn an_idle_connection_gives_the_window_back_by_halves() {
        let mut sizer = WindowSizer::default();
        let mut path = Path::new();
        let rtt = Duration::from_millis(200);
        path.run(&mut sizer, 1e9, rtt, 10);
        assert_eq!(sizer.window(), CEILING);
        let applied = path.run(&mut sizer, 0.0, rtt, 6);
        assert_eq!(applied, vec![32 * MIB, FLOOR]);
    }

    #[test]
    fn samples_closer_than_a_round_trip_are_ignored() {
        let mut sizer = WindowSizer::default();
        let rtt = Duration::from_millis(300);
        let start = Instant::now();
        assert_eq!(sizer.handle_sample(start, 0, rtt), Some(FLOOR));
        // 16 MiB in 200 ms would be a rate worth a ceiling, but 200 ms is
        // less than one round trip: no decision.
        let soon = start + Duration::from_millis(200);
        assert_eq!(sizer.handle_sample(soon, 16 * MIB, rtt), None);
        assert_eq!(sizer.window(), FLOOR);
        // Measured over a full round trip from the first sample: 16 MiB in
        // 300 ms at 300 ms is a 16 MiB BDP, twice that is 32 MiB.
        let later = start + rtt;
        assert_eq!(sizer.handle_sample(later, 16 * MIB, rtt), Some(32 * MIB));
        // A clock that went backwards, or a counter that did: no change.
        assert_eq!(sizer.handle_sample(start, 0, rtt), None);
        assert_eq!(sizer.window(), 32 * MIB);
    }
}
