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
//! is what it fetched so far (marked `>`, "at least"). `sendme`, when on the
//! PATH, is not run: it needs relays or DNS discovery that the lab does not
//! have (see docs/BENCHMARKS.md).

#[allow(dead_code)]
#[path = "../tests/natlab/flows.rs"]
mod flows;
#[allow(dead_code)]
#[path = "../tests/natlab/lab.rs"]
mod lab;
#[allow(dead_code)]
#[path = "../tests/common/process.rs"]
mod process;

use std::time::{Duration, Instant};

use flows::Flow;
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
    competing: bool,
}

fn options() -> Options {
    let mut options = Options {
        losses: vec![0.0, 0.1, 1.0, 3.0],
        mib: 32,
        mib_lossless: 64,
        congestion: vec!["default".into()],
        limit: Duration::from_secs(60),
        competing: true,
    };
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        let mut value = || args.next().unwrap_or_else(|| panic!("{arg} needs a value"));
        match arg.as_str() {
            "--loss" => {
                options.losses = value()
                    .split(',')
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
            "--no-competing" => options.competing = false,
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

/// A TCP download of `bytes` from the public host into `receiver`.
fn tcp_download(receiver: &Host, server: &str, bytes: u64, limit: Duration) -> Measured {
    let (got, secs) = flows::download(&receiver.netns, server, TCP_PORT, bytes, limit);
    Measured {
        mib_per_s: got as f64 / MIB / secs,
        at_least: got < bytes,
    }
}

/// One `punchgate get` of `ticket` in `receiver`; the rate from `connected`
/// to `transfer_done`, and when those were.
fn punchgate_get(
    receiver: &Host,
    ticket: &str,
    extra: &[&str],
    limit: Duration,
) -> (Measured, Instant, Instant) {
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
                return (rate, started, now);
            }
            Some(event) => fetched = event["bytes"].as_f64().unwrap_or(fetched),
            None => {
                let rate = Measured {
                    mib_per_s: fetched / MIB / secs,
                    at_least: true,
                };
                return (rate, started, now);
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
    let (sender, receiver) = (&sender_site.hosts[0], &receiver_site.hosts[0]);
    let server_ip = sender.ip.to_string();

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
    let mut files = Vec::new();
    for &mib in &sizes {
        let file = work.path().join(format!("payload-{mib}.bin"));
        let payload: Vec<u8> = (0..mib << 20)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 13) as u8)
            .collect();
        std::fs::write(&file, payload).expect("payload written");
        files.push(file);
    }

    // One sender per controller and payload, each on its own port of the
    // public host.
    let mut senders = Vec::new();
    let mut port = HOST_PORT;
    for controller in &options.congestion {
        let mut tickets = Vec::new();
        let mut procs = Vec::new();
        for file in &files {
            port += 1;
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
            procs.push(proc);
        }
        senders.push((controller.clone(), procs, tickets));
    }

    let link = LINKS.rate.expect("a shaped link").bytes_per_s() / MIB;
    println!(
        "LOSSY | path: 100 Mbit/s ({link:.2} MiB/s of frames) per link, 50 ms queue, 10 ms per link (40 ms RTT), {} MiB per transfer ({} MiB at 0 %), limit {} s",
        options.mib,
        options.mib_lossless,
        options.limit.as_secs()
    );
    let mut rows = Vec::new();
    for &loss in &options.losses {
        lab.set_loss(&router, loss);
        let size = if loss == 0.0 { sizes.len() - 1 } else { 0 };
        let bytes = sizes[size] << 20;
        let tcp = tcp_download(receiver, &server_ip, bytes, options.limit);
        println!("LOSSY | loss {loss} % | TCP download | {tcp}");
        let mut row = vec![tcp];
        for (controller, _, tickets) in &senders {
            let flag = congestion_flag(controller);
            let (rate, _, _) = punchgate_get(receiver, &tickets[size], &flag, options.limit);
            println!(
                "LOSSY | loss {loss} % | punchgate {controller} | {rate} | {:.2}× TCP",
                rate.mib_per_s / tcp.mib_per_s
            );
            row.push(rate);
        }
        rows.push((loss, row));
    }
    lab.set_loss(&router, 0.0);

    let mut competing = Vec::new();
    if options.competing {
        for (controller, _, tickets) in &senders {
            let ours = against_tcp(receiver, &server_ip, &tickets[0], controller, &options);
            competing.push((controller.clone(), ours));
        }
    }

    println!();
    print!("| random loss, both ways | plain TCP download |");
    for controller in &options.congestion {
        print!(" punchgate ({controller}) |");
    }
    println!();
    println!("|{}", " --- |".repeat(2 + options.congestion.len()));
    for (loss, row) in &rows {
        let mib = if *loss == 0.0 {
            sizes[sizes.len() - 1]
        } else {
            sizes[0]
        };
        print!("| {loss} % ({mib} MiB) | {} |", row[0]);
        for rate in &row[1..] {
            print!(" {rate} ({:.2}×) |", rate.mib_per_s / row[0].mib_per_s);
        }
        println!();
    }
    if !competing.is_empty() {
        println!();
        println!("| controller | punchgate beside TCP | TCP beside punchgate | TCP's share of the link |");
        println!("| --- | --- | --- | --- |");
        for (controller, (ours, theirs)) in &competing {
            println!(
                "| {controller} | {ours} | {theirs:.2} MiB/s | {:.0} % |",
                100.0 * theirs / link
            );
        }
    }
    println!();
    println!(
        "LOSSY | frames the delay lines dropped (fell behind): {}",
        lab.delay_line_drops()
    );
    drop(senders);
    drop(tracker);
}

/// punchgate's rate, and the TCP flow's during the same time, while a TCP
/// download runs over the same path at 0 % loss.
fn against_tcp(
    receiver: &Host,
    server: &str,
    ticket: &str,
    controller: &str,
    options: &Options,
) -> (Measured, f64) {
    let seconds = (options.limit.as_secs() + 30).to_string();
    let flow = Flow::start(
        &receiver.netns,
        &["fetch", server, &TCP_PORT.to_string(), "0", &seconds],
    );
    // Let TCP reach its rate first: punchgate arrives on a busy link.
    let mut samples = Vec::new();
    loop {
        let (at, line) = flow
            .next(Duration::from_secs(30))
            .expect("the TCP flow reports");
        let secs = line["secs"].as_f64().unwrap_or(0.0);
        samples.push((at, line["bytes"].as_f64().unwrap_or(0.0)));
        if secs >= 3.0 {
            break;
        }
    }
    let flag = congestion_flag(controller);
    let (ours, started, ended) = punchgate_get(receiver, ticket, &flag, options.limit);
    while let Some((at, line)) = flow.next(Duration::from_millis(500)) {
        samples.push((at, line["bytes"].as_f64().unwrap_or(0.0)));
        if at > ended {
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
    let tcp_bytes = bytes_at(ended) - bytes_at(started);
    let theirs = tcp_bytes / MIB / (ended - started).as_secs_f64();
    println!("LOSSY | competing | punchgate {controller} {ours} | TCP {theirs:.2} MiB/s");
    (ours, theirs)
}
