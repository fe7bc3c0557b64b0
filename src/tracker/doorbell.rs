//! The tracker server's side of the doorbell (`crate::doorbell`): parking
//! and resuming registrations over a node's connection, knocks and rings on
//! the second port, and the sweep that rings again and drops registrations
//! whose knocks stopped. The decisions are the registry's
//! ([`super::registry::parked`]); this is the I/O around them.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use quinn::Connection;
use tokio::time::Instant;

use super::registry::parked::{HeldIntroduction, Ring, SWEEP_EVERY};
use super::registry::Generation;
use super::server::{bump, Shared};
use crate::gate_socket::{is_probe, probe_datagram, PROBE_MAGIC};
use crate::identity::PeerId;
use crate::protocol::{
    DoorId, DoorbellTag, ParkTicket, ProbeMessage, TrackerRefusal, TrackerResponse,
};
use crate::rate::TokenBucket;

/// Knocks checked per second, at most, and in a burst: each costs a keyed
/// hash and a look-up under the registry's lock, so a flood of forged
/// knocks takes at most this much of the tracker; genuine knocks beyond it
/// are lost as on a congested network (a node knocks again).
pub(super) const KNOCK_CHECKS: u32 = 20_000;
/// Knocks answered per second, at most, and in a burst: room for 10,000
/// parked peers knocking every 25 s (400/s) five times over, while the
/// second port cannot be made to send more than this many small answers.
/// A genuine knock over it still keeps its registration; only its answer
/// is left out. `Reflect` has its own, smaller, budget.
pub(super) const KNOCK_RATE: u32 = 2_000;
pub(super) const KNOCK_BURST: u32 = 4_000;

/// What the session does once the response to a request is queued.
pub(super) enum After {
    Nothing,
    /// The registration is parked: finish the stream and close.
    Close,
    /// The registration is resumed: these introductions were held for it.
    Introduce(Vec<HeldIntroduction>),
}

/// `Park`: the registration `generation` of `peer_id` is kept without its
/// connection, which the session then closes.
pub(super) fn park(
    shared: &Shared,
    peer_id: PeerId,
    generation: Generation,
    after: &mut After,
) -> Result<TrackerResponse, TrackerRefusal> {
    let now = Instant::now().into_std();
    let (ticket, _) = shared.registry().park(peer_id, generation, now)?;
    *after = After::Close;
    let knock_every_secs =
        u16::try_from(shared.config.knock_every.as_secs().max(1)).unwrap_or(u16::MAX);
    tracing::debug!(peer = %peer_id.short(), "parked");
    Ok(TrackerResponse::Parked {
        ticket,
        aux_port: shared.aux_port(),
        knock_every_secs,
    })
}

/// `Resume`, as a connection's first request: the parked registration is
/// this connection's. Returns its new generation.
pub(super) fn resume(
    shared: &Shared,
    connection: &Connection,
    peer_id: PeerId,
    ticket: &ParkTicket,
    after: &mut After,
) -> Result<(Generation, TrackerResponse), TrackerRefusal> {
    let reflexive = crate::gate_socket::canonical(connection.remote_address());
    let now = Instant::now().into_std();
    let (generation, held) = shared.registry().resume(peer_id, ticket, reflexive, now)?;
    tracing::debug!(peer = %peer_id.short(), %reflexive, held = held.len(), "resumed");
    *after = After::Introduce(held);
    Ok((generation, TrackerResponse::Resumed { reflexive }))
}

/// Sends a ring (or an answer) from the second port. Best effort: a full
/// socket buffer loses it, as the network could, and the next knock's
/// answer rings again.
pub(super) fn send(shared: &Shared, ring: &Ring) {
    let Ok(payload) = ring.message.encode() else {
        return;
    };
    // Addresses are kept canonical (plain IPv4); a dual-stack socket
    // (`[::]`, the default) sends to IPv4 peers at their mapped address
    // (Linux takes either form; not every system does).
    let to = match (shared.aux.local_addr(), ring.to) {
        (Ok(SocketAddr::V6(_)), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        (_, to) => to,
    };
    let _ = shared.aux.try_send_to(&probe_datagram(&payload), to);
}

/// Budgets of the second port's knocks: checks and answers.
pub(super) struct KnockBudget {
    checks: TokenBucket,
    answers: TokenBucket,
}

impl KnockBudget {
    fn new(now: std::time::Instant) -> Self {
        Self {
            checks: TokenBucket::new(KNOCK_CHECKS, KNOCK_CHECKS, now),
            answers: TokenBucket::new(KNOCK_RATE, KNOCK_BURST, now),
        }
    }
}

/// A parked node's leave on the second port: checked within the knocks'
/// [`KNOCK_CHECKS`]; if genuine, the registration is dropped and its rooms
/// told.
fn leave(shared: &Shared, budget: &mut KnockBudget, (door, tag): (DoorId, DoorbellTag)) {
    if !budget.checks.try_take(Instant::now().into_std()) {
        return;
    }
    let outbox = shared.registry().leave_parked(&door, &tag);
    if let Some(outbox) = outbox {
        tracing::debug!("a parked node left");
        shared.deliver(outbox);
    }
}

/// A knock on the second port: checked within [`KNOCK_CHECKS`], and if
/// genuine, kept and answered within [`KNOCK_RATE`].
pub(super) fn knock(
    shared: &Shared,
    budget: &mut KnockBudget,
    (door, seq, tag): (DoorId, u64, DoorbellTag),
    from: SocketAddr,
) {
    let now = Instant::now().into_std();
    if !budget.checks.try_take(now) {
        return;
    }
    let from = crate::gate_socket::canonical(from);
    let answer = shared.registry().knock(&door, seq, &tag, from, now);
    if let Some(message) = answer {
        bump(&shared.counters.knocks, 1);
        if budget.answers.try_take(now) {
            send(shared, &Ring { to: from, message });
        }
    }
}

/// Answers to `Reflect` probes per second, at most: the second port must
/// not become a reflector for floods.
const REFLECT_RATE: u32 = 200;

/// The second port: answers netcheck's `Reflect` probes with the address
/// they came from (within [`REFLECT_RATE`]) and parked nodes' knocks
/// (within [`KNOCK_RATE`]).
pub(super) async fn aux_loop(shared: Arc<Shared>) {
    let mut buf = vec![0u8; 2048];
    let start = Instant::now().into_std();
    let mut reflects = TokenBucket::new(REFLECT_RATE, REFLECT_RATE, start);
    let mut knocks = KnockBudget::new(start);
    loop {
        let Ok((len, from)) = shared.aux.recv_from(&mut buf).await else {
            continue;
        };
        let datagram = &buf[..len];
        if !is_probe(datagram) {
            continue;
        }
        match ProbeMessage::decode(&datagram[PROBE_MAGIC.len()..]) {
            Ok(ProbeMessage::Reflect { nonce }) => {
                if !reflects.try_take(Instant::now().into_std()) {
                    continue;
                }
                let reflected = ProbeMessage::Reflected {
                    nonce,
                    seen: crate::gate_socket::canonical(from),
                };
                if let Ok(payload) = reflected.encode() {
                    let _ = shared.aux.send_to(&probe_datagram(&payload), from).await;
                }
            }
            Ok(ProbeMessage::Knock { door, seq, tag }) => {
                knock(&shared, &mut knocks, (door, seq, tag), from);
            }
            Ok(ProbeMessage::Leave { door, tag }) => leave(&shared, &mut knocks, (door, tag)),
            _ => {}
        }
    }
}

/// Every [`SWEEP_EVERY`]: rings that are due go out, and registrations
/// whose knocks stopped are dropped (their rooms are told).
pub(super) async fn sweep_loop(shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(SWEEP_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let now = Instant::now().into_std();
        let (rings, outbox) = {
            let mut registry = shared.registry();
            (registry.poll_rings(now), registry.expire_parked(now))
        };
        for ring in &rings {
            send(&shared, ring);
        }
        if !outbox.is_empty() {
            tracing::debug!(events = outbox.len(), "parked registrations expired");
        }
        shared.deliver(outbox);
    }
}

/// How long the tracker waits for a node to acknowledge its `Parked`
/// response before closing the connection anyway.
pub(super) const PARKED_ACK: Duration = Duration::from_secs(5);
