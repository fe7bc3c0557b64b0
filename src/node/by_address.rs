//! Connecting to a peer by address alone (`--connect HOST:PORT`,
//! `/connect HOST PORT`): the key that answers there is trusted on first
//! use, shown as a fingerprint and remembered in `known_peers` in the data
//! directory; a different key at that address later is refused loudly, as
//! ssh does and as trackers given without their id are
//! ([`crate::home::KnownKeys`] keeps both).
//!
//! The first handshake only learns the key (it is closed before anything
//! is sent); the connection that follows is pinned to that key like any
//! other, so nothing downstream trusts an unverified peer.

use std::net::SocketAddr;

use tokio::time::timeout;

use super::manager::{Jitter, ManagerConfig};
use super::{gate, Event, Node, NodeError};
use crate::endpoint::Target;
use crate::home::{KnownKeys, Trust};
use crate::identity::PeerId;
use crate::tls::{self, CertifiedIdentity};
use crate::wire::CloseCode;

/// Id characters a fingerprint shows (100 bits), in groups of four.
const FINGERPRINT_CHARS: usize = 20;

/// The start of `peer`'s id in groups of four (`abcd efgh …`): what the
/// user compares with `punchgate id` on the other machine.
pub fn fingerprint(peer: &PeerId) -> String {
    let text = peer.to_string();
    let chars: Vec<char> = text.chars().take(FINGERPRINT_CHARS).collect();
    chars
        .chunks(4)
        .map(|group| group.iter().collect::<String>())
        .collect::<Vec<_>>()
        .join(" ")
}

impl Node {
    /// Connects to the peer at `target` (no id given; `addr` is where its
    /// host resolved): learns its key, checks it against `known_peers`,
    /// then connects pinned to it.
    pub(super) async fn connect_unpinned(
        &self,
        target: &Target,
        addr: SocketAddr,
    ) -> Result<(), NodeError> {
        let peer = self.identify_retrying(&target.host, addr).await?;
        if self.roster().has_open_gate(&peer) {
            self.emit(Event::Info {
                message: format!(
                    "already connected to {} [{}] at {}",
                    self.name_of(&peer),
                    peer.short(),
                    target.host
                ),
            });
            return Ok(());
        }
        self.connect_to(peer, vec![addr]).await
    }

    /// [`Node::identify`] until a peer answers: a peer not up yet (a
    /// bootstrap peer, a friend starting later) is tried again with the
    /// connection manager's backoff, each failure told with the pause,
    /// until shutdown stops it. Once its key is known, the manager keeps
    /// the peer connected as any other.
    async fn identify_retrying(&self, host: &str, addr: SocketAddr) -> Result<PeerId, NodeError> {
        let backoff = ManagerConfig::default().retry;
        let mut jitter = Jitter::new(super::now_ms() ^ u64::from(addr.port()));
        let mut failures = 0;
        loop {
            match self.identify(host, addr).await {
                Err(NodeError::Unreachable { tried, .. }) if !self.is_closing() => {
                    failures += 1;
                    let delay = backoff.delay(failures, &mut jitter);
                    self.emit(Event::error(format!(
                        "could not connect to {host}: {tried}; trying again in {}",
                        super::events::seconds_text(delay)
                    )));
                    tokio::time::sleep(delay).await;
                }
                result => return result,
            }
        }
    }

    /// The id of the peer answering at `addr`, trusted on first use for
    /// `host` (the address as the user gave it).
    async fn identify(&self, host: &str, addr: SocketAddr) -> Result<PeerId, NodeError> {
        let certified = CertifiedIdentity::new(&self.inner.identity)?;
        let config = tls::danger::trust_on_first_use_client(&certified, tls::ALPN_PEER)?;
        let unreachable = |tried: String| NodeError::Unreachable {
            peer: host.to_string(),
            tried,
        };
        let connecting = self
            .inner
            .endpoint
            .connect_with(config, addr, "peer.punchgate")
            .map_err(|e| unreachable(e.to_string()))?;
        let limit = self.inner.config.connect_timeout;
        let connection = timeout(limit, connecting)
            .await
            .map_err(|_| {
                unreachable(format!(
                    "no answer within {}",
                    super::events::seconds_text(limit)
                ))
            })?
            .map_err(|e| unreachable(gate::describe_close(&e)))?;
        let peer = tls::peer_id_of(&connection);
        connection.close(CloseCode::Normal.varint(), b"identified");
        let peer = peer?;
        self.check_dialable(&peer)?;
        let known = KnownKeys::peers(&self.inner.home);
        if known.check_or_remember(host, peer)? == Trust::FirstUse {
            self.emit(Event::Trusted {
                addr: host.to_string(),
                peer_id: peer.to_string(),
                fingerprint: fingerprint(&peer),
            });
        }
        Ok(peer)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn a_fingerprint_is_the_start_of_the_id_in_groups_of_four() {
        let peer = Identity::generate().unwrap().peer_id();
        let print = fingerprint(&peer);
        assert_eq!(print.len(), FINGERPRINT_CHARS + FINGERPRINT_CHARS / 4 - 1);
        assert_eq!(
            print.replace(' ', ""),
            peer.to_string()[..FINGERPRINT_CHARS]
        );
    }
}
