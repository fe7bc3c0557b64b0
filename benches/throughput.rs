//! Throughput on loopback: one large stream and parallel streams over
//! punchgate's transport (gate socket, pinned mutual TLS, its windows),
//! against plain quinn with default and tuned windows and a plain TCP copy,
//! in the same run. Run: `cargo bench --bench throughput`.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quinn::{TransportConfig, VarInt};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes moved per iteration.
const SIZE: usize = 64 << 20;
const CHUNK: usize = 1 << 20;
const PARALLEL: usize = 4;

/// quinn with windows sized for a fast path: enough in flight to keep a
/// multi-gigabit, low-RTT link busy.
fn tuned_transport() -> Arc<TransportConfig> {
    let mut transport = TransportConfig::default();
    transport.stream_receive_window(VarInt::from_u32(16 << 20));
    transport.receive_window(VarInt::from_u32(64 << 20));
    transport.send_window(64 << 20);
    Arc::new(transport)
}

/// Moves SIZE bytes client → server over `streams` streams; returns the time
/// until the server has read everything.
async fn quic_transfer(
    client: &quinn::Connection,
    server: &quinn::Connection,
    streams: usize,
) -> Duration {
    let per_stream = SIZE / streams;
    let start = Instant::now();
    let readers = tokio::spawn({
        let server = server.clone();
        async move {
            let mut tasks = Vec::new();
            for _ in 0..streams {
                let mut recv = server.accept_uni().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut total = 0usize;
                    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
                        total += chunk.bytes.len();
                    }
                    total
                }));
            }
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            total
        }
    });
    let buffer = vec![0x5au8; CHUNK];
    let mut writers = Vec::new();
    for _ in 0..streams {
        let mut send = client.open_uni().await.unwrap();
        let buffer = buffer.clone();
        writers.push(tokio::spawn(async move {
            let mut left = per_stream;
            while left > 0 {
                let n = left.min(CHUNK);
                send.write_all(&buffer[..n]).await.unwrap();
                left -= n;
            }
            send.finish().unwrap();
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(readers.await.unwrap(), per_stream * streams);
    start.elapsed()
}

async fn tcp_transfer(listener: &tokio::net::TcpListener) -> Duration {
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    let reader = async {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            if n == 0 {
                break total;
            }
            total += n;
        }
    };
    let writer = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let buffer = vec![0x5au8; CHUNK];
        for _ in 0..SIZE / CHUNK {
            socket.write_all(&buffer).await.unwrap();
        }
        socket.shutdown().await.unwrap();
    };
    let (total, ()) = tokio::join!(reader, writer);
    assert_eq!(total, SIZE);
    start.elapsed()
}

fn throughput(c: &mut Criterion) {
    let runtime = runtime();
    // Sockets are registered with the runtime they are made in.
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("throughput");
    group.throughput(Throughput::Bytes(SIZE as u64));
    group.sample_size(10);
    group.measurement_time(Duration::from_secs(8));
    group.warm_up_time(Duration::from_secs(1));
    let variants: [(&str, Pair); 4] = [
        ("punchgate", punchgate_pair(punchgate_transport())),
        // Before: the system's socket buffers, as punchgate had them.
        (
            "punchgate-system-buffers",
            punchgate_pair_with(punchgate_transport(), SocketBuffers::system_default()),
        ),
        ("quinn-default", quinn_pair(default_transport())),
        ("quinn-tuned", quinn_pair(tuned_transport())),
    ];
    for (name, pair) in &variants {
        let (client, server) = runtime.block_on(async {
            // The server answers only once its Incoming is awaited.
            let accept = async { pair.server.accept().await.unwrap().await.unwrap() };
            tokio::join!(pair.connect(), accept)
        });
        let before = client.stats().path;
        for streams in [1, PARALLEL] {
            group.bench_function(format!("{name}/{streams}-stream"), |b| {
                b.iter_custom(|iters| {
                    runtime.block_on(async {
                        let mut total = Duration::ZERO;
                        for _ in 0..iters {
                            total += quic_transfer(&client, &server, streams).await;
                        }
                        total
                    })
                })
            });
        }
        // What limits a run: losses make quinn retransmit and back off.
        let after = client.stats().path;
        eprintln!(
            "{name}: {} packets sent, {} lost ({:.2}%), {} congestion events, cwnd {} KiB",
            after.sent_packets - before.sent_packets,
            after.lost_packets - before.lost_packets,
            100.0 * (after.lost_packets - before.lost_packets) as f64
                / (after.sent_packets - before.sent_packets).max(1) as f64,
            after.congestion_events - before.congestion_events,
            after.cwnd / 1024
        );
    }
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    group.bench_function("tcp/1-stream", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tcp_transfer(&listener).await;
                }
                total
            })
        })
    });
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
