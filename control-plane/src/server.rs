//! The HTTP router and the HTTPS listener.

use std::sync::Arc;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, Method};
use axum::routing::{delete, get, post};
use axum::{middleware, Router};
use tower_http::cors::{Any, CorsLayer};

use crate::error::ApiError;
use crate::state::App;
use crate::{api, nodes, observe, signal, throttle, web, whip};

/// `GET /healthz`: liveness, with the number of registered media-plane nodes.
async fn healthz(axum::extract::State(app): axum::extract::State<Arc<App>>) -> axum::Json<serde_json::Value> {
    let nodes = app.lock().nodes.len();
    axum::Json(serde_json::json!({ "status": "ok", "nodes": nodes }))
}

/// Largest request body (JSON or SDP).
pub const MAX_BODY: usize = 64 * 1024;

/// The whole HTTP surface.
pub fn router(app: Arc<App>) -> Router {
    let cors = CorsLayer::new()
        .allow_origin(Any)
        .allow_methods([Method::POST, Method::DELETE, Method::PATCH, Method::OPTIONS])
        .allow_headers([header::AUTHORIZATION, header::CONTENT_TYPE, HeaderName::from_static("if-match")])
        .expose_headers([header::LOCATION, header::LINK, header::ETAG]);
    let media = Router::new()
        .route("/whip/{room}", post(whip::whip_post))
        .route("/whip/{room}/{session}", delete(whip::delete_session_admin).patch(whip::patch_session))
        .route("/whip/{room}/{session}/{secret}", delete(whip::delete_session).patch(whip::patch_session))
        .route("/whep/{room}", post(whip::whep_post))
        .route("/whep/{room}/{session}", delete(whip::delete_session_admin).patch(whip::patch_session))
        .route("/whep/{room}/{session}/{secret}", delete(whip::delete_session).patch(whip::patch_session))
        .layer(cors);
    Router::new()
        .route("/", get(web::index))
        .route("/app.js", get(web::app_js))
        .route("/style.css", get(web::style))
        .route("/app/token", post(web::token).layer(middleware::from_fn_with_state(app.clone(), throttle::mints)))
        .route("/healthz", get(healthz))
        .route("/metrics", get(observe::serve))
        .route("/ws", get(signal::ws))
        .route(link::LINK_PATH, get(nodes::link))
        .route("/api/nodes", get(api::list_nodes))
        .route("/api/rooms", post(api::create_room).get(api::list_rooms))
        .route("/api/rooms/{room}", get(api::get_room).delete(api::delete_room))
        .route("/api/rooms/{room}/tokens", post(api::create_token))
        .route("/api/rooms/{room}/participants/{identity}", delete(api::kick))
        .merge(media)
        .fallback(|| async { ApiError::NotFound("resource".into()) })
        .layer(middleware::from_fn_with_state(app.clone(), observe::track))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .layer(middleware::from_fn_with_state(app.clone(), throttle::failures))
        .with_state(app)
}
