//! A room of 60 members on loopback, all joining at once through one
//! tracker with its default rate limits: every member ends connected to all
//! 59 others (introductions are paced under the tracker's limit and retried
//! when refused), and five messages from five authors each reach all 59
//! others. The issue this answers saw members stuck at 40–49 connections
//! and 45 of 295 deliveries missing.

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{config, start_node, TestNode};
use punchgate::node::Event;

const MEMBERS: usize = 60;
const AUTHORS: usize = 5;

/// Deadline for the room to become whole: a deadline only, generous for a
/// debug build on a loaded 2-core machine (each member asks for 59
/// introductions at 10 a second).
const WHOLE_WITHIN: Duration = Duration::from_secs(240);

/// Reads `member`'s events until it holds a connection to every id in
/// `others`; returns how long that took from `since`.
async fn whole(member: &mut TestNode, others: &HashSet<String>, since: Instant) -> Duration {
    let mut connected: HashSet<String> = HashSet::new();
    let deadline = since + WHOLE_WITHIN;
    while connected.len() < others.len() {
        let left = deadline.saturating_duration_since(Instant::now());
        let event = member.events.wait_for(left, |e| Some(e.clone())).await;
        let event = event.unwrap_or_else(|error| {
            let missing: Vec<_> = others.difference(&connected).collect();
            panic!(
                "{} connected to {} of {} ({error}); missing {missing:?}",
                member.id(),
                connected.len(),
                others.len()
            )
        });
        match event {
            Event::Connected { peer_id, .. } if others.contains(&peer_id) => {
                connected.insert(peer_id);
            }
            Event::Disconnected { peer_id, .. } => {
                connected.remove(&peer_id);
            }
            _ => {}
        }
    }
    since.elapsed()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_room_of_sixty_becomes_whole_and_every_message_reaches_all_others() {
    let tracker = common::start_tracker();
    let started = Instant::now();
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        let mut config = config(&format!("m{i:02}"), Some(&tracker), "big");
        // A full mesh on purpose: gossip's active view as large as the room.
        config.gossip.active = MEMBERS;
        config.gossip.max_active = MEMBERS;
        members.push(start_node(config).await);
    }
    let ids: Vec<String> = members.iter().map(TestNode::id).collect();
    let mut slowest = Duration::ZERO;
    for (i, member) in members.iter_mut().enumerate() {
        let others: HashSet<String> = ids
            .iter()
            .enumerate()
            .filter(|(j, _)| *j != i)
            .map(|(_, id)| id.clone())
            .collect();
        slowest = slowest.max(whole(member, &others, started).await);
    }
    eprintln!("BIG ROOM | {MEMBERS} members whole (59 connections each) within {slowest:.1?}");
    // Both sides of a pair dial each other, and one of two simultaneous
    // connections is closed as a duplicate once both are greeted: a
    // member may be between the two for a moment. Whole means it settles.
    let settle = Instant::now() + Duration::from_secs(60);
    for member in &members {
        loop {
            let open = member
                .node
                .peers()
                .iter()
                .filter(|p| p.path.is_some())
                .count();
            if open == MEMBERS - 1 {
                break;
            }
            assert!(
                Instant::now() < settle,
                "{} holds {open} connections",
                member.id()
            );
            // Polling a count that has no event of its own.
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
    eprintln!(
        "BIG ROOM | every member holds 59 connections {:.1?} after the start",
        started.elapsed()
    );

    let sent = Instant::now();
    for (i, author) in members.iter().take(AUTHORS).enumerate() {
        author
            .node
            .say(&format!("hello big room from m{i:02}"))
            .await
            .unwrap();
    }
    let mut deliveries = 0;
    for (i, member) in members.iter_mut().enumerate() {
        for author in (0..AUTHORS).filter(|a| *a != i) {
            let (from, _) = member
                .receives(&format!("hello big room from m{author:02}"))
                .await;
            assert_eq!(from, ids[author]);
            deliveries += 1;
        }
    }
    assert_eq!(deliveries, AUTHORS * (MEMBERS - 1));
    let duplicates: u64 = members.iter().map(|m| m.node.duplicates_closed()).sum();
    eprintln!("BIG ROOM | connections closed as duplicates, summed over members: {duplicates}");
    eprintln!(
        "BIG ROOM | {deliveries} deliveries of {AUTHORS} messages within {:.1?}",
        sent.elapsed()
    );
}
