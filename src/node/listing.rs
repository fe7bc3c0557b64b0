//! What the node shows about its connections and peers: `/show` (every
//! gate: path, address, round trip, bytes, age) and `/peers` (every peer
//! known, connected or not, and which are reached through a room's gossip).

use super::events::{self, PeerInfo};
use super::{path_of, Node, PeerStatus};

impl Node {
    /// Every live connection.
    pub fn gates(&self) -> Vec<events::GateInfo> {
        let state = self.roster();
        let mut gates: Vec<events::GateInfo> = state
            .peers
            .iter()
            .filter_map(|(id, record)| {
                let gate = record.gate.as_ref().filter(|g| g.is_open())?;
                let stats = gate.connection.stats();
                Some(events::GateInfo {
                    peer_id: id.to_string(),
                    name: record.name.clone(),
                    path: path_of(&gate.connection),
                    remote: self.shown_remote(&gate.connection),
                    rtt_ms: events::millis(gate.connection.rtt()),
                    bytes_in: stats.udp_rx.bytes,
                    bytes_out: stats.udp_tx.bytes,
                    age_secs: gate.since.elapsed().as_secs(),
                })
            })
            .collect();
        gates.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        gates
    }

    /// How many connections this node has closed as duplicates (another
    /// connection to the same peer was kept): each cost a handshake, and
    /// streams on it had to move. For diagnostics and the room tests.
    pub fn duplicates_closed(&self) -> u64 {
        self.roster().duplicates_closed
    }

    /// Every known peer.
    pub fn peers(&self) -> Vec<PeerInfo> {
        let state = self.roster();
        let mut peers: Vec<PeerInfo> = state
            .peers
            .iter()
            .map(|(id, record)| {
                let gate = record.gate.as_ref().filter(|g| g.is_open());
                // A member the room's gossip reaches is in the room, whether
                // this node never linked to it, let the link go, or lost a
                // connection to it (until the trackers say it left).
                let status = match record.status {
                    PeerStatus::Known | PeerStatus::InRoom | PeerStatus::Offline
                        if state.reached_through_room(id) =>
                    {
                        PeerStatus::InRoom
                    }
                    PeerStatus::InRoom => PeerStatus::Known,
                    status => status,
                };
                PeerInfo {
                    peer_id: id.to_string(),
                    name: record.name.clone(),
                    status,
                    path: gate.map(|g| path_of(&g.connection)),
                    remote: gate
                        .map(|g| self.shown_remote(&g.connection))
                        .or(record.candidates.first().copied()),
                    rtt_ms: gate.map(|g| events::millis(g.connection.rtt())),
                    connected_secs: gate.map(|g| g.since.elapsed().as_secs()),
                    last_seen_secs: record.last_seen.map(|at| at.elapsed().as_secs()),
                    rooms: record.rooms.iter().cloned().collect(),
                }
            })
            .collect();
        peers.sort_by(|a, b| a.name.cmp(&b.name).then(a.peer_id.cmp(&b.peer_id)));
        peers
    }
}
