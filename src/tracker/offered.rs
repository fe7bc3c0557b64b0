//! What the tracker keeps of the addresses a node offers besides the one it
//! sees the node at: LAN and global IPv6 addresses, and at most one port
//! its router mapped, on the node's own public IP. Anything else would let
//! a node make the tracker hand its peers addresses of its choosing, at
//! which their punches would spray probes and handshakes. Pure.

use std::net::SocketAddr;

use crate::protocol::{is_candidate, is_mapped_candidate, MAX_LOCAL_ADDRS};

/// Keeps what a node registered with `reflexive` may offer: LAN and global
/// IPv6 addresses ([`is_candidate`]) and at most one port-mapped address
/// ([`is_mapped_candidate`], put first), at most [`MAX_LOCAL_ADDRS`] in all.
pub fn keep_candidates(local_addrs: &mut Vec<SocketAddr>, reflexive: &SocketAddr) {
    let mapped = local_addrs
        .iter()
        .find(|a| is_mapped_candidate(a, reflexive))
        .copied();
    local_addrs.retain(is_candidate);
    if let Some(mapped) = mapped {
        local_addrs.insert(0, mapped);
    }
    local_addrs.truncate(MAX_LOCAL_ADDRS);
}

/// The node's router now maps it at `addr` (`None`: no longer): the old
/// mapped address goes, the new one comes first if it may be offered.
/// Returns what was kept.
pub fn replace_mapped(
    local_addrs: &mut Vec<SocketAddr>,
    reflexive: &SocketAddr,
    addr: Option<SocketAddr>,
) -> Option<SocketAddr> {
    local_addrs.retain(|a| !is_mapped_candidate(a, reflexive));
    let kept = addr.filter(|a| is_mapped_candidate(a, reflexive));
    if let Some(mapped) = kept {
        local_addrs.insert(0, mapped);
        local_addrs.truncate(MAX_LOCAL_ADDRS);
    }
    kept
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(list: &[&str]) -> Vec<SocketAddr> {
        list.iter().map(|a| a.parse().unwrap()).collect()
    }

    #[test]
    fn a_mapped_address_is_kept_only_on_the_reflexive_ip_and_only_one() {
        let reflexive = "198.51.100.11:23456".parse().unwrap();
        let mut offered = parse(&[
            "10.0.1.2:4000",
            "198.51.100.11:4000",
            "198.51.100.11:4001",
            "203.0.113.9:4000",
            "198.51.100.11:23456",
        ]);
        keep_candidates(&mut offered, &reflexive);
        assert_eq!(
            offered,
            parse(&["198.51.100.11:4000", "10.0.1.2:4000"]),
            "someone else's address, the reflexive one and a second mapped port are dropped"
        );
        let moved = "198.51.100.11:5000".parse().unwrap();
        assert_eq!(
            replace_mapped(&mut offered, &reflexive, Some(moved)),
            Some(moved)
        );
        assert_eq!(offered, parse(&["198.51.100.11:5000", "10.0.1.2:4000"]));
        let foreign = "203.0.113.9:5000".parse().unwrap();
        assert_eq!(
            replace_mapped(&mut offered, &reflexive, Some(foreign)),
            None
        );
        assert_eq!(
            offered,
            parse(&["10.0.1.2:4000"]),
            "refused, and the old one gone"
        );
    }

    #[test]
    fn the_list_stays_bounded_with_a_mapped_address() {
        let reflexive = "198.51.100.11:23456".parse().unwrap();
        let mut offered: Vec<SocketAddr> = (1..=20)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 4000)))
            .collect();
        offered.push("198.51.100.11:4000".parse().unwrap());
        keep_candidates(&mut offered, &reflexive);
        assert_eq!(offered.len(), MAX_LOCAL_ADDRS);
        assert_eq!(offered[0], "198.51.100.11:4000".parse().unwrap());
    }
}
