//! Errors the command line shows people: one line in words, never a debug
//! print of a Rust value, for every error path these tests reach — bad
//! arguments, damaged tickets, a port in use, a peer that is not who was
//! asked for, commands that cannot be done.

mod common;

use std::process::Command;

use common::process::Proc;

/// What no message for people may contain: debug prints of Rust values.
fn debug_print_in(message: &str) -> Option<&'static str> {
    const MARKS: &[&str] = &[
        "{",
        "}",
        "Some(",
        "None",
        "Err(",
        "Ok(",
        "::",
        "OtherError",
        "Kind(",
        "Os {",
        "Custom {",
        "UnexpectedEnd",
        "LimitExceeded",
        "Error {",
        "\\\"",
    ];
    MARKS
        .iter()
        .find(|mark| message.contains(**mark))
        .copied()
        .or_else(|| (message.matches("os error").count() > 1).then_some("os error twice"))
}

fn assert_for_people(what: &str, message: &str) {
    let message = message.trim();
    assert!(!message.is_empty(), "{what}: no message");
    if let Some(mark) = debug_print_in(message) {
        panic!("{what}: {mark:?} in {message:?}");
    }
}

/// Runs `punchgate ARGS` with a fresh data directory; its exit code and
/// the first paragraph of stderr (clap adds a usage hint after a blank line).
fn fails(args: &[&str]) -> (i32, String) {
    let home = tempfile::tempdir().unwrap();
    // Owner-only already: no warning about it before the error.
    std::fs::set_permissions(
        home.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o700),
    )
    .unwrap();
    let output = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // No multicast beacons from the host namespace.
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
        .arg("--home")
        .arg(home.path())
        .args(args)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    let first = stderr.split("\n\n").next().unwrap_or_default().to_string();
    (output.status.code().unwrap_or(-1), first)
}

/// A well-formed ticket; the errors it is used for come before its
/// tracker is contacted.
const VALID_TICKET: &str = "pgt1irzha5dlm43ww6lwobwxm4dhnbvw24trojsxe3rtojwwe2lyo5udk5tpmzxhgnzxnv4g6mtcpfwdk2rvmzswcqbrgi3s4mbogaxdcorugeydimxijpxxwqygi5fuuvuoc3rfm2si5kmytjx6qq2a7zytaeg5voucbafvyqksxmlmlbv2rxhgeuyfcmh2cbiogzgkyubwynm4t4rf5ygo2";

#[test]
fn argument_and_start_up_errors_are_one_line_in_words() {
    let busy = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = busy.local_addr().unwrap().to_string();
    let some_tracker = "cei47phg5demyvtk3cx6ajfoinf5rnhnldzcatic6at724bhlkwa@127.0.0.1:9";
    let cases: Vec<(&str, Vec<&str>)> = vec![
        ("a ticket cut short", vec!["get", "pgt1"]),
        ("a ticket cut shorter", vec!["get", "pgt1irzha5dlm43ww6lwo"]),
        ("a ticket of another program", vec!["get", "hello"]),
        (
            "a peer id with a typo",
            vec![
                "chat",
                "--connect",
                "cei47phg5demyvtk3cx6ajfoinf5rnhnldzcatic6at724bhlkwb@127.0.0.1:9",
            ],
        ),
        (
            "a tracker without a port",
            vec!["chat", "--tracker", "127.0.0.1"],
        ),
        ("a port in use (chat)", vec!["chat", "--bind", &busy]),
        (
            "a port in use (tracker)",
            vec!["tracker", "--listen", &busy],
        ),
        (
            "a name with a control character",
            vec!["chat", "--bind", "127.0.0.1:0", "--name", "a\u{7}b"],
        ),
        (
            "a nonsense timeout",
            vec!["get", "--punch-timeout", "-3", "pgt1"],
        ),
        (
            "a file as the output folder",
            vec!["get", VALID_TICKET, "-o", "/etc/passwd"],
        ),
        (
            "a file that is not there",
            vec![
                "send",
                "/nonexistent/punchgate-test",
                "--tracker",
                some_tracker,
            ],
        ),
    ];
    for (what, args) in cases {
        let (code, message) = fails(&args);
        assert_ne!(code, 0, "{what}: exit code 0 ({message})");
        assert_for_people(what, &message);
    }
    // The output folder is checked before anything connects.
    let (_, message) = fails(&["get", VALID_TICKET, "-o", "/etc/passwd"]);
    assert!(message.contains("is not a folder"), "{message}");
}

#[test]
fn errors_shown_while_chatting_are_words() {
    let bob = Proc::start(&[
        "chat",
        "--bind",
        "127.0.0.1:0",
        "--name",
        "bob",
        "--room",
        "r",
    ]);
    let bob_addr = bob.expect("ready", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let mut alice = Proc::start(&[
        "chat",
        "--bind",
        "127.0.0.1:0",
        "--name",
        "alice",
        "--room",
        "r",
    ]);
    alice.expect("ready", |_| true);
    let impostor = "cei47phg5demyvtk3cx6ajfoinf5rnhnldzcatic6at724bhlkwa";
    for line in [
        format!("/connect {impostor}@{bob_addr}"),
        "/get nothing-like-it".to_string(),
        "/frobnicate".to_string(),
        "/join @private".to_string(),
        "/msg nobody hello".to_string(),
    ] {
        alice.send(&line);
        let error = alice.expect("error", |_| true);
        let message = error["message"].as_str().unwrap().to_string();
        assert_for_people(&line, &message);
        assert_eq!(message.lines().count(), 1, "{line}: {message}");
    }
}

/// `--connect HOST:PORT` at start, where the data directory remembers
/// another key for that address (`known_peers`): the chat stops with one
/// line saying what to do, and a non-zero exit, instead of carrying on.
#[test]
fn a_connect_whose_peer_key_changed_stops_the_chat_with_what_to_do() {
    let bob = Proc::start(&["chat", "--bind", "127.0.0.1:0", "--name", "bob"]);
    let bob_addr = bob.expect("ready", |_| true)["addr"]
        .as_str()
        .unwrap()
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let owner_only = |path: &std::path::Path, mode| {
        std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap()
    };
    owner_only(home.path(), 0o700);
    // Remembered from an earlier run: someone else's key at Bob's address.
    let remembered = "cei47phg5demyvtk3cx6ajfoinf5rnhnldzcatic6at724bhlkwa";
    let known = home.path().join("known_peers");
    std::fs::write(&known, format!("{bob_addr} {remembered}\n")).unwrap();
    owner_only(&known, 0o600);
    let mut alice = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .arg("--home")
        .arg(home.path())
        .args(["chat", "--bind", "127.0.0.1:0", "--name", "alice"])
        .args(["--connect", &bob_addr])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Input stays open: only the refusal may end the chat.
    let _input = alice.stdin.take();
    let pid = alice.id();
    let (done, ended) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let _ = done.send(alice.wait_with_output());
    });
    let output = match ended.recv_timeout(common::process::PROC_WAIT) {
        Ok(output) => output.unwrap(),
        Err(_) => {
            let _ = Command::new("kill").arg(pid.to_string()).status();
            panic!("the chat carried on with a peer whose key changed");
        }
    };
    assert_ne!(output.status.code(), Some(0), "{output:?}");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let last = stderr.lines().last().unwrap_or_default();
    assert!(
        last.starts_with("punchgate: ") && last.contains("KEY CHANGED"),
        "{stderr}"
    );
    assert!(last.contains("delete its line from"), "{last}");
    assert_for_people("a changed key at --connect", last);
    // Nothing was remembered over the old key.
    assert_eq!(
        std::fs::read_to_string(&known).unwrap(),
        format!("{bob_addr} {remembered}\n")
    );
}
