//! File transfer on the node's gates: serving manifests and chunks, offers
//! in rooms (`/send`, `/files`, `/get`), and fetching one content from many
//! sources at once. The decisions live in [`crate::transfer`] (which chunk
//! next, what is a safe name, what is on disk); this module moves the bytes.
//!
//! A fetch runs `streams` workers per source. Each keeps
//! [`PIPELINE_DEPTH`] chunk requests outstanding on its stream, reads each
//! answer into a buffer it reuses, hashing it (BLAKE3) piece by piece as it
//! arrives, and hands it to a blocking thread that compares the hash with
//! the manifest's and only then writes it.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use serde::Serialize;
use tokio::sync::{mpsc, Notify, OwnedSemaphorePermit};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::events::Event;
use super::gate::Gate;
use super::{Node, NodeError};
use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{
    validate_label, ChunkReply, ChunkRequest, ControlMessage, FileOffer, ManifestReply,
    ManifestRequest, MAX_ROOM_LEN,
};
use crate::transfer::manifest::{self, ContentId, Layout};
use crate::transfer::partial::{self, ChunkBuffer, DiskError, Partial, Stored};
use crate::transfer::schedule::{Delivery, Next, Schedule, SourceId};
use crate::transfer::{swarm_room, Share, Ticket};
use crate::wire::{FrameReader, FrameWriter, WireError};

/// Chunk requests a worker keeps outstanding, so its stream never idles
/// for a round trip between chunks.
pub const PIPELINE_DEPTH: usize = 2;
/// Chunks a node reads from disk for peers at once (bounds the memory
/// hostile or many downloaders can make it hold).
pub const MAX_CHUNK_READS: usize = 64;
/// How often a running fetch reports progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for a manifest from one source.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);
/// Longest display name of an offer.
const MAX_OFFER_NAME_LEN: usize = 255;

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
}

impl Default for TransferConfig {
    fn default() -> Self {
        Self {
            streams: 4,
            chunk_size: manifest::DEFAULT_CHUNK_SIZE,
            downloads: PathBuf::from("."),
            upload_limit: None,
        }
    }
}

/// Why a fetch stopped; what was verified stays on disk for a rerun.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no connected source for {0}")]
    NoSource(String),
    #[error("{0} is already being fetched")]
    AlreadyFetching(String),
    #[error("no source has the manifest of {content}: {tried}")]
    NoManifest { content: String, tried: String },
    #[error("{0}; the verified chunks are kept: fix that and run the same get again to resume")]
    Disk(#[from] DiskError),
    #[error("{missing} of {total} chunks still missing and no source left ({why}); the {have} verified chunks are kept: run the same get again to resume")]
    Incomplete {
        missing: u64,
        total: u64,
        have: u64,
        why: String,
    },
    #[error("internal error: {0}")]
    Internal(String),
}

/// What to fetch, from whom, to where.
#[derive(Clone, Debug)]
pub struct FetchRequest {
    pub content: ContentId,
    /// Peers to ask; those not connected are skipped.
    pub sources: Vec<PeerId>,
    /// The folder the content lands in (created if missing).
    pub target: PathBuf,
    /// Replace existing files.
    pub force: bool,
}

/// How a fetch went.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct FetchReport {
    pub hash: String,
    pub name: String,
    /// Final paths, in manifest order.
    pub paths: Vec<PathBuf>,
    pub bytes: u64,
    pub chunks: u64,
    /// Chunks fetched in this run, and kept from an earlier one.
    pub chunks_fetched: u64,
    pub chunks_resumed: u64,
    /// Chunks each source delivered first.
    pub sources: Vec<SourceCount>,
    /// Sources dropped for sending a chunk that did not verify.
    pub corrupt_sources: Vec<String>,
    pub secs: f64,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceCount {
    pub peer_id: String,
    pub name: String,
    pub chunks: u64,
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

/// What the node shares and what rooms offered it.
#[derive(Default)]
pub(super) struct FileState {
    shares: BTreeMap<ContentId, Arc<Share>>,
    /// This node's own offers, re-sent to room members who connect later.
    own_offers: Vec<FileOffer>,
    /// Offers heard from peers, with who offered each.
    offers: BTreeMap<ContentId, (FileOffer, BTreeSet<PeerId>)>,
    /// Running fetches, each told of holders that offer it after it started.
    fetching: BTreeMap<ContentId, mpsc::UnboundedSender<PeerId>>,
}

impl FileState {
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

/// A running fetch's place in [`FileState::fetching`], given up when the
/// fetch ends however it ends.
struct FetchRegistration {
    node: Node,
    content: ContentId,
}

impl Drop for FetchRegistration {
    fn drop(&mut self) {
        self.node.state().files.fetching.remove(&self.content);
    }
}

impl Node {
    /// Builds the manifest of `paths` (hashing every byte, on a blocking
    /// thread) and serves the content from now on.
    pub async fn share(&self, paths: Vec<PathBuf>) -> Result<Arc<Share>, NodeError> {
        let chunk_size = self.inner.config.transfer.chunk_size;
        let built = tokio::task::spawn_blocking(move || manifest::build(&paths, chunk_size))
            .await
            .map_err(|e| NodeError::Invalid(format!("hashing stopped: {e}")))?
            .map_err(|e| NodeError::Invalid(e.to_string()))?;
        let share = Arc::new(Share::from(built));
        self.state()
            .files
            .shares
            .insert(share.layout.id, share.clone());
        Ok(share)
    }

    /// The content this node serves under `content`, if any.
    pub fn shared(&self, content: &ContentId) -> Option<Arc<Share>> {
        self.state().files.share(content)
    }

    /// `/send`: shares `paths` and offers them to the current room.
    pub async fn send_files(&self, paths: Vec<PathBuf>) -> Result<ContentId, NodeError> {
        let room = self.current_room()?;
        let share = self.share(paths).await?;
        let offer = offer_of(&share, room);
        self.announce(offer).await;
        Ok(share.layout.id)
    }

    /// Remembers `offer` as this node's and sends it to every connected
    /// member of its room.
    async fn announce(&self, offer: FileOffer) {
        let gates: Vec<Arc<Gate>> = {
            let mut state = self.state();
            state.files.remember_offer(&offer);
            state
                .peers
                .values()
                .filter(|r| state.is_member(r, &offer.room))
                .filter_map(|r| r.gate.clone().filter(|g| g.is_open()))
                .collect()
        };
        let message = ControlMessage::Offer(offer.clone());
        let count = gates.len();
        for gate in gates {
            let _ = gate.send_control(&message).await;
        }
        self.emit(Event::Info {
            message: format!(
                "offered {} ({}) to #{} ({count} connected)",
                offer.name,
                offer.content.short(),
                offer.room
            ),
        });
    }

    /// Sends the peer behind `gate` this node's offers for rooms it shares.
    pub(super) async fn send_offers(&self, gate: &Gate) {
        let offers: Vec<FileOffer> = {
            let state = self.state();
            let Some(record) = state.peers.get(&gate.peer_id) else {
                return;
            };
            state
                .files
                .own_offers
                .iter()
                .filter(|o| state.is_member(record, &o.room))
                .cloned()
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
    pub(super) fn take_offer(&self, gate: &Gate, offer: FileOffer) -> Result<(), String> {
        validate_label("room", &offer.room, MAX_ROOM_LEN)?;
        validate_label("file name", &offer.name, MAX_OFFER_NAME_LEN)?;
        let from = gate.peer_id;
        let name = {
            let mut state = self.state();
            let Some(record) = state.peers.get(&from) else {
                return Ok(());
            };
            // Only offers for a room both are in (and proven, if protected).
            if !state.rooms.contains(&offer.room) || !state.is_member(record, &offer.room) {
                return Ok(());
            }
            let name = record.name.clone();
            if let Some(fetch) = state.files.fetching.get(&offer.content) {
                let _ = fetch.send(from); // a new source for a running fetch
            }
            let (_, providers) = state
                .files
                .offers
                .entry(offer.content)
                .or_insert_with(|| (offer.clone(), BTreeSet::new()));
            if !providers.insert(from) {
                return Ok(()); // heard before
            }
            name
        };
        self.emit(Event::FileOffered {
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

    /// `/files`: what this node's rooms offer, and what it serves itself.
    pub fn files(&self) -> Vec<FileInfo> {
        let state = self.state();
        let mut listed: BTreeMap<ContentId, FileInfo> = BTreeMap::new();
        for (content, (offer, providers)) in &state.files.offers {
            listed.insert(
                *content,
                FileInfo {
                    hash: content.to_string(),
                    name: offer.name.clone(),
                    bytes: offer.bytes,
                    files: offer.files,
                    room: offer.room.clone(),
                    providers: providers
                        .iter()
                        .map(|p| state.peers.get(p).map_or(p.short(), |r| r.name.clone()))
                        .collect(),
                },
            );
        }
        for offer in &state.files.own_offers {
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

    /// `/get NAME|HASH [DIR]`: fetches an offered content in the background
    /// from every connected peer that offered it.
    pub fn get_offered(&self, what: &str, target: PathBuf, force: bool) -> Result<(), NodeError> {
        let (content, room, sources) = {
            let state = self.state();
            let matches: Vec<(&ContentId, &(FileOffer, BTreeSet<PeerId>))> = state
                .files
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
        tokio::spawn(async move {
            let request = FetchRequest {
                content,
                sources,
                target,
                force,
            };
            match node.fetch(request).await {
                // Whoever finished a download serves it too.
                Ok(_) => {
                    let share = node.state().files.share(&content);
                    if let Some(share) = share {
                        node.announce(offer_of(&share, room)).await;
                    }
                }
                Err(error) => node.emit(Event::error(error)),
            }
        });
        Ok(())
    }

    /// Fetches `request.content` from its sources into `request.target`,
    /// resuming what an earlier run verified, and serves it afterwards.
    /// Peers that offer the content while it runs become sources too.
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchReport, FetchError> {
        let started = Instant::now();
        let content = request.content;
        let (late_tx, mut late_sources) = mpsc::unbounded_channel();
        let gates: Vec<Arc<Gate>> = {
            let mut state = self.state();
            if state.files.fetching.contains_key(&content) {
                return Err(FetchError::AlreadyFetching(content.short()));
            }
            state.files.fetching.insert(content, late_tx);
            let mut seen = BTreeSet::new();
            request
                .sources
                .iter()
                .filter(|p| seen.insert(**p))
                .filter_map(|p| state.open_gate(p))
                .collect()
        };
        let _registration = FetchRegistration {
            node: self.clone(),
            content,
        };
        if gates.is_empty() {
            return Err(FetchError::NoSource(content.short()));
        }
        let target = request.target.clone();
        let (layout, encoded) = self.fetch_manifest(content, &target, &gates).await?;
        let name = layout.manifest.name.clone();
        let force = request.force;
        let opened = tokio::task::spawn_blocking(move || {
            std::fs::create_dir_all(&target).map_err(|error| DiskError::Io {
                action: "create",
                path: target.clone(),
                error,
            })?;
            Partial::open(&target, layout, &encoded, force).map(|(p, have)| (p, have, encoded))
        })
        .await
        .map_err(|e| FetchError::Internal(e.to_string()))??;
        let (partial, have, encoded) = opened;
        let total_chunks = partial.layout().total_chunks;
        let total_bytes = partial.layout().total_bytes;
        let resumed_bytes: u64 = have
            .iter()
            .filter_map(|i| partial.layout().place(*i))
            .map(|p| p.len as u64)
            .sum();
        let fetch = Arc::new(Fetch {
            content,
            schedule: Mutex::new(Schedule::new(total_chunks, have.iter().copied())),
            changed: Notify::new(),
            partial: Arc::new(partial),
            bytes_done: AtomicU64::new(resumed_bytes),
            disk_error: Mutex::new(None),
            corrupt: Mutex::new(Vec::new()),
        });
        let mut workers = JoinSet::new();
        let mut source_peers = Vec::new();
        let mut add_source = |gate: Arc<Gate>, workers: &mut JoinSet<_>| {
            if source_peers.contains(&gate.peer_id) {
                return;
            }
            let source = fetch.schedule().add_source();
            source_peers.push(gate.peer_id);
            for _ in 0..self.inner.config.transfer.streams.max(1) {
                let (node, fetch, gate) = (self.clone(), fetch.clone(), gate.clone());
                workers.spawn(async move { node.fetch_worker(fetch, gate, source).await });
            }
        };
        for gate in gates {
            add_source(gate, &mut workers);
        }
        let progress = |node: &Node| {
            let bytes = fetch.bytes_done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            node.emit(Event::TransferProgress {
                hash: content.to_string(),
                name: name.clone(),
                bytes,
                total: total_bytes,
                bytes_per_s: ((bytes - resumed_bytes) as f64 / secs.max(1e-3)).round(),
            })
        };
        progress(self);
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.tick().await;
        let mut last_error = String::from("every source went away");
        loop {
            tokio::select! {
                joined = workers.join_next() => match joined {
                    Some(Ok(Err(error))) => last_error = error,
                    Some(_) => {}
                    None => break,
                },
                _ = ticker.tick() => progress(self),
                Some(peer) = late_sources.recv() => {
                    let gate = self.state().open_gate(&peer);
                    if let Some(gate) = gate {
                        tracing::debug!(peer = %peer.short(), "a new source joins the fetch");
                        add_source(gate, &mut workers);
                    }
                }
            }
        }
        progress(self);
        if let Some(error) = fetch
            .disk_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take()
        {
            return Err(error.into());
        }
        let (complete, missing, delivered_by) = {
            let schedule = fetch.schedule();
            (
                schedule.is_complete(),
                schedule.remaining(),
                schedule.delivered_by(),
            )
        };
        if !complete {
            return Err(FetchError::Incomplete {
                missing,
                total: total_chunks,
                have: total_chunks - missing,
                why: last_error,
            });
        }
        let partial = fetch.partial.clone();
        let layout = partial.layout().clone();
        let paths = tokio::task::spawn_blocking(move || partial.finish())
            .await
            .map_err(|e| FetchError::Internal(e.to_string()))??;
        let share = Arc::new(Share {
            layout,
            encoded,
            sources: paths.clone(),
        });
        self.state().files.shares.insert(content, share);
        let report = FetchReport {
            hash: content.to_string(),
            name,
            paths,
            bytes: total_bytes,
            chunks: total_chunks,
            chunks_fetched: delivered_by.iter().sum(),
            chunks_resumed: have.len() as u64,
            sources: source_peers
                .iter()
                .zip(&delivered_by)
                .map(|(peer, chunks)| SourceCount {
                    peer_id: peer.to_string(),
                    name: self.name_of(peer),
                    chunks: *chunks,
                })
                .collect(),
            corrupt_sources: fetch
                .corrupt
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .iter()
                .map(|p| self.name_of(p))
                .collect(),
            secs: started.elapsed().as_secs_f64(),
        };
        self.emit(Event::TransferDone {
            path: report
                .paths
                .first()
                .map(|p| top_level(&request.target, p))
                .unwrap_or_default(),
            report: report.clone(),
        });
        Ok(report)
    }

    /// The manifest: saved by an earlier run, else from the first source
    /// that has it and whose copy hashes to `content`.
    async fn fetch_manifest(
        &self,
        content: ContentId,
        target: &std::path::Path,
        gates: &[Arc<Gate>],
    ) -> Result<(Layout, Vec<u8>), FetchError> {
        if let Some(saved) = partial::saved_manifest(target, content) {
            if let Ok(layout) = Layout::from_wire(content, &saved) {
                return Ok((layout, saved));
            }
        }
        let mut tried = Vec::new();
        for gate in gates {
            let answer = timeout(MANIFEST_TIMEOUT, ask_manifest(gate, content)).await;
            let failure = match answer {
                Ok(Ok(Some(encoded))) => match Layout::from_wire(content, &encoded) {
                    Ok(layout) => return Ok((layout, encoded)),
                    Err(error) => error.to_string(),
                },
                Ok(Ok(None)) => "does not have it".to_string(),
                Ok(Err(error)) => error.to_string(),
                Err(_) => format!("no answer within {MANIFEST_TIMEOUT:?}"),
            };
            tried.push(format!("{}: {failure}", self.name_of(&gate.peer_id)));
        }
        Err(FetchError::NoManifest {
            content: content.short(),
            tried: tried.join("; "),
        })
    }

    /// One chunk stream to one source: keeps requests outstanding, stores
    /// what verifies, drops the source at the first chunk that does not.
    /// Returns why it stopped early, if it did.
    async fn fetch_worker(
        self,
        fetch: Arc<Fetch>,
        gate: Arc<Gate>,
        source: SourceId,
    ) -> Result<(), String> {
        let result = self.run_worker(&fetch, &gate, source).await;
        if let Err(error) = &result {
            tracing::debug!(peer = %gate.peer_id.short(), %error, "chunk stream ended");
            fetch.schedule().lost(source);
            fetch.changed.notify_waiters();
        }
        result.map_err(|e| format!("{}: {e}", self.name_of(&gate.peer_id)))
    }

    async fn run_worker(&self, fetch: &Fetch, gate: &Gate, source: SourceId) -> Result<(), String> {
        let (send, recv) = gate.connection.open_bi().await.map_err(|e| e.to_string())?;
        let mut writer = FrameWriter::open(send, StreamKind::Chunks)
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = FrameReader::new(recv, StreamKind::Chunks);
        let mut outstanding = std::collections::VecDeque::with_capacity(PIPELINE_DEPTH);
        let mut buffer = ChunkBuffer::default();
        loop {
            let changed = fetch.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut stop = false;
            while outstanding.len() < PIPELINE_DEPTH {
                let next = fetch.schedule().next(source);
                match next {
                    Next::Fetch(index) => {
                        writer
                            .send(&ChunkRequest {
                                content: fetch.content,
                                index,
                            })
                            .await
                            .map_err(|e| e.to_string())?;
                        outstanding.push_back(index);
                    }
                    Next::Wait => break,
                    Next::Stop => {
                        stop = true;
                        break;
                    }
                }
            }
            let Some(expected) = outstanding.pop_front() else {
                if stop {
                    return Ok(());
                }
                changed.await;
                continue;
            };
            let reply = reader
                .recv::<ChunkReply>()
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the source closed the stream")?;
            let index = match reply {
                ChunkReply::Data { index } if index == expected => index,
                ChunkReply::Missing { .. } => return Err("does not have the content".into()),
                ChunkReply::Data { index } => {
                    return Err(format!("answered chunk {index}, asked for {expected}"))
                }
            };
            let place = fetch
                .partial
                .layout()
                .place(index)
                .ok_or("answered a chunk that does not exist")?;
            buffer.clear();
            while buffer.len() < place.len {
                let piece = reader
                    .get_mut()
                    .read_chunk(place.len - buffer.len(), true)
                    .await
                    .map_err(|e| format!("chunk {index}: {e}"))?
                    .ok_or_else(|| format!("chunk {index}: the source closed the stream"))?;
                buffer.extend(&piece.bytes);
            }
            if fetch.schedule().is_done(index) {
                continue; // another source was faster with this one
            }
            let partial = fetch.partial.clone();
            let (stored, returned) = tokio::task::spawn_blocking(move || {
                let stored = partial.store(index, &mut buffer);
                (stored, buffer)
            })
            .await
            .map_err(|e| e.to_string())?;
            buffer = returned;
            match stored {
                Ok(Stored::Verified) => {
                    if fetch.schedule().delivered(source, index) == Delivery::New {
                        fetch
                            .bytes_done
                            .fetch_add(place.len as u64, Ordering::Relaxed);
                    }
                    fetch.changed.notify_waiters();
                }
                Ok(Stored::Corrupt) => {
                    fetch.schedule().corrupt(source, index);
                    fetch.changed.notify_waiters();
                    let mut corrupt = fetch.corrupt.lock().unwrap_or_else(PoisonError::into_inner);
                    if !corrupt.contains(&gate.peer_id) {
                        corrupt.push(gate.peer_id);
                    }
                    drop(corrupt);
                    let message = format!(
                        "{} sent chunk {index} of {} that does not match its hash; dropped that source",
                        self.name_of(&gate.peer_id),
                        fetch.content.short()
                    );
                    self.emit(Event::error(&message));
                    return Err(message);
                }
                Err(error) => {
                    let message = error.to_string();
                    fetch.fail(error);
                    return Err(message);
                }
            }
        }
    }

    // ------------------------------------------------------------- one-shot --

    /// `punchgate send`: shares `paths` and waits in the content's swarm
    /// room on the tracker, where getters (and other holders) meet. Returns
    /// the ticket to hand to the receiver.
    pub async fn share_with_ticket(&self, paths: Vec<PathBuf>) -> Result<Ticket, NodeError> {
        let tracker = self.tracker_target().ok_or(NodeError::NoTracker)?;
        let share = self.share(paths).await?;
        let content = share.layout.id;
        // Offered in the swarm room, so a getter that meets this node after
        // its download started adds it as a source.
        let offer = offer_of(&share, swarm_room(content));
        self.state().files.remember_offer(&offer);
        self.join(&swarm_room(content)).await?;
        Ok(Ticket {
            tracker,
            sender: self.peer_id(),
            content,
        })
    }

    /// `punchgate get`: meets everyone serving the ticket's content in its
    /// swarm room, connects to them all (punching as needed; the sender
    /// first), and fetches from every one that connected.
    pub async fn fetch_ticket(
        &self,
        ticket: &Ticket,
        target: PathBuf,
        force: bool,
    ) -> Result<FetchReport, FetchError> {
        let room = swarm_room(ticket.content);
        self.join(&room)
            .await
            .map_err(|e| FetchError::NoSource(format!("{} ({e})", ticket.content.short())))?;
        let mut holders: Vec<PeerId> = vec![ticket.sender];
        holders.extend(
            self.state()
                .peers
                .iter()
                .filter(|(id, r)| r.rooms.contains(&room) && **id != ticket.sender)
                .map(|(id, _)| *id),
        );
        let mut connects = JoinSet::new();
        for peer in holders.iter().copied() {
            let node = self.clone();
            connects.spawn(async move { (peer, node.connect_peer(peer).await) });
        }
        // Start once the sender answered (or, if it cannot be reached, once
        // anyone did) with everyone connected by then; a holder that went
        // away without the tracker noticing yet must not hold the start.
        let mut failures = Vec::new();
        let mut sender_done = false;
        while let Some(joined) = connects.join_next().await {
            match joined {
                Ok((peer, Err(error))) => {
                    failures.push(format!("{}: {error}", self.name_of(&peer)));
                    sender_done |= peer == ticket.sender;
                }
                Ok((peer, Ok(()))) => sender_done |= peer == ticket.sender,
                Err(_) => {}
            }
            let any = holders.iter().any(|p| self.state().has_open_gate(p));
            if any && sender_done {
                break;
            }
        }
        connects.detach_all();
        let sources: Vec<PeerId> = {
            let state = self.state();
            holders
                .into_iter()
                .filter(|p| state.has_open_gate(p))
                .collect()
        };
        if sources.is_empty() {
            return Err(FetchError::NoSource(format!(
                "{}: {}",
                ticket.content.short(),
                failures.join("; ")
            )));
        }
        self.fetch(FetchRequest {
            content: ticket.content,
            sources,
            target,
            force,
        })
        .await
    }

    // -------------------------------------------------------------- serving --

    /// How long to hold `bytes` back to stay under the upload limit.
    fn upload_pace(&self, bytes: usize) -> Duration {
        match &self.inner.upload_limit {
            Some(bucket) => bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pace(bytes as f64, Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// Answers one manifest request.
    pub(super) async fn serve_manifest(
        &self,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Manifest);
        let mut writer = FrameWriter::answering(send, StreamKind::Manifest);
        let Some(ManifestRequest { content }) = reader.recv().await? else {
            return Ok(());
        };
        let share = self.state().files.share(&content);
        let reply = match share {
            Some(share) => ManifestReply::Found(share.encoded.clone()),
            None => ManifestReply::Missing,
        };
        writer.send(&reply).await?;
        let _ = writer.get_mut().finish();
        Ok(())
    }

    /// Answers chunk requests in order, reading ahead from disk while the
    /// previous chunk is sent; chunk bytes go out without a copy.
    pub(super) async fn serve_chunks(
        &self,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Chunks);
        let mut writer = FrameWriter::answering(send, StreamKind::Chunks);
        type Read = (
            u64,
            OwnedSemaphorePermit,
            tokio::task::JoinHandle<std::io::Result<Vec<u8>>>,
        );
        let (reads_tx, mut reads_rx) = mpsc::channel::<Read>(PIPELINE_DEPTH);
        let node = self.clone();
        let requests = async move {
            while let Some(ChunkRequest { content, index }) = reader.recv().await? {
                let share = node.state().files.share(&content);
                let permit = node
                    .inner
                    .chunk_reads
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(|_| WireError::Truncated("chunk request"))?;
                let read = tokio::task::spawn_blocking(move || match share {
                    Some(share) => share.read_chunk(index),
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "content not shared",
                    )),
                });
                if reads_tx.send((index, permit, read)).await.is_err() {
                    break;
                }
            }
            Ok::<(), WireError>(())
        };
        let answers = async {
            while let Some((index, _permit, read)) = reads_rx.recv().await {
                match read.await {
                    Ok(Ok(data)) => {
                        let wait = self.upload_pace(data.len());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        writer.send(&ChunkReply::Data { index }).await?;
                        writer
                            .get_mut()
                            .write_chunk(Bytes::from(data))
                            .await
                            .map_err(|e| WireError::Io(e.into()))?;
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(index, %error, "chunk not served");
                        writer.send(&ChunkReply::Missing { index }).await?;
                    }
                    Err(_) => writer.send(&ChunkReply::Missing { index }).await?,
                }
            }
            Ok::<(), WireError>(())
        };
        let (requests, answers) = tokio::join!(requests, answers);
        requests?;
        answers?;
        let _ = writer.get_mut().finish();
        Ok(())
    }
}

/// The shared state of one running fetch.
struct Fetch {
    content: ContentId,
    schedule: Mutex<Schedule>,
    /// Woken whenever the schedule changes (a worker waiting for work).
    changed: Notify,
    partial: Arc<Partial>,
    bytes_done: AtomicU64,
    /// The first disk error; it stops every worker.
    disk_error: Mutex<Option<DiskError>>,
    corrupt: Mutex<Vec<PeerId>>,
}

impl Fetch {
    fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Stops the fetch for a disk error: every source stops.
    fn fail(&self, error: DiskError) {
        let mut slot = self
            .disk_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if slot.is_none() {
            *slot = Some(error);
        }
        drop(slot);
        let mut schedule = self.schedule();
        for source in 0..schedule.delivered_by().len() {
            schedule.lost(source);
        }
        drop(schedule);
        self.changed.notify_waiters();
    }
}

/// Asks `gate`'s peer for the manifest of `content`; `None` if it has none.
async fn ask_manifest(gate: &Gate, content: ContentId) -> Result<Option<Vec<u8>>, WireError> {
    let (send, recv) = gate
        .connection
        .open_bi()
        .await
        .map_err(|e| WireError::Io(e.into()))?;
    let mut writer = FrameWriter::open(send, StreamKind::Manifest).await?;
    writer.send(&ManifestRequest { content }).await?;
    let _ = writer.get_mut().finish();
    let mut reader = FrameReader::new(recv, StreamKind::Manifest);
    match reader.recv::<ManifestReply>().await? {
        Some(ManifestReply::Found(encoded)) => Ok(Some(encoded)),
        Some(ManifestReply::Missing) => Ok(None),
        None => Err(WireError::Truncated("manifest reply")),
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

/// The top-level file or folder of `path` under `target`, as the user
/// should see where the content went.
fn top_level(target: &std::path::Path, path: &std::path::Path) -> String {
    match path
        .strip_prefix(target)
        .ok()
        .and_then(|p| p.components().next())
    {
        Some(first) => target.join(first).display().to_string(),
        None => path.display().to_string(),
    }
}
