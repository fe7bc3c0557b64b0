//! Node identity: an Ed25519 key pair and the [`PeerId`] derived from it.
//!
//! A `PeerId` *is* the 32-byte Ed25519 public key, so anyone holding an id can
//! check a signature by that peer without asking anyone else (chat messages
//! relayed by third peers rely on this). Its text form is lowercase base32
//! without padding (52 characters, `a-z2-7`), safe to type and to use as a DNS
//! label. The secret key lives in the data directory in an owner-only PKCS#8
//! PEM file; this module never logs or prints it.

use std::fmt;
use std::path::Path;
use std::str::FromStr;

use ring::signature::{Ed25519KeyPair, KeyPair as _, UnparsedPublicKey, ED25519};
use serde::{Deserialize, Serialize};

use crate::home;

/// Length of an Ed25519 public key, and so of a [`PeerId`].
pub const PEER_ID_LEN: usize = 32;
/// Length of an Ed25519 signature.
pub const SIGNATURE_LEN: usize = 64;
/// Length of a peer id's text form.
pub const PEER_ID_TEXT_LEN: usize = 52;
/// Characters of the text form shown where space is short (`/peers`, chat lines).
const SHORT_LEN: usize = 10;

/// The public identity of a node: its Ed25519 public key.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub struct PeerId([u8; PEER_ID_LEN]);

impl PeerId {
    pub fn from_bytes(bytes: [u8; PEER_ID_LEN]) -> Self {
        Self(bytes)
    }

    pub fn as_bytes(&self) -> &[u8; PEER_ID_LEN] {
        &self.0
    }

    /// The first characters of the text form, for display only: never used to
    /// authenticate anything.
    pub fn short(&self) -> String {
        let mut text = self.to_string();
        text.truncate(SHORT_LEN);
        text
    }

    /// Checks an Ed25519 `signature` by this peer over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> Result<(), IdentityError> {
        UnparsedPublicKey::new(&ED25519, &self.0)
            .verify(message, signature)
            .map_err(|_| IdentityError::BadSignature)
    }
}

impl fmt::Display for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(
            &data_encoding::BASE32_NOPAD
                .encode(&self.0)
                .to_ascii_lowercase(),
        )
    }
}

impl fmt::Debug for PeerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "PeerId({})", self.short())
    }
}

impl FromStr for PeerId {
    type Err = IdentityError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        if text.len() != PEER_ID_TEXT_LEN {
            return Err(IdentityError::MalformedPeerId(format!(
                "expected {PEER_ID_TEXT_LEN} characters, got {}",
                text.len()
            )));
        }
        let bytes = data_encoding::BASE32_NOPAD
            .decode(text.to_ascii_uppercase().as_bytes())
            .map_err(|e| IdentityError::MalformedPeerId(e.to_string()))?;
        let bytes: [u8; PEER_ID_LEN] = bytes
            .try_into()
            .map_err(|_| IdentityError::MalformedPeerId("wrong length".into()))?;
        Ok(Self(bytes))
    }
}

#[derive(Debug, thiserror::Error)]
pub enum IdentityError {
    #[error("malformed peer id: {0} (a peer id is 52 characters of a-z and 2-7)")]
    MalformedPeerId(String),
    #[error(
        "signature does not verify against the claimed peer id (a corrupted or forged message)"
    )]
    BadSignature,
    #[error("the identity key file {path} is invalid: {reason}")]
    BadKeyFile { path: String, reason: String },
    #[error("key generation failed: {0}")]
    Generate(String),
    #[error(transparent)]
    Home(#[from] home::HomeError),
}

/// A node's key pair. `Debug` shows only the peer id.
pub struct Identity {
    pkcs8: Vec<u8>,
    signer: Ed25519KeyPair,
    peer_id: PeerId,
}

/// File name of the identity key inside the data directory.
pub const KEY_FILE: &str = "identity.pem";

impl Identity {
    /// A fresh random identity, not stored anywhere.
    pub fn generate() -> Result<Self, IdentityError> {
        let key_pair = rcgen::KeyPair::generate_for(&rcgen::PKCS_ED25519)
            .map_err(|e| IdentityError::Generate(e.to_string()))?;
        Self::from_pkcs8(key_pair.serialize_der())
            .map_err(|e| IdentityError::Generate(e.to_string()))
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> Result<Self, ring::error::KeyRejected> {
        let signer = Ed25519KeyPair::from_pkcs8_maybe_unchecked(&pkcs8)?;
        let mut public = [0u8; PEER_ID_LEN];
        public.copy_from_slice(signer.public_key().as_ref());
        Ok(Self {
            pkcs8,
            signer,
            peer_id: PeerId(public),
        })
    }

    /// Loads the identity of the data directory `home`, creating and storing a
    /// new one (owner-only permissions) on first use.
    pub fn load_or_create(home: &Path) -> Result<Self, IdentityError> {
        let path = home.join(KEY_FILE);
        match home::read_private(&path)? {
            Some(pem) => Self::from_pem(&pem).map_err(|reason| IdentityError::BadKeyFile {
                path: path.display().to_string(),
                reason,
            }),
            None => {
                let identity = Self::generate()?;
                home::write_private(&path, identity.to_pem().as_bytes())?;
                tracing::info!(peer_id = %identity.peer_id, "created a new identity");
                Ok(identity)
            }
        }
    }

    fn to_pem(&self) -> String {
        let body = data_encoding::BASE64.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for line in body.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(line));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        pem
    }

    fn from_pem(pem: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(pem).map_err(|_| "not text".to_string())?;
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        if !text.contains("-----BEGIN PRIVATE KEY-----") {
            return Err("no PRIVATE KEY block".into());
        }
        let der = data_encoding::BASE64
            .decode(body.trim().as_bytes())
            .map_err(|e| format!("bad base64: {e}"))?;
        Self::from_pkcs8(der).map_err(|e| format!("not an Ed25519 PKCS#8 key: {e}"))
    }

    pub fn peer_id(&self) -> PeerId {
        self.peer_id
    }

    /// Signs `message` with the node's key.
    pub fn sign(&self, message: &[u8]) -> [u8; SIGNATURE_LEN] {
        let mut out = [0u8; SIGNATURE_LEN];
        out.copy_from_slice(self.signer.sign(message).as_ref());
        out
    }

    /// The key in the form rcgen and rustls take it (PKCS#8 DER).
    pub(crate) fn pkcs8_der(&self) -> &[u8] {
        &self.pkcs8
    }
}

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Identity")
            .field("peer_id", &self.peer_id)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn peer_id_text_round_trips() {
        let id = Identity::generate().unwrap().peer_id();
        let text = id.to_string();
        assert_eq!(text.len(), PEER_ID_TEXT_LEN);
        assert!(text
            .bytes()
            .all(|b| b.is_ascii_lowercase() || (b'2'..=b'7').contains(&b)));
        assert_eq!(text.parse::<PeerId>().unwrap(), id);
        assert_eq!(text.to_uppercase().parse::<PeerId>().unwrap(), id);
    }

    #[test]
    fn malformed_peer_ids_are_refused() {
        for bad in ["", "abc", &"1".repeat(52), &"a".repeat(53)] {
            assert!(
                matches!(
                    bad.parse::<PeerId>(),
                    Err(IdentityError::MalformedPeerId(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn signatures_verify_only_for_the_signer_and_message() {
        let a = Identity::generate().unwrap();
        let b = Identity::generate().unwrap();
        let sig = a.sign(b"hello");
        a.peer_id().verify(b"hello", &sig).unwrap();
        assert!(a.peer_id().verify(b"hellO", &sig).is_err());
        assert!(b.peer_id().verify(b"hello", &sig).is_err());
        assert!(a.peer_id().verify(b"hello", &sig[..63]).is_err());
    }

    #[test]
    fn identity_persists_with_owner_only_permissions() {
        let dir = tempfile::tempdir().unwrap();
        let first = Identity::load_or_create(dir.path()).unwrap();
        let again = Identity::load_or_create(dir.path()).unwrap();
        assert_eq!(first.peer_id(), again.peer_id());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(dir.path().join(KEY_FILE))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn corrupt_key_file_is_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        home::write_private(&dir.path().join(KEY_FILE), b"garbage").unwrap();
        let err = Identity::load_or_create(dir.path()).unwrap_err();
        assert!(err.to_string().contains("identity key file"), "{err}");
    }
}
