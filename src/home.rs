//! The data directory: where a node keeps its identity key and the trackers
//! and peers it has trusted on first use.
//!
//! Chosen by `--home DIR`, else `PUNCHGATE_HOME`, else the platform's data
//! directory (`~/.local/share/punchgate` on Linux). Created owner-only (0700);
//! secret files are written owner-only (0600) through a temporary file and a
//! rename, so a crash never leaves half a key behind. A directory or file
//! found wider (made by an older version, by hand, or under a loose umask)
//! is narrowed when the directory is resolved, with a warning for each
//! ([`make_private`]).
//!
//! This module sits below [`identity`](crate::identity), which keeps its key
//! here; so it does not name `PeerId`, and [`KnownKeys`] takes any id that
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
    #[error("{0} is shared with other users (sticky bit, like /tmp); give punchgate a data directory of its own, e.g. --home {0}/punchgate")]
    SharedDir(String),
    #[error("{0} belongs to another user; give punchgate a data directory of your own")]
    NotYours(String),
    #[error(
        "{} KEY CHANGED for {addr}: remembered {remembered}, it now presents {presented}. \
         Someone may be impersonating the {what}. If the {what} really got a new key, \
         delete its line from {file} and connect again",
        what.to_uppercase()
    )]
    KeyChanged {
        /// `tracker` or `peer`.
        what: &'static str,
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
    for narrowed in make_private(&dir)? {
        tracing::warn!("{narrowed}");
    }
    Ok(dir)
}

/// A directory or file found open to other users and made owner-only.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Narrowed {
    pub path: PathBuf,
    /// Its permission bits before and after.
    pub was: u32,
    pub now: u32,
}

impl Display for Narrowed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} was open to other users (mode {:o}); made it owner-only ({:o})",
            self.path.display(),
            self.was,
            self.now
        )
    }
}

/// Makes the data directory `dir` owner-only (0700) and everything directly
/// in it too (files 0600: the group's and others' bits cleared); returns
/// what it changed. Symbolic links in it are left alone (changing a mode
/// would follow them). A directory shared with others (sticky bit, as
/// `/tmp`) or owned by another user is refused rather than changed.
pub fn make_private(dir: &Path) -> Result<Vec<Narrowed>, HomeError> {
    let mut narrowed = Vec::new();
    #[cfg(unix)]
    {
        use std::os::unix::fs::MetadataExt;
        let metadata = std::fs::metadata(dir).map_err(io_error(dir))?;
        if metadata.mode() & 0o1000 != 0 {
            return Err(HomeError::SharedDir(dir.display().to_string()));
        }
        if metadata.uid() != rustix::process::geteuid().as_raw() {
            return Err(HomeError::NotYours(dir.display().to_string()));
        }
        narrowed.extend(narrow(dir, &metadata)?);
        for entry in std::fs::read_dir(dir).map_err(io_error(dir))? {
            let path = entry.map_err(io_error(dir))?.path();
            let metadata = std::fs::symlink_metadata(&path).map_err(io_error(&path))?;
            if !metadata.file_type().is_symlink() {
                narrowed.extend(narrow(&path, &metadata)?);
            }
        }
    }
    #[cfg(not(unix))]
    let _ = dir;
    Ok(narrowed)
}

/// Makes one file of the data directory owner-only if it is not (a file
/// created by a library that does not ask for 0600, such as the history
/// database).
pub fn make_file_private(path: &Path) -> Result<Option<Narrowed>, HomeError> {
    #[cfg(unix)]
    {
        let metadata = std::fs::symlink_metadata(path).map_err(io_error(path))?;
        if !metadata.file_type().is_symlink() {
            return narrow(path, &metadata);
        }
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(None)
}

/// Clears the group's and others' permission bits of `path`, if any are set.
#[cfg(unix)]
fn narrow(path: &Path, metadata: &std::fs::Metadata) -> Result<Option<Narrowed>, HomeError> {
    use std::os::unix::fs::PermissionsExt;
    let was = metadata.permissions().mode() & 0o7777;
    if was & 0o077 == 0 {
        return Ok(None);
    }
    let now = was & 0o700;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(now)).map_err(io_error(path))?;
    Ok(Some(Narrowed {
        path: path.to_path_buf(),
        was,
        now,
    }))
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

/// Keys trusted on first use, by address: one `ADDR PEERID` line each, in
/// `known_trackers` (trackers given as a bare `host:port`) or `known_peers`
/// (peers connected to by address alone) in the data directory, as ssh's
/// `known_hosts`.
pub struct KnownKeys {
    file: PathBuf,
    /// `tracker` or `peer`, for the refusal.
    what: &'static str,
}

pub const KNOWN_TRACKERS_FILE: &str = "known_trackers";
pub const KNOWN_PEERS_FILE: &str = "known_peers";

/// What [`KnownKeys::check_or_remember`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trust {
    /// The key remembered for the address.
    Known,
    /// A new address: its key is remembered from now on.
    FirstUse,
}

impl KnownKeys {
    /// The trackers' keys in the data directory `home`.
    pub fn trackers(home: &Path) -> Self {
        Self {
            file: home.join(KNOWN_TRACKERS_FILE),
            what: "tracker",
        }
    }

    /// The keys of peers connected to by address, in `home`.
    pub fn peers(home: &Path) -> Self {
        Self {
            file: home.join(KNOWN_PEERS_FILE),
            what: "peer",
        }
    }

    /// The file the keys are kept in.
    pub fn file(&self) -> &Path {
        &self.file
    }

    /// The remembered keys; lines whose id does not read as an `Id` are
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

    /// Accepts `presented` as the key at `addr` if it is the key remembered
    /// for that address, or if the address is new (then remembers it). A
    /// different key is refused with [`HomeError::KeyChanged`].
    ///
    /// `Id` is a [`PeerId`](crate::identity::PeerId).
    pub fn check_or_remember<Id>(&self, addr: &str, presented: Id) -> Result<Trust, HomeError>
    where
        Id: FromStr + Display + PartialEq,
    {
        let key = addr.to_string();
        let mut entries = self.entries::<Id>()?;
        if let Some((_, remembered)) = entries.iter().find(|(a, _)| *a == key) {
            if *remembered == presented {
                return Ok(Trust::Known);
            }
            return Err(HomeError::KeyChanged {
                what: self.what,
                addr: key,
                remembered: remembered.to_string(),
                presented: presented.to_string(),
                file: self.file.display().to_string(),
            });
        }
        // A peer's first use is an event the user sees; a tracker's is not.
        if self.what == "tracker" {
            tracing::warn!(%addr, key = %presented, "trusting a new tracker on first use");
        } else {
            tracing::debug!(%addr, key = %presented, "trusting a new peer on first use");
        }
        entries.push((key, presented));
        let text: String = entries
            .iter()
            .map(|(addr, id)| format!("{addr} {id}\n"))
            .collect();
        write_private(&self.file, text.as_bytes())?;
        Ok(Trust::FirstUse)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tracker_trusted_on_first_use_and_refused_when_its_key_changes() {
        let dir = tempfile::tempdir().unwrap();
        let known = KnownKeys::trackers(dir.path());
        let addr = "127.0.0.1:4000";
        // Any id with a text form will do; nodes pass a `PeerId`
        // (tests/security.rs covers that end to end).
        let first = "first-tracker-key".to_string();
        let other = "other-tracker-key".to_string();
        assert_eq!(
            known.check_or_remember(addr, first.clone()).unwrap(),
            Trust::FirstUse
        );
        assert_eq!(known.check_or_remember(addr, first).unwrap(), Trust::Known);
        let err = known.check_or_remember(addr, other.clone()).unwrap_err();
        assert!(matches!(err, HomeError::KeyChanged { .. }));
        assert!(err.to_string().contains("TRACKER KEY CHANGED"));
        // Another address is independent.
        known
            .check_or_remember("127.0.0.1:4001", other.clone())
            .unwrap();
        // Peers are kept apart from trackers, and named so when refused.
        let peers = KnownKeys::peers(dir.path());
        peers.check_or_remember(addr, other).unwrap();
        let err = peers
            .check_or_remember(addr, "third".to_string())
            .unwrap_err();
        assert!(err.to_string().starts_with("PEER KEY CHANGED"), "{err}");
        assert!(err.to_string().contains("known_peers"), "{err}");
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

    #[cfg(unix)]
    #[test]
    fn a_data_directory_left_open_is_made_owner_only_with_a_notice() {
        use std::os::unix::fs::PermissionsExt;
        let parent = tempfile::tempdir().unwrap();
        let dir = parent.path().join("home");
        std::fs::create_dir(&dir).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        let set = |path: &Path, mode: u32| {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap()
        };
        set(&dir, 0o755);
        let history = dir.join("history.redb");
        std::fs::write(&history, b"x").unwrap();
        set(&history, 0o644);
        let private = dir.join("known_trackers");
        write_private(&private, b"x").unwrap();
        // A link is not followed: its target keeps its mode.
        let outside = parent.path().join("outside");
        std::fs::write(&outside, b"x").unwrap();
        set(&outside, 0o644);
        std::os::unix::fs::symlink(&outside, dir.join("link")).unwrap();

        let resolved = resolve(Some(&dir)).unwrap();
        assert_eq!(resolved, dir);
        assert_eq!(mode(&dir), 0o700);
        assert_eq!(mode(&history), 0o600);
        assert_eq!(mode(&private), 0o600);
        assert_eq!(mode(&outside), 0o644);

        set(&dir, 0o750);
        set(&history, 0o640);
        let narrowed = make_private(&dir).unwrap();
        assert_eq!(narrowed.len(), 2);
        assert!(
            narrowed[0]
                .to_string()
                .contains("was open to other users (mode 750)"),
            "{}",
            narrowed[0]
        );
        assert!(make_private(&dir).unwrap().is_empty(), "nothing left to do");
    }

    #[cfg(unix)]
    #[test]
    fn a_shared_directory_is_refused_as_a_data_directory() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        std::fs::set_permissions(dir.path(), std::fs::Permissions::from_mode(0o1777)).unwrap();
        assert!(matches!(
            make_private(dir.path()),
            Err(HomeError::SharedDir(_))
        ));
        let mode = std::fs::metadata(dir.path()).unwrap().permissions().mode();
        assert_eq!(mode & 0o7777, 0o1777, "left as it was");
    }
}
