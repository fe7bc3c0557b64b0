//! What an interface that shows several rooms at once (the web page) needs
//! from the node beyond the REPL's commands: a room's history returned
//! rather than emitted, choosing the current room, setting a room's
//! password before joining it, and which rooms have one. Passwords never
//! leave the node; only the names of password rooms do.

use std::path::PathBuf;

use super::{auth, Event, Node, NodeError};
use crate::hlc;
use crate::pake::Secret;
use crate::store::StoreError;

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
        let state = self.state();
        state
            .rooms
            .iter()
            .filter(|room| state.passwords.contains_key(*room))
            .cloned()
            .collect()
    }

    /// Makes `room` (joined) the current room: plain lines, `/send`,
    /// `/password` and `/history` act on it from now on.
    pub fn switch_room(&self, room: &str) -> Result<(), NodeError> {
        let mut state = self.state();
        let Some(index) = state.rooms.iter().position(|r| r == room) else {
            return Err(NodeError::Invalid(format!(
                "room {room}: not joined; /join it first"
            )));
        };
        let room = state.rooms.remove(index);
        state.rooms.push(room);
        Ok(())
    }

    /// The last `count` messages of `room` (a joined room or a private room
    /// of two), oldest first, as [`Event::Message`]s with `history: true`;
    /// returned to the caller, not emitted.
    pub async fn room_history(&self, room: &str, count: usize) -> Result<Vec<Event>, NodeError> {
        let store = self.inner.store.clone();
        let wanted = room.to_string();
        let messages = tokio::task::spawn_blocking(move || store.history(&wanted, count))
            .await
            .map_err(|e| StoreError::Database(e.to_string()))??;
        let me = self.peer_id();
        let state = self.state();
        Ok(messages
            .into_iter()
            .map(|message| {
                let body = message.body;
                let from_name = if body.id.author == me {
                    self.inner.config.name.clone()
                } else {
                    state
                        .peers
                        .get(&body.id.author)
                        .map(|r| r.name.clone())
                        .unwrap_or_else(|| body.id.author.short())
                };
                Event::Message {
                    id: body.id.to_string(),
                    from: body.id.author.to_string(),
                    from_name,
                    room: body.room,
                    text: body.text,
                    ts: hlc::millis_of(body.hlc),
                    history: true,
                }
            })
            .collect())
    }

    /// Joins `room` as a password room: the password is in place before
    /// anyone hears this node is in the room, so no member sees it
    /// unproven. Like `--password` with `--room`.
    pub async fn join_with_password(&self, room: &str, password: Secret) -> Result<(), NodeError> {
        let keys = auth::derive_room_keys(&[(room.to_string(), password.clone())].into()).await;
        {
            let mut state = self.state();
            state.passwords.insert(room.to_string(), password);
            state.room_keys.extend(keys);
            for record in state.peers.values_mut() {
                record.verified.remove(room);
            }
        }
        if let Err(error) = self.join(room).await {
            let mut state = self.state();
            if !state.rooms.iter().any(|r| r == room) {
                state.passwords.remove(room);
                state.room_keys.remove(room);
            }
            return Err(error);
        }
        self.emit(Event::Info {
            message: format!(
                "#{room} is a password room: peers share it once they prove the password"
            ),
        });
        for gate in self.open_gates() {
            self.authenticate_all(&gate);
        }
        Ok(())
    }
}
