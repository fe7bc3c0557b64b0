//! A room split in two and healed, between real processes: ten members on
//! two sites keep three gossip links each (`--room-links 3`, so the room
//! is not a full mesh). The sites' routers then drop everything between
//! them while the tracker, which relays nothing here, still lists everyone;
//! each half writes and reads its own messages alone. When the split ends,
//! links across it form again and every member ends with every message,
//! each shown once.

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use super::common::process::Proc;
use super::lab::Nat;
use super::{lab_or_skip, start_chat, start_tracker_with};

const PER_SITE: u8 = 5;
/// A deadline only: healing waits for a member's periodic link swap
/// (about every 30 s) to pick one across the old split.
const HEAL_WAIT: Duration = Duration::from_secs(180);

/// One member: its process and the messages it has shown, with counts.
struct Member {
    name: String,
    proc: Proc,
    shown: HashMap<String, usize>,
}

impl Member {
    fn note(&mut self, event: &serde_json::Value) {
        if event["event"] == "message" && event["history"] != true {
            if let Some(text) = event["text"].as_str() {
                *self.shown.entry(text.to_string()).or_default() += 1;
            }
        }
    }

    /// The next event named `name`, noting every message on the way.
    fn next(&mut self, name: &str, deadline: Instant) -> serde_json::Value {
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Some(event) = self.proc.first(left, |e| Some(e.clone())) else {
                panic!(
                    "{} printed no {name} event; it showed {:?}",
                    self.name,
                    self.shown.keys().collect::<Vec<_>>()
                );
            };
            self.note(&event);
            if event["event"] == name {
                return event;
            }
        }
    }

    /// Waits until it has shown every one of `texts` (each of its own is
    /// never shown to it); panics at `deadline`.
    fn wait_for(&mut self, texts: &[String], deadline: Instant) {
        while !texts.iter().all(|t| self.shown.contains_key(t)) {
            self.next("message", deadline);
        }
    }

    /// Waits until none of its connections goes to `other` (the other
    /// site's public address): each one left dies of silence.
    fn wait_cut_off_from(&mut self, other: Ipv4Addr, deadline: Instant) {
        loop {
            self.proc.send("/show");
            let gates = self.next("gates", deadline);
            let across = gates["gates"].as_array().unwrap().iter().any(|gate| {
                gate["remote"]
                    .as_str()
                    .unwrap()
                    .starts_with(&format!("{other}:"))
            });
            if !across {
                return;
            }
            self.next("disconnected", deadline);
        }
    }

    /// Takes in whatever it has printed by now.
    fn drain(&mut self) {
        while let Some(event) = self.proc.first(Duration::ZERO, |e| Some(e.clone())) {
            self.note(&event);
        }
    }
}

#[test]
fn a_room_split_in_two_halves_ends_with_every_message_on_both_sides_once_the_split_heals() {
    let Some(mut lab) = lab_or_skip("partition heal") else {
        return;
    };
    let left = lab.add_site(1, Nat::FullCone, PER_SITE, false);
    let right = lab.add_site(2, Nat::FullCone, PER_SITE, false);
    // No relay: the halves truly cannot reach each other while split.
    let (_tracker, target) = start_tracker_with(&lab, &["--no-relay"]);
    let flags = [
        "--room-links",
        "3",
        "--idle-timeout",
        "4",
        "--keep-alive",
        "1",
    ];
    let mut members = Vec::new();
    for (side, site) in [("l", &left), ("r", &right)] {
        for (index, host) in site.hosts.iter().enumerate() {
            let name = format!("{side}{index}");
            let (proc, _) = start_chat(host, &name, &target, &flags);
            members.push(Member {
                name,
                proc,
                shown: HashMap::new(),
            });
        }
    }
    let half = usize::from(PER_SITE);
    let wait = |seconds| Instant::now() + Duration::from_secs(seconds);

    // Whole: a message from the left reaches all nine others.
    let before = "before the split".to_string();
    members[0].proc.send(&before);
    let deadline = wait(60);
    for member in members.iter_mut().skip(1) {
        member.wait_for(std::slice::from_ref(&before), deadline);
    }

    // Split: nothing passes between the sites' routers.
    let (left_router, right_router) = (left.router.clone().unwrap(), right.router.clone().unwrap());
    lab.block(&left_router, right.public_ip);
    lab.block(&right_router, left.public_ip);
    let split_at = Instant::now();
    // The links across die of silence (--idle-timeout 4); until then what
    // they carry would only wait for the heal.
    let deadline = wait(60);
    for (index, member) in members.iter_mut().enumerate() {
        let other = if index < half {
            right.public_ip
        } else {
            left.public_ip
        };
        member.wait_cut_off_from(other, deadline);
    }
    let cut_off = split_at.elapsed();
    let left_texts: Vec<String> = (1..=2).map(|n| format!("left side {n}")).collect();
    let right_texts: Vec<String> = (1..=2).map(|n| format!("right side {n}")).collect();
    // Each half reaches all of itself despite its lost links: writers
    // other than the first member of each side.
    for (n, text) in left_texts.iter().enumerate() {
        members[1 + n].proc.send(text);
    }
    for (n, text) in right_texts.iter().enumerate() {
        members[half + 1 + n].proc.send(text);
    }
    let deadline = wait(90);
    for (index, member) in members.iter_mut().enumerate() {
        let (own_side, writers) = if index < half {
            (&left_texts, 1..=2)
        } else {
            (&right_texts, half + 1..=half + 2)
        };
        let expected: Vec<String> = own_side
            .iter()
            .zip(writers)
            .filter(|(_, writer)| *writer != index)
            .map(|(text, _)| text.clone())
            .collect();
        member.wait_for(&expected, deadline);
    }
    let halves_whole = split_at.elapsed() - cut_off;
    for member in &mut members {
        member.drain();
    }
    for (index, member) in members.iter().enumerate() {
        let other = if index < half {
            &right_texts
        } else {
            &left_texts
        };
        for text in other {
            assert!(
                !member.shown.contains_key(text),
                "{} saw {text:?} across the split",
                member.name
            );
        }
    }

    // Healed: every member ends with every message, once.
    lab.unblock(&left_router);
    lab.unblock(&right_router);
    let healed_at = Instant::now();
    let all: Vec<String> = std::iter::once(before.clone())
        .chain(left_texts.iter().cloned())
        .chain(right_texts.iter().cloned())
        .collect();
    let writers: HashMap<&String, usize> = [
        (&all[0], 0),
        (&all[1], 1),
        (&all[2], 2),
        (&all[3], half + 1),
        (&all[4], half + 2),
    ]
    .into_iter()
    .collect();
    let deadline = Instant::now() + HEAL_WAIT;
    for (index, member) in members.iter_mut().enumerate() {
        let expected: Vec<String> = all
            .iter()
            .filter(|text| writers[text] != index)
            .cloned()
            .collect();
        member.wait_for(&expected, deadline);
    }
    let heal = healed_at.elapsed();
    for member in &mut members {
        member.drain();
        for (text, count) in &member.shown {
            assert_eq!(*count, 1, "{} showed {text:?} {count} times", member.name);
        }
    }
    eprintln!(
        "NATLAB | partition | 10 members, 3 links each, split between two sites | links across gone {:.1} s after the split, each half's messages everywhere in it {:.1} s later, every message everywhere {:.2} s after the heal",
        cut_off.as_secs_f64(),
        halves_whole.as_secs_f64(),
        heal.as_secs_f64()
    );
}
