//! The one-shot `punchgate get`: meeting everyone who serves a ticket's
//! content in its swarm room, connecting to them, then fetching from all
//! of them ([`super::fetch`]).

use std::path::PathBuf;
use std::time::Instant;

use tokio::task::JoinSet;

use super::report::{FetchError, FetchReport, FetchRequest};
use super::Node;
use crate::identity::PeerId;
use crate::transfer::{swarm_room, Ticket};

impl Node {
    /// `punchgate get`: meets everyone serving the ticket's content in its
    /// swarm room, connects to them all (punching as needed; the sender
    /// first), and fetches from every one that connected.
    pub async fn fetch_ticket(
        &self,
        ticket: &Ticket,
        target: PathBuf,
        force: bool,
    ) -> Result<FetchReport, FetchError> {
        let started = Instant::now();
        let room = swarm_room(ticket.content);
        self.join(&room)
            .await
            .map_err(|e| FetchError::NoSource(format!("{} ({e})", ticket.content.short())))?;
        let mut holders: Vec<PeerId> = vec![ticket.sender];
        holders.extend(
            self.roster()
                .peers
                .iter()
                .filter(|(id, r)| r.rooms.contains(&room) && **id != ticket.sender)
                .map(|(id, _)| *id),
        );
        let mut connects = JoinSet::new();
        for peer in holders.iter().copied() {
            let node = self.clone();
            connects.spawn(async move { (peer, node.connected_gate(peer).await) });
        }
        // Start once the sender answered (or, if it cannot be reached, once
        // anyone did) with everyone connected by then; a holder that went
        // away without the tracker noticing yet must not hold the start.
        let mut failures = Vec::new();
        let mut sender_done = false;
        while let Some(joined) = connects.join_next().await {
            match joined {
                Ok((peer, Err(error))) => {
                    failures.push(format!("{}: {error}", self.name_of(&peer)));
                    sender_done |= peer == ticket.sender;
                }
                Ok((peer, Ok(_))) => sender_done |= peer == ticket.sender,
                Err(_) => {}
            }
            let any = holders.iter().any(|p| self.roster().has_open_gate(p));
            if any && sender_done {
                break;
            }
        }
        connects.detach_all();
        tracing::debug!(
            ms = started.elapsed().as_millis(),
            "get: swarm joined, sources connected"
        );
        let sources: Vec<PeerId> = {
            let state = self.roster();
            holders
                .into_iter()
                .filter(|p| state.has_open_gate(p))
                .collect()
        };
        if sources.is_empty() {
            let why = if failures.is_empty() {
                "every connection closed as soon as it opened".to_string()
            } else {
                failures.join("; ")
            };
            return Err(FetchError::NoSource(format!(
                "{}: {why}",
                ticket.content.short()
            )));
        }
        self.fetch(FetchRequest {
            content: ticket.content,
            sources,
            target,
            force,
        })
        .await
    }
}
