//! Answering peers' manifest and chunk requests: reads from disk bounded
//! by permits per peer and per node, paced by the upload limit, chunk bytes
//! sent without a copy, a write the peer stalls reset after a deadline.

use std::sync::{Arc, PoisonError};
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::time::timeout;

use super::super::gate::Gate;
use super::fetch::PIPELINE_DEPTH;
use super::Files;
use crate::protocol::{
    ChunkReply, ChunkRequest, ManifestReply, ManifestRequest, StreamKind, MAX_CHUNK_RUN,
};
use crate::transfer::Share;
use crate::wire::{CloseCode, FrameReader, FrameWriter, WireError};

/// Chunks a node reads from disk for peers at once, all peers together
/// (bounds the memory hostile or many downloaders can make it hold).
pub const MAX_CHUNK_READS: usize = 64;
/// Chunks read from disk for one peer at once: a download keeps
/// `streams × (depth + 2)` busy, where its pipeline depth starts at
/// `PIPELINE_DEPTH` (16 with the defaults) and grows with the connection's
/// window; beyond 16 its requests wait here, and one peer leaves the rest
/// of [`MAX_CHUNK_READS`] to others.
pub const MAX_CHUNK_READS_PER_PEER: usize = 16;
/// Longest wait for a peer to take a piece of a chunk (flow control): a
/// stalled chunk stream is reset and its permits freed.
pub const STALLED_WRITE_TIMEOUT: Duration = Duration::from_secs(20);
/// Bytes written at a time, each within [`STALLED_WRITE_TIMEOUT`]: a live
/// reader on a slow path takes this much in well under it.
const WRITE_PIECE: usize = 64 << 10;

impl Files {
    /// How long to hold `bytes` back to stay under the upload limit.
    fn upload_pace(&self, bytes: usize) -> Duration {
        match &self.upload_limit {
            Some(bucket) => bucket
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .pace(bytes as f64, Instant::now()),
            None => Duration::ZERO,
        }
    }

    /// Answers one manifest request.
    pub async fn serve_manifest(
        &self,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Manifest);
        let mut writer = FrameWriter::answering(send, StreamKind::Manifest);
        let Some(ManifestRequest { content }) = reader.recv().await? else {
            return Ok(());
        };
        let share = self.state().share(&content);
        let reply = match share {
            Some(share) => ManifestReply::Found(share.encoded.clone()),
            None => ManifestReply::Missing,
        };
        writer.send(&reply).await?;
        let _ = writer.get_mut().finish();
        Ok(())
    }

    /// Answers chunk requests in order, reading ahead from disk while the
    /// previous chunk is sent; chunk bytes go out without a copy. Disk
    /// reads take a permit of the peer's (so one peer cannot take them
    /// all) and one of the node's; a write the peer does not take for
    /// [`STALLED_WRITE_TIMEOUT`] resets the stream and frees both.
    pub async fn serve_chunks(
        self: &Arc<Self>,
        gate: &Gate,
        send: SendStream,
        recv: RecvStream,
    ) -> Result<(), WireError> {
        let mut reader = FrameReader::new(recv, StreamKind::Chunks);
        let mut writer = FrameWriter::answering(send, StreamKind::Chunks);
        type Read = (
            (u64, u64),
            Option<Arc<Share>>,
            ReadPermits,
            tokio::task::JoinHandle<std::io::Result<Vec<u8>>>,
        );
        let (reads_tx, mut reads_rx) = mpsc::channel::<Read>(PIPELINE_DEPTH);
        let files = self.clone();
        let peer_permits = gate.upload_permits.clone();
        let requests = async move {
            while let Some(ChunkRequest {
                content,
                index,
                count,
            }) = reader.recv().await?
            {
                let share = files.state().share(&content);
                check_run(share.as_deref(), index, count)?;
                // The peer's own permit first: a peer over its share waits
                // without holding one of everyone's.
                let closed = |_| WireError::Truncated("chunk request");
                let peer = peer_permits.clone().acquire_owned().await.map_err(closed)?;
                let node_wide = files
                    .chunk_reads
                    .clone()
                    .acquire_owned()
                    .await
                    .map_err(closed)?;
                let reading = share.clone();
                let read = tokio::task::spawn_blocking(move || match reading {
                    Some(share) => share.read_run(index, count),
                    None => Err(std::io::Error::new(
                        std::io::ErrorKind::NotFound,
                        "content not shared",
                    )),
                });
                if reads_tx
                    .send(((index, count), share, (peer, node_wide), read))
                    .await
                    .is_err()
                {
                    break;
                }
            }
            Ok::<(), WireError>(())
        };
        let answers = async {
            while let Some(((index, count), share, _permits, read)) = reads_rx.recv().await {
                let reply = match read.await {
                    Ok(Ok(data)) => {
                        let wait = self.upload_pace(data.len());
                        if !wait.is_zero() {
                            tokio::time::sleep(wait).await;
                        }
                        Some((ChunkReply::Data { index, count }, Bytes::from(data)))
                    }
                    Ok(Err(error)) => {
                        tracing::debug!(index, %error, "chunk not served");
                        None
                    }
                    Err(_) => None,
                };
                let (reply, data) = reply.unwrap_or((ChunkReply::Missing { index }, Bytes::new()));
                let bytes = data.len();
                match timeout(STALLED_WRITE_TIMEOUT, writer.send(&reply)).await {
                    Ok(sent) => sent?,
                    Err(_) => return Ok(Served::Stalled),
                }
                if !write_within_deadline(writer.get_mut(), data).await? {
                    return Ok(Served::Stalled);
                }
                gate.size_windows();
                if let Some(share) = share.filter(|_| bytes > 0) {
                    self.served(gate.peer_id, &share, bytes);
                }
            }
            Ok::<Served, WireError>(Served::All)
        };
        let served = {
            tokio::pin!(requests, answers);
            tokio::select! {
                biased;
                requests = &mut requests => {
                    requests?;
                    (&mut answers).await?
                }
                // Stalled (or failed) before the peer stopped asking: what
                // it still asks is not read.
                answers = &mut answers => answers?,
            }
        };
        match served {
            Served::All => {
                let _ = writer.get_mut().finish();
            }
            Served::Stalled => {
                tracing::debug!(peer = %gate.peer_id.short(), "chunk stream stalled; reset");
                let _ = writer.get_mut().reset(CloseCode::Refused.varint());
            }
        }
        Ok(())
    }
}

/// Refuses a request for no chunk, for more than [`MAX_CHUNK_RUN`], or
/// for more bytes than one chunk of the content holds: a fetcher never
/// asks for them, and each read from disk stays within one chunk's bytes.
/// A run of content not shared is answered `Missing`.
fn check_run(share: Option<&Share>, index: u64, count: u64) -> Result<(), WireError> {
    let refused = |reason: String| WireError::Malformed {
        kind: "chunk request",
        reason,
    };
    if count == 0 || count > MAX_CHUNK_RUN {
        return Err(refused(format!(
            "a run of {count} chunks (1 to {MAX_CHUNK_RUN} allowed)"
        )));
    }
    let Some(share) = share else { return Ok(()) };
    let chunk_size = u64::from(share.layout.manifest.chunk_size);
    match share.layout.run_len(index, count) {
        Some(len) if count > 1 && len > chunk_size => Err(refused(format!(
            "a run of {count} chunks holds {len} bytes, over the chunk size of {chunk_size}"
        ))),
        _ => Ok(()),
    }
}

/// Two permits held while a chunk is read and sent: the peer's and the
/// node's.
type ReadPermits = (OwnedSemaphorePermit, OwnedSemaphorePermit);

/// How a chunk stream ended.
enum Served {
    /// Every request answered.
    All,
    /// The peer took no bytes for [`STALLED_WRITE_TIMEOUT`].
    Stalled,
}

/// Writes `data` in pieces, each of which the peer must take within
/// [`STALLED_WRITE_TIMEOUT`]; `false` if one was not taken.
async fn write_within_deadline(send: &mut SendStream, mut data: Bytes) -> Result<bool, WireError> {
    while !data.is_empty() {
        let piece = data.split_to(data.len().min(WRITE_PIECE));
        match timeout(STALLED_WRITE_TIMEOUT, send.write_chunk(piece)).await {
            Ok(written) => written.map_err(|e| WireError::Io(e.into()))?,
            Err(_) => return Ok(false),
        }
    }
    Ok(true)
}
