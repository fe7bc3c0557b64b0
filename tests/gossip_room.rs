//! A room of 200 members on loopback, one process, one tracker: the rooms'
//! gossip keeps each member connected to a few others (never more than 12)
//! instead of all 199, and five messages from five authors each reach all
//! 199 others through it; `/peers` shows every other member connected or
//! reached through the room. Prints the latency to 50 %, 99 % and 100 % of
//! the members (docs/BENCHMARKS.md).

mod common;

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use common::{config, start_node, TestNode};
use punchgate::node::{Event, PeerInfo, PeerStatus};

const MEMBERS: usize = 200;
const MAX_LINKS: usize = 12;
/// A deadline only, for a debug build on a loaded 2-core machine.
const WAIT_ALL: Duration = Duration::from_secs(120);

fn open_connections(member: &TestNode) -> usize {
    member
        .node
        .peers()
        .iter()
        .filter(|p| p.path.is_some())
        .count()
}

/// The time by which `share` of `arrivals` had come.
fn reached(arrivals: &mut [Duration], share: f64) -> Duration {
    arrivals.sort();
    let at = ((arrivals.len() as f64 * share).ceil() as usize).clamp(1, arrivals.len());
    arrivals[at - 1]
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_two_hundred_gossips_every_message_to_all_over_a_few_connections_each() {
    // Every member registers from 127.0.0.1: within the tracker's default
    // of 256 per address.
    let tracker = common::start_tracker();
    let started = Instant::now();
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(start_node(config(&format!("g{i:03}"), Some(&tracker), "big")).await);
    }
    eprintln!(
        "GOSSIP ROOM | {MEMBERS} members started within {:.1?}",
        started.elapsed()
    );
    let ids: Vec<String> = members.iter().map(TestNode::id).collect();
    let nodes: Vec<_> = members.iter().map(|m| m.node.clone()).collect();

    // Authors spread over the room: the first, the last, three between.
    let authors = [0, 57, 101, 150, MEMBERS - 1];
    let text_of = |author: usize| format!("hello gossip room from g{author:03}");
    // Every member watches for the messages from now on, each arrival timed
    // as it comes.
    let mut watchers = Vec::new();
    for (i, mut member) in members.into_iter().enumerate() {
        let expected: HashMap<String, String> = authors
            .iter()
            .filter(|a| **a != i)
            .map(|a| (text_of(*a), ids[*a].clone()))
            .collect();
        watchers.push(tokio::spawn(async move {
            let mut arrived: HashMap<String, Instant> = HashMap::new();
            let deadline = Instant::now() + WAIT_ALL;
            while arrived.len() < expected.len() {
                let left = deadline.saturating_duration_since(Instant::now());
                let got = member
                    .events
                    .wait_for(left, |e| match e {
                        Event::Message { text, from, .. } if expected.contains_key(text) => {
                            Some((text.clone(), from.clone()))
                        }
                        _ => None,
                    })
                    .await;
                let (text, from) = got.unwrap_or_else(|error| {
                    panic!(
                        "{} got {} of {} messages: {error}",
                        member.id(),
                        arrived.len(),
                        expected.len()
                    )
                });
                assert_eq!(expected[&text], from, "{text} from its author");
                assert!(
                    arrived.insert(text.clone(), Instant::now()).is_none(),
                    "{} shown twice",
                    text
                );
            }
            (member, arrived)
        }));
    }
    let mut sent_at = HashMap::new();
    for author in authors {
        sent_at.insert(text_of(author), Instant::now());
        nodes[author].say(&text_of(author)).await.unwrap();
    }
    let mut members = Vec::new();
    let mut latencies: HashMap<String, Vec<Duration>> = HashMap::new();
    for watcher in watchers {
        let (member, arrived) = watcher.await.unwrap();
        for (text, at) in arrived {
            latencies
                .entry(text.clone())
                .or_default()
                .push(at.duration_since(sent_at[&text]));
        }
        members.push(member);
    }
    for author in authors {
        let arrivals = latencies.get_mut(&text_of(author)).unwrap();
        assert_eq!(arrivals.len(), MEMBERS - 1);
        eprintln!(
            "GOSSIP ROOM | from g{author:03}: 50 % within {:.2?}, 99 % within {:.2?}, 100 % within {:.2?}",
            reached(arrivals, 0.5),
            reached(arrivals, 0.99),
            reached(arrivals, 1.0)
        );
    }
    let counts: Vec<usize> = members.iter().map(open_connections).collect();
    let most = counts.iter().max().copied().unwrap_or(0);
    let mean = counts.iter().sum::<usize>() as f64 / counts.len() as f64;
    eprintln!("GOSSIP ROOM | connections per member: mean {mean:.1}, most {most}");
    let duplicates: u64 = members.iter().map(|m| m.node.duplicates_closed()).sum();
    eprintln!("GOSSIP ROOM | connections closed as duplicates, summed over members: {duplicates}");
    for (member, count) in members.iter().zip(&counts) {
        assert!(
            *count <= MAX_LINKS,
            "{} holds {count} connections",
            member.id()
        );
    }
    let unique: HashSet<&String> = ids.iter().collect();
    assert_eq!(unique.len(), MEMBERS);
    // `/peers`: every other member is connected (or connecting, in a link
    // swap) or reached through the room; none offline or yet to connect,
    // links the gossip let go included.
    for member in &members {
        let peers = member.node.peers();
        assert_eq!(peers.len(), MEMBERS - 1, "{}", member.id());
        let elsewhere: Vec<&PeerInfo> = peers
            .iter()
            .filter(|p| {
                !matches!(
                    p.status,
                    PeerStatus::Connected | PeerStatus::Connecting | PeerStatus::InRoom
                )
            })
            .collect();
        assert!(elsewhere.is_empty(), "{} sees {elsewhere:?}", member.id());
        assert!(
            peers.iter().any(|p| p.status == PeerStatus::InRoom),
            "{}",
            member.id()
        );
    }
}
