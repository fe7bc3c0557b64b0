//! The async shell around [`PortMapper`]: one task that owns a UDP socket
//! connected to the gateway's port 5351 (so only the gateway's datagrams
//! reach it), runs UPnP operations one at a time, sleeps until the
//! machine's next timer, and reports what changed. [`PortMapClient`] is
//! its handle: the latest [`Status`], the events, and a shutdown that waits
//! (bounded) for the release.

use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use std::sync::Arc;
use std::time::Duration;

use tokio::net::UdpSocket;
use tokio::sync::{mpsc, watch, Mutex};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::machine::{self, Config, Event, PortMapper, Transmit, UpnpOutcome};
use super::upnp::Igd;
use super::wire::{MAX_RESPONSE, SERVER_PORT};
use super::{gateway, Mapping};

/// Where port mapping stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Status {
    /// Still asking (the first round has not ended).
    Asking,
    /// The router granted this mapping.
    Mapped(Mapping),
    /// No protocol answered in the last round (or there is no gateway).
    Unavailable,
    /// Shut down.
    Stopped,
}

/// A running port-mapping client.
pub struct PortMapClient {
    status: watch::Receiver<Status>,
    stop: CancellationToken,
    finished: watch::Receiver<bool>,
}

fn random_seed() -> [u8; 12] {
    let mut seed = [0u8; 12];
    let _ = ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut seed);
    seed
}

impl PortMapClient {
    /// Starts asking the default gateway for a mapping of UDP
    /// `internal_port`, requesting leases of `lifetime` seconds. Events go
    /// to `events`. Without an IPv4 default route it says why. Needs a
    /// tokio runtime (its task runs there).
    pub fn start(
        internal_port: u16,
        lifetime: u32,
        events: mpsc::UnboundedSender<Event>,
    ) -> Result<PortMapClient, String> {
        let gateway = gateway::default_gateway()
            .ok_or("no IPv4 default route: no router to ask for a port mapping")?;
        let socket = std::net::UdpSocket::bind(SocketAddr::from((Ipv4Addr::UNSPECIFIED, 0)))
            .map_err(|e| e.to_string())?;
        socket
            .connect(SocketAddrV4::new(gateway, SERVER_PORT))
            .map_err(|e| format!("cannot reach the gateway {gateway}: {e}"))?;
        socket.set_nonblocking(true).map_err(|e| e.to_string())?;
        let socket = UdpSocket::from_std(socket).map_err(|e| e.to_string())?;
        let client = match socket.local_addr().map_err(|e| e.to_string())? {
            SocketAddr::V4(v4) => *v4.ip(),
            SocketAddr::V6(_) => return Err("the gateway socket is not IPv4".into()),
        };
        let config = Config {
            internal_port,
            client,
            lifetime,
            seed: random_seed(),
        };
        let (status_tx, status) = watch::channel(Status::Asking);
        let (finished_tx, finished) = watch::channel(false);
        let stop = CancellationToken::new();
        let task_stop = stop.clone();
        tracing::debug!(%gateway, %client, internal_port, "asking the router for a port mapping");
        tokio::spawn(async move {
            let driver = Driver {
                socket,
                gateway,
                client,
                internal_port,
                igd: Arc::new(Mutex::new(None)),
                status: status_tx,
                events,
            };
            driver.run(config, task_stop).await;
            let _ = finished_tx.send(true);
        });
        Ok(PortMapClient {
            status,
            stop,
            finished,
        })
    }

    /// The latest status; `changed()` on it wakes on every change.
    pub fn status(&self) -> watch::Receiver<Status> {
        self.status.clone()
    }

    /// Releases the mapping and stops, waiting at most `bound`.
    pub async fn shutdown(&self, bound: Duration) {
        self.stop.cancel();
        let mut finished = self.finished.clone();
        let _ = tokio::time::timeout(bound, finished.wait_for(|done| *done)).await;
    }
}

impl Drop for PortMapClient {
    /// A client dropped without [`PortMapClient::shutdown`] still releases
    /// its mapping, in the background.
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

struct Driver {
    socket: UdpSocket,
    gateway: Ipv4Addr,
    client: Ipv4Addr,
    internal_port: u16,
    /// The gateway's IGD once found (searched again after a failure).
    igd: Arc<Mutex<Option<Igd>>>,
    status: watch::Sender<Status>,
    events: mpsc::UnboundedSender<Event>,
}

impl Driver {
    async fn run(self, config: Config, stop: CancellationToken) {
        let mut mapper = PortMapper::new(config, Instant::now().into_std());
        let (upnp_tx, mut upnp_rx) = mpsc::unbounded_channel();
        let mut buf = vec![0u8; MAX_RESPONSE];
        let mut stopping = false;
        loop {
            while let Some(transmit) = mapper.poll_transmit() {
                self.transmit(transmit, &upnp_tx).await;
            }
            while let Some(event) = mapper.poll_event() {
                let status = match &event {
                    Event::Mapped(mapping) | Event::Renewed(mapping) => Status::Mapped(*mapping),
                    Event::Lost => Status::Asking,
                    Event::Unavailable => Status::Unavailable,
                    Event::Done => Status::Stopped,
                };
                self.status.send_replace(status);
                let done = event == Event::Done;
                let _ = self.events.send(event);
                if done {
                    return;
                }
            }
            let wake = mapper.poll_timeout().map(Instant::from_std);
            let sleep = crate::wake::until(wake);
            tokio::select! {
                () = sleep => mapper.handle_timeout(Instant::now().into_std()),
                received = self.socket.recv(&mut buf) => {
                    // An ICMP error (nothing listens on 5351) is an error
                    // here; the machine's timers handle the silence.
                    if let Ok(len) = received {
                        mapper.handle_datagram(Instant::now().into_std(), &buf[..len]);
                    }
                }
                Some((op, outcome)) = upnp_rx.recv() => {
                    mapper.handle_upnp(Instant::now().into_std(), op, outcome);
                }
                () = stop.cancelled(), if !stopping => {
                    stopping = true;
                    mapper.handle_shutdown(Instant::now().into_std());
                }
            }
        }
    }

    async fn transmit(
        &self,
        transmit: Transmit,
        results: &mpsc::UnboundedSender<(u64, UpnpOutcome)>,
    ) {
        // `lease` None: delete the mapping.
        let (op, external_port, lease) = match transmit {
            Transmit::Datagram(bytes) => {
                if let Err(error) = self.socket.send(&bytes).await {
                    tracing::debug!(%error, "cannot send to the gateway's port {SERVER_PORT}");
                }
                return;
            }
            Transmit::UpnpMap {
                op,
                external_port,
                lease,
            } => (op, external_port, Some(lease)),
            Transmit::UpnpUnmap { op, external_port } => (op, external_port, None),
        };
        let (igd, gateway, client, internal_port) = (
            self.igd.clone(),
            self.gateway,
            self.client,
            self.internal_port,
        );
        let results = results.clone();
        tokio::spawn(async move {
            let work = async {
                let mut cached = igd.lock().await;
                let found = match cached.clone() {
                    Some(found) => found,
                    None => match Igd::find(gateway, client).await {
                        Ok(found) => {
                            *cached = Some(found.clone());
                            found
                        }
                        Err(error) => return UpnpOutcome::Failed(error),
                    },
                };
                let outcome = match lease {
                    Some(lease) => found.map(client, internal_port, external_port, lease).await,
                    None => found.unmap(external_port).await,
                };
                if matches!(outcome, UpnpOutcome::Failed(_)) {
                    // Search again next time: the router may have changed.
                    *cached = None;
                }
                outcome
            };
            let outcome = tokio::time::timeout(machine::UPNP_OP_TIMEOUT, work)
                .await
                .unwrap_or_else(|_| UpnpOutcome::Failed("timed out".into()));
            if let UpnpOutcome::Failed(reason) = &outcome {
                tracing::debug!(%reason, "UPnP port mapping");
            }
            let _ = results.send((op, outcome));
        });
    }
}
