//! The port-mapping machine against fake routers on a virtual clock.

use super::*;

const PORT: u16 = 4000;
const WAN: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 11);

fn config() -> Config {
    Config {
        internal_port: PORT,
        client: Ipv4Addr::new(10, 0, 1, 2),
        lifetime: 7200,
        seed: [3; 12],
    }
}

/// What a fake router speaks, and the lease it grants.
#[derive(Clone, Copy)]
struct Router {
    pcp: bool,
    natpmp: bool,
    upnp: bool,
    lease: u32,
    /// Answers nothing at all (a router that went away).
    silent: bool,
}

impl Router {
    fn speaking(pcp: bool, natpmp: bool, upnp: bool) -> Router {
        Router {
            pcp,
            natpmp,
            upnp,
            lease: 120,
            silent: false,
        }
    }

    /// The router's answers to one transmit, as the driver would feed them.
    fn answer(&self, transmit: &Transmit) -> Option<Answer> {
        if self.silent {
            return None;
        }
        match transmit {
            Transmit::Datagram(bytes) if bytes[0] == 2 => {
                if !self.pcp {
                    // A NAT-PMP-only server says "unsupported version".
                    return self
                        .natpmp
                        .then(|| Answer::Datagram(vec![0, 129, 0, 1, 0, 0, 0, 1]));
                }
                let lifetime = u32::from_be_bytes([bytes[4], bytes[5], bytes[6], bytes[7]]);
                let mut reply = bytes.clone();
                reply[1] |= 0x80;
                reply[3] = 0;
                let granted = if lifetime == 0 { 0 } else { self.lease };
                reply[4..8].copy_from_slice(&granted.to_be_bytes());
                reply[12..24].fill(0);
                reply[42..44].copy_from_slice(&PORT.to_be_bytes());
                reply[44..60].copy_from_slice(&WAN.to_ipv6_mapped().octets());
                Some(Answer::Datagram(reply))
            }
            Transmit::Datagram(bytes) if self.natpmp && bytes == &[0, 0] => {
                let mut reply = vec![0, 128, 0, 0, 0, 0, 0, 1];
                reply.extend_from_slice(&WAN.octets());
                Some(Answer::Datagram(reply))
            }
            Transmit::Datagram(bytes) if self.natpmp && bytes[1] == 1 => {
                let lifetime = u32::from_be_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]);
                let granted = if lifetime == 0 { 0 } else { self.lease };
                let mut reply = vec![0, 129, 0, 0, 0, 0, 0, 1];
                reply.extend_from_slice(&bytes[4..6]);
                reply.extend_from_slice(&PORT.to_be_bytes());
                reply.extend_from_slice(&granted.to_be_bytes());
                Some(Answer::Datagram(reply))
            }
            Transmit::Datagram(_) => None,
            Transmit::UpnpMap {
                op, external_port, ..
            } => Some(Answer::Upnp(
                *op,
                if self.upnp {
                    UpnpOutcome::Mapped(SocketAddrV4::new(WAN, *external_port))
                } else {
                    UpnpOutcome::Failed("no IGD answered".into())
                },
            )),
            Transmit::UpnpUnmap { op, .. } => Some(Answer::Upnp(*op, UpnpOutcome::Unmapped)),
        }
    }
}

enum Answer {
    Datagram(Vec<u8>),
    Upnp(u64, UpnpOutcome),
}

/// A machine, a router and a virtual clock; answers arrive 1 ms after
/// their request.
struct Sim {
    mapper: PortMapper,
    router: Router,
    now: Instant,
    start: Instant,
    sent: Vec<(Duration, Transmit)>,
    events: Vec<(Duration, Event)>,
}

impl Sim {
    fn new(router: Router) -> Sim {
        let start = Instant::now();
        Sim {
            mapper: PortMapper::new(config(), start),
            router,
            now: start,
            start,
            sent: Vec::new(),
            events: Vec::new(),
        }
    }

    fn pump(&mut self) {
        // An iteration cap instead of a timeout: a loop is a bug.
        for _ in 0..1000 {
            let mut answers = Vec::new();
            while let Some(transmit) = self.mapper.poll_transmit() {
                answers.extend(self.router.answer(&transmit));
                self.sent.push((self.now - self.start, transmit));
            }
            while let Some(event) = self.mapper.poll_event() {
                self.events.push((self.now - self.start, event));
            }
            if answers.is_empty() {
                return;
            }
            self.now += Duration::from_millis(1);
            for answer in answers {
                match answer {
                    Answer::Datagram(bytes) => self.mapper.handle_datagram(self.now, &bytes),
                    Answer::Upnp(op, outcome) => self.mapper.handle_upnp(self.now, op, outcome),
                }
            }
        }
        panic!("the machine never settled");
    }

    /// Runs timers until `until` after the start.
    fn run_until(&mut self, until: Duration) {
        self.pump();
        for _ in 0..100_000 {
            let Some(at) = self.mapper.poll_timeout() else {
                return;
            };
            if at - self.start > until {
                self.now = self.start + until;
                return;
            }
            self.now = self.now.max(at);
            self.mapper.handle_timeout(self.now);
            self.pump();
        }
        panic!("timers never settled");
    }

    fn event_kinds(&self) -> Vec<&'static str> {
        self.events
            .iter()
            .map(|(_, e)| match e {
                Event::Mapped(m) => m.protocol.name(),
                Event::Renewed(_) => "renewed",
                Event::Lost => "lost",
                Event::Unavailable => "unavailable",
                Event::Done => "done",
            })
            .collect()
    }
}

#[test]
fn a_pcp_router_maps_at_once() {
    let mut sim = Sim::new(Router::speaking(true, true, true));
    sim.run_until(Duration::from_secs(1));
    assert_eq!(sim.event_kinds(), ["pcp"]);
    assert_eq!(
        sim.mapper.mapping().map(|m| m.external),
        Some(SocketAddrV4::new(WAN, PORT))
    );
    assert_eq!(sim.sent.len(), 1, "one request, no resend");
}

#[test]
fn a_natpmp_only_router_is_asked_in_natpmp_after_its_version_answer() {
    let mut sim = Sim::new(Router::speaking(false, true, true));
    sim.run_until(Duration::from_secs(1));
    assert_eq!(sim.event_kinds(), ["nat-pmp"]);
    assert!(
        sim.sent
            .iter()
            .all(|(at, _)| *at < Duration::from_millis(5)),
        "no waiting for PCP's resends: {:?}",
        sim.sent
    );
}

#[test]
fn a_upnp_only_router_is_reached_after_pcp_and_natpmp_time_out() {
    let mut sim = Sim::new(Router::speaking(false, false, true));
    sim.run_until(Duration::from_secs(10));
    assert_eq!(sim.event_kinds(), ["upnp"]);
    let datagrams = sim
        .sent
        .iter()
        .filter(|(_, t)| matches!(t, Transmit::Datagram(_)))
        .count();
    // PCP: 3 sends; NAT-PMP: 3 sends of 2 datagrams (address and map).
    assert_eq!(datagrams, 3 + 6);
    let (upnp_at, _) = sim
        .sent
        .iter()
        .find(|(_, t)| matches!(t, Transmit::UpnpMap { .. }))
        .unwrap();
    assert_eq!(*upnp_at, Duration::from_millis(3500), "1.75 s per protocol");
}

#[test]
fn no_router_means_unavailable_then_rounds_with_doubling_waits() {
    let mut sim = Sim::new(Router::speaking(false, false, false));
    sim.run_until(Duration::from_secs(60 * 60));
    let rounds: Vec<Duration> = sim
        .events
        .iter()
        .filter(|(_, e)| *e == Event::Unavailable)
        .map(|(at, _)| *at)
        .collect();
    let gaps: Vec<u64> = rounds.windows(2).map(|w| (w[1] - w[0]).as_secs()).collect();
    // Each round takes 3.5 s plus the UPnP attempt (answered in 1 ms).
    assert_eq!(gaps, [63, 123, 243, 483, 963], "{rounds:?}");
    assert!(sim.mapper.mapping().is_none());
}

#[test]
fn a_lease_is_renewed_at_half_its_lifetime_and_kept() {
    let mut sim = Sim::new(Router::speaking(true, false, false));
    sim.run_until(Duration::from_secs(200));
    assert_eq!(sim.event_kinds(), ["pcp", "renewed", "renewed", "renewed"]);
    let renewals: Vec<u64> = sim.events[1..].iter().map(|(at, _)| at.as_secs()).collect();
    assert_eq!(renewals, [60, 120, 180], "every 60 s of a 120 s lease");
}

#[test]
fn a_router_that_goes_silent_loses_the_mapping_at_expiry_and_mapping_starts_over() {
    let mut sim = Sim::new(Router::speaking(true, false, false));
    sim.run_until(Duration::from_secs(1));
    sim.router.silent = true;
    sim.run_until(Duration::from_millis(120_100));
    assert_eq!(sim.event_kinds(), ["pcp", "lost"]);
    let lost_at = sim.events[1].0;
    assert_eq!(
        lost_at.as_millis(),
        120_001,
        "at the lease's end, not before"
    );
    // Renewal tries in between: at 60 s (and its resends), then at half the
    // time left each time.
    let tries: Vec<u64> = sim
        .sent
        .iter()
        .skip(1)
        .filter(|(at, _)| *at < lost_at)
        .map(|(at, _)| at.as_secs())
        .collect();
    assert_eq!(&tries[..4], &[60, 60, 60, 90], "{tries:?}");
    assert!(tries.len() < 40, "bounded: {} tries", tries.len());
    // Back: the next resend of the new round is answered.
    sim.router.silent = false;
    sim.run_until(Duration::from_secs(122));
    assert_eq!(sim.event_kinds(), ["pcp", "lost", "pcp"]);
}

#[test]
fn shutdown_releases_with_lifetime_zero_in_the_protocol_that_mapped() {
    for (router, name) in [
        (Router::speaking(true, false, false), "pcp"),
        (Router::speaking(false, true, false), "nat-pmp"),
        (Router::speaking(false, false, true), "upnp"),
    ] {
        let mut sim = Sim::new(router);
        sim.run_until(Duration::from_secs(10));
        assert_eq!(sim.event_kinds(), [name]);
        let before = sim.sent.len();
        sim.mapper.handle_shutdown(sim.now);
        sim.run_until(Duration::from_secs(20));
        assert_eq!(sim.event_kinds(), [name, "done"]);
        let release = &sim.sent[before].1;
        match release {
            Transmit::Datagram(bytes) if bytes[0] == 2 => assert_eq!(&bytes[4..8], &[0; 4]),
            Transmit::Datagram(bytes) => assert_eq!(&bytes[8..12], &[0; 4]),
            Transmit::UpnpUnmap { external_port, .. } => assert_eq!(*external_port, PORT),
            other => panic!("not a release: {other:?}"),
        }
        assert_eq!(sim.sent.len(), before + 1, "confirmed: no resend");
        assert_eq!(sim.mapper.poll_timeout(), None, "finished");
    }
}

#[test]
fn shutdown_with_a_silent_router_finishes_in_bounded_time() {
    let mut sim = Sim::new(Router::speaking(true, false, false));
    sim.run_until(Duration::from_secs(1));
    sim.router.silent = true;
    let at = sim.now;
    sim.mapper.handle_shutdown(at);
    sim.run_until(Duration::from_secs(30));
    let (done_at, done) = sim.events.last().unwrap();
    assert_eq!(*done, Event::Done);
    assert_eq!((sim.start + *done_at - at).as_millis(), 750);
}

#[test]
fn shutdown_before_anything_answered_releases_what_was_asked() {
    let mut sim = Sim::new(Router {
        silent: true,
        ..Router::speaking(true, false, false)
    });
    sim.pump();
    let at = sim.now;
    sim.mapper.handle_shutdown(at);
    sim.run_until(Duration::from_secs(5));
    assert_eq!(sim.event_kinds(), ["done"]);
    assert_eq!(
        sim.events[0].0,
        at - sim.start,
        "at once: nothing is known to wait for"
    );
    let last = &sim.sent.last().unwrap().1;
    assert!(matches!(last, Transmit::Datagram(b) if b[0] == 2 && b[4..8] == [0; 4]));
}

#[test]
fn upnp_conflicts_move_to_other_ports_and_only_permanent_leases_are_taken() {
    let start = Instant::now();
    let mut mapper = PortMapper::new(config(), start);
    let mut now = start;
    // PCP and NAT-PMP time out.
    while let Some(at) = mapper.poll_timeout() {
        now = at;
        mapper.handle_timeout(now);
        if mapper
            .transmits
            .iter()
            .any(|t| matches!(t, Transmit::UpnpMap { .. }))
        {
            break;
        }
    }
    let next_upnp = |mapper: &mut PortMapper| loop {
        match mapper.poll_transmit() {
            Some(Transmit::UpnpMap {
                op,
                external_port,
                lease,
            }) => return (op, external_port, lease),
            Some(_) => continue,
            None => panic!("no UPnP request"),
        }
    };
    let (op, port, lease) = next_upnp(&mut mapper);
    assert_eq!((port, lease), (PORT, 7200));
    mapper.handle_upnp(now, op, UpnpOutcome::Conflict);
    let (op, other, _) = next_upnp(&mut mapper);
    assert_ne!(other, PORT);
    assert!(other >= 1024);
    mapper.handle_upnp(now, op, UpnpOutcome::OnlyPermanent);
    let (op, same, lease) = next_upnp(&mut mapper);
    assert_eq!((same, lease), (other, 0));
    // A stale answer changes nothing.
    mapper.handle_upnp(now, op + 7, UpnpOutcome::Mapped(SocketAddrV4::new(WAN, 1)));
    assert!(mapper.mapping().is_none());
    mapper.handle_upnp(now, op, UpnpOutcome::Mapped(SocketAddrV4::new(WAN, same)));
    let mapping = mapper.mapping().unwrap();
    assert_eq!(mapping.lifetime, Duration::ZERO);
    // A permanent lease is refreshed all the same.
    assert_eq!(mapper.poll_timeout(), Some(now + PERMANENT_REFRESH));
}

#[test]
fn answers_for_another_port_or_nonce_are_ignored() {
    let start = Instant::now();
    let mut mapper = PortMapper::new(config(), start);
    let mut wrong_nonce = wire::pcp_map_request(config().client, [9; 12], PORT, PORT, 7200);
    wrong_nonce[1] |= 0x80;
    wrong_nonce[4..8].copy_from_slice(&60u32.to_be_bytes());
    wrong_nonce[44..60].copy_from_slice(&WAN.to_ipv6_mapped().octets());
    mapper.handle_datagram(start, &wrong_nonce);
    let mut wrong_port = wire::pcp_map_request(config().client, [3; 12], PORT + 1, PORT, 7200);
    wrong_port[1] |= 0x80;
    wrong_port[4..8].copy_from_slice(&60u32.to_be_bytes());
    wrong_port[44..60].copy_from_slice(&WAN.to_ipv6_mapped().octets());
    mapper.handle_datagram(start, &wrong_port);
    mapper.handle_datagram(start, b"garbage");
    assert!(mapper.mapping().is_none());
    assert_eq!(mapper.poll_event(), None);
}
