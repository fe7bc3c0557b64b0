//! Shared set-up of the benches: punchgate's pinned endpoints on the gate
//! socket, and plain quinn endpoints with the same crypto provider (ring) as
//! the baseline, all on 127.0.0.1.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use punchgate::endpoint::{self, Liveness};
pub use punchgate::gate_socket::SocketBuffers;
use punchgate::identity::{Identity, PeerId};
use punchgate::tls::{self, CertifiedIdentity};
use quinn::{ClientConfig, Endpoint, ServerConfig, TransportConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

pub fn loopback() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// A client endpoint, the config it dials with, the server, and what the
/// client must call the server.
pub struct Pair {
    pub client: Endpoint,
    pub client_config: ClientConfig,
    pub server: Endpoint,
    pub server_addr: SocketAddr,
    pub server_name: String,
}

impl Pair {
    pub async fn connect(&self) -> quinn::Connection {
        self.client
            .connect_with(
                self.client_config.clone(),
                self.server_addr,
                &self.server_name,
            )
            .unwrap()
            .await
            .unwrap()
    }
}

/// punchgate as it runs: gate sockets, pinned mutual TLS, `transport`.
pub fn punchgate_pair(transport: Arc<TransportConfig>) -> Pair {
    punchgate_pair_with(transport, SocketBuffers::default())
}

/// punchgate with chosen socket buffer sizes.
pub fn punchgate_pair_with(transport: Arc<TransportConfig>, buffers: SocketBuffers) -> Pair {
    let server_identity = Identity::generate().unwrap();
    let client_identity = Identity::generate().unwrap();
    let server_cert = CertifiedIdentity::new(&server_identity).unwrap();
    let client_cert = CertifiedIdentity::new(&client_identity).unwrap();
    let mut server_config = server_cert
        .server(tls::ALPN_PEER, tls::allow_any_peer())
        .unwrap();
    server_config.transport_config(transport.clone());
    let server = endpoint::bind_with(loopback(), Some(server_config), buffers)
        .unwrap()
        .endpoint;
    let client = endpoint::bind_with(loopback(), None, buffers)
        .unwrap()
        .endpoint;
    let mut client_config = client_cert.pinned_client(tls::ALPN_PEER).unwrap();
    client_config.transport_config(transport);
    let server_addr = server.local_addr().unwrap();
    Pair {
        client,
        client_config,
        server,
        server_addr,
        server_name: tls::server_name_for(&server_identity.peer_id()),
    }
}

/// Plain quinn: std UDP sockets, a self-signed server certificate the client
/// trusts as its root, no client certificate, `transport`.
pub fn quinn_pair(transport: Arc<TransportConfig>) -> Pair {
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let cert = certified.cert.der().clone();
    let key = rustls::pki_types::PrivateKeyDer::Pkcs8(certified.key_pair.serialize_der().into());
    let mut server_config = ServerConfig::with_single_cert(vec![cert.clone()], key).unwrap();
    server_config.transport_config(transport.clone());
    let server = Endpoint::server(server_config, loopback()).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    roots.add(cert).unwrap();
    let mut client_config = ClientConfig::with_root_certificates(Arc::new(roots)).unwrap();
    client_config.transport_config(transport);
    let client = Endpoint::client(loopback()).unwrap();
    let server_addr = server.local_addr().unwrap();
    Pair {
        client,
        client_config,
        server,
        server_addr,
        server_name: "localhost".to_string(),
    }
}

impl Pair {
    /// `iters` fresh handshakes, each closed at once; their total time.
    pub async fn timed_handshakes(&self, iters: u64) -> std::time::Duration {
        let mut total = std::time::Duration::ZERO;
        for _ in 0..iters {
            let start = std::time::Instant::now();
            // The server answers only once its Incoming is awaited.
            let accept = async { self.server.accept().await.unwrap().await.unwrap() };
            let (client, server) = tokio::join!(self.connect(), accept);
            total += start.elapsed();
            client.close(0u32.into(), b"done");
            server.close(0u32.into(), b"done");
        }
        total
    }
}

/// punchgate's own transport settings (what nodes use).
pub fn punchgate_transport() -> Arc<TransportConfig> {
    Liveness::default().transport_config(punchgate::endpoint::PEER_STREAMS, Default::default())
}

/// quinn's defaults.
pub fn default_transport() -> Arc<TransportConfig> {
    Arc::new(TransportConfig::default())
}

pub fn peer_id_of(identity: &Identity) -> PeerId {
    identity.peer_id()
}

/// Write size of the reference transfers.
const CHUNK: usize = 1 << 20;

/// Moves `size` bytes client → server over `streams` streams of plain quinn;
/// returns the time until the server has read everything.
pub async fn quic_transfer(
    client: &quinn::Connection,
    server: &quinn::Connection,
    streams: usize,
    size: usize,
) -> Duration {
    let per_stream = size / streams;
    let start = Instant::now();
    let readers = tokio::spawn({
        let server = server.clone();
        async move {
            let mut tasks = Vec::new();
            for _ in 0..streams {
                // Bidirectional: punchgate's transport allows no unidirectional
                // streams (its protocol defines none).
                let (_, mut recv) = server.accept_bi().await.unwrap();
                tasks.push(tokio::spawn(async move {
                    let mut total = 0usize;
                    while let Some(chunk) = recv.read_chunk(usize::MAX, true).await.unwrap() {
                        total += chunk.bytes.len();
                    }
                    total
                }));
            }
            let mut total = 0;
            for task in tasks {
                total += task.await.unwrap();
            }
            total
        }
    });
    let buffer = vec![0x5au8; CHUNK];
    let mut writers = Vec::new();
    for _ in 0..streams {
        let (mut send, _) = client.open_bi().await.unwrap();
        let buffer = buffer.clone();
        writers.push(tokio::spawn(async move {
            let mut left = per_stream;
            while left > 0 {
                let n = left.min(CHUNK);
                send.write_all(&buffer[..n]).await.unwrap();
                left -= n;
            }
            send.finish().unwrap();
        }));
    }
    for writer in writers {
        writer.await.unwrap();
    }
    assert_eq!(readers.await.unwrap(), per_stream * streams);
    start.elapsed()
}

/// `iters` runs of [`quic_transfer`]; their total time (for `iter_custom`).
pub async fn quic_transfers(
    client: &quinn::Connection,
    server: &quinn::Connection,
    streams: usize,
    size: usize,
    iters: u64,
) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        total += quic_transfer(client, server, streams, size).await;
    }
    total
}

/// Moves `size` bytes over one TCP connection on loopback.
pub async fn tcp_transfer(listener: &tokio::net::TcpListener, size: usize) -> Duration {
    let addr = listener.local_addr().unwrap();
    let start = Instant::now();
    let reader = async {
        let (mut socket, _) = listener.accept().await.unwrap();
        let mut buffer = vec![0u8; CHUNK];
        let mut total = 0;
        loop {
            let n = socket.read(&mut buffer).await.unwrap();
            if n == 0 {
                break total;
            }
            total += n;
        }
    };
    let writer = async {
        let mut socket = tokio::net::TcpStream::connect(addr).await.unwrap();
        let buffer = vec![0x5au8; CHUNK];
        for _ in 0..size / CHUNK {
            socket.write_all(&buffer).await.unwrap();
        }
        socket.shutdown().await.unwrap();
    };
    let (total, ()) = tokio::join!(reader, writer);
    assert_eq!(total, size);
    start.elapsed()
}

/// Benches a plain TCP copy of `size` bytes on loopback, as "tcp/1-stream"
/// in `group`: the reference every transfer bench prints beside its own.
pub fn bench_tcp_copy(
    group: &mut criterion::BenchmarkGroup<'_, criterion::measurement::WallTime>,
    runtime: &tokio::runtime::Runtime,
    size: usize,
) {
    let listener = runtime
        .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    group.bench_function("tcp/1-stream", |b| {
        b.iter_custom(|iters| {
            runtime.block_on(async {
                let mut total = Duration::ZERO;
                for _ in 0..iters {
                    total += tcp_transfer(&listener, size).await;
                }
                total
            })
        })
    });
}

/// CPU time (user + system) a process has used so far: `"self"` or a pid
/// (Linux, from `/proc/PID/stat`).
pub fn cpu_of(process: &str) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{process}/stat")).unwrap();
    // Fields after the command name, which is in parentheses: the state
    // (field 3 of proc(5)) is fields[0], utime and stime (14, 15) are
    // fields[11] and [12], in clock ticks.
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    let ticks: u64 = fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap();
    let per_second = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as u64;
    Duration::from_secs_f64(ticks as f64 / per_second as f64)
}
