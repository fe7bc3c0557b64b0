//! What a fetch is asked for, how it went, and why it stopped: the types
//! the node's fetch returns and the `--json` events carry.

use std::path::PathBuf;

use serde::Serialize;

use crate::identity::PeerId;
use crate::transfer::manifest::ContentId;
use crate::transfer::partial::DiskError;

/// Why a fetch stopped; what was verified stays on disk for a rerun.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("no connected source for {0}")]
    NoSource(String),
    #[error("{0} is already being fetched")]
    AlreadyFetching(String),
    #[error("no source has the manifest of {content}: {tried}")]
    NoManifest { content: String, tried: String },
    // Not a `source`: the message already says it, and `{:#}` would say it twice.
    #[error("{0}; the verified chunks are kept: fix that and run the same get again to resume")]
    Disk(DiskError),
    /// The target cannot take the download (a name taken, a link in the
    /// way): refused before anything was fetched.
    #[error("{0}")]
    Refused(DiskError),
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

impl From<DiskError> for FetchError {
    fn from(error: DiskError) -> Self {
        Self::Disk(error)
    }
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
    /// Every file was already in place and verified: nothing was fetched.
    pub already_complete: bool,
}

#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct SourceCount {
    pub peer_id: String,
    pub name: String,
    pub chunks: u64,
}

impl FetchReport {
    /// What the user asked for, as it now lies in `target`: the file, or
    /// the folder that holds the files.
    pub fn shown_path(&self, target: &std::path::Path) -> String {
        self.paths
            .first()
            .map(|p| top_level(target, p))
            .unwrap_or_default()
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
