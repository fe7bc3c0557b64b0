//! The value a node publishes on the DHT: where it can be reached (the
//! trackers it is registered with, by id and address, and its public
//! addresses), in a compact versioned binary form well under BEP 44's
//! 1000-byte limit. The sequence number and the signature are BEP 44's,
//! outside the value. Decoding refuses anything that is not exactly one
//! record of a version this build knows.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use crate::identity::{PeerId, PEER_ID_LEN};

/// The record format this build writes and reads.
pub const RECORD_VERSION: u8 = 1;
/// Trackers one record lists, at most.
pub const MAX_TRACKERS: usize = 8;
/// Public addresses one record lists, at most.
pub const MAX_ADDRS: usize = 8;
/// BEP 44's limit on a value.
pub const MAX_VALUE_LEN: usize = 1000;

const TAG_V4: u8 = 4;
const TAG_V6: u8 = 6;

/// A tracker the node is registered with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub struct TrackerRef {
    pub id: PeerId,
    pub addr: SocketAddr,
}

/// Where a node can be reached. Built with [`ReachRecord::new`], which
/// keeps it within the limits, sorted and without duplicates, so that two
/// records of the same facts are equal.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ReachRecord {
    trackers: Vec<TrackerRef>,
    addrs: Vec<SocketAddr>,
}

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    #[error("the peer's DHT record is empty")]
    Empty,
    #[error("the peer's DHT record has format version {0}, newer than this build reads ({RECORD_VERSION}); upgrade punchgate")]
    Version(u8),
    #[error("the peer's DHT record is cut short (a corrupted or forged record)")]
    Truncated,
    #[error("the peer's DHT record has {0} bytes after its end (a corrupted or forged record)")]
    Trailing(usize),
    #[error("the peer's DHT record lists {count} {what}, more than {max} (a corrupted or forged record)")]
    TooMany {
        what: &'static str,
        count: usize,
        max: usize,
    },
    #[error(
        "the peer's DHT record has an address of unknown kind {0} (a corrupted or forged record)"
    )]
    AddressKind(u8),
    #[error("the peer's DHT record has an unusable address {0} (a corrupted or forged record)")]
    BadAddress(SocketAddr),
}

impl ReachRecord {
    /// A record of these trackers and addresses: unusable addresses
    /// (unspecified, port 0) dropped, IPv4-mapped IPv6 ones shown as IPv4,
    /// sorted, duplicates removed, each list cut to its maximum.
    pub fn new(trackers: Vec<TrackerRef>, addrs: Vec<SocketAddr>) -> Self {
        let mut trackers: Vec<TrackerRef> = trackers
            .into_iter()
            .map(|t| TrackerRef {
                id: t.id,
                addr: canonical(t.addr),
            })
            .filter(|t| usable(t.addr))
            .collect();
        trackers.sort();
        trackers.dedup();
        trackers.truncate(MAX_TRACKERS);
        let mut addrs: Vec<SocketAddr> = addrs
            .into_iter()
            .map(canonical)
            .filter(|a| usable(*a))
            .collect();
        addrs.sort();
        addrs.dedup();
        addrs.truncate(MAX_ADDRS);
        Self { trackers, addrs }
    }

    pub fn trackers(&self) -> &[TrackerRef] {
        &self.trackers
    }

    pub fn addrs(&self) -> &[SocketAddr] {
        &self.addrs
    }

    /// The same without addresses that mean nothing off their own network
    /// (private, shared carrier-grade NAT, loopback, link-local, unique
    /// local): what goes on the public DHT, where they would only tell
    /// strangers about this node's LAN.
    pub fn public_only(&self) -> Self {
        let public = |addr: &SocketAddr| !crate::protocol::is_lan_candidate(addr);
        Self {
            trackers: self
                .trackers
                .iter()
                .filter(|t| public(&t.addr))
                .copied()
                .collect(),
            addrs: self.addrs.iter().filter(|a| public(a)).copied().collect(),
        }
    }

    /// Whether it says nothing useful (no tracker, no address).
    pub fn is_empty(&self) -> bool {
        self.trackers.is_empty() && self.addrs.is_empty()
    }

    /// The value to publish: version, then the trackers (count, then id and
    /// address each), then the addresses (count, then each). An address is
    /// a kind byte (4 or 6), the IP's bytes and the port, big-endian.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(64);
        out.push(RECORD_VERSION);
        // `new` keeps both lists within their maximum, which fits a byte.
        out.push(self.trackers.len() as u8);
        for tracker in &self.trackers {
            out.extend_from_slice(tracker.id.as_bytes());
            put_addr(&mut out, tracker.addr);
        }
        out.push(self.addrs.len() as u8);
        for addr in &self.addrs {
            put_addr(&mut out, *addr);
        }
        out
    }

    /// Reads a published value; anything but exactly one well-formed
    /// record of a known version is an error.
    pub fn decode(bytes: &[u8]) -> Result<Self, RecordError> {
        let mut reader = Reader(bytes);
        let version = reader.byte().map_err(|_| RecordError::Empty)?;
        if version != RECORD_VERSION {
            return Err(RecordError::Version(version));
        }
        let count = reader.count("trackers", MAX_TRACKERS)?;
        let mut trackers = Vec::with_capacity(count);
        for _ in 0..count {
            let id: [u8; PEER_ID_LEN] = reader
                .take(PEER_ID_LEN)?
                .try_into()
                .map_err(|_| RecordError::Truncated)?;
            let addr = reader.addr()?;
            trackers.push(TrackerRef {
                id: PeerId::from_bytes(id),
                addr,
            });
        }
        let count = reader.count("addresses", MAX_ADDRS)?;
        let mut addrs = Vec::with_capacity(count);
        for _ in 0..count {
            addrs.push(reader.addr()?);
        }
        if !reader.0.is_empty() {
            return Err(RecordError::Trailing(reader.0.len()));
        }
        Ok(Self { trackers, addrs })
    }
}

fn canonical(addr: SocketAddr) -> SocketAddr {
    SocketAddr::new(addr.ip().to_canonical(), addr.port())
}

fn usable(addr: SocketAddr) -> bool {
    addr.port() != 0 && !addr.ip().is_unspecified() && !addr.ip().is_multicast()
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(TAG_V4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(TAG_V6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    fn take(&mut self, n: usize) -> Result<&'a [u8], RecordError> {
        if self.0.len() < n {
            return Err(RecordError::Truncated);
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Ok(head)
    }

    fn byte(&mut self) -> Result<u8, RecordError> {
        Ok(self.take(1)?[0])
    }

    fn count(&mut self, what: &'static str, max: usize) -> Result<usize, RecordError> {
        let count = usize::from(self.byte()?);
        if count > max {
            return Err(RecordError::TooMany { what, count, max });
        }
        Ok(count)
    }

    fn addr(&mut self) -> Result<SocketAddr, RecordError> {
        let ip = match self.byte()? {
            TAG_V4 => {
                let octets: [u8; 4] = self
                    .take(4)?
                    .try_into()
                    .map_err(|_| RecordError::Truncated)?;
                IpAddr::V4(Ipv4Addr::from(octets))
            }
            TAG_V6 => {
                let octets: [u8; 16] = self
                    .take(16)?
                    .try_into()
                    .map_err(|_| RecordError::Truncated)?;
                IpAddr::V6(Ipv6Addr::from(octets))
            }
            other => return Err(RecordError::AddressKind(other)),
        };
        let port: [u8; 2] = self
            .take(2)?
            .try_into()
            .map_err(|_| RecordError::Truncated)?;
        let addr = SocketAddr::new(ip, u16::from_be_bytes(port));
        if !usable(addr) || canonical(addr) != addr {
            return Err(RecordError::BadAddress(addr));
        }
        Ok(addr)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(byte: u8) -> PeerId {
        PeerId::from_bytes([byte; PEER_ID_LEN])
    }

    fn tracker(byte: u8, addr: &str) -> TrackerRef {
        TrackerRef {
            id: id(byte),
            addr: addr.parse().unwrap(),
        }
    }

    fn full() -> ReachRecord {
        let trackers = (0..20u8)
            .map(|i| tracker(i, &format!("[2001:db8::{i}]:{}", 4000 + u16::from(i))))
            .collect();
        let addrs = (0..20u16)
            .map(|i| format!("[2001:db8:1::{i}]:{}", 5000 + i).parse().unwrap())
            .collect();
        ReachRecord::new(trackers, addrs)
    }

    #[test]
    fn a_record_round_trips() {
        let record = ReachRecord::new(
            vec![
                tracker(1, "192.0.2.1:7000"),
                tracker(2, "[2001:db8::1]:7001"),
            ],
            vec!["198.51.100.7:40000".parse().unwrap()],
        );
        let bytes = record.encode();
        assert_eq!(ReachRecord::decode(&bytes).unwrap(), record);
        assert_eq!(bytes[0], RECORD_VERSION);
    }

    #[test]
    fn the_largest_record_fits_bep44() {
        let record = full();
        assert_eq!(record.trackers().len(), MAX_TRACKERS);
        assert_eq!(record.addrs().len(), MAX_ADDRS);
        let bytes = record.encode();
        assert!(bytes.len() <= MAX_VALUE_LEN, "{} bytes", bytes.len());
        assert_eq!(ReachRecord::decode(&bytes).unwrap(), record);
    }

    #[test]
    fn equal_facts_make_equal_records() {
        let a = ReachRecord::new(
            vec![tracker(2, "192.0.2.2:1"), tracker(1, "192.0.2.1:1")],
            vec![
                "[::ffff:198.51.100.7]:9".parse().unwrap(),
                "198.51.100.7:9".parse().unwrap(),
                "0.0.0.0:9".parse().unwrap(),
                "198.51.100.8:0".parse().unwrap(),
            ],
        );
        let b = ReachRecord::new(
            vec![tracker(1, "192.0.2.1:1"), tracker(2, "192.0.2.2:1")],
            vec!["198.51.100.7:9".parse().unwrap()],
        );
        assert_eq!(a, b);
        assert_eq!(a.addrs().len(), 1);
    }

    #[test]
    fn the_public_dht_gets_no_lan_address() {
        let record = ReachRecord::new(
            vec![
                tracker(1, "192.168.1.2:7000"),
                tracker(2, "203.0.113.5:7000"),
                tracker(3, "127.0.0.1:7000"),
            ],
            vec![
                "10.0.0.7:4000".parse().unwrap(),
                "100.64.3.4:4000".parse().unwrap(),
                "[fd00::1]:4000".parse().unwrap(),
                "[fe80::1]:4000".parse().unwrap(),
                "198.51.100.7:41000".parse().unwrap(),
                "[2001:db8::7]:4000".parse().unwrap(),
            ],
        );
        let public = record.public_only();
        assert_eq!(public.trackers(), &[tracker(2, "203.0.113.5:7000")]);
        assert_eq!(
            public.addrs(),
            &[
                "198.51.100.7:41000".parse::<SocketAddr>().unwrap(),
                "[2001:db8::7]:4000".parse().unwrap()
            ]
        );
    }

    #[test]
    fn garbage_is_refused_with_a_reason() {
        let good = full().encode();
        assert_eq!(ReachRecord::decode(&[]), Err(RecordError::Empty));
        assert_eq!(ReachRecord::decode(&[9]), Err(RecordError::Version(9)));
        for cut in 1..good.len() {
            assert_eq!(
                ReachRecord::decode(&good[..cut]),
                Err(RecordError::Truncated),
                "cut at {cut}"
            );
        }
        let mut long = good.clone();
        long.push(0);
        assert_eq!(ReachRecord::decode(&long), Err(RecordError::Trailing(1)));
        assert!(matches!(
            ReachRecord::decode(&[RECORD_VERSION, 200]),
            Err(RecordError::TooMany { count: 200, .. })
        ));
        assert_eq!(
            ReachRecord::decode(&[RECORD_VERSION, 0, 1, 5, 0, 0]),
            Err(RecordError::AddressKind(5))
        );
        let zero_port = [RECORD_VERSION, 0, 1, TAG_V4, 192, 0, 2, 1, 0, 0];
        assert!(matches!(
            ReachRecord::decode(&zero_port),
            Err(RecordError::BadAddress(_))
        ));
        let mapped = {
            let mut bytes = vec![RECORD_VERSION, 0, 1, TAG_V6];
            bytes.extend_from_slice(&Ipv4Addr::new(192, 0, 2, 1).to_ipv6_mapped().octets());
            bytes.extend_from_slice(&80u16.to_be_bytes());
            bytes
        };
        assert!(matches!(
            ReachRecord::decode(&mapped),
            Err(RecordError::BadAddress(_))
        ));
    }

    #[test]
    fn every_byte_flip_is_refused_or_still_a_valid_record() {
        // No panic, no oversized lists, whatever the bytes.
        let good = full().encode();
        for at in 0..good.len() {
            for bit in 0..8 {
                let mut bytes = good.clone();
                bytes[at] ^= 1 << bit;
                if let Ok(record) = ReachRecord::decode(&bytes) {
                    assert!(record.trackers().len() <= MAX_TRACKERS);
                    assert_eq!(record.encode(), bytes);
                }
            }
        }
    }
}
