//! A Prometheus scrape endpoint for the processes that have no HTTP server of their own (the
//! media plane and the relay): `GET` on any path answers the registry in the OpenMetrics text
//! format. It faces the network as everything else does: at most [`MAX_CONNECTIONS`] at a
//! time (more are closed at once), request headers within [`HEADER_TIMEOUT`], and a
//! connection closed after [`LIFETIME`].

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Scrapes served at once.
pub const MAX_CONNECTIONS: usize = 16;

/// Time a client has to send its request headers.
pub const HEADER_TIMEOUT: Duration = Duration::from_secs(5);

/// Longest life of one connection.
pub const LIFETIME: Duration = Duration::from_secs(30);

/// The OpenMetrics content type.
pub const CONTENT_TYPE: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";

/// Something that writes its metrics into a fresh text at each scrape.
pub trait Source: Send + Sync + 'static {
    /// The registry to encode; called once per scrape, so gauges may be set first.
    fn registry(&self) -> &Registry;
    /// Refreshes whatever is read at scrape time (default: nothing).
    fn refresh(&self) {}
}

/// One metric of `family`. The family's read guard ends here: holding it while asking the
/// same family for another label set would deadlock.
pub fn metric<L, M>(family: &prometheus_client::metrics::family::Family<L, M>, labels: &L) -> M
where
    L: Clone + std::hash::Hash + Eq,
    M: Clone + prometheus_client::metrics::TypedMetric + Default,
{
    family.get_or_create(labels).clone()
}

/// Encodes `source` as exposition text.
pub fn render(source: &dyn Source) -> String {
    source.refresh();
    let mut out = String::new();
    if let Err(e) = prometheus_client::encoding::text::encode(&mut out, source.registry()) {
        tracing::error!(error = %e, "metrics not encoded");
    }
    out
}

fn answer(source: &dyn Source, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let mut res = if req.method() == Method::GET {
        Response::new(Full::new(Bytes::from(render(source))))
    } else {
        let mut r = Response::new(Full::new(Bytes::from_static(b"GET only\n")));
        *r.status_mut() = StatusCode::METHOD_NOT_ALLOWED;
        r
    };
    if res.status() == StatusCode::OK {
        res.headers_mut().insert(hyper::header::CONTENT_TYPE, hyper::header::HeaderValue::from_static(CONTENT_TYPE));
    }
    res
}

/// Serves scrapes on `listener` until the future is dropped.
pub async fn serve(listener: TcpListener, source: Arc<dyn Source>) {
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                tracing::debug!(error = %e, "metrics accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            tracing::debug!(%peer, "metrics connection refused: too many at once");
            continue;
        };
        let source = source.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req: Request<Incoming>| {
                let res = answer(source.as_ref(), &req);
                async move { Ok::<_, Infallible>(res) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .timer(TokioTimer::new())
                .header_read_timeout(HEADER_TIMEOUT)
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service);
            if let Ok(Err(e)) = tokio::time::timeout(LIFETIME, conn).await {
                tracing::debug!(%peer, error = %e, "metrics connection ended");
            }
            drop(slot);
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use prometheus_client::metrics::counter::Counter;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    struct One {
        registry: Registry,
        hits: Counter,
    }

    impl Source for One {
        fn registry(&self) -> &Registry {
            &self.registry
        }
        fn refresh(&self) {
            self.hits.inc();
        }
    }

    async fn get(addr: std::net::SocketAddr, request: &[u8]) -> String {
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(request).await.unwrap();
        let mut out = String::new();
        let _ = tokio::time::timeout(Duration::from_secs(10), s.read_to_string(&mut out)).await;
        out
    }

    #[tokio::test]
    async fn answers_get_with_the_registry_and_refuses_other_methods() {
        let mut registry = Registry::default();
        let hits = Counter::default();
        registry.register("scrapes", "Scrapes so far", hits.clone());
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(One { registry, hits })));
        let first = get(addr, b"GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(first.starts_with("HTTP/1.1 200"), "{first}");
        assert!(first.contains("scrapes_total 1\n") && first.contains("# EOF"), "{first}");
        let second = get(addr, b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").await;
        assert!(second.contains("scrapes_total 2\n"), "refreshed at each scrape: {second}");
        let post = get(addr, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").await;
        assert!(post.starts_with("HTTP/1.1 405"), "{post}");
    }

    #[tokio::test]
    async fn a_client_that_never_sends_its_headers_is_closed() {
        let registry = Registry::default();
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(serve(listener, Arc::new(One { registry, hits: Counter::default() })));
        let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
        s.write_all(b"GET / HTTP/1.1\r\n").await.unwrap();
        let mut buf = Vec::new();
        let read = tokio::time::timeout(HEADER_TIMEOUT + Duration::from_secs(5), s.read_to_end(&mut buf)).await;
        assert!(read.is_ok(), "closed within the header timeout");
    }
}
