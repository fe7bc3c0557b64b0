//! The command line: the subcommands, and [`run`], which checks what the user
//! typed, turns it into the library's configs and runs the command.
//!
//! Each subcommand with a module of its own keeps its flags there, next to
//! the code that reads them: [`chat`], [`files`] (send and get), [`tracker`]
//! and [`bench`](mod@bench). The small ones (`id`, `demo`, `netcheck`) are
//! handled here. The library does the work; this module only parses, prints
//! and waits for Ctrl-C. Errors go back to `main`, which prints them and sets
//! the exit status.

mod bench;
mod chat;
mod config;
mod dht;
mod files;
mod password;
mod tracker;

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};

use punchgate::congestion::Congestion;
use punchgate::endpoint::Target;
use punchgate::identity::Identity;
use punchgate::node::{Event, Node, NodeConfig};
use punchgate::render;

#[derive(Parser)]
#[command(
    name = "punchgate",
    version,
    about = "Encrypted peer-to-peer chat across NATs over pinned QUIC"
)]
pub struct Cli {
    /// Data directory (identity key, known trackers). Default: the platform's
    /// data directory, e.g. ~/.local/share/punchgate.
    #[arg(long, global = true, env = "PUNCHGATE_HOME")]
    home: Option<PathBuf>,
    /// Machine mode: commands on stdin one per line, events on stdout as JSON lines.
    #[arg(long, global = true)]
    json: bool,
    /// Config file with defaults for the flags (default: config.toml in
    /// the platform's config directory, e.g. ~/.config/punchgate).
    #[arg(long, global = true, value_name = "PATH", env = "PUNCHGATE_CONFIG")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Print this node's peer id.
    Id,
    /// Run a rendezvous tracker; prints PEERID@addr once listening.
    Tracker(tracker::TrackerArgs),
    /// Chat: join rooms through a tracker, or connect to peers by address.
    Chat(chat::ChatArgs),
    /// The node with the web page as its interface (no REPL): takes chat's
    /// flags; prints the page's address with its secret.
    Web(chat::ChatArgs),
    /// Share files or folders: prints a ticket for `punchgate get` and serves
    /// until Ctrl-C.
    Send(files::SendArgs),
    /// Fetch what a ticket names, from its sender and from everyone else
    /// serving it; run it again to resume.
    Get(files::GetArgs),
    /// A self-contained demo on loopback: a tracker and two peers chatting.
    Demo,
    /// Measure connection set-up and throughput on your network, against a
    /// `punchgate bench serve` elsewhere.
    Bench {
        #[command(subcommand)]
        what: bench::BenchCommand,
    },
    /// Print a completion script for SHELL (bash, zsh, fish, elvish,
    /// powershell); e.g. `punchgate completions bash > ~/.local/share/bash-completion/completions/punchgate`.
    Completions { shell: clap_complete::Shell },
    /// A small DHT of its own on one address, for tests and labs.
    #[command(name = "dht-testnet", hide = true)]
    DhtTestnet(dht::TestnetArgs),
    /// What your NAT does: public address, mapping, filtering, hairpinning,
    /// RTT to the tracker, and whether the router maps a port on request.
    Netcheck {
        /// Tracker as PEERID@host:port, or host:port to trust on first use.
        #[arg(long)]
        tracker: Target,
        /// Address of the UDP socket (use the port you chat from).
        #[arg(long, default_value = "[::]:0")]
        bind: SocketAddr,
        /// Do not ask the router for a port mapping (PCP, NAT-PMP, UPnP-IGD).
        #[arg(long, env = "PUNCHGATE_NO_PORT_MAPPING")]
        no_port_mapping: bool,
    },
}

/// The command line, with the config file's defaults added (see
/// [`config`]); a config file that cannot be read or used is an error.
pub fn parse() -> anyhow::Result<Cli> {
    let args = config::with_defaults(std::env::args_os().collect())?;
    Ok(Cli::parse_from(args))
}

/// Runs the command `cli` names until it is done or interrupted (Ctrl-C,
/// SIGTERM).
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    let _file_size_limit = survive_file_size_limit();
    let output = Output { json: cli.json };
    // Every command but the demo keeps its key in the data directory; the
    // demo must not create one.
    let home = || punchgate::home::resolve(cli.home.as_deref());
    match cli.command {
        Commands::Id => {
            let identity = Identity::load_or_create(&home()?)?;
            println!("{}", identity.peer_id());
            Ok(())
        }
        Commands::Netcheck {
            tracker,
            bind,
            no_port_mapping,
        } => {
            let home = home()?;
            let mut config = NodeConfig::new("netcheck");
            config.trackers = vec![tracker];
            config.rooms = Vec::new();
            config.bind = bind;
            config.nat_report = false;
            config.port_mapping = !no_port_mapping;
            let (node, _events) = Node::start(&home, config)
                .await
                .context("cannot start the node")?;
            let report = node.netcheck().await;
            node.shutdown().await;
            output.show(&report?)?;
            Ok(())
        }
        Commands::Bench { what } => bench::run(&home()?, what, output).await,
        Commands::Send(args) => files::send(&home()?, args, output).await,
        Commands::Get(args) => files::get(&home()?, args, output).await,
        Commands::Completions { shell } => {
            use clap::CommandFactory;
            let mut command = Cli::command();
            clap_complete::generate(shell, &mut command, "punchgate", &mut std::io::stdout());
            Ok(())
        }
        Commands::Demo => {
            let mut stdout = std::io::stdout();
            punchgate::demo::run(&mut stdout).await?;
            Ok(())
        }
        Commands::DhtTestnet(args) => dht::run_testnet(args, output.json).await,
        Commands::Tracker(args) => tracker::run(&home()?, args, output).await,
        Commands::Chat(args) => chat::run(&home()?, args, output).await,
        Commands::Web(args) => chat::run_web(&home()?, args, output).await,
    }
}

// How a node's peer connections behave on the network, for every command
// that starts a node. No doc comment: clap would take it as an about text.
#[derive(clap::Args)]
struct TransportArgs {
    /// Congestion controller of peer connections: steady (ours: holds its
    /// rate under random loss), cubic, newreno or bbr (quinn's);
    /// docs/BENCHMARKS.md compares them on lossy paths.
    #[arg(long, default_value_t = Congestion::default())]
    congestion: Congestion,
    /// Do not ask the home router for a port mapping (PCP, NAT-PMP,
    /// UPnP-IGD) of this node's UDP port; see docs/NAT.md.
    #[arg(long, env = "PUNCHGATE_NO_PORT_MAPPING")]
    no_port_mapping: bool,
    /// Park an idle tracker session after this many seconds: the tracker
    /// keeps this node registered without a connection and rings it when a
    /// peer asks for it (docs/PROTOCOL.md, "The doorbell"); 0: never.
    #[arg(long, value_name = "SECS", env = "PUNCHGATE_PARK_AFTER",
          default_value_t = punchgate::node::DEFAULT_PARK_AFTER.as_secs())]
    park_after: u64,
}

impl TransportArgs {
    fn apply(&self, config: &mut NodeConfig) {
        config.congestion = self.congestion;
        config.port_mapping = !self.no_port_mapping;
        config.park_after =
            (self.park_after > 0).then(|| std::time::Duration::from_secs(self.park_after));
    }
}

/// Prints events as JSON lines or as text for people.
struct Output {
    json: bool,
}

impl Output {
    fn show(&self, event: &Event) -> std::io::Result<()> {
        let mut stdout = std::io::stdout().lock();
        if self.json {
            writeln!(stdout, "{}", event.to_json())?;
        } else {
            for line in render::render(event) {
                writeln!(stdout, "{line}")?;
            }
        }
        stdout.flush()
    }
}

/// A positive number of seconds from the command line.
fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value > 0.0 && value < 86_400.0) {
        anyhow::bail!("{flag} must be a number of seconds between 0 and 86400, got {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

/// Keeps SIGXFSZ (a write beyond the file-size limit, `ulimit -f`) from
/// killing the process without a word: with a handler installed, such a
/// write fails with EFBIG instead, which `get` reports in one line (and
/// keeps what it verified). The handler (tokio's, so no unsafe code here)
/// stays for the life of the process; the returned stream is only held.
#[cfg(unix)]
fn survive_file_size_limit() -> Option<tokio::signal::unix::Signal> {
    use tokio::signal::unix::{signal, SignalKind};
    let xfsz = rustix::process::Signal::XFSZ.as_raw();
    signal(SignalKind::from_raw(xfsz)).ok()
}

#[cfg(not(unix))]
fn survive_file_size_limit() {}

/// Ctrl-C or SIGTERM.
async fn shutdown_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
