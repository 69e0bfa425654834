//! A media core that panics (through the debug-only trigger) ends its sessions with
//! `core_failed`, restarts empty on the same socket, and takes new joins.

use std::time::Duration;

use link::{Command, Event as LinkEvent, Grants, JoinError, LeaveReason, Subscription};
use media_plane::sfu::{CoreConfig, BWE_INITIAL, NACK_HISTORY};
use media_plane::worker::{self, CoreSetup, Mesh};
use str0m::media::{Direction, MediaKind};

fn offer() -> String {
    let mut rtc = str0m::Rtc::builder().build(std::time::Instant::now());
    let mut api = rtc.sdp_api();
    api.add_media(MediaKind::Audio, Direction::SendRecv, None, None, None);
    api.add_media(MediaKind::Video, Direction::SendRecv, None, None, None);
    api.apply().unwrap().0.to_sdp_string()
}

fn join(req: u64, room: &str, session: &str) -> Command {
    Command::Join {
        req,
        core: 0,
        room: room.into(),
        session: session.into(),
        identity: session.into(),
        grants: Grants { publish: true, subscribe: true },
        subscription: Subscription::All,
        video: Default::default(),
        offer: offer(),
    }
}

#[test]
fn a_panicking_core_ends_its_sessions_and_restarts() {
    std::env::set_var("MEDIA_PLANE_PANIC_ROOM", "boom");
    media_plane::crypto::install();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let config = CoreConfig { index: 0, local, candidates: vec![local], capacity: 100, connect_timeout: Duration::from_secs(30), cores: 1, nack_history: NACK_HISTORY, bwe_initial: BWE_INITIAL };
    let (events_tx, mut events) = tokio::sync::mpsc::unbounded_channel();
    let setup = CoreSetup { config, socket, cpu: 0, events: events_tx, force_epoll: true, mesh: Mesh::new(1).unwrap(), shed_after: None, load_interval: Duration::from_millis(200), metrics: Default::default() };
    let (_thread, inbox, _) = worker::spawn(setup).unwrap();
    let mut next = |what: &str, pick: &dyn Fn(&LinkEvent) -> bool| -> LinkEvent {
        let end = std::time::Instant::now() + Duration::from_secs(10);
        while std::time::Instant::now() < end {
            match events.try_recv() {
                Ok(e) if pick(&e) => return e,
                Ok(_) => {}
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
        panic!("no {what}");
    };
    inbox.send(join(1, "calm", "S-a"));
    next("answer for a", &|e| matches!(e, LinkEvent::Answer { req: 1, .. }));
    inbox.send(join(2, "boom", "S-b"));
    // The join that panicked the core fails at once (before, the control plane waited 10 s).
    next("join 2 failed", &|e| matches!(e, LinkEvent::JoinFailed { req: 2, error: JoinError::CoreFailed(0) }));
    let ended = next("a's end", &|e| matches!(e, LinkEvent::SessionEnded { .. }));
    match ended {
        LinkEvent::SessionEnded { room, session, reason } => assert_eq!((room.as_str(), session.as_str(), reason), ("calm", "S-a", LeaveReason::CoreFailed)),
        other => panic!("{other:?}"),
    }
    // The core is alive and empty: it reports its load and takes a new join.
    let load = next("a load report", &|e| matches!(e, LinkEvent::Load { .. }));
    assert!(matches!(load, LinkEvent::Load { sessions: 0, .. }), "{load:?}");
    inbox.send(join(3, "calm", "S-c"));
    next("answer for c", &|e| matches!(e, LinkEvent::Answer { req: 3, .. }));
    let load = next("a load report", &|e| matches!(e, LinkEvent::Load { .. }));
    assert!(matches!(load, LinkEvent::Load { sessions: 1, .. }), "{load:?}");
}

/// A fake control plane on `listener`: accepts the node's link, reads its `register`, and
/// returns the socket.
async fn accept_link(listener: &tokio::net::TcpListener) -> tokio_tungstenite::WebSocketStream<tokio::net::TcpStream> {
    use futures_util::StreamExt;
    let (tcp, _) = tokio::time::timeout(Duration::from_secs(30), listener.accept()).await.expect("the node dials").unwrap();
    let mut ws = tokio_tungstenite::accept_async(tcp).await.unwrap();
    match ws.next().await {
        Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) => assert!(t.contains("\"register\"")),
        other => panic!("expected register, got {other:?}"),
    }
    ws
}

/// The next event of type `kind` on a fake control plane's socket.
async fn next_event(ws: &mut tokio_tungstenite::WebSocketStream<tokio::net::TcpStream>, kind: &str) -> LinkEvent {
    use futures_util::StreamExt;
    loop {
        let msg = tokio::time::timeout(Duration::from_secs(10), ws.next()).await.unwrap_or_else(|_| panic!("no {kind} event"));
        if let Some(Ok(tokio_tungstenite::tungstenite::Message::Text(t))) = msg {
            let e: LinkEvent = serde_json::from_str(&t).unwrap();
            if serde_json::to_value(&e).unwrap()["type"] == kind {
                return e;
            }
        }
    }
}

/// One real core and its link client, dialling a fake control plane on the returned listener.
async fn node_with_link() -> tokio::net::TcpListener {
    use media_plane::link_client::{self, LinkSettings};
    media_plane::crypto::install();
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let socket = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
    let local = socket.local_addr().unwrap();
    let config = CoreConfig { index: 0, local, candidates: vec![local], capacity: 100, connect_timeout: Duration::from_secs(60), cores: 1, nack_history: NACK_HISTORY, bwe_initial: BWE_INITIAL };
    let (events_tx, events_rx) = tokio::sync::mpsc::unbounded_channel();
    let setup = CoreSetup { config, socket, cpu: 0, events: events_tx, force_epoll: true, mesh: Mesh::new(1).unwrap(), shed_after: None, load_interval: Duration::from_millis(200), metrics: Default::default() };
    let (_thread, inbox, _) = worker::spawn(setup).unwrap();
    let settings = LinkSettings {
        url: format!("ws://{addr}/internal/link"),
        secret: "node-secret-node-secret".into(),
        ca: None,
        node: "n1".into(),
        addresses: vec!["127.0.0.1".into()],
        cores: vec![link::CoreInfo { core: 0, port: local.port() }],
        capacity_per_core: 100,
    };
    tokio::spawn(link_client::run(settings, vec![inbox], events_rx));
    listener
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sessions_end_when_the_control_plane_stays_away_past_the_grace_period() {
    use futures_util::SinkExt;
    use media_plane::link_client::CONTROL_GRACE;
    let listener = node_with_link().await;
    let addr = listener.local_addr().unwrap();
    // The control plane places a session on the node.
    let mut ws = accept_link(&listener).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(serde_json::to_string(&join(7, "calm", "S-a")).unwrap())).await.unwrap();
    assert!(matches!(next_event(&mut ws, "answer").await, LinkEvent::Answer { req: 7, .. }));
    assert!(matches!(next_event(&mut ws, "load").await, LinkEvent::Load { sessions: 1, .. }));
    // Then it goes away, and stays away past the grace period.
    drop(ws);
    drop(listener);
    tokio::time::sleep(CONTROL_GRACE + Duration::from_secs(2)).await;
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    let mut ws = accept_link(&listener).await;
    // The node ended the session it held for the lost control plane.
    assert!(matches!(next_event(&mut ws, "load").await, LinkEvent::Load { sessions: 0, .. }));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_control_plane_back_within_the_grace_period_keeps_the_sessions() {
    use futures_util::SinkExt;
    use media_plane::link_client::CONTROL_GRACE;
    let listener = node_with_link().await;
    let mut ws = accept_link(&listener).await;
    ws.send(tokio_tungstenite::tungstenite::Message::text(serde_json::to_string(&join(8, "calm", "S-a")).unwrap())).await.unwrap();
    assert!(matches!(next_event(&mut ws, "answer").await, LinkEvent::Answer { req: 8, .. }));
    // A blip: the link drops and the node registers again a moment later.
    drop(ws);
    let ws = accept_link(&listener).await;
    // Watch the new link: the sessions each load report counts, and whether it closes.
    let seen = std::sync::Arc::new(std::sync::Mutex::new((None::<u32>, false)));
    let watch = seen.clone();
    tokio::spawn(async move {
        use futures_util::StreamExt;
        let mut ws = ws;
        while let Some(Ok(msg)) = ws.next().await {
            if let tokio_tungstenite::tungstenite::Message::Text(t) = msg {
                if let Ok(LinkEvent::Load { sessions, .. }) = serde_json::from_str(&t) {
                    watch.lock().unwrap().0 = Some(sessions);
                }
            }
        }
        watch.lock().unwrap().1 = true;
    });
    // Past the grace period counted from the blip, the link is up and the session is there.
    tokio::time::sleep(CONTROL_GRACE + Duration::from_secs(2)).await;
    assert_eq!(*seen.lock().unwrap(), (Some(1), false));
}
