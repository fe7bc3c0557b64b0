//! The room finder on a virtual clock.

use super::*;

fn peer(n: u8) -> PeerId {
    PeerId::from_bytes([n; 32])
}

/// Runs every task due up to `until`, answering announcements with
/// `announce` and lookups with `look`; returns each task with its time.
fn run(
    finder: &mut RoomFinder<&'static str>,
    start: Instant,
    until: Duration,
    mut announce: impl FnMut(&str) -> Announced,
    mut look: impl FnMut(&str) -> Option<Vec<Found>>,
) -> Vec<(Duration, RoomTask<&'static str>)> {
    let mut done = Vec::new();
    for _ in 0..10_000 {
        let Some(at) = finder.poll_timeout() else {
            break;
        };
        if at > start + until {
            break;
        }
        let now = at.max(start);
        let task = finder.poll_task(now).expect("a task is due");
        match &task {
            RoomTask::Announce(room) => {
                let outcome = announce(room);
                finder.handle_announced(room, outcome, now);
            }
            RoomTask::Look(room) => {
                let found = look(room);
                finder.handle_looked(room, found, |_| false, now);
            }
            RoomTask::Withdraw(_) => {}
        }
        done.push((now - start, task));
    }
    done
}

fn times(tasks: &[(Duration, RoomTask<&'static str>)], announce: bool) -> Vec<u64> {
    tasks
        .iter()
        .filter(|(_, task)| matches!(task, RoomTask::Announce(_)) == announce)
        .map(|(at, _)| at.as_secs())
        .collect()
}

#[test]
fn a_joined_room_is_announced_and_renewed_and_looked_up_ever_less_often() {
    let config = RoomsConfig::default();
    let mut finder = RoomFinder::new(config.clone(), true);
    let start = Instant::now();
    assert_eq!(finder.poll_timeout(), None);
    finder.handle_rooms(&["lobby"], start);
    let tasks = run(
        &mut finder,
        start,
        Duration::from_secs(3600),
        |_| Announced::Done,
        |_| Some(vec![]),
    );
    assert_eq!(times(&tasks, true), vec![1, 1201, 2401]);
    // Lookups: at once, then gaps of 10, 20, 40 … s up to 10 min.
    assert_eq!(
        times(&tasks, false),
        vec![0, 10, 30, 70, 150, 310, 630, 1230, 1830, 2430, 3030]
    );
}

#[test]
fn a_node_without_trackers_only_looks() {
    let mut finder = RoomFinder::new(RoomsConfig::default(), false);
    let start = Instant::now();
    finder.handle_rooms(&["lobby"], start);
    let tasks = run(
        &mut finder,
        start,
        Duration::from_secs(100),
        |_| Announced::Done,
        |_| Some(vec![]),
    );
    assert!(times(&tasks, true).is_empty());
    assert!(!times(&tasks, false).is_empty());
    // Nor does it withdraw what it never announced.
    finder.handle_rooms(&[], start + Duration::from_secs(200));
    assert_eq!(finder.poll_timeout(), None);
}

#[test]
fn a_conflict_is_retried_within_seconds_and_a_failure_backs_off() {
    let config = RoomsConfig::default();
    let mut finder = RoomFinder::new(config.clone(), true);
    let start = Instant::now();
    finder.handle_rooms(&["lobby"], start);
    let now = start + config.settle;
    assert_eq!(finder.poll_task(now), Some(RoomTask::Announce("lobby")));
    finder.handle_announced(&"lobby", Announced::Conflict, now);
    assert_eq!(finder.poll_task(now), Some(RoomTask::Look("lobby")));
    // The lookup is in flight: what is due next is the retry.
    let retry = finder.poll_timeout().unwrap();
    assert!(retry > now + config.conflict_retry / 3 - Duration::from_millis(1));
    assert!(retry <= now + config.conflict_retry);

    let mut failing = RoomFinder::new(config.clone(), true);
    failing.handle_rooms(&["lobby"], start);
    let tasks = run(
        &mut failing,
        start,
        Duration::from_secs(1000),
        |_| Announced::Failed,
        |_| None,
    );
    let announced = times(&tasks, true);
    let gaps: Vec<u64> = announced.windows(2).map(|w| w[1] - w[0]).collect();
    assert_eq!(gaps, vec![5, 10, 20, 40, 80, 160, 300, 300]);
}

#[test]
fn found_members_are_met_newest_first_a_few_at_a_time_and_not_again_soon() {
    let config = RoomsConfig::default();
    let mut finder = RoomFinder::new(config.clone(), true);
    let start = Instant::now();
    finder.handle_rooms(&["lobby"], start);
    let now = start + config.settle;
    while finder.poll_task(now).is_some() {}
    let found: Vec<Found> = (1..=8)
        .map(|n| Found {
            peer: peer(n),
            at: 1000 + u64::from(n),
        })
        .collect();
    // Peer 8 (newest) is connected already.
    finder.handle_looked(&"lobby", Some(found.clone()), |p| *p == peer(8), now);
    let met: Vec<PeerId> = std::iter::from_fn(|| finder.poll_meet())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(met, vec![peer(7), peer(6), peer(5), peer(4)]);

    // The next lookup soon after: the others, not those just met.
    let later = now + Duration::from_secs(10);
    assert_eq!(finder.poll_task(later), Some(RoomTask::Look("lobby")));
    finder.handle_looked(&"lobby", Some(found.clone()), |p| *p == peer(8), later);
    let met: Vec<PeerId> = std::iter::from_fn(|| finder.poll_meet())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(met, vec![peer(3), peer(2), peer(1)]);

    // A minute on, one not reached yet is met again.
    let much_later = now + config.meet_again + Duration::from_secs(1);
    finder.handle_looked(&"lobby", Some(found), |p| *p != peer(5), much_later);
    let met: Vec<PeerId> = std::iter::from_fn(|| finder.poll_meet())
        .map(|(_, p)| p)
        .collect();
    assert_eq!(met, vec![peer(5)]);
}

#[test]
fn a_room_left_is_withdrawn_once_and_its_pending_meetings_dropped() {
    let config = RoomsConfig::default();
    let mut finder = RoomFinder::new(config.clone(), true);
    let start = Instant::now();
    finder.handle_rooms(&["lobby", "den"], start);
    let now = start + config.settle;
    while finder.poll_task(now).is_some() {}
    let found = vec![Found {
        peer: peer(1),
        at: 1,
    }];
    finder.handle_looked(&"lobby", Some(found), |_| false, now);
    finder.handle_rooms(&["den"], now);
    assert_eq!(finder.poll_meet(), None);
    assert_eq!(finder.poll_timeout(), Some(now));
    assert_eq!(finder.poll_task(now), Some(RoomTask::Withdraw("lobby")));
    assert_eq!(finder.poll_task(now), None);
    // Reports for a room no longer there change nothing.
    finder.handle_announced(&"lobby", Announced::Done, now);
    finder.handle_looked(&"lobby", Some(vec![]), |_| false, now);
    // Joined again before its withdrawal ran: no withdrawal.
    finder.handle_rooms(&[], now);
    finder.handle_rooms(&["den", "lobby"], now);
    let tasks: Vec<_> = std::iter::from_fn(|| finder.poll_task(now + config.settle)).collect();
    assert!(
        !tasks.iter().any(|t| matches!(t, RoomTask::Withdraw(_))),
        "{tasks:?}"
    );
    assert!(tasks.contains(&RoomTask::Announce("lobby")), "{tasks:?}");
    assert!(tasks.contains(&RoomTask::Announce("den")), "{tasks:?}");
}
