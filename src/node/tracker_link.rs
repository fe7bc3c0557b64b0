//! The node's side of its tracker: the session supervised by the node task
//! (connect, and after a loss reconnect and restore: rooms joined again,
//! relay stream reopened), rooms joined and left through it, introductions
//! asked of it, and its pushed events.

use std::sync::Arc;

use std::time::{Duration, Instant};

use tokio::task::JoinSet;

use super::driver::{Input, TrackerEvents};
use super::manager::TrackerIx;
use super::relay;
use super::roster::MemberChange;
use super::{
    events, local_candidates, Event, Node, NodeError, PeerRecord, PeerStatus, RelayPolicy,
};
use crate::identity::PeerId;
use crate::protocol::{
    validate_label, ControlMessage, Member, Presence, TrackerEvent, TrackerRequestBody,
    TrackerResponse, MAX_ROOMS, MAX_ROOM_LEN,
};
use crate::tls::CertifiedIdentity;
use crate::tracker::client::{Registration, RelayOffer, SessionEvent};
use crate::tracker::{TrackerError, TrackerSession};

/// Once one tracker is up, how much longer start waits for the others;
/// those still connecting then register in the background.
const LATE_TRACKER_GRACE: Duration = Duration::from_secs(1);

/// A session and its events.
pub(super) type Session = (TrackerSession, TrackerEvents);

/// Connects to the tracker at `target` from `endpoint` and registers.
pub(super) async fn connect_tracker(
    endpoint: &quinn::Endpoint,
    certified: &CertifiedIdentity,
    home: &std::path::Path,
    config: &super::NodeConfig,
    target: &crate::endpoint::Target,
    presence: Presence,
    mapped: Option<std::net::SocketAddr>,
) -> Result<Session, NodeError> {
    let mut local_addrs =
        local_candidates(endpoint.local_addr().map_err(|source| NodeError::Bind {
            addr: config.bind,
            source,
        })?);
    // The tracker keeps it only on the address it sees this node at.
    local_addrs.splice(0..0, mapped);
    let registration = Registration {
        presence,
        name: &config.name,
        local_addrs,
    };
    let session = TrackerSession::connect(
        endpoint,
        certified,
        home,
        target,
        config.liveness,
        registration,
    )
    .await?;
    Ok(session)
}

/// How this node registers with its own trackers: findable when it
/// publishes its DHT record (so peers that find it there may be introduced
/// to it), else as a plain member.
pub(super) fn member_presence(config: &super::NodeConfig) -> Presence {
    if config.dht.is_some() {
        Presence::Findable
    } else {
        Presence::Member
    }
}

/// The trackers at start: those that answered in time, by their place in
/// the list (`None`: still connecting), and the attempts still running.
pub(super) struct StartingTrackers {
    pub reached: Vec<Option<Result<Session, String>>>,
    pub late: JoinSet<(TrackerIx, Result<Session, NodeError>)>,
}

/// Connects to every configured tracker at once, at start. Start waits for
/// all of them, but once one is up no longer than [`LATE_TRACKER_GRACE`]
/// for the rest. One that cannot be reached is retried later by the
/// manager; the node does not start only when none can be, with the first
/// one's error.
pub(super) async fn connect_trackers(
    endpoint: &quinn::Endpoint,
    identity: &crate::identity::Identity,
    home: &std::path::Path,
    config: &super::NodeConfig,
) -> Result<StartingTrackers, NodeError> {
    let certified = Arc::new(CertifiedIdentity::new(identity)?);
    let mut attempts = JoinSet::new();
    for (tracker, target) in config.trackers.iter().cloned().enumerate() {
        let (endpoint, certified) = (endpoint.clone(), certified.clone());
        let (home, config) = (home.to_path_buf(), config.clone());
        attempts.spawn(async move {
            let presence = member_presence(&config);
            let result = connect_tracker(
                &endpoint, &certified, &home, &config, &target, presence, None,
            )
            .await;
            (tracker, result)
        });
    }
    let mut reached: Vec<Option<Result<Session, String>>> =
        config.trackers.iter().map(|_| None).collect();
    let mut first_error = None;
    let mut deadline = None;
    loop {
        let grace = crate::wake::until(deadline);
        let next = tokio::select! {
            next = attempts.join_next() => next,
            () = grace => break,
        };
        let Some(joined) = next else { break };
        let (tracker, result) = match joined {
            Ok(done) => done,
            Err(error) => return Err(NodeError::Invalid(format!("tracker task: {error}"))),
        };
        match result {
            Ok(session) => {
                deadline.get_or_insert_with(|| tokio::time::Instant::now() + LATE_TRACKER_GRACE);
                reached[tracker] = Some(Ok(session));
            }
            Err(error) => {
                reached[tracker] = Some(Err(error.to_string()));
                first_error.get_or_insert((tracker, error));
            }
        }
    }
    let any_up = reached.iter().any(|r| matches!(r, Some(Ok(_))));
    if !any_up {
        if let Some((_, error)) = first_error {
            return Err(error);
        }
    }
    Ok(StartingTrackers {
        reached,
        late: attempts,
    })
}

impl Node {
    /// The manager's `ConnectTracker`: one attempt to reach and register
    /// with `tracker` again, reported to the node task.
    pub(super) async fn reconnect_tracker(self, tracker: TrackerIx) {
        let Some(target) = self.inner.trackers.target(tracker) else {
            return;
        };
        let inner = &self.inner;
        let presence = if inner.trackers.is_guest(tracker) {
            Presence::Guest
        } else {
            member_presence(&inner.config)
        };
        let result = match CertifiedIdentity::new(&inner.identity) {
            Ok(certified) => {
                connect_tracker(
                    &inner.endpoint,
                    &certified,
                    &inner.home,
                    &inner.config,
                    &target,
                    presence,
                    inner.portmap.mapped(),
                )
                .await
            }
            Err(error) => Err(error.into()),
        };
        self.tracker_reached(tracker, result);
    }

    /// Hands the outcome of a connection attempt to `tracker` to the node
    /// task.
    pub(super) fn tracker_reached(&self, tracker: TrackerIx, result: Result<Session, NodeError>) {
        match result {
            Ok((session, events)) => self.input(Input::TrackerUp {
                tracker,
                session: Arc::new(session),
                events,
            }),
            Err(error) => self.input(Input::TrackerFailed {
                tracker,
                reason: error.to_string(),
            }),
        }
    }

    /// The manager's `RestoreTracker`: registered with `tracker` again
    /// after a loss (or for the first time after it could not be reached at
    /// start), so its relay stream is reopened and every room joined there
    /// again (the members handed to the manager, which connects those not
    /// connected).
    pub(super) async fn restore_tracker(self, tracker: TrackerIx) {
        self.inner.spawn(self.clone().report_nat(tracker));
        self.open_relay(tracker).await;
        // A tracker first reached after the router mapped the gate socket
        // registered without the mapped address.
        if let (Some(addr), Some(session)) = (
            self.inner.portmap.mapped(),
            self.inner.trackers.session(tracker),
        ) {
            self.tell_tracker(tracker, &session, Some(addr)).await;
        }
        if self.inner.trackers.is_guest(tracker) {
            // A guest joins no room.
            return;
        }
        let rooms = self.roster().rooms.clone();
        for room in rooms {
            if let Err(error) = self.join_at_tracker(tracker, &room, false).await {
                self.emit(Event::error(format!("cannot join {room} again: {error}")));
            }
        }
    }

    /// The manager's `RequestIntroduction`: asks `tracker` to introduce
    /// this node to `peer`; the introduction comes back as a tracker event.
    pub(super) async fn request_introduction(self, tracker: TrackerIx, peer: PeerId) {
        // Known or not yet (a member the gossip picked before the tracker's
        // list reached the roster): the ask is timed either way.
        self.roster()
            .peers
            .entry(peer)
            .or_insert_with(|| super::PeerRecord::new(peer.short()))
            .asked_at = Some(Instant::now());
        let result = match self.inner.trackers.session(tracker) {
            Some(session) => session.request(TrackerRequestBody::Connect { peer }).await,
            None => Err(TrackerError::Lost(
                crate::tracker::client::LostReason::unknown(),
            )),
        };
        match result {
            Ok(TrackerResponse::Introducing { attempt }) => {
                self.input(Input::IntroductionAnswered { peer, attempt });
            }
            Ok(_) => {}
            Err(error) => self.input(Input::IntroductionFailed { peer, error }),
        }
    }

    /// Reports what became of the session with `tracker`, as an event.
    pub(super) fn tracker_news(
        &self,
        tracker: TrackerIx,
        state: events::TrackerLink,
        reason: Option<String>,
    ) {
        let target = self.inner.trackers.target(tracker);
        let addr = match self.inner.trackers.session(tracker) {
            Some(session) => Some(session.tracker_addr().to_string()),
            None => target.as_ref().map(|t| t.host.clone()),
        };
        self.emit(Event::Tracker {
            state,
            tracker_id: target.and_then(|t| t.peer).map(|id| id.to_string()),
            addr,
            reason,
        });
    }

    /// Opens the relay stream to `tracker` (unless this node never relays)
    /// and starts pumping packets through it; tells the manager whether
    /// that tracker's relay can carry connections.
    pub(super) async fn open_relay(&self, tracker: TrackerIx) {
        let Some(session) = self.inner.trackers.session(tracker) else {
            return;
        };
        if self.inner.config.relay == RelayPolicy::Never {
            return;
        }
        let ready = match session.open_relay().await {
            Ok((RelayOffer::Ready { .. }, Some(stream))) => {
                match self.inner.trackers.attach_relay(tracker) {
                    Some(outgoing) => {
                        let socket = self.inner.socket.clone();
                        let node = Arc::downgrade(&self.inner);
                        self.inner
                            .spawn(relay::pump(node, tracker, socket, stream, outgoing));
                        Ok(())
                    }
                    None => Err("no such tracker".to_string()),
                }
            }
            Ok((RelayOffer::Unavailable(reason), _)) => Err(reason),
            Ok((_, None)) => Err("no relay stream".into()),
            Err(error) => Err(format!("cannot open the relay stream: {error}")),
        };
        self.input(Input::RelayReady { tracker, ready });
    }

    /// Joins `room` (through the tracker, if any) and dials its members.
    pub async fn join(&self, room: &str) -> Result<(), NodeError> {
        validate_label("room", room, MAX_ROOM_LEN).map_err(NodeError::Invalid)?;
        if room.starts_with('@') {
            return Err(NodeError::Invalid(format!(
                "cannot join {room}: names starting with @ are private rooms of two; use /msg"
            )));
        }
        if self.roster().rooms.len() >= MAX_ROOMS {
            return Err(NodeError::Invalid(format!(
                "cannot join {room}: this node is in {MAX_ROOMS} rooms already; /leave one first"
            )));
        }
        let sessions = self.inner.trackers.sessions();
        if sessions.is_empty() && !self.inner.trackers.is_empty() {
            return Err(NodeError::NoTracker);
        }
        // Joined at every tracker that is up; an error only if none took it.
        let joins = sessions.iter().map(|(_, session)| session.join(room));
        let mut results = futures_util::future::join_all(joins).await;
        if !results.is_empty() && results.iter().all(Result::is_err) {
            if let Some(Err(error)) = results.pop() {
                return Err(error.into());
            }
        }
        let members: Vec<(TrackerIx, Vec<Member>)> = sessions
            .iter()
            .map(|(tracker, _)| *tracker)
            .zip(results)
            .filter_map(|(tracker, result)| match result {
                Ok(members) => Some((tracker, members)),
                Err(error) => {
                    tracing::debug!(tracker, %error, "cannot join {room} at one tracker");
                    None
                }
            })
            .collect();
        let count = members
            .iter()
            .flat_map(|(_, members)| members.iter().map(|m| m.peer_id))
            .collect::<std::collections::HashSet<_>>()
            .len();
        {
            let mut state = self.roster();
            state.rooms.retain(|r| r != room);
            state.rooms.push(room.to_string());
        }
        self.emit(Event::Joined {
            room: room.to_string(),
            members: count,
        });
        self.dht_rooms_changed();
        self.announce_rooms().await;
        let gates = self.roster().open_gates();
        for gate in gates {
            self.inner.services.catch_up.catch_up(gate);
        }
        for (tracker, members) in members {
            self.connect_members(tracker, room, members);
        }
        Ok(())
    }

    /// Joins `room` at `tracker` again: after it came back, or after the
    /// session resumed. A resumed registration's list is the whole truth
    /// (`missing_left`): members it listed there before and no longer does
    /// left meanwhile. A tracker that came back is still filling up as
    /// its nodes register again: its list proves nothing about who left.
    pub(super) async fn join_at_tracker(
        &self,
        tracker: TrackerIx,
        room: &str,
        missing_left: bool,
    ) -> Result<(), NodeError> {
        let session = self
            .inner
            .trackers
            .session(tracker)
            .ok_or(NodeError::NoTracker)?;
        let members = session.join(room).await?;
        let listed: Vec<PeerId> = if !missing_left {
            Vec::new()
        } else {
            let state = self.roster();
            let key = (room.to_string(), tracker);
            state
                .peers
                .iter()
                .filter(|(_, record)| record.listed_at.contains(&key))
                .map(|(id, _)| *id)
                .collect()
        };
        for gone in listed
            .into_iter()
            .filter(|id| !members.iter().any(|m| m.peer_id == *id))
        {
            self.member_left(tracker, room, gone);
        }
        self.connect_members(tracker, room, members);
        Ok(())
    }

    /// Remembers `room`'s members at `tracker` and has the manager connect
    /// them (the joiner dials) and keep them connected.
    fn connect_members(&self, tracker: TrackerIx, room: &str, members: Vec<Member>) {
        for member in members {
            self.learn_member(tracker, room, &member);
            if let Err(error) = self.check_dialable(&member.peer_id) {
                self.emit(Event::error(error));
                continue;
            }
            // The room's gossip chooses which members to connect.
            self.input(Input::Member {
                room: room.to_string(),
                peer: member.peer_id,
                joined: true,
                newcomer: false,
                via: Some(tracker),
            });
        }
    }

    pub async fn leave(&self, room: &str) -> Result<(), NodeError> {
        let sessions = self.inner.trackers.sessions();
        let leaves = sessions.iter().map(|(_, session)| session.leave(room));
        for result in futures_util::future::join_all(leaves).await {
            result?;
        }
        let unwanted: Vec<crate::identity::PeerId> = {
            let mut state = self.roster();
            state.rooms.retain(|r| r != room);
            let state = &*state;
            state
                .peers
                .iter()
                .filter(|(_, r)| !r.rooms.iter().any(|room| state.rooms.contains(room)))
                .map(|(id, _)| *id)
                .collect()
        };
        self.input(Input::RoomLeft {
            room: room.to_string(),
        });
        for peer in unwanted {
            self.input(Input::Wanted {
                peer,
                wanted: false,
                via: None,
            });
        }
        self.emit(Event::Left {
            room: room.to_string(),
        });
        self.dht_rooms_changed();
        self.announce_rooms().await;
        Ok(())
    }

    async fn announce_rooms(&self) {
        let rooms = self.roster().rooms.clone();
        let gates = self.roster().open_gates();
        for gate in gates {
            let message = ControlMessage::Rooms {
                rooms: rooms.clone(),
            };
            if let Err(error) = gate.send_control(&message).await {
                tracing::debug!(peer = %gate.peer_id.short(), %error, "cannot announce rooms");
            }
        }
    }

    /// `member` is in `room` as `tracker` lists it.
    fn learn_member(&self, tracker: TrackerIx, room: &str, member: &Member) {
        let mut state = self.roster();
        let record = state
            .peers
            .entry(member.peer_id)
            .or_insert_with(|| PeerRecord::new(member.name.clone()));
        record.name = member.name.clone();
        record.candidates = member.candidates();
        record.rooms.insert(room.to_string());
        record.listed_at.insert((room.to_string(), tracker));
        drop(state);
        self.remember_name(member.peer_id, &member.name);
    }

    /// `peer_id` is no longer in `room` at `tracker` (it left, or its
    /// connection to the tracker died).
    fn member_left(&self, tracker: TrackerIx, room: &str, peer_id: PeerId) {
        let (gone, news) = {
            let mut state = self.roster();
            let ours = state.rooms.iter().any(|r| r == room);
            let Some(record) = state.peers.get_mut(&peer_id) else {
                return;
            };
            record.listed_at.remove(&(room.to_string(), tracker));
            // Still listed in the room by another tracker: not news.
            if record.listed_at.iter().any(|(r, _)| *r == room) {
                return;
            }
            let left = record.rooms.remove(room);
            let gone =
                record.rooms.is_empty() && !record.gate.as_ref().is_some_and(|g| g.is_open());
            (gone, left && ours)
        };
        if news {
            self.inner.cx.member_changes(
                &peer_id,
                vec![MemberChange {
                    room: room.to_string(),
                    joined: false,
                }],
            );
        }
        if gone {
            self.set_status(peer_id, PeerStatus::Offline, Some(format!("left {room}")));
        }
        self.input(Input::Member {
            room: room.to_string(),
            peer: peer_id,
            joined: false,
            newcomer: false,
            via: Some(tracker),
        });
        let shares_room = {
            let state = self.roster();
            state
                .peers
                .get(&peer_id)
                .is_some_and(|r| r.rooms.iter().any(|room| state.rooms.contains(room)))
        };
        if !shares_room {
            self.input(Input::Wanted {
                peer: peer_id,
                wanted: false,
                via: Some(tracker),
            });
        }
    }

    /// Reads `tracker`'s pushed events until its session ends.
    pub(super) async fn tracker_loop(self, tracker: TrackerIx, mut events: TrackerEvents) {
        while let Some(event) = events.recv().await {
            let event = match event {
                SessionEvent::Tracker(event) => event,
                SessionEvent::Resumed => {
                    self.resumed(tracker).await;
                    continue;
                }
                SessionEvent::Registered => {
                    self.registered_afresh(tracker);
                    continue;
                }
            };
            match event {
                TrackerEvent::Joined { room, member } => {
                    let peer = member.peer_id;
                    let news = {
                        let state = self.roster();
                        state.rooms.contains(&room)
                            && !state
                                .peers
                                .get(&peer)
                                .is_some_and(|r| r.rooms.contains(&room))
                    };
                    self.learn_member(tracker, &room, &member);
                    if news {
                        self.inner.cx.member_changes(
                            &peer,
                            vec![MemberChange {
                                room: room.clone(),
                                joined: true,
                            }],
                        );
                    }
                    // Only news for a peer nobody is connecting to or connected with.
                    let idle = self.roster().peers.get(&peer).is_none_or(|r| {
                        matches!(r.status, PeerStatus::Known | PeerStatus::Offline)
                    });
                    if idle {
                        self.set_status(peer, PeerStatus::Known, Some(format!("joined {room}")));
                    }
                    // The room's gossip decides whether to connect it.
                    let shared = self.roster().rooms.contains(&room);
                    if shared {
                        self.input(Input::Member {
                            room: room.clone(),
                            peer,
                            joined: true,
                            newcomer: true,
                            via: Some(tracker),
                        });
                    }
                }
                TrackerEvent::Introduce {
                    attempt,
                    peer,
                    role,
                    assumed_rtt_us,
                } => {
                    // This node's own round trip to the tracker, against
                    // the one the tracker timed the introductions by.
                    let peer_late = self
                        .inner
                        .trackers
                        .session(tracker)
                        .map(|session| {
                            let assumed = Duration::from_micros(assumed_rtt_us);
                            crate::punch::peer_lateness(assumed, session.rtt())
                        })
                        .unwrap_or_default();
                    {
                        let mut state = self.roster();
                        let record = state
                            .peers
                            .entry(peer.peer_id)
                            .or_insert_with(|| PeerRecord::new(peer.name.clone()));
                        record.candidates = peer.candidates();
                    }
                    // Birthday probes may name it (`ProbeRoutes::is_live`)
                    // for as long as a punch under it could run.
                    let keep = self.inner.config.punch.deadline * 2;
                    self.inner
                        .probe_routes()
                        .note_introduction(attempt, peer.peer_id, keep);
                    self.input(Input::Introduced {
                        tracker,
                        attempt,
                        member: peer,
                        role,
                        peer_late,
                    });
                }
                TrackerEvent::Left { room, peer_id } => self.member_left(tracker, &room, peer_id),
            }
        }
    }
}
