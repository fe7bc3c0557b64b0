//! The node's end of the trackers' relays: routes the packets the gate
//! socket sends to relayed peers to the relay stream that reaches each
//! peer, pumps packets between each tracker's relay stream and the gate
//! socket, and turns the tracker's notices
//! (throttled, refused) into error events, at most one per peer and kind
//! every [`super::notices::NOTICE_INTERVAL`]. Which connections use the relay, and when, is
//! decided in [`super`].

use std::sync::{Arc, Weak};

use tokio::sync::mpsc;

use super::manager::TrackerIx;
use super::{Inner, Node};
use crate::gate_socket::{GateSocket, RelayedPacket};
use crate::protocol::RelayFrame;
use crate::tracker::client::RelayStream;
use crate::wire::WireError;

/// Whether this node may use the tracker's relay.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum RelayPolicy {
    /// Punch first; relay when no direct path appears by the deadline, and
    /// keep trying to upgrade to a direct path. The default.
    #[default]
    Fallback,
    /// Never relay (`--no-relay`): a failed punch is an error.
    Never,
    /// Skip direct attempts and always relay (`--relay-only`; tests, or
    /// networks where punching only wastes time).
    Only,
}

/// Moves packets both ways until the stream ends or breaks, then marks the
/// relay lost. Holds the node weakly, like the probe router.
pub(super) async fn pump(
    node: Weak<Inner>,
    tracker: TrackerIx,
    socket: Arc<GateSocket>,
    stream: RelayStream,
    mut outgoing: mpsc::Receiver<RelayedPacket>,
) {
    let RelayStream {
        mut writer,
        mut reader,
    } = stream;
    let write_all = async {
        while let Some((peer, packet)) = outgoing.recv().await {
            writer.send(&RelayFrame::Packet { peer, packet }).await?;
        }
        Ok::<(), WireError>(())
    };
    let read_all = async {
        while let Some(frame) = reader.recv::<RelayFrame>().await? {
            let (peer, kind, text) = match frame {
                RelayFrame::Packet { peer, packet } => {
                    // Answers go back the way the peer's packets came.
                    if let Some(inner) = node.upgrade() {
                        inner.trackers.route(peer, tracker);
                    }
                    socket.deliver_relayed(peer, packet);
                    continue;
                }
                RelayFrame::Throttled {
                    peer,
                    bytes_per_second,
                } => (
                    peer,
                    "throttled",
                    format!(
                        "over the relay's limit of {bytes_per_second} bytes/s: packets are dropped until the rate falls"
                    ),
                ),
                RelayFrame::Refused { peer, reason } => (peer, "refused", reason.to_string()),
                RelayFrame::Ready { .. } | RelayFrame::Unavailable { .. } => {
                    return Err(WireError::Malformed {
                        kind: "relay",
                        reason: "a second announcement".into(),
                    })
                }
            };
            let Some(inner) = node.upgrade() else { break };
            let node = Node { inner };
            let name = node.name_of(&peer);
            node.inner
                .cx
                .peer_error(peer, kind, format!("relay to {name}: {text}"));
        }
        Ok::<(), WireError>(())
    };
    let result = tokio::select! {
        result = write_all => result,
        result = read_all => result,
    };
    let Some(inner) = node.upgrade() else { return };
    let node = Node { inner };
    let reason = match result {
        Ok(()) => "the tracker closed the relay stream".to_string(),
        Err(error) => format!("the relay stream failed: {error}"),
    };
    tracing::debug!(%reason, "relay lost");
    node.inner.trackers.detach_relay(tracker);
    node.input(super::driver::Input::RelayReady {
        tracker,
        ready: Err(reason),
    });
}

/// Hands each packet the gate socket sends to a relayed peer to the relay
/// stream that reaches that peer, until the node is gone.
pub(super) async fn route(node: Weak<Inner>, mut outgoing: mpsc::Receiver<RelayedPacket>) {
    while let Some(packet) = outgoing.recv().await {
        let Some(inner) = node.upgrade() else { return };
        if !inner.trackers.send_relayed(packet) {
            tracing::trace!("a relayed packet dropped: no relay stream reaches its peer");
        }
    }
}
