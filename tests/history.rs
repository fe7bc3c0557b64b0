//! Chat that loses nothing: durable history, history sync through third
//! peers, forged messages refused, acknowledged messages surviving kill -9.

mod common;

use common::process::Proc;
use common::*;
use punchgate::identity::Identity;
use punchgate::node::Event;
use punchgate::node::NodeConfig;
use punchgate::protocol::StreamKind;
use punchgate::protocol::{ChatBody, MessageId, SignedMessage, SyncFrame};
use punchgate::store::Store;
use punchgate::wire::{self, FrameReader, FrameWriter};

fn manual(name: &str, connect: &[&TestNode]) -> NodeConfig {
    let mut config = config(name, None, "lobby");
    config.connect = connect
        .iter()
        .map(|n| n.node.target().unwrap().parse().unwrap())
        .collect();
    config
}

#[tokio::test]
async fn messages_reach_a_returning_peer_through_a_third_peer_in_order_and_signed() {
    let mut alice = start_node(manual("alice", &[])).await;
    let mut bob = start_node(manual("bob", &[&alice])).await;
    bob.connected_to(&alice).await;
    alice.connected_to(&bob).await;
    alice.node.say("hello bob").await.unwrap();
    bob.receives("hello bob").await;

    // Bob leaves; Carol arrives and hears what Alice writes meanwhile.
    let bob_home = bob.home;
    bob.node.shutdown().await;
    drop(bob.node);
    let mut carol = start_node(manual("carol", &[&alice])).await;
    carol.connected_to(&alice).await;
    alice.connected_to(&carol).await;
    let texts = [
        "while you were away 1",
        "while you were away 2",
        "while you were away 3",
    ];
    for text in texts {
        alice.node.say(text).await.unwrap();
        carol.receives(text).await;
    }

    // Alice leaves too; Bob comes back and reaches only Carol.
    let alice_id = alice.node.peer_id();
    alice.node.shutdown().await;
    let mut bob = start_node_in(bob_home, manual("bob", &[&carol])).await;
    bob.connected_to(&carol).await;
    let mut arrived = Vec::new();
    for text in texts {
        let (from, from_name) = bob.receives(text).await;
        assert_eq!(from, alice_id.to_string());
        arrived.push((from_name, text));
    }
    // In order, in Bob's history, next to what Bob already had.
    bob.node
        .execute(punchgate::command::Command::History(10))
        .await;
    let mut history = Vec::new();
    while history.len() < 4 {
        let text = bob
            .sees("history", |e| match e {
                Event::Message {
                    text,
                    history: true,
                    ..
                } => Some(text.clone()),
                _ => None,
            })
            .await;
        history.push(text);
    }
    assert_eq!(history, ["hello bob", texts[0], texts[1], texts[2]]);

    // On disk, each carries Alice's valid signature.
    bob.node.shutdown().await;
    let TestNode { node, home, .. } = bob;
    drop(node);
    let store = Store::open(home.path()).unwrap();
    let stored = store.history("lobby", 10).unwrap();
    assert_eq!(stored.len(), 4);
    for message in &stored {
        message.verify().unwrap();
        assert_eq!(message.body.id.author, alice_id);
    }
}

#[tokio::test]
async fn a_forged_message_offered_by_sync_is_refused_and_not_stored() {
    let mut bob = start_node(manual("bob", &[])).await;
    let alice = Identity::generate().unwrap();
    let peer = raw_peer(&bob, "mallory", "lobby").await;
    let (mallory, connection) = (&peer.identity, &peer.connection);

    // Bob asks Mallory for history; Mallory offers one genuine message of
    // her own and one that claims Alice as author.
    let (send, mut recv) = connection.accept_bi().await.unwrap();
    wire::expect_header(&mut recv, StreamKind::Sync)
        .await
        .unwrap();
    let mut requests = FrameReader::new(recv, StreamKind::Sync);
    let Some(SyncFrame::Request { room, .. }) = requests.recv::<SyncFrame>().await.unwrap() else {
        panic!("expected a sync request");
    };
    let genuine = SignedMessage::sign(
        mallory,
        ChatBody {
            id: MessageId {
                author: mallory.peer_id(),
                seq: 1,
            },
            hlc: 1 << 16,
            room: room.clone(),
            text: "an honest line".into(),
        },
    )
    .unwrap();
    let mut forged = SignedMessage::sign(
        &alice,
        ChatBody {
            id: MessageId {
                author: alice.peer_id(),
                seq: 1,
            },
            hlc: 2 << 16,
            room: room.clone(),
            text: "alice owes mallory".into(),
        },
    )
    .unwrap();
    forged.signature = mallory.sign(b"whatever").to_vec();
    let mut answers = FrameWriter::answering(send, StreamKind::Sync);
    answers
        .send(&SyncFrame::Batch {
            room: room.clone(),
            messages: vec![forged.clone(), genuine],
        })
        .await
        .unwrap();
    answers.send(&SyncFrame::Done { room }).await.unwrap();

    bob.receives("an honest line").await;
    bob.sees("the refusal", |e| match e {
        Event::Error { message } if message.contains("refused a message from mallory") => Some(()),
        Event::Message { text, .. } if text == "alice owes mallory" => {
            panic!("a forged message was shown")
        }
        _ => None,
    })
    .await;
    bob.node.shutdown().await;
    let TestNode { node, home, .. } = bob;
    drop(node);
    let store = Store::open(home.path()).unwrap();
    assert!(
        !store.contains("lobby", &forged.body.id).unwrap(),
        "the forged message was stored"
    );
}

#[tokio::test]
async fn an_acknowledged_message_survives_kill_9() {
    let home = tempfile::tempdir().unwrap();
    let args = ["chat", "--name", "victim", "--bind", "127.0.0.1:0"];
    let victim = Proc::start_with_home(home.path(), None, &args);
    let ready = victim.expect("ready", |_| true);
    let target = format!(
        "{}@{}",
        ready["peer_id"].as_str().unwrap(),
        ready["addr"].as_str().unwrap()
    );

    let mut sender_config = config("sender", None, "lobby");
    sender_config.connect = vec![target.parse().unwrap()];
    let mut sender = start_node(sender_config).await;
    let victim_id = ready["peer_id"].as_str().unwrap().to_string();
    sender
        .sees("the connection", |e| match e {
            Event::Connected { peer_id, .. } if *peer_id == victim_id => Some(()),
            _ => None,
        })
        .await;
    let id = sender
        .node
        .say("written in stone")
        .await
        .unwrap()
        .to_string();
    sender
        .sees("the acknowledgement", |e| match e {
            Event::Delivered { id: got, .. } if *got == id => Some(()),
            _ => None,
        })
        .await;
    // Acknowledged means committed: kill it right now, no goodbye, no flush.
    victim.kill();

    let mut victim = Proc::start_with_home(home.path(), None, &args);
    victim.expect("ready", |_| true);
    victim.send("/history");
    let message = victim.expect("message", |e| e["history"] == true);
    assert_eq!(message["text"], "written in stone");
    assert_eq!(message["id"], id.as_str());
}
