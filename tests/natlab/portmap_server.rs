//! A real port-mapping server on a lab router: Debian's `miniupnpd`
//! (package miniupnpd-nftables; NAT-PMP, PCP and UPnP-IGD) in the router's
//! namespace, its rules in a table of their own (`inet miniupnpd`) hooked
//! just before the lab's NAT.
//!
//! miniupnpd refuses to map on an interface whose address is private or
//! reserved — and the lab's internet is 198.51.100.0/24, a documentation
//! range — unless STUN tells it the router is reachable as it is. So the
//! lab runs a small STUN server (`stun.py`) on the tracker's address, and
//! the router's own traffic is left out of its NAT (as a real router's own
//! sockets are): STUN then sees the WAN address and port unchanged and
//! miniupnpd takes the WAN address as its external one.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::time::Duration;

use super::{run, Lab, Site, TRACKER_IP};

/// The STUN server's port on the tracker's address.
const STUN_PORT: u16 = 3478;
/// How long miniupnpd may take to start (its STUN check included).
const START_WAIT: Duration = Duration::from_secs(20);

/// What the server offers.
#[derive(Clone, Copy, Debug)]
pub struct ServerOptions {
    /// NAT-PMP and PCP (one switch in miniupnpd).
    pub natpmp_pcp: bool,
    pub upnp: bool,
    /// The longest lease it grants (PCP), in seconds.
    pub max_lifetime: u32,
}

impl Default for ServerOptions {
    fn default() -> Self {
        ServerOptions {
            natpmp_pcp: true,
            upnp: true,
            max_lifetime: 7200,
        }
    }
}

/// A running miniupnpd; dropping it stops it.
pub struct PortMapServer {
    child: Child,
    router: String,
    log: Arc<Mutex<Vec<String>>>,
    _dir: tempfile::TempDir,
}

impl PortMapServer {
    /// The mappings it holds: its DNAT rules, one line each.
    pub fn mappings(&self) -> Vec<String> {
        let listing = run(&[
            "ip",
            "netns",
            "exec",
            &self.router,
            "nft",
            "list",
            "chain",
            "inet",
            "miniupnpd",
            "prerouting_miniupnpd",
        ]);
        listing
            .lines()
            .filter(|line| line.contains("dnat"))
            .map(|line| line.trim().to_string())
            .collect()
    }

    /// What it logged so far.
    pub fn log(&self) -> Vec<String> {
        self.log.lock().unwrap().clone()
    }
}

impl Drop for PortMapServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Why a port-mapping server cannot run here, if it cannot.
pub fn unavailable() -> Option<String> {
    let found = Command::new("miniupnpd")
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok();
    (!found).then(|| {
        "the port-mapping lab needs `miniupnpd` (Debian package miniupnpd-nftables)".into()
    })
}

impl Lab {
    /// Starts the lab's STUN server (once).
    fn start_stun(&mut self) {
        if self.stun_started {
            return;
        }
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/natlab/stun.py");
        let tracker = self.tracker_ns();
        let mut child = Command::new("ip")
            .args(["netns", "exec", &tracker, "python3", script])
            .arg(TRACKER_IP.to_string())
            .arg(STUN_PORT.to_string())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut ready = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut ready)
            .unwrap();
        assert_eq!(ready.trim(), "ready", "the STUN server did not start");
        self.delay_lines.push(child);
        self.stun_started = true;
    }

    /// Runs miniupnpd on `site`'s router (a NAT site made by
    /// [`Lab::add_site`]) and waits until it serves.
    pub fn run_port_mapping_server(
        &mut self,
        site: &Site,
        options: ServerOptions,
    ) -> PortMapServer {
        self.start_stun();
        let router = site.router.clone().expect("a NAT site");
        let lan_ip = site.hosts[0].ip.octets();
        let lan = format!("{}.{}.{}.0/24", lan_ip[0], lan_ip[1], lan_ip[2]);
        let wan = site.public_ip;
        // The router's own packets keep their address and port (STUN must
        // see them unchanged), and the STUN answers get in.
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "nft",
            "insert",
            "rule",
            "ip",
            "nat",
            "postrouting",
            "ip",
            "saddr",
            &wan.to_string(),
            "accept",
        ]);
        run(&[
            "ip",
            "netns",
            "exec",
            &router,
            "nft",
            "insert",
            "rule",
            "ip",
            "filter",
            "input",
            "iifname",
            "wan",
            "udp",
            "sport",
            &STUN_PORT.to_string(),
            "ct",
            "state",
            "established",
            "accept",
        ]);
        self.load_rules(
            &router,
            "table inet miniupnpd {\n\
             chain miniupnpd {\n}\n\
             chain prerouting_miniupnpd {\n}\n\
             chain postrouting_miniupnpd {\n}\n\
             chain forward {\n type filter hook forward priority 0; policy accept;\n jump miniupnpd\n}\n\
             chain prerouting {\n type nat hook prerouting priority dstnat - 5; policy accept;\n jump prerouting_miniupnpd\n}\n\
             chain postrouting {\n type nat hook postrouting priority srcnat - 5; policy accept;\n jump postrouting_miniupnpd\n}\n}\n",
        );
        let dir = tempfile::tempdir().unwrap();
        let yes = |on: bool| if on { "yes" } else { "no" };
        let config = format!(
            "ext_ifname=wan\nlistening_ip=lan\nhttp_port=0\n\
             enable_natpmp={}\nenable_upnp={}\n\
             ext_perform_stun=yes\next_stun_host={TRACKER_IP}\next_stun_port={STUN_PORT}\n\
             upnp_table_name=miniupnpd\nupnp_nat_table_name=miniupnpd\n\
             upnp_forward_chain=miniupnpd\nupnp_nat_chain=prerouting_miniupnpd\n\
             upnp_nat_postrouting_chain=postrouting_miniupnpd\n\
             min_lifetime=1\nmax_lifetime={}\n\
             secure_mode=yes\nsystem_uptime=no\nnotify_interval=60\n\
             clean_ruleset_interval=600\n\
             uuid=3d3cec3a-8cf0-11e0-98ee-001a6bd2d07b\n\
             lease_file={}\n\
             allow 1024-65535 {lan} 1024-65535\ndeny 0-65535 0.0.0.0/0 0-65535\n",
            yes(options.natpmp_pcp),
            yes(options.upnp),
            options.max_lifetime,
            dir.path().join("leases").display(),
        );
        let config_path = dir.path().join("miniupnpd.conf");
        std::fs::write(&config_path, config).unwrap();
        let pid = dir.path().join("miniupnpd.pid");
        let mut child = Command::new("ip")
            .args(["netns", "exec", &router, "miniupnpd", "-d", "-f"])
            .arg(&config_path)
            .arg("-P")
            .arg(&pid)
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("miniupnpd runs");
        let log = Arc::new(Mutex::new(Vec::new()));
        let (lines_tx, lines) = mpsc::channel();
        let stderr = child.stderr.take().unwrap();
        let kept = log.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                kept.lock().unwrap().push(line.clone());
                let _ = lines_tx.send(line);
            }
        });
        let mut server = PortMapServer {
            child,
            router,
            log,
            _dir: dir,
        };
        let ready = if options.natpmp_pcp {
            "Listening for NAT-PMP/PCP traffic"
        } else {
            "HTTP listening on port"
        };
        let deadline = std::time::Instant::now() + START_WAIT;
        let (mut enabled, mut serving) = (false, false);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = match lines.recv_timeout(left) {
                Ok(line) => line,
                Err(_) => panic!(
                    "miniupnpd did not start in {START_WAIT:?}: {:?}",
                    server.log()
                ),
            };
            assert!(
                !line.contains("now disabled") && !line.contains("EXITING"),
                "miniupnpd cannot map here: {:?}",
                server.log()
            );
            enabled |= line.contains("Port forwarding is now enabled");
            serving |= line.contains(ready);
            if enabled && serving {
                break;
            }
            if let Some(status) = server.child.try_wait().unwrap() {
                panic!("miniupnpd exited ({status}): {:?}", server.log());
            }
        }
        server
    }
}
