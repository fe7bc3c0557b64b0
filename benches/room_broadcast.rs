//! Broadcast in a room of real nodes on loopback (one process, one
//! tracker): rooms of 50, 100 and 200 members gossiping over 8–10 links
//! each, and a full mesh of 50. For messages from authors spread over the
//! room, one at a time: the time until 50 %, 99 % and 100 % of the other
//! members show it, and the UDP bytes all members sent per message per
//! member (the room's idle traffic over as long subtracted). Run:
//! `cargo bench --bench room_broadcast` (docs/BENCHMARKS.md, "Rooms of
//! hundreds: gossip").

mod common;

use std::time::{Duration, Instant};

use common::{loopback, runtime};
use punchgate::identity::Identity;
use punchgate::node::{Event, Node, NodeConfig};
use punchgate::tracker::{Tracker, TrackerConfig};
use tokio::sync::mpsc;

const ROOM: &str = "broadcast";
const MESSAGES: usize = 10;
/// A deadline only.
const WAIT: Duration = Duration::from_secs(120);

/// One room's figures.
struct Report {
    latency: [Duration; 3],
    bytes_per_member: f64,
    links: f64,
}

/// UDP bytes every node has sent on its live connections.
fn bytes_out(nodes: &[Node]) -> u64 {
    nodes
        .iter()
        .flat_map(|node| node.gates())
        .map(|gate| gate.bytes_out)
        .sum()
}

fn links(nodes: &[Node]) -> usize {
    nodes.iter().map(|node| node.gates().len()).sum()
}

/// Waits until the room's links have not changed for three seconds (the
/// gossip settled after the joins).
async fn settle(nodes: &[Node]) {
    let mut last = (links(nodes), Instant::now());
    while last.1.elapsed() < Duration::from_secs(3) {
        tokio::time::sleep(Duration::from_millis(250)).await;
        let now = links(nodes);
        if now != last.0 {
            last = (now, Instant::now());
        }
    }
}

/// The time by which `share` of `arrivals` had come.
fn reached(arrivals: &mut [Duration], share: f64) -> Duration {
    arrivals.sort();
    let at = ((arrivals.len() as f64 * share).ceil() as usize).clamp(1, arrivals.len());
    arrivals[at - 1]
}

async fn room(members: usize, mesh: bool) -> Report {
    let identity = Identity::generate().unwrap();
    let tracker = Tracker::start(&identity, TrackerConfig::new(loopback())).unwrap();
    let (shown_tx, mut shown) = mpsc::unbounded_channel::<(usize, String, Instant)>();
    let mut nodes = Vec::new();
    let mut homes = Vec::new();
    for index in 0..members {
        let home = tempfile::tempdir().unwrap();
        let mut config = NodeConfig::new(format!("m{index:03}"));
        config.bind = loopback();
        config.trackers = vec![tracker.target().parse().unwrap()];
        config.rooms = vec![ROOM.into()];
        if mesh {
            config.gossip.active = members - 1;
            config.gossip.max_active = members + 1;
        }
        let (node, mut events) = Node::start(home.path(), config).await.unwrap();
        let shown_tx = shown_tx.clone();
        tokio::spawn(async move {
            while let Some(event) = events.next().await {
                if let Event::Message { text, .. } = event {
                    let _ = shown_tx.send((index, text, Instant::now()));
                }
            }
        });
        nodes.push(node);
        homes.push(home);
    }
    settle(&nodes).await;
    // The idle room: keep-alives, repair syncs, link swaps.
    let idle_from = bytes_out(&nodes);
    let idle_started = Instant::now();
    let mut latencies = [Vec::new(), Vec::new(), Vec::new()];
    let sent_from = {
        tokio::time::sleep(Duration::from_secs(5)).await;
        bytes_out(&nodes)
    };
    let idle_rate = (sent_from - idle_from) as f64 / idle_started.elapsed().as_secs_f64();
    let busy_started = Instant::now();
    for round in 0..MESSAGES {
        let author = round * members / MESSAGES;
        let text = format!("broadcast {round}");
        let sent_at = Instant::now();
        nodes[author].say(&text).await.unwrap();
        let mut arrivals = Vec::new();
        while arrivals.len() < members - 1 {
            let (who, shown_text, at) = tokio::time::timeout(WAIT, shown.recv())
                .await
                .unwrap_or_else(|_| panic!("{text}: {} of {} shown", arrivals.len(), members - 1))
                .unwrap();
            if shown_text == text && who != author {
                arrivals.push(at.duration_since(sent_at));
            }
        }
        for (slot, share) in [0.5, 0.99, 1.0].into_iter().enumerate() {
            latencies[slot].push(reached(&mut arrivals, share));
        }
    }
    // The acknowledgements of the last hops.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let busy = busy_started.elapsed().as_secs_f64();
    let sent = (bytes_out(&nodes) - sent_from) as f64 - idle_rate * busy;
    let links = links(&nodes) as f64 / members as f64;
    for node in &nodes {
        node.shutdown().await;
    }
    let median = |samples: &mut Vec<Duration>| {
        samples.sort();
        samples[samples.len() / 2]
    };
    Report {
        latency: [
            median(&mut latencies[0]),
            median(&mut latencies[1]),
            median(&mut latencies[2]),
        ],
        bytes_per_member: sent.max(0.0) / (MESSAGES * members) as f64,
        links,
    }
}

fn main() {
    let runtime = runtime();
    println!("| room | links per member | to 50 % | to 99 % | to 100 % | UDP bytes sent per message per member |");
    println!("| --- | --- | --- | --- | --- | --- |");
    for (members, mesh) in [(50, false), (100, false), (200, false), (50, true)] {
        let report = runtime.block_on(room(members, mesh));
        let ms = |d: Duration| d.as_secs_f64() * 1000.0;
        println!(
            "| {}, {members} | {:.1} | {:.0} ms | {:.0} ms | {:.0} ms | {:.0} B |",
            if mesh { "full mesh" } else { "gossip" },
            report.links,
            ms(report.latency[0]),
            ms(report.latency[1]),
            ms(report.latency[2]),
            report.bytes_per_member
        );
    }
}
