//! WHIP (RFC 9725) ingest at `/whip/{room}` and WHEP playback at `/whep/{room}`.
//!
//! Both take an SDP offer with `Authorization: Bearer <token>` and return `201 Created`, a
//! `Location` for the session, and the SDP answer; `DELETE` on the Location ends it. The
//! server is ICE-lite and puts all its candidates in the answer, so trickle ICE (`PATCH`)
//! is answered 405 as the RFC allows. The 201 carries `Link: <url>; rel="ice-server"` headers
//! for the STUN/TURN servers, with TURN credentials, as RFC 9725 §4.6 describes.

use std::sync::Arc;

use axum::extract::rejection::{QueryRejection, StringRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use link::{Subscription, TrackSettings};
use serde::Deserialize;
use signaling::{IceServer, Quality};

use crate::api::{check_basic, validate_identity};
use crate::error::{from_rejection, ApiError};
use crate::state::{App, Via};
use crate::token::Claims;

fn bearer(app: &App, headers: &HeaderMap, room: &str) -> Result<Claims, ApiError> {
    let value = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing Bearer token".into()))?;
    let token = value.strip_prefix("Bearer ").ok_or_else(|| ApiError::Unauthorized("expected a Bearer token".into()))?;
    let claims = app.keys.verify(token.trim())?;
    if claims.room != room {
        return Err(ApiError::Forbidden(format!("token is for room {}, not {room}", claims.room)));
    }
    Ok(claims)
}

fn sdp_body(headers: &HeaderMap, body: Result<String, StringRejection>) -> Result<String, ApiError> {
    let body = body.map_err(|e| from_rejection(e.status(), e.body_text()))?;
    let ct = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    if !ct.to_ascii_lowercase().starts_with("application/sdp") {
        return Err(ApiError::UnsupportedMediaType("Content-Type must be application/sdp".into()));
    }
    Ok(body)
}

/// RFC 9725 §4.6 `Link` headers announcing the STUN/TURN servers (with credentials).
fn ice_links(ice_servers: &[IceServer]) -> Vec<String> {
    let mut links = Vec::new();
    for server in ice_servers {
        let creds = match (&server.username, &server.credential) {
            (Some(u), Some(c)) => format!("; username=\"{u}\"; credential=\"{c}\"; credential-type=\"password\""),
            _ => String::new(),
        };
        for url in &server.urls {
            links.push(format!("<{url}>; rel=\"ice-server\"{creds}"));
        }
    }
    links
}

/// The 201 of a WHIP/WHEP POST: the answer, and the resource URL, whose last segment is the
/// session's secret (ids that other participants see are not enough to end it).
fn created(kind: &str, room: &str, started: Started, ice_servers: &[IceServer]) -> Response {
    let Started { session, resource, answer } = started;
    let mut res = (
        StatusCode::CREATED,
        [(header::LOCATION, format!("/{kind}/{room}/{session}/{resource}")), (header::CONTENT_TYPE, "application/sdp".to_string())],
        answer,
    )
        .into_response();
    for link in ice_links(ice_servers) {
        if let Ok(v) = header::HeaderValue::from_str(&link) {
            res.headers_mut().append(header::LINK, v);
        }
    }
    res
}

/// A WHIP/WHEP session that started: its id, its resource secret and the SDP answer.
struct Started {
    session: String,
    resource: String,
    answer: String,
}

async fn start(
    app: &Arc<App>,
    claims: &Claims,
    via: Via,
    offer: String,
    sub: impl FnOnce() -> Result<Subscription, ApiError>,
    video: TrackSettings,
) -> Result<Started, ApiError> {
    let subscription = sub()?;
    let adm = app.admit(claims, via, None)?;
    match app.start_media(&adm.session, offer, subscription, video).await {
        Ok(answer) => Ok(Started { resource: adm.resource.unwrap_or_default(), session: adm.session, answer }),
        Err(e) => {
            app.remove(&adm.session, true, None);
            Err(e)
        }
    }
}

/// `POST /whip/{room}`: publish into the room.
pub async fn whip_post(State(app): State<Arc<App>>, Path(room): Path<String>, headers: HeaderMap, body: Result<String, StringRejection>) -> Result<Response, ApiError> {
    let claims = bearer(&app, &headers, &room)?;
    if !claims.grants.can_publish {
        return Err(ApiError::Forbidden("token lacks the can_publish grant".into()));
    }
    let offer = sdp_body(&headers, body)?;
    let started = start(&app, &claims, Via::Whip, offer, || Ok(Subscription::None), TrackSettings::default()).await?;
    Ok(created("whip", &room, started, &app.ice_servers(&claims.sub)))
}

/// Query of `POST /whep/{room}`.
#[derive(Debug, Deserialize)]
pub struct WhepQuery {
    /// Identity of the publisher to play (default: the room's first video publisher).
    pub participant: Option<String>,
    /// Highest simulcast layer to play: `low`, `medium` or `high` (default: the best that fits).
    pub layer: Option<String>,
    /// Alias of `layer`.
    pub quality: Option<String>,
    /// Highest frame rate to play (1 to 240), where the publisher sends temporal layers.
    pub max_fps: Option<u32>,
}

impl WhepQuery {
    /// The video settings the player asks for: its `layer` (or `quality`) and `max_fps`, if any.
    pub fn video(&self) -> Result<TrackSettings, ApiError> {
        let parse = |v: &Option<String>| v.as_deref().map(str::parse::<Quality>).transpose().map_err(|e| ApiError::BadRequest(e.to_string()));
        let quality = match (parse(&self.layer)?, parse(&self.quality)?) {
            (Some(a), Some(b)) if a != b => return Err(ApiError::BadRequest("layer and quality disagree".into())),
            (a, b) => a.or(b),
        };
        crate::subscribe::checked(TrackSettings { quality, max_fps: self.max_fps, ..TrackSettings::default() }).map_err(|e| ApiError::BadRequest(e.to_string()))
    }
}

/// `POST /whep/{room}`: play one publisher's audio and video.
pub async fn whep_post(
    State(app): State<Arc<App>>,
    Path(room): Path<String>,
    query: Result<Query<WhepQuery>, QueryRejection>,
    headers: HeaderMap,
    body: Result<String, StringRejection>,
) -> Result<Response, ApiError> {
    let claims = bearer(&app, &headers, &room)?;
    if !claims.grants.can_subscribe {
        return Err(ApiError::Forbidden("token lacks the can_subscribe grant".into()));
    }
    let Query(q) = query.map_err(|e| ApiError::BadRequest(e.body_text()))?;
    let video = q.video()?;
    if let Some(p) = &q.participant {
        validate_identity(p)?;
    }
    let offer = sdp_body(&headers, body)?;
    let (publisher, identity) = app.find_publisher(&room, q.participant.as_deref())?;
    // The player follows the identity: a broadcaster that reconnects (a new session under
    // the same identity) takes over the player's m-lines, its numbering continued.
    let started = start(&app, &claims, Via::Whep, offer, || Ok(Subscription::Only { publisher, identity: Some(identity) }), video).await?;
    Ok(created("whep", &room, started, &app.ice_servers(&claims.sub)))
}

/// `DELETE /whip/{room}/{session}/{secret}` and `/whep/...`: the holder of the resource URL
/// (and of a token for the room) ends its session. A wrong secret is a 404, as for a session
/// that does not exist.
pub async fn delete_session(State(app): State<Arc<App>>, Path((room, session, secret)): Path<(String, String, String)>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    bearer(&app, &headers, &room)?;
    if !app.owns_resource(&room, &session, &secret) {
        return Err(ApiError::NotFound(format!("session {session}")));
    }
    app.remove(&session, true, None);
    Ok(StatusCode::OK)
}

/// `DELETE /whip/{room}/{session}` and `/whep/...` without the secret: the API's
/// credentials (HTTP Basic) only, as `DELETE /api/rooms/{room}/participants/{identity}`.
pub async fn delete_session_admin(State(app): State<Arc<App>>, Path((room, session)): Path<(String, String)>, headers: HeaderMap) -> Result<StatusCode, ApiError> {
    check_basic(&app, &headers)?;
    if app.room_of(&session).as_deref() != Some(room.as_str()) {
        return Err(ApiError::NotFound(format!("session {session}")));
    }
    app.remove(&session, true, None);
    Ok(StatusCode::OK)
}

/// `PATCH` on a session: trickle ICE is not supported by this ICE-lite server.
pub async fn patch_session() -> ApiError {
    ApiError::MethodNotAllowed
}
