//! Names of peers remembered across runs: `peer_names` in the data
//! directory, one `PEERID NAME` line per peer, owner-only like the rest.
//! A peer this run has not met yet (an author in the history shown on
//! start, a member listed by nobody now) is shown by the name it last
//! used, not by a raw id. Names are what their owners chose, so they are
//! shown beside a short id as everywhere else; this file only saves typing
//! and guessing, it proves nothing.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use crate::home::{self, HomeError};
use crate::identity::PeerId;
use crate::protocol::{validate_label, MAX_NAME_LEN};

/// The file's name in the data directory.
pub const PEER_NAMES_FILE: &str = "peer_names";

/// Peers remembered, at most: beyond, the file stops growing (the names
/// of peers met later are still shown while they are known this run).
const MAX_REMEMBERED: usize = 10_000;

#[derive(Default)]
pub(super) struct KnownNames {
    /// Where they are kept; `None` keeps them in memory only (tests).
    file: Option<PathBuf>,
    names: HashMap<PeerId, String>,
}

impl KnownNames {
    /// The names remembered in `home`; an unreadable or damaged file is
    /// an empty list (it is rewritten at the next new name).
    pub fn load(home: &Path) -> Self {
        let file = home.join(PEER_NAMES_FILE);
        let names = match home::read_private(&file) {
            Ok(Some(bytes)) => parse(&String::from_utf8_lossy(&bytes)),
            Ok(None) => HashMap::new(),
            Err(error) => {
                tracing::warn!("{error}; peer names start afresh");
                HashMap::new()
            }
        };
        Self {
            file: Some(file),
            names,
        }
    }

    pub fn get(&self, peer: &PeerId) -> Option<&String> {
        self.names.get(peer)
    }

    /// Remembers `name` for `peer`; returns the file and its new text when
    /// that changed something to write.
    pub fn remember(&mut self, peer: PeerId, name: &str) -> Option<(PathBuf, String)> {
        if validate_label("name", name, MAX_NAME_LEN).is_err()
            || self.names.get(&peer).is_some_and(|known| known == name)
            || (!self.names.contains_key(&peer) && self.names.len() >= MAX_REMEMBERED)
        {
            return None;
        }
        self.names.insert(peer, name.to_string());
        let file = self.file.clone()?;
        let mut lines: Vec<String> = self
            .names
            .iter()
            .map(|(peer, name)| format!("{peer} {name}\n"))
            .collect();
        lines.sort();
        Some((file, lines.concat()))
    }
}

impl super::Node {
    /// Remembers the name `peer` uses now, for later runs.
    pub(super) fn remember_name(&self, peer: PeerId, name: &str) {
        let changed = self.roster().known_names.remember(peer, name);
        if let Some((file, text)) = changed {
            // Rare (a new peer, a new name) and small: written in place.
            if let Err(error) = save(&file, &text) {
                tracing::warn!("cannot remember peer names: {error}");
            }
        }
    }
}

/// Writes the names file (see [`KnownNames::remember`]).
fn save(file: &Path, text: &str) -> Result<(), HomeError> {
    home::write_private(file, text.as_bytes())
}

fn parse(text: &str) -> HashMap<PeerId, String> {
    text.lines()
        .filter_map(|line| {
            let (peer, name) = line.split_once(' ')?;
            let name = name.trim();
            validate_label("name", name, MAX_NAME_LEN).ok()?;
            Some((peer.parse().ok()?, name.to_string()))
        })
        .take(MAX_REMEMBERED)
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn names_survive_a_restart_and_bad_lines_are_skipped() {
        let home = tempfile::tempdir().unwrap();
        let alice = Identity::generate().unwrap().peer_id();
        let mut names = KnownNames::load(home.path());
        let (file, text) = names.remember(alice, "alice").unwrap();
        save(&file, &text).unwrap();
        assert!(names.remember(alice, "alice").is_none(), "nothing new");
        let mut text = std::fs::read_to_string(&file).unwrap();
        text.push_str("not-an-id bob\n");
        home::write_private(&file, text.as_bytes()).unwrap();
        let again = KnownNames::load(home.path());
        assert_eq!(again.get(&alice).map(String::as_str), Some("alice"));
        assert_eq!(again.names.len(), 1);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }

    #[test]
    fn a_name_that_is_no_valid_label_is_not_remembered() {
        let mut names = KnownNames::default();
        let peer = Identity::generate().unwrap().peer_id();
        assert!(names.remember(peer, "two\nlines").is_none());
        assert!(names.get(&peer).is_none());
    }
}
