//! What the peers of one source address hold on the tracker: registrations,
//! the rooms only they keep alive, relay streams, and one relay byte budget
//! for them all. The limits on these keep throwaway identities made on one
//! machine (or one IPv6 subscriber) from exhausting what the whole tracker
//! has. Pure: the caller passes the time; [`super::registry`] keeps the
//! counts in step with its registrations and rooms.
//!
//! An IPv4 address counts as one source; an IPv6 address counts by its /64,
//! the block one subscriber usually gets, so rotating through the addresses
//! of one's own /64 gains nothing. An IPv4-mapped IPv6 address counts as its
//! IPv4 address.

use std::collections::HashMap;
use std::fmt;
use std::net::{IpAddr, Ipv6Addr};
use std::time::Instant;

use super::registry::TrackerLimits;
use crate::protocol::TrackerRefusal;
use crate::protocol::MAX_RELAYED_PACKET;
use crate::rate::TokenBucket;

/// The source a peer's limits are counted under.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SourceKey(IpAddr);

impl SourceKey {
    /// The source of a connection from `ip`: the IPv4 address, or the /64
    /// of an IPv6 address.
    pub fn of(ip: IpAddr) -> Self {
        match ip {
            IpAddr::V4(v4) => Self(IpAddr::V4(v4)),
            IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
                Some(v4) => Self(IpAddr::V4(v4)),
                None => {
                    let prefix = u128::from(v6) & !(u128::MAX >> 64);
                    Self(IpAddr::V6(Ipv6Addr::from(prefix)))
                }
            },
        }
    }
}

impl fmt::Display for SourceKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            IpAddr::V4(v4) => write!(f, "{v4}"),
            IpAddr::V6(v6) => write!(f, "{v6}/64"),
        }
    }
}

/// What one source holds now.
#[derive(Debug, Default)]
struct SourceUse {
    peers: u32,
    rooms: u32,
    relay_streams: u32,
    /// Made at the first relayed packet (the registry has no clock).
    relay_bytes: Option<TokenBucket>,
}

/// The use of every source with a registered peer. A source is forgotten
/// once its last peer is gone: its rooms and relay streams went with them.
#[derive(Debug, Default)]
pub struct Sources {
    by_key: HashMap<SourceKey, SourceUse>,
}

impl Sources {
    /// Counts one more registration from `key`, unless its peers are at
    /// the limit.
    pub fn admit_peer(
        &mut self,
        key: SourceKey,
        limits: &TrackerLimits,
    ) -> Result<(), TrackerRefusal> {
        if self.peers_of(key) >= limits.max_peers_per_address {
            return Err(TrackerRefusal::TooManyPeersFromAddress {
                limit: limits.max_peers_per_address,
            });
        }
        self.by_key.entry(key).or_default().peers += 1;
        Ok(())
    }

    /// A registration from `key` is gone (its rooms and relay stream were
    /// released before).
    pub fn release_peer(&mut self, key: SourceKey) {
        if let Some(used) = self.by_key.get_mut(&key) {
            used.peers = used.peers.saturating_sub(1);
            if used.peers == 0 {
                self.by_key.remove(&key);
            }
        }
    }

    /// Whether peers from `key` may bring one more room into being.
    pub fn may_create_room(
        &self,
        key: SourceKey,
        limits: &TrackerLimits,
    ) -> Result<(), TrackerRefusal> {
        let rooms = self.by_key.get(&key).map_or(0, |used| used.rooms);
        if rooms >= limits.max_rooms_per_address {
            return Err(TrackerRefusal::TooManyRoomsFromAddress {
                limit: limits.max_rooms_per_address,
            });
        }
        Ok(())
    }

    /// A room's owner (the one source all its members come from, if there
    /// is one) changed from `before` to `after`.
    pub fn room_owner_changed(&mut self, before: Option<SourceKey>, after: Option<SourceKey>) {
        if before == after {
            return;
        }
        if let Some(used) = before.and_then(|key| self.by_key.get_mut(&key)) {
            used.rooms = used.rooms.saturating_sub(1);
        }
        if let Some(used) = after.and_then(|key| self.by_key.get_mut(&key)) {
            used.rooms += 1;
        }
    }

    /// Counts one more relay stream from `key`, unless its streams are at
    /// the limit; the refusal is the reason the node is told.
    pub fn open_relay(&mut self, key: SourceKey, limits: &TrackerLimits) -> Result<(), String> {
        let used = self.by_key.entry(key).or_default();
        if used.relay_streams >= limits.max_relay_streams_per_address {
            return Err(format!(
                "too many relay streams from your address ({}); \
                 the tracker relays for the first {0} peers of one address",
                limits.max_relay_streams_per_address
            ));
        }
        used.relay_streams += 1;
        Ok(())
    }

    pub fn close_relay(&mut self, key: SourceKey) {
        if let Some(used) = self.by_key.get_mut(&key) {
            used.relay_streams = used.relay_streams.saturating_sub(1);
        }
    }

    /// Takes `size` bytes from the relay budget of `key`'s peers together.
    pub fn take_relay_bytes(
        &mut self,
        key: SourceKey,
        size: u32,
        limits: &TrackerLimits,
        now: Instant,
    ) -> bool {
        let Some(used) = self.by_key.get_mut(&key) else {
            return false;
        };
        used.relay_bytes
            .get_or_insert_with(|| {
                TokenBucket::new(
                    limits.relay_bytes_per_second_per_address,
                    limits
                        .relay_burst_per_address
                        .max(MAX_RELAYED_PACKET as u32),
                    now,
                )
            })
            .try_take_amount(size, now)
    }

    /// Sources with a registered peer.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    /// Peers registered from `key`.
    pub fn peers_of(&self, key: SourceKey) -> u32 {
        self.by_key.get(&key).map_or(0, |used| used.peers)
    }

    /// Rooms kept alive only by peers from `key`.
    #[cfg(test)]
    pub fn rooms_of(&self, key: SourceKey) -> u32 {
        self.by_key.get(&key).map_or(0, |used| used.rooms)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv4_counts_per_address_and_ipv6_per_slash_64() {
        let key = |text: &str| SourceKey::of(text.parse().unwrap());
        assert_ne!(key("192.0.2.1"), key("192.0.2.2"));
        assert_eq!(key("2001:db8:1:2::1"), key("2001:db8:1:2:ffff::9"));
        assert_ne!(key("2001:db8:1:2::1"), key("2001:db8:1:3::1"));
        assert_eq!(key("::ffff:192.0.2.1"), key("192.0.2.1"));
        assert_eq!(key("2001:db8:1:2::1").to_string(), "2001:db8:1:2::/64");
        assert_eq!(key("192.0.2.1").to_string(), "192.0.2.1");
    }

    #[test]
    fn a_source_is_forgotten_with_its_last_peer() {
        let limits = TrackerLimits::default();
        let mut sources = Sources::default();
        let key = SourceKey::of("192.0.2.1".parse().unwrap());
        sources.admit_peer(key, &limits).unwrap();
        sources.admit_peer(key, &limits).unwrap();
        sources.release_peer(key);
        assert_eq!(sources.len(), 1);
        sources.release_peer(key);
        assert_eq!(sources.len(), 0);
    }

    #[test]
    fn relay_bytes_are_one_budget_per_source() {
        let limits = TrackerLimits {
            relay_bytes_per_second_per_address: 1_000,
            relay_burst_per_address: 100_000,
            ..TrackerLimits::default()
        };
        let mut sources = Sources::default();
        let (a, b) = (
            SourceKey::of("192.0.2.1".parse().unwrap()),
            SourceKey::of("192.0.2.2".parse().unwrap()),
        );
        for key in [a, a, b] {
            sources.admit_peer(key, &limits).unwrap();
        }
        let now = Instant::now();
        assert!(sources.take_relay_bytes(a, 60_000, &limits, now));
        assert!(!sources.take_relay_bytes(a, 60_000, &limits, now));
        assert!(sources.take_relay_bytes(b, 60_000, &limits, now));
        // Refills at its rate.
        let later = now + std::time::Duration::from_secs(30);
        assert!(sources.take_relay_bytes(a, 60_000, &limits, later));
    }
}
