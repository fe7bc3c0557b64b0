//! `punchgate send` and `punchgate get`: their flags, sharing files behind a
//! ticket until Ctrl-C, and fetching what a ticket names with a progress bar
//! on a terminal (or progress events with `--json`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::Context;

use punchgate::endpoint::Target;
use punchgate::node::{Event, Node, NodeConfig, TransferConfig};
use punchgate::render;
use punchgate::transfer::Ticket;

use super::{seconds, shutdown_signal, Output, TransportArgs};

// No doc comments on the two structs: clap would take them as the
// subcommands' about texts, which the variants of `Commands` give.

#[derive(clap::Args)]
pub struct SendArgs {
    /// Files or folders to share (a folder keeps its layout).
    #[arg(required = true)]
    paths: Vec<PathBuf>,
    /// Tracker as PEERID@host:port, or host:port to trust on first use.
    #[arg(long, env = "PUNCHGATE_TRACKER")]
    tracker: Target,
    /// The name receivers see this sender by.
    #[arg(long, default_value = "sender")]
    name: String,
    /// Also print the ticket as a QR code, for a phone's camera.
    #[arg(long)]
    qr: bool,
    /// Address of the UDP socket.
    #[arg(long, default_value = "[::]:0")]
    bind: SocketAddr,
    /// Chunk size in bytes: a power of two from 16 KiB to 16 MiB.
    #[arg(long, default_value_t = punchgate::transfer::manifest::DEFAULT_CHUNK_SIZE)]
    chunk_size: u32,
    /// Most bytes per second to upload, to all receivers together.
    #[arg(long)]
    max_rate: Option<u32>,
    #[command(flatten)]
    transport: TransportArgs,
}

#[derive(clap::Args)]
pub struct GetArgs {
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
    #[arg(long, default_value = "[::]:0")]
    bind: SocketAddr,
    /// Seconds a hole punch to the sender may take.
    #[arg(long, default_value_t = 10.0)]
    punch_timeout: f64,
    /// Seconds to wait for another holder (or the sender back) once every
    /// source is gone, then give up keeping what was verified. Default:
    /// wait until Ctrl-C.
    #[arg(long, value_name = "SECS")]
    source_wait: Option<f64>,
    #[command(flatten)]
    transport: TransportArgs,
}

/// `punchgate send`: shares, prints the ticket, serves until Ctrl-C.
pub async fn send(home: &Path, args: SendArgs, output: Output) -> anyhow::Result<()> {
    let mut config = NodeConfig::new(&args.name);
    config.trackers = vec![args.tracker];
    config.bind = args.bind;
    config.rooms = Vec::new();
    config.transfer.chunk_size = args.chunk_size;
    config.transfer.upload_limit = args.max_rate;
    args.transport.apply(&mut config);
    let paths = args.paths;
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    if !output.json {
        eprintln!("hashing {} path(s)…", paths.len());
    }
    // Ctrl-C is honoured from here on, hashing included.
    let stop = shutdown_signal();
    tokio::pin!(stop);
    let ticket = tokio::select! {
        ticket = node.share_with_ticket(paths) => ticket.context("cannot share")?,
        () = &mut stop => {
            node.shutdown().await;
            anyhow::bail!("interrupted while hashing; nothing was shared");
        }
    };
    let share = node.shared(&ticket.content).context("the share vanished")?;
    output.show(&Event::Ticket {
        ticket: ticket.to_string(),
        hash: ticket.content.to_string(),
        name: share.layout.manifest.name.clone(),
        bytes: share.layout.total_bytes,
        files: share.layout.manifest.files.len() as u32,
    })?;
    if args.qr && !output.json {
        match render::qr(&ticket.to_string()) {
            Ok(code) => println!("{code}"),
            Err(error) => eprintln!("punchgate: {error}"),
        }
    }
    let mut throttle = render::ProgressThrottle::default();
    loop {
        tokio::select! {
            event = events.next() => match event {
                Some(event) => {
                    if output.json || throttle.admit(&event, std::time::Instant::now()) {
                        show(&output, &event)?;
                    }
                }
                None => break,
            },
            () = &mut stop => break,
        }
    }
    node.shutdown().await;
    Ok(())
}

/// `punchgate get`: fetches what the ticket names, with a progress bar on a
/// terminal (or progress events with --json).
pub async fn get(home: &Path, args: GetArgs, output: Output) -> anyhow::Result<()> {
    let mut config = NodeConfig::new("getter");
    // Pinned to the key the ticket names: never trusted on first use.
    config.trackers = vec![Target {
        peer: Some(args.ticket.tracker.id),
        host: args.ticket.tracker.host.clone(),
    }];
    config.bind = args.bind;
    config.rooms = Vec::new();
    config.punch.deadline = seconds("--punch-timeout", args.punch_timeout)?;
    config.transfer.streams = args.streams.max(1);
    config.transfer.source_wait = args
        .source_wait
        .map(|secs| seconds("--source-wait", secs))
        .transpose()?;
    args.transport.apply(&mut config);
    let GetArgs {
        ticket, out, force, ..
    } = args;
    check_out_folder(&out)?;
    let target = out.clone();
    tracing::debug!("get: starting the node");
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    tracing::debug!("get: node started");
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
                        name,
                        bytes,
                        total,
                        files_done,
                        files,
                        ..
                    },
                    Some(bar),
                ) => {
                    bar.set_length(*total);
                    bar.set_position(*bytes);
                    let name = render::sanitize(name);
                    bar.set_message(if *files > 1 {
                        format!("{name} ({files_done}/{files} files)")
                    } else {
                        name
                    });
                }
                // The report is printed once the fetch returns; holders'
                // offers in the swarm room are of the content being fetched.
                (Event::TransferDone { .. } | Event::FileOffered { .. }, _) if !json => {}
                (_, Some(bar)) => {
                    for line in render::render_transfer(&event) {
                        bar.println(line);
                    }
                }
                _ => {
                    if json || throttle.admit(&event, std::time::Instant::now()) {
                        let _ = show(&output, &event);
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
    tracing::debug!("get: shutting down");
    node.shutdown().await;
    tracing::debug!("get: shut down");
    // The event stream ends once the node has shut down: every line is out.
    let _ = printer.await;
    let report = result?;
    if !json {
        let done = Event::TransferDone {
            path: report.shown_path(&target),
            report,
        };
        for line in render::render(&done) {
            println!("{line}");
        }
    }
    Ok(())
}

/// Prints `event` as `send` and `get` do: JSON in `--json` mode, else the
/// lines a person needs (no chat hints, no swarm room notices).
fn show(output: &Output, event: &Event) -> std::io::Result<()> {
    if output.json {
        return output.show(event);
    }
    let mut stdout = std::io::stdout().lock();
    for line in render::render_transfer(event) {
        writeln!(stdout, "{line}")?;
    }
    stdout.flush()
}

/// Refuses an output folder that cannot be one before anything connects:
/// a file in its place, or a place where it cannot be made.
fn check_out_folder(out: &Path) -> anyhow::Result<()> {
    match std::fs::symlink_metadata(out) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(meta) if meta.file_type().is_symlink() && out.is_dir() => Ok(()),
        Ok(_) => anyhow::bail!(
            "{} is not a folder; give -o a folder to put the download in",
            out.display()
        ),
        Err(_) => std::fs::create_dir_all(out).map_err(|error| {
            anyhow::anyhow!(
                "cannot make the folder {}: {}; give -o a folder you can write",
                out.display(),
                error
            )
        }),
    }
}
