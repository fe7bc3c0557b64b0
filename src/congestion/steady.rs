//! `steady`: a model-based congestion controller (after BBR) that does not
//! take random loss for congestion.
//!
//! Every round trip it measures the delivery rate (bytes acknowledged during
//! the round over the round's duration) and keeps the largest of the last
//! [`BANDWIDTH_ROUNDS`]; with the path's minimum RTT that is the
//! bandwidth-delay product (BDP). The window is [`SteadyConfig::window_gain`]
//! (2) × BDP: one BDP fills the pipe, the rest lets the measured rate grow
//! when the path has more to give (with no queue, a window of 2 BDP delivers
//! twice the estimate in the next round) and bounds the queue this flow
//! keeps at one BDP. quinn paces at 1.25 × window / smoothed RTT, so the
//! window also sets the pace.
//!
//! Start-up doubles the window every round (it grows by what is
//! acknowledged) until the rate has not grown by a quarter for three rounds,
//! or a round loses more than [`HEAVY_LOSS`] of its packets.
//!
//! Loss tells congestion from noise by the queue it comes with. Random loss
//! on Wi-Fi or a mobile link (a few percent at most) arrives whatever the
//! queue, and slowing down would not reduce it: a round that loses less than
//! [`HEAVY_LOSS`] of its bytes while the smoothed RTT stays below (gain +
//! [`LONG_QUEUE_MARGIN`]) × the minimum changes nothing. (Alone on a path
//! this flow keeps a queue of (gain − 1) × BDP, so its smoothed RTT sits
//! near gain × the minimum.) Loss while the queue is longer than this flow
//! makes by itself means a full bottleneck buffer shared with other flows:
//! the window is capped at [`QUEUE_LOSS_CUT`] × what it was, so a competing
//! TCP flow, which backs off on every loss, is not pushed off the link. A
//! round above [`HEAVY_LOSS`] (a policer, a queue much shorter than the BDP)
//! caps it at [`HEAVY_LOSS_CUT`] ×. A cap grows back by an eighth every round
//! without such loss.
//!
//! Persistent congestion (every packet over several PTOs lost) drops to the
//! minimum window; acknowledgements grow it back towards the model's target.
//!
//! [`SteadyModel`] is the state machine, driven with explicit times and the
//! minimum RTT so unit tests run it without a connection; [`Steady`] adapts
//! it to quinn's `Controller` trait.

use std::any::Any;
use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::congestion::{Controller, ControllerFactory, ControllerMetrics};
use quinn_proto::RttEstimator;

/// The RTT the model uses is never below this. On loopback and LAN paths
/// (tens of microseconds) scheduling and batched acknowledgements, not the
/// path, set the RTT a window must cover: 2 × bandwidth × a 50 µs minimum
/// starved a loopback transfer (0.7× of Cubic). On any path where the RTT
/// is above it, it changes nothing.
pub const MIN_BASE_RTT: Duration = Duration::from_millis(2);
/// Rounds the bandwidth estimate remembers its largest sample for.
pub const BANDWIDTH_ROUNDS: u64 = 10;
/// Share of a round's bytes that must be lost before loss counts as
/// congestion.
pub const HEAVY_LOSS: f64 = 0.10;
/// Window gain during start-up: 2/ln 2, BBR's, so the window doubles per
/// round while the rate keeps up.
const STARTUP_GAIN: f64 = 2.885;
/// Start-up ends after this many rounds without [`STARTUP_GROWTH`].
const STARTUP_FLAT_ROUNDS: u32 = 3;
const STARTUP_GROWTH: f64 = 1.25;
/// What a round of heavy loss leaves of the window.
pub const HEAVY_LOSS_CUT: f64 = 0.7;
/// A smoothed RTT above the window gain plus this, × the minimum, means a
/// queue longer than this flow keeps by itself: loss then counts as
/// congestion.
pub const LONG_QUEUE_MARGIN: f64 = 0.25;
/// What a round with loss and a long queue leaves of the window.
pub const QUEUE_LOSS_CUT: f64 = 0.85;

/// Settings of the [`Steady`] controller; also its factory.
#[derive(Clone, Debug)]
pub struct SteadyConfig {
    /// Window before the first measurement, bytes. Default 14,720 (RFC 9002's
    /// ten packets, at most).
    pub initial_window: u64,
    /// Window as a multiple of the measured BDP. Default 2, as BBR's: in
    /// the lab (docs/BENCHMARKS.md) 1.25 left the link short when alone
    /// (0.93× of TCP), and 1.5 and 1.75 gave up more of it to a competing
    /// TCP flow than 2 did, for no gain under loss.
    pub window_gain: f64,
}

impl Default for SteadyConfig {
    fn default() -> Self {
        Self {
            initial_window: 14_720,
            window_gain: 2.0,
        }
    }
}

impl ControllerFactory for SteadyConfig {
    fn build(self: Arc<Self>, _now: Instant, current_mtu: u16) -> Box<dyn Controller> {
        Box::new(Steady {
            model: SteadyModel::new(&self, u64::from(current_mtu)),
            config: self,
        })
    }
}

/// Where the model is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// Finding the bandwidth: the window doubles every round.
    Startup,
    /// Holding the window at the gain × the measured BDP.
    Steady,
}

/// The controller's state machine: feed it sends, acknowledgements, losses
/// and the ends of acknowledgement batches, in the order they happen; read
/// [`SteadyModel::window`].
#[derive(Clone, Debug)]
pub struct SteadyModel {
    gain: f64,
    initial_window: u64,
    mtu: u64,
    phase: Phase,
    window: u64,
    /// The cap a round of heavy loss set, while it binds.
    loss_cap: Option<u64>,
    min_rtt: Option<Duration>,
    smoothed_rtt: Option<Duration>,
    /// Delivery rates of recent rounds: (round, bytes per second, whether
    /// the application limited it).
    samples: VecDeque<(u64, u64, bool)>,
    largest_sent: u64,
    round: Round,
    startup_best: u64,
    startup_flat_rounds: u32,
}

/// The round trip being measured: it ends when a packet sent after it began
/// is acknowledged.
#[derive(Clone, Debug, Default)]
struct Round {
    count: u64,
    /// Packets up to this one belong to the round; `None` before any ack.
    last_packet: Option<u64>,
    started: Option<Instant>,
    acked: u64,
    lost: u64,
    app_limited: bool,
    /// Whether the smoothed RTT was above (gain + [`LONG_QUEUE_MARGIN`]) ×
    /// the minimum.
    long_queue: bool,
}

impl SteadyModel {
    pub fn new(config: &SteadyConfig, mtu: u64) -> Self {
        Self {
            gain: config.window_gain,
            initial_window: config.initial_window,
            mtu,
            phase: Phase::Startup,
            window: config.initial_window.max(min_window(mtu)),
            loss_cap: None,
            min_rtt: None,
            smoothed_rtt: None,
            samples: VecDeque::new(),
            largest_sent: 0,
            round: Round::default(),
            startup_best: 0,
            startup_flat_rounds: 0,
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The bandwidth estimate, bytes per second (0 before a measurement).
    pub fn bandwidth(&self) -> u64 {
        self.samples
            .iter()
            .map(|&(_, rate, _)| rate)
            .max()
            .unwrap_or(0)
    }

    /// Bytes that may be in flight.
    pub fn window(&self) -> u64 {
        let window = match self.loss_cap {
            Some(cap) => self.window.min(cap),
            None => self.window,
        };
        window.max(min_window(self.mtu))
    }

    /// The estimate × the minimum RTT × `gain`; the initial window before
    /// there is an estimate.
    fn target(&self, gain: f64) -> u64 {
        let (bandwidth, Some(rtt)) = (self.bandwidth(), self.base_rtt()) else {
            return self.initial_window;
        };
        if bandwidth == 0 {
            return self.initial_window;
        }
        let bdp = bandwidth as f64 * rtt.as_secs_f64();
        ((gain * bdp) as u64).max(self.initial_window)
    }

    /// The minimum RTT, but at least [`MIN_BASE_RTT`].
    fn base_rtt(&self) -> Option<Duration> {
        self.min_rtt.map(|rtt| rtt.max(MIN_BASE_RTT))
    }

    pub fn on_sent(&mut self, last_packet: u64) {
        self.largest_sent = self.largest_sent.max(last_packet);
    }

    /// `bytes` were acknowledged; `min_rtt` is the path's minimum so far,
    /// `smoothed_rtt` its smoothed RTT now.
    pub fn on_ack(
        &mut self,
        bytes: u64,
        app_limited: bool,
        min_rtt: Duration,
        smoothed_rtt: Duration,
    ) {
        if !min_rtt.is_zero() {
            self.min_rtt = Some(self.min_rtt.map_or(min_rtt, |known| known.min(min_rtt)));
        }
        if let Some(base) = self.base_rtt() {
            let long = (self.gain + LONG_QUEUE_MARGIN) * base.as_secs_f64();
            self.round.long_queue |= smoothed_rtt.as_secs_f64() > long;
        }
        self.smoothed_rtt = Some(smoothed_rtt);
        self.round.acked += bytes;
        self.round.app_limited |= app_limited;
        let target = match self.phase {
            Phase::Startup => self.target(STARTUP_GAIN),
            Phase::Steady => self.target(self.gain),
        };
        // Grow towards the target by what was delivered (at most doubling per
        // round); never shrink in start-up, shrink at once in steady state.
        let grown = self.window + bytes;
        self.window = match self.phase {
            Phase::Startup if self.bandwidth() == 0 => grown,
            Phase::Startup => grown.min(target.max(self.window)),
            Phase::Steady => grown.min(target),
        };
    }

    /// `bytes` were declared lost; `persistent`: everything sent over
    /// several PTOs was.
    pub fn on_loss(&mut self, bytes: u64, persistent: bool) {
        self.round.lost += bytes;
        if persistent {
            self.window = min_window(self.mtu);
        }
    }

    /// A batch of acknowledgements ended at `now`; `largest_acked` is the
    /// largest packet number it acknowledged.
    pub fn on_end_acks(&mut self, now: Instant, largest_acked: Option<u64>) {
        let Some(largest_acked) = largest_acked else {
            return;
        };
        match (self.round.last_packet, self.round.started) {
            (Some(last), Some(started)) if largest_acked >= last => {
                self.end_round(now.saturating_duration_since(started));
            }
            (Some(_), Some(_)) => return,
            _ => {}
        }
        self.round = Round {
            count: self.round.count + 1,
            last_packet: Some(self.largest_sent),
            started: Some(now),
            ..Round::default()
        };
    }

    fn end_round(&mut self, elapsed: Duration) {
        let round = &self.round;
        while let Some(&(count, _, _)) = self.samples.front() {
            if count + BANDWIDTH_ROUNDS > round.count {
                break;
            }
            self.samples.pop_front();
        }
        if !elapsed.is_zero() {
            let rate = (round.acked as f64 / elapsed.as_secs_f64()) as u64;
            // An application-limited round says nothing about the path,
            // unless it still beat the estimate (or there is none left: then
            // the window follows what the application sends, and doubles per
            // round once it sends more).
            // The first round with more to send after the estimate has
            // become the application's rate is a new start-up: the path's
            // rate is unknown again.
            let only_app_rates = self.samples.iter().all(|&(_, _, limited)| limited);
            if !round.app_limited && only_app_rates && !self.samples.is_empty() {
                self.phase = Phase::Startup;
                self.startup_best = 0;
                self.startup_flat_rounds = 0;
            }
            if !round.app_limited || rate > self.bandwidth() {
                self.samples
                    .push_back((round.count, rate, round.app_limited));
            }
        }
        let heavy_loss = round.lost as f64 > HEAVY_LOSS * (round.acked + round.lost) as f64;
        let queue_loss = round.lost > 0 && round.long_queue;
        if heavy_loss || queue_loss {
            let factor = if heavy_loss {
                HEAVY_LOSS_CUT
            } else {
                QUEUE_LOSS_CUT
            };
            let cut = (self.window() as f64 * factor) as u64;
            self.loss_cap = Some(cut.max(min_window(self.mtu)));
        } else if let Some(cap) = self.loss_cap {
            let grown = cap + cap / 8;
            self.loss_cap = (grown < self.target(self.gain)).then_some(grown);
        }
        if self.phase == Phase::Startup && !round.app_limited {
            let bandwidth = self.bandwidth();
            if bandwidth as f64 >= self.startup_best as f64 * STARTUP_GROWTH {
                self.startup_best = bandwidth;
                self.startup_flat_rounds = 0;
            } else {
                self.startup_flat_rounds += 1;
            }
            let full = self.startup_flat_rounds >= STARTUP_FLAT_ROUNDS;
            if heavy_loss || queue_loss || full {
                self.phase = Phase::Steady;
                self.window = self.window.min(self.target(self.gain));
            }
        }
    }

    pub fn on_mtu_update(&mut self, mtu: u64) {
        self.mtu = mtu;
    }
}

/// The smallest window: four full packets.
fn min_window(mtu: u64) -> u64 {
    4 * mtu
}

/// [`SteadyModel`] as a quinn congestion controller.
#[derive(Clone, Debug)]
pub struct Steady {
    config: Arc<SteadyConfig>,
    model: SteadyModel,
}

impl Steady {
    pub fn model(&self) -> &SteadyModel {
        &self.model
    }
}

impl Controller for Steady {
    fn on_sent(&mut self, _now: Instant, _bytes: u64, last_packet_number: u64) {
        self.model.on_sent(last_packet_number);
    }

    fn on_ack(
        &mut self,
        _now: Instant,
        _sent: Instant,
        bytes: u64,
        app_limited: bool,
        rtt: &RttEstimator,
    ) {
        self.model.on_ack(bytes, app_limited, rtt.min(), rtt.get());
    }

    fn on_end_acks(
        &mut self,
        now: Instant,
        _in_flight: u64,
        _app_limited: bool,
        largest_packet_num_acked: Option<u64>,
    ) {
        self.model.on_end_acks(now, largest_packet_num_acked);
    }

    fn on_congestion_event(
        &mut self,
        _now: Instant,
        _sent: Instant,
        is_persistent_congestion: bool,
        lost_bytes: u64,
    ) {
        self.model.on_loss(lost_bytes, is_persistent_congestion);
    }

    fn on_mtu_update(&mut self, new_mtu: u16) {
        self.model.on_mtu_update(u64::from(new_mtu));
    }

    fn window(&self) -> u64 {
        self.model.window()
    }

    fn metrics(&self) -> ControllerMetrics {
        let mut metrics = ControllerMetrics::default();
        metrics.congestion_window = self.window();
        metrics.pacing_rate = Some(self.model.bandwidth() * 8);
        metrics
    }

    fn clone_box(&self) -> Box<dyn Controller> {
        Box::new(self.clone())
    }

    fn initial_window(&self) -> u64 {
        self.config.initial_window
    }

    fn into_any(self: Box<Self>) -> Box<dyn Any> {
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MTU: u64 = 1200;
    const RTT: Duration = Duration::from_millis(40);
    /// 100 Mbit/s.
    const LINK: u64 = 12_500_000;
    const BDP: u64 = LINK * 40 / 1000;

    /// A bottleneck of `LINK` bytes/s with `RTT` and no queue, on a
    /// virtual clock: each round sends one window of packets and has them
    /// acknowledged one RTT (or the link's time for them) later, every
    /// `loss_every`-th lost.
    struct Path {
        model: SteadyModel,
        now: Instant,
        next_packet: u64,
        /// The first packet of the round in flight.
        round_first: u64,
        loss_every: Option<u64>,
        /// Queueing delay the smoothed RTT shows on top of `RTT`.
        queue: Duration,
        /// Bytes the application has per round; `None`: always more.
        app_bytes: Option<u64>,
    }

    impl Path {
        fn new() -> Self {
            Self {
                model: SteadyModel::new(&SteadyConfig::default(), MTU),
                now: Instant::now(),
                next_packet: 0,
                round_first: 0,
                loss_every: None,
                queue: Duration::ZERO,
                app_bytes: None,
            }
        }

        /// One round trip, ack-clocked: the round's packets (sent during the
        /// previous round) are acknowledged in ten batches spread over the
        /// time the link needs for them, and after each batch the next
        /// round's packets go out as far as the window (and the
        /// application) allow.
        fn round(&mut self) {
            let app_limited = self.app_bytes.is_some();
            if self.next_packet == self.round_first {
                self.send_next(1, 1);
            }
            let (first, packets) = (self.round_first, self.next_packet - self.round_first);
            self.round_first = self.next_packet;
            let duration = RTT.max(Duration::from_secs_f64(
                (packets * MTU) as f64 / LINK as f64,
            ));
            for batch in 0..10 {
                self.now += duration / 10;
                let (from, to) = (
                    first + packets * batch / 10,
                    first + packets * (batch + 1) / 10,
                );
                for packet in from..to {
                    if self.loss_every.is_some_and(|every| packet % every == 0) {
                        self.model.on_loss(MTU, false);
                    } else {
                        self.model.on_ack(MTU, app_limited, RTT, RTT + self.queue);
                    }
                }
                if to > from {
                    self.model.on_end_acks(self.now, Some(to - 1));
                }
                self.send_next(batch + 1, 10);
            }
        }

        /// Sends `part`/`of` of what the next round may carry, in all.
        fn send_next(&mut self, part: u64, of: u64) {
            let bytes = self.model.window().min(self.app_bytes.unwrap_or(u64::MAX));
            let wanted = (bytes / MTU).max(1) * part / of;
            let sent = self.next_packet - self.round_first;
            if wanted > sent {
                self.next_packet += wanted - sent;
                self.model.on_sent(self.next_packet - 1);
            }
        }

        fn rounds(&mut self, count: usize) {
            for _ in 0..count {
                self.round();
            }
        }
    }

    #[test]
    fn startup_doubles_then_holds_the_gain_times_the_bdp() {
        let mut path = Path::new();
        path.rounds(3);
        assert_eq!(path.model.phase(), Phase::Startup);
        let early = path.model.window();
        path.round();
        assert!(path.model.window() >= early * 3 / 2, "startup grows fast");
        path.rounds(30);
        assert_eq!(path.model.phase(), Phase::Steady);
        let bandwidth = path.model.bandwidth();
        assert!(
            bandwidth > LINK * 9 / 10 && bandwidth < LINK * 101 / 100,
            "{bandwidth}"
        );
        let window = path.model.window();
        assert!(
            window > BDP * 18 / 10 && window < BDP * 202 / 100,
            "{window}"
        );
    }

    #[test]
    fn random_loss_below_the_threshold_keeps_the_window() {
        for loss_every in [1000, 100, 33] {
            let mut path = Path::new();
            path.loss_every = Some(loss_every);
            path.rounds(40);
            assert_eq!(path.model.phase(), Phase::Steady);
            let window = path.model.window();
            assert!(window > BDP * 18 / 10, "1/{loss_every} lost: {window}");
        }
        // Also with the queue this flow keeps by itself.
        let mut path = Path::new();
        path.loss_every = Some(100);
        path.queue = RTT;
        path.rounds(40);
        assert!(path.model.window() > BDP * 18 / 10);
    }

    #[test]
    fn loss_with_a_long_queue_cuts_the_window_a_little_and_it_grows_back() {
        let mut path = Path::new();
        path.rounds(40);
        let before = path.model.window();
        // A competing flow filled the bottleneck's buffer: RTT tripled, and
        // the buffer drops a packet now and then.
        path.queue = 2 * RTT;
        path.loss_every = Some(200);
        path.round();
        let cut = path.model.window();
        assert!(cut <= before * 85 / 100 + MTU, "{before} → {cut}");
        assert!(cut >= before * 7 / 10, "a gentle cut: {before} → {cut}");
        path.queue = Duration::ZERO;
        path.loss_every = None;
        path.rounds(20);
        assert!(path.model.window() >= before * 9 / 10);
    }

    #[test]
    fn a_round_of_heavy_loss_cuts_the_window_and_it_grows_back() {
        let mut path = Path::new();
        path.rounds(40);
        let before = path.model.window();
        path.loss_every = Some(4);
        path.round();
        let cut = path.model.window();
        assert!(cut <= before * 7 / 10 + MTU, "{before} → {cut}");
        path.loss_every = None;
        path.rounds(20);
        assert!(path.model.window() >= before * 9 / 10);
    }

    #[test]
    fn heavy_loss_in_startup_ends_it() {
        let mut path = Path::new();
        path.loss_every = Some(5);
        path.rounds(2);
        assert_eq!(path.model.phase(), Phase::Steady);
    }

    #[test]
    fn persistent_congestion_drops_to_the_minimum_window() {
        let mut path = Path::new();
        path.rounds(40);
        path.model.on_loss(MTU, true);
        assert_eq!(path.model.window(), min_window(MTU));
        path.rounds(10);
        assert!(path.model.window() > BDP, "grows back on acknowledgements");
    }

    #[test]
    fn application_limited_rounds_keep_the_estimate_a_while_and_never_end_startup() {
        let mut path = Path::new();
        path.rounds(40);
        let bandwidth = path.model.bandwidth();
        // Chat: a few packets a round.
        path.app_bytes = Some(4 * MTU);
        path.rounds(5);
        assert_eq!(path.model.bandwidth(), bandwidth, "estimate kept");
        path.rounds(30);
        assert!(
            path.model.bandwidth() < bandwidth / 10,
            "follows the application"
        );
        // A transfer starts: a new start-up finds the rate within a few
        // rounds.
        path.app_bytes = None;
        path.rounds(15);
        let window = path.model.window();
        assert!(window > BDP * 18 / 10, "{window}");

        let mut idle = Path::new();
        idle.app_bytes = Some(4 * MTU);
        idle.rounds(10);
        assert_eq!(idle.model.phase(), Phase::Startup);
    }
}
