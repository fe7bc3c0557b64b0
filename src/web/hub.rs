//! The page's view of the node's event stream: every event, as the same
//! JSON line `--json` prints, fanned out to each open event stream, and the
//! few facts the page needs on (re)load that no node method answers: the
//! `ready` event, the trackers' last state, and where finished downloads
//! are (the only files the page serves).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;
use tokio::sync::broadcast;

use crate::node::events::TrackerLink;
use crate::node::Event;

/// Events buffered per open stream; a page that falls further behind is
/// told to reload its state (`resync`).
const STREAM_BUFFER: usize = 4096;

/// A finished download, as the page lists it.
#[derive(Clone, Debug, Serialize)]
pub struct Download {
    pub hash: String,
    pub name: String,
    /// Where it is on this machine: the top-level file or folder.
    pub path: String,
    pub bytes: u64,
    /// Whether the page can hand it over (a single file; a folder is only
    /// shown by its location).
    pub fetchable: bool,
}

#[derive(Default)]
struct Memory {
    ready: Option<Event>,
    /// `true` while every tracker session is up; `None` before any news.
    tracker_up: Option<bool>,
    downloads: BTreeMap<String, (Download, Option<PathBuf>)>,
}

/// Fan-out of events to the page's streams. Cloning gives another handle.
#[derive(Clone)]
pub struct Hub {
    lines: broadcast::Sender<Arc<str>>,
    memory: Arc<Mutex<Memory>>,
}

impl Default for Hub {
    fn default() -> Self {
        Self::new()
    }
}

impl Hub {
    pub fn new() -> Self {
        let (lines, _) = broadcast::channel(STREAM_BUFFER);
        Self {
            lines,
            memory: Arc::default(),
        }
    }

    fn memory(&self) -> std::sync::MutexGuard<'_, Memory> {
        self.memory.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Takes one event of the node's stream.
    pub fn publish(&self, event: &Event) {
        {
            let mut memory = self.memory();
            match event {
                Event::Ready { .. } => {
                    memory.ready = Some(event.clone());
                    memory.tracker_up.get_or_insert(true);
                }
                Event::Tracker { state, .. } => {
                    memory.tracker_up = Some(*state == TrackerLink::Back);
                }
                Event::TransferDone { path, report } => {
                    let single = (report.paths.len() == 1).then(|| report.paths[0].clone());
                    let download = Download {
                        hash: report.hash.clone(),
                        name: report.name.clone(),
                        path: path.clone(),
                        bytes: report.bytes,
                        fetchable: single.is_some(),
                    };
                    memory
                        .downloads
                        .insert(report.hash.clone(), (download, single));
                }
                _ => {}
            }
        }
        // No page open is fine.
        let _ = self.lines.send(event.to_json().into());
    }

    /// A stream of every event published from now on, as JSON.
    pub fn subscribe(&self) -> broadcast::Receiver<Arc<str>> {
        self.lines.subscribe()
    }

    pub fn ready(&self) -> Option<Event> {
        self.memory().ready.clone()
    }

    pub fn tracker_up(&self) -> Option<bool> {
        self.memory().tracker_up
    }

    pub fn downloads(&self) -> Vec<Download> {
        self.memory()
            .downloads
            .values()
            .map(|(d, _)| d.clone())
            .collect()
    }

    /// The file of a finished single-file download, by its hash.
    pub fn download_file(&self, hash: &str) -> Option<(String, PathBuf)> {
        let memory = self.memory();
        let (download, file) = memory.downloads.get(hash)?;
        Some((download.name.clone(), file.clone()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::node::FetchReport;

    fn done(hash: &str, paths: &[&str]) -> Event {
        Event::TransferDone {
            path: paths[0].to_string(),
            report: FetchReport {
                hash: hash.into(),
                name: "thing".into(),
                paths: paths.iter().map(PathBuf::from).collect(),
                bytes: 5,
                chunks: 1,
                chunks_fetched: 1,
                chunks_resumed: 0,
                sources: Vec::new(),
                corrupt_sources: Vec::new(),
                secs: 0.1,
                already_complete: false,
            },
        }
    }

    #[test]
    fn the_hub_fans_out_json_and_remembers_trackers_and_downloads() {
        let hub = Hub::new();
        let mut stream = hub.subscribe();
        assert_eq!(hub.tracker_up(), None);
        hub.publish(&Event::Tracker {
            state: TrackerLink::Lost,
            tracker_id: None,
            addr: None,
            reason: Some("gone".into()),
        });
        assert_eq!(hub.tracker_up(), Some(false));
        let line = stream.try_recv().unwrap();
        let value: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(value["event"], "tracker");
        assert_eq!(value["state"], "lost");

        hub.publish(&done("aaaa", &["/d/one.bin"]));
        hub.publish(&done("bbbb", &["/d/folder/a", "/d/folder/b"]));
        assert_eq!(
            hub.download_file("aaaa"),
            Some(("thing".to_string(), PathBuf::from("/d/one.bin")))
        );
        // A folder is listed, never handed out; an unknown hash is nothing.
        assert_eq!(hub.download_file("bbbb"), None);
        assert_eq!(hub.download_file("../etc"), None);
        let listed = hub.downloads();
        assert_eq!(listed.len(), 2);
        assert!(listed.iter().any(|d| d.hash == "bbbb" && !d.fetchable));
    }
}
