//! Helpers for tests that feed a node history by hand: a peer that answers
//! the node's sync requests with whatever it likes, and messages from
//! throwaway keys.

use punchgate::identity::Identity;
use punchgate::protocol::{
    ChatBody, MessageId, SignedMessage, StreamKind, SyncFrame, MAX_TEXT_LEN,
};
use punchgate::wire::{self, FrameReader, FrameWriter};
use quinn::{RecvStream, SendStream};

/// Milliseconds since the Unix epoch, now.
pub fn wall_clock_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_millis() as u64
}

/// Answers the node's sync streams until one asks for `room`: pushes all of
/// `messages` for it (whatever the request said), nothing for other rooms,
/// and returns once the node has taken everything and ended that stream.
/// Other streams the node opens meanwhile (password proofs) are kept open,
/// unanswered, in what it returns.
pub async fn push_by_sync(
    connection: &quinn::Connection,
    room: &str,
    messages: &[SignedMessage],
) -> Vec<(SendStream, RecvStream)> {
    let mut kept = Vec::new();
    loop {
        let (send, mut recv) = connection.accept_bi().await.unwrap();
        let kind = wire::read_header::<StreamKind>(&mut recv).await.unwrap();
        if kind != StreamKind::Sync {
            kept.push((send, recv));
            continue;
        }
        let mut requests = FrameReader::new(recv, StreamKind::Sync);
        let mut answers = FrameWriter::answering(send, StreamKind::Sync);
        let mut pushed = false;
        while let Some(SyncFrame::Request { room: asked, .. }) =
            requests.recv::<SyncFrame>().await.unwrap()
        {
            if asked == room {
                pushed = true;
                for batch in messages.chunks(64) {
                    let batch = SyncFrame::Batch {
                        room: asked.clone(),
                        messages: batch.to_vec(),
                    };
                    answers.send(&batch).await.unwrap();
                }
            }
            let done = SyncFrame::Done { room: asked };
            answers.send(&done).await.unwrap();
        }
        if pushed {
            return kept;
        }
    }
}

/// A message of the longest kind by `author`, stamped now.
pub fn long_message(author: &Identity, seq: u64, room: &str) -> SignedMessage {
    let body = ChatBody {
        id: MessageId {
            author: author.peer_id(),
            seq,
        },
        hlc: (wall_clock_ms() << 16) + seq,
        room: room.into(),
        text: "x".repeat(MAX_TEXT_LEN),
    };
    SignedMessage::sign(author, body).unwrap()
}

/// Two messages of the longest kind from each of `keys` fresh identities.
pub fn from_never_seen_keys(keys: usize, room: &str) -> Vec<SignedMessage> {
    (0..keys)
        .flat_map(|_| {
            let author = Identity::generate().unwrap();
            [1, 2].map(|seq| long_message(&author, seq, room))
        })
        .collect()
}
