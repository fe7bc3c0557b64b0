//! A download on disk. Chunks are written, once verified, into per-file data
//! files under `<target>/.punchgate-partial/<content id>/`, and each chunk's
//! index is appended to a log there. A resumed download re-hashes the logged
//! chunks (cheap next to fetching them) and keeps those that still verify, so
//! neither a crash nor a torn log can let an unverified byte through.
//! Finishing syncs the data and moves each file to its final name (never
//! over an existing file without `force`, never through a symbolic link),
//! then removes the work folder. Everything here blocks: run it on a
//! blocking thread.

use std::collections::BTreeSet;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::manifest::{check_relative_path, ContentId, Layout};

/// The folder inside a target directory that holds unfinished downloads.
pub const WORK_DIR: &str = ".punchgate-partial";
const MANIFEST_FILE: &str = "manifest";
const LOG_FILE: &str = "verified";
/// Bytes per log record: a chunk index, little-endian.
const LOG_RECORD: usize = 8;

#[derive(Debug, thiserror::Error)]
pub enum DiskError {
    #[error("cannot {action} {}: {error}", path.display())]
    Io {
        action: &'static str,
        path: PathBuf,
        error: io::Error,
    },
    #[error("{} already exists; pass --force to overwrite it", .0.display())]
    Exists(PathBuf),
    #[error("{} is in the way: it is not a folder", .0.display())]
    NotAFolder(PathBuf),
    #[error("{} is a symbolic link; refusing to write through it", .0.display())]
    Symlink(PathBuf),
    #[error("{} is a folder; refusing to replace it with a file", .0.display())]
    IsAFolder(PathBuf),
    #[error(transparent)]
    Manifest(#[from] super::manifest::ManifestError),
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

/// Bytes hashed at a time while a chunk arrives: large enough for BLAKE3's
/// wide SIMD, small enough that the bytes are still in cache.
const HASH_STEP: usize = 64 << 10;

/// A chunk as it arrives from the network, hashed piece by piece while the
/// pieces are hot in cache. Only [`Partial::store`] reads the result, and
/// only after comparing the hash with the manifest's.
#[derive(Default)]
pub struct ChunkBuffer {
    bytes: Vec<u8>,
    hasher: blake3::Hasher,
    hashed: usize,
}

impl ChunkBuffer {
    /// Empties the buffer for the next chunk, keeping its allocation.
    pub fn clear(&mut self) {
        self.bytes.clear();
        self.hasher.reset();
        self.hashed = 0;
    }

    pub fn len(&self) -> usize {
        self.bytes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    /// Appends `piece`, hashing whatever has reached a full step.
    pub fn extend(&mut self, piece: &[u8]) {
        self.bytes.extend_from_slice(piece);
        if self.bytes.len() - self.hashed >= HASH_STEP {
            self.hasher.update(&self.bytes[self.hashed..]);
            self.hashed = self.bytes.len();
        }
    }

    /// The hash of everything appended.
    fn finish(&mut self) -> blake3::Hash {
        self.hasher.update(&self.bytes[self.hashed..]);
        self.hashed = self.bytes.len();
        self.hasher.finalize()
    }
}

impl From<&[u8]> for ChunkBuffer {
    fn from(bytes: &[u8]) -> Self {
        let mut chunk = Self::default();
        chunk.extend(bytes);
        chunk
    }
}

/// Whether a received chunk was kept.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stored {
    Verified,
    /// Its hash did not match; nothing was written.
    Corrupt,
}

pub struct Partial {
    target: PathBuf,
    work: PathBuf,
    layout: Layout,
    files: Vec<File>,
    log: Mutex<File>,
    force: bool,
}

/// The work folder of content `id` in `target`.
pub fn work_dir(target: &Path, id: ContentId) -> PathBuf {
    target.join(WORK_DIR).join(id.to_string())
}

/// The manifest an earlier run saved, if any (lets a resume start before
/// any source answers).
pub fn saved_manifest(target: &Path, id: ContentId) -> Option<Vec<u8>> {
    fs::read(work_dir(target, id).join(MANIFEST_FILE)).ok()
}

impl Partial {
    /// Starts or resumes the download of `layout` into `target`. Fails at
    /// once if a final name is taken (without `force`) or unusable. Returns
    /// the chunks already verified by an earlier run.
    pub fn open(
        target: &Path,
        layout: Layout,
        encoded: &[u8],
        force: bool,
    ) -> Result<(Self, BTreeSet<u64>), DiskError> {
        for file in &layout.manifest.files {
            check_destination(target, &file.path, force)?;
        }
        let work = work_dir(target, layout.id);
        fs::create_dir_all(&work).map_err(DiskError::io("create", &work))?;
        let manifest_path = work.join(MANIFEST_FILE);
        if fs::read(&manifest_path).ok().as_deref() != Some(encoded) {
            write_synced(&manifest_path, encoded)?;
        }
        let mut files = Vec::with_capacity(layout.manifest.files.len());
        for index in 0..layout.manifest.files.len() {
            let path = work.join(format!("{index}.data"));
            let file = OpenOptions::new()
                .read(true)
                .write(true)
                .create(true)
                .truncate(false)
                .open(&path)
                .map_err(DiskError::io("open", &path))?;
            files.push(file);
        }
        let log_path = work.join(LOG_FILE);
        let mut log = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(&log_path)
            .map_err(DiskError::io("open", &log_path))?;
        let mut records = Vec::new();
        log.read_to_end(&mut records)
            .map_err(DiskError::io("read", &log_path))?;
        let partial = Self {
            target: target.to_path_buf(),
            work,
            layout,
            files,
            log: Mutex::new(log),
            force,
        };
        let have = partial.reverify(&records);
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
                read_exact_at(&self.files[place.file], &mut buffer, place.offset).is_ok()
                    && *blake3::hash(&buffer).as_bytes() == place.hash
            })
            .collect()
    }

    pub fn layout(&self) -> &Layout {
        &self.layout
    }

    /// Verifies chunk `index` and, only if it matches, writes and logs it.
    pub fn store(&self, index: u64, chunk: &mut ChunkBuffer) -> Result<Stored, DiskError> {
        let Some(place) = self.layout.place(index) else {
            return Ok(Stored::Corrupt);
        };
        if chunk.len() != place.len || *chunk.finish().as_bytes() != place.hash {
            return Ok(Stored::Corrupt);
        }
        let data = &chunk.bytes;
        let data_path = || self.work.join(format!("{}.data", place.file));
        write_all_at(&self.files[place.file], data, place.offset)
            .map_err(|error| DiskError::io("write", &data_path())(error))?;
        let log_path = self.work.join(LOG_FILE);
        let mut log = self.log.lock().unwrap_or_else(|p| p.into_inner());
        log.write_all(&index.to_le_bytes())
            .map_err(DiskError::io("write", &log_path))?;
        Ok(Stored::Verified)
    }

    /// Syncs every file to disk and moves each to its final name. Returns
    /// the final paths, in manifest order.
    pub fn finish(&self) -> Result<Vec<PathBuf>, DiskError> {
        let mut finals = Vec::with_capacity(self.files.len());
        for (index, (file, entry)) in self
            .files
            .iter()
            .zip(&self.layout.manifest.files)
            .enumerate()
        {
            let data_path = self.work.join(format!("{index}.data"));
            // Exact size, whatever order the chunks were written in.
            file.set_len(entry.size)
                .map_err(DiskError::io("size", &data_path))?;
            file.sync_all().map_err(DiskError::io("sync", &data_path))?;
            let destination = prepare_destination(&self.target, &entry.path, self.force)?;
            place(&data_path, &destination, self.force)?;
            finals.push(destination);
        }
        sync_dir(&self.target);
        fs::remove_dir_all(&self.work).map_err(DiskError::io("remove", &self.work))?;
        // The shared work folder goes once no other download uses it.
        let _ = fs::remove_dir(self.target.join(WORK_DIR));
        Ok(finals)
    }
}

/// Checks that `relative` can become a file under `target`: each existing
/// folder on the way is a real folder, and the file itself is free (or
/// `force` and a plain file).
fn check_destination(target: &Path, relative: &str, force: bool) -> Result<(), DiskError> {
    let components = check_relative_path(relative)?;
    let mut path = target.to_path_buf();
    for (i, component) in components.iter().enumerate() {
        path.push(component);
        let last = i + 1 == components.len();
        match fs::symlink_metadata(&path) {
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(error) => return Err(DiskError::io("inspect", &path)(error)),
            Ok(meta) if meta.file_type().is_symlink() && !last => {
                return Err(DiskError::Symlink(path))
            }
            Ok(meta) if meta.is_dir() && last => return Err(DiskError::IsAFolder(path)),
            // A file or a link in the final place (a link is replaced, never
            // followed): only --force may replace it.
            Ok(_) if last => {
                return if force {
                    Ok(())
                } else {
                    Err(DiskError::Exists(path))
                }
            }
            Ok(meta) if !meta.is_dir() => return Err(DiskError::NotAFolder(path)),
            Ok(_) => {}
        }
    }
    Ok(())
}

/// Creates the folders of `relative` under `target` one at a time, refusing
/// symbolic links, and returns the final file path.
fn prepare_destination(target: &Path, relative: &str, force: bool) -> Result<PathBuf, DiskError> {
    check_destination(target, relative, force)?;
    let components = check_relative_path(relative)?;
    let mut path = target.to_path_buf();
    for component in &components[..components.len() - 1] {
        path.push(component);
        match fs::create_dir(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
                let meta = fs::symlink_metadata(&path).map_err(DiskError::io("inspect", &path))?;
                if meta.file_type().is_symlink() {
                    return Err(DiskError::Symlink(path));
                }
                if !meta.is_dir() {
                    return Err(DiskError::NotAFolder(path));
                }
            }
            Err(error) => return Err(DiskError::io("create", &path)(error)),
        }
    }
    path.push(components[components.len() - 1]);
    Ok(path)
}

/// Moves `from` to `to`. Without `force` a hard link makes the new name
/// appear only if it is free (atomically), then the old name goes.
fn place(from: &Path, to: &Path, force: bool) -> Result<(), DiskError> {
    if force {
        return fs::rename(from, to).map_err(DiskError::io("move into place", to));
    }
    match fs::hard_link(from, to) {
        Ok(()) => fs::remove_file(from).map_err(DiskError::io("remove", from)),
        Err(error) if error.kind() == io::ErrorKind::AlreadyExists => {
            Err(DiskError::Exists(to.to_path_buf()))
        }
        // A filesystem without hard links: check, then rename.
        Err(_) if fs::symlink_metadata(to).is_err() => {
            fs::rename(from, to).map_err(DiskError::io("move into place", to))
        }
        Err(_) => Err(DiskError::Exists(to.to_path_buf())),
    }
}

fn write_synced(path: &Path, bytes: &[u8]) -> Result<(), DiskError> {
    let mut file = File::create(path).map_err(DiskError::io("create", path))?;
    file.write_all(bytes)
        .map_err(DiskError::io("write", path))?;
    file.sync_all().map_err(DiskError::io("sync", path))
}

/// Makes renames in `dir` durable where the platform allows it.
fn sync_dir(dir: &Path) {
    if let Ok(handle) = File::open(dir) {
        let _ = handle.sync_all();
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

    #[test]
    fn a_chunk_hashed_piece_by_piece_hashes_as_a_whole() {
        let data: Vec<u8> = (0..300_000u32).map(|i| (i * 7 + i / 251) as u8).collect();
        let whole = blake3::hash(&data);
        let mut chunk = ChunkBuffer::default();
        for piece_len in [1, 1200, HASH_STEP - 1, HASH_STEP, HASH_STEP + 1, data.len()] {
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
        assert_eq!(partial.store(0, &mut corrupt).unwrap(), Stored::Corrupt);
        let short = &data[chunk_size..chunk_size * 2 - 1];
        assert_eq!(
            partial.store(1, &mut ChunkBuffer::from(short)).unwrap(),
            Stored::Corrupt
        );
        assert_eq!(
            partial
                .store(7, &mut ChunkBuffer::from(&data[..5]))
                .unwrap(),
            Stored::Corrupt
        );
        let data_file = work_dir(target.path(), built.layout.id).join("0.data");
        assert_eq!(
            fs::metadata(&data_file).unwrap().len(),
            0,
            "nothing written"
        );

        let last = &data[chunk_size * 2..];
        assert_eq!(
            partial.store(2, &mut ChunkBuffer::from(last)).unwrap(),
            Stored::Verified
        );
        drop(partial);
        let (partial, have) =
            Partial::open(target.path(), built.layout, &built.encoded, false).unwrap();
        assert_eq!(have.into_iter().collect::<Vec<_>>(), vec![2]);
        for (index, range) in [(0, 0..chunk_size), (1, chunk_size..chunk_size * 2)] {
            let mut chunk = ChunkBuffer::from(&data[range]);
            assert_eq!(partial.store(index, &mut chunk).unwrap(), Stored::Verified);
        }
        let paths = partial.finish().unwrap();
        assert_eq!(fs::read(&paths[0]).unwrap(), data);
    }
}
