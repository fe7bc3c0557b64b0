//! The doorbell: how a node keeps its tracker registration without holding
//! a connection. A parked node knocks on the tracker's second port now and
//! then ([`ProbeMessage::Knock`]), which keeps its registration and its
//! NAT's mapping toward the tracker alive; the tracker answers each knock,
//! and rings ([`ProbeMessage::Answer`] with `ring`) when a peer asks to be
//! introduced to the node, which then comes back over QUIC
//! (`TrackerRequestBody::Resume`). An idle connection costs the tracker
//! ~44 KiB (QUIC and TLS state); a parked registration a few hundred bytes.
//!
//! Knocks and answers travel in the clear, so each carries a tag: a keyed
//! hash under the [`ParkTicket`], which only ever travelled inside TLS.
//! Here are the tags; the tracker's side is in `crate::tracker`, the node's
//! in `crate::node`.

use crate::identity::PeerId;
use crate::protocol::{DoorbellTag, ParkTicket, ProbeMessage};

const KNOCK_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell knock";
const ANSWER_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell answer";

impl ParkTicket {
    /// A fresh ticket from the system's random source.
    pub fn random() -> Self {
        let mut bytes = [0u8; 32];
        // ring's system RNG fails only if the OS has none; a tracker with
        // no randomness has bigger problems, and a zero ticket is still
        // never sent in the clear.
        let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
        Self(bytes)
    }
}

fn tag(ticket: &ParkTicket, context: &[u8], fields: &[&[u8]]) -> DoorbellTag {
    let mut hasher = blake3::Hasher::new_keyed(&ticket.0);
    hasher.update(context);
    for field in fields {
        hasher.update(field);
    }
    let mut out = [0u8; 16];
    out.copy_from_slice(&hasher.finalize().as_bytes()[..16]);
    out
}

/// Compares two tags in time independent of where they differ.
fn same_tag(a: &DoorbellTag, b: &DoorbellTag) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// The knock number `seq` of `peer`, parked under `ticket`.
pub fn knock(ticket: &ParkTicket, peer: PeerId, seq: u64) -> ProbeMessage {
    let tag = tag(
        ticket,
        KNOCK_CONTEXT,
        &[peer.as_bytes(), &seq.to_le_bytes()],
    );
    ProbeMessage::Knock { peer, seq, tag }
}

/// Whether a knock's tag is `peer`'s under `ticket`.
pub fn knock_is_genuine(ticket: &ParkTicket, peer: PeerId, seq: u64, got: &DoorbellTag) -> bool {
    let want = tag(
        ticket,
        KNOCK_CONTEXT,
        &[peer.as_bytes(), &seq.to_le_bytes()],
    );
    same_tag(&want, got)
}

/// The tracker's answer to knock `seq`, ringing or not.
pub fn answer(ticket: &ParkTicket, seq: u64, ring: bool) -> ProbeMessage {
    let tag = tag(
        ticket,
        ANSWER_CONTEXT,
        &[&seq.to_le_bytes(), &[u8::from(ring)]],
    );
    ProbeMessage::Answer { seq, ring, tag }
}

/// Whether an answer's tag is the tracker's under `ticket`.
pub fn answer_is_genuine(ticket: &ParkTicket, seq: u64, ring: bool, got: &DoorbellTag) -> bool {
    let want = tag(
        ticket,
        ANSWER_CONTEXT,
        &[&seq.to_le_bytes(), &[u8::from(ring)]],
    );
    same_tag(&want, got)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_knock_is_genuine_only_under_its_ticket_peer_and_number() {
        let ticket = ParkTicket::random();
        let peer = Identity::generate().unwrap().peer_id();
        let ProbeMessage::Knock { seq, tag, .. } = knock(&ticket, peer, 7) else {
            panic!("not a knock");
        };
        assert!(knock_is_genuine(&ticket, peer, seq, &tag));
        assert!(!knock_is_genuine(&ticket, peer, seq + 1, &tag));
        let other = Identity::generate().unwrap().peer_id();
        assert!(!knock_is_genuine(&ticket, other, seq, &tag));
        assert!(!knock_is_genuine(&ParkTicket::random(), peer, seq, &tag));
    }

    #[test]
    fn an_answer_is_genuine_only_under_its_ticket_number_and_ring() {
        let ticket = ParkTicket::random();
        let ProbeMessage::Answer { seq, ring, tag } = answer(&ticket, 3, true) else {
            panic!("not an answer");
        };
        assert!(answer_is_genuine(&ticket, seq, ring, &tag));
        assert!(!answer_is_genuine(&ticket, seq, false, &tag));
        assert!(!answer_is_genuine(&ticket, seq + 1, ring, &tag));
        assert!(!answer_is_genuine(&ParkTicket::random(), seq, ring, &tag));
        // A knock's tag is no answer's.
        let peer = Identity::generate().unwrap().peer_id();
        let ProbeMessage::Knock { tag, .. } = knock(&ticket, peer, 3) else {
            panic!("not a knock");
        };
        assert!(!answer_is_genuine(&ticket, 3, true, &tag));
    }

    #[test]
    fn the_ticket_never_shows_in_debug_output() {
        let ticket = ParkTicket([0xab; 32]);
        assert!(!format!("{ticket:?}").contains("ab"));
    }
}
