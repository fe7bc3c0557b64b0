//! A node as a long-running service, through real `punchgate` processes:
//! it outlives a tracker that is killed and restarted (rooms re-joined,
//! relay stream reopened, its direct connections untouched meanwhile), and
//! it notices a chat peer killed without a goodbye within 15 s.

mod common;

use std::cell::RefCell;
use std::path::Path;
use std::time::{Duration, Instant};

use common::process::{Proc, PROC_WAIT};
use serde_json::Value;

/// Deadline of a wait that spans a tracker outage: a killed tracker is
/// noticed by silence at the latest after the idle timeout (30 s by
/// default), and a restarted one is found again by a retry whose backoff
/// is capped at 30 s. A deadline only: the tests make no claim on these
/// durations.
const TRACKER_WAIT: Duration = Duration::from_secs(75);

/// The spec's bar: a chat peer killed with SIGKILL is reported gone within
/// this long, with the default settings.
const GONE_WITHIN: Duration = Duration::from_secs(15);

/// Where a tracker listens and who it is.
#[derive(Clone, Debug, PartialEq)]
struct TrackerAt {
    id: String,
    addr: String,
    /// `PEERID@addr`, what nodes pass as `--tracker`.
    target: String,
}

/// `punchgate tracker --listen LISTEN` on the data directory `home`, which
/// outlives the process so that a restart keeps the tracker's identity.
/// netcheck's second port is left to the system, so that a restart on a
/// fixed port never depends on the port after it being free.
fn start_tracker(home: &Path, listen: &str) -> (Proc, TrackerAt) {
    let args = ["tracker", "--listen", listen, "--aux-port", "0"];
    let proc = Proc::start_with_home(home, None, &args);
    let ready = proc.expect("ready", |e| e["role"] == "tracker");
    let text = |field: &str| {
        ready[field]
            .as_str()
            .unwrap_or_else(|| panic!("tracker ready without {field}: {ready}"))
            .to_string()
    };
    let at = TrackerAt {
        id: text("peer_id"),
        addr: text("addr"),
        target: text("target"),
    };
    assert_eq!(at.target, format!("{}@{}", at.id, at.addr), "{ready}");
    (proc, at)
}

/// A chat process, with the events it printed that no wait has matched
/// yet: waits do not depend on the order unrelated events arrive in
/// (`Proc::expect` drops what it skips).
struct Chat {
    name: &'static str,
    proc: Proc,
    id: String,
    backlog: RefCell<Vec<Value>>,
}

impl Chat {
    /// `punchgate chat --tracker TARGET --name NAME --room ROOM` on
    /// 127.0.0.1, with `extra` flags; returns once it is ready (registered
    /// with the tracker).
    fn start(name: &'static str, tracker: &TrackerAt, room: &str, extra: &[&str]) -> Chat {
        let mut args = vec![
            "chat",
            "--tracker",
            &tracker.target,
            "--name",
            name,
            "--room",
            room,
            "--bind",
            "127.0.0.1:0",
        ];
        args.extend_from_slice(extra);
        let proc = Proc::start(&args);
        let ready = proc.expect("ready", |_| true);
        let id = ready["peer_id"]
            .as_str()
            .unwrap_or_else(|| panic!("{name}: ready without peer_id: {ready}"))
            .to_string();
        Chat {
            name,
            proc,
            id,
            backlog: RefCell::new(Vec::new()),
        }
    }

    /// Waits up to `limit` for an event `pick` maps to a value: first among
    /// those already seen and not yet matched, then among new ones.
    fn wait_for<T>(&self, limit: Duration, pick: impl Fn(&Value) -> Option<T>) -> Option<T> {
        {
            let mut backlog = self.backlog.borrow_mut();
            if let Some(index) = backlog.iter().position(|e| pick(e).is_some()) {
                return pick(&backlog.remove(index));
            }
        }
        self.proc.first(limit, |event| {
            let found = pick(event);
            if found.is_none() {
                self.backlog.borrow_mut().push(event.clone());
            }
            found
        })
    }

    /// The same, and fails the test naming `what` and the events seen.
    fn sees<T>(&self, what: &str, limit: Duration, pick: impl Fn(&Value) -> Option<T>) -> T {
        self.wait_for(limit, pick).unwrap_or_else(|| {
            panic!(
                "{}: no {what} within {limit:?}; unmatched events:{}",
                self.name,
                self.unmatched()
            )
        })
    }

    fn connected_to(&self, peer: &Chat) -> Value {
        let id = peer.id.as_str();
        self.sees(&format!("connection to {}", peer.name), PROC_WAIT, |e| {
            (e["event"] == "connected" && e["peer_id"] == id).then(|| e.clone())
        })
    }

    fn receives(&self, text: &str, from: &Chat) -> Value {
        let message = self.sees(&format!("message {text:?}"), PROC_WAIT, |e| {
            (e["event"] == "message" && e["text"] == text).then(|| e.clone())
        });
        assert_eq!(message["from"], from.id.as_str(), "{message}");
        assert_eq!(message["from_name"], from.name, "{message}");
        message
    }

    /// Waits for `tracker` with `state` (`lost` or `back`) about `tracker`.
    fn tracker_state(&self, state: &str, tracker: &TrackerAt) -> Value {
        let event = self.sees(&format!("tracker {state}"), TRACKER_WAIT, |e| {
            (e["event"] == "tracker" && e["state"] == state).then(|| e.clone())
        });
        assert_eq!(event["tracker_id"], tracker.id.as_str(), "{event}");
        assert_eq!(event["addr"], tracker.addr.as_str(), "{event}");
        event
    }

    /// The events seen and not matched, one JSON line each.
    fn unmatched(&self) -> String {
        let backlog = self.backlog.borrow();
        backlog.iter().map(|e| format!("\n  {e}")).collect()
    }

    /// Reads what is already printed into the backlog and fails if any of
    /// it reports `peer` gone.
    fn has_not_lost(&self, peer: &Chat, during: &str) {
        let _ = self.wait_for(Duration::ZERO, |_| None::<()>);
        let backlog = self.backlog.borrow();
        let gone = backlog.iter().find(|e| reports_gone(e, &peer.id));
        assert!(
            gone.is_none(),
            "{} lost {} {during}: {gone:?}",
            self.name,
            peer.name
        );
    }

    /// Writes one line to stdin: a message to the current room, or a
    /// command.
    fn say(&mut self, line: &str) {
        self.proc.send(line);
    }

    /// Kills the process at once (SIGKILL): no goodbye, no flush.
    fn kill(self) {
        self.proc.kill();
    }
}

/// Whether `event` says the peer `id` is gone: `disconnected`, or `peer`
/// with status `offline`.
fn reports_gone(event: &Value, id: &str) -> bool {
    event["peer_id"] == id
        && (event["event"] == "disconnected"
            || (event["event"] == "peer" && event["status"] == "offline"))
}

/// Waits until `a` and `b` report a connection to each other; returns the
/// `connected` events (of `a`, of `b`).
fn connect(a: &Chat, b: &Chat) -> (Value, Value) {
    (a.connected_to(b), b.connected_to(a))
}

#[test]
fn a_tracker_killed_and_restarted_is_rejoined_by_every_node() {
    let tracker_home = tempfile::tempdir().unwrap();
    let (tracker, at) = start_tracker(tracker_home.path(), "127.0.0.1:0");
    let mut alice = Chat::start("alice", &at, "r", &[]);
    let mut bob = Chat::start("bob", &at, "r", &[]);
    let (to_bob, _) = connect(&alice, &bob);
    assert_eq!(to_bob["path"], "direct", "{to_bob}");

    // SIGKILL: the tracker says goodbye to nobody.
    tracker.kill();
    for node in [&alice, &bob] {
        let lost = node.tracker_state("lost", &at);
        assert!(lost["reason"].is_string(), "{}: {lost}", node.name);
    }

    // Without a tracker, the direct connection carries on, both ways.
    alice.say("said while the tracker is down");
    bob.receives("said while the tracker is down", &alice);
    bob.say("heard you, tracker or not");
    alice.receives("heard you, tracker or not", &bob);

    // The same tracker again: same data directory, same address, same id.
    let (_tracker, again) = start_tracker(tracker_home.path(), &at.addr);
    assert_eq!(again, at);
    for node in [&alice, &bob] {
        node.tracker_state("back", &at);
    }
    alice.say("after the tracker came back");
    bob.receives("after the tracker came back", &alice);
    alice.has_not_lost(&bob, "while the tracker was away");
    bob.has_not_lost(&alice, "while the tracker was away");

    // A newcomer finds both through the restarted tracker: they are back in
    // the room.
    let mut carol = Chat::start("carol", &at, "r", &[]);
    connect(&carol, &alice);
    connect(&carol, &bob);
    carol.say("hello from carol");
    alice.receives("hello from carol", &carol);
    bob.receives("hello from carol", &carol);
    alice.say("welcome carol");
    carol.receives("welcome carol", &alice);
}

/// The relay stream is reopened too: relay-only peers meet through the
/// restarted tracker's relay.
#[test]
fn relay_streams_are_reopened_after_a_tracker_restart() {
    let tracker_home = tempfile::tempdir().unwrap();
    let (tracker, at) = start_tracker(tracker_home.path(), "127.0.0.1:0");
    let relayed = |name| Chat::start(name, &at, "r", &["--relay-only"]);
    let mut alice = relayed("alice");
    let bob = relayed("bob");
    let (to_bob, _) = connect(&alice, &bob);
    assert_eq!(to_bob["path"], "relay", "{to_bob}");

    tracker.kill();
    for node in [&alice, &bob] {
        node.tracker_state("lost", &at);
    }
    let (_tracker, again) = start_tracker(tracker_home.path(), &at.addr);
    assert_eq!(again, at);
    for node in [&alice, &bob] {
        node.tracker_state("back", &at);
    }

    // Carol can only reach them through the relay, which needs their relay
    // streams open on the new tracker.
    let mut carol = relayed("carol");
    for node in [&alice, &bob] {
        let (from_carol, _) = connect(&carol, node);
        assert_eq!(from_carol["path"], "relay", "{from_carol}");
    }
    carol.say("hello over the new relay");
    alice.receives("hello over the new relay", &carol);
    bob.receives("hello over the new relay", &carol);
    alice.say("and back");
    carol.receives("and back", &alice);
}

/// Two trackers, the first killed for good: the nodes registered with both
/// notice, keep their connection, and a newcomer (whose first tracker is
/// already dead when it starts) meets them through the second. With
/// `relay_only`, the relayed connection moves to the second tracker's
/// relay and the newcomer is relayed there too.
fn two_trackers_one_killed(extra: &[&str], path: &str) {
    let homes = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let (first, at_first) = start_tracker(homes[0].path(), "127.0.0.1:0");
    let (_second, at_second) = start_tracker(homes[1].path(), "127.0.0.1:0");
    let mut flags = vec!["--tracker", &at_second.target];
    flags.extend_from_slice(extra);
    let mut alice = Chat::start("alice", &at_first, "r", &flags);
    let mut bob = Chat::start("bob", &at_first, "r", &flags);
    let (to_bob, _) = connect(&alice, &bob);
    assert_eq!(to_bob["path"], path, "{to_bob}");

    first.kill();
    for node in [&alice, &bob] {
        node.tracker_state("lost", &at_first);
    }
    alice.say("one tracker down");
    bob.receives("one tracker down", &alice);
    bob.say("still here");
    alice.receives("still here", &bob);

    let mut carol = Chat::start("carol", &at_first, "r", &flags);
    carol.tracker_state("lost", &at_first);
    for node in [&alice, &bob] {
        let (from_carol, _) = connect(&carol, node);
        assert_eq!(from_carol["path"], path, "{from_carol}");
    }
    carol.say("met through the second tracker");
    alice.receives("met through the second tracker", &carol);
    bob.receives("met through the second tracker", &carol);
    alice.say("welcome");
    carol.receives("welcome", &alice);
    bob.say("welcome too");
    carol.receives("welcome too", &bob);
    alice.has_not_lost(&bob, "while the first tracker was down");
    bob.has_not_lost(&alice, "while the first tracker was down");
}

#[test]
fn two_trackers_one_killed_peers_still_meet_through_the_other() {
    two_trackers_one_killed(&[], "direct");
}

#[test]
fn two_trackers_one_killed_relayed_peers_move_to_the_other_relay() {
    two_trackers_one_killed(&["--relay-only"], "relay");
}

#[test]
fn a_sigkilled_chat_peer_is_reported_gone_within_15_seconds() {
    let tracker_home = tempfile::tempdir().unwrap();
    // Kept up throughout: only the peer goes away.
    let (_tracker, at) = start_tracker(tracker_home.path(), "127.0.0.1:0");
    let mut alice = Chat::start("alice", &at, "r", &[]);
    let bob = Chat::start("bob", &at, "r", &[]);
    let (to_bob, _) = connect(&alice, &bob);
    assert_eq!(to_bob["path"], "direct", "{to_bob}");
    alice.say("are you there");
    bob.receives("are you there", &alice);
    alice.has_not_lost(&bob, "before the kill");

    let bob_id = bob.id.clone();
    let killed = Instant::now();
    bob.kill();
    // Waited for well past the bar, so that a miss says how late it was.
    let patience = GONE_WITHIN * 4;
    let gone = alice
        .wait_for(patience, |e| reports_gone(e, &bob_id).then(|| e.clone()))
        .unwrap_or_else(|| {
            panic!(
                "alice never reported bob gone within {patience:?}; unmatched events:{}",
                alice.unmatched()
            )
        });
    let took = killed.elapsed();
    assert!(
        took < GONE_WITHIN,
        "alice reported bob gone {took:?} after the kill ({gone}); the bar is {GONE_WITHIN:?}"
    );
}
