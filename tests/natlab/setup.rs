//! Connection set-up by phase for a punchable pair over 25 ms links: a fresh
//! lab per run (fresh NAT mappings, as a first connection finds them), the
//! dialer's `connected` event split into its phases, medians printed
//! (`NATLAB-SETUP` lines; docs/NAT.md records them). Measures, asserts no
//! timing.

use super::*;

/// One-way delay of every lab link: peer to peer and node to tracker are
/// each two links, so both round trips are 100 ms.
const SETUP_LINK_DELAY_MS: u32 = 25;

/// Fresh labs measured; override with `NATLAB_SETUP_RUNS`.
const SETUP_RUNS: usize = 5;

/// One dialed connection's phases, in ms.
struct Phases {
    /// Asking the tracker → the introduction.
    introduction: f64,
    /// Introduction → the peer's first probe.
    first_probe: f64,
    /// Introduction → authenticated QUIC connection.
    handshake: f64,
    /// Introduction → greeted (both hellos in hand).
    setup: f64,
    /// The acceptor: its first packet in → greeted.
    acceptor: f64,
}

fn field(event: &Value, name: &str) -> f64 {
    event[name]
        .as_f64()
        .unwrap_or_else(|| panic!("no {name} in {event}"))
}

fn one_setup(a: Nat, b: Nat) -> Phases {
    let mut lab = Lab::with_delay(SETUP_LINK_DELAY_MS);
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let deadline = ["--punch-timeout", "10"];
    let (h1, id1) = start_chat(&first.hosts[0], "h1", &target, &deadline);
    h1.expect("joined", |e| e["room"] == "lab");
    let (h2, id2) = start_chat(&second.hosts[0], "h2", &target, &deadline);
    let at_h2 = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(at_h2["path"], "direct", "{at_h2}");
    assert_eq!(remote_ip(&at_h2), first.public_ip);
    let at_h1 = h1.expect("connected", |e| e["peer_id"] == id2.as_str());
    assert_eq!(remote_ip(&at_h1), second.public_ip);
    // Both ask for each other (each sees the other in the room); the one
    // whose request reached the tracker first dials, the other accepts.
    let (connected, accepted) = if at_h2["dialed"] == true {
        (at_h2, at_h1)
    } else {
        (at_h1, at_h2)
    };
    assert_eq!(connected["dialed"], true, "one side dialed: {connected}");
    assert_eq!(accepted["dialed"], false, "one attempt: {accepted}");
    Phases {
        introduction: field(&connected, "introduction_ms"),
        first_probe: field(&connected, "first_probe_ms"),
        handshake: field(&connected, "handshake_ms"),
        setup: field(&connected, "setup_ms"),
        acceptor: field(&accepted, "setup_ms"),
    }
}

fn median(mut samples: Vec<f64>) -> f64 {
    samples.sort_by(f64::total_cmp);
    samples[samples.len() / 2]
}

#[test]
fn set_up_by_phase_for_a_punchable_pair_over_25_ms_links() {
    let Some(_) = lab_or_skip("set-up by phase") else {
        return;
    };
    let runs = std::env::var("NATLAB_SETUP_RUNS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(SETUP_RUNS);
    let rtt = f64::from(4 * SETUP_LINK_DELAY_MS);
    let (a, b) = (Nat::PortRestricted, Nat::PortRestricted);
    let mut all = Vec::new();
    for run in 1..=runs {
        let p = one_setup(a, b);
        eprintln!(
            "NATLAB-SETUP | run {run} | ask → introduction {:.0} ms | introduction → first probe {:.0} ms, → authenticated {:.0} ms, → greeted {:.0} ms | acceptor: first packet → greeted {:.0} ms",
            p.introduction, p.first_probe, p.handshake, p.setup, p.acceptor
        );
        // Physics, not a target: nothing arrives faster than its path.
        assert!(p.handshake >= rtt * 0.9, "handshake {:.1} ms", p.handshake);
        assert!(p.setup >= p.handshake);
        all.push(p);
    }
    let med = |pick: fn(&Phases) -> f64| median(all.iter().map(pick).collect());
    let (intro, probe, shake, setup, acceptor) = (
        med(|p| p.introduction),
        med(|p| p.first_probe),
        med(|p| p.handshake),
        med(|p| p.setup),
        med(|p| p.acceptor),
    );
    // The floor: the introduction's way from the tracker (half the
    // tracker's round trip) plus one QUIC round trip, to the dialer holding
    // an authenticated, greeted connection.
    let floor = rtt / 2.0 + rtt;
    let measured = intro / 2.0 + setup;
    eprintln!(
        "NATLAB-SETUP | {} | {} | {SETUP_LINK_DELAY_MS} ms per link, median of {runs} | ask → introduction {intro:.0} ms | introduction → first probe {probe:.0} ms, → authenticated {shake:.0} ms (greeting {:.0} ms more), → greeted {setup:.0} ms | introduction's way + set-up {measured:.0} ms = {:.2} × the {floor:.0} ms floor | ask → greeted {:.0} ms | acceptor greeted {acceptor:.0} ms after its first packet",
        a.label(),
        b.label(),
        setup - shake,
        measured / floor,
        intro + setup,
    );
}
