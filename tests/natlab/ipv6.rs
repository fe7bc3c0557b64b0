//! The IPv6 segment of the lab (`lab6.rs`): its firewalls behave as a home
//! router's do, and a pair whose IPv4 NATs are both symmetric (relay only)
//! but which both have IPv6 connects directly over IPv6.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant};

use super::common::process::Proc;
use super::lab::{Host, Nat, HOST_PORT};
use super::{chat_once, lab_or_skip, start_tracker, WAIT};
use serde_json::Value;

/// A chat node on `host` whose gate socket is dual-stack (`[::]`).
fn start_dual_stack(host: &Host, name: &str, target: &str) -> (Proc, String) {
    super::start_chat_bound(host, &format!("[::]:{HOST_PORT}"), name, target, &[])
}

/// The first `connected` or `path` event that says `node` reaches `peer`
/// directly over IPv6 (a first path over IPv4 is replaced by one over
/// IPv6, with a `path` event, where both work).
fn over_ipv6_to(node: &Proc, peer: &str) -> Value {
    let found = node.first(WAIT, |e| match e["event"].as_str() {
        Some("connected" | "path")
            if e["peer_id"] == peer && e["path"] == "direct" && remote_of(e).is_ipv6() =>
        {
            Some(Ok(e.clone()))
        }
        Some("error") => Some(Err(e["message"].as_str().unwrap_or_default().to_string())),
        _ => None,
    });
    match found {
        Some(Ok(event)) => event,
        Some(Err(message)) => panic!("error instead of a direct path: {message}"),
        None => panic!("no direct path over IPv6 to {peer} within {WAIT:?}"),
    }
}

fn remote_of(event: &Value) -> SocketAddr {
    event["remote"].as_str().unwrap().parse().unwrap()
}

#[test]
fn ipv6_firewalls_let_in_replies_only() {
    let Some(mut lab) = lab_or_skip("IPv6 firewall self-test") else {
        return;
    };
    let first = lab.add_site(1, Nat::Symmetric, 1, false);
    let second = lab.add_site(2, Nat::Symmetric, 1, false);
    let v6 = lab.add_ipv6(&[&first, &second]);
    let (a_ip, b_ip) = (v6[0][0], v6[1][0]);
    let a = lab.socket_in(&first.hosts[0].netns, SocketAddr::new(a_ip.into(), 5000));
    let b = lab.socket_in(&second.hosts[0].netns, SocketAddr::new(b_ip.into(), 5000));
    let mut buf = [0u8; 16];
    // Unsolicited: b has sent nothing to a, so b's firewall drops it.
    // Proving that a packet does NOT arrive needs a bounded wait.
    b.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    a.send_to(b"early", b.local_addr().unwrap()).unwrap();
    assert!(
        b.recv_from(&mut buf).is_err(),
        "the firewall let in an unsolicited packet"
    );
    // b's packet crosses a's firewall, which a opened above; then a's
    // answer is a reply at b's firewall: the punch.
    a.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    b.send_to(b"punch", a.local_addr().unwrap()).unwrap();
    let (n, from) = a.recv_from(&mut buf).unwrap();
    assert_eq!(
        (&buf[..n], from),
        (b"punch".as_slice(), b.local_addr().unwrap())
    );
    a.send_to(b"reply", b.local_addr().unwrap()).unwrap();
    let (n, from) = b.recv_from(&mut buf).unwrap();
    // No NAT: each side sees the other's own address.
    assert_eq!(
        (&buf[..n], from),
        (b"reply".as_slice(), a.local_addr().unwrap())
    );
}

/// Sites behind `a` and `b` (IPv4) that both have IPv6 connect directly
/// over IPv6, and chat.
fn over_ipv6(a: Nat, b: Nat) {
    let Some(mut lab) = lab_or_skip(&format!("{a:?} x {b:?} with IPv6")) else {
        return;
    };
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let v6 = lab.add_ipv6(&[&first, &second]);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_dual_stack(&first.hosts[0], "h1", &target);
    let (mut h2, id2) = start_dual_stack(&second.hosts[0], "h2", &target);
    let started = Instant::now();
    let at_h2 = over_ipv6_to(&h2, &id1);
    let to_direct = started.elapsed();
    let at_h1 = over_ipv6_to(&h1, &id2);
    // Over IPv6, to the hosts' own addresses: no NAT on that path.
    assert_eq!(remote_of(&at_h2).ip(), IpAddr::from(v6[0][0]), "{at_h2}");
    assert_eq!(remote_of(&at_h1).ip(), IpAddr::from(v6[1][0]), "{at_h1}");
    chat_once(&mut h1, &h2, "hello over IPv6 from h1");
    chat_once(&mut h2, &h1, "hello over IPv6 from h2");
    eprintln!(
        "NATLAB | {} + IPv6 | {} + IPv6 | direct over IPv6 ({}) | {:.0} ms to direct",
        a.label(),
        b.label(),
        if at_h2["event"] == "connected" {
            "first path"
        } else {
            "replacing a first path over IPv4 or the relay"
        },
        to_direct.as_secs_f64() * 1000.0
    );
}

#[test]
fn symmetric_nats_with_ipv6_on_both_sides_connect_directly_over_ipv6() {
    // IPv4 alone: relay only.
    over_ipv6(Nat::Symmetric, Nat::Symmetric);
}

/// IPv6 that opens late: site 1's router drops the IPv6 that comes in until
/// the pair is connected over IPv4; then the IPv6 handshake still on its
/// way (quinn retransmits it) gets through, and its path replaces the IPv4
/// one, with a `path` event on both sides, and chat goes on.
#[test]
fn an_ipv6_path_that_opens_after_ipv4_won_replaces_it() {
    let Some(mut lab) = lab_or_skip("IPv6 after IPv4") else {
        return;
    };
    let first = lab.add_site(1, Nat::FullCone, 1, false);
    let second = lab.add_site(2, Nat::PortRestricted, 1, false);
    let v6 = lab.add_ipv6(&[&first, &second]);
    lab.hold_ipv6(&first);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_dual_stack(&first.hosts[0], "h1", &target);
    let (mut h2, id2) = start_dual_stack(&second.hosts[0], "h2", &target);
    let over_ipv4 = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(over_ipv4["path"], "direct", "{over_ipv4}");
    assert!(remote_of(&over_ipv4).is_ipv4(), "{over_ipv4}");
    lab.release_ipv6(&first);
    let released = Instant::now();
    let at_h2 = over_ipv6_to(&h2, &id1);
    let to_ipv6 = released.elapsed();
    assert_eq!(at_h2["event"], "path", "{at_h2}");
    assert_eq!(remote_of(&at_h2).ip(), IpAddr::from(v6[0][0]), "{at_h2}");
    let at_h1 = over_ipv6_to(&h1, &id2);
    assert_eq!(remote_of(&at_h1).ip(), IpAddr::from(v6[1][0]), "{at_h1}");
    chat_once(&mut h1, &h2, "hello over the later IPv6 path");
    chat_once(&mut h2, &h1, "and back");
    eprintln!(
        "NATLAB | full cone + IPv6 opening late | port-restricted + IPv6 | direct over IPv4, then IPv6 | {:.0} ms from the release to IPv6",
        to_ipv6.as_secs_f64() * 1000.0
    );
}

#[test]
fn ipv6_is_preferred_where_ipv4_punches_too() {
    // IPv4 alone: direct as well. The IPv6 handshake starts first; if the
    // IPv4 one still wins, the IPv6 path replaces it when it comes.
    over_ipv6(Nat::FullCone, Nat::PortRestricted);
}

/// Dual-stack nodes on IPv4-only sites: `a` x `b` connects on `path`, to
/// the peer's public IPv4 address or the tracker's (the relay), exactly
/// as IPv4-only nodes do: quinn sees IPv4 peers in mapped form, nothing
/// else does.
fn dual_stack_on_ipv4_only(a: Nat, b: Nat, path: &str) {
    let Some(mut lab) = lab_or_skip(&format!("dual-stack {a:?} x {b:?}")) else {
        return;
    };
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_dual_stack(&first.hosts[0], "h1", &target);
    let (mut h2, _) = start_dual_stack(&second.hosts[0], "h2", &target);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(connected["path"], path, "{connected}");
    let expected = if path == "direct" {
        first.public_ip
    } else {
        super::lab::TRACKER_IP
    };
    assert_eq!(
        remote_of(&connected).ip(),
        IpAddr::from(expected),
        "{connected}"
    );
    chat_once(&mut h1, &h2, "hello from h1");
    chat_once(&mut h2, &h1, "hello from h2");
}

#[test]
fn dual_stack_nodes_punch_over_ipv4_where_there_is_no_ipv6() {
    dual_stack_on_ipv4_only(Nat::PortRestricted, Nat::FullCone, "direct");
}

#[test]
fn dual_stack_nodes_relay_over_ipv4_where_there_is_no_ipv6() {
    dual_stack_on_ipv4_only(Nat::Symmetric, Nat::Symmetric, "relay");
}
