//! The edge between sans-IO state machines and an executor: UDP and TCP sockets, timers and task spawning.
//!
//! [`Glommio`] runs on io_uring and is the default. [`Epoll`] runs the same loop on a tokio
//! current-thread runtime (epoll) for hosts where io_uring is not allowed, such as container
//! runtimes whose seccomp profile blocks it.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

/// What the per-core loop needs from an executor.
pub trait Driver: 'static {
    /// The executor's UDP socket.
    type Socket: 'static;
    /// Wraps a bound, non-blocking std socket.
    fn socket(s: std::net::UdpSocket) -> io::Result<Self::Socket>;
    /// Receives one datagram.
    fn recv_from(s: &Self::Socket, buf: &mut [u8]) -> impl Future<Output = io::Result<(usize, SocketAddr)>>;
    /// Sends one datagram.
    fn send_to(s: &Self::Socket, buf: &[u8], to: SocketAddr) -> impl Future<Output = io::Result<usize>>;
    /// Sleeps for `d`.
    fn sleep(d: Duration) -> impl Future<Output = ()>;
    /// Spawns a task on the current thread's executor.
    fn spawn(f: impl Future<Output = ()> + 'static);
    /// The executor's TCP listener.
    type TcpListener: 'static;
    /// The executor's TCP stream, with the `futures-io` traits.
    type TcpStream: futures_io::AsyncRead + futures_io::AsyncWrite + Unpin + 'static;
    /// Wraps a bound, listening std listener.
    fn tcp_listener(l: std::net::TcpListener) -> io::Result<Self::TcpListener>;
    /// Accepts one connection.
    fn accept(l: &Self::TcpListener) -> impl Future<Output = io::Result<(Self::TcpStream, SocketAddr)>>;
}

/// glommio: io_uring, one executor pinned per core.
pub struct Glommio;

impl Driver for Glommio {
    type Socket = glommio::net::UdpSocket;
    fn socket(s: std::net::UdpSocket) -> io::Result<Self::Socket> {
        // io_uring completes operations on a blocking socket asynchronously; an O_NONBLOCK
        // socket would make its receive operations fail with EAGAIN instead.
        s.set_nonblocking(false)?;
        Ok(glommio::net::UdpSocket::from(socket2::Socket::from(s)))
    }
    async fn recv_from(s: &Self::Socket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        s.recv_from(buf).await.map_err(io::Error::from)
    }
    async fn send_to(s: &Self::Socket, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        s.send_to(buf, to).await.map_err(io::Error::from)
    }
    async fn sleep(d: Duration) {
        glommio::timer::sleep(d).await
    }
    fn spawn(f: impl Future<Output = ()> + 'static) {
        glommio::spawn_local(f).detach();
    }
    type TcpListener = glommio::net::TcpListener;
    type TcpStream = glommio::net::TcpStream;
    fn tcp_listener(l: std::net::TcpListener) -> io::Result<Self::TcpListener> {
        use std::os::unix::io::{FromRawFd, IntoRawFd};
        l.set_nonblocking(false)?;
        // SAFETY: the descriptor comes from a listener we own and give up here.
        Ok(unsafe { glommio::net::TcpListener::from_raw_fd(l.into_raw_fd()) })
    }
    async fn accept(l: &Self::TcpListener) -> io::Result<(Self::TcpStream, SocketAddr)> {
        let s = l.accept().await.map_err(io::Error::from)?;
        let peer = s.peer_addr().map_err(io::Error::from)?;
        Ok((s, peer))
    }
}

/// tokio current-thread runtime: epoll, the fallback.
pub struct Epoll;

impl Driver for Epoll {
    type Socket = tokio::net::UdpSocket;
    fn socket(s: std::net::UdpSocket) -> io::Result<Self::Socket> {
        s.set_nonblocking(true)?;
        tokio::net::UdpSocket::from_std(s)
    }
    async fn recv_from(s: &Self::Socket, buf: &mut [u8]) -> io::Result<(usize, SocketAddr)> {
        s.recv_from(buf).await
    }
    async fn send_to(s: &Self::Socket, buf: &[u8], to: SocketAddr) -> io::Result<usize> {
        s.send_to(buf, to).await
    }
    async fn sleep(d: Duration) {
        tokio::time::sleep(d).await
    }
    fn spawn(f: impl Future<Output = ()> + 'static) {
        tokio::task::spawn_local(f);
    }
    type TcpListener = tokio::net::TcpListener;
    type TcpStream = tokio_util::compat::Compat<tokio::net::TcpStream>;
    fn tcp_listener(l: std::net::TcpListener) -> io::Result<Self::TcpListener> {
        l.set_nonblocking(true)?;
        tokio::net::TcpListener::from_std(l)
    }
    async fn accept(l: &Self::TcpListener) -> io::Result<(Self::TcpStream, SocketAddr)> {
        use tokio_util::compat::TokioAsyncReadCompatExt;
        let (s, peer) = l.accept().await?;
        let _ = s.set_nodelay(true);
        Ok((s.compat(), peer))
    }
}
