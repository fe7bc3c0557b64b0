//! Throughput on loopback: one large stream and parallel streams over
//! punchgate's transport (gate socket, pinned mutual TLS, its windows),
//! against plain quinn with default and tuned windows and a plain TCP copy,
//! in the same run. Run: `cargo bench --bench throughput`.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use quinn::{TransportConfig, VarInt};

/// Bytes moved per iteration.
const SIZE: usize = 64 << 20;
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
                    runtime.block_on(quic_transfers(&client, &server, streams, SIZE, iters))
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
    bench_tcp_copy(&mut group, &runtime, SIZE);
    group.finish();
}

criterion_group!(benches, throughput);
criterion_main!(benches);
