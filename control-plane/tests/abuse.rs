//! Hostile signaling clients against the real router on a loopback listener: each is cut off
//! within its limit, and a normal client beside it keeps working. Runs on its own with
//! `cargo test -p control-plane --test abuse`.

mod common;

use common::*;
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
