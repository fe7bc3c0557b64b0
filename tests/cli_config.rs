//! What a user sets once: the config file's defaults (and their errors),
//! `PUNCHGATE_TRACKER` for chat, and shell completions.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};

use common::process::Proc;
use serde_json::Value;

/// `punchgate ARGS` with stdin closed; its JSON events and exit status.
fn run(home: &std::path::Path, envs: &[(&str, &str)], args: &[&str]) -> (Vec<Value>, String, bool) {
    let child = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // No multicast beacons from the host namespace.
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("PUNCHGATE_TRACKER")
        .env_remove("PUNCHGATE_CONFIG")
        .envs(envs.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let output = child.wait_with_output().unwrap();
    let events = BufReader::new(&output.stdout[..])
        .lines()
        .map_while(Result::ok)
        .filter_map(|line| serde_json::from_str(&line).ok())
        .collect();
    let stderr = String::from_utf8_lossy(&output.stderr).into_owned();
    (events, stderr, output.status.success())
}

#[test]
fn the_config_file_gives_chat_its_name_and_rooms_and_the_command_line_wins() {
    let home = tempfile::tempdir().unwrap();
    let file = home.path().join("config.toml");
    std::fs::write(
        &file,
        "name = \"carol\"\nbind = \"127.0.0.1:0\"\n[chat]\nroom = [\"attic\", \"cellar\"]\nhistory-lines = 0\n",
    )
    .unwrap();
    let config = file.to_str().unwrap();
    let (events, stderr, ok) = run(home.path(), &[], &["--config", config, "--json", "chat"]);
    assert!(ok, "{stderr}");
    assert_eq!(events[0]["name"], "carol", "{events:?}");
    let joined: Vec<&str> = events
        .iter()
        .filter(|e| e["event"] == "joined")
        .filter_map(|e| e["room"].as_str())
        .collect();
    assert_eq!(joined, ["attic", "cellar"]);

    let (events, stderr, ok) = run(
        home.path(),
        &[("PUNCHGATE_CONFIG", config)],
        &["--json", "chat", "--name", "dave", "--room", "hall"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(events[0]["name"], "dave");
    assert!(events.iter().all(|e| e["room"] != "attic"), "{events:?}");
}

#[test]
fn a_config_file_that_cannot_be_used_is_one_line_before_anything_starts() {
    let home = tempfile::tempdir().unwrap();
    let missing = home.path().join("nope.toml");
    let bad = home.path().join("bad.toml");
    std::fs::write(&bad, "[chat]\nrooms = [\"x\"]\n").unwrap();
    for (file, expect) in [
        (&missing, "cannot read the config file"),
        (&bad, "[chat] has no flag --rooms"),
    ] {
        let (events, stderr, ok) = run(
            home.path(),
            &[],
            &["--config", file.to_str().unwrap(), "--json", "chat"],
        );
        assert!(!ok);
        assert!(events.is_empty(), "started anyway: {events:?}");
        assert!(stderr.contains(expect), "{stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    }
}

#[test]
fn chat_takes_its_tracker_from_punchgate_tracker_as_send_does() {
    // Any free aux port too: port + 1 may be taken by another test.
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0", "--aux-port", "0"]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    let home = tempfile::tempdir().unwrap();
    let (events, stderr, ok) = run(
        home.path(),
        &[("PUNCHGATE_TRACKER", &target)],
        &["--json", "chat", "--bind", "127.0.0.1:0"],
    );
    assert!(ok, "{stderr}");
    assert_eq!(events[0]["tracker"], target.as_str(), "{events:?}");
}

#[test]
fn completions_are_printed_for_each_shell() {
    let home = tempfile::tempdir().unwrap();
    for shell in ["bash", "zsh", "fish"] {
        let output = Command::new(env!("CARGO_BIN_EXE_punchgate"))
            // No multicast beacons from the host namespace.
            .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
            .env("PUNCHGATE_NO_PORT_MAPPING", "true")
            .arg("--home")
            .arg(home.path())
            .args(["completions", shell])
            .output()
            .unwrap();
        assert!(output.status.success(), "{shell}");
        let script = String::from_utf8(output.stdout).unwrap();
        assert!(script.contains("history-lines"), "{shell}: {script}");
    }
    let output = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // No multicast beacons from the host namespace.
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
        .args(["completions", "tcsh"])
        .output()
        .unwrap();
    assert!(!output.status.success());
}
