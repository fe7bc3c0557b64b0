//! `punchgate tracker`: its flags (limits, relay budget, stats), and running a
//! tracker until Ctrl-C while printing its address and, if asked, counters.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use punchgate::identity::Identity;
use punchgate::node::Event;
use punchgate::render;
use punchgate::tracker::{RelayConfig, Tracker, TrackerConfig, TrackerLimits};

use super::{seconds, shutdown_signal, Output};

// No doc comment: clap would take it as the subcommand's about text, which
// the `Tracker` variant of `Commands` gives.
#[derive(clap::Args)]
pub struct TrackerArgs {
    /// Address to listen on (port 0 picks a free one).
    #[arg(long, default_value = "[::]:7000")]
    listen: SocketAddr,
    /// Most registered peers at once.
    #[arg(long, default_value_t = TrackerLimits::default().max_peers)]
    max_peers: u32,
    /// Most rooms at once.
    #[arg(long, default_value_t = TrackerLimits::default().max_rooms)]
    max_rooms: u32,
    /// Most members in one room.
    #[arg(long, default_value_t = TrackerLimits::default().max_room_members)]
    max_room_members: u32,
    /// Requests per second one peer may make on average.
    #[arg(long, default_value_t = TrackerLimits::default().requests_per_second)]
    rate: u32,
    /// Most registered peers from one address (IPv4; IPv6 counts per /64).
    /// Raise it for a crowd behind one carrier-grade NAT.
    #[arg(long, default_value_t = TrackerLimits::default().max_peers_per_address)]
    max_peers_per_address: u32,
    /// Most rooms that exist only because of peers from one address.
    #[arg(long, default_value_t = TrackerLimits::default().max_rooms_per_address)]
    max_rooms_per_address: u32,
    /// Most relay streams of peers from one address.
    #[arg(long, default_value_t = TrackerLimits::default().max_relay_streams_per_address)]
    max_relay_streams_per_address: u32,
    /// Bytes per second the relay forwards for all peers of one address
    /// together.
    #[arg(long, default_value_t = TrackerLimits::default().relay_bytes_per_second_per_address)]
    relay_rate_per_address: u32,
    /// Most guests at once: nodes registered only to be introduced to a
    /// peer that publishes its DHT record (they join no room).
    #[arg(long, default_value_t = TrackerLimits::default().max_guests)]
    max_guests: u32,
    /// The second UDP port, for netcheck and parked nodes' knocks
    /// (default: the listening port + 1).
    #[arg(long)]
    aux_port: Option<u16>,
    /// How often a parked node knocks on the second port: below the UDP
    /// timeout of the NATs in front of your nodes (docs/PROTOCOL.md, "The
    /// doorbell").
    #[arg(long, value_name = "SECS", default_value_t = punchgate::tracker::registry::parked::KNOCK_EVERY.as_secs())]
    knock_every: u64,
    /// Do not relay packets for peers that cannot punch a direct path
    /// (they get a clear error instead).
    #[arg(long)]
    no_relay: bool,
    /// Bytes per second one peer may send through the relay, on average.
    #[arg(long, default_value_t = RelayConfig::default().bytes_per_second)]
    relay_rate: u32,
    /// Bytes one peer may send through the relay in a burst (at least 65535).
    #[arg(long, default_value_t = RelayConfig::default().burst)]
    relay_burst: u32,
    /// Bytes per second the relay forwards for all peers together.
    #[arg(long, default_value_t = RelayConfig::default().total_bytes_per_second)]
    relay_total_rate: u32,
    /// Print counters (registrations, introductions, relayed packets and
    /// bytes, drops, throttles) to stderr every SECS seconds; with
    /// --json also as a `tracker_stats` event.
    #[arg(long, value_name = "SECS")]
    stats: Option<f64>,
}

impl TrackerArgs {
    /// The tracker's config, and how often to print its counters.
    fn config(self) -> anyhow::Result<(TrackerConfig, Option<Duration>)> {
        let mut config = TrackerConfig::new(self.listen);
        config.aux_port = self.aux_port;
        if self.knock_every == 0 {
            anyhow::bail!("--knock-every must be at least 1 second");
        }
        config.knock_every = Duration::from_secs(self.knock_every);
        config.limits = TrackerLimits {
            max_peers: self.max_peers,
            max_rooms: self.max_rooms,
            max_room_members: self.max_room_members,
            requests_per_second: self.rate,
            request_burst: self.rate.saturating_mul(2),
            max_peers_per_address: self.max_peers_per_address,
            max_rooms_per_address: self.max_rooms_per_address,
            max_relay_streams_per_address: self.max_relay_streams_per_address,
            relay_bytes_per_second_per_address: self.relay_rate_per_address,
            max_guests: self.max_guests,
            ..TrackerLimits::default()
        };
        config.relay = RelayConfig {
            enabled: !self.no_relay,
            bytes_per_second: self.relay_rate,
            burst: self.relay_burst,
            total_bytes_per_second: self.relay_total_rate,
            ..RelayConfig::default()
        };
        let stats_every = self.stats.map(|s| seconds("--stats", s)).transpose()?;
        Ok((config, stats_every))
    }
}

/// Runs a tracker with the identity of `home` until Ctrl-C or SIGTERM.
pub async fn run(home: &Path, args: TrackerArgs, output: Output) -> anyhow::Result<()> {
    let identity = Identity::load_or_create(home)?;
    let (config, stats_every) = args.config()?;
    let tracker = Arc::new(Tracker::start(&identity, config)?);
    output.show(&Event::TrackerReady {
        peer_id: tracker.peer_id().to_string(),
        addr: tracker.local_addr(),
        target: tracker.target(),
        role: "tracker",
    })?;
    let reporter = stats_every.map(|every| {
        let tracker = tracker.clone();
        tokio::spawn(async move {
            let mut ticks = tokio::time::interval(every);
            ticks.tick().await;
            loop {
                ticks.tick().await;
                let event = Event::TrackerStats {
                    stats: tracker.stats(),
                };
                for line in render::render(&event) {
                    eprintln!("punchgate tracker: {line}");
                }
                if output.json && output.show(&event).is_err() {
                    return;
                }
            }
        })
    });
    shutdown_signal().await;
    if let Some(reporter) = reporter {
        reporter.abort();
        let _ = reporter.await;
    }
    let Ok(tracker) = Arc::try_unwrap(tracker) else {
        anyhow::bail!("the tracker is still in use at shutdown");
    };
    tracing::info!("shutting down");
    tracker.shutdown().await;
    Ok(())
}
