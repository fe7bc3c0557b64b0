//! Drives LAN discovery ([`crate::lan`]): a multicast socket of its own
//! (several nodes on one host share the port), beacons sent when the state
//! machine says, and its dials made pinned to the beacon's peer id.

use std::net::{Ipv4Addr, SocketAddr};

use tokio::net::UdpSocket;
use tokio::time::Instant;

use super::Node;
use crate::lan::{Action, Beacon, Discovery, GROUP, MAX_BEACON_LEN, PORT};

/// The beacon socket: joined to [`GROUP`] on the default multicast
/// interface, hearing its own host's beacons too (other nodes may run
/// there), sending with TTL 1 (beacons never leave the LAN).
fn beacon_socket() -> std::io::Result<UdpSocket> {
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    )?;
    socket.set_reuse_address(true)?;
    #[cfg(unix)]
    socket.set_reuse_port(true)?;
    socket.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, PORT)).into())?;
    socket.join_multicast_v4(&GROUP, &Ipv4Addr::UNSPECIFIED)?;
    socket.set_multicast_loop_v4(true)?;
    socket.set_multicast_ttl_v4(1)?;
    socket.set_nonblocking(true)?;
    UdpSocket::from_std(socket.into())
}

fn random_nonce() -> [u8; 16] {
    let mut nonce = [0u8; 16];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut nonce);
    nonce
}

impl Node {
    /// Starts LAN discovery in the background. Without a usable multicast
    /// socket it logs why and the node runs on without it. A node bound to
    /// loopback cannot be reached from the LAN, so it does not beacon.
    pub(super) fn start_lan_discovery(&self) {
        if self.local_addr().is_ok_and(|addr| addr.ip().is_loopback()) {
            return;
        }
        let socket = match beacon_socket() {
            Ok(socket) => socket,
            Err(error) => {
                tracing::warn!(%error, "LAN discovery is off: cannot open its multicast socket on port {PORT}");
                return;
            }
        };
        let node = self.clone();
        self.inner
            .spawn(async move { node.run_lan_discovery(socket).await });
    }

    async fn run_lan_discovery(self, socket: UdpSocket) {
        let port = match self.local_addr() {
            Ok(addr) => addr.port(),
            Err(_) => return,
        };
        let mut discovery = Discovery::new(self.peer_id(), Instant::now().into_std());
        let mut buf = vec![0u8; MAX_BEACON_LEN + 1];
        loop {
            while let Some(action) = discovery.poll(Instant::now().into_std()) {
                self.lan_act(&socket, port, action).await;
            }
            let wake = Instant::from_std(discovery.next_wakeup());
            tokio::select! {
                _ = tokio::time::sleep_until(wake) => {}
                received = socket.recv_from(&mut buf) => {
                    let Ok((len, from)) = received else { continue };
                    let Some(beacon) = Beacon::decode(&buf[..len]) else { continue };
                    let shared = beacon.shares_a_room(&self.rooms());
                    let connected = self.roster().open_gate(&beacon.peer).is_some();
                    let now = Instant::now().into_std();
                    if let Some(action) = discovery.on_beacon(now, from.ip(), &beacon, shared, connected) {
                        self.lan_act(&socket, port, action).await;
                    }
                }
            }
        }
    }

    async fn lan_act(&self, socket: &UdpSocket, port: u16, action: Action) {
        match action {
            Action::Beacon => {
                let rooms = self.rooms();
                if rooms.is_empty() {
                    // Nothing to be found for.
                    return;
                }
                let beacon = Beacon::new(self.peer_id(), port, &rooms, random_nonce());
                // Best effort, as every datagram: the next one is due soon.
                if let Err(error) = socket.send_to(&beacon.encode(), (GROUP, PORT)).await {
                    tracing::debug!(%error, "LAN beacon not sent");
                }
            }
            Action::Dial { peer, addr } => {
                tracing::debug!(peer = %peer.short(), %addr, "dialing a peer found on the LAN");
                let node = self.clone();
                self.inner.spawn(async move {
                    if let Err(error) = node.connect_to(peer, vec![addr]).await {
                        tracing::debug!(peer = %peer.short(), %error, "LAN peer not reached");
                    }
                });
            }
        }
    }
}
