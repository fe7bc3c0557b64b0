//! History sync, on its own stream so live chat is never blocked behind it.
//! On every (re)connect — and when the rooms two peers share change — each
//! side asks the other, per shared room, for what it lacks: it sends what it
//! holds (per author, ranges of sequence numbers: [`crate::holdings`]) and
//! receives the missing messages in bounded batches, then a `Done`. A
//! message the asker holds is never sent to it again, gaps or not.
//! Messages are verified against their authors and committed like live ones,
//! so they can come from any peer, not only their author. When nothing is
//! missing a sync costs one request and one `Done` per room.
//!
//! [`HistorySync`] asks and answers; [`CatchUp`] is what a peer gets when it
//! newly shares rooms with this node: the offers and the history it lacks.

use std::sync::Arc;

use quinn::{RecvStream, SendStream};

use super::chat::Chat;
use super::context::Context;
use super::files::Files;
use super::gate::{Gate, GateError};
use super::NodeError;
use crate::holdings::{Held, Holdings};
use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{SyncFrame, SYNC_BATCH};
use crate::store::StoreError;
use crate::wire::{FrameReader, FrameWriter, WireError};

/// Most authors a sync request may list.
const MAX_AUTHORS: usize = 16_384;

/// The history sync service: pulls what this node lacks, answers what
/// peers lack. Messages it pulls are taken like live ones, by [`Chat`].
pub(super) struct HistorySync {
    cx: Context,
    chat: Arc<Chat>,
}

/// What a peer gets when it newly shares rooms with this node (a new
/// connection, a joined room, a proven password): this node's offers and
/// the history it lacks.
pub(super) struct CatchUp {
    cx: Context,
    sync: Arc<HistorySync>,
    files: Arc<Files>,
}

impl CatchUp {
    pub fn new(cx: Context, sync: Arc<HistorySync>, files: Arc<Files>) -> Self {
        Self { cx, sync, files }
    }

    /// Sends the gate's peer this node's offers and pulls the history of
    /// the rooms both are in. One runs per gate at a time: asked for again
    /// meanwhile (a burst of room changes), it runs once more after, not
    /// once per ask.
    pub fn catch_up(&self, gate: Arc<Gate>) {
        {
            let mut catching_up = gate
                .catching_up
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            if catching_up.running {
                catching_up.again = true;
                return;
            }
            catching_up.running = true;
        }
        let (sync, files) = (self.sync.clone(), self.files.clone());
        self.cx.spawn(async move {
            loop {
                files.send_offers(&gate).await;
                sync.sync_with(&gate).await;
                let mut catching_up = gate
                    .catching_up
                    .lock()
                    .unwrap_or_else(std::sync::PoisonError::into_inner);
                if !std::mem::take(&mut catching_up.again) {
                    catching_up.running = false;
                    return;
                }
            }
        });
    }
}

impl HistorySync {
    pub fn new(cx: Context, chat: Arc<Chat>) -> Self {
        Self { cx, chat }
    }

    /// Rooms this node and `peer` are both in.
    fn shared_rooms(&self, peer: &PeerId) -> Vec<String> {
        self.cx.roster().shared_rooms(&self.cx.me, peer)
    }

    /// What to ask a peer for of `room`, or nothing when the room's
    /// history here is full.
    async fn request_for(&self, room: &str) -> Result<Option<SyncFrame>, NodeError> {
        let store = self.chat.store().clone();
        let room = room.to_string();
        let request = tokio::task::spawn_blocking(move || {
            let usage = store.room_usage(&room)?;
            let limits = store.limits();
            if limits.room_full(usage) {
                return Ok::<_, StoreError>(None);
            }
            let have = store
                .holdings(&room)?
                .into_iter()
                .map(|(author, held)| (author, held.summary()))
                .collect();
            Ok(Some(SyncFrame::Request {
                room,
                have,
                new_authors: limits.takes_new_authors(usage),
            }))
        })
        .await
        .map_err(|e| StoreError::Database(e.to_string()))??;
        Ok(request)
    }

    /// Pulls from `gate`'s peer whatever this node lacks of their shared
    /// rooms.
    async fn sync_with(&self, gate: &Gate) {
        let rooms = self.shared_rooms(&gate.peer_id);
        if rooms.is_empty() {
            return;
        }
        if let Err(error) = self.pull(gate, rooms).await {
            match error {
                SyncError::Wire(error) => GateError::from(error).close(&gate.connection),
                SyncError::Node(error) => self
                    .cx
                    .emit(super::Event::error(format!("history sync: {error}"))),
            }
        }
    }

    async fn pull(&self, gate: &Gate, rooms: Vec<String>) -> Result<(), SyncError> {
        let (send, recv) = gate
            .connection
            .open_bi()
            .await
            .map_err(|e| SyncError::Wire(WireError::Io(e.into())))?;
        let mut writer = FrameWriter::open(send, StreamKind::Sync).await?;
        let mut reader = FrameReader::new(recv, StreamKind::Sync);
        for room in rooms {
            let Some(request) = self.request_for(&room).await? else {
                continue; // full here: nothing more would be taken
            };
            writer.send(&request).await?;
            loop {
                match reader.recv::<SyncFrame>().await? {
                    Some(SyncFrame::Batch {
                        room: got,
                        messages,
                    }) if got == room => {
                        if messages.len() > SYNC_BATCH {
                            return Err(malformed("batch larger than allowed").into());
                        }
                        // Refused messages (forged, foreign rooms) are reported
                        // by take_messages and not stored; the rest are, and
                        // fresh ones go on through the room's gossip.
                        self.chat.take_synced(messages, gate.peer_id).await;
                    }
                    Some(SyncFrame::Done { room: got }) if got == room => break,
                    Some(_) => return Err(malformed("unexpected frame").into()),
                    None => return Err(WireError::Truncated("sync").into()),
                }
            }
        }
        let _ = writer.get_mut().finish();
        Ok(())
    }

    /// Answers a peer's sync requests: for rooms both are in, the messages
    /// it does not hold.
    pub async fn serve(
        &self,
        gate: &Gate,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Sync);
        let mut writer = FrameWriter::answering(send, StreamKind::Sync);
        while let Some(frame) = reader.recv::<SyncFrame>().await? {
            let SyncFrame::Request {
                room,
                have,
                new_authors,
            } = frame
            else {
                return Err(malformed("only requests travel this way"));
            };
            if have.len() > MAX_AUTHORS {
                return Err(malformed("too many authors"));
            }
            if self.shared_rooms(&gate.peer_id).contains(&room) {
                let mut theirs = Holdings::new();
                for (author, ranges) in have {
                    let held = Held::from_summary(ranges)
                        .map_err(|error| malformed(&error.to_string()))?;
                    theirs.insert(author, held);
                }
                let theirs = Arc::new(theirs);
                // In a password room only tagged messages travel: one stored
                // before the room had its password would only be refused.
                let key = self.cx.roster().room_keys.get(&room).cloned();
                let mut after = None;
                loop {
                    let store = self.chat.store().clone();
                    let (room_name, vector) = (room.clone(), theirs.clone());
                    let batch = tokio::task::spawn_blocking(move || {
                        store.missing(&room_name, &vector, new_authors, after, SYNC_BATCH)
                    })
                    .await;
                    let (mut messages, next) = match batch {
                        Ok(Ok(found)) => found,
                        Ok(Err(error)) => {
                            self.cx
                                .emit(super::Event::error(format!("history sync: {error}")));
                            break;
                        }
                        Err(_) => break,
                    };
                    if let Some(key) = &key {
                        messages.retain(|m| key.check(&m.body, &m.room_tag).is_ok());
                    }
                    if !messages.is_empty() {
                        writer
                            .send(&SyncFrame::Batch {
                                room: room.clone(),
                                messages,
                            })
                            .await?;
                    }
                    match next {
                        Some(next) => after = Some(next),
                        None => break,
                    }
                }
            }
            writer.send(&SyncFrame::Done { room }).await?;
        }
        Ok(())
    }
}

fn malformed(reason: &str) -> WireError {
    WireError::Malformed {
        kind: "sync",
        reason: reason.to_string(),
    }
}

enum SyncError {
    /// The peer broke the protocol or the stream failed.
    Wire(WireError),
    /// This node could not read its own history.
    Node(NodeError),
}

impl From<WireError> for SyncError {
    fn from(error: WireError) -> Self {
        SyncError::Wire(error)
    }
}

impl From<NodeError> for SyncError {
    fn from(error: NodeError) -> Self {
        SyncError::Node(error)
    }
}
