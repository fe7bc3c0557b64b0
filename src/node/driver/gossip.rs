//! The node task's side of the rooms' gossip: carrying out the
//! `Overlay`'s effects (links, control messages, forwards, syncs) and
//! closing the connections no room needs.

use std::collections::{HashMap, HashSet};
use std::time::Instant;

use super::{Driver, JOINER_DIALS, UNNEEDED_GRACE};
use crate::identity::PeerId;
use crate::node::overlay::Effect;
use crate::protocol::{ControlMessage, GossipControl, SignedMessage};

impl Driver {
    /// Carries out the rooms' gossip: `message`, if given, is the message
    /// its forwards are of.
    pub(super) fn gossip(&mut self, message: Option<SignedMessage>, now: Instant) {
        let mut forwards: Vec<PeerId> = Vec::new();
        let mut controls: HashMap<PeerId, Vec<(String, GossipControl)>> = HashMap::new();
        let mut unlinked: HashSet<PeerId> = HashSet::new();
        while let Some(effect) = self.overlay.poll_effect() {
            match effect {
                Effect::Link(peer) => {
                    unlinked.remove(&peer);
                    self.manager.set_welcome(peer, true);
                    match self.newcomers.remove(&peer) {
                        // It just joined and dials us: ours only if it does not.
                        Some(at) => self.manager.connect_after(peer, at + JOINER_DIALS, now),
                        None => self.manager.connect(peer, now),
                    }
                }
                Effect::Unlink(peer) => {
                    unlinked.insert(peer);
                }
                Effect::Control { to, room, control } => {
                    controls.entry(to).or_default().push((room, control));
                }
                Effect::Forward { to, id } => match &message {
                    Some(m) if m.body.id == id => forwards.push(to),
                    _ => tracing::debug!(%id, "a forward without its message"),
                },
                Effect::Sync { peer } => {
                    if let Some(gate) = self.node.roster().open_gate(&peer) {
                        self.node.inner.services.catch_up.catch_up(gate);
                    }
                }
            }
        }
        if let Some(message) = message {
            let owing = self.manager.post(message.body.id, &forwards);
            self.outbox.insert(message, owing.len());
        }
        for peer in &unlinked {
            if self.overlay.needs(peer) || self.asked.contains(peer) {
                continue;
            }
            self.manager.set_wanted(*peer, false);
        }
        let peers: HashSet<PeerId> = controls.keys().chain(unlinked.iter()).copied().collect();
        for peer in peers {
            for (room, control) in controls.remove(&peer).unwrap_or_default() {
                self.overlay.hold(peer, room, control);
            }
            // A connection this node dialed goes with the link; one the
            // peer dialed is the peer's to close (or `prune`'s, later).
            let dialed = self
                .node
                .roster()
                .open_gate(&peer)
                .is_some_and(|g| g.dialer == self.node.peer_id());
            let close = dialed
                && unlinked.contains(&peer)
                && !self.overlay.needs(&peer)
                && !self.asked.contains(&peer);
            self.send_controls(peer, close);
        }
    }

    /// Closes gates to room members that no room's gossip has needed for
    /// [`UNNEEDED_GRACE`] (a request that timed out before its connection
    /// came, a neighbor that was dropped): the connections a member holds
    /// stay bounded. Peers asked for by hand, and peers met outside the
    /// rooms' gossip, are kept.
    pub(super) fn prune(&mut self, now: Instant) {
        let open: HashSet<PeerId> = self
            .gates
            .values()
            .filter(|g| g.is_open())
            .map(|g| g.peer_id)
            .collect();
        self.unneeded.retain(|peer, _| open.contains(peer));
        for peer in open {
            let needed = self.overlay.needs(&peer)
                || self.asked.contains(&peer)
                || !self.overlay.knows(&peer);
            if needed {
                self.unneeded.remove(&peer);
                continue;
            }
            let since = *self.unneeded.entry(peer).or_insert(now);
            if now.duration_since(since) >= UNNEEDED_GRACE {
                self.unneeded.remove(&peer);
                self.manager.set_wanted(peer, false);
                self.send_controls(peer, true);
            }
        }
    }

    /// Sends what waits for `peer` and may go now.
    pub(super) fn send_waiting(&mut self, peer: PeerId) {
        self.send_controls(peer, false);
    }

    /// Sends `peer` the control messages waiting for it that it may hear
    /// (over an open gate, and for a password room once proven); with
    /// `close`, then closes the gate (no room needs it) if the peer is a
    /// member this node met only through the rooms' gossip.
    pub(super) fn send_controls(&mut self, peer: PeerId, close: bool) {
        let Some(gate) = self.node.roster().open_gate(&peer) else {
            return;
        };
        let me = self.node.peer_id();
        let mut now_sendable = Vec::new();
        for (room, control) in self.overlay.take_waiting(&peer) {
            if self.node.roster().takes_part(&me, &peer, &room) {
                now_sendable.push(ControlMessage::Gossip { room, control });
            } else if self.node.roster().rooms.contains(&room) {
                self.overlay.hold(peer, room, control);
            }
        }
        if now_sendable.is_empty() && !close {
            return;
        }
        self.node.inner.spawn(async move {
            for message in now_sendable {
                if let Err(error) = gate.send_control(&message).await {
                    tracing::debug!(peer = %gate.peer_id.short(), %error, "gossip control not sent");
                    return;
                }
            }
            if close {
                gate.close_unneeded();
            }
        });
    }
}
