//! The local web page (`--web`, `punchgate web`): an HTTP server on the
//! node's machine that serves a page (plain HTML, CSS and JavaScript
//! embedded in the binary) which shows the node's events and sends it
//! commands, as the REPL does.
//!
//! [`Web::start`] binds (loopback by default), makes the page's secret
//! part of its [`url`](Web::url), and serves one axum router: the assets
//! and the API in [`api`], every request first through [`guard`] (secret,
//! `Host`, `Origin`). The caller owns the node's event stream and hands
//! each event to [`Web::publish`]; the page receives them as server-sent
//! events ([`hub`]). A `/quit` typed into the page is reported through
//! [`Web::quit_requested`]; the caller decides what exits.

pub mod api;
pub mod guard;
pub mod hub;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use axum::routing::{get, post};
use axum::Router;
use tokio_util::sync::CancellationToken;

use crate::node::{Event, Node};
pub use guard::Guard;
pub use hub::Hub;

/// Where the page is served by default: loopback, a free port.
pub const DEFAULT_LISTEN: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);

/// File in the data directory that keeps the page's secret, so a page left
/// open reconnects to a node restarted on the same address.
const SECRET_FILE: &str = "web-secret";
/// The page `--open` hands to the browser (see [`write_opener`]).
const OPENER_FILE: &str = "web-open.html";

/// How the page is served.
#[derive(Clone, Debug)]
pub struct WebConfig {
    /// Address to listen on. Default [`DEFAULT_LISTEN`]; anything but
    /// loopback lets other machines try the secret.
    pub listen: SocketAddr,
    /// The secret every request must show (hex, at least 32 characters).
    pub secret: String,
    /// Where files uploaded from the page are kept: one folder each.
    pub uploads: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum WebError {
    #[error(
        "cannot listen on {addr} for the web page: {source}; pick another address with --web ADDR"
    )]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot keep the web page's secret in {path}: {source}; check the data directory's permissions")]
    Secret {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What the handlers share.
#[derive(Clone)]
pub struct App {
    node: Node,
    hub: Hub,
    uploads: PathBuf,
    /// Cancelled when the page typed `/quit`.
    quit: CancellationToken,
    /// Cancelled when the server stops: open event streams end.
    stopping: CancellationToken,
}

/// A running page server.
pub struct Web {
    url: String,
    addr: SocketAddr,
    hub: Hub,
    quit: CancellationToken,
    stopping: CancellationToken,
    task: tokio::task::JoinHandle<()>,
}

impl Web {
    /// Binds `config.listen` and serves the page for `node`.
    pub async fn start(node: Node, config: WebConfig) -> Result<Web, WebError> {
        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .map_err(|source| WebError::Bind {
                addr: config.listen,
                source,
            })?;
        let addr = listener.local_addr().map_err(|source| WebError::Bind {
            addr: config.listen,
            source,
        })?;
        let shown = if addr.ip().is_unspecified() {
            SocketAddr::new(DEFAULT_LISTEN.ip(), addr.port())
        } else {
            addr
        };
        let url = format!("http://{shown}/?token={}", config.secret);
        let hub = Hub::new();
        let quit = CancellationToken::new();
        let stopping = CancellationToken::new();
        let app = App {
            node,
            hub: hub.clone(),
            uploads: config.uploads,
            quit: quit.clone(),
            stopping: stopping.clone(),
        };
        let guard = Arc::new(Guard::new(config.secret, addr));
        let router = Router::new()
            .route("/", get(api::index))
            .route("/app.js", get(api::app_js))
            .route("/app.css", get(api::app_css))
            .route("/api/events", get(api::events))
            .route("/api/state", get(api::state))
            .route("/api/history", get(api::history))
            .route("/api/command", post(api::run_command))
            .route("/api/join", post(api::join))
            .route("/api/leave", post(api::leave))
            .route("/api/get", post(api::get))
            .route("/api/upload", post(api::upload))
            .route("/api/download/{hash}", get(api::download))
            .with_state(app)
            .layer(axum::middleware::from_fn_with_state(
                guard,
                guard::middleware,
            ));
        let shutdown = stopping.clone();
        let task = tokio::spawn(async move {
            let served = axum::serve(listener, router)
                .with_graceful_shutdown(async move { shutdown.cancelled().await })
                .await;
            if let Err(error) = served {
                tracing::warn!(%error, "the web page's server stopped");
            }
        });
        Ok(Web {
            url,
            addr,
            hub,
            quit,
            stopping,
            task,
        })
    }

    /// The page's address with its secret: what to open in a browser.
    pub fn url(&self) -> &str {
        &self.url
    }

    /// The bound address.
    pub fn local_addr(&self) -> SocketAddr {
        self.addr
    }

    /// Hands one of the node's events to the open pages.
    pub fn publish(&self, event: &Event) {
        self.hub.publish(event);
    }

    /// A handle to feed events from another task.
    pub fn hub(&self) -> Hub {
        self.hub.clone()
    }

    /// Completes when `/quit` was typed into the page (the node has shut
    /// down by then).
    pub async fn quit_requested(&self) {
        self.quit.cancelled().await;
    }

    /// Ends the open event streams and stops serving.
    pub async fn stop(self) {
        self.stopping.cancel();
        let _ = self.task.await;
    }
}

/// The page's secret kept in the data directory `home` (created on first
/// use, readable by its owner only): 32 random bytes as hex.
pub fn load_or_create_secret(home: &Path) -> Result<String, WebError> {
    let path = home.join(SECRET_FILE);
    let failed = |source| WebError::Secret {
        path: path.clone(),
        source,
    };
    match std::fs::read_to_string(&path) {
        Ok(text) if is_secret(text.trim()) => {
            owner_only(&path).map_err(failed)?;
            return Ok(text.trim().to_string());
        }
        Ok(_) => {}
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => {}
        Err(error) => return Err(failed(error)),
    }
    let secret = new_secret().map_err(failed)?;
    write_owner_only(&path, secret.as_bytes()).map_err(failed)?;
    Ok(secret)
}

/// Writes the file `--open` hands to the browser: a page in the data
/// directory `home` that forwards to `url`. The address carries the
/// secret and every user of the machine can read a command line (`ps`),
/// so the opener is given this file's path instead; like the secret, the
/// file is readable by its owner only.
pub fn write_opener(home: &Path, url: &str) -> Result<PathBuf, WebError> {
    let path = home.join(OPENER_FILE);
    let escaped = url
        .replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;");
    let page = format!(
        "<!doctype html>\n<meta charset=\"utf-8\">\n<meta http-equiv=\"refresh\" content=\"0;url={escaped}\">\n<title>punchgate</title>\n<p><a href=\"{escaped}\">Open punchgate's page</a></p>\n"
    );
    write_owner_only(&path, page.as_bytes()).map_err(|source| WebError::Secret {
        path: path.clone(),
        source,
    })?;
    Ok(path)
}

/// Replaces `path`'s content with `bytes`, readable by its owner only
/// from before the first byte is written.
fn write_owner_only(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let mut options = std::fs::OpenOptions::new();
    options.write(true).create(true).truncate(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options.open(path)?;
    // A file that was there keeps its mode through `open`.
    owner_only(path)?;
    std::io::Write::write_all(&mut file, bytes)
}

fn owner_only(path: &Path) -> std::io::Result<()> {
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
    }
    #[cfg(not(unix))]
    let _ = path;
    Ok(())
}

fn is_secret(text: &str) -> bool {
    text.len() >= 32 && text.bytes().all(|b| b.is_ascii_hexdigit())
}

/// 32 random bytes as hex.
pub fn new_secret() -> std::io::Result<String> {
    let mut bytes = [0u8; 32];
    ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes)
        .map_err(|_| std::io::Error::other("the system's random source failed"))?;
    Ok(data_encoding::HEXLOWER.encode(&bytes))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Only the owner may read or write `path`.
    fn assert_owner_only(path: &std::path::Path) {
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = std::fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o077, 0, "{mode:o}");
        }
        #[cfg(not(unix))]
        let _ = path;
    }

    #[test]
    fn the_secret_is_kept_owner_only_and_reused() {
        let home = tempfile::tempdir().unwrap();
        let first = load_or_create_secret(home.path()).unwrap();
        assert_eq!(first.len(), 64);
        assert_eq!(load_or_create_secret(home.path()).unwrap(), first);
        assert_owner_only(&home.path().join(SECRET_FILE));
        // A damaged file is replaced, not trusted, and made owner-only.
        std::fs::write(home.path().join(SECRET_FILE), "short").unwrap();
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let open = std::fs::Permissions::from_mode(0o644);
            std::fs::set_permissions(home.path().join(SECRET_FILE), open).unwrap();
        }
        let replaced = load_or_create_secret(home.path()).unwrap();
        assert_ne!(replaced, "short");
        assert_eq!(replaced.len(), 64);
        assert_owner_only(&home.path().join(SECRET_FILE));
    }
}
