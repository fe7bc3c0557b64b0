//! `punchgate send` and `get` as a person sees them on a terminal's
//! output: the lines a transfer needs and no chat hints or swarm room
//! notices, the sender's name, a summary naming the folder asked for, and a
//! second `get` of a finished download reporting it complete with exit 0.

mod common;

use std::process::Command;

/// `punchgate --home HOME get TICKET -o OUT` in human mode: (exit code,
/// stdout, stderr).
fn get(home: &std::path::Path, ticket: &str, out: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        .arg("--home")
        .arg(home)
        .args([
            "get",
            ticket,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ])
        .output()
        .unwrap();
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn a_folder_is_got_once_then_reported_complete_without_chat_noise() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("album");
    std::fs::create_dir_all(root.join("inner")).unwrap();
    for index in 0..20u8 {
        std::fs::write(root.join(format!("f{index}.txt")), [index; 100]).unwrap();
    }
    std::fs::write(root.join("inner/deep.bin"), vec![9u8; 70_000]).unwrap();
    let (_tracker, sender, ticket) = common::process::serve(&root, &["--name", "alice"]);
    let home = tempfile::tempdir().unwrap();
    let out = work.path().join("out");

    let (code, stdout, stderr) = get(home.path(), &ticket, &out);
    assert_eq!(code, 0, "{stdout}{stderr}");
    for noise in ["/help", "joined #", "left #"] {
        assert!(!stdout.contains(noise), "{noise:?} in:\n{stdout}");
    }
    // Named as the sender asked; the summary names the folder.
    assert!(stdout.contains("alice"), "{stdout}");
    let folder = out.join("album").display().to_string();
    assert!(stdout.contains(&format!("* got {folder} (")), "{stdout}");
    assert_eq!(
        std::fs::read(out.join("album/inner/deep.bin")).unwrap(),
        vec![9u8; 70_000]
    );
    // The sender saw the receiver take all of it.
    let total = 20 * 100 + 70_000;
    let upload = sender.expect("upload_progress", |e| e["bytes"] == total);
    assert_eq!(upload["peer_name"], "getter");
    assert_eq!(upload["name"], "album");
    assert_eq!(upload["total"], total);

    let (code, stdout, stderr) = get(home.path(), &ticket, &out);
    assert_eq!(
        code, 0,
        "a finished get run again succeeds: {stdout}{stderr}"
    );
    assert!(
        stdout.contains(&format!("* {folder} is already complete")),
        "{stdout}"
    );
    assert!(stderr.trim().is_empty(), "{stderr}");

    // A file changed since: refused in one line that says what to do, and
    // nothing replaced.
    std::fs::write(out.join("album/f3.txt"), b"mine").unwrap();
    let (code, _, stderr) = get(home.path(), &ticket, &out);
    assert_eq!(code, 1, "{stderr}");
    assert_eq!(stderr.trim().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert!(!stderr.contains("verified chunks are kept"), "{stderr}");
    assert_eq!(std::fs::read(out.join("album/f3.txt")).unwrap(), b"mine");
}
