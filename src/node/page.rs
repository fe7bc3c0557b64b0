//! What an interface that shows several rooms at once (the web page) needs
//! from the node beyond the REPL's commands: a room's history returned
//! rather than emitted, setting a room's password before joining it, and
//! which rooms have one (the commands that act on one room of several are
//! in chat.rs, files/ and room_passwords.rs, beside their REPL forms). Passwords never
//! leave the node; only the names of password rooms do.

use std::path::PathBuf;

use super::{Event, Node, NodeError};
use crate::pake::Secret;

impl Node {
    /// The display name this node greets peers with.
    pub fn name(&self) -> String {
        self.inner.config.name.clone()
    }

    /// The data directory.
    pub fn home(&self) -> PathBuf {
        self.inner.home.clone()
    }

    /// The joined rooms that have a password here, in the order joined.
    pub fn password_rooms(&self) -> Vec<String> {
        let roster = self.roster();
        roster
            .rooms
            .iter()
            .filter(|room| roster.passwords.contains_key(*room))
            .cloned()
            .collect()
    }

    /// The last `count` messages of `room` (a joined room or a private room
    /// of two), oldest first, as [`Event::Message`]s with `history: true`;
    /// returned to the caller, not emitted.
    pub async fn room_history(&self, room: &str, count: usize) -> Result<Vec<Event>, NodeError> {
        self.inner
            .services
            .chat
            .history_events(room.to_string(), count)
            .await
    }

    /// Joins `room` as a password room: the password is in place before
    /// anyone hears this node is in the room, so no member sees it
    /// unproven. Like `--password` with `--room`.
    pub async fn join_with_password(&self, room: &str, password: Secret) -> Result<(), NodeError> {
        self.install_password(room, password).await;
        if let Err(error) = self.join(room).await {
            let mut roster = self.roster();
            if !roster.rooms.iter().any(|r| r == room) {
                roster.passwords.remove(room);
                roster.room_keys.remove(room);
            }
            return Err(error);
        }
        self.password_room_started(room);
        Ok(())
    }
}
