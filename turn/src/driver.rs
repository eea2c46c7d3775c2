//! The I/O shell around [`TurnServer`]: tokio listeners (UDP, TCP, TLS), relay sockets
//! from a port range, a one-second timer, and the in-process hand-over to the SFU.
//!
//! - One `std::sync::Mutex` guards the core and the socket tables. Every task (UDP
//!   listener, each TCP/TLS connection reader, each relay socket, the hand-over inbox,
//!   the timer) takes it for one datagram, never across an `.await`; sends under it are
//!   non-blocking (`try_send_to`, bounded channels): a full buffer drops the datagram,
//!   as UDP would.
//! - TCP and TLS carry STUN and ChannelData frames back to back (RFC 8656 §12.5); a
//!   stream that is not TURN framing is closed. The allocation ends with the connection.
//! - Hand-over: when a [`Handover`] is given, a relayed datagram to an address it
//!   [`owns`](Handover::owns) (the SFU's own media addresses) goes to it directly instead
//!   of through the relay socket, and datagrams the SFU sends to a relayed address come
//!   back through the inbox channel, as if they had arrived on the relay socket.

use std::collections::HashMap;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::{AbortHandle, JoinHandle};
use tokio_rustls::TlsAcceptor;
use tokio_rustls::rustls;
use tracing::{debug, info, warn};

use crate::codec;
use crate::server::{Client, Io, Proto, ServerConfig, TurnServer, TurnStats};

/// Where the TLS certificate comes from.
#[derive(Debug, Clone)]
pub enum TlsIdentity {
    /// PEM files: certificate chain and private key.
    Files {
        /// Certificate chain (PEM).
        cert: PathBuf,
        /// Private key (PEM).
        key: PathBuf,
    },
    /// A self-signed certificate made at start-up for these names/IPs (development).
    SelfSigned(Vec<String>),
}

/// Relay settings.
#[derive(Debug, Clone)]
pub struct RelayConfig {
    /// The TURN core's settings.
    pub server: ServerConfig,
    /// UDP listen address (None: no UDP listener).
    pub udp: Option<SocketAddr>,
    /// TCP listen address.
    pub tcp: Option<SocketAddr>,
    /// TLS listen address and identity.
    pub tls: Option<(SocketAddr, TlsIdentity)>,
    /// IP advertised in XOR-RELAYED-ADDRESS.
    pub relay_ip: IpAddr,
    /// IP relay sockets bind to.
    pub relay_bind_ip: IpAddr,
    /// Relay port range (inclusive).
    pub relay_ports: (u16, u16),
}

/// A co-located SFU that takes relayed datagrams directly (see the module docs).
pub trait Handover: Send + Sync + 'static {
    /// Whether `peer` is one of the SFU's own media addresses.
    fn owns(&self, peer: SocketAddr) -> bool;
    /// Deliver `data` to the SFU's `peer` address as if it came from `relayed`.
    fn deliver(&self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]);
    /// An allocation with this relayed address exists: route the SFU's datagrams to it
    /// into the inbox.
    fn attach(&self, relayed: SocketAddr);
    /// The allocation is gone.
    fn detach(&self, relayed: SocketAddr);
}

/// Datagrams the SFU sends to relayed addresses: (relayed address, SFU source, data).
pub type HandoverInbox = mpsc::Receiver<(SocketAddr, SocketAddr, Vec<u8>)>;

/// The running relay.
pub struct TurnRelay {
    shared: Arc<Shared>,
    tasks: Vec<JoinHandle<()>>,
    /// Bound listener addresses (UDP, TCP, TLS).
    pub local: (Option<SocketAddr>, Option<SocketAddr>, Option<SocketAddr>),
}

struct Shared {
    state: Mutex<State>,
}

struct State {
    core: TurnServer,
    io: DriverIo,
}

struct Relay {
    socket: Arc<UdpSocket>,
    task: AbortHandle,
}

struct DriverIo {
    udp: Option<Arc<UdpSocket>>,
    streams: HashMap<u64, mpsc::Sender<Vec<u8>>>,
    relays: HashMap<SocketAddr, Relay>,
    relay_ip: IpAddr,
    relay_bind_ip: IpAddr,
    ports: (u16, u16),
    cursor: u16,
    handover: Option<Arc<dyn Handover>>,
    shared: Weak<Shared>,
    send_drops: u64,
    /// Datagrams handed to the SFU in process / received back from it.
    to_sfu: u64,
    from_sfu: u64,
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl Io for DriverIo {
    fn bind_relay(&mut self) -> Option<SocketAddr> {
        let (lo, hi) = self.ports;
        let n = u32::from(hi - lo) + 1;
        for _ in 0..n {
            let port = self.cursor;
            self.cursor = if self.cursor >= hi {
                lo
            } else {
                self.cursor + 1
            };
            let relayed = SocketAddr::new(self.relay_ip, port);
            if self.relays.contains_key(&relayed) {
                continue;
            }
            let Ok(std_sock) = bind_udp(SocketAddr::new(self.relay_bind_ip, port)) else {
                continue;
            };
            let Ok(sock) = UdpSocket::from_std(std_sock) else {
                continue;
            };
            let socket = Arc::new(sock);
            let task = tokio::spawn(relay_reader(self.shared.clone(), socket.clone(), relayed));
            self.relays.insert(
                relayed,
                Relay {
                    socket,
                    task: task.abort_handle(),
                },
            );
            if let Some(h) = &self.handover {
                h.attach(relayed);
            }
            return Some(relayed);
        }
        warn!("TURN relay port range exhausted");
        None
    }

    fn release_relay(&mut self, relayed: SocketAddr) {
        if let Some(r) = self.relays.remove(&relayed) {
            r.task.abort();
        }
        if let Some(h) = &self.handover {
            h.detach(relayed);
        }
    }

    fn to_client(&mut self, client: &Client, data: &[u8]) {
        match client.proto {
            Proto::Udp => {
                if let Some(u) = &self.udp
                    && u.try_send_to(data, client.addr).is_err()
                {
                    self.send_drops += 1;
                }
            }
            Proto::Tcp | Proto::Tls => {
                if let Some(tx) = self.streams.get(&client.conn)
                    && tx.try_send(data.to_vec()).is_err()
                {
                    self.send_drops += 1;
                }
            }
        }
    }

    fn to_peer(&mut self, relayed: SocketAddr, peer: SocketAddr, data: &[u8]) {
        if let Some(h) = &self.handover
            && h.owns(peer)
        {
            h.deliver(relayed, peer, data);
            self.to_sfu += 1;
            return;
        }
        if let Some(r) = self.relays.get(&relayed)
            && r.socket.try_send_to(data, peer).is_err()
        {
            self.send_drops += 1;
        }
    }
}

fn bind_udp(addr: SocketAddr) -> io::Result<std::net::UdpSocket> {
    let s = std::net::UdpSocket::bind(addr)?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl TurnRelay {
    /// Bind the listeners and start serving. `handover`: the co-located SFU and the
    /// channel its datagrams to relayed addresses arrive on.
    pub async fn start(
        cfg: RelayConfig,
        handover: Option<(Arc<dyn Handover>, HandoverInbox)>,
    ) -> io::Result<TurnRelay> {
        if cfg.relay_ports.1 < cfg.relay_ports.0 {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                "TURN relay port range is empty",
            ));
        }
        let udp = match cfg.udp {
            Some(a) => Some(Arc::new(UdpSocket::from_std(bind_udp(a).map_err(
                |e| io::Error::new(e.kind(), format!("cannot bind TURN UDP {a}: {e}")),
            )?)?)),
            None => None,
        };
        let tcp = match cfg.tcp {
            Some(a) => Some(TcpListener::bind(a).await.map_err(|e| {
                io::Error::new(e.kind(), format!("cannot listen for TURN TCP on {a}: {e}"))
            })?),
            None => None,
        };
        let tls = match &cfg.tls {
            Some((a, id)) => {
                let acceptor = TlsAcceptor::from(Arc::new(tls_config(id)?));
                let l = TcpListener::bind(a).await.map_err(|e| {
                    io::Error::new(e.kind(), format!("cannot listen for TURN TLS on {a}: {e}"))
                })?;
                Some((l, acceptor))
            }
            None => None,
        };
        let (handover, inbox) = match handover {
            Some((h, rx)) => (Some(h), Some(rx)),
            None => (None, None),
        };
        let start_port =
            cfg.relay_ports.0 + fastrand::u16(0..=(cfg.relay_ports.1 - cfg.relay_ports.0));
        let shared = Arc::new_cyclic(|weak| Shared {
            state: Mutex::new(State {
                core: TurnServer::new(cfg.server.clone(), Instant::now(), unix_now()),
                io: DriverIo {
                    udp: udp.clone(),
                    streams: HashMap::new(),
                    relays: HashMap::new(),
                    relay_ip: cfg.relay_ip,
                    relay_bind_ip: cfg.relay_bind_ip,
                    ports: cfg.relay_ports,
                    cursor: start_port,
                    handover,
                    shared: weak.clone(),
                    send_drops: 0,
                    to_sfu: 0,
                    from_sfu: 0,
                },
            }),
        });
        let mut tasks = Vec::new();
        let mut local = (None, None, None);
        if let Some(u) = udp {
            local.0 = u.local_addr().ok();
            tasks.push(tokio::spawn(udp_listener(shared.clone(), u)));
        }
        let conns = Arc::new(AtomicU64::new(1));
        if let Some(l) = tcp {
            local.1 = l.local_addr().ok();
            tasks.push(tokio::spawn(stream_listener(
                shared.clone(),
                l,
                None,
                conns.clone(),
            )));
        }
        if let Some((l, acc)) = tls {
            local.2 = l.local_addr().ok();
            tasks.push(tokio::spawn(stream_listener(
                shared.clone(),
                l,
                Some(acc),
                conns.clone(),
            )));
        }
        if let Some(mut rx) = inbox {
            let s = shared.clone();
            tasks.push(tokio::spawn(async move {
                while let Some((relayed, from, data)) = rx.recv().await {
                    s.with(|st| {
                        st.io.from_sfu += 1;
                        st.core
                            .handle_peer(Instant::now(), relayed, from, &data, &mut st.io)
                    });
                }
            }));
        }
        let s = shared.clone();
        tasks.push(tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            loop {
                tick.tick().await;
                s.with(|st| st.core.handle_timeout(Instant::now(), &mut st.io));
            }
        }));
        info!(
            udp = ?local.0,
            tcp = ?local.1,
            tls = ?local.2,
            relay = %format!("{}:{}-{}", cfg.relay_ip, cfg.relay_ports.0, cfg.relay_ports.1),
            "TURN relay listening"
        );
        Ok(TurnRelay {
            shared,
            tasks,
            local,
        })
    }

    /// Counters (plus datagrams dropped on full send buffers, in `dropped`).
    pub fn stats(&self) -> TurnStats {
        self.shared.with(|st| {
            let mut s = st.core.stats();
            s.dropped += st.io.send_drops;
            s
        })
    }

    /// Datagrams handed over in process: (relay -> SFU, SFU -> relay).
    pub fn handover_packets(&self) -> (u64, u64) {
        self.shared.with(|st| (st.io.to_sfu, st.io.from_sfu))
    }

    /// Stop every task and close every socket.
    pub fn shutdown(&self) {
        for t in &self.tasks {
            t.abort();
        }
        self.shared.with(|st| {
            for (_, r) in st.io.relays.drain() {
                r.task.abort();
            }
            st.io.streams.clear();
        });
    }
}

impl Drop for TurnRelay {
    fn drop(&mut self) {
        self.shutdown();
    }
}

impl Shared {
    fn with<T>(&self, f: impl FnOnce(&mut State) -> T) -> T {
        // A panic while holding the lock is a bug; keep serving rather than cascade.
        let mut g = self.state.lock().unwrap_or_else(|p| p.into_inner());
        f(&mut g)
    }
}

async fn udp_listener(shared: Arc<Shared>, sock: Arc<UdpSocket>) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, from)) => {
                let client = Client {
                    proto: Proto::Udp,
                    conn: 0,
                    addr: from,
                };
                shared.with(|st| {
                    st.core
                        .handle_client(Instant::now(), client, &buf[..n], &mut st.io)
                });
            }
            // ICMP errors from earlier sends surface here; not fatal.
            Err(e) => debug!("TURN UDP recv: {e}"),
        }
    }
}

async fn relay_reader(shared: Weak<Shared>, sock: Arc<UdpSocket>, relayed: SocketAddr) {
    let mut buf = vec![0u8; 65536];
    loop {
        match sock.recv_from(&mut buf).await {
            Ok((n, peer)) => {
                let Some(s) = shared.upgrade() else { return };
                s.with(|st| {
                    st.core
                        .handle_peer(Instant::now(), relayed, peer, &buf[..n], &mut st.io)
                });
            }
            Err(e) => debug!("TURN relay recv: {e}"),
        }
    }
}

async fn stream_listener(
    shared: Arc<Shared>,
    listener: TcpListener,
    tls: Option<TlsAcceptor>,
    conns: Arc<AtomicU64>,
) {
    loop {
        let (stream, addr) = match listener.accept().await {
            Ok(x) => x,
            Err(e) => {
                warn!("TURN accept: {e}");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = stream.set_nodelay(true);
        let conn = conns.fetch_add(1, Ordering::Relaxed);
        let shared = shared.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_stream(shared, stream, addr, conn, Proto::Tcp).await,
                Some(acc) => {
                    // A handshake that stalls must not hold a task forever.
                    match tokio::time::timeout(Duration::from_secs(10), acc.accept(stream)).await {
                        Ok(Ok(s)) => serve_stream(shared, s, addr, conn, Proto::Tls).await,
                        Ok(Err(e)) => debug!("TURN TLS handshake failed: {e}"),
                        Err(_) => debug!("TURN TLS handshake timed out"),
                    }
                }
            }
        });
    }
}

async fn serve_stream<S: AsyncRead + AsyncWrite + Send + 'static>(
    shared: Arc<Shared>,
    stream: S,
    addr: SocketAddr,
    conn: u64,
    proto: Proto,
) {
    let (mut rd, mut wr) = tokio::io::split(stream);
    let (tx, mut rx) = mpsc::channel::<Vec<u8>>(1024);
    shared.with(|st| st.io.streams.insert(conn, tx));
    let writer = tokio::spawn(async move {
        while let Some(d) = rx.recv().await {
            if wr.write_all(&d).await.is_err() {
                break;
            }
        }
        let _ = wr.shutdown().await;
    });
    let client = Client { proto, conn, addr };
    let mut buf: Vec<u8> = Vec::with_capacity(8192);
    let mut chunk = vec![0u8; 16384];
    'read: loop {
        let n = match rd.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        buf.extend_from_slice(&chunk[..n]);
        let mut off = 0;
        loop {
            match codec::stream_frame_len(&buf[off..]) {
                Ok(Some(len)) if buf.len() - off >= len => {
                    let frame = &buf[off..off + len];
                    shared.with(|st| {
                        st.core
                            .handle_client(Instant::now(), client, frame, &mut st.io)
                    });
                    off += len;
                }
                Ok(_) => break,
                Err(codec::NotTurnFraming) => {
                    debug!(?proto, "not TURN framing: closing the connection");
                    break 'read;
                }
            }
        }
        buf.drain(..off);
    }
    shared.with(|st| {
        st.io.streams.remove(&conn);
        st.core.client_gone(client, &mut st.io);
    });
    writer.abort();
}

fn tls_config(id: &TlsIdentity) -> io::Result<rustls::ServerConfig> {
    use rustls::pki_types::pem::PemObject;
    use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
    let bad = |what: &str, e: &dyn std::fmt::Display| {
        io::Error::new(io::ErrorKind::InvalidInput, format!("TURN TLS {what}: {e}"))
    };
    let (certs, key): (Vec<CertificateDer<'static>>, PrivateKeyDer<'static>) = match id {
        TlsIdentity::Files { cert, key } => {
            let certs = CertificateDer::pem_file_iter(cert)
                .map_err(|e| bad(&format!("certificate {}", cert.display()), &e))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| bad(&format!("certificate {}", cert.display()), &e))?;
            let key = PrivateKeyDer::from_pem_file(key)
                .map_err(|e| bad(&format!("key {}", key.display()), &e))?;
            (certs, key)
        }
        TlsIdentity::SelfSigned(names) => {
            let ck = rcgen::generate_simple_self_signed(names.clone())
                .map_err(|e| bad("self-signed certificate", &e))?;
            let key = PrivatePkcs8KeyDer::from(ck.signing_key.serialize_der()).into();
            (vec![ck.cert.der().clone()], key)
        }
    };
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| bad("protocol versions", &e))?
        .with_no_client_auth()
        .with_single_cert(certs, key)
        .map_err(|e| bad("certificate/key", &e))
}
