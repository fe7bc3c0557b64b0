//! The DHT flags of `chat` and `web`: whether the node publishes its
//! record and looks peers up on the BitTorrent Mainline DHT, and through
//! which nodes it joins it; and `--connect`'s forms (an address, or a peer
//! id alone to be found there); and the hidden `dht-testnet` command, a
//! small DHT of its own for tests and the NAT lab.

use std::net::{Ipv4Addr, SocketAddrV4};
use std::str::FromStr;

use clap::Args;

use punchgate::dht::{Bootstrap, DhtConfig};
use punchgate::endpoint::{AddrError, Target};
use punchgate::identity::PeerId;

#[derive(Args, Clone, Debug)]
pub struct DhtArgs {
    /// Neither publish this node's record (its trackers and public
    /// addresses, signed by its key) on the BitTorrent Mainline DHT nor
    /// look peers up there; peers then reach it only through shared rooms
    /// or its address (docs/SECURITY.md).
    #[arg(long, env = "PUNCHGATE_NO_DHT", value_parser = clap::builder::BoolishValueParser::new())]
    no_dht: bool,
    /// A DHT node to join through, as IPV4:PORT (repeatable; the variable
    /// takes a comma-separated list), instead of the public DHT's
    /// bootstrap nodes: a private DHT, a test's or a lab's. Addresses
    /// only: no name is ever resolved.
    #[arg(
        long = "dht-bootstrap",
        env = "PUNCHGATE_DHT_BOOTSTRAP",
        value_name = "IPV4:PORT",
        value_delimiter = ','
    )]
    dht_bootstrap: Vec<SocketAddrV4>,
}

impl DhtArgs {
    /// The node's DHT settings: off with `--no-dht`, else the nodes given,
    /// else the public DHT.
    pub fn config(&self) -> Option<DhtConfig> {
        if self.no_dht {
            return None;
        }
        let bootstrap = if self.dht_bootstrap.is_empty() {
            Bootstrap::Public
        } else {
            Bootstrap::Nodes(self.dht_bootstrap.clone())
        };
        Some(DhtConfig { bootstrap })
    }
}

/// What `--connect` names: a peer by address (`HOST:PORT`,
/// `PEERID@HOST:PORT`), or by id alone (found through a shared room's
/// tracker or its DHT record).
#[derive(Clone, Debug)]
pub enum ConnectArg {
    Id(PeerId),
    Addr(Target),
}

impl FromStr for ConnectArg {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        match text.trim().parse::<PeerId>() {
            Ok(peer) => Ok(Self::Id(peer)),
            Err(_) => text.parse().map(Self::Addr),
        }
    }
}

impl std::fmt::Display for ConnectArg {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Id(peer) => write!(f, "{peer}"),
            Self::Addr(target) => write!(f, "{target}"),
        }
    }
}

/// `punchgate dht-testnet`: hidden; for tests and labs, never the public
/// DHT.
#[derive(Args, Clone, Debug)]
pub struct TestnetArgs {
    /// The IPv4 address the nodes listen on.
    #[arg(long, default_value = "127.0.0.1")]
    bind: Ipv4Addr,
    /// How many DHT nodes.
    #[arg(long, default_value_t = 8)]
    nodes: usize,
}

/// Runs a DHT of `--nodes` nodes on `--bind` until Ctrl-C or SIGTERM;
/// prints their addresses (with `--json`: a `ready` event with `role:
/// "dht"` and `bootstrap`, the list for `--dht-bootstrap`).
pub async fn run_testnet(args: TestnetArgs, json: bool) -> anyhow::Result<()> {
    if !(1..=64).contains(&args.nodes) {
        anyhow::bail!("--nodes must be between 1 and 64, got {}", args.nodes);
    }
    let local =
        tokio::task::spawn_blocking(move || punchgate::dht::LocalDht::start(args.bind, args.nodes))
            .await??;
    let bootstrap: Vec<String> = local.bootstrap().iter().map(ToString::to_string).collect();
    if json {
        let ready = serde_json::json!({"event": "ready", "role": "dht", "bootstrap": bootstrap});
        println!("{ready}");
    } else {
        println!("--dht-bootstrap {}", bootstrap.join(","));
    }
    super::shutdown_signal().await;
    drop(local);
    Ok(())
}
