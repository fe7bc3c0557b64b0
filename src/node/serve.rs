//! Serving a gate: installing it once the node task chose it, the streams
//! the peer opens (chat, sync, auth, files, bench) each handed to its
//! service, the control stream, and reporting the gate's end to the node
//! task. Everything after installing runs on [`Services`]: the services
//! and their narrow context, not the node.

use std::sync::Arc;
use std::time::Instant;

use quinn::{RecvStream, SendStream};
use tokio::time::timeout;

use super::auth::Auth;
use super::chat::Chat;
use super::context::Context;
use super::driver::{Input, Ready};
use super::files::Files;
use super::gate::{self, describe_close, Gate, GateError, Greeted};
use super::manager::{GateEnd, GateFacts};
use super::sync::{CatchUp, HistorySync};
use super::{events, path_died, path_of, Event, Node, PeerRecord, PeerStatus};
use crate::identity::PeerId;
use crate::protocol::{validate_label, ControlMessage, StreamKind, MAX_ROOMS, MAX_ROOM_LEN};
use crate::wire::{CloseCode, FrameReader, WireError};

/// The handlers of a gate's streams, one service per stream kind, with
/// the context they share.
#[derive(Clone)]
pub(super) struct Services {
    pub cx: Context,
    pub chat: Arc<Chat>,
    pub sync: Arc<HistorySync>,
    pub auth: Arc<Auth>,
    pub files: Arc<Files>,
    pub catch_up: Arc<CatchUp>,
    /// Whether bench streams are answered (`bench serve`).
    pub bench: bool,
}

impl Node {
    /// The manager's `Install`: makes a greeted connection the peer's gate
    /// (`replaces` is the gate it takes over from, if any) and starts
    /// serving it. Returns the gate.
    pub(super) fn install(&self, ready: Ready, replaces: Option<GateFacts>) -> Arc<Gate> {
        let Ready {
            greeted,
            started,
            handshake,
            dialed,
            phases,
        } = ready;
        let Greeted {
            gate,
            greeting,
            control,
        } = greeted;
        let gate = Arc::new(gate);
        let peer = gate.peer_id;
        {
            let mut roster = self.roster();
            let record = roster
                .peers
                .entry(peer)
                .or_insert_with(|| PeerRecord::new(greeting.name.clone()));
            record.name = greeting.name.clone();
            // What it says, with what the trackers list (its hello may have
            // left before its join was done).
            record.rooms = greeting.rooms.iter().cloned().collect();
            record
                .rooms
                .extend(record.listed_at.iter().map(|(room, _)| room.clone()));
            // Password proofs belong to a connection.
            record.verified.clear();
            record.auth_failures = 0;
            record.last_seen = Some(Instant::now());
            record.asked_at = None;
            record.gate = Some(gate.clone());
            record.status = PeerStatus::Connected;
        }
        self.remember_name(peer, &greeting.name);
        let path = path_of(&gate.connection);
        let remote = self.shown_remote(&gate.connection);
        // Punches waiting for this peer's gate stop.
        self.inner.gate_installed.notify_waiters();
        let ipv6 = crate::gate_socket::canonical(gate.connection.remote_address()).is_ipv6();
        match replaces {
            // Relayed to direct, or IPv4 to IPv6.
            Some(old) if old.path != path || old.ipv6 != ipv6 => self.emit(Event::Path {
                peer_id: peer.to_string(),
                name: greeting.name,
                path,
                remote,
            }),
            // The same path again (a reconnect that replaced a gate the
            // peer had closed as a duplicate): nothing for the user.
            Some(_) => {}
            None => self.emit(Event::Connected {
                peer_id: peer.to_string(),
                name: greeting.name,
                path,
                remote,
                rtt_ms: events::millis(gate.connection.rtt()),
                setup_ms: events::millis(started.elapsed()),
                handshake_ms: handshake.map(events::millis),
                dialed,
                phases,
            }),
        }
        let services = &self.inner.services;
        services
            .cx
            .spawn(services.clone().read_control(gate.clone(), control));
        services.cx.spawn(services.clone().serve_gate(gate.clone()));
        services.auth.authenticate_all(&gate);
        gate
    }

    /// Sends `bytes` on a bench stream to a connected `peer` running
    /// `bench serve`; returns the count it reports back.
    pub async fn bench_send(&self, peer: PeerId, bytes: u64) -> Result<u64, String> {
        // When both sides dialed, the connection in use may close as the
        // other's duplicate: the run starts over on the one that stays.
        let mut tries = 0;
        loop {
            let gate = self
                .roster()
                .open_gate(&peer)
                .ok_or("not connected to that peer")?;
            match Self::bench_send_on(&gate, bytes).await {
                Err(_) if gate.ended_as() == Some(CloseCode::Duplicate) && tries < 2 => {
                    tries += 1;
                    self.connected_gate(peer).await.map_err(|e| e.to_string())?;
                }
                result => return result,
            }
        }
    }

    async fn bench_send_on(gate: &Gate, bytes: u64) -> Result<u64, String> {
        let (mut send, mut recv) = gate.connection.open_bi().await.map_err(|e| e.to_string())?;
        send.write_all(&crate::wire::header(StreamKind::Bench))
            .await
            .map_err(|e| e.to_string())?;
        write_zeros(&mut send, bytes).await?;
        let mut count = [0u8; 8];
        recv.read_exact(&mut count)
            .await
            .map_err(|e| format!("no count back (is the peer running `bench serve`?): {e}"))?;
        Ok(u64::from_be_bytes(count))
    }
}

impl Services {
    /// Accepts the peer's streams until the connection ends, then reports it.
    async fn serve_gate(self, gate: Arc<Gate>) {
        let connection = gate.connection.clone();
        let error = loop {
            tokio::select! {
                stream = connection.accept_bi() => match stream {
                    Ok((send, recv)) => {
                        self.cx.spawn(self.clone().serve_stream(gate.clone(), send, recv));
                    }
                    Err(error) => break error,
                },
                stream = connection.accept_uni() => match stream {
                    Ok(mut recv) => {
                        // No stream kind is unidirectional yet.
                        let connection = connection.clone();
                        self.cx.spawn(async move {
                            let error = match timeout(gate::GREETING_TIMEOUT, crate::wire::read_header::<StreamKind>(&mut recv)).await {
                                Ok(Ok(kind)) => WireError::UnexpectedKind { expected: "bidirectional", got: kind.name() },
                                Ok(Err(error)) => error,
                                Err(_) => WireError::Truncated("stream header"),
                            };
                            GateError::from(error).close(&connection);
                        });
                    }
                    Err(error) => break error,
                },
            }
        };
        let reason = describe_close(&error);
        let end = match gate.ended_as() {
            Some(CloseCode::Duplicate) => GateEnd::Duplicate,
            Some(CloseCode::Unneeded) => GateEnd::Unneeded,
            _ if path_died(&error) => GateEnd::PathDied(reason),
            _ => GateEnd::Closed(reason),
        };
        self.cx.input(Input::GateClosed {
            peer: gate.peer_id,
            gate: connection.stable_id(),
            end,
        });
    }

    /// A stream the peer opened: chat messages to take, or a history sync
    /// to answer.
    async fn serve_stream(self, gate: Arc<Gate>, send: SendStream, mut recv: RecvStream) {
        let result = async {
            let kind = timeout(
                gate::GREETING_TIMEOUT,
                crate::wire::read_header::<StreamKind>(&mut recv),
            )
            .await
            .map_err(|_| WireError::Truncated("stream header"))??;
            match kind {
                StreamKind::Chat => self.chat.serve(&gate, send, recv).await,
                StreamKind::Sync => self.sync.serve(&gate, send, recv).await,
                StreamKind::Auth => self.auth.serve(&gate, send, recv).await,
                StreamKind::Bench if self.bench => serve_bench(send, recv).await,
                StreamKind::Manifest => self.files.serve_manifest(send, recv).await,
                StreamKind::Chunks => self.files.serve_chunks(&gate, send, recv).await,
                other => Err(WireError::UnexpectedKind {
                    expected: "chat or sync",
                    got: other.name(),
                }),
            }
        }
        .await;
        if let Err(error) = result {
            GateError::from(error).close(&gate.connection);
        }
    }

    /// Reads the peer's control stream: goodbye, ping, room changes.
    async fn read_control(self, gate: Arc<Gate>, mut reader: FrameReader<RecvStream>) {
        loop {
            let message = match reader.recv::<ControlMessage>().await {
                Ok(Some(message)) => message,
                Ok(None) => return,
                Err(error) => {
                    GateError::from(error).close(&gate.connection);
                    return;
                }
            };
            match message {
                ControlMessage::Goodbye { reason } => {
                    tracing::debug!(peer = %gate.peer_id.short(), %reason, "goodbye");
                    gate.connection
                        .close(CloseCode::Normal.varint(), reason.as_bytes());
                    return;
                }
                ControlMessage::Ping { nonce } => {
                    let _ = gate.send_control(&ControlMessage::Pong { nonce }).await;
                }
                ControlMessage::Pong { .. } => {}
                ControlMessage::Rooms { rooms } => {
                    let valid = rooms.len() <= MAX_ROOMS
                        && rooms
                            .iter()
                            .all(|r| validate_label("room", r, MAX_ROOM_LEN).is_ok());
                    if !valid {
                        GateError::BadGreeting("invalid room list".into()).close(&gate.connection);
                        return;
                    }
                    let changes = self
                        .cx
                        .roster()
                        .set_peer_rooms(&gate.peer_id, rooms.into_iter().collect());
                    self.cx.member_changes(&gate.peer_id, changes);
                    // A newly shared room has history to catch up on, or a
                    // password to prove first.
                    self.auth.authenticate_all(&gate);
                    self.catch_up.catch_up(gate.clone());
                    self.cx.input(Input::PeerRooms { peer: gate.peer_id });
                }
                ControlMessage::Gossip { room, control } => {
                    // Checked against the rooms the peer shares (and proved)
                    // by the node task.
                    self.cx.input(Input::Gossip {
                        peer: gate.peer_id,
                        room,
                        control,
                    });
                }
                ControlMessage::Hello { .. } => {
                    GateError::BadGreeting("a second hello".into()).close(&gate.connection);
                    return;
                }
                ControlMessage::Offer(offer) => {
                    if let Err(reason) = self.files.take_offer(&gate, offer) {
                        let reason = format!("invalid offer: {reason}");
                        GateError::from(WireError::Malformed {
                            kind: "control",
                            reason,
                        })
                        .close(&gate.connection);
                        return;
                    }
                }
            }
        }
    }
}

/// Reads a bench stream to its end and answers with the byte count.
async fn serve_bench(mut send: SendStream, mut recv: RecvStream) -> Result<(), WireError> {
    let mut total = 0u64;
    while let Some(chunk) = recv
        .read_chunk(usize::MAX, true)
        .await
        .map_err(|e| WireError::Io(e.into()))?
    {
        total += chunk.bytes.len() as u64;
    }
    send.write_all(&total.to_be_bytes())
        .await
        .map_err(|e| WireError::Io(e.into()))?;
    let _ = send.finish();
    Ok(())
}

/// Writes `bytes` of zeros to `send` in 1 MiB writes, then finishes it.
pub async fn write_zeros(send: &mut quinn::SendStream, bytes: u64) -> Result<(), String> {
    let buffer = vec![0u8; 1 << 20];
    let mut left = bytes;
    while left > 0 {
        let n = left.min(buffer.len() as u64) as usize;
        send.write_all(&buffer[..n])
            .await
            .map_err(|e| e.to_string())?;
        left -= n as u64;
    }
    send.finish().map_err(|e| e.to_string())
}
