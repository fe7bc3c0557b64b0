//! Whether a download is already in place: every file of a manifest under
//! the target, a plain file (no link followed on the way), of the
//! manifest's size, and every chunk matching its hash. `get` run again
//! after it finished then says so instead of refusing to overwrite.
//! Blocks: run it on a blocking thread.

use std::fs::File;
use std::path::{Path, PathBuf};

use super::dir::{Access, Dir, Entry};
use super::manifest::{check_relative_path, Layout};
use super::partial::read_exact_at;

/// The final paths of `layout`'s files under `target` if every one is
/// there and verifies, in manifest order; `None` if any is missing,
/// different, or not reachable without following a link.
pub fn finished_copy(target: &Path, layout: &Layout) -> Option<Vec<PathBuf>> {
    let target = Dir::open(target).ok()?;
    (0..layout.manifest.files.len())
        .map(|index| verified_in_place(&target, layout, index))
        .collect()
}

/// The final path of file `index` of `layout` under `target` if it is
/// there, a plain file reached without following a link, of its size,
/// with every chunk matching its hash.
pub fn verified_in_place(target: &Dir, layout: &Layout, index: usize) -> Option<PathBuf> {
    let entry = layout.manifest.files.get(index)?;
    let (file, path) = open_plain(target, &entry.path)?;
    if file.metadata().ok()?.len() != entry.size {
        return None;
    }
    let mut buffer = Vec::new();
    for chunk in layout.chunks_of(index) {
        let place = layout.place(chunk)?;
        buffer.resize(place.len, 0);
        read_exact_at(&file, &mut buffer, place.offset).ok()?;
        if *blake3::hash(&buffer).as_bytes() != place.hash {
            return None;
        }
    }
    Some(path)
}

/// The plain file at `relative` under `target`, reached without following
/// a link, and its path.
fn open_plain(target: &Dir, relative: &str) -> Option<(File, PathBuf)> {
    let components = check_relative_path(relative).ok()?;
    let (last, folders) = components.split_last()?;
    let mut folder = target.try_clone().ok()?;
    for component in folders {
        folder = folder.subdir(component, None).ok()?;
    }
    if !matches!(folder.entry(last), Ok(Entry::File)) {
        return None;
    }
    let file = folder.open_file(last, Access::Read).ok()?;
    Some((file, folder.path().join(last)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::transfer::manifest;
    use crate::transfer::Share;

    fn shared(dir: &Path) -> Share {
        std::fs::create_dir_all(dir.join("album/inner")).unwrap();
        std::fs::write(dir.join("album/a.bin"), vec![7u8; 70_000]).unwrap();
        std::fs::write(dir.join("album/inner/b.txt"), b"bee").unwrap();
        std::fs::write(dir.join("album/empty"), b"").unwrap();
        Share::from(manifest::build(&[dir.join("album")], 16 * 1024).unwrap())
    }

    #[test]
    fn a_copy_in_place_is_found_and_any_difference_is_not() {
        let source = tempfile::tempdir().unwrap();
        let share = shared(source.path());
        let found = finished_copy(source.path(), &share.layout).unwrap();
        assert_eq!(found.len(), share.layout.manifest.files.len());
        assert!(found.iter().all(|p| p.starts_with(source.path())));

        // One byte changed, same size: not finished.
        let mut bytes = std::fs::read(source.path().join("album/a.bin")).unwrap();
        bytes[40_000] ^= 1;
        std::fs::write(source.path().join("album/a.bin"), &bytes).unwrap();
        assert_eq!(finished_copy(source.path(), &share.layout), None);
        bytes[40_000] ^= 1;
        std::fs::write(source.path().join("album/a.bin"), &bytes).unwrap();
        assert!(finished_copy(source.path(), &share.layout).is_some());

        // A file missing, or longer: not finished.
        std::fs::write(source.path().join("album/inner/b.txt"), b"bees").unwrap();
        assert_eq!(finished_copy(source.path(), &share.layout), None);
        std::fs::remove_file(source.path().join("album/inner/b.txt")).unwrap();
        assert_eq!(finished_copy(source.path(), &share.layout), None);
    }

    #[cfg(unix)]
    #[test]
    fn a_link_on_the_way_is_not_followed() {
        let source = tempfile::tempdir().unwrap();
        let share = shared(source.path());
        // The same content reached through a linked folder does not count.
        let elsewhere = tempfile::tempdir().unwrap();
        std::os::unix::fs::symlink(source.path().join("album"), elsewhere.path().join("album"))
            .unwrap();
        assert_eq!(finished_copy(elsewhere.path(), &share.layout), None);
        // Nor through a linked file.
        let linked = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(linked.path().join("album/inner")).unwrap();
        for name in ["album/a.bin", "album/inner/b.txt", "album/empty"] {
            std::os::unix::fs::symlink(source.path().join(name), linked.path().join(name)).unwrap();
        }
        assert_eq!(finished_copy(linked.path(), &share.layout), None);
    }
}
