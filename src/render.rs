//! Human-readable rendering of [`Event`]s for the interactive chat. Text from
//! the network is shown with control characters replaced, so a peer cannot
//! drive the user's terminal.

use crate::node::events::{Event, MemberChange, PeerInfo, PeerStatus, SourceChange};
use crate::protocol::is_deceptive_char;

/// Replaces control and invisible characters (escape sequences, carriage
/// returns, bidirectional overrides) with U+FFFD.
pub fn sanitize(text: &str) -> String {
    text.chars()
        .map(|c| if is_deceptive_char(c) { '\u{fffd}' } else { c })
        .collect()
}

/// `line` of `event` with terminal colours: messages plain with the sender
/// in bold, errors red, everything else about peers and rooms dimmed.
pub fn paint(event: &Event, line: &str) -> String {
    const RESET: &str = "\x1b[0m";
    match event {
        Event::Message { from_name, .. } => {
            let name = sanitize(from_name);
            line.replacen(&format!(" {name}~"), &format!(" \x1b[1m{name}\x1b[22m~"), 1)
        }
        Event::Error { .. }
        | Event::TransferSource {
            state: SourceChange::Lost,
            sources: 0,
            ..
        } => format!("\x1b[31m{line}{RESET}"),
        _ => format!("\x1b[2m{line}{RESET}"),
    }
}

/// The first characters of a peer id, shown beside every name: names are
/// chosen by their owners, ids are not.
const SHOWN_ID_LEN: usize = 6;

/// `HH:MM:SS` (UTC) of a Unix time in milliseconds.
pub fn clock(ts_ms: u64) -> String {
    let secs = ts_ms / 1000;
    format!(
        "{:02}:{:02}:{:02}",
        (secs / 3600) % 24,
        (secs / 60) % 60,
        secs % 60
    )
}

/// `YYYY-MM-DD` (UTC) of a Unix time in milliseconds.
pub fn date(ts_ms: u64) -> String {
    // Days since 1970-01-01 to a proleptic Gregorian date, in 400-year
    // eras of 146 097 days (the usual civil-from-days arithmetic).
    let days = (ts_ms / 86_400_000) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days.rem_euclid(146_097);
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn short(id: &str) -> &str {
    id.get(..10).unwrap_or(id)
}

fn status_word(status: PeerStatus) -> &'static str {
    match status {
        PeerStatus::Known => "yet to connect",
        PeerStatus::Connecting => "connecting",
        PeerStatus::Connected => "connected",
        PeerStatus::InRoom => "in the room",
        PeerStatus::Offline => "offline",
    }
}

fn peer_line(peer: &PeerInfo) -> String {
    let mut line = format!(
        "  {:<16} {}  {:<14}",
        sanitize(&peer.name),
        short(&peer.peer_id),
        status_word(peer.status)
    );
    if let Some(remote) = peer.remote {
        line.push_str(&format!(" {remote}"));
    }
    if let Some(rtt) = peer.rtt_ms {
        line.push_str(&format!(" rtt {rtt:.1} ms"));
    }
    if let Some(secs) = peer.connected_secs {
        line.push_str(&format!(" up {secs}s"));
    }
    if let Some(secs) = peer.last_seen_secs {
        line.push_str(&format!(" seen {secs}s ago"));
    }
    line
}

/// `#room`, or `(private)` for a private room of two.
fn room_label(room: &str) -> String {
    if room.starts_with('@') {
        "(private)".to_string()
    } else {
        format!("#{}", sanitize(room))
    }
}

/// A bench report as a small table: one line per measured quantity.
fn render_bench(kind: &str, peer: &str, report: &serde_json::Value) -> Vec<String> {
    let mut lines = vec![format!("bench {kind} with {}", short(peer))];
    let summary_line = |label: &str, s: &serde_json::Value| {
        format!(
            "  {label:<14} min {:>8.2} ms  median {:>8.2} ms  p90 {:>8.2} ms  max {:>8.2} ms  ({:.2} RTT of {:.2} ms, {} runs)",
            s["min_ms"].as_f64().unwrap_or_default(),
            s["median_ms"].as_f64().unwrap_or_default(),
            s["p90_ms"].as_f64().unwrap_or_default(),
            s["max_ms"].as_f64().unwrap_or_default(),
            s["median_rtts"].as_f64().unwrap_or_default(),
            s["rtt_ms"].as_f64().unwrap_or_default(),
            s["runs"].as_u64().unwrap_or_default()
        )
    };
    match kind {
        "handshake" => lines.push(summary_line("handshake", report)),
        "punch" => {
            for phase in ["introduction", "handshake", "greeting", "total"] {
                lines.push(summary_line(phase, &report[phase]));
            }
        }
        _ => lines.push(format!(
            "  {:.1} MB/s over punchgate ({} bytes in {:.2} s); raw quinn on this machine's loopback: {:.1} MB/s",
            report["mb_per_s"].as_f64().unwrap_or_default(),
            report["bytes"].as_u64().unwrap_or_default(),
            report["seconds"].as_f64().unwrap_or_default(),
            report["raw_quinn_loopback_mb_per_s"].as_f64().unwrap_or_default()
        )),
    }
    lines
}

/// Keeps progress lines for people to one every few seconds per transfer
/// (`--json` gets every event).
#[derive(Default)]
pub struct ProgressThrottle {
    last: std::collections::HashMap<String, std::time::Instant>,
}

impl ProgressThrottle {
    const EVERY: std::time::Duration = std::time::Duration::from_secs(2);

    /// Whether to print `event` at `now`.
    pub fn admit(&mut self, event: &Event, now: std::time::Instant) -> bool {
        // A download's end is said by its summary; an upload has none.
        let (key, bytes, total, end_said_elsewhere) = match event {
            Event::TransferProgress {
                hash, bytes, total, ..
            } => (hash.clone(), bytes, total, true),
            Event::UploadProgress {
                peer_id,
                hash,
                bytes,
                total,
                ..
            } => (format!("{peer_id} {hash}"), bytes, total, false),
            _ => return true,
        };
        if bytes == total {
            return self.last.remove(&key).is_some() || !end_said_elsewhere;
        }
        match self.last.get(&key) {
            Some(at) if now.saturating_duration_since(*at) < Self::EVERY => false,
            _ => {
                self.last.insert(key, now);
                true
            }
        }
    }
}

/// `text` as a QR code of text blocks for a terminal with a dark
/// background (light modules drawn, dark ones left blank), or why it
/// cannot be one.
pub fn qr(text: &str) -> Result<String, String> {
    use qrcode::render::unicode::Dense1x2;
    let code = qrcode::QrCode::with_error_correction_level(text, qrcode::EcLevel::L)
        .map_err(|error| format!("cannot make a QR code of it: {error}"))?;
    Ok(code
        .render::<Dense1x2>()
        .dark_color(Dense1x2::Light)
        .light_color(Dense1x2::Dark)
        .quiet_zone(true)
        .build())
}

/// A byte count as people read it: B, KiB, MiB, GiB.
pub fn size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit + 1 < UNITS.len() {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} B")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

/// The lines `send` and `get` print for `event`: those of [`render`]
/// without chat's hint and the comings and goings of the content's swarm
/// room, which is how holders meet, not a room anyone joined.
pub fn render_transfer(event: &Event) -> Vec<String> {
    match event {
        Event::Ready { .. } => ready_lines(event),
        Event::Joined { .. } | Event::Left { .. } => Vec::new(),
        _ => render(event),
    }
}

/// Who this node is and where the tracker sees it.
fn ready_lines(event: &Event) -> Vec<String> {
    let Event::Ready {
        peer_id,
        name,
        addr,
        reflexive,
        tracker_ms,
        ..
    } = event
    else {
        return Vec::new();
    };
    let mut lines = vec![format!("you are {} ({peer_id}) on {addr}", sanitize(name))];
    if let (Some(reflexive), Some(ms)) = (reflexive, tracker_ms) {
        lines.push(format!(
            "registered with the tracker in {ms:.1} ms; it sees you at {reflexive}"
        ));
    }
    lines
}

/// The lines to print for `event`; empty for events a person need not see.
pub fn render(event: &Event) -> Vec<String> {
    match event {
        Event::Ready { .. } => {
            let mut lines = ready_lines(event);
            lines.push("type /help for commands".into());
            lines
        }
        Event::TrackerReady { target, .. } => vec![target.clone()],
        Event::Tracker {
            state,
            addr,
            reason,
            ..
        } => {
            let at = addr.as_deref().map(sanitize).unwrap_or_default();
            vec![match (state, reason) {
                (crate::node::events::TrackerLink::Lost, Some(reason)) => {
                    format!("! lost the tracker {at}: {}", sanitize(reason))
                }
                (crate::node::events::TrackerLink::Lost, None) => {
                    format!("! lost the tracker {at}")
                }
                (crate::node::events::TrackerLink::Back, _) => {
                    format!("* the tracker {at} is back: registered, rooms joined again")
                }
                (crate::node::events::TrackerLink::Closed, _) => {
                    format!("* closed the guest session with the tracker {at}: no longer needed")
                }
                // Routine: an idle session parks and comes back unseen.
                (
                    crate::node::events::TrackerLink::Parked
                    | crate::node::events::TrackerLink::Resumed,
                    _,
                ) => return Vec::new(),
            }]
        }
        Event::DhtRoom {
            room,
            state,
            members,
            reason,
        } => {
            let room = sanitize(room);
            match state {
                crate::node::events::DhtRoomState::Announced
                | crate::node::events::DhtRoomState::Withdrawn => Vec::new(),
                crate::node::events::DhtRoomState::Failed => vec![format!(
                    "! #{room} on the DHT: {}",
                    sanitize(reason.as_deref().unwrap_or("unknown reason"))
                )],
                crate::node::events::DhtRoomState::Found => match members.unwrap_or(0) {
                    0 => Vec::new(),
                    n => vec![format!(
                        "* found {n} member{} of #{room} on the DHT",
                        if n == 1 { "" } else { "s" }
                    )],
                },
            }
        }
        Event::Dht {
            state,
            seq,
            trackers,
            reason,
        } => vec![match (state, reason) {
            (crate::node::events::DhtState::Failed, Some(reason)) => {
                format!("! could not publish this node's DHT record: {}", sanitize(reason))
            }
            _ => format!(
                "* published this node's DHT record (seq {}, {trackers} tracker{})",
                seq.unwrap_or_default(),
                if *trackers == 1 { "" } else { "s" }
            ),
        }],
        // A link the room's gossip let go: the peer is still there, and in
        // a big room that happens every half minute; /peers shows it.
        Event::Peer {
            status: PeerStatus::InRoom,
            ..
        } => Vec::new(),
        Event::Peer {
            peer_id,
            name,
            status,
            reason,
        } => {
            let reason = reason.as_deref().map(|r| format!(" ({})", sanitize(r))).unwrap_or_default();
            vec![format!(
                "* {} [{}] {}{reason}",
                sanitize(name),
                short(peer_id),
                status_word(*status)
            )]
        }
        Event::Connected {
            peer_id,
            name,
            path,
            remote,
            rtt_ms,
            setup_ms,
            ..
        } => vec![format!(
            "* connected to {} [{}] {path} via {remote}, rtt {rtt_ms:.1} ms, set up in {setup_ms:.1} ms",
            sanitize(name),
            short(peer_id),
        )],
        Event::Path {
            peer_id,
            name,
            path,
            remote,
        } => vec![format!(
            "* {} [{}] is now {path} via {remote}",
            sanitize(name),
            short(peer_id),
        )],
        Event::TrackerStats { stats } => vec![format!(
            "peers {} ({} parked), relay streams {}, registrations {}, introductions {}, relayed {} packets / {} bytes, dropped {}, throttled {}, refused {}, knocks {}",
            stats.peers,
            stats.parked,
            stats.relay_streams,
            stats.registrations,
            stats.introductions,
            stats.relayed_packets,
            stats.relayed_bytes,
            stats.relay_dropped,
            stats.relay_throttled,
            stats.relay_refused,
            stats.knocks
        )],
        Event::Disconnected { peer_id, name, reason } => vec![format!(
            "* {} [{}] is gone: {}",
            sanitize(name),
            short(peer_id),
            sanitize(reason)
        )],
        Event::Message {
            from,
            from_name,
            room,
            text,
            ts,
            history,
            ..
        } => vec![format!(
            "[{}] {} {}~{}: {}",
            // From history the day matters too: it may be another one.
            if *history {
                format!("{} {}", date(*ts), clock(*ts))
            } else {
                clock(*ts)
            },
            room_label(room),
            sanitize(from_name),
            from.get(..SHOWN_ID_LEN).unwrap_or(from),
            sanitize(text)
        )],
        Event::Sent { pending, .. } if !pending.is_empty() => vec![format!(
            "(pending for {}: delivered when they connect)",
            pending.iter().map(|n| sanitize(n)).collect::<Vec<_>>().join(", ")
        )],
        Event::Sent { room, peers, .. } if *peers == 0 => {
            vec![format!("(nobody else is connected in #{} yet)", sanitize(room))]
        }
        Event::Sent { .. } | Event::Delivered { .. } | Event::Nat { .. } => Vec::new(),
        Event::Joined { room, members } => vec![format!("* joined #{} ({members} other members)", sanitize(room))],
        Event::Left { room } => vec![format!("* left #{}", sanitize(room))],
        Event::Member {
            room,
            peer_id,
            name,
            change,
        } => vec![format!(
            "* {}~{} {} #{}",
            sanitize(name),
            peer_id.get(..SHOWN_ID_LEN).unwrap_or(peer_id),
            match change {
                MemberChange::Joined => "joined",
                MemberChange::Left => "left",
            },
            sanitize(room)
        )],
        Event::Switched {
            peer_id: Some(peer_id),
            name,
            ..
        } => vec![format!(
            "* talking privately to {}~{}; /switch alone goes back to the room",
            sanitize(name.as_deref().unwrap_or("")),
            peer_id.get(..SHOWN_ID_LEN).unwrap_or(peer_id),
        )],
        Event::Switched { room, .. } => vec![match room {
            Some(room) => format!("* back to #{}", sanitize(room)),
            None => "* back to the room: in none yet; /join one".to_string(),
        }],
        Event::Trusted {
            addr,
            peer_id,
            fingerprint,
        } => vec![format!(
            "* {} presents a key never seen there: trusted on first use, fingerprint {fingerprint} (`punchgate id` there prints {peer_id}); a different key at this address will be refused",
            sanitize(addr)
        )],
        Event::Peers { peers } if peers.is_empty() => vec!["no peers known yet".into()],
        Event::Peers { peers } => {
            let mut lines: Vec<String> = peers.iter().map(peer_line).collect();
            let count = |status| peers.iter().filter(|p| p.status == status).count();
            let (connected, through) = (count(PeerStatus::Connected), count(PeerStatus::InRoom));
            let mut summary = format!("  {connected} connected");
            if through > 0 {
                summary.push_str(&format!(", {through} reached through the room"));
            }
            lines.push(summary);
            lines
        }
        Event::Bench { kind, peer, report } => render_bench(kind, peer, report),
        Event::Netcheck {
            public,
            second_port_view,
            mapping,
            filtering,
            hairpin,
            rtt_ms,
            verdict,
            ipv6,
            ipv6_addrs,
            port_mapping,
            mapped_addr,
            port_mapping_note,
            ..
        } => vec![
            format!("public address:  {public}"),
            format!(
                "mapping:         {mapping} (second tracker port sees {})",
                second_port_view.map(|a| a.to_string()).unwrap_or_else(|| "nothing".into())
            ),
            format!("filtering:       {filtering}"),
            format!("hairpinning:     {}", if *hairpin { "yes" } else { "no (or not detectable)" }),
            format!("tracker RTT:     {rtt_ms:.1} ms"),
            format!("verdict:         {verdict}"),
            format!("ipv6:            {}", match ipv6.as_str() {
                "tracker" => "reachable: the tracker was reached over IPv6".to_string(),
                "global" => format!(
                    "global addresses {} (no NAT; tracker reached over IPv4)",
                    ipv6_addrs.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
                ),
                _ => "none: IPv4 only".to_string(),
            }),
            format!("port mapping:    {}", match (port_mapping.as_str(), mapped_addr) {
                ("off", _) => "off (--no-port-mapping)".to_string(),
                (protocol, Some(addr)) => format!("the router mapped {addr} ({protocol})"),
                (_, None) => format!(
                    "none{}",
                    port_mapping_note.as_deref().map(|n| format!(": {}", sanitize(n))).unwrap_or_default()
                ),
            }),
        ],
        Event::PortMapping { status, protocol, external, lifetime_s } => match (external, protocol) {
            (Some(addr), Some(protocol)) if status == "mapped" => vec![format!(
                "* the router mapped {addr} for this node ({protocol}, lease {}s): peers behind any NAT can reach it there",
                lifetime_s.unwrap_or(0)
            )],
            (Some(_), _) => Vec::new(),
            _ if status == "lost" => vec!["* the router's port mapping ran out; asking again".into()],
            _ => Vec::new(),
        },
        Event::Gates { gates } if gates.is_empty() => vec!["no connections".into()],
        Event::Gates { gates } => gates
            .iter()
            .map(|g| {
                format!(
                    "  {:<16} {}  {:<6} {:<21} rtt {:>6.1} ms  in {:>10} B  out {:>10} B  up {}s",
                    sanitize(&g.name),
                    short(&g.peer_id),
                    g.path,
                    g.remote,
                    g.rtt_ms,
                    g.bytes_in,
                    g.bytes_out,
                    g.age_secs
                )
            })
            .collect(),
        Event::Rooms { rooms } if rooms.is_empty() => vec!["in no room; /join one".into()],
        Event::Rooms { rooms } => vec![format!(
            "rooms: {} (current: #{})",
            rooms.iter().map(|r| format!("#{}", sanitize(r))).collect::<Vec<_>>().join(" "),
            rooms.last().map(|r| sanitize(r)).unwrap_or_default()
        )],
        Event::Help { commands } => commands
            .iter()
            .map(|line| format!("  {:<16} {}", line.usage, line.about))
            .collect(),
        Event::FileOffered {
            from,
            from_name,
            room,
            hash,
            name,
            bytes,
            files,
        } => vec![format!(
            "* {}~{} offers {} ({}, {files} file{}) in #{}: /get {}",
            sanitize(from_name),
            from.get(..SHOWN_ID_LEN).unwrap_or(from),
            sanitize(name),
            size(*bytes),
            if *files == 1 { "" } else { "s" },
            sanitize(room),
            hash.get(..10).unwrap_or(hash)
        )],
        Event::Files { files } if files.is_empty() => vec!["nothing offered yet; /send PATH offers something".into()],
        Event::Files { files } => files
            .iter()
            .map(|f| {
                format!(
                    "  {}  {:<24} {:>10}  {:>5} file{}  #{}  from {}",
                    f.hash.get(..10).unwrap_or(&f.hash),
                    sanitize(&f.name),
                    size(f.bytes),
                    f.files,
                    if f.files == 1 { " " } else { "s" },
                    sanitize(&f.room),
                    f.providers.iter().map(|p| sanitize(p)).collect::<Vec<_>>().join(", ")
                )
            })
            .collect(),
        Event::Ticket { ticket, name, bytes, files, .. } => vec![
            format!("serving {} ({}, {files} file{}); Ctrl-C stops", sanitize(name), size(*bytes), if *files == 1 { "" } else { "s" }),
            "on the other computer run:".into(),
            format!("  punchgate get {ticket}"),
        ],
        Event::UploadProgress { peer_name, name, bytes, total, .. } => {
            let percent = if *total == 0 { 100.0 } else { *bytes as f64 * 100.0 / *total as f64 };
            vec![format!(
                "* {} to {} {} {percent:.0}% ({} of {})",
                sanitize(name),
                sanitize(peer_name),
                text_bar(percent),
                size(*bytes),
                size(*total),
            )]
        }
        Event::TransferProgress { name, bytes, total, files_done, files, bytes_per_s, .. } => {
            let percent = if *total == 0 { 100.0 } else { *bytes as f64 * 100.0 / *total as f64 };
            let eta = if *bytes_per_s > 0.0 && bytes < total {
                format!(", {:.0} s left", (total - bytes) as f64 / bytes_per_s)
            } else {
                String::new()
            };
            let of_files = if *files > 1 {
                format!("{files_done} of {files} files, ")
            } else {
                String::new()
            };
            vec![format!(
                "* {} {} {percent:.0}% ({of_files}{} of {}, {}/s{eta})",
                sanitize(name),
                text_bar(percent),
                size(*bytes),
                size(*total),
                size(*bytes_per_s as u64)
            )]
        }
        Event::TransferSource { name, peer_id, peer_name, state, reason, sources, bytes, total, .. } => {
            let who = format!("{}~{}", sanitize(peer_name), peer_id.get(..SHOWN_ID_LEN).unwrap_or(peer_id));
            let why = reason.as_deref().map(|r| format!(" ({})", sanitize(r))).unwrap_or_default();
            vec![match (state, sources) {
                (SourceChange::Lost, 0) => format!(
                    "! the source {who} is gone{why}; waiting for another holder of {} ({} of {} verified and kept; Ctrl-C stops, the same get resumes)",
                    sanitize(name),
                    size(*bytes),
                    size(*total)
                ),
                (SourceChange::Lost, left) => format!(
                    "* the source {who} is gone{why}; carrying on with {left} other source{}",
                    if *left == 1 { "" } else { "s" }
                ),
                (SourceChange::Added, _) => format!("* {who} joins as a source of {}", sanitize(name)),
            }]
        }
        Event::TransferDone { path, report } if report.already_complete => vec![format!(
            "* {} is already complete ({}): every byte verified, nothing fetched",
            sanitize(path),
            size(report.bytes),
        )],
        Event::TransferDone { path, report } => vec![format!(
            "* got {} ({}) in {:.1} s: {} chunks fetched from {}, {} kept from before; every byte verified",
            sanitize(path),
            size(report.bytes),
            report.secs,
            report.chunks_fetched,
            report
                .sources
                .iter()
                .filter(|s| s.chunks > 0)
                .map(|s| format!("{} ({})", sanitize(&s.name), s.chunks))
                .collect::<Vec<_>>()
                .join(", "),
            report.chunks_resumed
        )],
        Event::Info { message } => vec![format!("* {}", sanitize(message))],
        Event::Web { url } => vec![format!("* the web page: {}", sanitize(url))],
        Event::Error { message } => vec![format!("! {}", sanitize(message))],
    }
}

/// A progress bar in plain text, for lines printed above the chat prompt
/// (a redrawn bar would garble it): `[=========>          ]`.
fn text_bar(percent: f64) -> String {
    const WIDTH: usize = 20;
    let filled = ((percent.clamp(0.0, 100.0) / 100.0) * WIDTH as f64).round() as usize;
    let head = usize::from(filled < WIDTH && filled > 0);
    format!(
        "[{}{}{}]",
        "=".repeat(filled - head),
        ">".repeat(head),
        " ".repeat(WIDTH - filled)
    )
}

#[cfg(test)]
#[path = "render_tests.rs"]
mod tests;
