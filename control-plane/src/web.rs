//! The web app (plain JavaScript modules embedded in the binary) and its token endpoint.

use std::sync::Arc;

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::IntoResponse;
use axum::Json;
use serde::Deserialize;

use crate::api::{validate_identity, ApiJson};
use crate::error::ApiError;
use crate::secret;
use crate::state::App;

const INDEX: &str = include_str!("../web/index.html");
const APP_JS: &str = include_str!("../web/app.js");
const STYLE: &str = include_str!("../web/style.css");

/// `GET /`.
pub async fn index() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX)
}

/// `GET /app.js`.
pub async fn app_js() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/javascript; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], APP_JS)
}

/// `GET /style.css`.
pub async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], STYLE)
}

/// Body of `POST /app/token`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct JoinForm {
    /// Display name, used as identity.
    pub name: String,
    /// Room.
    pub room: String,
    /// The invite secret from the app's URL (`?invite=`), when the server asks for one.
    #[serde(default)]
    pub invite: Option<String>,
}

/// `POST /app/token`: lets the web app join without an API secret, when `--open-join` is on.
pub async fn token(State(app): State<Arc<App>>, body: Result<ApiJson<JoinForm>, ApiError>) -> Result<impl IntoResponse, ApiError> {
    if !app.settings.open_join {
        return Err(ApiError::Forbidden("open join is disabled; get a token from your application server".into()));
    }
    let ApiJson(form) = body?;
    if let Some(invite) = &app.settings.invite {
        let given = form.invite.as_deref().unwrap_or_default();
        if !secret::equal(given.as_bytes(), invite.as_bytes()) {
            return Err(ApiError::Unauthorized("this server needs the invite link: open the URL it printed at start".into()));
        }
    }
    validate_identity(&form.name)?;
    let token = app.keys.mint_open(&form.room, &form.name, app.settings.demo_token_ttl)?;
    Ok((StatusCode::CREATED, Json(serde_json::json!({ "token": token }))))
}
