//! Introductions: the tracker sends each side of an attempt the other's
//! addresses so that both copies arrive at the same moment, and keeps
//! where each connected node's events go.

use std::sync::PoisonError;

use quinn::Connection;
use tokio::sync::mpsc;

use super::registry::Generation;
use super::server::{Outbox, Shared};
use crate::identity::PeerId;
use crate::protocol::{Member, Role, TrackerEvent, TrackerMessage};

fn micros(duration: std::time::Duration) -> u64 {
    u64::try_from(duration.as_micros()).unwrap_or(u64::MAX)
}

impl Shared {
    /// Events for `peer_id`'s registration `generation` go to `events`, on
    /// `connection`, from now on.
    pub(super) fn connected(
        &self,
        peer_id: PeerId,
        generation: Generation,
        events: &mpsc::Sender<Box<TrackerMessage>>,
        connection: &Connection,
    ) {
        self.outboxes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(
                peer_id,
                Outbox {
                    generation,
                    sender: events.clone(),
                    connection: connection.clone(),
                },
            );
    }

    /// Sends each side the other's introduction so both arrive at the same
    /// moment: the side nearer the tracker gets its copy later by half the
    /// difference of the two round-trip times.
    pub(super) fn introduce(&self, attempt: u64, dialer: Member, acceptor: Member) {
        let outboxes = self.outboxes.lock().unwrap_or_else(PoisonError::into_inner);
        let (Some(to_dialer), Some(to_acceptor)) = (
            outboxes.get(&dialer.peer_id),
            outboxes.get(&acceptor.peer_id),
        ) else {
            return;
        };
        let dialer_rtt = to_dialer.connection.rtt();
        let acceptor_rtt = to_acceptor.connection.rtt();
        let sends = [
            (
                to_dialer.sender.clone(),
                TrackerEvent::Introduce {
                    attempt,
                    peer: acceptor,
                    role: Role::Dialer,
                    assumed_rtt_us: micros(dialer_rtt),
                },
                acceptor_rtt.saturating_sub(dialer_rtt) / 2,
            ),
            (
                to_acceptor.sender.clone(),
                TrackerEvent::Introduce {
                    attempt,
                    peer: dialer,
                    role: Role::Acceptor,
                    assumed_rtt_us: micros(acceptor_rtt),
                },
                dialer_rtt.saturating_sub(acceptor_rtt) / 2,
            ),
        ];
        for (sender, event, delay) in sends {
            tokio::spawn(async move {
                if !delay.is_zero() {
                    tokio::time::sleep(delay).await;
                }
                let _ = sender.try_send(Box::new(TrackerMessage::Event(event)));
            });
        }
    }
}
