//! Chat on a gate: posting (sign, commit, hand to the connection manager,
//! which sends it to every connected member and resends it on a new path
//! until acknowledged), the ordered chat writer of each gate, taking the
//! peer's messages (verify, commit, acknowledge, show), and the history.
//! The [`Chat`] service owns the clock, the message sequence and the
//! acknowledgements awaited; it sees the rest of the node only through its
//! [`Context`].

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use quinn::{RecvStream, SendStream};
use tokio::sync::mpsc;
use tokio::time::timeout;

use super::context::Context;
use super::driver::Input;
use super::gate::{Gate, GateError};
use super::roster::PeerRecord;
use super::{dm_room, events, now_ms, Event, Node, NodeError};
use crate::hlc::{self, Hlc};
use crate::identity::{Identity, PeerId};
use crate::protocol::StreamKind;
use crate::protocol::{ChatBody, ChatFrame, MessageId, SignedMessage};
use crate::store::{Store, StoreError, Stored};
use crate::wire::{FrameReader, FrameWriter, WireError};

/// A sent message waiting for acknowledgements.
struct Outgoing {
    sent_at: Instant,
    waiting_for: HashSet<PeerId>,
}

/// Sent messages whose acknowledgements are still awaited, at most.
const OUTGOING_CAPACITY: usize = 10_000;

/// Messages taken by sync that are younger than this are passed on
/// through the room's gossip too.
pub(super) const FORWARD_FRESH_MS: u64 = 120_000;

/// The chat service: signs and commits what this node says, takes what
/// peers say, and tracks acknowledgements.
pub(super) struct Chat {
    cx: Context,
    identity: Arc<Identity>,
    /// This node's display name.
    name: String,
    /// Durable history.
    store: Arc<Store>,
    /// This node's hybrid logical clock (restored from the store).
    clock: Mutex<Hlc>,
    next_seq: AtomicU64,
    outgoing: Mutex<HashMap<MessageId, Outgoing>>,
    /// How long one chat frame may take to write before it is reported
    /// pending.
    send_timeout: Duration,
    /// Rooms with at most this many other members are a full mesh: a member
    /// not connected there is pending. In a larger room the gossip carries
    /// messages to members this node is not connected to.
    full_mesh_up_to: usize,
}

impl Node {
    /// Sends `text` to the current room, or privately to the peer
    /// [`Node::switch`] chose. See [`Chat::post`].
    pub async fn say(&self, text: &str) -> Result<MessageId, NodeError> {
        let talking_to = self.roster().talking_to;
        if let Some(peer) = talking_to {
            let room = dm_room(&self.peer_id(), &peer);
            return self.inner.services.chat.post(room, text).await;
        }
        let room = self.current_room()?;
        self.inner.services.chat.post(room, text).await
    }

    /// Sends `text` to `room` (joined), whatever the current room is: for
    /// an interface that shows several rooms at once.
    pub async fn say_in(&self, room: &str, text: &str) -> Result<MessageId, NodeError> {
        let room = self.joined_room(room)?;
        self.inner.services.chat.post(room, text).await
    }

    /// `/msg`: sends `text` to one peer only (by name, id prefix or id), in
    /// the private room of the two.
    pub async fn direct_message(&self, to: &str, text: &str) -> Result<MessageId, NodeError> {
        let peer = self.resolve_peer(to)?;
        let room = dm_room(&self.peer_id(), &peer);
        self.inner.services.chat.post(room, text).await
    }

    /// `/history [N]`: the current room's last `count` messages, in order
    /// (the private room of the peer [`Node::switch`] chose, if any).
    pub async fn history(&self, count: usize) -> Result<(), NodeError> {
        let talking_to = self.roster().talking_to;
        let room = match talking_to {
            Some(peer) => dm_room(&self.peer_id(), &peer),
            None => self.current_room()?,
        };
        self.inner.services.chat.history(room, count).await
    }

    /// `/history [N]` of `room` (joined), whatever the current room is.
    pub async fn history_in(&self, room: &str, count: usize) -> Result<(), NodeError> {
        let room = self.joined_room(room)?;
        self.inner.services.chat.history(room, count).await
    }

    /// Who plain lines go to privately (see [`Node::switch`]), as
    /// `NAME~ID` with the id's first characters; `None`: the current room.
    pub fn talking_to(&self) -> Option<String> {
        let roster = self.roster();
        let peer = roster.talking_to?;
        let id = peer.to_string();
        Some(format!(
            "{}~{}",
            roster.name_of(&peer),
            id.get(..6).unwrap_or(&id)
        ))
    }

    /// `/switch PEER`: plain lines go privately to `PEER` (a name, id
    /// prefix or id) from now on; `/switch` alone (`None`): back to the
    /// current room. Answers with an [`Event::Switched`].
    pub fn switch(&self, to: Option<&str>) -> Result<(), NodeError> {
        let peer = to
            .map(|what| match self.resolve_peer(what) {
                Err(NodeError::UnknownPeer(what)) => Err(NodeError::Invalid(format!(
                    "no peer named {what:?} is known; /peers lists them"
                ))),
                other => other,
            })
            .transpose()?;
        if peer == Some(self.peer_id()) {
            return Err(NodeError::SelfConnect);
        }
        let room = {
            let mut roster = self.roster();
            roster.talking_to = peer;
            roster.rooms.last().cloned()
        };
        self.emit(Event::Switched {
            peer_id: peer.map(|p| p.to_string()),
            name: peer.map(|p| self.name_of(&p)),
            room,
        });
        Ok(())
    }
}

impl Chat {
    pub fn new(
        cx: Context,
        identity: Arc<Identity>,
        name: String,
        store: Arc<Store>,
        clock: Hlc,
        next_seq: u64,
        send_timeout: Duration,
    ) -> Self {
        Self {
            cx,
            identity,
            name,
            store,
            clock: Mutex::new(clock),
            next_seq: AtomicU64::new(next_seq),
            outgoing: Mutex::default(),
            send_timeout,
            full_mesh_up_to: usize::MAX,
        }
    }

    /// See `full_mesh_up_to`: the rooms' gossip's active view.
    pub fn with_full_mesh_up_to(mut self, members: usize) -> Self {
        self.full_mesh_up_to = members;
        self
    }

    /// The durable history.
    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn clock(&self) -> MutexGuard<'_, Hlc> {
        self.clock.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn outgoing(&self) -> MutexGuard<'_, HashMap<MessageId, Outgoing>> {
        self.outgoing.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Signs `text` for `room`, commits it to this node's history, and
    /// writes it to every connected member. Acknowledgements arrive as
    /// [`Event::Delivered`]; members not connected (listed as pending) get
    /// it on their next connection, and by history sync in any case.
    pub async fn post(&self, room: String, text: &str) -> Result<MessageId, NodeError> {
        let (id, hlc) = {
            let mut clock = self.clock();
            let seq = self.next_seq.fetch_add(1, Ordering::Relaxed);
            let id = MessageId {
                author: self.cx.me,
                seq,
            };
            (id, clock.tick(now_ms()))
        };
        let body = ChatBody {
            id,
            hlc,
            room: room.clone(),
            text: text.to_string(),
        };
        let mut message = SignedMessage::sign(&self.identity, body)?;
        let key = self.cx.roster().room_keys.get(&room).cloned();
        if let Some(key) = key {
            message = key.tag_message(message)?;
        }
        // Durable before anyone hears of it: a crash cannot unsay it, and
        // sync can deliver it later.
        let stored = self
            .store_messages(vec![message.clone()], Some(id.seq + 1))
            .await?;
        if let Some(Stored::Refused(reason)) = stored.first() {
            return Err(NodeError::HistoryFull {
                room,
                reason: *reason,
            });
        }
        let (recipients, pending, members) = {
            let roster = self.cx.roster();
            let members: Vec<(&PeerId, &PeerRecord)> = roster
                .peers
                .iter()
                .filter(|(id, _)| roster.takes_part(&self.cx.me, id, &room))
                .collect();
            let (connected, offline): (Vec<_>, Vec<_>) = members
                .iter()
                .partition(|(_, r)| r.gate.as_ref().is_some_and(|g| g.is_open()));
            let recipients = connected.len();
            let gossiped = members.len() > self.full_mesh_up_to && !room.starts_with('@');
            let pending: Vec<String> = if gossiped {
                Vec::new()
            } else {
                offline.iter().map(|(_, r)| r.name.clone()).collect()
            };
            let members: Vec<PeerId> = members.iter().map(|(id, _)| **id).collect();
            (recipients, pending, members)
        };
        if !members.is_empty() {
            self.await_acks(id, &members);
        }
        self.cx.emit(Event::Sent {
            id: id.to_string(),
            room,
            text: text.to_string(),
            peers: recipients,
            pending,
        });
        // The manager sends it over each connected member's gate, in order,
        // and again over a new gate until the member acknowledges it; a
        // member being connected gets it first thing on its new gate.
        self.cx.input(Input::Posted {
            message,
            recipients: members,
        });
        Ok(id)
    }

    /// Notes that `members` owe an acknowledgement of message `id`.
    fn await_acks(&self, id: MessageId, members: &[PeerId]) {
        let mut outgoing = self.outgoing();
        if outgoing.len() >= OUTGOING_CAPACITY {
            // Peers that never acknowledge must not grow this forever.
            let oldest = outgoing
                .iter()
                .min_by_key(|(_, o)| o.sent_at)
                .map(|(id, _)| *id);
            if let Some(oldest) = oldest {
                outgoing.remove(&oldest);
            }
        }
        outgoing.insert(
            id,
            Outgoing {
                sent_at: Instant::now(),
                waiting_for: members.iter().copied().collect(),
            },
        );
    }

    /// Commits messages to the history, within its quotas; returns what
    /// became of each.
    async fn store_messages(
        &self,
        messages: Vec<SignedMessage>,
        next_seq: Option<u64>,
    ) -> Result<Vec<Stored>, NodeError> {
        let store = self.store.clone();
        let clock = self.clock().last();
        let fresh = tokio::task::spawn_blocking(move || store.insert(&messages, next_seq, clock))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(fresh)
    }

    /// Reports a message as an [`Event::Message`].
    fn show(&self, message: &SignedMessage, history: bool) {
        self.cx.emit(self.message_event(message, history));
    }

    /// `message` as the user sees it: its author by name.
    fn message_event(&self, message: &SignedMessage, history: bool) -> Event {
        let body = &message.body;
        let from_name = if body.id.author == self.cx.me {
            self.name.clone()
        } else {
            self.cx.name_of(&body.id.author)
        };
        Event::Message {
            id: body.id.to_string(),
            from: body.id.author.to_string(),
            from_name,
            room: body.room.clone(),
            text: body.text.clone(),
            ts: hlc::millis_of(body.hlc),
            history,
        }
    }

    /// `room`'s last `count` messages, oldest first, as
    /// [`Event::Message`]s with `history: true`.
    pub async fn history_events(
        &self,
        room: String,
        count: usize,
    ) -> Result<Vec<Event>, NodeError> {
        let store = self.store.clone();
        let messages = tokio::task::spawn_blocking(move || store.history(&room, count))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(messages
            .iter()
            .map(|message| self.message_event(message, true))
            .collect())
    }

    /// Shows `room`'s last `count` messages, in order.
    pub async fn history(&self, room: String, count: usize) -> Result<(), NodeError> {
        for event in self.history_events(room, count).await? {
            self.cx.emit(event);
        }
        Ok(())
    }

    /// Takes the peer's chat messages, acknowledging each once it is on disk.
    pub async fn serve(
        &self,
        gate: &Gate,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Chat);
        let mut writer = FrameWriter::answering(send, StreamKind::Chat);
        while let Some(frame) = reader.recv::<ChatFrame>().await? {
            let ChatFrame::Message(message) = frame else {
                return Err(WireError::Malformed {
                    kind: "chat",
                    reason: "only messages travel this way".into(),
                });
            };
            let id = message.body.id;
            let (verdict, new) = self.take(vec![message], gate.peer_id).await;
            // New here: the room's gossip passes it on.
            for message in new {
                self.cx.input(Input::Received {
                    message,
                    from: gate.peer_id,
                });
            }
            let answer = match verdict.into_iter().next() {
                Some(Ok(())) => ChatFrame::Ack(id),
                Some(Err(reason)) => ChatFrame::Reject { id, reason },
                None => continue,
            };
            writer.send(&answer).await?;
        }
        Ok(())
    }

    /// Takes messages that arrived from `via` (live or by sync): keeps those
    /// whose signature verifies against their author, whose room this node
    /// is in and whose timestamp is not too far ahead ([`hlc::MAX_AHEAD_MS`]),
    /// commits them to disk, then shows the new ones in clock
    /// order. Returns, per message, `Ok` (stored, or already had it) or why
    /// it was refused. Only after this returns may a message be acknowledged.
    #[cfg(test)]
    pub async fn take_messages(
        &self,
        messages: Vec<SignedMessage>,
        via: PeerId,
    ) -> Vec<Result<(), String>> {
        self.take(messages, via).await.0
    }

    /// Takes messages pulled from `via` by history sync
    /// ([`Chat::take_messages`]); the fresh ones among those new here (less
    /// than [`FORWARD_FRESH_MS`] old) go on through the room's gossip like
    /// live ones, so a message its author posted before it had neighbors,
    /// or one from the other side of a healed split, spreads at once rather
    /// than one repair round per hop.
    pub async fn take_synced(&self, messages: Vec<SignedMessage>, via: PeerId) {
        let (_, new) = self.take(messages, via).await;
        let now = now_ms();
        for message in new {
            let age = now.saturating_sub(hlc::millis_of(message.body.hlc));
            if age < FORWARD_FRESH_MS {
                self.cx.input(Input::Received { message, from: via });
            }
        }
    }

    /// [`Chat::take_messages`], also returning the messages that were new
    /// here.
    async fn take(
        &self,
        messages: Vec<SignedMessage>,
        via: PeerId,
    ) -> (Vec<Result<(), String>>, Vec<SignedMessage>) {
        let mut fresh = Vec::new();
        let mut verdicts = Vec::with_capacity(messages.len());
        let mut accepted = Vec::new();
        let mut reported: Option<(usize, String)> = None;
        for message in messages {
            let verdict = match self.admit(&message, &via) {
                Ok(()) => {
                    self.clock().observe(message.body.hlc, now_ms());
                    if let Some(record) = self.cx.roster().peers.get_mut(&via) {
                        record.last_seen = Some(Instant::now());
                    }
                    accepted.push(message);
                    Ok(())
                }
                Err((reason, report)) => {
                    if report {
                        reported.get_or_insert((0, reason.clone())).0 += 1;
                    }
                    Err(reason)
                }
            };
            verdicts.push(verdict);
        }
        // One report per batch, not one per message.
        if let Some((count, reason)) = reported {
            let via_name = self.cx.name_of(&via);
            let text = match count {
                1 => format!("refused a message from {via_name}: {reason}"),
                _ => {
                    format!("refused {count} messages from {via_name}, the first because {reason}")
                }
            };
            self.cx.peer_error(via, "refused messages", text);
        }
        if accepted.is_empty() {
            return (verdicts, fresh);
        }
        match self.store_messages(accepted.clone(), None).await {
            Ok(outcomes) => {
                let mut new: Vec<&SignedMessage> = Vec::new();
                let mut refused = None;
                let mut verdicts_of_accepted = verdicts.iter_mut().filter(|v| v.is_ok());
                for (message, outcome) in accepted.iter().zip(outcomes) {
                    let verdict = verdicts_of_accepted.next();
                    match outcome {
                        Stored::New => new.push(message),
                        Stored::Known => {}
                        Stored::Refused(reason) => {
                            let (count, _) = refused.get_or_insert((0, reason));
                            *count += 1;
                            if let Some(verdict) = verdict {
                                *verdict = Err(format!("not stored: {reason}"));
                            }
                        }
                    }
                }
                new.sort_by_key(|m| m.body.hlc);
                for message in new {
                    self.show(message, false);
                    fresh.push(message.clone());
                }
                // One report per batch, not one per message.
                if let Some((count, reason)) = refused {
                    let via_name = self.cx.name_of(&via);
                    let text =
                        format!("did not store {count} message(s) from {via_name}: {reason}");
                    self.cx.peer_error(via, "unstored messages", text);
                }
            }
            Err(error) => {
                // Not on disk, so not acknowledged: the sender keeps it pending.
                self.cx
                    .emit(Event::error(format!("cannot store messages: {error}")));
                for verdict in verdicts.iter_mut().filter(|v| v.is_ok()) {
                    *verdict = Err(format!("not stored: {error}"));
                }
            }
        }
        (verdicts, fresh)
    }

    /// Whether `message`, arriving from `via`, may enter this node's history
    /// (see [`Chat::take_messages`]); if not, why, in words for the sender,
    /// and whether the user should hear of it (a forgery or a broken rule,
    /// not merely a room this node is not in).
    fn admit(&self, message: &SignedMessage, via: &PeerId) -> Result<(), (String, bool)> {
        let body = &message.body;
        message
            .verify()
            .map_err(|error| (error.to_string(), true))?;
        let key = {
            let roster = self.cx.roster();
            if !roster.rooms.contains(&body.room)
                && body.room != dm_room(&self.cx.me, &body.id.author)
            {
                return Err((format!("not in room {}", body.room), false));
            }
            if !roster.may_speak_for(via, &body.room) {
                let reason = format!(
                    "#{} is a password room there; ask for the password and type /password PW",
                    body.room
                );
                return Err((reason, false));
            }
            roster.room_keys.get(&body.room).cloned()
        };
        if let Some(key) = key {
            key.check(body, &message.room_tag).map_err(|error| {
                let reason = format!("not written with the password of #{}: {error}", body.room);
                (reason, true)
            })?;
        }
        hlc::check_received(body.hlc, now_ms()).map_err(|error| (error.to_string(), true))?;
        Ok(())
    }

    /// Reads acknowledgements on a chat stream this node opened.
    async fn read_acks(self: Arc<Self>, gate: Arc<Gate>, mut reader: FrameReader<RecvStream>) {
        loop {
            match reader.recv::<ChatFrame>().await {
                Ok(Some(ChatFrame::Ack(id))) => {
                    self.delivered(id, gate.peer_id);
                    self.cx.input(Input::Acked {
                        peer: gate.peer_id,
                        id,
                    });
                }
                Ok(Some(ChatFrame::Reject { id, reason })) => {
                    let name = self.cx.name_of(&gate.peer_id);
                    tracing::debug!(%id, peer = %gate.peer_id.short(), "message refused");
                    let text = format!("{name} did not take your message: {reason}");
                    self.cx.peer_error(gate.peer_id, "rejected", text);
                }
                Ok(Some(ChatFrame::Message(_))) => {
                    let error = WireError::Malformed {
                        kind: "chat",
                        reason: "a message on the acknowledgement side".into(),
                    };
                    GateError::from(error).close(&gate.connection);
                    return;
                }
                Ok(None) => return,
                Err(error) => {
                    GateError::from(error).close(&gate.connection);
                    return;
                }
            }
        }
    }

    fn delivered(&self, id: MessageId, peer: PeerId) {
        let ack_ms = {
            let mut outgoing = self.outgoing();
            let Some(message) = outgoing.get_mut(&id) else {
                return;
            };
            if !message.waiting_for.remove(&peer) {
                return; // not expected from this peer, or a repeat
            }
            let elapsed = message.sent_at.elapsed();
            if message.waiting_for.is_empty() {
                outgoing.remove(&id);
            }
            events::millis(elapsed)
        };
        self.cx.emit(Event::Delivered {
            id: id.to_string(),
            peer_id: peer.to_string(),
            ack_ms,
        });
    }

    /// Writes a gate's chat frames in the order the manager queued them;
    /// acknowledgements come back on the same stream. Ends with the gate.
    pub async fn writer(
        self: Arc<Self>,
        gate: Arc<Gate>,
        mut frames: mpsc::UnboundedReceiver<ChatFrame>,
    ) {
        let send_timeout = self.send_timeout;
        while let Some(frame) = frames.recv().await {
            if !gate.is_open() {
                return;
            }
            let on_open = |acks| {
                self.cx.spawn(self.clone().read_acks(gate.clone(), acks));
            };
            let problem = match timeout(send_timeout, gate.send_chat(&frame, on_open)).await {
                Ok(Ok(())) => continue,
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no progress within {send_timeout:?}"),
            };
            if let ChatFrame::Message(message) = &frame {
                let name = self.cx.name_of(&gate.peer_id);
                self.cx.emit(Event::error(format!(
                    "message {} to {name} is pending ({problem}); it is sent again when they reconnect",
                    message.body.id
                )));
            }
        }
    }
}

#[cfg(test)]
#[path = "chat_tests.rs"]
mod tests;
