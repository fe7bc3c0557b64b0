//! `punchgate bench`: measurements users run on their own networks against a
//! `punchgate bench serve` counterpart. This module holds the summary
//! statistics (pure) and the runners; the CLI only prints.

use std::time::{Duration, Instant};

use serde::Serialize;

use crate::identity::PeerId;
use crate::node::{Event, Events, Node, NodeError};

/// Room both sides of a bench meet in.
pub const BENCH_ROOM: &str = "punchgate-bench";

/// min / median / p90 / max of some runs, in milliseconds and in round trips
/// of the measured RTT.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct Summary {
    pub runs: usize,
    pub min_ms: f64,
    pub median_ms: f64,
    pub p90_ms: f64,
    pub max_ms: f64,
    pub rtt_ms: f64,
    /// The median in RTTs.
    pub median_rtts: f64,
}

/// Summarises samples (ms); `None` without samples.
pub fn summarise(samples: &[f64], rtt_ms: f64) -> Option<Summary> {
    if samples.is_empty() {
        return None;
    }
    let mut sorted = samples.to_vec();
    sorted.sort_by(f64::total_cmp);
    let at = |q: f64| sorted[((sorted.len() - 1) as f64 * q).round() as usize];
    let median = at(0.5);
    Some(Summary {
        runs: sorted.len(),
        min_ms: sorted[0],
        median_ms: median,
        p90_ms: at(0.9),
        max_ms: sorted[sorted.len() - 1],
        rtt_ms,
        median_rtts: if rtt_ms > 0.0 { median / rtt_ms } else { 0.0 },
    })
}

#[derive(Debug, thiserror::Error)]
pub enum BenchError {
    #[error(transparent)]
    Node(#[from] NodeError),
    #[error("waiting for {0}: {1}")]
    Wait(&'static str, crate::node::events::WaitError),
    #[error("the peer is not connected")]
    NotConnected,
    #[error("{0}")]
    Failed(String),
}

const WAIT: Duration = Duration::from_secs(30);

async fn connected(events: &mut Events, peer: &PeerId) -> Result<(f64, f64, f64), BenchError> {
    let want = peer.to_string();
    events
        .wait_for(WAIT, |e| match e {
            Event::Connected {
                peer_id,
                setup_ms,
                handshake_ms,
                rtt_ms,
                ..
            } if *peer_id == want => Some((*setup_ms, handshake_ms.unwrap_or_default(), *rtt_ms)),
            _ => None,
        })
        .await
        .map_err(|e| BenchError::Wait("the connection", e))
}

/// Closes every connection to `peer` and returns once none is left. Both
/// sides dial when the bench joins its room: the connection closed here
/// may be replaced by the server's, silently when the path is the same, so
/// it closes again until nothing replaces it.
async fn disconnect(node: &Node, events: &mut Events, peer: &PeerId) -> Result<(), BenchError> {
    let want = peer.to_string();
    let deadline = tokio::time::Instant::now() + WAIT;
    while node.gates().iter().any(|g| g.peer_id == want) {
        if tokio::time::Instant::now() >= deadline {
            return Err(BenchError::Wait(
                "the disconnection",
                crate::node::events::WaitError::Timeout(WAIT),
            ));
        }
        node.disconnect(peer);
        // Its `disconnected`, or a look again a moment later.
        let _ = events
            .wait_for(Duration::from_millis(250), |e| match e {
                Event::Disconnected { peer_id, .. } if *peer_id == want => Some(()),
                _ => None,
            })
            .await;
    }
    Ok(())
}

/// Phases of coordinated connects, each a summary.
#[derive(Clone, Debug, Serialize)]
pub struct PunchReport {
    pub total: Summary,
    pub introduction: Summary,
    pub handshake: Summary,
    pub greeting: Summary,
}

/// `runs` coordinated connects to `peer` (disconnecting in between).
pub async fn punch(
    node: &Node,
    events: &mut Events,
    peer: PeerId,
    runs: usize,
) -> Result<PunchReport, BenchError> {
    let (mut total, mut intro, mut handshake, mut greeting, mut rtts) =
        (vec![], vec![], vec![], vec![], vec![]);
    for _ in 0..runs {
        disconnect(node, events, &peer).await?;
        let start = Instant::now();
        node.connect_peer(peer).await?;
        let elapsed = start.elapsed().as_secs_f64() * 1000.0;
        let (setup, shake, rtt) = connected(events, &peer).await?;
        total.push(elapsed);
        intro.push((elapsed - setup).max(0.0));
        handshake.push(shake);
        greeting.push((setup - shake).max(0.0));
        rtts.push(rtt);
    }
    let rtt = summarise(&rtts, 0.0)
        .map(|s| s.median_ms)
        .unwrap_or_default();
    let summary =
        |samples: &[f64]| summarise(samples, rtt).ok_or(BenchError::Failed("no runs".into()));
    Ok(PunchReport {
        total: summary(&total)?,
        introduction: summary(&intro)?,
        handshake: summary(&handshake)?,
        greeting: summary(&greeting)?,
    })
}

/// `runs` fresh pinned QUIC handshakes to where `peer` is connected now
/// (the NAT mappings are open), each closed at once.
pub async fn handshake(node: &Node, peer: PeerId, runs: usize) -> Result<Summary, BenchError> {
    let gate = node
        .gates()
        .into_iter()
        .find(|g| g.peer_id == peer.to_string())
        .ok_or(BenchError::NotConnected)?;
    let mut samples = Vec::with_capacity(runs);
    for _ in 0..runs {
        let start = Instant::now();
        let connection = node
            .dial_once(gate.remote, peer)
            .await
            .map_err(BenchError::Failed)?;
        samples.push(start.elapsed().as_secs_f64() * 1000.0);
        connection.close(crate::wire::CloseCode::Normal.varint(), b"bench");
    }
    summarise(&samples, gate.rtt_ms).ok_or(BenchError::Failed("no runs".into()))
}

/// One throughput run's result.
#[derive(Clone, Debug, Serialize)]
pub struct ThroughputReport {
    pub bytes: u64,
    pub seconds: f64,
    pub mb_per_s: f64,
    /// The same bytes over plain quinn on this machine's loopback: the
    /// ceiling this CPU puts on any QUIC transfer.
    pub raw_quinn_loopback_mb_per_s: f64,
}

/// Sends `bytes` to `peer` on a bench stream and waits for the count back.
pub async fn throughput(
    node: &Node,
    peer: PeerId,
    bytes: u64,
) -> Result<ThroughputReport, BenchError> {
    let start = Instant::now();
    let received = node
        .bench_send(peer, bytes)
        .await
        .map_err(BenchError::Failed)?;
    let seconds = start.elapsed().as_secs_f64();
    if received != bytes {
        return Err(BenchError::Failed(format!(
            "the peer counted {received} of {bytes} bytes"
        )));
    }
    let raw = raw_quinn_loopback(bytes)
        .await
        .map_err(BenchError::Failed)?;
    Ok(ThroughputReport {
        bytes,
        seconds,
        mb_per_s: bytes as f64 / seconds / 1e6,
        raw_quinn_loopback_mb_per_s: raw,
    })
}

/// MB/s of `bytes` over plain quinn between two endpoints on 127.0.0.1.
async fn raw_quinn_loopback(bytes: u64) -> Result<f64, String> {
    let err = |e: &dyn std::fmt::Display| e.to_string();
    let certified =
        rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).map_err(|e| err(&e))?;
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let server_config =
        quinn::ServerConfig::with_single_cert(vec![cert.clone()], key).map_err(|e| err(&e))?;
    let localhost = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let server = quinn::Endpoint::server(server_config, localhost).map_err(|e| err(&e))?;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).map_err(|e| err(&e))?;
    let client_config = quinn::ClientConfig::with_root_certificates(std::sync::Arc::new(roots))
        .map_err(|e| err(&e))?;
    let client = quinn::Endpoint::client(localhost).map_err(|e| err(&e))?;
    let server_addr = server.local_addr().map_err(|e| err(&e))?;
    let receiver = tokio::spawn(async move {
        let connection = server
            .accept()
            .await
            .ok_or("no connection")?
            .await
            .map_err(|e| e.to_string())?;
        let mut recv = connection.accept_uni().await.map_err(|e| e.to_string())?;
        let mut total = 0u64;
        while let Some(chunk) = recv
            .read_chunk(usize::MAX, true)
            .await
            .map_err(|e| e.to_string())?
        {
            total += chunk.bytes.len() as u64;
        }
        Ok::<u64, String>(total)
    });
    let connection = client
        .connect_with(client_config, server_addr, "localhost")
        .map_err(|e| err(&e))?
        .await
        .map_err(|e| err(&e))?;
    let start = Instant::now();
    let mut send = connection.open_uni().await.map_err(|e| err(&e))?;
    crate::node::write_zeros(&mut send, bytes).await?;
    let received = receiver.await.map_err(|e| err(&e))??;
    let seconds = start.elapsed().as_secs_f64();
    if received != bytes {
        return Err(format!("raw quinn moved {received} of {bytes} bytes"));
    }
    Ok(bytes as f64 / seconds / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summaries_pick_order_statistics() {
        let samples: Vec<f64> = (1..=10).map(f64::from).collect();
        let summary = summarise(&samples, 2.0).unwrap();
        assert_eq!((summary.min_ms, summary.max_ms), (1.0, 10.0));
        assert_eq!(summary.median_ms, 6.0);
        assert_eq!(summary.p90_ms, 9.0);
        assert_eq!(summary.median_rtts, 3.0);
        assert!(summarise(&[], 1.0).is_none());
    }
}
