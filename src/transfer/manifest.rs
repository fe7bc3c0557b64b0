//! What a shared set of files is: each file's relative path, size and the
//! BLAKE3 hash of each of its chunks. The BLAKE3 hash of the encoded manifest
//! is the content id, so a manifest that hashes to the id asked for is the
//! one its sender built. Building a manifest reads files (blocking: call it
//! from a blocking thread). [`Manifest::check`] is what a receiver runs on a
//! manifest from the network: it refuses every name that could leave the
//! target directory and every size that does not add up.

use std::fs::File;
use std::io::{self, Read};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::protocol::is_deceptive_char;
pub use crate::protocol::{ContentId, MAX_MANIFEST_LEN};
use crate::wire::{self, WireError};

/// Chunk size of new manifests: large enough that per-chunk costs vanish
/// against the bytes, small enough that a resumed or refetched chunk is cheap.
pub const DEFAULT_CHUNK_SIZE: u32 = 1 << 20;
/// Bounds on a manifest's chunk size (a power of two between them).
pub const MIN_CHUNK_SIZE: u32 = 16 << 10;
pub const MAX_CHUNK_SIZE: u32 = 16 << 20;
/// Most files in one manifest.
pub const MAX_FILES: usize = 100_000;
/// Limits on received names, as common filesystems have them.
const MAX_COMPONENT_LEN: usize = 255;
const MAX_DEPTH: usize = 64;
const MAX_PATH_LEN: usize = 4096;
const MAX_DISPLAY_NAME_LEN: usize = 255;

/// A chunk's BLAKE3 hash.
pub type ChunkHash = [u8; 32];

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// What the sender shared, for display only (never used as a path):
    /// the one top-level name, or the first of several with a count.
    pub name: String,
    pub chunk_size: u32,
    /// Sorted by path. At most [`MAX_FILES`], refused while decoding: a
    /// list of many tiny entries would take far more memory than bytes.
    #[serde(deserialize_with = "at_most_max_files")]
    pub files: Vec<FileEntry>,
}

/// Decodes a manifest's file list, refusing it as soon as it has more than
/// [`MAX_FILES`] entries.
fn at_most_max_files<'de, D: serde::Deserializer<'de>>(
    decoder: D,
) -> Result<Vec<FileEntry>, D::Error> {
    struct Files;
    impl<'de> serde::de::Visitor<'de> for Files {
        type Value = Vec<FileEntry>;

        fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
            write!(f, "at most {MAX_FILES} file entries")
        }

        fn visit_seq<A: serde::de::SeqAccess<'de>>(
            self,
            mut seq: A,
        ) -> Result<Self::Value, A::Error> {
            let too_many = || serde::de::Error::custom(format!("more than {MAX_FILES} files"));
            let announced = seq.size_hint().unwrap_or(0);
            if announced > MAX_FILES {
                return Err(too_many());
            }
            // Room for what arrives, not for what was announced.
            let mut files = Vec::with_capacity(announced.min(1024));
            while let Some(entry) = seq.next_element()? {
                if files.len() == MAX_FILES {
                    return Err(too_many());
                }
                files.push(entry);
            }
            Ok(files)
        }
    }
    decoder.deserialize_seq(Files)
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileEntry {
    /// Relative path, components joined by `/`.
    pub path: String,
    pub size: u64,
    /// One hash per chunk; the last chunk may be short; none for an empty file.
    pub chunks: Vec<ChunkHash>,
}

/// Why a received manifest was refused (a broken or hostile sender).
#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("the manifest does not hash to the content id asked for")]
    WrongHash,
    #[error("unsafe file name {path:?}: {reason}")]
    UnsafeName { path: String, reason: &'static str },
    #[error("file {path:?} of {size} bytes should have {expected} chunk hashes, has {got}")]
    ChunkCount {
        path: String,
        size: u64,
        expected: u64,
        got: usize,
    },
    #[error("chunk size {0} is not a power of two between 16 KiB and 16 MiB")]
    ChunkSize(u32),
    #[error("{0:?} appears twice, or both as a file and as a folder")]
    Conflict(String),
    #[error("the manifest lists no files")]
    Empty,
    #[error("the manifest lists more than {MAX_FILES} files")]
    TooManyFiles,
    #[error("bad display name: {0}")]
    BadName(String),
    #[error("malformed manifest: {0}")]
    Malformed(String),
}

impl From<WireError> for ManifestError {
    fn from(error: WireError) -> Self {
        ManifestError::Malformed(error.to_string())
    }
}

/// Where a chunk lives: which file, at which offset, how long, its hash.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ChunkPlace {
    pub file: usize,
    pub offset: u64,
    pub len: usize,
    pub hash: ChunkHash,
}

/// A checked manifest with its chunks numbered across all files (file by
/// file, in order), so the rest of the transfer deals in one index.
#[derive(Clone, Debug)]
pub struct Layout {
    pub manifest: Manifest,
    pub id: ContentId,
    /// The index of each file's first chunk.
    first_chunk: Vec<u64>,
    pub total_chunks: u64,
    pub total_bytes: u64,
}

impl Layout {
    /// Decodes and checks a manifest that must hash to `id`.
    pub fn from_wire(id: ContentId, encoded: &[u8]) -> Result<Self, ManifestError> {
        if ContentId::of_manifest(encoded) != id {
            return Err(ManifestError::WrongHash);
        }
        let manifest = Manifest::decode(encoded)?;
        manifest.check()?;
        Ok(Self::new(id, manifest))
    }

    /// Lays out a manifest that passed [`Manifest::check`].
    fn new(id: ContentId, manifest: Manifest) -> Self {
        let mut first_chunk = Vec::with_capacity(manifest.files.len());
        let mut total_chunks = 0u64;
        let mut total_bytes = 0u64;
        for file in &manifest.files {
            first_chunk.push(total_chunks);
            total_chunks += file.chunks.len() as u64;
            total_bytes += file.size;
        }
        Self {
            manifest,
            id,
            first_chunk,
            total_chunks,
            total_bytes,
        }
    }

    /// Where chunk `index` lives; `None` past the last chunk.
    pub fn place(&self, index: u64) -> Option<ChunkPlace> {
        if index >= self.total_chunks {
            return None;
        }
        // The last file whose first chunk is at or before `index`: an empty
        // file shares its successor's first index, so it is never the last.
        let file = self.first_chunk.partition_point(|first| *first <= index) - 1;
        let entry = &self.manifest.files[file];
        let within = index - self.first_chunk[file];
        let chunk_size = u64::from(self.manifest.chunk_size);
        let offset = within * chunk_size;
        let len = (entry.size - offset).min(chunk_size) as usize;
        Some(ChunkPlace {
            file,
            offset,
            len,
            hash: *entry.chunks.get(within as usize)?,
        })
    }

    /// The range of chunk indices of `file`.
    /// The bytes of chunks `first` to `first + count - 1`, if they exist.
    pub fn run_len(&self, first: u64, count: u64) -> Option<u64> {
        if count == 0 || first.checked_add(count)? > self.total_chunks {
            return None;
        }
        (first..first + count)
            .map(|i| self.place(i).map(|p| p.len as u64))
            .sum()
    }

    pub fn chunks_of(&self, file: usize) -> std::ops::Range<u64> {
        let first = self.first_chunk[file];
        first..first + self.manifest.files[file].chunks.len() as u64
    }
}

impl Manifest {
    /// The manifest's encoding: its BLAKE3 hash is the content id.
    pub fn encode(&self) -> Result<Vec<u8>, WireError> {
        wire::encode_value("manifest", self)
    }

    /// Decodes a manifest; trailing bytes are an error (they would change
    /// the content id without changing the content).
    pub fn decode(bytes: &[u8]) -> Result<Self, WireError> {
        wire::decode_value("manifest", bytes)
    }

    /// Checks everything a receiver relies on: safe relative names, no name
    /// twice, chunk counts that match the sizes.
    pub fn check(&self) -> Result<(), ManifestError> {
        if !self.chunk_size.is_power_of_two()
            || !(MIN_CHUNK_SIZE..=MAX_CHUNK_SIZE).contains(&self.chunk_size)
        {
            return Err(ManifestError::ChunkSize(self.chunk_size));
        }
        if self.name.is_empty()
            || self.name.len() > MAX_DISPLAY_NAME_LEN
            || self.name.chars().any(is_deceptive_char)
        {
            return Err(ManifestError::BadName(format!("{:?}", self.name)));
        }
        if self.files.is_empty() {
            return Err(ManifestError::Empty);
        }
        if self.files.len() > MAX_FILES {
            return Err(ManifestError::TooManyFiles);
        }
        let chunk_size = u64::from(self.chunk_size);
        for file in &self.files {
            check_relative_path(&file.path)?;
            let expected = file.size.div_ceil(chunk_size);
            if expected != file.chunks.len() as u64 {
                return Err(ManifestError::ChunkCount {
                    path: file.path.clone(),
                    size: file.size,
                    expected,
                    got: file.chunks.len(),
                });
            }
        }
        // In sorted order a folder's files follow it directly, so a file that
        // is also a folder ("a" and "a/b") or a name twice shows up between
        // neighbours.
        let mut paths: Vec<&str> = self.files.iter().map(|f| f.path.as_str()).collect();
        paths.sort_unstable();
        for pair in paths.windows(2) {
            let (a, b) = (pair[0], pair[1]);
            if a == b || b.strip_prefix(a).is_some_and(|rest| rest.starts_with('/')) {
                return Err(ManifestError::Conflict(a.to_string()));
            }
        }
        // "a/b" sorted after "a.txt" hides "a" behind "a.txt": check prefixes too.
        let files: std::collections::HashSet<&str> = paths.iter().copied().collect();
        for path in &paths {
            let mut end = 0;
            while let Some(slash) = path[end..].find('/') {
                end += slash;
                if files.contains(&path[..end]) {
                    return Err(ManifestError::Conflict(path[..end].to_string()));
                }
                end += 1;
            }
        }
        Ok(())
    }

    pub fn total_bytes(&self) -> u64 {
        self.files.iter().map(|f| f.size).sum()
    }
}

/// Checks a received relative path and returns its components.
pub fn check_relative_path(path: &str) -> Result<Vec<&str>, ManifestError> {
    let unsafe_name = |reason| ManifestError::UnsafeName {
        path: path.to_string(),
        reason,
    };
    if path.starts_with('/') {
        return Err(unsafe_name("absolute path"));
    }
    if path.len() > MAX_PATH_LEN {
        return Err(unsafe_name("path too long"));
    }
    let components: Vec<&str> = path.split('/').collect();
    if components.len() > MAX_DEPTH {
        return Err(unsafe_name("too many nested folders"));
    }
    for component in &components {
        check_component(component).map_err(unsafe_name)?;
    }
    Ok(components)
}

/// One path component that is safe to create on any common filesystem.
fn check_component(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("empty component");
    }
    if name == "." || name == ".." {
        return Err("`.` or `..` component");
    }
    if name.len() > MAX_COMPONENT_LEN {
        return Err("component longer than 255 bytes");
    }
    if name.contains('\0') {
        return Err("NUL byte");
    }
    if name.contains('\\') {
        return Err("backslash (a Windows path separator)");
    }
    if name.len() >= 2 && name.as_bytes()[1] == b':' && name.as_bytes()[0].is_ascii_alphabetic() {
        return Err("drive letter");
    }
    if name.chars().any(is_deceptive_char) {
        return Err("control or invisible character");
    }
    if is_device_name(name) {
        return Err("reserved device name");
    }
    Ok(())
}

/// Names Windows treats as devices, with or without an extension.
fn is_device_name(name: &str) -> bool {
    let stem = name.split('.').next().unwrap_or(name).trim_end();
    let upper = stem.to_ascii_uppercase();
    matches!(
        upper.as_str(),
        "CON" | "PRN" | "AUX" | "NUL" | "CONIN$" | "CONOUT$"
    ) || ((upper.starts_with("COM") || upper.starts_with("LPT"))
        && upper.len() == 4
        && upper.as_bytes()[3].is_ascii_digit())
}

/// A manifest built from local files, with where each entry's bytes are.
pub struct Built {
    pub layout: Layout,
    pub encoded: Vec<u8>,
    /// The local file of each manifest entry, in manifest order.
    pub sources: Vec<PathBuf>,
}

/// Why local files could not be shared.
#[derive(Debug, thiserror::Error)]
pub enum BuildError {
    #[error("cannot read {path}: {error}")]
    Io { path: PathBuf, error: io::Error },
    #[error("cannot share {path}: {reason}")]
    Unshareable { path: PathBuf, reason: String },
    #[error("this share has {files} files; one share carries at most {MAX_FILES}: send it in parts, or pack the files into an archive")]
    TooManyFiles { files: usize },
    #[error("this share's manifest would be {} MiB; one share carries at most {} MiB (about 500,000 chunks): send it in parts", len.div_ceil(1 << 20), MAX_MANIFEST_LEN >> 20)]
    ManifestTooLarge { len: usize },
    #[error(transparent)]
    Manifest(#[from] ManifestError),
}

/// Builds the manifest of `paths` (files or folders; a folder keeps its
/// layout under its own name). Symbolic links inside folders are skipped so
/// a share never reaches outside what was named. Blocking.
pub fn build(paths: &[PathBuf], chunk_size: u32) -> Result<Built, BuildError> {
    let mut found: Vec<(String, PathBuf)> = Vec::new();
    for path in paths {
        let io_error = |error| BuildError::Io {
            path: path.clone(),
            error,
        };
        let metadata = std::fs::metadata(path).map_err(io_error)?;
        let name = local_name(path, path.file_name().map(Path::new))?;
        if metadata.is_dir() {
            walk(path, &name, &mut found)?;
        } else if metadata.is_file() {
            found.push((name, path.clone()));
        } else {
            return Err(BuildError::Unshareable {
                path: path.clone(),
                reason: "not a file or folder".into(),
            });
        }
    }
    carryable(found.len(), 0)?;
    found.sort_by(|a, b| a.0.cmp(&b.0));
    let display = match paths {
        [one] => local_name(one, one.file_name().map(Path::new))?,
        [first, ..] => format!(
            "{} and {} more",
            local_name(first, first.file_name().map(Path::new))?,
            paths.len() - 1
        ),
        [] => return Err(ManifestError::Empty.into()),
    };
    let mut files = Vec::with_capacity(found.len());
    for (name, source) in &found {
        files.push(hash_file(name, source, chunk_size)?);
    }
    let manifest = Manifest {
        name: display,
        chunk_size,
        files,
    };
    manifest.check()?;
    let encoded = manifest.encode().map_err(ManifestError::from)?;
    carryable(found.len(), encoded.len())?;
    let id = ContentId::of_manifest(&encoded);
    Ok(Built {
        layout: Layout::new(id, manifest),
        encoded,
        sources: found.into_iter().map(|(_, path)| path).collect(),
    })
}

/// A local path component as a manifest name, or why it cannot be one.
/// Refuses a share larger than the protocol carries: too many files (known
/// before hashing), or a manifest over [`MAX_MANIFEST_LEN`].
fn carryable(files: usize, manifest_len: usize) -> Result<(), BuildError> {
    if files > MAX_FILES {
        return Err(BuildError::TooManyFiles { files });
    }
    if manifest_len > MAX_MANIFEST_LEN {
        return Err(BuildError::ManifestTooLarge { len: manifest_len });
    }
    Ok(())
}

fn local_name(path: &Path, name: Option<&Path>) -> Result<String, BuildError> {
    let unshareable = |reason: &str| BuildError::Unshareable {
        path: path.to_path_buf(),
        reason: reason.to_string(),
    };
    let name = name.ok_or_else(|| unshareable("it has no file name"))?;
    let text = name
        .to_str()
        .ok_or_else(|| unshareable("its name is not valid UTF-8"))?;
    check_component(text).map_err(unshareable)?;
    Ok(text.to_string())
}

fn walk(dir: &Path, prefix: &str, found: &mut Vec<(String, PathBuf)>) -> Result<(), BuildError> {
    let io_error = |error| BuildError::Io {
        path: dir.to_path_buf(),
        error,
    };
    let mut entries: Vec<_> = std::fs::read_dir(dir)
        .map_err(io_error)?
        .collect::<Result<_, _>>()
        .map_err(io_error)?;
    entries.sort_by_key(|e| e.file_name());
    for entry in entries {
        let path = entry.path();
        let name = format!(
            "{prefix}/{}",
            local_name(&path, Some(Path::new(&entry.file_name())))?
        );
        let kind = entry.file_type().map_err(io_error)?;
        if kind.is_dir() {
            walk(&path, &name, found)?;
        } else if kind.is_file() {
            found.push((name, path));
        } else {
            tracing::debug!(path = %path.display(), "not shared: not a regular file");
        }
    }
    Ok(())
}

/// Hashes one file chunk by chunk.
fn hash_file(name: &str, path: &Path, chunk_size: u32) -> Result<FileEntry, BuildError> {
    let io_error = |error| BuildError::Io {
        path: path.to_path_buf(),
        error,
    };
    let mut file = File::open(path).map_err(io_error)?;
    let mut buffer = vec![0u8; chunk_size as usize];
    let mut chunks = Vec::new();
    let mut size = 0u64;
    loop {
        let filled = read_up_to(&mut file, &mut buffer).map_err(io_error)?;
        if filled == 0 {
            break;
        }
        chunks.push(*blake3::hash(&buffer[..filled]).as_bytes());
        size += filled as u64;
        if filled < buffer.len() {
            break;
        }
    }
    Ok(FileEntry {
        path: name.to_string(),
        size,
        chunks,
    })
}

/// Fills `buffer` unless the file ends first; returns how much was read.
pub fn read_up_to(file: &mut impl Read, buffer: &mut [u8]) -> io::Result<usize> {
    let mut filled = 0;
    while filled < buffer.len() {
        match file.read(&mut buffer[filled..]) {
            Ok(0) => break,
            Ok(n) => filled += n,
            Err(error) if error.kind() == io::ErrorKind::Interrupted => {}
            Err(error) => return Err(error),
        }
    }
    Ok(filled)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn manifest(paths: &[&str]) -> Manifest {
        Manifest {
            name: "test".into(),
            chunk_size: MIN_CHUNK_SIZE,
            files: paths
                .iter()
                .map(|p| FileEntry {
                    path: p.to_string(),
                    size: 1,
                    chunks: vec![[0; 32]],
                })
                .collect(),
        }
    }

    #[test]
    fn hostile_names_are_refused() {
        for hostile in [
            "../../x",
            "a/../../x",
            "/etc/passwd",
            "a/./b",
            "a//b",
            "nul\0byte",
            "back\\slash",
            "C:evil",
            "CON",
            "aux.txt",
            "com1",
            "LPT9.log",
            "right\u{202e}txt.exe",
            "tab\there",
            "",
            "trailing/",
        ] {
            assert!(
                manifest(&[hostile]).check().is_err(),
                "{hostile:?} accepted"
            );
        }
        for fine in [
            "a",
            "a b/c.txt",
            "Zoë/☕.md",
            ".hidden",
            "a..b",
            "console.log",
            "com10",
        ] {
            assert_eq!(manifest(&[fine]).check(), Ok(()), "{fine:?}");
        }
    }

    #[test]
    fn a_name_twice_or_as_file_and_folder_is_refused() {
        assert!(manifest(&["a", "a"]).check().is_err());
        assert!(manifest(&["a", "a/b"]).check().is_err());
        assert!(manifest(&["a", "a.txt", "a/b"]).check().is_err());
        assert_eq!(manifest(&["a.txt", "a/b", "ab"]).check(), Ok(()));
    }

    #[test]
    fn chunk_counts_must_match_sizes() {
        let mut m = manifest(&["a"]);
        m.files[0].size = u64::from(MIN_CHUNK_SIZE) + 1;
        assert!(matches!(m.check(), Err(ManifestError::ChunkCount { .. })));
        m.files[0].chunks.push([1; 32]);
        assert_eq!(m.check(), Ok(()));
        m.files[0].size = 0;
        m.files[0].chunks.clear();
        assert_eq!(m.check(), Ok(()));
        m.chunk_size = 1000;
        assert!(matches!(m.check(), Err(ManifestError::ChunkSize(1000))));
    }

    #[test]
    fn layout_numbers_chunks_across_files_and_skips_empty_ones() {
        let size = u64::from(MIN_CHUNK_SIZE);
        let m = Manifest {
            name: "t".into(),
            chunk_size: MIN_CHUNK_SIZE,
            files: vec![
                FileEntry {
                    path: "a".into(),
                    size: size + 5,
                    chunks: vec![[1; 32], [2; 32]],
                },
                FileEntry {
                    path: "b".into(),
                    size: 0,
                    chunks: vec![],
                },
                FileEntry {
                    path: "c".into(),
                    size: 7,
                    chunks: vec![[3; 32]],
                },
            ],
        };
        m.check().unwrap();
        let encoded = m.encode().unwrap();
        let id = ContentId::of_manifest(&encoded);
        let layout = Layout::from_wire(id, &encoded).unwrap();
        assert_eq!(layout.total_chunks, 3);
        assert_eq!(layout.total_bytes, size + 12);
        let places: Vec<_> = (0..3).map(|i| layout.place(i).unwrap()).collect();
        assert_eq!(
            (places[0].file, places[0].offset, places[0].len),
            (0, 0, size as usize)
        );
        assert_eq!(
            (places[1].file, places[1].offset, places[1].len),
            (0, size, 5)
        );
        assert_eq!(
            (
                places[2].file,
                places[2].offset,
                places[2].len,
                places[2].hash
            ),
            (2, 0, 7, [3; 32])
        );
        assert_eq!(layout.place(3), None);
        assert_eq!(layout.chunks_of(1), 2..2);
        let mut tampered = encoded.clone();
        tampered[0] ^= 1;
        assert!(matches!(
            Layout::from_wire(id, &tampered),
            Err(ManifestError::WrongHash)
        ));
    }

    #[test]
    fn shares_larger_than_the_protocol_carries_are_refused_with_a_reason() {
        carryable(MAX_FILES, MAX_MANIFEST_LEN).unwrap();
        let files = carryable(MAX_FILES + 1, 0).unwrap_err().to_string();
        assert!(
            files.contains("at most 100000") && files.contains("in parts"),
            "{files}"
        );
        let size = carryable(1, MAX_MANIFEST_LEN + 1).unwrap_err().to_string();
        assert!(
            size.contains("17 MiB") && size.contains("at most 16 MiB"),
            "{size}"
        );
    }

    #[test]
    fn a_manifest_listing_more_than_max_files_is_refused_while_decoding() {
        let entry = FileEntry {
            path: String::new(),
            size: 0,
            chunks: vec![],
        };
        let mut big = manifest(&["a"]);
        big.files = vec![entry; MAX_FILES + 1];
        let encoded = big.encode().unwrap();
        let error = Manifest::decode(&encoded).unwrap_err().to_string();
        assert!(error.contains("more than 100000 files"), "{error}");
        big.files.truncate(MAX_FILES);
        assert_eq!(Manifest::decode(&big.encode().unwrap()).unwrap(), big);
    }

    #[test]
    fn content_ids_round_trip_as_text() {
        let id = ContentId([7; 32]);
        assert_eq!(id.to_string().len(), 52);
        assert_eq!(id.to_string().parse::<ContentId>(), Ok(id));
        assert!("nonsense".parse::<ContentId>().is_err());
    }
}
