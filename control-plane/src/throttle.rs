//! Rate limits per source address on the HTTP routes: failed credential checks (any 401)
//! and tokens minted by the open join. Over the limit, a request gets `429` before any work.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use axum::extract::{ConnectInfo, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use limits::PerSource;
use crate::state::App;

/// Failed credential checks a source may make at once, then per second.
pub const FAILURE_BURST: u32 = 20;
/// See [`FAILURE_BURST`].
pub const FAILURES_PER_SECOND: u32 = 2;
/// Open-join tokens a source may mint at once (an office behind one address joining a
/// meeting), then per second.
pub const MINT_BURST: u32 = 60;
/// See [`MINT_BURST`].
pub const MINTS_PER_SECOND: u32 = 5;
/// Sources each limiter remembers.
const SOURCES: usize = 65_536;

/// The limiters, shared by every request.
#[derive(Debug)]
pub struct Throttles {
    failures: Mutex<PerSource>,
    mints: Mutex<PerSource>,
}

impl Default for Throttles {
    fn default() -> Self {
        Throttles {
            failures: Mutex::new(PerSource::new(FAILURE_BURST, FAILURES_PER_SECOND, SOURCES)),
            mints: Mutex::new(PerSource::new(MINT_BURST, MINTS_PER_SECOND, SOURCES)),
        }
    }
}

/// The peer address of a request (unspecified when served without connection info, as in
/// in-process tests).
fn source(req: &Request) -> IpAddr {
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip()).unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED))
}

fn lock(m: &Mutex<PerSource>) -> std::sync::MutexGuard<'_, PerSource> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// Middleware on every route: a source whose credential checks failed too often gets `429`
/// until its bucket refills; each `401` answer takes a token.
pub async fn failures(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let ip = source(&req);
    if !lock(&app.throttles.failures).would_pass(ip, Instant::now()) {
        return ApiError::TooManyRequests.into_response();
    }
    let res = next.run(req).await;
    if res.status() == StatusCode::UNAUTHORIZED {
        lock(&app.throttles.failures).take(ip, Instant::now());
    }
    res
}

/// Middleware on `/app/token`: each request takes a token from its source's bucket.
pub async fn mints(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    if !lock(&app.throttles.mints).take(source(&req), Instant::now()) {
        return ApiError::TooManyRequests.into_response();
    }
    next.run(req).await
}
