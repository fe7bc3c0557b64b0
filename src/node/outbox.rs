//! Messages this node posted or passed on (gossip) that some peer has not
//! acknowledged yet, kept so that the connection manager can resend them on
//! a new gate. Bounded by
//! count and by bytes: beyond either, the oldest are dropped and left to
//! history sync, so a member that stays away cannot grow it without end.

use std::collections::{BTreeMap, HashMap};

use crate::protocol::{ChatFrame, MessageId, SignedMessage};

/// Messages kept at most.
pub(super) const OUTBOX_MESSAGES: usize = 10_000;
/// Bytes of message text (and a fixed allowance per message) kept at most.
pub(super) const OUTBOX_BYTES: usize = 8 * 1024 * 1024;
/// What a message costs beyond its text: ids, clock, signature, room.
const PER_MESSAGE: usize = 256;

struct Entry {
    id: MessageId,
    frame: ChatFrame,
    /// Peers that still owe an acknowledgement.
    owed: usize,
    bytes: usize,
}

pub(super) struct Outbox {
    /// By the order they came in: oldest first.
    entries: BTreeMap<u64, Entry>,
    /// Where each message is in `entries`.
    index: HashMap<MessageId, u64>,
    next: u64,
    bytes: usize,
    max_messages: usize,
    max_bytes: usize,
}

impl Outbox {
    pub fn new(max_messages: usize, max_bytes: usize) -> Self {
        Self {
            entries: BTreeMap::new(),
            index: HashMap::new(),
            next: 0,
            bytes: 0,
            max_messages,
            max_bytes,
        }
    }

    /// Keeps `message` until `owed` peers have acknowledged it.
    pub fn insert(&mut self, message: SignedMessage, owed: usize) {
        if owed == 0 {
            return;
        }
        let id = message.body.id;
        let bytes = PER_MESSAGE + message.body.text.len() + message.body.room.len();
        self.remove(id);
        self.bytes += bytes;
        let at = self.next;
        self.next += 1;
        self.index.insert(id, at);
        self.entries.insert(
            at,
            Entry {
                id,
                frame: ChatFrame::Message(message),
                owed,
                bytes,
            },
        );
        while self.entries.len() > self.max_messages || self.bytes > self.max_bytes {
            let Some((_, oldest)) = self.entries.pop_first() else {
                break;
            };
            self.index.remove(&oldest.id);
            self.bytes -= oldest.bytes;
        }
    }

    /// One peer acknowledged `id`; forgotten once nobody owes it.
    pub fn acked(&mut self, id: MessageId) {
        let Some(entry) = self.index.get(&id).and_then(|at| self.entries.get_mut(at)) else {
            return;
        };
        entry.owed = entry.owed.saturating_sub(1);
        if entry.owed == 0 {
            self.remove(id);
        }
    }

    /// The frame to resend for `id`, if it is still kept.
    pub fn frame(&self, id: MessageId) -> Option<ChatFrame> {
        let at = self.index.get(&id)?;
        self.entries.get(at).map(|e| e.frame.clone())
    }

    fn remove(&mut self, id: MessageId) {
        let Some(at) = self.index.remove(&id) else {
            return;
        };
        if let Some(entry) = self.entries.remove(&at) {
            self.bytes -= entry.bytes;
        }
    }

    #[cfg(test)]
    fn len(&self) -> usize {
        self.entries.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::protocol::ChatBody;

    fn message(identity: &Identity, seq: u64, text: &str) -> SignedMessage {
        let body = ChatBody {
            id: MessageId {
                author: identity.peer_id(),
                seq,
            },
            hlc: seq,
            room: "r".into(),
            text: text.into(),
        };
        SignedMessage::sign(identity, body).unwrap()
    }

    #[test]
    fn a_message_is_kept_until_every_peer_owing_it_acknowledged() {
        let me = Identity::generate().unwrap();
        let mut outbox = Outbox::new(OUTBOX_MESSAGES, OUTBOX_BYTES);
        let first = message(&me, 1, "hi");
        let id = first.body.id;
        outbox.insert(first, 2);
        outbox.acked(id);
        assert!(outbox.frame(id).is_some());
        outbox.acked(id);
        assert!(outbox.frame(id).is_none());
        // Nobody owes it: never kept.
        outbox.insert(message(&me, 2, "alone"), 0);
        assert_eq!(outbox.len(), 0);
    }

    #[test]
    fn the_oldest_go_first_beyond_the_count_or_the_bytes() {
        let me = Identity::generate().unwrap();
        let mut by_count = Outbox::new(3, OUTBOX_BYTES);
        for seq in 1..=5 {
            by_count.insert(message(&me, seq, "x"), 1);
        }
        assert_eq!(by_count.len(), 3);
        assert!(by_count.frame(message(&me, 2, "x").body.id).is_none());
        assert!(by_count.frame(message(&me, 3, "x").body.id).is_some());

        let text = "y".repeat(4000);
        let mut by_bytes = Outbox::new(OUTBOX_MESSAGES, 10_000);
        for seq in 1..=5 {
            by_bytes.insert(message(&me, seq, &text), 1);
        }
        assert_eq!(by_bytes.len(), 2);
        assert!(by_bytes.bytes <= 10_000);
        assert!(by_bytes.frame(message(&me, 5, &text).body.id).is_some());
    }

    #[test]
    fn messages_of_two_authors_with_one_sequence_number_are_kept_apart() {
        let (me, other) = (Identity::generate().unwrap(), Identity::generate().unwrap());
        let mut outbox = Outbox::new(OUTBOX_MESSAGES, OUTBOX_BYTES);
        let (mine, theirs) = (message(&me, 1, "mine"), message(&other, 1, "theirs"));
        let (mine_id, theirs_id) = (mine.body.id, theirs.body.id);
        outbox.insert(mine, 1);
        outbox.insert(theirs, 1);
        assert_eq!(outbox.len(), 2);
        outbox.acked(theirs_id);
        assert!(outbox.frame(theirs_id).is_none());
        assert!(outbox.frame(mine_id).is_some());
    }
}
