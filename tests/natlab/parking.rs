//! Parked nodes behind NATs (the doorbell): a node that parked its
//! tracker session keeps the mapping of its NAT toward the tracker's
//! second port open with its knocks, past the NAT's UDP timeout, so that
//! the tracker's ring gets in when a peer asks for it; the node resumes
//! and the pair connects, directly or through the relay.

use std::time::{Duration, Instant};

use super::lab::Nat;
use super::{chat_once, lab_or_skip, start_chat, start_tracker_with};

/// The NAT's UDP timeout in these tests, and the knock interval under it.
const NAT_UDP_TIMEOUT_SECS: u32 = 4;
const KNOCK_EVERY: &str = "2";

fn parked_node_is_rung_through_its_nat(parked: Nat, asker: Nat) {
    let test = format!("parked {} rung for {}", parked.label(), asker.label());
    let Some(mut lab) = lab_or_skip(&test) else {
        return;
    };
    let first = lab.add_site(1, parked, 1, false);
    let second = lab.add_site(2, asker, 1, false);
    for site in [&first, &second] {
        if let Some(router) = site.router.as_deref() {
            lab.set_udp_timeout(router, NAT_UDP_TIMEOUT_SECS);
        }
    }
    let (_tracker, target) = start_tracker_with(&lab, &["--knock-every", KNOCK_EVERY]);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &["--park-after", "1"]);
    h1.expect("tracker", |e| e["state"] == "parked");
    // The subject is elapsed time: parked for more than twice the NAT's
    // UDP timeout, watching for a loss that must not come (only the knocks
    // keep the NAT's mapping toward the tracker's second port).
    let idle = Duration::from_secs(u64::from(NAT_UDP_TIMEOUT_SECS) * 2 + 1);
    assert!(h1
        .expect_within(idle, "tracker", |e| e["state"] == "lost")
        .is_none());
    let asked = Instant::now();
    let (mut h2, _) = start_chat(&second.hosts[0], "h2", &target, &["--park-after", "0"]);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    let took = asked.elapsed();
    h1.expect("tracker", |e| e["state"] == "resumed");
    chat_once(&mut h2, &h1, "ring ring");
    chat_once(&mut h1, &h2, "I was parked");
    eprintln!(
        "NATLAB | parked {} rung for {} after {idle:?} idle (NAT UDP timeout {NAT_UDP_TIMEOUT_SECS} s, knocks every {KNOCK_EVERY} s) | connected over {} {} ms after the asker started",
        parked.label(),
        asker.label(),
        connected["path"].as_str().unwrap_or("?"),
        took.as_millis()
    );
}

#[test]
fn a_parked_node_behind_a_port_restricted_nat_is_rung_and_punched() {
    parked_node_is_rung_through_its_nat(Nat::PortRestricted, Nat::PortRestricted);
}

#[test]
fn a_parked_node_behind_a_symmetric_nat_is_rung_and_reached() {
    parked_node_is_rung_through_its_nat(Nat::Symmetric, Nat::Symmetric);
}
