//! The commands of the chat REPL and of `--json` mode (the same syntax):
//! a plain line is a message, `/name args` is a command; parsing them, and
//! carrying them out on a node through its public API.

use std::path::PathBuf;

use crate::node::events::HelpLine;
use crate::node::{Event, Node, NodeError, PeerStatus};
use crate::pake::Secret;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Command {
    /// Send text to the current room.
    Say(String),
    Help,
    Peers,
    /// Every gate: path, address, RTT, bytes each way, age.
    Show,
    Rooms,
    /// Connect to `PEERID@host:port`, or to a known peer by name or id prefix.
    Connect(String),
    Join(String),
    Leave(String),
    /// Show the current room's last N messages (default 20).
    History(usize),
    /// Protect the current room with a password.
    Password(Secret),
    /// The same, and keep the password in the data directory for the next
    /// start.
    RememberPassword(Secret),
    /// Plain lines go privately to this peer (name or id), or back to the
    /// current room (`None`).
    Switch(Option<String>),
    /// A private message to one peer.
    Msg {
        to: String,
        text: String,
    },
    /// Share a file or folder and offer it to the current room.
    Send(String),
    /// What the rooms offer.
    Files,
    /// Download an offer (by name or hash prefix) into a folder.
    Get {
        what: String,
        dir: Option<String>,
        /// Replace files in the way.
        force: bool,
    },
    Quit,
}

/// `(usage, what it does)` for every command; `/help` prints these.
pub const HELP: &[(&str, &str)] = &[
    ("<text>", "send a message to the current room"),
    ("/help, /info", "list the commands"),
    (
        "/peers",
        "every known peer: name, id, status, path, address",
    ),
    (
        "/show",
        "every connection: peer, path, address, RTT, bytes in and out, age",
    ),
    (
        "/history [N]",
        "the current room's last N messages (default 20), in order",
    ),
    (
        "/msg PEER TEXT",
        "a private message to one peer (name or id)",
    ),
    (
        "/switch [PEER]",
        "talk privately to PEER (name or id) until /switch alone goes back to the room",
    ),
    (
        "/password [--remember] PW",
        "make the current room a password room: only peers who prove PW share it (--remember keeps PW in the data directory for the next start)",
    ),
    (
        "/rooms",
        "the rooms you are in (the last joined is current)",
    ),
    (
        "/connect PEER",
        "connect to a room member by name or id, to HOST PORT (its key trusted on first use), or to PEERID@HOST:PORT",
    ),
    (
        "/send PATH",
        "share a file or folder and offer it to the current room",
    ),
    (
        "/files",
        "what your rooms offer: name, size, hash, who has it",
    ),
    (
        "/get NAME|HASH [DIR] [--force]",
        "download an offer from everyone who has it (into DIR, default the download folder; --force replaces files in the way)",
    ),
    ("/join ROOM", "join a room and connect to its members"),
    ("/leave ROOM", "leave a room"),
    ("/quit, /exit", "tell connected peers goodbye and exit"),
];

pub fn help_lines() -> Vec<HelpLine> {
    HELP.iter()
        .map(|(usage, about)| HelpLine {
            usage: usage.to_string(),
            about: about.to_string(),
        })
        .collect()
}

/// Messages `/history` shows when not told how many.
pub const DEFAULT_HISTORY: usize = 20;

#[derive(Debug, PartialEq, Eq, thiserror::Error)]
pub enum CommandError {
    #[error("unknown command /{0}; /help lists them")]
    Unknown(String),
    #[error("/{0} needs an argument: {1}")]
    MissingArgument(&'static str, &'static str),
    #[error("/{0} takes {1}")]
    BadArgument(&'static str, &'static str),
    #[error("empty line")]
    Empty,
}

/// The word that makes `/password` keep the password for the next start.
const REMEMBER: &str = "--remember";

/// The word that makes `/get` replace files in the way.
const FORCE: &str = "--force";

/// Parses one line. `//text` sends a message starting with `/`.
pub fn parse(line: &str) -> Result<Command, CommandError> {
    let line = line.trim_end_matches(['\r', '\n']);
    if line.trim().is_empty() {
        return Err(CommandError::Empty);
    }
    let Some(rest) = line.strip_prefix('/') else {
        return Ok(Command::Say(line.to_string()));
    };
    if rest.starts_with('/') {
        return Ok(Command::Say(rest.to_string()));
    }
    let (name, arg) = match rest.split_once(char::is_whitespace) {
        Some((name, arg)) => (name, arg.trim()),
        None => (rest, ""),
    };
    let required = |command: &'static str, what: &'static str| {
        if arg.is_empty() {
            Err(CommandError::MissingArgument(command, what))
        } else {
            Ok(arg.to_string())
        }
    };
    match name {
        "help" | "h" | "?" | "info" => Ok(Command::Help),
        "peers" => Ok(Command::Peers),
        "show" => Ok(Command::Show),
        "rooms" => Ok(Command::Rooms),
        "connect" => required("connect", "a name, an id, HOST PORT or PEERID@HOST:PORT")
            .map(|what| Command::Connect(host_port(&what).unwrap_or(what))),
        "switch" => Ok(Command::Switch((!arg.is_empty()).then(|| arg.to_string()))),
        "join" => required("join", "a room name").map(Command::Join),
        "leave" => required("leave", "a room name").map(Command::Leave),
        "msg" => match arg.split_once(char::is_whitespace) {
            Some((to, text)) if !text.trim().is_empty() => Ok(Command::Msg {
                to: to.to_string(),
                text: text.trim().to_string(),
            }),
            _ => Err(CommandError::MissingArgument("msg", "a peer and the text")),
        },
        "password" => match arg.strip_prefix(REMEMBER) {
            Some(pw) if pw.is_empty() || pw.starts_with(' ') => match pw.trim_start() {
                "" => Err(CommandError::MissingArgument(
                    "password",
                    "the room's password",
                )),
                pw => Ok(Command::RememberPassword(Secret::new(pw))),
            },
            _ => required("password", "the room's password")
                .map(|pw| Command::Password(Secret::new(pw))),
        },
        "history" => match arg {
            "" => Ok(Command::History(DEFAULT_HISTORY)),
            count => count
                .parse()
                .map(Command::History)
                .map_err(|_| CommandError::BadArgument("history", "a number of messages")),
        },
        "send" => required("send", "a file or folder").map(Command::Send),
        "files" => Ok(Command::Files),
        "get" => {
            let what = required("get", "a name or hash from /files")?;
            // `--force` comes right after the name or last; the rest is
            // the folder, spaces and all.
            let (what, rest) = what
                .split_once(char::is_whitespace)
                .unwrap_or((what.as_str(), ""));
            let rest = rest.trim();
            let (dir, force) = if rest == FORCE {
                ("", true)
            } else if let Some(dir) = rest.strip_prefix(FORCE).filter(|d| d.starts_with(' ')) {
                (dir.trim(), true)
            } else if let Some(dir) = rest.strip_suffix(FORCE).filter(|d| d.ends_with(' ')) {
                (dir.trim(), true)
            } else {
                (rest, false)
            };
            Ok(Command::Get {
                what: what.to_string(),
                dir: (!dir.is_empty()).then(|| dir.to_string()),
                force,
            })
        }
        "quit" | "exit" | "q" => Ok(Command::Quit),
        other => Err(CommandError::Unknown(other.to_string())),
    }
}

/// `HOST PORT` (as the programs punchgate replaces took it) as
/// `HOST:PORT`; `None` for anything else.
fn host_port(what: &str) -> Option<String> {
    let (host, port) = what.split_once(char::is_whitespace)?;
    let port: u16 = port.trim().parse().ok()?;
    if host.contains(':') && !host.starts_with('[') {
        Some(format!("[{host}]:{port}"))
    } else {
        Some(format!("{host}:{port}"))
    }
}

/// Carries out `command` on `node` through its public API, answering in its
/// event stream (the REPL, `--json` mode and any other frontend share
/// this). Returns `false` on `/quit`, after the node has shut down.
pub async fn execute(node: &Node, command: Command) -> bool {
    execute_in(node, command, None).await
}

/// [`execute`] for an interface that shows one room of several (the web
/// page): the commands that act on the current room (text, `/history`,
/// `/password`, `/send`) act on `room` instead when it is given, and the
/// current room stays what it was.
pub async fn execute_in(node: &Node, command: Command, room: Option<&str>) -> bool {
    let quits = command == Command::Quit;
    let result = match (command, room) {
        (Command::Say(text), Some(room)) => node.say_in(room, &text).await.map(|_| ()),
        (Command::History(count), Some(room)) => node.history_in(room, count).await,
        (Command::Password(password), Some(room)) => node.set_password_in(room, password).await,
        (Command::RememberPassword(password), Some(room)) => {
            node.set_and_remember_password_in(room, password).await
        }
        (Command::Send(path), Some(room)) => {
            let (task_node, room) = (node.clone(), room.to_string());
            node.run_in_background(async move {
                task_node
                    .send_files_in(&room, vec![PathBuf::from(path)])
                    .await
                    .map(|_| ())
            });
            Ok(())
        }
        (command, _) => execute_here(node, command).await,
    };
    if let Err(error) = result {
        node.emit(Event::error(error));
    }
    !quits
}

/// Carries out `command` where the node stands (its current room).
async fn execute_here(node: &Node, command: Command) -> Result<(), NodeError> {
    match command {
        Command::Say(text) => node.say(&text).await.map(|_| ()),
        Command::Help => {
            node.emit(Event::Help {
                commands: help_lines(),
            });
            Ok(())
        }
        Command::Peers => {
            node.emit(Event::Peers {
                peers: node.peers(),
            });
            Ok(())
        }
        Command::Show => {
            node.emit(Event::Gates {
                gates: node.gates(),
            });
            Ok(())
        }
        Command::Rooms => {
            node.emit(Event::Rooms {
                rooms: node.rooms(),
            });
            Ok(())
        }
        Command::Connect(what) => {
            if let Some(name) = already_connected(node, &what) {
                node.emit(Event::Info {
                    message: format!("already connected to {name}"),
                });
            } else {
                // Connecting can take seconds; the REPL stays responsive.
                let task_node = node.clone();
                node.run_in_background(async move {
                    match task_node.connect_by_text(&what).await {
                        // The node told it already, with when it tries again.
                        Err(NodeError::Unreachable { .. }) => Ok(()),
                        other => other,
                    }
                });
            }
            Ok(())
        }
        Command::Join(room) => node.join(&room).await,
        Command::Leave(room) => node.leave(&room).await,
        Command::History(count) => node.history(count).await,
        Command::Password(password) => node.set_password(password).await,
        Command::RememberPassword(password) => node.set_and_remember_password(password).await,
        Command::Switch(to) => node.switch(to.as_deref()),
        Command::Msg { to, text } => node.direct_message(&to, &text).await.map(|_| ()),
        Command::Send(path) => {
            // Hashing a large folder takes a while; the REPL stays responsive.
            let task_node = node.clone();
            node.run_in_background(async move {
                task_node
                    .send_files(vec![PathBuf::from(path)])
                    .await
                    .map(|_| ())
            });
            Ok(())
        }
        Command::Files => {
            node.emit(Event::Files {
                files: node.files(),
            });
            Ok(())
        }
        Command::Get { what, dir, force } => {
            let target = dir
                .map(PathBuf::from)
                .unwrap_or_else(|| node.downloads_dir());
            node.get_offered(&what, target, force)
        }
        Command::Quit => {
            node.shutdown().await;
            Ok(())
        }
    }
}

/// `NAME [ID]` of the peer `what` names if it is connected now.
fn already_connected(node: &Node, what: &str) -> Option<String> {
    let peer = match what.parse::<crate::endpoint::Target>() {
        Ok(target) => target.peer?,
        Err(_) => node.resolve_peer(what).ok()?,
    }
    .to_string();
    node.peers()
        .into_iter()
        .find(|p| p.peer_id == peer && p.status == PeerStatus::Connected)
        .map(|p| {
            format!(
                "{} [{}]",
                crate::render::sanitize(&p.name),
                p.peer_id.get(..10).unwrap_or(&p.peer_id)
            )
        })
}

/// Reports a line that could not be parsed, as an [`Event::Error`].
pub fn report_error(node: &Node, error: CommandError) {
    node.emit(Event::error(error));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lines_parse_into_commands() {
        assert_eq!(parse("hello there"), Ok(Command::Say("hello there".into())));
        assert_eq!(
            parse("//not a command"),
            Ok(Command::Say("/not a command".into()))
        );
        assert_eq!(parse("/peers"), Ok(Command::Peers));
        assert_eq!(parse("/info"), Ok(Command::Help));
        assert_eq!(
            parse("/password --remember  s3cret pw"),
            Ok(Command::RememberPassword(Secret::new("s3cret pw")))
        );
        assert_eq!(
            parse("/password --rememberme"),
            Ok(Command::Password(Secret::new("--rememberme")))
        );
        assert!(parse("/password --remember").is_err());
        assert_eq!(parse("/exit"), Ok(Command::Quit));
        assert_eq!(
            parse("/switch bob"),
            Ok(Command::Switch(Some("bob".into())))
        );
        assert_eq!(parse("/switch"), Ok(Command::Switch(None)));
        assert_eq!(
            parse("/connect 127.0.0.1 38650"),
            Ok(Command::Connect("127.0.0.1:38650".into()))
        );
        assert_eq!(
            parse("/connect ::1 38650"),
            Ok(Command::Connect("[::1]:38650".into()))
        );
        assert_eq!(
            parse("/connect 127.0.0.1:38650"),
            Ok(Command::Connect("127.0.0.1:38650".into()))
        );
        assert_eq!(parse("/connect bob"), Ok(Command::Connect("bob".into())));
        assert_eq!(parse("/join  games "), Ok(Command::Join("games".into())));
        assert_eq!(parse("/quit\n"), Ok(Command::Quit));
        assert_eq!(parse("/history"), Ok(Command::History(DEFAULT_HISTORY)));
        assert_eq!(parse("/history 5"), Ok(Command::History(5)));
        assert!(parse("/history lots").is_err());
        assert_eq!(
            parse("/join"),
            Err(CommandError::MissingArgument("join", "a room name"))
        );
        assert_eq!(
            parse("/frobnicate"),
            Err(CommandError::Unknown("frobnicate".into()))
        );
        assert_eq!(parse("   "), Err(CommandError::Empty));
        assert_eq!(
            parse("/send my photos"),
            Ok(Command::Send("my photos".into()))
        );
        assert_eq!(
            parse("/get abcd ~/in  box"),
            Ok(Command::Get {
                what: "abcd".into(),
                dir: Some("~/in  box".into()),
                force: false,
            })
        );
        assert_eq!(
            parse("/get photos"),
            Ok(Command::Get {
                what: "photos".into(),
                dir: None,
                force: false,
            })
        );
        for line in ["/get photo.bin DIR --force", "/get photo.bin --force DIR"] {
            assert_eq!(
                parse(line),
                Ok(Command::Get {
                    what: "photo.bin".into(),
                    dir: Some("DIR".into()),
                    force: true,
                }),
                "{line}"
            );
        }
        assert_eq!(
            parse("/get photo.bin --force"),
            Ok(Command::Get {
                what: "photo.bin".into(),
                dir: None,
                force: true,
            })
        );
        // A folder whose name merely contains the word is a folder.
        assert_eq!(
            parse("/get photo.bin my--force"),
            Ok(Command::Get {
                what: "photo.bin".into(),
                dir: Some("my--force".into()),
                force: false,
            })
        );
    }

    #[test]
    fn every_command_has_help() {
        for name in [
            "help", "info", "peers", "show", "history", "msg", "switch", "password", "rooms",
            "connect", "join", "leave", "send", "files", "get", "quit", "exit",
        ] {
            assert!(
                HELP.iter().any(|(usage, _)| usage
                    .split(", ")
                    .any(|u| u.starts_with(&format!("/{name}")))),
                "{name}"
            );
        }
    }
}
