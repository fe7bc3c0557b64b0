//! The narrow context a service works in: who this node is, the shared
//! [`Roster`], the event stream (with rate-limited notices about peers),
//! the node task's inputs, and the node's task set. Services (chat, sync,
//! password proofs, files) get this and their own state, never the node.

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Instant;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::driver::Input;
use super::events::MemberChange as Change;
use super::notices::{self, MemberBudget, Notices};
use super::roster::{MemberChange, Roster};
use super::Event;
use crate::identity::PeerId;

#[derive(Clone)]
pub(super) struct Context {
    /// This node's id.
    pub me: PeerId,
    roster: Arc<Mutex<Roster>>,
    events: mpsc::UnboundedSender<Event>,
    notices: Arc<Mutex<Notices>>,
    /// Join and leave notices each peer may still cause.
    member_budget: Arc<Mutex<MemberBudget>>,
    inputs: mpsc::UnboundedSender<Input>,
    tasks: TaskTracker,
    stop: CancellationToken,
}

impl Context {
    pub fn new(
        me: PeerId,
        roster: Roster,
        events: mpsc::UnboundedSender<Event>,
        inputs: mpsc::UnboundedSender<Input>,
    ) -> Self {
        Self {
            me,
            roster: Arc::new(Mutex::new(roster)),
            events,
            notices: Arc::default(),
            member_budget: Arc::default(),
            inputs,
            tasks: TaskTracker::new(),
            stop: CancellationToken::new(),
        }
    }

    pub fn roster(&self) -> MutexGuard<'_, Roster> {
        self.roster.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Adds `event` to the node's event stream, after every event before it.
    pub fn emit(&self, event: Event) {
        // Nobody listening is fine: a library user may not want events.
        let _ = self.events.send(event);
    }

    /// An error about what `peer` did, shown at most once per
    /// [`notices::NOTICE_INTERVAL`] for the same peer and `kind`, with how
    /// many like it were not shown.
    pub fn peer_error(&self, peer: PeerId, kind: &'static str, text: String) {
        let admitted = self
            .notices
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .admit(peer, kind, Instant::now());
        if let Some(held_back) = admitted {
            self.emit(Event::error(notices::with_held_back(text, held_back)));
        }
    }

    /// Hands what happened to the node task; false once it has stopped
    /// (after shutdown nobody listens, which is fine).
    pub fn input(&self, input: Input) -> bool {
        self.inputs.send(input).is_ok()
    }

    /// The peer's name as the user knows it, or its short id.
    pub fn name_of(&self, peer: &PeerId) -> String {
        self.roster().name_of(peer)
    }

    /// Tells the user `peer` joined or left rooms of this node (a burst,
    /// then a few a minute: see [`MemberBudget`]).
    pub fn member_changes(&self, peer: &PeerId, changes: Vec<MemberChange>) {
        if changes.is_empty() {
            return;
        }
        let name = self.name_of(peer);
        for MemberChange { room, joined } in changes {
            let admitted = self
                .member_budget
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .admit(*peer, Instant::now());
            if !admitted {
                continue;
            }
            self.emit(Event::Member {
                room,
                peer_id: peer.to_string(),
                name: name.clone(),
                change: if joined { Change::Joined } else { Change::Left },
            });
        }
    }

    /// Runs `task` as one of the node's tasks: tracked, so that shutdown
    /// waits for it, and stopped by the shutdown signal wherever it waits.
    pub fn spawn<F>(&self, task: F)
    where
        F: std::future::Future + Send + 'static,
        F::Output: Send,
    {
        let stop = self.stop.clone();
        self.tasks.spawn(async move {
            tokio::select! {
                () = stop.cancelled() => {}
                _ = task => {}
            }
        });
    }

    /// The node's task set, for shutdown to close and await.
    pub fn tasks(&self) -> &TaskTracker {
        &self.tasks
    }

    /// Stops every task at its next await.
    pub fn stop(&self) {
        self.stop.cancel();
    }
}
