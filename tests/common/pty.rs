//! A `punchgate` process on a pseudo-terminal, as a person at a terminal
//! runs it: the line editor, the prompt, colours. What it prints is kept
//! (colours and cursor moves stripped) and waited on with a deadline; what
//! the test types goes in as keystrokes.

use std::io::{Read, Write};
use std::os::fd::{FromRawFd, OwnedFd};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// Deadline of any single wait for output.
pub const PTY_WAIT: Duration = Duration::from_secs(30);

pub struct Pty {
    child: Child,
    master: std::fs::File,
    /// Everything printed so far, plain text, and whether the reader ended.
    output: Arc<(Mutex<(String, bool)>, Condvar)>,
    /// Terminal bells rung so far (BEL characters printed).
    bells: Arc<std::sync::atomic::AtomicUsize>,
    /// How much of the output earlier waits consumed.
    seen: usize,
}

/// Removes terminal escape sequences (colours, cursor moves, clears).
fn plain(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    let mut chars = raw.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\x1b' => {
                if chars.peek() == Some(&'[') {
                    chars.next();
                    // Parameters, then one final byte in @..~.
                    for c in chars.by_ref() {
                        if ('@'..='~').contains(&c) {
                            break;
                        }
                    }
                } else {
                    chars.next();
                }
            }
            '\r' | '\x07' => {}
            c => out.push(c),
        }
    }
    out
}

impl Pty {
    /// `punchgate --home HOME ARGS...` with stdin, stdout and stderr on a
    /// fresh pseudo-terminal of 200 columns.
    pub fn start(home: &std::path::Path, args: &[&str]) -> Pty {
        let (mut master, mut slave) = (0, 0);
        let size = libc::winsize {
            ws_row: 50,
            ws_col: 200,
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        // SAFETY: openpty writes two descriptors into the integers given;
        // the name and termios pointers may be null.
        let rc = unsafe {
            libc::openpty(
                &mut master,
                &mut slave,
                std::ptr::null_mut(),
                std::ptr::null(),
                &size,
            )
        };
        assert_eq!(rc, 0, "openpty: {}", std::io::Error::last_os_error());
        // SAFETY: both descriptors were just opened and are owned here.
        let (master, slave) =
            unsafe { (OwnedFd::from_raw_fd(master), OwnedFd::from_raw_fd(slave)) };
        let child = Command::new(env!("CARGO_BIN_EXE_punchgate"))
            // No multicast beacons from the host namespace.
            .env("PUNCHGATE_NO_LAN_DISCOVERY", "true")
            .env("PUNCHGATE_NO_PORT_MAPPING", "true")
            .arg("--home")
            .arg(home)
            .args(args)
            .env("TERM", "xterm")
            .env_remove("PUNCHGATE_TRACKER")
            .stdin(Stdio::from(slave.try_clone().unwrap()))
            .stdout(Stdio::from(slave.try_clone().unwrap()))
            .stderr(Stdio::from(slave))
            .spawn()
            .unwrap();
        let master = std::fs::File::from(master);
        let output: Arc<(Mutex<(String, bool)>, Condvar)> = Arc::default();
        let mut reader = master.try_clone().unwrap();
        let mut answer = master.try_clone().unwrap();
        let shared = output.clone();
        let bells = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let rung = bells.clone();
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            let mut raw = Vec::new();
            loop {
                let n = match reader.read(&mut buf) {
                    Ok(0) | Err(_) => break, // EIO once the child is gone
                    Ok(n) => n,
                };
                raw.extend_from_slice(&buf[..n]);
                let bel = buf[..n].iter().filter(|b| **b == 0x07).count();
                rung.fetch_add(bel, std::sync::atomic::Ordering::SeqCst);
                // The line editor asks where the cursor is; a terminal answers.
                let asks = buf[..n].windows(4).filter(|w| w == b"\x1b[6n").count();
                for _ in 0..asks {
                    let _ = answer.write_all(b"\x1b[1;1R");
                }
                let (lock, ready) = &*shared;
                lock.lock().unwrap().0 = plain(&String::from_utf8_lossy(&raw));
                ready.notify_all();
            }
            let (lock, ready) = &*shared;
            lock.lock().unwrap().1 = true;
            ready.notify_all();
        });
        Pty {
            child,
            master,
            output,
            bells,
            seen: 0,
        }
    }

    /// Waits until `text` appears after what earlier waits consumed;
    /// returns the output up to and including it.
    pub fn expect(&mut self, text: &str) -> String {
        let deadline = Instant::now() + PTY_WAIT;
        let (lock, ready) = &*self.output;
        let mut state = lock.lock().unwrap();
        loop {
            if let Some(at) = state.0.get(self.seen..).and_then(|rest| rest.find(text)) {
                let end = self.seen + at + text.len();
                let upto = state.0[self.seen..end].to_string();
                self.seen = end;
                return upto;
            }
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(
                !left.is_zero() && !state.1,
                "no {text:?} within {PTY_WAIT:?}; the terminal shows:\n{}",
                state.0
            );
            state = ready.wait_timeout(state, left).unwrap().0;
        }
    }

    /// Everything printed so far.
    pub fn screen(&self) -> String {
        self.output.0.lock().unwrap().0.clone()
    }

    /// How many times the terminal's bell rang so far.
    pub fn bells(&self) -> usize {
        self.bells.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Types `line` and Enter.
    pub fn type_line(&mut self, line: &str) {
        self.master.write_all(line.as_bytes()).unwrap();
        self.master.write_all(b"\r").unwrap();
        self.master.flush().unwrap();
    }

    /// Waits for the program to end by itself; how it ended.
    pub fn exit_status(mut self) -> std::process::ExitStatus {
        self.child.wait().unwrap()
    }

    /// Types /quit and waits for a clean exit.
    pub fn quit(mut self) {
        self.type_line("/quit");
        let status = self.child.wait().unwrap();
        assert!(status.success(), "exit status {status}");
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
