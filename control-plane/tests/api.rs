//! REST, token, WHIP/WHEP and signaling tests through the real router (axum `oneshot`), with
//! the real SFU core of the media plane answering joins as a node would over the link.

use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Body;
use axum::http::{header, Method, Request, StatusCode};
use base64::Engine;
use control_plane::server::router;
use control_plane::state::{App, Settings};
use control_plane::token::{Grants, TokenKeys};
use futures_util::{SinkExt, StreamExt};
use http_body_util::BodyExt;
use link::{Command, Quality, Subscription, TrackSettings};
use media_plane::sfu::{Core, CoreConfig};
use str0m::media::{Direction, MediaKind};
use tower::ServiceExt;

const KEY: &str = "APItestkey";
const SECRET: &str = "test-secret-test-secret-test-secret-0123";

/// Every command the control plane sent the node, in order.
type Sent = Arc<Mutex<Vec<Command>>>;

/// An app with one in-process node whose core 0 is the real SFU state machine.
fn app_with_node(settings: Settings) -> Arc<App> {
    app_with_recorded_node(settings).0
}

/// [`app_with_node`], also recording the commands the node receives.
fn app_with_recorded_node(settings: Settings) -> (Arc<App>, Sent) {
    str0m::crypto::from_feature_flags().install_process_default();
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
async fn wait_sent<T>(sent: &Sent, pick: impl Fn(&Command) -> Option<T>) -> T {
    for _ in 0..500 {
        if let Some(t) = sent.lock().unwrap().iter().find_map(&pick) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("the node never received the command; sent: {:?}", sent.lock().unwrap());
}

fn settings() -> Settings {
    let turn = control_plane::config::TurnConfig { secret: "turn-secret".into(), host: "turn.example.test".into(), port: 3478, tls_port: 5349, ttl: 600 };
    Settings { auto_create_rooms: true, default_max_participants: 0, open_join: true, demo_token_ttl: 600, turn: Some(turn), core_busy_limit: 850 }
}

fn basic() -> String {
    format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:{SECRET}")))
}

struct Res {
    status: StatusCode,
    headers: axum::http::HeaderMap,
    body: String,
}

impl Res {
    fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.body).unwrap_or(serde_json::Value::Null)
    }
    fn code(&self) -> String {
        self.json()["error"].as_str().unwrap_or("").to_string()
    }
}

async fn call(app: &Arc<App>, method: Method, uri: &str, headers: &[(&str, &str)], body: impl Into<Body>) -> Res {
    let mut req = Request::builder().method(method).uri(uri);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let res = router(app.clone()).oneshot(req.body(body.into()).unwrap()).await.unwrap();
    let status = res.status();
    let headers = res.headers().clone();
    let body = String::from_utf8_lossy(&res.into_body().collect().await.unwrap().to_bytes()).to_string();
    Res { status, headers, body }
}

async fn healthy(app: &Arc<App>) {
    let r = call(app, Method::GET, "/healthz", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK, "server must stay healthy");
}

/// A real browser-like SDP offer from a str0m client.
fn offer(publish: bool) -> String {
    let mut rtc = str0m::Rtc::builder().build(Instant::now());
    let dir = if publish { Direction::SendOnly } else { Direction::RecvOnly };
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, dir, None, None, None);
    api.add_media(MediaKind::Video, dir, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn token(room: &str, identity: &str, grants: Grants, ttl: u64) -> String {
    TokenKeys::new(KEY, SECRET).mint(room, identity, grants, ttl).unwrap()
}

#[tokio::test]
async fn rooms_crud_and_bad_input() {
    let app = app_with_node(settings());
    let b = basic();
    let json = [("authorization", b.as_str()), ("content-type", "application/json")];

    // Credentials.
    let r = call(&app, Method::GET, "/api/rooms", &[], Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "unauthorized"));
    let wrong = format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(format!("{KEY}:nope")));
    let r = call(&app, Method::GET, "/api/rooms", &[("authorization", &wrong)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::POST, "/api/rooms", &[("authorization", "Basic !!!"), ("content-type", "application/json")], r#"{"name":"x"}"#).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    healthy(&app).await;

    // Create.
    let r = call(&app, Method::POST, "/api/rooms", &json, r#"{"name":"standup","max_participants":5}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(r.json()["name"], "standup");
    let r = call(&app, Method::POST, "/api/rooms", &json, r#"{"name":"standup"}"#).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::CONFLICT, "room_exists"));
    for bad in [r#"{"name":"#, r#"{"nome":"x"}"#, r#"{"name":"has space"}"#, r#"{"name":""}"#, r#"[1,2]"#] {
        let r = call(&app, Method::POST, "/api/rooms", &json, bad).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{bad}: {}", r.body);
    }
    let r = call(&app, Method::POST, "/api/rooms", &[("authorization", b.as_str())], r#"{"name":"x"}"#).await;
    assert!(r.status == StatusCode::UNSUPPORTED_MEDIA_TYPE || r.status == StatusCode::BAD_REQUEST);
    let huge = format!(r#"{{"name":"{}"}}"#, "a".repeat(200_000));
    let r = call(&app, Method::POST, "/api/rooms", &json, huge).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::PAYLOAD_TOO_LARGE, "payload_too_large"));
    healthy(&app).await;

    // List, get, unknown.
    let r = call(&app, Method::GET, "/api/rooms", &json, Body::empty()).await;
    assert_eq!(r.json().as_array().unwrap().len(), 1);
    let r = call(&app, Method::GET, "/api/rooms/standup", &json, Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    assert_eq!(r.json()["participants"].as_array().unwrap().len(), 0);
    let r = call(&app, Method::GET, "/api/rooms/nope", &json, Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "room_not_found"));
    let r = call(&app, Method::DELETE, "/api/rooms/nope", &json, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // Tokens.
    let r = call(&app, Method::POST, "/api/rooms/standup/tokens", &json, r#"{"identity":"alice","can_publish":false,"ttl_seconds":60}"#).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let claims = TokenKeys::new(KEY, SECRET).verify(r.json()["token"].as_str().unwrap()).unwrap();
    assert_eq!((claims.room.as_str(), claims.sub.as_str(), claims.grants.can_publish, claims.grants.can_subscribe), ("standup", "alice", false, true));
    let r = call(&app, Method::POST, "/api/rooms/nope/tokens", &json, r#"{"identity":"alice"}"#).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    for bad in [r#"{"identity":""}"#, r#"{"identity":"a","ttl_seconds":0}"#, r#"{"ident":"a"}"#, "nope"] {
        let r = call(&app, Method::POST, "/api/rooms/standup/tokens", &json, bad).await;
        assert_eq!(r.status, StatusCode::BAD_REQUEST, "{bad}");
    }
    let r = call(&app, Method::POST, "/api/rooms/standup/tokens", &[("content-type", "application/json")], r#"{"identity":"a"}"#).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);

    // Kick unknown.
    let r = call(&app, Method::DELETE, "/api/rooms/standup/participants/ghost", &json, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::DELETE, "/api/rooms/nope/participants/ghost", &json, Body::empty()).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::NOT_FOUND, "room_not_found"));

    // Delete.
    let r = call(&app, Method::DELETE, "/api/rooms/standup", &json, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let r = call(&app, Method::GET, "/api/rooms/standup", &json, Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::GET, "/no/such/path", &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    healthy(&app).await;
}

#[tokio::test]
async fn whip_and_whep_sessions_and_their_errors() {
    let app = app_with_node(settings());
    let b = basic();
    call(&app, Method::POST, "/api/rooms", &[("authorization", &b), ("content-type", "application/json")], r#"{"name":"live","max_participants":2}"#).await;
    let pub_token = format!("Bearer {}", token("live", "cam", Grants::default(), 60));
    let sdp = [("authorization", pub_token.as_str()), ("content-type", "application/sdp")];

    // Errors first.
    let r = call(&app, Method::POST, "/whip/live", &[("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", "Bearer not.a.jwt"), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let other = format!("Bearer {}", TokenKeys::new(KEY, "another-secret-another-secret-another").mint("live", "x", Grants::default(), 60).unwrap());
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &other), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let expired = format!("Bearer {}", expired_token("live", "cam"));
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &expired), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "token_expired"));
    let wrong_room = format!("Bearer {}", token("elsewhere", "cam", Grants::default(), 60));
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &wrong_room), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let viewer_only = format!("Bearer {}", token("live", "v", Grants { can_publish: false, ..Grants::default() }, 60));
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &viewer_only), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &pub_token), ("content-type", "text/plain")], offer(true)).await;
    assert_eq!(r.status, StatusCode::UNSUPPORTED_MEDIA_TYPE);
    let r = call(&app, Method::POST, "/whip/live", &sdp, "this is not SDP").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "bad_sdp"));
    let r = call(&app, Method::POST, "/whip/live", &sdp, "v=0\r\no=- 0 0 IN IP4 0.0.0.0\r\nm=garbage\r\n").await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "bad_sdp"), "{}", r.body);
    let r = call(&app, Method::POST, "/whip/live", &sdp, format!("v=0\r\n{}", "a=x\r\n".repeat(20000))).await;
    assert_eq!(r.status, StatusCode::PAYLOAD_TOO_LARGE);
    let r = call(&app, Method::GET, "/api/rooms/live", &[("authorization", &b)], Body::empty()).await;
    assert_eq!(r.json()["participants"].as_array().unwrap().len(), 0, "failed joins leave nothing behind");
    healthy(&app).await;

    // CORS preflight.
    let r = call(
        &app,
        Method::OPTIONS,
        "/whip/live",
        &[("origin", "https://example.test"), ("access-control-request-method", "POST"), ("access-control-request-headers", "authorization,content-type")],
        Body::empty(),
    )
    .await;
    assert!(r.status.is_success());
    assert!(r.headers.get("access-control-allow-methods").unwrap().to_str().unwrap().contains("POST"));

    // WHEP before anyone publishes: 404.
    let view = format!("Bearer {}", token("live", "viewer", Grants { can_publish: false, ..Grants::default() }, 60));
    let r = call(&app, Method::POST, "/whep/live", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);

    // A publisher.
    let r = call(&app, Method::POST, "/whip/live", &sdp, offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let location = r.headers.get(header::LOCATION).unwrap().to_str().unwrap().to_string();
    assert!(location.starts_with("/whip/live/"));
    assert_eq!(r.headers.get(header::CONTENT_TYPE).unwrap(), "application/sdp");
    assert!(r.body.starts_with("v=0") && r.body.contains("a=ice-lite") && r.body.contains("a=candidate"), "{}", r.body);
    let links: Vec<&str> = r.headers.get_all(header::LINK).iter().filter_map(|v| v.to_str().ok()).collect();
    assert_eq!(links.len(), 4, "{links:?}");
    assert_eq!(links[0], "<stun:turn.example.test:3478>; rel=\"ice-server\"");
    assert!(links[1].starts_with("<turn:turn.example.test:3478?transport=udp>; rel=\"ice-server\"; username=\""));
    assert!(links[3].contains("credential-type=\"password\""));
    let room = call(&app, Method::GET, "/api/rooms/live", &[("authorization", &b)], Body::empty()).await.json();
    assert_eq!(room["participants"][0]["via"], "whip");
    // Tracks are announced once the publisher's DTLS is up (browser test), so the default
    // WHEP source does not exist yet; naming the publisher works.

    // A WHEP player of that publisher, by identity and by default.
    let r = call(&app, Method::POST, "/whep/live?participant=nobody", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::POST, "/whep/live?participant=cam", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert!(r.body.contains("a=sendonly"));
    let whep_location = r.headers.get(header::LOCATION).unwrap().to_str().unwrap().to_string();

    // The room is now full (max 2).
    let late = format!("Bearer {}", token("live", "late", Grants::default(), 60));
    let r = call(&app, Method::POST, "/whip/live", &[("authorization", &late), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::CONFLICT, "room_full"));

    // PATCH is not supported; DELETE ends sessions; a second DELETE is 404.
    let r = call(&app, Method::PATCH, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = call(&app, Method::DELETE, &location, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::DELETE, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, Method::DELETE, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    let r = call(&app, Method::DELETE, &whep_location, &[("authorization", &view)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let room = call(&app, Method::GET, "/api/rooms/live", &[("authorization", &b)], Body::empty()).await.json();
    assert_eq!(room["participants"].as_array().unwrap().len(), 0);
    healthy(&app).await;
}

fn expired_token(room: &str, identity: &str) -> String {
    use jsonwebtoken::{encode, EncodingKey, Header};
    let now = control_plane::token::unix_now();
    let claims = control_plane::token::Claims {
        iss: KEY.into(),
        sub: identity.into(),
        room: room.into(),
        grants: Grants::default(),
        iat: now - 100,
        nbf: now - 100,
        exp: now - 10,
    };
    encode(&Header::default(), &claims, &EncodingKey::from_secret(SECRET.as_bytes())).unwrap()
}

#[tokio::test]
async fn demo_token_endpoint_is_closed_unless_open_join() {
    let mut s = settings();
    s.open_join = false;
    let app = app_with_node(s);
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], r#"{"name":"a","room":"r"}"#).await;
    assert_eq!(r.status, StatusCode::FORBIDDEN);
    let app = app_with_node(settings());
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], r#"{"name":"a","room":"r"}"#).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], r#"{"name":"a"}"#).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    let r = call(&app, Method::GET, "/", &[], Body::empty()).await;
    assert!(r.body.contains("<form id=\"join\""));
}

/// The signaling WebSocket on a plain loopback listener.
#[tokio::test]
async fn signaling_join_offer_and_errors() {
    let app = app_with_node(settings());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = router(app.clone());
    tokio::spawn(async move { axum::serve(listener, svc).await });
    let url = format!("ws://{addr}/ws");
    let (mut ws, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    use tokio_tungstenite::tungstenite::Message;
    async fn next(ws: &mut (impl StreamExt<Item = Result<Message, tokio_tungstenite::tungstenite::Error>> + Unpin)) -> serde_json::Value {
        loop {
            match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
                Message::Text(t) => return serde_json::from_str(&t).unwrap(),
                _ => continue,
            }
        }
    }
    ws.send(Message::text("{not json")).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    ws.send(Message::text(r#"{"type":"offer","sdp":"v=0"}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "unauthorized");
    ws.send(Message::text(r#"{"type":"join","token":"bad"}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "unauthorized");
    let t = token("sig", "alice", Grants::default(), 60);
    ws.send(Message::text(serde_json::json!({"type":"join","token":t}).to_string())).await.unwrap();
    let joined = next(&mut ws).await;
    assert_eq!((joined["type"].as_str(), joined["identity"].as_str()), (Some("joined"), Some("alice")));
    // ICE servers: STUN, then TURN over UDP, TCP and TLS with REST credentials for this identity.
    let ice = joined["ice_servers"].as_array().unwrap();
    assert_eq!(ice[0]["urls"][0], "stun:turn.example.test:3478");
    let urls: Vec<&str> = ice[1]["urls"].as_array().unwrap().iter().filter_map(|u| u.as_str()).collect();
    assert_eq!(urls, ["turn:turn.example.test:3478?transport=udp", "turn:turn.example.test:3478?transport=tcp", "turns:turn.example.test:5349?transport=tcp"]);
    let username = ice[1]["username"].as_str().unwrap();
    let (expiry, who) = username.split_once(':').unwrap();
    assert_eq!(who, "alice");
    let expiry: u64 = expiry.parse().unwrap();
    let now = control_plane::token::unix_now();
    assert!(expiry > now + 590 && expiry <= now + 600);
    assert_eq!(ice[1]["credential"].as_str().unwrap(), control_plane::state::turn_password("turn-secret", username));

    // A second participant sees alice and alice is told.
    let (mut ws2, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let t2 = token("sig", "bob", Grants::default(), 60);
    ws2.send(Message::text(serde_json::json!({"type":"join","token":t2}).to_string())).await.unwrap();
    let j2 = next(&mut ws2).await;
    assert_eq!(j2["participants"][0]["identity"], "alice");
    assert_eq!(next(&mut ws).await["type"], "participant_joined");

    ws.send(Message::text(serde_json::json!({"type":"offer","sdp":"garbage"}).to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_sdp");
    // Parsed by the media plane and refused there; the client may still try again.
    ws.send(Message::text(serde_json::json!({"type":"offer","sdp":"v=0\r\no=- 1 1 IN IP4 0.0.0.0\r\nm=nonsense\r\n"}).to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_sdp");
    ws.send(Message::text(serde_json::json!({"type":"offer","sdp":offer(true)}).to_string())).await.unwrap();
    let answer = next(&mut ws).await;
    assert_eq!(answer["type"], "answer");
    assert!(answer["sdp"].as_str().unwrap().contains("a=ice-lite"));
    // A second offer on the same session is refused; the session survives it.
    ws.send(Message::text(serde_json::json!({"type":"offer","sdp":offer(true)}).to_string())).await.unwrap();
    assert_eq!(next(&mut ws).await["code"], "bad_request");
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    assert_eq!(next(&mut ws).await["type"], "pong");
    // alice closes: bob is told.
    ws.close(None).await.unwrap();
    loop {
        let m = next(&mut ws2).await;
        if m["type"] == "participant_left" {
            assert_eq!(m["identity"], "alice");
            break;
        }
    }
}

#[tokio::test]
async fn a_busy_media_core_takes_no_new_participant() {
    let app = app_with_node(settings());
    let load = |busy_permille| link::Event::Load { core: 0, sessions: 0, rx_packets: 0, tx_packets: 0, busy_permille, connected: Some(0), interval_ms: Some(1000), setup_permille: Some(0) };
    let pub_token = format!("Bearer {}", token("busy", "cam", Grants::default(), 60));
    let sdp = [("authorization", pub_token.as_str()), ("content-type", "application/sdp")];
    // The node's only core reports 95 % busy (limit 85 %): a clear 503, nothing else breaks.
    app.node_event("node-1", load(950));
    let r = call(&app, Method::POST, "/whip/busy", &sdp, offer(true)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"), "{}", r.body);
    healthy(&app).await;
    let nodes = call(&app, Method::GET, "/api/nodes", &[("authorization", &basic())], Body::empty()).await;
    assert_eq!(nodes.json()[0]["cores"][0]["busy_permille"], 950);
    // Once it reports 40 %, the same request is placed.
    app.node_event("node-1", load(400));
    let r = call(&app, Method::POST, "/whip/busy", &sdp, offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
}

#[tokio::test]
async fn committed_forwarding_refuses_a_crowd_before_its_media_flows() {
    let app = app_with_node(settings());
    let pub_token = format!("Bearer {}", token("crowd", "cam", Grants::default(), 60));
    let r = call(&app, Method::POST, "/whip/crowd", &[("authorization", pub_token.as_str()), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    let room = call(&app, Method::GET, "/api/rooms/crowd", &[("authorization", &basic())], Body::empty()).await.json();
    let session = room["participants"][0]["session"].as_str().unwrap().to_string();
    for (track, kind) in [("0", link::TrackKind::Audio), ("1", link::TrackKind::Video)] {
        app.node_event("node-1", link::Event::TrackPublished { room: "crowd".into(), session: session.clone(), track: track.into(), kind });
    }
    let viewer = |i: usize| {
        let app = app.clone();
        async move {
            let view = format!("Bearer {}", token("crowd", &format!("viewer{i}"), Grants { can_publish: false, ..Grants::default() }, 60));
            call(&app, Method::POST, "/whep/crowd?participant=cam", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await
        }
    };
    for i in 0..4 {
        let r = viewer(i).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    }
    // The core reports 20 % busy while 400 packets/s leave it (0.5 ‰ per packet/s) and
    // 200 packets/s come in on 2 tracks: one forwarded track costs 50 ‰, one viewer 100 ‰.
    // The busy share per session (40 ‰) would let about 20 viewers in; what they will
    // cost once their video flows allows 9 under the 85 % limit.
    app.node_event("node-1", link::Event::Load { core: 0, sessions: 5, rx_packets: 200, tx_packets: 400, busy_permille: 200, connected: Some(5), interval_ms: Some(1000), setup_permille: Some(0) });
    let mut admitted = 4;
    loop {
        let r = viewer(admitted).await;
        if r.status != StatusCode::CREATED {
            assert_eq!((r.status, r.code().as_str()), (StatusCode::SERVICE_UNAVAILABLE, "no_capacity"), "{}", r.body);
            break;
        }
        admitted += 1;
        assert!(admitted < 30, "the core never filled");
    }
    assert_eq!(admitted, 9);
    healthy(&app).await;
}

#[tokio::test]
async fn tokens_carry_the_auto_subscribe_grant() {
    let app = app_with_node(settings());
    let b = basic();
    let json = [("authorization", b.as_str()), ("content-type", "application/json")];
    call(&app, Method::POST, "/api/rooms", &json, r#"{"name":"grants"}"#).await;
    let keys = TokenKeys::new(KEY, SECRET);
    for (body, auto) in [(r#"{"identity":"a"}"#, true), (r#"{"identity":"a","auto_subscribe":true}"#, true), (r#"{"identity":"a","auto_subscribe":false}"#, false)] {
        let r = call(&app, Method::POST, "/api/rooms/grants/tokens", &json, body).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        let claims = keys.verify(r.json()["token"].as_str().unwrap()).unwrap();
        assert_eq!(claims.grants, Grants { auto_subscribe: auto, ..Grants::default() }, "{body}");
    }
    let r = call(&app, Method::POST, "/api/rooms/grants/tokens", &json, r#"{"identity":"a","auto_subscribe":"no"}"#).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"));
}

/// The session id in a WHIP/WHEP `Location`.
fn location_session(r: &Res) -> String {
    let location = r.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    location.rsplit('/').next().unwrap_or_default().to_string()
}

/// The video settings of the `Join` that created `session`.
async fn join_video(sent: &Sent, session: &str) -> TrackSettings {
    wait_sent(sent, |c| match c {
        Command::Join { session: s, video, .. } if s == session => Some(*video),
        _ => None,
    })
    .await
}

#[tokio::test]
async fn whep_layer_sets_the_players_video_quality() {
    let (app, sent) = app_with_recorded_node(settings());
    let pub_token = format!("Bearer {}", token("layers", "cam", Grants::default(), 60));
    let r = call(&app, Method::POST, "/whip/layers", &[("authorization", pub_token.as_str()), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    assert_eq!(join_video(&sent, &location_session(&r)).await, TrackSettings::default());
    let play = |i: usize, query: &'static str| {
        let app = app.clone();
        async move {
            let view = format!("Bearer {}", token("layers", &format!("viewer{i}"), Grants { can_publish: false, ..Grants::default() }, 60));
            call(&app, Method::POST, &format!("/whep/layers?participant=cam{query}"), &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await
        }
    };
    let quality = |q| TrackSettings { quality: Some(q), ..TrackSettings::default() };
    for (i, (query, want)) in [
        ("", TrackSettings::default()),
        ("&layer=low", quality(Quality::Low)),
        ("&layer=medium", quality(Quality::Medium)),
        ("&quality=HIGH", quality(Quality::High)),
        ("&layer=low&quality=low", quality(Quality::Low)),
    ]
    .into_iter()
    .enumerate()
    {
        let r = play(i, query).await;
        assert_eq!(r.status, StatusCode::CREATED, "{query}: {}", r.body);
        assert_eq!(join_video(&sent, &location_session(&r)).await, want, "{query}");
    }
    let joins = sent.lock().unwrap().iter().filter(|c| matches!(c, Command::Join { .. })).count();
    for query in ["&layer=ultra", "&quality=", "&layer=low&quality=high", "&layer=low&layer=high"] {
        let r = play(99, query).await;
        assert_eq!((r.status, r.code().as_str()), (StatusCode::BAD_REQUEST, "bad_request"), "{query}: {}", r.body);
    }
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(sent.lock().unwrap().iter().filter(|c| matches!(c, Command::Join { .. })).count(), joins, "a refused player reaches no node");
    healthy(&app).await;
}

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;
use tokio_tungstenite::tungstenite::Message as WsMessage;

/// Serves the router on a loopback listener; returns the `/ws` URL.
async fn serve_ws(app: &Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = router(app.clone());
    tokio::spawn(async move { axum::serve(listener, svc).await });
    format!("ws://{addr}/ws")
}

async fn recv(ws: &mut Ws) -> serde_json::Value {
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
            WsMessage::Text(t) => return serde_json::from_str(&t).unwrap(),
            _ => continue,
        }
    }
}

async fn send(ws: &mut Ws, msg: serde_json::Value) {
    ws.send(WsMessage::text(msg.to_string())).await.unwrap();
}

/// Pings and returns every message that came before the `pong`.
async fn until_pong(ws: &mut Ws) -> Vec<serde_json::Value> {
    send(ws, serde_json::json!({"type": "ping"})).await;
    let mut before = Vec::new();
    loop {
        let m = recv(ws).await;
        if m["type"] == "pong" {
            return before;
        }
        before.push(m);
    }
}

/// Sends `msg`, then pings: the code of the one error that came back in between (the
/// connection still answers).
async fn error_after(ws: &mut Ws, msg: serde_json::Value) -> String {
    send(ws, msg.clone()).await;
    let got = until_pong(ws).await;
    let errors: Vec<_> = got.iter().filter(|m| m["type"] == "error").collect();
    assert_eq!(errors.len(), 1, "{msg}: {got:?}");
    errors[0]["code"].as_str().unwrap_or_default().to_string()
}

/// Connects and joins with `token` (and `auto_subscribe` when given); returns the session.
async fn ws_join(url: &str, token: &str, auto_subscribe: Option<bool>) -> (Ws, String) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let mut join = serde_json::json!({"type": "join", "token": token});
    if let Some(a) = auto_subscribe {
        join["auto_subscribe"] = a.into();
    }
    send(&mut ws, join).await;
    let joined = recv(&mut ws).await;
    assert_eq!(joined["type"], "joined", "{joined}");
    let session = joined["session"].as_str().unwrap().to_string();
    (ws, session)
}

/// Sends the client's one offer and waits for the answer.
async fn ws_offer(ws: &mut Ws, publish: bool) {
    send(ws, serde_json::json!({"type": "offer", "sdp": offer(publish)})).await;
    loop {
        let m = recv(ws).await;
        assert_ne!(m["type"], "error", "{m}");
        if m["type"] == "answer" {
            return;
        }
    }
}

/// What the `Join` that created `session` subscribes it to.
async fn join_subscription(sent: &Sent, session: &str) -> Subscription {
    wait_sent(sent, |c| match c {
        Command::Join { session: s, subscription, .. } if s == session => Some(subscription.clone()),
        _ => None,
    })
    .await
}

/// The node announcing a published track, as it does once the publisher's media is up.
fn publish(app: &App, room: &str, session: &str, track: &str, kind: link::TrackKind) {
    app.node_event("node-1", link::Event::TrackPublished { room: room.into(), session: session.into(), track: track.into(), kind });
}

/// The subscription commands the node received, as (kind, subscriber, publisher, track, settings).
fn subscription_commands(sent: &Sent) -> Vec<(&'static str, String, String, String, Option<TrackSettings>)> {
    sent.lock()
        .unwrap()
        .iter()
        .filter_map(|c| match c {
            Command::Subscribe { session, publisher, track, settings } => Some(("subscribe", session.clone(), publisher.clone(), track.clone(), Some(*settings))),
            Command::Unsubscribe { session, publisher, track } => Some(("unsubscribe", session.clone(), publisher.clone(), track.clone(), None)),
            _ => None,
        })
        .collect()
}

#[tokio::test]
async fn auto_subscribe_off_joins_with_chosen_subscriptions() {
    let (app, sent) = app_with_recorded_node(settings());
    let url = serve_ws(&app).await;
    let no_auto = Grants { auto_subscribe: false, ..Grants::default() };
    // (token grant, join flag) -> what the node is told.
    for (i, (grants, flag, want)) in [
        (Grants::default(), None, Subscription::All),
        (Grants::default(), Some(true), Subscription::All),
        (Grants::default(), Some(false), Subscription::Chosen),
        (no_auto, None, Subscription::Chosen),
        (no_auto, Some(true), Subscription::Chosen),
    ]
    .into_iter()
    .enumerate()
    {
        let (mut ws, session) = ws_join(&url, &token("auto", &format!("p{i}"), grants, 60), flag).await;
        ws_offer(&mut ws, true).await;
        assert_eq!(join_subscription(&sent, &session).await, want, "grant {}, join flag {flag:?}", grants.auto_subscribe);
        let Some(Command::Join { video, .. }) = sent.lock().unwrap().iter().find(|c| matches!(c, Command::Join { session: s, .. } if *s == session)).cloned() else {
            panic!("no join")
        };
        assert_eq!(video, TrackSettings::default());
    }
}

#[tokio::test]
async fn subscriptions_are_checked_and_relayed_to_the_node() {
    let (app, sent) = app_with_recorded_node(settings());
    let url = serve_ws(&app).await;

    // bob publishes audio and video in room "subs"; carol publishes in another room.
    let (mut bob, bob_s) = ws_join(&url, &token("subs", "bob", Grants::default(), 60), None).await;
    ws_offer(&mut bob, true).await;
    let (mut carol, carol_s) = ws_join(&url, &token("elsewhere", "carol", Grants::default(), 60), None).await;
    ws_offer(&mut carol, true).await;
    publish(&app, "elsewhere", &carol_s, "1", link::TrackKind::Video);

    // alice chooses what she receives.
    let (mut alice, alice_s) = ws_join(&url, &token("subs", "alice", Grants::default(), 60), Some(false)).await;
    publish(&app, "subs", &bob_s, "0", link::TrackKind::Audio);
    publish(&app, "subs", &bob_s, "1", link::TrackKind::Video);
    let bob_video = serde_json::json!({"session": bob_s, "track": "1"});
    let bob_audio = serde_json::json!({"session": bob_s, "track": "0"});
    let before_offer = serde_json::json!({"type": "subscribe", "tracks": [bob_video]});
    assert_eq!(error_after(&mut alice, before_offer).await, "bad_request", "subscribing before the offer");
    ws_offer(&mut alice, true).await;
    assert_eq!(join_subscription(&sent, &alice_s).await, Subscription::Chosen);
    publish(&app, "subs", &alice_s, "0", link::TrackKind::Video);

    // Bad subscriptions: a typed error each, and the connection goes on.
    let many: Vec<_> = (0..257).map(|_| bob_video.clone()).collect();
    let cases = [
        (serde_json::json!({"type": "subscribe", "tracks": [{"session": bob_s, "track": "7"}]}), "track_not_found"),
        (serde_json::json!({"type": "subscribe", "tracks": [{"session": "PA_nobody", "track": "1"}]}), "track_not_found"),
        (serde_json::json!({"type": "subscribe", "tracks": [{"session": carol_s, "track": "1"}]}), "track_not_found"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video, {"session": bob_s, "track": "7"}]}), "track_not_found"),
        (serde_json::json!({"type": "unsubscribe", "tracks": [{"session": carol_s, "track": "1"}]}), "track_not_found"),
        (serde_json::json!({"type": "subscribe", "tracks": [{"session": alice_s, "track": "0"}]}), "bad_request"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"quality": "ultra"}}), "bad_request"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_width": -5}}), "bad_request"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_width": 0}}), "bad_settings"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_width": 20000}}), "bad_settings"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_height": 16385}}), "bad_settings"),
        (serde_json::json!({"type": "subscribe", "tracks": []}), "bad_request"),
        (serde_json::json!({"type": "subscribe", "tracks": many}), "bad_request"),
        (serde_json::json!({"type": "unsubscribe", "tracks": "all"}), "bad_request"),
    ];
    for (msg, code) in cases {
        assert_eq!(error_after(&mut alice, msg.clone()).await, code, "{msg}");
    }

    // A valid subscribe: no reply; one command per track to the node hosting alice.
    send(&mut alice, serde_json::json!({"type": "subscribe", "tracks": [bob_video, bob_audio], "settings": {"max_width": 640, "max_height": 360, "quality": "medium"}})).await;
    assert!(until_pong(&mut alice).await.iter().all(|m| m["type"] != "error"));
    send(&mut alice, serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"enabled": false}})).await;
    send(&mut alice, serde_json::json!({"type": "unsubscribe", "tracks": [bob_audio]})).await;
    assert!(until_pong(&mut alice).await.iter().all(|m| m["type"] != "error"));
    wait_sent(&sent, |c| matches!(c, Command::Unsubscribe { .. }).then_some(())).await;
    let wanted = TrackSettings { enabled: true, max_width: Some(640), max_height: Some(360), quality: Some(Quality::Medium) };
    let off = TrackSettings { enabled: false, ..TrackSettings::default() };
    let a = || alice_s.clone();
    let b = || bob_s.clone();
    assert_eq!(
        subscription_commands(&sent),
        [
            ("subscribe", a(), b(), "1".to_string(), Some(wanted)),
            ("subscribe", a(), b(), "0".to_string(), Some(wanted)),
            ("subscribe", a(), b(), "1".to_string(), Some(off)),
            ("unsubscribe", a(), b(), "0".to_string(), None),
        ],
        "only the valid messages reach the node"
    );

    // The node's pause notice goes to the subscriber, its dynacast notice to the publisher.
    app.node_event("node-1", link::Event::TrackPaused { session: alice_s.clone(), publisher: bob_s.clone(), track: "1".into(), paused: true });
    let got = until_pong(&mut alice).await;
    assert!(got.contains(&serde_json::json!({"type": "track_paused", "session": bob_s, "track": "1", "paused": true})), "{got:?}");
    app.node_event("node-1", link::Event::LayersWanted { session: bob_s.clone(), track: "1".into(), rids: vec!["q".into(), "h".into()] });
    let got = until_pong(&mut bob).await;
    assert!(got.contains(&serde_json::json!({"type": "layers_wanted", "track": "1", "rids": ["q", "h"]})), "{got:?}");
    assert!(got.iter().all(|m| m["type"] != "error" && m["type"] != "track_paused"), "bob is not disturbed: {got:?}");
    assert!(until_pong(&mut carol).await.iter().all(|m| m["type"] != "error"), "carol is not disturbed");

    // Without the subscribe grant, or before joining.
    let (mut dave, _) = ws_join(&url, &token("subs", "dave", Grants { can_subscribe: false, ..Grants::default() }, 60), Some(false)).await;
    ws_offer(&mut dave, true).await;
    assert_eq!(error_after(&mut dave, serde_json::json!({"type": "subscribe", "tracks": [bob_video]})).await, "forbidden");
    let (mut stranger, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    assert_eq!(error_after(&mut stranger, serde_json::json!({"type": "unsubscribe", "tracks": [bob_video]})).await, "unauthorized");
    assert_eq!(subscription_commands(&sent).len(), 4, "refused messages reach no node");
    healthy(&app).await;
}
