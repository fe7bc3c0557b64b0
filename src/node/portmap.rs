//! Drives router port mapping for the node ([`crate::portmap`]): starts the
//! client on the gate socket's port, tells every tracker the mapped address
//! (and that it is gone), reports each change as a `port_mapping` event,
//! answers netcheck, and releases the mapping at shutdown.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use tokio::sync::mpsc;

use super::manager::TrackerIx;
use super::{Event, Node};
use crate::portmap::machine::Event as MapEvent;
use crate::portmap::{PortMapClient, Status};
use crate::protocol::TrackerRequestBody;
use crate::tracker::{TrackerError, TrackerSession};

/// Lease asked of the router, in seconds (it may grant less).
const LIFETIME: u32 = 7200;
/// Longest shutdown waits for the router to confirm the release.
const RELEASE_BOUND: Duration = Duration::from_secs(2);
/// Longest netcheck waits for the first round to end (PCP and NAT-PMP
/// 1.75 s each, then UPnP's search and SOAP calls).
const NETCHECK_WAIT: Duration = Duration::from_secs(8);

/// The node's port-mapping state.
#[derive(Default)]
pub(super) struct PortMapSlot {
    state: Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    client: Option<Arc<PortMapClient>>,
    mapped: Option<SocketAddr>,
    /// Why there is no client, when it could not start.
    unavailable: Option<String>,
    /// Trackers whose session ended on a `PortMapped` request (older than
    /// it): never sent one again, lest each new session end the same way.
    refused: std::collections::HashSet<TrackerIx>,
}

impl PortMapSlot {
    fn lock(&self) -> std::sync::MutexGuard<'_, SlotState> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The mapped address trackers should offer, if the router granted one.
    pub(super) fn mapped(&self) -> Option<SocketAddr> {
        self.lock().mapped
    }
}

impl Node {
    /// Starts port mapping in the background, unless the node is bound to
    /// loopback (nothing outside can reach it) or to IPv6 only.
    pub(super) fn start_port_mapping(&self) {
        let Ok(bound) = self.local_addr() else { return };
        if bound.ip().is_loopback() {
            return;
        }
        if let std::net::IpAddr::V6(v6) = bound.ip() {
            if !v6.is_unspecified() && v6.to_ipv4_mapped().is_none() {
                return;
            }
        }
        let (events_tx, mut events) = mpsc::unbounded_channel();
        match PortMapClient::start(bound.port(), LIFETIME, events_tx) {
            Ok(client) => self.inner.portmap.lock().client = Some(Arc::new(client)),
            Err(reason) => {
                tracing::debug!(%reason, "no port mapping");
                self.inner.portmap.lock().unavailable = Some(reason);
                return;
            }
        }
        let node = self.clone();
        self.inner.spawn(async move {
            while let Some(event) = events.recv().await {
                node.port_mapping_changed(event).await;
            }
        });
    }

    async fn port_mapping_changed(&self, event: MapEvent) {
        let (status, mapping) = match event {
            MapEvent::Mapped(mapping) => ("mapped", Some(mapping)),
            MapEvent::Renewed(mapping) => ("renewed", Some(mapping)),
            MapEvent::Lost => ("lost", None),
            MapEvent::Unavailable => ("unavailable", None),
            MapEvent::Done => ("released", None),
        };
        let external = mapping.map(|m| SocketAddr::V4(m.external));
        let changed = {
            let mut state = self.inner.portmap.lock();
            let changed = state.mapped != external;
            state.mapped = external;
            changed
        };
        // The trackers first: once the event is out, peers introduced from
        // now on are given the mapped address.
        if changed && status != "released" {
            for (tracker, session) in self.inner.trackers.sessions() {
                self.tell_tracker(tracker, &session, external).await;
            }
        }
        self.emit(Event::PortMapping {
            status: status.to_string(),
            protocol: mapping.map(|m| m.protocol.name().to_string()),
            external,
            lifetime_s: mapping.map(|m| m.lifetime.as_secs()),
        });
    }

    /// Tells `tracker` where the router mapped the gate socket (`None`: no
    /// longer), unless it ended a session over that before.
    pub(super) async fn tell_tracker(
        &self,
        tracker: TrackerIx,
        session: &TrackerSession,
        addr: Option<SocketAddr>,
    ) {
        if self.inner.portmap.lock().refused.contains(&tracker) {
            return;
        }
        let request = TrackerRequestBody::PortMapped { addr };
        match session.request(request).await {
            Ok(_) => {}
            Err(error @ TrackerError::Lost(_)) => {
                tracing::debug!(%error, "the tracker's session ended on the mapped address");
                self.inner.portmap.lock().refused.insert(tracker);
            }
            Err(error) => {
                tracing::debug!(%error, "the tracker did not take the mapped address");
            }
        }
    }

    /// Releases the mapping (bounded by [`RELEASE_BOUND`]).
    pub(super) async fn stop_port_mapping(&self) {
        let client = self.inner.portmap.lock().client.clone();
        if let Some(client) = client {
            client.shutdown(RELEASE_BOUND).await;
        }
    }

    /// For netcheck: which protocol the router answered and the mapped
    /// address; `"none"` when none answered, `"off"` when port mapping is
    /// off. Waits for the first round to end (at most [`NETCHECK_WAIT`]).
    pub(super) async fn port_mapping_report(&self) -> (String, Option<SocketAddr>, Option<String>) {
        if !self.inner.config.port_mapping {
            return ("off".into(), None, None);
        }
        let (client, unavailable) = {
            let state = self.inner.portmap.lock();
            (state.client.clone(), state.unavailable.clone())
        };
        let Some(client) = client else {
            return ("none".into(), None, unavailable);
        };
        let mut status = client.status();
        let settled = tokio::time::timeout(
            NETCHECK_WAIT,
            status.wait_for(|s| !matches!(s, Status::Asking)),
        )
        .await
        .is_ok();
        let current = *status.borrow();
        match (settled, current) {
            (_, Status::Mapped(mapping)) => (
                mapping.protocol.name().to_string(),
                Some(SocketAddr::V4(mapping.external)),
                None,
            ),
            (false, _) => (
                "none".into(),
                None,
                Some("the router is still being asked".into()),
            ),
            _ => (
                "none".into(),
                None,
                Some("no PCP, NAT-PMP or UPnP-IGD server answered on the gateway".into()),
            ),
        }
    }
}
