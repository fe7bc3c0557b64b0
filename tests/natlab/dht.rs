//! Two peers behind NATs, each registered with a different tracker, connect
//! by peer id alone: the joiner looks the other's record up on a DHT of
//! lab nodes on the public segment (`punchgate dht-testnet`), registers with
//! the other's tracker as a guest and is introduced there.

use std::net::SocketAddrV4;
use std::time::Instant;

use super::common::process::Proc;
use super::lab::{Host, Lab, Nat, Site, HOST_PORT, OTHER_IP, TRACKER_IP, TRACKER_PORT};
use super::{lab_or_skip, remote_ip, start_tracker, PUNCH_TIMEOUT_SECS};
use serde_json::Value;

/// A DHT of 8 nodes on the lab's public segment (the tracker's namespace,
/// its second address); the `--dht-bootstrap` list.
fn lab_dht(lab: &Lab) -> (Proc, String) {
    let bind = OTHER_IP.to_string();
    let dht = Proc::start_in(
        Some(&lab.tracker_ns()),
        &["dht-testnet", "--bind", &bind, "--nodes", "8"],
    );
    let ready = dht.expect("ready", |e| e["role"] == "dht");
    let nodes: Vec<&str> = ready["bootstrap"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| node.as_str().unwrap())
        .collect();
    assert!(nodes.iter().all(|n| n.starts_with(&format!("{OTHER_IP}:"))));
    let bootstrap = nodes.join(",");
    (dht, bootstrap)
}

/// A second tracker process on the tracker's host (another port: no state
/// shared with the first).
fn second_tracker(lab: &Lab) -> (Proc, String) {
    let listen = SocketAddrV4::new(TRACKER_IP, TRACKER_PORT + 100).to_string();
    let tracker = Proc::start_in(Some(&lab.tracker_ns()), &["tracker", "--listen", &listen]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    (tracker, target)
}

fn chat_on_dht(
    host: &Host,
    name: &str,
    tracker: &str,
    bootstrap: &str,
    extra: &[&str],
) -> (Proc, String) {
    let bind = format!("0.0.0.0:{HOST_PORT}");
    let mut args = vec![
        "chat",
        "--tracker",
        tracker,
        "--name",
        name,
        "--room",
        name,
        "--bind",
        &bind,
        "--punch-timeout",
        PUNCH_TIMEOUT_SECS,
    ];
    args.extend_from_slice(extra);
    let env = [
        ("PUNCHGATE_NO_DHT", "false"),
        ("PUNCHGATE_DHT_BOOTSTRAP", bootstrap),
    ];
    let proc = Proc::start_with_env(Some(&host.netns), &args, &env);
    let id = proc.expect("ready", |_| true)["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    (proc, id)
}

/// `h2` (behind `b`, on tracker 2) connects to `h1` (behind `a`, on
/// tracker 1) by id alone; they chat both ways. Direct where the pair is
/// punchable, else through the relay of h1's tracker, where h2 is a guest.
fn by_id_across_trackers(a: Nat, b: Nat) {
    let Some(mut lab) = lab_or_skip(&format!("dht: by id across trackers, {a:?} x {b:?}")) else {
        return;
    };
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_dht, bootstrap) = lab_dht(&lab);
    let (_tracker1, target1) = start_tracker(&lab);
    let (_tracker2, target2) = second_tracker(&lab);
    let (mut h1, id1) = chat_on_dht(&first.hosts[0], "h1", &target1, &bootstrap, &[]);
    h1.expect("dht", |e| e["state"] == "published" && e["trackers"] == 1);
    let started = Instant::now();
    let (mut h2, id2) = chat_on_dht(
        &second.hosts[0],
        "h2",
        &target2,
        &bootstrap,
        &["--connect", &id1],
    );
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    let elapsed = started.elapsed();
    h1.expect("connected", |e| e["peer_id"] == id2.as_str());
    assert_path_to_h1(a, b, &connected, &first);
    h2.send(&format!("/msg {id1} across trackers"));
    h1.expect("message", |e| e["text"] == "across trackers");
    h1.send(&format!("/msg {id2} and back"));
    h2.expect("message", |e| e["text"] == "and back");
    eprintln!(
        "NATLAB | dht | {} x {}, trackers 1 and 2 | connected {} by id in {} ms (h2's start, lookup, guest registration, introduction, punch)",
        a.label(),
        b.label(),
        connected["path"].as_str().unwrap_or_default(),
        elapsed.as_millis()
    );
}

/// h2's connection to h1 (behind `a`, at `first`; h2 behind `b`): direct
/// at h1's public address (through its NAT) where the pair is punchable,
/// else through tracker 1's relay, the only one that relays for them
/// (h2 is its guest).
fn assert_path_to_h1(a: Nat, b: Nat, connected: &Value, first: &Site) {
    if Nat::punchable(a, b) {
        assert_eq!(connected["path"], "direct", "{connected}");
        assert_eq!(remote_ip(connected), first.public_ip, "{connected}");
    } else {
        assert_eq!(connected["path"], "relay", "{connected}");
        assert_eq!(remote_ip(connected), TRACKER_IP, "{connected}");
    }
}

#[test]
fn port_restricted_peers_on_different_trackers_connect_directly_by_id() {
    by_id_across_trackers(Nat::PortRestricted, Nat::PortRestricted);
}

#[test]
fn symmetric_peers_on_different_trackers_connect_by_id_through_the_peers_tracker() {
    by_id_across_trackers(Nat::Symmetric, Nat::Symmetric);
}

/// `h1` (behind `a`, on tracker 1) and `h2` (behind `b`, on tracker 2)
/// join the same room; neither tracker knows the other: h2 finds h1 in
/// the room's records on the lab's DHT, and reaches it through h1's
/// tracker. Direct where the pair is punchable, else relayed there.
fn room_across_trackers(a: Nat, b: Nat) {
    let label = format!("dht: a room across trackers, {a:?} x {b:?}");
    let Some(mut lab) = lab_or_skip(&label) else {
        return;
    };
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_dht, bootstrap) = lab_dht(&lab);
    let (_tracker1, target1) = start_tracker(&lab);
    let (_tracker2, target2) = second_tracker(&lab);
    let lobby = ["--room", "lobby"];
    let (mut h1, id1) = chat_on_dht(&first.hosts[0], "h1", &target1, &bootstrap, &lobby);
    h1.expect("dht_room", |e| {
        e["room"] == "lobby" && e["state"] == "announced"
    });
    let started = Instant::now();
    let (mut h2, id2) = chat_on_dht(&second.hosts[0], "h2", &target2, &bootstrap, &lobby);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    let elapsed = started.elapsed();
    h1.expect("connected", |e| e["peer_id"] == id2.as_str());
    assert_path_to_h1(a, b, &connected, &first);
    // Plain lines go to the room joined last: the lobby.
    h2.send("across the room");
    let heard = h1.expect("message", |e| e["text"] == "across the room");
    assert_eq!(heard["room"], "lobby", "{heard}");
    h1.send("and back");
    h2.expect("message", |e| e["text"] == "and back");
    eprintln!(
        "NATLAB | dht | {} x {}, trackers 1 and 2 | room members met {} in {} ms (h2's start, room lookup, record lookup, guest registration, introduction, punch)",
        a.label(),
        b.label(),
        connected["path"].as_str().unwrap_or_default(),
        elapsed.as_millis()
    );
}

#[test]
fn port_restricted_members_of_one_room_on_different_trackers_meet_directly() {
    room_across_trackers(Nat::PortRestricted, Nat::PortRestricted);
}

#[test]
fn symmetric_members_of_one_room_on_different_trackers_meet_through_a_relay() {
    room_across_trackers(Nat::Symmetric, Nat::Symmetric);
}
