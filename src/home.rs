//! The data directory: where a node keeps its identity key and the trackers it
//! has trusted on first use.
//!
//! Chosen by `--home DIR`, else `PUNCHGATE_HOME`, else the platform's data
//! directory (`~/.local/share/punchgate` on Linux). Created owner-only (0700);
//! secret files are written owner-only (0600) through a temporary file and a
//! rename, so a crash never leaves half a key behind.
//!
//! This module sits below [`identity`](crate::identity), which keeps its key
//! here; so it does not name `PeerId`, and [`KnownTrackers`] takes any id that
//! reads and prints as text.

use std::fmt::Display;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::str::FromStr;

#[derive(Debug, thiserror::Error)]
pub enum HomeError {
    #[error("no data directory: pass --home DIR or set PUNCHGATE_HOME")]
    NoDataDir,
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is readable by other users (mode {mode:o}); run `chmod 600 {path}`")]
    TooOpen { path: String, mode: u32 },
    #[error(
        "TRACKER KEY CHANGED for {addr}: remembered {remembered}, it now presents {presented}. \
         Someone may be impersonating the tracker. If the tracker really got a new key, \
         delete its line from {file} and connect again"
    )]
    TrackerKeyChanged {
        addr: String,
        /// The remembered id, in its text form.
        remembered: String,
        /// The presented id, in its text form.
        presented: String,
        file: String,
    },
}

fn io_error(path: &Path) -> impl FnOnce(std::io::Error) -> HomeError + '_ {
    move |source| HomeError::Io {
        path: path.display().to_string(),
        source,
    }
}

/// Resolves the data directory (explicit choice, then the platform default)
/// and makes sure it exists with owner-only permissions.
pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, HomeError> {
    let dir = match explicit {
        Some(dir) => dir.to_path_buf(),
        None => dirs::data_dir()
            .ok_or(HomeError::NoDataDir)?
            .join("punchgate"),
    };
    create_private_dir(&dir)?;
    Ok(dir)
}

fn create_private_dir(dir: &Path) -> Result<(), HomeError> {
    let mut builder = std::fs::DirBuilder::new();
    builder.recursive(true);
    #[cfg(unix)]
    {
        use std::os::unix::fs::DirBuilderExt;
        builder.mode(0o700);
    }
    builder.create(dir).map_err(io_error(dir))
}

/// Reads a secret file; `None` when it does not exist yet. Refuses a file other
/// users can read, as ssh does.
pub fn read_private(path: &Path) -> Result<Option<Vec<u8>>, HomeError> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error(path)(e)),
    };
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        let mode = std::fs::metadata(path)
            .map_err(io_error(path))?
            .permissions()
            .mode();
        if mode & 0o077 != 0 {
            return Err(HomeError::TooOpen {
                path: path.display().to_string(),
                mode: mode & 0o777,
            });
        }
    }
    Ok(Some(bytes))
}

/// Writes a file owner-only and atomically (temporary file, fsync, rename).
pub fn write_private(path: &Path, contents: &[u8]) -> Result<(), HomeError> {
    let dir = path.parent().unwrap_or(Path::new("."));
    create_private_dir(dir)?;
    let mut file = tempfile::NamedTempFile::new_in(dir).map_err(io_error(dir))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        file.as_file()
            .set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(io_error(path))?;
    }
    file.write_all(contents).map_err(io_error(path))?;
    file.as_file().sync_all().map_err(io_error(path))?;
    file.persist(path).map_err(|e| io_error(path)(e.error))?;
    Ok(())
}

/// Trackers trusted on first use: one `ADDR PEERID` line per tracker, in
/// `known_trackers` in the data directory.
pub struct KnownTrackers {
    file: PathBuf,
}

pub const KNOWN_TRACKERS_FILE: &str = "known_trackers";

impl KnownTrackers {
    pub fn in_home(home: &Path) -> Self {
        Self {
            file: home.join(KNOWN_TRACKERS_FILE),
        }
    }

    /// The remembered trackers; lines whose id does not read as an `Id` are
    /// skipped (and dropped at the next write).
    fn entries<Id: FromStr>(&self) -> Result<Vec<(String, Id)>, HomeError> {
        let text = match std::fs::read_to_string(&self.file) {
            Ok(text) => text,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(io_error(&self.file)(e)),
        };
        Ok(text
            .lines()
            .filter_map(|line| {
                let (addr, id) = line.trim().split_once(' ')?;
                Some((addr.to_string(), id.trim().parse().ok()?))
            })
            .collect())
    }

    /// Accepts `presented` as the tracker at `addr` if it is the key remembered
    /// for that address, or if the address is new (then remembers it). A
    /// different key is refused with [`HomeError::TrackerKeyChanged`].
    ///
    /// `Id` is the tracker's [`PeerId`](crate::identity::PeerId).
    pub fn check_or_remember<Id>(&self, addr: &str, presented: Id) -> Result<(), HomeError>
    where
        Id: FromStr + Display + PartialEq,
    {
        let key = addr.to_string();
        let mut entries = self.entries::<Id>()?;
        if let Some((_, remembered)) = entries.iter().find(|(a, _)| *a == key) {
            if *remembered == presented {
                return Ok(());
            }
            return Err(HomeError::TrackerKeyChanged {
                addr: key,
                remembered: remembered.to_string(),
                presented: presented.to_string(),
                file: self.file.display().to_string(),
            });
        }
        tracing::warn!(%addr, tracker = %presented, "trusting a new tracker on first use");
        entries.push((key, presented));
        let text: String = entries
            .iter()
            .map(|(addr, id)| format!("{addr} {id}\n"))
            .collect();
        write_private(&self.file, text.as_bytes())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_trusted_on_first_use_and_refused_when_its_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownTrackers::in_home(dir.path());
        let addr = "127.0.0.1:4000";
        // Any id with a text form will do; nodes pass a `PeerId`
        // (tests/security.rs covers that end to end).
        let first = "first-tracker-key".to_string();
        let other = "other-tracker-key".to_string();
        known.check_or_remember(addr, first.clone()).unwrap();
        known.check_or_remember(addr, first).unwrap();
        let err = known.check_or_remember(addr, other.clone()).unwrap_err();
        assert!(matches!(err, HomeError::TrackerKeyChanged { .. }));
        assert!(err.to_string().contains("TRACKER KEY CHANGED"));
        // Another address is independent.
        known.check_or_remember("127.0.0.1:4001", other).unwrap();
    }

    #[cfg(unix)]
    #[test]
    fn secret_readable_by_others_is_refused() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("secret");
        write_private(&path, b"x").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o644)).unwrap();
        assert!(matches!(
            read_private(&path),
            Err(HomeError::TooOpen { .. })
        ));
    }
}
