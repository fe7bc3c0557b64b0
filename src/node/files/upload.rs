//! Answering peers' manifest and chunk requests: reads from disk bounded
//! by permits, paced by the upload limit, chunk bytes sent without a copy.

use std::sync::PoisonError;
use std::time::{Duration, Instant};

use bytes::Bytes;
use quinn::{RecvStream, SendStream};
use tokio::sync::{mpsc, OwnedSemaphorePermit};

use super::fetch::PIPELINE_DEPTH;
use super::Node;
use crate::protocol::{ChunkReply, ChunkRequest, ManifestReply, ManifestRequest};
use crate::wire::{FrameReader, FrameWriter, StreamKind, WireError};

/// Chunks a node reads from disk for peers at once (bounds the memory
/// hostile or many downloaders can make it hold).
pub const MAX_CHUNK_READS: usize = 64;

impl Node {
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
    pub(in crate::node) async fn serve_manifest(
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
    pub(in crate::node) async fn serve_chunks(
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
