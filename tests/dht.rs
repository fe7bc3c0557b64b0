//! Peers on different trackers reach each other by peer id alone: each
//! publishes where it can be reached on the DHT, and the other is
//! introduced through the peer's own tracker (as a guest there). The DHT is
//! a network of local nodes on 127.0.0.1 (`mainline::Testnet`), named to
//! every node with `PUNCHGATE_DHT_BOOTSTRAP`: nothing leaves loopback and no
//! name is resolved.

mod common;

use std::time::{Duration, Instant};

use common::process::Proc;
use serde_json::Value;

/// A DHT of local nodes on 127.0.0.1, and the environment that points a
/// node at it (the DHT is off in tests unless a test says so).
fn local_dht() -> (mainline::Testnet, String) {
    let testnet = mainline::Testnet::builder(8).build().unwrap();
    let bootstrap = testnet.bootstrap.join(",");
    assert!(
        testnet
            .bootstrap
            .iter()
            .all(|node| node.starts_with("127.0.0.1:")),
        "{bootstrap}"
    );
    (testnet, bootstrap)
}

fn tracker() -> (Proc, String) {
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    (tracker, target)
}

/// The environment that points a node at the local DHT.
fn dht_env(bootstrap: &str) -> [(&'static str, &str); 2] {
    [
        ("PUNCHGATE_NO_DHT", "false"),
        ("PUNCHGATE_DHT_BOOTSTRAP", bootstrap),
    ]
}

/// `punchgate chat` on `tracker` in `room`, on the local DHT.
fn chat(bootstrap: &str, tracker: &str, name: &str, room: &str, extra: &[&str]) -> (Proc, String) {
    let mut args = vec![
        "chat",
        "--tracker",
        tracker,
        "--name",
        name,
        "--room",
        room,
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let proc = Proc::start_with_env(None, &args, &dht_env(bootstrap));
    let id = proc.expect("ready", |_| true)["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    (proc, id)
}

fn is<'a>(field: &'static str, value: &'a str) -> impl Fn(&Value) -> bool + 'a {
    move |event: &Value| event[field] == value
}

#[test]
fn tests_run_with_the_dht_off_unless_they_name_their_own() {
    // .cargo/config.toml sets it for every process cargo runs: a node a
    // test starts never joins the public DHT through its DNS-named
    // bootstrap nodes by default.
    assert_eq!(std::env::var("PUNCHGATE_NO_DHT").as_deref(), Ok("true"));
}

#[test]
fn a_peer_on_another_tracker_is_reached_by_its_id_alone_and_they_chat() {
    let (_dht, bootstrap) = local_dht();
    let (_tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (mut alice, alice_id) = chat(&bootstrap, &target1, "alice", "alices-room", &[]);
    alice.expect("dht", |e| e["state"] == "published" && e["trackers"] == 1);

    // Bob is registered with tracker 2 only and shares no room with
    // Alice: her id is all he has.
    let (mut bob, bob_id) = chat(
        &bootstrap,
        &target2,
        "bob",
        "bobs-room",
        &["--connect", &alice_id],
    );
    bob.expect("connected", is("peer_id", &alice_id));
    alice.expect("connected", is("peer_id", &bob_id));
    bob.send(&format!("/msg {alice_id} hello alice"));
    alice.expect("message", is("text", "hello alice"));
    alice.send(&format!("/msg {bob_id} hello bob"));
    bob.expect("message", is("text", "hello bob"));

    // Erin, on tracker 2 and relayed only, reaches Alice through the
    // relay of Alice's tracker, where she is only a guest.
    let (mut erin, erin_id) = chat(
        &bootstrap,
        &target2,
        "erin",
        "erins-room",
        &["--relay-only", "--connect", &alice_id],
    );
    erin.expect("connected", |e| {
        e["peer_id"] == alice_id && e["path"] == "relay"
    });
    erin.send(&format!("/msg {alice_id} relayed hello"));
    alice.expect("message", is("text", "relayed hello"));
    alice.send(&format!("/msg {erin_id} relayed back"));
    erin.expect("message", is("text", "relayed back"));

    // Frank has no tracker at all: Alice's id is enough, through her
    // record and her tracker.
    let mut frank = Proc::start_with_env(
        None,
        &["chat", "--name", "frank", "--bind", "127.0.0.1:0"],
        &dht_env(&bootstrap),
    );
    frank.expect("ready", |_| true);
    frank.send(&format!("/connect {alice_id}"));
    frank.expect("connected", is("peer_id", &alice_id));
    frank.send(&format!("/msg {alice_id} from nowhere"));
    alice.expect("message", is("text", "from nowhere"));

    // Carol, on Alice's own tracker in another room, asks by id too
    // (/connect): introduced there as a member, no guest session needed.
    let (mut carol, carol_id) = chat(&bootstrap, &target1, "carol", "carols-room", &[]);
    carol.send(&format!("/connect {alice_id}"));
    carol.expect("connected", is("peer_id", &alice_id));
    alice.expect("connected", is("peer_id", &carol_id));

    // Dave runs without the DHT: he publishes nothing, so his id alone
    // leads nowhere, and the error says what to do.
    let (_dave, dave_id) = chat(&bootstrap, &target1, "dave", "daves-room", &["--no-dht"]);
    bob.send(&format!("/connect {dave_id}"));
    let error = bob.expect("error", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("no DHT record"))
    });
    assert!(
        error["message"]
            .as_str()
            .unwrap()
            .contains("PEERID@HOST:PORT"),
        "{error}"
    );
}

#[test]
fn a_peer_that_moves_to_another_tracker_is_found_again_within_a_minute() {
    let (_dht, bootstrap) = local_dht();
    let (tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (_tracker3, target3) = tracker();
    let home = tempfile::tempdir().unwrap();
    let fast = ["--keep-alive", "1", "--idle-timeout", "3"];
    let alice_on = |target: &str| {
        let mut args = vec!["chat", "--tracker", target, "--name", "alice"];
        args.extend(["--room", "alices-room", "--bind", "127.0.0.1:0"]);
        args.extend(fast);
        let alice = Proc::start_with_home_env(home.path(), &args, &dht_env(&bootstrap));
        alice.expect("dht", |e| e["state"] == "published" && e["trackers"] == 1);
        alice
    };
    let alice = alice_on(&target1);
    let alice_id = alice_id_of(home.path());
    let mut extra = vec!["--connect", alice_id.as_str()];
    extra.extend(fast);
    let (bob, _) = chat(&bootstrap, &target2, "bob", "bobs-room", &extra);
    bob.expect("connected", is("peer_id", &alice_id));

    // Alice's tracker dies, and Alice with it; she comes back registered
    // with tracker 3 only. Bob knew only tracker 1 for her: he finds her
    // again through her new record.
    tracker1.kill();
    alice.kill();
    let moved = Instant::now();
    let _alice = alice_on(&target3);
    bob.expect("disconnected", is("peer_id", &alice_id));
    let found = bob.expect_within(
        Duration::from_secs(60),
        "connected",
        is("peer_id", &alice_id),
    );
    assert!(
        found.is_some(),
        "bob did not find alice again within a minute"
    );
    eprintln!(
        "DHT | found again through the new record {} ms after the move",
        moved.elapsed().as_millis()
    );
}

/// The peer id of the identity in the data directory `home`.
fn alice_id_of(home: &std::path::Path) -> String {
    punchgate::identity::Identity::load_or_create(home)
        .unwrap()
        .peer_id()
        .to_string()
}
