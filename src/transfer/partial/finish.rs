//! Finishing a download: every data file at its exact size and durable,
//! then each moved to its final name, then the new names durable. Built for
//! folders of many small files: the data is made durable in one step (one
//! `syncfs` on Linux where there are many files, not an fsync each), the
//! folders on the way are opened once each, and each folder is synced once
//! at the end. A stop asked for between two files ends it early; the same
//! download opened again finds the files already moved (verified at their
//! final names) and finishes the rest.

use std::collections::{BTreeMap, HashMap};
use std::path::PathBuf;

use super::{
    data_name, open_folder, open_work_file, place, refusal, DiskError, Partial, FOLDER_MODE,
    LOG_FILE, MANIFEST_FILE, WORK_DIR,
};
use crate::transfer::dir::{Access, Dir, Entry, Facts};
use crate::transfer::finished::verified_in_place;
use crate::transfer::manifest::{check_relative_path, ContentId, Layout};

/// Up to this many files, each is synced on its own; beyond, the whole
/// filesystem once (Linux), which costs one flush instead of one per file.
const SYNC_EACH_UP_TO: usize = 16;

/// Whether `target` holds the work folder of `id` from an earlier run
/// (looked at without following links and without creating anything).
pub(super) fn unfinished_work_exists(target: &Dir, id: ContentId) -> bool {
    target
        .subdir(WORK_DIR, None)
        .and_then(|parts| parts.entry(&id.to_string()))
        .is_ok_and(|entry| entry == Entry::Folder)
}

/// Of the files whose final names were `taken`, those an interrupted finish
/// moved there: their data file is gone from the work folder and what has
/// the final name verifies. Any other taken name is refused.
pub(super) fn already_placed(
    target: &Dir,
    work: &Dir,
    layout: &Layout,
    taken: Vec<(usize, PathBuf)>,
) -> Result<BTreeMap<usize, PathBuf>, DiskError> {
    let mut placed = BTreeMap::new();
    for (index, path) in taken {
        let moved = work.entry(&data_name(index)).ok() == Some(Entry::Missing);
        match verified_in_place(target, layout, index).filter(|_| moved) {
            Some(final_path) => placed.insert(index, final_path),
            None => return Err(DiskError::Exists(path)),
        };
    }
    Ok(placed)
}

impl Partial {
    /// The chunks of files already in place.
    pub(super) fn placed_chunks(&self) -> impl Iterator<Item = u64> + '_ {
        self.placed
            .keys()
            .flat_map(|index| self.layout.chunks_of(*index))
    }

    /// Makes every file durable and moves each to its final name; returns
    /// the final paths, in manifest order. `stop`, asked between files,
    /// ends it with [`DiskError::Interrupted`] when it says so, leaving a
    /// state that the same download opened again finishes.
    ///
    /// The data is durable before any file has its final name, so that a
    /// crash leaves at a final name only bytes that verify (which the
    /// download opened again recognizes as its own).
    pub fn finish(&self, stop: impl Fn() -> bool) -> Result<Vec<PathBuf>, DiskError> {
        let started = std::time::Instant::now();
        let entries = &self.layout.manifest.files;
        let waiting: Vec<usize> = (0..entries.len())
            .filter(|index| !self.placed.contains_key(index))
            .collect();
        // Many files: one flush of the whole filesystem before the moves
        // and one after, instead of one per file and one per folder.
        let many = waiting.len() > SYNC_EACH_UP_TO && cfg!(target_os = "linux");
        for &index in &waiting {
            if stop() {
                return Err(DiskError::Interrupted);
            }
            let size = entries[index].size;
            // A file with bytes is whole once its last chunk is written;
            // with many files its size is checked as it is moved.
            if many && size > 0 {
                continue;
            }
            let data_path = self.work.path().join(data_name(index));
            // An empty file was never written: it is made here.
            let file = self
                .files
                .take(index, || self.open_data_file(index, true))?;
            file.set_len(size)
                .map_err(DiskError::io("size", &data_path))?;
            if !many {
                file.sync_all().map_err(DiskError::io("sync", &data_path))?;
            }
        }
        if many {
            self.work
                .sync_filesystem()
                .map_err(DiskError::io("sync", self.work.path()))?;
        }
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "finish: data sized and synced"
        );
        let mut folders = Folders::new(&self.target)?;
        let mut finals: BTreeMap<usize, PathBuf> = self.placed.clone();
        for &index in &waiting {
            if stop() {
                return Err(DiskError::Interrupted);
            }
            let name = data_name(index);
            let components = check_relative_path(&entries[index].path)?;
            let (last, parents) = components
                .split_last()
                .ok_or_else(|| DiskError::NotAFolder(self.target.path().to_path_buf()))?;
            let folder = folders.open(parents)?;
            let destination = folder.path().join(last);
            let facts = self.ready_to_place(index, &name)?;
            place(&self.work, &name, folder, last, self.force)?;
            // Compared by device and inode with what was checked.
            if !folder
                .holds(last, &facts)
                .map_err(DiskError::io("inspect", &destination))?
            {
                return Err(DiskError::Replaced(destination));
            }
            finals.insert(index, destination);
        }
        tracing::debug!(ms = started.elapsed().as_millis(), "finish: files moved");
        if many {
            // Best effort, as a folder's own sync is.
            let _ = self.target.sync_filesystem();
        } else {
            folders.sync_all();
            self.target.sync();
        }
        tracing::debug!(ms = started.elapsed().as_millis(), "finish: folders synced");
        for name in [MANIFEST_FILE, LOG_FILE] {
            self.work
                .remove_file(name)
                .map_err(DiskError::io("remove", &self.work.path().join(name)))?;
        }
        let id = self.layout.id.to_string();
        self.parts
            .remove_dir(&id)
            .map_err(DiskError::io("remove", self.work.path()))?;
        // The shared work folder goes once no other download uses it.
        let _ = self.target.remove_dir(WORK_DIR);
        tracing::debug!(ms = started.elapsed().as_millis(), "finish: done");
        Ok(finals.into_values().collect())
    }
}

impl Partial {
    /// Checks that data file `index` (named `name`) is a plain file with
    /// one name and of its exact size, looked at without opening it; one
    /// of another size (only if something else changed the work folder) is
    /// made exact and durable on its own.
    fn ready_to_place(&self, index: usize, name: &str) -> Result<Facts, DiskError> {
        let path = self.work.path().join(name);
        let facts = self
            .work
            .stat(name)
            .map_err(|error| refusal(&self.work, name, "inspect", error))?;
        match facts.entry {
            Entry::File => {}
            Entry::Symlink => return Err(DiskError::Symlink(path)),
            _ => return Err(DiskError::NotAFile(path)),
        }
        if facts.links > 1 {
            return Err(DiskError::Linked(path));
        }
        let size = self.layout.manifest.files[index].size;
        if facts.len != size {
            let file = open_work_file(&self.work, name, Access::Modify)?;
            file.set_len(size)
                .and_then(|()| file.sync_all())
                .map_err(DiskError::io("size", &path))?;
        }
        Ok(facts)
    }
}

/// The folders files are moved into, each opened (and created if missing,
/// never through a link) once, by its path under the target.
struct Folders {
    opened: HashMap<Vec<String>, Dir>,
}

impl Folders {
    fn new(target: &Dir) -> Result<Self, DiskError> {
        let root = target
            .try_clone()
            .map_err(DiskError::io("open", target.path()))?;
        Ok(Self {
            opened: HashMap::from([(Vec::new(), root)]),
        })
    }

    /// The folder at `path` under the target.
    fn open(&mut self, path: &[&str]) -> Result<&Dir, DiskError> {
        let key: Vec<String> = path.iter().map(|c| c.to_string()).collect();
        if !self.opened.contains_key(&key) {
            // The nearest folder on the way already open, then the rest.
            let mut depth = key.len();
            while !self.opened.contains_key(&key[..depth]) {
                depth -= 1;
            }
            for end in depth + 1..=key.len() {
                let parent = &self.opened[&key[..end - 1]];
                let child = open_folder(parent, &key[end - 1], FOLDER_MODE)?;
                self.opened.insert(key[..end].to_vec(), child);
            }
        }
        self.opened
            .get(&key)
            .ok_or_else(|| DiskError::NotAFolder(PathBuf::from(key.join("/"))))
    }

    /// Makes the new names in every folder durable.
    fn sync_all(&self) {
        for folder in self.opened.values() {
            folder.sync();
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;
    use std::fs;
    use std::path::Path;

    use super::*;
    use crate::transfer::manifest::{build, Built, MIN_CHUNK_SIZE};
    use crate::transfer::partial::ChunkBuffer;

    /// A folder of `count` small files in nested folders, shared.
    fn folder(count: usize) -> (tempfile::TempDir, Built) {
        let source = tempfile::tempdir().unwrap();
        for index in 0..count {
            let dir = source.path().join(format!("album/d{}", index % 7));
            fs::create_dir_all(&dir).unwrap();
            fs::write(dir.join(format!("f{index}")), vec![index as u8; index * 13]).unwrap();
        }
        let built = build(&[source.path().join("album")], MIN_CHUNK_SIZE).unwrap();
        (source, built)
    }

    /// Opens the download of `built` in `target` and stores every chunk
    /// not already verified.
    fn fetched(source: &Path, built: &Built, target: &Path) -> Partial {
        let (partial, have) =
            Partial::open(target, built.layout.clone(), &built.encoded, false).unwrap();
        for index in 0..built.layout.total_chunks {
            if have.contains(&index) {
                continue;
            }
            let place = built.layout.place(index).unwrap();
            let entry = &built.layout.manifest.files[place.file];
            let bytes = fs::read(source.join(&entry.path)).unwrap();
            let chunk = ChunkBuffer::from(&bytes[place.offset as usize..][..place.len]);
            partial.store(index, &chunk).unwrap();
        }
        partial
    }

    fn same_tree(source: &Path, target: &Path, built: &Built) {
        for entry in &built.layout.manifest.files {
            assert_eq!(
                fs::read(target.join(&entry.path)).unwrap(),
                fs::read(source.join(&entry.path)).unwrap(),
                "{}",
                entry.path
            );
        }
    }

    #[test]
    fn a_finish_stopped_anywhere_is_finished_by_opening_the_download_again() {
        let (source, built) = folder(60);
        let files = built.layout.manifest.files.len();
        // Stopped before anything moved, in the middle, and just before
        // the last file.
        for stop_after in [0, files / 2, files - 1] {
            let target = tempfile::tempdir().unwrap();
            let partial = fetched(source.path(), &built, target.path());
            // The first pass (sizes) asks once per file, then the moves.
            let asked = Cell::new(0);
            let stop = || {
                asked.set(asked.get() + 1);
                asked.get() > files + stop_after
            };
            assert!(matches!(partial.finish(stop), Err(DiskError::Interrupted)));
            drop(partial);
            let moved = built
                .layout
                .manifest
                .files
                .iter()
                .filter(|e| target.path().join(&e.path).exists())
                .count();
            assert_eq!(moved, stop_after);

            // Opened again: the moved files are kept (their chunks count as
            // verified, none fetched again) and the rest are finished.
            let (partial, have) =
                Partial::open(target.path(), built.layout.clone(), &built.encoded, false).unwrap();
            assert_eq!(have.len() as u64, built.layout.total_chunks);
            let paths = partial.finish(|| false).unwrap();
            assert_eq!(paths.len(), files);
            assert!(paths.iter().all(|p| p.starts_with(target.path())));
            same_tree(source.path(), target.path(), &built);
            assert!(!target.path().join(WORK_DIR).exists());
        }
    }

    #[test]
    fn a_file_put_at_a_final_name_after_an_interruption_is_not_taken_for_ours() {
        let (source, built) = folder(30);
        let files = built.layout.manifest.files.len();
        let target = tempfile::tempdir().unwrap();
        let partial = fetched(source.path(), &built, target.path());
        let asked = Cell::new(0);
        let stop = || {
            asked.set(asked.get() + 1);
            asked.get() > files + 3
        };
        assert!(matches!(partial.finish(stop), Err(DiskError::Interrupted)));
        drop(partial);
        // Someone changes one that moved, and puts a file where one that
        // did not move goes.
        let moved = &built.layout.manifest.files[0].path;
        fs::write(target.path().join(moved), b"not it").unwrap();
        let refused = Partial::open(target.path(), built.layout.clone(), &built.encoded, false);
        assert!(matches!(refused, Err(DiskError::Exists(_))));
        fs::remove_file(target.path().join(moved)).unwrap();
        let unmoved = &built.layout.manifest.files[files - 1].path;
        fs::create_dir_all(target.path().join(unmoved).parent().unwrap()).unwrap();
        fs::write(target.path().join(unmoved), b"planted").unwrap();
        let refused = Partial::open(target.path(), built.layout.clone(), &built.encoded, false);
        assert!(matches!(refused, Err(DiskError::Exists(_))));
        assert_eq!(fs::read(target.path().join(unmoved)).unwrap(), b"planted");
    }

    #[test]
    fn without_an_earlier_run_a_taken_name_is_refused_and_no_work_folder_made() {
        let (source, built) = folder(20);
        let target = tempfile::tempdir().unwrap();
        let first = &built.layout.manifest.files[0].path;
        fs::create_dir_all(target.path().join(first).parent().unwrap()).unwrap();
        // Even the very bytes offered, without a download under way, are
        // not taken over: `get` reports those complete before opening.
        fs::copy(source.path().join(first), target.path().join(first)).unwrap();
        let refused = Partial::open(target.path(), built.layout.clone(), &built.encoded, false);
        assert!(matches!(refused, Err(DiskError::Exists(_))));
        assert!(!target.path().join(WORK_DIR).exists());
    }
}
