//! Neighbour (ARP) entries on the lab's internet bridge, made permanent.
//!
//! On a real internet a router's next hop (its ISP's gateway) was resolved
//! long before any punch: its first packet toward a new peer leaves at
//! once. The lab's bridge instead makes every router a link-layer neighbour
//! of every other, and two that never spoke would resolve each other over
//! the delay lines on their first packet: ARP's round trip would add up to
//! one path RTT to the first probe and the first handshake packet of every
//! punch, a cost no real path has (it was the half round trip docs/NAT.md
//! used to blame on the NATs). Every address on the bridge is therefore
//! entered as a permanent neighbour of every other interface there.

use super::lab::run;
use std::net::Ipv4Addr;

/// One interface on the internet bridge.
struct Member {
    ns: String,
    dev: String,
    mac: String,
    ips: Vec<Ipv4Addr>,
}

/// The interfaces on the internet bridge so far.
#[derive(Default)]
pub struct Neighbours {
    members: Vec<Member>,
}

impl Neighbours {
    /// `dev` in `ns`, with `ips`, joined the bridge: it and every earlier
    /// member learn each other's link-layer addresses for good.
    pub fn join(&mut self, ns: &str, dev: &str, ips: &[Ipv4Addr]) {
        let mac = run(&["ip", "-n", ns, "-br", "link", "show", "dev", dev])
            .split_whitespace()
            .nth(2)
            .unwrap_or_else(|| panic!("no link-layer address for {dev} in {ns}"))
            .to_string();
        let joining = Member {
            ns: ns.to_string(),
            dev: dev.to_string(),
            mac,
            ips: ips.to_vec(),
        };
        for other in &self.members {
            learn(&joining, other);
            learn(other, &joining);
        }
        self.members.push(joining);
    }
}

/// `at` learns `whom`'s addresses.
fn learn(at: &Member, whom: &Member) {
    for ip in &whom.ips {
        run(&[
            "ip",
            "-n",
            &at.ns,
            "neigh",
            "replace",
            &ip.to_string(),
            "lladdr",
            &whom.mac,
            "dev",
            &at.dev,
            "nud",
            "permanent",
        ]);
    }
}
