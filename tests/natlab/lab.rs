//! The NAT lab: a topology of network namespaces with real nftables NAT.
//!
//! ```text
//!            tracker ns (198.51.100.2 and .3)
//!                     |
//!   inet ns: bridge br0, 198.51.100.0/24 ("the internet")
//!      |                     |                         |
//!  router N (wan .10+N)   host N (no NAT, .10+N)   carrier router (wan .10+N)
//!      | lan 10.0.N.0/24                               | 100.64.N.0/24
//!  host N (10.0.N.2, .3)                           home router → host
//! ```
//!
//! Endpoint-independent mapping is built deliberately: each host's gate
//! socket (port 4000) is mapped to a fixed external port (41000 + index), since
//! plain masquerade only keeps ports stable when nothing collides. Filtering is
//! then endpoint-independent (a static forward), address-dependent (forward
//! only from addresses the host has sent to, an nftables set), or
//! address-and-port-dependent (conntrack replies only). Symmetric mapping is
//! `snat … random`: a fresh port per destination. Unsolicited packets are
//! dropped before conntrack confirms them, so they never disturb a mapping.
//!
//! Everything lives in namespaces this lab creates (names start with a
//! per-lab prefix) and is deleted when the lab is dropped, also on panic.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, UdpSocket};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};

/// The port every lab host binds its gate socket to.
pub const HOST_PORT: u16 = 4000;
pub const TRACKER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 2);
/// A second address of the tracker's namespace (another "internet host").
pub const OTHER_IP: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 3);
pub const TRACKER_PORT: u16 = 7000;

/// NAT behaviours of RFC 4787.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Nat {
    /// A public address, no NAT.
    None,
    /// Endpoint-independent mapping and filtering ("full cone").
    FullCone,
    /// Endpoint-independent mapping, address-dependent filtering.
    AddressRestricted,
    /// Endpoint-independent mapping, address-and-port-dependent filtering.
    PortRestricted,
    /// Endpoint-dependent mapping ("symmetric"), address-and-port filtering.
    Symmetric,
}

impl Nat {
    pub const ALL: [Nat; 5] = [
        Nat::None,
        Nat::FullCone,
        Nat::AddressRestricted,
        Nat::PortRestricted,
        Nat::Symmetric,
    ];

    pub fn label(self) -> &'static str {
        match self {
            Nat::None => "no NAT",
            Nat::FullCone => "EIM/EIF (full cone)",
            Nat::AddressRestricted => "EIM/ADF (address-restricted)",
            Nat::PortRestricted => "EIM/APDF (port-restricted)",
            Nat::Symmetric => "EDM/APDF (symmetric)",
        }
    }

    pub fn endpoint_independent_mapping(self) -> bool {
        self != Nat::Symmetric
    }

    /// Whether a direct path between these two can be punched without
    /// birthday punching (src/birthday.rs): not when one side maps per
    /// destination and the other only lets in the exact address and port it
    /// sent to.
    pub fn punchable(a: Nat, b: Nat) -> bool {
        let hard = |x: Nat, y: Nat| {
            x == Nat::Symmetric && matches!(y, Nat::Symmetric | Nat::PortRestricted)
        };
        !(hard(a, b) || hard(b, a))
    }
}

/// One internal endpoint a NAT maps: internal address, external port.
struct Mapping {
    internal: SocketAddrV4,
    external_port: u16,
}

/// The nftables ruleset of a NAT router.
fn nat_rules(
    nat: Nat,
    wan_ip: Ipv4Addr,
    lan_net: &str,
    mappings: &[Mapping],
    hairpin: bool,
) -> String {
    let mut sets = String::new();
    let mut prerouting = String::new();
    let mut postrouting = String::new();
    for (index, mapping) in mappings.iter().enumerate() {
        let (ip, port, external) = (
            mapping.internal.ip(),
            mapping.internal.port(),
            mapping.external_port,
        );
        if hairpin {
            prerouting += &format!(
                "    iifname \"lan\" ip daddr {wan_ip} udp dport {external} dnat to {ip}:{port}\n"
            );
        }
        match nat {
            Nat::FullCone => {
                prerouting +=
                    &format!("    iifname \"wan\" udp dport {external} dnat to {ip}:{port}\n");
                postrouting += &format!(
                    "    oifname \"wan\" ip saddr {ip} udp sport {port} snat to {wan_ip}:{external}\n"
                );
            }
            Nat::AddressRestricted => {
                sets += &format!(
                    "  set contacted{index} {{ type ipv4_addr; flags timeout; timeout 600s; }}\n"
                );
                prerouting += &format!(
                    "    iifname \"wan\" udp dport {external} ip saddr @contacted{index} dnat to {ip}:{port}\n"
                );
                postrouting += &format!(
                    "    oifname \"wan\" ip saddr {ip} udp sport {port} update @contacted{index} {{ ip daddr }} snat to {wan_ip}:{external}\n"
                );
            }
            Nat::PortRestricted => {
                postrouting += &format!(
                    "    oifname \"wan\" ip saddr {ip} udp sport {port} snat to {wan_ip}:{external}\n"
                );
            }
            Nat::Symmetric | Nat::None => {}
        }
    }
    if hairpin {
        postrouting +=
            &format!("    oifname \"lan\" ip saddr {lan_net} ct status dnat masquerade\n");
    }
    format!(
        "table ip nat {{\n{sets}  chain prerouting {{ type nat hook prerouting priority dstnat; policy accept;\n{prerouting}  }}\n  \
         chain postrouting {{ type nat hook postrouting priority srcnat; policy accept;\n{postrouting}    \
         oifname \"wan\" meta l4proto udp snat to {wan_ip}:20000-40000 random\n    oifname \"wan\" snat to {wan_ip}\n  }}\n}}\n\
         table ip filter {{\n  chain input {{ type filter hook input priority 0; policy accept;\n    \
         iifname \"wan\" meta l4proto udp drop\n  }}\n}}\n"
    )
}

#[path = "lab6.rs"]
mod lab6;
#[path = "portmap_server.rs"]
pub mod portmap_server;

static LABS: AtomicU32 = AtomicU32::new(0);

/// A host inside the lab.
#[derive(Clone, Debug)]
pub struct Host {
    pub netns: String,
    pub ip: Ipv4Addr,
}

/// A site: hosts behind one NAT (or one public host).
#[derive(Clone, Debug)]
pub struct Site {
    pub hosts: Vec<Host>,
    /// The address the internet sees the site at.
    pub public_ip: Ipv4Addr,
    /// The router whose conntrack table holds the site's mappings.
    pub router: Option<String>,
}

/// What every link into the internet (the tracker's and each site's) is
/// like, each way.
#[derive(Clone, Copy, Debug, Default)]
pub struct Links {
    /// Delay in ms (the userspace delay line); 0 for none.
    pub delay_ms: u32,
    /// Rate limit and bottleneck queue (tbf); `None` for an unshaped link.
    pub rate: Option<Rate>,
}

impl Links {
    /// A broadband site: 100 Mbit/s each way behind a 50 ms drop-tail queue,
    /// 10 ms from the internet (two sites: 40 ms RTT). The lossy-path
    /// bench's path (benches/lossy_path.rs).
    pub const BROADBAND: Links = Links {
        delay_ms: 10,
        rate: Some(Rate {
            mbit_per_s: 100,
            queue_ms: 50,
        }),
    };
}

/// A link's rate and the queue in front of it, as a router's uplink has.
#[derive(Clone, Copy, Debug)]
pub struct Rate {
    pub mbit_per_s: u32,
    /// How long a full queue takes to drain at the rate; packets beyond it
    /// are dropped (drop-tail, as in most home routers).
    pub queue_ms: u32,
}

impl Rate {
    /// Bytes a second at this rate, counting Ethernet frames as tbf does.
    pub fn bytes_per_s(&self) -> f64 {
        f64::from(self.mbit_per_s) * 1e6 / 8.0
    }
}

/// A lab; dropping it deletes everything it made.
pub struct Lab {
    prefix: String,
    namespaces: Vec<String>,
    veths: u32,
    links: Links,
    /// The delay-line processes.
    delay_lines: Vec<std::process::Child>,
    internet: super::neighbours::Neighbours,
    /// Whether the STUN server for port-mapping routers runs.
    stun_started: bool,
}

/// Why the lab cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    if unsafe { libc::geteuid() } != 0 {
        return Some(
            "the NAT lab needs root (network namespaces, nftables); CI runs it as root".into(),
        );
    }
    for tool in ["ip", "nft", "conntrack"] {
        if !has_tool(tool) {
            return Some(format!(
                "the NAT lab needs `{tool}` (Debian packages iproute2, nftables, conntrack)"
            ));
        }
    }
    None
}

/// Whether `tool` can be run here.
pub fn has_tool(tool: &str) -> bool {
    Command::new(tool)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok()
}

/// Runs a command; panics with its stderr if it fails.
pub fn run(args: &[&str]) -> String {
    let output = Command::new(args[0])
        .args(&args[1..])
        .output()
        .unwrap_or_else(|e| panic!("{args:?}: {e}"));
    if !output.status.success() {
        panic!(
            "{args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
    }
    String::from_utf8_lossy(&output.stdout).into_owned()
}

impl Lab {
    /// An empty internet with a tracker namespace.
    pub fn new() -> Lab {
        Self::with_delay(0)
    }

    /// The same, where every link into the internet (the tracker's and each
    /// site's) delays packets by `delay_ms` each way.
    pub fn with_delay(delay_ms: u32) -> Lab {
        Self::with_links(Links {
            delay_ms,
            rate: None,
        })
    }

    /// The same, with every link into the internet shaped as `links` says.
    pub fn with_links(links: Links) -> Lab {
        let id = LABS.fetch_add(1, Ordering::Relaxed);
        let mut lab = Lab {
            prefix: format!("pg{}x{id}", std::process::id() % 10_000),
            namespaces: Vec::new(),
            veths: 0,
            links,
            delay_lines: Vec::new(),
            internet: Default::default(),
            stun_started: false,
        };
        let inet = lab.add_ns("inet");
        run(&["ip", "-n", &inet, "link", "add", "br0", "type", "bridge"]);
        run(&["ip", "-n", &inet, "link", "set", "br0", "up"]);
        let tracker = lab.add_ns("trk");
        lab.link(&tracker, "eth0", &inet, None);
        lab.attach_to_bridge(&tracker, "eth0");
        lab.addr(&tracker, "eth0", &format!("{TRACKER_IP}/24"));
        lab.addr(&tracker, "eth0", &format!("{OTHER_IP}/24"));
        lab.internet.join(&tracker, "eth0", &[TRACKER_IP, OTHER_IP]);
        lab
    }

    pub fn ns(&self, short: &str) -> String {
        format!("{}-{short}", self.prefix)
    }

    pub fn tracker_ns(&self) -> String {
        self.ns("trk")
    }

    fn add_ns(&mut self, short: &str) -> String {
        let name = self.ns(short);
        run(&["ip", "netns", "add", &name]);
        self.namespaces.push(name.clone());
        run(&["ip", "-n", &name, "link", "set", "lo", "up"]);
        name
    }

    /// A veth pair: `a_name` inside `a`, the other end inside `b` named
    /// `b_name`, or left with its temporary name for the bridge.
    fn link(&mut self, a: &str, a_name: &str, b: &str, b_name: Option<&str>) {
        self.veths += 1;
        let (tmp_a, tmp_b) = (
            format!("{}a{}", self.prefix, self.veths),
            format!("{}b{}", self.prefix, self.veths),
        );
        run(&[
            "ip", "link", "add", &tmp_a, "type", "veth", "peer", "name", &tmp_b,
        ]);
        run(&["ip", "link", "set", &tmp_a, "netns", a]);
        run(&["ip", "link", "set", &tmp_b, "netns", b]);
        run(&["ip", "-n", a, "link", "set", &tmp_a, "name", a_name]);
        run(&["ip", "-n", a, "link", "set", a_name, "up"]);
        let b_final = b_name.map(str::to_string).unwrap_or(tmp_b.clone());
        if let Some(name) = b_name {
            run(&["ip", "-n", b, "link", "set", &tmp_b, "name", name]);
        }
        run(&["ip", "-n", b, "link", "set", &b_final, "up"]);
    }

    /// Puts the newest veth's second end on the internet bridge, through a
    /// delay line if the lab has one, and shapes both directions if the lab's
    /// links have a rate: the downlink where the veth's second end sends
    /// into the site, the uplink where the delay line's TAP takes frames
    /// from the site. Both queues are thus in the network, as a real
    /// bottleneck's are: a queue in the sending host's own qdisc would hold
    /// back its TCP flows (TCP small queues) and not its UDP ones. Without a
    /// delay line the uplink is shaped at `dev` in `ns` (the veth's first
    /// end).
    fn attach_to_bridge(&mut self, ns: &str, dev: &str) {
        let end = format!("{}b{}", self.prefix, self.veths);
        let inet = self.ns("inet");
        if let Some(rate) = self.links.rate {
            shape(&inet, &end, rate);
            if self.links.delay_ms == 0 {
                shape(ns, dev, rate);
            }
        }
        if self.links.delay_ms == 0 {
            run(&["ip", "-n", &inet, "link", "set", &end, "master", "br0"]);
            return;
        }
        // veth end + tap A on a small bridge; tap B on the internet bridge.
        let n = self.veths;
        let side = format!("{}d{n}", self.prefix);
        let (tap_a, tap_b) = (
            format!("{}p{n}", self.prefix),
            format!("{}q{n}", self.prefix),
        );
        run(&["ip", "-n", &inet, "link", "add", &side, "type", "bridge"]);
        run(&["ip", "-n", &inet, "link", "set", &side, "up"]);
        run(&["ip", "-n", &inet, "link", "set", &end, "master", &side]);
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/natlab/delayline.py");
        let delay = self.links.delay_ms.to_string();
        let mut child = Command::new("ip")
            .args([
                "netns", "exec", &inet, "python3", script, &tap_a, &tap_b, &delay,
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        use std::io::BufRead;
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the delay line did not start");
        self.delay_lines.push(child);
        run(&["ip", "-n", &inet, "link", "set", &tap_a, "master", &side]);
        run(&["ip", "-n", &inet, "link", "set", &tap_b, "master", "br0"]);
        for tap in [&tap_a, &tap_b] {
            // The TAP's queue is where frames wait for the delay line to read
            // them: long enough that a scheduling hiccup of the (userspace)
            // line loses nothing at 100 Mbit/s, so every drop is the lab's.
            run(&[
                "ip",
                "-n",
                &inet,
                "link",
                "set",
                tap,
                "txqueuelen",
                "10000",
                "up",
            ]);
        }
        if let Some(rate) = self.links.rate {
            shape(&inet, &tap_a, rate);
        }
    }

    fn addr(&self, ns: &str, dev: &str, cidr: &str) {
        run(&["ip", "-n", ns, "addr", "add", cidr, "dev", dev]);
    }

    fn route_default(&self, ns: &str, via: &str) {
        run(&["ip", "-n", ns, "route", "add", "default", "via", via]);
    }

    fn router(&mut self, short: &str) -> String {
        let router = self.add_ns(short);
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "sysctl",
            "-qw",
            "net.ipv4.ip_forward=1",
        ]);
        router
    }

    fn load_rules(&self, ns: &str, rules: &str) {
        let mut child = Command::new("ip")
            .args(["netns", "exec", ns, "nft", "-f", "-"])
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(rules.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        assert!(
            output.status.success(),
            "nft rules failed: {}\n{rules}",
            String::from_utf8_lossy(&output.stderr)
        );
    }

    /// Site number `n` (1..=99) with `hosts` hosts behind `nat`.
    pub fn add_site(&mut self, n: u8, nat: Nat, hosts: u8, hairpin: bool) -> Site {
        let public_ip = Ipv4Addr::new(198, 51, 100, 10 + n);
        let inet = self.ns("inet");
        if nat == Nat::None {
            let host = self.add_ns(&format!("h{n}"));
            self.link(&host, "eth0", &inet, None);
            self.attach_to_bridge(&host, "eth0");
            self.addr(&host, "eth0", &format!("{public_ip}/24"));
            self.internet.join(&host, "eth0", &[public_ip]);
            return Site {
                hosts: vec![Host {
                    netns: host,
                    ip: public_ip,
                }],
                public_ip,
                router: None,
            };
        }
        let router = self.router(&format!("r{n}"));
        self.link(&router, "wan", &inet, None);
        self.attach_to_bridge(&router, "wan");
        self.addr(&router, "wan", &format!("{public_ip}/24"));
        self.internet.join(&router, "wan", &[public_ip]);
        // The LAN: a bridge in the router's namespace joins its hosts.
        run(&["ip", "-n", &router, "link", "add", "lan", "type", "bridge"]);
        run(&["ip", "-n", &router, "link", "set", "lan", "up"]);
        self.addr(&router, "lan", &format!("10.0.{n}.1/24"));
        let mut site_hosts = Vec::new();
        let mut mappings = Vec::new();
        for index in 0..hosts {
            let host = self.add_ns(&format!("h{n}{}", (b'a' + index) as char));
            self.link(&host, "eth0", &router, None);
            let end = format!("{}b{}", self.prefix, self.veths);
            run(&["ip", "-n", &router, "link", "set", &end, "master", "lan"]);
            let ip = Ipv4Addr::new(10, 0, n, 2 + index);
            self.addr(&host, "eth0", &format!("{ip}/24"));
            self.route_default(&host, &format!("10.0.{n}.1"));
            mappings.push(Mapping {
                internal: SocketAddrV4::new(ip, HOST_PORT),
                external_port: 41_000 + u16::from(index),
            });
            site_hosts.push(Host { netns: host, ip });
        }
        let rules = nat_rules(
            nat,
            public_ip,
            &format!("10.0.{n}.0/24"),
            &mappings,
            hairpin,
        );
        self.load_rules(&router, &rules);
        Site {
            hosts: site_hosts,
            public_ip,
            router: Some(router),
        }
    }

    /// Site `n` behind two NATs: a home router (port-restricted) behind a
    /// carrier-grade NAT (address-restricted) on 100.64.n.0/24.
    pub fn add_double_nat_site(&mut self, n: u8) -> Site {
        let public_ip = Ipv4Addr::new(198, 51, 100, 10 + n);
        let inet = self.ns("inet");
        let carrier = self.router(&format!("c{n}"));
        self.link(&carrier, "wan", &inet, None);
        self.attach_to_bridge(&carrier, "wan");
        self.addr(&carrier, "wan", &format!("{public_ip}/24"));
        self.internet.join(&carrier, "wan", &[public_ip]);
        let home = self.router(&format!("r{n}"));
        self.link(&home, "wan", &carrier, Some("lan"));
        self.addr(&carrier, "lan", &format!("100.64.{n}.1/24"));
        let home_wan = Ipv4Addr::new(100, 64, n, 2);
        self.addr(&home, "wan", &format!("{home_wan}/24"));
        self.route_default(&home, &format!("100.64.{n}.1"));
        let host = self.add_ns(&format!("h{n}a"));
        self.link(&host, "eth0", &home, Some("lan"));
        let ip = Ipv4Addr::new(10, 0, n, 2);
        self.addr(&home, "lan", &format!("10.0.{n}.1/24"));
        self.addr(&host, "eth0", &format!("{ip}/24"));
        self.route_default(&host, &format!("10.0.{n}.1"));
        let home_rules = nat_rules(
            Nat::PortRestricted,
            home_wan,
            &format!("10.0.{n}.0/24"),
            &[Mapping {
                internal: SocketAddrV4::new(ip, HOST_PORT),
                external_port: 41_000,
            }],
            false,
        );
        self.load_rules(&home, &home_rules);
        let carrier_rules = nat_rules(
            Nat::AddressRestricted,
            public_ip,
            &format!("100.64.{n}.0/24"),
            &[Mapping {
                internal: SocketAddrV4::new(home_wan, 41_000),
                external_port: 42_000,
            }],
            false,
        );
        self.load_rules(&carrier, &carrier_rules);
        Site {
            hosts: vec![Host { netns: host, ip }],
            public_ip,
            router: Some(carrier),
        }
    }

    /// Drops a share of the packets `router` forwards, each way, at random
    /// (nftables `numgen random`), `percent` in 0..100 in steps of 0.01;
    /// replaces any loss set before (0 removes it).
    pub fn set_loss(&self, router: &str, percent: f64) {
        let per_10k = (percent * 100.0).round().clamp(0.0, 10_000.0) as u32;
        let mut rules = "table inet loss\ndelete table inet loss\n".to_string();
        if per_10k > 0 {
            rules += &format!(
                "table inet loss {{\n  chain forward {{ type filter hook forward priority -10; policy accept;\n    \
                 numgen random mod 10000 < {per_10k} drop\n  }}\n}}\n"
            );
        }
        self.load_rules(router, &rules);
    }

    /// Drops everything `router` forwards to or from `ip` until
    /// [`Lab::unblock`]: the path to that address dies.
    pub fn block(&self, router: &str, ip: Ipv4Addr) {
        let rules = format!(
            "table inet block {{\n  chain forward {{ type filter hook forward priority -20; policy accept;\n    \
             ip daddr {ip} drop\n    ip saddr {ip} drop\n  }}\n}}\n"
        );
        self.load_rules(router, &rules);
    }

    pub fn unblock(&self, router: &str) {
        run(&[
            "ip", "netns", "exec", router, "nft", "delete", "table", "inet", "block",
        ]);
    }

    /// Forgets every NAT mapping of `router`, as a NAT reboot would
    /// (conntrack(8), Debian package `conntrack`).
    pub fn flush_conntrack(&self, router: &str) {
        run(&["ip", "netns", "exec", router, "conntrack", "-F"]);
    }

    /// Sets `router`'s UDP mapping timeout, in seconds.
    pub fn set_udp_timeout(&self, router: &str, seconds: u32) {
        for key in [
            "net.netfilter.nf_conntrack_udp_timeout",
            "net.netfilter.nf_conntrack_udp_timeout_stream",
        ] {
            run(&[
                "ip",
                "netns",
                "exec",
                router,
                "sysctl",
                "-qw",
                &format!("{key}={seconds}"),
            ]);
        }
    }

    /// A UDP socket bound inside namespace `netns`.
    pub fn socket_in(&self, netns: &str, addr: SocketAddr) -> UdpSocket {
        in_netns(netns, || UdpSocket::bind(addr).unwrap())
    }
}

impl Lab {
    /// Frames the delay lines lost because they did not read them in time
    /// (their TAPs' transmit drops): 0 unless the line fell behind.
    pub fn delay_line_drops(&self) -> u64 {
        let inet = self.ns("inet");
        let stats = run(&["ip", "-n", &inet, "-s", "-j", "link", "show"]);
        let links: serde_json::Value = serde_json::from_str(&stats).unwrap_or_default();
        let taps = format!("{}p", self.prefix);
        let taps_b = format!("{}q", self.prefix);
        links
            .as_array()
            .into_iter()
            .flatten()
            .filter(|link| {
                let name = link["ifname"].as_str().unwrap_or("");
                name.starts_with(&taps) || name.starts_with(&taps_b)
            })
            .map(|link| link["stats64"]["tx"]["dropped"].as_u64().unwrap_or(0))
            .sum()
    }
}

/// Limits what `dev` in `ns` sends to `rate`, with a drop-tail queue of
/// `rate.queue_ms` (tbf; its bucket holds a few full frames, so bursts stay
/// short as on a real link).
fn shape(ns: &str, dev: &str, rate: Rate) {
    let queue_bytes = (rate.bytes_per_s() * f64::from(rate.queue_ms) / 1000.0) as u64;
    run(&[
        "tc",
        "-n",
        ns,
        "qdisc",
        "replace",
        "dev",
        dev,
        "root",
        "tbf",
        "rate",
        &format!("{}mbit", rate.mbit_per_s),
        "burst",
        "6056",
        "limit",
        &queue_bytes.to_string(),
    ]);
}

/// Runs `f` on a thread that has entered network namespace `netns`; sockets
/// it creates stay in that namespace.
pub fn in_netns<T: Send>(netns: &str, f: impl FnOnce() -> T + Send) -> T {
    use std::os::fd::AsRawFd;
    std::thread::scope(|scope| {
        scope
            .spawn(|| {
                let file = std::fs::File::open(format!("/run/netns/{netns}")).unwrap();
                // SAFETY: a valid namespace fd; CLONE_NEWNET only changes this thread's network namespace.
                let rc = unsafe { libc::setns(file.as_raw_fd(), libc::CLONE_NEWNET) };
                assert_eq!(rc, 0, "setns {netns}: {}", std::io::Error::last_os_error());
                f()
            })
            .join()
            .unwrap()
    })
}

impl Drop for Lab {
    fn drop(&mut self) {
        for child in &mut self.delay_lines {
            let _ = child.kill();
            let _ = child.wait();
        }
        for ns in self.namespaces.iter().rev() {
            let _ = Command::new("ip")
                .args(["netns", "del", ns])
                .stderr(Stdio::null())
                .status();
        }
    }
}
