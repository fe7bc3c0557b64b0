//! What other users and the limits of the local machine can do to a node
//! (issue 12 row 13): a data directory left open is narrowed with a notice.

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;

fn mode(path: &Path) -> u32 {
    std::fs::metadata(path).unwrap().permissions().mode() & 0o777
}

/// `punchgate --home HOME ARGS...`, run to its end.
fn punchgate(home: &Path, args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_punchgate"))
        .arg("--home")
        .arg(home)
        .args(args)
        .env_remove("RUST_LOG")
        .output()
        .unwrap()
}

#[test]
fn a_data_directory_made_0755_is_fixed_to_0700_with_a_notice() {
    let parent = tempfile::tempdir().unwrap();
    let home = parent.path().join("home");
    std::fs::create_dir(&home).unwrap();
    std::fs::set_permissions(&home, std::fs::Permissions::from_mode(0o755)).unwrap();
    let history = home.join("history.redb");
    std::fs::write(&history, b"").unwrap();
    std::fs::set_permissions(&history, std::fs::Permissions::from_mode(0o644)).unwrap();

    let output = punchgate(&home, &["id"]);
    assert!(output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains(&format!(
            "{} was open to other users (mode 755); made it owner-only (700)",
            home.display()
        )),
        "{stderr}"
    );
    assert!(stderr.contains("history.redb was open"), "{stderr}");
    assert_eq!(mode(&home), 0o700);
    assert_eq!(mode(&history), 0o600);
    assert_eq!(mode(&home.join("identity.pem")), 0o600);

    // Nothing to say the second time.
    let again = punchgate(&home, &["id"]);
    assert!(again.stderr.is_empty(), "{}", String::from_utf8_lossy(&again.stderr));
}
