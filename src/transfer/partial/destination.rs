//! Checking, before a download starts, that each file of a manifest can
//! get its final name under the target: every existing folder on the way
//! is a real folder (never a link), and the name itself is free (or, with
//! `force`, anything but a folder). Each folder is looked at once for the
//! whole manifest, however many files it holds, and a folder found missing
//! ends the check of everything below it: for a fresh download of 100,000
//! files that is one lookup, not 100,000 walks.

use std::collections::HashMap;

use super::{refusal, DiskError};
use crate::transfer::dir::{Dir, Entry};
use crate::transfer::manifest::check_relative_path;

/// The folders looked at so far, by their components under the target:
/// `Some` an opened folder, `None` missing (so is everything below).
pub(super) struct Destinations<'a> {
    target: &'a Dir,
    force: bool,
    folders: HashMap<Vec<String>, Option<Dir>>,
}

impl<'a> Destinations<'a> {
    pub(super) fn new(target: &'a Dir, force: bool) -> Self {
        Self {
            target,
            force,
            folders: HashMap::new(),
        }
    }

    /// Checks that `relative` can become a file under the target. Nothing
    /// is followed and nothing is created.
    pub(super) fn check(&mut self, relative: &str) -> Result<(), DiskError> {
        let components = check_relative_path(relative)?;
        let Some((last, parents)) = components.split_last() else {
            return Ok(());
        };
        let Some(dir) = self.folder(parents)? else {
            return Ok(()); // a folder on the way is missing: the name is free
        };
        let path = dir.path().join(last);
        match dir.entry(last) {
            Ok(Entry::Missing) => Ok(()),
            Ok(Entry::Folder) => Err(DiskError::IsAFolder(path)),
            // A file or a link in the final place (a link is replaced, never
            // followed): only --force may replace it.
            Ok(_) if self.force => Ok(()),
            Ok(_) => Err(DiskError::Exists(path)),
            Err(error) => Err(DiskError::io("inspect", &path)(error)),
        }
    }

    /// The folder at `path` under the target, `None` if it (or a folder
    /// above it) is missing; a link or a non-folder on the way is refused.
    fn folder(&mut self, path: &[&str]) -> Result<Option<&Dir>, DiskError> {
        // The deepest folder on the way already looked at.
        let mut depth = path.len();
        let mut key: Vec<String> = path.iter().map(|c| c.to_string()).collect();
        while depth > 0 && !self.folders.contains_key(&key[..depth]) {
            depth -= 1;
        }
        if depth > 0 && self.folders[&key[..depth]].is_none() {
            return Ok(None);
        }
        for end in depth + 1..=key.len() {
            let parent = match end {
                1 => self.target,
                _ => match &self.folders[&key[..end - 1]] {
                    Some(dir) => dir,
                    None => return Ok(None),
                },
            };
            let name = &key[end - 1];
            let path = parent.path().join(name);
            let found = match parent.entry(name) {
                Ok(Entry::Missing) => None,
                Ok(Entry::Folder) => Some(
                    parent
                        .subdir(name, None)
                        .map_err(|error| refusal(parent, name, "open", error))?,
                ),
                Ok(Entry::Symlink) => return Err(DiskError::Symlink(path)),
                Ok(_) => return Err(DiskError::NotAFolder(path)),
                Err(error) => return Err(DiskError::io("inspect", &path)(error)),
            };
            let missing = found.is_none();
            self.folders.insert(key[..end].to_vec(), found);
            if missing {
                return Ok(None);
            }
        }
        key.truncate(path.len());
        Ok(match key.is_empty() {
            true => Some(self.target),
            false => self.folders.get(&key).and_then(Option::as_ref),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn checked(target: &std::path::Path, paths: &[&str], force: bool) -> Vec<String> {
        let dir = Dir::open(target).unwrap();
        let mut destinations = Destinations::new(&dir, force);
        paths
            .iter()
            .map(|p| match destinations.check(p) {
                Ok(()) => "free".to_string(),
                Err(DiskError::Exists(_)) => "exists".to_string(),
                Err(DiskError::IsAFolder(_)) => "folder".to_string(),
                Err(DiskError::NotAFolder(_)) => "not a folder".to_string(),
                Err(DiskError::Symlink(_)) => "link".to_string(),
                Err(other) => other.to_string(),
            })
            .collect()
    }

    #[test]
    fn each_name_is_judged_as_a_walk_of_its_own_would_judge_it() {
        let target = tempfile::tempdir().unwrap();
        let root = target.path();
        fs::create_dir_all(root.join("a/b")).unwrap();
        fs::write(root.join("a/b/taken"), b"x").unwrap();
        fs::write(root.join("a/file"), b"x").unwrap();
        fs::create_dir_all(root.join("a/b/dir")).unwrap();
        let paths = [
            "a/b/free",
            "a/b/taken",
            "a/b/dir",
            "a/file/below",
            "a/missing/x/y",
            "a/missing/z",
            "top",
            "a/b/taken",
        ];
        let expected = [
            "free",
            "exists",
            "folder",
            "not a folder",
            "free",
            "free",
            "free",
            "exists",
        ];
        assert_eq!(checked(root, &paths, false), expected);
        let forced = checked(root, &paths, true);
        assert_eq!(forced[1], "free");
        assert_eq!(forced[2], "folder", "never a folder, even forced");
    }

    #[cfg(unix)]
    #[test]
    fn a_link_on_the_way_or_in_the_final_place_is_never_followed() {
        let target = tempfile::tempdir().unwrap();
        let elsewhere = tempfile::tempdir().unwrap();
        fs::write(elsewhere.path().join("inside"), b"x").unwrap();
        let root = target.path();
        std::os::unix::fs::symlink(elsewhere.path(), root.join("linked")).unwrap();
        fs::create_dir(root.join("real")).unwrap();
        std::os::unix::fs::symlink(elsewhere.path().join("inside"), root.join("real/name"))
            .unwrap();
        let paths = ["linked/inside", "linked/other", "real/name"];
        assert_eq!(checked(root, &paths, false), ["link", "link", "exists"]);
        // Forced, a link in the final place is replaced, never followed.
        assert_eq!(checked(root, &paths, true)[2], "free");
    }
}
