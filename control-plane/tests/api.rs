//! REST, token, WHIP/WHEP and signaling tests through the real router (axum `oneshot`), with
//! the real SFU core of the media plane answering joins as a node would over the link.

mod common;

use common::*;

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

    // Ids that other participants see are not enough to end a session: its resource URL's
    // secret is (with a token for the room), or the API's credentials.
    let (bare, secret) = location.rsplit_once('/').unwrap();
    assert!(secret.len() >= 32, "{location}");
    let r = call(&app, Method::DELETE, bare, &[("authorization", &view)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED, "a viewer cannot end the broadcaster by its id");
    for who in [&view, &pub_token] {
        let r = call(&app, Method::DELETE, &format!("{bare}/{}", "x".repeat(32)), &[("authorization", who)], Body::empty()).await;
        assert_eq!(r.status, StatusCode::NOT_FOUND, "a wrong secret is a session that does not exist");
    }
    let (whep_bare, _) = whep_location.rsplit_once('/').unwrap();
    let r = call(&app, Method::DELETE, &format!("{whep_bare}/{secret}"), &[("authorization", &view)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND, "one session's secret does not end another");
    let room = call(&app, Method::GET, "/api/rooms/live", &[("authorization", &b)], Body::empty()).await.json();
    assert_eq!(room["participants"].as_array().unwrap().len(), 2, "nobody was removed");

    // PATCH is not supported; DELETE ends sessions; a second DELETE is 404.
    let r = call(&app, Method::PATCH, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::METHOD_NOT_ALLOWED);
    let r = call(&app, Method::DELETE, &location, &[], Body::empty()).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::DELETE, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, Method::DELETE, &location, &[("authorization", &pub_token)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
    // The API's credentials end a session by its id alone.
    let r = call(&app, Method::DELETE, whep_bare, &[("authorization", &b)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let r = call(&app, Method::DELETE, &whep_location, &[("authorization", &view)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NOT_FOUND);
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
        open: false,
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
    let form = |invite: &str| format!(r#"{{"name":"a","room":"r","invite":"{invite}"}}"#);
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], form(INVITE)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], format!(r#"{{"name":"a","invite":"{INVITE}"}}"#)).await;
    assert_eq!(r.status, StatusCode::BAD_REQUEST);
    // Without the invite secret, or with a wrong one: 401.
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], r#"{"name":"a","room":"r"}"#).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
    let r = call(&app, Method::POST, "/app/token", &[("content-type", "application/json")], form("invite-secret-0123456788")).await;
    assert_eq!(r.status, StatusCode::UNAUTHORIZED);
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
async fn whep_players_sharing_one_token_each_get_their_own_session() {
    let app = app_with_node(settings());
    let b = basic();
    call(&app, Method::POST, "/api/rooms", &[("authorization", &b), ("content-type", "application/json")], r#"{"name":"show"}"#).await;
    let cam = format!("Bearer {}", token("show", "cam", Grants::default(), 60));
    let r = call(&app, Method::POST, "/whip/show", &[("authorization", &cam), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
    // One player URL and token for the whole audience.
    let view = format!("Bearer {}", token("show", "audience", Grants { can_publish: false, ..Grants::default() }, 60));
    let mut locations = Vec::new();
    for _ in 0..5 {
        let r = call(&app, Method::POST, "/whep/show?participant=cam", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await;
        assert_eq!(r.status, StatusCode::CREATED, "{}", r.body);
        locations.push(r.headers.get(header::LOCATION).unwrap().to_str().unwrap().to_string());
    }
    let room = call(&app, Method::GET, "/api/rooms/show", &[("authorization", &b)], Body::empty()).await.json();
    let players: Vec<String> = room["participants"].as_array().unwrap().iter().filter(|p| p["via"] == "whep").map(|p| p["identity"].as_str().unwrap().to_string()).collect();
    assert_eq!(players.len(), 5, "no player replaced another: {players:?}");
    assert!(players.iter().all(|p| p.starts_with("audience~") && p.len() == "audience~".len() + 8), "{players:?}");
    let distinct: std::collections::BTreeSet<&String> = players.iter().collect();
    assert_eq!(distinct.len(), 5, "each player has its own identity");
    // Each player ends only its own session.
    let r = call(&app, Method::DELETE, &locations[0], &[("authorization", &view)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::OK);
    let room = call(&app, Method::GET, "/api/rooms/show", &[("authorization", &b)], Body::empty()).await.json();
    assert_eq!(room["participants"].as_array().unwrap().iter().filter(|p| p["via"] == "whep").count(), 4);
    // A WHIP publisher with the same token still replaces its older session.
    let r = call(&app, Method::POST, "/whip/show", &[("authorization", &cam), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!(r.status, StatusCode::CREATED);
    let room = call(&app, Method::GET, "/api/rooms/show", &[("authorization", &b)], Body::empty()).await.json();
    assert_eq!(room["participants"].as_array().unwrap().iter().filter(|p| p["via"] == "whip").count(), 1);
    // Kicking the token's identity ends every player of it, and no one else.
    let r = call(&app, Method::DELETE, "/api/rooms/show/participants/audience", &[("authorization", &b)], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let room = call(&app, Method::GET, "/api/rooms/show", &[("authorization", &b)], Body::empty()).await.json();
    let left: Vec<&str> = room["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap()).collect();
    assert_eq!(left, ["cam"]);
    let r = call(&app, Method::POST, "/whep/show?participant=cam", &[("authorization", &view), ("content-type", "application/sdp")], offer(false)).await;
    assert_eq!((r.status, r.code().as_str()), (StatusCode::UNAUTHORIZED, "token_revoked"), "the kick revoked the shared token");
    healthy(&app).await;
}
