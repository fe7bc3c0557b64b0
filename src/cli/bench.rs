//! `punchgate bench`: its subcommands and flags, serving benches until Ctrl-C,
//! and running one bench against a `bench serve` peer to print its report.
//! The measuring is in the library's `bench` module.

use std::net::SocketAddr;
use std::path::Path;

use anyhow::Context;

use punchgate::bench;
use punchgate::endpoint::Target;
use punchgate::node::{Event, Node, NodeConfig};

use super::{shutdown_signal, Output, TransportArgs};

#[derive(clap::Subcommand)]
pub enum BenchCommand {
    /// The counterpart: join the bench room and answer benches.
    Serve {
        #[command(flatten)]
        at: BenchPlace,
    },
    /// Fresh pinned QUIC handshakes to the peer (after one punch).
    Handshake {
        #[command(flatten)]
        at: BenchPlace,
        /// Name or id of the `bench serve` peer.
        #[arg(long)]
        peer: String,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Whole coordinated connects through the tracker, by phase.
    Punch {
        #[command(flatten)]
        at: BenchPlace,
        #[arg(long)]
        peer: String,
        #[arg(long, default_value_t = 20)]
        runs: usize,
    },
    /// Bytes to the peer over one stream, next to raw quinn on loopback.
    Throughput {
        #[command(flatten)]
        at: BenchPlace,
        #[arg(long)]
        peer: String,
        /// Bytes to send.
        #[arg(long, default_value_t = 256 << 20)]
        bytes: u64,
    },
}

// Where every bench runs from. No doc comment: clap would take it as the
// about text of the subcommands that flatten it.
#[derive(clap::Args)]
pub struct BenchPlace {
    /// Tracker as PEERID@host:port, or host:port to trust on first use.
    #[arg(long)]
    tracker: Target,
    /// Address of the UDP socket.
    #[arg(long, default_value = "[::]:0")]
    bind: SocketAddr,
    /// Your display name.
    #[arg(long, default_value = "bench")]
    name: String,
    #[command(flatten)]
    transport: TransportArgs,
}

/// Serves benches until Ctrl-C, or runs one and prints its report.
pub async fn run(home: &Path, what: BenchCommand, output: Output) -> anyhow::Result<()> {
    let at = match &what {
        BenchCommand::Serve { at } => at,
        BenchCommand::Handshake { at, .. }
        | BenchCommand::Punch { at, .. }
        | BenchCommand::Throughput { at, .. } => at,
    };
    let mut config = NodeConfig::new(at.name.clone());
    config.trackers = vec![at.tracker.clone()];
    config.bind = at.bind;
    at.transport.apply(&mut config);
    config.rooms = vec![bench::BENCH_ROOM.to_string()];
    config.bench_serve = matches!(what, BenchCommand::Serve { .. });
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    let (kind, peer_text) = match &what {
        BenchCommand::Serve { .. } => {
            // Show what happens until Ctrl-C.
            let printer = tokio::spawn(async move {
                while let Some(event) = events.next().await {
                    if output.show(&event).is_err() {
                        break;
                    }
                }
            });
            shutdown_signal().await;
            node.shutdown().await;
            // The event stream ends once the node has shut down.
            let _ = printer.await;
            return Ok(());
        }
        BenchCommand::Handshake { peer, .. } => ("handshake", peer),
        BenchCommand::Punch { peer, .. } => ("punch", peer),
        BenchCommand::Throughput { peer, .. } => ("throughput", peer),
    };
    let peer = node.resolve_peer(peer_text).with_context(|| {
        format!(
            "is `punchgate bench serve` running in room {}?",
            bench::BENCH_ROOM
        )
    })?;
    // Joining the room connects to it once; every bench starts from there.
    if !node.gates().iter().any(|g| g.peer_id == peer.to_string()) {
        node.connected_gate(peer)
            .await
            .context("cannot connect to the peer")?;
    }
    let report = match &what {
        BenchCommand::Handshake { runs, .. } => {
            serde_json::to_value(bench::handshake(&node, peer, *runs).await?)?
        }
        BenchCommand::Punch { runs, .. } => {
            serde_json::to_value(bench::punch(&node, &mut events, peer, *runs).await?)?
        }
        BenchCommand::Throughput { bytes, .. } => {
            serde_json::to_value(bench::throughput(&node, peer, *bytes).await?)?
        }
        // Served (and returned) above.
        BenchCommand::Serve { .. } => return Ok(()),
    };
    node.shutdown().await;
    output.show(&Event::Bench {
        kind: kind.to_string(),
        peer: peer.to_string(),
        report,
    })?;
    Ok(())
}
