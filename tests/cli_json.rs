//! The CLI contract: real `punchgate` processes driven only through stdin and
//! stdout JSON lines.

mod common;

use std::process::Command;

use common::process::Proc;

#[test]
fn two_nodes_chat_through_json_lines_only() {
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let ready = tracker.expect("ready", |_| true);
    let target = ready["target"].as_str().unwrap().to_string();
    assert!(target.ends_with(&ready["addr"].as_str().unwrap().to_string()));

    let chat = |name: &str| {
        Proc::start(&[
            "chat",
            "--tracker",
            &target,
            "--name",
            name,
            "--room",
            "r",
            "--bind",
            "127.0.0.1:0",
        ])
    };
    let mut alice = chat("alice");
    let alice_id = alice.expect("ready", |_| true)["peer_id"]
        .as_str()
        .unwrap()
        .to_string();
    let mut bob = chat("bob");
    let bob_id = bob.expect("ready", |_| true)["peer_id"]
        .as_str()
        .unwrap()
        .to_string();

    let connected = bob.expect("connected", |e| e["peer_id"] == alice_id.as_str());
    assert_eq!(connected["path"], "direct");
    assert!(connected["rtt_ms"].as_f64().is_some());
    alice.expect("connected", |e| e["peer_id"] == bob_id.as_str());

    alice.send("hello from alice");
    let message = bob.expect("message", |e| e["text"] == "hello from alice");
    assert_eq!(message["from"], alice_id.as_str());
    assert_eq!(message["from_name"], "alice");
    assert_eq!(message["room"], "r");
    assert!(message["ts"].as_u64().is_some() && message["id"].is_string());
    let id = message["id"].as_str().unwrap().to_string();
    alice.expect("delivered", |e| {
        e["id"] == id.as_str() && e["peer_id"] == bob_id.as_str()
    });

    bob.send("/peers");
    let peers = bob.expect("peers", |_| true);
    assert_eq!(peers["peers"][0]["name"], "alice");
    assert_eq!(peers["peers"][0]["status"], "connected");

    bob.send("/nonsense");
    assert!(bob.expect("error", |_| true)["message"]
        .as_str()
        .unwrap()
        .contains("/help"));

    bob.send("/quit");
    alice.expect("disconnected", |e| e["peer_id"] == bob_id.as_str());
    bob.finish();
    alice.finish();
}

#[test]
fn id_is_stable_for_a_data_directory() {
    let home = tempfile::tempdir().unwrap();
    let id = || {
        let out = Command::new(env!("CARGO_BIN_EXE_punchgate"))
            // No multicast beacons from the host namespace.
            .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
            .env("PUNCHGATE_NO_PORT_MAPPING", "true")
            .arg("--home")
            .arg(home.path())
            .arg("id")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8(out.stdout).unwrap().trim().to_string()
    };
    let first = id();
    assert_eq!(first.len(), 52);
    assert_eq!(id(), first);
}

#[test]
fn bad_arguments_fail_with_a_one_line_reason() {
    let out = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // No multicast beacons from the host namespace.
        .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
        .args(["chat", "--connect", "not-a-peer@127.0.0.1:1"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("malformed peer id"), "{stderr}");
}

#[test]
fn bench_punch_and_throughput_between_real_processes() {
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    let server = Proc::start(&[
        "bench",
        "serve",
        "--tracker",
        &target,
        "--name",
        "server",
        "--bind",
        "127.0.0.1:0",
    ]);
    server.expect("ready", |_| true);

    let punch = Proc::start(&[
        "bench",
        "punch",
        "--tracker",
        &target,
        "--peer",
        "server",
        "--runs",
        "3",
        "--bind",
        "127.0.0.1:0",
    ]);
    let report = punch.expect("bench", |_| true);
    assert_eq!(report["kind"], "punch");
    for phase in ["introduction", "handshake", "greeting", "total"] {
        let summary = &report["report"][phase];
        assert_eq!(summary["runs"], 3, "{report}");
        assert!(summary["min_ms"].as_f64().unwrap() <= summary["max_ms"].as_f64().unwrap());
    }
    punch.finish();

    let bytes = (8u64 << 20).to_string();
    let throughput = Proc::start(&[
        "bench",
        "throughput",
        "--tracker",
        &target,
        "--peer",
        "server",
        "--bytes",
        &bytes,
        "--bind",
        "127.0.0.1:0",
    ]);
    let report = throughput.expect("bench", |_| true);
    assert_eq!(report["report"]["bytes"], 8u64 << 20);
    assert!(report["report"]["mb_per_s"].as_f64().unwrap() > 0.0);
    assert!(
        report["report"]["raw_quinn_loopback_mb_per_s"]
            .as_f64()
            .unwrap()
            > 0.0
    );
    throughput.finish();
}
