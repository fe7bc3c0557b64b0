//! File transfer on the node's gates, split by concern: offers in rooms
//! and shares (`/send`, `/files`, `/get`, the one-shot `send`) here,
//! fetching one content from many sources in [`fetch`] (for the one-shot
//! `get`, after meeting the holders in [`ticket`]), and answering
//! peers' manifest and chunk requests in [`upload`]. The decisions live in
//! [`crate::transfer`] (which chunk next, what is a safe name, what is on
//! disk); these modules move the bytes. The [`Files`] service owns what
//! is shared and offered and answers peers' requests; fetching is a command
//! of the node's, since it connects to sources.

mod fetch;
mod meters;
mod report;
mod silence;
mod sources;
mod ticket;
mod upload;

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};

use super::context::Context;
use super::events::Event;
use super::gate::Gate;
use super::{Node, NodeError};
use crate::identity::PeerId;
use crate::protocol::{validate_label, ControlMessage, FileOffer, MAX_ROOM_LEN};
use crate::rate::TokenBucket;
use crate::transfer::manifest::{self, ContentId};
use crate::transfer::{swarm_room, Share, Ticket};
pub use fetch::PIPELINE_DEPTH;
pub use report::{FetchError, FetchReport, FetchRequest, SourceCount};
pub use upload::{MAX_CHUNK_READS, MAX_CHUNK_READS_PER_PEER};

/// Longest display name of an offer.
const MAX_OFFER_NAME_LEN: usize = 255;
/// Offers kept from one peer at most; beyond, the rest are not listed.
pub(in crate::node) const MAX_OFFERS_PER_PEER: usize = 256;

/// How transfers run. Defaults suit a LAN or a fast path: four streams per
/// source and 1 MiB chunks.
#[derive(Clone, Debug)]
pub struct TransferConfig {
    /// Concurrent chunk streams per source. Default 4.
    pub streams: usize,
    /// Chunk size of content this node shares. Default 1 MiB.
    pub chunk_size: u32,
    /// Where `/get` puts downloads without a folder. Default: the current
    /// directory.
    pub downloads: PathBuf,
    /// Most bytes per second served to all peers together. Default: no limit.
    pub upload_limit: Option<u32>,
    /// How long a fetch that lost every source waits for another holder
    /// (or the source back) before it gives up, keeping what it verified.
    /// Default: until it is stopped.
    pub source_wait: Option<std::time::Duration>,
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            streams: 4,
            chunk_size: manifest::DEFAULT_CHUNK_SIZE,
            downloads: PathBuf::from("."),
            upload_limit: None,
            source_wait: None,
        }
    }
}

/// One line of `/files`.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FileInfo {
    pub hash: String,
    pub name: String,
    pub bytes: u64,
    pub files: u32,
    pub room: String,
    /// Names of the peers offering it; `you` when this node serves it.
    pub providers: Vec<String>,
}

/// The file service: what this node shares and what its rooms offer, and
/// the answers to peers' manifest and chunk requests ([`upload`]).
pub(in crate::node) struct Files {
    cx: Context,
    state: Mutex<FileState>,
    /// Chunk size of content this node shares.
    chunk_size: u32,
    /// Bounds the chunks read from disk for peers at once.
    chunk_reads: Arc<Semaphore>,
    /// Paces chunks served when an upload limit is set.
    upload_limit: Option<Mutex<TokenBucket>>,
    /// What each receiver was served, for progress reports.
    uploads: Mutex<meters::UploadMeters>,
}

/// What the node shares and what rooms offered it.
#[derive(Default)]
pub(in crate::node) struct FileState {
    shares: BTreeMap<ContentId, Arc<Share>>,
    /// This node's own offers, re-sent to room members who connect later.
    own_offers: Vec<FileOffer>,
    /// Offers heard from peers, with who offered each.
    offers: BTreeMap<ContentId, (FileOffer, BTreeSet<PeerId>)>,
    /// How many of `offers` each peer provides (at most
    /// [`MAX_OFFERS_PER_PEER`]).
    offered_by: HashMap<PeerId, usize>,
    /// Running fetches, each told of holders that offer it after it started.
    fetching: BTreeMap<ContentId, mpsc::UnboundedSender<PeerId>>,
}

impl FileState {
    /// `from` offers `offer`: whether that is news. An offer beyond the
    /// peer's quota is not kept (`Err`).
    fn add_provider(&mut self, offer: &FileOffer, from: PeerId) -> Result<bool, ()> {
        let known = self
            .offers
            .get(&offer.content)
            .is_some_and(|(_, providers)| providers.contains(&from));
        if known {
            return Ok(false);
        }
        let count = self.offered_by.entry(from).or_default();
        if *count >= MAX_OFFERS_PER_PEER {
            return Err(());
        }
        *count += 1;
        self.offers
            .entry(offer.content)
            .or_insert_with(|| (offer.clone(), BTreeSet::new()))
            .1
            .insert(from);
        Ok(true)
    }

    /// `peer` is gone: its offers with it (it offers them again when it
    /// connects again).
    pub(in crate::node) fn forget_provider(&mut self, peer: &PeerId) {
        if self.offered_by.remove(peer).is_none() {
            return;
        }
        self.offers.retain(|_, (_, providers)| {
            providers.remove(peer);
            !providers.is_empty()
        });
    }

    fn share(&self, content: &ContentId) -> Option<Arc<Share>> {
        self.shares.get(content).cloned()
    }

    /// Keeps `offer` among this node's own, to send to members met later.
    fn remember_offer(&mut self, offer: &FileOffer) {
        if !self.own_offers.contains(offer) {
            self.own_offers.push(offer.clone());
        }
    }
}

impl Files {
    pub fn new(cx: Context, transfer: &TransferConfig) -> Self {
        let upload_limit = transfer.upload_limit.map(|rate| {
            // A burst of a quarter second keeps pacing smooth.
            Mutex::new(TokenBucket::new(rate, rate / 4, Instant::now()))
        });
        Self {
            cx,
            state: Mutex::default(),
            chunk_size: transfer.chunk_size,
            chunk_reads: Arc::new(Semaphore::new(MAX_CHUNK_READS)),
            upload_limit,
            uploads: Mutex::default(),
        }
    }

    pub fn state(&self) -> MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// `peer` is gone: what it offered and what it was served.
    pub fn forget_peer(&self, peer: &PeerId) {
        self.state().forget_provider(peer);
        self.uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .forget(peer);
    }

    /// `bytes` of `share` went to `peer`: reported as upload progress when
    /// due.
    fn served(&self, peer: PeerId, share: &Share, bytes: usize) {
        let content = share.layout.id;
        let total = share.layout.total_bytes;
        let due = self
            .uploads
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .served(peer, content, bytes as u64, total, Instant::now());
        if let Some(served) = due {
            self.cx.emit(Event::UploadProgress {
                peer_id: peer.to_string(),
                peer_name: self.cx.name_of(&peer),
                hash: content.to_string(),
                name: share.layout.manifest.name.clone(),
                bytes: served.min(total),
                total,
            });
        }
    }

    /// Builds the manifest of `paths` (hashing every byte, on a blocking
    /// thread) and serves the content from now on.
    pub async fn share(&self, paths: Vec<PathBuf>) -> Result<Arc<Share>, NodeError> {
        let chunk_size = self.chunk_size;
        let built = tokio::task::spawn_blocking(move || manifest::build(&paths, chunk_size))
            .await
            .map_err(|e| NodeError::Invalid(format!("hashing stopped: {e}")))?
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let share = Arc::new(Share::from(built));
        self.state().shares.insert(share.layout.id, share.clone());
        Ok(share)
    }

    /// Remembers `offer` as this node's and sends it to every connected
    /// member of its room.
    async fn announce(&self, offer: FileOffer) {
        self.state().remember_offer(&offer);
        let gates: Vec<Arc<Gate>> = {
            let roster = self.cx.roster();
            roster
                .peers
                .values()
                .filter(|r| roster.is_member(r, &offer.room))
                .filter_map(|r| r.gate.clone().filter(|g| g.is_open()))
                .collect()
        };
        let message = ControlMessage::Offer(offer.clone());
        let count = gates.len();
        for gate in gates {
            let _ = gate.send_control(&message).await;
        }
        self.cx.emit(Event::Info {
            message: format!(
                "offered {} ({}) to #{} ({count} connected)",
                offer.name,
                offer.content.short(),
                offer.room
            ),
        });
    }

    /// Sends the peer behind `gate` this node's offers for rooms it shares.
    pub async fn send_offers(&self, gate: &Gate) {
        let own_offers = self.state().own_offers.clone();
        let offers: Vec<FileOffer> = {
            let roster = self.cx.roster();
            let Some(record) = roster.peers.get(&gate.peer_id) else {
                return;
            };
            own_offers
                .into_iter()
                .filter(|o| roster.is_member(record, &o.room))
                .collect()
        };
        for offer in offers {
            if gate
                .send_control(&ControlMessage::Offer(offer))
                .await
                .is_err()
            {
                return;
            }
        }
    }

    /// An offer arrived from the peer behind `gate`.
    pub fn take_offer(&self, gate: &Gate, offer: FileOffer) -> Result<(), String> {
        validate_label("room", &offer.room, MAX_ROOM_LEN)?;
        validate_label("file name", &offer.name, MAX_OFFER_NAME_LEN)?;
        let from = gate.peer_id;
        let name = {
            let roster = self.cx.roster();
            let Some(record) = roster.peers.get(&from) else {
                return Ok(());
            };
            // Only offers for a room both are in (and proven, if protected).
            if !roster.rooms.contains(&offer.room) || !roster.is_member(record, &offer.room) {
                return Ok(());
            }
            record.name.clone()
        };
        let added = {
            let mut state = self.state();
            if let Some(fetch) = state.fetching.get(&offer.content) {
                let _ = fetch.send(from); // a new source for a running fetch
            }
            state.add_provider(&offer, from)
        };
        match added {
            Ok(true) => {}
            Ok(false) => return Ok(()), // heard before
            Err(()) => {
                let text = format!(
                    "{name} offers more than {MAX_OFFERS_PER_PEER} files; the rest are not listed"
                );
                self.cx.peer_error(from, "offers", text);
                return Ok(());
            }
        }
        self.cx.emit(Event::FileOffered {
            from: from.to_string(),
            from_name: name,
            room: offer.room,
            hash: offer.content.to_string(),
            name: offer.name,
            bytes: offer.bytes,
            files: offer.files,
        });
        Ok(())
    }

    /// What this node's rooms offer, and what it serves itself.
    fn list(&self) -> Vec<FileInfo> {
        let state = self.state();
        let roster = self.cx.roster();
        let mut listed: BTreeMap<ContentId, FileInfo> = BTreeMap::new();
        for (content, (offer, providers)) in &state.offers {
            listed.insert(
                *content,
                FileInfo {
                    hash: content.to_string(),
                    name: offer.name.clone(),
                    bytes: offer.bytes,
                    files: offer.files,
                    room: offer.room.clone(),
                    providers: providers.iter().map(|p| roster.name_of(p)).collect(),
                },
            );
        }
        for offer in &state.own_offers {
            let info = listed.entry(offer.content).or_insert_with(|| FileInfo {
                hash: offer.content.to_string(),
                name: offer.name.clone(),
                bytes: offer.bytes,
                files: offer.files,
                room: offer.room.clone(),
                providers: Vec::new(),
            });
            info.providers.insert(0, "you".to_string());
        }
        listed.into_values().collect()
    }
}

impl Node {
    /// Builds the manifest of `paths` (hashing every byte, on a blocking
    /// thread) and serves the content from now on.
    pub async fn share(&self, paths: Vec<PathBuf>) -> Result<Arc<Share>, NodeError> {
        self.inner.services.files.share(paths).await
    }

    /// The content this node serves under `content`, if any.
    pub fn shared(&self, content: &ContentId) -> Option<Arc<Share>> {
        self.inner.services.files.state().share(content)
    }

    /// `/send`: shares `paths` and offers them to the current room.
    pub async fn send_files(&self, paths: Vec<PathBuf>) -> Result<ContentId, NodeError> {
        let room = self.current_room()?;
        self.send_files_in(&room, paths).await
    }

    /// `/send` to `room` (joined), whatever the current room is.
    pub async fn send_files_in(
        &self,
        room: &str,
        paths: Vec<PathBuf>,
    ) -> Result<ContentId, NodeError> {
        let room = self.joined_room(room)?;
        let share = self.share(paths).await?;
        let offer = offer_of(&share, room);
        self.inner.services.files.announce(offer).await;
        Ok(share.layout.id)
    }

    /// `/files`: what this node's rooms offer, and what it serves itself.
    pub fn files(&self) -> Vec<FileInfo> {
        self.inner.services.files.list()
    }

    /// `/get NAME|HASH [DIR]`: fetches an offered content in the background
    /// from every connected peer that offered it.
    pub fn get_offered(&self, what: &str, target: PathBuf, force: bool) -> Result<(), NodeError> {
        let (content, room, sources) = {
            let state = self.inner.services.files.state();
            let matches: Vec<(&ContentId, &(FileOffer, BTreeSet<PeerId>))> = state
                .offers
                .iter()
                .filter(|(id, (offer, _))| {
                    offer.name == what || (what.len() >= 4 && id.to_string().starts_with(what))
                })
                .collect();
            let (content, (offer, providers)) = match matches.as_slice() {
                [one] => *one,
                [] => {
                    return Err(NodeError::Invalid(format!(
                        "nothing offered is named {what:?}; /files lists what is"
                    )))
                }
                _ => {
                    return Err(NodeError::Invalid(format!(
                        "{what:?} matches several offers; give more of the hash"
                    )))
                }
            };
            (
                *content,
                offer.room.clone(),
                providers.iter().copied().collect(),
            )
        };
        let node = self.clone();
        self.inner.spawn(async move {
            let request = FetchRequest {
                content,
                sources,
                target,
                force,
            };
            match node.fetch(request).await {
                // Whoever finished a download serves it too.
                Ok(_) => {
                    let share = node.inner.services.files.state().share(&content);
                    if let Some(share) = share {
                        node.inner
                            .services
                            .files
                            .announce(offer_of(&share, room))
                            .await;
                    }
                }
                Err(error) => node.emit(Event::error(error)),
            }
        });
        Ok(())
    }

    // ------------------------------------------------------------- one-shot --

    /// `punchgate send`: shares `paths` and waits in the content's swarm
    /// room on the tracker, where getters (and other holders) meet. Returns
    /// the ticket to hand to the receiver.
    pub async fn share_with_ticket(&self, paths: Vec<PathBuf>) -> Result<Ticket, NodeError> {
        let tracker = self
            .tracker_target()
            .and_then(|target| target.parse().ok())
            .ok_or(NodeError::NoTracker)?;
        let share = self.share(paths).await?;
        let content = share.layout.id;
        // Offered in the swarm room, so a getter that meets this node after
        // its download started adds it as a source.
        let offer = offer_of(&share, swarm_room(content));
        self.inner.services.files.state().remember_offer(&offer);
        self.join(&swarm_room(content)).await?;
        Ok(Ticket {
            tracker,
            sender: self.peer_id(),
            content,
        })
    }
}

/// The offer of `share` to `room`.
fn offer_of(share: &Share, room: String) -> FileOffer {
    FileOffer {
        room,
        content: share.layout.id,
        name: share.layout.manifest.name.clone(),
        bytes: share.layout.total_bytes,
        files: share.layout.manifest.files.len() as u32,
    }
}
