//! The lossy-path bench (issue 17): a plain TCP download and punchgate
//! `send`/`get` over the same shaped path in the NAT lab, at several random
//! loss rates, and punchgate beside a competing TCP flow; prints one table.
//!
//! The path: the sender on a public host, the receiver behind a
//! port-restricted NAT; every site uplink (and downlink) 100 Mbit/s with a
//! 50 ms drop-tail queue (tbf) and 10 ms each way (the delay line), so 40 ms
//! RTT between the sites; loss is dropped at random both ways at the
//! receiver's router (nftables). It needs root and takes minutes, so it runs
//! only when asked for:
//!
//! ```sh
//! cargo bench --bench lossy_path                      # the defaults below
//! cargo bench --bench lossy_path -- --loss 0,1 --mib 16 \
//!     --congestion cubic,bbr --limit-secs 60
//! ```
//!
//! `--congestion` takes a comma-separated list of the values of punchgate's
//! `--congestion` flag (`default` runs without the flag); each gets its own
//! sender and row. A run slower than `--limit-secs` is cut there and its rate
//! is what it fetched so far (marked `>`, "at least"). `sendme` (iroh), when
//! found (`$SENDME`, else on the PATH), runs beside them with relays off and
//! an addresses-only ticket (the lab has no internet for relays or DNS
//! discovery). The competing-flow table runs each contender beside a TCP
//! download of each congestion control in `--against` (default `bbr,cubic`),
//! starting 3 s after it; its first row is a second TCP download of the
//! same kind, the fair share to compare with.

#[allow(dead_code)]
#[path = "../tests/natlab/flows.rs"]
mod flows;
#[allow(dead_code)]
#[path = "../tests/natlab/lab.rs"]
mod lab;
#[allow(dead_code)]
#[path = "../tests/natlab/neighbours.rs"]
mod neighbours;
#[allow(dead_code)]
#[path = "../tests/common/process.rs"]
mod process;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use flows::{Download, Flow};
use lab::{Host, Lab, Links, Nat, HOST_PORT, TRACKER_IP, TRACKER_PORT};
use process::Proc;

const TCP_PORT: u16 = 5001;
const MIB: f64 = (1 << 20) as f64;
/// The lab path of the issue: 100 Mbit/s, 50 ms queue, 10 ms per link.
const LINKS: Links = Links::BROADBAND;

struct Options {
    losses: Vec<f64>,
    mib: u64,
    /// Larger at 0 % loss, where the start-up of either flow is a larger
    /// share of a short transfer (the issue measured 64 MiB there).
    mib_lossless: u64,
    congestion: Vec<String>,
    limit: Duration,
    /// TCP congestion controls of the competing flow; empty: no such table.
    against: Vec<String>,
}

fn options() -> Options {
    let mut options = Options {
        losses: vec![0.0, 0.1, 1.0, 3.0],
        mib: 32,
        mib_lossless: 64,
        congestion: vec!["default".into()],
        limit: Duration::from_secs(60),
        against: vec!["bbr".into(), "cubic".into()],
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--loss" => {
                options.losses = value()
                    .split(',')
                    .filter(|p| !p.is_empty())
                    .map(|p| p.parse().expect("--loss takes percentages, e.g. 0,0.1,1"))
                    .collect()
            }
            "--mib" => options.mib = value().parse().expect("--mib takes a number"),
            "--mib-at-0" => {
                options.mib_lossless = value().parse().expect("--mib-at-0 takes a number")
            }
            "--congestion" => options.congestion = value().split(',').map(String::from).collect(),
            "--limit-secs" => {
                options.limit = Duration::from_secs(value().parse().expect("--limit-secs"))
            }
            "--against" => {
                options.against = value()
                    .split(',')
                    .filter(|cc| !cc.is_empty())
                    .map(String::from)
                    .collect()
            }
            "--no-competing" => options.against.clear(),
            _ => {} // cargo's own --bench and the like
        }
    }
    options
}

/// A rate in MiB/s, cut short (`at_least`) if the run hit its time limit.
#[derive(Clone, Copy)]
struct Measured {
    mib_per_s: f64,
    at_least: bool,
}

impl std::fmt::Display for Measured {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let mark = if self.at_least { ">" } else { "" };
        write!(f, "{mark}{:.2} MiB/s", self.mib_per_s)
    }
}

/// A transfer's rate and when it ran.
struct Timed {
    rate: Measured,
    started: Instant,
    ended: Instant,
}

/// A TCP download of `bytes` as `from` says.
fn tcp_download(from: Download, bytes: u64, limit: Duration) -> Timed {
    let started = Instant::now();
    let flow = from.start(bytes, limit);
    loop {
        let (at, line) = flow
            .next(limit + Duration::from_secs(30))
            .expect("the TCP download reports");
        if line["done"] == true {
            let got = line["bytes"].as_f64().unwrap_or(0.0);
            let secs = line["secs"].as_f64().unwrap_or(f64::NAN);
            let rate = Measured {
                mib_per_s: got / MIB / secs,
                at_least: got < bytes as f64,
            };
            return Timed {
                rate,
                started,
                ended: at,
            };
        }
    }
}

/// `sendme` if this machine has it: `$SENDME`, else the first on the PATH.
fn find_sendme() -> Option<PathBuf> {
    if let Some(path) = std::env::var_os("SENDME") {
        return Some(PathBuf::from(path));
    }
    std::env::split_paths(&std::env::var_os("PATH")?)
        .map(|dir| dir.join("sendme"))
        .find(|path| path.is_file())
}

/// `sendme send FILE` in `netns`, relays off, listening on `port`; the
/// process and its ticket.
fn sendme_send(sendme: &Path, netns: &str, file: &Path, port: u16, cwd: &Path) -> (Child, String) {
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(sendme)
        .arg("send")
        .arg(file)
        .args(["--relay", "disabled", "--ticket-type", "addresses"])
        .args([
            "--no-progress",
            "--magic-ipv4-addr",
            &format!("0.0.0.0:{port}"),
        ])
        .current_dir(cwd)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("sendme runs");
    let stdout = child.stdout.take().expect("piped stdout");
    for line in BufReader::new(stdout).lines() {
        let line = line.expect("sendme prints its ticket");
        if let Some(ticket) = line.strip_prefix("sendme receive ") {
            return (child, ticket.trim().to_string());
        }
    }
    let _ = child.kill();
    let _ = child.wait();
    panic!("sendme send printed no ticket");
}

/// `sendme receive TICKET` in `netns`, timed from its start to its exit.
fn sendme_get(sendme: &Path, netns: &str, ticket: &str, bytes: u64, limit: Duration) -> Timed {
    let out = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let started = Instant::now();
    let mut child = Command::new("ip")
        .args(["netns", "exec", netns])
        .arg(sendme)
        .args(["receive", ticket, "--relay", "disabled", "--no-progress"])
        .current_dir(out.path())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .expect("sendme runs");
    let deadline = started + limit;
    let finished = loop {
        if let Ok(Some(status)) = child.try_wait() {
            break status.success();
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break false;
        }
        std::thread::sleep(Duration::from_millis(20)); // polling an exit, not waiting for an event
    };
    let ended = Instant::now();
    let got = if finished {
        bytes
    } else {
        dir_bytes(out.path())
    };
    let rate = Measured {
        mib_per_s: got as f64 / MIB / (ended - started).as_secs_f64(),
        at_least: !finished,
    };
    Timed {
        rate,
        started,
        ended,
    }
}

/// Bytes of every file under `dir`.
fn dir_bytes(dir: &Path) -> u64 {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return 0;
    };
    entries
        .flatten()
        .map(|entry| match entry.file_type() {
            Ok(kind) if kind.is_dir() => dir_bytes(&entry.path()),
            _ => entry.metadata().map_or(0, |m| m.len()),
        })
        .sum()
}

/// One `punchgate get` of `ticket` in `receiver`; the rate from `connected`
/// to `transfer_done`, and when those were.
fn punchgate_get(receiver: &Host, ticket: &str, extra: &[&str], limit: Duration) -> Timed {
    let out = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let bind = format!("0.0.0.0:{HOST_PORT}");
    let mut args = vec![
        "get",
        ticket,
        "-o",
        out.path().to_str().expect("utf-8 path"),
        "--bind",
        &bind,
    ];
    args.extend_from_slice(extra);
    let getter = Proc::start_in(Some(&receiver.netns), &args);
    getter.expect("connected", |_| true);
    let started = Instant::now();
    let deadline = started + limit;
    let mut fetched = 0.0;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = getter.first(left, |event| {
            matches!(
                event["event"].as_str(),
                Some("transfer_progress" | "transfer_done")
            )
            .then(|| event.clone())
        });
        let now = Instant::now();
        let secs = (now - started).as_secs_f64();
        match event {
            Some(event) if event["event"] == "transfer_done" => {
                let bytes = event["bytes"].as_f64().unwrap_or(0.0);
                let rate = Measured {
                    mib_per_s: bytes / MIB / secs,
                    at_least: false,
                };
                return Timed {
                    rate,
                    started,
                    ended: now,
                };
            }
            Some(event) => fetched = event["bytes"].as_f64().unwrap_or(fetched),
            None => {
                let rate = Measured {
                    mib_per_s: fetched / MIB / secs,
                    at_least: true,
                };
                return Timed {
                    rate,
                    started,
                    ended: now,
                };
            }
        }
    }
}

fn congestion_flag(controller: &str) -> Vec<&str> {
    match controller {
        "default" => Vec::new(),
        other => vec!["--congestion", other],
    }
}

/// Who moves the payload: each has its own copy of every payload size.
enum Contender {
    Tcp,
    Sendme {
        tickets: Vec<String>,
        _senders: Vec<Child>,
    },
    Punchgate {
        controller: String,
        tickets: Vec<String>,
        _senders: Vec<Proc>,
    },
}

impl Contender {
    fn name(&self) -> String {
        match self {
            Contender::Tcp => "TCP download".into(),
            Contender::Sendme { .. } => "sendme".into(),
            Contender::Punchgate { controller, .. } => format!("punchgate ({controller})"),
        }
    }
}

impl Drop for Contender {
    fn drop(&mut self) {
        if let Contender::Sendme { _senders, .. } = self {
            for child in _senders {
                let _ = child.kill();
                let _ = child.wait();
            }
        }
    }
}

/// Where the bench runs.
struct Bench {
    lab: Lab,
    receiver: Host,
    server_ip: String,
    sendme: Option<PathBuf>,
    limit: Duration,
}

impl Bench {
    /// The TCP download from the public host, with `congestion` there.
    fn download<'a>(&'a self, congestion: Option<&'a str>) -> Download<'a> {
        Download {
            netns: &self.receiver.netns,
            server: &self.server_ip,
            port: TCP_PORT,
            congestion,
        }
    }

    /// `contender` moves the payload of `size` MiB (its `index`-th).
    fn transfer(&self, contender: &Contender, index: usize, mib: u64) -> Timed {
        match contender {
            Contender::Tcp => tcp_download(self.download(None), mib << 20, self.limit),
            Contender::Sendme { tickets, .. } => {
                let sendme = self.sendme.as_deref().expect("sendme was found");
                sendme_get(
                    sendme,
                    &self.receiver.netns,
                    &tickets[index],
                    mib << 20,
                    self.limit,
                )
            }
            Contender::Punchgate {
                controller,
                tickets,
                ..
            } => {
                let flag = congestion_flag(controller);
                punchgate_get(&self.receiver, &tickets[index], &flag, self.limit)
            }
        }
    }

    /// `contender`'s rate, and a competing TCP download's (with `congestion`)
    /// during the same time, at 0 % loss.
    fn beside_tcp(&self, contender: &Contender, congestion: &str, mib: u64) -> (Measured, f64) {
        let flow = self
            .download(Some(congestion))
            .start(0, self.limit + Duration::from_secs(30));
        // Let TCP reach its rate first: the contender arrives on a busy link.
        let mut samples = Vec::new();
        loop {
            let (at, line) = flow
                .next(Duration::from_secs(30))
                .expect("the TCP flow reports");
            samples.push((at, line["bytes"].as_f64().unwrap_or(0.0)));
            if line["secs"].as_f64().unwrap_or(0.0) >= 3.0 {
                break;
            }
        }
        let ours = self.transfer(contender, 0, mib);
        while let Some((at, line)) = flow.next(Duration::from_millis(500)) {
            samples.push((at, line["bytes"].as_f64().unwrap_or(0.0)));
            if at > ours.ended {
                break;
            }
        }
        let bytes_at = |when: Instant| {
            samples
                .iter()
                .take_while(|(at, _)| *at <= when)
                .last()
                .map_or(0.0, |(_, bytes)| *bytes)
        };
        let tcp_bytes = bytes_at(ours.ended) - bytes_at(ours.started);
        let theirs = tcp_bytes / MIB / (ours.ended - ours.started).as_secs_f64();
        (ours.rate, theirs)
    }
}

fn main() {
    if let Some(reason) = lab::unavailable() {
        eprintln!("SKIPPED lossy_path: {reason}");
        return;
    }
    let options = options();
    let mut lab = Lab::with_links(LINKS);
    let sender_site = lab.add_site(1, Nat::None, 1, false);
    let receiver_site = lab.add_site(2, Nat::PortRestricted, 1, false);
    let router = receiver_site
        .router
        .clone()
        .expect("a NAT site has a router");
    let sender = sender_site.hosts[0].clone();

    let listen = std::net::SocketAddrV4::new(TRACKER_IP, TRACKER_PORT).to_string();
    let tracker = Proc::start_in(Some(&lab.tracker_ns()), &["tracker", "--listen", &listen]);
    let target = tracker.expect("ready", |_| true)["target"]
        .as_str()
        .expect("a tracker target")
        .to_string();
    let _tcp_server = Flow::serve(&sender.netns, TCP_PORT);

    let work = tempfile::tempdir_in("/dev/shm").expect("a directory on tmpfs");
    let mut sizes = vec![options.mib];
    if options.losses.contains(&0.0) && options.mib_lossless != options.mib {
        sizes.push(options.mib_lossless);
    }
    // Every sender gets payloads of its own on a port of its own: a getter
    // fetches from everyone serving the same content, and each row must
    // measure one sender.
    let mut port = HOST_PORT;
    let mut payload = |mib: u64| {
        port += 1;
        let file = work.path().join(format!("payload-{port}.bin"));
        let seed = u64::from(port) << 40;
        let bytes: Vec<u8> = (0..mib << 20)
            .map(|i| ((i + seed).wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&file, bytes).expect("payload written");
        (file, port)
    };
    let sendme = find_sendme();
    let mut contenders = vec![Contender::Tcp];
    if let Some(sendme) = &sendme {
        let (mut tickets, mut senders) = (Vec::new(), Vec::new());
        for &mib in &sizes {
            let (file, port) = payload(mib);
            let (child, ticket) = sendme_send(sendme, &sender.netns, &file, port, work.path());
            tickets.push(ticket);
            senders.push(child);
        }
        contenders.push(Contender::Sendme {
            tickets,
            _senders: senders,
        });
    }
    for controller in &options.congestion {
        let (mut tickets, mut senders) = (Vec::new(), Vec::new());
        for &mib in &sizes {
            let (file, port) = payload(mib);
            let bind = format!("0.0.0.0:{port}");
            let mut args = vec![
                "send",
                file.to_str().expect("utf-8 path"),
                "--tracker",
                &target,
                "--bind",
                &bind,
            ];
            args.extend(congestion_flag(controller));
            let proc = Proc::start_in(Some(&sender.netns), &args);
            let ticket = proc.expect("ticket", |_| true)["ticket"]
                .as_str()
                .expect("a ticket")
                .to_string();
            tickets.push(ticket);
            senders.push(proc);
        }
        contenders.push(Contender::Punchgate {
            controller: controller.clone(),
            tickets,
            _senders: senders,
        });
    }

    let link = LINKS.rate.expect("a shaped link").bytes_per_s() / MIB;
    println!(
        "LOSSY | path: 100 Mbit/s ({link:.2} MiB/s of frames) per link, 50 ms queue, 10 ms per link (40 ms RTT), {} MiB per transfer ({} MiB at 0 %), limit {} s, sendme: {}",
        options.mib,
        options.mib_lossless,
        options.limit.as_secs(),
        sendme.as_ref().map_or("not found".into(), |p| p.display().to_string())
    );
    let bench = Bench {
        lab,
        receiver: receiver_site.hosts[0].clone(),
        server_ip: sender.ip.to_string(),
        sendme,
        limit: options.limit,
    };
    let mut rows = Vec::new();
    for &loss in &options.losses {
        bench.lab.set_loss(&router, loss);
        let index = if loss == 0.0 { sizes.len() - 1 } else { 0 };
        let mib = sizes[index];
        let mut row = Vec::new();
        for contender in &contenders {
            let rate = bench.transfer(contender, index, mib).rate;
            println!("LOSSY | loss {loss} % | {} | {rate}", contender.name());
            row.push(rate);
        }
        rows.push((loss, mib, row));
    }
    bench.lab.set_loss(&router, 0.0);

    let mut competing = Vec::new();
    for congestion in &options.against {
        for contender in &contenders {
            let (ours, theirs) = bench.beside_tcp(contender, congestion, sizes[0]);
            println!(
                "LOSSY | beside TCP ({congestion}) | {} {ours} | TCP {theirs:.2} MiB/s",
                contender.name()
            );
            competing.push((congestion, contender.name(), ours, theirs));
        }
    }

    println!();
    print!("| random loss, both ways |");
    for contender in &contenders {
        print!(" {} |", contender.name());
    }
    println!();
    println!("|{}", " --- |".repeat(1 + contenders.len()));
    for (loss, mib, row) in &rows {
        print!("| {loss} % ({mib} MiB) | {} |", row[0]);
        for rate in &row[1..] {
            print!(" {rate} ({:.2}×) |", rate.mib_per_s / row[0].mib_per_s);
        }
        println!();
    }
    if !competing.is_empty() {
        println!();
        println!("| competing TCP flow | contender | contender's rate | TCP's rate meanwhile | TCP's share of the link |");
        println!("| --- | --- | --- | --- | --- |");
        for (congestion, name, ours, theirs) in &competing {
            println!(
                "| {congestion} | {name} | {ours} | {theirs:.2} MiB/s | {:.0} % |",
                100.0 * theirs / link
            );
        }
    }
    println!();
    println!(
        "LOSSY | frames the delay lines dropped (fell behind): {}",
        bench.lab.delay_line_drops()
    );
    drop(contenders);
    drop(tracker);
}
