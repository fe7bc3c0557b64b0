//! Shared set-up of the integration tests: trackers and nodes on 127.0.0.1,
//! each node in its own temporary data directory, and event waits with a
//! deadline (never a fixed sleep).
#![allow(dead_code)]

pub mod history;
pub mod process;
#[cfg(unix)]
pub mod pty;
pub mod web;

use std::net::SocketAddr;
use std::time::Duration;

use punchgate::identity::Identity;
use punchgate::node::{Event, Events, Node, NodeConfig};
use punchgate::tracker::{Tracker, TrackerConfig};

/// Deadline of any single wait: generous, since CI machines are slow.
pub const WAIT: Duration = Duration::from_secs(20);

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

pub fn start_tracker() -> Tracker {
    start_tracker_with(TrackerConfig::new(loopback()))
}

pub fn start_tracker_with(config: TrackerConfig) -> Tracker {
    Tracker::start(&Identity::generate().unwrap(), config).unwrap()
}

/// A tracker session driven by hand (no node around it), with what it needs
/// to stay alive.
pub struct RawSession {
    pub session: punchgate::tracker::TrackerSession,
    pub events: tokio::sync::mpsc::Receiver<punchgate::tracker::client::SessionEvent>,
    _bound: punchgate::endpoint::BoundEndpoint,
    _home: tempfile::TempDir,
}

/// Registers a fresh identity named `name` with `tracker`.
pub async fn raw_session(tracker: &Tracker, name: &str) -> RawSession {
    use punchgate::tls::CertifiedIdentity;
    use punchgate::tracker::client::Registration;
    let certified = CertifiedIdentity::new(&Identity::generate().unwrap()).unwrap();
    let bound = punchgate::endpoint::bind(loopback(), None).unwrap();
    let home = process::private_tempdir();
    let registration = Registration {
        name,
        local_addrs: vec![],
        presence: Default::default(),
    };
    let (session, events) = punchgate::tracker::TrackerSession::connect(
        &bound.endpoint,
        &certified,
        home.path(),
        &tracker.target().parse().unwrap(),
        punchgate::endpoint::Liveness::default(),
        registration,
    )
    .await
    .unwrap();
    RawSession {
        session,
        events,
        _bound: bound,
        _home: home,
    }
}

/// A peer driven by hand: its own identity, connected to a node and greeted
/// (control stream kept open), for tests that speak the protocol directly.
pub struct RawPeer {
    pub identity: Identity,
    pub connection: quinn::Connection,
    _control: punchgate::wire::FrameWriter<quinn::SendStream>,
    _bound: punchgate::endpoint::BoundEndpoint,
}

/// Connects to `node` as `name`, in `room`, and exchanges greetings.
pub async fn raw_peer(node: &TestNode, name: &str, room: &str) -> RawPeer {
    let addr = node.node.local_addr().unwrap();
    raw_peer_at(addr, &node.node.peer_id(), name, room).await
}

/// Connects to the node `peer_id` at `addr` (in this process or not) as
/// `name`, in `room`, and exchanges greetings.
pub async fn raw_peer_at(
    addr: SocketAddr,
    peer_id: &punchgate::identity::PeerId,
    name: &str,
    room: &str,
) -> RawPeer {
    use punchgate::protocol::ControlMessage;
    use punchgate::protocol::StreamKind;
    use punchgate::tls::{self, CertifiedIdentity};
    use punchgate::wire::{FrameReader, FrameWriter};
    let identity = Identity::generate().unwrap();
    let certified = CertifiedIdentity::new(&identity).unwrap();
    let bound = punchgate::endpoint::bind(loopback(), None).unwrap();
    let connection = punchgate::endpoint::connect_pinned(
        &bound.endpoint,
        certified.pinned_client(tls::ALPN_PEER).unwrap(),
        addr,
        peer_id,
    )
    .unwrap()
    .await
    .unwrap();
    // The acceptor opens the control stream and greets first.
    let (send, recv) = connection.accept_bi().await.unwrap();
    let mut control = FrameWriter::answering(send, StreamKind::Control);
    let hello = ControlMessage::Hello {
        name: name.into(),
        agent: "test".into(),
        rooms: vec![room.into()],
    };
    control.send(&hello).await.unwrap();
    let answer = FrameReader::accept(recv, StreamKind::Control)
        .await
        .unwrap()
        .recv::<ControlMessage>()
        .await
        .unwrap();
    assert!(
        matches!(answer, Some(ControlMessage::Hello { .. })),
        "{answer:?}"
    );
    RawPeer {
        identity,
        connection,
        _control: control,
        _bound: bound,
    }
}

impl RawPeer {
    /// Sends a control message on the greeted control stream.
    pub async fn send_control(&mut self, message: &punchgate::protocol::ControlMessage) {
        self._control.send(message).await.unwrap();
    }
}

pub struct TestNode {
    pub node: Node,
    pub events: Events,
    /// Events seen while waiting for others, still to be matched: waits do
    /// not depend on the order unrelated events arrive in.
    backlog: Vec<Event>,
    pub home: tempfile::TempDir,
}

pub fn config(name: &str, tracker: Option<&Tracker>, room: &str) -> NodeConfig {
    let mut config = NodeConfig::new(name);
    config.bind = loopback();
    config.trackers = tracker
        .map(|t| t.target().parse().unwrap())
        .into_iter()
        .collect();
    config.rooms = vec![room.to_string()];
    config
}

pub async fn start_node(config: NodeConfig) -> TestNode {
    let home = process::private_tempdir();
    start_node_in(home, config).await
}

pub async fn start_node_in(home: tempfile::TempDir, config: NodeConfig) -> TestNode {
    let (node, mut events) = Node::start(home.path(), config).await.unwrap();
    events
        .wait_for(WAIT, |e| matches!(e, Event::Ready { .. }).then_some(()))
        .await
        .unwrap();
    TestNode {
        node,
        events,
        backlog: Vec::new(),
        home,
    }
}

impl TestNode {
    pub fn id(&self) -> String {
        self.node.peer_id().to_string()
    }

    /// Waits until this node is connected to `peer`.
    pub async fn connected_to(&mut self, peer: &TestNode) {
        let want = peer.id();
        self.sees(&format!("a connection to {want}"), |e| match e {
            Event::Connected { peer_id, .. } if *peer_id == want => Some(()),
            _ => None,
        })
        .await
    }

    /// Waits for a message with `text`; returns (author id, author name).
    pub async fn receives(&mut self, text: &str) -> (String, String) {
        self.sees(&format!("message {text:?}"), |e| match e {
            Event::Message {
                text: got,
                from,
                from_name,
                ..
            } if got == text => Some((from.clone(), from_name.clone())),
            _ => None,
        })
        .await
    }

    /// Events seen while waiting and not matched by any wait yet.
    pub fn unmatched(&self) -> &[Event] {
        &self.backlog
    }

    /// Waits for an event `pick` accepts: first among those already seen
    /// and not yet matched, then among new ones.
    pub async fn sees<T>(&mut self, what: &str, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
        for index in 0..self.backlog.len() {
            if let Some(found) = pick(&self.backlog[index]) {
                self.backlog.remove(index);
                return found;
            }
        }
        let backlog = &mut self.backlog;
        self.events
            .wait_for(WAIT, |event| {
                let found = pick(event);
                if found.is_none() {
                    backlog.push(event.clone());
                }
                found
            })
            .await
            .unwrap_or_else(|e| panic!("waiting for {what}: {e}; unmatched events: {backlog:#?}"))
    }
}

/// Opens the history of a node that has shut down and was dropped: its
/// tasks ended in `shutdown`, so nothing holds the database any more.
pub async fn open_store(home: &std::path::Path) -> punchgate::store::Store {
    punchgate::store::Store::open(home).unwrap()
}

/// Deterministic bytes that differ from chunk to chunk.
pub fn pattern(len: usize, seed: u8) -> Vec<u8> {
    (0..len)
        .map(|i| (i as u32).wrapping_mul(2_654_435_761).to_le_bytes()[i % 4] ^ seed)
        .collect()
}
