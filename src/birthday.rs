//! Birthday punching: a direct path between a node behind an
//! endpoint-dependent (symmetric) NAT — the **hard** side — and one behind
//! an endpoint-independent NAT that filters by address and port — the
//! **easy** side — where an ordinary punch cannot work: the hard NAT gives
//! each destination a fresh port the easy side cannot know, and the easy
//! NAT admits only the ports it has sent to.
//!
//! The hard side opens [`BirthdayConfig::sockets`] extra UDP sockets and
//! sends a probe from each to the easy side's reflexive address, so its NAT
//! holds that many mappings toward it. The easy side sends probes from its
//! gate socket to [`BirthdayConfig::probes`] distinct ports of the hard
//! side's public address (ports predicted from the hard NAT's sequence
//! first, then random ones), each opening its own NAT to that port. One
//! port in both sets is a path: the easy side's probe reaches the hard
//! side's socket, or the hard side's next probe from it reaches the easy
//! side. The odds are [`success_odds`].
//!
//! Pure: no sockets, no clock, no randomness of its own (the caller gives a
//! seed). [`side`] decides who does what; [`HardSearch`] and [`EasySpray`]
//! say what to send when: feed them what arrived (`handle_probe`), then
//! take actions (`poll_action`) until `None`, and wake at `poll_timeout`.

use std::collections::{HashMap, HashSet};
use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use crate::protocol::{NatFiltering, NatMapping, NatReport};

/// Which part of a birthday punch this node plays.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Behind the symmetric NAT: opens many sockets toward the peer.
    Hard,
    /// Behind the endpoint-independent NAT: probes many ports of the peer.
    Easy,
}

/// Whether a birthday punch toward a peer is worth its cost, and which
/// side this node plays: only an endpoint-dependent mapping against an
/// endpoint-independent one whose filtering is not known to be open (with
/// open filtering the ordinary punch gets through), both on IPv4, with
/// different public addresses (behind one NAT the LAN is the way).
pub fn side(
    mine: &NatReport,
    my_public: IpAddr,
    peer: &NatReport,
    peer_public: IpAddr,
) -> Option<Side> {
    if my_public == peer_public || !my_public.is_ipv4() || !peer_public.is_ipv4() {
        return None;
    }
    let hard_easy = |hard: &NatReport, easy: &NatReport| {
        hard.mapping == NatMapping::EndpointDependent
            && easy.mapping == NatMapping::EndpointIndependent
            && easy.filtering != NatFiltering::Open
    };
    if hard_easy(mine, peer) {
        Some(Side::Hard)
    } else if hard_easy(peer, mine) {
        Some(Side::Easy)
    } else {
        None
    }
}

/// Sizes and timing of a birthday punch. Defaults: ≈ 98.4 % against a NAT
/// that picks its ports at random, from whatever range ([`success_odds`]:
/// the spray covers all 64 512 unprivileged ports, so on average 4 of its
/// probes meet one of the 256 mappings), in about 2 s.
#[derive(Clone, Debug)]
pub struct BirthdayConfig {
    /// Extra sockets the hard side opens. Default 256.
    pub sockets: usize,
    /// Ports of the hard side the easy side probes, predicted ones
    /// included. Default 1024.
    pub probes: usize,
    /// The easy side spreads its probes evenly over this. Default 2 s:
    /// about 512 probes a second, a few hundred kbit/s.
    pub spray_over: Duration,
    /// The easy side sends in batches this far apart. Default 10 ms.
    pub tick: Duration,
    /// When the hard side sends from every socket, from the start (later
    /// rounds reach the easy side through ports its probes opened since).
    /// Default 0, 500, 1000, 1500, 2000 ms.
    pub hard_rounds: Vec<Duration>,
    /// Predicted ports probed first when the hard NAT looks sequential.
    /// Default 384 (its sockets and some room for others' traffic).
    pub predicted: usize,
    /// The whole search. Default 3 s.
    pub deadline: Duration,
    /// After a hit, the easy side answers the hit address this often so
    /// the hard side hears it even if one answer is lost. Default 100 ms.
    pub answer_every: Duration,
}

impl Default for BirthdayConfig {
    fn default() -> Self {
        Self {
            sockets: 256,
            probes: 1024,
            spray_over: Duration::from_secs(2),
            tick: Duration::from_millis(10),
            hard_rounds: [0, 500, 1000, 1500, 2000]
                .into_iter()
                .map(Duration::from_millis)
                .collect(),
            predicted: 384,
            deadline: Duration::from_secs(3),
            answer_every: Duration::from_millis(100),
        }
    }
}

/// The lowest port a NAT hands out, as a rule (below are the privileged).
pub const LOWEST_PORT: u16 = 1024;

/// The chance that `probes` distinct random ports out of `range` include at
/// least one of `sockets` mapped ports, also random in that range: one
/// minus the chance that every probe misses (drawing without replacement).
pub fn success_odds(range: u32, sockets: u32, probes: u32) -> f64 {
    if sockets >= range || probes >= range {
        return 1.0;
    }
    let mut miss = 1.0f64;
    for drawn in 0..probes {
        let left = f64::from(range - drawn);
        miss *= (left - f64::from(sockets)).max(0.0) / left;
    }
    1.0 - miss
}

/// Ports a sequential NAT would hand out next, nearest first: from the port
/// the tracker's second port saw (`second`) onward in steps of its distance
/// from the reflexive port (`first`). Empty unless that distance is small
/// (at most [`MAX_STEP`]), which a NAT picking at random rarely shows.
pub fn predict(first: u16, second: u16, count: usize) -> Vec<u16> {
    let step = i32::from(second) - i32::from(first);
    if step == 0 || step.abs() > MAX_STEP {
        return Vec::new();
    }
    (1..)
        .map(|k: i32| i32::from(second) + step * k)
        .take_while(|p| (i32::from(LOWEST_PORT)..=i32::from(u16::MAX)).contains(p))
        .take(count)
        .filter_map(|p| u16::try_from(p).ok())
        .collect()
}

/// The largest step between two consecutive mappings still taken for a
/// sequence (other hosts behind the NAT take ports in between).
pub const MAX_STEP: i32 = 32;

/// What the hard side does.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum HardAction {
    /// Send a probe from extra socket `socket` to the easy side.
    Probe { socket: usize },
    /// Socket `socket` heard the easy side from `from`: QUIC runs there;
    /// close every other socket.
    Won { socket: usize, from: SocketAddr },
}

/// The hard side's search: probe rounds from every socket until one hears
/// the easy side.
pub struct HardSearch {
    config: BirthdayConfig,
    peer_ip: IpAddr,
    started: Instant,
    next_round: usize,
    next_socket: usize,
    won: Option<(usize, SocketAddr)>,
    reported: bool,
}

impl HardSearch {
    /// A search from `sockets` sockets (those that could be opened, at most
    /// the config's) toward the easy side at `peer`.
    pub fn new(mut config: BirthdayConfig, sockets: usize, peer: SocketAddr, now: Instant) -> Self {
        config.sockets = config.sockets.min(sockets);
        Self {
            config,
            peer_ip: peer.ip(),
            started: now,
            next_round: 0,
            next_socket: 0,
            won: None,
            reported: false,
        }
    }

    /// An authenticated birthday probe of this attempt arrived on `socket`
    /// from `from`. The first from the peer's address wins.
    pub fn handle_probe(&mut self, socket: usize, from: SocketAddr) {
        if self.won.is_none() && socket < self.config.sockets && from.ip() == self.peer_ip {
            self.won = Some((socket, from));
        }
    }

    pub fn poll_action(&mut self, now: Instant) -> Option<HardAction> {
        if let Some((socket, from)) = self.won {
            if self.reported {
                return None;
            }
            self.reported = true;
            return Some(HardAction::Won { socket, from });
        }
        if self.is_expired(now) {
            return None;
        }
        let round_at = self.config.hard_rounds.get(self.next_round)?;
        if now < self.started + *round_at {
            return None;
        }
        let socket = self.next_socket;
        self.next_socket += 1;
        if self.next_socket >= self.config.sockets {
            self.next_socket = 0;
            self.next_round += 1;
        }
        (socket < self.config.sockets).then_some(HardAction::Probe { socket })
    }

    pub fn poll_timeout(&self) -> Instant {
        let deadline = self.started + self.config.deadline;
        match self.config.hard_rounds.get(self.next_round) {
            Some(at) if self.won.is_none() => (self.started + *at).min(deadline),
            _ => deadline,
        }
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        self.won.is_none() && now >= self.started + self.config.deadline
    }

    pub fn won(&self) -> Option<(usize, SocketAddr)> {
        self.won
    }
}

/// The easy side's spray: distinct ports of the hard side's address, the
/// predicted ones first, paced evenly; after a hit, answers to it.
pub struct EasySpray {
    config: BirthdayConfig,
    target: IpAddr,
    ports: Vec<u16>,
    sent: usize,
    started: Instant,
    next_tick: Instant,
    hit: Option<SocketAddr>,
    next_answer: Option<Instant>,
}

impl EasySpray {
    /// Sprays `target`'s ports: `predicted` first (see [`predict`]), then
    /// random ones drawn with `seed`, up to the config's count in all.
    pub fn new(
        config: BirthdayConfig,
        target: IpAddr,
        predicted: &[u16],
        seed: u64,
        now: Instant,
    ) -> Self {
        let mut chosen = HashSet::new();
        let mut ports = Vec::with_capacity(config.probes);
        for port in predicted.iter().copied().take(config.predicted) {
            if port >= LOWEST_PORT && chosen.insert(port) && ports.len() < config.probes {
                ports.push(port);
            }
        }
        let range = u64::from(u16::MAX - LOWEST_PORT) + 1;
        let mut state = seed | 1;
        while ports.len() < config.probes {
            // xorshift64*: plenty for spreading probes; the ports are no secret.
            state ^= state >> 12;
            state ^= state << 25;
            state ^= state >> 27;
            let draw = state.wrapping_mul(0x2545_f491_4f6c_dd1d) >> 32;
            let port = LOWEST_PORT + u16::try_from(draw % range).unwrap_or(0);
            if chosen.insert(port) {
                ports.push(port);
            }
        }
        Self {
            config,
            target,
            ports,
            sent: 0,
            started: now,
            next_tick: now,
            hit: None,
            next_answer: None,
        }
    }

    /// An authenticated birthday probe of this attempt came from `from`:
    /// if from the target, a hole is open there.
    pub fn handle_probe(&mut self, from: SocketAddr, now: Instant) {
        if from.ip() != self.target {
            return;
        }
        if self.hit != Some(from) {
            self.hit = Some(from);
            self.next_answer = Some(now);
        }
    }

    /// The next probe to send now (to that address), if any.
    pub fn poll_action(&mut self, now: Instant) -> Option<SocketAddr> {
        if self.is_expired(now) {
            return None;
        }
        if let Some(hit) = self.hit {
            let due = self.next_answer.filter(|at| *at <= now)?;
            self.next_answer = Some(due.max(now) + self.config.answer_every);
            return Some(hit);
        }
        if self.sent >= self.ports.len() || now < self.next_tick {
            return None;
        }
        // Paced by elapsed time: as many as the even spread allows by now.
        let elapsed = now.saturating_duration_since(self.started);
        let allowed = if self.config.spray_over.is_zero() {
            self.ports.len()
        } else {
            let share = elapsed.as_secs_f64() / self.config.spray_over.as_secs_f64();
            ((share * self.ports.len() as f64).floor() as usize + 1).min(self.ports.len())
        };
        if self.sent >= allowed {
            self.next_tick = now + self.config.tick;
            return None;
        }
        let port = self.ports[self.sent];
        self.sent += 1;
        Some(SocketAddr::new(self.target, port))
    }

    pub fn poll_timeout(&self) -> Instant {
        let deadline = self.started + self.config.deadline;
        if self.hit.is_some() {
            return self.next_answer.unwrap_or(deadline).min(deadline);
        }
        if self.sent >= self.ports.len() {
            return deadline;
        }
        self.next_tick.min(deadline)
    }

    pub fn is_expired(&self, now: Instant) -> bool {
        now >= self.started + self.config.deadline
    }

    /// Probes sent to distinct ports so far.
    pub fn sent(&self) -> usize {
        self.sent
    }

    pub fn hit(&self) -> Option<SocketAddr> {
        self.hit
    }
}

/// How often a node runs a birthday punch toward one IP address, and in
/// all. A birthday punch sends a thousand probes to an address a tracker
/// named (~80 KB), so a lying tracker must not be able to aim it at someone
/// again and again: toward one address, the pause after a punch that found
/// nothing doubles each time, from [`SPRAY_INTERVAL`] to
/// [`MAX_SPRAY_INTERVAL`], until one finds a path; in all, at most
/// [`SPRAYS_PER_MINUTE`].
#[derive(Debug, Default)]
pub struct SprayBudget {
    /// Per address: when the next may start, and how many in a row found
    /// nothing (or have not said yet).
    by_ip: HashMap<IpAddr, (Instant, u32)>,
    /// Starts within the last minute.
    recent: std::collections::VecDeque<Instant>,
}

/// The least time between the starts of two birthday punches toward one
/// IP address: one search's length, so never two at once.
pub const SPRAY_INTERVAL: Duration = Duration::from_secs(3);
/// The most, after many that found nothing.
pub const MAX_SPRAY_INTERVAL: Duration = Duration::from_secs(600);
/// Birthday punches a node starts per minute, at most.
pub const SPRAYS_PER_MINUTE: usize = 10;
/// IP addresses remembered at most (beyond, those whose pause is over are
/// forgotten; if none is, no new address is sprayed).
const SPRAYS_REMEMBERED: usize = 1024;

impl SprayBudget {
    /// Whether a birthday punch toward `ip` may start now (and counts it as
    /// one that found nothing until [`SprayBudget::found`] says otherwise).
    pub fn allow(&mut self, ip: IpAddr, now: Instant) -> bool {
        let minute = Duration::from_secs(60);
        while self
            .recent
            .front()
            .is_some_and(|at| now.saturating_duration_since(*at) >= minute)
        {
            self.recent.pop_front();
        }
        if self.recent.len() >= SPRAYS_PER_MINUTE {
            return false;
        }
        let misses = match self.by_ip.get(&ip) {
            Some((next, _)) if now < *next => return false,
            Some((_, misses)) => *misses,
            None => 0,
        };
        if !self.by_ip.contains_key(&ip) && self.by_ip.len() >= SPRAYS_REMEMBERED {
            self.by_ip.retain(|_, (next, _)| now < *next);
            if self.by_ip.len() >= SPRAYS_REMEMBERED {
                return false;
            }
        }
        let pause = SPRAY_INTERVAL
            .saturating_mul(1u32 << misses.min(16))
            .min(MAX_SPRAY_INTERVAL);
        self.by_ip
            .insert(ip, (now + pause, misses.saturating_add(1)));
        self.recent.push_back(now);
        true
    }

    /// A birthday punch toward `ip` found a path: the next may come after
    /// the shortest pause again.
    pub fn found(&mut self, ip: IpAddr) {
        if let Some((_, misses)) = self.by_ip.get_mut(&ip) {
            *misses = 0;
        }
    }
}

#[cfg(test)]
#[path = "birthday_tests.rs"]
mod tests;
