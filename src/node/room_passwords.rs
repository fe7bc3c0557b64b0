//! Room passwords kept across runs when the user asks (`/password
//! --remember PW`, `chat --remember-password`): `room_passwords` in the
//! data directory, owner-only (0600) like the identity key, one
//! `ROOM<TAB>PASSWORD` line per room (a room name holds no control
//! character, so the first tab ends it). Without asking, a password lives
//! only as long as the process, and the user is told so. Also the node's
//! commands that make a room a password room.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use super::{auth, Event, Node, NodeError};
use crate::home::{self, HomeError};
use crate::pake::Secret;

/// The file's name in the data directory.
pub const ROOM_PASSWORDS_FILE: &str = "room_passwords";

/// The passwords remembered in the data directory `home`, by room.
pub fn load(home: &Path) -> Result<HashMap<String, Secret>, HomeError> {
    let Some(bytes) = home::read_private(&home.join(ROOM_PASSWORDS_FILE))? else {
        return Ok(HashMap::new());
    };
    Ok(String::from_utf8_lossy(&bytes)
        .lines()
        .filter_map(|line| line.split_once('\t'))
        .filter(|(room, password)| !room.is_empty() && !password.is_empty())
        .map(|(room, password)| (room.to_string(), Secret::new(password)))
        .collect())
}

/// Remembers `password` for `room` in `home` (replacing an older one);
/// returns the file.
pub fn save(home: &Path, room: &str, password: &Secret) -> Result<PathBuf, HomeError> {
    let mut all = load(home)?;
    all.insert(room.to_string(), password.clone());
    let mut lines: Vec<String> = all
        .iter()
        .map(|(room, password)| format!("{room}\t{}\n", password.expose()))
        .collect();
    lines.sort();
    let file = home.join(ROOM_PASSWORDS_FILE);
    home::write_private(&file, lines.concat().as_bytes())?;
    Ok(file)
}

/// The file `room`'s password is remembered in, if `password` is the one
/// remembered (a different one given now holds only until the process
/// ends, and the next start would use the remembered one).
pub fn remembered_in(home: &Path, room: &str, password: &Secret) -> Option<PathBuf> {
    let file = home.join(ROOM_PASSWORDS_FILE);
    (load(home).ok()?.get(room) == Some(password)).then_some(file)
}

impl Node {
    /// Makes the current room a password room: from now on only peers that
    /// prove `password` share it. Proofs start with every connected peer in
    /// the room.
    pub async fn set_password(&self, password: Secret) -> Result<(), NodeError> {
        let room = self.current_room()?;
        self.set_password_in(&room, password).await
    }

    /// Makes `room` (joined) a password room, whatever the current room is.
    pub async fn set_password_in(&self, room: &str, password: Secret) -> Result<(), NodeError> {
        let room = self.joined_room(room)?;
        self.install_password(&room, password).await;
        self.password_room_started(&room);
        Ok(())
    }

    /// Gives `room` its password and key; every peer proves it anew.
    pub(super) async fn install_password(&self, room: &str, password: Secret) {
        let keys = auth::derive_room_keys(&[(room.to_string(), password.clone())].into()).await;
        let mut roster = self.roster();
        roster.passwords.insert(room.to_string(), password);
        roster.room_keys.extend(keys);
        for record in roster.peers.values_mut() {
            record.verified.remove(room);
        }
        drop(roster);
        self.dht_rooms_changed();
    }

    /// Tells the user `room` is a password room (and whether its password
    /// outlives this process) and starts the proofs with every connected
    /// peer.
    pub(super) fn password_room_started(&self, room: &str) {
        let password = self.roster().passwords.get(room).cloned();
        let kept = password.and_then(|password| remembered_in(&self.inner.home, room, &password));
        let lasts = match kept {
            Some(file) => format!("remembered in {} for the next start", file.display()),
            None => {
                "it is forgotten when this chat ends (/password --remember PW keeps it)".to_string()
            }
        };
        self.emit(Event::Info {
            message: format!(
                "#{room} is a password room: peers share it once they prove the password; {lasts}"
            ),
        });
        let gates = self.roster().open_gates();
        for gate in gates {
            self.inner.services.auth.authenticate_all(&gate);
        }
    }

    /// `/password --remember PW`: keeps the password in the data directory
    /// for the next start, then makes the current room a password room (see
    /// [`Node::set_password`]).
    pub async fn set_and_remember_password(&self, password: Secret) -> Result<(), NodeError> {
        let room = self.current_room()?;
        self.set_and_remember_password_in(&room, password).await
    }

    /// `/password --remember PW` for `room` (joined), whatever the current
    /// room is.
    pub async fn set_and_remember_password_in(
        &self,
        room: &str,
        password: Secret,
    ) -> Result<(), NodeError> {
        let room = self.joined_room(room)?;
        if password.expose().contains(['\n', '\r']) {
            return Err(NodeError::Invalid(
                "a password to remember must be one line".into(),
            ));
        }
        save(&self.inner.home, &room, &password)?;
        self.set_password_in(&room, password).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_remembered_password_is_read_back_and_kept_owner_only() {
        let home = tempfile::tempdir().unwrap();
        assert!(load(home.path()).unwrap().is_empty());
        save(home.path(), "vault", &Secret::new("pass word\twith tab")).unwrap();
        let file = save(home.path(), "lobby", &Secret::new("x")).unwrap();
        save(home.path(), "lobby", &Secret::new("y")).unwrap();
        let all = load(home.path()).unwrap();
        assert_eq!(all.len(), 2);
        assert_eq!(all["vault"].expose(), "pass word\twith tab");
        assert_eq!(all["lobby"].expose(), "y");
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(&file).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
    }
}
