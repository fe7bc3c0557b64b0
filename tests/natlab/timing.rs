//! The lab with delayed links: the delay line itself, punch times by
//! phase over 10 to 150 ms links, and a hard pair's first message at 25 ms
//! per link.

use super::*;

/// One-way delay of every lab link in the timing test: peer to peer crosses
/// two links (RTT 80 ms), and so does a node to the tracker.
const LINK_DELAY_MS: u32 = 20;

#[test]
fn lab_delay_line_delays_by_what_it_says() {
    let Some(_) = lab_or_skip("delay line") else {
        return;
    };
    let mut lab = Lab::with_delay(LINK_DELAY_MS);
    let site = lab.add_site(1, Nat::None, 1, false);
    let inside = lab.socket_in(
        &site.hosts[0].netns,
        SocketAddr::from(([0, 0, 0, 0], HOST_PORT)),
    );
    let echo = lab.socket_in(&lab.tracker_ns(), SocketAddr::from((TRACKER_IP, 5000)));
    inside.set_read_timeout(Some(WAIT)).unwrap();
    echo.set_read_timeout(Some(WAIT)).unwrap();
    let mut rtts = Vec::new();
    let mut buf = [0u8; 16];
    for _ in 0..10 {
        let sent = Instant::now();
        inside.send_to(b"ping", echo.local_addr().unwrap()).unwrap();
        let (_, from) = echo.recv_from(&mut buf).unwrap();
        echo.send_to(b"pong", from).unwrap();
        inside.recv_from(&mut buf).unwrap();
        rtts.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    rtts.sort_by(f64::total_cmp);
    let median = rtts[rtts.len() / 2];
    eprintln!("NATLAB-SELFTEST | delay line {LINK_DELAY_MS} ms per link | host-tracker RTT median {median:.1} ms (min {:.1}, max {:.1})", rtts[0], rtts[rtts.len() - 1]);
    // Two links each way: at least 4 × the one-way delay.
    assert!(median >= f64::from(4 * LINK_DELAY_MS), "{rtts:?}");
}

#[test]
fn punch_times_with_delayed_links() {
    let Some(_) = lab_or_skip("punch timing") else {
        return;
    };
    let rtt_ms = f64::from(4 * LINK_DELAY_MS);
    // Every punchable pair once, plus each with the symmetric side accepting
    // (the direction that needs the extra probe exchange).
    let wanted = |&(a, b): &(Nat, Nat)| {
        Nat::punchable(a, b) && ((a as u8) <= (b as u8) || a == Nat::Symmetric)
    };
    let pairs: Vec<(Nat, Nat)> = Nat::ALL
        .into_iter()
        .flat_map(|a| Nat::ALL.into_iter().map(move |b| (a, b)))
        .filter(wanted)
        .collect();
    for (a, b) in pairs {
        let mut lab = Lab::with_delay(LINK_DELAY_MS);
        let first = lab.add_site(1, a, 1, false);
        let second = lab.add_site(2, b, 1, false);
        let (_tracker, target) = start_tracker(&lab);
        let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &["--punch-timeout", "10"]);
        let (h2, _) = start_chat(&second.hosts[0], "h2", &target, &["--punch-timeout", "10"]);
        let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
        assert_eq!(remote_ip(&connected), first.public_ip);
        let measured_rtt = connected["rtt_ms"].as_f64().unwrap_or_default();
        // The direct path's RTT, not the tracker's (which is the same here),
        // must at least reflect the two delayed links each way.
        assert!(measured_rtt >= rtt_ms * 0.9, "rtt {measured_rtt} ms");
        let setup = connected["setup_ms"].as_f64().unwrap_or_default();
        chat_once(&mut h1, &h2, "over slow links");
        eprintln!(
            "NATLAB-TIMING | {} | {} | punch {setup:.0} ms = {:.1} × the {rtt_ms:.0} ms path RTT (minimum 1: the handshake, the greeting riding in its flights; quinn's RTT estimate {measured_rtt:.0} ms)",
            a.label(),
            b.label(),
            setup / rtt_ms
        );
    }
}

/// The bar for a pair no hole can be punched between, over links of
/// [`HARD_PAIR_LINK_DELAY_MS`]: its first message arrives within this long
/// of both peers being in the room (the relay joins the punch after about a
/// round trip to the tracker instead of after the punch deadline).
const HARD_PAIR_FIRST_MESSAGE: Duration = Duration::from_secs(1);
const HARD_PAIR_LINK_DELAY_MS: u32 = 25;

/// Starts h1 and h2 on sites behind `a` and `b` over delayed links; h2
/// says a line the moment it has joined the room. Returns how long after
/// that h1 showed it, and h2's first `connected` event with h2.
fn first_message_over_delayed_links(a: Nat, b: Nat) -> (Duration, Value, Proc, String) {
    let mut lab = Lab::with_delay(HARD_PAIR_LINK_DELAY_MS);
    let first = lab.add_site(1, a, 1, false);
    let second = lab.add_site(2, b, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    // The default punch deadline: the relay must not wait for it.
    let deadline = ["--punch-timeout", "10"];
    let (h1, id1) = start_chat(&first.hosts[0], "h1", &target, &deadline);
    h1.expect("joined", |e| e["room"] == "lab");
    let (mut h2, _) = start_chat(&second.hosts[0], "h2", &target, &deadline);
    h2.expect("joined", |e| e["room"] == "lab");
    let in_room = Instant::now();
    h2.send("first words");
    h1.expect("message", |e| e["text"] == "first words");
    let took = in_room.elapsed();
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    (took, connected, h2, id1)
}

#[test]
fn a_hard_pair_delivers_its_first_message_within_a_second_over_25_ms_links() {
    let Some(_) = lab_or_skip("hard pair first message") else {
        return;
    };
    let (took, connected, _, _) = first_message_over_delayed_links(Nat::Symmetric, Nat::Symmetric);
    assert_eq!(connected["path"], "relay", "{connected}");
    eprintln!(
        "NATLAB-TIMING | {} | {} | {HARD_PAIR_LINK_DELAY_MS} ms per link | relay | first message {:.0} ms after both are in the room (bar {HARD_PAIR_FIRST_MESSAGE:?})",
        Nat::Symmetric.label(),
        Nat::Symmetric.label(),
        took.as_secs_f64() * 1000.0
    );
    assert!(
        took < HARD_PAIR_FIRST_MESSAGE,
        "the first message took {took:?}; the bar is {HARD_PAIR_FIRST_MESSAGE:?}"
    );
}

#[test]
fn a_punchable_pair_over_25_ms_links_ends_direct() {
    let Some(_) = lab_or_skip("punchable pair over delayed links") else {
        return;
    };
    let (a, b) = (Nat::PortRestricted, Nat::AddressRestricted);
    let (took, connected, h2, id1) = first_message_over_delayed_links(a, b);
    // The relay may win the race; the punch goes on until the pair is direct.
    let direct = if connected["path"] == "direct" {
        connected.clone()
    } else {
        h2.expect("path", |e| {
            e["peer_id"] == id1.as_str() && e["path"] == "direct"
        })
    };
    assert_eq!(direct["path"], "direct", "{direct}");
    eprintln!(
        "NATLAB-TIMING | {} | {} | {HARD_PAIR_LINK_DELAY_MS} ms per link | first connected {}, ends direct | first message {:.0} ms after both are in the room",
        a.label(),
        b.label(),
        connected["path"],
        took.as_secs_f64() * 1000.0
    );
}

#[test]
fn punch_times_over_10_50_and_150_ms_links() {
    let Some(_) = lab_or_skip("punch timing by delay") else {
        return;
    };
    for delay_ms in [10u32, 50, 150] {
        let rtt_ms = f64::from(4 * delay_ms);
        let mut lab = Lab::with_delay(delay_ms);
        let first = lab.add_site(1, Nat::PortRestricted, 1, false);
        let second = lab.add_site(2, Nat::PortRestricted, 1, false);
        let (_tracker, target) = start_tracker(&lab);
        let (_h1, id1) = start_chat(&first.hosts[0], "h1", &target, &["--punch-timeout", "20"]);
        let bind = format!("0.0.0.0:{HOST_PORT}");
        let h2 = Proc::start_in(
            Some(&second.hosts[0].netns),
            &[
                "chat",
                "--tracker",
                &target,
                "--name",
                "h2",
                "--room",
                "lab",
                "--bind",
                &bind,
                "--punch-timeout",
                "20",
            ],
        );
        // From the moment the dialer is in the room (it asks the tracker to
        // connect right after) to the authenticated, greeted connection.
        h2.expect("joined", |_| true);
        let joined = Instant::now();
        let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
        let total = joined.elapsed().as_secs_f64() * 1000.0;
        let setup = connected["setup_ms"].as_f64().unwrap_or_default();
        let handshake = connected["handshake_ms"].as_f64().unwrap_or_default();
        eprintln!(
            "NATLAB-DELAY | {delay_ms} ms per link (path RTT {rtt_ms:.0} ms) | total {total:.0} ms = {:.2} RTT | introduction {:.0} ms, probes + QUIC handshake {handshake:.0} ms, greeting {:.0} ms | minimum to authenticated: 2 RTT = {:.0} ms",
            total / rtt_ms,
            total - setup,
            setup - handshake,
            2.0 * rtt_ms
        );
        // Physics, not a target. Both members now ask for each other (h1
        // hears of h2 from the tracker and may start before h2 reads its
        // own join), so the time from h2's join may be under 2 RTT; the
        // handshake itself never beats one round trip.
        assert!(
            handshake >= rtt_ms * 0.9,
            "a handshake faster than physics: {handshake} ms"
        );
    }
}
