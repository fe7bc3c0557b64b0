//! `punchgate send` and `get` as a person sees them on a terminal's
//! output: the lines a transfer needs and no chat hints or swarm room
//! notices, the sender's name, a summary naming the folder asked for, and a
//! second `get` of a finished download reporting it complete with exit 0;
//! and folders of many small files: 5,000 and 100,000 byte-identical, a
//! Ctrl-C as the files are moved into place finished by the same command.

mod common;

use std::process::Command;

/// `punchgate --home HOME get TICKET -o OUT` in human mode: (exit code,
/// stdout, stderr).
fn get(home: &std::path::Path, ticket: &str, out: &std::path::Path) -> (i32, String, String) {
    let output = Command::new(env!("CARGO_BIN_EXE_punchgate"))
        // The host's own router is no test's to ask.
        .env("PUNCHGATE_NO_PORT_MAPPING", "true")
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

/// `count` small files (0 to 96 bytes) spread over 100 folders.
fn small_files(root: &std::path::Path, count: usize) {
    for index in 0..count {
        let folder = root.join(format!("d{:03}", index % 100));
        if index < 100 {
            std::fs::create_dir_all(&folder).unwrap();
        }
        std::fs::write(
            folder.join(format!("f{index:06}")),
            vec![(index % 251) as u8; index % 97],
        )
        .unwrap();
    }
}

/// Whether the two folders hold the same files with the same bytes.
fn assert_same_files(left: &std::path::Path, right: &std::path::Path) {
    let mut count = 0;
    for folder in std::fs::read_dir(left).unwrap() {
        let folder = folder.unwrap().path();
        for file in std::fs::read_dir(&folder).unwrap() {
            let file = file.unwrap().path();
            let relative = file.strip_prefix(left).unwrap();
            assert_eq!(
                std::fs::read(&file).unwrap(),
                std::fs::read(right.join(relative)).unwrap(),
                "{}",
                relative.display()
            );
            count += 1;
        }
    }
    let theirs: usize = std::fs::read_dir(right)
        .unwrap()
        .map(|folder| std::fs::read_dir(folder.unwrap().path()).unwrap().count())
        .sum();
    assert_eq!(count, theirs, "as many files on both sides");
}

fn get_json(ticket: &str, out: &std::path::Path, home: &std::path::Path) -> common::process::Proc {
    common::process::Proc::start_with_home(
        home,
        None,
        &[
            "get",
            ticket,
            "-o",
            out.to_str().unwrap(),
            "--bind",
            "127.0.0.1:0",
        ],
    )
}

#[test]
fn a_folder_of_5000_small_files_arrives_byte_identical() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("many");
    small_files(&root, 5_000);
    let (_tracker, _sender, ticket) = common::process::serve(&root, &[]);
    let home = tempfile::tempdir().unwrap();
    let out = work.path().join("out");
    let get = get_json(&ticket, &out, home.path());
    // Progress counts files as well as bytes.
    let whole = get.expect("transfer_progress", |e| e["bytes"] == e["total"]);
    assert_eq!(
        (whole["files_done"].as_u64(), whole["files"].as_u64()),
        (Some(5_000), Some(5_000))
    );
    let done = get.expect("transfer_done", |_| true);
    assert_eq!(done["paths"].as_array().unwrap().len(), 5_000);
    assert_eq!(done["path"], out.join("many").to_str().unwrap());
    get.finish();
    assert_same_files(&root, &out.join("many"));
}

/// Ctrl-C once every chunk is verified lands while the 100,000 files are
/// moved into place (or, on a fast machine, just after): either way the
/// same command run again ends with every file in place, fetching nothing.
#[test]
fn a_folder_of_100000_small_files_arrives_and_ctrl_c_while_finishing_is_finished_by_a_rerun() {
    let work = tempfile::tempdir().unwrap();
    let root = work.path().join("many");
    small_files(&root, 100_000);
    let (_tracker, _sender, ticket) = common::process::serve(&root, &[]);
    let home = tempfile::tempdir().unwrap();
    let out = work.path().join("out");

    let first = get_json(&ticket, &out, home.path());
    first.expect("transfer_progress", |e| e["bytes"] == e["total"]);
    let status = first.interrupt();
    let interrupted = !status.success();

    let second = get_json(&ticket, &out, home.path());
    let done = second.expect("transfer_done", |_| true);
    assert_eq!(done["chunks_fetched"], 0, "nothing fetched again: {done}");
    assert_eq!(done["paths"].as_array().unwrap().len(), 100_000);
    // Interrupted mid-finish: the files moved by then and the rest are all
    // there; finished before the signal: the rerun found it complete.
    assert_eq!(done["already_complete"], !interrupted, "{done}");
    second.finish();
    assert_same_files(&root, &out.join("many"));
    assert!(!out.join(".punchgate-partial").exists());
}
