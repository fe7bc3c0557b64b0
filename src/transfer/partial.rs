//! A download on disk. Chunks are written, once verified, into per-file data
//! files under `<target>/.punchgate-partial/<content id>/`, and each chunk's
//! index is appended to a log there. A resumed download re-hashes the logged
//! chunks (cheap next to fetching them) and keeps those that still verify, so
//! neither a crash nor a torn log can let an unverified byte through.
//! Finishing syncs the data and moves each file to its final name (never
//! over an existing file without `force`), then removes the work folder.
//! A share may have more files than a process may hold open, so data files
//! are opened when needed and at most [`OPEN_FILES`] stay open ([`handles`]).
//!
//! The target may be a folder others can write. Every folder and file here
//! is reached through [`Dir`] handles, never through a symbolic link, so
//! nothing planted there redirects a write; the work folder must be the
//! user's own (it is made 0700), a data file with a second name is
//! refused, and a final name is checked to be the very file written.
//! Everything here blocks: run it on a blocking thread.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::File;
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

mod destination;
mod finish;

use super::dir::{link_count, Access, Dir, Entry};
use super::handles::{OpenFiles, OPEN_FILES};
use super::manifest::{ContentId, Layout};
use crate::protocol::MAX_CHUNK_RUN;

/// The folder inside a target directory that holds unfinished downloads.
pub const WORK_DIR: &str = ".punchgate-partial";
const MANIFEST_FILE: &str = "manifest";
const LOG_FILE: &str = "verified";
/// Bytes per log record: a chunk index, little-endian.
const LOG_RECORD: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {}: {}", path.display(), describe_io(error))]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} already exists, and what is there is not what is offered; pass --force to replace it, or get into another folder", .0.display())]
    Exists(PathBuf),
    #[error("{} is in the way: it is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("{} is a symbolic link; refusing to write through it", .0.display())]
    Symlink(PathBuf),
    #[error("{} is not a plain file; remove it and run the same get again", .0.display())]
    NotAFile(PathBuf),
    #[error("{} is a folder; refusing to replace it with a file", .0.display())]
    IsAFolder(PathBuf),
    #[error("{} belongs to another user, who could redirect the download; remove it (or download elsewhere)", .0.display())]
    NotYours(PathBuf),
    #[error("{} has another name (a hard link); refusing to write through it: remove it", .0.display())]
    Linked(PathBuf),
    #[error("{} changed while it was moved into place; check that folder: someone else may write in it", .0.display())]
    Replaced(PathBuf),
    #[error("stopped while moving the files into place; run the same get again to finish")]
    Interrupted,
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
}

/// An I/O error in words, with what to do about the ones a user can fix.
fn describe_io(error: &io::Error) -> String {
    match error.kind() {
        io::ErrorKind::FileTooLarge => "the file would pass this process's file size limit \
            (ulimit -f); raise it (ulimit -f unlimited)"
            .to_string(),
        io::ErrorKind::StorageFull => "the disk is full; free some space".to_string(),
        _ => error.to_string(),
    }
}

impl DiskError {
    fn io<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> DiskError + 'a {
        move |error| DiskError::Io {
            action,
            path: path.to_path_buf(),
            error,
        }
    }
}

/// A chunk as it arrives from the network, read straight from the stream
/// into a buffer that is reused from chunk to chunk. It is hashed only when
/// [`Partial::store`] checks it, on the blocking thread that writes it, in
/// one pass (BLAKE3 hashes many 1 KiB blocks at once only when it is given
/// them at once), so the task reading the stream does nothing but copy.
#[derive(Default)]
pub struct ChunkBuffer {
    bytes: Vec<u8>,
}

impl ChunkBuffer {
    /// Empties the buffer for the next chunk, keeping its allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `piece`.
    pub fn extend(&mut self, piece: &[u8]) {
        self.bytes.extend_from_slice(piece);
    }

    /// Reads from `reader` until the buffer holds `len` bytes, each read
    /// taking everything the stream has ready (for a QUIC stream: one lock
    /// of the connection and one copy per batch of packets, not per
    /// packet), into the buffer's spare room without zeroing it first.
    /// An end of stream before `len` is [`io::ErrorKind::UnexpectedEof`].
    pub async fn fill_from<R>(&mut self, reader: &mut R, len: usize) -> io::Result<()>
    where
        R: tokio::io::AsyncRead + Unpin,
    {
        use tokio::io::AsyncReadExt;
        self.bytes.reserve(len.saturating_sub(self.bytes.len()));
        while self.bytes.len() < len {
            let wanted = (len - self.bytes.len()) as u64;
            if (&mut *reader)
                .take(wanted)
                .read_buf(&mut self.bytes)
                .await?
                == 0
            {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        Ok(())
    }

    /// The hash of everything appended.
    #[cfg(test)]
    fn finish(&self) -> blake3::Hash {
        blake3::hash(&self.bytes)
    }
}

impl From<&[u8]> for ChunkBuffer {
    fn from(bytes: &[u8]) -> Self {
        let mut chunk = Self::default();
        chunk.extend(bytes);
        chunk
    }
}

/// Whether a received chunk, or run of chunks, was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    /// Every chunk verified, and was written and logged.
    Verified,
    /// Chunk `index` did not match its hash (or the bytes were not the
    /// run's length); nothing of the run was written.
    Corrupt { index: u64 },
}

pub struct Partial {
    target: Dir,
    /// `.punchgate-partial` in the target, and the work folder inside it.
    parts: Dir,
    work: Dir,
    layout: Layout,
    /// The data files, one per manifest entry, each created on its first
    /// write and reopened (never created again) on demand.
    files: OpenFiles,
    /// By manifest index: whether the data file is known to exist (made or
    /// found by this run), so that it is only ever reopened: a data file
    /// gone missing under verified chunks is an error, never a new empty
    /// file.
    made: Vec<AtomicBool>,
    log: Mutex<File>,
    force: bool,
    /// Files an interrupted finish already moved to their final names
    /// (found verified there when the download was opened again), by
    /// manifest index.
    placed: BTreeMap<usize, PathBuf>,
}

/// The work folder of content `id` in `target`.
pub fn work_dir(target: &Path, id: ContentId) -> PathBuf {
    target.join(WORK_DIR).join(id.to_string())
}

/// The manifest an earlier run saved, if any (lets a resume start before
/// any source answers). Read only from a work folder of the user's own,
/// never through a link.
pub fn saved_manifest(target: &Path, id: ContentId) -> Option<Vec<u8>> {
    let work = Dir::open(target)
        .ok()?
        .subdir(WORK_DIR, None)
        .ok()?
        .subdir(&id.to_string(), None)
        .ok()?;
    if !work.make_private().ok()? {
        return None;
    }
    work.read(MANIFEST_FILE).ok()
}

/// Folders made for the content: as `mkdir` makes them (the umask narrows).
const FOLDER_MODE: u32 = 0o777;
/// The work folder of one download: the user's alone.
const WORK_MODE: u32 = 0o700;

/// Opens `name` in `dir` for a download, turning a link or a second name
/// (someone else could read or change the bytes through it) into a refusal.
fn open_work_file(dir: &Dir, name: &str, access: Access) -> Result<File, DiskError> {
    open_work_file_with_meta(dir, name, access).map(|(file, _)| file)
}

/// [`open_work_file`], with the metadata it looked at.
fn open_work_file_with_meta(
    dir: &Dir,
    name: &str,
    access: Access,
) -> Result<(File, std::fs::Metadata), DiskError> {
    let path = dir.path().join(name);
    let file = dir
        .open_file(name, access)
        .map_err(|error| refusal(dir, name, "open", error))?;
    let meta = file.metadata().map_err(DiskError::io("inspect", &path))?;
    if link_count(&meta) > 1 {
        return Err(DiskError::Linked(path));
    }
    Ok((file, meta))
}

/// The error for `action` on `name` in `dir` having failed: a link or a
/// non-folder in the way is named as such (the refusal already happened,
/// so looking now opens no gap).
fn refusal(dir: &Dir, name: &str, action: &'static str, error: io::Error) -> DiskError {
    let path = dir.path().join(name);
    match dir.entry(name) {
        Ok(Entry::Symlink) => DiskError::Symlink(path),
        _ => DiskError::Io {
            action,
            path,
            error,
        },
    }
}

/// The folder `name` in `dir`, created if missing; a link or a file in
/// its place is refused.
fn open_folder(dir: &Dir, name: &str, mode: u32) -> Result<Dir, DiskError> {
    dir.subdir(name, Some(mode)).map_err(|error| {
        let path = dir.path().join(name);
        match dir.entry(name) {
            Ok(Entry::Symlink) => DiskError::Symlink(path),
            Ok(Entry::File | Entry::Other) => DiskError::NotAFolder(path),
            _ => DiskError::Io {
                action: "create",
                path,
                error,
            },
        }
    })
}

impl Partial {
    /// Starts or resumes the download of `layout` into `target` (created if
    /// missing). Fails at once if a final name is taken (without `force`)
    /// or unusable, or if the work folder is not the user's own. Returns
    /// the chunks already verified by an earlier run.
    pub fn open(
        target: &Path,
        layout: Layout,
        encoded: &[u8],
        force: bool,
    ) -> Result<(Self, BTreeSet<u64>), DiskError> {
        let started = std::time::Instant::now();
        let target = Dir::open_or_create(target).map_err(DiskError::io("create", target))?;
        // A taken name may be a file an interrupted finish already moved
        // there: that is decided once the work folder is open.
        let mut taken = Vec::new();
        let mut destinations = destination::Destinations::new(&target, force);
        for (index, file) in layout.manifest.files.iter().enumerate() {
            match destinations.check(&file.path) {
                Ok(()) => {}
                Err(DiskError::Exists(path)) => taken.push((index, path)),
                Err(error) => return Err(error),
            }
        }
        drop(destinations);
        if let Some((_, path)) = taken.first() {
            if !finish::unfinished_work_exists(&target, layout.id) {
                return Err(DiskError::Exists(path.clone()));
            }
        }
        let parts = open_folder(&target, WORK_DIR, FOLDER_MODE)?;
        let work = open_folder(&parts, &layout.id.to_string(), WORK_MODE)?;
        if !work
            .make_private()
            .map_err(DiskError::io("inspect", work.path()))?
        {
            return Err(DiskError::NotYours(work.path().to_path_buf()));
        }
        // Not synced: a resume checks the saved copy against the content
        // id, and asks a source again if it was lost or torn.
        let saved = work.read(MANIFEST_FILE).ok();
        if saved.as_deref() != Some(encoded) {
            work.write(MANIFEST_FILE, encoded)
                .map_err(|error| refusal(&work, MANIFEST_FILE, "write", error))?;
        }
        let placed = finish::already_placed(&target, &work, &layout, taken)?;
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "open: destinations checked, work folder ready"
        );
        let mut log = open_work_file(&work, LOG_FILE, Access::Append)?;
        let mut records = Vec::new();
        log.read_to_end(&mut records)
            .map_err(DiskError::io("read", &work.path().join(LOG_FILE)))?;
        let made = (0..layout.manifest.files.len())
            .map(|_| AtomicBool::new(false))
            .collect();
        let partial = Self {
            target,
            parts,
            work,
            layout,
            files: OpenFiles::new(OPEN_FILES),
            made,
            log: Mutex::new(log),
            force,
            placed,
        };
        let mut have = partial.reverify(&records);
        have.extend(partial.placed_chunks());
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            resumed = have.len(),
            "open: done"
        );
        Ok((partial, have))
    }

    /// The logged chunks whose bytes on disk still match their hash.
    fn reverify(&self, records: &[u8]) -> BTreeSet<u64> {
        let logged: BTreeSet<u64> = records
            .chunks_exact(LOG_RECORD)
            .filter_map(|r| r.try_into().ok().map(u64::from_le_bytes))
            .collect();
        let mut buffer = Vec::new();
        logged
            .into_iter()
            .filter(|index| {
                let Some(place) = self.layout.place(*index) else {
                    return false;
                };
                buffer.resize(place.len, 0);
                self.data_file(place.file, false)
                    .is_ok_and(|file| read_exact_at(&file, &mut buffer, place.offset).is_ok())
                    && *blake3::hash(&buffer).as_bytes() == place.hash
            })
            .collect()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Data file `index`, from the cache or opened through the work
    /// folder's handle: never through a link, never with a second name.
    /// It is created (`create`) only if this run has not seen it yet, so a
    /// data file gone missing under verified chunks is an error, never an
    /// empty file in their place.
    fn data_file(&self, index: usize, create: bool) -> Result<Arc<File>, DiskError> {
        // Opened under the cache's lock: deciding whether it may be made
        // and marking it made cannot race with another open of it.
        self.files.get(index, || self.open_data_file(index, create))
    }

    fn open_data_file(&self, index: usize, create: bool) -> Result<File, DiskError> {
        let made = &self.made[index];
        let access = match create && !made.load(Ordering::Relaxed) {
            true => Access::Update,
            false => Access::Modify,
        };
        let file = open_work_file(&self.work, &data_name(index), access)?;
        made.store(true, Ordering::Relaxed);
        Ok(file)
    }

    /// Verifies chunk `index` and, only if it matches, writes and logs it.
    pub fn store(&self, index: u64, chunk: &ChunkBuffer) -> Result<Stored, DiskError> {
        self.store_run(index, 1, chunk)
    }

    /// Verifies each of the `count` chunks from `first`, which `run` holds
    /// one after the other, and only if every one matches its hash writes
    /// them and logs them (one write to the log for the run).
    pub fn store_run(
        &self,
        first: u64,
        count: u64,
        run: &ChunkBuffer,
    ) -> Result<Stored, DiskError> {
        let mut places = Vec::with_capacity(count.min(MAX_CHUNK_RUN) as usize);
        let mut at = 0;
        for index in first..first.saturating_add(count) {
            let place = self.layout.place(index);
            let bytes = place.and_then(|place| run.bytes.get(at..at + place.len));
            match (place, bytes) {
                (Some(place), Some(bytes)) if *blake3::hash(bytes).as_bytes() == place.hash => {
                    places.push((place, at));
                    at += place.len;
                }
                _ => return Ok(Stored::Corrupt { index }),
            }
        }
        if at != run.len() {
            return Ok(Stored::Corrupt { index: first });
        }
        let mut records = Vec::with_capacity(places.len() * LOG_RECORD);
        for (index, (place, at)) in (first..).zip(places) {
            let file = self.data_file(place.file, true)?;
            write_all_at(&file, &run.bytes[at..at + place.len], place.offset).map_err(|error| {
                DiskError::io("write", &self.work.path().join(data_name(place.file)))(error)
            })?;
            records.extend_from_slice(&index.to_le_bytes());
        }
        let log_path = self.work.path().join(LOG_FILE);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(&records)
            .map_err(DiskError::io("write", &log_path))?;
        Ok(Stored::Verified)
    }
}

pub(super) fn data_name(index: usize) -> String {
    format!("{index}.data")
}

/// Moves `name` in `from` to `to_name` in `to`. Without `force` the new
/// name appears only if it is free (atomically): a rename that refuses to
/// replace where the system has one, else a hard link, then the old name
/// goes.
fn place(from: &Dir, name: &str, to: &Dir, to_name: &str, force: bool) -> Result<(), DiskError> {
    let destination = to.path().join(to_name);
    if force {
        return from
            .rename_to(name, to, to_name)
            .map_err(|error| match to.entry(to_name) {
                Ok(Entry::Folder) => DiskError::IsAFolder(destination.clone()),
                _ => DiskError::io("move into place", &destination)(error),
            });
    }
    match from.rename_new(name, to, to_name) {
        Ok(()) => return Ok(()),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            return Err(DiskError::Exists(destination))
        }
        Err(_) => {} // not here: a link and a removal do the same
    }
    match from.link_to(name, to, to_name) {
        Ok(()) => from
            .remove_file(name)
            .map_err(DiskError::io("remove", &from.path().join(name))),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Err(DiskError::Exists(destination))
        }
        // A filesystem without hard links: check, then rename.
        Err(_) if to.entry(to_name).ok() == Some(Entry::Missing) => from
            .rename_to(name, to, to_name)
            .map_err(DiskError::io("move into place", &destination)),
        Err(_) => Err(DiskError::Exists(destination)),
    }
}

#[cfg(unix)]
pub fn write_all_at(file: &File, data: &[u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::write_all_at(file, data, offset)
}

#[cfg(unix)]
pub fn read_exact_at(file: &File, buffer: &mut [u8], offset: u64) -> io::Result<()> {
    std::os::unix::fs::FileExt::read_exact_at(file, buffer, offset)
}

/// Appends `len` bytes of `file` from `offset` to `buffer`, read into its
/// spare room without zeroing it first (the read fills it); an end of file
/// before is [`io::ErrorKind::UnexpectedEof`].
#[cfg(unix)]
pub fn read_append_at(
    file: &File,
    len: usize,
    offset: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    let start = buffer.len();
    let end = start + len;
    buffer.reserve(len);
    while buffer.len() < end {
        let at = offset + (buffer.len() - start) as u64;
        // Reads into the spare room and extends the length by what it read.
        match rustix::io::pread(file, rustix::buffer::spare_capacity(buffer), at) {
            Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
            Ok(_) => {}
            Err(rustix::io::Errno::INTR) => {}
            Err(error) => return Err(error.into()),
        }
    }
    // The spare room may be larger than asked, and the read fill it.
    buffer.truncate(end);
    Ok(())
}

#[cfg(windows)]
pub fn read_append_at(
    file: &File,
    len: usize,
    offset: u64,
    buffer: &mut Vec<u8>,
) -> io::Result<()> {
    let start = buffer.len();
    buffer.resize(start + len, 0);
    read_exact_at(file, &mut buffer[start..], offset)
}

#[cfg(windows)]
pub fn write_all_at(file: &File, mut data: &[u8], mut offset: u64) -> io::Result<()> {
    while !data.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_write(file, data, offset)?;
        data = &data[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(windows)]
pub fn read_exact_at(file: &File, mut buffer: &mut [u8], mut offset: u64) -> io::Result<()> {
    while !buffer.is_empty() {
        let n = std::os::windows::fs::FileExt::seek_read(file, buffer, offset)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buffer = &mut buffer[n..];
        offset += n as u64;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::manifest::{build, MIN_CHUNK_SIZE};
    use super::*;
    use std::fs;

    #[test]
    fn a_chunk_filled_piece_by_piece_hashes_as_a_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let whole = blake3::hash(&data);
        let mut chunk = ChunkBuffer::default();
        for piece_len in [1, 1200, 65_535, 65_536, 65_537, data.len()] {
            chunk.clear();
            for piece in data.chunks(piece_len) {
                chunk.extend(piece);
            }
            assert_eq!(chunk.len(), data.len());
            assert_eq!(chunk.finish(), whole, "pieces of {piece_len} bytes");
        }
        chunk.clear();
        assert!(chunk.is_empty());
        assert_eq!(chunk.finish(), blake3::hash(b""));
    }

    /// A reader that hands out at most `step` bytes per read, as a stream
    /// does with what has arrived so far.
    struct Trickle<'a> {
        data: &'a [u8],
        step: usize,
    }

    impl tokio::io::AsyncRead for Trickle<'_> {
        fn poll_read(
            mut self: std::pin::Pin<&mut Self>,
            _: &mut std::task::Context<'_>,
            buf: &mut tokio::io::ReadBuf<'_>,
        ) -> std::task::Poll<io::Result<()>> {
            let n = self.step.min(self.data.len()).min(buf.remaining());
            buf.put_slice(&self.data[..n]);
            self.data = &self.data[n..];
            std::task::Poll::Ready(Ok(()))
        }
    }

    #[tokio::test]
    async fn a_chunk_is_filled_from_a_stream_to_its_length_and_no_further() {
        let data: Vec<u8> = (0..10_000u32).map(|i| (i * 13) as u8).collect();
        let mut chunk = ChunkBuffer::default();
        for step in [1, 1452, 4096, 20_000] {
            let mut stream = Trickle { data: &data, step };
            chunk.clear();
            chunk.fill_from(&mut stream, 6_000).await.unwrap();
            assert_eq!(chunk.finish(), blake3::hash(&data[..6_000]), "step {step}");
            // The rest stays in the stream for the next chunk.
            chunk.clear();
            chunk.fill_from(&mut stream, 4_000).await.unwrap();
            assert_eq!(chunk.finish(), blake3::hash(&data[6_000..]), "step {step}");
            // A stream that ends early.
            chunk.clear();
            let error = chunk.fill_from(&mut stream, 1).await.unwrap_err();
            assert_eq!(error.kind(), io::ErrorKind::UnexpectedEof);
        }
    }

    #[test]
    fn only_chunks_that_match_their_hash_are_written_and_kept_on_resume() {
        let source_dir = tempfile::tempdir().unwrap();
        let source = source_dir.path().join("data.bin");
        let chunk_size = MIN_CHUNK_SIZE as usize;
        let data: Vec<u8> = (0..chunk_size * 2 + 5).map(|i| (i % 253) as u8).collect();
        fs::write(&source, &data).unwrap();
        let built = build(&[source], MIN_CHUNK_SIZE).unwrap();
        let target = tempfile::tempdir().unwrap();
        let (partial, have) =
            Partial::open(target.path(), built.layout.clone(), &built.encoded, false).unwrap();
        assert!(have.is_empty());

        let mut corrupt = ChunkBuffer::from(&data[..chunk_size]);
        corrupt.bytes[10] ^= 1;
        assert_eq!(
            partial.store(0, &corrupt).unwrap(),
            Stored::Corrupt { index: 0 }
        );
        let short = &data[chunk_size..chunk_size * 2 - 1];
        assert_eq!(
            partial.store(1, &ChunkBuffer::from(short)).unwrap(),
            Stored::Corrupt { index: 1 }
        );
        assert_eq!(
            partial.store(7, &ChunkBuffer::from(&data[..5])).unwrap(),
            Stored::Corrupt { index: 7 }
        );
        let data_file = work_dir(target.path(), built.layout.id).join("0.data");
        assert!(!data_file.exists(), "nothing written, not even a file made");

        let last = &data[chunk_size * 2..];
        assert_eq!(
            partial.store(2, &ChunkBuffer::from(last)).unwrap(),
            Stored::Verified
        );
        drop(partial);
        let (partial, have) =
            Partial::open(target.path(), built.layout, &built.encoded, false).unwrap();
        assert_eq!(have.into_iter().collect::<Vec<_>>(), vec![2]);
        for (index, range) in [(0, 0..chunk_size), (1, chunk_size..chunk_size * 2)] {
            let chunk = ChunkBuffer::from(&data[range]);
            assert_eq!(partial.store(index, &chunk).unwrap(), Stored::Verified);
        }
        let paths = partial.finish(|| false).unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap(), data);
    }

    /// More files than may stay open: each is reopened when needed, through
    /// the work folder's handle, so a link planted for a closed data file
    /// is refused and a data file gone missing is an error (never an empty
    /// file under logged chunks).
    #[cfg(unix)]
    #[test]
    fn data_files_beyond_the_open_limit_are_reopened_never_through_a_link() {
        let count = OPEN_FILES + 40;
        let source_dir = tempfile::tempdir().unwrap();
        let root = source_dir.path().join("many");
        fs::create_dir(&root).unwrap();
        for index in 0..count {
            fs::write(root.join(format!("{index:04}")), [index as u8]).unwrap();
        }
        let built = build(&[root], MIN_CHUNK_SIZE).unwrap();
        let target = tempfile::tempdir().unwrap();
        let (partial, _) =
            Partial::open(target.path(), built.layout.clone(), &built.encoded, false).unwrap();
        for index in 0..count {
            let chunk = ChunkBuffer::from(&[index as u8][..]);
            assert_eq!(
                partial.store(index as u64, &chunk).unwrap(),
                Stored::Verified
            );
            assert!(partial.files.open_count() <= OPEN_FILES);
        }
        assert_eq!(partial.files.open_count(), OPEN_FILES);

        // 0.data was closed long ago; a link now in its place is refused.
        let work = work_dir(target.path(), built.layout.id);
        let outside = target.path().join("outside");
        fs::write(&outside, b"keep").unwrap();
        fs::remove_file(work.join("0.data")).unwrap();
        std::os::unix::fs::symlink(&outside, work.join("0.data")).unwrap();
        let chunk = ChunkBuffer::from(&[0u8][..]);
        assert!(matches!(
            partial.store(0, &chunk),
            Err(DiskError::Symlink(_))
        ));
        assert!(matches!(
            partial.finish(|| false),
            Err(DiskError::Symlink(_))
        ));
        assert_eq!(fs::read(&outside).unwrap(), b"keep");

        fs::remove_file(work.join("0.data")).unwrap();
        let chunk = ChunkBuffer::from(&[0u8][..]);
        assert!(
            matches!(partial.store(0, &chunk), Err(DiskError::Io { .. })),
            "a missing data file is not made anew"
        );
        assert!(!work.join("0.data").exists());
    }
}
