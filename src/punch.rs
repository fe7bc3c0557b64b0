//! The hole-punch scheduler: which probes to send and which handshakes to
//! start, when. Pure: it owns no socket and no clock. The node drives it:
//! feed it what happened (`handle_*`), then ask what to do (`poll_action`)
//! until it answers `None`, and sleep until `poll_timeout`.
//!
//! Both sides spray probes at every candidate on a backoff schedule, which
//! opens each side's NAT toward the other. A probe that arrives proves a path
//! and teaches its source (a peer-reflexive candidate, which is how a
//! symmetric NAT's fresh mapping is found). The acceptor answers probes; the
//! dialer starts a QUIC handshake to each given candidate once, staggered, and
//! again to any address a probe arrived from. The node keeps the first
//! handshake that authenticates.
//!
//! A dialer's first handshake packet must not reach the peer's NAT before
//! the peer's first probe has opened it, or it is dropped there and the
//! handshake waits for the peer's probe to come back: half a round trip
//! lost. The tracker times the two introductions to arrive together; when
//! the dialer knows the peer's is late ([`peer_lateness`]), it also dials
//! once at the moment the peer's NAT opens ([`Punch::expect_peer_late`]).

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

pub use crate::candidates::{order_candidates, MAX_IPV6_CANDIDATES, MAX_LAN_CANDIDATES};

pub use crate::protocol::Role;

/// Something the node should do now.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PunchAction {
    Probe(SocketAddr),
    Dial(SocketAddr),
}

/// Timing of a punch. Defaults suit paths from LAN to intercontinental.
#[derive(Clone, Debug)]
pub struct PunchSchedule {
    /// When probe rounds go out, from the start. Default: 0, 25, 50, 100,
    /// 200, 400, 800 ms, then every 1.6 s.
    pub probe_rounds: Vec<Duration>,
    /// Interval of probe rounds after the listed ones.
    pub probe_interval: Duration,
    /// Between the dialer's first handshakes to successive candidates.
    /// Default 25 ms.
    pub dial_stagger: Duration,
    /// A proven address is dialed again if its last handshake started this
    /// long ago (its first packets may have hit a closed NAT). Default 300 ms.
    pub redial_after: Duration,
    /// Handshakes started per address, at most. Default 4.
    pub max_dials_per_address: u32,
    /// The whole attempt. Default 10 s.
    pub deadline: Duration,
    /// Most addresses one punch tracks (given plus learned). Default 24.
    pub max_candidates: usize,
}

impl Default for PunchSchedule {
    fn default() -> Self {
        Self {
            probe_rounds: [0, 25, 50, 100, 200, 400, 800]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            probe_interval: Duration::from_millis(1600),
            dial_stagger: Duration::from_millis(25),
            redial_after: Duration::from_millis(300),
            max_dials_per_address: 4,
            deadline: Duration::from_secs(10),
            max_candidates: 24,
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Source {
    /// From the tracker's introduction.
    Given,
    /// A probe arrived from it.
    Learned,
}

#[derive(Clone, Debug)]
struct Candidate {
    addr: SocketAddr,
    source: Source,
    /// A probe arrived from this address.
    proven: bool,
    dials: u32,
    last_dial: Option<Instant>,
    /// When the first handshake to this given candidate is due (dialer).
    first_dial_at: Option<Instant>,
    /// When another is due, timed to reach the peer's NAT after the peer's
    /// first probe opened it (dialer, when the peer is late).
    timed_dial_at: Option<Instant>,
    failed: Option<String>,
}

/// One punch attempt toward one peer.
pub struct Punch {
    role: Role,
    schedule: PunchSchedule,
    started: Instant,
    candidates: Vec<Candidate>,
    next_round: usize,
    next_round_at: Instant,
    pending: VecDeque<PunchAction>,
    probes_received: u32,
}

impl Punch {
    pub fn new(role: Role, given: &[SocketAddr], schedule: PunchSchedule, now: Instant) -> Self {
        let mut candidates: Vec<Candidate> = Vec::new();
        for (index, addr) in given.iter().enumerate() {
            if candidates.iter().any(|c| c.addr == *addr)
                || candidates.len() >= schedule.max_candidates
            {
                continue;
            }
            let first_dial_at =
                (role == Role::Dialer).then(|| now + schedule.dial_stagger * index as u32);
            candidates.push(Candidate {
                addr: *addr,
                source: Source::Given,
                proven: false,
                dials: 0,
                last_dial: None,
                first_dial_at,
                timed_dial_at: None,
                failed: None,
            });
        }
        Self {
            role,
            started: now,
            next_round: 0,
            next_round_at: now,
            candidates,
            schedule,
            pending: VecDeque::new(),
            probes_received: 0,
        }
    }

    pub fn role(&self) -> Role {
        self.role
    }

    /// The peer's introduction arrives `late` after this side's (see
    /// [`peer_lateness`]), so its first probe opens its NAT that much later
    /// than the first handshake assumes. A dialer then dials each given
    /// candidate once more at that moment: its packet reaches the peer's
    /// NAT a one-way trip after it opened, instead of waiting for the
    /// peer's probe to cross back (a one-way trip more). Unless a probe
    /// has proven the path first: that dials at once anyway.
    /// Below [`MIN_LATENESS`] nothing changes.
    pub fn expect_peer_late(&mut self, late: Duration) {
        if self.role != Role::Dialer || late < MIN_LATENESS {
            return;
        }
        let at = self.started + late;
        for candidate in &mut self.candidates {
            if candidate.source == Source::Given {
                candidate.timed_dial_at = Some(at);
            }
        }
    }

    /// A probe of this attempt arrived from `from`.
    pub fn handle_probe(&mut self, from: SocketAddr, now: Instant) {
        self.probes_received = self.probes_received.saturating_add(1);
        let index = match self.candidates.iter().position(|c| c.addr == from) {
            Some(index) => index,
            None if self.candidates.len() < self.schedule.max_candidates => {
                // A learned address (a symmetric NAT's fresh mapping, or a
                // hairpin's masquerade) waits until every given candidate
                // has had its slot: those are ordered best first.
                let given = self
                    .candidates
                    .iter()
                    .filter(|c| c.source == Source::Given)
                    .count();
                let earliest = self.started + self.schedule.dial_stagger * given as u32;
                let first_dial_at = (self.role == Role::Dialer).then(|| earliest.max(now));
                self.candidates.push(Candidate {
                    addr: from,
                    source: Source::Learned,
                    proven: false,
                    dials: 0,
                    last_dial: None,
                    first_dial_at,
                    timed_dial_at: None,
                    failed: None,
                });
                self.candidates.len() - 1
            }
            None => return,
        };
        let first_proof = !self.candidates[index].proven;
        self.candidates[index].proven = true;
        match self.role {
            // Answer at once: the answer is what opens our NAT to that source.
            Role::Acceptor if first_proof => self.queue(PunchAction::Probe(from)),
            Role::Acceptor => {}
            Role::Dialer => {
                if first_proof {
                    self.queue(PunchAction::Probe(from));
                }
                // The first proof means the hole is open now: a handshake
                // started before it may have hit a closed NAT, so start
                // another at once rather than wait for the redial pause.
                let dial_now = first_proof
                    && self.candidates[index].dials < self.schedule.max_dials_per_address;
                // A given candidate still waiting for its slot keeps it: the
                // order puts better paths first (LAN before a hairpin).
                let waiting_for_slot = self.candidates[index].first_dial_at.is_some();
                if !waiting_for_slot && (dial_now || self.may_dial(index, now, true)) {
                    self.start_dial(index, now);
                }
            }
        }
    }

    /// A handshake to `addr` failed (refused, wrong key, timed out).
    pub fn handle_dial_failed(&mut self, addr: SocketAddr, reason: String) {
        if let Some(candidate) = self.candidates.iter_mut().find(|c| c.addr == addr) {
            candidate.failed = Some(reason);
        }
    }

    fn may_dial(&self, index: usize, now: Instant, proven: bool) -> bool {
        let candidate = &self.candidates[index];
        if candidate.dials >= self.schedule.max_dials_per_address {
            return false;
        }
        match candidate.last_dial {
            None => true,
            Some(last) => {
                proven && now.saturating_duration_since(last) >= self.schedule.redial_after
            }
        }
    }

    fn start_dial(&mut self, index: usize, now: Instant) {
        let candidate = &mut self.candidates[index];
        candidate.dials += 1;
        candidate.last_dial = Some(now);
        candidate.first_dial_at = None;
        // A handshake started once the peer's NAT is open (by the clock,
        // or proven by a probe) is the timed one.
        if candidate.proven || candidate.timed_dial_at.is_some_and(|at| at <= now) {
            candidate.timed_dial_at = None;
        }
        let dial = PunchAction::Dial(candidate.addr);
        self.queue(dial);
    }

    /// Queues an action unless the same one is already waiting.
    fn queue(&mut self, action: PunchAction) {
        if !self.pending.contains(&action) {
            self.pending.push_back(action);
        }
    }

    fn round_time(&self, round: usize) -> Duration {
        match self.schedule.probe_rounds.get(round) {
            Some(offset) => *offset,
            None => {
                let last = self
                    .schedule
                    .probe_rounds
                    .last()
                    .copied()
                    .unwrap_or_default();
                let extra = (round + 1 - self.schedule.probe_rounds.len()) as u32;
                last + self.schedule.probe_interval * extra
            }
        }
    }

    /// The next thing to do now, if any.
    pub fn poll_action(&mut self, now: Instant) -> Option<PunchAction> {
        if self.is_expired(now) {
            return None;
        }
        if now >= self.next_round_at {
            let probes: Vec<PunchAction> = self
                .candidates
                .iter()
                .map(|c| PunchAction::Probe(c.addr))
                .collect();
            for probe in probes {
                self.queue(probe);
            }
            self.next_round += 1;
            self.next_round_at = self.started + self.round_time(self.next_round);
        }
        if self.role == Role::Dialer {
            // A handshake to a proven given address that may still finish
            // holds back learned ones (a hairpin's masquerade must not beat
            // the LAN): until its redial pause ends.
            let given_in_flight = self
                .candidates
                .iter()
                .filter(|c| c.source == Source::Given && c.proven && c.failed.is_none())
                .filter_map(|c| c.last_dial.map(|at| at + self.schedule.redial_after))
                .filter(|until| *until > now)
                .max();
            let due: Vec<usize> = (0..self.candidates.len())
                .filter(|&i| self.candidates[i].first_dial_at.is_some_and(|at| at <= now))
                .collect();
            for index in due {
                match given_in_flight {
                    Some(until) if self.candidates[index].source == Source::Learned => {
                        self.candidates[index].first_dial_at = Some(until);
                    }
                    _ => self.start_dial(index, now),
                }
            }
            // Timed to the peer's NAT opening (after each one's first dial).
            let timed: Vec<usize> = (0..self.candidates.len())
                .filter(|&i| {
                    let c = &self.candidates[i];
                    c.first_dial_at.is_none()
                        && c.timed_dial_at.is_some_and(|at| at <= now)
                        && c.dials < self.schedule.max_dials_per_address
                })
                .collect();
            for index in timed {
                self.start_dial(index, now);
            }
            // Proven addresses whose last handshake may have been lost.
            let redial: Vec<usize> = (0..self.candidates.len())
                .filter(|&i| self.candidates[i].proven && self.candidates[i].last_dial.is_some())
                .filter(|&i| self.may_dial(i, now, true))
                .collect();
            for index in redial {
                self.start_dial(index, now);
            }
        }
        self.pending.pop_front()
    }

    /// When to call [`Punch::poll_action`] next.
    pub fn poll_timeout(&self) -> Instant {
        let deadline = self.started + self.schedule.deadline;
        let mut next = self.next_round_at.min(deadline);
        for candidate in &self.candidates {
            if let Some(at) = candidate.first_dial_at {
                next = next.min(at);
            }
            if let Some(at) = candidate.timed_dial_at {
                next = next.min(at);
            }
            if let (true, Some(last)) = (candidate.proven, candidate.last_dial) {
                if candidate.dials < self.schedule.max_dials_per_address {
                    next = next.min(last + self.schedule.redial_after);
                }
            }
        }
        next
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.started + self.schedule.deadline
    }

    /// What was tried and what came of it, for the error a failed punch reports.
    pub fn summary(&self) -> String {
        if self.candidates.is_empty() {
            return "no candidate addresses".into();
        }
        let parts: Vec<String> = self
            .candidates
            .iter()
            .map(|c| {
                let kind = match c.source {
                    Source::Given => "given",
                    Source::Learned => "learned",
                };
                let outcome = match (&c.failed, c.proven) {
                    (Some(reason), _) => format!("handshake failed: {reason}"),
                    (None, true) => "probes arrived, no handshake completed".into(),
                    (None, false) => "no probe arrived".into(),
                };
                format!("{} ({kind}): {outcome}", c.addr)
            })
            .collect();
        format!(
            "{} probes received over {:?}; {}",
            self.probes_received,
            self.schedule.deadline,
            parts.join("; ")
        )
    }
}

/// A peer's lateness below which a dialer changes nothing: its first
/// handshake packet takes at least a one-way trip to reach the peer's NAT,
/// and between sites that is more than this.
pub const MIN_LATENESS: Duration = Duration::from_millis(5);

/// How late the peer's introduction arrives after this node's, from what
/// the tracker assumed this node's round trip to be when it timed the two
/// (`assumed`, sent with the introduction) and the round trip this node
/// measured itself (`measured`). The tracker holds back the nearer side's
/// copy by half the difference of the two round trips; an overestimate of
/// this node's (a young session's smoothed RTT starts high) holds the
/// peer's copy back by half the error, an underestimate makes this node's
/// copy the late one (then zero). The peer's own error is unknown here and
/// taken as none.
/// At most [`MAX_LATENESS`]: beyond, the tracker's figure is nonsense.
pub fn peer_lateness(assumed: Duration, measured: Duration) -> Duration {
    (assumed.saturating_sub(measured) / 2).min(MAX_LATENESS)
}

/// The most lateness [`peer_lateness`] reports.
pub const MAX_LATENESS: Duration = Duration::from_secs(1);

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    fn drain(punch: &mut Punch, now: Instant) -> Vec<PunchAction> {
        std::iter::from_fn(|| punch.poll_action(now)).collect()
    }

    #[test]
    fn dialer_probes_everything_then_dials_given_candidates_staggered() {
        let start = Instant::now();
        let given = [addr("198.51.100.1:4000"), addr("10.0.0.2:4000")];
        let mut punch = Punch::new(Role::Dialer, &given, PunchSchedule::default(), start);
        let first = drain(&mut punch, start);
        assert_eq!(
            first,
            vec![
                PunchAction::Probe(given[0]),
                PunchAction::Probe(given[1]),
                PunchAction::Dial(given[0]),
            ]
        );
        let next = punch.poll_timeout();
        assert_eq!(next, start + Duration::from_millis(25));
        let second = drain(&mut punch, next);
        assert!(second.contains(&PunchAction::Dial(given[1])));
        assert!(second.contains(&PunchAction::Probe(given[0])));
    }

    #[test]
    fn acceptor_answers_a_probe_from_an_unknown_mapping_and_never_dials() {
        let start = Instant::now();
        let given = [addr("198.51.100.1:4000")];
        let mut punch = Punch::new(Role::Acceptor, &given, PunchSchedule::default(), start);
        drain(&mut punch, start);
        // A symmetric NAT gave the dialer a fresh port toward us.
        let fresh = addr("198.51.100.1:51234");
        punch.handle_probe(fresh, start);
        assert_eq!(drain(&mut punch, start), vec![PunchAction::Probe(fresh)]);
        // Later rounds probe the learned address too, and never dial.
        let later = start + Duration::from_secs(1);
        let actions = drain(&mut punch, later);
        assert!(actions.contains(&PunchAction::Probe(fresh)));
        assert!(actions.iter().all(|a| matches!(a, PunchAction::Probe(_))));
    }

    #[test]
    fn dialer_dials_an_address_as_soon_as_it_is_proven_and_again_after_a_pause() {
        let start = Instant::now();
        let given = [addr("198.51.100.1:4000")];
        let mut punch = Punch::new(Role::Dialer, &given, PunchSchedule::default(), start);
        drain(&mut punch, start); // the first dial went out before the hole was open
        let proof = start + Duration::from_millis(40);
        punch.handle_probe(given[0], proof);
        // The first proof dials again at once: the hole just opened.
        let actions = drain(&mut punch, proof);
        assert_eq!(
            actions,
            vec![PunchAction::Probe(given[0]), PunchAction::Dial(given[0])]
        );
        // Further probes within the pause do not.
        // (45 ms: before the probe round due at 50 ms.)
        let soon = proof + Duration::from_millis(5);
        punch.handle_probe(given[0], soon);
        assert_eq!(drain(&mut punch, soon), vec![]);
        let retry = proof + Duration::from_millis(300);
        assert!(punch.poll_timeout() <= retry);
        assert!(drain(&mut punch, retry).contains(&PunchAction::Dial(given[0])));
        // A learned address waits while that proven handshake may finish.
        let learned = addr("203.0.113.9:6000");
        punch.handle_probe(learned, retry);
        assert!(!drain(&mut punch, retry).contains(&PunchAction::Dial(learned)));
        let after = retry + Duration::from_millis(300);
        assert!(drain(&mut punch, after).contains(&PunchAction::Dial(learned)));
    }

    #[test]
    fn regression_a_proof_does_not_let_a_later_candidate_jump_the_queue() {
        // Behind one hairpinning NAT: LAN first, the public address second.
        let start = Instant::now();
        let given = [addr("10.0.1.2:4000"), addr("198.51.100.11:41000")];
        let mut punch = Punch::new(Role::Dialer, &given, PunchSchedule::default(), start);
        drain(&mut punch, start);
        let early = start + Duration::from_millis(2);
        punch.handle_probe(given[1], early);
        assert!(!drain(&mut punch, early).contains(&PunchAction::Dial(given[1])));
        let slot = start + Duration::from_millis(25);
        assert!(drain(&mut punch, slot).contains(&PunchAction::Dial(given[1])));
    }

    #[test]
    fn regression_a_hairpin_masquerade_learned_early_waits_for_the_lan() {
        let start = Instant::now();
        let given = [addr("10.0.1.2:4000"), addr("198.51.100.11:41000")];
        let mut punch = Punch::new(Role::Dialer, &given, PunchSchedule::default(), start);
        drain(&mut punch, start);
        let masquerade = addr("10.0.1.1:4000");
        let early = start + Duration::from_millis(2);
        punch.handle_probe(masquerade, early);
        assert!(!drain(&mut punch, early).contains(&PunchAction::Dial(masquerade)));
        // Not even later, while the LAN handshake (proven) may still finish.
        punch.handle_probe(given[0], early);
        let later = start + Duration::from_millis(60);
        assert!(!drain(&mut punch, later).contains(&PunchAction::Dial(masquerade)));
        // If the LAN handshake has not finished by its redial pause, the
        // learned path gets its chance.
        let after_pause = start + Duration::from_millis(400);
        assert!(drain(&mut punch, after_pause).contains(&PunchAction::Dial(masquerade)));

        // Without a proven given address, a learned one waits only for the
        // given slots (a symmetric NAT's fresh mapping).
        let mut punch = Punch::new(Role::Dialer, &given, PunchSchedule::default(), start);
        drain(&mut punch, start);
        let fresh = addr("198.51.100.11:51234");
        punch.handle_probe(fresh, early);
        assert!(drain(&mut punch, start + Duration::from_millis(50))
            .contains(&PunchAction::Dial(fresh)));
    }

    #[test]
    fn dials_per_address_are_bounded_and_the_deadline_ends_everything() {
        let start = Instant::now();
        let given = [addr("198.51.100.1:4000")];
        let schedule = PunchSchedule::default();
        let mut punch = Punch::new(Role::Dialer, &given, schedule.clone(), start);
        let mut dials = 0;
        let mut now = start;
        // Drive it on a virtual clock with a probe arriving at every step.
        for _ in 0..10_000 {
            punch.handle_probe(given[0], now);
            dials += drain(&mut punch, now)
                .iter()
                .filter(|a| matches!(a, PunchAction::Dial(_)))
                .count();
            if punch.is_expired(now) {
                break;
            }
            now = punch.poll_timeout().max(now + Duration::from_millis(1));
        }
        assert_eq!(dials as u32, schedule.max_dials_per_address);
        assert!(punch.is_expired(now));
        assert_eq!(punch.poll_action(now), None);
        assert!(punch.summary().contains("198.51.100.1:4000 (given)"));
    }

    /// A dialer punching toward one peer `owd` away whose NAT opens (its
    /// first probe) `peer_opens` after the dialer's introduction, driven on
    /// a virtual clock: when the first handshake completes, and how many
    /// handshakes were started by then. A handshake packet passes the
    /// peer's NAT only once it is open, and completes a round trip after
    /// it left.
    fn first_handshake(
        known_late: Option<Duration>,
        peer_opens: Duration,
        owd: Duration,
    ) -> (Duration, usize) {
        let start = Instant::now();
        let peer = addr("198.51.100.1:4000");
        let mut punch = Punch::new(Role::Dialer, &[peer], PunchSchedule::default(), start);
        if let Some(late) = known_late {
            punch.expect_peer_late(late);
        }
        let opens = start + peer_opens;
        let probe_arrives = opens + owd;
        let (mut probed, mut done, mut dials) = (false, None::<Instant>, 0);
        let mut now = start;
        for _ in 0..1000 {
            if !probed && now >= probe_arrives {
                punch.handle_probe(peer, now);
                probed = true;
            }
            while let Some(action) = punch.poll_action(now) {
                if let PunchAction::Dial(_) = action {
                    dials += 1;
                    if now + owd >= opens {
                        let finished = now + owd * 2;
                        done = Some(done.map_or(finished, |d| d.min(finished)));
                    }
                }
            }
            let mut next = punch.poll_timeout();
            if !probed {
                next = next.min(probe_arrives);
            }
            if let Some(done) = done.filter(|d| *d <= next) {
                return (done - start, dials);
            }
            now = next.max(now + Duration::from_micros(1));
        }
        panic!("no handshake completed");
    }

    #[test]
    fn a_late_peer_costs_a_one_way_trip_unless_the_dialer_knows() {
        let ms = Duration::from_millis;
        // The peer's introduction 60 ms late, 20 ms away: the first
        // handshake packet (at 0) reaches its NAT at 20, still closed.
        // Not knowing, the dialer redials when the peer's probe arrives
        // (80) and is done a round trip later.
        let (unknown, _) = first_handshake(None, ms(60), ms(20));
        assert_eq!(unknown, ms(120));
        // Knowing, it dials at 60: through the NAT at 80, done at 100.
        let (known, _) = first_handshake(Some(ms(60)), ms(60), ms(20));
        assert_eq!(known, ms(100));
    }

    #[test]
    fn a_peer_on_time_is_dialed_once_and_a_wrong_lateness_costs_nothing() {
        let ms = Duration::from_millis;
        // On time: the first packet passes, done in a round trip (the
        // peer's probe, at 20 ms, starts a second handshake in case the
        // first had met a closed NAT).
        assert_eq!(first_handshake(None, ms(0), ms(20)), (ms(40), 2));
        assert_eq!(first_handshake(Some(ms(2)), ms(0), ms(20)), (ms(40), 2));
        // Expected 30 ms late but on time: the probe's handshake replaces
        // the timed one, and the first still wins.
        assert_eq!(first_handshake(Some(ms(30)), ms(0), ms(20)), (ms(40), 2));
        // Expected 60 ms late, 20 ms away, on time: the probe arrives
        // first all the same.
        assert_eq!(first_handshake(Some(ms(60)), ms(0), ms(20)), (ms(40), 2));
        // Late by less than the way there: the first packet still passes.
        assert_eq!(first_handshake(None, ms(15), ms(20)).0, ms(40));
    }

    #[test]
    fn a_probe_before_the_timed_dial_dials_at_once_and_replaces_it() {
        let start = Instant::now();
        let peer = addr("198.51.100.1:4000");
        let mut punch = Punch::new(Role::Dialer, &[peer], PunchSchedule::default(), start);
        punch.expect_peer_late(Duration::from_millis(200));
        drain(&mut punch, start);
        let proof = start + Duration::from_millis(50);
        punch.handle_probe(peer, proof);
        assert!(drain(&mut punch, proof).contains(&PunchAction::Dial(peer)));
        // The timed handshake at 200 ms is not started: the proof's was.
        let at = start + Duration::from_millis(200);
        assert!(!drain(&mut punch, at).contains(&PunchAction::Dial(peer)));
    }

    #[test]
    fn only_a_dialer_acts_on_lateness() {
        let start = Instant::now();
        let given = [addr("198.51.100.1:4000")];
        let mut punch = Punch::new(Role::Acceptor, &given, PunchSchedule::default(), start);
        punch.expect_peer_late(Duration::from_millis(60));
        let later = start + Duration::from_millis(60);
        drain(&mut punch, start);
        assert!(drain(&mut punch, later)
            .iter()
            .all(|a| matches!(a, PunchAction::Probe(_))));
    }

    #[test]
    fn lateness_is_half_the_tracker_s_overestimate_of_this_node_s_round_trip() {
        let ms = Duration::from_millis;
        assert_eq!(
            peer_lateness(ms(153), ms(100)),
            Duration::from_micros(26_500)
        );
        // Underestimated: this node's copy was the late one.
        assert_eq!(peer_lateness(ms(90), ms(100)), Duration::ZERO);
        // A lying tracker's figure is bounded.
        assert_eq!(peer_lateness(Duration::MAX, ms(100)), MAX_LATENESS);
    }

    #[test]
    fn learned_candidates_are_bounded() {
        let start = Instant::now();
        let mut punch = Punch::new(Role::Acceptor, &[], PunchSchedule::default(), start);
        for port in 1..1000u16 {
            punch.handle_probe(SocketAddr::from(([192, 0, 2, 1], port)), start);
        }
        assert_eq!(
            drain(&mut punch, start).len(),
            PunchSchedule::default().max_candidates
        );
    }
}
