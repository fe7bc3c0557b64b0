//! Password rooms: proving knowledge of a room's password to one peer with
//! SPAKE2, bound to the TLS session between them. Pure: the node moves the
//! messages on an auth stream.
//!
//! Both sides run symmetric SPAKE2 with the password and the room name.
//! Each then sends an HMAC-SHA256, under the SPAKE2 key, of its role and the
//! session's TLS exporter value: equal only if both used the same password
//! *and* sit at the two ends of the same TLS session. Nothing on the wire,
//! including what the tracker could ever see, allows an offline guess: a
//! wrong guess costs one online exchange, and the node limits those.

use ring::hmac;
use spake2::{Ed25519Group, Identity, Password, Spake2};

/// A password held in memory; its `Debug` never shows it, so it cannot leak
/// into logs or error messages.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(text: impl Into<String>) -> Self {
        Self(text.into())
    }

    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Debug for Secret {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Secret([redacted])")
    }
}

/// Length of the TLS exporter value both sides feed in.
pub const EXPORTER_LEN: usize = 32;
/// TLS exporter label (RFC 5705 / 8446 §7.5).
pub const EXPORTER_LABEL: &[u8] = b"EXPORTER-punchgate-room-password";

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum PakeError {
    #[error("the peer's SPAKE2 message is malformed")]
    Malformed,
    #[error("wrong password")]
    WrongPassword,
}

/// Which end of the exchange: they confirm with different labels, so one
/// side's confirmation cannot be reflected back as the other's.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Side {
    Initiator,
    Responder,
}

impl Side {
    fn label(self) -> &'static [u8] {
        match self {
            Side::Initiator => b"punchgate room password: initiator",
            Side::Responder => b"punchgate room password: responder",
        }
    }
}

/// One side's exchange in progress.
pub struct Exchange {
    spake: Spake2<Ed25519Group>,
    exporter: [u8; EXPORTER_LEN],
}

/// The shared key, once both messages are in.
pub struct Confirmed {
    key: hmac::Key,
    exporter: [u8; EXPORTER_LEN],
}

fn identity(room: &str) -> Identity {
    Identity::new(format!("punchgate room {room}").as_bytes())
}

impl Exchange {
    /// Starts an exchange for `room` with `password`; returns the message to
    /// send to the peer.
    pub fn start(room: &str, password: &str, exporter: [u8; EXPORTER_LEN]) -> (Self, Vec<u8>) {
        let (spake, message) = Spake2::<Ed25519Group>::start_symmetric(
            &Password::new(password.as_bytes()),
            &identity(room),
        );
        (Self { spake, exporter }, message)
    }

    /// Takes the peer's message.
    pub fn finish(self, theirs: &[u8]) -> Result<Confirmed, PakeError> {
        let key = self
            .spake
            .finish(theirs)
            .map_err(|_| PakeError::Malformed)?;
        Ok(Confirmed {
            key: hmac::Key::new(hmac::HMAC_SHA256, &key),
            exporter: self.exporter,
        })
    }
}

impl Confirmed {
    /// This side's key confirmation.
    pub fn confirmation(&self, side: Side) -> Vec<u8> {
        let mut data = side.label().to_vec();
        data.extend_from_slice(&self.exporter);
        hmac::sign(&self.key, &data).as_ref().to_vec()
    }

    /// Checks the peer's confirmation (made as `side`), in constant time.
    pub fn check(&self, side: Side, tag: &[u8]) -> Result<(), PakeError> {
        let mut data = side.label().to_vec();
        data.extend_from_slice(&self.exporter);
        hmac::verify(&self.key, &data, tag).map_err(|_| PakeError::WrongPassword)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(
        room: &str,
        a: &str,
        b: &str,
        exporter_a: [u8; 32],
        exporter_b: [u8; 32],
    ) -> (bool, bool) {
        let (ia, ma) = Exchange::start(room, a, exporter_a);
        let (ib, mb) = Exchange::start(room, b, exporter_b);
        let ca = ia.finish(&mb).unwrap();
        let cb = ib.finish(&ma).unwrap();
        let b_accepts = cb
            .check(Side::Initiator, &ca.confirmation(Side::Initiator))
            .is_ok();
        let a_accepts = ca
            .check(Side::Responder, &cb.confirmation(Side::Responder))
            .is_ok();
        (a_accepts, b_accepts)
    }

    #[test]
    fn same_password_same_session_confirms_both_ways() {
        assert_eq!(
            run("r", "hunter2", "hunter2", [7; 32], [7; 32]),
            (true, true)
        );
    }

    #[test]
    fn wrong_password_or_other_room_fails_both_ways() {
        assert_eq!(
            run("r", "hunter2", "hunter3", [7; 32], [7; 32]),
            (false, false)
        );
        let (ia, ma) = Exchange::start("r", "pw", [1; 32]);
        let (ib, mb) = Exchange::start("other room", "pw", [1; 32]);
        let ca = ia.finish(&mb).unwrap();
        let cb = ib.finish(&ma).unwrap();
        assert!(cb
            .check(Side::Initiator, &ca.confirmation(Side::Initiator))
            .is_err());
    }

    #[test]
    fn a_different_tls_session_fails_even_with_the_password() {
        // A man in the middle runs two TLS sessions: their exporters differ.
        assert_eq!(run("r", "pw", "pw", [1; 32], [2; 32]), (false, false));
    }

    #[test]
    fn a_confirmation_cannot_be_reflected() {
        let (ia, ma) = Exchange::start("r", "pw", [1; 32]);
        let (ib, mb) = Exchange::start("r", "pw", [1; 32]);
        let ca = ia.finish(&mb).unwrap();
        let cb = ib.finish(&ma).unwrap();
        // The responder's own tag presented back as the initiator's.
        assert!(cb
            .check(Side::Initiator, &cb.confirmation(Side::Responder))
            .is_err());
        assert!(ca
            .check(Side::Responder, &ca.confirmation(Side::Responder))
            .is_ok());
    }

    #[test]
    fn garbage_spake_messages_are_refused() {
        let (exchange, _) = Exchange::start("r", "pw", [0; 32]);
        assert!(matches!(
            exchange.finish(b"garbage"),
            Err(PakeError::Malformed)
        ));
    }
}
