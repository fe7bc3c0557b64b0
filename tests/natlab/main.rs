//! The NAT lab tests: real `punchgate` processes in network namespaces behind
//! real nftables NAT (see `lab.rs`). They need root; without it each test
//! prints why it is skipped and passes, except under `CI=true`, where it
//! fails. CI runs them as root.
//!
//! Lines starting `NATLAB |` are the results docs/NAT.md records; see them
//! with `cargo test --test natlab -- --nocapture --test-threads 2`.

mod birthday;
mod busy;
mod capture;
#[path = "../common/mod.rs"]
mod common;
mod dht;
mod flows;
mod ipv6;
mod lab;
mod lan;
mod lossy;
mod neighbours;
mod parking;
mod partition;
mod paths;
mod portmap;
mod setup;
mod timing;

use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::time::{Duration, Instant};

use common::process::Proc;
use lab::{Host, Lab, Nat, Site, HOST_PORT, OTHER_IP, TRACKER_IP, TRACKER_PORT};
use serde_json::Value;

/// The punch deadline given to lab nodes.
const PUNCH_TIMEOUT_SECS: &str = "4";
const WAIT: Duration = Duration::from_secs(30);

fn lab_or_skip(test: &str) -> Option<Lab> {
    match lab::unavailable() {
        // CI runs as root with the tools installed: a lab that cannot run
        // there is a failure, never a silent pass.
        Some(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} cannot run in CI: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
        None => Some(Lab::new()),
    }
}

fn start_tracker(lab: &Lab) -> (Proc, String) {
    start_tracker_with(lab, &[])
}

/// A tracker with `extra` flags.
fn start_tracker_with(lab: &Lab, extra: &[&str]) -> (Proc, String) {
    let listen = SocketAddrV4::new(TRACKER_IP, TRACKER_PORT).to_string();
    let mut args = vec!["tracker", "--listen", &listen];
    args.extend_from_slice(extra);
    let tracker = Proc::start_in(Some(&lab.tracker_ns()), &args);
    let ready = tracker.expect("ready", |_| true);
    let target = ready["target"].as_str().unwrap().to_string();
    (tracker, target)
}

/// A chat node on `host`; `extra` flags come last (and may set their own
/// `--punch-timeout`).
fn start_chat(host: &Host, name: &str, target: &str, extra: &[&str]) -> (Proc, String) {
    start_chat_bound(host, &format!("0.0.0.0:{HOST_PORT}"), name, target, extra)
}

/// [`start_chat`] with the gate socket bound to `bind`.
fn start_chat_bound(
    host: &Host,
    bind: &str,
    name: &str,
    target: &str,
    extra: &[&str],
) -> (Proc, String) {
    let mut args = vec![
        "chat",
        "--tracker",
        target,
        "--name",
        name,
        "--room",
        "lab",
        "--bind",
        bind,
    ];
    if !extra.contains(&"--punch-timeout") {
        args.extend(["--punch-timeout", PUNCH_TIMEOUT_SECS]);
    }
    args.extend_from_slice(extra);
    let proc = Proc::start_in(Some(&host.netns), &args);
    let ready = proc.expect("ready", |_| true);
    let id = ready["peer_id"].as_str().unwrap().to_string();
    (proc, id)
}

fn remote_ip(connected: &Value) -> Ipv4Addr {
    let remote: SocketAddr = connected["remote"].as_str().unwrap().parse().unwrap();
    match remote {
        SocketAddr::V4(v4) => *v4.ip(),
        SocketAddr::V6(v6) => panic!("unexpected IPv6 remote {v6}"),
    }
}

/// Sends a line from `from` and waits for it at `to`.
fn chat_once(from: &mut Proc, to: &Proc, text: &str) {
    from.send(text);
    to.expect("message", |e| e["text"] == text);
}

// ------------------------------------------------------------------ self-test

/// What a NAT actually does, measured with raw sockets: whether its mapping
/// is endpoint-independent, and which of three senders get in: the address
/// and port contacted (a), the same address from another port (c), another
/// address (d).
fn observe(lab: &Lab, site: &Site) -> (bool, SocketAddr, BTreeSet<&'static str>) {
    let host = &site.hosts[0];
    let inside = lab.socket_in(&host.netns, SocketAddr::from(([0, 0, 0, 0], HOST_PORT)));
    let tracker = lab.tracker_ns();
    let a = lab.socket_in(&tracker, SocketAddr::from((TRACKER_IP, 5000)));
    let b = lab.socket_in(&tracker, SocketAddr::from((TRACKER_IP, 5001)));
    let c = lab.socket_in(&tracker, SocketAddr::from((TRACKER_IP, 5002)));
    let d = lab.socket_in(&tracker, SocketAddr::from((OTHER_IP, 5000)));
    for s in [&a, &b, &inside] {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    }
    let mut buf = [0u8; 64];
    inside.send_to(b"m", a.local_addr().unwrap()).unwrap();
    inside.send_to(b"m", b.local_addr().unwrap()).unwrap();
    let (_, seen_by_a) = a.recv_from(&mut buf).unwrap();
    let (_, seen_by_b) = b.recv_from(&mut buf).unwrap();
    a.send_to(b"a", seen_by_a).unwrap();
    c.send_to(b"c", seen_by_a).unwrap();
    d.send_to(b"d", seen_by_a).unwrap();
    // Proving that a packet does NOT arrive needs a bounded wait.
    inside
        .set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut admitted = BTreeSet::new();
    while let Ok((n, _)) = inside.recv_from(&mut buf) {
        admitted.insert(match &buf[..n] {
            b"a" => "a",
            b"c" => "c",
            _ => "d",
        });
    }
    (seen_by_a == seen_by_b, seen_by_a, admitted)
}

#[test]
fn lab_self_test_each_nat_behaves_as_specified() {
    let Some(mut lab) = lab_or_skip("lab_self_test") else {
        return;
    };
    for (n, nat) in Nat::ALL.into_iter().enumerate() {
        let site = lab.add_site(n as u8 + 1, nat, 1, false);
        let (eim, mapped, admitted) = observe(&lab, &site);
        let expected: &[&str] = match nat {
            Nat::None | Nat::FullCone => &["a", "c", "d"],
            Nat::AddressRestricted => &["a", "c"],
            Nat::PortRestricted | Nat::Symmetric => &["a"],
        };
        eprintln!(
            "NATLAB-SELFTEST | {} | mapping {} | mapped to {mapped} | admitted {admitted:?}",
            nat.label(),
            if eim {
                "endpoint-independent"
            } else {
                "endpoint-dependent"
            }
        );
        assert_eq!(
            eim,
            nat.endpoint_independent_mapping(),
            "{}: mapping",
            nat.label()
        );
        assert_eq!(
            mapped.ip(),
            std::net::IpAddr::V4(site.public_ip),
            "{}: public address",
            nat.label()
        );
        assert_eq!(
            admitted.into_iter().collect::<Vec<_>>(),
            expected,
            "{}: filtering",
            nat.label()
        );
    }
}

// ---------------------------------------------------------------- the matrix

/// Two sites with NATs `a` and `b`; the second host joins last, so it dials.
fn punch_pair(a: Nat, b: Nat) {
    let Some(mut lab) = lab_or_skip(&format!("punch {a:?} x {b:?}")) else {
        return;
    };
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &[]);
    let (mut h2, id2) = start_chat(&second.hosts[0], "h2", &target, &[]);
    let started = Instant::now();
    let outcome = h2.first(WAIT, |e| match e["event"].as_str() {
        Some("connected") if e["peer_id"] == id1.as_str() => Some(Ok(e.clone())),
        Some("error") => Some(Err(e["message"].as_str().unwrap_or_default().to_string())),
        _ => None,
    });
    let pair = format!("{} | {}", a.label(), b.label());
    match outcome {
        Some(Ok(connected)) if !Nat::punchable(a, b) => {
            // No hole: the same connection runs through the tracker.
            assert_eq!(connected["path"], "relay", "{pair}: {connected}");
            assert_eq!(remote_ip(&connected), TRACKER_IP, "{pair}: {connected}");
            let back = h1.expect("connected", |e| e["peer_id"] == id2.as_str());
            assert_eq!(back["path"], "relay", "{pair}: {back}");
            chat_once(&mut h1, &h2, "hello from h1");
            chat_once(&mut h2, &h1, "hello from h2");
            eprintln!(
                "NATLAB | {pair} | relay | {:.1} ms relayed handshake and greeting, {:.0} ms to connected (the relay joins the punch, which could not succeed, instead of waiting for its {PUNCH_TIMEOUT_SECS} s deadline)",
                connected["setup_ms"].as_f64().unwrap_or_default(),
                started.elapsed().as_secs_f64() * 1000.0,
            );
        }
        Some(Ok(connected)) => {
            assert_eq!(connected["path"], "direct", "{pair}: {connected}");
            // The peer's NAT, not the tracker: the path is direct.
            assert_eq!(
                remote_ip(&connected),
                first.public_ip,
                "{pair}: {connected}"
            );
            let back = h1.expect("connected", |e| e["peer_id"] == id2.as_str());
            assert_eq!(remote_ip(&back), second.public_ip, "{pair}: {back}");
            chat_once(&mut h1, &h2, "hello from h1");
            chat_once(&mut h2, &h1, "hello from h2");
            eprintln!(
                "NATLAB | {pair} | direct | {:.1} ms punch, {:.0} ms to connected",
                connected["setup_ms"].as_f64().unwrap_or_default(),
                started.elapsed().as_secs_f64() * 1000.0
            );
        }
        Some(Err(message)) => panic!("{pair}: every pair must connect, but: {message}"),
        None => panic!("{pair}: neither connected nor an error within {WAIT:?}"),
    }
}

macro_rules! matrix {
    ($($name:ident: $a:ident x $b:ident;)*) => {
        $(
            #[test]
            fn $name() {
                punch_pair(Nat::$a, Nat::$b);
            }
        )*
    };
}

matrix! {
    punch_none_x_none: None x None;
    punch_none_x_full_cone: None x FullCone;
    punch_none_x_address_restricted: None x AddressRestricted;
    punch_none_x_port_restricted: None x PortRestricted;
    punch_none_x_symmetric: None x Symmetric;
    punch_full_cone_x_none: FullCone x None;
    punch_full_cone_x_full_cone: FullCone x FullCone;
    punch_full_cone_x_address_restricted: FullCone x AddressRestricted;
    punch_full_cone_x_port_restricted: FullCone x PortRestricted;
    punch_full_cone_x_symmetric: FullCone x Symmetric;
    punch_address_restricted_x_none: AddressRestricted x None;
    punch_address_restricted_x_full_cone: AddressRestricted x FullCone;
    punch_address_restricted_x_address_restricted: AddressRestricted x AddressRestricted;
    punch_address_restricted_x_port_restricted: AddressRestricted x PortRestricted;
    punch_address_restricted_x_symmetric: AddressRestricted x Symmetric;
    punch_port_restricted_x_none: PortRestricted x None;
    punch_port_restricted_x_full_cone: PortRestricted x FullCone;
    punch_port_restricted_x_address_restricted: PortRestricted x AddressRestricted;
    punch_port_restricted_x_port_restricted: PortRestricted x PortRestricted;
    punch_symmetric_x_none: Symmetric x None;
    punch_symmetric_x_full_cone: Symmetric x FullCone;
    punch_symmetric_x_address_restricted: Symmetric x AddressRestricted;
    relay_symmetric_x_symmetric: Symmetric x Symmetric;
}

// --------------------------------------------------------------- other cases

fn same_nat(hairpin: bool) {
    let Some(mut lab) = lab_or_skip("same NAT") else {
        return;
    };
    let site = lab.add_site(1, Nat::PortRestricted, 2, hairpin);
    let (_tracker, target) = start_tracker(&lab);
    let (mut a, id_a) = start_chat(&site.hosts[0], "a", &target, &[]);
    let (mut b, _) = start_chat(&site.hosts[1], "b", &target, &[]);
    let connected = b.expect("connected", |e| e["peer_id"] == id_a.as_str());
    // Behind one NAT the LAN address comes first, hairpin or not.
    assert_eq!(remote_ip(&connected), site.hosts[0].ip, "{connected}");
    chat_once(&mut a, &b, "same lan");
    chat_once(&mut b, &a, "indeed");
    eprintln!(
        "NATLAB | two hosts behind one {} NAT, hairpin {} | direct over the LAN | {:.1} ms punch",
        Nat::PortRestricted.label(),
        if hairpin { "on" } else { "off" },
        connected["setup_ms"].as_f64().unwrap_or_default()
    );
}

#[test]
fn same_nat_without_hairpinning_connects_over_the_lan() {
    same_nat(false);
}

#[test]
fn same_nat_with_hairpinning_connects_over_the_lan() {
    same_nat(true);
}

/// A host behind two NATs (a port-restricted home router behind an
/// address-restricted carrier NAT) and one behind `other_nat`; the second
/// dials. Returns the dialer's `connected` event.
fn double_nat_against(other_nat: Nat, expected_path: &str) {
    let Some(mut lab) = lab_or_skip(&format!("double NAT x {other_nat:?}")) else {
        return;
    };
    let carrier = lab.add_double_nat_site(1);
    let other = lab.add_site(2, other_nat, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_chat(&carrier.hosts[0], "h1", &target, &[]);
    let (mut h2, _) = start_chat(&other.hosts[0], "h2", &target, &[]);
    let started = Instant::now();
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    // Against a symmetric NAT a birthday punch may win the first attempt
    // when both NAT reports reached the tracker before it (src/birthday.rs).
    let expected_path = match connected["path"].as_str() {
        Some("direct") if other_nat == Nat::Symmetric => "direct",
        _ => expected_path,
    };
    assert_eq!(connected["path"], expected_path, "{connected}");
    let expected_remote = match expected_path {
        "direct" => carrier.public_ip,
        _ => TRACKER_IP,
    };
    assert_eq!(remote_ip(&connected), expected_remote, "{connected}");
    chat_once(&mut h1, &h2, "through two NATs");
    chat_once(&mut h2, &h1, "and back");
    eprintln!(
        "NATLAB | double NAT (home EIM/APDF behind carrier EIM/ADF) | {} | {expected_path} | {:.1} ms punch, {:.0} ms to connected",
        other_nat.label(),
        connected["setup_ms"].as_f64().unwrap_or_default(),
        started.elapsed().as_secs_f64() * 1000.0
    );
    if expected_path == "relay" {
        // Both NATs together map independently of the destination and
        // filter by port: a birthday punch upgrades the pair to direct.
        let path = h2
            .expect_within(Duration::from_secs(30), "path", |e| {
                e["peer_id"] == id1.as_str() && e["path"] == "direct"
            })
            .expect("the relayed pair never went direct");
        assert_eq!(remote_ip(&path), carrier.public_ip, "{path}");
        chat_once(&mut h2, &h1, "direct now");
        eprintln!(
            "NATLAB | double NAT | {} | then direct by birthday punching | {:.0} ms from start to direct",
            other_nat.label(),
            started.elapsed().as_secs_f64() * 1000.0
        );
    }
}

#[test]
fn double_nat_connects_to_a_port_restricted_site() {
    double_nat_against(Nat::PortRestricted, "direct");
}

#[test]
fn double_nat_against_a_symmetric_nat_connects_through_the_relay_then_direct() {
    double_nat_against(Nat::Symmetric, "relay");
}

/// What `node` shows until the message `last` arrives: the texts of the
/// messages, and the `path` and `connected` events.
fn messages_until(node: &Proc, last: &str) -> (Vec<String>, Vec<Value>) {
    let (mut texts, mut paths) = (Vec::new(), Vec::new());
    while texts.last().map(String::as_str) != Some(last) {
        let event = node
            .first(WAIT, |e| {
                matches!(e["event"].as_str(), Some("message" | "path" | "connected"))
                    .then(|| e.clone())
            })
            .unwrap_or_else(|| panic!("no message {last:?} within {WAIT:?}; got {texts:?}"));
        match event["text"].as_str() {
            Some(text) => texts.push(text.to_string()),
            None => paths.push(event),
        }
    }
    (texts, paths)
}

#[test]
fn a_relayed_connection_is_upgraded_to_direct_when_a_path_opens() {
    let Some(mut lab) = lab_or_skip("upgrade") else {
        return;
    };
    let first = lab.add_site(1, Nat::PortRestricted, 1, false);
    let second = lab.add_site(2, Nat::AddressRestricted, 1, false);
    let router = first.router.clone().unwrap();
    // No direct path at first: only the tracker is reachable.
    lab.block(&router, second.public_ip);
    let (_tracker, target) = start_tracker(&lab);
    let extra = ["--punch-timeout", "2"];
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &extra);
    let (h2, id2) = start_chat(&second.hosts[0], "h2", &target, &extra);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(connected["path"], "relay", "{connected}");
    h1.expect("connected", |e| {
        e["peer_id"] == id2.as_str() && e["path"] == "relay"
    });
    let relayed_at = Instant::now();
    for i in 0..3 {
        h1.send(&format!("relayed {i}"));
    }
    lab.unblock(&router);
    let upgraded = h1.expect("path", |e| e["peer_id"] == id2.as_str());
    assert_eq!(upgraded["path"], "direct", "{upgraded}");
    assert_eq!(remote_ip(&upgraded), second.public_ip, "{upgraded}");
    let upgrade_ms = relayed_at.elapsed().as_secs_f64() * 1000.0;
    for i in 0..3 {
        h1.send(&format!("direct {i}"));
    }
    h1.send("last");
    let (texts, paths) = messages_until(&h2, "last");
    // Every message exactly once, in order, across the change of path.
    let expected: Vec<String> = (0..3)
        .map(|i| format!("relayed {i}"))
        .chain((0..3).map(|i| format!("direct {i}")))
        .chain(["last".to_string()])
        .collect();
    assert_eq!(texts, expected);
    // h2 is told it is direct now: a `path` event, or, when the relayed
    // gate ended before the direct one was in (both sides dial since the
    // gossip), a `connected` on the direct path.
    assert!(
        paths.iter().any(|p| p["path"] == "direct"),
        "h2 saw no change to a direct path: {paths:?}"
    );
    eprintln!(
        "NATLAB | relayed, then the block lifted | upgraded to direct {upgrade_ms:.0} ms after the relay connected | {} messages, each once",
        expected.len()
    );
}

#[test]
fn the_tracker_sees_only_ciphertext_of_relayed_chat() {
    let Some(mut lab) = lab_or_skip("relay capture") else {
        return;
    };
    if !lab::has_tool("tcpdump") {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "relay capture cannot run in CI: needs tcpdump"
        );
        eprintln!("SKIPPED relay capture: needs tcpdump (Debian package tcpdump)");
        return;
    }
    // Two symmetric NATs: the pair that stays relayed.
    let first = lab.add_site(1, Nat::Symmetric, 1, false);
    let second = lab.add_site(2, Nat::Symmetric, 1, false);
    let capture_file = tempfile::NamedTempFile::new().unwrap();
    let capture = capture::Capture::start(&lab.tracker_ns(), "eth0", capture_file.path());
    // The control: the same capture does show plaintext that crosses it
    // (sent first, so it is long captured when the capture stops).
    const CONTROL: &str = "MARKER-plain-udp-control-91c2";
    let plain = lab.socket_in(&second.hosts[0].netns, SocketAddr::from(([0, 0, 0, 0], 0)));
    plain
        .send_to(CONTROL.as_bytes(), SocketAddr::from((TRACKER_IP, 9)))
        .unwrap();
    let (tracker, target) = start_tracker_with(&lab, &["--stats", "0.2"]);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &[]);
    let (mut h2, _) = start_chat(&second.hosts[0], "h2", &target, &[]);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(connected["path"], "relay", "{connected}");
    const SECRET: &str = "MARKER-relay-never-sees-this-7f3a";
    chat_once(&mut h2, &h1, SECRET);
    chat_once(&mut h1, &h2, SECRET);
    let stats = tracker.expect("tracker_stats", |e| {
        e["relayed_bytes"].as_u64().unwrap_or_default() > 0
    });
    let packets = capture.finish();
    let relayed = capture::udp_bytes_on_port(&packets, TRACKER_PORT);
    eprintln!(
        "NATLAB | relayed chat captured on the tracker | {} bytes of UDP to/from the tracker port, the tracker relayed {} bytes in {} packets | marker absent",
        relayed, stats["relayed_bytes"], stats["relayed_packets"]
    );
    assert!(
        capture::contains(&packets, CONTROL.as_bytes()),
        "the capture misses plaintext"
    );
    assert!(
        relayed > 2 * SECRET.len(),
        "the capture holds no relayed traffic"
    );
    assert!(
        !capture::contains(&packets, SECRET.as_bytes()),
        "the tracker saw the chat in the clear"
    );
}

#[test]
fn punch_survives_packet_loss() {
    let Some(mut lab) = lab_or_skip("loss") else {
        return;
    };
    let first = lab.add_site(1, Nat::PortRestricted, 1, false);
    let second = lab.add_site(2, Nat::AddressRestricted, 1, false);
    for site in [&first, &second] {
        lab.set_loss(site.router.as_deref().unwrap(), 15.0);
    }
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &["--punch-timeout", "10"]);
    let (h2, _) = start_chat(&second.hosts[0], "h2", &target, &["--punch-timeout", "10"]);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    // Lost probes may let the relay, which joins the punch after a round
    // trip or two, authenticate first; the punch is retried until the pair
    // is direct.
    let direct = if connected["path"] == "direct" {
        connected.clone()
    } else {
        h2.expect("path", |e| {
            e["peer_id"] == id1.as_str() && e["path"] == "direct"
        })
    };
    assert_eq!(remote_ip(&direct), first.public_ip, "{direct}");
    // QUIC retransmits what the links drop: every line arrives.
    for i in 0..10 {
        chat_once(&mut h1, &h2, &format!("lossy {i}"));
    }
    eprintln!(
        "NATLAB | {} | {} with 15% loss per router, each way | direct | {:.1} ms punch",
        Nat::PortRestricted.label(),
        Nat::AddressRestricted.label(),
        connected["setup_ms"].as_f64().unwrap_or_default()
    );
}

#[test]
fn netcheck_reports_each_nat_behaviour() {
    let Some(mut lab) = lab_or_skip("netcheck") else {
        return;
    };
    let sites: Vec<(Nat, Site)> = Nat::ALL
        .into_iter()
        .enumerate()
        .map(|(n, nat)| (nat, lab.add_site(n as u8 + 1, nat, 1, false)))
        .collect();
    let (_tracker, target) = start_tracker(&lab);
    let bind = format!("0.0.0.0:{HOST_PORT}");
    for (nat, site) in &sites {
        let check = Proc::start_in(
            Some(&site.hosts[0].netns),
            &["netcheck", "--tracker", &target, "--bind", &bind],
        );
        let report = check.expect("netcheck", |_| true);
        let expected_mapping = if nat.endpoint_independent_mapping() {
            "endpoint-independent"
        } else {
            "endpoint-dependent"
        };
        let admits_new_ports = matches!(nat, Nat::None | Nat::FullCone | Nat::AddressRestricted);
        eprintln!(
            "NATLAB-NETCHECK | {} | mapping {} | unsolicited admitted {} | hairpin {} | {}",
            nat.label(),
            report["mapping"],
            report["unsolicited_admitted"],
            report["hairpin"],
            report["verdict"]
        );
        assert_eq!(
            report["mapping"],
            expected_mapping,
            "{}: {report}",
            nat.label()
        );
        assert_eq!(
            report["unsolicited_admitted"],
            admits_new_ports,
            "{}: {report}",
            nat.label()
        );
        let public: SocketAddr = report["public"].as_str().unwrap().parse().unwrap();
        assert_eq!(public.ip(), std::net::IpAddr::V4(site.public_ip));
        check.finish();
    }
}

#[test]
fn a_64_mib_file_crosses_a_relayed_path_byte_identical() {
    let Some(mut lab) = lab_or_skip("file over the relay") else {
        return;
    };
    // Two symmetric NATs: the pair that stays relayed.
    let first = lab.add_site(1, Nat::Symmetric, 1, false);
    let second = lab.add_site(2, Nat::Symmetric, 1, false);
    // Relay budgets above the file's size: this test is about the bytes.
    let (_tracker, target) = start_tracker_with(
        &lab,
        &["--relay-rate", "200000000", "--relay-burst", "16000000"],
    );
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("sixty-four.bin");
    let bytes: Vec<u8> = (0..64u32 << 20)
        .map(|i| (i.wrapping_mul(2_654_435_761) >> 11) as u8)
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    let bind = format!("0.0.0.0:{HOST_PORT}");
    let sender = Proc::start_in(
        Some(&first.hosts[0].netns),
        &[
            "send",
            file.to_str().unwrap(),
            "--tracker",
            &target,
            "--bind",
            &bind,
        ],
    );
    let ticket = sender.expect("ticket", |_| true)["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let out = work.path().join("out");
    let started = Instant::now();
    let getter = Proc::start_in(
        Some(&second.hosts[0].netns),
        &[
            "get",
            &ticket,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            &bind,
            "--punch-timeout",
            PUNCH_TIMEOUT_SECS,
        ],
    );
    let connected = getter.expect("connected", |_| true);
    assert_eq!(connected["path"], "relay", "{connected}");
    let relayed_at = Instant::now();
    // A deadline only: a debug build through a userspace relay on a loaded
    // 2-core machine takes anywhere from 15 s to several times that.
    let done = getter
        .expect_within(Duration::from_secs(240), "transfer_done", |_| true)
        .expect("no transfer_done within 240 s");
    let secs = relayed_at.elapsed().as_secs_f64();
    assert_eq!(done["bytes"].as_u64(), Some(64 << 20));
    assert_eq!(std::fs::read(out.join("sixty-four.bin")).unwrap(), bytes);
    eprintln!(
        "NATLAB | 64 MiB over the relay (symmetric x symmetric) | connected in {:.0} ms, transfer {:.1} s ({:.1} MiB/s, debug build) | byte-identical",
        (relayed_at - started).as_secs_f64() * 1000.0,
        secs,
        64.0 / secs
    );
    getter.finish();
}
