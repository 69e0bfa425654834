//! A minimal HTTP/1.1 client (plain or TLS) for signaling: the control plane's REST API,
//! WHIP/WHEP endpoints and Janus's HTTP API. One request per connection; signaling is
//! never on the media path.

use std::sync::Arc;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper::Request;
use rustls::pki_types::ServerName;
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;

/// Errors talking HTTP.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    /// Connecting or TLS failed.
    #[error("cannot reach {0}: {1}")]
    Connect(String, String),
    /// The URL is not usable.
    #[error("bad URL {0:?}: {1}")]
    Url(String, &'static str),
    /// The request failed.
    #[error("request failed: {0}")]
    Request(String),
    /// The server answered with an unexpected status.
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

/// An HTTP origin: scheme, host and port, with the TLS configuration for `https`.
#[derive(Clone)]
pub struct Origin {
    /// Host (name or address).
    pub host: String,
    /// Port.
    pub port: u16,
    /// TLS client configuration; `None` for plain HTTP.
    pub tls: Option<Arc<rustls::ClientConfig>>,
}

/// A response: status, `Location` header and body.
#[derive(Debug)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// `Location` header, if any.
    pub location: Option<String>,
    /// Body as text.
    pub body: String,
}

impl Origin {
    /// Splits `http(s)://host:port/path` into the origin and the path.
    pub fn parse(url: &str, tls: Option<Arc<rustls::ClientConfig>>) -> Result<(Origin, String), HttpError> {
        let (rest, secure, default_port) = if let Some(r) = url.strip_prefix("https://") {
            (r, true, 443)
        } else if let Some(r) = url.strip_prefix("http://") {
            (r, false, 80)
        } else {
            return Err(HttpError::Url(url.into(), "must start with http:// or https://"));
        };
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], rest[i..].to_string()),
            None => (rest, "/".to_string()),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h.to_string(), p.parse::<u16>().map_err(|_| HttpError::Url(url.into(), "bad port"))?),
            None => (authority.to_string(), default_port),
        };
        if host.is_empty() {
            return Err(HttpError::Url(url.into(), "no host"));
        }
        let tls = if secure { Some(tls.ok_or(HttpError::Url(url.into(), "https needs --ca"))?) } else { None };
        Ok((Origin { host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port, tls }, path))
    }

    /// Sends one request and returns the response, whatever its status.
    pub async fn send(&self, method: &str, path: &str, headers: &[(&str, &str)], body: String) -> Result<Response, HttpError> {
        let err = |e: String| HttpError::Connect(format!("{}:{}", self.host, self.port), e);
        let tcp = TcpStream::connect((self.host.as_str(), self.port)).await.map_err(|e| err(e.to_string()))?;
        let _ = tcp.set_nodelay(true);
        let req = Request::builder().method(method).uri(path).header("host", format!("{}:{}", self.host, self.port));
        let req = headers.iter().fold(req, |r, (k, v)| r.header(*k, *v));
        let req = req.body(Full::new(Bytes::from(body))).map_err(|e| HttpError::Request(e.to_string()))?;
        let res = match &self.tls {
            Some(tls) => {
                let name = ServerName::try_from(self.host.clone()).map_err(|e| err(e.to_string()))?;
                let stream = TlsConnector::from(tls.clone()).connect(name, tcp).await.map_err(|e| err(e.to_string()))?;
                exchange(hyper_util::rt::TokioIo::new(stream), req).await?
            }
            None => exchange(hyper_util::rt::TokioIo::new(tcp), req).await?,
        };
        Ok(res)
    }
}

async fn exchange<I>(io: I, req: Request<Full<Bytes>>) -> Result<Response, HttpError>
where
    I: hyper::rt::Read + hyper::rt::Write + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(io).await.map_err(|e| HttpError::Request(e.to_string()))?;
    tokio::task::spawn_local(async move {
        let _ = conn.await;
    });
    let res = sender.send_request(req).await.map_err(|e| HttpError::Request(e.to_string()))?;
    let status = res.status().as_u16();
    let location = res.headers().get("location").and_then(|v| v.to_str().ok()).map(str::to_string);
    let bytes = res.into_body().collect().await.map_err(|e| HttpError::Request(e.to_string()))?.to_bytes();
    Ok(Response { status, location, body: String::from_utf8_lossy(&bytes).to_string() })
}

/// The control plane's REST API with Basic credentials.
#[derive(Clone)]
pub struct Api {
    /// Where it is.
    pub origin: Origin,
    /// `Basic ...` header.
    pub basic: String,
}

impl Api {
    /// Sends one JSON request with the Basic credentials.
    pub async fn call(&self, method: &str, path: &str, body: Option<serde_json::Value>) -> Result<(u16, String), HttpError> {
        let headers = [("authorization", self.basic.as_str()), ("content-type", "application/json")];
        let r = self.origin.send(method, path, &headers, body.map(|b| b.to_string()).unwrap_or_default()).await?;
        Ok((r.status, r.body))
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
