//! netcheck: what a user needs to know when connecting fails. Measured from
//! the gate socket, so it describes the NAT mapping punches will use:
//!
//! 1. **Filtering**: the tracker sends a probe from a second port this node
//!    never contacted. If it gets in, the NAT filters endpoint-independently
//!    or by address only; if not, only replies get in.
//! 2. **Mapping**: the node asks that second port which address it sees.
//!    The same address as the tracker's main port sees means the mapping is
//!    endpoint-independent; another means a fresh mapping per destination
//!    (a symmetric NAT).
//! 3. **Hairpinning**: a probe to the node's own public address comes back
//!    only if the NAT hairpins (or there is no NAT).
//!
//! 4. **IPv6**: the node's global IPv6 addresses, and whether the tracker
//!    was reached over IPv6. Those addresses have no NAT in front of them,
//!    only (at most) a stateful firewall that a punch opens.
//! 5. **Port mapping**: which protocol the router answered (PCP, NAT-PMP,
//!    UPnP-IGD) and the address it mapped, or that none answered.
//!
//! Proving that a probe does *not* arrive takes a bounded wait; these are
//! the only waits of that kind outside tests.

use std::net::SocketAddr;
use std::time::Duration;

use tokio::sync::mpsc;

use super::events::{millis, Event};
use super::{Node, NodeError};
use crate::protocol::{ProbeMessage, TrackerRequestBody, TrackerResponse};
use crate::tracker::TrackerError;

/// How long an expected probe may take to arrive.
const PROBE_WAIT: Duration = Duration::from_millis(800);
/// Reflection requests sent to the second port before giving up.
const REFLECT_TRIES: u32 = 3;

type Probes = mpsc::UnboundedReceiver<(SocketAddr, ProbeMessage)>;

/// Waits up to [`PROBE_WAIT`] for a probe `pick` accepts.
async fn wait_probe<T>(
    probes: &mut Probes,
    mut pick: impl FnMut(SocketAddr, &ProbeMessage) -> Option<T>,
) -> Option<T> {
    let wait = async {
        while let Some((from, message)) = probes.recv().await {
            if let Some(found) = pick(from, &message) {
                return Some(found);
            }
        }
        None
    };
    tokio::time::timeout(PROBE_WAIT, wait).await.ok().flatten()
}

pub(super) fn random_nonce() -> u64 {
    let mut bytes = [0u8; 8];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes);
    u64::from_le_bytes(bytes)
}

impl Node {
    /// Runs the checks and reports them as an [`Event::Netcheck`].
    pub async fn netcheck(&self) -> Result<Event, NodeError> {
        let tracker = self
            .inner
            .trackers
            .first_session()
            .ok_or(NodeError::NoTracker)?;
        let (sender, mut probes) = mpsc::unbounded_channel();
        self.inner.probe_routes().netcheck = Some(sender);
        let result = self.run_netcheck(&tracker, &mut probes).await;
        self.inner.probe_routes().netcheck = None;
        result
    }

    async fn run_netcheck(
        &self,
        tracker: &crate::tracker::TrackerSession,
        probes: &mut Probes,
    ) -> Result<Event, NodeError> {
        let public = tracker.reflexive();
        let nonce = random_nonce();
        let send = |to: SocketAddr, message: ProbeMessage| async move {
            let payload = message
                .encode()
                .map_err(|e| NodeError::Invalid(e.to_string()))?;
            self.inner
                .socket
                .send_probe(to, &payload)
                .await
                .map_err(|e| NodeError::Invalid(format!("cannot send a probe to {to}: {e}")))
        };

        let aux_port = match tracker
            .request(TrackerRequestBody::Netcheck { nonce })
            .await?
        {
            TrackerResponse::NetcheckStarted { aux_port } => aux_port,
            _ => return Err(TrackerError::UnexpectedResponse.into()),
        };
        let unsolicited_admitted = wait_probe(probes, |_, m| {
            (*m == ProbeMessage::Unsolicited { nonce }).then_some(())
        })
        .await
        .is_some();

        let aux = SocketAddr::new(tracker.tracker_addr().ip(), aux_port);
        let mut second_view = None;
        for _ in 0..REFLECT_TRIES {
            send(aux, ProbeMessage::Reflect { nonce }).await?;
            second_view = wait_probe(probes, |_, m| match m {
                ProbeMessage::Reflected { nonce: got, seen } if *got == nonce => Some(*seen),
                _ => None,
            })
            .await;
            if second_view.is_some() {
                break;
            }
        }
        let mapping = match second_view {
            Some(seen) if seen == public => "endpoint-independent",
            Some(_) => "endpoint-dependent",
            None => "unknown",
        };

        send(public, ProbeMessage::Hairpin { nonce }).await?;
        let hairpin = wait_probe(probes, |_, m| {
            (*m == ProbeMessage::Hairpin { nonce }).then_some(())
        })
        .await
        .is_some();

        let filtering = if unsolicited_admitted {
            "endpoint-independent or address-dependent"
        } else {
            "address-and-port-dependent"
        };
        let verdict = match (mapping, unsolicited_admitted) {
            ("unknown", _) => "the tracker's second port did not answer: UDP may be blocked or rate-limited",
            ("endpoint-dependent", _) => {
                "symmetric NAT: direct connections work with peers whose NAT admits new ports, and by birthday punching with port-restricted ones; another symmetric NAT needs the relay"
            }
            (_, true) => "easy NAT: direct connections should work with almost any peer",
            (_, false) => "port-restricted NAT: direct connections work; against a symmetric NAT by birthday punching",
        };
        let ipv6_addrs = self
            .local_addr()
            .map(super::global_ipv6_candidates)
            .unwrap_or_default();
        let (port_mapping, mapped_addr, port_mapping_note) = self.port_mapping_report().await;
        let ipv6 = if public.is_ipv6() {
            "tracker"
        } else if !ipv6_addrs.is_empty() {
            "global"
        } else {
            "none"
        };
        Ok(Event::Netcheck {
            public,
            second_port_view: second_view,
            mapping: mapping.to_string(),
            filtering: filtering.to_string(),
            unsolicited_admitted,
            hairpin,
            rtt_ms: millis(tracker.rtt()),
            verdict: verdict.to_string(),
            ipv6_addrs,
            ipv6: ipv6.to_string(),
            port_mapping,
            mapped_addr,
            port_mapping_note,
        })
    }
}
