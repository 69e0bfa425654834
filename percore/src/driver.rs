//! The edge between sans-IO state machines and an executor: UDP sockets, timers and task spawning.
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
}
