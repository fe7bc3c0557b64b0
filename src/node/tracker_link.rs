//! The node's side of its tracker: the session supervised by the node task
//! (connect, and after a loss reconnect and restore: rooms joined again,
//! relay stream reopened), rooms joined and left through it, introductions
//! asked of it, and its pushed events.

use std::sync::Arc;

use tokio::sync::mpsc;

use super::driver::Input;
use super::relay::{self, RelayState};
use super::{
    events, local_candidates, Event, Node, NodeError, PeerRecord, PeerStatus, RelayPolicy,
};
use crate::protocol::{
    validate_label, ControlMessage, Member, TrackerEvent, TrackerRequestBody, MAX_ROOMS,
    MAX_ROOM_LEN,
};
use crate::tls::CertifiedIdentity;
use crate::tracker::client::Registration;
use crate::tracker::{TrackerError, TrackerSession};

/// Connects to the tracker at `target` from `endpoint` and registers.
pub(super) async fn connect_tracker(
    endpoint: &quinn::Endpoint,
    identity: &crate::identity::Identity,
    home: &std::path::Path,
    config: &super::NodeConfig,
    target: &crate::endpoint::Target,
) -> Result<(TrackerSession, mpsc::UnboundedReceiver<TrackerEvent>), NodeError> {
    let certified = CertifiedIdentity::new(identity)?;
    let registration = Registration {
        name: &config.name,
        local_addrs: local_candidates(endpoint.local_addr().map_err(|source| NodeError::Bind {
            addr: config.bind,
            source,
        })?),
    };
    let session = TrackerSession::connect(
        endpoint,
        &certified,
        home,
        target,
        config.liveness,
        registration,
    )
    .await?;
    Ok(session)
}

impl Node {
    /// The manager's `ConnectTracker`: one attempt to reach and register
    /// with the tracker again, reported to the node task.
    pub(super) async fn reconnect_tracker(self) {
        let Some(target) = self.inner.tracker_pinned.clone() else {
            return;
        };
        let inner = &self.inner;
        let result = connect_tracker(
            &inner.endpoint,
            &inner.identity,
            &inner.home,
            &inner.config,
            &target,
        )
        .await;
        match result {
            Ok((session, events)) => self.input(Input::TrackerUp {
                session: Arc::new(session),
                events,
            }),
            Err(error) => self.input(Input::TrackerFailed {
                reason: error.to_string(),
            }),
        }
    }

    /// The manager's `RestoreTracker`: registered again after a loss, so the
    /// relay stream is reopened and every room joined again (its members
    /// handed to the manager, which connects those not connected).
    pub(super) async fn restore_tracker(self) {
        self.open_relay().await;
        let rooms = self.state().rooms.clone();
        for room in rooms {
            if let Err(error) = self.join_at_tracker(&room).await {
                self.emit(Event::error(format!("cannot join {room} again: {error}")));
            }
        }
    }

    /// The manager's `RequestIntroduction`: asks the tracker to introduce
    /// this node to `peer`; the introduction comes back as a tracker event.
    pub(super) async fn request_introduction(self, peer: crate::identity::PeerId) {
        let result = match self.inner.tracker() {
            Some(tracker) => tracker
                .request(TrackerRequestBody::Connect { peer })
                .await
                .map(|_| ()),
            None => Err(TrackerError::Lost),
        };
        if let Err(error) = result {
            self.input(Input::IntroductionFailed { peer, error });
        }
    }

    /// Reports a tracker session lost or back, as an event.
    pub(super) fn tracker_news(&self, back: bool, reason: Option<String>) {
        let pinned = self.inner.tracker_pinned.as_ref();
        self.emit(Event::Tracker {
            state: if back {
                events::TrackerLink::Back
            } else {
                events::TrackerLink::Lost
            },
            tracker_id: pinned.and_then(|t| t.peer).map(|id| id.to_string()),
            addr: self
                .inner
                .tracker()
                .map(|t| t.tracker_addr().to_string())
                .or_else(|| pinned.map(|t| t.host.clone())),
            reason,
        });
    }

    /// Opens the relay stream to the tracker (unless this node never
    /// relays) and starts pumping packets through it.
    pub(super) async fn open_relay(&self) {
        let Some(tracker) = self.inner.tracker() else {
            return;
        };
        if self.inner.config.relay == RelayPolicy::Never {
            return;
        }
        let state = match tracker.open_relay().await {
            Ok((
                crate::tracker::client::RelayOffer::Ready {
                    bytes_per_second, ..
                },
                Some(stream),
            )) => {
                let outgoing = self.inner.socket.attach_relay();
                let socket = self.inner.socket.clone();
                let node = Arc::downgrade(&self.inner);
                tokio::spawn(relay::pump(node, socket, stream, outgoing));
                RelayState::Ready { bytes_per_second }
            }
            Ok((crate::tracker::client::RelayOffer::Unavailable(reason), _)) => {
                RelayState::Unavailable(reason)
            }
            Ok((_, None)) => RelayState::Unavailable("no relay stream".into()),
            Err(error) => RelayState::Unavailable(format!("cannot open the relay stream: {error}")),
        };
        let ready = match &state {
            RelayState::Ready { .. } => Ok(()),
            RelayState::Unavailable(why) => Err(why.clone()),
            RelayState::Off => Err("relaying is off".into()),
        };
        self.state().relay = state;
        self.input(Input::RelayReady(ready));
    }

    /// Joins `room` (through the tracker, if any) and dials its members.
    pub async fn join(&self, room: &str) -> Result<(), NodeError> {
        validate_label("room", room, MAX_ROOM_LEN).map_err(NodeError::Invalid)?;
        if room.starts_with('@') {
            return Err(NodeError::Invalid(format!(
                "room {room}: names starting with @ are private rooms of two; use /msg"
            )));
        }
        if self.state().rooms.len() >= MAX_ROOMS {
            return Err(NodeError::Invalid(format!(
                "room count: at most {MAX_ROOMS}"
            )));
        }
        let members = match self.inner.tracker() {
            Some(tracker) => tracker.join(room).await?,
            None if self.inner.tracker_pinned.is_some() => return Err(NodeError::NoTracker),
            None => Vec::new(),
        };
        {
            let mut state = self.state();
            state.rooms.retain(|r| r != room);
            state.rooms.push(room.to_string());
        }
        self.emit(Event::Joined {
            room: room.to_string(),
            members: members.len(),
        });
        self.announce_rooms().await;
        for gate in self.open_gates() {
            self.catch_up(gate);
        }
        self.connect_members(room, members);
        Ok(())
    }

    /// Joins `room` at the tracker again (after it came back).
    async fn join_at_tracker(&self, room: &str) -> Result<(), NodeError> {
        let tracker = self.inner.tracker().ok_or(NodeError::NoTracker)?;
        let members = tracker.join(room).await?;
        self.connect_members(room, members);
        Ok(())
    }

    /// Remembers `room`'s members and has the manager connect them (the
    /// joiner dials) and keep them connected.
    fn connect_members(&self, room: &str, members: Vec<Member>) {
        for member in members {
            self.learn_member(room, &member);
            if let Err(error) = self.check_dialable(&member.peer_id) {
                self.emit(Event::error(error));
                continue;
            }
            self.input(Input::Connect {
                peer: member.peer_id,
                addrs: Vec::new(),
                reply: None,
            });
        }
    }

    pub async fn leave(&self, room: &str) -> Result<(), NodeError> {
        if let Some(tracker) = self.inner.tracker() {
            tracker.leave(room).await?;
        }
        let unwanted: Vec<crate::identity::PeerId> = {
            let mut state = self.state();
            state.rooms.retain(|r| r != room);
            let state = &*state;
            state
                .peers
                .iter()
                .filter(|(_, r)| !r.rooms.iter().any(|room| state.rooms.contains(room)))
                .map(|(id, _)| *id)
                .collect()
        };
        for peer in unwanted {
            self.input(Input::Wanted {
                peer,
                wanted: false,
            });
        }
        self.emit(Event::Left {
            room: room.to_string(),
        });
        self.announce_rooms().await;
        Ok(())
    }

    async fn announce_rooms(&self) {
        let rooms = self.state().rooms.clone();
        for gate in self.open_gates() {
            let message = ControlMessage::Rooms {
                rooms: rooms.clone(),
            };
            if let Err(error) = gate.send_control(&message).await {
                tracing::debug!(peer = %gate.peer_id.short(), %error, "cannot announce rooms");
            }
        }
    }

    fn learn_member(&self, room: &str, member: &Member) -> bool {
        let mut state = self.state();
        let record = state
            .peers
            .entry(member.peer_id)
            .or_insert_with(|| PeerRecord::new(member.name.clone()));
        let first_seen = record.candidates.is_empty() && record.gate.is_none();
        record.name = member.name.clone();
        record.candidates = member.candidates();
        record.rooms.insert(room.to_string());
        first_seen
    }

    pub(super) async fn tracker_loop(self, mut events: mpsc::UnboundedReceiver<TrackerEvent>) {
        while let Some(event) = events.recv().await {
            match event {
                TrackerEvent::Joined { room, member } => {
                    let peer = member.peer_id;
                    self.learn_member(&room, &member);
                    // The joiner dials; this side waits for it.
                    // Only news for a peer nobody is connecting to or connected with.
                    let idle = self.state().peers.get(&peer).is_none_or(|r| {
                        matches!(r.status, PeerStatus::Known | PeerStatus::Offline)
                    });
                    if idle {
                        self.set_status(peer, PeerStatus::Known, Some(format!("joined {room}")));
                    }
                    // Kept connected from now on (reconnected if its path dies).
                    let shared = self.state().rooms.contains(&room);
                    if shared {
                        self.input(Input::Wanted { peer, wanted: true });
                    }
                }
                TrackerEvent::Introduce {
                    attempt,
                    peer,
                    role,
                } => {
                    {
                        let mut state = self.state();
                        let record = state
                            .peers
                            .entry(peer.peer_id)
                            .or_insert_with(|| PeerRecord::new(peer.name.clone()));
                        record.candidates = peer.candidates();
                    }
                    self.input(Input::Introduced {
                        attempt,
                        member: peer,
                        role,
                    });
                }
                TrackerEvent::Left { room, peer_id } => {
                    let gone = {
                        let mut state = self.state();
                        let Some(record) = state.peers.get_mut(&peer_id) else {
                            continue;
                        };
                        record.rooms.remove(&room);
                        record.rooms.is_empty()
                            && !record.gate.as_ref().is_some_and(|g| g.is_open())
                    };
                    if gone {
                        self.set_status(peer_id, PeerStatus::Offline, Some(format!("left {room}")));
                    }
                    let shares_room = {
                        let state = self.state();
                        state
                            .peers
                            .get(&peer_id)
                            .is_some_and(|r| r.rooms.iter().any(|room| state.rooms.contains(room)))
                    };
                    if !shares_room {
                        self.input(Input::Wanted {
                            peer: peer_id,
                            wanted: false,
                        });
                    }
                }
            }
        }
    }
}
