//! File transfer on loopback: `punchgate` fetching a 1 GiB file between two
//! nodes (manifest, parallel chunk streams, BLAKE3 verification, writes,
//! the final fsync and rename) against raw quinn, with the same transport
//! settings over one connection, moving the same bytes twice: from the
//! same file into a file on the same filesystem (what a file transfer
//! cannot avoid), and from memory to memory (the transport alone). Plain
//! TCP and BLAKE3 alone are the other references. The download lands on
//! tmpfs (`/dev/shm`, where fsync is free: the transfer itself) and on the
//! disk of the working directory (bounded by how fast the disk takes 1 GiB
//! and an fsync). Run: `cargo bench --bench transfer`.

mod common;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use punchgate::node::{Event, FetchRequest, Node, NodeConfig};
use punchgate::transfer::partial::{read_exact_at, write_all_at};

/// Bytes moved per iteration.
const SIZE: usize = 1 << 30;

fn node_config(name: &str) -> NodeConfig {
    let mut config = NodeConfig::new(name);
    config.bind = loopback();
    config.rooms = vec!["bench".into()];
    // Chunk streams per source (default 4), to compare.
    if let Some(streams) = std::env::var("TRANSFER_STREAMS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        config.transfer.streams = streams;
    }
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

/// Bytes per read, stream write and file write of the raw-quinn file copy:
/// punchgate's default chunk size.
const COPY_STEP: usize = punchgate::transfer::manifest::DEFAULT_CHUNK_SIZE as usize;

/// The same file over plain quinn, as simply as it can be done well: the
/// sender reads `COPY_STEP` bytes at a time off the runtime and hands each
/// read to one stream without a copy; the receiver reads as much at a time,
/// writes it at its offset off the runtime, and syncs the file at the end.
/// No manifest, no hashing, no log of what arrived.
async fn quic_file_copy(
    client: &quinn::Connection,
    server: &quinn::Connection,
    source: &Path,
    destination: &Path,
) -> Duration {
    let size = std::fs::metadata(source).unwrap().len();
    let start = Instant::now();
    let receiver = tokio::spawn({
        let server = server.clone();
        let destination = destination.to_path_buf();
        async move {
            let (_, mut recv) = server.accept_bi().await.unwrap();
            let file = Arc::new(std::fs::File::create(&destination).unwrap());
            let mut buffer = Vec::with_capacity(COPY_STEP);
            let mut offset = 0u64;
            while offset < size {
                buffer.resize(COPY_STEP.min((size - offset) as usize), 0);
                recv.read_exact(&mut buffer).await.unwrap();
                let file = file.clone();
                let written = buffer.len() as u64;
                buffer = tokio::task::spawn_blocking(move || {
                    write_all_at(&file, &buffer, offset).unwrap();
                    buffer
                })
                .await
                .unwrap();
                offset += written;
            }
            tokio::task::spawn_blocking(move || file.sync_all().unwrap())
                .await
                .unwrap();
        }
    });
    let file = Arc::new(std::fs::File::open(source).unwrap());
    // Bidirectional: punchgate's transport allows no unidirectional streams.
    let (mut send, _) = client.open_bi().await.unwrap();
    let mut offset = 0u64;
    while offset < size {
        let len = COPY_STEP.min((size - offset) as usize);
        let file = file.clone();
        let data = tokio::task::spawn_blocking(move || {
            let mut data = vec![0u8; len];
            read_exact_at(&file, &mut data, offset).unwrap();
            data
        })
        .await
        .unwrap();
        send.write_chunk(Bytes::from(data)).await.unwrap();
        offset += len as u64;
    }
    send.finish().unwrap();
    receiver.await.unwrap();
    start.elapsed()
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

    // Client and server of plain quinn with punchgate's transport settings.
    let pair = quinn_pair(punchgate_transport());
    let (client, server) = runtime.block_on(async {
        let accept = async { pair.server.accept().await.unwrap().await.unwrap() };
        tokio::join!(pair.connect(), accept)
    });
    if let Some(pairs) = std::env::var("TRANSFER_PAIRS")
        .ok()
        .and_then(|n| n.parse().ok())
    {
        interleaved(
            pairs,
            &runtime,
            (&bob, &alice),
            content,
            (&file, work.path()),
            (&client, &server),
        );
        return;
    }

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
        group.bench_function(format!("quinn-file-copy/{name}"), |b| {
            b.iter_custom(|iters| {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    run += 1;
                    let copy = place.join(format!("copy-{run}"));
                    total += runtime.block_on(quic_file_copy(&client, &server, &file, &copy));
                    assert_eq!(std::fs::metadata(&copy).unwrap().len(), SIZE as u64);
                    std::fs::remove_file(&copy).unwrap();
                }
                total
            })
        });
    }
    // What verification alone costs: BLAKE3 over the file's bytes, 1 MiB
    // at a time, from memory (no network, no disk).
    group.bench_function("blake3-only", |b| {
        // Read here, so runs of the other benches alone (a filter, or
        // `--profile-time` under perf) neither read it nor profile it.
        let block: Vec<u8> = std::fs::read(&file).unwrap();
        b.iter(|| {
            block
                .chunks(1 << 20)
                .map(|chunk| blake3::hash(chunk).as_bytes()[0])
                .fold(0u8, |a, b| a ^ b)
        })
    });
    // The same bytes from memory to memory: the transport alone.
    for streams in [1, 4] {
        group.bench_function(format!("quinn-raw/{streams}-stream"), |b| {
            b.iter_custom(|iters| {
                runtime.block_on(quic_transfers(&client, &server, streams, SIZE, iters))
            })
        });
    }
    bench_tcp_copy(&mut group, &runtime, SIZE);
    group.finish();
}

/// CPU time this process has used so far, user and system.
fn process_cpu() -> Duration {
    common::cpu_of("self")
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    let mid = values.len() / 2;
    if values.len() % 2 == 0 {
        (values[mid - 1] + values[mid]) / 2.0
    } else {
        values[mid]
    }
}

/// `TRANSFER_PAIRS=N cargo bench --bench transfer`: instead of criterion's
/// groups (which run one contender after the other, each for half a
/// minute, while the load of a shared machine comes and goes), N pairs of
/// one punchgate fetch into tmpfs and one raw quinn memory-to-memory
/// transfer (1 stream) back to back, then the file work alone
/// ([`file_work`]). Prints each pair's wall and CPU times (the process's
/// user + system time: both ends run in it) and the medians of the ratios,
/// with the best ratio a verified file transfer over this quinn could reach
/// here: raw quinn's CPU over raw quinn's plus the file work's.
fn interleaved(
    pairs: usize,
    runtime: &tokio::runtime::Runtime,
    (bob, alice): (&Node, &Node),
    content: punchgate::transfer::ContentId,
    (source, place): (&Path, &Path),
    (client, server): (&quinn::Connection, &quinn::Connection),
) {
    let mib = SIZE as f64 / (1 << 20) as f64;
    let (mut wall_ratios, mut cpu_ratios, mut ceilings) = (Vec::new(), Vec::new(), Vec::new());
    for pair in 0..pairs {
        let target = place.join(format!("pair-{pair}"));
        let (cpu, started) = (process_cpu(), Instant::now());
        let report = runtime
            .block_on(bob.fetch(FetchRequest {
                content,
                sources: vec![alice.peer_id()],
                target: target.clone(),
                force: false,
            }))
            .unwrap();
        let (get_wall, get_cpu) = (started.elapsed(), process_cpu() - cpu);
        assert_eq!(report.bytes, SIZE as u64);
        std::fs::remove_dir_all(&target).unwrap();
        let cpu = process_cpu();
        let raw_wall = runtime.block_on(quic_transfer(client, server, 1, SIZE));
        let raw_cpu = process_cpu() - cpu;
        let cpu = process_cpu();
        let copy = place.join(format!("file-work-{pair}"));
        file_work(source, &copy);
        let file_cpu = process_cpu() - cpu;
        std::fs::remove_file(&copy).unwrap();
        let wall_ratio = raw_wall.as_secs_f64() / get_wall.as_secs_f64();
        let cpu_ratio = raw_cpu.as_secs_f64() / get_cpu.as_secs_f64();
        let ceiling = raw_cpu.as_secs_f64() / (raw_cpu + file_cpu).as_secs_f64();
        println!(
            "pair {pair}: punchgate-get/tmpfs {:.0} MiB/s, {:.2} CPU-s; quinn-raw/1-stream {:.0} MiB/s, {:.2} CPU-s; file work alone {:.2} CPU-s; speed ratio {wall_ratio:.2}, CPU ratio {cpu_ratio:.2}, CPU ratio of raw + file work {ceiling:.2}",
            mib / get_wall.as_secs_f64(),
            get_cpu.as_secs_f64(),
            mib / raw_wall.as_secs_f64(),
            raw_cpu.as_secs_f64(),
            file_cpu.as_secs_f64(),
        );
        wall_ratios.push(wall_ratio);
        cpu_ratios.push(cpu_ratio);
        ceilings.push(ceiling);
    }
    println!(
        "median of {pairs} pairs: speed ratio (punchgate / raw) {:.2}, CPU ratio (raw CPU / punchgate CPU) {:.2}, CPU ratio of raw quinn + the file work alone {:.2}",
        median(&mut wall_ratios),
        median(&mut cpu_ratios),
        median(&mut ceilings),
    );
}

/// What any verified file transfer does besides moving bytes, without a
/// network: `source` read 1 MiB at a time, each MiB hashed (BLAKE3) and
/// written at its offset into `destination`, then synced. Single-threaded.
fn file_work(source: &Path, destination: &Path) {
    let input = std::fs::File::open(source).unwrap();
    let output = std::fs::File::create(destination).unwrap();
    let mut buffer = vec![0u8; COPY_STEP];
    let mut offset = 0u64;
    while offset < SIZE as u64 {
        read_exact_at(&input, &mut buffer, offset).unwrap();
        std::hint::black_box(blake3::hash(&buffer));
        write_all_at(&output, &buffer, offset).unwrap();
        offset += COPY_STEP as u64;
    }
    output.sync_all().unwrap();
}

criterion_group!(benches, transfer);
criterion_main!(benches);
