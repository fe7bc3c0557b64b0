//! Which of a peer's addresses a punch tries, in which order: LAN addresses
//! only on the same site, a bounded few global IPv6 addresses first where
//! this node has IPv6, a port its router mapped for it, the public IPv4
//! address always. Pure, no I/O.

use std::net::SocketAddr;

/// LAN candidates of a peer tried at most.
pub const MAX_LAN_CANDIDATES: usize = 8;

/// Global IPv6 addresses of a peer tried at most.
pub const MAX_IPV6_CANDIDATES: usize = 2;

/// The addresses to punch toward for a peer the tracker saw at `reflexive`
/// with interface addresses `local`, in order. Behind the same public
/// address as this node (`my_reflexive`), its LAN addresses come first
/// (hairpinning is rare), at most [`MAX_LAN_CANDIDATES`] of them. Anywhere
/// else its LAN addresses are of no use, and they are what a hostile peer
/// fills with addresses of its choosing to aim this node's probes at
/// others: they are not tried.
///
/// If this node has IPv6 (`ipv6`), the peer's global IPv6 addresses are
/// tried too, at most [`MAX_IPV6_CANDIDATES`], before its public IPv4
/// address: no NAT stands in front of them, only a stateful firewall the
/// punch opens, so they are preferred when both work (the dialer's
/// handshakes start in this order; the first authenticated one wins).
/// A hostile peer can aim a punch's probes at two addresses of its choice
/// this way: a bounded few small packets per introduction it asked for.
///
/// A port the peer's router mapped for it (on the same IP as its reflexive
/// address, [`crate::protocol::is_mapped_candidate`]) comes just before the
/// reflexive address, at most one: a mapping lets in anyone's packets, so
/// it works where the reflexive address needs a punch (a symmetric NAT).
pub fn order_candidates(
    my_reflexive: Option<SocketAddr>,
    reflexive: SocketAddr,
    local: &[SocketAddr],
    ipv6: bool,
) -> Vec<SocketAddr> {
    let same_nat = my_reflexive.is_some_and(|mine| mine.ip() == reflexive.ip());
    let mut out = Vec::with_capacity(MAX_LAN_CANDIDATES + MAX_IPV6_CANDIDATES + 1);
    let fresh =
        |out: &Vec<SocketAddr>, addr: &SocketAddr| !out.contains(addr) && *addr != reflexive;
    if same_nat {
        let lan = |a: &&SocketAddr| !crate::protocol::is_global_ipv6(a) && a.ip() != reflexive.ip();
        for addr in local.iter().filter(lan) {
            if out.len() == MAX_LAN_CANDIDATES {
                break;
            }
            if fresh(&out, addr) {
                out.push(*addr);
            }
        }
    }
    if ipv6 {
        let lan = out.len();
        for addr in local.iter().filter(|a| crate::protocol::is_global_ipv6(a)) {
            if out.len() == lan + MAX_IPV6_CANDIDATES {
                break;
            }
            if fresh(&out, addr) {
                out.push(*addr);
            }
        }
    }
    let mapped = local
        .iter()
        .find(|a| crate::protocol::is_mapped_candidate(a, &reflexive));
    if let Some(addr) = mapped {
        if fresh(&out, addr) {
            out.push(*addr);
        }
    }
    out.push(reflexive);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addr(text: &str) -> SocketAddr {
        text.parse().unwrap()
    }

    #[test]
    fn candidates_behind_the_same_nat_put_lan_first() {
        let theirs = addr("198.51.100.1:4000");
        let lan = [addr("10.0.0.5:4000")];
        assert_eq!(
            order_candidates(Some(addr("198.51.100.1:5000")), theirs, &lan, false),
            vec![lan[0], theirs]
        );
    }

    #[test]
    fn global_ipv6_candidates_come_before_ipv4_when_this_node_has_ipv6() {
        let theirs = addr("198.51.100.1:4000");
        let local = [
            addr("10.0.0.5:4000"),
            addr("[2001:db8:1::2]:4000"),
            addr("[2001:db8:1::3]:4000"),
            addr("[2001:db8:1::4]:4000"),
        ];
        let elsewhere = Some(addr("203.0.113.1:5000"));
        assert_eq!(
            order_candidates(elsewhere, theirs, &local, true),
            vec![local[1], local[2], theirs],
            "LAN skipped, IPv6 bounded and first"
        );
        assert_eq!(
            order_candidates(elsewhere, theirs, &local, false),
            vec![theirs],
            "no IPv6 here: only IPv4"
        );
        let same = Some(addr("198.51.100.1:5000"));
        assert_eq!(
            order_candidates(same, theirs, &local, true),
            vec![local[0], local[1], local[2], theirs]
        );
    }

    #[test]
    fn lan_candidates_of_another_site_are_never_tried() {
        let theirs = addr("198.51.100.1:4000");
        // What a hostile peer would register as its "LAN": someone else.
        let chosen = [addr("192.0.2.7:53"), addr("192.0.2.8:80")];
        assert_eq!(
            order_candidates(Some(addr("203.0.113.1:5000")), theirs, &chosen, true),
            vec![theirs]
        );
        assert_eq!(order_candidates(None, theirs, &chosen, true), vec![theirs]);
    }

    #[test]
    fn a_mapped_port_comes_just_before_the_reflexive_address_and_only_one() {
        let theirs = addr("198.51.100.11:23456");
        let local = [
            addr("198.51.100.11:4000"),
            addr("198.51.100.11:4001"),
            addr("[2001:db8:1::2]:4000"),
            addr("10.0.1.2:4000"),
        ];
        let elsewhere = Some(addr("203.0.113.1:5000"));
        assert_eq!(
            order_candidates(elsewhere, theirs, &local, true),
            vec![local[2], local[0], theirs]
        );
        let same = Some(addr("198.51.100.11:5000"));
        assert_eq!(
            order_candidates(same, theirs, &local, false),
            vec![local[3], local[0], theirs],
            "not a LAN candidate, even behind the same NAT"
        );
    }

    #[test]
    fn lan_candidates_are_bounded() {
        let theirs = addr("198.51.100.1:4000");
        let many: Vec<SocketAddr> = (1..=40)
            .map(|i| SocketAddr::from(([10, 0, 0, i], 4000)))
            .collect();
        let ordered = order_candidates(Some(addr("198.51.100.1:5000")), theirs, &many, true);
        assert_eq!(ordered.len(), MAX_LAN_CANDIDATES + 1);
        assert_eq!(ordered.last(), Some(&theirs));
    }
}
