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

    // The tracker saw rooms, names, introductions and NAT reports — no
    // password material.
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
                Register { .. }
                    | Join { .. }
                    | Leave { .. }
                    | Members { .. }
                    | Connect { .. }
                    // The NAT report at each session's start.
                    | Netcheck { .. }
                    | ReportNat { .. }
                    | PortMapped { .. }
            ),
            "{seen}"
        );
    }
}

/// A password room member with no tracker, for raw peers to dial.
fn alone_in_vault(name: &str, password: &str) -> punchgate::node::NodeConfig {
    let mut config = config(name, None, ROOM);
    config.passwords.insert(ROOM.into(), Secret::new(password));
    config
}

/// How one password proof a raw peer started ended.
#[derive(Debug)]
enum Proof {
    /// The node answered with its SPAKE2 message; the guesser then had to
    /// send its confirmation, and got this verdict.
    Answered(Result<(), String>),
    /// Refused before anything was answered.
    Refused(String),
    /// The connection is gone.
    Closed,
}

/// Runs one password proof as initiator with `password`.
async fn prove(connection: &quinn::Connection, password: &str) -> Proof {
    use punchgate::pake::{Exchange, Side, EXPORTER_LABEL};
    use punchgate::protocol::{AuthFrame, StreamKind};
    use punchgate::wire::{FrameReader, FrameWriter};
    let Ok((send, recv)) = connection.open_bi().await else {
        return Proof::Closed;
    };
    let Ok(mut writer) = FrameWriter::open(send, StreamKind::Auth).await else {
        return Proof::Closed;
    };
    let mut reader = FrameReader::new(recv, StreamKind::Auth);
    let mut exporter = [0u8; 32];
    connection
        .export_keying_material(&mut exporter, EXPORTER_LABEL, ROOM.as_bytes())
        .unwrap();
    let (exchange, spake) = Exchange::start(ROOM, password, exporter);
    let start = AuthFrame::Start {
        room: ROOM.into(),
        spake,
    };
    if writer.send(&start).await.is_err() {
        return Proof::Closed;
    }
    let theirs = match reader.recv::<AuthFrame>().await {
        Ok(Some(AuthFrame::Reply { spake })) => spake,
        Ok(Some(AuthFrame::Refused { reason })) => return Proof::Refused(reason),
        Ok(other) => panic!("expected a reply, got {other:?}"),
        Err(_) => return Proof::Closed,
    };
    // Nothing so far says whether the guess was right: commit to it.
    let keys = exchange.finish(&theirs).unwrap();
    let confirm = AuthFrame::Confirm {
        confirm: keys.confirmation(Side::Initiator),
    };
    if writer.send(&confirm).await.is_err() {
        return Proof::Closed;
    }
    let verdict = match reader.recv::<AuthFrame>().await {
        Ok(Some(AuthFrame::Accepted { confirm })) => {
            keys.check(Side::Responder, &confirm).unwrap();
            Ok(())
        }
        Ok(Some(AuthFrame::Refused { reason })) => Err(reason),
        Ok(other) => panic!("expected a verdict, got {other:?}"),
        Err(_) => return Proof::Closed,
    };
    let _ = writer.get_mut().finish();
    Proof::Answered(verdict)
}

#[tokio::test]
async fn thirty_password_guesses_get_at_most_five_answers_also_across_connections_and_identities() {
    let alice = start_node(alone_in_vault("alice", PASSWORD)).await;
    let guesser = raw_peer(&alice, "mallory", ROOM).await;

    // One proof in flight per peer and room: a second Start while the first
    // is unfinished is refused without an answer.
    use punchgate::pake::{Exchange, Side, EXPORTER_LABEL};
    use punchgate::protocol::{AuthFrame, StreamKind};
    use punchgate::wire::{FrameReader, FrameWriter};
    let (send, recv) = guesser.connection.open_bi().await.unwrap();
    let mut first = FrameWriter::open(send, StreamKind::Auth).await.unwrap();
    let mut first_answers = FrameReader::new(recv, StreamKind::Auth);
    let mut exporter = [0u8; 32];
    guesser
        .connection
        .export_keying_material(&mut exporter, EXPORTER_LABEL, ROOM.as_bytes())
        .unwrap();
    let (exchange, spake) = Exchange::start(ROOM, "guess 0", exporter);
    let start = AuthFrame::Start {
        room: ROOM.into(),
        spake,
    };
    first.send(&start).await.unwrap();
    let Some(AuthFrame::Reply { spake }) = first_answers.recv::<AuthFrame>().await.unwrap() else {
        panic!("expected a reply");
    };
    match prove(&guesser.connection, "guess 1").await {
        Proof::Refused(reason) => assert!(reason.contains("already running"), "{reason}"),
        other => panic!("a second proof in flight got {other:?}"),
    }
    let keys = exchange.finish(&spake).unwrap();
    let confirm = AuthFrame::Confirm {
        confirm: keys.confirmation(Side::Initiator),
    };
    first.send(&confirm).await.unwrap();
    let verdict = first_answers.recv::<AuthFrame>().await.unwrap();
    assert!(
        matches!(verdict, Some(AuthFrame::Refused { .. })),
        "{verdict:?}"
    );

    // Thirty guesses, one after the other; a dropped connection is replaced
    // by a new one with a new identity, from the same address.
    let mut answered = 1; // the first, above
    let mut refusals = Vec::new();
    let mut connections = 1;
    let mut guesser = guesser;
    for guess in 2..32 {
        let mut proof = prove(&guesser.connection, &format!("guess {guess}")).await;
        if matches!(proof, Proof::Closed) {
            connections += 1;
            guesser = raw_peer(&alice, &format!("mallory {connections}"), ROOM).await;
            proof = prove(&guesser.connection, &format!("guess {guess}")).await;
        }
        match proof {
            Proof::Answered(verdict) => {
                assert!(verdict.is_err(), "guess {guess} was right?");
                answered += 1;
            }
            Proof::Refused(reason) => refusals.push(reason),
            Proof::Closed => panic!("a fresh connection closed at once"),
        }
    }
    assert!(answered <= 5, "{answered} guesses were answered");
    assert!(connections > 1, "the guesser was never disconnected");
    assert!(
        refusals
            .iter()
            .any(|r| r.contains("too many password guesses")),
        "{refusals:?}"
    );

    // A new connection with a new identity from the same address: refused
    // before anything is answered.
    let fresh = raw_peer(&alice, "not mallory", ROOM).await;
    match prove(&fresh.connection, PASSWORD).await {
        Proof::Refused(reason) => assert!(reason.contains("too many password guesses"), "{reason}"),
        other => panic!("a new identity got {other:?}"),
    }
}

#[tokio::test]
async fn messages_of_never_seen_keys_without_the_room_tag_are_refused_in_a_password_room() {
    use common::history::{from_never_seen_keys, long_message, push_by_sync};
    let mut alice = start_node(alone_in_vault("alice", PASSWORD)).await;
    // A member who knows the password pushes, by sync, messages of 1,280
    // keys that never proved anything, and one written with the password.
    let member = raw_peer(&alice, "member", ROOM).await;
    assert!(matches!(
        prove(&member.connection, PASSWORD).await,
        Proof::Answered(Ok(()))
    ));
    let mut flood = from_never_seen_keys(1280, ROOM);
    // Tagged with a guessed password: no better.
    let guessed = punchgate::room_key::RoomKey::derive(ROOM, WRONG);
    let outsider = punchgate::identity::Identity::generate().unwrap();
    flood.push(
        guessed
            .tag_message(long_message(&outsider, 1, ROOM))
            .unwrap(),
    );
    let key = punchgate::room_key::RoomKey::derive(ROOM, PASSWORD);
    let insider = punchgate::identity::Identity::generate().unwrap();
    let genuine = key.tag_message(long_message(&insider, 1, ROOM)).unwrap();
    flood.push(genuine.clone());
    let _kept = push_by_sync(&member.connection, ROOM, &flood).await;
    let report = alice
        .sees("the refusal", |e| match e {
            Event::Error { message } if message.contains("refused") => Some(message.clone()),
            _ => None,
        })
        .await;
    assert!(report.contains("password of #vault"), "{report}");

    alice.node.shutdown().await;
    let TestNode { node, home, .. } = alice;
    drop(node);
    let store = open_store(home.path()).await;
    let stored = store.history(ROOM, 10_000).unwrap();
    assert_eq!(stored.len(), 1, "{} messages stored", stored.len());
    assert_eq!(stored[0].body.id, genuine.body.id);
}

/// Issue 14: the one setting a password saw red failure lines, the one
/// locked out saw raw message ids and no hint of what to do.
#[tokio::test]
async fn setting_a_password_shows_no_failure_and_the_peer_without_it_is_told_what_to_do() {
    let mut alice = start_node(config("alice", None, "lobby")).await;
    let mut bob_config = config("bob", None, "lobby");
    bob_config.connect = vec![alice.node.target().unwrap().parse().unwrap()];
    let mut bob = start_node(bob_config).await;
    bob.connected_to(&alice).await;
    alice.connected_to(&bob).await;

    alice
        .node
        .set_password(Secret::new(PASSWORD))
        .await
        .unwrap();
    let told = alice
        .sees("a word on bob", |e| match e {
            Event::Error { message } => panic!("alice sees a failure: {message}"),
            Event::Info { message } if message.contains("bob has no password") => {
                Some(message.clone())
            }
            _ => None,
        })
        .await;
    assert!(told.contains("/password"), "{told}");
    let hint = bob
        .sees("the hint", |e| match e {
            Event::Info { message } if message.contains("made #lobby a password room") => {
                Some(message.clone())
            }
            _ => None,
        })
        .await;
    assert!(hint.contains("/password PW"), "{hint}");

    let id = bob.node.say("let me in").await.unwrap().to_string();
    let refusal = bob
        .sees("the refusal", |e| match e {
            Event::Error { message } => Some(message.clone()),
            _ => None,
        })
        .await;
    assert!(refusal.contains("/password PW"), "{refusal}");
    assert!(!refusal.contains(&id), "raw id in {refusal}");
    assert!(!refusal.contains(&bob.id()), "raw id in {refusal}");
}

/// Issue 14: the password was forgotten on restart without a word.
#[test]
fn a_password_remembered_on_request_opens_the_room_after_a_restart() {
    use common::process::Proc;
    let alice_home = tempfile::tempdir().unwrap();
    let start_alice = |extra: &[&str]| {
        let args = [
            &[
                "chat",
                "--name",
                "alice",
                "--room",
                ROOM,
                "--bind",
                "127.0.0.1:0",
            ],
            extra,
        ]
        .concat();
        Proc::start_with_home(alice_home.path(), None, &args)
    };
    let password_file = alice_home.path().join("pw");
    std::fs::write(&password_file, PASSWORD).unwrap();
    let path = password_file.to_str().unwrap();
    let alice = start_alice(&["--password-file", path, "--remember-password"]);
    alice.expect("ready", |_| true);
    alice.finish();
    let saved = alice_home.path().join("room_passwords");
    let text = std::fs::read_to_string(&saved).unwrap();
    assert_eq!(text, format!("{ROOM}\t{PASSWORD}\n"));

    // No password given now: the remembered one holds, bob proves it.
    let alice = start_alice(&[]);
    let ready = alice.expect("ready", |_| true);
    let target = format!(
        "{}@{}",
        ready["peer_id"].as_str().unwrap(),
        ready["addr"].as_str().unwrap()
    );
    let mut bob = Proc::start(&[
        "chat",
        "--name",
        "bob",
        "--room",
        ROOM,
        "--connect",
        &target,
        "--password-file",
        path,
    ]);
    bob.expect("info", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("proved the password of #vault"))
    });
    bob.send("inside again");
    alice.expect("message", |e| e["text"] == "inside again");
    bob.send("/password --remember other");
    bob.expect("info", |e| {
        e["message"]
            .as_str()
            .is_some_and(|m| m.contains("remembered in"))
    });
    bob.finish();
    alice.finish();
}
