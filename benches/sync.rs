//! History sync rate: a node that holds N messages, and a fresh node that
//! connects to it and pulls them all (verify every signature, commit every
//! batch to disk with fsync, show each). Timed from the start of the fresh
//! node to its N-th message. Run: `cargo bench --bench sync`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punchgate::identity::Identity;
use punchgate::node::{Event, Node, NodeConfig};
use punchgate::protocol::{ChatBody, MessageId, SignedMessage};
use punchgate::store::Store;

const ROOM: &str = "lobby";

/// A data directory whose identity has written `count` messages to the room,
/// and those messages.
fn holder_home(count: usize) -> (tempfile::TempDir, Vec<SignedMessage>) {
    let home = tempfile::tempdir().unwrap();
    let identity = Identity::load_or_create(home.path()).unwrap();
    let store = Store::open(home.path()).unwrap();
    let mut batch = Vec::with_capacity(1000);
    let mut all = Vec::with_capacity(count);
    for seq in 1..=count as u64 {
        let body = ChatBody {
            id: MessageId {
                author: identity.peer_id(),
                seq,
            },
            hlc: seq << 16,
            room: ROOM.into(),
            text: format!("message number {seq} of the history sync benchmark"),
        };
        batch.push(SignedMessage::sign(&identity, body).unwrap());
        if batch.len() == 1000 {
            store.insert(&batch, Some(seq + 1), seq << 16).unwrap();
            all.append(&mut batch);
        }
    }
    store
        .insert(&batch, Some(count as u64 + 1), (count as u64) << 16)
        .unwrap();
    all.append(&mut batch);
    (home, all)
}

fn node_config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(name);
    config.bind = loopback();
    config.rooms = vec![ROOM.into()];
    config
}

fn sync(c: &mut Criterion) {
    let runtime = runtime();
    let mut group = c.benchmark_group("sync");
    group.sample_size(10);
    group.warm_up_time(Duration::from_millis(1));
    for count in [10_000usize, 100_000] {
        let (home, messages) = holder_home(count);
        let (holder, _holder_events) = runtime
            .block_on(Node::start(home.path(), node_config("holder")))
            .unwrap();
        let target = holder.target().unwrap();
        group.throughput(Throughput::Elements(count as u64));
        group.measurement_time(Duration::from_secs(if count > 10_000 { 60 } else { 10 }));
        group.bench_function(format!("{count}-messages"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fresh = tempfile::tempdir().unwrap();
                        let mut config = node_config("fresh");
                        config.connect = vec![target.parse().unwrap()];
                        let start = Instant::now();
                        let (node, mut events) = Node::start(fresh.path(), config).await.unwrap();
                        let mut seen = 0;
                        while seen < count {
                            match events.next().await {
                                Some(Event::Message { .. }) => seen += 1,
                                Some(_) => {}
                                None => panic!("the node stopped"),
                            }
                        }
                        total += start.elapsed();
                        node.shutdown().await;
                    }
                    total
                })
            })
        });
        runtime.block_on(holder.shutdown());
        // Baseline: the same work with no network — verify every message
        // and commit it in batches of 64 to a fresh store.
        group.bench_function(
            format!("{count}-messages/baseline-local-verify-and-store"),
            |b| {
                b.iter_custom(|iters| {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        let fresh = tempfile::tempdir().unwrap();
                        let start = Instant::now();
                        let store = Store::open(fresh.path()).unwrap();
                        for batch in messages.chunks(64) {
                            for message in batch {
                                message.verify().unwrap();
                            }
                            store.insert(batch, None, 0).unwrap();
                        }
                        total += start.elapsed();
                    }
                    total
                })
            },
        );
    }
    group.finish();
}

criterion_group!(benches, sync);
criterion_main!(benches);
