//! How much of a room's history a node keeps from others: quotas per author
//! and per room, checked before a message is stored. Pure; the store keeps
//! the counts and asks.
//!
//! Identities are free, so nothing here can tell a crowd from one person
//! with many keys: the per-room quotas bound what any number of strangers
//! can make this node store (in a password room only password holders can
//! write at all, see [`crate::room_key`]); the per-author quotas keep one
//! author from taking all of a room.

/// Room history quotas. The defaults fit years of a busy group chat; they
/// bound the disk a room can take to [`HistoryLimits::room_bytes`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct HistoryLimits {
    /// Messages kept per author per room. Default 20 000.
    pub author_messages: u64,
    /// Bytes (as stored) kept per author per room. Default 4 MiB: 20 000
    /// messages of about 100 characters, or 480 of the longest (8 KiB).
    pub author_bytes: u64,
    /// Authors per room. Default 512 (the tracker's rooms hold 256 members
    /// at once; people come and go).
    pub room_authors: u64,
    /// Bytes (as stored) kept per room. Default 32 MiB.
    pub room_bytes: u64,
}

impl Default for HistoryLimits {
    fn default() -> Self {
        Self {
            author_messages: 20_000,
            author_bytes: 4 << 20,
            room_authors: 512,
            room_bytes: 32 << 20,
        }
    }
}

/// What is stored of one author, or of one room: messages (for a room,
/// authors) and bytes.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Usage {
    pub count: u64,
    pub bytes: u64,
}

/// Room space kept free for one more message before a room or an author
/// counts as full for sync ([`HistoryLimits::author_full`]): the largest
/// stored message is a little over 8 KiB.
const FULL_MARGIN: u64 = 16 * 1024;

/// Why a message was not stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
pub enum QuotaExceeded {
    #[error("its author already has {limit} messages in the room here, the most kept")]
    AuthorMessages { limit: u64 },
    #[error("its author already has {} KiB in the room here, the most kept", .limit / 1024)]
    AuthorBytes { limit: u64 },
    #[error("the room already has {limit} authors here, the most kept")]
    RoomAuthors { limit: u64 },
    #[error("the room's history here is full ({} MiB)", .limit >> 20)]
    RoomBytes { limit: u64 },
}

impl HistoryLimits {
    /// Whether a message of `bytes` may be added, given what its author
    /// (`author`, none yet if `None`) and its room (`room`: authors and
    /// bytes) hold.
    pub fn admit(
        &self,
        author: Option<Usage>,
        room: Usage,
        bytes: u64,
    ) -> Result<(), QuotaExceeded> {
        match author {
            None if room.count >= self.room_authors => {
                return Err(QuotaExceeded::RoomAuthors {
                    limit: self.room_authors,
                })
            }
            Some(author) if author.count >= self.author_messages => {
                return Err(QuotaExceeded::AuthorMessages {
                    limit: self.author_messages,
                })
            }
            Some(author) if author.bytes.saturating_add(bytes) > self.author_bytes => {
                return Err(QuotaExceeded::AuthorBytes {
                    limit: self.author_bytes,
                })
            }
            _ => {}
        }
        if room.bytes.saturating_add(bytes) > self.room_bytes {
            return Err(QuotaExceeded::RoomBytes {
                limit: self.room_bytes,
            });
        }
        Ok(())
    }

    /// Whether sync should stop asking for an author's messages: few or no
    /// more would be taken.
    pub fn author_full(&self, author: Usage) -> bool {
        author.count >= self.author_messages
            || author.bytes.saturating_add(FULL_MARGIN) > self.author_bytes
    }

    /// Whether sync should stop asking for a room's messages.
    pub fn room_full(&self, room: Usage) -> bool {
        room.bytes.saturating_add(FULL_MARGIN) > self.room_bytes
    }

    /// Whether the room takes messages of authors it has none of yet.
    pub fn takes_new_authors(&self, room: Usage) -> bool {
        room.count < self.room_authors
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn usage(count: u64, bytes: u64) -> Usage {
        Usage { count, bytes }
    }

    #[test]
    fn each_quota_refuses_with_its_own_reason() {
        let limits = HistoryLimits {
            author_messages: 3,
            author_bytes: 1000,
            room_authors: 2,
            room_bytes: 5000,
        };
        let room = usage(1, 100);
        assert_eq!(limits.admit(None, room, 10), Ok(()));
        assert_eq!(limits.admit(Some(usage(2, 100)), room, 10), Ok(()));
        assert_eq!(
            limits.admit(Some(usage(3, 100)), room, 10),
            Err(QuotaExceeded::AuthorMessages { limit: 3 })
        );
        assert_eq!(
            limits.admit(Some(usage(1, 995)), room, 10),
            Err(QuotaExceeded::AuthorBytes { limit: 1000 })
        );
        assert_eq!(
            limits.admit(None, usage(2, 100), 10),
            Err(QuotaExceeded::RoomAuthors { limit: 2 })
        );
        // A known author still writes in a room full of authors.
        assert_eq!(limits.admit(Some(usage(1, 10)), usage(2, 100), 10), Ok(()));
        assert_eq!(
            limits.admit(Some(usage(1, 10)), usage(1, 4995), 10),
            Err(QuotaExceeded::RoomBytes { limit: 5000 })
        );
        assert_eq!(
            limits.admit(None, usage(1, u64::MAX), u64::MAX),
            Err(QuotaExceeded::RoomBytes { limit: 5000 })
        );
    }

    #[test]
    fn sync_stops_asking_before_a_quota_is_reached() {
        let limits = HistoryLimits::default();
        assert!(!limits.author_full(usage(10, 10_000)));
        assert!(limits.author_full(usage(limits.author_messages, 0)));
        assert!(limits.author_full(usage(1, limits.author_bytes - 1024)));
        assert!(!limits.room_full(usage(1, 1 << 20)));
        assert!(limits.room_full(usage(1, limits.room_bytes - 1024)));
        assert!(limits.takes_new_authors(usage(511, 0)));
        assert!(!limits.takes_new_authors(usage(512, 0)));
    }
}
