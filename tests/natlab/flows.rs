//! Plain TCP flows in the NAT lab (`tcpflow.py`, since iperf3 is not
//! installed): the baseline the lossy-path bench compares punchgate with,
//! and the competing flow beside it.

use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

/// A `tcpflow.py` process in a namespace, its JSON lines timestamped as
/// they arrive.
pub struct Flow {
    child: Child,
    lines: mpsc::Receiver<(Instant, serde_json::Value)>,
}

impl Flow {
    /// `tcpflow.py ARGS...` inside `netns`.
    pub fn start(netns: &str, args: &[&str]) -> Flow {
        let script = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/natlab/tcpflow.py");
        let mut child = Command::new("ip")
            .args(["netns", "exec", netns, "python3", script])
            .args(args)
            .stdout(Stdio::piped())
            .spawn()
            .expect("python3 runs");
        let stdout = child.stdout.take().expect("piped stdout");
        let (tx, lines) = mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                let value = serde_json::from_str(&line).unwrap_or(serde_json::Value::Null);
                if tx.send((Instant::now(), value)).is_err() {
                    break;
                }
            }
        });
        Flow { child, lines }
    }

    /// A server on `port` in `netns`, once it listens.
    pub fn serve(netns: &str, port: u16) -> Flow {
        let server = Flow::start(netns, &["serve", &port.to_string()]);
        server
            .next(Duration::from_secs(30))
            .expect("the TCP server starts");
        server
    }

    /// The next line, waiting at most `limit`.
    pub fn next(&self, limit: Duration) -> Option<(Instant, serde_json::Value)> {
        self.lines.recv_timeout(limit).ok()
    }
}

impl Drop for Flow {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// What a download fetches, from where.
#[derive(Clone, Copy, Debug)]
pub struct Download<'a> {
    /// The namespace it runs in.
    pub netns: &'a str,
    /// The server's address and port.
    pub server: &'a str,
    pub port: u16,
    /// The server's TCP congestion control; `None` for the kernel's default.
    pub congestion: Option<&'a str>,
}

impl Download<'_> {
    /// Starts downloading `bytes` (0: without end) for at most `limit`; its
    /// progress lines come every 100 ms.
    pub fn start(&self, bytes: u64, limit: Duration) -> Flow {
        Flow::start(
            self.netns,
            &[
                "fetch",
                self.server,
                &self.port.to_string(),
                &bytes.to_string(),
                &limit.as_secs_f64().to_string(),
                self.congestion.unwrap_or(""),
            ],
        )
    }
}

/// Downloads `bytes` as `from` says, for at most `limit`; the bytes
/// received and the seconds it took (from before the connect).
pub fn download(from: Download, bytes: u64, limit: Duration) -> (u64, f64) {
    let flow = from.start(bytes, limit);
    loop {
        let (_, line) = flow
            .next(limit + Duration::from_secs(30))
            .expect("the TCP download reports");
        if line["done"] == true {
            let got = line["bytes"].as_u64().unwrap_or(0);
            let secs = line["secs"].as_f64().unwrap_or(f64::NAN);
            return (got, secs);
        }
    }
}
