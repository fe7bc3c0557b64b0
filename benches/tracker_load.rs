//! One tracker holding many registered peers: its memory per peer and the
//! introductions it makes per second under that load. The tracker is the
//! release binary in a process of its own (`punchgate tracker`, default
//! limits), so its resident memory is its own; the peers are sessions of
//! this process, each with its own identity, registered as a node does it
//! (register, join a room, open the relay stream), spread over 50 loopback
//! addresses (127.0.1.1–127.0.1.50) so that no address passes the 256
//! peers a source may register. Rooms hold 10 members from 10 addresses.
//!
//! Reported: the tracker's resident memory (VmRSS) at each quarter of the
//! peers and as they idle for three minutes (keep-alives only), the memory per peer
//! (the growth from the empty tracker, and the slope between the first
//! quarter and all), registrations per second, and rounds of one
//! introduction asked by every peer at once (to a room mate), timed from
//! the first request until both sides of every introduction had their
//! event, with the tracker's CPU time per introduction.
//!
//! Then the doorbell (`parked`): every peer parks its registration and
//! knocks on the tracker's second port; reported are the tracker's memory
//! and CPU while they knock (the memory the connections held may stay
//! with the allocator), then, from a fresh tracker, the memory per parked
//! peer as peers register and park in quarters, knocks answered per second
//! and the tracker's CPU at the normal knock rate and at five times it,
//! and introductions to parked peers (ring, resume on a new connection,
//! introduce), with the time from the request to the parked side's
//! introduction.
//!
//! Run: `cargo bench --bench tracker_load` (about ten minutes here;
//! `TRACKER_PEERS=N` for another count; `TRACKER_ONLY_PARKED=1` for the
//! fresh tracker's part alone; `TRACKER_WRAP=heaptrack` runs the
//! tracker under a wrapper such as a heap profiler, whose own memory the
//! figures then are). docs/BENCHMARKS.md, "One tracker, 10,000 peers".

mod common;
#[path = "tracker_load/parked.rs"]
mod parked;

use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{runtime, SocketBuffers};
use punchgate::endpoint::{self, Liveness, Target};
use punchgate::identity::{Identity, PeerId};
use punchgate::protocol::{Presence, TrackerEvent, TrackerRequestBody, TrackerResponse};
use punchgate::tls::CertifiedIdentity;
use punchgate::tracker::client::{Registration, RelayStream};
use punchgate::tracker::{SessionEvent, TrackerSession};
use tokio::sync::Semaphore;
use tokio::task::JoinSet;

/// Loopback addresses the peers come from.
const SOURCES: usize = 50;
const ROOM_SIZE: usize = 10;
/// Registrations in flight at once (the tracker refuses more than 256
/// unregistered connections).
const IN_FLIGHT: usize = 64;
/// Rounds of introductions.
const ROUNDS: usize = 3;
/// Idling after the registrations, measured at each step
/// (`TRACKER_IDLE_STEPS` of them).
const IDLE_STEPS: usize = 6;
const IDLE_STEP: Duration = Duration::from_secs(30);
/// A deadline only.
const WAIT: Duration = Duration::from_secs(120);

/// The tracker in its own process.
struct TrackerProcess {
    child: Child,
    target: Target,
    _home: tempfile::TempDir,
}

impl TrackerProcess {
    fn start(args: &[&str]) -> Self {
        let home = tempfile::tempdir().unwrap();
        let wrap = std::env::var("TRACKER_WRAP").ok();
        let mut command = match &wrap {
            Some(wrapper) => {
                let mut command = Command::new(wrapper);
                command.arg(env!("CARGO_BIN_EXE_punchgate"));
                command
            }
            None => Command::new(env!("CARGO_BIN_EXE_punchgate")),
        };
        let mut child = command
            .arg("--home")
            .arg(home.path())
            .args(["--json", "tracker", "--listen", "127.0.0.1:0"])
            .args(args)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let ready: serde_json::Value = loop {
            let mut line = String::new();
            stdout.read_line(&mut line).unwrap();
            if let Ok(ready) = serde_json::from_str(&line) {
                break ready;
            }
        };
        let target = ready["target"].as_str().unwrap().parse().unwrap();
        Self {
            child,
            target,
            _home: home,
        }
    }

    fn status(&self, field: &str) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.child.id())).unwrap();
        status
            .lines()
            .find_map(|line| line.strip_prefix(field))
            .and_then(|rest| rest.split_whitespace().next())
            .unwrap()
            .parse()
            .unwrap()
    }

    /// Resident memory, bytes.
    fn rss(&self) -> u64 {
        self.status("VmRSS:") * 1024
    }

    /// CPU time (user + system) so far.
    fn cpu(&self) -> Duration {
        common::cpu_of(&self.child.id().to_string())
    }
}

impl Drop for TrackerProcess {
    fn drop(&mut self) {
        // Under `TRACKER_WRAP` the tracker is the wrapper's child: stop it
        // first (SIGTERM, so a profiler sees it exit).
        let pid = self.child.id();
        let children =
            std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children")).unwrap_or_default();
        let wrapped: Vec<libc::pid_t> = children
            .split_whitespace()
            .filter_map(|p| p.parse().ok())
            .collect();
        for child in &wrapped {
            unsafe { libc::kill(*child, libc::SIGTERM) };
        }
        if wrapped.is_empty() {
            let _ = self.child.kill();
        }
        let _ = self.child.wait();
    }
}

/// One registered peer, as a node holds it.
struct Peer {
    id: PeerId,
    session: Arc<TrackerSession>,
    _relay: Option<RelayStream>,
}

fn load() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .unwrap_or_default()
        .split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn mib(bytes: u64) -> f64 {
    bytes as f64 / (1 << 20) as f64
}

/// A fresh identity registered as a member named `name` with `target`.
pub(crate) struct Fresh {
    pub identity: Identity,
    pub certified: CertifiedIdentity,
    pub session: TrackerSession,
    pub events: tokio::sync::mpsc::Receiver<SessionEvent>,
}

pub(crate) async fn register_fresh(
    endpoint: &quinn::Endpoint,
    target: &Target,
    home: &std::path::Path,
    name: &str,
) -> Fresh {
    let identity = Identity::generate().unwrap();
    let certified = CertifiedIdentity::new(&identity).unwrap();
    let (session, events) = TrackerSession::connect(
        endpoint,
        &certified,
        home,
        target,
        Liveness::default(),
        Registration {
            name,
            local_addrs: Vec::new(),
            presence: Presence::Member,
        },
    )
    .await
    .unwrap();
    Fresh {
        identity,
        certified,
        session,
        events,
    }
}

async fn register(
    endpoint: quinn::Endpoint,
    target: Target,
    home: std::path::PathBuf,
    index: usize,
    introduced: Arc<AtomicU64>,
) -> Peer {
    let Fresh {
        identity,
        session,
        mut events,
        ..
    } = register_fresh(&endpoint, &target, &home, &format!("p{index}")).await;
    tokio::spawn(async move {
        while let Some(event) = events.recv().await {
            if matches!(event, SessionEvent::Tracker(TrackerEvent::Introduce { .. })) {
                introduced.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    session
        .join(&format!("room{}", index / ROOM_SIZE))
        .await
        .unwrap();
    let (_, relay) = session.open_relay().await.unwrap();
    Peer {
        id: identity.peer_id(),
        session: Arc::new(session),
        _relay: relay,
    }
}

fn source_endpoints() -> Vec<quinn::Endpoint> {
    (0..SOURCES)
        .map(|k| {
            let addr = SocketAddr::from((Ipv4Addr::new(127, 0, 1, k as u8 + 1), 0));
            endpoint::bind_with(addr, None, SocketBuffers::default())
                .unwrap()
                .endpoint
        })
        .collect()
}

async fn run(peers_wanted: usize) {
    println!("load average at start: {}", load());
    let tracker = TrackerProcess::start(&[]);
    let home = tempfile::tempdir().unwrap();
    let endpoints = source_endpoints();
    let introduced = Arc::new(AtomicU64::new(0));
    let empty = tracker.rss();
    println!(
        "tracker: {}, empty: {:.1} MiB resident",
        tracker.target,
        mib(empty)
    );
    println!("| peers | resident | per peer since empty | registrations/s |");
    println!("| --- | --- | --- | --- |");
    let mut peers: Vec<Peer> = Vec::with_capacity(peers_wanted);
    let mut first_quarter = None;
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    for step in 1..=4 {
        let upto = peers_wanted * step / 4;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for index in peers.len()..upto {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let registering = register(
                endpoints[index % SOURCES].clone(),
                tracker.target.clone(),
                home.path().to_path_buf(),
                index,
                introduced.clone(),
            );
            tasks.spawn(async move {
                let peer = registering.await;
                drop(permit);
                (index, peer)
            });
        }
        let mut batch = tasks.join_all().await;
        batch.sort_by_key(|(index, _)| *index);
        let count = batch.len();
        peers.extend(batch.into_iter().map(|(_, peer)| peer));
        let took = started.elapsed();
        let rss = tracker.rss();
        if step == 1 {
            first_quarter = Some((peers.len(), rss));
        }
        println!(
            "| {} | {:.1} MiB | {:.1} KiB | {:.0} |",
            peers.len(),
            mib(rss),
            (rss - empty) as f64 / 1024.0 / peers.len() as f64,
            count as f64 / took.as_secs_f64()
        );
    }
    // Keep-alives only, for a while: what the tracker holds in steady
    // state. quinn's queue of each connection's incoming datagrams takes a
    // second block of slots after its 32nd datagram and keeps it, so the
    // memory grows for the first minute or two of keep-alives.
    let (quarter_peers, quarter_rss) = first_quarter.unwrap();
    println!("| idle for | resident | per peer since empty | per peer from {quarter_peers} to {} | tracker CPU |", peers.len());
    println!("| --- | --- | --- | --- | --- |");
    let idle_started = Instant::now();
    let mut cpu_before = tracker.cpu();
    let idle_steps = std::env::var("TRACKER_IDLE_STEPS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(IDLE_STEPS);
    for _ in 0..idle_steps {
        tokio::time::sleep(IDLE_STEP).await;
        let rss = tracker.rss();
        let cpu = tracker.cpu();
        println!(
            "| {:.0} s | {:.1} MiB | {:.1} KiB | {:.1} KiB | {:.0} % |",
            idle_started.elapsed().as_secs_f64(),
            mib(rss),
            (rss - empty) as f64 / 1024.0 / peers.len() as f64,
            (rss as f64 - quarter_rss as f64) / 1024.0 / (peers.len() - quarter_peers) as f64,
            (cpu - cpu_before).as_secs_f64() * 100.0 / IDLE_STEP.as_secs_f64(),
        );
        cpu_before = cpu;
    }
    println!("load average: {}", load());

    // Every peer asks for an introduction to a room mate, all at once.
    println!(
        "| round | introductions | seconds | introductions/s | tracker CPU per introduction |"
    );
    println!("| --- | --- | --- | --- | --- |");
    for round in 1..=ROUNDS {
        let before = introduced.load(Ordering::Relaxed);
        let cpu_before = tracker.cpu();
        let started = Instant::now();
        let mut asks = JoinSet::new();
        for (index, peer) in peers.iter().enumerate() {
            let room = index / ROOM_SIZE * ROOM_SIZE;
            let mate = room + (index - room + round) % ROOM_SIZE;
            let Some(mate) = peers.get(mate) else {
                continue;
            };
            let session = peer.session.clone();
            let body = TrackerRequestBody::Connect { peer: mate.id };
            asks.spawn(async move { session.request(body).await });
        }
        let asked = asks.len() as u64;
        for answer in asks.join_all().await {
            assert!(
                matches!(answer, Ok(TrackerResponse::Introducing { .. })),
                "{answer:?}"
            );
        }
        let deadline = Instant::now() + WAIT;
        while introduced.load(Ordering::Relaxed) - before < 2 * asked {
            assert!(
                Instant::now() < deadline,
                "introductions did not all arrive"
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed();
        let cpu = tracker.cpu() - cpu_before;
        println!(
            "| {round} | {asked} | {:.2} | {:.0} | {:.0} µs |",
            took.as_secs_f64(),
            asked as f64 / took.as_secs_f64(),
            cpu.as_secs_f64() * 1e6 / asked as f64
        );
    }
    println!(
        "after the introductions: {:.1} MiB resident (load {})",
        mib(tracker.rss()),
        load()
    );
    park_them_all(&tracker, peers, empty).await;
}

fn main() {
    let peers = std::env::var("TRACKER_PEERS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(10_000);
    let runtime = runtime();
    if std::env::var_os("TRACKER_ONLY_PARKED").is_none() {
        runtime.block_on(run(peers));
    }
    runtime.block_on(parked_from_fresh(peers));
}

/// Knocking for a while at `every` per peer: memory, CPU and knocks
/// answered per second, at each step.
async fn knock_steps(
    tracker: &TrackerProcess,
    doorbells: &parked::Doorbells,
    empty: u64,
    parked_count: usize,
    steps: usize,
    label: &str,
) {
    println!("| {label} | resident | per parked peer since empty | knocks sent/s | answered/s | tracker CPU |");
    println!("| --- | --- | --- | --- | --- | --- |");
    let started = Instant::now();
    for _ in 0..steps {
        let (cpu_before, sent_before, answered_before) = (
            tracker.cpu(),
            doorbells.sent.load(Ordering::Relaxed),
            doorbells.answered.load(Ordering::Relaxed),
        );
        let step_started = Instant::now();
        tokio::time::sleep(knock_step()).await;
        let took = step_started.elapsed().as_secs_f64();
        let rss = tracker.rss();
        println!(
            "| {:.0} s | {:.1} MiB | {:.2} KiB | {:.0} | {:.0} | {:.1} % |",
            started.elapsed().as_secs_f64(),
            mib(rss),
            (rss as f64 - empty as f64) / 1024.0 / parked_count as f64,
            (doorbells.sent.load(Ordering::Relaxed) - sent_before) as f64 / took,
            (doorbells.answered.load(Ordering::Relaxed) - answered_before) as f64 / took,
            (tracker.cpu() - cpu_before).as_secs_f64() * 100.0 / took,
        );
    }
}

/// One step of knocking (`TRACKER_STEP_SECS`, default 30).
fn knock_step() -> Duration {
    let secs = std::env::var("TRACKER_STEP_SECS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(30);
    Duration::from_secs(secs)
}

/// The peers of the first part park, all at once (64 in flight), and then
/// knock: what the tracker's memory and CPU do once their connections are
/// gone.
async fn park_them_all(tracker: &TrackerProcess, peers: Vec<Peer>, empty: u64) {
    let started = Instant::now();
    let tracker_ip = tracker.target.resolve().await.unwrap().ip();
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut tasks = JoinSet::new();
    for (index, peer) in peers.iter().enumerate() {
        let permit = gate.clone().acquire_owned().await.unwrap();
        let session = peer.session.clone();
        let (id, source) = (peer.id, index % SOURCES);
        tasks.spawn(async move {
            let at = parked::park(&session, tracker_ip).await;
            session.close();
            drop(permit);
            (index, id, source, at)
        });
    }
    let parked_peers = tasks.join_all().await;
    let took = started.elapsed();
    let count = peers.len();
    drop(peers);
    let (aux, every) = (parked_peers[0].3.aux, parked_peers[0].3.knock_every);
    println!(
        "parked all {count} in {:.1} s ({:.0}/s); resident {:.1} MiB",
        took.as_secs_f64(),
        count as f64 / took.as_secs_f64(),
        mib(tracker.rss())
    );
    let knockers: Vec<_> = parked_peers
        .iter()
        .map(|(index, id, source, at)| (*index, *id, *source, at.ticket))
        .collect();
    let (rings, _) = tokio::sync::mpsc::unbounded_channel();
    let mut doorbells =
        parked::Doorbells::start(&knockers, count, SOURCES, aux, every, rings).await;
    knock_steps(tracker, &doorbells, empty, count, 3, "parked, knocking for").await;
    doorbells.stop();
    println!("load average: {}", load());
}

/// Askers per round of introductions to parked peers, each asking for
/// every parked member of its room.
const ASKERS: usize = 20;

/// A fresh tracker: peers register and park in quarters (64 in flight, so
/// few connections are ever open at once), knock, and are introduced to.
async fn parked_from_fresh(peers_wanted: usize) {
    println!("load average at start: {}", load());
    let max_peers = (peers_wanted + ROUNDS * ASKERS + 100).to_string();
    let tracker = TrackerProcess::start(&["--max-peers", &max_peers]);
    let home = tempfile::tempdir().unwrap();
    let endpoints = Arc::new(source_endpoints());
    let empty = tracker.rss();
    println!(
        "fresh tracker: {}, empty: {:.1} MiB resident",
        tracker.target,
        mib(empty)
    );
    println!("| parked peers | resident | per parked peer since empty | registered and parked/s |");
    println!("| --- | --- | --- | --- |");
    let gate = Arc::new(Semaphore::new(IN_FLIGHT));
    let mut all: Vec<(parked::ParkedPeer, parked::ParkedAt)> = Vec::new();
    for step in 1..=4 {
        let upto = peers_wanted * step / 4;
        let started = Instant::now();
        let mut tasks = JoinSet::new();
        for index in all.len()..upto {
            let permit = gate.clone().acquire_owned().await.unwrap();
            let parking = parked::register_and_park(
                endpoints[index % SOURCES].clone(),
                tracker.target.clone(),
                home.path().to_path_buf(),
                index,
                index % SOURCES,
                format!("room{}", index / ROOM_SIZE),
            );
            tasks.spawn(async move {
                let parked = parking.await;
                drop(permit);
                parked
            });
        }
        let mut batch = tasks.join_all().await;
        let count = batch.len();
        let took = started.elapsed();
        batch.sort_by_key(|(peer, _)| peer.index);
        all.extend(batch);
        let rss = tracker.rss();
        println!(
            "| {} | {:.1} MiB | {:.2} KiB | {:.0} |",
            all.len(),
            mib(rss),
            (rss - empty) as f64 / 1024.0 / all.len() as f64,
            count as f64 / took.as_secs_f64()
        );
    }
    let (aux, every) = (all[0].1.aux, all[0].1.knock_every);
    let knockers: Vec<_> = all
        .iter()
        .map(|(peer, at)| (peer.index, peer.id, peer.source, at.ticket))
        .collect();
    let (rings_tx, rings_rx) = tokio::sync::mpsc::unbounded_channel();
    let mut doorbells =
        parked::Doorbells::start(&knockers, all.len(), SOURCES, aux, every, rings_tx).await;
    knock_steps(
        &tracker,
        &doorbells,
        empty,
        all.len(),
        4,
        &format!("knocking every {} s for", every.as_secs()),
    )
    .await;
    doorbells
        .every_ms
        .store(every.as_millis() as u64 / 5, Ordering::Relaxed);
    // The knock loops take the new interval at their next round.
    knock_steps(
        &tracker,
        &doorbells,
        empty,
        all.len(),
        3,
        &format!("knocking every {} s for", every.as_secs_f64() / 5.0),
    )
    .await;
    doorbells
        .every_ms
        .store(every.as_millis() as u64, Ordering::Relaxed);
    println!("load average: {}", load());

    // Introductions to parked peers: each round, ASKERS connected peers
    // join the rooms of ten parked peers each and ask for all ten at once.
    let peers: Arc<Vec<parked::ParkedPeer>> =
        Arc::new(all.into_iter().map(|(peer, _)| peer).collect());
    let resumed = Arc::new(AtomicU64::new(0));
    let asker_introduced = Arc::new(AtomicU64::new(0));
    let latencies = Arc::new(std::sync::Mutex::new(Vec::new()));
    let asked_at = Arc::new(std::sync::Mutex::new(std::collections::HashMap::new()));
    let resumer = parked::spawn_resumer(
        rings_rx,
        peers.clone(),
        doorbells.tickets.clone(),
        endpoints.clone(),
        tracker.target.clone(),
        resumed.clone(),
        latencies.clone(),
        asked_at.clone(),
        IN_FLIGHT,
    );
    println!("| round | introductions to parked peers | seconds | introductions/s | request to parked side's introduction: median, 90th | tracker CPU per introduction |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for round in 0..ROUNDS {
        let rooms: Vec<usize> = (round * ASKERS..(round + 1) * ASKERS)
            .filter(|r| (r + 1) * ROOM_SIZE <= peers.len())
            .collect();
        let mut askers = Vec::new();
        for (n, room) in rooms.iter().enumerate() {
            let session = parked::asker(
                &endpoints[n % SOURCES],
                &tracker.target,
                home.path(),
                &format!("room{room}"),
                asker_introduced.clone(),
            )
            .await;
            askers.push((Arc::new(session), *room));
        }
        latencies.lock().unwrap().clear();
        let (resumed_before, asked_before) = (
            resumed.load(Ordering::Relaxed),
            asker_introduced.load(Ordering::Relaxed),
        );
        let cpu_before = tracker.cpu();
        let started = Instant::now();
        let mut asks = JoinSet::new();
        for (session, room) in &askers {
            for index in room * ROOM_SIZE..(room + 1) * ROOM_SIZE {
                asked_at.lock().unwrap().insert(index, Instant::now());
                let session = session.clone();
                let body = TrackerRequestBody::Connect {
                    peer: peers[index].id,
                };
                asks.spawn(async move { session.request(body).await });
            }
        }
        let asked = asks.len() as u64;
        for answer in asks.join_all().await {
            assert!(
                matches!(answer, Ok(TrackerResponse::Introducing { .. })),
                "{answer:?}"
            );
        }
        let deadline = Instant::now() + WAIT;
        while resumed.load(Ordering::Relaxed) - resumed_before < asked
            || asker_introduced.load(Ordering::Relaxed) - asked_before < asked
        {
            assert!(
                Instant::now() < deadline,
                "introductions to parked peers did not all arrive ({} of {asked} resumed)",
                resumed.load(Ordering::Relaxed) - resumed_before
            );
            tokio::time::sleep(Duration::from_millis(2)).await;
        }
        let took = started.elapsed();
        let cpu = tracker.cpu() - cpu_before;
        let mut times = latencies.lock().unwrap().clone();
        times.sort();
        let at = |q: f64| times[((times.len() - 1) as f64 * q) as usize].as_secs_f64() * 1e3;
        println!(
            "| {} | {asked} | {:.2} | {:.0} | {:.0} ms, {:.0} ms | {:.0} µs |",
            round + 1,
            took.as_secs_f64(),
            asked as f64 / took.as_secs_f64(),
            at(0.5),
            at(0.9),
            cpu.as_secs_f64() * 1e6 / asked as f64
        );
        for (session, _) in &askers {
            session.close();
        }
    }
    println!("load average: {}", load());
    resumer.abort();
    doorbells.stop();
}
