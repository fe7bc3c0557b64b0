//! Reaching peers: the public connect calls (which hand the peer to the
//! connection manager and wait for its first outcome), and the I/O the
//! manager asks for: a punch in the role the tracker gave, a dial through
//! the relay, a dial by address, racing handshakes; and accepting incoming
//! connections. Every greeted connection goes to the node task, which
//! decides whether it becomes the peer's gate.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinSet;
use tokio::time::timeout;

use super::budget::Unsolicited;
use super::driver::{Input, Ready};
use super::events::{self, SetupPhases};
use super::gate::{self, Gate};
use super::manager::TrackerIx;
use super::{Inner, Node, NodeError, MAX_PUNCHES};
use crate::endpoint::{self, Target};
use crate::gate_socket::canonical;
use crate::identity::PeerId;
use crate::protocol::{Member, ProbeMessage};
use crate::punch::Role;
use crate::punch::{order_candidates, Punch, PunchAction};
use crate::tls;
use crate::wire::CloseCode;

/// Delay between handshakes to successive candidates of one peer.
const CANDIDATE_STAGGER: Duration = Duration::from_millis(100);

impl Node {
    /// `/connect`: `PEERID@host:port`, a known peer's name or id prefix, or
    /// `host:port` (trusted on first use).
    pub async fn connect_by_text(&self, what: &str) -> Result<(), NodeError> {
        if what.contains('@') {
            return self.connect_target(&what.parse()?).await;
        }
        match self.resolve_peer(what) {
            Ok(peer) => self.connect_peer(peer).await,
            // Not a peer it knows but an address: whoever answers there.
            Err(NodeError::UnknownPeer(_)) if what.parse::<Target>().is_ok() => {
                self.connect_target(&what.parse()?).await
            }
            Err(error) => Err(error),
        }
    }

    /// A known peer by name, id prefix or whole id.
    pub fn resolve_peer(&self, what: &str) -> Result<PeerId, NodeError> {
        if let Ok(peer) = what.parse::<PeerId>() {
            return Ok(peer);
        }
        let state = self.roster();
        let matches: Vec<&PeerId> = state
            .peers
            .iter()
            .filter(|(id, r)| r.name == what || id.to_string().starts_with(what))
            .map(|(id, _)| id)
            .collect();
        match matches.as_slice() {
            [] => Err(NodeError::UnknownPeer(what.to_string())),
            [id] => Ok(**id),
            _ => Err(NodeError::AmbiguousPeer(what.to_string())),
        }
    }

    /// Connects to a peer (through a tracker-coordinated punch when there
    /// is a tracker, else at its known addresses) and keeps it connected;
    /// returns once it is connected or the first attempt failed. A peer no
    /// tracker of this node lists is looked up on the DHT first, when the
    /// node uses it (`super::dht`).
    pub async fn connect_peer(&self, peer: PeerId) -> Result<(), NodeError> {
        if self.needs_lookup(&peer) {
            return self.connect_by_dht(peer).await;
        }
        self.connect_with(peer, Vec::new()).await
    }

    /// Connects to `peer` and returns its open gate. When both sides dial,
    /// the connection first reported may close as a duplicate of the other
    /// before this node has the one that stays; that is still connected,
    /// so it waits for the replacement (a few times, then gives up).
    pub async fn connected_gate(&self, peer: PeerId) -> Result<Arc<Gate>, NodeError> {
        for _ in 0..3 {
            self.connect_peer(peer).await?;
            if let Some(gate) = self.roster().open_gate(&peer) {
                return Ok(gate);
            }
        }
        Err(NodeError::Unreachable {
            peer: self.name_of(&peer),
            tried: "every connection closed as soon as it opened".into(),
        })
    }

    /// Hands `peer` to the connection manager and waits for the outcome of
    /// its first attempt.
    async fn connect_with(&self, peer: PeerId, addrs: Vec<SocketAddr>) -> Result<(), NodeError> {
        self.check_connectable(&peer)?;
        let (reply, outcome) = oneshot::channel();
        self.input(Input::Connect {
            peer,
            addrs,
            via: None,
            reply: Some(reply),
        });
        self.first_outcome(peer, outcome).await
    }

    /// Whether a connection to `peer` may be asked for now: not this node,
    /// allowed, the node not closing, room under the gate cap.
    pub(super) fn check_connectable(&self, peer: &PeerId) -> Result<(), NodeError> {
        self.check_dialable(peer)?;
        let state = self.roster();
        if state.closing {
            return Err(NodeError::ShuttingDown);
        }
        let max = self.inner.config.max_gates;
        if !state.has_open_gate(peer) && state.open_gate_count() >= max {
            return Err(NodeError::TooManyGates(max));
        }
        Ok(())
    }

    /// Waits for the node task's word on the first attempt toward `peer`.
    pub(super) async fn first_outcome(
        &self,
        peer: PeerId,
        outcome: oneshot::Receiver<Result<(), String>>,
    ) -> Result<(), NodeError> {
        let config = &self.inner.config;
        let limit = config.punch.deadline * 2 + config.connect_timeout + gate::GREETING_TIMEOUT;
        let tried = match timeout(limit, outcome).await {
            Ok(Ok(Ok(()))) => return Ok(()),
            Ok(Ok(Err(tried))) => tried,
            Ok(Err(_)) => return Err(NodeError::ShuttingDown),
            Err(_) => format!("no outcome within {limit:?}"),
        };
        Err(NodeError::Unreachable {
            peer: self.name_of(&peer),
            tried,
        })
    }

    /// The manager's `Punch`: runs one punch, in the role the tracker gave,
    /// toward `member`, whose introduction is expected `peer_late` after
    /// this node's. A connection it finds goes to the node task; a
    /// dialer's failure is reported (the manager decides about the relay).
    pub(super) async fn run_punch(
        self,
        tracker: TrackerIx,
        attempt: u64,
        member: Member,
        role: Role,
        peer_late: Duration,
    ) {
        let peer = member.peer_id;
        let started = Instant::now();
        let Ok(_slot) = self.inner.punch_slots.clone().try_acquire_owned() else {
            let why = format!("{MAX_PUNCHES} punches are running already");
            self.punch_failed(peer, attempt, role, why);
            return;
        };
        // Where the introducing tracker sees this node.
        let trackers = &self.inner.trackers;
        let reflexive = trackers
            .session(tracker)
            .or_else(|| trackers.first_session())
            .map(|t| t.reflexive());
        let ipv6 = self
            .local_addr()
            .map(|bound| !super::global_ipv6_candidates(bound).is_empty())
            .unwrap_or(false);
        let candidates = order_candidates(reflexive, member.reflexive, &member.local_addrs, ipv6);
        let (probe_tx, mut probe_rx) = mpsc::unbounded_channel();
        let mut phases = SetupPhases::default();
        {
            let mut roster = self.roster();
            let record = roster
                .peers
                .entry(peer)
                .or_insert_with(|| super::PeerRecord::new(member.name.clone()));
            record.candidates = member.candidates();
            // Read, not taken: a room's gossip and its member list may both
            // ask for the same peer, and whichever attempt wins reports the
            // time since this node last asked. Cleared once a gate is in.
            let asked = record.asked_at;
            if role == Role::Dialer {
                phases.introduction_ms = asked.map(|at| events::millis(started - at));
            }
        }
        self.inner.probe_routes().punches.insert(attempt, probe_tx);
        let payload = ProbeMessage::Punch {
            attempt,
            sender: self.peer_id(),
        }
        .encode();
        let payload = match payload {
            Ok(payload) => payload,
            Err(error) => {
                self.inner.probe_routes().punches.remove(&attempt);
                self.punch_failed(peer, attempt, role, error.to_string());
                return;
            }
        };
        tracing::debug!(peer = %peer.short(), ?role, ?candidates, ?peer_late, "punch starts");
        let mut punch = Punch::new(role, &candidates, self.inner.config.punch.clone(), started);
        punch.expect_peer_late(peer_late);
        let mut dials = JoinSet::new();
        // Against a NAT the ordinary punch cannot open, a birthday punch
        // runs beside it (src/birthday.rs), until either finds a path.
        let mut birthday = JoinSet::new();
        let deadline = self.inner.config.punch.deadline;
        if let Some(plan) = self.birthday_plan(tracker, &member, deadline) {
            birthday.spawn(self.clone().run_birthday(plan, attempt, member.clone()));
        }
        // A dialer introduced before it had measured its own NAT may be one
        // side of a birthday pair that nobody could tell. Once relayed and
        // measured, it ends this attempt early: the manager's next one
        // (about a second later) is introduced with the report.
        let unmeasured = role == Role::Dialer && !self.nat_measured(tracker);
        let outcome: Result<Option<Connection>, String> = loop {
            let installed = self.inner.gate_installed.notified();
            if self.roster().has_direct_gate(&peer) || self.is_closing() {
                break Ok(None);
            }
            if unmeasured && self.roster().has_open_gate(&peer) && self.nat_measured(tracker) {
                break Err("ended early: this node's NAT is measured now, so the next introduction can tell the peer".into());
            }
            let now = Instant::now();
            while let Some(action) = punch.poll_action(now) {
                match action {
                    PunchAction::Probe(addr) => {
                        if !self
                            .inner
                            .budget()
                            .allow(addr.ip(), Unsolicited::Probe, now)
                        {
                            tracing::debug!(%addr, "probe held back: over the address's budget");
                        } else if let Err(error) =
                            self.inner.socket.send_probe(addr, &payload).await
                        {
                            tracing::debug!(%addr, %error, "probe not sent");
                        }
                    }
                    PunchAction::Dial(addr) => {
                        tracing::trace!(%addr, "punch dials");
                        if self.inner.budget().allow(addr.ip(), Unsolicited::Dial, now) {
                            self.spawn_handshake(&mut dials, addr, peer, Duration::ZERO)
                        } else {
                            let why =
                                "held back: nothing came from there yet and its budget is spent";
                            punch.handle_dial_failed(addr, why.into());
                        }
                    }
                }
            }
            if punch.is_expired(now) {
                break Err(punch.summary());
            }
            let wake = tokio::time::Instant::from_std(punch.poll_timeout());
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                from = probe_rx.recv() => match from {
                    Some(from) => {
                        let now = Instant::now();
                        tracing::trace!(%from, "punch probe arrived");
                        phases.first_probe_ms.get_or_insert(events::millis(now - started));
                        punch.handle_probe(from, now);
                    }
                    // The manager took another attempt of this pair
                    // (`Action::AbandonPunch`) and dropped our route.
                    None => break Ok(None),
                },
                Some(joined) = dials.join_next(), if !dials.is_empty() => match joined {
                    Ok((_, Ok(connection))) => break Ok(Some(connection)),
                    Ok((addr, Err(error))) => punch.handle_dial_failed(addr, error),
                    Err(_) => {}
                },
                Some(joined) = birthday.join_next(), if !birthday.is_empty() => match joined {
                    Ok(Ok(connection)) => break Ok(Some(connection)),
                    Ok(Err(why)) => {
                        tracing::debug!(peer = %peer.short(), %why, "birthday punch ended");
                        // The ordinary punch cannot open this pair: a
                        // relayed dialer tries again (with fresh sockets)
                        // on the manager's next attempt, not at the deadline.
                        if role == Role::Dialer && self.roster().has_open_gate(&peer) {
                            break Err(format!("birthday punching found no path this time: {why}"));
                        }
                    }
                    Err(_) => {}
                },
                _ = installed => {}
            }
        };
        let over_ipv4 =
            matches!(&outcome, Ok(Some(won)) if canonical(won.remote_address()).is_ipv4());
        if over_ipv4 {
            // IPv6 is preferred where both work: one still on its way goes
            // to the manager, which replaces the IPv4 path with it.
            let node = self.clone();
            let phases = phases.clone();
            self.inner.spawn(async move {
                node.finish_ipv6_dials(dials, peer, started, phases).await;
            });
        } else {
            close_losers(&self.inner, dials, self.inner.config.punch.deadline);
        }
        birthday.abort_all();
        self.inner.probe_routes().punches.remove(&attempt);
        match outcome {
            Ok(None) => {}
            Ok(Some(connection)) => {
                if let Err(error) = self.greet_dialed(connection, peer, started, phases).await {
                    self.punch_failed(peer, attempt, role, error);
                }
            }
            Err(tried) => self.punch_failed(peer, attempt, role, tried),
        }
    }

    /// The handshakes a punch started that had not finished when one over
    /// IPv4 won: an IPv6 one that finishes within the punch deadline is
    /// greeted and handed to the node task like any dialed connection (the
    /// manager keeps it over the IPv4 path); the others close as losers.
    async fn finish_ipv6_dials(
        self,
        mut dials: Handshakes,
        peer: PeerId,
        started: Instant,
        phases: SetupPhases,
    ) {
        let drain = async {
            while let Some(joined) = dials.join_next().await {
                let Ok((addr, Ok(connection))) = joined else {
                    continue;
                };
                if canonical(addr).is_ipv6() {
                    if let Err(why) = self
                        .greet_dialed(connection, peer, started, phases.clone())
                        .await
                    {
                        tracing::debug!(peer = %peer.short(), %why, "IPv6 path not greeted");
                    }
                } else {
                    connection.close(CloseCode::Duplicate.varint(), b"another path won");
                }
            }
        };
        // Whatever has not finished by then has failed; dropping aborts it.
        let _ = timeout(self.inner.config.punch.deadline, drain).await;
    }

    /// Whether this node's NAT has been measured through `tracker`'s session.
    fn nat_measured(&self, tracker: TrackerIx) -> bool {
        self.inner
            .trackers
            .session(tracker)
            .is_some_and(|s| s.nat() != crate::protocol::NatReport::default())
    }

    /// Only the dialer's failures matter: it leads the attempt.
    fn punch_failed(&self, peer: PeerId, attempt: u64, role: Role, why: String) {
        if role == Role::Dialer {
            self.input(Input::PunchFailed { peer, attempt, why });
        } else {
            tracing::debug!(peer = %peer.short(), %why, "punch as acceptor ended");
        }
    }

    /// The manager's `DialRelay`: the same pinned connection to `peer`
    /// through `tracker`'s relay.
    pub(super) async fn dial_relay(self, peer: PeerId, tracker: TrackerIx) {
        let started = Instant::now();
        self.inner.trackers.route(peer, tracker);
        let result: Result<(), String> = async {
            let addr = self
                .inner
                .socket
                .relay_addr(&peer)
                .ok_or("too many relayed peers")?;
            tracing::debug!(peer = %peer.short(), "connecting through the relay");
            let connection = self.dial(peer, &[addr]).await?;
            // The punch it raced won while it shook hands: it would only be
            // greeted to be closed as a duplicate.
            if self.roster().has_direct_gate(&peer) {
                connection.close(CloseCode::Duplicate.varint(), b"a direct path won");
                return Ok(());
            }
            self.greet_dialed(connection, peer, started, SetupPhases::default())
                .await
        }
        .await;
        if let Err(why) = result {
            self.input(Input::RelayFailed {
                peer,
                why: why.to_string(),
            });
        }
    }

    /// The manager's `DialDirect`: dials `peer` at its known addresses
    /// (no tracker).
    pub(super) async fn dial_direct(self, peer: PeerId, addrs: Vec<SocketAddr>) {
        let started = Instant::now();
        let result = match self.dial(peer, &addrs).await {
            Ok(connection) => {
                self.greet_dialed(connection, peer, started, SetupPhases::default())
                    .await
            }
            Err(why) => Err(why),
        };
        if let Err(why) = result {
            self.input(Input::DialFailed { peer, why });
        }
    }

    /// Dials `PEERID@host:port`, or `host:port` trusting its key on first
    /// use (see [`super::by_address`]).
    pub async fn connect_target(&self, target: &Target) -> Result<(), NodeError> {
        let addr = target.resolve().await?;
        match target.peer {
            Some(peer) => self.connect_to(peer, vec![addr]).await,
            None => self.connect_unpinned(target, addr).await,
        }
    }

    /// Dials `peer` at its candidate addresses, staggered; the first
    /// authenticated handshake wins and the others are dropped.
    pub async fn connect_to(
        &self,
        peer: PeerId,
        candidates: Vec<SocketAddr>,
    ) -> Result<(), NodeError> {
        {
            let mut state = self.roster();
            let name = state.remembered_name(&peer);
            let record = state
                .peers
                .entry(peer)
                .or_insert_with(|| super::PeerRecord::new(name));
            if record.candidates.is_empty() {
                // Remembered for reconnecting to a peer given by address.
                record.candidates = candidates.clone();
            }
        }
        self.connect_with(peer, candidates).await
    }

    /// Greets over an authenticated connection this node dialed (set-up
    /// began at `started`, `phases` measured so far) and hands it to the
    /// node task.
    async fn greet_dialed(
        &self,
        connection: Connection,
        peer: PeerId,
        started: Instant,
        phases: SetupPhases,
    ) -> Result<(), String> {
        let handshake = started.elapsed();
        let greeting = timeout(
            gate::GREETING_TIMEOUT,
            Gate::greet_as_dialer(connection.clone(), self.peer_id(), peer, &self.hello()),
        )
        .await
        .unwrap_or(Err(gate::GateError::GreetingTimeout(
            gate::GREETING_TIMEOUT,
        )));
        match greeting {
            Ok(greeted) => {
                self.input(Input::GateReady(Box::new(Ready {
                    greeted,
                    started,
                    handshake: Some(handshake),
                    dialed: true,
                    phases,
                })));
                Ok(())
            }
            Err(error) => {
                error.close(&connection);
                Err(error.to_string())
            }
        }
    }

    /// One pinned handshake to `peer` at `addr`, nothing more (benchmarks).
    pub async fn dial_once(&self, addr: SocketAddr, peer: PeerId) -> Result<Connection, String> {
        endpoint::connect_pinned(&self.inner.endpoint, self.inner.client.clone(), addr, &peer)
            .map_err(|e| e.to_string())?
            .await
            .map_err(|e| gate::describe_close(&e))
    }

    /// Starts a pinned handshake to `peer` at `addr` after `delay`, into `set`.
    fn spawn_handshake(
        &self,
        set: &mut Handshakes,
        addr: SocketAddr,
        peer: PeerId,
        delay: Duration,
    ) {
        let endpoint = self.inner.endpoint.clone();
        let config = self.inner.client.clone();
        set.spawn(async move {
            if !delay.is_zero() {
                tokio::time::sleep(delay).await;
            }
            let result = match endpoint::connect_pinned(&endpoint, config, addr, &peer) {
                Ok(connecting) => connecting.await.map_err(|e| gate::describe_close(&e)),
                Err(error) => Err(error.to_string()),
            };
            (addr, result)
        });
    }

    /// Refuses dialing this node itself or a peer outside `--allow`.
    pub(super) fn check_dialable(&self, peer: &PeerId) -> Result<(), NodeError> {
        if *peer == self.peer_id() {
            return Err(NodeError::SelfConnect);
        }
        if !self.is_allowed(peer) {
            return Err(NodeError::Invalid(format!(
                "{} is not in --allow, so it may not connect; add it there first",
                peer.short()
            )));
        }
        Ok(())
    }

    /// Closes the connection to `peer` on purpose (no reconnection follows).
    pub fn disconnect(&self, peer: &PeerId) {
        let gate = self.roster().peers.get(peer).and_then(|r| r.gate.clone());
        if let Some(gate) = gate {
            gate.connection
                .close(CloseCode::Normal.varint(), b"disconnect");
        }
    }

    /// Races handshakes to `candidates`; returns the first authenticated
    /// connection, or what went wrong with each candidate.
    async fn dial(&self, peer: PeerId, candidates: &[SocketAddr]) -> Result<Connection, String> {
        if candidates.is_empty() {
            return Err("no known address".into());
        }
        let mut attempts = JoinSet::new();
        for (index, addr) in candidates.iter().copied().enumerate() {
            self.spawn_handshake(&mut attempts, addr, peer, CANDIDATE_STAGGER * index as u32);
        }
        let mut failures = Vec::new();
        let deadline = tokio::time::sleep(self.inner.config.connect_timeout);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                joined = attempts.join_next() => match joined {
                    Some(Ok((_, Ok(connection)))) => {
                        close_losers(&self.inner, attempts, self.inner.config.connect_timeout);
                        return Ok(connection);
                    }
                    Some(Ok((addr, Err(error)))) => failures.push(format!("{addr}: {error}")),
                    Some(Err(_)) => {}
                    None => break,
                },
                _ = &mut deadline => {
                    attempts.abort_all();
                    failures.push(format!("no answer within {:?}", self.inner.config.connect_timeout));
                    break;
                }
            }
        }
        Err(failures.join("; "))
    }

    /// Accepts incoming connections, at most [`MAX_INCOMING_HANDSHAKES`]
    /// handshakes and greetings under way at once: beyond, a connection is
    /// refused at once (its dialer retries), so a flood of half-done
    /// handshakes cannot pin the node's memory.
    pub(super) async fn accept_loop(self) {
        let in_progress = Arc::new(tokio::sync::Semaphore::new(MAX_INCOMING_HANDSHAKES));
        while let Some(incoming) = self.inner.endpoint.accept().await {
            let Ok(slot) = in_progress.clone().try_acquire_owned() else {
                tracing::debug!("an incoming handshake refused: too many under way");
                incoming.refuse();
                continue;
            };
            let node = self.clone();
            self.inner.spawn(async move {
                node.accept_one(incoming).await;
                drop(slot);
            });
        }
    }

    async fn accept_one(&self, incoming: quinn::Incoming) {
        let started = Instant::now();
        tracing::debug!(from = %incoming.remote_address(), "incoming handshake");
        {
            let state = self.roster();
            if state.closing || state.open_gate_count() >= self.inner.config.max_gates {
                incoming.refuse();
                return;
            }
        }
        let connecting = match incoming.accept() {
            Ok(connecting) => connecting,
            Err(error) => {
                tracing::debug!(%error, "incoming handshake failed");
                return;
            }
        };
        let Some((connection, said)) = self.handshake_and_hello(connecting).await else {
            return;
        };
        let peer = match tls::peer_id_of(&connection) {
            Ok(peer) => peer,
            Err(error) => {
                connection.close(CloseCode::Protocol.varint(), error.to_string().as_bytes());
                return;
            }
        };
        let said = match said {
            Ok(said) => said,
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "hello not sent");
                error.close(&connection);
                return;
            }
        };
        match Gate::greet_as_acceptor(connection.clone(), peer, said).await {
            Ok(greeted) => self.input(Input::GateReady(Box::new(Ready {
                greeted,
                started,
                handshake: None,
                dialed: false,
                phases: SetupPhases::default(),
            }))),
            Err(error) => {
                tracing::debug!(peer = %peer.short(), %error, "incoming greeting failed");
                error.close(&connection);
            }
        }
    }

    /// An incoming handshake to its end, with this node's hello said on it:
    /// as 0.5-RTT data, in the handshake's own flight, when this node lets
    /// any peer in (whoever completes the handshake would hear the hello
    /// anyway: identities are free); with `--allow`, only once the dialer's
    /// certificate has passed, so a stranger hears nothing. `None` if the
    /// handshake failed.
    async fn handshake_and_hello(
        &self,
        connecting: quinn::Connecting,
    ) -> Option<(Connection, Result<gate::AcceptorHello, gate::GateError>)> {
        let failed = |connection: &Connection| {
            tracing::debug!("incoming handshake failed or timed out");
            connection.close(CloseCode::Refused.varint(), b"handshake not completed");
        };
        if self.inner.allowed.is_none() {
            // An incoming connection always converts (0.5-RTT).
            let Ok((connection, finished)) = connecting.into_0rtt() else {
                return None;
            };
            let said = Gate::hello_as_acceptor(&connection, &self.hello()).await;
            // Resolves when the handshake completes (the dialer's Finished
            // and certificate checked) or fails.
            let finished = timeout(gate::GREETING_TIMEOUT, finished).await;
            if finished.is_err() || connection.close_reason().is_some() {
                failed(&connection);
                return None;
            }
            return Some((connection, said));
        }
        let connection = match timeout(gate::GREETING_TIMEOUT, connecting).await {
            Ok(Ok(connection)) => connection,
            Ok(Err(error)) => {
                tracing::debug!(%error, "incoming handshake failed");
                return None;
            }
            Err(_) => return None,
        };
        let said = Gate::hello_as_acceptor(&connection, &self.hello()).await;
        Some((connection, said))
    }
}

/// Hands each probe to the punch whose attempt it names. Holds the node
/// weakly: the socket owns the probe channel, so a strong reference here
/// would keep the node alive forever.
pub(super) async fn route_probes(
    node: std::sync::Weak<Inner>,
    mut probes: mpsc::Receiver<crate::gate_socket::Probe>,
) {
    while let Some(probe) = probes.recv().await {
        let Some(inner) = node.upgrade() else { return };
        let Ok(message) = ProbeMessage::decode(&probe.payload) else {
            continue;
        };
        let routes = inner.probe_routes();
        match message {
            ProbeMessage::Punch { attempt, .. } => {
                if let Some(route) = routes.punches.get(&attempt) {
                    // Only the two sides of this punch know its attempt id:
                    // the sender is a peer that wants to hear from us.
                    inner.budget().prove(probe.from.ip());
                    let _ = route.send(probe.from);
                }
            }
            ProbeMessage::Birthday { attempt, sender } => {
                let route = routes.birthdays.get(&sender);
                if let Some(route) = route.filter(|_| routes.is_live(attempt, &sender)) {
                    inner.budget().prove(probe.from.ip());
                    let _ = route.send(probe.from);
                }
            }
            ProbeMessage::Answer { seq, ring, tag } => {
                inner.trackers.doorbell_answer(probe.from, seq, ring, tag);
            }
            ProbeMessage::Reflected { nonce, .. } | ProbeMessage::Unsolicited { nonce }
                if routes.nat_checks.contains_key(&nonce) =>
            {
                if let Some(check) = routes.nat_checks.get(&nonce) {
                    let _ = check.send((probe.from, message));
                }
            }
            other => {
                if let Some(netcheck) = &routes.netcheck {
                    let _ = netcheck.send((probe.from, other));
                }
            }
        }
    }
}

/// Incoming handshakes (and greetings) under way at once, at most.
const MAX_INCOMING_HANDSHAKES: usize = 128;

/// Handshakes racing toward one peer, each with the address it went to.
type Handshakes = JoinSet<(SocketAddr, Result<Connection, String>)>;

/// Closes the handshakes that lost a race once they finish, as duplicates.
/// Dropping one mid-handshake would close it with keys the other side may
/// already have discarded, leaving it half-open there until its idle timeout.
fn close_losers(inner: &Inner, mut losers: Handshakes, limit: Duration) {
    if losers.is_empty() {
        return;
    }
    inner.spawn(async move {
        let drain = async {
            while let Some(joined) = losers.join_next().await {
                if let Ok((_, Ok(connection))) = joined {
                    connection.close(CloseCode::Duplicate.varint(), b"another path won");
                }
            }
        };
        // Whatever has not finished by then has failed; dropping aborts it.
        let _ = timeout(limit, drain).await;
    });
}
