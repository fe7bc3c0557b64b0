//! Password rooms on a connection: proving the room password to a peer and
//! checking its proof (the exchange itself is [`crate::pake`]). Until a peer
//! has proven the password of a room, it is not a member of that room here:
//! it is sent none of the room's messages, live or by sync, and none of its
//! messages for the room are taken. Both sides start a proof for every
//! password room they share; either exchange succeeding verifies both.
//!
//! Every proof is one online guess by the other end, so guesses are counted
//! where they are made ([`super::guesses`]): a proof is charged to the
//! peer's address when it starts, in either role, and refunded only when it
//! succeeds; one proof per peer, room and role runs at a time; and the
//! initiator confirms first, so a guessing initiator learns nothing before
//! it has committed its confirmation (a guessing responder has committed to
//! its one guess with its SPAKE2 message).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use tokio::time::timeout;

use super::context::Context;
use super::gate::Gate;
use super::guesses::{GuessLimiter, Source, TooManyGuesses};
use super::sync::CatchUp;
use super::Event;
use crate::gate_socket::{canonical, is_relay_addr};
use crate::identity::PeerId;
use crate::pake::{Exchange, PakeError, Secret, Side, EXPORTER_LABEL, EXPORTER_LEN};
use crate::protocol::AuthFrame;
use crate::protocol::StreamKind;
use crate::room_key::RoomKey;
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// Failed proofs one peer may make on one connection before it is dropped.
const MAX_AUTH_FAILURES: u32 = 5;

/// The longest one proof may take, in either role; a proof that takes
/// longer fails (and its guess stays counted).
const AUTH_TIMEOUT: Duration = Duration::from_secs(10);

fn exporter(gate: &Gate, room: &str) -> Result<[u8; EXPORTER_LEN], String> {
    let mut value = [0u8; EXPORTER_LEN];
    gate.connection
        .export_keying_material(&mut value, EXPORTER_LABEL, room.as_bytes())
        .map_err(|_| "the TLS session cannot export keying material".to_string())?;
    Ok(value)
}

/// The key of each password room, derived off the async runtime (slow on
/// purpose: [`RoomKey::derive`]).
pub(super) async fn derive_room_keys(
    passwords: &HashMap<String, Secret>,
) -> HashMap<String, RoomKey> {
    let passwords = passwords.clone();
    tokio::task::spawn_blocking(move || {
        passwords
            .iter()
            .map(|(room, password)| (room.clone(), RoomKey::derive(room, password.expose())))
            .collect()
    })
    .await
    .unwrap_or_default()
}

/// Where a gate's guesses are charged.
fn source_of(gate: &Gate) -> Source {
    let remote = canonical(gate.connection.remote_address());
    Source::of(remote.ip(), is_relay_addr(&remote))
}

/// Proofs in flight, by peer, room and this node's role.
type ProofKey = (PeerId, String, Side);

/// The password proof service. Proven rooms are recorded per peer in the
/// roster; guesses and proofs in flight are its own.
pub(super) struct Auth {
    cx: Context,
    /// Password guesses charged per source address; survives connections.
    guesses: Mutex<GuessLimiter>,
    /// Password proofs in flight.
    proofs: Mutex<HashSet<ProofKey>>,
    /// Run for a peer once it proved a room: the room's history may flow.
    catch_up: Arc<CatchUp>,
}

/// Why a proof could not start.
enum NotStarted {
    /// One for this peer, room and role is running already.
    Running,
    TooManyGuesses(TooManyGuesses),
}

/// A proof in flight, with its guess charged: leaves the in-flight set when
/// dropped, on every path.
struct Proof {
    auth: Arc<Auth>,
    key: ProofKey,
    source: Source,
}

impl Proof {
    /// The proof succeeded: its guess is given back.
    fn succeeded(&self) {
        self.auth.guesses().refund(self.source);
    }
}

impl Drop for Proof {
    fn drop(&mut self) {
        self.auth.proofs().remove(&self.key);
    }
}

impl Auth {
    pub fn new(cx: Context, catch_up: Arc<CatchUp>) -> Self {
        Self {
            cx,
            guesses: Mutex::default(),
            proofs: Mutex::default(),
            catch_up,
        }
    }

    fn guesses(&self) -> MutexGuard<'_, GuessLimiter> {
        self.guesses.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn proofs(&self) -> MutexGuard<'_, HashSet<ProofKey>> {
        self.proofs.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Starts a proof for every password room shared with the gate's peer
    /// that it has not proven yet.
    pub fn authenticate_all(self: &Arc<Self>, gate: &Arc<Gate>) {
        let pending = self.cx.roster().unproven_password_rooms(&gate.peer_id);
        for room in pending {
            self.cx.spawn(self.clone().authenticate(gate.clone(), room));
        }
    }

    /// Registers a proof with the gate's peer and charges its guess.
    fn begin_proof(
        self: &Arc<Self>,
        gate: &Gate,
        room: &str,
        side: Side,
    ) -> Result<Proof, NotStarted> {
        let key = (gate.peer_id, room.to_string(), side);
        let source = source_of(gate);
        let mut proofs = self.proofs();
        if proofs.contains(&key) {
            return Err(NotStarted::Running);
        }
        self.guesses()
            .charge(source, Instant::now())
            .map_err(NotStarted::TooManyGuesses)?;
        proofs.insert(key.clone());
        Ok(Proof {
            auth: self.clone(),
            key,
            source,
        })
    }

    /// Runs a proof for `room` as initiator.
    async fn authenticate(self: Arc<Self>, gate: Arc<Gate>, room: String) {
        let password = self.cx.roster().passwords.get(&room).cloned();
        let Some(password) = password else {
            return;
        };
        let proof = match self.begin_proof(&gate, &room, Side::Initiator) {
            Ok(proof) => proof,
            Err(NotStarted::Running) => return,
            Err(NotStarted::TooManyGuesses(error)) => {
                self.conclude(&gate, &room, Ok(Err(error.to_string())));
                return;
            }
        };
        let exchange = async {
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
            let theirs = match reader.recv::<AuthFrame>().await? {
                Some(AuthFrame::Reply { spake }) => spake,
                Some(AuthFrame::Refused { reason }) => return Ok(Err(reason)),
                _ => return Err(malformed("expected a reply")),
            };
            let keys = match exchange.finish(&theirs) {
                Ok(keys) => keys,
                Err(error) => {
                    let reason = refuse(&mut writer, explain(error)).await?;
                    let _ = writer.get_mut().finish();
                    return Ok(Err(reason));
                }
            };
            // This side commits first: the responder's confirmation comes
            // only after it has checked this one.
            writer
                .send(&AuthFrame::Confirm {
                    confirm: keys.confirmation(Side::Initiator),
                })
                .await?;
            let verdict = match reader.recv::<AuthFrame>().await? {
                Some(AuthFrame::Accepted { confirm }) => {
                    keys.check(Side::Responder, &confirm).map_err(explain)
                }
                Some(AuthFrame::Refused { reason }) => Err(reason),
                _ => return Err(malformed("expected acceptance or refusal")),
            };
            let _ = writer.get_mut().finish();
            Ok(verdict)
        };
        let result = timeout(AUTH_TIMEOUT, exchange)
            .await
            .unwrap_or_else(|_| Ok(Err(no_answer())));
        if matches!(result, Ok(Ok(()))) {
            proof.succeeded();
        }
        drop(proof);
        self.conclude(&gate, &room, result);
    }

    /// Answers a peer's proof for a room.
    pub async fn serve(
        self: &Arc<Self>,
        gate: &Arc<Gate>,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Auth);
        let mut writer = FrameWriter::answering(send, StreamKind::Auth);
        let start = timeout(AUTH_TIMEOUT, reader.recv::<AuthFrame>()).await;
        let Ok(Some(AuthFrame::Start { room, spake })) = start.unwrap_or(Ok(None)) else {
            return Err(malformed("expected a start"));
        };
        let (password, in_room) = {
            let roster = self.cx.roster();
            (
                roster.passwords.get(&room).cloned(),
                roster.rooms.contains(&room),
            )
        };
        let Some(password) = password else {
            writer
                .send(&AuthFrame::Refused {
                    reason: no_password_here(&room),
                })
                .await?;
            if in_room {
                // The peer made a room of ours a password room: say what to do.
                let name = self.cx.name_of(&gate.peer_id);
                self.cx.emit(Event::Info {
                    message: format!(
                        "{name} made #{room} a password room: what you write there no longer reaches {name}; ask for the password and type /password PW"
                    ),
                });
            }
            return Ok(());
        };
        // Counted now, before anything is answered.
        let proof = match self.begin_proof(gate, &room, Side::Responder) {
            Ok(proof) => proof,
            Err(NotStarted::Running) => {
                let reason = format!("a password proof for #{room} is already running");
                writer.send(&AuthFrame::Refused { reason }).await?;
                return Ok(());
            }
            Err(NotStarted::TooManyGuesses(error)) => {
                let reason = error.to_string();
                writer.send(&AuthFrame::Refused { reason }).await?;
                self.count_failure(gate);
                return Ok(());
            }
        };
        let exchange = async {
            let exporter = match exporter(gate, &room) {
                Ok(value) => value,
                Err(reason) => {
                    writer.send(&AuthFrame::Refused { reason }).await?;
                    return Ok(None);
                }
            };
            let (exchange, ours) = Exchange::start(&room, password.expose(), exporter);
            let keys = match exchange.finish(&spake) {
                Ok(keys) => keys,
                Err(error) => return Ok(Some(Err(refuse(&mut writer, explain(error)).await?))),
            };
            writer.send(&AuthFrame::Reply { spake: ours }).await?;
            let verdict = match reader.recv::<AuthFrame>().await? {
                Some(AuthFrame::Confirm { confirm }) => {
                    keys.check(Side::Initiator, &confirm).map_err(explain)
                }
                Some(AuthFrame::Refused { reason }) => return Ok(Some(Err(reason))),
                _ => return Err(malformed("expected a confirmation")),
            };
            let answer = match &verdict {
                Ok(()) => AuthFrame::Accepted {
                    confirm: keys.confirmation(Side::Responder),
                },
                Err(reason) => AuthFrame::Refused {
                    reason: reason.clone(),
                },
            };
            writer.send(&answer).await?;
            Ok(Some(verdict))
        };
        let result = match timeout(AUTH_TIMEOUT, exchange).await {
            Ok(Ok(None)) => return Ok(()),
            Ok(Ok(Some(verdict))) => Ok(verdict),
            Ok(Err(error)) => Err(error),
            Err(_) => Ok(Err(no_answer())),
        };
        if matches!(result, Ok(Ok(()))) {
            proof.succeeded();
        }
        drop(proof);
        self.conclude(gate, &room, result);
        Ok(())
    }

    /// Counts a failed proof on the gate's connection; too many close it.
    fn count_failure(&self, gate: &Arc<Gate>) {
        let failures = {
            let mut roster = self.cx.roster();
            let Some(record) = roster.peers.get_mut(&gate.peer_id) else {
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

    /// Records the outcome of a proof and tells the user.
    fn conclude(
        &self,
        gate: &Arc<Gate>,
        room: &str,
        result: Result<Result<(), String>, WireError>,
    ) {
        let name = self.cx.name_of(&gate.peer_id);
        match result {
            Ok(Ok(())) => {
                let newly = self
                    .cx
                    .roster()
                    .peers
                    .get_mut(&gate.peer_id)
                    .is_some_and(|record| record.verified.insert(room.to_string()));
                if newly {
                    self.cx.emit(Event::Info {
                        message: format!(
                            "{name} and you proved the password of #{room} to each other"
                        ),
                    });
                    // The room's history may now flow both ways, and its
                    // gossip.
                    self.catch_up.catch_up(gate.clone());
                    self.cx
                        .input(super::driver::Input::PeerRooms { peer: gate.peer_id });
                }
            }
            // The peer is in the room without a password: expected while
            // others catch up, not a failure.
            Ok(Err(reason)) if reason == no_password_here(room) => {
                self.cx.emit(Event::Info {
                    message: format!(
                        "{name} has no password for #{room} yet: nothing of #{room} is shared with {name} until they type /password PW"
                    ),
                });
            }
            Ok(Err(reason)) => {
                self.cx.emit(Event::error(format!(
                    "password check for #{room} with {name} failed: {reason}; nothing of #{room} is shared with them"
                )));
                self.count_failure(gate);
            }
            Err(error) => super::gate::GateError::from(error).close(&gate.connection),
        }
    }
}

/// Why a node without the password of `room` refuses a proof; the
/// prover recognises it (the peer is merely not there yet, nothing failed).
fn no_password_here(room: &str) -> String {
    format!("#{room} has no password here")
}

fn no_answer() -> String {
    format!("no answer within {} s", AUTH_TIMEOUT.as_secs())
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

/// Tells the other side why the proof failed; returns the reason.
async fn refuse(writer: &mut FrameWriter<SendStream>, reason: String) -> Result<String, WireError> {
    writer
        .send(&AuthFrame::Refused {
            reason: reason.clone(),
        })
        .await?;
    Ok(reason)
}
