//! QUIC endpoints on a [`GateSocket`], their transport settings, and
//! addresses of the form `PEERID@host:port`.

use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use quinn::{Endpoint, EndpointConfig, TokioRuntime, TransportConfig};
use tokio::sync::mpsc;

use crate::congestion::Congestion;
use crate::gate_socket::{GateSocket, Probe, SocketBuffers};
use crate::identity::PeerId;
use crate::tls;
use crate::transfer::window;

/// Bytes a peer may send ahead on one stream. quinn 0.11 fixes it for the
/// life of a connection, so it is what the streams of a fetch (4 by
/// default) need at the largest connection window
/// ([`window::CEILING`]): 4 × 8 MiB, one BDP at 2 × BDP windows.
const STREAM_WINDOW: u32 = 8 << 20;
/// Bytes a peer may send ahead on one connection, all streams together, and
/// this side may have unacknowledged, until transfers size them to the
/// path ([`window::WindowSizer`]).
const CONNECTION_WINDOW: u64 = window::FLOOR;

/// Bidirectional streams a peer may have open toward a node at once, per
/// connection: control, chat, a sync or two, a proof per password room (at
/// most 16 rooms), and the manifest and chunk streams (4 per fetch by
/// default) of a few fetches. An opener beyond it waits until one closes.
pub const PEER_STREAMS: u32 = 32;
/// Bidirectional streams a node may have open toward its tracker: the
/// tracker stream and the relay stream, and one more, so that a stream the
/// protocol does not allow (a second relay stream, say) is answered with a
/// clear protocol error rather than a silent wait.
pub const TRACKER_STREAMS: u32 = 3;
/// Streams a tracker may open toward a node: none is defined.
pub const NO_STREAMS: u32 = 0;

/// Timing of a QUIC connection's liveness.
#[derive(Clone, Copy, Debug)]
pub struct Liveness {
    /// Send a keep-alive after this much silence. Default 3 s: well below
    /// the 30 s UDP mapping timeout of the most aggressive common NATs, and
    /// three keep-alives fit in the idle timeout, so one or two lost ones
    /// do not end a live connection.
    pub keep_alive: Duration,
    /// Declare the connection dead after this much silence. Default 10 s.
    /// QUIC restarts the idle timer when it sends the first ack-eliciting
    /// packet after a receive (a keep-alive), so a peer that was killed (or
    /// whose network vanished) is found gone within idle + keep-alive:
    /// 13 s, under the 15 s we promise; the tracker session as soon.
    pub idle_timeout: Duration,
}

impl Default for Liveness {
    fn default() -> Self {
        Self {
            keep_alive: Duration::from_secs(3),
            idle_timeout: Duration::from_secs(10),
        }
    }
}

/// Flow-control windows of a connection: how much the other side may send
/// ahead on one stream and on the whole connection, and how much this side
/// may have sent unacknowledged. Limits, not buffers: memory is taken only
/// as data waits, so they bound what one peer can make this side hold.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Windows {
    pub stream: u32,
    pub connection: u64,
}

/// The least window of a signalling connection: two largest relayed
/// packets in their frames, so the relay stream never stalls on one.
pub const MIN_SIGNALLING_WINDOW: u32 = 2 * (64 << 10) + 1024;

impl Windows {
    /// A node's connections, which carry files: a connection starts at
    /// 16 MiB (enough for ~1 Gbit/s at 60 ms, and a bound on what one peer
    /// can make this node buffer); a transfer grows it to 2 × the BDP it
    /// measures, up to 64 MiB (`transfer::window`). The connection window
    /// bounds what all streams together buffer; a stream's own is fixed,
    /// and large enough for its share of the largest.
    pub const BULK: Windows = Windows {
        stream: STREAM_WINDOW,
        connection: CONNECTION_WINDOW,
    };

    /// A tracker's connections, which carry requests, events and relayed
    /// packets: the relay stream's window is what one peer may send at
    /// once through the relay (`relay_burst`; it sends no more on average
    /// than its rate), and the connection's is twice that, room for the
    /// tracker stream beside it. Both at least [`MIN_SIGNALLING_WINDOW`].
    pub fn signalling(relay_burst: u32) -> Self {
        let stream = relay_burst.max(MIN_SIGNALLING_WINDOW);
        Self {
            stream,
            connection: 2 * u64::from(stream),
        }
    }
}

impl Liveness {
    /// Transport settings of a connection on which the other side may open
    /// at most `incoming_streams` bidirectional streams at once (and no
    /// unidirectional ones: the protocol defines none), with `congestion`
    /// and the windows of file transfer ([`Windows::BULK`]).
    pub fn transport_config(
        &self,
        incoming_streams: u32,
        congestion: Congestion,
    ) -> Arc<TransportConfig> {
        Arc::new(self.transport(incoming_streams, congestion, Windows::BULK))
    }

    /// Transport settings with chosen flow-control windows: a tracker's
    /// connections to nodes take [`Windows::signalling`]. (A tracker keeps
    /// its keep-alives: quinn restarts the timer at every packet received,
    /// so the node's and the tracker's take turns, one every interval in
    /// all, and a node whose own interval is longer than the tracker's idle
    /// timeout stays connected.)
    pub fn transport_config_with(
        &self,
        incoming_streams: u32,
        congestion: Congestion,
        windows: Windows,
    ) -> Arc<TransportConfig> {
        Arc::new(self.transport(incoming_streams, congestion, windows))
    }

    fn transport(
        &self,
        incoming_streams: u32,
        congestion: Congestion,
        windows: Windows,
    ) -> TransportConfig {
        let mut transport = TransportConfig::default();
        transport.max_concurrent_bidi_streams(quinn::VarInt::from_u32(incoming_streams));
        transport.max_concurrent_uni_streams(quinn::VarInt::from_u32(0));
        transport.congestion_controller_factory(congestion.factory());
        transport.stream_receive_window(quinn::VarInt::from_u32(windows.stream));
        transport.receive_window(
            quinn::VarInt::from_u64(windows.connection).unwrap_or(quinn::VarInt::MAX),
        );
        transport.send_window(windows.connection);
        transport.keep_alive_interval(Some(self.keep_alive));
        // An idle timeout beyond quinn's VarInt range is clamped to none.
        transport.max_idle_timeout(self.idle_timeout.try_into().ok());
        transport
    }
}

/// A bound QUIC endpoint with its gate socket and the socket's probe queue.
pub struct BoundEndpoint {
    pub endpoint: Endpoint,
    pub socket: Arc<GateSocket>,
    pub probes: mpsc::Receiver<Probe>,
}

/// Binds a gate socket on `addr` and a QUIC endpoint on it, accepting
/// connections with `server` if given. QUIC-bit greasing is off so probes can
/// share the socket.
pub fn bind(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<BoundEndpoint> {
    bind_with(addr, server, SocketBuffers::default())
}

/// [`bind`] with chosen socket buffer sizes.
pub fn bind_with(
    addr: SocketAddr,
    server: Option<quinn::ServerConfig>,
    buffers: SocketBuffers,
) -> std::io::Result<BoundEndpoint> {
    let (socket, probes) = GateSocket::bind_with(addr, buffers)?;
    on_gate_socket(socket, probes, server)
}

/// A QUIC endpoint on a UDP socket bound already, wrapped as a gate socket
/// (probes kept apart from QUIC; its relay unused).
pub fn on_socket(
    socket: std::net::UdpSocket,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<BoundEndpoint> {
    let (socket, probes) = GateSocket::from_std(socket, SocketBuffers::system_default())?;
    on_gate_socket(socket, probes, server)
}

fn on_gate_socket(
    socket: Arc<GateSocket>,
    probes: mpsc::Receiver<Probe>,
    server: Option<quinn::ServerConfig>,
) -> std::io::Result<BoundEndpoint> {
    let mut config = EndpointConfig::default();
    config.grease_quic_bit(false);
    let endpoint =
        Endpoint::new_with_abstract_socket(config, server, socket.clone(), Arc::new(TokioRuntime))?;
    Ok(BoundEndpoint {
        endpoint,
        socket,
        probes,
    })
}

/// Starts a handshake with the peer `expected` at `addr`; the client config
/// must be a pinned one ([`tls::CertifiedIdentity::pinned_client`]).
pub fn connect_pinned(
    endpoint: &Endpoint,
    config: quinn::ClientConfig,
    addr: SocketAddr,
    expected: &PeerId,
) -> Result<quinn::Connecting, quinn::ConnectError> {
    endpoint.connect_with(config, addr, &tls::server_name_for(expected))
}

#[derive(Debug, thiserror::Error)]
pub enum AddrError {
    #[error("expected PEERID@host:port, got {0:?}")]
    MissingPeerId(String),
    #[error(transparent)]
    PeerId(#[from] crate::identity::IdentityError),
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    #[error("{0} has no port: give host:port, e.g. {0}:7000")]
    NoPort(String),
}

/// `host` if it ends in a port (`host:port`, `[v6]:port`).
fn with_port(host: &str) -> Result<String, AddrError> {
    match host.rsplit_once(':') {
        Some((name, port)) if !name.is_empty() && port.parse::<u16>().is_ok() => {
            Ok(host.to_string())
        }
        _ => Err(AddrError::NoPort(host.to_string())),
    }
}

/// `host:port`, optionally pinned to a peer id: `PEERID@host:port`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    pub peer: Option<PeerId>,
    pub host: String,
}

impl FromStr for Target {
    type Err = AddrError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let text = text.trim();
        match text.split_once('@') {
            Some((peer, host)) => Ok(Self {
                peer: Some(peer.parse()?),
                host: with_port(host)?,
            }),
            None => Ok(Self {
                peer: None,
                host: with_port(text)?,
            }),
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.peer {
            Some(peer) => write!(f, "{peer}@{}", self.host),
            None => f.write_str(&self.host),
        }
    }
}

impl Target {
    /// The first IPv4 address `host` resolves to (every gate socket serves
    /// IPv4; not every one IPv6), else the first address.
    pub async fn resolve(&self) -> Result<SocketAddr, AddrError> {
        let resolve_error = |reason: String| AddrError::Resolve {
            host: self.host.clone(),
            reason,
        };
        let addrs: Vec<SocketAddr> = tokio::net::lookup_host(&self.host)
            .await
            .map_err(|e| resolve_error(e.to_string()))?
            .collect();
        addrs
            .iter()
            .find(|a| a.is_ipv4())
            .or(addrs.first())
            .copied()
            .ok_or_else(|| resolve_error("no addresses".into()))
    }

    /// The pinned peer id, required for peers (only trackers may be TOFU).
    pub fn require_peer(&self) -> Result<PeerId, AddrError> {
        self.peer
            .ok_or_else(|| AddrError::MissingPeerId(self.host.clone()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::identity::Identity;

    #[test]
    fn signalling_windows_follow_the_relay_burst_above_a_floor() {
        let small = Windows::signalling(1000);
        assert_eq!(small.stream, MIN_SIGNALLING_WINDOW);
        assert_eq!(small.connection, 2 * u64::from(MIN_SIGNALLING_WINDOW));
        let relay = Windows::signalling(512 * 1024);
        assert_eq!(relay.stream, 512 * 1024);
        assert_eq!(relay.connection, 1024 * 1024);
        let huge = Windows::signalling(u32::MAX);
        assert_eq!(huge.connection, 2 * u64::from(u32::MAX));
        // Far below what a node's connections allow.
        assert!(relay.connection < Windows::BULK.connection);
    }

    #[test]
    fn targets_parse_with_and_without_peer_id() {
        let id = Identity::generate().unwrap().peer_id();
        let pinned: Target = format!("{id}@127.0.0.1:9").parse().unwrap();
        assert_eq!(pinned.peer, Some(id));
        assert_eq!(pinned.host, "127.0.0.1:9");
        assert_eq!(pinned.to_string(), format!("{id}@127.0.0.1:9"));
        let bare: Target = "localhost:9".parse().unwrap();
        assert_eq!(bare.peer, None);
        assert!(bare.require_peer().is_err());
        assert!("nonsense@127.0.0.1:9".parse::<Target>().is_err());
    }
}
