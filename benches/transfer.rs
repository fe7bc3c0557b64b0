//! File transfer on loopback: `punchgate` fetching a 1 GiB file between two
//! nodes (manifest, parallel chunk streams, BLAKE3 verification, writes,
//! the final fsync and rename) against raw quinn moving the same bytes over
//! one connection with the same transport settings, and a plain TCP copy,
//! in the same run. The download lands on tmpfs (`/dev/shm`, where fsync is
//! free: the transfer itself) and on the disk of the working directory
//! (bounded by how fast the disk takes 1 GiB and an fsync).
//! Run: `cargo bench --bench transfer`.

mod common;

use std::path::PathBuf;
use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punchgate::node::{Event, FetchRequest, Node, NodeConfig};

/// Bytes moved per iteration.
const SIZE: usize = 1 << 30;

fn node_config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(name);
    config.bind = loopback();
    config.rooms = vec!["bench".into()];
    config
}

/// A 1 GiB file of non-repeating-looking bytes (one 1 MiB random block,
/// rotated per MiB so chunks differ).
fn make_file(dir: &std::path::Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("one-gib.bin");
    let mut block = vec![0u8; 1 << 20];
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    for byte in block.iter_mut() {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        *byte = state as u8;
    }
    let mut file = std::io::BufWriter::new(std::fs::File::create(&path).unwrap());
    for i in 0..SIZE / block.len() {
        block.rotate_left(i % 251 + 1);
        file.write_all(&block).unwrap();
    }
    file.flush().unwrap();
    path
}

fn transfer(c: &mut Criterion) {
    let runtime = runtime();
    let _entered = runtime.enter();
    let memory = std::path::Path::new("/dev/shm");
    let work = if memory.is_dir() {
        tempfile::tempdir_in(memory).unwrap()
    } else {
        tempfile::tempdir().unwrap()
    };
    let disk = tempfile::tempdir_in(".").unwrap();
    let file = make_file(work.path());
    let (alice_home, bob_home) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (alice, bob, content) = runtime.block_on(async {
        let (alice, _alice_events) = Node::start(alice_home.path(), node_config("alice"))
            .await
            .unwrap();
        let mut config = node_config("bob");
        config.connect = vec![alice.target().unwrap().parse().unwrap()];
        let (bob, mut bob_events) = Node::start(bob_home.path(), config).await.unwrap();
        bob_events
            .wait_for(Duration::from_secs(20), |e| {
                matches!(e, Event::Connected { .. }).then_some(())
            })
            .await
            .unwrap();
        // Events are not read during the runs; drop the stream.
        drop(bob_events);
        let share = alice.share(vec![file.clone()]).await.unwrap();
        (alice, bob, share.layout.id)
    });

    let mut group = c.benchmark_group("transfer-1GiB");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(20));
    group.warm_up_time(Duration::from_secs(1));
    let mut run = 0u32;
    for (name, place) in [("tmpfs", work.path()), ("disk", disk.path())] {
        group.bench_function(format!("punchgate-get/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    let target = place.join(format!("get-{run}"));
                    let started = std::time::Instant::now();
                    let report = runtime
                        .block_on(bob.fetch(FetchRequest {
                            content,
                            sources: vec![alice.peer_id()],
                            target: target.clone(),
                            force: false,
                        }))
                        .unwrap();
                    total += started.elapsed();
                    assert_eq!(report.bytes, SIZE as u64);
                    std::fs::remove_dir_all(&target).unwrap();
                }
                total
            })
        });
    }
    // What verification alone costs: BLAKE3 over the file's bytes, 1 MiB
    // at a time, from memory (no network, no disk).
    let block: Vec<u8> = std::fs::read(&file).unwrap();
    group.bench_function("blake3-only", |b| {
        b.iter(|| {
            block
                .chunks(1 << 20)
                .map(|chunk| blake3::hash(chunk).as_bytes()[0])
                .fold(0u8, |a, b| a ^ b)
        })
    });
    drop(block);
    // The same bytes over plain quinn with punchgate's transport settings.
    let pair = quinn_pair(punchgate_transport());
    let (client, server) = runtime.block_on(async {
        let accept = async { pair.server.accept().await.unwrap().await.unwrap() };
        tokio::join!(pair.connect(), accept)
    });
    for streams in [1, 4] {
        group.bench_function(format!("quinn-raw/{streams}-stream"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(async {
                    let mut total = Duration::ZERO;
                    for _ in 0..iters {
                        total += quic_transfer(&client, &server, streams, SIZE).await;
                    }
                    total
                })
            })
        });
    }
    bench_tcp_copy(&mut group, &runtime, SIZE);
    group.finish();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
