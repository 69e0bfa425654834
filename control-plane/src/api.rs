//! The REST API under `/api`, authenticated with HTTP Basic `key:secret`.

use std::sync::Arc;

use axum::extract::rejection::JsonRejection;
use axum::extract::{FromRequest, Path, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use base64::Engine;
use serde::de::DeserializeOwned;
use serde::Deserialize;

use crate::error::{from_rejection, ApiError};
use crate::secret;
use crate::signal::{ErrorCode, ServerMsg};
use crate::state::{App, RoomView};
use crate::token::Grants;

/// JSON body whose rejections render as [`ApiError`].
pub struct ApiJson<T>(pub T);

impl<T: DeserializeOwned, S: Send + Sync> FromRequest<S> for ApiJson<T> {
    type Rejection = ApiError;
    async fn from_request(req: Request, state: &S) -> Result<Self, Self::Rejection> {
        match Json::<T>::from_request(req, state).await {
            Ok(Json(v)) => Ok(ApiJson(v)),
            Err(e) => Err(json_rejection(e)),
        }
    }
}

fn json_rejection(e: JsonRejection) -> ApiError {
    from_rejection(e.status(), e.body_text())
}

/// Checks HTTP Basic credentials against the API key and secret.
pub fn check_basic(app: &App, headers: &HeaderMap) -> Result<(), ApiError> {
    let value = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| ApiError::Unauthorized("missing Basic credentials".into()))?;
    let encoded = value.strip_prefix("Basic ").ok_or_else(|| ApiError::Unauthorized("expected Basic credentials".into()))?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .map_err(|_| ApiError::Unauthorized("malformed Basic credentials".into()))?;
    let expected = format!("{}:{}", app.api_key, app.api_secret);
    if secret::equal(&decoded, expected.as_bytes()) {
        Ok(())
    } else {
        Err(ApiError::Unauthorized("bad API key or secret".into()))
    }
}

/// Body of `POST /api/rooms`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateRoom {
    /// Room name.
    pub name: String,
    /// Participant limit (0 or absent: none).
    #[serde(default)]
    pub max_participants: u32,
}

/// `POST /api/rooms`.
pub async fn create_room(State(app): State<Arc<App>>, headers: HeaderMap, body: Result<ApiJson<CreateRoom>, ApiError>) -> Result<impl IntoResponse, ApiError> {
    check_basic(&app, &headers)?;
    let ApiJson(body) = body?;
    let view = app.create_room(&body.name, body.max_participants)?;
    Ok((StatusCode::CREATED, Json(view)))
}

/// `GET /api/rooms`.
pub async fn list_rooms(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<Vec<RoomView>>, ApiError> {
    check_basic(&app, &headers)?;
    Ok(Json(app.lock().rooms.values().map(|r| r.view(false)).collect()))
}

/// `GET /api/rooms/{room}`: the room with participants and tracks.
pub async fn get_room(State(app): State<Arc<App>>, headers: HeaderMap, Path(room): Path<String>) -> Result<Json<RoomView>, ApiError> {
    check_basic(&app, &headers)?;
    let st = app.lock();
    let r = st.rooms.get(&room).ok_or(ApiError::RoomNotFound(room))?;
    Ok(Json(r.view(true)))
}

/// `DELETE /api/rooms/{room}`: disconnects everyone and deletes the room.
pub async fn delete_room(State(app): State<Arc<App>>, headers: HeaderMap, Path(room): Path<String>) -> Result<StatusCode, ApiError> {
    check_basic(&app, &headers)?;
    app.delete_room(&room)?;
    Ok(StatusCode::NO_CONTENT)
}

/// Body of `POST /api/rooms/{room}/tokens`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TokenRequest {
    /// Participant identity.
    pub identity: String,
    /// May publish (default true).
    #[serde(default = "yes")]
    pub can_publish: bool,
    /// May subscribe (default true).
    #[serde(default = "yes")]
    pub can_subscribe: bool,
    /// Receives everyone's tracks without subscribing (default true).
    #[serde(default = "yes")]
    pub auto_subscribe: bool,
    /// Lifetime in seconds (default 6 hours).
    #[serde(default = "default_ttl")]
    pub ttl_seconds: u64,
}

fn yes() -> bool {
    true
}

fn default_ttl() -> u64 {
    6 * 3600
}

/// Validates an identity.
pub fn validate_identity(identity: &str) -> Result<(), ApiError> {
    if identity.is_empty() || identity.len() > 128 || identity.chars().any(char::is_control) {
        return Err(ApiError::BadRequest("identity must be 1-128 printable characters".into()));
    }
    Ok(())
}

/// `POST /api/rooms/{room}/tokens`: mints an access token for the room.
pub async fn create_token(
    State(app): State<Arc<App>>,
    headers: HeaderMap,
    Path(room): Path<String>,
    body: Result<ApiJson<TokenRequest>, ApiError>,
) -> Result<impl IntoResponse, ApiError> {
    check_basic(&app, &headers)?;
    let ApiJson(body) = body?;
    validate_identity(&body.identity)?;
    if body.ttl_seconds == 0 || body.ttl_seconds > crate::token::MAX_TTL {
        return Err(ApiError::BadRequest("ttl_seconds must be between 1 and 2592000".into()));
    }
    if !app.lock().rooms.contains_key(&room) {
        return Err(ApiError::RoomNotFound(room));
    }
    let grants = Grants { can_publish: body.can_publish, can_subscribe: body.can_subscribe, auto_subscribe: body.auto_subscribe };
    let token = app.keys.mint(&room, &body.identity, grants, body.ttl_seconds)?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "token": token }))))
}

/// `DELETE /api/rooms/{room}/participants/{identity}`: disconnects every session of that identity (its WHEP players included) and revokes its tokens issued so far.
pub async fn kick(State(app): State<Arc<App>>, headers: HeaderMap, Path((room, identity)): Path<(String, String)>) -> Result<StatusCode, ApiError> {
    check_basic(&app, &headers)?;
    let sessions: Vec<String> = {
        let st = app.lock();
        let r = st.rooms.get(&room).ok_or_else(|| ApiError::RoomNotFound(room.clone()))?;
        r.participants.values().filter(|p| p.is_of(&identity)).map(|p| p.session.clone()).collect()
    };
    if sessions.is_empty() {
        return Err(ApiError::NotFound(format!("participant {identity}")));
    }
    // Its tokens issued so far cannot bring it back (docs/SECURITY.md, "Tokens after a kick").
    app.lock().revocations.kick(&room, &identity, crate::token::unix_now());
    for s in sessions {
        app.remove(&s, true, Some(ServerMsg::error(ErrorCode::Kicked, "removed by the server")));
    }
    Ok(StatusCode::NO_CONTENT)
}

/// `GET /api/nodes`: registered media-plane nodes with per-core load.
pub async fn list_nodes(State(app): State<Arc<App>>, headers: HeaderMap) -> Result<Json<serde_json::Value>, ApiError> {
    check_basic(&app, &headers)?;
    let st = app.lock();
    let nodes: Vec<_> = st
        .nodes
        .iter()
        .map(|(id, n)| serde_json::json!({ "id": id, "addresses": n.addresses, "capacity_per_core": n.capacity, "cores": n.cores }))
        .collect();
    Ok(Json(serde_json::Value::Array(nodes)))
}
