//! The whole coordinated connect between two nodes on loopback: the request
//! to the tracker and its introduction, probes, the pinned QUIC handshake,
//! the greeting. Phases are printed after the run. Run:
//! `cargo bench --bench punch`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use criterion::{criterion_group, criterion_main, Criterion};
use punchgate::identity::Identity;
use punchgate::node::{Event, Events, Node, NodeConfig};
use punchgate::tracker::{Tracker, TrackerConfig, TrackerLimits};

fn config(name: &str, tracker: &Tracker) -> NodeConfig {
    let mut config = NodeConfig::new(name);
    config.bind = loopback();
    config.trackers = vec![tracker.target().parse().unwrap()];
    config.rooms = vec!["bench".into()];
    config
}

async fn next_matching<T>(events: &mut Events, mut pick: impl FnMut(&Event) -> Option<T>) -> T {
    events
        .wait_for(Duration::from_secs(20), &mut pick)
        .await
        .unwrap()
}

fn punch(c: &mut Criterion) {
    let runtime = runtime();
    let _entered = runtime.enter();
    // A benchmark connects far faster than the default request limit allows.
    let mut tracker_config = TrackerConfig::new(loopback());
    tracker_config.limits = TrackerLimits {
        requests_per_second: 1_000_000,
        request_burst: 1_000_000,
        ..TrackerLimits::default()
    };
    let tracker = Tracker::start(&Identity::generate().unwrap(), tracker_config).unwrap();
    let homes = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (acceptor, mut acceptor_events) = runtime
        .block_on(Node::start(homes[0].path(), config("acceptor", &tracker)))
        .unwrap();
    let (dialer, mut dialer_events) = runtime
        .block_on(Node::start(homes[1].path(), config("dialer", &tracker)))
        .unwrap();
    let acceptor_id = acceptor.peer_id();
    let acceptor_text = acceptor_id.to_string();
    let dialer_text = dialer.peer_id().to_string();
    // Joining connected them once; every iteration disconnects and punches again.
    runtime.block_on(next_matching(&mut dialer_events, |e| {
        matches!(e, Event::Connected { .. }).then_some(())
    }));
    let mut phases = Vec::new();
    let mut group = c.benchmark_group("punch");
    group.sample_size(30);
    group.measurement_time(Duration::from_secs(5));
    group.bench_function("loopback/total", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    dialer.disconnect(&acceptor_id);
                    next_matching(&mut dialer_events, |e| matches!(e, Event::Disconnected { peer_id, .. } if *peer_id == acceptor_text).then_some(())).await;
                    next_matching(&mut acceptor_events, |e| matches!(e, Event::Disconnected { peer_id, .. } if *peer_id == dialer_text).then_some(())).await;
                    let start = Instant::now();
                    dialer.connect_peer(acceptor_id).await.unwrap();
                    let elapsed = start.elapsed();
                    total += elapsed;
                    let (setup, handshake) = next_matching(&mut dialer_events, |e| match e {
                        Event::Connected { setup_ms, handshake_ms, .. } => Some((*setup_ms, handshake_ms.unwrap_or_default())),
                        _ => None,
                    })
                    .await;
                    phases.push((elapsed.as_secs_f64() * 1000.0, setup, handshake));
                }
                total
            })
        })
    });
    // Baseline: a plain quinn handshake on loopback, the floor any connect pays.
    let baseline = quinn_pair(default_transport());
    group.bench_function("loopback/baseline-plain-quinn-handshake", |b| {
        b.iter_custom(|iters| runtime.block_on(baseline.timed_handshakes(iters)))
    });
    group.finish();
    let n = phases.len() as f64;
    let mean = |f: fn(&(f64, f64, f64)) -> f64| phases.iter().map(f).sum::<f64>() / n;
    let (total, setup, handshake) = (mean(|p| p.0), mean(|p| p.1), mean(|p| p.2));
    println!(
        "punch phases (mean of {} connects): tracker request and introduction {:.3} ms, probes and QUIC handshake {:.3} ms, greeting {:.3} ms; total {:.3} ms",
        phases.len(),
        total - setup,
        handshake,
        setup - handshake,
        total
    );
}

criterion_group!(benches, punch);
criterion_main!(benches);
