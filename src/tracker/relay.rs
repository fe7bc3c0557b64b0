//! The tracker's relay: what it forwards and how much ([`RelayConfig`]),
//! and the one relay stream per registered node ([`serve_relay`]) that
//! forwards peers' QUIC packets by peer id, within per-peer and
//! tracker-wide byte budgets. The tracker reads none of what it relays.

use std::sync::{Arc, PoisonError};

use quinn::Connection;
use tokio::sync::mpsc;
use tokio::time::Instant;

use super::registry::Generation;
use super::server::{bump, drain_into, SessionEnd, Shared};
use crate::identity::PeerId;
use crate::protocol::{RelayFrame, RelayRefusal, StreamKind, MAX_RELAYED_PACKET};
use crate::rate::TokenBucket;
use crate::wire::{FrameReader, FrameWriter, WireError};

/// What the relay forwards, and how much. Defaults suit a small tracker
/// carrying chat and some files for peers that cannot punch.
#[derive(Clone, Debug)]
pub struct RelayConfig {
    /// Whether the tracker relays at all. Default on (`--no-relay` turns it off).
    pub enabled: bool,
    /// Bytes per second one peer may send through the relay, on average.
    /// Default 1 MB/s.
    pub bytes_per_second: u32,
    /// Bytes one peer may send in a burst. Default 512 KiB; at least one
    /// largest packet (64 KiB) is always allowed.
    pub burst: u32,
    /// Bytes per second the whole relay forwards, all peers together.
    /// Default 100 MB/s.
    pub total_bytes_per_second: u32,
    /// Packets waiting to be written to one destination; more are dropped,
    /// as a full router queue would (QUIC's congestion control backs off).
    /// Default 256.
    pub queue: usize,
}

impl Default for RelayConfig {
    fn default() -> Self {
        Self {
            enabled: true,
            bytes_per_second: 1_000_000,
            burst: 512 * 1024,
            total_bytes_per_second: 100_000_000,
            queue: 256,
        }
    }
}

impl RelayConfig {
    /// Relaying switched off.
    pub fn disabled() -> Self {
        Self {
            enabled: false,
            ..Self::default()
        }
    }

    pub(super) fn burst(&self) -> u32 {
        self.burst.max(MAX_RELAYED_PACKET as u32)
    }
}

/// Where packets relayed to one node go.
pub(super) struct RelayOutbox {
    pub(super) generation: Generation,
    pub(super) sender: mpsc::Sender<Box<RelayFrame>>,
}

/// A node's relay stream: announces the relay's limits (or that there is
/// none), then forwards each packet the node sends to its destination's
/// relay stream, with the node's id as the source. Packets go only to peers
/// the tracker introduced the node to, within the node's byte budget and the
/// tracker's; beyond either, or when the destination's queue is full, they
/// are dropped, as a router would. The sender hears of refusals and
/// throttling at most once a second. Ends (closing the connection) if the
/// node breaks the protocol or stops reading.
pub(super) async fn serve_relay(
    shared: Arc<Shared>,
    connection: Connection,
    peer_id: PeerId,
    generation: Generation,
    send: quinn::SendStream,
    recv: quinn::RecvStream,
) {
    let config = shared.config.relay.clone();
    let mut writer = FrameWriter::answering(send, StreamKind::Relay);
    if !config.enabled {
        let reason = "this tracker does not relay (it runs with --no-relay)".to_string();
        let _ = writer.send(&RelayFrame::Unavailable { reason }).await;
        let _ = writer.get_mut().finish();
        return;
    }
    let opened = shared.registry().open_relay(peer_id, generation);
    if let Err(reason) = opened {
        let _ = writer.send(&RelayFrame::Unavailable { reason }).await;
        let _ = writer.get_mut().finish();
        return;
    }
    // Boxed, as the tracker stream's queue (`server`).
    let (out_tx, out_rx) = mpsc::channel::<Box<RelayFrame>>(config.queue.max(1));
    let first = RelayFrame::Ready {
        bytes_per_second: config.bytes_per_second,
        burst: config.burst(),
    };
    // The queue is fresh: the announcement always fits.
    let _ = out_tx.try_send(Box::new(first));
    shared
        .relays
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .insert(
            peer_id,
            RelayOutbox {
                generation,
                sender: out_tx.clone(),
            },
        );
    let write_all = drain_into(writer, out_rx, "not reading its relay stream", |_| false);
    let mut reader = FrameReader::new(recv, StreamKind::Relay);
    let now = || Instant::now().into_std();
    let mut budget = TokenBucket::new(config.bytes_per_second, config.burst(), now());
    // One notice of each kind a second, at most.
    let mut refusal_notices = TokenBucket::new(1, 1, now());
    let mut throttle_notices = TokenBucket::new(1, 1, now());
    let read_all = async {
        while let Some(frame) = reader.recv::<RelayFrame>().await? {
            let RelayFrame::Packet { peer, packet } = frame else {
                return Err(SessionEnd::Protocol(WireError::Malformed {
                    kind: "relay",
                    reason: "only packets travel from a node to the tracker".into(),
                }));
            };
            let size = packet.len() as u32;
            let destination = shared.relay_destination(&peer_id, &peer);
            let notice = match destination {
                Err(reason) => {
                    bump(&shared.counters.relay_refused, 1);
                    Some((&mut refusal_notices, RelayFrame::Refused { peer, reason }))
                }
                Ok(_) if !shared.within_relay_budget(&mut budget, &peer_id, size) => {
                    bump(&shared.counters.relay_throttled, 1);
                    let throttled = RelayFrame::Throttled {
                        peer,
                        bytes_per_second: config.bytes_per_second,
                    };
                    Some((&mut throttle_notices, throttled))
                }
                Ok(destination) => {
                    let relayed = RelayFrame::Packet {
                        peer: peer_id,
                        packet,
                    };
                    if destination.try_send(Box::new(relayed)).is_ok() {
                        bump(&shared.counters.relayed_packets, 1);
                        bump(&shared.counters.relayed_bytes, u64::from(size));
                    } else {
                        bump(&shared.counters.relay_dropped, 1);
                    }
                    None
                }
            };
            if let Some((notices, notice)) = notice {
                if notices.try_take(now()) {
                    let _ = out_tx.try_send(Box::new(notice));
                }
            }
        }
        Ok::<(), SessionEnd>(())
    };
    let result = tokio::select! {
        result = read_all => result,
        result = write_all => result,
    };
    let mut relays = shared.relays.lock().unwrap_or_else(PoisonError::into_inner);
    if relays.get(&peer_id).map(|r| r.generation) == Some(generation) {
        relays.remove(&peer_id);
    }
    drop(relays);
    shared.registry().close_relay(peer_id, generation);
    if let Err(end) = result {
        end.close(&connection, peer_id);
    }
}

impl Shared {
    /// Where packets from `from` to `to` go, if the relay may carry them.
    fn relay_destination(
        &self,
        from: &PeerId,
        to: &PeerId,
    ) -> Result<mpsc::Sender<Box<RelayFrame>>, RelayRefusal> {
        self.registry().may_relay(from, to)?;
        self.relays
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(to)
            .map(|outbox| outbox.sender.clone())
            .ok_or(RelayRefusal::Offline)
    }

    /// Takes `size` bytes from the sender's budget, its source address's
    /// and the tracker's.
    fn within_relay_budget(&self, sender: &mut TokenBucket, from: &PeerId, size: u32) -> bool {
        let now = Instant::now().into_std();
        sender.try_take_amount(size, now)
            && self.registry().take_relay_bytes(from, size, now)
            && self
                .relay_total
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .try_take_amount(size, now)
    }
}
