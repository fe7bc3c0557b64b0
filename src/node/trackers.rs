//! The node's trackers, by their place in `--tracker`'s list (the
//! manager's [`TrackerIx`]): for each, its target with the key pinned on
//! first contact, the current session (none while it is lost), and the
//! writer of its relay stream. Relayed packets are routed per peer to the
//! tracker whose relay reaches that peer: the one the node dialed it
//! through, or the one its packets last came from. A route that has been
//! silent longer than a healthy connection ever is (its keep-alives
//! included) moves to the next open relay, so a relayed connection outlives
//! the tracker that carried it.
//!
//! Trackers found in a peer's DHT record are added at run time as *guests*
//! ([`Trackers::add_guest`]): registered only to be introduced to that
//! peer and to reach it through the relay; no room is joined there and no
//! record lists them.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant};

use tokio::sync::mpsc;

use super::manager::TrackerIx;
use crate::endpoint::Target;
use crate::gate_socket::RelayedPacket;
use crate::identity::PeerId;
use crate::tracker::TrackerSession;

/// Relayed packets waiting for one tracker's relay stream, at most; more
/// are dropped like any UDP packet (QUIC resends what matters).
const RELAY_QUEUE: usize = 1024;

struct Link {
    /// As configured; the key is pinned on first contact, so that
    /// reconnections expect the same tracker even after trust on first use.
    target: Target,
    session: Option<Arc<TrackerSession>>,
    /// To the pump of this tracker's relay stream, while it is open.
    relay: Option<mpsc::Sender<RelayedPacket>>,
    /// A guest session (not in `--tracker`'s list).
    guest: bool,
}

/// Which tracker's relay carries one peer's packets.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
struct Route {
    tracker: TrackerIx,
    /// When a packet from the peer last came through it, or the route was
    /// taken (whichever is later).
    heard_at: Instant,
}

pub(super) struct Trackers {
    links: Mutex<Vec<Link>>,
    routes: Mutex<HashMap<PeerId, Route>>,
    /// Silence after which a route moves to another relay.
    silence: Duration,
}

impl Trackers {
    /// `keep_alive`: how often a connection sends something when idle; a
    /// route silent for half as long again is taken for broken.
    pub fn new(targets: &[Target], keep_alive: Duration) -> Self {
        Self {
            links: Mutex::new(
                targets
                    .iter()
                    .map(|target| Link {
                        target: target.clone(),
                        session: None,
                        relay: None,
                        guest: false,
                    })
                    .collect(),
            ),
            routes: Mutex::new(HashMap::new()),
            silence: keep_alive + keep_alive / 2,
        }
    }

    fn links(&self) -> MutexGuard<'_, Vec<Link>> {
        self.links.lock().unwrap_or_else(PoisonError::into_inner)
    }

    fn routes(&self) -> MutexGuard<'_, HashMap<PeerId, Route>> {
        self.routes.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn len(&self) -> usize {
        self.links().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The session with `tracker`, if it is up.
    pub fn session(&self, tracker: TrackerIx) -> Option<Arc<TrackerSession>> {
        self.links().get(tracker)?.session.clone()
    }

    /// Every session with a configured tracker (not a guest) that is up,
    /// in the configured order: where rooms are joined.
    pub fn sessions(&self) -> Vec<(TrackerIx, Arc<TrackerSession>)> {
        self.links()
            .iter()
            .enumerate()
            .filter(|(_, link)| !link.guest)
            .filter_map(|(ix, link)| Some((ix, link.session.clone()?)))
            .collect()
    }

    /// The first configured session that is up: the one whose view of
    /// this node (its reflexive address) the node shows.
    pub fn first_session(&self) -> Option<Arc<TrackerSession>> {
        self.links()
            .iter()
            .filter(|link| !link.guest)
            .find_map(|link| link.session.clone())
    }

    /// An answer from a tracker's second port: to the parked session that
    /// knocks there, if any (`crate::doorbell`).
    pub fn doorbell_answer(
        &self,
        from: SocketAddr,
        seq: u64,
        ring: bool,
        tag: crate::protocol::DoorbellTag,
    ) {
        let from = crate::gate_socket::canonical(from);
        let sessions: Vec<Arc<TrackerSession>> = self
            .links()
            .iter()
            .filter_map(|l| l.session.clone())
            .collect();
        let knocking_there = sessions.iter().find(|session| {
            session
                .doorbell()
                .is_some_and(|at| crate::gate_socket::canonical(at) == from)
        });
        if let Some(session) = knocking_there {
            session.handle_answer(seq, ring, tag);
        }
    }

    /// Whether `tracker` is a guest session.
    pub fn is_guest(&self, tracker: TrackerIx) -> bool {
        self.links().get(tracker).is_some_and(|link| link.guest)
    }

    /// Guest sessions, up or not.
    pub fn guest_count(&self) -> usize {
        self.links().iter().filter(|link| link.guest).count()
    }

    /// The tracker whose key is `id`, configured or guest, if any.
    pub fn find(&self, id: &PeerId) -> Option<TrackerIx> {
        self.links()
            .iter()
            .position(|link| link.target.peer.as_ref() == Some(id))
    }

    /// Adds a guest tracker (pinned to its key); its place in the list.
    /// The manager must be told of it in the same step
    /// (`Manager::add_tracker`), so both lists keep the same places.
    pub fn add_guest(&self, target: Target) -> TrackerIx {
        let mut links = self.links();
        links.push(Link {
            target,
            session: None,
            relay: None,
            guest: true,
        });
        links.len() - 1
    }

    /// Points the guest session `tracker`, closed, at another tracker
    /// (reusing its place in the list, which the manager shares).
    pub fn retarget_guest(&self, tracker: TrackerIx, target: Target) {
        if let Some(link) = self.links().get_mut(tracker).filter(|link| link.guest) {
            link.target = target;
            link.session = None;
            link.relay = None;
        }
        self.routes().retain(|_, route| route.tracker != tracker);
    }

    /// What this node's DHT record says: the configured trackers it is
    /// registered with now (id and address) and the addresses they see
    /// it at.
    pub fn reach(&self) -> crate::dht::record::ReachRecord {
        let links = self.links();
        let sessions = links
            .iter()
            .filter(|link| !link.guest)
            .filter_map(|link| link.session.as_ref());
        let mut trackers = Vec::new();
        let mut addrs = Vec::new();
        for session in sessions {
            trackers.push(crate::dht::record::TrackerRef {
                id: session.tracker_id(),
                addr: session.tracker_addr(),
            });
            addrs.push(session.reflexive());
        }
        crate::dht::record::ReachRecord::new(trackers, addrs)
    }

    /// Registered with `tracker`: its key is pinned from now on.
    pub fn set_up(&self, tracker: TrackerIx, session: Arc<TrackerSession>) {
        if let Some(link) = self.links().get_mut(tracker) {
            link.target.peer = Some(session.tracker_id());
            link.session = Some(session);
        }
    }

    /// The session with `tracker` ended: its relay with it.
    pub fn set_down(&self, tracker: TrackerIx) {
        if let Some(link) = self.links().get_mut(tracker) {
            link.session = None;
            link.relay = None;
        }
    }

    /// `tracker` as configured, with its key once pinned.
    pub fn target(&self, tracker: TrackerIx) -> Option<Target> {
        Some(self.links().get(tracker)?.target.clone())
    }

    /// Every configured tracker as `PEERID@host:port`, where its key is
    /// known.
    pub fn targets(&self) -> Vec<String> {
        self.links()
            .iter()
            .filter(|link| !link.guest)
            .filter_map(|link| {
                let addr = match &link.session {
                    Some(session) => session.tracker_addr().to_string(),
                    None => link.target.host.clone(),
                };
                link.target.peer.map(|id| format!("{id}@{addr}"))
            })
            .collect()
    }

    /// Closes every session (shutdown).
    pub fn close_all(&self) {
        for link in self.links().iter_mut() {
            if let Some(session) = link.session.take() {
                session.close();
            }
            link.relay = None;
        }
    }

    /// A relay stream to `tracker` is open: packets routed there go to
    /// the returned receiver.
    pub fn attach_relay(&self, tracker: TrackerIx) -> Option<mpsc::Receiver<RelayedPacket>> {
        let mut links = self.links();
        let link = links.get_mut(tracker)?;
        let (sender, receiver) = mpsc::channel(RELAY_QUEUE);
        link.relay = Some(sender);
        Some(receiver)
    }

    /// `tracker`'s relay stream ended.
    pub fn detach_relay(&self, tracker: TrackerIx) {
        if let Some(link) = self.links().get_mut(tracker) {
            link.relay = None;
        }
    }

    /// `peer`'s relayed packets go through `tracker` from now on (it was
    /// dialed there, or its packet just came from there).
    pub fn route(&self, peer: PeerId, tracker: TrackerIx) {
        let heard_at = Instant::now();
        self.routes().insert(peer, Route { tracker, heard_at });
    }

    /// Hands a relayed packet to the relay stream that reaches its peer
    /// (see [`choose_relay`]). Dropped when none is open or its queue is
    /// full.
    pub fn send_relayed(&self, packet: RelayedPacket) -> bool {
        let now = Instant::now();
        let writer = {
            let links = self.links();
            let open: Vec<TrackerIx> = (0..links.len())
                .filter(|ix| links[*ix].relay.is_some())
                .collect();
            let mut routes = self.routes();
            let route = routes.get(&packet.0).copied();
            let Some(chosen) = choose_relay(route, &open, self.silence, now) else {
                return false;
            };
            if route != Some(chosen) {
                routes.insert(packet.0, chosen);
            }
            links[chosen.tracker].relay.clone()
        };
        writer.is_some_and(|writer| writer.try_send(packet).is_ok())
    }

    /// The peers whose relayed packets go through `tracker`'s relay.
    pub fn routed_through(&self, tracker: TrackerIx) -> Vec<PeerId> {
        self.routes()
            .iter()
            .filter(|(_, route)| route.tracker == tracker)
            .map(|(peer, _)| *peer)
            .collect()
    }

    /// The address of the tracker whose relay carries `peer`, as the user
    /// should see a relayed path.
    pub fn relay_addr_of(&self, peer: &PeerId) -> Option<SocketAddr> {
        let route = self.routes().get(peer).map(|r| r.tracker);
        let links = self.links();
        route
            .and_then(|ix| links.get(ix)?.session.as_ref())
            .or_else(|| links.iter().find_map(|l| l.session.as_ref()))
            .map(|session| session.tracker_addr())
    }
}

/// Which relay a packet for a peer goes through, given its current route
/// and the trackers whose relay streams are `open`: the route while its
/// relay is open and it has been heard from within `silence`; otherwise
/// the next open relay after it (in list order, wrapping), taken now. A
/// peer without a route goes through the first open relay.
fn choose_relay(
    route: Option<Route>,
    open: &[TrackerIx],
    silence: Duration,
    now: Instant,
) -> Option<Route> {
    let first = *open.first()?;
    let Some(route) = route else {
        return Some(Route {
            tracker: first,
            heard_at: now,
        });
    };
    let is_open = open.contains(&route.tracker);
    if is_open && now.saturating_duration_since(route.heard_at) <= silence {
        return Some(route);
    }
    let next = open
        .iter()
        .copied()
        .find(|ix| *ix > route.tracker)
        .unwrap_or(first);
    Some(Route {
        tracker: next,
        heard_at: now,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SILENCE: Duration = Duration::from_millis(4500);

    fn route(tracker: TrackerIx, heard_at: Instant) -> Option<Route> {
        Some(Route { tracker, heard_at })
    }

    #[test]
    fn a_peer_without_a_route_goes_through_the_first_open_relay() {
        let now = Instant::now();
        let chosen = choose_relay(None, &[1, 2], SILENCE, now);
        assert_eq!(chosen, route(1, now));
        assert_eq!(choose_relay(None, &[], SILENCE, now), None);
    }

    #[test]
    fn a_route_heard_from_recently_stays() {
        let heard = Instant::now();
        let now = heard + SILENCE;
        assert_eq!(
            choose_relay(route(1, heard), &[0, 1], SILENCE, now),
            route(1, heard)
        );
    }

    #[test]
    fn a_silent_route_moves_to_the_next_open_relay_and_wraps() {
        let heard = Instant::now();
        let now = heard + SILENCE + Duration::from_millis(1);
        assert_eq!(
            choose_relay(route(0, heard), &[0, 1, 2], SILENCE, now),
            route(1, now)
        );
        assert_eq!(
            choose_relay(route(2, heard), &[0, 1, 2], SILENCE, now),
            route(0, now)
        );
        // Alone, it stays where it is, with a fresh grace.
        assert_eq!(
            choose_relay(route(0, heard), &[0], SILENCE, now),
            route(0, now)
        );
    }

    #[test]
    fn a_route_whose_relay_closed_moves_at_once() {
        let now = Instant::now();
        assert_eq!(
            choose_relay(route(0, now), &[1], SILENCE, now),
            route(1, now)
        );
    }
}
