//! Chat between real nodes over QUIC on 127.0.0.1, found through a real tracker
//! or given by address.

mod common;

use common::*;
use punchgate::node::{Event, PeerStatus};

#[tokio::test]
async fn chat_is_delivered_both_ways_and_acknowledged() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "r")).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;

    let id = alice.node.say("hello bob").await.unwrap().to_string();
    let (from, from_name) = bob.receives("hello bob").await;
    assert_eq!((from, from_name.as_str()), (alice.id(), "alice"));
    let bob_id = bob.id();
    alice
        .sees("the delivery acknowledgement", |e| match e {
            Event::Delivered {
                id: got, peer_id, ..
            } if *got == id && *peer_id == bob_id => Some(()),
            _ => None,
        })
        .await;

    bob.node.say("hello alice").await.unwrap();
    let (from, _) = alice.receives("hello alice").await;
    assert_eq!(from, bob.id());
}

#[tokio::test]
async fn third_peer_joins_and_is_seen_by_both_then_a_leaver_is_reported_gone() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "r")).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;

    let mut carol = start_node(config("carol", Some(&tracker), "r")).await;
    carol.connected_to(&alice).await;
    carol.connected_to(&bob).await;
    alice.connected_to(&carol).await;
    bob.connected_to(&carol).await;

    carol.node.say("hi both").await.unwrap();
    alice.receives("hi both").await;
    bob.receives("hi both").await;
    let peers = alice.node.peers();
    assert_eq!(peers.len(), 2, "{peers:?}");
    let gates = alice.node.gates();
    assert_eq!(gates.len(), 2, "{gates:?}");
    for gate in &gates {
        assert_eq!(gate.path, punchgate::node::PathKind::Direct);
        assert!(gate.bytes_in > 0 && gate.bytes_out > 0, "{gate:?}");
        assert_eq!(gate.remote.ip(), std::net::Ipv4Addr::LOCALHOST);
    }
    assert!(peers.iter().all(|p| p.status == PeerStatus::Connected));

    carol.node.shutdown().await;
    let carol_id = carol.id();
    for node in [&mut alice, &mut bob] {
        let reason = node
            .sees("carol to leave", |e| match e {
                Event::Disconnected {
                    peer_id, reason, ..
                } if *peer_id == carol_id => Some(reason.clone()),
                _ => None,
            })
            .await;
        assert!(reason.starts_with("left"), "{reason}");
        let carol_now = node
            .node
            .peers()
            .into_iter()
            .find(|p| p.peer_id == carol_id)
            .unwrap();
        assert_eq!(carol_now.status, PeerStatus::Offline);
    }
    // The tracker forgets carol too.
    assert_eq!(
        alice
            .node
            .peers()
            .iter()
            .filter(|p| p.status == PeerStatus::Connected)
            .count(),
        1
    );
}

#[tokio::test]
async fn manual_connect_works_without_any_tracker() {
    let mut alice = start_node(config("alice", None, "lobby")).await;
    let mut bob_config = config("bob", None, "lobby");
    bob_config.connect = vec![alice.node.target().unwrap().parse().unwrap()];
    let mut bob = start_node(bob_config).await;
    bob.connected_to(&alice).await;
    alice.connected_to(&bob).await;
    bob.node.say("no tracker needed").await.unwrap();
    assert_eq!(alice.receives("no tracker needed").await.1, "bob");
    alice.node.say("indeed").await.unwrap();
    bob.receives("indeed").await;
}

/// A bootstrap peer (`--connect`, the `bootstrap` file) that is not up yet
/// when the node starts is tried again with backoff, and connected once it
/// is up.
#[tokio::test]
async fn a_bootstrap_peer_that_was_not_up_yet_is_connected_once_it_is() {
    let bob_home = tempfile::tempdir().unwrap();
    let bob_id = punchgate::identity::Identity::load_or_create(bob_home.path())
        .unwrap()
        .peer_id();
    // A port nobody listens on yet; bob takes it later.
    let bob_addr = std::net::UdpSocket::bind(loopback())
        .unwrap()
        .local_addr()
        .unwrap();
    let mut alice_config = config("alice", None, "lobby");
    alice_config.connect = vec![format!("{bob_id}@{bob_addr}").parse().unwrap()];
    // Short attempts, so that the first ones fail before bob is up.
    alice_config.connect_timeout = std::time::Duration::from_millis(500);
    let mut alice = start_node(alice_config).await;
    alice
        .sees("the first attempt failing", |e| match e {
            Event::Error { message } if message.contains("trying again") => Some(()),
            _ => None,
        })
        .await;
    let mut bob_config = config("bob", None, "lobby");
    bob_config.bind = bob_addr;
    let mut bob = start_node_in(bob_home, bob_config).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;
    alice.node.say("there you are").await.unwrap();
    bob.receives("there you are").await;
}

#[tokio::test]
async fn simultaneous_dials_leave_exactly_one_connection() {
    let mut alice = start_node(config("alice", None, "lobby")).await;
    let mut bob = start_node(config("bob", None, "lobby")).await;
    let (a, b) = (alice.node.clone(), bob.node.clone());
    let (a_target, b_target) = (a.target().unwrap(), b.target().unwrap());
    let (ra, rb) = tokio::join!(a.connect_by_text(&b_target), b.connect_by_text(&a_target));
    ra.unwrap();
    rb.unwrap();
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;
    // Whatever raced, one gate per side stays and carries messages.
    alice.node.say("after the race").await.unwrap();
    bob.receives("after the race").await;
    assert_eq!(alice.node.peers().len(), 1);
    assert_eq!(alice.node.peers()[0].status, PeerStatus::Connected);
    assert_eq!(bob.node.peers()[0].status, PeerStatus::Connected);
}

#[tokio::test]
async fn messages_stay_in_their_room() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "public")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "public")).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;
    // Alice moves to a room Bob is not in: her lines go there, not to Bob.
    alice.node.join("private").await.unwrap();
    let sent = alice.node.say("secret").await.unwrap().to_string();
    let recipients = alice
        .sees("the send report", |e| match e {
            Event::Sent { id, peers, .. } if *id == sent => Some(*peers),
            _ => None,
        })
        .await;
    assert_eq!(recipients, 0, "bob is not in #private");
    alice.node.leave("private").await.unwrap();
    alice.node.say("public again").await.unwrap();
    bob.receives("public again").await;
}

#[tokio::test]
async fn private_messages_reach_only_their_peer_also_later_by_sync() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "r")).await;
    let mut carol = start_node(config("carol", Some(&tracker), "r")).await;
    alice.connected_to(&bob).await;
    alice.connected_to(&carol).await;
    bob.connected_to(&carol).await;
    alice
        .node
        .direct_message("bob", "just between us")
        .await
        .unwrap();
    let (from, _) = bob.receives("just between us").await;
    assert_eq!(from, alice.id());
    // Carol hears the next room message, and never the private one.
    alice.node.say("hello everyone").await.unwrap();
    carol
        .sees("the room message", |e| match e {
            Event::Message { text, .. } if text == "just between us" => {
                panic!("carol got the private message")
            }
            Event::Message { text, .. } if text == "hello everyone" => Some(()),
            _ => None,
        })
        .await;
    assert!(
        alice.node.join("@forged").await.is_err(),
        "private rooms cannot be joined"
    );

    // Bob leaves; a private message waits for him and arrives by sync.
    let bob_home = bob.home;
    let bob_id = bob.node.peer_id();
    bob.node.shutdown().await;
    drop(bob.node);
    alice
        .sees("bob leaving", |e| match e {
            Event::Disconnected { peer_id, .. } if *peer_id == bob_id.to_string() => Some(()),
            _ => None,
        })
        .await;
    let id = alice
        .node
        .direct_message(&bob_id.to_string(), "while you were out")
        .await
        .unwrap()
        .to_string();
    let pending = alice
        .sees("the send report", |e| match e {
            Event::Sent {
                id: got, pending, ..
            } if *got == id => Some(pending.clone()),
            _ => None,
        })
        .await;
    assert_eq!(pending, vec!["bob".to_string()]);
    let mut bob = start_node_in(bob_home, config("bob", Some(&tracker), "r")).await;
    bob.receives("while you were out").await;
}

/// Shutdown in the middle of things (connected peers, a connection attempt
/// to a peer that never answers) stops every task of the node: the event
/// stream ends, with the last events before the end, and the peer hears
/// the goodbye.
#[tokio::test]
async fn shutdown_stops_every_task_and_ends_the_event_stream() {
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "lobby")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "lobby")).await;
    alice.connected_to(&bob).await;
    bob.connected_to(&alice).await;
    // An attempt in flight: an address where nobody answers.
    let nobody = punchgate::identity::Identity::generate().unwrap().peer_id();
    let node = alice.node.clone();
    let pending = tokio::spawn(async move { node.connect_to(nobody, vec![loopback()]).await });
    alice.node.shutdown().await;
    let mut left = Vec::new();
    while let Some(event) = tokio::time::timeout(WAIT, alice.events.next())
        .await
        .expect("the event stream did not end after shutdown")
    {
        left.push(event);
    }
    // The attempt was answered, not left hanging.
    let outcome = tokio::time::timeout(WAIT, pending).await.unwrap().unwrap();
    assert!(outcome.is_err(), "{outcome:?}");
    bob.sees("alice's goodbye", |e| match e {
        Event::Disconnected {
            peer_id, reason, ..
        } if *peer_id == alice.id() => Some(reason.clone()),
        _ => None,
    })
    .await;
}

/// Issue 14: nobody was told when someone joined or left a room.
#[tokio::test]
async fn members_joining_and_leaving_a_room_are_told_to_those_in_it_only() {
    use punchgate::node::events::MemberChange;
    let tracker = start_tracker();
    let mut alice = start_node(config("alice", Some(&tracker), "r")).await;
    let mut bob = start_node(config("bob", Some(&tracker), "r")).await;
    let bob_id = bob.id();
    let member = |who: String, want: MemberChange| {
        move |e: &Event| match e {
            Event::Member {
                room,
                peer_id,
                change,
                ..
            } if *peer_id == who && room == "r" && *change == want => Some(()),
            _ => None,
        }
    };
    alice
        .sees("bob joining", member(bob_id.clone(), MemberChange::Joined))
        .await;
    // Bob found alice already there: no notice for her.
    bob.connected_to(&alice).await;
    assert!(
        !bob.unmatched()
            .iter()
            .any(|e| matches!(e, Event::Member { .. })),
        "{:#?}",
        bob.unmatched()
    );

    bob.node.join("elsewhere").await.unwrap();
    bob.node.leave("r").await.unwrap();
    alice
        .sees("bob leaving", member(bob_id.clone(), MemberChange::Left))
        .await;
    assert!(
        !alice
            .unmatched()
            .iter()
            .any(|e| matches!(e, Event::Member { room, .. } if room == "elsewhere")),
        "{:#?}",
        alice.unmatched()
    );
    bob.node.join("r").await.unwrap();
    alice
        .sees("bob back", member(bob_id, MemberChange::Joined))
        .await;
}
