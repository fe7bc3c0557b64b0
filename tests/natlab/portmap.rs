//! Router port mapping (`src/portmap`) against a real server: miniupnpd
//! (NAT-PMP, PCP, UPnP-IGD) on a lab router. A pair the lab relays without
//! it (a symmetric NAT against a symmetric or port-restricted one) connects
//! direct over the mapped port; `--no-port-mapping` leaves it relayed; the
//! mapping is renewed and released at shutdown; netcheck names the protocol.

use std::net::SocketAddr;
use std::time::Instant;

use serde_json::Value;

use super::common::process::Proc;
use super::lab::portmap_server::{self, PortMapServer, ServerOptions};
use super::lab::{Lab, Nat, Site, HOST_PORT};
use super::{chat_once, lab_or_skip, start_chat, start_tracker};

/// A lab with miniupnpd available, or the reason it is skipped (a failure
/// under CI=true, as every lab test).
fn portmap_lab_or_skip(test: &str) -> Option<Lab> {
    let lab = lab_or_skip(test)?;
    match portmap_server::unavailable() {
        Some(reason) if std::env::var("CI").as_deref() == Ok("true") => {
            panic!("{test} cannot run in CI: {reason}")
        }
        Some(reason) => {
            eprintln!("SKIPPED {test}: {reason}");
            None
        }
        None => Some(lab),
    }
}

fn addr_of(event: &Value, field: &str) -> SocketAddr {
    event[field]
        .as_str()
        .unwrap_or_else(|| panic!("no {field}: {event}"))
        .parse()
        .unwrap()
}

/// Waits for the node's mapping, checks it is on the router's public
/// address, and returns it.
fn mapped(node: &Proc, site: &Site) -> SocketAddr {
    let event = node.expect("port_mapping", |e| e["status"] == "mapped");
    let external = addr_of(&event, "external");
    assert_eq!(
        external.ip(),
        std::net::IpAddr::from(site.public_ip),
        "{event}"
    );
    external
}

/// Site 1 (`mapped_nat`, its router running the server) and site 2
/// (`other`); `dialer_is_mapped` picks which host joins last and dials.
/// Returns the dialer's `connected` event and the server.
fn pair_with_mapping(
    lab: &mut Lab,
    mapped_nat: Nat,
    other: Nat,
    dialer_is_mapped: bool,
    extra: &[&str],
) -> (Value, SocketAddr, PortMapServer) {
    let mapped_site = lab.add_site(1, mapped_nat, 1, false);
    let other_site = lab.add_site(2, other, 1, false);
    let server = lab.run_port_mapping_server(&mapped_site, ServerOptions::default());
    let (_tracker, target) = start_tracker(lab);
    let (first_site, second_site) = if dialer_is_mapped {
        (&other_site, &mapped_site)
    } else {
        (&mapped_site, &other_site)
    };
    let (mut first, first_id) = start_chat(&first_site.hosts[0], "first", &target, extra);
    let mut external = None;
    if !dialer_is_mapped && !extra.contains(&"--no-port-mapping") {
        external = Some(mapped(&first, &mapped_site));
    }
    let (mut second, second_id) = if dialer_is_mapped {
        // The mapped side dials: it joins the room once its mapping is in.
        let bind = format!("0.0.0.0:{HOST_PORT}");
        let args = [
            "chat",
            "--tracker",
            &target,
            "--name",
            "second",
            "--room",
            "hall",
            "--bind",
            &bind,
            "--punch-timeout",
            "4",
        ];
        let mut proc = Proc::start_in(Some(&second_site.hosts[0].netns), &args);
        let id = proc.expect("ready", |_| true)["peer_id"]
            .as_str()
            .unwrap()
            .to_string();
        external = Some(mapped(&proc, &mapped_site));
        proc.send("/join lab");
        (proc, id)
    } else {
        start_chat(&second_site.hosts[0], "second", &target, extra)
    };
    let started = Instant::now();
    let connected = second.expect("connected", |e| e["peer_id"] == first_id.as_str());
    let _ = first.expect("connected", |e| e["peer_id"] == second_id.as_str());
    chat_once(&mut second, &first, "over the mapped port");
    chat_once(&mut first, &second, "and back");
    eprintln!(
        "NATLAB | port mapping | {:?}{} x {:?}{} | {} | {:.0} ms from the dialer joining the room to connected",
        mapped_nat,
        if extra.contains(&"--no-port-mapping") { " (mapping off)" } else { " + miniupnpd" },
        other,
        if dialer_is_mapped { " (accepts)" } else { " (dials)" },
        connected["path"].as_str().unwrap_or("?"),
        started.elapsed().as_secs_f64() * 1000.0
    );
    let external = external.unwrap_or_else(|| SocketAddr::from((mapped_site.public_ip, 0)));
    (connected, external, server)
}

#[test]
fn symmetric_against_symmetric_connects_direct_over_the_mapped_port() {
    let Some(mut lab) = portmap_lab_or_skip("port mapping: symmetric x symmetric") else {
        return;
    };
    let (connected, external, _server) =
        pair_with_mapping(&mut lab, Nat::Symmetric, Nat::Symmetric, false, &[]);
    assert_eq!(connected["path"], "direct", "{connected}");
    assert_eq!(addr_of(&connected, "remote"), external, "{connected}");
}

#[test]
fn symmetric_against_port_restricted_connects_direct_when_the_mapped_side_dials() {
    let Some(mut lab) = portmap_lab_or_skip("port mapping: port-restricted x symmetric") else {
        return;
    };
    let (connected, _, _server) =
        pair_with_mapping(&mut lab, Nat::Symmetric, Nat::PortRestricted, true, &[]);
    assert_eq!(connected["path"], "direct", "{connected}");
    assert_eq!(
        addr_of(&connected, "remote").ip(),
        std::net::IpAddr::from(std::net::Ipv4Addr::new(198, 51, 100, 12)),
        "the port-restricted peer's NAT: {connected}"
    );
}

#[test]
fn with_no_port_mapping_the_symmetric_pair_stays_relayed() {
    let Some(mut lab) = portmap_lab_or_skip("port mapping off: symmetric x symmetric") else {
        return;
    };
    let (connected, _, server) = pair_with_mapping(
        &mut lab,
        Nat::Symmetric,
        Nat::Symmetric,
        false,
        &["--no-port-mapping"],
    );
    assert_eq!(connected["path"], "relay", "{connected}");
    assert!(server.mappings().is_empty(), "{:?}", server.mappings());
}

/// A node behind a router with `options` maps, then quits: the router's
/// mapping list is empty afterwards.
fn released_on_shutdown(options: ServerOptions, protocol: &str) {
    let Some(mut lab) = portmap_lab_or_skip(&format!("port mapping released ({protocol})")) else {
        return;
    };
    let site = lab.add_site(1, Nat::Symmetric, 1, false);
    let server = lab.run_port_mapping_server(&site, options);
    let (_tracker, target) = start_tracker(&lab);
    let (node, _) = start_chat(&site.hosts[0], "h1", &target, &[]);
    let event = node.expect("port_mapping", |e| e["status"] == "mapped");
    assert_eq!(event["protocol"], protocol, "{event}");
    let mappings = server.mappings();
    assert_eq!(mappings.len(), 1, "{mappings:?}");
    let external = addr_of(&event, "external");
    assert!(
        mappings[0].contains(&format!("dport {}", external.port())),
        "{mappings:?} vs {external}"
    );
    node.finish();
    assert_eq!(
        server.mappings(),
        Vec::<String>::new(),
        "released at shutdown; server log: {:?}",
        server.log()
    );
}

#[test]
fn the_mapping_is_released_on_shutdown_pcp() {
    released_on_shutdown(ServerOptions::default(), "pcp");
}

#[test]
fn the_mapping_is_released_on_shutdown_upnp() {
    let upnp_only = ServerOptions {
        natpmp_pcp: false,
        ..ServerOptions::default()
    };
    released_on_shutdown(upnp_only, "upnp");
}

#[test]
fn a_short_lease_is_renewed_and_the_mapping_kept() {
    let Some(mut lab) = portmap_lab_or_skip("port mapping renewal") else {
        return;
    };
    let site = lab.add_site(1, Nat::Symmetric, 1, false);
    let short = ServerOptions {
        max_lifetime: 2,
        ..ServerOptions::default()
    };
    let server = lab.run_port_mapping_server(&site, short);
    let (_tracker, target) = start_tracker(&lab);
    let (node, _) = start_chat(&site.hosts[0], "h1", &target, &[]);
    let first = node.expect("port_mapping", |e| e["status"] == "mapped");
    assert_eq!(first["lifetime_s"], 2, "the server's cap: {first}");
    // Renewed at half the lease, again and again: three renewals span
    // more than one whole lease.
    for _ in 0..3 {
        let renewed = node.expect("port_mapping", |e| e["status"] == "renewed");
        assert_eq!(renewed["external"], first["external"], "{renewed}");
    }
    assert_eq!(server.mappings().len(), 1, "{:?}", server.mappings());
    node.finish();
    assert!(server.mappings().is_empty(), "{:?}", server.mappings());
}

#[test]
fn netcheck_says_which_protocol_the_router_answered() {
    let Some(mut lab) = portmap_lab_or_skip("netcheck port mapping") else {
        return;
    };
    let pcp_site = lab.add_site(1, Nat::Symmetric, 1, false);
    let upnp_site = lab.add_site(2, Nat::PortRestricted, 1, false);
    let bare_site = lab.add_site(3, Nat::PortRestricted, 1, false);
    let _pcp = lab.run_port_mapping_server(&pcp_site, ServerOptions::default());
    let upnp_only = ServerOptions {
        natpmp_pcp: false,
        ..ServerOptions::default()
    };
    let _upnp = lab.run_port_mapping_server(&upnp_site, upnp_only);
    let (_tracker, target) = start_tracker(&lab);
    let bind = format!("0.0.0.0:{HOST_PORT}");
    for (site, expected) in [
        (&pcp_site, "pcp"),
        (&upnp_site, "upnp"),
        (&bare_site, "none"),
    ] {
        let check = Proc::start_in(
            Some(&site.hosts[0].netns),
            &["netcheck", "--tracker", &target, "--bind", &bind],
        );
        let report = check.expect("netcheck", |_| true);
        assert_eq!(report["port_mapping"], expected, "{report}");
        match expected {
            "none" => assert!(report["mapped_addr"].is_null(), "{report}"),
            _ => assert_eq!(
                addr_of(&report, "mapped_addr").ip(),
                std::net::IpAddr::from(site.public_ip),
                "{report}"
            ),
        }
        eprintln!(
            "NATLAB | netcheck | router with {expected} | port_mapping {} | mapped_addr {}",
            report["port_mapping"], report["mapped_addr"]
        );
    }
    let off = Proc::start_in(
        Some(&pcp_site.hosts[0].netns),
        &[
            "netcheck",
            "--tracker",
            &target,
            "--bind",
            &bind,
            "--no-port-mapping",
        ],
    );
    assert_eq!(off.expect("netcheck", |_| true)["port_mapping"], "off");
}
