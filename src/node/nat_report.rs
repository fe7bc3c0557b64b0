//! What a node learns of its own NAT as soon as a tracker session is up,
//! and tells that tracker (`ReportNat`), which hands it to the peers it is
//! introduced to: they decide on birthday punching with it
//! (`crate::birthday::side`). The same two checks as netcheck's mapping
//! and filtering (src/node/netcheck.rs), cut short: a probe that has not
//! come two round trips (at least 50 ms) after the tracker's answer is
//! taken as filtered. A wrong "filtered" only spends a birthday punch where the
//! ordinary one would have worked; a lost reflection leaves the mapping
//! unknown, and nothing is spent.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::mpsc;

use super::events::Event;
use super::manager::TrackerIx;
use super::netcheck::random_nonce;
use super::Node;
use crate::protocol::{
    NatFiltering, NatMapping, NatReport, ProbeMessage, TrackerRequestBody, TrackerResponse,
};
use crate::tracker::TrackerSession;

/// Reflection requests sent to the tracker's second port before giving up.
const REFLECT_TRIES: u32 = 3;
/// The least time given to each expected probe.
const MIN_WAIT: Duration = Duration::from_millis(50);
/// The most time given to each expected probe.
const MAX_WAIT: Duration = Duration::from_millis(800);

impl Node {
    /// Measures this node's NAT through `tracker`'s session, remembers it
    /// there and reports it to the tracker. Errors only leave it unknown.
    pub(super) async fn report_nat(self, tracker: TrackerIx) {
        let Some(session) = self.inner.trackers.session(tracker) else {
            return;
        };
        if !self.inner.config.nat_report {
            return;
        }
        let nonce = random_nonce();
        let (sender, mut probes) = mpsc::unbounded_channel();
        self.inner.probe_routes().nat_checks.insert(nonce, sender);
        let nat = self.measure_nat(&session, nonce, &mut probes).await;
        self.inner.probe_routes().nat_checks.remove(&nonce);
        tracing::debug!(tracker, ?nat, "this node's NAT");
        session.set_nat(nat);
        if nat != NatReport::default() {
            if let Err(error) = session.request(TrackerRequestBody::ReportNat { nat }).await {
                tracing::debug!(%error, "the tracker did not take the NAT report");
            }
        }
        // Once the tracker has it: from now on its introductions carry it.
        self.emit(Event::Nat {
            tracker,
            mapping: match nat.mapping {
                NatMapping::Unknown => "unknown",
                NatMapping::EndpointIndependent => "endpoint-independent",
                NatMapping::EndpointDependent => "endpoint-dependent",
            }
            .into(),
            filtering: match nat.filtering {
                NatFiltering::Unknown => "unknown",
                NatFiltering::Open => "open",
                NatFiltering::AddressAndPortDependent => "address-and-port-dependent",
            }
            .into(),
        });
    }

    async fn measure_nat(
        &self,
        session: &Arc<TrackerSession>,
        nonce: u64,
        probes: &mut mpsc::UnboundedReceiver<(SocketAddr, ProbeMessage)>,
    ) -> NatReport {
        let mut report = NatReport::default();
        let wait = (session.rtt() * 2).clamp(MIN_WAIT, MAX_WAIT);
        let Ok(TrackerResponse::NetcheckStarted { aux_port }) = session
            .request(TrackerRequestBody::Netcheck { nonce })
            .await
        else {
            return report;
        };
        let aux = SocketAddr::new(session.tracker_addr().ip(), aux_port);
        let Ok(reflect) = (ProbeMessage::Reflect { nonce }).encode() else {
            return report;
        };
        // Filtering first: the tracker sent its probe from the second port
        // before it answered, so it is here by now or within a wait, and
        // nothing of ours has gone to that port yet to open the NAT for it.
        let unsolicited = tokio::time::timeout(wait, async {
            while let Some((_, message)) = probes.recv().await {
                if message == (ProbeMessage::Unsolicited { nonce }) {
                    return true;
                }
            }
            false
        })
        .await
        .unwrap_or(false);
        let mut seen = None;
        'tries: for _ in 0..REFLECT_TRIES {
            if self.inner.socket.send_probe(aux, &reflect).await.is_err() {
                break;
            }
            let deadline = tokio::time::sleep(wait);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    _ = &mut deadline => break,
                    got = probes.recv() => match got {
                        Some((_, ProbeMessage::Reflected { nonce: n, seen: at })) if n == nonce => {
                            seen = Some(at);
                            break 'tries;
                        }
                        Some(_) => {}
                        None => break 'tries,
                    },
                }
            }
        }
        let public = session.reflexive();
        let Some(seen) = seen else {
            return report;
        };
        report.mapping = if seen == public {
            NatMapping::EndpointIndependent
        } else {
            NatMapping::EndpointDependent
        };
        report.second_port = seen.port();
        report.filtering = if unsolicited {
            NatFiltering::Open
        } else {
            NatFiltering::AddressAndPortDependent
        };
        report
    }
}
