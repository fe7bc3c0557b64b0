//! The sources of one running fetch: the chunk-stream workers of each, which
//! sources still deliver, and why each one that stopped did. A source whose
//! last worker ended is lost (its connection died, it lacks the content, it
//! sent a corrupt chunk); a lost source that offers the content again (its
//! peer came back) is revived, a corrupt one never is.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::task::JoinSet;

use super::super::gate::Gate;
use super::fetch::Fetch;
use super::Node;
use crate::identity::PeerId;
use crate::transfer::schedule::SourceId;

/// What the fetch loop learns when a worker ends.
pub(super) struct SourceLost {
    pub peer: PeerId,
    /// Why its streams stopped, in words.
    pub reason: String,
    /// The connection that replaced the one its streams ran on (two
    /// connections at once, one closed as a duplicate): the source goes on
    /// there rather than being lost.
    pub replacement: Option<Arc<Gate>>,
}

/// One source, by its [`SourceId`] in the schedule.
struct Slot {
    peer: PeerId,
    /// The connection its workers run on.
    connection: usize,
    /// Workers still running for it.
    workers: usize,
    /// The first reason one of its workers gave for stopping.
    reason: Option<String>,
}

pub(super) struct Sources {
    node: Node,
    fetch: Arc<Fetch>,
    /// Chunk streams per source.
    streams: usize,
    workers: JoinSet<Result<(), String>>,
    /// The source each worker task serves.
    served_by: HashMap<tokio::task::Id, SourceId>,
    slots: Vec<Slot>,
}

impl Sources {
    pub fn new(node: Node, fetch: Arc<Fetch>, streams: usize) -> Self {
        Self {
            node,
            fetch,
            streams: streams.max(1),
            workers: JoinSet::new(),
            served_by: HashMap::new(),
            slots: Vec::new(),
        }
    }

    /// Starts fetching from `gate`'s peer: a new source, or a lost one
    /// back. Returns whether it started (not if it is delivering already or
    /// was dropped for a corrupt chunk).
    pub fn add(&mut self, gate: Arc<Gate>) -> bool {
        let known = self.slots.iter().position(|s| s.peer == gate.peer_id);
        let source = match known {
            Some(source) if self.slots[source].workers > 0 => return false,
            Some(source) => {
                if !self.fetch.schedule().revive(source) {
                    return false;
                }
                self.slots[source].reason = None;
                self.slots[source].connection = gate.connection.stable_id();
                source
            }
            None => {
                let source = self.fetch.schedule().add_source();
                debug_assert_eq!(source, self.slots.len());
                self.slots.push(Slot {
                    peer: gate.peer_id,
                    connection: gate.connection.stable_id(),
                    workers: 0,
                    reason: None,
                });
                source
            }
        };
        for _ in 0..self.streams {
            let (node, fetch, gate) = (self.node.clone(), self.fetch.clone(), gate.clone());
            let task = self
                .workers
                .spawn(async move { node.fetch_worker(fetch, gate, source).await });
            self.served_by.insert(task.id(), source);
        }
        self.slots[source].workers = self.streams;
        true
    }

    /// Sources with workers running.
    pub fn delivering(&self) -> usize {
        self.slots.iter().filter(|s| s.workers > 0).count()
    }

    /// Whether no worker runs.
    pub fn is_idle(&self) -> bool {
        self.workers.is_empty()
    }

    /// Waits for a worker to end (forever while none runs); returns the
    /// source if that was its last worker.
    pub async fn worker_ended(&mut self) -> Option<SourceLost> {
        let Some(joined) = self.workers.join_next_with_id().await else {
            return std::future::pending().await;
        };
        let (task, result) = match joined {
            Ok((task, result)) => (task, result),
            Err(error) => (error.id(), Err(format!("its worker stopped: {error}"))),
        };
        let source = self.served_by.remove(&task)?;
        let slot = &mut self.slots[source];
        slot.workers = slot.workers.saturating_sub(1);
        if let Err(reason) = result {
            slot.reason.get_or_insert(reason);
        }
        if slot.workers > 0 {
            return None;
        }
        let (peer, connection) = (slot.peer, slot.connection);
        let replacement = self
            .node
            .roster()
            .open_gate(&peer)
            .filter(|gate| gate.connection.stable_id() != connection);
        let slot = &self.slots[source];
        Some(SourceLost {
            replacement,
            peer: slot.peer,
            reason: slot
                .reason
                .clone()
                .unwrap_or_else(|| "it stopped".to_string()),
        })
    }

    /// Each source's peer, by source id.
    pub fn peers(&self) -> Vec<PeerId> {
        self.slots.iter().map(|s| s.peer).collect()
    }
}
