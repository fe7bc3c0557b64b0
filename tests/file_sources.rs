//! Issue 11's `get` whose source died, through real processes and a
//! tracker: the sender SIGKILLed mid-transfer is reported gone within 15 s,
//! the verified chunks are kept, and the get finishes from another holder
//! of the same content, or from the sender when it comes back.

mod common;

use std::time::{Duration, Instant};

use common::pattern;
use common::process::{serve, Proc};
use punchgate::transfer::Ticket;

/// Issues 11 and 14: a `get` whose sender is SIGKILLed mid-transfer says so
/// within seconds (its connection falls silent for longer than a live
/// peer's keep-alive), keeps what it verified,
/// waits, and finishes from another holder of the same content that shows
/// up later.
#[test]
fn a_get_whose_sender_is_killed_says_so_and_finishes_from_another_holder() {
    const CHUNK: &str = "32768";
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("album.bin");
    let bytes = pattern(4 * 1024 * 1024 + 321, 9);
    std::fs::write(&file, &bytes).unwrap();
    let out = work.path().join("out");
    // The sender paces itself so the kill lands mid-transfer.
    let (_tracker, sender, ticket) = serve(&file, &["--chunk-size", CHUNK, "--max-rate", "500000"]);
    let parsed: Ticket = ticket.parse().unwrap();
    let get = Proc::start(&[
        "get",
        &ticket,
        "-o",
        out.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    let total = bytes.len() as u64;
    get.expect("transfer_progress", |e| {
        e["bytes"].as_u64().is_some_and(|b| b > 0)
    });

    let killed_at = Instant::now();
    sender.kill();
    let limit = Duration::from_secs(15);
    let gone = get
        .expect_within(limit, "transfer_source", |e| {
            e["state"] == "lost" && e["sources"] == 0
        })
        .unwrap_or_else(|| panic!("no word of the dead sender within {limit:?} of the kill"));
    println!(
        "the getter reported the sender gone {:?} after the kill: {gone}",
        killed_at.elapsed()
    );
    assert_eq!(gone["peer_id"], parsed.sender.to_string());
    // Noticed by the silence of its connection (a few seconds), not by the
    // connection's idle timeout.
    assert!(
        gone["reason"]
            .as_str()
            .is_some_and(|r| r.contains("sent nothing for")),
        "{gone}"
    );
    let kept = gone["bytes"].as_u64().unwrap();
    assert!(kept < total, "the kill landed mid-transfer");
    assert!(
        !out.join("album.bin").exists(),
        "no half file under its name"
    );

    // Another holder of the same bytes appears; the get goes on from it.
    let copy_dir = tempfile::tempdir().unwrap();
    let copy = copy_dir.path().join("album.bin");
    std::fs::copy(&file, &copy).unwrap();
    let holder = Proc::start(&[
        "send",
        copy.to_str().unwrap(),
        "--tracker",
        &parsed.tracker.to_string(),
        "--bind",
        "127.0.0.1:0",
        "--chunk-size",
        CHUNK,
    ]);
    let holder_ticket: Ticket = holder.expect("ticket", |_| true)["ticket"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert_eq!(holder_ticket.content, parsed.content, "the same content");
    let added = get.expect("transfer_source", |e| e["state"] == "added");
    assert_eq!(added["peer_id"], holder_ticket.sender.to_string());
    let done = get.expect("transfer_done", |_| true);
    assert_eq!(std::fs::read(out.join("album.bin")).unwrap(), bytes);
    assert!(
        done["chunks_resumed"].as_u64().unwrap() == 0,
        "one run: nothing to resume"
    );
    let from_holder = done["sources"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["peer_id"] == holder_ticket.sender.to_string())
        .and_then(|s| s["chunks"].as_u64())
        .unwrap();
    assert!(from_holder > 0, "the holder served the rest: {done}");
    assert!(
        from_holder < done["chunks"].as_u64().unwrap(),
        "what the dead sender delivered was kept: {done}"
    );
    get.finish();
}

/// The other half of issue 11's get: the killed sender itself comes back
/// (same data directory, same id) and the waiting get finishes from it.
#[test]
fn a_get_whose_sender_is_killed_finishes_when_the_sender_comes_back() {
    const CHUNK: &str = "32768";
    let work = tempfile::tempdir().unwrap();
    let file = work.path().join("back.bin");
    let bytes = pattern(2 * 1024 * 1024 + 99, 10);
    std::fs::write(&file, &bytes).unwrap();
    let out = work.path().join("out");
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let send = |rate: &str| {
        Proc::start_with_home(
            home.path(),
            None,
            &[
                "send",
                file.to_str().unwrap(),
                "--tracker",
                &target,
                "--bind",
                "127.0.0.1:0",
                "--chunk-size",
                CHUNK,
                "--max-rate",
                rate,
            ],
        )
    };
    let sender = send("300000");
    let ticket = sender.expect("ticket", |_| true)["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    let parsed: Ticket = ticket.parse().unwrap();
    let get = Proc::start(&[
        "get",
        &ticket,
        "-o",
        out.to_str().unwrap(),
        "--bind",
        "127.0.0.1:0",
    ]);
    get.expect("transfer_progress", |e| {
        e["bytes"].as_u64().is_some_and(|b| b > 0)
    });
    sender.kill();
    get.expect("transfer_source", |e| {
        e["state"] == "lost" && e["sources"] == 0
    });

    let _back = send("100000000");
    let added = get.expect("transfer_source", |e| e["state"] == "added");
    assert_eq!(added["peer_id"], parsed.sender.to_string());
    get.expect("transfer_done", |_| true);
    assert_eq!(std::fs::read(out.join("back.bin")).unwrap(), bytes);
    get.finish();
}
