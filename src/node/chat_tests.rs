//! The chat service on its own: a [`Context`], a store in a temporary
//! folder and no sockets. What it takes, refuses, shows and hands to the
//! node task.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::*;
use crate::pake::Secret;
use crate::room_key::RoomKey;
use crate::store::Store;

struct Harness {
    chat: Chat,
    cx: Context,
    events: mpsc::UnboundedReceiver<Event>,
    inputs: mpsc::UnboundedReceiver<Input>,
    _home: tempfile::TempDir,
}

fn harness(rooms: &[&str]) -> Harness {
    let home = tempfile::tempdir().unwrap();
    let identity = Arc::new(Identity::generate().unwrap());
    let store = Arc::new(Store::open(home.path()).unwrap());
    let (events_tx, events) = mpsc::unbounded_channel();
    let (inputs_tx, inputs) = mpsc::unbounded_channel();
    let roster = super::super::roster::Roster {
        rooms: rooms.iter().map(|r| r.to_string()).collect(),
        ..Default::default()
    };
    let cx = Context::new(identity.peer_id(), roster, events_tx, inputs_tx);
    let chat = Chat::new(
        cx.clone(),
        identity,
        "me".into(),
        store,
        Hlc::default(),
        0,
        Duration::from_secs(5),
    );
    Harness {
        chat,
        cx,
        events,
        inputs,
        _home: home,
    }
}

/// A message `author` signed for `room`.
fn written(author: &Identity, seq: u64, room: &str, text: &str) -> SignedMessage {
    let body = ChatBody {
        id: MessageId {
            author: author.peer_id(),
            seq,
        },
        hlc: now_ms() << 16,
        room: room.into(),
        text: text.into(),
    };
    SignedMessage::sign(author, body).unwrap()
}

/// A peer in the roster that says it is in `rooms`.
fn meet(cx: &Context, peer: &Identity, name: &str, rooms: &[&str]) {
    let mut record = PeerRecord::new(name.into());
    record.rooms = rooms.iter().map(|r| r.to_string()).collect();
    cx.roster().peers.insert(peer.peer_id(), record);
}

fn drain(events: &mut mpsc::UnboundedReceiver<Event>) -> Vec<Event> {
    std::iter::from_fn(|| events.try_recv().ok()).collect()
}

#[tokio::test]
async fn a_message_is_taken_once_shown_once_and_named_by_its_author() {
    let mut h = harness(&["lobby"]);
    let alice = Identity::generate().unwrap();
    meet(&h.cx, &alice, "alice", &["lobby"]);
    let message = written(&alice, 0, "lobby", "hello");
    let first = h
        .chat
        .take_messages(vec![message.clone()], alice.peer_id())
        .await;
    assert_eq!(first, vec![Ok(())]);
    // The same message again (a resend on a new path): acknowledged, not shown.
    let again = h.chat.take_messages(vec![message], alice.peer_id()).await;
    assert_eq!(again, vec![Ok(())]);
    let shown: Vec<Event> = drain(&mut h.events)
        .into_iter()
        .filter(|e| matches!(e, Event::Message { .. }))
        .collect();
    assert_eq!(shown.len(), 1, "{shown:?}");
    let Event::Message {
        from_name, text, ..
    } = &shown[0]
    else {
        unreachable!()
    };
    assert_eq!((from_name.as_str(), text.as_str()), ("alice", "hello"));
}

#[tokio::test]
async fn forged_foreign_and_unproven_messages_are_refused_and_not_stored() {
    let mut h = harness(&["lobby", "vault"]);
    let (alice, mallory) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    meet(&h.cx, &alice, "alice", &["lobby", "vault"]);
    {
        let mut roster = h.cx.roster();
        roster.passwords.insert("vault".into(), Secret::new("pw"));
        roster
            .room_keys
            .insert("vault".into(), RoomKey::derive("vault", "pw"));
    }
    let mut forged = written(&alice, 0, "lobby", "pay mallory");
    forged.body.text = "pay mallory twice".into();
    let foreign = written(&alice, 1, "elsewhere", "hi");
    let unproven = written(&alice, 2, "vault", "secret");
    let verdicts = h
        .chat
        .take_messages(vec![forged, foreign, unproven], alice.peer_id())
        .await;
    assert!(verdicts.iter().all(|v| v.is_err()), "{verdicts:?}");
    // Relayed by another peer, a message is checked against its author.
    let impostor = written(&mallory, 0, "lobby", "from mallory");
    let mut claimed = impostor.clone();
    claimed.body.id.author = alice.peer_id();
    let verdict = h.chat.take_messages(vec![claimed], mallory.peer_id()).await;
    assert!(verdict[0].is_err());
    for room in ["lobby", "elsewhere", "vault"] {
        assert!(h.chat.store().history(room, 10).unwrap().is_empty());
    }
    let events = drain(&mut h.events);
    assert!(!events.iter().any(|e| matches!(e, Event::Message { .. })));
    // Each forgery is reported to the user, once per batch, naming who
    // passed it on; a room this node is not in is not worth a word.
    let errors: Vec<&Event> = events
        .iter()
        .filter(|e| matches!(e, Event::Error { .. }))
        .collect();
    assert_eq!(errors.len(), 2, "{events:?}");
    assert!(
        matches!(errors[0], Event::Error { message } if message.starts_with("refused a message from alice: ")),
        "{errors:?}"
    );
}

#[tokio::test]
async fn a_post_is_stored_before_it_is_handed_to_the_node_task_for_its_members() {
    let mut h = harness(&["lobby"]);
    let (alice, bob, carol) = (
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
        Identity::generate().unwrap(),
    );
    meet(&h.cx, &alice, "alice", &["lobby"]);
    meet(&h.cx, &bob, "bob", &["lobby"]);
    meet(&h.cx, &carol, "carol", &["elsewhere"]);
    let id = h.chat.post("lobby".into(), "hi all").await.unwrap();
    assert_eq!(h.chat.store().history("lobby", 10).unwrap().len(), 1);
    let Ok(Input::Posted {
        message,
        recipients,
    }) = h.inputs.try_recv()
    else {
        panic!("no post handed to the node task");
    };
    assert_eq!(message.body.id, id);
    let mut recipients: Vec<PeerId> = recipients;
    recipients.sort();
    let mut members = vec![alice.peer_id(), bob.peer_id()];
    members.sort();
    assert_eq!(recipients, members);
    // Not connected: both pending, by name.
    let sent = drain(&mut h.events)
        .into_iter()
        .find_map(|e| match e {
            Event::Sent { peers, pending, .. } => Some((peers, pending)),
            _ => None,
        })
        .unwrap();
    assert_eq!(sent.0, 0);
    assert_eq!(sent.1.len(), 2);
    // An acknowledgement from each member, once, is one delivery each.
    for peer in [alice.peer_id(), bob.peer_id(), bob.peer_id()] {
        h.chat.delivered(id, peer);
    }
    let delivered = drain(&mut h.events)
        .into_iter()
        .filter(|e| matches!(e, Event::Delivered { .. }))
        .count();
    assert_eq!(delivered, 2);
}

#[tokio::test]
async fn a_private_message_goes_to_the_other_one_only() {
    let mut h = harness(&["lobby"]);
    let (alice, bob) = (Identity::generate().unwrap(), Identity::generate().unwrap());
    meet(&h.cx, &alice, "alice", &["lobby"]);
    meet(&h.cx, &bob, "bob", &["lobby"]);
    let room = dm_room(&h.cx.me, &alice.peer_id());
    h.chat.post(room.clone(), "psst").await.unwrap();
    let Ok(Input::Posted { recipients, .. }) = h.inputs.try_recv() else {
        panic!("no post handed to the node task");
    };
    assert_eq!(recipients, vec![alice.peer_id()]);
    // Alice's answer in the private room is taken; Bob cannot write there.
    let answer = written(&alice, 0, &room, "yes?");
    assert_eq!(
        h.chat.take_messages(vec![answer], alice.peer_id()).await,
        vec![Ok(())]
    );
    let intruder = written(&bob, 0, &room, "me too");
    assert!(h.chat.take_messages(vec![intruder], bob.peer_id()).await[0].is_err());
    drain(&mut h.events);
}
