//! Room records on the DHT: where a room's members say "I am in this room".
//!
//! Every member of a room derives the same [`RoomSpot`] from what it knows
//! of the room — the name alone for an open room, the password-derived key
//! ([`crate::room_key::RoomKey`]) for a password room — and from it an
//! Ed25519 key that all members share, a sealing key, and the slot each
//! member writes to. A slot is one BEP 44 mutable item under the shared key
//! (salt [`salt`]); its value is a sealed list of at most [`MAX_ENTRIES`]
//! [`MemberEntry`]s, each signed by that member's own identity key over the
//! room's public key and the time it was written, so an entry cannot be
//! forged or replayed into another room. Anyone holding the room's secret
//! can rewrite a slot (and so erase entries), but cannot add an entry in
//! someone else's name. Pure: no I/O, no clock.

use ring::aead::{Aad, LessSafeKey, Nonce, UnboundKey, CHACHA20_POLY1305, NONCE_LEN};
use ring::rand::{SecureRandom, SystemRandom};
use ring::{digest, hmac};

use crate::identity::{Identity, PeerId, PEER_ID_LEN};

/// The format of a room record's value this build writes and reads.
pub const ROOM_RECORD_VERSION: u8 = 1;
/// Slots (mutable items) per room; a member writes to one, a lookup reads
/// all of them.
pub const SLOTS: u8 = 4;
/// Entries one slot holds, at most (BEP 44 bounds a value to 1000 bytes).
pub const MAX_ENTRIES: usize = 8;
/// An entry older than this is stale: dropped by readers and writers.
pub const MAX_AGE_SECS: u64 = 3600;
/// An entry dated further ahead than this (a wrong clock) is dropped.
pub const MAX_SKEW_SECS: u64 = 600;
const SIGNATURE_LEN: usize = 64;
/// An entry's encoded length: peer id, time, signature.
pub const ENTRY_LEN: usize = PEER_ID_LEN + 8 + SIGNATURE_LEN;
const TAG_LEN: usize = 16;
/// The longest value this module writes: well under BEP 44's 1000 bytes.
pub const MAX_VALUE_LEN: usize = 1 + NONCE_LEN + 1 + MAX_ENTRIES * ENTRY_LEN + TAG_LEN;

const OPEN_DOMAIN: &[u8] = b"punchgate open room v1";
const SIGN_LABEL: &[u8] = b"punchgate room dht signing key v1";
const SEAL_LABEL: &[u8] = b"punchgate room dht sealing key v1";
const SLOT_LABEL: &[u8] = b"punchgate room dht slot v1";
const ENTRY_DOMAIN: &[u8] = b"punchgate room member v1";
const SALT_PREFIX: &[u8] = b"pg-room-v1/";

/// What every member of one room derives alike: the shared key pair of its
/// records and the key that seals their values. Never logged.
#[derive(Clone)]
pub struct RoomSpot {
    seed: [u8; 32],
    public: [u8; 32],
    seal: [u8; 32],
    slot_key: [u8; 32],
}

impl std::fmt::Debug for RoomSpot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "RoomSpot({:02x?}…)", &self.public[..4])
    }
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RoomRecordError {
    #[error("the system's cryptography failed to seal or open a room record")]
    Crypto,
    #[error("the room record is empty")]
    Empty,
    #[error("the room record has format version {0}, newer than this build reads ({ROOM_RECORD_VERSION}); upgrade punchgate")]
    Version(u8),
    #[error("the room record is cut short (a corrupted or forged record)")]
    Truncated,
    #[error("the room record does not open with this room's key (another room's, or forged)")]
    Unsealed,
    #[error(
        "the room record lists {0} entries, more than {MAX_ENTRIES} (a corrupted or forged record)"
    )]
    TooMany(u8),
    #[error("the room record has {0} bytes after its end (a corrupted or forged record)")]
    Trailing(usize),
}

/// One member's "I am in this room", signed by the member.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct MemberEntry {
    pub peer: PeerId,
    /// When it was written, in Unix seconds.
    pub at: u64,
    signature: [u8; SIGNATURE_LEN],
}

fn hmac32(key: &[u8], label: &[u8]) -> [u8; 32] {
    let tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, key), label);
    let mut out = [0u8; 32];
    out.copy_from_slice(tag.as_ref());
    out
}

impl RoomSpot {
    /// The spot of the open room `room`: anyone who knows (or guesses) the
    /// name finds it.
    pub fn open(room: &str) -> Self {
        let mut context = digest::Context::new(&digest::SHA256);
        context.update(OPEN_DOMAIN);
        context.update(&[0]);
        context.update(room.as_bytes());
        let mut root = [0u8; 32];
        root.copy_from_slice(context.finish().as_ref());
        Self::from_secret(&root)
    }

    /// The spot derived from a room's secret (a password room's,
    /// [`crate::room_key::RoomKey::dht_secret`]).
    pub fn from_secret(root: &[u8; 32]) -> Self {
        let seed = hmac32(root, SIGN_LABEL);
        let public = mainline::SigningKey::from_bytes(&seed)
            .verifying_key()
            .to_bytes();
        Self {
            seed,
            public,
            seal: hmac32(root, SEAL_LABEL),
            slot_key: hmac32(root, SLOT_LABEL),
        }
    }

    /// The shared public key the room's items are stored under.
    pub fn public_key(&self) -> [u8; 32] {
        self.public
    }

    /// The shared signing key (for BEP 44's signature of a slot).
    pub fn signing_key(&self) -> mainline::SigningKey {
        mainline::SigningKey::from_bytes(&self.seed)
    }

    /// The slot `peer` writes its entry to: spread by a keyed hash, so
    /// that nobody without the room's secret can tell who writes where.
    pub fn slot_of(&self, peer: &PeerId) -> u8 {
        let tag = hmac32(&self.slot_key, peer.as_bytes());
        tag[0] % SLOTS
    }

    /// The sealed value of a slot holding `entries` (at most
    /// [`MAX_ENTRIES`] are kept, the first ones).
    pub fn seal(&self, slot: u8, entries: &[MemberEntry]) -> Result<Vec<u8>, RoomRecordError> {
        let mut plain = encode_entries(entries);
        // Random nonces: every member seals under the same key.
        let mut nonce = [0u8; NONCE_LEN];
        SystemRandom::new()
            .fill(&mut nonce)
            .map_err(|_| RoomRecordError::Crypto)?;
        let aad = aad(slot);
        self.aead_key()?
            .seal_in_place_append_tag(
                Nonce::assume_unique_for_key(nonce),
                Aad::from(&aad),
                &mut plain,
            )
            .map_err(|_| RoomRecordError::Crypto)?;
        let mut out = Vec::with_capacity(1 + NONCE_LEN + plain.len());
        out.push(ROOM_RECORD_VERSION);
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&plain);
        Ok(out)
    }

    /// Opens a slot's value: the entries whose member's signature holds,
    /// whatever their age (see [`MemberEntry::is_fresh`]). A value that
    /// does not open, or is malformed, is an error; an entry with a bad
    /// signature is dropped silently (someone holding the room's secret
    /// wrote it).
    pub fn open_value(&self, slot: u8, bytes: &[u8]) -> Result<Vec<MemberEntry>, RoomRecordError> {
        let (&version, rest) = bytes.split_first().ok_or(RoomRecordError::Empty)?;
        if version != ROOM_RECORD_VERSION {
            return Err(RoomRecordError::Version(version));
        }
        if rest.len() < NONCE_LEN + TAG_LEN {
            return Err(RoomRecordError::Truncated);
        }
        let (nonce, sealed) = rest.split_at(NONCE_LEN);
        let nonce =
            Nonce::try_assume_unique_for_key(nonce).map_err(|_| RoomRecordError::Truncated)?;
        let mut sealed = sealed.to_vec();
        let aad = aad(slot);
        let plain = self
            .aead_key()?
            .open_in_place(nonce, Aad::from(&aad), &mut sealed)
            .map_err(|_| RoomRecordError::Unsealed)?;
        self.decode_entries(plain)
    }

    /// Reads the entries of an opened value: a count, then the entries;
    /// those whose member's signature fails are dropped.
    pub fn decode_entries(&self, plain: &[u8]) -> Result<Vec<MemberEntry>, RoomRecordError> {
        let (&count, mut body) = plain.split_first().ok_or(RoomRecordError::Truncated)?;
        if usize::from(count) > MAX_ENTRIES {
            return Err(RoomRecordError::TooMany(count));
        }
        let mut entries = Vec::with_capacity(usize::from(count));
        for _ in 0..count {
            if body.len() < ENTRY_LEN {
                return Err(RoomRecordError::Truncated);
            }
            let (entry, rest) = body.split_at(ENTRY_LEN);
            body = rest;
            let mut id = [0u8; PEER_ID_LEN];
            id.copy_from_slice(&entry[..PEER_ID_LEN]);
            let mut at = [0u8; 8];
            at.copy_from_slice(&entry[PEER_ID_LEN..PEER_ID_LEN + 8]);
            let mut signature = [0u8; SIGNATURE_LEN];
            signature.copy_from_slice(&entry[PEER_ID_LEN + 8..]);
            let entry = MemberEntry {
                peer: PeerId::from_bytes(id),
                at: u64::from_be_bytes(at),
                signature,
            };
            if entry.verify(&self.public) {
                entries.push(entry);
            }
        }
        if !body.is_empty() {
            return Err(RoomRecordError::Trailing(body.len()));
        }
        Ok(entries)
    }

    fn aead_key(&self) -> Result<LessSafeKey, RoomRecordError> {
        UnboundKey::new(&CHACHA20_POLY1305, &self.seal)
            .map(LessSafeKey::new)
            .map_err(|_| RoomRecordError::Crypto)
    }
}

/// The plaintext of a slot holding `entries` (the first [`MAX_ENTRIES`]),
/// what [`RoomSpot::seal`] seals and [`RoomSpot::decode_entries`] reads:
/// a count, then each entry's peer id, time and signature. Room for the
/// seal's tag is reserved.
pub fn encode_entries(entries: &[MemberEntry]) -> Vec<u8> {
    let entries = &entries[..entries.len().min(MAX_ENTRIES)];
    let mut plain = Vec::with_capacity(1 + entries.len() * ENTRY_LEN + TAG_LEN);
    plain.push(entries.len() as u8);
    for entry in entries {
        plain.extend_from_slice(entry.peer.as_bytes());
        plain.extend_from_slice(&entry.at.to_be_bytes());
        plain.extend_from_slice(&entry.signature);
    }
    plain
}

/// The BEP 44 salt of slot `slot`.
pub fn salt(slot: u8) -> Vec<u8> {
    let mut salt = SALT_PREFIX.to_vec();
    salt.push(b'0' + slot % 10);
    salt
}

fn aad(slot: u8) -> Vec<u8> {
    let mut aad = vec![ROOM_RECORD_VERSION];
    aad.extend_from_slice(&salt(slot));
    aad
}

fn signable(room_public: &[u8; 32], peer: &PeerId, at: u64) -> Vec<u8> {
    let mut out = ENTRY_DOMAIN.to_vec();
    out.push(0);
    out.extend_from_slice(room_public);
    out.extend_from_slice(peer.as_bytes());
    out.extend_from_slice(&at.to_be_bytes());
    out
}

impl MemberEntry {
    /// This node's entry for the room `spot`, written at `at`.
    pub fn sign(identity: &Identity, spot: &RoomSpot, at: u64) -> Self {
        let peer = identity.peer_id();
        let signature = identity.sign(&signable(&spot.public, &peer, at));
        Self {
            peer,
            at,
            signature,
        }
    }

    /// Whether the member signed this entry for the room of `room_public`.
    pub fn verify(&self, room_public: &[u8; 32]) -> bool {
        self.peer
            .verify(&signable(room_public, &self.peer, self.at), &self.signature)
            .is_ok()
    }

    /// Neither older than [`MAX_AGE_SECS`] nor dated further ahead than
    /// [`MAX_SKEW_SECS`] at `now` (Unix seconds).
    pub fn is_fresh(&self, now: u64) -> bool {
        self.at.saturating_add(MAX_AGE_SECS) >= now && self.at <= now.saturating_add(MAX_SKEW_SECS)
    }
}

/// The entries a slot should hold after `mine` is written at `now`: mine
/// first, then the others that are fresh, newest first, one per member,
/// at most [`MAX_ENTRIES`] in all (the oldest fall off).
pub fn merge(existing: &[MemberEntry], mine: MemberEntry, now: u64) -> Vec<MemberEntry> {
    let mut others: Vec<MemberEntry> = existing
        .iter()
        .filter(|entry| entry.peer != mine.peer && entry.is_fresh(now))
        .copied()
        .collect();
    others.sort_by(|a, b| b.at.cmp(&a.at).then(a.peer.cmp(&b.peer)));
    let mut seen = std::collections::HashSet::new();
    let mut out = vec![mine];
    seen.insert(mine.peer);
    for entry in others {
        if out.len() >= MAX_ENTRIES {
            break;
        }
        if seen.insert(entry.peer) {
            out.push(entry);
        }
    }
    out
}

/// The entries of a slot without `peer`'s (it left the room).
pub fn without(existing: &[MemberEntry], peer: &PeerId, now: u64) -> Vec<MemberEntry> {
    existing
        .iter()
        .filter(|entry| entry.peer != *peer && entry.is_fresh(now))
        .copied()
        .collect()
}

#[cfg(test)]
#[path = "room_record_tests.rs"]
mod tests;
