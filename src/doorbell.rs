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

use std::time::{Duration, Instant};

use crate::protocol::{DoorId, DoorbellTag, ParkTicket, ProbeMessage};

const DOOR_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell door";
const KNOCK_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell knock";
const ANSWER_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell answer";
const LEAVE_CONTEXT: &[u8] = b"punchgate 2026-12 doorbell leave";

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

/// The name the knocks of the registration parked under `ticket` go by.
pub fn door_of(ticket: &ParkTicket) -> DoorId {
    tag(ticket, DOOR_CONTEXT, &[])
}

/// The knock number `seq` of the registration parked under `ticket`.
pub fn knock(ticket: &ParkTicket, seq: u64) -> ProbeMessage {
    let door = door_of(ticket);
    let tag = tag(ticket, KNOCK_CONTEXT, &[&door, &seq.to_le_bytes()]);
    ProbeMessage::Knock { door, seq, tag }
}

/// Whether a knock's tag is genuine under `ticket`.
pub fn knock_is_genuine(ticket: &ParkTicket, seq: u64, got: &DoorbellTag) -> bool {
    let want = tag(
        ticket,
        KNOCK_CONTEXT,
        &[&door_of(ticket), &seq.to_le_bytes()],
    );
    same_tag(&want, got)
}

/// The registration parked under `ticket` is going away.
pub fn leave(ticket: &ParkTicket) -> ProbeMessage {
    let door = door_of(ticket);
    let tag = tag(ticket, LEAVE_CONTEXT, &[&door]);
    ProbeMessage::Leave { door, tag }
}

/// Whether a leave's tag is genuine under `ticket`.
pub fn leave_is_genuine(ticket: &ParkTicket, got: &DoorbellTag) -> bool {
    let want = tag(ticket, LEAVE_CONTEXT, &[&door_of(ticket)]);
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

/// Answers a knock may wait for before it is sent again (under a new
/// number): a lost datagram, or a tracker gone.
pub const ANSWER_WAIT: Duration = Duration::from_secs(3);

/// Knocks in a row left unanswered before the tracker counts as lost.
pub const MAX_UNANSWERED: u32 = 3;

/// What a parked node's doorbell asks of its shell.
#[derive(Debug, PartialEq, Eq)]
pub enum DoorbellAction {
    /// Send this knock to the tracker's second port.
    Knock(ProbeMessage),
    /// The tracker rang: a peer waits for an introduction; resume.
    Ring,
    /// [`MAX_UNANSWERED`] knocks in a row went unanswered: the tracker is
    /// gone (or forgot the registration); register afresh.
    Lost,
}

/// The node's side of the doorbell, sans I/O: when to knock, which answers
/// are genuine, when the tracker rang, when it is lost. Knocks at once
/// when parked, then every `every` after an answer; a knock unanswered
/// for [`ANSWER_WAIT`] is sent again under the next number.
#[derive(Debug)]
pub struct Doorbell {
    ticket: ParkTicket,
    every: Duration,
    /// The last knock's number (0: none yet).
    seq: u64,
    /// The highest number answered.
    answered: u64,
    next_at: Instant,
    /// Whether the last knock still waits for its answer.
    waiting: bool,
    unanswered: u32,
    rung: bool,
    lost: bool,
}

impl Doorbell {
    /// Parked under `ticket` at `now`; knock every `every`.
    pub fn new(ticket: ParkTicket, every: Duration, now: Instant) -> Self {
        Self {
            ticket,
            every,
            seq: 0,
            answered: 0,
            next_at: now,
            waiting: false,
            unanswered: 0,
            rung: false,
            lost: false,
        }
    }

    /// An answer came from the tracker's second port. Ignored unless it is
    /// genuine and answers a knock sent (a ring repeats the last one's
    /// number).
    pub fn handle_answer(&mut self, seq: u64, ring: bool, tag: &DoorbellTag, now: Instant) {
        if self.lost
            || seq == 0
            || seq > self.seq
            || !answer_is_genuine(&self.ticket, seq, ring, tag)
        {
            return;
        }
        if seq > self.answered {
            self.answered = seq;
            if seq == self.seq && self.waiting {
                self.waiting = false;
                self.unanswered = 0;
                self.next_at = now + self.every;
            }
        }
        if ring {
            self.rung = true;
        }
    }

    /// The next thing to do at `now`, if any: call until `None`.
    pub fn poll_action(&mut self, now: Instant) -> Option<DoorbellAction> {
        if self.lost {
            return None;
        }
        if self.rung {
            self.rung = false;
            return Some(DoorbellAction::Ring);
        }
        if now < self.next_at {
            return None;
        }
        if self.waiting {
            self.unanswered += 1;
            if self.unanswered >= MAX_UNANSWERED {
                self.lost = true;
                return Some(DoorbellAction::Lost);
            }
        }
        self.seq += 1;
        self.waiting = true;
        self.next_at = now + ANSWER_WAIT;
        Some(DoorbellAction::Knock(knock(&self.ticket, self.seq)))
    }

    /// When [`Self::poll_action`] next has something (`None`: lost).
    pub fn poll_timeout(&self) -> Option<Instant> {
        (!self.lost).then_some(self.next_at)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_knock_is_genuine_only_under_its_ticket_and_number() {
        let ticket = ParkTicket::random();
        let ProbeMessage::Knock { door, seq, tag } = knock(&ticket, 7) else {
            panic!("not a knock");
        };
        assert_eq!(door, door_of(&ticket));
        assert!(knock_is_genuine(&ticket, seq, &tag));
        assert!(!knock_is_genuine(&ticket, seq + 1, &tag));
        assert!(!knock_is_genuine(&ParkTicket::random(), seq, &tag));
    }

    #[test]
    fn a_leave_is_genuine_only_under_its_ticket_and_is_no_knock() {
        let ticket = ParkTicket::random();
        let ProbeMessage::Leave { door, tag } = leave(&ticket) else {
            panic!("not a leave");
        };
        assert_eq!(door, door_of(&ticket));
        assert!(leave_is_genuine(&ticket, &tag));
        assert!(!leave_is_genuine(&ParkTicket::random(), &tag));
        let ProbeMessage::Knock { tag: knock_tag, .. } = knock(&ticket, 0) else {
            panic!("not a knock");
        };
        assert!(!leave_is_genuine(&ticket, &knock_tag));
    }

    #[test]
    fn a_knock_names_no_peer_and_its_door_only_its_ticket() {
        let ticket = ParkTicket::random();
        let encoded = knock(&ticket, 1).encode().unwrap();
        // A door, a number and a tag: nothing as long as a peer id.
        assert!(encoded.len() < 16 + 8 + 16 + 8, "{} bytes", encoded.len());
        assert_ne!(door_of(&ticket), door_of(&ParkTicket::random()));
        assert_eq!(door_of(&ticket), door_of(&ticket));
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
        let ProbeMessage::Knock { tag, .. } = knock(&ticket, 3) else {
            panic!("not a knock");
        };
        assert!(!answer_is_genuine(&ticket, 3, true, &tag));
    }

    #[test]
    fn the_ticket_never_shows_in_debug_output() {
        let ticket = ParkTicket([0xab; 32]);
        assert!(!format!("{ticket:?}").contains("ab"));
    }

    fn parked() -> (Doorbell, ParkTicket, Instant) {
        let ticket = ParkTicket::random();
        let now = Instant::now();
        (
            Doorbell::new(ticket, Duration::from_secs(25), now),
            ticket,
            now,
        )
    }

    fn knock_number(action: Option<DoorbellAction>) -> u64 {
        match action {
            Some(DoorbellAction::Knock(ProbeMessage::Knock { seq, .. })) => seq,
            other => panic!("expected a knock, got {other:?}"),
        }
    }

    fn answer_of(ticket: &ParkTicket, seq: u64, ring: bool) -> (u64, bool, DoorbellTag) {
        match answer(ticket, seq, ring) {
            ProbeMessage::Answer { seq, ring, tag } => (seq, ring, tag),
            _ => unreachable!(),
        }
    }

    #[test]
    fn knocks_at_once_then_every_interval_while_answered() {
        let (mut bell, ticket, start) = parked();
        assert_eq!(bell.poll_timeout(), Some(start));
        assert_eq!(knock_number(bell.poll_action(start)), 1);
        assert_eq!(bell.poll_action(start), None);
        let (seq, ring, tag) = answer_of(&ticket, 1, false);
        let answered_at = start + Duration::from_millis(40);
        bell.handle_answer(seq, ring, &tag, answered_at);
        assert_eq!(
            bell.poll_timeout(),
            Some(answered_at + Duration::from_secs(25))
        );
        assert_eq!(
            bell.poll_action(answered_at + Duration::from_secs(24)),
            None
        );
        let at = answered_at + Duration::from_secs(25);
        assert_eq!(knock_number(bell.poll_action(at)), 2);
    }

    #[test]
    fn an_unanswered_knock_is_sent_again_and_three_in_a_row_mean_lost() {
        let (mut bell, ticket, start) = parked();
        assert_eq!(knock_number(bell.poll_action(start)), 1);
        let retry = start + ANSWER_WAIT;
        assert_eq!(
            knock_number(bell.poll_action(retry)),
            2,
            "sent again, renumbered"
        );
        // A late answer to the first knock proves nothing about the second.
        let (seq, ring, tag) = answer_of(&ticket, 1, false);
        bell.handle_answer(seq, ring, &tag, retry);
        assert_eq!(knock_number(bell.poll_action(retry + ANSWER_WAIT)), 3);
        assert_eq!(
            bell.poll_action(retry + ANSWER_WAIT * 2),
            Some(DoorbellAction::Lost)
        );
        assert_eq!(bell.poll_action(retry + ANSWER_WAIT * 10), None);
        assert_eq!(bell.poll_timeout(), None);
    }

    #[test]
    fn an_answer_resets_the_count_of_unanswered_knocks() {
        let (mut bell, ticket, start) = parked();
        let mut now = start;
        for round in 0..5 {
            let first = knock_number(bell.poll_action(now));
            now += ANSWER_WAIT;
            let again = knock_number(bell.poll_action(now));
            assert_eq!(again, first + 1, "round {round}");
            let (seq, ring, tag) = answer_of(&ticket, again, false);
            bell.handle_answer(seq, ring, &tag, now);
            now += Duration::from_secs(25);
        }
        assert!(matches!(
            bell.poll_action(now),
            Some(DoorbellAction::Knock(_))
        ));
    }

    #[test]
    fn a_genuine_ring_asks_to_resume_once_and_forgeries_do_nothing() {
        let (mut bell, ticket, start) = parked();
        assert_eq!(knock_number(bell.poll_action(start)), 1);
        // Forged: another ticket; a number never sent; the tag of a quiet answer.
        let (seq, _, tag) = answer_of(&ParkTicket::random(), 1, true);
        bell.handle_answer(seq, true, &tag, start);
        let (_, _, tag) = answer_of(&ticket, 2, true);
        bell.handle_answer(2, true, &tag, start);
        let (_, _, tag) = answer_of(&ticket, 1, false);
        bell.handle_answer(1, true, &tag, start);
        assert_eq!(bell.poll_action(start), None);
        let (seq, ring, tag) = answer_of(&ticket, 1, true);
        bell.handle_answer(seq, ring, &tag, start);
        assert_eq!(bell.poll_action(start), Some(DoorbellAction::Ring));
        assert_eq!(bell.poll_action(start), None, "once");
        // The ring answered the knock too: the next one is an interval away.
        assert_eq!(bell.poll_timeout(), Some(start + Duration::from_secs(25)));
    }
}
