//! Selective subscription through the real router: tokens with the auto-subscribe grant, WHEP
//! layers, and `subscribe`/`unsubscribe` over `/ws`, checked and relayed to the node.

mod common;

use common::*;

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

/// The session id in a WHIP/WHEP `Location` (`/whip/{room}/{session}/{secret}`).
fn location_session(r: &Res) -> String {
    let location = r.headers.get(header::LOCATION).and_then(|v| v.to_str().ok()).unwrap_or_default();
    location.rsplit('/').nth(1).unwrap_or_default().to_string()
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
        ("&max_fps=15", TrackSettings { max_fps: Some(15), ..TrackSettings::default() }),
        ("&layer=low&max_fps=30", TrackSettings { max_fps: Some(30), ..quality(Quality::Low) }),
    ]
    .into_iter()
    .enumerate()
    {
        let r = play(i, query).await;
        assert_eq!(r.status, StatusCode::CREATED, "{query}: {}", r.body);
        assert_eq!(join_video(&sent, &location_session(&r)).await, want, "{query}");
    }
    let joins = sent.lock().unwrap().iter().filter(|c| matches!(c, Command::Join { .. })).count();
    for query in ["&layer=ultra", "&quality=", "&layer=low&quality=high", "&layer=low&layer=high", "&max_fps=0", "&max_fps=241", "&max_fps=fast", "&max_fps=-1"] {
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
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_fps": 0}}), "bad_settings"),
        (serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"max_fps": 1000}}), "bad_settings"),
        (serde_json::json!({"type": "subscribe", "tracks": []}), "bad_request"),
        (serde_json::json!({"type": "subscribe", "tracks": many}), "bad_request"),
        (serde_json::json!({"type": "unsubscribe", "tracks": "all"}), "bad_request"),
    ];
    for (msg, code) in cases {
        assert_eq!(error_after(&mut alice, msg.clone()).await, code, "{msg}");
    }

    // A valid subscribe: no reply; one command per track to the node hosting alice.
    send(&mut alice, serde_json::json!({"type": "subscribe", "tracks": [bob_video, bob_audio], "settings": {"max_width": 640, "max_height": 360, "quality": "medium", "max_fps": 24}})).await;
    assert!(until_pong(&mut alice).await.iter().all(|m| m["type"] != "error"));
    send(&mut alice, serde_json::json!({"type": "subscribe", "tracks": [bob_video], "settings": {"enabled": false}})).await;
    send(&mut alice, serde_json::json!({"type": "unsubscribe", "tracks": [bob_audio]})).await;
    assert!(until_pong(&mut alice).await.iter().all(|m| m["type"] != "error"));
    wait_sent(&sent, |c| matches!(c, Command::Unsubscribe { .. }).then_some(())).await;
    let wanted = TrackSettings { enabled: true, max_width: Some(640), max_height: Some(360), quality: Some(Quality::Medium), max_fps: Some(24) };
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
