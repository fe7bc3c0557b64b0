//! The tracker's side of the doorbell over real sockets on loopback: a
//! node parks its registration (the tracker closes the connection), knocks
//! on the second port from a plain UDP socket, is rung when a peer asks
//! for it, and resumes on a new connection to get the introduction; a
//! registration whose knocks stop is dropped as a lost connection is.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::{loopback, start_tracker, start_tracker_with, WAIT};
use punchgate::doorbell;
use punchgate::endpoint::{self, BoundEndpoint};
use punchgate::gate_socket::{is_probe, probe_datagram, PROBE_MAGIC};
use punchgate::identity::{Identity, PeerId};
use punchgate::protocol::{
    ParkTicket, ProbeMessage, Role, StreamKind, TrackerEvent, TrackerMessage, TrackerRefusal,
    TrackerRequest, TrackerRequestBody, TrackerResponse,
};
use punchgate::tls::CertifiedIdentity;
use punchgate::tracker::{Tracker, TrackerConfig};
use punchgate::wire::{CloseCode, FrameReader, FrameWriter};

/// Where to reach a tracker's port from an IPv4 loopback socket (it may
/// listen on `[::]`).
fn on_loopback(addr: SocketAddr) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], addr.port()))
}

/// A tracker connection driven request by request, keeping the events that
/// arrive in between.
struct Raw {
    bound: BoundEndpoint,
    connection: quinn::Connection,
    writer: FrameWriter<quinn::SendStream>,
    reader: FrameReader<quinn::RecvStream>,
    next_id: u32,
    events: Vec<TrackerEvent>,
}

impl Raw {
    async fn connect(tracker: &Tracker, identity: &Identity) -> Self {
        let certified = CertifiedIdentity::new(identity).unwrap();
        let bound = endpoint::bind(loopback(), None).unwrap();
        let client = certified
            .pinned_client(punchgate::tls::ALPN_TRACKER)
            .unwrap();
        let connection = endpoint::connect_pinned(
            &bound.endpoint,
            client,
            on_loopback(tracker.local_addr()),
            &tracker.peer_id(),
        )
        .unwrap()
        .await
        .unwrap();
        let (send, recv) = connection.open_bi().await.unwrap();
        let writer = FrameWriter::open(send, StreamKind::Tracker).await.unwrap();
        Self {
            bound,
            connection,
            writer,
            reader: FrameReader::new(recv, StreamKind::Tracker),
            next_id: 0,
            events: Vec::new(),
        }
    }

    async fn request(
        &mut self,
        body: TrackerRequestBody,
    ) -> Result<TrackerResponse, TrackerRefusal> {
        self.next_id += 1;
        let id = self.next_id;
        self.writer
            .send(&TrackerRequest { id, body })
            .await
            .unwrap();
        loop {
            match self.next_message().await {
                TrackerMessage::Response { id: got, result } if got == id => return result,
                TrackerMessage::Response { id: got, .. } => panic!("response to {got}, not {id}"),
                TrackerMessage::Event(event) => self.events.push(event),
            }
        }
    }

    async fn next_message(&mut self) -> TrackerMessage {
        tokio::time::timeout(WAIT, self.reader.recv::<TrackerMessage>())
            .await
            .expect("no message from the tracker in time")
            .unwrap()
            .expect("the tracker ended the stream")
    }

    /// The first event `pick` takes, among those kept and those to come.
    async fn event<T>(&mut self, mut pick: impl FnMut(&TrackerEvent) -> Option<T>) -> T {
        if let Some(found) = self.events.iter().find_map(&mut pick) {
            return found;
        }
        loop {
            match self.next_message().await {
                TrackerMessage::Event(event) => {
                    if let Some(found) = pick(&event) {
                        return found;
                    }
                    self.events.push(event);
                }
                other => panic!("unasked response {other:?}"),
            }
        }
    }

    /// The `Introduce` of `attempt`: to whom, in which role.
    async fn introduced(&mut self, attempt: u64) -> (PeerId, Role) {
        self.event(|e| match e {
            TrackerEvent::Introduce {
                attempt: got,
                peer,
                role,
                ..
            } if *got == attempt => Some((peer.peer_id, *role)),
            _ => None,
        })
        .await
    }

    async fn register_in(&mut self, name: &str, room: &str) {
        let registered = self
            .request(TrackerRequestBody::Register {
                name: name.into(),
                local_addrs: vec![],
                presence: Default::default(),
            })
            .await;
        assert!(matches!(registered, Ok(TrackerResponse::Registered { .. })));
        let joined = self
            .request(TrackerRequestBody::Join { room: room.into() })
            .await;
        assert!(matches!(joined, Ok(TrackerResponse::Joined { .. })));
    }

    /// Parks; returns the ticket and the second port's address, once the
    /// tracker has closed the connection as it should.
    async fn park(mut self, tracker: &Tracker) -> (ParkTicket, SocketAddr) {
        let parked = self.request(TrackerRequestBody::Park).await;
        let Ok(TrackerResponse::Parked {
            ticket,
            aux_port,
            knock_every_secs,
        }) = parked
        else {
            panic!("not parked: {parked:?}");
        };
        assert!(knock_every_secs > 0);
        match tokio::time::timeout(WAIT, self.connection.closed())
            .await
            .expect("the tracker kept a parked node's connection open")
        {
            quinn::ConnectionError::ApplicationClosed(close) => {
                assert_eq!(
                    CloseCode::from_varint(close.error_code),
                    Some(CloseCode::Normal)
                );
                assert_eq!(&close.reason[..], b"parked");
            }
            other => panic!("expected the tracker to close, got {other}"),
        }
        assert_eq!(aux_port, tracker.aux_addr().port());
        (ticket, on_loopback(tracker.aux_addr()))
    }
}

/// A plain UDP socket a parked node knocks from.
struct Knocker {
    socket: tokio::net::UdpSocket,
    aux: SocketAddr,
}

impl Knocker {
    async fn new(aux: SocketAddr) -> Self {
        let socket = tokio::net::UdpSocket::bind(loopback()).await.unwrap();
        Self { socket, aux }
    }

    async fn send(&self, message: &ProbeMessage) {
        let datagram = probe_datagram(&message.encode().unwrap());
        self.socket.send_to(&datagram, self.aux).await.unwrap();
    }

    async fn knock(&self, ticket: &ParkTicket, seq: u64) {
        self.send(&doorbell::knock(ticket, seq)).await;
    }

    /// The next answer from the tracker: (seq, ring), checked genuine.
    async fn answer(&self, ticket: &ParkTicket) -> (u64, bool) {
        let mut buf = [0u8; 2048];
        let (len, from) = tokio::time::timeout(WAIT, self.socket.recv_from(&mut buf))
            .await
            .expect("no answer from the tracker in time")
            .unwrap();
        assert_eq!(from, self.aux);
        let datagram = &buf[..len];
        assert!(is_probe(datagram));
        let message = ProbeMessage::decode(&datagram[PROBE_MAGIC.len()..]).unwrap();
        let ProbeMessage::Answer { seq, ring, tag } = message else {
            panic!("not an answer: {message:?}");
        };
        assert!(doorbell::answer_is_genuine(ticket, seq, ring, &tag));
        (seq, ring)
    }
}

#[tokio::test]
async fn a_parked_node_is_closed_and_its_knocks_answered_only_when_genuine_and_newer() {
    let tracker = start_tracker();
    let identity = Identity::generate().unwrap();
    let mut raw = Raw::connect(&tracker, &identity).await;
    raw.register_in("a", "room").await;
    let (ticket, aux) = raw.park(&tracker).await;
    let stats = tracker.stats();
    assert_eq!((stats.peers, stats.parked), (1, 1));

    let knocker = Knocker::new(aux).await;
    knocker.knock(&ticket, 1).await;
    assert_eq!(knocker.answer(&ticket).await, (1, false));
    // Each ignored knock is followed by a genuine one: the next answer is
    // the genuine one's, so the ignored knock got none.
    knocker.knock(&ticket, 1).await; // replayed
    knocker.knock(&ticket, 2).await;
    assert_eq!(knocker.answer(&ticket).await, (2, false));
    knocker.knock(&ParkTicket::random(), 3).await; // a door nobody is behind
    knocker
        .send(&ProbeMessage::Knock {
            door: doorbell::door_of(&ticket),
            seq: 3,
            tag: [0; 16],
        })
        .await; // forged

    knocker.knock(&ticket, 4).await;
    assert_eq!(knocker.answer(&ticket).await, (4, false));
    assert_eq!(tracker.stats().knocks, 3);
    tracker.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_peer_asking_for_a_parked_node_rings_it_and_both_are_introduced_when_it_resumes() {
    rings_and_introductions(start_tracker()).await;
}

/// A tracker on `[::]` (the default) keeps IPv4 addresses in their plain
/// form; its dual-stack second port still answers and rings them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_dual_stack_tracker_answers_and_rings_ipv4_nodes() {
    rings_and_introductions(start_tracker_with(TrackerConfig::new(
        "[::]:0".parse().unwrap(),
    )))
    .await;
}

async fn rings_and_introductions(tracker: Tracker) {
    let (a_identity, b_identity) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let (a, b) = (a_identity.peer_id(), b_identity.peer_id());
    let mut raw_a = Raw::connect(&tracker, &a_identity).await;
    raw_a.register_in("a", "room").await;
    let mut raw_b = Raw::connect(&tracker, &b_identity).await;
    raw_b.register_in("b", "room").await;
    let (ticket, aux) = raw_a.park(&tracker).await;
    let knocker = Knocker::new(aux).await;
    knocker.knock(&ticket, 10).await;
    assert_eq!(knocker.answer(&ticket).await, (10, false));

    let introducing = raw_b.request(TrackerRequestBody::Connect { peer: a }).await;
    let Ok(TrackerResponse::Introducing { attempt }) = introducing else {
        panic!("not introducing: {introducing:?}");
    };
    // The ring answers the last knock, at the address it came from.
    assert_eq!(knocker.answer(&ticket).await, (10, true));

    let mut resumed = Raw::connect(&tracker, &a_identity).await;
    let response = resumed.request(TrackerRequestBody::Resume { ticket }).await;
    let Ok(TrackerResponse::Resumed { reflexive }) = response else {
        panic!("not resumed: {response:?}");
    };
    assert_eq!(reflexive, resumed.bound.endpoint.local_addr().unwrap());
    let (peer, role) = resumed.introduced(attempt).await;
    assert_eq!((peer, role), (b, Role::Acceptor));
    let (peer, role) = raw_b.introduced(attempt).await;
    assert_eq!((peer, role), (a, Role::Dialer));
    assert_eq!(tracker.stats().parked, 0);
    // The resumed registration is a full one again: it may leave its room.
    let left = resumed
        .request(TrackerRequestBody::Leave {
            room: "room".into(),
        })
        .await;
    assert!(matches!(left, Ok(TrackerResponse::Left { .. })));
    tracker.shutdown().await;
}

#[tokio::test]
async fn a_parked_node_that_stops_knocking_is_dropped_and_its_room_told() {
    let mut config = TrackerConfig::new(loopback());
    config.knock_every = Duration::from_secs(1);
    let tracker = start_tracker_with(config);
    let (a_identity, b_identity) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    let a = a_identity.peer_id();
    let mut raw_a = Raw::connect(&tracker, &a_identity).await;
    raw_a.register_in("a", "room").await;
    let mut raw_b = Raw::connect(&tracker, &b_identity).await;
    raw_b.register_in("b", "room").await;
    let (ticket, _aux) = raw_a.park(&tracker).await;
    raw_b
        .event(|e| match e {
            TrackerEvent::Left { peer_id, room } if *peer_id == a && room == "room" => Some(()),
            _ => None,
        })
        .await;
    let stats = tracker.stats();
    assert_eq!((stats.peers, stats.parked), (1, 0));
    let mut late = Raw::connect(&tracker, &a_identity).await;
    assert_eq!(
        late.request(TrackerRequestBody::Resume { ticket }).await,
        Err(TrackerRefusal::NotParked)
    );
    tracker.shutdown().await;
}

#[tokio::test]
async fn resume_with_a_wrong_ticket_is_refused_and_the_node_may_register_afresh() {
    let tracker = start_tracker();
    let identity = Identity::generate().unwrap();
    let mut raw = Raw::connect(&tracker, &identity).await;
    raw.register_in("a", "room").await;
    let (_ticket, _aux) = raw.park(&tracker).await;
    let mut again = Raw::connect(&tracker, &identity).await;
    assert_eq!(
        again
            .request(TrackerRequestBody::Resume {
                ticket: ParkTicket::random()
            })
            .await,
        Err(TrackerRefusal::NotParked)
    );
    assert_eq!(tracker.stats().parked, 1);
    // Nothing but Register or Resume comes first.
    assert_eq!(
        again.request(TrackerRequestBody::Park).await,
        Err(TrackerRefusal::NotRegistered)
    );
    again.register_in("a", "room").await;
    let stats = tracker.stats();
    assert_eq!((stats.peers, stats.parked), (1, 0));
    tracker.shutdown().await;
}
