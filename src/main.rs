//! The `punchgate` command: parses arguments, runs the library, maps the
//! result to an exit status. All logic lives in the library.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use std::io::IsTerminal;

use anyhow::Context;
use clap::{Parser, Subcommand};
use rustyline::ExternalPrinter as _;
use tokio::io::{AsyncBufReadExt, BufReader};

use punchgate::command;
use punchgate::endpoint::Target;
use punchgate::identity::{Identity, PeerId};
use punchgate::node::{Event, Node, NodeConfig, RelayPolicy, TransferConfig};
use punchgate::render;
use punchgate::tracker::{RelayConfig, Tracker, TrackerConfig, TrackerLimits};
use punchgate::transfer::Ticket;

#[derive(Parser)]
#[command(
    name = "punchgate",
    version,
    about = "Encrypted peer-to-peer chat across NATs over pinned QUIC"
)]
struct Cli {
    /// Data directory (identity key, known trackers). Default: the platform's
    /// data directory, e.g. ~/.local/share/punchgate.
    #[arg(long, global = true, env = "PUNCHGATE_HOME")]
    home: Option<PathBuf>,
    /// Machine mode: commands on stdin one per line, events on stdout as JSON lines.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Commands,
}

#[derive(Subcommand)]
enum Commands {
    /// Print this node's peer id.
    Id,
    /// Run a rendezvous tracker; prints PEERID@addr once listening.
    Tracker {
        /// Address to listen on (port 0 picks a free one).
        #[arg(long, default_value = "0.0.0.0:7000")]
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
        /// netcheck's second UDP port (default: the listening port + 1).
        #[arg(long)]
        aux_port: Option<u16>,
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
    },
    /// Chat: join rooms through a tracker, or connect to peers by address.
    Chat {
        /// Tracker as PEERID@host:port, or host:port to trust on first use.
        #[arg(long)]
        tracker: Option<Target>,
        /// Your display name.
        #[arg(long, default_value = "anon")]
        name: String,
        /// Room to join (repeatable; the last is where your lines go).
        #[arg(long = "room", default_value = "lobby")]
        rooms: Vec<String>,
        /// Peer to connect to directly, as PEERID@host:port (repeatable).
        #[arg(long)]
        connect: Vec<Target>,
        /// Address of the UDP socket.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// Only let these peers connect in (repeatable); default: anyone.
        #[arg(long)]
        allow: Vec<PeerId>,
        /// Most connections to peers at once.
        #[arg(long, default_value_t = 64)]
        max_peers: usize,
        /// Seconds of silence before a keep-alive; keep it below the NAT's
        /// UDP mapping timeout (often 30 s).
        #[arg(long, default_value_t = 10.0)]
        keep_alive: f64,
        /// Seconds without packets before a connection is declared dead.
        #[arg(long, default_value_t = 30.0)]
        idle_timeout: f64,
        /// Seconds a hole punch may take before it is given up.
        #[arg(long, default_value_t = 10.0)]
        punch_timeout: f64,
        /// Seconds sending a message to one peer may take before it is left
        /// pending for history sync.
        #[arg(long, default_value_t = 10.0)]
        send_timeout: f64,
        /// Folder where /get puts downloads.
        #[arg(long, default_value = ".")]
        downloads: PathBuf,
        /// Most bytes per second to upload to peers fetching your offers.
        #[arg(long)]
        max_rate: Option<u32>,
        /// Never connect through the tracker's relay: a peer no hole can be
        /// punched to is an error.
        #[arg(long, conflicts_with = "relay_only")]
        no_relay: bool,
        /// Skip direct attempts and connect through the tracker's relay
        /// (for tests, or networks where punching never works).
        #[arg(long)]
        relay_only: bool,
        /// Password of the --room rooms: only peers who prove it share them.
        /// (The tracker never sees it; /password sets one later.)
        #[arg(long, env = "PUNCHGATE_PASSWORD", hide_env_values = true)]
        password: Option<String>,
    },
    /// Share files or folders: prints a ticket for `punchgate get` and serves
    /// until Ctrl-C.
    Send {
        /// Files or folders to share (a folder keeps its layout).
        #[arg(required = true)]
        paths: Vec<PathBuf>,
        /// Tracker as PEERID@host:port, or host:port to trust on first use.
        #[arg(long, env = "PUNCHGATE_TRACKER")]
        tracker: Target,
        /// Address of the UDP socket.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// Chunk size in bytes: a power of two from 16 KiB to 16 MiB.
        #[arg(long, default_value_t = punchgate::transfer::manifest::DEFAULT_CHUNK_SIZE)]
        chunk_size: u32,
        /// Most bytes per second to upload, to all receivers together.
        #[arg(long)]
        max_rate: Option<u32>,
    },
    /// Fetch what a ticket names, from its sender and from everyone else
    /// serving it; run it again to resume.
    Get {
        /// The ticket `punchgate send` printed.
        ticket: Ticket,
        /// Folder to put it in (created if missing).
        #[arg(short = 'o', long = "out", default_value = ".")]
        out: PathBuf,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Concurrent chunk streams per source.
        #[arg(long, default_value_t = TransferConfig::default().streams)]
        streams: usize,
        /// Address of the UDP socket.
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
        /// Seconds a hole punch to the sender may take.
        #[arg(long, default_value_t = 10.0)]
        punch_timeout: f64,
    },
    /// A self-contained demo on loopback: a tracker and two peers chatting.
    Demo,
    /// Measure connection set-up and throughput on your network, against a
    /// `punchgate bench serve` elsewhere.
    Bench {
        #[command(subcommand)]
        what: BenchCommand,
    },
    /// What your NAT does: public address, mapping, filtering, hairpinning,
    /// RTT to the tracker.
    Netcheck {
        /// Tracker as PEERID@host:port, or host:port to trust on first use.
        #[arg(long)]
        tracker: Target,
        /// Address of the UDP socket (use the port you chat from).
        #[arg(long, default_value = "0.0.0.0:0")]
        bind: SocketAddr,
    },
}

#[derive(Subcommand)]
enum BenchCommand {
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

#[derive(clap::Args)]
struct BenchPlace {
    /// Tracker as PEERID@host:port, or host:port to trust on first use.
    #[arg(long)]
    tracker: Target,
    /// Address of the UDP socket.
    #[arg(long, default_value = "0.0.0.0:0")]
    bind: SocketAddr,
    /// Your display name.
    #[arg(long, default_value = "bench")]
    name: String,
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn")),
        )
        .init();
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("punchgate: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            if is_broken_pipe(&error) {
                return ExitCode::SUCCESS;
            }
            eprintln!("punchgate: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn is_broken_pipe(error: &anyhow::Error) -> bool {
    error
        .chain()
        .filter_map(|e| e.downcast_ref::<std::io::Error>())
        .any(|e| e.kind() == std::io::ErrorKind::BrokenPipe)
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

async fn run(cli: Cli) -> anyhow::Result<()> {
    let output = Output { json: cli.json };
    match cli.command {
        Commands::Id => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let identity = Identity::load_or_create(&home)?;
            println!("{}", identity.peer_id());
            Ok(())
        }
        Commands::Netcheck { tracker, bind } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let mut config = NodeConfig::new("netcheck");
            config.tracker = Some(tracker);
            config.rooms = Vec::new();
            config.bind = bind;
            let (node, _events) = Node::start(&home, config)
                .await
                .context("cannot start the node")?;
            let report = node.netcheck().await;
            node.shutdown().await;
            output.show(&report?)?;
            Ok(())
        }
        Commands::Bench { what } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            bench(&home, what, output).await
        }
        Commands::Send {
            paths,
            tracker,
            bind,
            chunk_size,
            max_rate,
        } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let mut config = NodeConfig::new("sender");
            config.tracker = Some(tracker);
            config.bind = bind;
            config.rooms = Vec::new();
            config.transfer.chunk_size = chunk_size;
            config.transfer.upload_limit = max_rate;
            send_files(&home, config, paths, output).await
        }
        Commands::Get {
            ticket,
            out,
            force,
            streams,
            bind,
            punch_timeout,
        } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let mut config = NodeConfig::new("getter");
            config.tracker = Some(ticket.tracker.parse()?);
            config.bind = bind;
            config.rooms = Vec::new();
            config.punch.deadline = seconds("--punch-timeout", punch_timeout)?;
            config.transfer.streams = streams.max(1);
            get_files(&home, config, ticket, out, force, output).await
        }
        Commands::Demo => {
            let mut stdout = std::io::stdout();
            punchgate::demo::run(&mut stdout).await?;
            Ok(())
        }
        Commands::Tracker {
            listen,
            max_peers,
            max_rooms,
            max_room_members,
            rate,
            aux_port,
            no_relay,
            relay_rate,
            relay_burst,
            relay_total_rate,
            stats,
        } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let identity = Identity::load_or_create(&home)?;
            let mut config = TrackerConfig::new(listen);
            config.aux_port = aux_port;
            config.limits = TrackerLimits {
                max_peers,
                max_rooms,
                max_room_members,
                requests_per_second: rate,
                request_burst: rate.saturating_mul(2),
                ..TrackerLimits::default()
            };
            config.relay = RelayConfig {
                enabled: !no_relay,
                bytes_per_second: relay_rate,
                burst: relay_burst,
                total_bytes_per_second: relay_total_rate,
                ..RelayConfig::default()
            };
            let stats_every = stats.map(|s| seconds("--stats", s)).transpose()?;
            let tracker = std::sync::Arc::new(Tracker::start(&identity, config)?);
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
            let Ok(tracker) = std::sync::Arc::try_unwrap(tracker) else {
                anyhow::bail!("the tracker is still in use at shutdown");
            };
            tracing::info!("shutting down");
            tracker.shutdown().await;
            Ok(())
        }
        Commands::Chat {
            tracker,
            name,
            rooms,
            connect,
            bind,
            allow,
            max_peers,
            keep_alive,
            idle_timeout,
            punch_timeout,
            send_timeout,
            downloads,
            max_rate,
            no_relay,
            relay_only,
            password,
        } => {
            let home = punchgate::home::resolve(cli.home.as_deref())?;
            let mut config = NodeConfig::new(name);
            config.connect = bootstrap_peers(&home)?;
            config.connect.extend(connect);
            config.max_gates = max_peers;
            config.liveness.keep_alive = seconds("--keep-alive", keep_alive)?;
            config.liveness.idle_timeout = seconds("--idle-timeout", idle_timeout)?;
            config.punch.deadline = seconds("--punch-timeout", punch_timeout)?;
            config.send_timeout = seconds("--send-timeout", send_timeout)?;
            config.transfer.downloads = downloads;
            config.transfer.upload_limit = max_rate;
            if config.liveness.keep_alive >= config.liveness.idle_timeout {
                anyhow::bail!("--keep-alive must be shorter than --idle-timeout");
            }
            config.tracker = tracker;
            if let Some(password) = password {
                let secret = punchgate::pake::Secret::new(password);
                config.passwords = rooms
                    .iter()
                    .map(|room| (room.clone(), secret.clone()))
                    .collect();
            }
            config.rooms = rooms;
            config.bind = bind;
            config.allow = (!allow.is_empty()).then_some(allow);
            config.relay = match (no_relay, relay_only) {
                (true, _) => RelayPolicy::Never,
                (_, true) => RelayPolicy::Only,
                _ => RelayPolicy::Fallback,
            };
            chat(&home, config, output).await
        }
    }
}

/// Peers to greet at start-up, from the data directory's `bootstrap` file:
/// one `PEERID@host:port` per line; `#` starts a comment.
fn bootstrap_peers(home: &std::path::Path) -> anyhow::Result<Vec<Target>> {
    let path = home.join("bootstrap");
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err(error).with_context(|| format!("reading {}", path.display())),
    };
    text.lines()
        .enumerate()
        .map(|(n, line)| (n, line.split('#').next().unwrap_or("").trim()))
        .filter(|(_, line)| !line.is_empty())
        .map(|(n, line)| {
            let target: Target = line
                .parse()
                .with_context(|| format!("{} line {}", path.display(), n + 1))?;
            target
                .require_peer()
                .with_context(|| format!("{} line {}", path.display(), n + 1))?;
            Ok(target)
        })
        .collect()
}

/// A positive number of seconds from the command line.
fn seconds(flag: &str, value: f64) -> anyhow::Result<std::time::Duration> {
    if !(value > 0.0 && value < 86_400.0) {
        anyhow::bail!("{flag} must be a number of seconds between 0 and 86400, got {value}");
    }
    Ok(std::time::Duration::from_secs_f64(value))
}

async fn bench(home: &std::path::Path, what: BenchCommand, output: Output) -> anyhow::Result<()> {
    use punchgate::bench;
    let at = match &what {
        BenchCommand::Serve { at } => at,
        BenchCommand::Handshake { at, .. }
        | BenchCommand::Punch { at, .. }
        | BenchCommand::Throughput { at, .. } => at,
    };
    let mut config = NodeConfig::new(at.name.clone());
    config.tracker = Some(at.tracker.clone());
    config.bind = at.bind;
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
            drop(node);
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printer).await;
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
        node.connect_peer(peer)
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

/// `punchgate send`: shares, prints the ticket, serves until Ctrl-C.
async fn send_files(
    home: &std::path::Path,
    config: NodeConfig,
    paths: Vec<PathBuf>,
    output: Output,
) -> anyhow::Result<()> {
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    if !output.json {
        eprintln!("hashing {} path(s)…", paths.len());
    }
    let ticket = node
        .share_with_ticket(paths)
        .await
        .context("cannot share")?;
    let share = node.shared(&ticket.content).context("the share vanished")?;
    output.show(&Event::Ticket {
        ticket: ticket.to_string(),
        hash: ticket.content.to_string(),
        name: share.layout.manifest.name.clone(),
        bytes: share.layout.total_bytes,
        files: share.layout.manifest.files.len() as u32,
    })?;
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => output.show(&event)?,
                None => break,
            },
            _ = shutdown_signal() => break,
        }
    }
    node.shutdown().await;
    Ok(())
}

/// `punchgate get`: fetches what the ticket names, with a progress bar on a
/// terminal (or progress events with --json).
async fn get_files(
    home: &std::path::Path,
    config: NodeConfig,
    ticket: Ticket,
    out: PathBuf,
    force: bool,
    output: Output,
) -> anyhow::Result<()> {
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    let json = output.json;
    let bar = (!json && std::io::stderr().is_terminal()).then(|| {
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} ETA {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar
    });
    let shown = bar.clone();
    let printer = tokio::spawn(async move {
        let mut throttle = render::ProgressThrottle::default();
        while let Some(event) = events.next().await {
            match (&event, &shown) {
                (
                    Event::TransferProgress {
                        name, bytes, total, ..
                    },
                    Some(bar),
                ) => {
                    bar.set_length(*total);
                    bar.set_position(*bytes);
                    bar.set_message(render::sanitize(name));
                }
                // The report is printed once the fetch returns; holders'
                // offers in the swarm room are of the content being fetched.
                (Event::TransferDone { .. } | Event::FileOffered { .. }, _) if !json => {}
                (_, Some(bar)) => {
                    for line in render::render(&event) {
                        bar.println(line);
                    }
                }
                _ => {
                    if json || throttle.admit(&event, std::time::Instant::now()) {
                        let _ = output.show(&event);
                    }
                }
            }
        }
    });
    let result = tokio::select! {
        result = node.fetch_ticket(&ticket, out, force) => result,
        _ = shutdown_signal() => {
            node.shutdown().await;
            anyhow::bail!("interrupted; what was verified is kept: run the same get again to resume");
        }
    };
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    node.shutdown().await;
    drop(node);
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printer).await;
    let report = result?;
    if !json {
        let done = Event::TransferDone {
            path: report
                .paths
                .first()
                .map(|p| p.display().to_string())
                .unwrap_or_default(),
            report,
        };
        for line in render::render(&done) {
            println!("{line}");
        }
    }
    Ok(())
}

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

/// The chat loop: lines in (a line editor on a terminal, else plain stdin),
/// events out (above the input line on a terminal, else to stdout).
async fn chat(home: &std::path::Path, config: NodeConfig, output: Output) -> anyhow::Result<()> {
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    let interactive =
        !output.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // Lines typed or piped in; the channel closing is the end of input.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<String>();
    let printer = if interactive {
        let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
        let mut above_prompt = editor
            .create_external_printer()
            .context("cannot start the line editor")?;
        std::thread::spawn(move || edit_lines(editor, lines_tx));
        tokio::spawn(async move {
            let mut throttle = render::ProgressThrottle::default();
            while let Some(event) = events.next().await {
                if !throttle.admit(&event, std::time::Instant::now()) {
                    continue;
                }
                for line in render::render(&event) {
                    // Each line ends itself: lines printed before the first
                    // prompt would otherwise run together.
                    let painted = format!("{}\n", render::paint(&event, &line));
                    if above_prompt.print(painted).is_err() {
                        return;
                    }
                }
            }
        })
    } else {
        tokio::spawn(async move {
            let mut stdin = BufReader::new(tokio::io::stdin()).lines();
            while let Ok(Some(line)) = stdin.next_line().await {
                if lines_tx.send(line).is_err() {
                    break;
                }
            }
        });
        tokio::spawn(async move {
            let mut throttle = render::ProgressThrottle::default();
            while let Some(event) = events.next().await {
                if !output.json && !throttle.admit(&event, std::time::Instant::now()) {
                    continue;
                }
                if output.show(&event).is_err() {
                    break;
                }
            }
        })
    };
    loop {
        tokio::select! {
            line = lines.recv() => {
                // End of input is /quit: scripts end by closing stdin.
                let Some(line) = line else {
                    node.shutdown().await;
                    break;
                };
                match command::parse(&line) {
                    Ok(command) => {
                        if !node.execute(command).await {
                            break;
                        }
                    }
                    Err(command::CommandError::Empty) => {}
                    Err(error) => node.execute_error(error),
                }
            }
            _ = shutdown_signal() => {
                node.shutdown().await;
                break;
            }
        }
    }
    drop(node);
    // Print what is left (goodbyes, last messages); background tasks holding
    // the node end as their connections close, which closes the stream.
    let _ = tokio::time::timeout(std::time::Duration::from_secs(2), printer).await;
    Ok(())
}

/// Reads lines with the line editor (history, editing) until /quit, Ctrl-C
/// or Ctrl-D. Password lines stay out of the history.
fn edit_lines(
    mut editor: rustyline::DefaultEditor,
    lines: tokio::sync::mpsc::UnboundedSender<String>,
) {
    loop {
        match editor.readline("> ") {
            Ok(line) => {
                let quit = matches!(command::parse(&line), Ok(command::Command::Quit));
                if !line.trim_start().starts_with("/password") {
                    let _ = editor.add_history_entry(line.as_str());
                }
                if lines.send(line).is_err() || quit {
                    // Stop reading so the terminal leaves raw mode before exit.
                    return;
                }
            }
            Err(_) => return, // Ctrl-C, Ctrl-D, or the terminal went away
        }
    }
}
