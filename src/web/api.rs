//! The page's HTTP interface behind the guard: the embedded assets, the
//! event stream (server-sent events, one `--json` line each), the state a
//! page loads on (re)connect, and the commands it sends, which go through
//! [`command::execute`] or the node's public methods like the REPL's.

use std::convert::Infallible;
use std::path::{Path as FsPath, PathBuf};
use std::time::Duration;

use axum::body::{Body, Bytes};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use futures_util::StreamExt;
use serde::Deserialize;
use tokio::io::AsyncWriteExt;
use tokio::sync::broadcast::error::RecvError;

use super::App;
use crate::command;
use crate::node::{dm_room, Event};
use crate::pake::Secret;

/// A comment line on an idle event stream this often, so proxies and the
/// browser see it alive.
const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// Most messages one history request returns.
const MAX_HISTORY: usize = 1000;

/// Longest file name taken from an upload.
const MAX_UPLOAD_NAME: usize = 255;

pub const INDEX_HTML: &str = include_str!("assets/index.html");
pub const APP_JS: &str = include_str!("assets/app.js");
pub const APP_CSS: &str = include_str!("assets/app.css");

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}

pub async fn index() -> Response {
    asset(INDEX_HTML, "text/html; charset=utf-8")
}

pub async fn app_js() -> Response {
    asset(APP_JS, "text/javascript; charset=utf-8")
}

pub async fn app_css() -> Response {
    asset(APP_CSS, "text/css; charset=utf-8")
}

/// A refusal of what the page asked, with one line for the person.
fn failed(status: StatusCode, message: impl std::fmt::Display) -> Response {
    (
        status,
        Json(serde_json::json!({ "error": message.to_string() })),
    )
        .into_response()
}

fn done() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// `GET /api/events`: every event from now on, as server-sent events whose
/// data is the `--json` line; `resync` when this stream fell behind.
pub async fn events(State(app): State<App>) -> Response {
    let receiver = app.hub.subscribe();
    let stopping = app.stopping.clone();
    let stream = futures_util::stream::unfold(
        (receiver, stopping, true),
        |(mut receiver, stopping, first)| async move {
            if first {
                // Tells the page the stream is up before any event comes,
                // and to try again after a second if it breaks.
                let hello = Bytes::from_static(b"retry: 1000\nevent: hello\ndata: {}\n\n");
                return Some((Ok::<_, Infallible>(hello), (receiver, stopping, false)));
            }
            let chunk = tokio::select! {
                () = stopping.cancelled() => return None,
                line = receiver.recv() => match line {
                    Ok(line) => format!("data: {line}\n\n"),
                    Err(RecvError::Lagged(_)) => "event: resync\ndata: {}\n\n".to_string(),
                    Err(RecvError::Closed) => return None,
                },
                () = tokio::time::sleep(KEEP_ALIVE) => ": alive\n\n".to_string(),
            };
            Some((Ok(Bytes::from(chunk)), (receiver, stopping, false)))
        },
    );
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/event-stream"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    response
}

/// `GET /api/state`: everything the page shows, as of now.
pub async fn state(State(app): State<App>) -> Response {
    let node = &app.node;
    let (reflexive, trackers) = match app.hub.ready() {
        Some(Event::Ready {
            reflexive,
            trackers,
            ..
        }) => (reflexive, trackers),
        _ => (None, Vec::new()),
    };
    let tracker = node.tracker_target();
    let tracker_state = match (
        tracker.is_some() || !trackers.is_empty(),
        app.hub.tracker_up(),
    ) {
        (false, _) => "none",
        (true, Some(false)) => "lost",
        (true, _) => "up",
    };
    Json(serde_json::json!({
        "peer_id": node.peer_id().to_string(),
        "name": node.name(),
        "addr": node.local_addr().ok(),
        "reflexive": reflexive,
        "tracker": tracker,
        "trackers": trackers,
        "tracker_state": tracker_state,
        "rooms": node.rooms(),
        "password_rooms": node.password_rooms(),
        "peers": node.peers(),
        "gates": node.gates(),
        "files": node.files(),
        "downloads": app.hub.downloads(),
        "downloads_dir": std::fs::canonicalize(node.downloads_dir())
            .unwrap_or_else(|_| node.downloads_dir()),
    }))
    .into_response()
}

#[derive(Deserialize)]
pub struct HistoryQuery {
    room: Option<String>,
    /// Instead of a room: the private room with this peer.
    peer: Option<String>,
    count: Option<usize>,
}

/// `GET /api/history?room=R&count=N` (or `peer=ID`): a room's last
/// messages, oldest first.
pub async fn history(State(app): State<App>, Query(query): Query<HistoryQuery>) -> Response {
    let count = query
        .count
        .unwrap_or(command::DEFAULT_HISTORY)
        .min(MAX_HISTORY);
    let room = match (query.room, query.peer) {
        (Some(room), None) => room,
        (None, Some(peer)) => match app.node.resolve_peer(&peer) {
            Ok(peer) => dm_room(&app.node.peer_id(), &peer),
            Err(error) => return failed(StatusCode::BAD_REQUEST, error),
        },
        _ => return failed(StatusCode::BAD_REQUEST, "give a room or a peer"),
    };
    match app.node.room_history(&room, count).await {
        Ok(events) => Json(events).into_response(),
        Err(error) => failed(StatusCode::BAD_REQUEST, error),
    }
}

#[derive(Deserialize)]
pub struct CommandBody {
    /// What the REPL would take: text, or `/command args`.
    line: String,
    /// The room the page shows: text, `/send`, `/password` and `/history`
    /// act on it.
    room: Option<String>,
}

/// `POST /api/command`: one line, as typed into the REPL; its answers come
/// as events.
pub async fn run_command(State(app): State<App>, Json(body): Json<CommandBody>) -> Response {
    let command = match command::parse(&body.line) {
        Ok(command) => command,
        Err(command::CommandError::Empty) => return done(),
        Err(error) => return failed(StatusCode::BAD_REQUEST, error),
    };
    if !command::execute_in(&app.node, command, body.room.as_deref()).await {
        app.quit.cancel();
    }
    done()
}

#[derive(Deserialize)]
pub struct JoinBody {
    room: String,
    /// Joins it as a password room.
    password: Option<String>,
}

/// `POST /api/join`: joins a room, with its password if given.
pub async fn join(State(app): State<App>, Json(body): Json<JoinBody>) -> Response {
    let room = body.room.trim();
    let result = match body.password.filter(|p| !p.is_empty()) {
        Some(password) => {
            app.node
                .join_with_password(room, Secret::new(password))
                .await
        }
        None => app.node.join(room).await,
    };
    match result {
        Ok(()) => done(),
        Err(error) => failed(StatusCode::BAD_REQUEST, error),
    }
}

#[derive(Deserialize)]
pub struct RoomBody {
    room: String,
}

/// `POST /api/leave`.
pub async fn leave(State(app): State<App>, Json(body): Json<RoomBody>) -> Response {
    match app.node.leave(&body.room).await {
        Ok(()) => done(),
        Err(error) => failed(StatusCode::BAD_REQUEST, error),
    }
}

#[derive(Deserialize)]
pub struct GetBody {
    hash: String,
}

/// `POST /api/get`: downloads an offer into the download folder; progress
/// and the end come as events.
pub async fn get(State(app): State<App>, Json(body): Json<GetBody>) -> Response {
    match app
        .node
        .get_offered(&body.hash, app.node.downloads_dir(), false)
    {
        Ok(()) => done(),
        Err(error) => failed(StatusCode::BAD_REQUEST, error),
    }
}

/// A name for an uploaded file, or why not: one plain path component.
pub fn upload_name(name: &str) -> Result<&str, &'static str> {
    let name = name.trim();
    if name.is_empty() || name == "." || name == ".." {
        return Err("the file needs a name");
    }
    if name.len() > MAX_UPLOAD_NAME {
        return Err("the file name is too long");
    }
    if name
        .chars()
        .any(|c| c == '/' || c == '\\' || c.is_control())
    {
        return Err("the file name may not hold slashes or control characters");
    }
    Ok(name)
}

#[derive(Deserialize)]
pub struct UploadQuery {
    name: String,
    room: Option<String>,
}

/// `POST /api/upload?name=N&room=R`: the body is the file. It is kept in
/// a folder of its own under the data directory's `uploads/` and offered
/// to the room like `/send`.
pub async fn upload(
    State(app): State<App>,
    Query(query): Query<UploadQuery>,
    body: Body,
) -> Response {
    let name = match upload_name(&query.name) {
        Ok(name) => name.to_string(),
        Err(reason) => return failed(StatusCode::BAD_REQUEST, reason),
    };
    if let Some(room) = &query.room {
        if !app.node.rooms().contains(room) {
            return failed(
                StatusCode::BAD_REQUEST,
                format!("room {room}: not joined; join it first"),
            );
        }
    }
    let path = match receive_file(&app.uploads, &name, body).await {
        Ok(path) => path,
        Err(error) => {
            return failed(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("cannot keep the upload: {error}"),
            )
        }
    };
    let offered = match &query.room {
        Some(room) => app.node.send_files_in(room, vec![path]).await,
        None => app.node.send_files(vec![path]).await,
    };
    match offered {
        Ok(content) => Json(serde_json::json!({ "hash": content.to_string() })).into_response(),
        Err(error) => failed(StatusCode::BAD_REQUEST, error),
    }
}

/// Writes the body to `uploads/<unique>/<name>`; a broken upload leaves
/// nothing behind.
async fn receive_file(uploads: &FsPath, name: &str, body: Body) -> std::io::Result<PathBuf> {
    let folder = uploads.join(unique_folder());
    tokio::fs::create_dir_all(&folder).await?;
    let path = folder.join(name);
    let written = async {
        let mut file = tokio::fs::File::create(&path).await?;
        let mut stream = body.into_data_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(std::io::Error::other)?;
            file.write_all(&chunk).await?;
        }
        file.sync_all().await
    }
    .await;
    if let Err(error) = written {
        let _ = tokio::fs::remove_dir_all(&folder).await;
        return Err(error);
    }
    Ok(path)
}

/// A folder name no other upload has: the time and random bits.
fn unique_folder() -> String {
    let mut bits = [0u8; 6];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bits);
    let millis = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or(0);
    format!("{millis}-{}", data_encoding::HEXLOWER.encode(&bits))
}

/// `GET /api/download/{hash}`: a finished single-file download, as an
/// attachment. Nothing else on disk is served.
pub async fn download(State(app): State<App>, Path(hash): Path<String>) -> Response {
    let Some((name, path)) = app.hub.download_file(&hash) else {
        return failed(StatusCode::NOT_FOUND, "no finished download with that hash");
    };
    let file = match tokio::fs::File::open(&path).await {
        Ok(file) => file,
        Err(error) => return failed(StatusCode::NOT_FOUND, format!("cannot open it: {error}")),
    };
    let length = file.metadata().await.map(|m| m.len()).ok();
    let stream = tokio_util::io::ReaderStream::new(file);
    let mut response = Response::new(Body::from_stream(stream));
    let headers = response.headers_mut();
    headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Some(length) = length {
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(length));
    }
    let disposition = format!("attachment; filename*=UTF-8''{}", percent_encode(&name));
    if let Ok(value) = HeaderValue::from_str(&disposition) {
        headers.insert(header::CONTENT_DISPOSITION, value);
    }
    response
}

/// RFC 5987 encoding of a file name: unreserved bytes kept, the rest
/// `%XX`.
fn percent_encode(name: &str) -> String {
    name.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upload_names_are_one_plain_component() {
        assert_eq!(upload_name(" notes.txt "), Ok("notes.txt"));
        assert!(upload_name("../etc/passwd").is_err());
        assert!(upload_name("a\\b").is_err());
        assert!(upload_name("..").is_err());
        assert!(upload_name("").is_err());
        assert!(upload_name("bell\u{7}").is_err());
        assert!(upload_name(&"x".repeat(300)).is_err());
    }

    #[test]
    fn download_names_are_encoded_for_the_header() {
        assert_eq!(percent_encode("a b\"ü.txt"), "a%20b%22%C3%BC.txt");
    }
}
