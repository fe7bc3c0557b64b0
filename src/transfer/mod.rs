//! File transfer, apart from the network: manifests and content ids
//! ([`manifest`]), which chunk to ask which source for ([`schedule`]), a
//! download on disk ([`partial`]) through folders never followed through a
//! link ([`dir`]) with a bounded number of files open ([`handles`]), shared
//! content ([`Share`]), tickets ([`Ticket`]) and the flow-control window a
//! fetch grants ([`window`]). The node's streams that carry it are in `node::files`.

pub mod dir;
pub mod finished;
pub mod handles;
pub mod manifest;
pub mod partial;
pub mod schedule;
pub mod tally;
pub mod window;

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::PeerId;
use crate::wire;
use handles::OpenFiles;
pub use manifest::{ContentId, Layout};

/// Files a share keeps open for serving chunks: the few that the chunk
/// streams of its downloaders read at once, so a large file is opened once,
/// not once per chunk, and a node sharing many folders holds few handles.
const SHARE_OPEN_FILES: usize = 4;

/// Content this node serves: a manifest and the local file of each entry.
pub struct Share {
    pub layout: Layout,
    pub encoded: Vec<u8>,
    pub sources: Vec<PathBuf>,
    /// The source files being served, opened on first use.
    files: OpenFiles,
}

impl Share {
    pub fn new(layout: Layout, encoded: Vec<u8>, sources: Vec<PathBuf>) -> Self {
        Self {
            layout,
            encoded,
            sources,
            files: OpenFiles::new(SHARE_OPEN_FILES),
        }
    }

    /// Reads chunk `index` from its local file (blocking). A file that
    /// shrank since it was shared is an error; a file whose bytes changed is
    /// caught by the receiver's hash check.
    pub fn read_chunk(&self, index: u64) -> std::io::Result<Vec<u8>> {
        self.read_run(index, 1)
    }

    /// Reads chunks `first` to `first + count - 1`, one after the other
    /// into one buffer (blocking), as [`Share::read_chunk`] reads one.
    pub fn read_run(&self, first: u64, count: u64) -> std::io::Result<Vec<u8>> {
        let no_such = || std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such chunk");
        let len = self.layout.run_len(first, count).ok_or_else(no_such)?;
        let mut bytes = Vec::with_capacity(len as usize);
        for index in first..first + count {
            let place = self.layout.place(index).ok_or_else(no_such)?;
            let file = self
                .files
                .get(place.file, || File::open(&self.sources[place.file]))?;
            partial::read_append_at(&file, place.len, place.offset, &mut bytes)?;
        }
        Ok(bytes)
    }
}

impl From<manifest::Built> for Share {
    fn from(built: manifest::Built) -> Self {
        Self::new(built.layout, built.encoded, built.sources)
    }
}

/// Everything `punchgate get` needs, as one copy-pasteable string: the
/// tracker (pinned), the sender and the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    pub tracker: TicketTracker,
    pub sender: PeerId,
    pub content: ContentId,
}

/// The tracker a ticket names, always with its key: `get` connects to it
/// pinned, never trusting on first use a tracker that whoever made the
/// ticket chose. Travels as the text `PEERID@host:port`; a ticket whose
/// tracker has no key does not decode.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct TicketTracker {
    pub id: PeerId,
    /// `host:port`.
    pub host: String,
}

impl fmt::Display for TicketTracker {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.id, self.host)
    }
}

impl FromStr for TicketTracker {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let Some((id, host)) = text.split_once('@') else {
            return Err(UNPINNED_TRACKER.to_string());
        };
        let id = id
            .parse()
            .map_err(|_| format!("its tracker's key {id:?} is not a peer id"))?;
        if host.is_empty() {
            return Err("its tracker has no address".into());
        }
        Ok(Self {
            id,
            host: host.to_string(),
        })
    }
}

/// Why a ticket whose tracker has no key is refused.
const UNPINNED_TRACKER: &str = "the ticket names its tracker without the tracker's key \
    (PEERID@host:port), so that tracker cannot be checked; ask the sender for a new ticket";

impl TryFrom<String> for TicketTracker {
    type Error = String;

    fn try_from(text: String) -> Result<Self, Self::Error> {
        text.parse()
    }
}

impl From<TicketTracker> for String {
    fn from(tracker: TicketTracker) -> Self {
        tracker.to_string()
    }
}

/// Text form: this prefix, then the encoded ticket in lowercase base32.
const TICKET_PREFIX: &str = "pgt1";

impl fmt::Display for Ticket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let bytes = wire::encode_value("ticket", self).map_err(|_| fmt::Error)?;
        let text = data_encoding::BASE32_NOPAD
            .encode(&bytes)
            .to_ascii_lowercase();
        write!(f, "{TICKET_PREFIX}{text}")
    }
}

impl FromStr for Ticket {
    type Err = String;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let body = text.trim().strip_prefix(TICKET_PREFIX).ok_or_else(|| {
            format!("not a punchgate ticket (tickets start with {TICKET_PREFIX})")
        })?;
        let bytes = data_encoding::BASE32_NOPAD
            .decode(body.to_ascii_uppercase().as_bytes())
            .map_err(|_| "the ticket is damaged (not base32); copy it again".to_string())?;
        wire::decode_value("ticket", &bytes).map_err(|e| {
            // The codec reports our refusal inside its own error's text.
            if e.to_string().contains(UNPINNED_TRACKER) {
                UNPINNED_TRACKER.to_string()
            } else {
                format!("the ticket is damaged: {e}")
            }
        })
    }
}

/// The tracker room where everyone holding or fetching `content` meets, so
/// a download finds every source.
pub fn swarm_room(content: ContentId) -> String {
    format!("files:{}", &content.to_string()[..32])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tickets_round_trip_and_damage_is_reported() {
        let tracker_id = crate::identity::Identity::generate().unwrap().peer_id();
        let ticket = Ticket {
            tracker: format!("{tracker_id}@127.0.0.1:4000").parse().unwrap(),
            sender: crate::identity::Identity::generate().unwrap().peer_id(),
            content: ContentId([9; 32]),
        };
        let text = ticket.to_string();
        assert!(text.starts_with("pgt1"));
        assert_eq!(text.parse::<Ticket>(), Ok(ticket));
        assert!("pgt1!!".parse::<Ticket>().is_err());
        assert!(text[..text.len() - 4].parse::<Ticket>().is_err());
        assert!("hello".parse::<Ticket>().is_err());
    }

    /// A ticket as an older punchgate could make it, or anyone can craft:
    /// the tracker as a bare `host:port`, which `get` would have trusted on
    /// first use (issue 12 row 13).
    #[test]
    fn a_ticket_whose_tracker_has_no_key_is_refused() {
        let tracker_id = crate::identity::Identity::generate().unwrap().peer_id();
        let pinned = Ticket {
            tracker: format!("{tracker_id}@127.0.0.1:4000").parse().unwrap(),
            sender: crate::identity::Identity::generate().unwrap().peer_id(),
            content: ContentId([9; 32]),
        };
        // The encoding opens with the tracker's text (a one-byte length
        // below 251, then the bytes): put another text in its place.
        let with_tracker = |text: &str| {
            let bytes = wire::encode_value("ticket", &pinned).unwrap();
            let old_len = usize::from(bytes[0]);
            let mut crafted = vec![text.len() as u8];
            crafted.extend_from_slice(text.as_bytes());
            crafted.extend_from_slice(&bytes[1 + old_len..]);
            let body = data_encoding::BASE32_NOPAD.encode(&crafted);
            format!("{TICKET_PREFIX}{}", body.to_ascii_lowercase())
        };
        let same = with_tracker(&pinned.tracker.to_string());
        assert_eq!(same.parse::<Ticket>(), Ok(pinned.clone()));
        let error = with_tracker("127.0.0.1:4000")
            .parse::<Ticket>()
            .unwrap_err();
        assert_eq!(error, UNPINNED_TRACKER);
        assert!(with_tracker("nonsense@127.0.0.1:4000")
            .parse::<Ticket>()
            .is_err());
    }
}
