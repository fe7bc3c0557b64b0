//! The I/O of room records ([`super::room_record`]) on the `mainline`
//! crate: a slot read, merged and written back with compare-and-swap
//! (BEP 44's `cas`), and a room looked up by reading all its slots at
//! once. Decisions (when, which members to meet) are
//! [`super::rooms::RoomFinder`]'s.

use futures_util::future::join_all;
use mainline::errors::PutMutableError;
use mainline::MutableItem;

use super::room_record::{self, MemberEntry, RoomSpot, SLOTS};
use super::rooms::{Announced, Found};
use super::{DhtError, PeerDirectory, LOOKUP_TIMEOUT};
use crate::identity::{Identity, PeerId};

/// A slot as read: the sequence number of its most recent item (the
/// `cas` of the next write), and the entries whose signature holds.
struct Slot {
    seq: Option<i64>,
    entries: Vec<MemberEntry>,
}

impl PeerDirectory {
    async fn read_slot(&self, spot: &RoomSpot, slot: u8) -> Result<Slot, DhtError> {
        let (salt, key) = (room_record::salt(slot), spot.public_key());
        let query = self.dht.get_mutable_most_recent(&key, Some(&salt));
        let item = tokio::time::timeout(LOOKUP_TIMEOUT, query)
            .await
            .map_err(|_| DhtError::Timeout("a room".into()))?;
        let Some(item) = item else {
            return Ok(Slot {
                seq: None,
                entries: Vec::new(),
            });
        };
        let entries = match spot.open_value(slot, item.value()) {
            Ok(entries) => entries,
            Err(error) => {
                // Overwritten by the next announcement.
                tracing::debug!(slot, %error, "unreadable room slot");
                Vec::new()
            }
        };
        Ok(Slot {
            seq: Some(item.seq()),
            entries,
        })
    }

    async fn write_slot(
        &self,
        spot: &RoomSpot,
        slot: u8,
        entries: &[MemberEntry],
        previous: Option<i64>,
        unix_secs: u64,
    ) -> Announced {
        let value = match spot.seal(slot, entries) {
            Ok(value) => value,
            Err(error) => {
                tracing::debug!(%error, "cannot seal a room slot");
                return Announced::Failed;
            }
        };
        let floor = i64::try_from(unix_secs).unwrap_or(i64::MAX);
        let seq = previous.map_or(floor, |seq| seq.saturating_add(1).max(floor));
        let salt = room_record::salt(slot);
        let item = MutableItem::new(spot.signing_key(), &value, seq, Some(&salt));
        match self.dht.put_mutable(item, previous).await {
            Ok(_) => Announced::Done,
            Err(PutMutableError::Concurrency(error)) => {
                tracing::debug!(slot, %error, "room slot written by another member meanwhile");
                Announced::Conflict
            }
            Err(PutMutableError::Query(error)) => {
                tracing::debug!(slot, %error, "cannot write a room slot");
                Announced::Failed
            }
        }
    }

    /// Writes this node's entry, dated `unix_secs`, into its slot of the
    /// room `spot`, keeping the other members' fresh entries.
    pub async fn announce_in_room(
        &self,
        identity: &Identity,
        spot: &RoomSpot,
        unix_secs: u64,
    ) -> Announced {
        let slot = spot.slot_of(&identity.peer_id());
        let read = match self.read_slot(spot, slot).await {
            Ok(read) => read,
            Err(_) => return Announced::Failed,
        };
        let mine = MemberEntry::sign(identity, spot, unix_secs);
        let entries = room_record::merge(&read.entries, mine, unix_secs);
        self.write_slot(spot, slot, &entries, read.seq, unix_secs)
            .await
    }

    /// Removes `peer`'s entry from its slot of the room `spot` (it left);
    /// nothing is written when it is not there. Whether the slot is
    /// without it now (one try: an entry left behind goes stale).
    pub async fn withdraw_from_room(&self, peer: &PeerId, spot: &RoomSpot, unix_secs: u64) -> bool {
        let slot = spot.slot_of(peer);
        let Ok(read) = self.read_slot(spot, slot).await else {
            return false;
        };
        if !read.entries.iter().any(|entry| entry.peer == *peer) {
            return true;
        }
        let entries = room_record::without(&read.entries, peer, unix_secs);
        let written = self
            .write_slot(spot, slot, &entries, read.seq, unix_secs)
            .await;
        written == Announced::Done
    }

    /// The members of the room `spot` with a fresh entry at `unix_secs`,
    /// from every slot; `None` when no slot could be read.
    pub async fn look_up_room(&self, spot: &RoomSpot, unix_secs: u64) -> Option<Vec<Found>> {
        let reads = join_all((0..SLOTS).map(|slot| self.read_slot(spot, slot))).await;
        if reads.iter().all(Result::is_err) {
            return None;
        }
        let mut found: Vec<Found> = reads
            .into_iter()
            .flatten()
            .flat_map(|slot| slot.entries)
            .filter(|entry| entry.is_fresh(unix_secs))
            .map(|entry| Found {
                peer: entry.peer,
                at: entry.at,
            })
            .collect();
        found.sort_by_key(|f| std::cmp::Reverse(f.at));
        let mut seen = std::collections::HashSet::new();
        found.retain(|entry| seen.insert(entry.peer));
        Some(found)
    }
}
