//! The config file: defaults for the usual flags, so that `punchgate chat`
//! alone joins the user's tracker, name and rooms. `config.toml` in the
//! platform's config directory (`~/.config/punchgate/config.toml` on
//! Linux), or the file `--config PATH` (or `PUNCHGATE_CONFIG`) names.
//!
//! Keys are the long flag names. A top-level key is a default for every
//! subcommand that has that flag (`tracker` serves chat, send, netcheck
//! …); a table named after a subcommand (`[chat]`) gives defaults for it
//! alone and wins over the top level. Strings and numbers are values,
//! `true` turns a switch on, an array repeats a repeatable flag:
//!
//! ```toml
//! tracker = "PEERID@tracker.example:7000"
//! name = "alice"
//! [chat]
//! room = ["lobby", "games"]
//! history-lines = 50
//! ```
//!
//! What the command line says wins, then the environment (a flag's own
//! variable, such as `PUNCHGATE_TRACKER`), then the file, then the
//! built-in default. The file is turned into flags before the command line
//! is read, so clap checks its values like typed ones.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{ArgAction, CommandFactory};

use super::Cli;

/// The flag, and the environment variable, that name the file.
const FLAG: &str = "--config";
const ENV: &str = "PUNCHGATE_CONFIG";

/// The command line with the config file's defaults added as flags.
pub fn with_defaults(args: Vec<OsString>) -> anyhow::Result<Vec<OsString>> {
    let (path, explicit) = match config_path(&args) {
        Some(path) => (path, true),
        None => match dirs::config_dir() {
            Some(dir) => (dir.join("punchgate").join("config.toml"), false),
            None => return Ok(args),
        },
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound && !explicit => return Ok(args),
        Err(error) => {
            return Err(error)
                .with_context(|| format!("cannot read the config file {}", path.display()))
        }
    };
    let table = parse(&path, &text)?;
    apply(args, &table, &path)
}

/// `--config PATH`, `--config=PATH` or `PUNCHGATE_CONFIG`.
fn config_path(args: &[OsString]) -> Option<PathBuf> {
    let mut words = args.iter().skip(1);
    while let Some(word) = words.next() {
        let text = word.to_string_lossy();
        if text == FLAG {
            return words.next().map(PathBuf::from);
        }
        if let Some(path) = text.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
        if text == "--" {
            break;
        }
    }
    std::env::var_os(ENV).map(PathBuf::from)
}

fn parse(path: &Path, text: &str) -> anyhow::Result<toml::Table> {
    text.parse::<toml::Table>().map_err(|error| {
        let line = error
            .span()
            .map(|span| text[..span.start.min(text.len())].lines().count().max(1))
            .unwrap_or(1);
        anyhow::anyhow!(
            "{} line {line}: {}; fix or remove that line",
            path.display(),
            error.message().trim()
        )
    })
}

/// A flag that `command` takes: its long name, whether it takes a value
/// and may be repeated, and its environment variable.
struct Flag {
    long: String,
    takes_value: bool,
    repeats: bool,
    env: Option<OsString>,
}

fn flags(command: &clap::Command) -> Vec<Flag> {
    command
        .get_arguments()
        .filter_map(|arg| {
            let long = arg.get_long()?.to_string();
            let action = arg.get_action();
            Some(Flag {
                long,
                takes_value: action.takes_values(),
                repeats: matches!(action, ArgAction::Append),
                env: arg.get_env().map(|e| e.to_os_string()),
            })
        })
        .filter(|flag| !matches!(flag.long.as_str(), "help" | "version" | "config"))
        .collect()
}

/// Whether the command line gives `--long` already.
fn given(args: &[OsString], long: &str) -> bool {
    let exact = format!("--{long}");
    let with_value = format!("--{long}=");
    args.iter()
        .map(|a| a.to_string_lossy())
        .take_while(|a| a != "--")
        .any(|a| a == exact || a.starts_with(&with_value))
}

/// The flags for `key = value`, or why it cannot be one.
fn as_flags(flag: &Flag, value: &toml::Value) -> Result<Vec<OsString>, String> {
    let name = format!("--{}", flag.long);
    let scalar = |value: &toml::Value| match value {
        toml::Value::String(text) => Ok(text.clone()),
        toml::Value::Integer(n) => Ok(n.to_string()),
        toml::Value::Float(x) => Ok(x.to_string()),
        _ => Err(format!("{} takes a string or a number", flag.long)),
    };
    match (value, flag.takes_value) {
        (toml::Value::Boolean(on), false) => Ok(if *on { vec![name.into()] } else { Vec::new() }),
        (_, false) => Err(format!(
            "{} is a switch: write {} = true",
            flag.long, flag.long
        )),
        (toml::Value::Array(items), true) if flag.repeats => items
            .iter()
            .map(|item| Ok([name.clone().into(), scalar(item)?.into()]))
            .collect::<Result<Vec<[OsString; 2]>, String>>()
            .map(|pairs| pairs.into_iter().flatten().collect()),
        (toml::Value::Array(_), true) => Err(format!("{} takes one value, not a list", flag.long)),
        (value, true) => Ok(vec![name.into(), scalar(value)?.into()]),
    }
}

/// Inserts the defaults `table` gives for the subcommand on the command
/// line (and for the global flags) that the command line and the
/// environment leave unset.
fn apply(
    mut args: Vec<OsString>,
    table: &toml::Table,
    path: &Path,
) -> anyhow::Result<Vec<OsString>> {
    let root = Cli::command();
    let file = path.display();
    // Where the subcommand's name is: the first word naming one.
    let names: Vec<String> = root
        .get_subcommands()
        .map(|c| c.get_name().to_string())
        .collect();
    let at = args
        .iter()
        .enumerate()
        .skip(1)
        .find(|(_, a)| names.iter().any(|n| **a == **n))
        .map(|(at, _)| at);
    for (key, value) in table {
        let is_table = matches!(value, toml::Value::Table(_));
        if is_table && !names.contains(key) {
            anyhow::bail!(
                "{file}: [{key}] names no subcommand; use one of {}",
                names.join(", ")
            );
        }
        if !is_table
            && !root
                .get_subcommands()
                .chain([&root])
                .any(|c| flags(c).iter().any(|f| f.long == *key))
        {
            anyhow::bail!("{file}: no command has a flag --{key}; remove {key} or fix its name");
        }
    }
    let sub = at.and_then(|at| root.find_subcommand(&args[at]).cloned());
    let mut inserted: Vec<OsString> = Vec::new();
    if let Some(sub) = &sub {
        let section = table.get(sub.get_name()).and_then(toml::Value::as_table);
        if let Some(section) = section {
            for key in section.keys() {
                if !flags(sub).iter().any(|f| f.long == *key) {
                    anyhow::bail!(
                        "{file}: [{}] has no flag --{key}; `punchgate {} --help` lists them",
                        sub.get_name(),
                        sub.get_name()
                    );
                }
            }
        }
        for flag in flags(sub) {
            let value = section
                .and_then(|s| s.get(&flag.long))
                .or_else(|| table.get(&flag.long).filter(|v| !v.is_table()));
            let Some(value) = value else { continue };
            if given(&args, &flag.long)
                || flag
                    .env
                    .as_ref()
                    .is_some_and(|e| std::env::var_os(e).is_some())
            {
                continue;
            }
            inserted
                .extend(as_flags(&flag, value).map_err(|why| anyhow::anyhow!("{file}: {why}"))?);
        }
    }
    // Global flags (`home`, `json`) go first, where clap reads them too.
    let mut global = Vec::new();
    for flag in flags(&root) {
        let Some(value) = table.get(&flag.long).filter(|v| !v.is_table()) else {
            continue;
        };
        if given(&args, &flag.long)
            || flag
                .env
                .as_ref()
                .is_some_and(|e| std::env::var_os(e).is_some())
        {
            continue;
        }
        global.extend(as_flags(&flag, value).map_err(|why| anyhow::anyhow!("{file}: {why}"))?);
    }
    if let Some(at) = at {
        args.splice(at + 1..at + 1, inserted);
    }
    args.splice(1..1, global);
    Ok(args)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(config: &str, line: &[&str]) -> anyhow::Result<Vec<String>> {
        let table = parse(Path::new("config.toml"), config)?;
        let args = line.iter().map(OsString::from).collect();
        Ok(apply(args, &table, Path::new("config.toml"))?
            .into_iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect())
    }

    #[test]
    fn the_file_fills_in_what_the_command_line_leaves_out() {
        let config = "name = \"alice\"\nhistory-lines = 5\n[chat]\nroom = [\"lobby\", \"games\"]\nno-relay = true\n";
        let args = run(config, &["punchgate", "chat", "--name", "bob"]).unwrap();
        assert_eq!(
            args,
            [
                "punchgate",
                "chat",
                "--room",
                "lobby",
                "--room",
                "games",
                "--history-lines",
                "5",
                "--no-relay",
                "--name",
                "bob"
            ]
        );
        // `send` has --name but neither --room nor --history-lines.
        let args = run(config, &["punchgate", "send", "f"]).unwrap();
        assert_eq!(args, ["punchgate", "send", "--name", "alice", "f"]);
        // The command line's room replaces the file's, not adds to it.
        let args = run(config, &["punchgate", "chat", "--room=x"]).unwrap();
        assert!(!args.contains(&"lobby".to_string()), "{args:?}");
    }

    #[test]
    fn mistakes_in_the_file_are_one_line_that_says_where() {
        let error = run("[chat]\nrooms = [\"x\"]\n", &["punchgate", "chat"]).unwrap_err();
        assert!(
            error.to_string().contains("[chat] has no flag --rooms"),
            "{error}"
        );
        let error = run("frobnicate = 1\n", &["punchgate", "chat"]).unwrap_err();
        assert!(
            error
                .to_string()
                .contains("no command has a flag --frobnicate"),
            "{error}"
        );
        let error = run("name = \n", &["punchgate", "chat"]).unwrap_err();
        assert!(
            error.to_string().starts_with("config.toml line 1:"),
            "{error}"
        );
        assert!(!error.to_string().contains('\n'), "{error}");
        let error = run("[chat]\nno-relay = \"yes\"\n", &["punchgate", "chat"]).unwrap_err();
        assert!(
            error.to_string().contains("no-relay is a switch"),
            "{error}"
        );
    }
}
