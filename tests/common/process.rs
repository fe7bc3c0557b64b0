//! Real `punchgate` processes driven through stdin and stdout JSON lines,
//! optionally inside a network namespace (`ip netns exec`).

use std::io::{BufRead, BufReader, Write};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::Value;

/// Deadline of any single wait for an event.
pub const PROC_WAIT: Duration = Duration::from_secs(30);
/// How many passed-over events a failed [`Proc::expect`] shows.
const SKIPPED_SHOWN: usize = 20;

/// A fresh data directory, owner-only from the start as the node wants it
/// (a plain temporary directory is 0755, which the node narrows with a
/// warning).
pub fn private_tempdir() -> tempfile::TempDir {
    let mut builder = tempfile::Builder::new();
    #[cfg(unix)]
    builder.permissions(std::os::unix::fs::PermissionsExt::from_mode(0o700));
    builder.tempdir().unwrap()
}

/// A child process with its stdout read line by line on a thread.
pub struct Proc {
    child: Child,
    stdin: Option<ChildStdin>,
    lines: mpsc::Receiver<Value>,
    _home: Option<tempfile::TempDir>,
}

impl Proc {
    /// `punchgate --home <fresh dir> --json ARGS...`.
    pub fn start(args: &[&str]) -> Proc {
        Self::start_in(None, args)
    }

    /// The same, inside the network namespace `netns` if given.
    pub fn start_in(netns: Option<&str>, args: &[&str]) -> Proc {
        let home = private_tempdir();
        let mut proc = Self::start_with_home(home.path(), netns, args);
        proc._home = Some(home);
        proc
    }

    /// `punchgate --home <fresh dir> --json ARGS...` with these
    /// environment variables set (in `netns` if given).
    pub fn start_with_env(netns: Option<&str>, args: &[&str], env: &[(&str, &str)]) -> Proc {
        let home = private_tempdir();
        let mut proc = Self::spawn(home.path(), netns, args, env);
        proc._home = Some(home);
        proc
    }

    /// `punchgate --home HOME --json ARGS...`, with a data directory that
    /// outlives the process (to restart it).
    pub fn start_with_home(home: &std::path::Path, netns: Option<&str>, args: &[&str]) -> Proc {
        Self::spawn(home, netns, args, &[])
    }

    /// The same with these environment variables set.
    pub fn start_with_home_env(
        home: &std::path::Path,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        Self::spawn(home, None, args, env)
    }

    fn spawn(
        home: &std::path::Path,
        netns: Option<&str>,
        args: &[&str],
        env: &[(&str, &str)],
    ) -> Proc {
        let binary = env!("CARGO_BIN_EXE_punchgate");
        let mut command = match netns {
            Some(ns) => {
                let mut command = Command::new("ip");
                command.args(["netns", "exec", ns, binary]);
                command
            }
            None => {
                // Chat beacons on the LAN by default: in the host's own
                // namespace a test must not, so it is off there.
                let mut command = Command::new(binary);
                command.env("PUNCHGATE_NO_LAN_DISCOVERY", "true");
                command.env("PUNCHGATE_NO_PORT_MAPPING", "true");
                command
            }
        };
        let mut child = command
            .envs(env.iter().copied())
            .arg("--home")
            .arg(home)
            .arg("--json")
            .args(args)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        let stdout = child.stdout.take().unwrap();
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value: Value = serde_json::from_str(&line)
                    .unwrap_or_else(|e| panic!("stdout line is not JSON ({e}): {line}"));
                assert!(value["event"].is_string(), "no event field: {line}");
                if tx.send(value).is_err() {
                    break;
                }
            }
        });
        let stdin = child.stdin.take();
        Proc {
            child,
            stdin,
            lines,
            _home: None,
        }
    }

    /// Waits for an event named `name` that `accept` likes. The events
    /// passed over on the way are gone; a failure lists the last of them.
    pub fn expect(&self, name: &str, accept: impl Fn(&Value) -> bool) -> Value {
        self.wait_for(PROC_WAIT, name, accept)
            .unwrap_or_else(|skipped| {
                let skipped: String = skipped.iter().map(|e| format!("\n  {e}")).collect();
                panic!(
                    "no {name} event within {PROC_WAIT:?}; the last events passed over:{skipped}"
                )
            })
    }

    /// Waits up to `limit` for an event named `name` that `accept` likes.
    pub fn expect_within(
        &self,
        limit: Duration,
        name: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Option<Value> {
        self.wait_for(limit, name, accept).ok()
    }

    /// The event `expect_within` waits for, or the last
    /// [`SKIPPED_SHOWN`] events it passed over.
    fn wait_for(
        &self,
        limit: Duration,
        name: &str,
        accept: impl Fn(&Value) -> bool,
    ) -> Result<Value, std::collections::VecDeque<Value>> {
        let deadline = Instant::now() + limit;
        let mut skipped = std::collections::VecDeque::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) if event["event"] == name && accept(&event) => return Ok(event),
                Ok(event) => {
                    if skipped.len() == SKIPPED_SHOWN {
                        skipped.pop_front();
                    }
                    skipped.push_back(event);
                }
                Err(_) => return Err(skipped),
            }
        }
    }

    /// Waits for the first event that `pick` maps to a value.
    pub fn first<T>(&self, limit: Duration, pick: impl Fn(&Value) -> Option<T>) -> Option<T> {
        let deadline = Instant::now() + limit;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(event) => {
                    if let Some(found) = pick(&event) {
                        return Some(found);
                    }
                }
                Err(_) => return None,
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Kills the process at once (SIGKILL): no goodbye, no flush.
    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }

    /// Ctrl-C: SIGINT, then waits for the process to end.
    #[cfg(unix)]
    pub fn interrupt(mut self) -> std::process::ExitStatus {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: a plain signal to a child process this value owns.
        assert_eq!(unsafe { libc::kill(pid, libc::SIGINT) }, 0);
        self.child.wait().unwrap()
    }

    pub fn send(&mut self, line: &str) {
        let stdin = self.stdin.as_mut().unwrap();
        writeln!(stdin, "{line}").unwrap();
        stdin.flush().unwrap();
    }

    /// Closes stdin (the same as /quit) and waits for a clean exit.
    pub fn finish(mut self) {
        drop(self.stdin.take());
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A field of `/proc/PID/status` given in kB (`VmRSS`, `VmHWM`), in bytes.
pub fn status_bytes(pid: u32, field: &str) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let line = status
        .lines()
        .find_map(|line| line.strip_prefix(field)?.strip_prefix(':'))
        .unwrap_or_else(|| panic!("no {field} in /proc/{pid}/status"));
    let kib: u64 = line.trim().trim_end_matches("kB").trim().parse().unwrap();
    kib * 1024
}

/// Starts measuring a process's peak memory from now: resets its `VmHWM`
/// to its current resident size (`/proc/PID/clear_refs`, Linux 4.0+), and
/// returns that size.
pub fn reset_peak(pid: u32) -> u64 {
    std::fs::write(format!("/proc/{pid}/clear_refs"), "5").unwrap();
    status_bytes(pid, "VmRSS")
}

/// A tracker process and a `punchgate send` of `file` through it (with
/// `extra` flags); returns both and the ticket.
pub fn serve(file: &std::path::Path, extra: &[&str]) -> (Proc, Proc, String) {
    let tracker = Proc::start(&["tracker", "--listen", "127.0.0.1:0"]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .unwrap()
        .to_string();
    let mut args = vec![
        "send",
        file.to_str().unwrap(),
        "--tracker",
        &target,
        "--bind",
        "127.0.0.1:0",
    ];
    args.extend_from_slice(extra);
    let sender = Proc::start(&args);
    // Hashing comes first: a debug build on a loaded machine takes more
    // than PROC_WAIT over 100,000 files (a deadline only).
    let ticket = sender
        .expect_within(Duration::from_secs(180), "ticket", |_| true)
        .unwrap_or_else(|| panic!("no ticket event within 180 s"))["ticket"]
        .as_str()
        .unwrap()
        .to_string();
    (tracker, sender, ticket)
}
