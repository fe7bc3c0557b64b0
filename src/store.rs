//! Durable chat history in an embedded redb database (`history.redb` in the
//! data directory). Every write is one transaction committed with fsync
//! before it returns, so a message acknowledged after [`Store::insert`] has
//! returned survives a crash or `kill -9`.
//!
//! Tables (keys are byte strings that sort the way they are read):
//! - `messages`: room ‖ author ‖ seq → the signed message (wire encoding);
//! - `timeline`: room ‖ hlc ‖ author ‖ seq → nothing (history in time order);
//! - `meta`: name → u64 (this node's next sequence number, its clock);
//! - `author_usage`: room ‖ author → (messages, bytes);
//! - `room_usage`: room → (authors, bytes): what the quotas
//!   ([`crate::quota`]) are checked against, kept in the same transactions.
//!
//! All methods block on disk I/O; async callers use `spawn_blocking`.

use std::path::Path;

use redb::{Database, ReadableTable, TableDefinition};

use crate::holdings::{Held, Holdings};
use crate::identity::{PeerId, PEER_ID_LEN};
use crate::protocol::{MessageId, SignedMessage};
use crate::quota::{HistoryLimits, QuotaExceeded, Usage};
use crate::wire::{self, WireError};

const MESSAGES: TableDefinition<&[u8], &[u8]> = TableDefinition::new("messages");
const TIMELINE: TableDefinition<&[u8], ()> = TableDefinition::new("timeline");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const AUTHOR_USAGE: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("author_usage");
const ROOM_USAGE: TableDefinition<&[u8], (u64, u64)> = TableDefinition::new("room_usage");
const NEXT_SEQ: &str = "next_seq";
const CLOCK: &str = "clock";
/// Set once the usage tables count every stored message (a history from
/// before quotas is counted when first opened).
const USAGE_COUNTED: &str = "usage_counted";

/// File name of the history database inside the data directory.
pub const HISTORY_FILE: &str = "history.redb";

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("history database: {0}")]
    Database(String),
    #[error("the data directory's history is in use by another punchgate process; give this one its own --home")]
    InUse,
    #[error("history database holds an unreadable message: {0}")]
    Corrupt(#[from] WireError),
}

/// Creates the history file empty and owner-only (0600) if it does not
/// exist yet; redb then initialises the empty file as a new database.
fn create_private_file(path: &Path) -> Result<(), StoreError> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::OpenOptionsExt;
        options.mode(0o600);
    }
    match options.open(path) {
        Ok(_) => Ok(()),
        Err(error) if error.kind() == std::io::ErrorKind::AlreadyExists => Ok(()),
        Err(error) => Err(db_error(format!("{}: {error}", path.display()))),
    }
}

fn db_error(error: impl std::fmt::Display) -> StoreError {
    StoreError::Database(error.to_string())
}

/// `len ‖ room`: a prefix no other room's key starts with.
fn room_prefix(room: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(1 + room.len() + PEER_ID_LEN + 8);
    key.push(room.len().min(255) as u8);
    key.extend_from_slice(room.as_bytes());
    key
}

fn message_key(room: &str, id: &MessageId) -> Vec<u8> {
    let mut key = room_prefix(room);
    key.extend_from_slice(id.author.as_bytes());
    key.extend_from_slice(&id.seq.to_be_bytes());
    key
}

fn timeline_key(room: &str, hlc: u64, id: &MessageId) -> Vec<u8> {
    let mut key = room_prefix(room);
    key.extend_from_slice(&hlc.to_be_bytes());
    key.extend_from_slice(id.author.as_bytes());
    key.extend_from_slice(&id.seq.to_be_bytes());
    key
}

/// The id at the end of a `messages` or `timeline` key.
fn id_of_key(key: &[u8]) -> Option<MessageId> {
    let split = key.len().checked_sub(PEER_ID_LEN + 8)?;
    let author: [u8; PEER_ID_LEN] = key[split..split + PEER_ID_LEN].try_into().ok()?;
    let seq = u64::from_be_bytes(key[split + PEER_ID_LEN..].try_into().ok()?);
    Some(MessageId {
        author: PeerId::from_bytes(author),
        seq,
    })
}

/// The end of a prefix range: the prefix with its last byte incremented.
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 255 {
            end.push(last + 1);
            return end;
        }
    }
    vec![255; prefix.len() + 1]
}

pub struct Store {
    db: Database,
    limits: HistoryLimits,
}

/// What [`Store::insert`] did with one message.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    New,
    /// It was here already.
    Known,
    /// Not stored: a quota is full.
    Refused(QuotaExceeded),
}

fn usage_of(value: Option<(u64, u64)>) -> Option<Usage> {
    value.map(|(count, bytes)| Usage { count, bytes })
}

type UsageTable<'txn> = redb::Table<'txn, &'static [u8], (u64, u64)>;

/// The `author_usage` key of `author` in `room`.
fn author_key(room: &str, author: &PeerId) -> Vec<u8> {
    let mut key = room_prefix(room);
    key.extend_from_slice(author.as_bytes());
    key
}

/// What `table` counts under `key`.
fn usage_in(table: &UsageTable<'_>, key: &[u8]) -> Result<Option<Usage>, StoreError> {
    Ok(usage_of(
        table.get(key).map_err(db_error)?.map(|v| v.value()),
    ))
}

/// Counts a newly stored message of `bytes` in the usage tables.
fn count_message(
    authors: &mut UsageTable<'_>,
    rooms: &mut UsageTable<'_>,
    room: &str,
    author: &PeerId,
    bytes: u64,
) -> Result<(), StoreError> {
    let key = author_key(room, author);
    let prefix = room_prefix(room);
    let was = usage_in(authors, &key)?;
    let room_was = usage_in(rooms, &prefix)?.unwrap_or_default();
    let author_now = was.unwrap_or_default();
    let author_new = (author_now.count + 1, author_now.bytes.saturating_add(bytes));
    authors
        .insert(key.as_slice(), author_new)
        .map_err(db_error)?;
    let room_new = (
        room_was.count + u64::from(was.is_none()),
        room_was.bytes.saturating_add(bytes),
    );
    rooms
        .insert(prefix.as_slice(), room_new)
        .map_err(db_error)?;
    Ok(())
}

impl Store {
    /// Opens (or creates) the history of the data directory `home`.
    pub fn open(home: &Path) -> Result<Self, StoreError> {
        let path = home.join(HISTORY_FILE);
        create_private_file(&path)?;
        let db = Database::create(&path).map_err(|error| match error {
            redb::DatabaseError::DatabaseAlreadyOpen => StoreError::InUse,
            other => db_error(other),
        })?;
        // One made before this rule (redb creates files 0644 under the
        // usual umask) is narrowed.
        if let Some(narrowed) = crate::home::make_file_private(&path).map_err(db_error)? {
            tracing::warn!("{narrowed}");
        }
        let txn = db.begin_write().map_err(db_error)?;
        {
            let messages = txn.open_table(MESSAGES).map_err(db_error)?;
            txn.open_table(TIMELINE).map_err(db_error)?;
            let mut meta = txn.open_table(META).map_err(db_error)?;
            let mut authors = txn.open_table(AUTHOR_USAGE).map_err(db_error)?;
            let mut rooms = txn.open_table(ROOM_USAGE).map_err(db_error)?;
            if meta.get(USAGE_COUNTED).map_err(db_error)?.is_none() {
                for entry in messages.iter().map_err(db_error)? {
                    let (_, value) = entry.map_err(db_error)?;
                    let message: SignedMessage = wire::decode_stored(value.value())?;
                    let (body, bytes) = (&message.body, value.value().len() as u64);
                    count_message(&mut authors, &mut rooms, &body.room, &body.id.author, bytes)?;
                }
                meta.insert(USAGE_COUNTED, 1).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(Self {
            db,
            limits: HistoryLimits::default(),
        })
    }

    /// The same store, keeping others' history within `limits` from now on.
    pub fn with_limits(mut self, limits: HistoryLimits) -> Self {
        self.limits = limits;
        self
    }

    /// Stores verified messages in one durable transaction, each only if
    /// the quotas allow; returns what became of each. Also records this
    /// node's next sequence number and clock when given.
    pub fn insert(
        &self,
        messages: &[SignedMessage],
        next_seq: Option<u64>,
        clock: u64,
    ) -> Result<Vec<Stored>, StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        let mut outcomes = Vec::with_capacity(messages.len());
        {
            let mut table = txn.open_table(MESSAGES).map_err(db_error)?;
            let mut timeline = txn.open_table(TIMELINE).map_err(db_error)?;
            let mut authors = txn.open_table(AUTHOR_USAGE).map_err(db_error)?;
            let mut rooms = txn.open_table(ROOM_USAGE).map_err(db_error)?;
            for message in messages {
                let body = &message.body;
                let key = message_key(&body.room, &body.id);
                if table.get(key.as_slice()).map_err(db_error)?.is_some() {
                    outcomes.push(Stored::Known);
                    continue;
                }
                let bytes = wire::encode_stored(message)?;
                let size = bytes.len() as u64;
                let author = usage_in(&authors, &author_key(&body.room, &body.id.author))?;
                let room = usage_in(&rooms, &room_prefix(&body.room))?.unwrap_or_default();
                if let Err(exceeded) = self.limits.admit(author, room, size) {
                    outcomes.push(Stored::Refused(exceeded));
                    continue;
                }
                table
                    .insert(key.as_slice(), bytes.as_slice())
                    .map_err(db_error)?;
                let at = timeline_key(&body.room, body.hlc, &body.id);
                timeline.insert(at.as_slice(), ()).map_err(db_error)?;
                count_message(&mut authors, &mut rooms, &body.room, &body.id.author, size)?;
                outcomes.push(Stored::New);
            }
            let mut meta = txn.open_table(META).map_err(db_error)?;
            if let Some(next) = next_seq {
                // Concurrent sends may commit out of order: keep the highest.
                let known = meta
                    .get(NEXT_SEQ)
                    .map_err(db_error)?
                    .map(|v| v.value())
                    .unwrap_or(1);
                if next > known {
                    meta.insert(NEXT_SEQ, next).map_err(db_error)?;
                }
            }
            let known = meta
                .get(CLOCK)
                .map_err(db_error)?
                .map(|v| v.value())
                .unwrap_or(0);
            if clock > known {
                meta.insert(CLOCK, clock).map_err(db_error)?;
            }
        }
        txn.commit().map_err(db_error)?;
        Ok(outcomes)
    }

    fn meta(&self, name: &str) -> Result<Option<u64>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let meta = txn.open_table(META).map_err(db_error)?;
        Ok(meta.get(name).map_err(db_error)?.map(|v| v.value()))
    }

    /// This node's next sequence number (1 on a fresh store).
    pub fn next_seq(&self) -> Result<u64, StoreError> {
        Ok(self.meta(NEXT_SEQ)?.unwrap_or(1))
    }

    /// The latest clock value stored.
    pub fn clock(&self) -> Result<u64, StoreError> {
        Ok(self.meta(CLOCK)?.unwrap_or(0))
    }

    /// Replaces the stored clock, also with a lower value: for a clock that
    /// was found poisoned (far in the future) at start.
    pub fn reset_clock(&self, clock: u64) -> Result<(), StoreError> {
        let txn = self.db.begin_write().map_err(db_error)?;
        {
            let mut meta = txn.open_table(META).map_err(db_error)?;
            meta.insert(CLOCK, clock).map_err(db_error)?;
        }
        txn.commit().map_err(db_error)
    }

    pub fn contains(&self, room: &str, id: &MessageId) -> Result<bool, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(MESSAGES).map_err(db_error)?;
        Ok(table
            .get(message_key(room, id).as_slice())
            .map_err(db_error)?
            .is_some())
    }

    /// What this node holds of `room`: per author, the sequence numbers;
    /// for an author whose quota is full, every number (sync asks for
    /// nothing more of it).
    pub fn holdings(&self, room: &str) -> Result<Holdings, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(MESSAGES).map_err(db_error)?;
        let prefix = room_prefix(room);
        let end = prefix_end(&prefix);
        let mut holdings = Holdings::new();
        for entry in table
            .range(prefix.as_slice()..end.as_slice())
            .map_err(db_error)?
        {
            let (key, _) = entry.map_err(db_error)?;
            let Some(id) = id_of_key(key.value()) else {
                continue;
            };
            // Keys sort by author, then seq: each author's numbers ascend.
            holdings.entry(id.author).or_default().push(id.seq);
        }
        // An author whose quota is full: nothing more of it is wanted.
        let authors = txn.open_table(AUTHOR_USAGE).map_err(db_error)?;
        for (author, held) in holdings.iter_mut() {
            let key = author_key(room, author);
            let usage = authors.get(key.as_slice()).map_err(db_error)?;
            if usage_of(usage.map(|v| v.value())).is_some_and(|u| self.limits.author_full(u)) {
                *held = Held::everything();
            }
        }
        Ok(holdings)
    }

    /// How many authors and bytes of `room` are stored.
    pub fn room_usage(&self, room: &str) -> Result<Usage, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let rooms = txn.open_table(ROOM_USAGE).map_err(db_error)?;
        let usage = rooms.get(room_prefix(room).as_slice()).map_err(db_error)?;
        Ok(usage_of(usage.map(|v| v.value())).unwrap_or_default())
    }

    /// The quotas this store keeps history within.
    pub fn limits(&self) -> HistoryLimits {
        self.limits
    }

    /// Up to `limit` messages of `room` that a peer holding `theirs` lacks
    /// (in key order: by author, then seq; with `new_authors` false, only of
    /// authors `theirs` lists),
    /// starting after the key `after` (for the next batch); returns them and
    /// where to continue, if anything is left.
    pub fn missing(
        &self,
        room: &str,
        theirs: &Holdings,
        new_authors: bool,
        after: Option<Vec<u8>>,
        limit: usize,
    ) -> Result<(Vec<SignedMessage>, Option<Vec<u8>>), StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let table = txn.open_table(MESSAGES).map_err(db_error)?;
        let prefix = room_prefix(room);
        let end = prefix_end(&prefix);
        let start = after.unwrap_or_else(|| prefix.clone());
        let mut out = Vec::new();
        for entry in table
            .range(start.as_slice()..end.as_slice())
            .map_err(db_error)?
        {
            let (key, value) = entry.map_err(db_error)?;
            if key.value() == start.as_slice() && start != prefix {
                continue; // the last key of the previous batch
            }
            let Some(id) = id_of_key(key.value()) else {
                continue;
            };
            match theirs.get(&id.author) {
                Some(held) if held.contains(id.seq) => continue,
                None if !new_authors => continue,
                _ => {}
            }
            if out.len() == limit {
                let next = start_of_next(&out, room);
                return Ok((out, Some(next)));
            }
            out.push(wire::decode_stored(value.value())?);
        }
        Ok((out, None))
    }

    /// The last `count` messages of `room`, oldest first.
    pub fn history(&self, room: &str, count: usize) -> Result<Vec<SignedMessage>, StoreError> {
        let txn = self.db.begin_read().map_err(db_error)?;
        let timeline = txn.open_table(TIMELINE).map_err(db_error)?;
        let table = txn.open_table(MESSAGES).map_err(db_error)?;
        let prefix = room_prefix(room);
        let end = prefix_end(&prefix);
        let mut out = Vec::new();
        for entry in timeline
            .range(prefix.as_slice()..end.as_slice())
            .map_err(db_error)?
            .rev()
        {
            if out.len() == count {
                break;
            }
            let (key, _) = entry.map_err(db_error)?;
            let Some(id) = id_of_key(key.value()) else {
                continue;
            };
            if let Some(value) = table
                .get(message_key(room, &id).as_slice())
                .map_err(db_error)?
            {
                out.push(wire::decode_stored(value.value())?);
            }
        }
        out.reverse();
        Ok(out)
    }
}

/// The `messages` key of the last message of a batch: the next batch starts
/// after it.
fn start_of_next(batch: &[SignedMessage], room: &str) -> Vec<u8> {
    batch
        .last()
        .map(|m| message_key(room, &m.body.id))
        .unwrap_or_else(|| room_prefix(room))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::holdings::Held;
    use crate::identity::Identity;
    use crate::protocol::ChatBody;

    fn message(author: &Identity, seq: u64, hlc: u64, room: &str) -> SignedMessage {
        let body = ChatBody {
            id: MessageId {
                author: author.peer_id(),
                seq,
            },
            hlc,
            room: room.into(),
            text: format!("message {seq}"),
        };
        SignedMessage::sign(author, body).unwrap()
    }

    #[test]
    fn messages_persist_and_duplicates_are_not_new() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Identity::generate().unwrap();
        let m = message(&alice, 1, 10, "r");
        {
            let store = Store::open(dir.path()).unwrap();
            assert_eq!(
                store.insert(std::slice::from_ref(&m), Some(2), 10).unwrap(),
                vec![Stored::New]
            );
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(
            store.insert(std::slice::from_ref(&m), None, 10).unwrap(),
            vec![Stored::Known]
        );
        assert!(store.contains("r", &m.body.id).unwrap());
        assert_eq!(store.next_seq().unwrap(), 2);
        assert_eq!(store.clock().unwrap(), 10);
    }

    fn held(ranges: &[(u64, u64)]) -> Held {
        Held::from_summary(ranges.to_vec()).unwrap()
    }

    #[test]
    fn holdings_list_every_range_held_per_author_and_room() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        let batch: Vec<_> = [1, 2, 4]
            .into_iter()
            .map(|seq| message(&alice, seq, seq, "r"))
            .chain([message(&bob, 1, 9, "r"), message(&bob, 1, 9, "other")])
            .collect();
        store.insert(&batch, None, 9).unwrap();
        let holdings = store.holdings("r").unwrap();
        assert_eq!(holdings.len(), 2);
        assert_eq!(holdings[&alice.peer_id()].summary(), vec![(1, 2), (4, 4)]);
        assert_eq!(holdings[&bob.peer_id()].summary(), vec![(1, 1)]);
    }

    /// Sends `from` → `to` what `to` lacks of room "r", as a sync does;
    /// returns how many messages travelled.
    fn sync(from: &Store, to: &Store) -> usize {
        let theirs = to.holdings("r").unwrap();
        let mut after = None;
        let mut sent = 0;
        loop {
            let (batch, next) = from.missing("r", &theirs, true, after, 64).unwrap();
            sent += batch.len();
            to.insert(&batch, None, 0).unwrap();
            match next {
                Some(next) => after = Some(next),
                None => return sent,
            }
        }
    }

    #[test]
    fn an_author_starting_at_seq_2_is_not_sent_again_on_every_sync() {
        let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
        let (server, client) = (
            Store::open(a.path()).unwrap(),
            Store::open(b.path()).unwrap(),
        );
        let mallory = Identity::generate().unwrap();
        let batch: Vec<_> = (2..=641)
            .map(|seq| message(&mallory, seq, seq, "r"))
            .collect();
        server.insert(&batch, None, 0).unwrap();
        assert_eq!(sync(&server, &client), 640);
        assert_eq!(sync(&server, &client), 0, "sent again on the second sync");
        // Seq 1 turns up after all: it is sent, once.
        server
            .insert(&[message(&mallory, 1, 1, "r")], None, 0)
            .unwrap();
        assert_eq!(sync(&server, &client), 1);
        assert_eq!(sync(&server, &client), 0);
    }

    #[test]
    fn missing_messages_come_in_bounded_batches() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = Identity::generate().unwrap();
        let batch: Vec<_> = (1..=10).map(|seq| message(&alice, seq, seq, "r")).collect();
        store.insert(&batch, None, 10).unwrap();
        let mut theirs = Holdings::new();
        theirs.insert(alice.peer_id(), held(&[(1, 3), (6, 6)]));
        let mut got = Vec::new();
        let mut after = None;
        loop {
            let (chunk, next) = store.missing("r", &theirs, true, after, 3).unwrap();
            assert!(chunk.len() <= 3);
            got.extend(chunk.into_iter().map(|m| m.body.id.seq));
            match next {
                Some(next) => after = Some(next),
                None => break,
            }
        }
        assert_eq!(got, vec![4, 5, 7, 8, 9, 10]);
        let all: Holdings = [(alice.peer_id(), held(&[(1, 10)]))].into_iter().collect();
        assert!(store
            .missing("r", &all, true, None, 3)
            .unwrap()
            .0
            .is_empty());
    }

    #[test]
    fn quotas_refuse_what_is_over_them_and_survive_a_reopen() {
        let dir = tempfile::tempdir().unwrap();
        let limits = HistoryLimits {
            author_messages: 3,
            author_bytes: 1 << 20,
            room_authors: 2,
            room_bytes: 1 << 20,
        };
        let authors: Vec<Identity> = (0..3).map(|_| Identity::generate().unwrap()).collect();
        {
            let store = Store::open(dir.path()).unwrap().with_limits(limits);
            let batch: Vec<_> = (1..=4)
                .map(|seq| message(&authors[0], seq, seq, "r"))
                .collect();
            let outcomes = store.insert(&batch, None, 0).unwrap();
            assert_eq!(outcomes[..3], [Stored::New; 3]);
            assert_eq!(
                outcomes[3],
                Stored::Refused(QuotaExceeded::AuthorMessages { limit: 3 })
            );
            // The author is full: sync asks for nothing more of it.
            let holdings = store.holdings("r").unwrap();
            assert!(holdings[&authors[0].peer_id()].contains(1_000_000));
        }
        // Counts persist; a third author is one too many for the room, in
        // this room only.
        let store = Store::open(dir.path()).unwrap().with_limits(limits);
        let outcomes = store
            .insert(
                &[
                    message(&authors[1], 1, 1, "r"),
                    message(&authors[2], 1, 1, "r"),
                    message(&authors[2], 1, 1, "elsewhere"),
                ],
                None,
                0,
            )
            .unwrap();
        assert_eq!(
            outcomes,
            [
                Stored::New,
                Stored::Refused(QuotaExceeded::RoomAuthors { limit: 2 }),
                Stored::New
            ]
        );
        assert_eq!(store.room_usage("r").unwrap().count, 2);
        assert!(!limits.takes_new_authors(store.room_usage("r").unwrap()));
        // Asked without new authors, a peer sends only those listed.
        let listed: Holdings = [(authors[1].peer_id(), Held::default())]
            .into_iter()
            .collect();
        let (sent, _) = store.missing("r", &listed, false, None, 64).unwrap();
        assert!(sent
            .iter()
            .all(|m| m.body.id.author == authors[1].peer_id()));
        assert_eq!(sent.len(), 1);
    }

    #[test]
    fn a_history_from_before_quotas_is_counted_when_opened() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Identity::generate().unwrap();
        {
            let store = Store::open(dir.path()).unwrap();
            let batch: Vec<_> = (1..=5).map(|seq| message(&alice, seq, seq, "r")).collect();
            store.insert(&batch, None, 0).unwrap();
            // Forget the counts, as a database written before them would.
            let txn = store.db.begin_write().unwrap();
            txn.delete_table(AUTHOR_USAGE).unwrap();
            txn.delete_table(ROOM_USAGE).unwrap();
            txn.open_table(META).unwrap().remove(USAGE_COUNTED).unwrap();
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        let usage = store.room_usage("r").unwrap();
        assert_eq!(usage.count, 1);
        assert!(usage.bytes > 5 * 100);
    }

    #[test]
    fn a_message_stored_before_room_tags_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let alice = Identity::generate().unwrap();
        let m = message(&alice, 1, 10, "r");
        // Version 1 stored `body ‖ signature`: the same bincode as the pair.
        let mut old = wire::signing_bytes("", &(m.body.clone(), m.signature.clone())).unwrap();
        old.remove(0);
        {
            let store = Store::open(dir.path()).unwrap();
            let txn = store.db.begin_write().unwrap();
            {
                let mut table = txn.open_table(MESSAGES).unwrap();
                let key = message_key("r", &m.body.id);
                table.insert(key.as_slice(), old.as_slice()).unwrap();
                let mut timeline = txn.open_table(TIMELINE).unwrap();
                let at = timeline_key("r", 10, &m.body.id);
                timeline.insert(at.as_slice(), ()).unwrap();
            }
            txn.commit().unwrap();
        }
        let store = Store::open(dir.path()).unwrap();
        assert_eq!(store.history("r", 10).unwrap(), vec![m]);
    }

    #[test]
    fn history_is_in_clock_order_and_bounded() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let alice = Identity::generate().unwrap();
        let bob = Identity::generate().unwrap();
        store
            .insert(
                &[
                    message(&bob, 1, 30, "r"),
                    message(&alice, 1, 10, "r"),
                    message(&alice, 2, 20, "r"),
                ],
                None,
                30,
            )
            .unwrap();
        let texts: Vec<u64> = store
            .history("r", 10)
            .unwrap()
            .iter()
            .map(|m| m.body.hlc)
            .collect();
        assert_eq!(texts, vec![10, 20, 30]);
        let last_two: Vec<u64> = store
            .history("r", 2)
            .unwrap()
            .iter()
            .map(|m| m.body.hlc)
            .collect();
        assert_eq!(last_two, vec![20, 30]);
    }

    #[cfg(unix)]
    #[test]
    fn the_history_file_is_owner_only_also_when_found_wider() {
        use std::os::unix::fs::PermissionsExt;
        let home = tempfile::tempdir().unwrap();
        let path = home.path().join(HISTORY_FILE);
        let mode = || std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        drop(Store::open(home.path()).unwrap());
        assert_eq!(mode(), 0o600);
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        drop(Store::open(home.path()).unwrap());
        assert_eq!(mode(), 0o600);
    }
}
