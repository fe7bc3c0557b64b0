//! The I/O of birthday punching (decisions in `crate::birthday`): the
//! hard side's extra sockets, and the QUIC endpoint on the one that wins;
//! the easy side's spray from the gate socket. Run by a punch
//! (`connect::run_punch`) beside the ordinary one when `birthday::side`
//! says so; the relay carries the chat meanwhile.
//!
//! The hard side dials. Its winning socket's NAT mapping is the path, so
//! QUIC has to run on that socket: it becomes a second quinn endpoint
//! (client only, the node's own pinned TLS identity, no relay), dials the
//! easy side's reflexive address, and the connection becomes the peer's
//! gate like any other (`greet_dialed`, `GateReady`); the manager replaces
//! the relayed gate with it. The endpoint lives as long as that
//! connection. The easy side accepts on its gate socket as usual.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use quinn::Connection;
use tokio::sync::{mpsc, OwnedSemaphorePermit};
use tokio::task::JoinSet;

use super::Node;
use crate::birthday::{predict, BirthdayConfig, EasySpray, HardAction, HardSearch, Side};
use crate::endpoint;
use crate::gate_socket::{canonical, probe_datagram};
use crate::identity::PeerId;
use crate::protocol::{Member, ProbeMessage};

/// How long a birthday endpoint waits for its connection's last packets
/// after it closed.
const DRAIN: Duration = Duration::from_secs(2);

/// A birthday punch to run beside a punch, with what it needs.
pub(super) struct Plan {
    pub side: Side,
    pub config: BirthdayConfig,
    /// Held while it runs: one at a time.
    pub slot: OwnedSemaphorePermit,
}

impl Node {
    /// Whether a punch toward `member` (introduced by `tracker`) should run
    /// a birthday punch beside it, and as which side: by both NAT reports,
    /// one at a time, and within the per-address budget.
    pub(super) fn birthday_plan(
        &self,
        tracker: super::manager::TrackerIx,
        member: &Member,
        deadline: Duration,
    ) -> Option<Plan> {
        let session = self.inner.trackers.session(tracker)?;
        let side = crate::birthday::side(
            &session.nat(),
            session.reflexive().ip(),
            &member.nat,
            member.reflexive.ip(),
        )?;
        let slot = self.inner.birthday_slot.clone().try_acquire_owned().ok()?;
        let allowed = self
            .inner
            .sprays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .allow(canonical(member.reflexive).ip(), Instant::now());
        if !allowed {
            tracing::debug!(peer = %member.peer_id.short(), "birthday punch held back: the budget for that address is spent");
            return None;
        }
        let mut config = BirthdayConfig::default();
        config.deadline = config.deadline.min(deadline);
        Some(Plan { side, config, slot })
    }

    /// Runs `plan` toward `member` for punch `attempt`: the hard side's
    /// result is an authenticated connection; the easy side's is never one
    /// (its peer's connection comes in through the accept loop).
    pub(super) async fn run_birthday(
        self,
        plan: Plan,
        attempt: u64,
        member: Member,
    ) -> Result<Connection, String> {
        let payload = ProbeMessage::Birthday {
            attempt,
            sender: self.peer_id(),
        }
        .encode()
        .map_err(|e| e.to_string())?;
        tracing::debug!(peer = %member.peer_id.short(), attempt, side = ?plan.side, "birthday punch starts");
        let result = match plan.side {
            Side::Hard => self.birthday_hard(plan.config, &member, &payload).await,
            Side::Easy => {
                self.birthday_easy(plan.config, &member, &payload).await;
                Err("the easy side's part is done".into())
            }
        };
        drop(plan.slot);
        result
    }

    async fn birthday_hard(
        &self,
        config: BirthdayConfig,
        member: &Member,
        payload: &[u8],
    ) -> Result<Connection, String> {
        let peer = member.peer_id;
        let easy = canonical(member.reflexive);
        let mut sockets = Vec::with_capacity(config.sockets);
        for _ in 0..config.sockets {
            match open_socket() {
                Ok(socket) => sockets.push(Arc::new(socket)),
                Err(error) => {
                    tracing::debug!(%error, opened = sockets.len(), "no more birthday sockets");
                    break;
                }
            }
        }
        if sockets.is_empty() {
            return Err("could not open a socket for birthday punching".into());
        }
        let started = Instant::now();
        let mut search = HardSearch::new(config, sockets.len(), easy, started);
        let (hits_tx, mut hits) = mpsc::unbounded_channel();
        let mut listeners = JoinSet::new();
        for (index, socket) in sockets.iter().enumerate() {
            listeners.spawn(listen(
                index,
                socket.clone(),
                Arc::downgrade(&self.inner),
                peer,
                hits_tx.clone(),
            ));
        }
        drop(hits_tx);
        let datagram = probe_datagram(payload);
        tracing::debug!(peer = %peer.short(), sockets = sockets.len(), %easy, "birthday punch: hard side");
        let (winner, from) = loop {
            let now = Instant::now();
            let mut won = None;
            let (mut sent, mut unsent) = (0u32, 0u32);
            while let Some(action) = search.poll_action(now) {
                match action {
                    HardAction::Probe { socket } => {
                        // Best effort, as any probe (waiting only for a new
                        // socket's first readiness).
                        match sockets[socket].send_to(&datagram, easy).await {
                            Ok(_) => sent += 1,
                            Err(_) => unsent += 1,
                        }
                    }
                    HardAction::Won { socket, from } => won = Some((socket, from)),
                }
            }
            if sent + unsent > 0 {
                tracing::debug!(sent, unsent, "birthday round");
            }
            if let Some(won) = won {
                break won;
            }
            if search.is_expired(now) {
                return Err(format!(
                    "birthday punching: none of {} sockets heard the peer",
                    sockets.len()
                ));
            }
            let wake = tokio::time::Instant::from_std(search.poll_timeout());
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some((socket, from)) = hits.recv() => search.handle_probe(socket, from),
            }
        };
        // Every other socket closes now; the winner is ours alone.
        listeners.abort_all();
        while listeners.join_next().await.is_some() {}
        let socket = sockets.swap_remove(winner);
        sockets.clear();
        let socket = Arc::try_unwrap(socket)
            .map_err(|_| "the winning birthday socket is still shared".to_string())?
            .into_std()
            .map_err(|e| e.to_string())?;
        tracing::debug!(peer = %peer.short(), %from, after = ?started.elapsed(), "birthday punch: a socket heard the peer");
        self.birthday_found(easy.ip());
        let bound = endpoint::on_socket(socket, None).map_err(|e| e.to_string())?;
        // Tell the easy side it can stop spraying.
        let _ = bound.socket.send_probe(from, payload).await;
        let connecting =
            endpoint::connect_pinned(&bound.endpoint, self.inner.client.clone(), from, &peer)
                .map_err(|e| e.to_string())?;
        let connection =
            match tokio::time::timeout(self.inner.config.connect_timeout, connecting).await {
                Ok(Ok(connection)) => connection,
                Ok(Err(error)) => return Err(super::gate::describe_close(&error)),
                Err(_) => return Err("the birthday path's handshake timed out".into()),
            };
        // The endpoint lives as long as its one connection.
        let (holder, held) = (bound.endpoint, connection.clone());
        self.inner.spawn(async move {
            held.closed().await;
            let _ = tokio::time::timeout(DRAIN, holder.wait_idle()).await;
        });
        Ok(connection)
    }

    async fn birthday_easy(&self, config: BirthdayConfig, member: &Member, payload: &[u8]) {
        let peer = member.peer_id;
        let hard = canonical(member.reflexive);
        let predicted = if member.nat.second_port == 0 {
            Vec::new()
        } else {
            predict(hard.port(), member.nat.second_port, config.predicted)
        };
        let (route, mut heard) = mpsc::unbounded_channel();
        self.inner.probe_routes().birthdays.insert(peer, route);
        let _route = RouteGuard { node: self, peer };
        let mut spray =
            EasySpray::new(config, hard.ip(), &predicted, random_seed(), Instant::now());
        tracing::debug!(peer = %peer.short(), predicted = predicted.len(), target = %hard.ip(), "birthday punch: easy side");
        loop {
            let installed = self.inner.gate_installed.notified();
            if self.roster().has_direct_gate(&peer) || self.is_closing() {
                break;
            }
            let now = Instant::now();
            while let Some(to) = spray.poll_action(now) {
                if let Err(error) = self.inner.socket.send_probe(to, payload).await {
                    tracing::trace!(%to, %error, "birthday probe not sent");
                }
            }
            if spray.is_expired(now) {
                break;
            }
            let wake = tokio::time::Instant::from_std(spray.poll_timeout());
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                Some(from) = heard.recv() => {
                    if spray.hit().is_none() {
                        tracing::debug!(peer = %peer.short(), %from, sent = spray.sent(), "birthday punch: the peer got through");
                        self.birthday_found(hard.ip());
                    }
                    spray.handle_probe(from, Instant::now());
                }
                _ = installed => {}
            }
        }
    }
}

impl Node {
    /// A birthday punch toward `ip` found a path (`SprayBudget::found`).
    fn birthday_found(&self, ip: std::net::IpAddr) {
        self.inner
            .sprays
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .found(ip);
    }
}

/// Removes an easy side's probe route when it ends, also when aborted.
struct RouteGuard<'a> {
    node: &'a Node,
    peer: PeerId,
}

impl Drop for RouteGuard<'_> {
    fn drop(&mut self) {
        self.node.inner.probe_routes().birthdays.remove(&self.peer);
    }
}

/// One extra socket of the hard side: IPv4 (the NATs being beaten are
/// IPv4's), any port.
fn open_socket() -> std::io::Result<tokio::net::UdpSocket> {
    let socket = std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, 0))?;
    socket.set_nonblocking(true)?;
    tokio::net::UdpSocket::from_std(socket)
}

/// Waits on one extra socket for a birthday probe from `peer` naming a
/// punch running with it, and reports it; anything else is ignored.
async fn listen(
    index: usize,
    socket: Arc<tokio::net::UdpSocket>,
    node: std::sync::Weak<super::Inner>,
    peer: PeerId,
    hits: mpsc::UnboundedSender<(usize, SocketAddr)>,
) {
    let mut buf = [0u8; 512];
    loop {
        let Ok((len, from)) = socket.recv_from(&mut buf).await else {
            return;
        };
        let datagram = &buf[..len];
        if !crate::gate_socket::is_probe(datagram) {
            continue;
        }
        let payload = &datagram[crate::gate_socket::PROBE_MAGIC.len()..];
        if let Ok(ProbeMessage::Birthday {
            attempt: got,
            sender,
        }) = ProbeMessage::decode(payload)
        {
            let Some(inner) = node.upgrade() else { return };
            if sender == peer && inner.probe_routes().is_live(got, &peer) {
                let _ = hits.send((index, canonical(from)));
                return;
            }
            tracing::debug!(%from, attempt = got, "a birthday probe of no running punch ignored");
        }
    }
}

fn random_seed() -> u64 {
    super::netcheck::random_nonce()
}
