//! Birthday punching on a virtual clock: a hard side behind a simulated
//! symmetric NAT and an easy side behind a port-restricted one, `owd` apart.

use std::collections::{BTreeMap, HashMap, HashSet};

use super::*;

fn report(mapping: NatMapping, filtering: NatFiltering) -> NatReport {
    NatReport {
        mapping,
        filtering,
        second_port: 0,
    }
}

#[test]
fn only_a_symmetric_nat_against_a_port_restricted_one_is_worth_it() {
    let symmetric = report(
        NatMapping::EndpointDependent,
        NatFiltering::AddressAndPortDependent,
    );
    let port_restricted = report(
        NatMapping::EndpointIndependent,
        NatFiltering::AddressAndPortDependent,
    );
    let cone = report(NatMapping::EndpointIndependent, NatFiltering::Open);
    let unknown = NatReport::default();
    let (a, b): (IpAddr, IpAddr) = (
        "198.51.100.11".parse().unwrap(),
        "198.51.100.12".parse().unwrap(),
    );
    assert_eq!(side(&symmetric, a, &port_restricted, b), Some(Side::Hard));
    assert_eq!(side(&port_restricted, b, &symmetric, a), Some(Side::Easy));
    // An open filter lets the ordinary punch through; two symmetric NATs
    // would need a socket per probe; nothing known, nothing spent.
    assert_eq!(side(&symmetric, a, &cone, b), None);
    assert_eq!(side(&symmetric, a, &symmetric, b), None);
    assert_eq!(side(&symmetric, a, &unknown, b), None);
    assert_eq!(side(&unknown, a, &port_restricted, b), None);
    // Behind one NAT the LAN is the way; IPv6 has no NAT to beat.
    assert_eq!(side(&symmetric, a, &port_restricted, a), None);
    let v6: IpAddr = "2001:db8::1".parse().unwrap();
    assert_eq!(side(&symmetric, v6, &port_restricted, b), None);
}

#[test]
fn sprays_toward_an_address_back_off_until_one_finds_a_path() {
    let mut budget = SprayBudget::default();
    let start = Instant::now();
    let (a, b): (IpAddr, IpAddr) = (
        "198.51.100.11".parse().unwrap(),
        "198.51.100.12".parse().unwrap(),
    );
    assert!(budget.allow(a, start));
    assert!(!budget.allow(a, start + SPRAY_INTERVAL / 2));
    assert!(budget.allow(b, start));
    // Found nothing: the pause doubles (3 s, 6 s, 12 s ...).
    let second = start + SPRAY_INTERVAL;
    assert!(budget.allow(a, second));
    assert!(!budget.allow(a, second + SPRAY_INTERVAL));
    let third = second + SPRAY_INTERVAL * 2;
    assert!(budget.allow(a, third));
    assert!(!budget.allow(a, third + SPRAY_INTERVAL * 3));
    // A path found: the shortest pause again.
    budget.found(a);
    let fourth = third + SPRAY_INTERVAL * 4;
    assert!(budget.allow(a, fourth));
    assert!(budget.allow(a, fourth + SPRAY_INTERVAL));
    // Many tries against one silent address: never more often than the cap.
    let mut silent = SprayBudget::default();
    let c: IpAddr = "203.0.113.7".parse().unwrap();
    let mut starts = 0;
    let mut now = start;
    while now < start + Duration::from_secs(3600) {
        starts += usize::from(silent.allow(c, now));
        now += Duration::from_millis(100);
    }
    // 3+6+12+...+384 s, then every 600 s: 8 + 5 in an hour.
    assert!(starts <= 14, "{starts}");
}

#[test]
fn at_most_so_many_sprays_a_minute_in_all() {
    let mut budget = SprayBudget::default();
    let start = Instant::now();
    let allowed = (0..100u8)
        .filter(|n| budget.allow(IpAddr::from([198, 51, 100, *n]), start))
        .count();
    assert_eq!(allowed, SPRAYS_PER_MINUTE);
    assert!(budget.allow(
        IpAddr::from([198, 51, 100, 200]),
        start + Duration::from_secs(60)
    ));
}

#[test]
fn the_odds_for_a_port_range() {
    // Every unprivileged port: about 98 %.
    let wide = success_odds(64_512, 256, 1024);
    assert!((0.98..0.99).contains(&wide), "{wide}");
    // The lab's NAT picks among 20 001; the spray does not know that range,
    // so 317 of its 1024 probes fall in it: the same odds.
    let lab = success_odds(20_001, 256, 1024 * 20_001 / 64_512);
    assert!((lab - wide).abs() < 0.001, "{lab} {wide}");
    // Were the range known, 1024 probes in it would all but never miss.
    assert!(success_odds(20_001, 256, 1024) > 0.999_99);
    // Twice the probes or twice the sockets: 99.97 %.
    assert!(success_odds(64_512, 256, 2048) > 0.999);
    assert!(success_odds(64_512, 512, 1024) > 0.999);
    // Fewer probes, lower odds; none, none.
    assert!(success_odds(64_512, 256, 256) < 0.7);
    assert_eq!(success_odds(64_512, 256, 0), 0.0);
    assert_eq!(success_odds(100, 100, 1), 1.0);
}

#[test]
fn a_sequential_nat_is_predicted_and_a_random_one_is_not() {
    assert_eq!(predict(30_000, 30_001, 3), vec![30_002, 30_003, 30_004]);
    assert_eq!(predict(30_010, 30_006, 2), vec![30_002, 29_998]);
    assert!(predict(21_345, 38_001, 10).is_empty());
    assert!(predict(30_000, 30_000, 10).is_empty());
    // Never past the last port.
    assert_eq!(predict(65_533, 65_534, 10), vec![65_535]);
}

#[test]
fn the_spray_is_bounded_distinct_paced_and_predicted_first() {
    let config = BirthdayConfig::default();
    let start = Instant::now();
    let target: IpAddr = "198.51.100.11".parse().unwrap();
    let predicted = predict(30_000, 30_002, 10);
    let mut spray = EasySpray::new(config.clone(), target, &predicted, 7, start);
    let mut sent = Vec::new();
    let mut now = start;
    let mut by_100ms: BTreeMap<u128, usize> = BTreeMap::new();
    for _ in 0..100_000 {
        while let Some(to) = spray.poll_action(now) {
            assert_eq!(to.ip(), target);
            sent.push(to.port());
            *by_100ms.entry((now - start).as_millis() / 100).or_default() += 1;
        }
        if spray.is_expired(now) {
            break;
        }
        now = spray.poll_timeout().max(now + Duration::from_micros(1));
    }
    assert_eq!(sent.len(), config.probes);
    assert_eq!(sent.iter().collect::<HashSet<_>>().len(), sent.len());
    assert_eq!(&sent[..10], &predicted[..]);
    assert!(sent.iter().all(|p| *p >= LOWEST_PORT));
    // Even pacing: every probe within the spray's time, no 100 ms with
    // more than its share and a tick's worth.
    let last = config.spray_over.as_millis() / 100;
    assert!(by_100ms.keys().all(|k| *k <= last), "{by_100ms:?}");
    let share = config.probes / 20 + config.probes / 200 + 2;
    assert!(by_100ms.values().all(|n| *n <= share), "{by_100ms:?}");
}

/// What happened in one simulated birthday punch.
struct Outcome {
    /// When the hard side's socket won (from the start).
    won: Option<Duration>,
    easy_probes: usize,
    hard_probes: usize,
}

/// Runs a hard side against an easy side `owd` apart on a virtual clock.
/// The hard NAT maps each socket, on its first packet, to a port from
/// `nat_ports` (drawn by `pick`); the easy NAT admits only ports it has
/// sent to. The easy side starts `easy_late` after the hard side.
fn simulate(
    config: &BirthdayConfig,
    seed: u64,
    owd: Duration,
    easy_late: Duration,
    predicted: &[u16],
    mut pick: impl FnMut(usize) -> u16,
) -> Outcome {
    let start = Instant::now();
    let hard_ip: IpAddr = "198.51.100.11".parse().unwrap();
    let easy_addr: SocketAddr = "198.51.100.12:41000".parse().unwrap();
    let mut hard = HardSearch::new(config.clone(), config.sockets, easy_addr, start);
    let easy_start = start + easy_late;
    let mut easy = EasySpray::new(config.clone(), hard_ip, predicted, seed, easy_start);
    // Hard NAT: socket -> (port, mapped at); easy NAT: port -> opened at.
    let mut mapped: HashMap<usize, (u16, Instant)> = HashMap::new();
    let mut opened: HashMap<u16, Instant> = HashMap::new();
    // In flight: (arrival, seq) -> packet.
    #[derive(Clone, Copy)]
    enum Packet {
        ToEasy { from_port: u16 },
        ToHard { port: u16 },
    }
    let mut flight: BTreeMap<(Instant, u64), Packet> = BTreeMap::new();
    let mut seq = 0u64;
    let (mut easy_probes, mut hard_probes) = (0, 0);
    let mut now = start;
    for _ in 0..200_000 {
        // Deliver what has arrived.
        while let Some((&(at, key), &packet)) = flight.iter().next() {
            if at > now {
                break;
            }
            flight.remove(&(at, key));
            match packet {
                Packet::ToEasy { from_port } => {
                    if opened.get(&from_port).is_some_and(|t| *t <= at) {
                        easy.handle_probe(SocketAddr::new(hard_ip, from_port), at);
                    }
                }
                Packet::ToHard { port } => {
                    let socket = mapped
                        .iter()
                        .find(|(_, (p, t))| *p == port && *t <= at)
                        .map(|(s, _)| *s);
                    if let Some(socket) = socket {
                        hard.handle_probe(socket, easy_addr);
                    }
                }
            }
        }
        while let Some(action) = hard.poll_action(now) {
            match action {
                HardAction::Probe { socket } => {
                    hard_probes += 1;
                    let (port, _) = *mapped.entry(socket).or_insert_with(|| (pick(socket), now));
                    seq += 1;
                    flight.insert((now + owd, seq), Packet::ToEasy { from_port: port });
                }
                HardAction::Won { .. } => {
                    return Outcome {
                        won: Some(now - start),
                        easy_probes,
                        hard_probes,
                    };
                }
            }
        }
        if now >= easy_start {
            while let Some(to) = easy.poll_action(now) {
                easy_probes += 1;
                opened.entry(to.port()).or_insert(now);
                seq += 1;
                flight.insert((now + owd, seq), Packet::ToHard { port: to.port() });
            }
        }
        if hard.is_expired(now) && easy.is_expired(now) {
            break;
        }
        let mut next = hard.poll_timeout().min(if now < easy_start {
            easy_start
        } else {
            easy.poll_timeout()
        });
        if let Some((&(at, _), _)) = flight.iter().next() {
            next = next.min(at);
        }
        now = next.max(now + Duration::from_micros(1));
    }
    Outcome {
        won: None,
        easy_probes,
        hard_probes,
    }
}

/// A symmetric NAT picking distinct random ports among 20000–40000.
fn random_nat(seed: u64) -> impl FnMut(usize) -> u16 {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut used = HashSet::new();
    move |_| loop {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        let port = 20_000 + (state % 20_001) as u16;
        if used.insert(port) {
            return port;
        }
    }
}

#[test]
fn against_a_random_symmetric_nat_nearly_every_search_wins_within_the_spray() {
    let config = BirthdayConfig::default();
    let owd = Duration::from_millis(20);
    let mut wins = Vec::new();
    for seed in 1..=40u64 {
        let outcome = simulate(&config, seed, owd, Duration::ZERO, &[], random_nat(seed));
        assert!(
            outcome.easy_probes <= config.probes + 30,
            "{}",
            outcome.easy_probes
        );
        assert!(outcome.hard_probes <= config.sockets * config.hard_rounds.len());
        if let Some(won) = outcome.won {
            wins.push(won);
        }
    }
    // The spray does not know the NAT's range, so it draws from all 64 512
    // ports: ≈ 98 % each by the odds (39.2 of 40 expected); all before the
    // spray ends and its last probe's way back.
    assert!(wins.len() >= 38, "{wins:?}");
    assert!(
        wins.iter().all(|w| *w <= config.spray_over + owd * 3),
        "{wins:?}"
    );
}

#[test]
fn the_easy_side_starting_late_is_caught_by_the_hard_side_s_later_rounds() {
    // The easy side's introduction came 600 ms late: its first probes
    // meet mappings made long before (they still hold), and the hard
    // side's later rounds pass through the ports it opened.
    let config = BirthdayConfig::default();
    let owd = Duration::from_millis(20);
    let won = (1..=10u64)
        .filter(|seed| {
            simulate(
                &config,
                *seed,
                owd,
                Duration::from_millis(600),
                &[],
                random_nat(*seed),
            )
            .won
            .is_some()
        })
        .count();
    assert_eq!(won, 10);
}

#[test]
fn a_sequential_nat_is_found_by_the_first_predicted_probes() {
    // The NAT hands out ports one after another from just past what the
    // tracker's second port saw (30 001, after 30 000).
    let config = BirthdayConfig::default();
    let predicted = predict(30_000, 30_001, config.predicted);
    let owd = Duration::from_millis(20);
    let outcome = simulate(&config, 3, owd, Duration::ZERO, &predicted, |socket| {
        30_002 + socket as u16
    });
    // The first predicted probe (30 002) meets socket 0's mapping: won a
    // one-way trip after the start, a handful of probes in.
    assert_eq!(outcome.won, Some(owd));
    assert!(outcome.easy_probes <= 10, "{}", outcome.easy_probes);
    // Without the prediction it is left to chance (random ports over all
    // 64 512 miss 256 sequential ones ~2 % of the time) and takes longer.
    let unpredicted = simulate(&config, 3, owd, Duration::ZERO, &[], |socket| {
        30_002 + socket as u16
    });
    assert!(unpredicted.won.is_none_or(|w| w > owd));
}

#[test]
fn nothing_to_find_ends_at_the_deadline_with_bounded_traffic() {
    // A NAT whose ports lie where the spray never looks: below LOWEST_PORT.
    let config = BirthdayConfig::default();
    let outcome = simulate(
        &config,
        5,
        Duration::from_millis(20),
        Duration::ZERO,
        &[],
        |socket| 100 + socket as u16,
    );
    assert_eq!(outcome.won, None);
    assert_eq!(outcome.easy_probes, config.probes);
    assert_eq!(
        outcome.hard_probes,
        config.sockets * config.hard_rounds.len()
    );
}

#[test]
fn the_easy_side_answers_a_hit_and_stops_spraying() {
    let config = BirthdayConfig::default();
    let start = Instant::now();
    let target: IpAddr = "198.51.100.11".parse().unwrap();
    let mut spray = EasySpray::new(config.clone(), target, &[], 9, start);
    assert!(spray.poll_action(start).is_some());
    let hit = SocketAddr::new(target, 23_456);
    // A stranger's address is not a hit.
    spray.handle_probe("203.0.113.5:23456".parse().unwrap(), start);
    assert_eq!(spray.hit(), None);
    spray.handle_probe(hit, start);
    assert_eq!(spray.poll_action(start), Some(hit));
    assert_eq!(spray.poll_action(start), None);
    let later = start + config.answer_every;
    assert_eq!(spray.poll_timeout(), later);
    assert_eq!(spray.poll_action(later), Some(hit));
    let sent = spray.sent();
    let end = start + config.deadline;
    let mut now = later;
    while !spray.is_expired(now) {
        while let Some(to) = spray.poll_action(now) {
            assert_eq!(to, hit);
        }
        now = spray.poll_timeout().max(now + Duration::from_micros(1));
    }
    assert_eq!(spray.sent(), sent);
    assert!(now >= end);
}

#[test]
fn the_hard_side_takes_the_first_socket_that_hears_the_peer_only() {
    let config = BirthdayConfig::default();
    let start = Instant::now();
    let peer: SocketAddr = "198.51.100.12:41000".parse().unwrap();
    let mut hard = HardSearch::new(config, 3, peer, start);
    let first: Vec<HardAction> = std::iter::from_fn(|| hard.poll_action(start)).collect();
    assert_eq!(
        first,
        (0..3)
            .map(|socket| HardAction::Probe { socket })
            .collect::<Vec<_>>()
    );
    hard.handle_probe(1, "203.0.113.5:41000".parse().unwrap());
    hard.handle_probe(7, peer);
    assert_eq!(hard.won(), None);
    hard.handle_probe(2, peer);
    hard.handle_probe(0, peer);
    assert_eq!(
        hard.poll_action(start),
        Some(HardAction::Won {
            socket: 2,
            from: peer
        })
    );
    assert_eq!(hard.poll_action(start), None);
    assert!(!hard.is_expired(start + Duration::from_secs(60)));
}
