//! A connected pair whose path changes under it: a NAT mapping kept open
//! by keep-alives past its timeout, both NATs' mappings flushed mid-chat,
//! the dialer's symmetric NAT rebinding it (QUIC migration), and a path
//! dead for an idle timeout that heals.

use std::net::SocketAddr;
use std::time::Duration;

use super::common::process::Proc;
use super::lab::{Lab, Nat, Site};
use super::{chat_once, lab_or_skip, start_chat, start_tracker};

/// Two connected chat nodes on sites `a` (joins first, accepts) and `b`.
struct Pair {
    lab: Lab,
    first: Site,
    second: Site,
    h1: Proc,
    h2: Proc,
    _tracker: Proc,
}

fn connected_pair(test: &str, a: Nat, b: Nat, extra: &[&str]) -> Option<Pair> {
    let mut lab = lab_or_skip(test)?;
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (tracker, target) = start_tracker(&lab);
    let (h1, id1) = start_chat(&first.hosts[0], "h1", &target, extra);
    let (h2, id2) = start_chat(&second.hosts[0], "h2", &target, extra);
    h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    h1.expect("connected", |e| e["peer_id"] == id2.as_str());
    Some(Pair {
        lab,
        first,
        second,
        h1,
        h2,
        _tracker: tracker,
    })
}

#[test]
fn keep_alives_hold_a_mapping_open_past_the_nat_timeout() {
    let extra = ["--keep-alive", "1", "--idle-timeout", "20"];
    let Some(mut pair) = connected_pair(
        "keep-alive",
        Nat::PortRestricted,
        Nat::PortRestricted,
        &extra,
    ) else {
        return;
    };
    for site in [&pair.first, &pair.second] {
        pair.lab.set_udp_timeout(site.router.as_deref().unwrap(), 3);
    }
    // The subject here is elapsed time: stay idle for more than twice the
    // NAT's 3 s timeout, watching for a disconnect that must not come.
    let idle = Duration::from_secs(7);
    assert!(pair
        .h1
        .expect_within(idle, "disconnected", |_| true)
        .is_none());
    chat_once(&mut pair.h1, &pair.h2, "still here after the idle period");
    chat_once(&mut pair.h2, &pair.h1, "and so am I");
    eprintln!("NATLAB | keep-alive 1 s vs NAT UDP timeout 3 s, idle 7 s | connection kept");
}

#[test]
fn flushing_both_nats_mid_chat_recovers_by_itself() {
    let extra = ["--keep-alive", "1"];
    let Some(mut pair) = connected_pair(
        "conntrack flush",
        Nat::PortRestricted,
        Nat::PortRestricted,
        &extra,
    ) else {
        return;
    };
    chat_once(&mut pair.h1, &pair.h2, "before the flush");
    for site in [&pair.first, &pair.second] {
        pair.lab.flush_conntrack(site.router.as_deref().unwrap());
    }
    chat_once(&mut pair.h1, &pair.h2, "after the flush, one way");
    chat_once(&mut pair.h2, &pair.h1, "after the flush, the other way");
    assert!(pair
        .h1
        .expect_within(Duration::ZERO, "disconnected", |_| true)
        .is_none());
}

#[test]
fn symmetric_nat_rebinding_the_dialer_is_survived_by_quic_migration() {
    let extra = ["--keep-alive", "1"];
    // The symmetric site joins second, so it dials: a flush gives its NAT a
    // new random port, and the acceptor's QUIC follows the client there.
    let Some(mut pair) = connected_pair("NAT rebinding", Nat::FullCone, Nat::Symmetric, &extra)
    else {
        return;
    };
    chat_once(&mut pair.h2, &pair.h1, "before rebinding");
    pair.lab
        .flush_conntrack(pair.second.router.as_deref().unwrap());
    chat_once(&mut pair.h2, &pair.h1, "after rebinding, one way");
    chat_once(&mut pair.h1, &pair.h2, "after rebinding, the other way");
    pair.h1.send("/peers");
    let peers = pair.h1.expect("peers", |_| true);
    let remote: SocketAddr = peers["peers"][0]["remote"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(remote.ip(), std::net::IpAddr::V4(pair.second.public_ip));
    eprintln!("NATLAB | symmetric dialer rebound by a NAT flush | migrated to {remote}");
}

#[test]
fn a_dead_path_is_reconnected_once_it_heals() {
    let extra = [
        "--keep-alive",
        "1",
        "--idle-timeout",
        "3",
        "--punch-timeout",
        "2",
    ];
    let Some(mut pair) = connected_pair(
        "reconnect",
        Nat::PortRestricted,
        Nat::AddressRestricted,
        &extra,
    ) else {
        return;
    };
    let router = pair.first.router.clone().unwrap();
    let other_side = pair.second.public_ip;
    chat_once(&mut pair.h1, &pair.h2, "before the outage");
    // Only the path between the two sites dies; both keep their tracker.
    pair.lab.block(&router, other_side);
    pair.h1.expect("disconnected", |e| {
        e["reason"]
            .as_str()
            .is_some_and(|r| r.contains("timed out"))
    });
    pair.lab.unblock(&router);
    let back = pair.h1.expect("connected", |_| true);
    assert_eq!(back["path"], "direct");
    chat_once(&mut pair.h1, &pair.h2, "after the outage");
    chat_once(&mut pair.h2, &pair.h1, "welcome back");
    eprintln!("NATLAB | path dead for an idle timeout, then healed | reconnected by itself");
}
