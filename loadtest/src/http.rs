//! The control plane's HTTPS API as a client: one request per connection (rooms and
//! tokens are made once per peer, never on the media path).

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Errors talking to the control plane.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting or TLS failed.
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with an error status.
    #[error("{method} {path}: HTTP {status}: {body}")]
    Status {
        /// Method.
        method: String,
        /// Path.
        path: String,
        /// Status.
        status: u16,
        /// Body.
        body: String,
    },
}

/// Where the control plane is and how to trust and authenticate to it.
#[derive(Clone)]
pub struct Target {
    /// Host (name or address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS client configuration.
    pub tls: Arc<rustls::ClientConfig>,
    /// `Basic ...` header for the REST API.
    pub basic: String,
}

impl Target {
    async fn tls(&self) -> Result<tokio_rustls::client::TlsStream<TcpStream>, HttpError> {
        let err = |e: String| HttpError::Connect(format!("{}:{}", self.host, self.port), e);
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| err(e.to_string()))?;
        let name = ServerName::try_from(self.host.clone()).map_err(|e| err(e.to_string()))?;
        TlsConnector::from(self.tls.clone()).connect(name, tcp).await.map_err(|e| err(e.to_string()))
    }

    /// Sends one request with the Basic credentials; returns (status, body).
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<(u16, String), HttpError> {
        let stream = self.tls().await?;
        let io = hyper_util::rt::TokioIo::new(stream);
        let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| HttpError::Request(e.to_string()))?;
        tokio::spawn(conn);
        let payload = body.map(|b| b.to_string()).unwrap_or_default();
        let req = Request::builder()
            .method(method)
            .uri(path)
            .header("host", format!("{}:{}", self.host, self.port))
            .header("authorization", &self.basic)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from(payload)))
            .map_err(|e| HttpError::Request(e.to_string()))?;
        let res = sender.send_request(req).await.map_err(|e| HttpError::Request(e.to_string()))?;
        let status = res.status().as_u16();
        let bytes = res.into_body().collect().await.map_err(|e| HttpError::Request(e.to_string()))?.to_bytes();
        Ok((status, String::from_utf8_lossy(&bytes).to_string()))
    }

    /// Creates a room; an existing room is fine.
    pub async fn ensure_room(&self, room: &str) -> Result<(), HttpError> {
        let (status, body) = self.call("POST", "/api/rooms", Some(serde_json::json!({ "name": room }))).await?;
        match status {
            201 | 409 => Ok(()),
            _ => Err(HttpError::Status { method: "POST".into(), path: "/api/rooms".into(), status, body }),
        }
    }

    /// Mints an access token.
    pub async fn token(&self, room: &str, identity: &str, publish: bool) -> Result<String, HttpError> {
        let path = format!("/api/rooms/{room}/tokens");
        let body = serde_json::json!({ "identity": identity, "can_publish": publish, "can_subscribe": true, "ttl_seconds": 3600 });
        let (status, text) = self.call("POST", &path, Some(body)).await?;
        if status != 201 {
            return Err(HttpError::Status { method: "POST".into(), path, status, body: text });
        }
        serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v["token"].as_str().map(str::to_string))
            .ok_or_else(|| HttpError::Request("token missing from the response".into()))
    }
}
