//! A password room large enough for gossip (the active view set to 2, so 8
//! members are not a full mesh): messages reach every member that proved
//! the password, through members that are not connected to the author, and
//! a member with a wrong password takes part in nothing.

mod common;

use common::{config, start_node, TestNode};
use punchgate::pake::Secret;

const ROOM: &str = "vault";
const PASSWORD: &str = "correct horse battery staple";

fn in_vault(name: &str, tracker: &punchgate::tracker::Tracker, password: &str) -> TestConfig {
    let mut config = config(name, Some(tracker), ROOM);
    config.passwords.insert(ROOM.into(), Secret::new(password));
    config.gossip.active = 2;
    config.gossip.max_active = 3;
    config
}

type TestConfig = punchgate::node::NodeConfig;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn only_members_who_proved_the_password_take_part_in_the_gossip() {
    let tracker = common::start_tracker();
    let mut members: Vec<TestNode> = Vec::new();
    for i in 0..8 {
        members.push(start_node(in_vault(&format!("v{i}"), &tracker, PASSWORD)).await);
    }
    let intruder = start_node(in_vault("intruder", &tracker, "incorrect donkey")).await;
    for author in [0, 7] {
        members[author]
            .node
            .say(&format!("secret from v{author}"))
            .await
            .unwrap();
    }
    for (i, member) in members.iter_mut().enumerate() {
        for author in [0, 7].into_iter().filter(|a| *a != i) {
            member.receives(&format!("secret from v{author}")).await;
        }
    }
    // Gossip, not a mesh: nobody holds a connection to all 7 others.
    for member in &members {
        let open = member
            .node
            .peers()
            .iter()
            .filter(|p| p.path.is_some())
            .count();
        assert!(open < 7, "{} holds {open} connections", member.id());
    }
    let history = intruder.node.room_history(ROOM, 100).await.unwrap();
    assert!(history.is_empty(), "the intruder holds {history:?}");
}
