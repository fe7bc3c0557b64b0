//! IPv4 and IPv6 together on loopback: a tracker listening on `[::]` serves
//! a node that reaches it over IPv6 and one that reaches it over IPv4, both
//! with dual-stack gate sockets; the tracker sees each at its plain address,
//! and the two connect directly and chat.

mod common;

use std::net::SocketAddr;

use common::*;
use punchgate::node::{Event, PathKind};
use punchgate::tracker::TrackerConfig;

#[tokio::test]
async fn a_dual_stack_tracker_serves_ipv4_and_ipv6_nodes_that_then_connect_directly() {
    let tracker = start_tracker_with(TrackerConfig::new("[::]:0".parse().unwrap()));
    let port = tracker.local_addr().port();
    let id = tracker.target().split_once('@').unwrap().0.to_string();
    let dual_stack = |name: &str, tracker_host: &str| {
        let mut config = config(name, None, "both");
        config.bind = "[::]:0".parse().unwrap();
        config.trackers = vec![format!("{id}@{tracker_host}:{port}").parse().unwrap()];
        config
    };
    let mut six = start_node(dual_stack("six", "[::1]")).await;
    let mut four = start_node(dual_stack("four", "127.0.0.1")).await;
    let path = |want: String| {
        move |e: &Event| match e {
            Event::Connected {
                peer_id,
                path,
                remote,
                ..
            } if *peer_id == want => Some((*path, *remote)),
            _ => None,
        }
    };
    let (at_four, remote_six) = four.sees("a connection to six", path(six.id())).await;
    let (at_six, remote_four) = six.sees("a connection to four", path(four.id())).await;
    assert_eq!((at_four, at_six), (PathKind::Direct, PathKind::Direct));
    // Whoever dialed, over IPv6 to six's [::1] or IPv4 to four's 127.0.0.1,
    // each sees the other at a loopback address in plain form, never
    // IPv4-mapped.
    for remote in [remote_six, remote_four] {
        assert!(remote.ip().is_loopback(), "{remote}");
        assert_eq!(punchgate::gate_socket::canonical(remote), remote);
    }
    six.node.say("over IPv6").await.unwrap();
    four.receives("over IPv6").await;
    four.node.say("over IPv4").await.unwrap();
    six.receives("over IPv4").await;
    let report = six.node.netcheck().await.unwrap();
    let Event::Netcheck { public, ipv6, .. } = report else {
        panic!("not a netcheck report: {report:?}");
    };
    assert!(matches!(public, SocketAddr::V6(_)), "{public}");
    assert_eq!(ipv6, "tracker");
    let report = four.node.netcheck().await.unwrap();
    let Event::Netcheck { public, .. } = report else {
        panic!("not a netcheck report: {report:?}");
    };
    assert_eq!(
        public.ip(),
        "127.0.0.1".parse::<std::net::IpAddr>().unwrap(),
        "plain, not ::ffff:127.0.0.1"
    );
}
