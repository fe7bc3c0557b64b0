//! The chat REPL as a person uses it, on a pseudo-terminal: the history of
//! each room on start (authors by the names remembered from earlier runs),
//! notices when someone joins or leaves a room, the bell on a mention,
//! `/switch` to talk to one
//! peer privately and back, and connecting by `HOST PORT` with the peer's
//! key trusted on first use and a changed key refused. The other side is a
//! `--json` process, so what reached it is checked exactly.
#![cfg(unix)]

mod common;

use common::process::Proc;
use common::pty::Pty;

/// `PEERID` and `ADDR` from the `you are NAME (PEERID) on ADDR` line.
fn who(pty: &mut Pty) -> (String, String) {
    pty.expect("you are ");
    let line = pty.expect("\n");
    let (_, rest) = line.split_once('(').unwrap();
    let (id, rest) = rest.split_once(") on ").unwrap();
    (id.to_string(), rest.trim().to_string())
}

#[test]
fn history_on_start_names_from_earlier_runs_join_leave_notices_and_switch() {
    let alice_home = tempfile::tempdir().unwrap();
    let chat = ["chat", "--name", "alice", "--bind", "127.0.0.1:0"];
    let mut alice = Pty::start(alice_home.path(), &chat);
    let (alice_id, alice_addr) = who(&mut alice);
    alice.expect("> ");

    let target = format!("{alice_id}@{alice_addr}");
    let mut bob = Proc::start(&[
        "chat",
        "--name",
        "bob",
        "--room",
        "elsewhere",
        "--connect",
        &target,
    ]);
    let bob_id = bob.expect("ready", |_| true)["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let bob_tag = format!("bob~{}", &bob_id[..6]);
    alice.expect("connected to bob");

    // Joins and leaves of rooms alice is in are told; others are not.
    bob.send("/join lobby");
    alice.expect(&format!("* {bob_tag} joined #lobby"));
    bob.send("/leave lobby");
    alice.expect(&format!("* {bob_tag} left #lobby"));
    bob.send("/join lobby");
    alice.expect(&format!("* {bob_tag} joined #lobby"));
    assert!(!alice.screen().contains("#elsewhere"), "{}", alice.screen());

    // /switch: plain lines go privately to bob until /switch alone.
    alice.type_line("/switch bob");
    alice.expect("talking privately to bob");
    alice.expect(&format!("@{bob_tag}> "));
    alice.type_line("just between us");
    let private = bob.expect("message", |e| e["text"] == "just between us");
    assert!(
        private["room"].as_str().unwrap().starts_with('@'),
        "{private}"
    );
    alice.type_line("/switch");
    alice.expect("back to #lobby");
    alice.type_line("hello everyone");
    let public = bob.expect("message", |e| e["text"] == "hello everyone");
    assert_eq!(public["room"], "lobby");
    bob.send("remember me, said bob");
    alice.expect("remember me, said bob");
    // A message naming alice rings her terminal's bell; the others did not.
    assert_eq!(alice.bells(), 0);
    bob.send("are you there, Alice?");
    alice.expect("are you there, Alice?");
    assert_eq!(alice.bells(), 1);

    // /connect to a peer already connected says so.
    alice.type_line("/connect bob");
    alice.expect("already connected to bob");

    // Restarted alone, alice sees the lobby's last messages, bob by name.
    bob.finish();
    alice.quit();
    let mut alice = Pty::start(
        alice_home.path(),
        &[&chat[..], &["--history-lines", "2"]].concat(),
    );
    let shown = alice.expect("are you there, Alice?");
    assert!(shown.contains("remember me, said bob"), "{shown}");
    assert!(!shown.contains("hello everyone"), "more than 2: {shown}");
    assert!(shown.contains(&bob_tag), "bob not named: {shown}");
    alice.expect("> ");
    assert_eq!(alice.bells(), 0, "history rang the bell");
    alice.quit();
    // --history-lines 0 shows none.
    let mut alice = Pty::start(
        alice_home.path(),
        &[&chat[..], &["--history-lines", "0"]].concat(),
    );
    alice.expect("type /help");
    alice.type_line("/info");
    let help = alice.expect("/exit");
    assert!(help.contains("/switch"), "{help}");
    alice.quit();
}

#[test]
fn connect_by_host_and_port_trusts_on_first_use_and_refuses_a_changed_key() {
    let bob_home = tempfile::tempdir().unwrap();
    let bob = Proc::start_with_home(
        bob_home.path(),
        None,
        &["chat", "--name", "bob", "--bind", "127.0.0.1:0"],
    );
    let ready = bob.expect("ready", |_| true);
    let bob_id = ready["peer_id"].as_str().unwrap().to_string();
    let addr = ready["addr"].as_str().unwrap().to_string();
    let (host, port) = addr.rsplit_once(':').unwrap();

    let alice_home = tempfile::tempdir().unwrap();
    let chat = ["chat", "--name", "alice", "--bind", "127.0.0.1:0"];
    let mut alice = Pty::start(alice_home.path(), &chat);
    alice.expect("> ");
    alice.type_line(&format!("/connect {host} {port}"));
    let trusted = alice.expect("trusted on first use");
    assert!(trusted.contains(&addr), "{trusted}");
    let fingerprint = format!("{} {}", &bob_id[..4], &bob_id[4..8]);
    alice.expect(&format!("fingerprint {fingerprint}"));
    alice.expect("connected to bob");
    let known = std::fs::read_to_string(alice_home.path().join("known_peers")).unwrap();
    assert_eq!(known, format!("{addr} {bob_id}\n"));
    // Again: known, so no second notice, and it says it is connected.
    alice.type_line(&format!("/connect {host} {port}"));
    alice.expect("already connected to bob");
    assert_eq!(alice.screen().matches("trusted on first use").count(), 1);
    alice.quit();
    bob.finish();

    // Someone else answers at bob's address: refused, loudly.
    let mallory_home = tempfile::tempdir().unwrap();
    let mallory = Proc::start_with_home(
        mallory_home.path(),
        None,
        &["chat", "--name", "bob", "--bind", &addr],
    );
    mallory.expect("ready", |_| true);
    let mut alice = Pty::start(
        alice_home.path(),
        &[&chat[..], &["--connect", &addr]].concat(),
    );
    alice.expect("PEER KEY CHANGED");
    alice.expect("known_peers");
    // Asked for at start: the chat ends there, non-zero.
    let status = alice.exit_status();
    assert!(!status.success(), "exit status {status}");
    // Asked for by /connect: refused the same way, and the chat goes on.
    let mut alice = Pty::start(alice_home.path(), &chat);
    alice.expect("> ");
    alice.type_line(&format!("/connect {host} {port}"));
    alice.expect("PEER KEY CHANGED");
    assert!(
        !alice.screen().contains("connected to bob"),
        "{}",
        alice.screen()
    );
    alice.quit();
}

#[test]
fn a_connect_target_without_a_port_fails_before_start() {
    let home = tempfile::tempdir().unwrap();
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // No multicast beacons from the host namespace.
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
        .arg("--home")
        .arg(home.path())
        .args(["chat", "--connect", "127.0.0.1"])
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(output.stdout.is_empty(), "started anyway");
}

/// A UDP port on loopback that was free a moment ago.
fn free_port() -> u16 {
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    socket.local_addr().unwrap().port()
}

/// Issue 14: bootstrap peers were tried once at start, never again.
#[test]
fn a_bootstrap_peer_not_up_yet_is_tried_again_until_it_answers() {
    let addr = format!("127.0.0.1:{}", free_port());
    let alice_home = tempfile::tempdir().unwrap();
    let alice_id = {
        let output = std::process::Command::new(env!("CARGO_BIN_EXE_punchgate"))
            // No multicast beacons from the host namespace.
            .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
            .env("PUNCHGATE_NO_PORT_MAPPING", "true")
            .arg("--home")
            .arg(alice_home.path())
            .arg("id")
            .output()
            .unwrap();
        String::from_utf8(output.stdout).unwrap().trim().to_string()
    };
    // One by address alone on the command line, one pinned in the
    // bootstrap file: both are the same absent peer.
    let bob_home = tempfile::tempdir().unwrap();
    std::fs::write(
        bob_home.path().join("bootstrap"),
        format!("{alice_id}@{addr} # alice\n"),
    )
    .unwrap();
    let bob = Proc::start_with_home(
        bob_home.path(),
        None,
        &["chat", "--name", "bob", "--connect", &addr],
    );
    bob.expect("error", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains(&addr) && m.contains("trying again in"))
    });
    let alice = Proc::start_with_home(
        alice_home.path(),
        None,
        &["chat", "--name", "alice", "--bind", &addr],
    );
    alice.expect("ready", |_| true);
    let connected = bob.expect("connected", |e| e["name"] == "alice");
    assert_eq!(connected["peer_id"], alice_id.as_str());
    alice.finish();
    bob.finish();
}
