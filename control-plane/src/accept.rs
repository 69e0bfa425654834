//! The HTTPS listener's first step: each TCP connection must get a place from the [`Gate`]
//! before TLS starts, and is closed when it has read nothing for a while.

use std::future::{ready, Future, Ready};
use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::TcpStream;
use tokio::time::{Instant, Sleep};

use limits::{Gate, Permit};

/// An `axum_server` acceptor that admits connections through a [`Gate`] and gives them a read
/// idle timeout. It runs before TLS, so a refused connection costs no handshake.
#[derive(Debug, Clone)]
pub struct GatedAcceptor {
    gate: Gate,
    idle: Duration,
}

impl GatedAcceptor {
    /// Admits through `gate`; a connection that reads nothing for `idle` is closed.
    pub fn new(gate: Gate, idle: Duration) -> Self {
        GatedAcceptor { gate, idle }
    }
}

impl<S> axum_server::accept::Accept<TcpStream, S> for GatedAcceptor {
    type Stream = Gated<TcpStream>;
    type Service = S;
    type Future = Ready<io::Result<(Gated<TcpStream>, S)>>;

    fn accept(&self, stream: TcpStream, service: S) -> Self::Future {
        let admitted = stream.peer_addr().and_then(|peer| {
            self.gate.admit(peer.ip()).map_err(|why| {
                tracing::debug!(%peer, %why, "connection refused");
                io::Error::new(io::ErrorKind::ConnectionRefused, why)
            })
        });
        ready(admitted.map(|permit| (Gated::new(stream, permit, self.idle), service)))
    }
}

/// A connection holding its [`Permit`]; reading fails with `TimedOut` once nothing has been
/// read for the idle time.
#[derive(Debug)]
pub struct Gated<S> {
    inner: S,
    _permit: Permit,
    idle: Duration,
    deadline: Pin<Box<Sleep>>,
}

impl<S> Gated<S> {
    fn new(inner: S, permit: Permit, idle: Duration) -> Self {
        Gated {
            inner,
            _permit: permit,
            idle,
            deadline: Box::pin(tokio::time::sleep(idle)),
        }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for Gated<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        match Pin::new(&mut self.inner).poll_read(cx, buf) {
            Poll::Ready(r) => {
                if buf.filled().len() > before {
                    let next = Instant::now() + self.idle;
                    self.deadline.as_mut().reset(next);
                }
                Poll::Ready(r)
            }
            Poll::Pending => match self.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "read idle timeout",
                ))),
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Gated<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        data: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, data)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
