//! Runs a [`Server`] on every core: a UDP listener per core on the shared TURN port
//! (SO_REUSEPORT, so the kernel keeps each client on one core), relay sockets bound on
//! demand by that core, and a timer driven by the server's deadlines.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::rc::Rc;
use std::time::{Duration, Instant};

use futures_util::future::{select, Either};
use futures_util::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use std::sync::Arc;
use tokio::sync::mpsc;
use limits::{Gate, Permit};
use percore::{CoreTask, Driver};
use tokio::sync::Notify;

use crate::metrics::CoreMetrics;
use crate::server::{ClientAction, FiveTuple, RelaySockets, Server, Transport, HEADROOM, TAILROOM};
use crate::stun;

/// Largest datagram handled.
const MAX_DATAGRAM: usize = 65536;

/// Limits of TCP and TLS client connections.
#[derive(Debug, Clone)]
pub struct StreamLimits {
    /// Connections per source address and in total, shared by every core.
    pub gate: Gate,
    /// Time to finish the TLS handshake; a connection that holds no allocation this long
    /// after opening (or after its allocation ended) is closed.
    pub idle: Duration,
    /// Frames queued toward one client; beyond it, relayed data is dropped as UDP would be.
    pub queue: usize,
    /// Time one write toward the client may take before the connection is closed.
    pub write_timeout: Duration,
}

/// What one core needs.
pub struct RelayCore {
    /// The core's server state machine.
    pub server: Server,
    /// UDP listeners of this core (one per listening address), bound with SO_REUSEPORT.
    pub udp: Vec<std::net::UdpSocket>,
    /// TCP listeners (TURN over TCP), bound with SO_REUSEPORT.
    pub tcp: Vec<std::net::TcpListener>,
    /// TLS listeners (`turns:`) and their configuration.
    pub tls: Vec<std::net::TcpListener>,
    /// TLS configuration for `tls`.
    pub tls_config: Option<Arc<rustls::ServerConfig>>,
    /// Limits of the TCP and TLS connections.
    pub streams: StreamLimits,
    /// The core's metrics, added to about once a second.
    pub metrics: CoreMetrics,
}

/// How often a core adds its counts to its metrics.
const REPORT_EVERY: Duration = Duration::from_secs(1);

struct RelaySock<D: Driver> {
    socket: D::Socket,
    stop: Notify,
}

struct Shared<D: Driver> {
    server: RefCell<Server>,
    listeners: Vec<(SocketAddr, D::Socket)>,
    relays: RefCell<HashMap<SocketAddr, Rc<RelaySock<D>>>>,
    /// Writers of TCP/TLS client connections.
    conns: RefCell<HashMap<FiveTuple, mpsc::Sender<Vec<u8>>>>,
    streams: StreamLimits,
    wake_timer: Notify,
    metrics: CoreMetrics,
}

/// Binds relay sockets for the server and remembers which ones need a receive task.
struct Binder<'a, D: Driver> {
    relays: &'a RefCell<HashMap<SocketAddr, Rc<RelaySock<D>>>>,
    opened: Vec<(SocketAddr, Rc<RelaySock<D>>)>,
}

impl<D: Driver> RelaySockets for Binder<'_, D> {
    fn bind(&mut self, ip: IpAddr, port: u16) -> std::io::Result<SocketAddr> {
        let std = std::net::UdpSocket::bind(SocketAddr::new(ip, port))?;
        let addr = std.local_addr()?;
        let sock = Rc::new(RelaySock::<D> { socket: D::socket(std)?, stop: Notify::new() });
        self.relays.borrow_mut().insert(addr, sock.clone());
        self.opened.push((addr, sock));
        Ok(addr)
    }

    fn close(&mut self, addr: SocketAddr) {
        if let Some(s) = self.relays.borrow_mut().remove(&addr) {
            s.stop.notify_one();
        }
    }
}

impl<D: Driver> Shared<D> {
    fn listener(&self, local: SocketAddr) -> Option<&D::Socket> {
        self.listeners.iter().find(|(a, _)| *a == local).or(self.listeners.first()).map(|(_, s)| s)
    }

    /// Spawns receive tasks for relay sockets opened during the last call into the server.
    fn start_relays(self: &Rc<Self>, opened: Vec<(SocketAddr, Rc<RelaySock<D>>)>) {
        for (addr, sock) in opened {
            let shared = self.clone();
            D::spawn(async move { shared.relay_loop(addr, sock).await });
        }
    }

    /// Sends bytes to a client over its transport.
    async fn to_client(&self, tuple: FiveTuple, data: &[u8]) {
        match tuple.transport {
            Transport::Udp => {
                if let Some(l) = self.listener(tuple.server) {
                    let _ = D::send_to(l, data, tuple.client).await;
                }
            }
            Transport::Tcp | Transport::Tls => {
                // A client that does not read loses data, as over UDP; memory stays bounded.
                if let Some(tx) = self.conns.borrow().get(&tuple) {
                    let _ = tx.try_send(data.to_vec());
                }
            }
        }
    }

    async fn send_replies(&self) {
        let replies: Vec<_> = self.server.borrow_mut().take_replies().collect();
        if replies.is_empty() {
            return;
        }
        for r in replies {
            self.to_client(r.tuple, &r.data).await;
        }
        self.wake_timer.notify_one();
    }

    /// Handles one datagram or stream frame from a client.
    async fn on_client(self: &Rc<Self>, tuple: FiveTuple, data: &[u8]) {
        let mut binder = Binder::<D> { relays: &self.relays, opened: Vec::new() };
        let action = self.server.borrow_mut().handle_client(Instant::now(), tuple, data, &mut binder);
        let opened = std::mem::take(&mut binder.opened);
        if let ClientAction::Relay { relay, peer, data } = action {
            let sock = self.relays.borrow().get(&relay).cloned();
            if let Some(s) = sock {
                let _ = D::send_to(&s.socket, data, peer).await;
            }
        }
        self.start_relays(opened);
        self.send_replies().await;
    }

    async fn client_loop(self: Rc<Self>, index: usize) {
        let (local, _) = self.listeners[index];
        let mut buf = vec![0u8; MAX_DATAGRAM];
        loop {
            let Ok((n, from)) = D::recv_from(&self.listeners[index].1, &mut buf).await else {
                D::sleep(Duration::from_millis(1)).await;
                continue;
            };
            let tuple = FiveTuple { client: from, server: local, transport: Transport::Udp };
            self.on_client(tuple, &buf[..n]).await;
        }
    }

    async fn accept_loop(self: Rc<Self>, listener: D::TcpListener, local: SocketAddr, tls: Option<Arc<rustls::ServerConfig>>) {
        loop {
            let (stream, client) = match D::accept(&listener).await {
                Ok(x) => x,
                Err(e) => {
                    tracing::debug!(%local, error = %e, "accept failed");
                    D::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            };
            let permit = match self.streams.gate.admit(client.ip()) {
                Ok(p) => p,
                Err(why) => {
                    tracing::debug!(%client, %why, "connection refused");
                    continue;
                }
            };
            let shared = self.clone();
            match &tls {
                None => {
                    let tuple = FiveTuple { client, server: local, transport: Transport::Tcp };
                    D::spawn(async move { shared.stream_loop(stream, tuple, permit).await });
                }
                Some(cfg) => {
                    let acceptor = futures_rustls::TlsAcceptor::from(cfg.clone());
                    let tuple = FiveTuple { client, server: local, transport: Transport::Tls };
                    let deadline = self.streams.idle;
                    D::spawn(async move {
                        let handshake = std::pin::pin!(acceptor.accept(stream));
                        match select(handshake, std::pin::pin!(D::sleep(deadline))).await {
                            Either::Left((Ok(s), _)) => shared.stream_loop(s, tuple, permit).await,
                            Either::Left((Err(e), _)) => tracing::debug!(%client, error = %e, "TLS handshake failed"),
                            Either::Right(_) => tracing::debug!(%client, "TLS handshake timed out"),
                        }
                    });
                }
            }
        }
    }

    /// Serves a TCP or TLS connection until the client closes it, a write stalls, or it holds
    /// no allocation for the idle time; `_permit` holds its place in the gate until then.
    async fn stream_loop<S: AsyncRead + AsyncWrite + Unpin + 'static>(self: Rc<Self>, stream: S, tuple: FiveTuple, _permit: Permit) {
        let (rd, wr) = stream.split();
        let (tx, rx) = mpsc::channel::<Vec<u8>>(self.streams.queue.max(1));
        self.conns.borrow_mut().insert(tuple, tx);
        let reading = std::pin::pin!(self.read_frames(rd, tuple));
        let writing = std::pin::pin!(Self::write_frames(wr, rx, self.streams.write_timeout));
        select(reading, writing).await;
        self.conns.borrow_mut().remove(&tuple);
        let mut binder = Binder::<D> { relays: &self.relays, opened: Vec::new() };
        self.server.borrow_mut().connection_closed(tuple, &mut binder);
    }

    /// Frames STUN messages and ChannelData from a stream; returns when the connection should
    /// close.
    async fn read_frames<R: AsyncRead + Unpin>(self: &Rc<Self>, mut rd: R, tuple: FiveTuple) {
        let mut pending: Vec<u8> = Vec::with_capacity(8192);
        let mut chunk = vec![0u8; 16384];
        // One timer per connection, re-armed once per idle period (not per read): at each
        // expiry the connection must hold an allocation.
        let mut check = Box::pin(D::sleep(self.streams.idle));
        loop {
            let read = std::pin::pin!(rd.read(&mut chunk));
            let n = match select(read, check.as_mut()).await {
                Either::Left((Ok(0) | Err(_), _)) => return,
                Either::Left((Ok(n), _)) => n,
                Either::Right(_) => {
                    if self.server.borrow().has_allocation(&tuple) {
                        check.set(D::sleep(self.streams.idle));
                        continue;
                    }
                    tracing::debug!(client = %tuple.client, "no allocation on the connection; closing");
                    return;
                }
            };
            pending.extend_from_slice(&chunk[..n]);
            while let Some(len) = stun::stream_frame_len(&pending) {
                if len > MAX_DATAGRAM {
                    tracing::debug!(client = %tuple.client, "oversized frame; closing");
                    return;
                }
                if pending.len() < len {
                    break;
                }
                let frame: Vec<u8> = pending.drain(..len).collect();
                self.on_client(tuple, &frame).await;
            }
        }
    }

    /// Writes queued frames to the client; returns when the queue closes or one write spans
    /// two expiries of a watchdog of `timeout` (it stalled for between one and two of them).
    /// The watchdog is one timer per connection, re-armed at most once per `timeout`.
    async fn write_frames<W: AsyncWrite + Unpin>(mut wr: W, mut rx: mpsc::Receiver<Vec<u8>>, timeout: Duration) {
        let mut watchdog = Box::pin(D::sleep(timeout));
        while let Some(b) = rx.recv().await {
            let mut write = std::pin::pin!(wr.write_all(&b));
            let mut expiries = 0;
            loop {
                match select(write.as_mut(), watchdog.as_mut()).await {
                    Either::Left((Ok(()), _)) => break,
                    Either::Left((Err(_), _)) => return,
                    Either::Right(_) => {
                        expiries += 1;
                        if expiries == 2 {
                            return;
                        }
                        watchdog.set(D::sleep(timeout));
                    }
                }
            }
        }
        let _ = wr.close().await;
    }

    async fn relay_loop(self: Rc<Self>, addr: SocketAddr, sock: Rc<RelaySock<D>>) {
        let mut buf = vec![0u8; HEADROOM + MAX_DATAGRAM + TAILROOM];
        loop {
            let received = {
                let recv = std::pin::pin!(D::recv_from(&sock.socket, &mut buf[HEADROOM..HEADROOM + MAX_DATAGRAM]));
                let stop = std::pin::pin!(sock.stop.notified());
                match select(recv, stop).await {
                    Either::Left((r, _)) => r,
                    Either::Right(_) => return,
                }
            };
            let Ok((n, peer)) = received else { continue };
            let framed = self.server.borrow_mut().handle_peer(Instant::now(), addr, peer, &mut buf, n);
            if let Some((tuple, range)) = framed {
                self.to_client(tuple, &buf[range]).await;
            }
        }
    }

    async fn timer_loop(self: Rc<Self>) {
        let mut reported = Instant::now();
        let mut since = self.server.borrow().counters();
        loop {
            if reported.elapsed() >= REPORT_EVERY {
                let server = self.server.borrow();
                let now = server.counters();
                self.metrics.report(&now, &since, server.allocation_count());
                since = now;
                reported = Instant::now();
            }
            let now = Instant::now();
            let deadline = self.server.borrow().next_timeout().unwrap_or(now + Duration::from_secs(1)).min(now + Duration::from_secs(1));
            if deadline > now {
                let sleep = std::pin::pin!(D::sleep(deadline - now));
                let woken = std::pin::pin!(self.wake_timer.notified());
                if let Either::Right(_) = select(sleep, woken).await {
                    continue;
                }
            }
            let mut binder = Binder::<D> { relays: &self.relays, opened: Vec::new() };
            self.server.borrow_mut().handle_timeout(Instant::now(), &mut binder);
        }
    }
}

impl CoreTask for RelayCore {
    async fn run<D: Driver>(self) {
        let mut listeners = Vec::new();
        for s in self.udp {
            let local = match s.local_addr() {
                Ok(a) => a,
                Err(e) => {
                    tracing::error!(error = %e, "listener without an address");
                    continue;
                }
            };
            match D::socket(s) {
                Ok(sock) => listeners.push((local, sock)),
                Err(e) => tracing::error!(%local, error = %e, "cannot use listener socket"),
            }
        }
        let shared = Rc::new(Shared::<D> {
            server: RefCell::new(self.server),
            listeners,
            relays: RefCell::new(HashMap::new()),
            conns: RefCell::new(HashMap::new()),
            streams: self.streams,
            wake_timer: Notify::new(),
            metrics: self.metrics,
        });
        let stream_listeners = self.tcp.into_iter().map(|l| (l, None)).chain(self.tls.into_iter().map(|l| (l, self.tls_config.clone())));
        for (l, tls) in stream_listeners {
            let local = match l.local_addr() {
                Ok(a) => a,
                Err(_) => continue,
            };
            match D::tcp_listener(l) {
                Ok(listener) => {
                    let s = shared.clone();
                    D::spawn(async move { s.accept_loop(listener, local, tls).await });
                }
                Err(e) => tracing::error!(%local, error = %e, "cannot use TCP listener"),
            }
        }
        for i in 1..shared.listeners.len() {
            let s = shared.clone();
            D::spawn(async move { s.client_loop(i).await });
        }
        let timer = shared.clone();
        D::spawn(async move { timer.timer_loop().await });
        if !shared.listeners.is_empty() {
            shared.client_loop(0).await;
        } else {
            std::future::pending::<()>().await;
        }
    }
}

/// A UDP socket bound with SO_REUSEPORT, so that every core can bind the same port.
pub fn reuseport_udp(addr: SocketAddr) -> std::io::Result<std::net::UdpSocket> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::DGRAM, Some(socket2::Protocol::UDP))?;
    s.set_reuse_port(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    let _ = s.set_recv_buffer_size(4 << 20);
    let _ = s.set_send_buffer_size(4 << 20);
    s.bind(&addr.into())?;
    Ok(s.into())
}

/// A TCP listener bound with SO_REUSEPORT, so that every core can accept on the same port.
pub fn reuseport_tcp(addr: SocketAddr) -> std::io::Result<std::net::TcpListener> {
    let domain = if addr.is_ipv4() { socket2::Domain::IPV4 } else { socket2::Domain::IPV6 };
    let s = socket2::Socket::new(domain, socket2::Type::STREAM, Some(socket2::Protocol::TCP))?;
    s.set_reuse_port(true)?;
    s.set_reuse_address(true)?;
    if addr.is_ipv6() {
        s.set_only_v6(true)?;
    }
    s.set_nodelay(true)?;
    s.bind(&addr.into())?;
    s.listen(1024)?;
    Ok(s.into())
}
