/// The rendered code, read back: every dark module blank, every light
/// one drawn, the quiet zone light, nothing else.
#[test]
fn a_ticket_sized_qr_code_draws_every_module_faithfully() {
    let ticket = format!("pgt1{}", "a2".repeat(107));
    let drawn = qr(&ticket).unwrap();
    let code = qrcode::QrCode::with_error_correction_level(&ticket, qrcode::EcLevel::L).unwrap();
    let width = code.width();
    let colors = code.to_colors();
    let quiet = 4;
    let side = width + 2 * quiet;
    let lines: Vec<Vec<char>> = drawn.lines().map(|l| l.chars().collect()).collect();
    assert_eq!(lines.len(), side.div_ceil(2));
    for (row, line) in lines.iter().enumerate() {
        assert_eq!(line.len(), side, "row {row}");
        for (column, cell) in line.iter().enumerate() {
            let light = |y: usize| {
                let (x, y) = (
                    column as isize - quiet as isize,
                    y as isize - quiet as isize,
                );
                if x < 0 || y < 0 || x >= width as isize || y >= width as isize {
                    return true;
                }
                colors[y as usize * width + x as usize] == qrcode::Color::Light
            };
            let top_drawn = matches!(cell, '█' | '▀');
            let bottom_drawn = matches!(cell, '█' | '▄');
            assert!(matches!(cell, '█' | '▀' | '▄' | ' '), "{cell:?}");
            assert_eq!(top_drawn, light(2 * row), "row {row} column {column}");
            // Past the last row (an odd count) is outside the quiet
            // zone: either way.
            if 2 * row + 1 < side {
                assert_eq!(
                    bottom_drawn,
                    light(2 * row + 1),
                    "row {row} column {column}"
                );
            }
        }
    }
}
use super::*;

#[test]
fn dates_of_history_lines_are_calendar_days() {
    assert_eq!(date(0), "1970-01-01");
    // 2000-02-29 12:00 UTC, a leap day of a year divisible by 400.
    assert_eq!(date(951_825_600_000), "2000-02-29");
    // 2026-12-05 04:37:45 UTC.
    assert_eq!(date(1_796_445_465_000), "2026-12-05");
    assert_eq!(date(1_796_445_465_000 - 86_400_000 * 338), "2026-01-01");
}

#[test]
fn transfer_progress_reads_as_a_bar_with_rate_and_time_left() {
    let line = render(&Event::TransferProgress {
        hash: "h".into(),
        name: "film.mkv".into(),
        bytes: 1 << 20,
        total: 4 << 20,
        files_done: 0,
        files: 1,
        bytes_per_s: 1048576.0,
    });
    assert_eq!(
        line,
        vec!["* film.mkv [====>               ] 25% (1.0 MiB of 4.0 MiB, 1.0 MiB/s, 3 s left)"]
    );
    let folder = render(&Event::TransferProgress {
        hash: "h".into(),
        name: "photos".into(),
        bytes: 3 << 20,
        total: 4 << 20,
        files_done: 1200,
        files: 5000,
        bytes_per_s: 1048576.0,
    });
    assert_eq!(
        folder,
        vec!["* photos [==============>     ] 75% (1200 of 5000 files, 3.0 MiB of 4.0 MiB, 1.0 MiB/s, 1 s left)"]
    );
    assert_eq!(text_bar(0.0), format!("[{}]", " ".repeat(20)));
    assert_eq!(text_bar(100.0), format!("[{}]", "=".repeat(20)));
    assert_eq!(text_bar(250.0), text_bar(100.0));
}

#[test]
fn a_lost_source_says_who_why_and_what_happens_next() {
    let lost = |sources| Event::TransferSource {
        hash: "h".into(),
        name: "film.mkv".into(),
        peer_id: "abcdefghij".into(),
        peer_name: "sender".into(),
        state: SourceChange::Lost,
        reason: Some("connection lost".into()),
        sources,
        bytes: 1 << 20,
        total: 4 << 20,
    };
    assert_eq!(
        render(&lost(0)),
        vec!["! the source sender~abcdef is gone (connection lost); waiting for another holder of film.mkv (1.0 MiB of 4.0 MiB verified and kept; Ctrl-C stops, the same get resumes)"]
    );
    assert_eq!(
        render(&lost(1)),
        vec![
            "* the source sender~abcdef is gone (connection lost); carrying on with 1 other source"
        ]
    );
}

#[test]
fn peers_end_with_how_many_are_connected_and_reached_through_the_room() {
    let peer = |name: &str, status| PeerInfo {
        peer_id: format!("{name}0000000000"),
        name: name.into(),
        status,
        path: None,
        remote: None,
        rtt_ms: None,
        connected_secs: None,
        last_seen_secs: None,
        rooms: vec!["lobby".into()],
    };
    let lines = render(&Event::Peers {
        peers: vec![
            peer("alice", PeerStatus::Connected),
            peer("bob", PeerStatus::InRoom),
            peer("carol", PeerStatus::InRoom),
            peer("dave", PeerStatus::Offline),
        ],
    });
    assert!(lines[1].contains("in the room"), "{lines:?}");
    assert_eq!(
        lines.last().map(String::as_str),
        Some("  1 connected, 2 reached through the room")
    );
    // The gossip letting a link go is not news in the chat.
    let let_go = Event::Peer {
        peer_id: "bob0000000000".into(),
        name: "bob".into(),
        status: PeerStatus::InRoom,
        reason: None,
    };
    assert!(render(&let_go).is_empty());
}

#[test]
fn terminal_escapes_from_peers_are_neutralised() {
    let event = Event::Message {
        id: "x".into(),
        from: "abcdefghij".into(),
        from_name: "mallory".into(),
        room: "lobby".into(),
        text: "hi\u{1b}[2J\rgone".into(),
        ts: 3_723_000,
        history: false,
    };
    let lines = render(&event);
    assert_eq!(
        lines,
        vec!["[01:02:03] #lobby mallory~abcdef: hi\u{fffd}[2J\u{fffd}gone".to_string()]
    );
}
