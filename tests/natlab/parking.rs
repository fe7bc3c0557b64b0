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

/// One-way delay per link in the set-up comparison (as in `timing.rs`).
const LINK_DELAY_MS: u32 = 25;

/// How long from h2 being in the room to its connection with h1, over
/// delayed links, with h1 parked or not.
fn newcomer_connects_after(h1_parked: bool) -> (f64, String) {
    let mut lab = super::lab::Lab::with_delay(LINK_DELAY_MS);
    let first = lab.add_site(1, Nat::PortRestricted, 1, false);
    let second = lab.add_site(2, Nat::PortRestricted, 1, false);
    let (_tracker, target) = start_tracker_with(&lab, &[]);
    let park = if h1_parked { "1" } else { "0" };
    let (h1, id1) = start_chat(&first.hosts[0], "h1", &target, &["--park-after", park]);
    h1.expect("joined", |_| true);
    if h1_parked {
        h1.expect("tracker", |e| e["state"] == "parked");
    }
    let (h2, _) = start_chat(&second.hosts[0], "h2", &target, &["--park-after", "0"]);
    h2.expect("joined", |_| true);
    let joined = Instant::now();
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    let took = joined.elapsed().as_secs_f64() * 1000.0;
    if h1_parked {
        h1.expect("tracker", |e| e["state"] == "resumed");
    }
    let path = connected["path"].as_str().unwrap_or("?").to_string();
    (took, path)
}

#[test]
fn what_parking_costs_a_newcomer_over_25_ms_links() {
    let Some(_) = lab_or_skip("parking's set-up cost") else {
        return;
    };
    let (awake, awake_path) = newcomer_connects_after(false);
    let (parked, parked_path) = newcomer_connects_after(true);
    let rtt = f64::from(4 * LINK_DELAY_MS);
    eprintln!(
        "NATLAB-TIMING | parking | {} × 2 | {LINK_DELAY_MS} ms per link (RTT {rtt:.0} ms) | newcomer in the room → connected: {awake:.0} ms to a connected member ({awake_path}), {parked:.0} ms to a parked one ({parked_path}): +{:.0} ms = {:.1} RTT (the ring, a QUIC handshake, the Resume request, the rooms joined again)",
        Nat::PortRestricted.label(),
        parked - awake,
        (parked - awake) / rtt
    );
}
