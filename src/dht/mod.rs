//! Peer records on the BitTorrent Mainline DHT: each node with a tracker
//! publishes, as a BEP 44 mutable item under its own identity key (the
//! item's public key *is* its [`PeerId`]), where it can be reached
//! ([`record::ReachRecord`]); anyone holding a peer id can look it up.
//!
//! The item is signed by [`Identity::sign`]: the secret key never leaves
//! ring, is never converted to another crate's key type, and so can reach
//! no log. The DHT crate only verifies (every item it returns is checked
//! against its key and target; [`PeerDirectory::lookup`] also checks that
//! the key is the peer asked for).
//!
//! When to publish is [`publisher::Publisher`]'s decision (sans-IO); this
//! module is the I/O around the `mainline` crate. Which bootstrap nodes it
//! contacts is explicit ([`Bootstrap`]): tests and labs name their own, and
//! the crate's public list (DNS names) is resolved only when asked for.

pub mod publisher;
pub mod record;
mod room_io;
pub mod room_record;
pub mod rooms;

use std::net::SocketAddrV4;
use std::time::Duration;

use mainline::async_dht::AsyncDht;
use mainline::{Config, Dht, MutableItem};

use crate::identity::{Identity, PeerId};
use publisher::Publication;
use record::{ReachRecord, RecordError, MAX_VALUE_LEN};

/// How long a lookup may take before it counts as failed.
pub const LOOKUP_TIMEOUT: Duration = Duration::from_secs(30);

/// Which DHT nodes to join through.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Bootstrap {
    /// The public Mainline DHT through the `mainline` crate's default
    /// bootstrap nodes (host names, resolved when the DHT starts).
    Public,
    /// Only these nodes (addresses, never resolved): a private network, a
    /// test's DHT on loopback, the NAT lab's.
    Nodes(Vec<SocketAddrV4>),
}

/// The node's DHT settings. No default: a caller says which network.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct DhtConfig {
    pub bootstrap: Bootstrap,
}

#[derive(Debug, thiserror::Error)]
pub enum DhtError {
    #[error("cannot start the DHT client: {0}")]
    Start(std::io::Error),
    #[error("no DHT record of {0}: it is offline, runs with --no-dht, or has no tracker; connect with PEERID@HOST:PORT instead")]
    NotFound(String),
    #[error("the DHT lookup of {0} took longer than {LOOKUP_TIMEOUT:?}; check the network, or connect with PEERID@HOST:PORT")]
    Timeout(String),
    #[error("the DHT answered for another key than {0} (a broken or hostile DHT node)")]
    WrongKey(String),
    #[error(transparent)]
    Record(#[from] RecordError),
    #[error("the record is {0} bytes, over BEP 44's {MAX_VALUE_LEN}")]
    TooLarge(usize),
    #[error("publishing on the DHT failed: {0}")]
    Publish(String),
}

/// This node's handle on the DHT: publish its own record, look up others'.
#[derive(Clone, Debug)]
pub struct PeerDirectory {
    dht: AsyncDht,
}

impl PeerDirectory {
    /// Starts a DHT client (its own UDP socket on an ephemeral port, its
    /// own thread). With [`Bootstrap::Nodes`] no name is resolved and no
    /// packet goes anywhere but to those nodes and the nodes they name.
    pub fn start(config: &DhtConfig) -> Result<Self, DhtError> {
        let bootstrap = match &config.bootstrap {
            Bootstrap::Public => None,
            Bootstrap::Nodes(nodes) => Some(nodes.clone()),
        };
        let dht = Dht::new(Config {
            bootstrap,
            port: Some(0),
            ..Config::default()
        })
        .map_err(DhtError::Start)?;
        Ok(Self {
            dht: dht.as_async(),
        })
    }

    /// Waits until the first bootstrap query is done; whether any node
    /// answered.
    pub async fn bootstrapped(&self) -> bool {
        self.dht.bootstrapped().await
    }

    /// Publishes `publication` signed by `identity`.
    pub async fn publish(
        &self,
        identity: &Identity,
        publication: &Publication,
    ) -> Result<(), DhtError> {
        let value = publication.record.encode();
        if value.len() > MAX_VALUE_LEN {
            return Err(DhtError::TooLarge(value.len()));
        }
        let signature = identity.sign(&signable(publication.seq, &value));
        let item = MutableItem::new_signed_unchecked(
            *identity.peer_id().as_bytes(),
            signature,
            &value,
            publication.seq,
            None,
        );
        self.dht
            .put_mutable(item, None)
            .await
            .map(|_| ())
            .map_err(|error| DhtError::Publish(error.to_string()))
    }

    /// The most recent record `peer` published, verified.
    pub async fn lookup(&self, peer: PeerId) -> Result<ReachRecord, DhtError> {
        let query = self.dht.get_mutable_most_recent(peer.as_bytes(), None);
        let item = tokio::time::timeout(LOOKUP_TIMEOUT, query)
            .await
            .map_err(|_| DhtError::Timeout(peer.to_string()))?
            .ok_or_else(|| DhtError::NotFound(peer.to_string()))?;
        if item.key() != peer.as_bytes() {
            return Err(DhtError::WrongKey(peer.to_string()));
        }
        Ok(ReachRecord::decode(item.value())?)
    }
}

/// A small DHT of its own: `nodes` DHT nodes in server mode on `bind`
/// that know each other and nothing else, for tests and labs (`punchgate
/// dht-testnet`). Runs until dropped.
pub struct LocalDht {
    testnet: mainline::Testnet,
}

impl LocalDht {
    pub fn start(bind: std::net::Ipv4Addr, nodes: usize) -> Result<Self, DhtError> {
        let testnet = mainline::Testnet::builder(nodes)
            .bind_address(bind)
            .build()
            .map_err(DhtError::Start)?;
        Ok(Self { testnet })
    }

    /// Its nodes' addresses: a bootstrap list (`--dht-bootstrap`).
    pub fn bootstrap(&self) -> Vec<SocketAddrV4> {
        self.testnet
            .bootstrap
            .iter()
            .filter_map(|node| node.parse().ok())
            .collect()
    }
}

/// What BEP 44 signs for an item without salt: the bencoded `seq` and `v`
/// keys of the put, without the surrounding dictionary.
fn signable(seq: i64, value: &[u8]) -> Vec<u8> {
    let mut out = format!("3:seqi{seq}e1:v{}:", value.len()).into_bytes();
    out.extend_from_slice(value);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signable_is_bep44s_and_ring_signs_it_as_dalek_would() {
        // BEP 44's test vector 1 (no salt).
        assert_eq!(
            signable(1, b"12:Hello World!"),
            b"3:seqi1e1:v15:12:Hello World!".to_vec()
        );
        // Ed25519 is deterministic: ring's signature over our signable is
        // the one the DHT crate's own signing produces.
        let seed = [7u8; 32];
        let ring_key = ring::signature::Ed25519KeyPair::from_seed_unchecked(&seed).unwrap();
        let value = b"some value";
        let ours = ring_key.sign(&signable(42, value));
        let theirs = MutableItem::new(mainline::SigningKey::from_bytes(&seed), value, 42, None);
        assert_eq!(ours.as_ref(), theirs.signature());
    }

    #[tokio::test]
    async fn a_record_published_on_a_local_dht_is_found_by_another_node() {
        let testnet = tokio::task::spawn_blocking(|| mainline::Testnet::builder(5).build())
            .await
            .unwrap()
            .unwrap();
        let nodes = testnet
            .bootstrap
            .iter()
            .map(|node| node.parse().unwrap())
            .collect::<Vec<SocketAddrV4>>();
        assert!(nodes.iter().all(|node| node.ip().is_loopback()));
        let config = DhtConfig {
            bootstrap: Bootstrap::Nodes(nodes),
        };
        let publisher = PeerDirectory::start(&config).unwrap();
        let reader = PeerDirectory::start(&config).unwrap();
        let identity = Identity::generate().unwrap();
        let tracker = record::TrackerRef {
            id: Identity::generate().unwrap().peer_id(),
            addr: "127.0.0.1:7000".parse().unwrap(),
        };
        let first = ReachRecord::new(vec![tracker], vec!["127.0.0.1:4000".parse().unwrap()]);
        let second = ReachRecord::new(vec![tracker], vec!["127.0.0.1:4001".parse().unwrap()]);
        for (seq, record) in [(1, &first), (2, &second)] {
            let publication = Publication {
                seq,
                record: record.clone(),
            };
            publisher.publish(&identity, &publication).await.unwrap();
            let found = reader.lookup(identity.peer_id()).await.unwrap();
            assert_eq!(&found, record);
        }
        let stranger = Identity::generate().unwrap().peer_id();
        assert!(matches!(
            reader.lookup(stranger).await,
            Err(DhtError::NotFound(_))
        ));
    }
}
