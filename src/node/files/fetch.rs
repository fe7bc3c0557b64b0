//! Fetching one content from many sources at once (`/get`, `punchgate
//! get`): the manifest first, then chunks as [`Schedule`] decides.
//!
//! A fetch runs `streams` workers per source. Each keeps
//! [`PIPELINE_DEPTH`] chunk requests outstanding on its stream (a request
//! asks for a run of fresh chunks up to one chunk's size, so many small
//! files share one), reads each answer into one of two buffers it reuses,
//! and hands it to a blocking thread that hashes each chunk (BLAKE3),
//! compares the hashes with the manifest's and only then writes them,
//! while the next answer arrives in the other buffer.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::{mpsc, Notify};
use tokio::time::timeout;

use super::super::events::{Event, SourceChange};
use super::super::gate::Gate;
use super::report::{FetchError, FetchReport, FetchRequest, SourceCount};
use super::silence;
use super::sources::Sources;
use super::{Files, Node};
use crate::identity::PeerId;
use crate::protocol::StreamKind;
use crate::protocol::{ChunkReply, ChunkRequest, ManifestReply, ManifestRequest, MAX_CHUNK_RUN};
use crate::transfer::finished::finished_copy;
use crate::transfer::manifest::{ContentId, Layout};
use crate::transfer::partial::{self, ChunkBuffer, DiskError, Partial, Stored};
use crate::transfer::schedule::{Delivery, Next, Schedule, SourceId};
use crate::transfer::tally::FileTally;
use crate::transfer::window;
use crate::transfer::Share;
use crate::wire::{FrameReader, FrameWriter, WireError};

/// Chunk requests a worker keeps outstanding at least, so its stream never
/// idles for a round trip between chunks. On a path whose bandwidth-delay
/// product outgrows the first window, more (see [`window::pipeline_depth`]).
pub const PIPELINE_DEPTH: usize = 2;
/// Chunk requests a worker keeps outstanding at most: with the default 4
/// streams of 1 MiB chunks, half the largest window ([`window::CEILING`]).
const MAX_PIPELINE_DEPTH: usize = 8;
/// How often a running fetch reports progress.
const PROGRESS_INTERVAL: Duration = Duration::from_millis(250);
/// Longest wait for a manifest from one source.
const MANIFEST_TIMEOUT: Duration = Duration::from_secs(30);

/// Set when dropped: tells blocking work of a fetch that the fetch is gone.
#[derive(Default)]
struct StopOnDrop(Arc<std::sync::atomic::AtomicBool>);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.store(true, Ordering::Relaxed);
    }
}

/// A running fetch's place in [`FileState::fetching`], given up when the
/// fetch ends however it ends.
struct FetchRegistration {
    files: Arc<Files>,
    content: ContentId,
}

impl Drop for FetchRegistration {
    fn drop(&mut self) {
        self.files.state().fetching.remove(&self.content);
    }
}

impl Node {
    /// A download found complete in `target` already (run again after it
    /// finished): served from there, reported with nothing fetched.
    async fn already_in_place(
        &self,
        target: &std::path::Path,
        layout: &Layout,
        encoded: &[u8],
    ) -> Option<FetchReport> {
        let (target, checked) = (target.to_path_buf(), layout.clone());
        let paths = tokio::task::spawn_blocking(move || finished_copy(&target, &checked))
            .await
            .ok()??;
        let share = Arc::new(Share::new(layout.clone(), encoded.to_vec(), paths.clone()));
        self.inner
            .services
            .files
            .state()
            .shares
            .insert(layout.id, share);
        Some(FetchReport {
            hash: layout.id.to_string(),
            name: layout.manifest.name.clone(),
            paths,
            bytes: layout.total_bytes,
            chunks: layout.total_chunks,
            chunks_fetched: 0,
            chunks_resumed: layout.total_chunks,
            sources: Vec::new(),
            corrupt_sources: Vec::new(),
            secs: 0.0,
            already_complete: true,
        })
    }

    /// Fetches `request.content` from its sources into `request.target`,
    /// resuming what an earlier run verified, and serves it afterwards.
    /// Peers that offer the content while it runs become sources too.
    pub async fn fetch(&self, request: FetchRequest) -> Result<FetchReport, FetchError> {
        let started = Instant::now();
        let content = request.content;
        let (late_tx, mut late_sources) = mpsc::unbounded_channel();
        {
            let mut files = self.inner.services.files.state();
            if files.fetching.contains_key(&content) {
                return Err(FetchError::AlreadyFetching(content.short()));
            }
            files.fetching.insert(content, late_tx);
        }
        let _registration = FetchRegistration {
            files: self.inner.services.files.clone(),
            content,
        };
        let gates: Vec<Arc<Gate>> = {
            let roster = self.roster();
            let mut seen = BTreeSet::new();
            request
                .sources
                .iter()
                .filter(|p| seen.insert(**p))
                .filter_map(|p| roster.open_gate(p))
                .collect()
        };
        if gates.is_empty() {
            return Err(FetchError::NoSource(content.short()));
        }
        let target = request.target.clone();
        let (layout, encoded) = self.fetch_manifest(content, &target, &gates).await?;
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            files = layout.manifest.files.len(),
            "fetch: manifest in hand"
        );
        let name = layout.manifest.name.clone();
        let force = request.force;
        if !force {
            if let Some(report) = self.already_in_place(&target, &layout, &encoded).await {
                let report = FetchReport {
                    secs: started.elapsed().as_secs_f64(),
                    ..report
                };
                self.emit(Event::TransferDone {
                    path: report.shown_path(&target),
                    report: report.clone(),
                });
                return Ok(report);
            }
        }
        let opened = tokio::task::spawn_blocking(move || {
            Partial::open(&target, layout, &encoded, force).map(|(p, have)| (p, have, encoded))
        })
        .await
        .map_err(|e| FetchError::Internal(e.to_string()))?
        .map_err(FetchError::Refused)?;
        let (partial, have, encoded) = opened;
        tracing::debug!(ms = started.elapsed().as_millis(), "fetch: download opened");
        let total_chunks = partial.layout().total_chunks;
        let total_bytes = partial.layout().total_bytes;
        let resumed_bytes: u64 = have
            .iter()
            .filter_map(|i| partial.layout().place(*i))
            .map(|p| p.len as u64)
            .sum();
        let partial_layout = partial.layout();
        let files_tally = FileTally::new(partial_layout, &have);
        let fetch = Arc::new(Fetch {
            content,
            schedule: Mutex::new(Schedule::new(total_chunks, have.iter().copied())),
            changed: Notify::new(),
            partial: Arc::new(partial),
            bytes_done: AtomicU64::new(resumed_bytes),
            files: Mutex::new(files_tally),
            disk_error: Mutex::new(None),
            corrupt: Mutex::new(Vec::new()),
        });
        let mut sources = Sources::new(
            self.clone(),
            fetch.clone(),
            self.inner.config.transfer.streams,
        );
        for gate in gates {
            sources.add(gate);
        }
        let progress = |node: &Node| {
            let bytes = fetch.bytes_done.load(Ordering::Relaxed);
            let secs = started.elapsed().as_secs_f64();
            let (files_done, files) = {
                let tally = fetch.files();
                (tally.files_done(), tally.files())
            };
            node.emit(Event::TransferProgress {
                hash: content.to_string(),
                name: name.clone(),
                bytes,
                total: total_bytes,
                files_done,
                files,
                bytes_per_s: ((bytes - resumed_bytes) as f64 / secs.max(1e-3)).round(),
            })
        };
        let source_changed =
            |peer: &PeerId, state: SourceChange, reason: Option<String>, sources: usize| {
                self.emit(Event::TransferSource {
                    hash: content.to_string(),
                    name: name.clone(),
                    peer_id: peer.to_string(),
                    peer_name: self.name_of(peer),
                    state,
                    reason,
                    sources,
                    bytes: fetch.bytes_done.load(Ordering::Relaxed),
                    total: total_bytes,
                })
            };
        progress(self);
        let mut ticker = tokio::time::interval(PROGRESS_INTERVAL);
        ticker.tick().await;
        let mut last_error = String::from("every source went away");
        let source_wait = self.inner.config.transfer.source_wait;
        // When a fetch with no source left gives up (never by default).
        let mut give_up_at: Option<tokio::time::Instant> = None;
        loop {
            let finished = fetch.schedule().is_complete() || fetch.has_failed();
            if sources.is_idle() {
                if finished {
                    break;
                }
                if give_up_at.is_none() {
                    give_up_at = source_wait.map(|wait| tokio::time::Instant::now() + wait);
                }
            }
            tokio::select! {
                lost = sources.worker_ended() => {
                    let Some(lost) = lost else { continue };
                    let finished = fetch.schedule().is_complete() || fetch.has_failed();
                    if let Some(gate) = lost.replacement.filter(|_| !finished) {
                        if sources.add(gate) {
                            tracing::debug!(peer = %lost.peer.short(), "a source goes on over its new connection");
                            continue;
                        }
                    }
                    if !finished {
                        tracing::debug!(peer = %lost.peer.short(), reason = %lost.reason, "a source is lost");
                        last_error = format!("{}: {}", self.name_of(&lost.peer), lost.reason);
                        source_changed(&lost.peer, SourceChange::Lost, Some(lost.reason), sources.delivering());
                    }
                }
                _ = ticker.tick(), if !sources.is_idle() => progress(self),
                Some(peer) = late_sources.recv() => {
                    let gate = self.roster().open_gate(&peer);
                    if let Some(gate) = gate {
                        if sources.add(gate) {
                            tracing::debug!(peer = %peer.short(), "a source joins the fetch");
                            give_up_at = None;
                            source_changed(&peer, SourceChange::Added, None, sources.delivering());
                        }
                    }
                }
                _ = crate::wake::until(give_up_at) => break,
            }
        }
        progress(self);
        tracing::debug!(ms = started.elapsed().as_millis(), "fetch: chunks verified");
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
        // Stopped between two files if this fetch is dropped (Ctrl-C): the
        // same get opened again finishes the rest.
        let stop = StopOnDrop::default();
        let stopped = stop.0.clone();
        let paths =
            tokio::task::spawn_blocking(move || partial.finish(|| stopped.load(Ordering::Relaxed)))
                .await
                .map_err(|e| FetchError::Internal(e.to_string()))??;
        drop(stop);
        tracing::debug!(ms = started.elapsed().as_millis(), "fetch: finished");
        let share = Arc::new(Share::new(layout, encoded, paths.clone()));
        self.inner
            .services
            .files
            .state()
            .shares
            .insert(content, share);
        let report = FetchReport {
            hash: content.to_string(),
            name,
            paths,
            bytes: total_bytes,
            chunks: total_chunks,
            chunks_fetched: delivered_by.iter().sum(),
            chunks_resumed: have.len() as u64,
            sources: sources
                .peers()
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
            already_complete: false,
        };
        self.emit(Event::TransferDone {
            path: report.shown_path(&request.target),
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
            let mut answer = timeout(MANIFEST_TIMEOUT, ask_manifest(gate, content)).await;
            // The gate may have been replaced meanwhile (two connections
            // at once, one closed as a duplicate, maybe before the one that
            // stays is in): ask again on that one.
            if matches!(answer, Ok(Err(_))) && !gate.is_open() {
                let current = self.connected_gate(gate.peer_id).await.ok();
                let other = |c: &Arc<Gate>| c.connection.stable_id() != gate.connection.stable_id();
                if let Some(current) = current.filter(other) {
                    answer = timeout(MANIFEST_TIMEOUT, ask_manifest(&current, content)).await;
                }
            }
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
    pub(super) async fn fetch_worker(
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
        result
    }

    async fn run_worker(&self, fetch: &Fetch, gate: &Gate, source: SourceId) -> Result<(), String> {
        let mut storing = None;
        // A dead source is dropped once its connection has been silent for
        // longer than a live peer ever is, not at the idle timeout.
        let keep_alive = self.inner.config.liveness.keep_alive;
        let received = tokio::select! {
            received = self.receive_chunks(fetch, gate, source, &mut storing) => received,
            why = silence::silence_of(&gate.connection, keep_alive) => Err(why),
        };
        // A chunk still being stored when the stream failed counts all the
        // same: it may well be whole and verified.
        let settled = match storing {
            Some(storing) => self.settle(fetch, gate, source, storing).await.map(drop),
            None => Ok(()),
        };
        received.and(settled)
    }

    /// Requests and reads chunks until the schedule says stop. Each chunk
    /// is read into a buffer and handed to a blocking thread that verifies
    /// and writes it ([`Storing`]) while the next one is read into the
    /// other buffer; `storing` is the one in progress, if any.
    async fn receive_chunks(
        &self,
        fetch: &Fetch,
        gate: &Gate,
        source: SourceId,
        storing: &mut Option<Storing>,
    ) -> Result<(), String> {
        let (send, recv) = gate.connection.open_bi().await.map_err(|e| e.to_string())?;
        let mut writer = FrameWriter::open(send, StreamKind::Chunks)
            .await
            .map_err(|e| e.to_string())?;
        let mut reader = FrameReader::new(recv, StreamKind::Chunks);
        let mut outstanding = std::collections::VecDeque::with_capacity(PIPELINE_DEPTH);
        let mut buffer = ChunkBuffer::default();
        let streams = self.inner.config.transfer.streams;
        let chunk_size = u64::from(fetch.partial.layout().manifest.chunk_size);
        let mut depth = PIPELINE_DEPTH;
        loop {
            let changed = fetch.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let mut stop = false;
            while outstanding.len() < depth {
                let next = fetch.schedule().next(source);
                match next {
                    Next::Fetch(index) => {
                        let count = fetch.run_from(source, index);
                        writer
                            .send(&ChunkRequest {
                                content: fetch.content,
                                index,
                                count,
                            })
                            .await
                            .map_err(|e| e.to_string())?;
                        outstanding.push_back((index, count));
                    }
                    Next::Wait => break,
                    Next::Stop => {
                        stop = true;
                        break;
                    }
                }
            }
            let Some((expected, count)) = outstanding.pop_front() else {
                // Nothing asked for: the chunk being stored may change what
                // the schedule has to give, so it is settled first.
                if let Some(previous) = storing.take() {
                    buffer = self.settle(fetch, gate, source, previous).await?;
                    continue;
                }
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
                ChunkReply::Data { index, count: got } if (index, got) == (expected, count) => {
                    index
                }
                ChunkReply::Missing { .. } => return Err("does not have the content".into()),
                ChunkReply::Data { index, count: got } => {
                    return Err(format!(
                        "answered {got} chunks from {index}, asked for {count} from {expected}"
                    ))
                }
            };
            // The length the fetcher asked for, from the manifest: at most
            // one chunk's size, whatever the reply says.
            let len = fetch
                .partial
                .layout()
                .run_len(index, count)
                .ok_or("answered a chunk that does not exist")?;
            buffer.clear();
            buffer
                .fill_from(reader.get_mut(), len as usize)
                .await
                .map_err(|e| match e.kind() {
                    std::io::ErrorKind::UnexpectedEof => {
                        format!("chunk {index}: the source closed the stream")
                    }
                    _ => format!("chunk {index}: {e}"),
                })?;
            let window = gate.size_windows();
            depth = window::pipeline_depth(
                window,
                streams,
                chunk_size,
                PIPELINE_DEPTH,
                MAX_PIPELINE_DEPTH,
            );
            let had = {
                let schedule = fetch.schedule();
                (index..index + count).all(|i| schedule.is_done(i))
            };
            if had {
                continue; // another source was faster with these
            }
            // One chunk in storage at a time: its buffer comes back for the
            // next chunk.
            let next_buffer = match storing.take() {
                Some(previous) => self.settle(fetch, gate, source, previous).await?,
                None => ChunkBuffer::default(),
            };
            let chunk = std::mem::replace(&mut buffer, next_buffer);
            let partial = fetch.partial.clone();
            *storing = Some(Storing {
                index,
                count,
                task: tokio::task::spawn_blocking(move || {
                    let stored = partial.store_run(index, count, &chunk);
                    (stored, chunk)
                }),
            });
        }
    }

    /// Waits for a chunk being stored and records what came of it: the
    /// buffer back if it verified and was written, why the source or the
    /// fetch must stop if not.
    async fn settle(
        &self,
        fetch: &Fetch,
        gate: &Gate,
        source: SourceId,
        storing: Storing,
    ) -> Result<ChunkBuffer, String> {
        let Storing { index, count, task } = storing;
        let (stored, buffer) = task.await.map_err(|e| e.to_string())?;
        match stored {
            Ok(Stored::Verified) => {
                let layout = fetch.partial.layout();
                let new: Vec<u64> = {
                    let mut schedule = fetch.schedule();
                    (index..index + count)
                        .filter(|i| schedule.delivered(source, *i) == Delivery::New)
                        .collect()
                };
                let mut files = fetch.files();
                for place in new.iter().filter_map(|i| layout.place(*i)) {
                    fetch
                        .bytes_done
                        .fetch_add(place.len as u64, Ordering::Relaxed);
                    files.chunk_verified(place.file);
                }
                drop(files);
                fetch.changed.notify_waiters();
                Ok(buffer)
            }
            Ok(Stored::Corrupt { index }) => {
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
                Err(message)
            }
            Err(error) => {
                let message = error.to_string();
                fetch.fail(error);
                Err(message)
            }
        }
    }
}

/// The shared state of one running fetch.
pub(super) struct Fetch {
    content: ContentId,
    schedule: Mutex<Schedule>,
    /// Woken whenever the schedule changes (a worker waiting for work).
    changed: Notify,
    partial: Arc<Partial>,
    bytes_done: AtomicU64,
    /// Files whose every chunk is verified.
    files: Mutex<FileTally>,
    /// The first disk error; it stops every worker.
    disk_error: Mutex<Option<DiskError>>,
    corrupt: Mutex<Vec<PeerId>>,
}

impl Fetch {
    pub(super) fn schedule(&self) -> std::sync::MutexGuard<'_, Schedule> {
        self.schedule.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The run of chunks `source` asks for from `index`, which the
    /// schedule just gave it: the fresh chunks after it too, up to
    /// [`MAX_CHUNK_RUN`] and one chunk's size in all, so that a folder of
    /// small files travels in few requests. A run's length is bounded by
    /// what this side asks, never by what the source says.
    fn run_from(&self, source: SourceId, index: u64) -> u64 {
        let layout = self.partial.layout();
        let limit = u64::from(layout.manifest.chunk_size);
        let mut bytes = layout.place(index).map_or(limit, |p| p.len as u64);
        self.schedule().extend_run(source, index, |count| {
            let next = layout
                .place(index + count - 1)
                .map_or(limit, |p| p.len as u64);
            bytes += next;
            count <= MAX_CHUNK_RUN && bytes <= limit
        })
    }

    fn files(&self) -> std::sync::MutexGuard<'_, FileTally> {
        self.files.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Whether a disk error stopped the fetch.
    fn has_failed(&self) -> bool {
        self.disk_error
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .is_some()
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

/// A run of chunks being verified and written on a blocking thread; the
/// thread hands back what came of it and the buffer.
struct Storing {
    index: u64,
    count: u64,
    task: tokio::task::JoinHandle<(Result<Stored, DiskError>, ChunkBuffer)>,
}
