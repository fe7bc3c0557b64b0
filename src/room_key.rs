//! The key of a password room, and the tag it puts on the room's messages.
//! Every member derives the same key from the room's password and name, so
//! any member can check that a message's tag was made by someone who held
//! the password: a message of a password room enters history only with a
//! valid tag, whoever forwards it. Pure.
//!
//! The tag is an HMAC, so every member can make one for any body: it keeps
//! out everyone who does not know the password, not a member who does (a
//! member is trusted with the room). Since a tagged message allows an
//! offline guess at the password, the key is derived with PBKDF2 at a cost
//! that makes each guess slow; tagged messages only ever go to peers that
//! proved the password ([`crate::pake`]).

use std::num::NonZeroU32;

use ring::{hmac, pbkdf2};

#[cfg(test)]
use crate::protocol::ROOM_TAG_LEN as TAG_LEN;
use crate::protocol::{ChatBody, MessageError, SignedMessage};
use crate::wire::{self, WireError};

/// PBKDF2-HMAC-SHA256 iterations (OWASP's figure for this PRF): about
/// 0.2 s per derivation on one core; done once per password room, when its
/// password is set.
const ITERATIONS: NonZeroU32 = match NonZeroU32::new(600_000) {
    Some(iterations) => iterations,
    None => panic!("zero iterations"),
};
const SALT_DOMAIN: &[u8] = b"punchgate room key v1";
const TAG_DOMAIN: &str = "punchgate room tag v1";

const DHT_LABEL: &[u8] = b"punchgate room dht v1";

/// A password room's key, and the secret its DHT records are derived from
/// ([`crate::dht::room_record::RoomSpot::from_secret`]): both from one
/// PBKDF2 derivation.
#[derive(Clone)]
pub struct RoomKey {
    tag: hmac::Key,
    dht: [u8; 32],
}

impl std::fmt::Debug for RoomKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("RoomKey([redacted])")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum TagError {
    #[error("it carries no tag of the room's password")]
    Missing,
    #[error("its tag was not made with the room's password")]
    Wrong,
    #[error(transparent)]
    Wire(#[from] WireError),
}

impl RoomKey {
    /// Derives the key of `room` from its password (slow on purpose).
    pub fn derive(room: &str, password: &str) -> Self {
        let mut salt = SALT_DOMAIN.to_vec();
        salt.push(0);
        salt.extend_from_slice(room.as_bytes());
        let mut key = [0u8; 32];
        pbkdf2::derive(
            pbkdf2::PBKDF2_HMAC_SHA256,
            ITERATIONS,
            &salt,
            password.as_bytes(),
            &mut key,
        );
        let dht_tag = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &key), DHT_LABEL);
        let mut dht = [0u8; 32];
        dht.copy_from_slice(dht_tag.as_ref());
        Self {
            tag: hmac::Key::new(hmac::HMAC_SHA256, &key),
            dht,
        }
    }

    /// The secret the room's DHT records are derived from: only someone
    /// who knows the room's name and password has it.
    pub fn dht_secret(&self) -> [u8; 32] {
        self.dht
    }

    /// The tag of `body`.
    pub fn tag(&self, body: &ChatBody) -> Result<Vec<u8>, WireError> {
        let bytes = wire::signing_bytes(TAG_DOMAIN, body)?;
        Ok(hmac::sign(&self.tag, &bytes).as_ref().to_vec())
    }

    /// `message` with the room tag of its body added.
    pub fn tag_message(&self, mut message: SignedMessage) -> Result<SignedMessage, MessageError> {
        message.room_tag = self.tag(&message.body)?;
        Ok(message)
    }

    /// Checks `tag` on `body`, in constant time.
    pub fn check(&self, body: &ChatBody, tag: &[u8]) -> Result<(), TagError> {
        if tag.is_empty() {
            return Err(TagError::Missing);
        }
        let bytes = wire::signing_bytes(TAG_DOMAIN, body)?;
        hmac::verify(&self.tag, &bytes, tag).map_err(|_| TagError::Wrong)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;
    use crate::protocol::MessageId;

    fn body(room: &str) -> ChatBody {
        ChatBody {
            id: MessageId {
                author: Identity::generate().unwrap().peer_id(),
                seq: 1,
            },
            hlc: 1,
            room: room.into(),
            text: "hello".into(),
        }
    }

    #[test]
    fn only_the_password_of_the_room_makes_a_valid_tag() {
        let key = RoomKey::derive("vault", "pw");
        let body = body("vault");
        let tag = key.tag(&body).unwrap();
        assert_eq!(tag.len(), TAG_LEN);
        key.check(&body, &tag).unwrap();
        assert!(matches!(key.check(&body, &[]), Err(TagError::Missing)));
        let guessed = RoomKey::derive("vault", "wrong").tag(&body).unwrap();
        assert!(matches!(key.check(&body, &guessed), Err(TagError::Wrong)));
        // Same password, another room: another key.
        let elsewhere = RoomKey::derive("other", "pw").tag(&body).unwrap();
        assert!(key.check(&body, &elsewhere).is_err());
        // The tag covers the whole body.
        let mut altered = body.clone();
        altered.text = "goodbye".into();
        assert!(key.check(&altered, &tag).is_err());
    }
}
