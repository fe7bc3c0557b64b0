//! Churn in a room of 200 on loopback: while twenty messages are written,
//! 40 members (20 %) leave and 40 others join, two and two between
//! messages. Every member that stayed, and every one that joined, ends with
//! every message, shown exactly once, and the same history in the same
//! (clock) order.

mod common;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use common::{config, start_node, TestNode};
use punchgate::node::Event;
use tokio::task::JoinHandle;

const MEMBERS: usize = 200;
const ROUNDS: usize = 20;
/// A deadline only, for a debug build on a loaded 2-core machine.
const WAIT_ALL: Duration = Duration::from_secs(180);

fn text_of(round: usize) -> String {
    format!("churn message {round:02}")
}

/// Watches `member` until it has shown every one of the round messages
/// but its own (`own`), each once.
fn watch(mut member: TestNode, own: Option<usize>) -> JoinHandle<TestNode> {
    tokio::spawn(async move {
        let mut shown: HashMap<String, usize> = HashMap::new();
        let deadline = Instant::now() + WAIT_ALL;
        let expected = ROUNDS - usize::from(own.is_some());
        while shown.len() < expected {
            let left = deadline.saturating_duration_since(Instant::now());
            let got = member
                .events
                .wait_for(left, |e| match e {
                    Event::Message { text, .. } if text.starts_with("churn message ") => {
                        Some(text.clone())
                    }
                    _ => None,
                })
                .await;
            let text = got.unwrap_or_else(|error| {
                panic!(
                    "{} showed {} of {expected}: {error}",
                    member.id(),
                    shown.len()
                )
            });
            let count = shown.entry(text.clone()).or_default();
            *count += 1;
            assert_eq!(*count, 1, "{} showed {text} twice", member.id());
        }
        member
    })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn under_churn_every_member_that_stayed_gets_every_message_once_in_order() {
    let tracker = common::start_tracker();
    let mut members = Vec::new();
    for i in 0..MEMBERS {
        members.push(Some(
            start_node(config(&format!("c{i:03}"), Some(&tracker), "churn")).await,
        ));
    }
    // Leavers: every fifth from 1; authors: every fifth from 2 (they stay).
    let leaving: Vec<usize> = (0..MEMBERS).filter(|i| i % 5 == 1).collect();
    let authors: Vec<usize> = (0..MEMBERS).filter(|i| i % 5 == 2).collect();
    assert_eq!(leaving.len(), 2 * ROUNDS);
    let mut leavers = Vec::new();
    let mut watchers = Vec::new();
    for (i, member) in members.iter_mut().enumerate() {
        if leaving.contains(&i) {
            leavers.push(member.take());
        } else if let Some(member) = member.take() {
            let node = member.node.clone();
            let own = authors.iter().take(ROUNDS).position(|a| *a == i);
            watchers.push((node, watch(member, own)));
        }
    }
    let started = Instant::now();
    let mut joined = 0;
    for round in 0..ROUNDS {
        for leaver in leavers.iter_mut().skip(2 * round).take(2) {
            if let Some(leaver) = leaver.take() {
                leaver.node.shutdown().await;
            }
        }
        for _ in 0..2 {
            let name = format!("j{joined:03}");
            joined += 1;
            let member = start_node(config(&name, Some(&tracker), "churn")).await;
            let node = member.node.clone();
            watchers.push((node, watch(member, None)));
        }
        let author = &watchers[authors[round] - authors[round] / 5 - 1].0;
        author.say(&text_of(round)).await.unwrap();
    }
    eprintln!(
        "GOSSIP CHURN | {} left, {joined} joined, {ROUNDS} messages within {:.1?}",
        leaving.len(),
        started.elapsed()
    );
    let mut histories = Vec::new();
    for (node, watcher) in watchers {
        let member = watcher.await.unwrap();
        let history = node.room_history("churn", 1000).await.unwrap();
        let texts: Vec<(u64, String, String)> = history
            .into_iter()
            .filter_map(|e| match e {
                Event::Message { text, ts, id, .. } if text.starts_with("churn message ") => {
                    Some((ts, id, text))
                }
                _ => None,
            })
            .collect();
        assert_eq!(texts.len(), ROUNDS, "{}: {texts:?}", member.id());
        assert!(texts.windows(2).all(|w| w[0].0 <= w[1].0), "clock order");
        histories.push(texts);
    }
    eprintln!(
        "GOSSIP CHURN | {} members showed all {ROUNDS} messages within {:.1?}",
        histories.len(),
        started.elapsed()
    );
    assert_eq!(histories.len(), MEMBERS - 2 * ROUNDS + 2 * ROUNDS);
    assert!(
        histories.windows(2).all(|w| w[0] == w[1]),
        "one history for all"
    );
}
