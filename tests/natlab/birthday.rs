//! Birthday punching in the lab: a symmetric NAT (random ports across
//! 20000–40000) against a port-restricted one, the pair no ordinary punch
//! opens. The relay connects first and carries the chat; the birthday punch
//! (src/birthday.rs) finds a direct path, which replaces it.

use std::time::{Duration, Instant};

use serde_json::Value;

use super::common::process::Proc;
use super::lab::{Host, HOST_PORT};
use super::{lab_or_skip, remote_ip, start_chat, start_tracker, Nat, PUNCH_TIMEOUT_SECS};

/// The longest a try may take to go direct: the first punch (4 s in the
/// lab), the upgrade backoff's first step, two birthday punches and slack
/// for a loaded machine.
const TO_DIRECT: Duration = Duration::from_secs(30);

/// How one try went.
struct Try {
    /// From the dialing node's start to its gate being direct.
    direct_ms: Option<f64>,
    /// The first connection was relayed (else the birthday punch won the
    /// first attempt).
    relayed_first: bool,
    /// A message sent once the relay connected arrived before the path
    /// changed (else the birthday punch was quicker, and it arrived after).
    relay_carried_chat: bool,
}

/// A chat node in room `waiting` only, until told to `/join lab`.
fn start_waiting(host: &Host, target: &str) -> Proc {
    let bind = format!("0.0.0.0:{HOST_PORT}");
    let args = [
        "chat",
        "--tracker",
        target,
        "--name",
        "h2",
        "--room",
        "waiting",
        "--bind",
        &bind,
        "--punch-timeout",
        PUNCH_TIMEOUT_SECS,
    ];
    let proc = Proc::start_in(Some(&host.netns), &args);
    proc.expect("ready", |_| true);
    proc
}

/// Waits for `node`'s `nat` event: its NAT is measured and the tracker has it.
fn nat_reported(node: &Proc) -> Value {
    node.expect("nat", |_| true)
}

/// One fresh lab: `first` accepts, `second` dials. With `reports_first`,
/// the dialer joins the room only once both NAT reports are with the
/// tracker, so the birthday punch runs with the first introduction;
/// without, it joins at start (as the matrix does), the first
/// introduction precedes its report, and the birthday punch comes with the
/// upgrade after the first punch's deadline. Times run from the join.
fn one_try(first_nat: Nat, second_nat: Nat, index: usize, reports_first: bool) -> Option<Try> {
    let mut lab = lab_or_skip("birthday punching")?;
    let first = lab.add_site(1, first_nat, 1, false);
    let second = lab.add_site(2, second_nat, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &[]);
    let (mut h2, started) = if reports_first {
        nat_reported(&h1);
        let mut h2 = start_waiting(&second.hosts[0], &target);
        let nat = nat_reported(&h2);
        assert_ne!(nat["mapping"], "unknown", "{nat}");
        let started = Instant::now();
        h2.send("/join lab");
        (h2, started)
    } else {
        let started = Instant::now();
        (start_chat(&second.hosts[0], "h2", &target, &[]).0, started)
    };
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    let is_direct = |e: &Value| e["path"] == "direct";
    let mut outcome = Try {
        direct_ms: None,
        relayed_first: !is_direct(&connected),
        relay_carried_chat: false,
    };
    if is_direct(&connected) {
        outcome.direct_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
    } else {
        assert_eq!(remote_ip(&connected), super::TRACKER_IP, "{connected}");
        // Chat goes over the relay while the birthday punch runs.
        let text = format!("while relayed {index}");
        h1.send(&text);
        let direct_at = h2.first(TO_DIRECT, |e| match e["event"].as_str() {
            Some("message") if e["text"] == text.as_str() => Some(false),
            Some("path") if e["peer_id"] == id1.as_str() && is_direct(e) => Some(true),
            _ => None,
        });
        match direct_at {
            Some(false) => {
                outcome.relay_carried_chat = true;
                let path = h2.expect_within(TO_DIRECT, "path", |e| {
                    e["peer_id"] == id1.as_str() && is_direct(e)
                });
                if let Some(path) = path {
                    assert_eq!(remote_ip(&path), first.public_ip, "{path}");
                    outcome.direct_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                }
            }
            Some(true) => {
                outcome.direct_ms = Some(started.elapsed().as_secs_f64() * 1000.0);
                // The path changed first: the message still arrives, once.
                h2.expect("message", |e| e["text"] == text.as_str());
            }
            None => {}
        }
    }
    if outcome.direct_ms.is_some() {
        // The chat flows over the direct path too.
        let back = format!("direct now {index}");
        h2.send(&back);
        h1.expect("message", |e| e["text"] == back.as_str());
    }
    Some(outcome)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    let rank = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[rank.min(sorted.len() - 1)]
}

/// Ten tries, each in a fresh lab (fresh NAT mappings), the symmetric site
/// accepting in five and dialing in five, the NAT reports in before the
/// dialer joins: at least nine go direct.
#[test]
fn symmetric_x_port_restricted_goes_direct_by_birthday_punching() {
    const TRIES: usize = 10;
    let mut times = Vec::new();
    let mut relayed_first = 0;
    let mut carried = 0;
    for index in 0..TRIES {
        let (a, b) = if index % 2 == 0 {
            (Nat::Symmetric, Nat::PortRestricted)
        } else {
            (Nat::PortRestricted, Nat::Symmetric)
        };
        let Some(outcome) = one_try(a, b, index, true) else {
            return;
        };
        relayed_first += usize::from(outcome.relayed_first);
        carried += usize::from(outcome.relay_carried_chat);
        eprintln!(
            "NATLAB | birthday try {index}: {} (accepts) | {} (dials) | {} | first connection {}",
            a.label(),
            b.label(),
            outcome
                .direct_ms
                .map_or("stayed relayed".to_string(), |ms| format!(
                    "direct {ms:.0} ms after joining"
                )),
            if outcome.relayed_first {
                "relayed"
            } else {
                "direct"
            },
        );
        if let Some(ms) = outcome.direct_ms {
            times.push(ms);
        }
    }
    times.sort_by(f64::total_cmp);
    let direct = times.len();
    if !times.is_empty() {
        eprintln!(
            "NATLAB | symmetric x port-restricted by birthday punching | direct {direct}/{TRIES} | to direct: min {:.0} ms, median {:.0} ms, p90 {:.0} ms, max {:.0} ms | relayed first {relayed_first}/{TRIES}, a message sent once relayed went over the relay {carried}/{relayed_first} (in the rest the direct path came first; every message arrived once)",
            times[0],
            percentile(&times, 0.5),
            percentile(&times, 0.9),
            times[direct - 1],
        );
    }
    assert!(direct >= 9, "only {direct} of {TRIES} tries went direct");
}

/// The matrix's two birthday pairs, once each: direct in the end.
fn matrix_pair(a: Nat, b: Nat) {
    let Some(outcome) = one_try(a, b, 0, false) else {
        return;
    };
    let ms = outcome
        .direct_ms
        .unwrap_or_else(|| panic!("{a:?} x {b:?} stayed relayed"));
    eprintln!(
        "NATLAB | {} | {} | direct by birthday punching | {ms:.0} ms from start to direct (joined at start), first connection {}, a message over the relay meanwhile: {}",
        a.label(),
        b.label(),
        if outcome.relayed_first { "relayed" } else { "direct" },
        outcome.relay_carried_chat,
    );
}

#[test]
fn birthday_port_restricted_x_symmetric() {
    matrix_pair(Nat::PortRestricted, Nat::Symmetric);
}

#[test]
fn birthday_symmetric_x_port_restricted() {
    matrix_pair(Nat::Symmetric, Nat::PortRestricted);
}
