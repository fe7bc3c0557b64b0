//! `punchgate chat`: its flags, and the chat loop. Lines come in from a line
//! editor on a terminal (history, editing; events print above the prompt) or
//! from plain stdin (with `--json`, or when piped), and go to the node as
//! commands; events go out as text or JSON lines.

use std::io::IsTerminal;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use anyhow::Context;
use rustyline::ExternalPrinter as _;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::task::JoinSet;

use punchgate::command;
use punchgate::endpoint::Target;
use punchgate::home::HomeError;
use punchgate::identity::PeerId;
use punchgate::node::{room_passwords, Event, Node, NodeConfig, NodeError, RelayPolicy};
use punchgate::render;
use punchgate::web;

use super::dht::{ConnectArg, DhtArgs};
use super::password::PasswordArgs;
use super::{seconds, shutdown_signal, Output, TransportArgs};

// No doc comment: clap would take it as the subcommand's about text, which
// the `Chat` variant of `Commands` gives.
#[derive(clap::Args)]
pub struct ChatArgs {
    /// Tracker as PEERID@host:port, or host:port to trust on first use
    /// (repeatable: the node registers with each and meets peers through
    /// any that is up).
    #[arg(long = "tracker", env = "PUNCHGATE_TRACKER")]
    trackers: Vec<Target>,
    /// Your display name.
    #[arg(long, default_value = "anon")]
    name: String,
    /// Room to join (repeatable; the last is where your lines go).
    #[arg(long = "room", default_value = "lobby")]
    rooms: Vec<String>,
    /// Peer to connect to directly, as HOST:PORT (its key trusted on first
    /// use and remembered in known_peers) or PEERID@HOST:PORT, or by
    /// PEERID alone: through its DHT record and its own tracker
    /// (repeatable).
    #[arg(long)]
    connect: Vec<ConnectArg>,
    /// Messages of each joined room shown on start (0: none).
    #[arg(long, default_value_t = 20)]
    history_lines: usize,
    /// Address of the UDP socket.
    #[arg(long, default_value = "[::]:0")]
    bind: SocketAddr,
    /// Only let these peers connect in (repeatable); default: anyone.
    #[arg(long)]
    allow: Vec<PeerId>,
    /// Most connections to peers at once.
    #[arg(long, default_value_t = 64)]
    max_peers: usize,
    /// Seconds of silence before a keep-alive; keep it below the NAT's
    /// UDP mapping timeout (often 30 s).
    #[arg(long, default_value_t = 3.0)]
    keep_alive: f64,
    /// Seconds without packets before a connection (or the tracker
    /// session) is declared dead: a killed peer is reported gone within
    /// this plus --keep-alive.
    #[arg(long, default_value_t = 10.0)]
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
    /// Do not look for room members on the LAN (multicast beacons that
    /// name no room in clear; see docs/SECURITY.md).
    #[arg(long, env = "PUNCHGATE_NO_LAN_DISCOVERY")]
    no_lan_discovery: bool,
    /// Connections kept per room, each to a member chosen by the room's
    /// gossip, which carries messages to everyone else; a room of at most
    /// N+1 members is a full mesh. More links cost more copies per message
    /// and reach everyone in fewer hops.
    #[arg(long, value_name = "N", default_value_t = 8, value_parser = clap::value_parser!(u16).range(2..=64))]
    room_links: u16,
    /// Also serve the web page, on ADDR (default 127.0.0.1:0, a free
    /// port); its address with its secret is printed. Anything but
    /// loopback lets other machines reach it.
    #[arg(long, value_name = "ADDR", num_args = 0..=1, default_missing_value = "127.0.0.1:0")]
    web: Option<SocketAddr>,
    /// Open the web page in the default browser.
    #[arg(long)]
    open: bool,
    #[command(flatten)]
    password: PasswordArgs,
    /// Keep the password of the --room rooms in the data directory
    /// (room_passwords, owner-only) for the next start; /password
    /// --remember PW does the same for one room later.
    #[arg(long)]
    remember_password: bool,
    #[command(flatten)]
    transport: TransportArgs,
    #[command(flatten)]
    dht: DhtArgs,
}

impl ChatArgs {
    /// The node's config: the flags checked, plus the peers in the data
    /// directory's `bootstrap` file (which the node connects to); and the
    /// `--connect` targets given by address, which the chat connects to
    /// itself once the node runs (ids alone go to the node, which looks
    /// them up). Every `--connect` host must resolve: a typo is an error
    /// before the node starts.
    async fn node_config(self, home: &Path) -> anyhow::Result<(NodeConfig, Vec<Target>)> {
        let mut config = NodeConfig::new(self.name);
        config.connect = bootstrap_peers(home)?;
        let mut connect = Vec::new();
        for arg in self.connect {
            match arg {
                ConnectArg::Id(peer) => config.connect_ids.push(peer),
                ConnectArg::Addr(target) => {
                    target
                        .resolve()
                        .await
                        .with_context(|| format!("--connect {target}"))?;
                    connect.push(target);
                }
            }
        }
        config.dht = self.dht.config();
        config.max_gates = self.max_peers;
        config.liveness.keep_alive = seconds("--keep-alive", self.keep_alive)?;
        config.liveness.idle_timeout = seconds("--idle-timeout", self.idle_timeout)?;
        config.punch.deadline = seconds("--punch-timeout", self.punch_timeout)?;
        config.send_timeout = seconds("--send-timeout", self.send_timeout)?;
        config.transfer.downloads = self.downloads;
        config.transfer.upload_limit = self.max_rate;
        self.transport.apply(&mut config);
        if config.liveness.keep_alive >= config.liveness.idle_timeout {
            anyhow::bail!("--keep-alive must be shorter than --idle-timeout");
        }
        config.trackers = self.trackers;
        // Remembered passwords first; one given now replaces them.
        let remembered = room_passwords::load(home)?;
        config.passwords = self
            .rooms
            .iter()
            .filter_map(|room| Some((room.clone(), remembered.get(room)?.clone())))
            .collect();
        match self.password.resolve()? {
            Some(password) => {
                let secret = punchgate::pake::Secret::new(password);
                for room in &self.rooms {
                    if self.remember_password {
                        room_passwords::save(home, room, &secret)?;
                    }
                    config.passwords.insert(room.clone(), secret.clone());
                }
            }
            None if self.remember_password => {
                anyhow::bail!("--remember-password needs a password: PUNCHGATE_PASSWORD, --password-file or --password-prompt")
            }
            None => {}
        }
        config.rooms = self.rooms;
        config.bind = self.bind;
        config.lan_discovery = !self.no_lan_discovery;
        config.gossip.active = usize::from(self.room_links);
        // Two above the target, as by default: room for askers without a
        // member holding many more links than it seeks.
        config.gossip.max_active = config.gossip.active + 2;
        config.allow = (!self.allow.is_empty()).then_some(self.allow);
        config.relay = match (self.no_relay, self.relay_only) {
            (true, _) => RelayPolicy::Never,
            (_, true) => RelayPolicy::Only,
            _ => RelayPolicy::Fallback,
        };
        Ok((config, connect))
    }
}

/// Peers to greet at start-up, from the data directory's `bootstrap` file:
/// one `PEERID@host:port` (or `host:port`, its key trusted on first use)
/// per line; `#` starts a comment.
fn bootstrap_peers(home: &Path) -> anyhow::Result<Vec<Target>> {
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
            line.parse()
                .with_context(|| format!("{} line {}", path.display(), n + 1))
        })
        .collect()
}

/// `punchgate web`: the node with the web page as its only interface (no
/// REPL); events are still printed.
pub async fn run_web(home: &Path, mut args: ChatArgs, output: Output) -> anyhow::Result<()> {
    args.web.get_or_insert(punchgate::web::DEFAULT_LISTEN);
    run_with(home, args, output, false).await
}

/// The chat loop: lines in (a line editor on a terminal, else plain stdin),
/// events out (above the input line on a terminal, else to stdout).
pub async fn run(home: &Path, args: ChatArgs, output: Output) -> anyhow::Result<()> {
    run_with(home, args, output, true).await
}

/// Starts the web page for `node` if `listen` says so, and announces it.
async fn start_web(
    home: &Path,
    node: &Node,
    listen: Option<SocketAddr>,
    open: bool,
) -> anyhow::Result<Option<web::Web>> {
    let Some(listen) = listen else {
        return Ok(None);
    };
    if !listen.ip().is_loopback() {
        eprintln!(
            "punchgate: warning: the web page listens on {listen}, not loopback: other machines can reach it and try its secret"
        );
    }
    let config = web::WebConfig {
        listen,
        secret: web::load_or_create_secret(home)?,
        uploads: home.join("uploads"),
    };
    let page = web::Web::start(node.clone(), config).await?;
    node.emit(punchgate::node::Event::Web {
        url: page.url().to_string(),
    });
    if open {
        open_in_browser(&web::write_opener(home, page.url())?);
    }
    Ok(Some(page))
}

/// Hands the page that forwards to the web page (never the address with
/// its secret: see [`web::write_opener`]) to the desktop's opener; failing
/// is only reported.
fn open_in_browser(page: &Path) {
    let opener = if cfg!(target_os = "macos") {
        "open"
    } else if cfg!(windows) {
        "explorer"
    } else {
        "xdg-open"
    };
    if let Err(error) = std::process::Command::new(opener)
        .arg(page)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
    {
        eprintln!("punchgate: cannot open a browser ({opener}: {error}); open the address printed");
    }
}

async fn run_with(home: &Path, args: ChatArgs, output: Output, repl: bool) -> anyhow::Result<()> {
    let (listen, open) = (args.web, args.open);
    let history_lines = args.history_lines;
    let (config, connect) = args.node_config(home).await?;
    let (node, mut events) = Node::start(home, config)
        .await
        .context("cannot start the node")?;
    let mut connects = connect_at_start(&node, connect);
    // What ends the chat with an error (a --connect peer whose key changed).
    let mut failure = None;
    if history_lines > 0 {
        for room in node.rooms() {
            match node.room_history(&room, history_lines).await {
                Ok(messages) => messages.into_iter().for_each(|m| node.emit(m)),
                Err(error) => node.emit(punchgate::node::Event::error(format!(
                    "cannot show the history of #{room}: {error}"
                ))),
            }
        }
    }
    let page = match start_web(home, &node, listen, open).await {
        Ok(page) => page,
        Err(error) => {
            node.shutdown().await;
            return Err(error);
        }
    };
    let hub = page.as_ref().map(web::Web::hub);
    let interactive =
        repl && !output.json && std::io::stdin().is_terminal() && std::io::stdout().is_terminal();
    // Lines typed or piped in; the channel closing is the end of input.
    let (lines_tx, mut lines) = tokio::sync::mpsc::unbounded_channel::<Line>();
    // What the line editor shows before the cursor: who plain lines go to.
    let prompt = Arc::new(Mutex::new(prompt_for(None)));
    // Without a REPL, the input channel stays open until the end.
    let mut held_input = None;
    let printer = if interactive {
        let mut editor = rustyline::DefaultEditor::new().context("cannot start the line editor")?;
        let mut above_prompt = editor
            .create_external_printer()
            .context("cannot start the line editor")?;
        let editor_prompt = prompt.clone();
        std::thread::spawn(move || edit_lines(editor, editor_prompt, lines_tx));
        let mention = Mention::new(node.peer_id().to_string(), node.name());
        tokio::spawn(async move {
            let mut throttle = render::ProgressThrottle::default();
            while let Some(event) = events.next().await {
                if let Some(hub) = &hub {
                    hub.publish(&event);
                }
                if !throttle.admit(&event, std::time::Instant::now()) {
                    continue;
                }
                let bell = if mention.rings(&event) { "\x07" } else { "" };
                for line in render::render(&event) {
                    // Each line ends itself: lines printed before the first
                    // prompt would otherwise run together.
                    let painted = format!("{}{bell}\n", render::paint(&event, &line));
                    if above_prompt.print(painted).is_err() {
                        return;
                    }
                }
            }
        })
    } else {
        if repl {
            tokio::spawn(async move {
                let mut stdin = BufReader::new(tokio::io::stdin()).lines();
                while let Ok(Some(text)) = stdin.next_line().await {
                    if lines_tx.send(Line { text, done: None }).is_err() {
                        break;
                    }
                }
            });
        } else {
            // The page is the only interface: input never ends by itself.
            held_input = Some(lines_tx);
        }
        tokio::spawn(async move {
            let mut throttle = render::ProgressThrottle::default();
            while let Some(event) = events.next().await {
                if let Some(hub) = &hub {
                    hub.publish(&event);
                }
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
                let Some(Line { text, done }) = line else {
                    node.shutdown().await;
                    break;
                };
                match command::parse(&text) {
                    Ok(command) => {
                        if !command::execute(&node, command).await {
                            break;
                        }
                    }
                    Err(command::CommandError::Empty) => {}
                    Err(error) => command::report_error(&node, error),
                }
                if let Some(done) = done {
                    *lock(&prompt) = prompt_for(node.talking_to());
                    let _ = done.send(());
                }
            }
            _ = shutdown_signal() => {
                node.shutdown().await;
                break;
            }
            // `/quit` typed into the page: the node has shut down.
            _ = quit_from_page(page.as_ref()) => break,
            Some(joined) = connects.join_next(), if !connects.is_empty() => {
                match joined {
                    // A peer given by address with another key than the
                    // one remembered: not who the user asked for.
                    Ok(Err(error @ NodeError::Home(HomeError::KeyChanged { .. }))) => {
                        node.shutdown().await;
                        failure = Some(error);
                        break;
                    }
                    // The manager told it already, with when it tries again.
                    Ok(Err(NodeError::Unreachable { .. })) | Ok(Ok(())) | Err(_) => {}
                    Ok(Err(error)) => node.emit(Event::error(error)),
                }
            }
        }
    }
    // Print what is left (goodbyes, last messages): the event stream ends
    // once the node has shut down.
    let _ = printer.await;
    drop(held_input);
    if let Some(page) = page {
        page.stop().await;
    }
    match failure {
        Some(error) => Err(error.into()),
        None => Ok(()),
    }
}

/// Connects to each `--connect` target in the background, as the node does
/// with its bootstrap peers; the chat watches how each first attempt ends.
fn connect_at_start(node: &Node, targets: Vec<Target>) -> JoinSet<Result<(), NodeError>> {
    let mut connects = JoinSet::new();
    for target in targets {
        let node = node.clone();
        connects.spawn(async move { node.connect_target(&target).await });
    }
    connects
}

/// A line typed or piped in. `done`, when given, is told once the line's
/// command was carried out (the editor waits for it after a `/switch`, so
/// the next prompt shows who lines go to).
struct Line {
    text: String,
    done: Option<std::sync::mpsc::Sender<()>>,
}

fn lock(prompt: &Mutex<String>) -> std::sync::MutexGuard<'_, String> {
    prompt.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The prompt: `> ` for the current room, `@NAME~ID> ` while talking
/// privately to one peer.
fn prompt_for(talking_to: Option<String>) -> String {
    match talking_to {
        Some(peer) => format!("@{}> ", render::sanitize(&peer)),
        None => "> ".to_string(),
    }
}

/// Whether a message mentions the user by name: it then rings the
/// terminal's bell.
struct Mention {
    me: String,
    name: String,
}

impl Mention {
    fn new(me: String, name: String) -> Self {
        Self {
            me,
            name: name.to_lowercase(),
        }
    }

    /// A live message from someone else naming the user as a whole word
    /// (`@name` too, in any case).
    fn rings(&self, event: &punchgate::node::Event) -> bool {
        let punchgate::node::Event::Message {
            from,
            text,
            history,
            ..
        } = event
        else {
            return false;
        };
        !history
            && *from != self.me
            && text
                .to_lowercase()
                .split(|c: char| !c.is_alphanumeric() && c != '_' && c != '-')
                .any(|word| word == self.name)
    }
}

/// Completes when the page asked to quit; never without a page.
async fn quit_from_page(page: Option<&web::Web>) {
    match page {
        Some(page) => page.quit_requested().await,
        None => std::future::pending().await,
    }
}

/// Reads lines with the line editor (history, editing) until /quit, Ctrl-C
/// or Ctrl-D. Password lines stay out of the history.
fn edit_lines(
    mut editor: rustyline::DefaultEditor,
    prompt: Arc<Mutex<String>>,
    lines: tokio::sync::mpsc::UnboundedSender<Line>,
) {
    loop {
        let shown = lock(&prompt).clone();
        match editor.readline(&shown) {
            Ok(text) => {
                let parsed = command::parse(&text);
                let quit = matches!(parsed, Ok(command::Command::Quit));
                if !text.trim_start().starts_with("/password") {
                    let _ = editor.add_history_entry(text.as_str());
                }
                let (done, carried_out) = std::sync::mpsc::channel();
                let wait = matches!(parsed, Ok(command::Command::Switch(_)));
                let line = Line {
                    text,
                    done: wait.then_some(done),
                };
                if lines.send(line).is_err() || quit {
                    // Stop reading so the terminal leaves raw mode before exit.
                    return;
                }
                if wait {
                    let _ = carried_out.recv();
                }
            }
            Err(_) => return, // Ctrl-C, Ctrl-D, or the terminal went away
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use punchgate::node::Event;

    fn message(from: &str, text: &str, history: bool) -> Event {
        Event::Message {
            id: "x".into(),
            from: from.into(),
            from_name: "bob".into(),
            room: "lobby".into(),
            text: text.into(),
            ts: 0,
            history,
        }
    }

    #[test]
    fn a_mention_of_the_name_rings_once_live_and_from_someone_else() {
        let mention = Mention::new("ME".into(), "Alice".into());
        assert!(mention.rings(&message("BOB", "hi alice, look", false)));
        assert!(mention.rings(&message("BOB", "@ALICE!", false)));
        assert!(!mention.rings(&message("BOB", "malice aforethought", false)));
        assert!(!mention.rings(&message("BOB", "hi alice", true)), "history");
        assert!(!mention.rings(&message("ME", "I am alice", false)), "own");
    }

    #[test]
    fn the_prompt_names_the_peer_talked_to() {
        assert_eq!(prompt_for(None), "> ");
        assert_eq!(prompt_for(Some("bob~abc123".into())), "@bob~abc123> ");
    }
}
