//! The lab's IPv6 segment: beside its IPv4 NATs, a site's router can also
//! route IPv6, without NAT, behind a stateful nftables firewall, as most
//! home and mobile routers do.
//!
//! ```text
//!   inet bridge br0: 2001:db8::/64 (routers' wan: 2001:db8::<10+n>)
//!      |
//!  router n — firewall: from the wan only replies (conntrack) and ICMPv6
//!      | lan 2001:db8:<n>::/64, router ::1, hosts ::2, ::3, ...
//! ```
//!
//! Each router gets a route to every other IPv6 site's prefix through that
//! site's router: the bridge stands in for the internet's routing.

use super::{run, Lab, Site};
use std::net::Ipv6Addr;

/// The firewall of an IPv6 router: what comes in from the internet gets
/// through only as a reply to what a host sent (RFC 6092's default), plus
/// ICMPv6, which IPv6 needs.
const FIREWALL: &str = "table ip6 firewall {
  chain forward { type filter hook forward priority 0; policy accept;
    iifname \"wan\" ct state established,related accept
    iifname \"wan\" meta l4proto ipv6-icmp accept
    iifname \"wan\" drop
  }
}
";

/// Site `n`'s number, from its public IPv4 address (198.51.100.<10+n>).
fn number(site: &Site) -> u8 {
    site.public_ip.octets()[3] - 10
}

/// The router's address on the internet bridge.
fn wan_ip(n: u8) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x10 + u16::from(n))
}

/// Host `index` of site `n`'s global IPv6 address.
fn host_ip(n: u8, index: usize) -> Ipv6Addr {
    Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 2 + index as u16)
}

fn addr(ns: &str, dev: &str, ip: Ipv6Addr, prefix: u8) {
    // nodad: the address is usable at once, not after duplicate detection.
    let cidr = format!("{ip}/{prefix}");
    run(&[
        "ip", "-n", ns, "-6", "addr", "add", &cidr, "dev", dev, "nodad",
    ]);
}

impl Lab {
    /// Drops the IPv6 UDP that comes into `site` from the internet until
    /// [`Lab::release_ipv6`], before its firewall sees it (what goes out
    /// still opens the firewall): a path over IPv6 that opens late.
    pub fn hold_ipv6(&self, site: &Site) {
        let router = site.router.as_deref().expect("an IPv6 site has a router");
        self.load_rules(
            router,
            "table ip6 held {\n  chain forward { type filter hook forward priority -20; policy accept;\n    \
             iifname \"wan\" meta l4proto udp drop\n  }\n}\n",
        );
    }

    pub fn release_ipv6(&self, site: &Site) {
        let router = site.router.as_deref().expect("an IPv6 site has a router");
        run(&[
            "ip", "netns", "exec", router, "nft", "delete", "table", "ip6", "held",
        ]);
    }

    /// Gives each of `sites` (made by [`Lab::add_site`], behind a NAT) IPv6
    /// beside its IPv4: the router routes the site's /64 through a stateful
    /// firewall, every host gets a global address, and the routers learn
    /// each other's prefixes. Returns each site's hosts' addresses.
    pub fn add_ipv6(&mut self, sites: &[&Site]) -> Vec<Vec<Ipv6Addr>> {
        let mut out = Vec::new();
        for site in sites {
            let router = site.router.as_deref().expect("an IPv6 site has a router");
            let n = number(site);
            run(&[
                "ip",
                "netns",
                "exec",
                router,
                "sysctl",
                "-qw",
                "net.ipv6.conf.all.forwarding=1",
            ]);
            addr(router, "wan", wan_ip(n), 64);
            addr(
                router,
                "lan",
                Ipv6Addr::new(0x2001, 0xdb8, u16::from(n), 0, 0, 0, 0, 1),
                64,
            );
            let mut hosts = Vec::new();
            for (index, host) in site.hosts.iter().enumerate() {
                let ip = host_ip(n, index);
                addr(&host.netns, "eth0", ip, 64);
                let gateway = format!("2001:db8:{n:x}::1");
                run(&[
                    "ip",
                    "-n",
                    &host.netns,
                    "-6",
                    "route",
                    "add",
                    "default",
                    "via",
                    &gateway,
                ]);
                hosts.push(ip);
            }
            self.load_rules(router, FIREWALL);
            out.push(hosts);
        }
        for site in sites {
            let router = site.router.as_deref().expect("an IPv6 site has a router");
            for other in sites.iter().filter(|o| number(o) != number(site)) {
                let m = number(other);
                let prefix = format!("2001:db8:{m:x}::/64");
                let via = wan_ip(m).to_string();
                run(&[
                    "ip", "-n", router, "-6", "route", "add", &prefix, "via", &via,
                ]);
            }
        }
        for site in sites {
            let router = site.router.as_deref().expect("an IPv6 site has a router");
            settle(router);
            for host in &site.hosts {
                settle(&host.netns);
            }
        }
        out
    }
}

/// Waits until no address in `ns` is still tentative: the interfaces'
/// link-local addresses go through duplicate address detection (about a
/// second) after the link comes up, and until then neighbour discovery,
/// hence every first packet to a neighbour, waits. A real router's were
/// ready long before any punch.
fn settle(ns: &str) {
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    while !run(&["ip", "-n", ns, "-6", "addr", "show", "tentative"])
        .trim()
        .is_empty()
    {
        assert!(
            std::time::Instant::now() < deadline,
            "IPv6 addresses in {ns} still tentative after 10 s"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
    }
}
