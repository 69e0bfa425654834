//! Hostile signaling clients against the real router on a loopback listener: each is cut off
//! within its limit, and a normal client beside it keeps working. Runs on its own with
//! `cargo test -p control-plane --test abuse`.

mod common;

use common::*;
use limits::Limits;
use control_plane::launch::{self, HttpLimits};
use control_plane::signal::{JOIN_TIMEOUT, MAX_MESSAGE, MESSAGE_BURST};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

type Ws = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Serves the router on a loopback port; returns the `/ws` URL.
async fn serve(app: Arc<App>) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = router(app);
    tokio::spawn(async move { axum::serve(listener, svc).await });
    format!("ws://{addr}/ws")
}

/// Reads until the server closes; returns the close code and reason, or None if the stream
/// ended without a close frame. Fails after `within`.
async fn closed_by_server(ws: &mut Ws, within: Duration) -> Option<(CloseCode, String)> {
    let end = tokio::time::Instant::now() + within;
    loop {
        match tokio::time::timeout_at(end, ws.next()).await.expect("the server did not close the connection in time") {
            Some(Ok(Message::Close(frame))) => return frame.map(|f| (f.code, f.reason.to_string())),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return None,
        }
    }
}

/// A client that joins and gets `joined`: the normal call beside the abuse.
async fn joined_client(url: &str, room: &str, identity: &str) -> Ws {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    let t = token(room, identity, Grants::default(), 60);
    ws.send(Message::text(serde_json::json!({"type":"join","token":t}).to_string())).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) if t.contains("\"joined\"") => return ws,
            Message::Text(t) => panic!("unexpected before joined: {t}"),
            _ => continue,
        }
    }
}

/// A ping and its pong over the signaling protocol: the connection still works.
async fn still_answers(ws: &mut Ws) {
    ws.send(Message::text(r#"{"type":"ping"}"#)).await.unwrap();
    loop {
        match tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
            Message::Text(t) if t.contains("\"pong\"") => return,
            _ => continue,
        }
    }
}

#[tokio::test]
async fn a_connection_that_never_joins_is_closed_after_the_join_timeout() {
    let app = app_with_node(settings());
    let url = serve(app).await;
    let mut normal = joined_client(&url, "calm", "alice").await;
    let (mut silent, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let t0 = Instant::now();
    let close = closed_by_server(&mut silent, JOIN_TIMEOUT + Duration::from_secs(5)).await;
    let took = t0.elapsed();
    assert_eq!(close, Some((CloseCode::Policy, "join timeout".to_string())));
    assert!(took >= JOIN_TIMEOUT - Duration::from_millis(500), "not before the timeout: {took:?}");
    still_answers(&mut normal).await;
}

#[tokio::test]
async fn a_client_over_its_message_rate_is_closed_and_the_room_goes_on() {
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    let mut normal = joined_client(&url, "busy", "alice").await;
    let mut flooder = joined_client(&url, "busy", "mallory").await;
    for _ in 0..MESSAGE_BURST * 4 {
        if flooder.send(Message::text(r#"{"type":"ping"}"#)).await.is_err() {
            break;
        }
    }
    let close = closed_by_server(&mut flooder, Duration::from_secs(5)).await;
    assert_eq!(close, Some((CloseCode::Policy, "too many messages".to_string())));
    still_answers(&mut normal).await;
    // The flooder's session is gone from the room; the normal one stays.
    let r = call(&app, Method::GET, "/api/rooms/busy", &[("authorization", &basic())], Body::empty()).await;
    let who: Vec<String> = r.json()["participants"].as_array().unwrap().iter().map(|p| p["identity"].as_str().unwrap().to_string()).collect();
    assert_eq!(who, vec!["alice".to_string()]);
}

#[tokio::test]
async fn a_message_over_the_size_limit_ends_the_connection() {
    let app = app_with_node(settings());
    let url = serve(app).await;
    let mut normal = joined_client(&url, "big", "alice").await;
    let (mut big, _) = tokio_tungstenite::connect_async(&url).await.unwrap();
    let huge = format!(r#"{{"type":"join","token":"{}"}}"#, "x".repeat(MAX_MESSAGE + 1));
    let _ = big.send(Message::text(huge)).await;
    // Closed with "message too big" (1009) or cut off; either way, not answered.
    match closed_by_server(&mut big, Duration::from_secs(5)).await {
        None => {}
        Some((code, _)) => assert_eq!(code, CloseCode::Size),
    }
    still_answers(&mut normal).await;
}

/// The HTTPS listener of `local`/`serve` with short deadlines, on a loopback port; returns its
/// address and the development CA's client config.
async fn serve_https(app: Arc<App>, per_source: u32) -> (SocketAddr, Arc<rustls::ClientConfig>) {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
    let dir = std::env::temp_dir().join(format!("cp-abuse-{}", control_plane::secret::random(8)));
    let (paths, _) = certs::ensure_dev(&dir, &certs::default_names(&[])).unwrap();
    let tls = axum_server::tls_rustls::RustlsConfig::from_config(Arc::new(
        certs::server_config(&paths).unwrap(),
    ));
    let client = Arc::new(certs::client_config(paths.ca.as_ref().unwrap()).unwrap());
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    let limits = HttpLimits {
        connections: Limits {
            total: 5000,
            per_source,
        },
        handshake: HANDSHAKE,
        headers: HEADERS,
        idle: IDLE,
    };
    tokio::spawn(launch::serve_https(listener, tls, router(app), limits));
    (addr, client)
}

const HANDSHAKE: Duration = Duration::from_secs(2);
const HEADERS: Duration = Duration::from_secs(2);
const IDLE: Duration = Duration::from_secs(4);

/// A TCP connection to `to` from the loopback address `from` (127.0.0.0/8 is all ours).
async fn tcp_from(from: [u8; 4], to: SocketAddr) -> std::io::Result<tokio::net::TcpStream> {
    let s = tokio::net::TcpSocket::new_v4()?;
    s.bind(SocketAddr::from((from, 0)))?;
    s.connect(to).await
}

/// TLS to the listener, from `from`.
async fn tls_from(
    from: [u8; 4],
    to: SocketAddr,
    client: &Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<tokio::net::TcpStream> {
    let tcp = tcp_from(from, to).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    tokio_rustls::TlsConnector::from(client.clone())
        .connect(name, tcp)
        .await
        .unwrap()
}

/// `GET /healthz` over a fresh TLS connection from 127.0.0.1: the normal client.
async fn healthz_ok(to: SocketAddr, client: &Arc<rustls::ClientConfig>) {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::time::timeout(Duration::from_secs(5), tls_from([127, 0, 0, 1], to, client))
        .await
        .expect("normal client's TLS in time");
    s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nconnection: close\r\n\r\n")
        .await
        .unwrap();
    let mut out = Vec::new();
    tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut out))
        .await
        .expect("normal client's answer in time")
        .ok();
    let text = String::from_utf8_lossy(&out);
    assert!(text.starts_with("HTTP/1.1 200"), "{text}");
}

/// Waits until the server ends `s` (EOF or reset); the time from `t0` (taken before the
/// connection opened) until then, or None after `within`.
async fn ended<S: tokio::io::AsyncRead + Unpin>(s: &mut S, t0: Instant, within: Duration) -> Option<Duration> {
    use tokio::io::AsyncReadExt;
    let mut buf = [0u8; 256];
    loop {
        match tokio::time::timeout_at((t0 + within).into(), s.read(&mut buf)).await {
            Err(_) => return None,
            Ok(Ok(0)) | Ok(Err(_)) => return Some(t0.elapsed()),
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn silent_tcp_connections_get_at_most_their_share_and_then_the_handshake_deadline() {
    let (addr, client) = serve_https(app_with_node(settings()), 50).await;
    // 2000 connections from one address that never start TLS.
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..2000 {
        silent.push(tcp_from([127, 0, 0, 2], addr).await.unwrap());
    }
    healthz_ok(addr, &client).await;
    // All but the address's 50 are cut at once; those 50 at the handshake deadline.
    let ends = futures_util::future::join_all(
        silent
            .iter_mut()
            .map(|s| ended(s, t0, HANDSHAKE + Duration::from_secs(8))),
    )
    .await;
    let late: Vec<Duration> = ends
        .iter()
        .map(|e| e.expect("every silent connection ends"))
        .filter(|d| *d > HANDSHAKE - Duration::from_millis(500))
        .collect();
    println!("FIGURE https_silent_tcp connections=2000 held_to_deadline={} rss_growth_kib={}", late.len(), rss_kib().saturating_sub(rss0));
    assert_eq!(
        late.len(),
        50,
        "only the per-address share waits for the handshake deadline"
    );
    assert!(
        late.iter()
            .all(|d| *d >= HANDSHAKE - Duration::from_millis(300)),
        "{late:?}"
    );
    healthz_ok(addr, &client).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn connections_stalled_in_their_headers_or_silent_after_tls_are_closed() {
    use tokio::io::AsyncWriteExt;
    let (addr, client) = serve_https(app_with_node(settings()), 200).await;
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut stalled = Vec::new();
    for _ in 0..100 {
        let mut s = tls_from([127, 0, 0, 3], addr, &client).await;
        s.write_all(b"GET /healthz HTTP/1.1\r\nhost: localhost\r\nx-slow: ")
            .await
            .unwrap();
        stalled.push(s);
    }
    let mut quiet = Vec::new();
    for _ in 0..20 {
        quiet.push(tls_from([127, 0, 0, 4], addr, &client).await);
    }
    healthz_ok(addr, &client).await;
    let ends = futures_util::future::join_all(
        stalled
            .iter_mut()
            .map(|s| ended(s, t0, HEADERS + Duration::from_secs(10))),
    )
    .await;
    let last = ends.iter().flatten().max().copied().unwrap_or_default();
    println!("FIGURE https_stalled_headers connections=100 headers_deadline_s={} all_closed_by_s={:.1} rss_growth_kib={}", HEADERS.as_secs(), last.as_secs_f64(), rss_kib().saturating_sub(rss0));
    assert!(
        ends.iter()
            .all(|e| e.is_some_and(|d| d >= HEADERS - Duration::from_millis(300))),
        "headers deadline: {ends:?}"
    );
    let ends = futures_util::future::join_all(
        quiet
            .iter_mut()
            .map(|s| ended(s, t0, IDLE + Duration::from_secs(10))),
    )
    .await;
    assert!(ends.iter().all(Option::is_some), "idle deadline: {ends:?}");
    healthz_ok(addr, &client).await;
}

/// `POST /app/token` from `from` with `invite`.
async fn app_token(app: &Arc<App>, from: [u8; 4], name: &str, room: &str, invite: &str) -> Res {
    let body = serde_json::json!({ "name": name, "room": room, "invite": invite }).to_string();
    call_from(app, Some(from.into()), Method::POST, "/app/token", &[("content-type", "application/json")], body).await
}

/// Joins over `/ws` with `token`; returns the connection and the `joined` or `error` message.
async fn ws_join(url: &str, token: &str) -> (Ws, serde_json::Value) {
    let (mut ws, _) = tokio_tungstenite::connect_async(url).await.unwrap();
    ws.send(Message::text(serde_json::json!({"type":"join","token":token}).to_string())).await.unwrap();
    loop {
        if let Message::Text(t) = tokio::time::timeout(Duration::from_secs(5), ws.next()).await.unwrap().unwrap().unwrap() {
            let v: serde_json::Value = serde_json::from_str(&t).unwrap();
            if v["type"] == "joined" || v["type"] == "error" {
                return (ws, v);
            }
        }
    }
}

async fn identities(app: &Arc<App>, room: &str) -> Vec<String> {
    let r = call(app, Method::GET, &format!("/api/rooms/{room}"), &[("authorization", &basic())], Body::empty()).await;
    r.json()["participants"].as_array().map(|a| a.iter().map(|p| p["identity"].as_str().unwrap_or("").to_string()).collect()).unwrap_or_default()
}

#[tokio::test]
async fn anonymous_token_requests_need_the_invite_and_are_limited_per_address() {
    use control_plane::throttle::{FAILURE_BURST, MINT_BURST};
    let app = app_with_node(settings());
    let (attacker, other, third) = ([203, 0, 113, 9], [198, 51, 100, 7], [192, 0, 2, 1]);
    // Guessing the invite: each wrong guess is a failed check; past the burst, 429 at once.
    let mut answers = Vec::new();
    for i in 0..FAILURE_BURST + 5 {
        answers.push(app_token(&app, attacker, "x", "r", &format!("guess-{i:019}")).await.status);
    }
    assert!(answers[..FAILURE_BURST as usize].iter().all(|s| *s == StatusCode::UNAUTHORIZED), "{answers:?}");
    assert!(answers[FAILURE_BURST as usize..].iter().all(|s| *s == StatusCode::TOO_MANY_REQUESTS), "{answers:?}");
    // Even the right invite waits for the bucket; another address is not affected.
    assert_eq!(app_token(&app, attacker, "x", "r", INVITE).await.status, StatusCode::TOO_MANY_REQUESTS);
    assert_eq!(app_token(&app, other, "alice", "r", INVITE).await.status, StatusCode::CREATED);
    // Minting with the right invite is limited too.
    let mut minted = Vec::new();
    for i in 0..MINT_BURST + 5 {
        minted.push(app_token(&app, third, "m", &format!("r{i}"), INVITE).await);
    }
    let created = minted.iter().filter(|r| r.status == StatusCode::CREATED).count();
    assert_eq!(created, MINT_BURST as usize);
    assert!(minted.iter().all(|r| r.status == StatusCode::CREATED || r.code() == "too_many_requests"));
    healthy(&app).await;
}

#[tokio::test]
async fn an_open_join_with_a_name_in_the_room_gets_its_own_identity() {
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    // The broadcaster joins with a token the operator's backend signed.
    let mut bob = joined_client(&url, "show", "bob").await;
    // An anonymous visitor asks for a token named like the broadcaster, twice.
    let open = app_token(&app, [203, 0, 113, 9], "bob", "show", INVITE).await.json()["token"].as_str().unwrap().to_string();
    let (_i1, joined) = ws_join(&url, &open).await;
    assert_eq!(joined["identity"], "bob (2)", "{joined}");
    let (_i2, joined) = ws_join(&url, &open).await;
    assert_eq!(joined["identity"], "bob (3)", "{joined}");
    let mut who = identities(&app, "show").await;
    who.sort();
    assert_eq!(who, vec!["bob", "bob (2)", "bob (3)"]);
    still_answers(&mut bob).await;
    // A signed token still replaces its own identity's older connection, as in LiveKit.
    let (_bob2, joined) = ws_join(&url, &token("show", "bob", Grants::default(), 60)).await;
    assert_eq!(joined["identity"], "bob");
    assert_eq!(identities(&app, "show").await.iter().filter(|i| *i == "bob").count(), 1);
}

#[tokio::test]
async fn a_kicked_participant_cannot_rejoin_with_its_token() {
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    let mut alice = joined_client(&url, "club", "alice").await;
    let mallory_token = token("club", "mallory", Grants::default(), 3600);
    let (mut mallory, joined) = ws_join(&url, &mallory_token).await;
    assert_eq!(joined["type"], "joined");
    let r = call(&app, Method::DELETE, "/api/rooms/club/participants/mallory", &[("authorization", &basic())], Body::empty()).await;
    assert_eq!(r.status, StatusCode::NO_CONTENT);
    let _ = closed_by_server(&mut mallory, Duration::from_secs(5)).await;
    let (_again, answer) = ws_join(&url, &mallory_token).await;
    assert_eq!((answer["type"].as_str(), answer["code"].as_str()), (Some("error"), Some("token_revoked")), "{answer}");
    // WHIP with the same token is refused as well.
    let r = call(&app, Method::POST, "/whip/club", &[("authorization", &format!("Bearer {mallory_token}")), ("content-type", "application/sdp")], offer(true)).await;
    assert_eq!((r.status, r.code()), (StatusCode::UNAUTHORIZED, "token_revoked".to_string()));
    assert_eq!(identities(&app, "club").await, vec!["alice"]);
    // A token the operator mints after the kick lets it back in.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let (_back, joined) = ws_join(&url, &token("club", "mallory", Grants::default(), 60)).await;
    assert_eq!(joined["type"], "joined");
    still_answers(&mut alice).await;
}

#[tokio::test]
async fn a_room_created_for_a_join_that_failed_is_removed() {
    // No media node: every join fails after its room was created.
    let app = App::new(settings(), KEY.into(), SECRET.into(), "node-secret-node-secret".into());
    let url = serve(app.clone()).await;
    for i in 0..50 {
        let (_ws, answer) = ws_join(&url, &token(&format!("junk-{i}"), "x", Grants::default(), 60)).await;
        assert_eq!(answer["code"], "no_media_node");
        let r = call(&app, Method::POST, &format!("/whip/junk-w{i}"), &[("authorization", &format!("Bearer {}", token(&format!("junk-w{i}"), "x", Grants::default(), 60))), ("content-type", "application/sdp")], offer(true)).await;
        assert_eq!(r.status, StatusCode::SERVICE_UNAVAILABLE);
    }
    let r = call(&app, Method::GET, "/api/rooms", &[("authorization", &basic())], Body::empty()).await;
    assert_eq!(r.json().as_array().map(Vec::len), Some(0), "{}", r.body);
}

/// Resident memory of this process, in KiB.
fn rss_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status.lines().find_map(|l| l.strip_prefix("VmRSS:")).and_then(|v| v.split_whitespace().next()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_client_that_never_reads_is_closed_and_costs_bounded_memory() {
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    let mut normal = joined_client(&url, "loud", "alice").await;
    // Mallory joins, then never reads again.
    let (mut mallory, joined) = ws_join(&url, &token("loud", "mallory", Grants::default(), 600)).await;
    assert_eq!(joined["type"], "joined");
    let rss0 = rss_kib();
    assert!(identities(&app, "loud").await.contains(&"mallory".to_string()));
    // The room churns: every join and leave is news for mallory (and alice, who reads).
    let reader = tokio::spawn(async move {
        while let Some(Ok(_)) = normal.next().await {}
    });
    let mut closed_after = None;
    for i in 0..40_000u32 {
        let claims = control_plane::token::Claims { iss: KEY.into(), sub: format!("churn-{i}-{}", "x".repeat(200)), room: "loud".into(), grants: Grants::default(), iat: 0, nbf: 0, exp: u64::MAX, open: false };
        match app.admit(&claims, control_plane::state::Via::Whip, None) {
            Ok(adm) => {
                app.remove(&adm.session, false, None);
            }
            Err(e) => panic!("churn join {i}: {e}"),
        }
        if i % 100 == 0 {
            let who = identities(&app, "loud").await;
            if !who.iter().any(|n| n == "mallory") {
                closed_after = Some(i);
                break;
            }
        }
    }
    // Once the kernel's buffers are full, the writer's send waits out its 10 s deadline.
    let t_churn = Instant::now();
    while closed_after.is_none() && t_churn.elapsed() < Duration::from_secs(20) {
        if identities(&app, "loud").await.iter().all(|n| n != "mallory") {
            closed_after = Some(40_000);
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let growth = rss_kib().saturating_sub(rss0);
    println!("FIGURE ws_never_reads closed_after_churns={closed_after:?} (two events each) rss_growth_kib={growth}");
    assert!(closed_after.is_some(), "mallory's session ends once its queue is full");
    assert!(growth < 64 * 1024, "memory stays bounded: {growth} KiB");
    reader.abort();
    // Mallory's socket was closed by the server (after what the kernel buffered).
    let _ = closed_by_server(&mut mallory, Duration::from_secs(15)).await;
    let mut alice = joined_client(&url, "loud", "alice2").await;
    still_answers(&mut alice).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_hundred_silent_connections_are_closed_at_the_join_timeout() {
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    let mut normal = joined_client(&url, "calm2", "alice").await;
    let rss0 = rss_kib();
    let t0 = Instant::now();
    let mut silent = Vec::new();
    for _ in 0..300 {
        silent.push(tokio_tungstenite::connect_async(&url).await.unwrap().0);
    }
    still_answers(&mut normal).await;
    let closes = futures_util::future::join_all(silent.iter_mut().map(|ws| closed_by_server(ws, JOIN_TIMEOUT + Duration::from_secs(8)))).await;
    println!("FIGURE ws_silent connections=300 rss_growth_kib={} closed_within_s={:.1}", rss_kib().saturating_sub(rss0), t0.elapsed().as_secs_f64());
    assert!(closes.iter().all(|c| c.as_ref().is_some_and(|(code, reason)| *code == CloseCode::Policy && reason == "join timeout")), "{closes:?}");
    still_answers(&mut normal).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_node_whose_link_goes_silent_is_dropped() {
    use control_plane::nodes::{LINK_TIMEOUT, PING_EVERY};
    let app = app_with_node(settings());
    let url = serve(app.clone()).await;
    let link_url = url.replace("/ws", link::LINK_PATH);
    let mut req = tokio_tungstenite::tungstenite::client::IntoClientRequest::into_client_request(link_url.as_str()).unwrap();
    req.headers_mut().insert(link::SECRET_HEADER, "node-secret-node-secret".parse().unwrap());
    let (mut node, _) = tokio_tungstenite::connect_async(req).await.unwrap();
    let register = link::Event::Register { version: link::PROTOCOL_VERSION, node: "node-silent".into(), addresses: vec!["127.0.0.1".into()], cores: vec![link::CoreInfo { core: 0, port: 40001 }], capacity_per_core: 10 };
    node.send(Message::text(register.to_json())).await.unwrap();
    let nodes = || async { call(&app, Method::GET, "/healthz", &[], Body::empty()).await.json()["nodes"].as_u64() };
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(nodes().await, Some(2));
    // The node now hangs: it reads nothing (so it answers no ping) and sends nothing.
    let t0 = Instant::now();
    while nodes().await == Some(2) && t0.elapsed() < LINK_TIMEOUT + PING_EVERY + Duration::from_secs(5) {
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let took = t0.elapsed();
    println!("FIGURE link_silent dropped_after_s={:.1}", took.as_secs_f64());
    assert_eq!(nodes().await, Some(1), "the silent node is dropped");
    assert!(took >= LINK_TIMEOUT - Duration::from_secs(1), "not before the timeout: {took:?}");
    drop(node);
}
