//! File transfer, apart from the network: manifests and content ids
//! ([`manifest`]), which chunk to ask which source for ([`schedule`]), a
//! download on disk ([`partial`]) through folders never followed through a
//! link ([`dir`]), shared content ([`Share`]) and tickets
//! ([`Ticket`]). The node's streams that carry it are in `node::files`.

pub mod dir;
pub mod manifest;
pub mod partial;
pub mod schedule;

use std::fmt;
use std::fs::File;
use std::path::PathBuf;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use crate::identity::PeerId;
use crate::wire;
pub use manifest::{ContentId, Layout};

/// Content this node serves: a manifest and the local file of each entry.
pub struct Share {
    pub layout: Layout,
    pub encoded: Vec<u8>,
    pub sources: Vec<PathBuf>,
}

impl Share {
    /// Reads chunk `index` from its local file (blocking). A file that
    /// shrank since it was shared is an error; a file whose bytes changed is
    /// caught by the receiver's hash check.
    pub fn read_chunk(&self, index: u64) -> std::io::Result<Vec<u8>> {
        let place = self.layout.place(index).ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidInput, "no such chunk")
        })?;
        let file = File::open(&self.sources[place.file])?;
        let mut buffer = vec![0u8; place.len];
        partial::read_exact_at(&file, &mut buffer, place.offset)?;
        Ok(buffer)
    }
}

impl From<manifest::Built> for Share {
    fn from(built: manifest::Built) -> Self {
        Self {
            layout: built.layout,
            encoded: built.encoded,
            sources: built.sources,
        }
    }
}

/// Everything `punchgate get` needs, as one copy-pasteable string: the
/// tracker (pinned), the sender and the content.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ticket {
    /// `PEERID@host:port` of the tracker.
    pub tracker: String,
    pub sender: PeerId,
    pub content: ContentId,
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
        wire::decode_value("ticket", &bytes).map_err(|e| format!("the ticket is damaged: {e}"))
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
        let ticket = Ticket {
            tracker: "abc@127.0.0.1:4000".into(),
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
}
