//! The one error type of the HTTP API, rendered as JSON `{"error", "message"}` with its status.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use signaling::ErrorCode;

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
    /// A subscription names a track not published in the subscriber's room.
    #[error("track {0} not found in this room")]
    TrackNotFound(String),
    /// Subscription settings out of range.
    #[error("{0}")]
    BadSettings(String),
    /// The token was revoked by a kick of its identity.
    #[error("this token was revoked: its identity was removed from the room")]
    TokenRevoked,
    /// The source address is over a rate limit.
    #[error("too many requests from this address; try again later")]
    TooManyRequests,
}

impl ApiError {
    /// HTTP status and machine-readable code.
    pub fn parts(&self) -> (StatusCode, ErrorCode) {
        match self {
            ApiError::BadRequest(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadRequest),
            ApiError::BadSdp(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadSdp),
            ApiError::Unauthorized(_) => (StatusCode::UNAUTHORIZED, ErrorCode::Unauthorized),
            ApiError::TokenExpired => (StatusCode::UNAUTHORIZED, ErrorCode::TokenExpired),
            ApiError::Forbidden(_) => (StatusCode::FORBIDDEN, ErrorCode::Forbidden),
            ApiError::RoomNotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::RoomNotFound),
            ApiError::NotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::NotFound),
            ApiError::RoomExists(_) => (StatusCode::CONFLICT, ErrorCode::RoomExists),
            ApiError::RoomFull(_) => (StatusCode::CONFLICT, ErrorCode::RoomFull),
            ApiError::PayloadTooLarge => (StatusCode::PAYLOAD_TOO_LARGE, ErrorCode::PayloadTooLarge),
            ApiError::UnsupportedMediaType(_) => (StatusCode::UNSUPPORTED_MEDIA_TYPE, ErrorCode::UnsupportedMediaType),
            ApiError::NoMediaNode => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoMediaNode),
            ApiError::NoCapacity => (StatusCode::SERVICE_UNAVAILABLE, ErrorCode::NoCapacity),
            ApiError::MediaTimeout => (StatusCode::GATEWAY_TIMEOUT, ErrorCode::MediaTimeout),
            ApiError::MethodNotAllowed => (StatusCode::METHOD_NOT_ALLOWED, ErrorCode::MethodNotAllowed),
            ApiError::TrackNotFound(_) => (StatusCode::NOT_FOUND, ErrorCode::TrackNotFound),
            ApiError::BadSettings(_) => (StatusCode::BAD_REQUEST, ErrorCode::BadSettings),
            ApiError::TokenRevoked => (StatusCode::UNAUTHORIZED, ErrorCode::TokenRevoked),
            ApiError::TooManyRequests => (StatusCode::TOO_MANY_REQUESTS, ErrorCode::TooManyRequests),
        }
    }

    /// Machine-readable code, also used on the signaling WebSocket.
    pub fn code(&self) -> ErrorCode {
        self.parts().1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let (status, code) = self.parts();
        let mut res = (status, Json(serde_json::json!({ "error": code.as_str(), "message": self.to_string() }))).into_response();
        if status == StatusCode::UNAUTHORIZED {
            res.headers_mut().insert("www-authenticate", axum::http::HeaderValue::from_static("Basic realm=\"conference\", Bearer"));
        }
        if status == StatusCode::TOO_MANY_REQUESTS {
            res.headers_mut().insert("retry-after", axum::http::HeaderValue::from_static("1"));
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
