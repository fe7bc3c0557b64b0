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

    // Bob's and Frank's guest sessions with Alice's tracker served their
    // purpose (their connections are direct): they are closed, and the
    // connections stay.
    let tracker1_id = target1.split('@').next().unwrap();
    let closed = |e: &Value| e["state"] == "closed" && e["tracker_id"] == tracker1_id;
    bob.expect("tracker", closed);
    frank.expect("tracker", closed);
    alice.send(&format!("/msg {bob_id} still here"));
    bob.expect("message", is("text", "still here"));
}

#[test]
fn a_peer_that_moves_to_another_tracker_is_found_again_within_a_minute() {
    let (_dht, bootstrap) = local_dht();
    let (tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (_tracker3, target3) = tracker();
    let home = tempfile::tempdir().unwrap();
    let published = |e: &Value| e["state"] == "published" && e["trackers"] == 1;
    let alice_on = |target: &str| {
        let alice = alice_in(home.path(), &bootstrap, target, "alices-room");
        alice.expect("dht", published);
        alice
    };
    let alice = alice_on(&target1);
    let alice_id = alice_id_of(home.path());
    let mut extra = vec!["--connect", alice_id.as_str()];
    extra.extend(FAST);
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
    found_within_a_minute(&bob, &alice_id, moved, "found again through the new record");
}

#[test]
fn members_of_one_room_on_different_trackers_meet_through_the_dht_and_chat() {
    let (_dht, bootstrap) = local_dht();
    let (_tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (mut alice, alice_id) = chat(&bootstrap, &target1, "alice", "lobby", &[]);
    alice.expect("dht_room", |e| {
        e["room"] == "lobby" && e["state"] == "announced"
    });
    // Bob's tracker has never heard of Alice: the room's records on the
    // DHT name her, her own record names her tracker.
    let (mut bob, bob_id) = chat(&bootstrap, &target2, "bob", "lobby", &[]);
    bob.expect("dht_room", |e| {
        e["room"] == "lobby" && e["state"] == "found" && e["members"] == 1
    });
    bob.expect("connected", is("peer_id", &alice_id));
    alice.expect("connected", is("peer_id", &bob_id));
    bob.send("hello lobby");
    let heard = alice.expect("message", is("text", "hello lobby"));
    assert_eq!(heard["room"], "lobby");
    alice.send("hello bob");
    bob.expect("message", is("text", "hello bob"));

    // Bob leaves: his entry leaves the room's records, so Carol, joining
    // on his tracker, finds Alice alone there.
    bob.send("/leave lobby");
    bob.expect("dht_room", |e| {
        e["room"] == "lobby" && e["state"] == "withdrawn"
    });
    let (carol, _) = chat(&bootstrap, &target2, "carol", "lobby", &[]);
    carol.expect("dht_room", |e| {
        e["room"] == "lobby" && e["state"] == "found" && e["members"] == 1
    });
    carol.expect("connected", is("peer_id", &alice_id));
}

#[test]
fn a_password_room_on_the_dht_is_found_only_with_its_password() {
    let (_dht, bootstrap) = local_dht();
    let (_tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (_tracker3, target3) = tracker();
    let password = [("PUNCHGATE_PASSWORD", "correct horse")];
    let in_vault = |target: &str, name: &str, with_password: bool| {
        let args = [
            "chat",
            "--tracker",
            target,
            "--name",
            name,
            "--room",
            "vault",
            "--bind",
            "127.0.0.1:0",
        ];
        let mut env = dht_env(&bootstrap).to_vec();
        if with_password {
            env.extend(password);
        }
        let proc = Proc::start_with_env(None, &args, &env);
        let id = proc.expect("ready", |_| true)["peer_id"]
            .as_str()
            .unwrap()
            .to_string();
        (proc, id)
    };
    let (carol, carol_id) = in_vault(&target1, "carol", true);
    carol.expect("dht_room", |e| e["state"] == "announced");
    let (mut dave, dave_id) = in_vault(&target2, "dave", true);
    // Both, in either order: Dave meets Carol, and is announced himself.
    let (mut connected, mut announced) = (false, false);
    while !(connected && announced) {
        let seen = dave.first(Duration::from_secs(30), |e| {
            if e["event"] == "connected" && e["peer_id"] == carol_id {
                Some("connected")
            } else if e["event"] == "dht_room" && e["state"] == "announced" {
                Some("announced")
            } else {
                None
            }
        });
        match seen.expect("dave neither met carol nor was announced") {
            "connected" => connected = true,
            _ => announced = true,
        }
    }
    carol.expect("connected", is("peer_id", &dave_id));
    dave.send("only for the vault");
    carol.expect("message", is("text", "only for the vault"));

    // Erin knows the room's name, not its password: under that name alone
    // the DHT lists nobody, so she meets neither.
    let (erin, _) = in_vault(&target3, "erin", false);
    let met = erin.first(Duration::from_secs(60), |e| {
        let connected =
            e["event"] == "connected" && (e["peer_id"] == carol_id || e["peer_id"] == dave_id);
        let looked = e["event"] == "dht_room" && e["state"] == "found";
        (connected || looked).then(|| e.clone())
    });
    let met = met.expect("erin's lookup of the room never ended");
    assert_eq!(met["event"], "dht_room", "{met}");
    assert_eq!(met["members"], 0, "{met}");
    erin.finish();

    // Frank, on the same third tracker, has the password: he finds them.
    let (mut frank, _) = in_vault(&target3, "frank", true);
    frank.expect("dht_room", |e| {
        e["state"] == "found" && e["members"].as_u64().is_some_and(|n| n >= 1)
    });
    frank.expect("connected", |e| {
        e["peer_id"] == carol_id || e["peer_id"] == dave_id
    });
    frank.send("frank is in");
    carol.expect("message", is("text", "frank is in"));
    dave.expect("message", is("text", "frank is in"));
}

#[test]
fn a_room_member_whose_tracker_dies_is_found_again_in_the_rooms_records_within_a_minute() {
    let (_dht, bootstrap) = local_dht();
    let (tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (_tracker3, target3) = tracker();
    let home = tempfile::tempdir().unwrap();
    let alice_on = |target: &str| {
        let alice = alice_in(home.path(), &bootstrap, target, "lobby");
        alice.expect("dht_room", |e| e["state"] == "announced");
        alice
    };
    let alice = alice_on(&target1);
    let alice_id = alice_id_of(home.path());
    let (mut bob, _) = chat(&bootstrap, &target2, "bob", "lobby", &FAST);
    bob.expect("connected", is("peer_id", &alice_id));

    // Alice's tracker dies, and Alice with it; she comes back on tracker
    // 3. Neither tracker Bob knows lists her: the room's records and her
    // new record bring them together again.
    tracker1.kill();
    alice.kill();
    let moved = Instant::now();
    let alice = alice_on(&target3);
    found_within_a_minute(&bob, &alice_id, moved, "room member found again");
    bob.send("welcome back");
    alice.expect("message", is("text", "welcome back"));
}

#[test]
fn a_peer_registered_with_two_trackers_is_found_by_id_within_a_minute_after_one_dies() {
    let (_dht, bootstrap) = local_dht();
    let (tracker1, target1) = tracker();
    let (_tracker2, target2) = tracker();
    let (_tracker3, target3) = tracker();
    let mut extra = vec!["--tracker", target2.as_str()];
    extra.extend(FAST);
    let (alice, alice_id) = chat(&bootstrap, &target1, "alice", "alices-room", &extra);
    alice.expect("dht", |e| e["state"] == "published" && e["trackers"] == 2);

    // Tracker 1 dies; Bob, on a third tracker, asks for Alice by id at
    // once, while her record may still list the dead tracker first.
    tracker1.kill();
    let killed = Instant::now();
    let mut extra = vec!["--connect", alice_id.as_str()];
    extra.extend(FAST);
    let (bob, _) = chat(&bootstrap, &target3, "bob", "bobs-room", &extra);
    found_within_a_minute(
        &bob,
        &alice_id,
        killed,
        "reached through the tracker left after the other died",
    );
    // Her record no longer lists the dead tracker.
    alice.expect("dht", |e| e["state"] == "published" && e["trackers"] == 1);
    // Bob stops trying the dead tracker once nothing needs it.
    let tracker1_id = target1.split('@').next().unwrap();
    bob.expect("tracker", |e| {
        e["state"] == "closed" && e["tracker_id"] == tracker1_id
    });
}

/// Keep-alive and idle timeout short enough that a dead tracker or peer is
/// noticed within seconds.
const FAST: [&str; 4] = ["--keep-alive", "1", "--idle-timeout", "3"];

/// Alice, chatting in `room` with her data directory `home` (so she keeps
/// her identity across restarts), registered with `tracker` only.
fn alice_in(home: &std::path::Path, bootstrap: &str, tracker: &str, room: &str) -> Proc {
    let mut args = vec!["chat", "--tracker", tracker, "--name", "alice"];
    args.extend(["--room", room, "--bind", "127.0.0.1:0"]);
    args.extend(FAST);
    Proc::start_with_home_env(home, &args, &dht_env(bootstrap))
}

/// Waits up to a minute for `bob` to connect to `alice_id`, and prints how
/// long it took since `since`.
fn found_within_a_minute(bob: &Proc, alice_id: &str, since: Instant, what: &str) {
    let found = bob.expect_within(
        Duration::from_secs(60),
        "connected",
        is("peer_id", alice_id),
    );
    assert!(found.is_some(), "bob did not reach alice within a minute");
    eprintln!("DHT | {what}: {} ms", since.elapsed().as_millis());
}

/// The peer id of the identity in the data directory `home`.
fn alice_id_of(home: &std::path::Path) -> String {
    punchgate::identity::Identity::load_or_create(home)
        .unwrap()
        .peer_id()
        .to_string()
}
