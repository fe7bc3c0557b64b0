//! LAN discovery (`src/lan.rs`) between real processes: two hosts on one
//! LAN, no tracker anywhere, find each other by their beacons and chat.

use std::net::{IpAddr, SocketAddr};
use std::time::Instant;

use super::common::process::Proc;
use super::lab::{Host, Nat, HOST_PORT};
use super::{chat_once, lab_or_skip};

/// A chat node on `host` with no tracker, in `room`.
fn start_alone(host: &Host, name: &str, room: &str, extra: &[&str]) -> (Proc, String) {
    let bind = format!("[::]:{HOST_PORT}");
    let mut args = vec!["chat", "--name", name, "--room", room, "--bind", &bind];
    args.extend_from_slice(extra);
    let proc = Proc::start_in(Some(&host.netns), &args);
    let ready = proc.expect("ready", |_| true);
    let id = ready["peer_id"].as_str().unwrap().to_string();
    (proc, id)
}

#[test]
fn two_nodes_on_one_lan_find_each_other_without_a_tracker_and_chat() {
    let Some(mut lab) = lab_or_skip("LAN discovery") else {
        return;
    };
    let site = lab.add_site(1, Nat::PortRestricted, 3, false);
    let (a_host, b_host, c_host) = (&site.hosts[0], &site.hosts[1], &site.hosts[2]);
    let started = Instant::now();
    // A node on the same LAN in another room: it is not dialed.
    let (_c, c_id) = start_alone(c_host, "c", "elsewhere", &[]);
    let (mut a, a_id) = start_alone(a_host, "a", "lab", &[]);
    let (mut b, b_id) = start_alone(b_host, "b", "lab", &[]);
    let at_b = b.expect("connected", |e| e["peer_id"] == a_id.as_str());
    let to_connected = started.elapsed();
    let at_a = a.expect("connected", |e| e["peer_id"] == b_id.as_str());
    assert_eq!(at_b["path"], "direct", "{at_b}");
    let remote = |e: &serde_json::Value| -> IpAddr {
        e["remote"]
            .as_str()
            .unwrap()
            .parse::<SocketAddr>()
            .unwrap()
            .ip()
    };
    assert_eq!(remote(&at_b), IpAddr::from(a_host.ip), "{at_b}");
    assert_eq!(remote(&at_a), IpAddr::from(b_host.ip), "{at_a}");
    chat_once(&mut a, &b, "found you on the LAN");
    chat_once(&mut b, &a, "and I you");
    // c shares no room: a and b know nothing of it.
    a.send("/peers");
    let peers = a.expect("peers", |_| true);
    assert!(!peers.to_string().contains(&c_id), "{peers}");
    eprintln!(
        "NATLAB | LAN discovery | two nodes, no tracker | direct | {:.0} ms from start to connected",
        to_connected.as_secs_f64() * 1000.0
    );
}

#[test]
fn with_no_lan_discovery_a_node_is_neither_found_nor_finds() {
    let Some(mut lab) = lab_or_skip("--no-lan-discovery") else {
        return;
    };
    let site = lab.add_site(1, Nat::PortRestricted, 2, false);
    let (a, _) = start_alone(&site.hosts[0], "a", "lab", &[]);
    let (_b, b_id) = start_alone(&site.hosts[1], "b", "lab", &["--no-lan-discovery"]);
    // Proving that nothing happens needs a bounded wait: more than one
    // beacon interval, so that a has beaconed again since b started.
    let wait = punchgate::lan::BEACON_INTERVAL * 3 / 2;
    let connected = a.first(wait, |e| {
        (e["event"] == "connected" && e["peer_id"] == b_id.as_str()).then_some(())
    });
    assert!(connected.is_none(), "a found b, whose discovery is off");
}
