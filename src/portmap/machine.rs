//! The port-mapping client's decisions, sans IO: which protocol to ask the
//! router in (PCP, then NAT-PMP, then UPnP-IGD), when to resend, when to
//! give a protocol up, when to renew a lease, when to start over, and how to
//! release the mapping at shutdown. [`super::client`] drives it.
//!
//! Drive it like this: after creating it and after every `handle_*` call,
//! take every [`PortMapper::poll_transmit`] (what to send or do) and every
//! [`PortMapper::poll_event`] (what changed), then sleep until
//! [`PortMapper::poll_timeout`] and call [`PortMapper::handle_timeout`]. It
//! has no clock of its own: every input carries `now`.
//!
//! Timing (constants below): a request is sent at 0, 250 and 750 ms and the
//! protocol is given up 1.75 s after the first (a router answers on its own
//! LAN in milliseconds; RFC 6886's 250 ms doubling, cut short). A lease is
//! renewed at half its lifetime; a renewal that gets no answer is tried
//! again at half the remaining time, and a lease that runs out is reported
//! lost and mapping starts over. A round in which no protocol answered is
//! retried after 1 min, doubling up to 30 min. Release at shutdown is one
//! request and one resend, 750 ms at most; while still asking, one release
//! of what was asked, without waiting.

use std::collections::VecDeque;
use std::net::{Ipv4Addr, SocketAddrV4};
use std::time::{Duration, Instant};

use super::wire::{self, Response};

/// A request is resent after these waits, then the protocol is given up
/// after the last one.
const RESEND: [Duration; 3] = [
    Duration::from_millis(250),
    Duration::from_millis(500),
    Duration::from_millis(1000),
];
/// Release at shutdown waits this long per try, two tries.
const RELEASE_WAIT: Duration = Duration::from_millis(375);
/// Longest a UPnP operation may take (the driver bounds its own work by
/// [`UPNP_OP_TIMEOUT`]; this is the machine's own guard).
pub const UPNP_OP_TIMEOUT: Duration = Duration::from_secs(4);
/// After a round where nothing answered, the first wait before the next.
const RETRY_FIRST: Duration = Duration::from_secs(60);
/// The longest wait between rounds.
const RETRY_MAX: Duration = Duration::from_secs(30 * 60);
/// A permanent UPnP lease (0) is refreshed this often all the same.
const PERMANENT_REFRESH: Duration = Duration::from_secs(20 * 60);
/// Renewals closer together than this are not scheduled.
const MIN_RENEW_GAP: Duration = Duration::from_secs(1);
/// UPnP port conflicts tolerated before the protocol is given up.
const MAX_CONFLICTS: u32 = 3;

/// The protocols, in the order they are tried.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Protocol {
    Pcp,
    NatPmp,
    Upnp,
}

impl Protocol {
    /// The name netcheck and events use.
    pub fn name(self) -> &'static str {
        match self {
            Protocol::Pcp => "pcp",
            Protocol::NatPmp => "nat-pmp",
            Protocol::Upnp => "upnp",
        }
    }

    fn next(self) -> Option<Protocol> {
        match self {
            Protocol::Pcp => Some(Protocol::NatPmp),
            Protocol::NatPmp => Some(Protocol::Upnp),
            Protocol::Upnp => None,
        }
    }
}

/// A mapping the router granted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Mapping {
    pub protocol: Protocol,
    /// Where the internet reaches the gate socket through the router.
    pub external: SocketAddrV4,
    /// The lease granted (zero: permanent, UPnP only).
    pub lifetime: Duration,
}

/// What the driver must do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Transmit {
    /// Send this datagram to the gateway's port [`wire::SERVER_PORT`].
    Datagram(Vec<u8>),
    /// UPnP-IGD: find the gateway's IGD (if not yet) and add a UDP mapping
    /// of the gate socket's port at `external_port` for `lease` seconds;
    /// answer with [`PortMapper::handle_upnp`] and the same `op`.
    UpnpMap {
        op: u64,
        external_port: u16,
        lease: u32,
    },
    /// UPnP-IGD: delete the mapping at `external_port`; answer likewise.
    UpnpUnmap { op: u64, external_port: u16 },
}

/// What changed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Event {
    /// A mapping was granted, or its external address changed.
    Mapped(Mapping),
    /// The same mapping's lease was renewed.
    Renewed(Mapping),
    /// The mapping ran out before it could be renewed; mapping starts over.
    Lost,
    /// No protocol answered this round; another follows after a wait.
    Unavailable,
    /// Shutdown is complete: the mapping was released (or never was, or
    /// the router did not confirm in time).
    Done,
}

/// How a UPnP operation went.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum UpnpOutcome {
    /// Mapped at this external address, for the lease asked.
    Mapped(SocketAddrV4),
    /// The port is taken by another mapping (UPnP error 718).
    Conflict,
    /// Only permanent leases (error 725): ask again with lease 0.
    OnlyPermanent,
    /// Deleted (or nothing to delete).
    Unmapped,
    /// No IGD found, or it refused: the text says what.
    Failed(String),
}

/// Fixed facts the machine works with.
#[derive(Clone, Debug)]
pub struct Config {
    /// The gate socket's port.
    pub internal_port: u16,
    /// This host's address toward the gateway (PCP checks it).
    pub client: Ipv4Addr,
    /// Lease asked for, in seconds. Default 7200.
    pub lifetime: u32,
    /// Random bytes: PCP's mapping nonce, and UPnP's fallback ports.
    pub seed: [u8; 12],
}

#[derive(Debug)]
enum State {
    /// Asking `protocol`; `sends` requests so far, next one at `next`.
    Asking {
        protocol: Protocol,
        sends: usize,
        next: Instant,
        natpmp_external: Option<Ipv4Addr>,
        natpmp_map: Option<(u16, u32)>,
        upnp_port: u16,
        upnp_lease: u32,
        conflicts: u32,
    },
    /// Holding `mapping`; renewing from `renew_at` on, until `expires`.
    Mapped {
        mapping: Mapping,
        renew_at: Instant,
        expires: Option<Instant>,
        renewing: Option<Renewal>,
    },
    /// Nothing answered; the next round starts at `until`.
    Waiting {
        until: Instant,
    },
    /// Releasing at shutdown; finished at `until` whatever happens.
    Releasing {
        protocol: Protocol,
        external_port: u16,
        sends: usize,
        next: Instant,
    },
    Done,
}

#[derive(Debug)]
struct Renewal {
    sends: usize,
    next: Instant,
    natpmp_external: Option<Ipv4Addr>,
    natpmp_map: Option<(u16, u32)>,
}

/// The port-mapping state machine; see the module's doc for how to drive it.
#[derive(Debug)]
pub struct PortMapper {
    config: Config,
    state: State,
    transmits: VecDeque<Transmit>,
    events: VecDeque<Event>,
    next_op: u64,
    retry_wait: Duration,
    /// The UPnP operation the machine waits for, and its deadline.
    upnp_pending: Option<(u64, Instant)>,
    shutting_down: bool,
}

impl PortMapper {
    pub fn new(config: Config, now: Instant) -> Self {
        let mut mapper = PortMapper {
            state: State::Done,
            transmits: VecDeque::new(),
            events: VecDeque::new(),
            next_op: 0,
            retry_wait: RETRY_FIRST,
            upnp_pending: None,
            shutting_down: false,
            config,
        };
        mapper.ask(Protocol::Pcp, now);
        mapper
    }

    pub fn poll_transmit(&mut self) -> Option<Transmit> {
        self.transmits.pop_front()
    }

    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// When [`PortMapper::handle_timeout`] is due next (`None`: finished).
    pub fn poll_timeout(&self) -> Option<Instant> {
        let timer = match &self.state {
            State::Asking { protocol, next, .. } if *protocol != Protocol::Upnp => Some(*next),
            State::Asking { .. } => None,
            State::Mapped {
                renew_at,
                renewing,
                expires,
                ..
            } => {
                let next = renewing.as_ref().map_or(*renew_at, |r| r.next);
                Some(expires.map_or(next, |at| at.min(next)))
            }
            State::Waiting { until } => Some(*until),
            State::Releasing { next, .. } => Some(*next),
            State::Done => None,
        };
        let upnp = self.upnp_pending.map(|(_, deadline)| deadline);
        match (timer, upnp) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// The mapping held now, if any.
    pub fn mapping(&self) -> Option<Mapping> {
        match &self.state {
            State::Mapped { mapping, .. } => Some(*mapping),
            _ => None,
        }
    }

    fn pcp_request(&self, lifetime: u32, external_port: u16) -> Vec<u8> {
        wire::pcp_map_request(
            self.config.client,
            self.config.seed,
            self.config.internal_port,
            external_port,
            lifetime,
        )
        .to_vec()
    }

    fn op(&mut self, now: Instant) -> u64 {
        self.next_op += 1;
        self.upnp_pending = Some((self.next_op, now + UPNP_OP_TIMEOUT));
        self.next_op
    }

    /// A UPnP port to try after `conflicts` conflicts: the gate socket's
    /// own first, then ports drawn from the seed (1024–65535).
    fn upnp_port(&self, conflicts: u32) -> u16 {
        if conflicts == 0 {
            return self.config.internal_port;
        }
        let i = (conflicts as usize * 2) % 12;
        let raw = u16::from_be_bytes([self.config.seed[i], self.config.seed[i + 1]]);
        1024 + raw % (u16::MAX - 1024)
    }

    fn ask(&mut self, protocol: Protocol, now: Instant) {
        self.state = State::Asking {
            protocol,
            sends: 0,
            next: now,
            natpmp_external: None,
            natpmp_map: None,
            upnp_port: self.config.internal_port,
            upnp_lease: self.config.lifetime,
            conflicts: 0,
        };
        if protocol == Protocol::Upnp {
            let op = self.op(now);
            self.transmits.push_back(Transmit::UpnpMap {
                op,
                external_port: self.config.internal_port,
                lease: self.config.lifetime,
            });
        } else {
            self.handle_timeout(now);
        }
    }

    /// The protocol being asked failed: the next one, or a wait.
    fn give_up(&mut self, protocol: Protocol, now: Instant) {
        self.upnp_pending = None;
        match protocol.next() {
            Some(next) => self.ask(next, now),
            None => {
                self.events.push_back(Event::Unavailable);
                self.state = State::Waiting {
                    until: now + self.retry_wait,
                };
                self.retry_wait = (self.retry_wait * 2).min(RETRY_MAX);
            }
        }
    }

    fn granted(&mut self, mapping: Mapping, now: Instant) {
        self.upnp_pending = None;
        self.retry_wait = RETRY_FIRST;
        let renew_in = if mapping.lifetime.is_zero() {
            PERMANENT_REFRESH
        } else {
            (mapping.lifetime / 2).max(MIN_RENEW_GAP)
        };
        let expires = (!mapping.lifetime.is_zero()).then(|| now + mapping.lifetime);
        let event = match self.mapping() {
            Some(old) if old.external == mapping.external => Event::Renewed(mapping),
            _ => Event::Mapped(mapping),
        };
        self.events.push_back(event);
        self.state = State::Mapped {
            mapping,
            renew_at: now + renew_in,
            expires,
            renewing: None,
        };
    }

    pub fn handle_timeout(&mut self, now: Instant) {
        if let Some((_, deadline)) = self.upnp_pending {
            if now >= deadline {
                self.handle_upnp_timeout(now);
            }
        }
        let config_lifetime = self.config.lifetime;
        let internal_port = self.config.internal_port;
        match &mut self.state {
            State::Asking {
                protocol,
                sends,
                next,
                natpmp_external,
                ..
            } if *protocol != Protocol::Upnp && now >= *next => {
                if *sends == RESEND.len() {
                    let protocol = *protocol;
                    self.give_up(protocol, now);
                    return;
                }
                *next = now + RESEND[*sends];
                *sends += 1;
                let (protocol, need_address) = (*protocol, natpmp_external.is_none());
                self.send_map(protocol, need_address, config_lifetime, internal_port);
            }
            State::Mapped {
                mapping,
                renew_at,
                expires,
                renewing,
            } => {
                if expires.is_some_and(|at| now >= at) {
                    self.events.push_back(Event::Lost);
                    self.ask(Protocol::Pcp, now);
                    return;
                }
                let (protocol, port) = (mapping.protocol, mapping.external.port());
                match renewing {
                    None if now >= *renew_at => {
                        if protocol == Protocol::Upnp {
                            let lease = mapping.lifetime.as_secs() as u32;
                            *renewing = Some(Renewal {
                                sends: RESEND.len(),
                                next: now + UPNP_OP_TIMEOUT,
                                natpmp_external: None,
                                natpmp_map: None,
                            });
                            let op = self.op(now);
                            self.transmits.push_back(Transmit::UpnpMap {
                                op,
                                external_port: port,
                                lease,
                            });
                            return;
                        }
                        *renewing = Some(Renewal {
                            sends: 1,
                            next: now + RESEND[0],
                            natpmp_external: None,
                            natpmp_map: None,
                        });
                        self.send_map(protocol, true, config_lifetime, port);
                    }
                    Some(renewal) if now >= renewal.next => {
                        if renewal.sends >= RESEND.len() {
                            // This try went unanswered: again at half the
                            // time left (or the last moment).
                            let left = expires.map_or(PERMANENT_REFRESH, |at| at - now);
                            *renew_at = now + (left / 2).max(MIN_RENEW_GAP);
                            *renewing = None;
                            return;
                        }
                        renewal.next = now + RESEND[renewal.sends];
                        renewal.sends += 1;
                        let need_address = renewal.natpmp_external.is_none();
                        self.send_map(protocol, need_address, config_lifetime, port);
                    }
                    _ => {}
                }
            }
            State::Waiting { until } if now >= *until => self.ask(Protocol::Pcp, now),
            State::Releasing {
                protocol,
                external_port,
                sends,
                next,
            } if now >= *next => {
                if *sends >= 2 || *protocol == Protocol::Upnp {
                    self.finish();
                    return;
                }
                *sends += 1;
                *next = now + RELEASE_WAIT;
                let (protocol, port) = (*protocol, *external_port);
                self.send_map(protocol, false, 0, port);
            }
            _ => {}
        }
    }

    /// Queues a MAP request of `protocol` for `lifetime` (0: release).
    fn send_map(&mut self, protocol: Protocol, need_address: bool, lifetime: u32, port: u16) {
        match protocol {
            Protocol::Pcp => {
                let request = self.pcp_request(lifetime, port);
                self.transmits.push_back(Transmit::Datagram(request));
            }
            Protocol::NatPmp => {
                if need_address {
                    self.transmits
                        .push_back(Transmit::Datagram(wire::natpmp_address_request().to_vec()));
                }
                let port = if lifetime == 0 { 0 } else { port };
                let request = wire::natpmp_map_request(self.config.internal_port, port, lifetime);
                self.transmits
                    .push_back(Transmit::Datagram(request.to_vec()));
            }
            Protocol::Upnp => {}
        }
    }

    fn finish(&mut self) {
        self.upnp_pending = None;
        self.state = State::Done;
        self.events.push_back(Event::Done);
    }

    /// A datagram from the gateway's port [`wire::SERVER_PORT`].
    pub fn handle_datagram(&mut self, now: Instant, bytes: &[u8]) {
        let Some(response) = wire::decode(bytes) else {
            return;
        };
        let internal_port = self.config.internal_port;
        let nonce = self.config.seed;
        match (&mut self.state, response) {
            (State::Asking { protocol, .. }, Response::UnsupportedVersion)
                if *protocol == Protocol::Pcp =>
            {
                self.ask(Protocol::NatPmp, now)
            }
            (
                State::Asking {
                    protocol: Protocol::Pcp,
                    ..
                },
                Response::PcpMap {
                    result,
                    lifetime,
                    nonce: got,
                    internal_port: port,
                    external,
                    ..
                },
            ) if got == nonce && port == internal_port => {
                match pcp_step(result, lifetime, external) {
                    NatPmpStep::Granted(mapping) => self.granted(mapping, now),
                    _ => {
                        tracing::debug!(result, "the router refused a PCP mapping");
                        self.give_up(Protocol::Pcp, now);
                    }
                }
            }
            (
                State::Asking {
                    protocol: Protocol::NatPmp,
                    natpmp_external,
                    natpmp_map,
                    ..
                },
                response,
            ) => match natpmp_step(natpmp_external, natpmp_map, response, internal_port) {
                NatPmpStep::Pending => {}
                NatPmpStep::Refused => self.give_up(Protocol::NatPmp, now),
                NatPmpStep::Granted(mapping) => self.granted(mapping, now),
            },
            (
                State::Mapped {
                    mapping,
                    renewing: Some(renewal),
                    ..
                },
                response,
            ) => {
                let step = match (mapping.protocol, response) {
                    (
                        Protocol::Pcp,
                        Response::PcpMap {
                            result,
                            lifetime,
                            nonce: got,
                            internal_port: port,
                            external,
                            ..
                        },
                    ) if got == nonce && port == internal_port => {
                        pcp_step(result, lifetime, external)
                    }
                    (Protocol::NatPmp, response) => natpmp_step(
                        &mut renewal.natpmp_external,
                        &mut renewal.natpmp_map,
                        response,
                        internal_port,
                    ),
                    _ => NatPmpStep::Pending,
                };
                match step {
                    NatPmpStep::Pending => {}
                    NatPmpStep::Granted(mapping) => self.granted(mapping, now),
                    // The router no longer grants it: start over.
                    NatPmpStep::Refused => {
                        self.events.push_back(Event::Lost);
                        self.ask(Protocol::Pcp, now);
                    }
                }
            }
            (
                State::Releasing {
                    protocol: Protocol::Pcp,
                    ..
                },
                Response::PcpMap { nonce: got, .. },
            ) if got == nonce => self.finish(),
            (
                State::Releasing {
                    protocol: Protocol::NatPmp,
                    ..
                },
                Response::NatPmpMap {
                    internal_port: port,
                    ..
                },
            ) if port == internal_port => self.finish(),
            _ => {}
        }
    }

    /// The result of the UPnP operation `op`.
    pub fn handle_upnp(&mut self, now: Instant, op: u64, outcome: UpnpOutcome) {
        if self.upnp_pending.map(|(pending, _)| pending) != Some(op) {
            return;
        }
        self.upnp_pending = None;
        let lifetime = self.config.lifetime;
        match (&mut self.state, outcome) {
            (State::Asking { .. }, UpnpOutcome::Mapped(external))
            | (State::Mapped { .. }, UpnpOutcome::Mapped(external)) => {
                let lease = match &self.state {
                    State::Asking { upnp_lease, .. } => *upnp_lease,
                    State::Mapped { mapping, .. } => mapping.lifetime.as_secs() as u32,
                    _ => lifetime,
                };
                let mapping = Mapping {
                    protocol: Protocol::Upnp,
                    external,
                    lifetime: Duration::from_secs(lease.into()),
                };
                self.granted(mapping, now);
            }
            (
                State::Asking {
                    upnp_lease,
                    conflicts,
                    ..
                },
                outcome @ (UpnpOutcome::Conflict | UpnpOutcome::OnlyPermanent),
            ) => {
                if outcome == UpnpOutcome::Conflict {
                    *conflicts += 1;
                } else {
                    *upnp_lease = 0;
                }
                let (conflicts, lease) = (*conflicts, *upnp_lease);
                if conflicts > MAX_CONFLICTS {
                    self.give_up(Protocol::Upnp, now);
                    return;
                }
                let port = self.upnp_port(conflicts);
                if let State::Asking { upnp_port, .. } = &mut self.state {
                    *upnp_port = port;
                }
                let op = self.op(now);
                self.transmits.push_back(Transmit::UpnpMap {
                    op,
                    external_port: port,
                    lease,
                });
            }
            (State::Asking { .. }, _) => self.give_up(Protocol::Upnp, now),
            (State::Mapped { renewing, .. }, _) => {
                // Unanswered or refused: the timer tries again.
                if let Some(renewal) = renewing {
                    renewal.next = now;
                }
                self.handle_timeout(now);
            }
            // A mapping asked for before shutdown arrived after it: delete
            // it, once.
            (
                State::Releasing {
                    sends: sends @ 0,
                    next,
                    external_port,
                    ..
                },
                UpnpOutcome::Mapped(external),
            ) => {
                *sends = 1;
                *next = now + UPNP_OP_TIMEOUT;
                *external_port = external.port();
                let port = external.port();
                let op = self.op(now);
                self.transmits.push_back(Transmit::UpnpUnmap {
                    op,
                    external_port: port,
                });
            }
            (State::Releasing { .. }, _) => self.finish(),
            _ => {}
        }
    }

    fn handle_upnp_timeout(&mut self, now: Instant) {
        if let Some((op, _)) = self.upnp_pending {
            self.handle_upnp(now, op, UpnpOutcome::Failed("timed out".into()));
        }
    }

    /// Releases the mapping (if any) and finishes: [`Event::Done`] follows
    /// once the router confirmed or the bounded wait ran out.
    pub fn handle_shutdown(&mut self, now: Instant) {
        if self.shutting_down {
            return;
        }
        self.shutting_down = true;
        let (protocol, port, sends) = match &self.state {
            State::Mapped { mapping, .. } => (mapping.protocol, mapping.external.port(), 0),
            // A request may have made a mapping whose answer is still on
            // its way: release what it asked for, once, without waiting
            // (the router may be silent, and exit should not wait on it).
            State::Asking {
                protocol, sends, ..
            } if *sends > 0 && *protocol != Protocol::Upnp => {
                let protocol = *protocol;
                self.send_map(protocol, false, 0, self.config.internal_port);
                self.finish();
                return;
            }
            State::Asking {
                protocol: Protocol::Upnp,
                upnp_port,
                ..
            } if self.upnp_pending.is_some() => {
                let deadline = self.upnp_pending.map_or(now, |(_, at)| at);
                self.state = State::Releasing {
                    protocol: Protocol::Upnp,
                    external_port: *upnp_port,
                    sends: 0,
                    next: deadline,
                };
                return;
            }
            _ => {
                self.finish();
                return;
            }
        };
        self.upnp_pending = None;
        self.state = State::Releasing {
            protocol,
            external_port: port,
            sends,
            next: now,
        };
        if protocol == Protocol::Upnp {
            let op = self.op(now);
            self.transmits.push_back(Transmit::UpnpUnmap {
                op,
                external_port: port,
            });
            if let State::Releasing { next, sends, .. } = &mut self.state {
                *next = now + UPNP_OP_TIMEOUT;
                *sends = 1;
            }
        } else {
            self.handle_timeout(now);
        }
    }
}

enum NatPmpStep {
    Pending,
    Refused,
    Granted(Mapping),
}

/// What a PCP answer to this node's request says: granted (a result of 0
/// with a lease), or refused.
fn pcp_step(result: u8, lifetime: u32, external: SocketAddrV4) -> NatPmpStep {
    if result != 0 || lifetime == 0 {
        NatPmpStep::Refused
    } else {
        NatPmpStep::Granted(Mapping {
            protocol: Protocol::Pcp,
            external,
            lifetime: Duration::from_secs(lifetime.into()),
        })
    }
}

/// NAT-PMP needs two answers (the external address, and the mapping's
/// port and lease); this collects them.
fn natpmp_step(
    external: &mut Option<Ipv4Addr>,
    map: &mut Option<(u16, u32)>,
    response: Response,
    internal_port: u16,
) -> NatPmpStep {
    match response {
        Response::NatPmpAddress {
            result: 0,
            external: ip,
            ..
        } => *external = Some(ip),
        Response::NatPmpMap {
            result: 0,
            internal_port: port,
            external_port,
            lifetime,
            ..
        } if port == internal_port && lifetime > 0 => *map = Some((external_port, lifetime)),
        Response::NatPmpAddress { .. }
        | Response::NatPmpMap { .. }
        | Response::UnsupportedVersion => return NatPmpStep::Refused,
        _ => {}
    }
    match (*external, *map) {
        (Some(ip), Some((port, lifetime))) => NatPmpStep::Granted(Mapping {
            protocol: Protocol::NatPmp,
            external: SocketAddrV4::new(ip, port),
            lifetime: Duration::from_secs(lifetime.into()),
        }),
        _ => NatPmpStep::Pending,
    }
}

#[cfg(test)]
#[path = "machine_tests.rs"]
mod tests;
