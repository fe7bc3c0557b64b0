//! Where `punchgate chat` gets the password of its `--room` rooms: the
//! environment (`PUNCHGATE_PASSWORD`), a file (`--password-file`), a prompt
//! on the terminal (`--password-prompt`), or the command line
//! (`--password`), which works but warns: other users of the machine see a
//! process's arguments (`ps`, `/proc/PID/cmdline`).

use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};

use anyhow::Context;

/// The environment variable read when no flag names a password.
pub const PASSWORD_ENV: &str = "PUNCHGATE_PASSWORD";

/// The warning printed when the password was given on the command line.
pub const COMMAND_LINE_WARNING: &str = "warning: a password given with --password shows in \
     the process list to other users of this machine; use PUNCHGATE_PASSWORD, \
     --password-file FILE or --password-prompt instead";

#[derive(clap::Args)]
pub struct PasswordArgs {
    /// Password of the --room rooms: only peers who prove it share them
    /// (the tracker never sees it; /password sets one later). Other users
    /// see it in the process list: prefer env PUNCHGATE_PASSWORD,
    /// --password-file or --password-prompt.
    #[arg(long, conflicts_with_all = ["password_file", "password_prompt"])]
    password: Option<String>,
    /// Read the password of the --room rooms from the first line of FILE.
    #[arg(long, value_name = "FILE", conflicts_with = "password_prompt")]
    password_file: Option<PathBuf>,
    /// Ask for the password of the --room rooms on the terminal (not echoed).
    #[arg(long)]
    password_prompt: bool,
}

impl PasswordArgs {
    /// The password, if any was given; warns on stderr when it came from
    /// the command line.
    pub fn resolve(self) -> anyhow::Result<Option<String>> {
        let password = if let Some(password) = self.password {
            eprintln!("punchgate: {COMMAND_LINE_WARNING}");
            password
        } else if let Some(path) = self.password_file {
            read_password_file(&path)?
        } else if self.password_prompt {
            prompt("password for the --room rooms: ")?
        } else {
            match std::env::var(PASSWORD_ENV) {
                Ok(password) => password,
                Err(std::env::VarError::NotPresent) => return Ok(None),
                Err(std::env::VarError::NotUnicode(_)) => {
                    anyhow::bail!("{PASSWORD_ENV} is not valid UTF-8")
                }
            }
        };
        if password.is_empty() {
            anyhow::bail!("the password is empty; give one, or leave the room open");
        }
        Ok(Some(password))
    }
}

/// The first line of `path`, without its line ending.
fn read_password_file(path: &Path) -> anyhow::Result<String> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("cannot read the password file {}", path.display()))?;
    Ok(text.lines().next().unwrap_or("").to_string())
}

/// Asks on the terminal itself (not stdin, which `--json` and pipes use),
/// with echo off.
#[cfg(unix)]
fn prompt(question: &str) -> anyhow::Result<String> {
    use rustix::termios::{tcgetattr, tcsetattr, LocalModes, OptionalActions};
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("--password-prompt needs a terminal; use --password-file or PUNCHGATE_PASSWORD")?;
    let saved = tcgetattr(&tty).context("cannot read the terminal's settings")?;
    let mut quiet = saved.clone();
    quiet.local_modes.remove(LocalModes::ECHO);
    quiet.local_modes.insert(LocalModes::ECHONL);
    tcsetattr(&tty, OptionalActions::Flush, &quiet).context("cannot turn echo off")?;
    let answer = (|| {
        let mut writer = &tty;
        writer.write_all(question.as_bytes())?;
        writer.flush()?;
        let mut line = String::new();
        std::io::BufReader::new(&tty).read_line(&mut line)?;
        Ok::<_, std::io::Error>(line)
    })();
    // Echo back on whatever happened.
    let _ = tcsetattr(&tty, OptionalActions::Flush, &saved);
    let line = answer.context("cannot read the password from the terminal")?;
    Ok(line.trim_end_matches(['\r', '\n']).to_string())
}

#[cfg(not(unix))]
fn prompt(_question: &str) -> anyhow::Result<String> {
    anyhow::bail!("--password-prompt works on Unix only; use --password-file or PUNCHGATE_PASSWORD")
}
