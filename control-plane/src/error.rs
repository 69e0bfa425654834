//! The one error type of the HTTP API, rendered as JSON `{"error", "message"}` with its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;

/// Every error the API returns.
#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    /// Malformed JSON, query or parameters.
    #[error("{0}")]
    BadRequest(String),
    /// Malformed or unacceptable SDP.
    #[error("{0}")]
    BadSdp(String),
    /// Missing or bad credentials.
    #[error("{0}")]
    Unauthorized(String),
    /// The token's expiry has passed.
    #[error("token expired")]
    TokenExpired,
    /// The credentials lack a grant.
    #[error("{0}")]
    Forbidden(String),
    /// Unknown room.
    #[error("room {0} not found")]
    RoomNotFound(String),
    /// Unknown participant or session.
    #[error("{0} not found")]
    NotFound(String),
    /// The room already exists.
    #[error("room {0} already exists")]
    RoomExists(String),
    /// The room has reached its participant limit.
    #[error("room {0} is full")]
    RoomFull(String),
    /// The request body is larger than allowed.
    #[error("request body too large")]
    PayloadTooLarge,
    /// The content type is not what the endpoint takes.
    #[error("{0}")]
    UnsupportedMediaType(String),
    /// No media-plane node is registered.
    #[error("no media-plane node available")]
    NoMediaNode,
    /// Every media core that could take the participant is full or too busy.
    #[error("no media capacity: every media core is full or too busy")]
    NoCapacity,
    /// The media plane did not answer in time.
    #[error("media plane did not answer in time")]
    MediaTimeout,
    /// The method is not supported on this resource.
    #[error("method not allowed")]
    MethodNotAllowed,
}

impl ApiError {
    /// HTTP status and machine-readable code.
    pub fn parts(&self) -> (StatusCode, &'static str) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, "bad_request"),
            ApiError::BadSdp(_) => (StatusCode::BAD_REQUEST, "bad_sdp"),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, "unauthorized"),
            ApiError::TokenExpired => (StatusCode::UNAUTHORIZED, "token_expired"),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, "forbidden"),
            ApiError::RoomNotFound(_) => (StatusCode::NOT_FOUND, "room_not_found"),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, "not_found"),
            ApiError::RoomExists(_) => (StatusCode::CONFLICT, "room_exists"),
            ApiError::RoomFull(_) => (StatusCode::CONFLICT, "room_full"),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, "unsupported_media_type"),
            ApiError::NoMediaNode => (StatusCode::SERVICE_UNAVAILABLE, "no_media_node"),
            ApiError::NoCapacity => (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"),
            ApiError::MediaTimeout => (StatusCode::GATEWAY_TIMEOUT, "media_timeout"),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, "method_not_allowed"),
        }
    }

    /// Machine-readable code, also used on the signaling WebSocket.
    pub fn code(&self) -> &'static str {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut res = (status, Json(serde_json::json!({ "error": code, "message": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Basic realm=\"conference\", Bearer"));
        }
        res
    }
}

/// Maps a body extractor's rejection to 413 or 400.
pub fn from_rejection(status: StatusCode, text: String) -> ApiError {
    if status == StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::PayloadTooLarge
    } else if status == StatusCode::UNSUPPORTED_MEDIA_TYPE {
        ApiError::UnsupportedMediaType(text)
    } else {
        ApiError::BadRequest(text)
    }
}
