//! `/metrics` and the middleware that counts requests: the HTTP side of [`crate::metrics`].

use std::sync::Arc;
use std::time::Instant;

use axum::extract::{MatchedPath, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;
use crate::metrics::{CoreSample, HttpLabels, Live, RouteLabels};
use crate::state::{App, State as Shared};

/// Middleware: counts each request and its latency under its route template.
pub async fn track(State(app): State<Arc<App>>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().map(|m| m.as_str().to_string()).unwrap_or_else(|| "unmatched".into());
    let method = req.method().as_str().to_string();
    let started = Instant::now();
    let res = next.run(req).await;
    app.metrics.http_seconds.get_or_create(&RouteLabels { route: route.clone() }).observe(started.elapsed().as_secs_f64());
    app.metrics.http_requests.get_or_create(&HttpLabels { route, method, status: res.status().as_u16() }).inc();
    res
}

/// `GET /metrics`: the Prometheus text format, for the API key and secret (HTTP Basic).
pub async fn serve(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Response, ApiError> {
    crate::api::check_basic(&app, &headers)?;
    let live = live(&app.lock());
    let text = app.metrics.render(&live);
    match text {
        Ok(t) => Ok(([(header::CONTENT_TYPE, "application/openmetrics-text; version=1.0.0; charset=utf-8")], t).into_response()),
        Err(_) => Ok(StatusCode::INTERNAL_SERVER_ERROR.into_response()),
    }
}

/// The state's share of the metrics.
fn live(st: &Shared) -> Live {
    Live {
        rooms: st.rooms.len(),
        sessions: st.rooms.values().flat_map(|r| r.participants.values()).map(|p| p.via).collect(),
        nodes: st.nodes.len(),
        cores: st
            .nodes
            .iter()
            .flat_map(|(node, n)| {
                n.cores.iter().enumerate().map(move |(core, c)| CoreSample {
                    node: node.clone(),
                    core,
                    sessions: c.sessions,
                    rx_pps: c.rx_pps,
                    tx_pps: c.tx_pps,
                    busy_permille: c.busy_permille,
                    tx_total: c.tx_total,
                })
            })
            .collect(),
    }
}
