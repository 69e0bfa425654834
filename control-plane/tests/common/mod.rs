//! What the route tests share: an app with a node whose core is the real SFU, requests through
//! the router, tokens and offers.

#![allow(dead_code, unused_imports)]

pub use std::net::SocketAddr;
pub use std::sync::{Arc, Mutex};
pub use std::time::{Duration, Instant};

pub use axum::body::Body;
pub use axum::http::{header, Method, Request, StatusCode};
pub use base64::Engine;
pub use control_plane::server::router;
pub use control_plane::state::{App, Settings};
pub use control_plane::token::{Grants, TokenKeys};
pub use futures_util::{SinkExt, StreamExt};
pub use http_body_util::BodyExt;
pub use link::{Command, Quality, Subscription, TrackSettings};
pub use media_plane::sfu::{Core, CoreConfig};
pub use str0m::media::{Direction, MediaKind};
pub use tower::ServiceExt;

pub const KEY: &str = "APItestkey";
pub const SECRET: &str = "test-secret-test-secret-test-secret-0123";
pub const INVITE: &str = "invite-secret-0123456789";

/// Every command the control plane sent the node, in order.
pub type Sent = Arc<Mutex<Vec<Command>>>;

/// An app with one in-process node whose core 0 is the real SFU state machine.
pub fn app_with_node(settings: Settings) -> Arc<App> {
    app_with_recorded_node(settings).0
}

/// [`app_with_node`], also recording the commands the node receives.
pub fn app_with_recorded_node(settings: Settings) -> (Arc<App>, Sent) {
    media_plane::crypto::install();
    let app = App::new(settings, KEY.into(), SECRET.into(), "node-secret-node-secret".into());
    let (mut rx, _) = app.register_node("node-1", vec!["127.0.0.1".into()], vec![40000], 100);
    let weak = Arc::downgrade(&app);
    let sent = Sent::default();
    let record = sent.clone();
    tokio::spawn(async move {
        let addr: SocketAddr = "127.0.0.1:40000".parse().unwrap();
        let mut core = Core::new(CoreConfig { index: 0, local: addr, candidates: vec![addr], capacity: 100, connect_timeout: Duration::from_secs(30), cores: 1, nack_history: media_plane::sfu::NACK_HISTORY, bwe_initial: media_plane::sfu::BWE_INITIAL });
        while let Some(cmd) = rx.recv().await {
            record.lock().unwrap().push(cmd.clone());
            core.handle_command(Instant::now(), cmd);
            let Some(app) = weak.upgrade() else { break };
            let events: Vec<_> = core.take_events().collect();
            for e in events {
                app.node_event("node-1", e);
            }
        }
    });
    (app, sent)
}

/// The first recorded command `pick` accepts, waiting up to 5 s for the node to receive it.
pub async fn wait_sent<T>(sent: &Sent, pick: impl Fn(&Command) -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(t) = sent.lock().unwrap().iter().find_map(&pick) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node never received the command; sent: {:?}", sent.lock().unwrap());
}

pub fn settings() -> Settings {
    let turn = control_plane::config::TurnConfig { secret: "turn-secret".into(), host: "turn.example.test".into(), port: 3478, tls_port: 5349, ttl: 600 };
    Settings { auto_create_rooms: true, default_max_participants: 0, open_join: true, invite: Some(INVITE.into()), demo_token_ttl: 600, turn: Some(turn), core_busy_limit: 850, webhooks: Vec::new() }
}

pub fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}")))
}

pub struct Res {
    pub status: StatusCode,
    pub headers: axum::http::HeaderMap,
    pub body: String,
}

impl Res {
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    pub fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

pub async fn call(app: &Arc<App>, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Res {
    call_from(app, None, method, uri, headers, body).await
}

/// [`call`] as if it came over a connection from `from` (what the HTTPS listener records).
pub async fn call_from(app: &Arc<App>, from: Option<std::net::IpAddr>, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Res {
    let mut req = Request::builder().method(method).uri(uri);
    if let Some(ip) = from {
        req = req.extension(axum::extract::ConnectInfo(SocketAddr::new(ip, 40_000)));
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = router(app.clone()).oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).to_string();
    Res { status, headers, body }
}

pub async fn healthy(app: &Arc<App>) {
    let r = call(app, Method::GET, "/healthz", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "server must stay healthy");
}

/// A real browser-like SDP offer from a str0m client.
pub fn offer(publish: bool) -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let dir = if publish { Direction::SendOnly } else { Direction::RecvOnly };
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

pub fn token(room: &str, identity: &str, grants: Grants, ttl: u64) -> String {
    TokenKeys::new(KEY, SECRET).mint(room, identity, grants, ttl).unwrap()
}
