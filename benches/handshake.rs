//! Connection set-up on loopback: a pinned punchgate QUIC handshake (mutual
//! TLS 1.3, Ed25519 certificates checked against the expected peer id both
//! ways) against plain quinn with the same crypto provider (ring, server
//! certificate checked against a root store, no client certificate), in the
//! same run. 0-RTT is not offered: punchgate refuses early data, whose
//! replayability would undercut the pinned-identity model for a saving of
//! one round trip on reconnect. Run: `cargo bench --bench handshake`.

mod common;

use std::time::Duration;

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};

fn handshake(c: &mut Criterion) {
    let runtime = runtime();
    // Sockets are registered with the runtime they are made in.
    let _entered = runtime.enter();
    let mut group = c.benchmark_group("handshake");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    let variants = [
        (
            "punchgate-pinned-mutual",
            punchgate_pair(punchgate_transport()),
        ),
        ("quinn-server-auth-only", quinn_pair(default_transport())),
    ];
    for (name, pair) in &variants {
        group.bench_function(*name, |b| {
            b.iter_custom(|iters| runtime.block_on(pair.timed_handshakes(iters)))
        });
    }
    group.finish();
}

criterion_group!(benches, handshake);
criterion_main!(benches);
