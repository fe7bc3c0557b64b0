//! The gate socket: a node's one UDP socket, shared by QUIC and hole-punch
//! probes, presented to quinn as an [`AsyncUdpSocket`].
//!
//! Probes start with [`PROBE_MAGIC`], whose first byte has the QUIC fixed bit
//! (0x40) clear and the long-header bit (0x80) clear. With QUIC-bit greasing
//! off (see [`crate::endpoint`]) no QUIC packet quinn accepts can look like
//! that, so probes are taken out of every received batch before quinn sees
//! it — also out of GRO batches, segment by segment. QUIC traffic keeps
//! quinn-udp's fast path (GSO on send, GRO on receive).
//!
//! Peers reached through the tracker's relay appear to quinn as ordinary
//! addresses in 240.0.0.0/4 (reserved, never routed, so no real packet can
//! come from there): a transmit to such an address is cut into its segments
//! and handed, with the peer's id, to the node's relay writer
//! ([`GateSocket::attach_relay`]); packets the relay delivers
//! ([`GateSocket::deliver_relayed`]) come out of `poll_recv` with the
//! synthetic source address. A connection cannot tell the difference.
//!
//! Bound to `[::]`, the socket is dual-stack (IPV6_V6ONLY off): one socket,
//! one port, IPv4 and IPv6. quinn then sees every IPv4 address in its
//! IPv4-mapped form (`::ffff:a.b.c.d`), the kernel's; the rest of the node
//! sees plain addresses ([`canonical`]): probes arrive with their canonical
//! source, relay addresses are recognised in either form.

use std::collections::HashMap;
use std::fmt;
use std::future::Future;
use std::io::{self, IoSliceMut};
use std::net::{Ipv4Addr, SocketAddr};
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{ready, Context, Poll};

use quinn::udp::{RecvMeta, Transmit, UdpSocketState};
use quinn::{AsyncUdpSocket, UdpPoller};
use tokio::io::Interest;
use tokio::sync::{mpsc, oneshot};

use crate::identity::PeerId;

/// Every probe datagram starts with these bytes.
pub const PROBE_MAGIC: &[u8] = b"\0PGPROBE";
/// Largest probe payload after the magic.
pub const MAX_PROBE_PAYLOAD: usize = 256;
/// Probes waiting for the node beyond this are dropped (they are retried anyway).
const PROBE_QUEUE: usize = 256;

/// Relayed packets waiting in either direction beyond this are dropped, as a
/// full router queue would drop them; QUIC's congestion control backs off.
const RELAY_QUEUE: usize = 1024;
/// Most peers one socket gives a relay address to.
const MAX_RELAY_ADDRS: u32 = 1 << 16;
/// The port of every relay address (any would do: the address names the peer).
const RELAY_PORT: u16 = 1;

/// True for the synthetic addresses of relayed peers (240.0.0.0/4), also
/// in their IPv4-mapped form.
pub fn is_relay_addr(addr: &SocketAddr) -> bool {
    match canonical(*addr) {
        SocketAddr::V4(v4) => v4.ip().octets()[0] & 0xf0 == 240,
        SocketAddr::V6(_) => false,
    }
}

/// `addr` with an IPv4-mapped IPv6 address (`::ffff:a.b.c.d`, how a
/// dual-stack socket sees IPv4 peers) turned back into plain IPv4.
pub fn canonical(addr: SocketAddr) -> SocketAddr {
    match addr {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(v4.into(), v6.port()),
            None => addr,
        },
        SocketAddr::V4(_) => addr,
    }
}

/// `addr` as a socket bound to an address like `local` sends to it: an IPv4
/// address in its mapped form for an IPv6 (dual-stack) socket.
fn for_family_of(local: &SocketAddr, addr: SocketAddr) -> SocketAddr {
    match (local, addr) {
        (SocketAddr::V6(_), SocketAddr::V4(v4)) => {
            SocketAddr::new(v4.ip().to_ipv6_mapped().into(), v4.port())
        }
        _ => addr,
    }
}

/// A packet for, or from, a peer through the relay.
pub type RelayedPacket = (PeerId, Vec<u8>);

/// Which synthetic address stands for which relayed peer.
#[derive(Default)]
struct RelayBook {
    by_addr: HashMap<SocketAddr, PeerId>,
    by_peer: HashMap<PeerId, SocketAddr>,
}

impl RelayBook {
    fn addr_of(&mut self, peer: &PeerId) -> Option<SocketAddr> {
        if let Some(addr) = self.by_peer.get(peer) {
            return Some(*addr);
        }
        let index = u32::try_from(self.by_peer.len() + 1).ok()?;
        if index > MAX_RELAY_ADDRS {
            return None;
        }
        let addr = SocketAddr::from((Ipv4Addr::from(0xf000_0000 | index), RELAY_PORT));
        self.by_peer.insert(*peer, addr);
        self.by_addr.insert(addr, *peer);
        Some(addr)
    }
}

/// The relayed side of a gate socket.
struct RelayPath {
    book: std::sync::Mutex<RelayBook>,
    /// To the node's relay writer, once attached.
    outgoing: std::sync::Mutex<Option<mpsc::Sender<RelayedPacket>>>,
    incoming_tx: mpsc::Sender<(SocketAddr, Vec<u8>)>,
    incoming: std::sync::Mutex<mpsc::Receiver<(SocketAddr, Vec<u8>)>>,
    dropped: AtomicU64,
}

impl RelayPath {
    fn new() -> Self {
        let (incoming_tx, incoming) = mpsc::channel(RELAY_QUEUE);
        Self {
            book: std::sync::Mutex::default(),
            outgoing: std::sync::Mutex::new(None),
            incoming_tx,
            incoming: std::sync::Mutex::new(incoming),
            dropped: AtomicU64::new(0),
        }
    }

    fn book(&self) -> std::sync::MutexGuard<'_, RelayBook> {
        self.book
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Hands each segment of `transmit` to the relay writer; what does not
    /// fit (or has nowhere to go) is dropped, as UDP would.
    fn send(&self, transmit: &Transmit) {
        let peer = self
            .book()
            .by_addr
            .get(&canonical(transmit.destination))
            .copied();
        let writer = self
            .outgoing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let (Some(peer), Some(writer)) = (peer, writer) else {
            self.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        let segment = transmit
            .segment_size
            .unwrap_or(transmit.contents.len())
            .max(1);
        for packet in transmit.contents.chunks(segment) {
            if writer.try_send((peer, packet.to_vec())).is_err() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Fills `bufs` with relayed packets already waiting; registers for a
    /// wake-up when none are.
    fn poll_take(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> usize {
        let mut incoming = self
            .incoming
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let mut filled = 0;
        while filled < bufs.len().min(meta.len()) {
            let Poll::Ready(Some((from, packet))) = incoming.poll_recv(cx) else {
                break;
            };
            let buf = &mut bufs[filled];
            if packet.len() > buf.len() {
                self.dropped.fetch_add(1, Ordering::Relaxed);
                continue;
            }
            buf[..packet.len()].copy_from_slice(&packet);
            meta[filled] = RecvMeta {
                addr: from,
                len: packet.len(),
                stride: packet.len(),
                ecn: None,
                dst_ip: None,
            };
            filled += 1;
        }
        filled
    }
}

/// A probe datagram that arrived on the gate socket.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Probe {
    pub from: SocketAddr,
    pub payload: Vec<u8>,
}

/// Socket buffer sizes of a gate socket.
#[derive(Clone, Copy, Debug)]
pub struct SocketBuffers {
    /// Bytes the kernel may queue for reading. Default 4 MiB: at Linux's
    /// default (~208 KiB) a fast transfer overflows it and loses ~2.5 % of
    /// its packets on loopback alone (see docs/BENCHMARKS.md). The kernel
    /// caps the request at `net.core.rmem_max`.
    pub receive: usize,
    /// Bytes the kernel may queue for sending. Default 4 MiB, capped at
    /// `net.core.wmem_max`.
    pub send: usize,
}

impl Default for SocketBuffers {
    fn default() -> Self {
        Self {
            receive: 4 << 20,
            send: 4 << 20,
        }
    }
}

impl SocketBuffers {
    /// Whatever the operating system gives a new socket.
    pub fn system_default() -> Self {
        Self {
            receive: 0,
            send: 0,
        }
    }
}

/// The UDP socket of a node.
pub struct GateSocket {
    // Fields drop in order: the socket is closed before `released`, last,
    // tells anyone waiting that its port is free.
    io: tokio::net::UdpSocket,
    /// The bound address (an IPv6 one: the socket is dual-stack).
    local: SocketAddr,
    state: UdpSocketState,
    probes: mpsc::Sender<Probe>,
    probes_received: AtomicU64,
    probes_dropped: AtomicU64,
    relay: RelayPath,
    released: ReleaseNotice,
}

/// Who waits for a socket to be closed. Told when dropped, which is after
/// the socket itself (the last field of [`GateSocket`]): told any sooner, a
/// waiter that binds the port at once could find it still taken.
#[derive(Default)]
struct ReleaseNotice(std::sync::Mutex<Vec<oneshot::Sender<()>>>);

impl Drop for ReleaseNotice {
    fn drop(&mut self) {
        let waiters = self.0.get_mut().map(std::mem::take).unwrap_or_default();
        for waiter in waiters {
            let _ = waiter.send(());
        }
    }
}

impl fmt::Debug for GateSocket {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("GateSocket")
            .field("local_addr", &self.io.local_addr().ok())
            .finish_non_exhaustive()
    }
}

impl GateSocket {
    /// Binds the socket. Probes that arrive are delivered on the returned
    /// receiver; nobody has to read it, but then they are dropped.
    pub fn bind(addr: SocketAddr) -> io::Result<(Arc<Self>, mpsc::Receiver<Probe>)> {
        Self::bind_with(addr, SocketBuffers::default())
    }

    /// [`GateSocket::bind`] with chosen buffer sizes (0 keeps the system's).
    pub fn bind_with(
        addr: SocketAddr,
        buffers: SocketBuffers,
    ) -> io::Result<(Arc<Self>, mpsc::Receiver<Probe>)> {
        Self::from_std(bind_udp(addr)?, buffers)
    }

    /// A gate socket on a socket bound already (a birthday punch's winning
    /// socket, whose NAT mapping is the path).
    pub fn from_std(
        socket: std::net::UdpSocket,
        buffers: SocketBuffers,
    ) -> io::Result<(Arc<Self>, mpsc::Receiver<Probe>)> {
        let local = socket.local_addr()?;
        let tuned = socket2::SockRef::from(&socket);
        // Best effort: a smaller buffer than asked is still a working socket.
        if buffers.receive > 0 {
            let _ = tuned.set_recv_buffer_size(buffers.receive);
        }
        if buffers.send > 0 {
            let _ = tuned.set_send_buffer_size(buffers.send);
        }
        socket.set_nonblocking(true)?;
        let state = UdpSocketState::new((&socket).into())?;
        let io = tokio::net::UdpSocket::from_std(socket)?;
        let (probes, receiver) = mpsc::channel(PROBE_QUEUE);
        let gate = Self {
            io,
            local,
            state,
            probes,
            probes_received: AtomicU64::new(0),
            probes_dropped: AtomicU64::new(0),
            relay: RelayPath::new(),
            released: ReleaseNotice::default(),
        };
        Ok((Arc::new(gate), receiver))
    }

    /// Sends a probe (the magic, then `payload`) to `to` from this socket, so
    /// it leaves through the same NAT mapping as the node's QUIC traffic.
    pub async fn send_probe(&self, to: SocketAddr, payload: &[u8]) -> io::Result<()> {
        if payload.len() > MAX_PROBE_PAYLOAD {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "probe payload too large",
            ));
        }
        let to = for_family_of(&self.local, to);
        self.io.send_to(&probe_datagram(payload), to).await?;
        Ok(())
    }

    /// Resolves once the socket is closed (its last owner dropped it), so its
    /// port can be bound again.
    pub fn when_released(&self) -> oneshot::Receiver<()> {
        let (sender, receiver) = oneshot::channel();
        if let Ok(mut waiters) = self.released.0.lock() {
            waiters.push(sender);
        }
        receiver
    }

    /// Probes received so far, and those dropped because nobody read them.
    pub fn probe_counts(&self) -> (u64, u64) {
        (
            self.probes_received.load(Ordering::Relaxed),
            self.probes_dropped.load(Ordering::Relaxed),
        )
    }

    /// The synthetic address `peer` is reached at through the relay (the
    /// same one every time); `None` once [`MAX_RELAY_ADDRS`] peers have one.
    pub fn relay_addr(&self, peer: &PeerId) -> Option<SocketAddr> {
        self.relay.book().addr_of(peer)
    }

    /// The peer a relay address (in either form) stands for.
    pub fn relayed_peer(&self, addr: &SocketAddr) -> Option<PeerId> {
        self.relay.book().by_addr.get(&canonical(*addr)).copied()
    }

    /// Starts sending packets for relay addresses to the returned receiver
    /// (the node writes them to its tracker's relay stream). Until then, or
    /// after the receiver is gone, they are dropped.
    pub fn attach_relay(&self) -> mpsc::Receiver<RelayedPacket> {
        let (sender, receiver) = mpsc::channel(RELAY_QUEUE);
        *self
            .relay
            .outgoing
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(sender);
        receiver
    }

    /// A packet the relay brought from `from`: quinn receives it from the
    /// peer's relay address. Dropped if the queue is full.
    pub fn deliver_relayed(&self, from: PeerId, packet: Vec<u8>) {
        let Some(addr) = self.relay_addr(&from) else {
            self.relay.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        };
        // In the form quinn gave the connection, so it is the same path.
        let addr = for_family_of(&self.local, addr);
        if self.relay.incoming_tx.try_send((addr, packet)).is_err() {
            self.relay.dropped.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Relayed packets dropped so far (full queues, no relay attached).
    pub fn relay_dropped(&self) -> u64 {
        self.relay.dropped.load(Ordering::Relaxed)
    }

    fn deliver_probe(&self, from: SocketAddr, datagram: &[u8]) {
        self.probes_received.fetch_add(1, Ordering::Relaxed);
        let payload = datagram[PROBE_MAGIC.len()..].to_vec();
        let from = canonical(from);
        if self.probes.try_send(Probe { from, payload }).is_err() {
            self.probes_dropped.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// A UDP socket on `addr`; on an IPv6 address a dual-stack one (IPv4 too).
/// `[::]` on a host without IPv6 falls back to `0.0.0.0` on the same port.
pub(crate) fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    if addr.is_ipv4() {
        return std::net::UdpSocket::bind(addr);
    }
    let socket = match socket2::Socket::new(
        socket2::Domain::IPV6,
        socket2::Type::DGRAM,
        Some(socket2::Protocol::UDP),
    ) {
        Ok(socket) => socket,
        // Creating (not binding) an IPv6 socket fails only without IPv6.
        Err(_) if addr.ip().is_unspecified() => {
            return std::net::UdpSocket::bind((Ipv4Addr::UNSPECIFIED, addr.port()));
        }
        Err(e) => return Err(e),
    };
    socket.set_only_v6(false)?;
    socket.bind(&addr.into())?;
    Ok(socket.into())
}

/// A probe datagram: the magic, then `payload`.
pub fn probe_datagram(payload: &[u8]) -> Vec<u8> {
    let mut datagram = Vec::with_capacity(PROBE_MAGIC.len() + payload.len());
    datagram.extend_from_slice(PROBE_MAGIC);
    datagram.extend_from_slice(payload);
    datagram
}

/// True if `datagram` is a probe rather than QUIC.
pub fn is_probe(datagram: &[u8]) -> bool {
    datagram.starts_with(PROBE_MAGIC) && datagram.len() <= PROBE_MAGIC.len() + MAX_PROBE_PAYLOAD
}

/// Removes probe segments from a received batch of `len` bytes cut into
/// `stride`-sized segments (only the last may be shorter), handing each probe
/// to `on_probe`. The QUIC segments left keep their order and are packed to the
/// front; returns their total length.
pub fn take_probes(
    buf: &mut [u8],
    len: usize,
    stride: usize,
    mut on_probe: impl FnMut(&[u8]),
) -> usize {
    let stride = stride.max(1);
    let mut read = 0;
    let mut write = 0;
    while read < len {
        let end = (read + stride).min(len);
        if is_probe(&buf[read..end]) {
            on_probe(&buf[read..end]);
        } else {
            if write != read {
                buf.copy_within(read..end, write);
            }
            write += end - read;
        }
        read = end;
    }
    write
}

impl AsyncUdpSocket for GateSocket {
    fn create_io_poller(self: Arc<Self>) -> Pin<Box<dyn UdpPoller>> {
        Box::pin(WritablePoller {
            socket: self,
            pending: None,
        })
    }

    fn try_send(&self, transmit: &Transmit) -> io::Result<()> {
        if is_relay_addr(&transmit.destination) {
            self.relay.send(transmit);
            return Ok(());
        }
        self.io.try_io(Interest::WRITABLE, || {
            self.state.send((&self.io).into(), transmit)
        })
    }

    fn poll_recv(
        &self,
        cx: &mut Context,
        bufs: &mut [IoSliceMut<'_>],
        meta: &mut [RecvMeta],
    ) -> Poll<io::Result<usize>> {
        loop {
            let relayed = self.relay.poll_take(cx, bufs, meta);
            if relayed > 0 {
                return Poll::Ready(Ok(relayed));
            }
            ready!(self.io.poll_recv_ready(cx))?;
            let Ok(count) = self.io.try_io(Interest::READABLE, || {
                self.state.recv((&self.io).into(), bufs, meta)
            }) else {
                continue;
            };
            let mut quic_left = false;
            for (buf, meta) in bufs.iter_mut().zip(meta.iter_mut()).take(count) {
                let from = meta.addr;
                meta.len = take_probes(buf, meta.len, meta.stride, |probe| {
                    self.deliver_probe(from, probe)
                });
                quic_left |= meta.len > 0;
            }
            if quic_left {
                return Poll::Ready(Ok(count));
            }
        }
    }

    fn local_addr(&self) -> io::Result<SocketAddr> {
        self.io.local_addr()
    }

    fn may_fragment(&self) -> bool {
        self.state.may_fragment()
    }

    fn max_transmit_segments(&self) -> usize {
        self.state.max_gso_segments()
    }

    fn max_receive_segments(&self) -> usize {
        self.state.gro_segments()
    }
}

type WritableFuture = Pin<Box<dyn Future<Output = io::Result<()>> + Send + Sync>>;

/// Tells quinn when the socket can take more datagrams. Each poller owns its
/// own readiness future, so several pollers never steal each other's wakeups.
struct WritablePoller {
    socket: Arc<GateSocket>,
    pending: Option<WritableFuture>,
}

impl fmt::Debug for WritablePoller {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("WritablePoller")
    }
}

impl UdpPoller for WritablePoller {
    fn poll_writable(mut self: Pin<&mut Self>, cx: &mut Context) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let pending = this.pending.get_or_insert_with(|| {
            let socket = this.socket.clone();
            Box::pin(async move { socket.io.writable().await })
        });
        let result = ready!(pending.as_mut().poll(cx));
        this.pending = None;
        Poll::Ready(result)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn probe(tag: u8) -> Vec<u8> {
        let mut p = PROBE_MAGIC.to_vec();
        p.extend_from_slice(&[tag; 4]);
        p
    }

    #[test]
    fn probes_are_taken_out_of_a_gro_batch_keeping_quic_order() {
        // Segments of stride 12: QUIC, probe, QUIC, short QUIC tail.
        let stride = 12;
        let quic_a = [0x40u8; 12];
        let quic_b = [0x41u8; 12];
        let tail = [0x42u8; 5];
        let probe = probe(7);
        assert_eq!(probe.len(), stride);
        let mut buf = [quic_a.as_slice(), &probe, &quic_b, &tail].concat();
        let len = buf.len();
        let mut seen = Vec::new();
        let left = take_probes(&mut buf, len, stride, |p| seen.push(p.to_vec()));
        assert_eq!(seen, vec![probe]);
        assert_eq!(
            &buf[..left],
            [quic_a.as_slice(), &quic_b, &tail].concat().as_slice()
        );
    }

    #[test]
    fn quic_packets_are_never_probes() {
        // Long headers have 0x80 set, short headers 0x40 (no greasing).
        for first in [0x80u8, 0xc0, 0x40, 0x7f] {
            let mut datagram = PROBE_MAGIC.to_vec();
            datagram[0] = first;
            assert!(!is_probe(&datagram));
        }
        assert!(is_probe(PROBE_MAGIC));
        assert!(!is_probe(
            &[PROBE_MAGIC, &[0u8; MAX_PROBE_PAYLOAD + 1]].concat()
        ));
    }

    fn peer() -> PeerId {
        crate::identity::Identity::generate().unwrap().peer_id()
    }

    #[tokio::test]
    async fn relay_addresses_are_reserved_stable_and_distinct() {
        let (socket, _) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (a, b) = (peer(), peer());
        let addr_a = socket.relay_addr(&a).unwrap();
        assert_eq!(socket.relay_addr(&a), Some(addr_a));
        assert_ne!(socket.relay_addr(&b), Some(addr_a));
        assert!(is_relay_addr(&addr_a));
        assert_eq!(socket.relayed_peer(&addr_a), Some(a));
        for ordinary in ["127.0.0.1:1", "198.51.100.2:7000", "[::1]:5", "239.1.1.1:1"] {
            assert!(!is_relay_addr(&ordinary.parse().unwrap()), "{ordinary}");
        }
    }

    #[tokio::test]
    async fn a_gso_transmit_to_a_relay_address_is_cut_into_its_segments() {
        let (socket, _) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let mut relay = socket.attach_relay();
        let to = peer();
        let destination = socket.relay_addr(&to).unwrap();
        let contents = [[1u8; 10].as_slice(), &[2u8; 10], &[3u8; 4]].concat();
        let transmit = Transmit {
            destination,
            ecn: None,
            contents: &contents,
            segment_size: Some(10),
            src_ip: None,
        };
        socket.try_send(&transmit).unwrap();
        let mut got = Vec::new();
        while let Ok((peer, packet)) = relay.try_recv() {
            assert_eq!(peer, to);
            got.push(packet);
        }
        assert_eq!(got, vec![vec![1u8; 10], vec![2u8; 10], vec![3u8; 4]]);
    }

    #[tokio::test]
    async fn relayed_packets_come_out_of_poll_recv_from_the_relay_address() {
        let (socket, _) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let from = peer();
        socket.deliver_relayed(from, vec![0x40, 1, 2, 3]);
        let mut storage = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let count = std::future::poll_fn(|cx| {
            let mut bufs = [IoSliceMut::new(&mut storage)];
            socket.poll_recv(cx, &mut bufs, &mut meta)
        })
        .await
        .unwrap();
        assert_eq!(count, 1);
        assert_eq!(meta[0].addr, socket.relay_addr(&from).unwrap());
        assert_eq!(&storage[..meta[0].len], &[0x40, 1, 2, 3]);
    }

    /// Reads `socket` in the background (as quinn's driver would), so probes
    /// reach its channel; ends with the source quinn sees of the first
    /// datagram meant for it.
    fn drive(socket: &Arc<GateSocket>) -> tokio::task::JoinHandle<io::Result<SocketAddr>> {
        let socket = socket.clone();
        tokio::spawn(async move {
            let mut storage = vec![0u8; 2048];
            let mut meta = [RecvMeta::default()];
            std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut storage)];
                socket.poll_recv(cx, &mut bufs, &mut meta)
            })
            .await
            .map(|_| meta[0].addr)
        })
    }

    #[tokio::test]
    async fn a_dual_stack_socket_serves_ipv4_and_ipv6_with_plain_addresses() {
        let (dual, mut dual_probes) = GateSocket::bind("[::]:0".parse().unwrap()).unwrap();
        let port = dual.local_addr().unwrap().port();
        let (v4, mut v4_probes) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (v6, _) = GateSocket::bind("[::1]:0".parse().unwrap()).unwrap();
        let (reader, v4_reader) = (drive(&dual), drive(&v4));
        v4.send_probe(SocketAddr::from(([127, 0, 0, 1], port)), b"four")
            .await
            .unwrap();
        let got = dual_probes.recv().await.unwrap();
        assert_eq!(
            (got.from, got.payload.as_slice()),
            (v4.local_addr().unwrap(), b"four".as_slice())
        );
        v6.send_probe(
            SocketAddr::from((std::net::Ipv6Addr::LOCALHOST, port)),
            b"six",
        )
        .await
        .unwrap();
        let got = dual_probes.recv().await.unwrap();
        assert_eq!(
            (got.from, got.payload.as_slice()),
            (v6.local_addr().unwrap(), b"six".as_slice())
        );
        // And back to a plain IPv4 address from the dual-stack socket.
        dual.send_probe(v4.local_addr().unwrap(), b"back")
            .await
            .unwrap();
        let got = v4_probes.recv().await.unwrap();
        assert_eq!(got.payload, b"back");
        assert_eq!(got.from.port(), port);
        reader.abort();
        v4_reader.abort();
    }

    #[tokio::test]
    async fn relay_addresses_on_a_dual_stack_socket_are_known_in_both_forms() {
        let (socket, _) = GateSocket::bind("[::]:0".parse().unwrap()).unwrap();
        let from = peer();
        let plain = socket.relay_addr(&from).unwrap();
        socket.deliver_relayed(from, vec![0x40, 9]);
        // quinn sees the mapped form, the form it gives a dual-stack socket.
        let mapped = drive(&socket).await.unwrap().unwrap();
        assert!(mapped.is_ipv6());
        assert_eq!(canonical(mapped), plain);
        assert!(is_relay_addr(&mapped));
        assert_eq!(socket.relayed_peer(&mapped), Some(from));
        let mut relay = socket.attach_relay();
        let transmit = Transmit {
            destination: mapped,
            ecn: None,
            contents: &[0x40, 1],
            segment_size: None,
            src_ip: None,
        };
        socket.try_send(&transmit).unwrap();
        assert_eq!(relay.try_recv().unwrap(), (from, vec![0x40, 1]));
    }

    #[tokio::test]
    async fn probe_sent_between_sockets_arrives_on_the_probe_channel() {
        let (a, _) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let (b, mut b_probes) = GateSocket::bind("127.0.0.1:0".parse().unwrap()).unwrap();
        let b_addr = b.local_addr().unwrap();
        a.send_probe(b_addr, b"punch").await.unwrap();
        // poll_recv is what quinn's endpoint driver calls; drive it by hand.
        let mut storage = vec![0u8; 2048];
        let mut meta = [RecvMeta::default()];
        let b2 = b.clone();
        // The only datagram is a probe, so poll_recv keeps waiting: run it in
        // the background and read the probe channel.
        let reader = tokio::spawn(async move {
            std::future::poll_fn(|cx| {
                let mut bufs = [IoSliceMut::new(&mut storage)];
                b2.poll_recv(cx, &mut bufs, &mut meta)
            })
            .await
        });
        let got = b_probes.recv().await.unwrap();
        assert_eq!(got.payload, b"punch");
        assert_eq!(got.from, a.local_addr().unwrap());
        assert_eq!(b.probe_counts(), (1, 0));
        reader.abort();
    }
}
