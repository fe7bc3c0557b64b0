//! Password rooms on a connection: proving the room password to a peer and
//! checking its proof (the exchange itself is [`crate::pake`]). Until a peer
//! has proven the password of a room, it is not a member of that room here:
//! it is sent none of the room's messages, live or by sync, and none of its
//! messages for the room are taken. Both sides start a proof for every
//! password room they share; either exchange succeeding verifies both.

use std::sync::Arc;

use quinn::{RecvStream, SendStream};

use super::gate::Gate;
use super::{Event, Node};
use crate::pake::{Exchange, PakeError, Side, EXPORTER_LABEL, EXPORTER_LEN};
use crate::protocol::AuthFrame;
use crate::protocol::StreamKind;
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// Failed proofs one peer may make on one connection before it is dropped:
/// each failure is one online password guess.
const MAX_AUTH_FAILURES: u32 = 5;

fn exporter(gate: &Gate, room: &str) -> Result<[u8; EXPORTER_LEN], String> {
    let mut value = [0u8; EXPORTER_LEN];
    gate.connection
        .export_keying_material(&mut value, EXPORTER_LABEL, room.as_bytes())
        .map_err(|_| "the TLS session cannot export keying material".to_string())?;
    Ok(value)
}

impl Node {
    /// Password rooms this node is in that `peer` claims to be in.
    pub(super) fn password_rooms_with(&self, peer: &crate::identity::PeerId) -> Vec<String> {
        let state = self.state();
        let Some(record) = state.peers.get(peer) else {
            return Vec::new();
        };
        state
            .passwords
            .keys()
            .filter(|room| state.rooms.contains(*room) && record.rooms.contains(*room))
            .cloned()
            .collect()
    }

    /// Starts a proof for every password room shared with the gate's peer
    /// that it has not proven yet.
    pub(super) fn authenticate_all(&self, gate: &Arc<Gate>) {
        let pending: Vec<String> = {
            let rooms = self.password_rooms_with(&gate.peer_id);
            let state = self.state();
            let verified = state
                .peers
                .get(&gate.peer_id)
                .map(|r| r.verified.clone())
                .unwrap_or_default();
            rooms
                .into_iter()
                .filter(|room| !verified.contains(room))
                .collect()
        };
        for room in pending {
            tokio::spawn(self.clone().authenticate(gate.clone(), room));
        }
    }

    /// Runs a proof for `room` as initiator.
    async fn authenticate(self, gate: Arc<Gate>, room: String) {
        let Some(password) = self.state().passwords.get(&room).cloned() else {
            return;
        };
        let result: Result<Result<(), String>, WireError> = async {
            let (send, recv) = gate
                .connection
                .open_bi()
                .await
                .map_err(|e| WireError::Io(e.into()))?;
            let mut writer = FrameWriter::open(send, StreamKind::Auth).await?;
            let mut reader = FrameReader::new(recv, StreamKind::Auth);
            let exporter = match exporter(&gate, &room) {
                Ok(value) => value,
                Err(reason) => return Ok(Err(reason)),
            };
            let (exchange, spake) = Exchange::start(&room, password.expose(), exporter);
            writer
                .send(&AuthFrame::Start {
                    room: room.clone(),
                    spake,
                })
                .await?;
            let (theirs, confirm) = match reader.recv::<AuthFrame>().await? {
                Some(AuthFrame::Reply { spake, confirm }) => (spake, confirm),
                Some(AuthFrame::Refused { reason }) => return Ok(Err(reason)),
                _ => return Err(malformed("expected a reply")),
            };
            let outcome = exchange
                .finish(&theirs)
                .and_then(|keys| keys.check(Side::Responder, &confirm).map(|()| keys));
            match outcome {
                Ok(keys) => {
                    writer
                        .send(&AuthFrame::Confirm {
                            confirm: keys.confirmation(Side::Initiator),
                        })
                        .await?;
                    let _ = writer.get_mut().finish();
                    Ok(Ok(()))
                }
                Err(error) => {
                    let reason = explain(error);
                    writer
                        .send(&AuthFrame::Refused {
                            reason: reason.clone(),
                        })
                        .await?;
                    let _ = writer.get_mut().finish();
                    Ok(Err(reason))
                }
            }
        }
        .await;
        self.conclude(&gate, &room, result);
    }

    /// Answers a peer's proof for a room.
    pub(super) async fn serve_auth(
        &self,
        gate: &Arc<Gate>,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Auth);
        let mut writer = FrameWriter::answering(send, StreamKind::Auth);
        let Some(AuthFrame::Start { room, spake }) = reader.recv::<AuthFrame>().await? else {
            return Err(malformed("expected a start"));
        };
        let password = self.state().passwords.get(&room).cloned();
        let Some(password) = password else {
            let reason = format!("#{room} has no password here");
            writer.send(&AuthFrame::Refused { reason }).await?;
            return Ok(());
        };
        let exporter = match exporter(gate, &room) {
            Ok(value) => value,
            Err(reason) => {
                writer.send(&AuthFrame::Refused { reason }).await?;
                return Ok(());
            }
        };
        let (exchange, ours) = Exchange::start(&room, password.expose(), exporter);
        let keys = match exchange.finish(&spake) {
            Ok(keys) => keys,
            Err(error) => {
                let reason = explain(error);
                writer
                    .send(&AuthFrame::Refused {
                        reason: reason.clone(),
                    })
                    .await?;
                self.conclude(gate, &room, Ok(Err(reason)));
                return Ok(());
            }
        };
        writer
            .send(&AuthFrame::Reply {
                spake: ours,
                confirm: keys.confirmation(Side::Responder),
            })
            .await?;
        let verdict = match reader.recv::<AuthFrame>().await? {
            Some(AuthFrame::Confirm { confirm }) => {
                keys.check(Side::Initiator, &confirm).map_err(explain)
            }
            Some(AuthFrame::Refused { reason }) => Err(reason),
            _ => return Err(malformed("expected a confirmation")),
        };
        self.conclude(gate, &room, Ok(verdict));
        Ok(())
    }

    /// Records the outcome of a proof and tells the user.
    fn conclude(
        &self,
        gate: &Arc<Gate>,
        room: &str,
        result: Result<Result<(), String>, WireError>,
    ) {
        let name = self.name_of(&gate.peer_id);
        match result {
            Ok(Ok(())) => {
                let newly = self
                    .state()
                    .peers
                    .get_mut(&gate.peer_id)
                    .is_some_and(|record| record.verified.insert(room.to_string()));
                if newly {
                    self.emit(Event::Info {
                        message: format!(
                            "{name} and you proved the password of #{room} to each other"
                        ),
                    });
                    // The room's history may now flow both ways.
                    self.catch_up(gate.clone());
                }
            }
            Ok(Err(reason)) => {
                self.emit(Event::error(format!(
                    "password check for #{room} with {name} failed: {reason}; nothing of #{room} is shared with them"
                )));
                let failures = {
                    let mut state = self.state();
                    let Some(record) = state.peers.get_mut(&gate.peer_id) else {
                        return;
                    };
                    record.auth_failures += 1;
                    record.auth_failures
                };
                if failures > MAX_AUTH_FAILURES {
                    gate.connection.close(
                        CloseCode::Refused.varint(),
                        b"too many failed password proofs",
                    );
                }
            }
            Err(error) => super::gate::GateError::from(error).close(&gate.connection),
        }
    }
}

fn explain(error: PakeError) -> String {
    match error {
        PakeError::WrongPassword => {
            "wrong password (the two sides hold different passwords)".into()
        }
        PakeError::Malformed => "malformed password proof".into(),
    }
}

fn malformed(reason: &str) -> WireError {
    WireError::Malformed {
        kind: "auth",
        reason: reason.to_string(),
    }
}
