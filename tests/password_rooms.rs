//! Password rooms: a joiner proves the password to each member with a PAKE
//! bound to the TLS session; a wrong password gets a clear refusal and nothing
//! of the room; the tracker never sees anything of the password.

mod common;

use std::sync::{Arc, Mutex};

use common::*;
use punchgate::node::Event;
use punchgate::pake::Secret;
use punchgate::store::Store;
use punchgate::tracker::TrackerConfig;

const ROOM: &str = "vault";
const PASSWORD: &str = "correct horse battery staple";
const WRONG: &str = "incorrect donkey";

fn in_vault(
    name: &str,
    tracker: &punchgate::tracker::Tracker,
    password: &str,
) -> punchgate::node::NodeConfig {
    let mut config = config(name, Some(tracker), ROOM);
    config.passwords.insert(ROOM.into(), Secret::new(password));
    config
}

#[tokio::test]
async fn the_right_password_shares_the_room_and_a_wrong_one_gets_nothing() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut tracker_config = TrackerConfig::new(loopback());
    tracker_config.request_log = Some(log.clone());
    let tracker = start_tracker_with(tracker_config);

    let mut alice = start_node(in_vault("alice", &tracker, PASSWORD)).await;
    for text in ["before anyone came 1", "before anyone came 2"] {
        alice.node.say(text).await.unwrap();
    }

    // Bob knows the password: he gets the history, then live messages.
    let mut bob = start_node(in_vault("bob", &tracker, PASSWORD)).await;
    bob.connected_to(&alice).await;
    bob.receives("before anyone came 1").await;
    bob.receives("before anyone came 2").await;
    alice.node.say("welcome bob").await.unwrap();
    bob.receives("welcome bob").await;

    // Carol does not: a clear refusal on both sides.
    let mut carol = start_node(in_vault("carol", &tracker, WRONG)).await;
    carol.connected_to(&alice).await;
    let refusal = carol
        .sees("the refusal", |e| match e {
            Event::Error { message } if message.contains("password check for #vault") => {
                Some(message.clone())
            }
            Event::Message { text, .. } => panic!("carol received {text:?}"),
            _ => None,
        })
        .await;
    assert!(refusal.contains("wrong password"), "{refusal}");
    alice
        .sees("alice's side of the refusal", |e| match e {
            Event::Error { message } if message.contains("with carol failed") => Some(()),
            _ => None,
        })
        .await;

    // Alice speaks again: Bob hears it, Carol is not even pending.
    let id = alice
        .node
        .say("for members only")
        .await
        .unwrap()
        .to_string();
    let (peers, pending) = alice
        .sees("the send report", |e| match e {
            Event::Sent {
                id: got,
                peers,
                pending,
                ..
            } if *got == id => Some((*peers, pending.clone())),
            _ => None,
        })
        .await;
    assert_eq!(peers, 1, "only bob is a member");
    assert!(pending.is_empty(), "{pending:?}");
    bob.receives("for members only").await;
    // Carol's own line goes to nobody: to her, no one is a member either.
    carol.node.say("let me in").await.unwrap();
    carol
        .sees("carol's send report", |e| match e {
            Event::Sent { peers: 0, .. } => Some(()),
            _ => None,
        })
        .await;
    while let Some(event) = carol.events.try_next() {
        assert!(
            !matches!(event, Event::Message { .. }),
            "carol received {event:?}"
        );
    }

    // On disk, Carol holds nothing of the room but her own line.
    carol.node.shutdown().await;
    let TestNode { node, home, .. } = carol;
    drop(node);
    let stored = Store::open(home.path())
        .unwrap()
        .history(ROOM, 100)
        .unwrap();
    assert!(
        stored.iter().all(|m| m.body.text == "let me in"),
        "{stored:?}"
    );

    // The tracker saw rooms, names and introductions — no password material.
    let requests = log.lock().unwrap();
    assert!(!requests.is_empty());
    for request in requests.iter() {
        let seen = format!("{request:?}");
        for secret in [PASSWORD, WRONG, "horse", "donkey"] {
            assert!(
                !seen.contains(secret),
                "the tracker saw {secret:?} in {seen}"
            );
        }
        use punchgate::protocol::TrackerRequestBody::*;
        assert!(
            matches!(
                request.body,
                Register { .. } | Join { .. } | Leave { .. } | Members { .. } | Connect { .. }
            ),
            "{seen}"
        );
    }
}
