//! Chat while a bulk transfer runs on the same connection, on the lab's
//! broadband path (100 Mbit/s behind a 50 ms queue, 40 ms RTT): how long a
//! message takes to arrive and to be acknowledged, idle and while the file's
//! chunks fill the path in the same direction. Prints `NATLAB-BUSY` lines
//! (docs/BENCHMARKS.md records them); asserts no timing.

use super::*;
use lab::Links;

/// MiB sent; override with `NATLAB_BUSY_MIB`. At 100 Mbit/s, 96 MiB runs
/// for about 8 s, time for dozens of messages.
const BUSY_MIB: usize = 96;
/// Messages timed before the transfer starts.
const IDLE_SAMPLES: usize = 10;

/// One message from `from` to `to`: (arrival at `to`, acknowledgement back
/// at `from`), both from the moment it was typed; `None` if `to` reported
/// the transfer done first (the sample would not be under load).
fn one_message(from: &mut Proc, to: &Proc, text: &str) -> Option<(f64, f64)> {
    let typed = Instant::now();
    from.send(text);
    let mut finished = false;
    let arrived = to
        .first(WAIT, |e| match e["event"].as_str() {
            Some("message") if e["text"] == text => Some(true),
            Some("transfer_done") => Some(false),
            _ => None,
        })
        .expect("the message arrives");
    if !arrived {
        finished = true;
        to.expect("message", |e| e["text"] == text);
    }
    let one_way = typed.elapsed().as_secs_f64() * 1000.0;
    let sent = from.expect("sent", |e| e["text"] == text);
    from.expect("delivered", |e| e["id"] == sent["id"]);
    let acked = typed.elapsed().as_secs_f64() * 1000.0;
    (!finished).then_some((one_way, acked))
}

fn quantiles(mut samples: Vec<f64>) -> String {
    if samples.is_empty() {
        return "no samples".into();
    }
    samples.sort_by(f64::total_cmp);
    let at = |q: f64| samples[((samples.len() - 1) as f64 * q).round() as usize];
    format!(
        "median {:.0} ms, p90 {:.0} ms, max {:.0} ms ({} samples)",
        at(0.5),
        at(0.9),
        at(1.0),
        samples.len()
    )
}

#[test]
fn chat_while_a_bulk_transfer_fills_the_path() {
    let Some(_) = lab_or_skip("chat during a bulk transfer") else {
        return;
    };
    chat_during_transfer(
        Links::BROADBAND,
        "broadband path, 40 ms RTT, 100 Mbit/s, 50 ms queue",
    );
}

#[test]
fn chat_while_a_bulk_transfer_runs_as_fast_as_the_cpus_allow() {
    let Some(_) = lab_or_skip("chat during an unshaped bulk transfer") else {
        return;
    };
    let links = Links {
        delay_ms: 0,
        rate: None,
    };
    chat_during_transfer(links, "unshaped path (the CPUs are the bottleneck)");
}

/// Times messages idle, then while a file flows the same way, on `links`.
fn chat_during_transfer(links: Links, path: &str) {
    let mib = std::env::var("NATLAB_BUSY_MIB")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(BUSY_MIB);
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("bulk.bin");
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let bytes: Vec<u8> = (0..mib << 20)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state as u8
        })
        .collect();
    std::fs::write(&file, &bytes).unwrap();
    drop(bytes);
    let downloads = dir.path().join("got");
    std::fs::create_dir(&downloads).unwrap();

    let mut lab = Lab::with_links(links);
    let first = lab.add_site(1, Nat::PortRestricted, 1, false);
    let second = lab.add_site(2, Nat::PortRestricted, 1, false);
    let (_tracker, target) = start_tracker(&lab);
    let (mut h1, id1) = start_chat(&first.hosts[0], "h1", &target, &[]);
    h1.expect("joined", |e| e["room"] == "lab");
    let (mut h2, id2) = start_chat(&second.hosts[0], "h2", &target, &[]);
    let connected = h2.expect("connected", |e| e["peer_id"] == id1.as_str());
    assert_eq!(connected["path"], "direct", "{connected}");
    h1.expect("connected", |e| e["peer_id"] == id2.as_str());

    let idle: Vec<(f64, f64)> = (0..IDLE_SAMPLES)
        .map(|i| one_message(&mut h1, &h2, &format!("idle {i}")).expect("no transfer yet"))
        .collect();

    // h1 offers the file, h2 fetches it: the chunks flow h1 → h2, the
    // direction the messages go.
    h1.send(&format!("/send {}", file.display()));
    let offered = h2.expect("file_offered", |_| true);
    let hash = offered["hash"].as_str().unwrap().to_string();
    h2.send(&format!("/get {hash} {}", downloads.display()));
    // Measured once the transfer is under way (its window grown).
    h2.expect("transfer_progress", |e| {
        e["bytes"].as_u64().unwrap_or(0) >= 8 << 20
    });
    let started = Instant::now();
    let mut busy = Vec::new();
    let mut quic_rtts = Vec::new();
    for i in 0.. {
        match one_message(&mut h1, &h2, &format!("busy {i}")) {
            Some(sample) => busy.push(sample),
            None => break,
        }
        if i % 5 == 4 {
            // What the file's own packets see: QUIC's RTT on this connection.
            h1.send("/show");
            let gates = h1.expect("gates", |_| true);
            quic_rtts.push(gates["gates"][0]["rtt_ms"].as_f64().unwrap_or(f64::NAN));
        }
    }
    let busy_secs = started.elapsed().as_secs_f64();
    assert!(!busy.is_empty(), "the transfer ended before a message");
    let done = std::fs::read_dir(&downloads).unwrap().count();
    assert_eq!(done, 1, "the file arrived");

    let (idle_one_way, idle_ack): (Vec<f64>, Vec<f64>) = idle.into_iter().unzip();
    let (busy_one_way, busy_ack): (Vec<f64>, Vec<f64>) = busy.into_iter().unzip();
    eprintln!(
        "NATLAB-BUSY | {path} | idle: h1 → h2 {} | acknowledged {}",
        quantiles(idle_one_way),
        quantiles(idle_ack)
    );
    eprintln!(
        "NATLAB-BUSY | {path} | while {mib} MiB flow h1 → h2 ({busy_secs:.1} s of messages) | h1 → h2 {} | acknowledged {} | QUIC's RTT on the connection meanwhile {}",
        quantiles(busy_one_way),
        quantiles(busy_ack),
        quantiles(quic_rtts),
    );
}
