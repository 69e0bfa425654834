//! Signaling per target: how one synthetic participant joins our control plane (REST token +
//! WebSocket), a WHIP/WHEP server, or Janus VideoRoom (HTTP API), then runs its connections.

use std::cell::RefCell;
use std::collections::HashMap;
use std::net::IpAddr;
use std::ops::ControlFlow::{self, Break, Continue};
use std::rc::Rc;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use signaling::{ClientMsg, ServerMsg};
use tokio_tungstenite::tungstenite::Message;

use crate::bucket::TokenBucket;
use crate::http::{Api, HttpError, Origin};
use crate::peer::{Conn, Ctx, MediaSpec, PeerError, Sending, Signals, Ws, SIGNAL_QUEUE};
use crate::scenario::{Scenario, TargetKind, VideoCodec};
use crate::stats::CappedRx;
use crate::view::View;

/// Which track a participant publishes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Publishes video.
    Video,
    /// Publishes audio only.
    Audio,
    /// Receives only.
    Subscriber,
}

/// One synthetic participant.
#[derive(Debug, Clone)]
pub struct Participant {
    /// Room index.
    pub room: usize,
    /// Identity, unique in the room.
    pub identity: String,
    /// What it publishes.
    pub role: Role,
    /// Receive-side bandwidth cap, kbit/s.
    pub cap_kbps: Option<u64>,
    /// When to start joining.
    pub start: Instant,
    /// Stop sending.
    pub until: Instant,
    /// Stop receiving.
    pub end: Instant,
}

impl Participant {
    fn sending(&self) -> Sending {
        Sending { video: self.role == Role::Video, audio: self.role == Role::Audio, until: self.until, end: self.end }
    }
}

/// Everything participants share across threads (only signaling touches the lock).
pub struct Shared {
    /// The scenario.
    pub scenario: Scenario,
    /// Synthetic media.
    pub spec: MediaSpec,
    /// Our REST API (ours; optional for whip).
    pub api: Option<Api>,
    /// TLS for wss/https URLs.
    pub tls: Option<Arc<rustls::ClientConfig>>,
    /// Local address for media candidates.
    pub local_ip: IpAddr,
    /// Room names (ours, whip) or numbers (janus) by index.
    pub rooms: Vec<String>,
    /// Janus publisher ids by room index, identity.
    pub feeds: Mutex<HashMap<usize, Vec<(String, u64)>>>,
    /// Publisher identities per room, in order.
    pub publishers: Vec<String>,
}

/// Runs one participant to the end of the scenario.
pub async fn participant(shared: &Shared, ctx: &Ctx, p: Participant) -> Result<(), PeerError> {
    tokio::time::sleep_until(p.start.into()).await;
    let who = Who { label: format!("room {} {}", p.room, p.identity).into(), cap: p.cap_kbps.map(|k| Rc::new(RefCell::new(TokenBucket::new(k)))) };
    let result = match shared.scenario.target {
        TargetKind::Ours => ours(shared, ctx, &p, &who).await,
        TargetKind::Whip => whip(shared, ctx, &p, &who).await,
        TargetKind::Janus => janus(shared, ctx, &p, &who).await,
        TargetKind::Turn => Err(PeerError::Refused("turn scenarios have no participants".into())),
    };
    if let Some(cap) = &who.cap {
        let b = cap.borrow();
        let report = CappedRx { subscriber: who.label.to_string(), cap_kbps: b.kbps(), received_kbps: b.passed_kbps(), offered_kbps: b.offered_kbps(), passed: b.passed, dropped: b.dropped };
        ctx.sink.borrow_mut().capped.push(report);
    }
    result
}

/// A participant's name in the report and its receive cap, shared by its connections.
pub struct Who {
    /// "room R IDENTITY".
    pub label: Rc<str>,
    /// Receive-side bandwidth cap.
    pub cap: Option<Rc<RefCell<TokenBucket>>>,
}

impl Who {
    /// A new media connection of this participant.
    async fn conn(&self, shared: &Shared) -> Result<Conn, PeerError> {
        let mut conn = Conn::new(shared.local_ip, shared.spec, self.label.clone()).await?;
        if let Some(cap) = &self.cap {
            conn.set_cap(cap.clone());
        }
        Ok(conn)
    }
}

async fn ours(shared: &Shared, ctx: &Ctx, p: &Participant, who: &Who) -> Result<(), PeerError> {
    let join_start = Instant::now();
    let api = shared.api.as_ref().ok_or_else(|| PeerError::Refused("no API".into()))?;
    let room = &shared.rooms[p.room];
    let token = api.token(room, &p.identity, p.role != Role::Subscriber).await?;
    let url = format!("wss://{}:{}/ws", api.origin.host, api.origin.port);
    let connector = shared.tls.clone().map(tokio_tungstenite::Connector::Rustls);
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(url.as_str(), None, true, connector).await.map_err(|e| PeerError::Ws(e.to_string()))?;
    // Subscribers may choose what they view; everyone else receives everything.
    let s = &shared.scenario;
    let mut view = if p.role == Role::Subscriber { View::new(s.view_tracks, s.view_size) } else { None };
    ws_send(&mut ws, &ClientMsg::Join { token, auto_subscribe: view.as_ref().and_then(View::auto_subscribe) }).await?;
    // Messages that arrive while waiting (track_published, say) are kept for the media loop.
    let mut backlog = Vec::new();
    let joined = wait_for(&mut ws, "joined", &mut backlog, |m| if matches!(m, ServerMsg::Joined { .. }) { Break(m) } else { Continue(m) }).await?;
    let mut conn = who.conn(shared).await?;
    let sub = usize::from(p.role == Role::Subscriber);
    let (offer, pending) = conn.offer(&p.identity, p.sending(), sub, sub)?;
    ws_send(&mut ws, &ClientMsg::Offer { sdp: offer }).await?;
    let answer = wait_for(&mut ws, "answer", &mut backlog, |m| match m {
        ServerMsg::Answer { sdp } => Break(sdp),
        other => Continue(other),
    })
    .await?;
    conn.accept_answer(pending, &answer)?;
    // The WebSocket gets its own reader and writer tasks; the media loop sees channels.
    let (mut sink, mut stream) = ws.split();
    let (in_tx, in_rx) = tokio::sync::mpsc::channel(SIGNAL_QUEUE);
    let (out_tx, mut out_rx) = tokio::sync::mpsc::channel::<ClientMsg>(SIGNAL_QUEUE);
    // Past the queue's size these are dropped (a full queue never blocks the join).
    for m in view.as_mut().map(|v| v.on_message(&joined)).unwrap_or_default() {
        let _ = out_tx.try_send(m);
    }
    for m in backlog {
        let _ = in_tx.try_send(m);
    }
    let reader = tokio::task::spawn_local(async move {
        while let Some(Ok(m)) = stream.next().await {
            if let Message::Text(t) = m {
                let Some(msg) = parse(&t) else { continue };
                if in_tx.send(msg).await.is_err() {
                    break;
                }
            }
        }
    });
    let writer = tokio::task::spawn_local(async move {
        while let Some(msg) = out_rx.recv().await {
            let text = match encode(&msg) {
                Ok(t) => t,
                Err(e) => {
                    tracing::debug!(error = %e, "signaling message not sent");
                    continue;
                }
            };
            if sink.send(Message::text(text)).await.is_err() {
                break;
            }
        }
        let _ = sink.close().await;
    });
    let mut signals = Signals { rx: in_rx, tx: out_tx, view };
    let r = conn.run(p.sending(), Some(&mut signals), ctx, join_start).await;
    signals.send(ClientMsg::Leave);
    drop(signals);
    // A server that stopped reading does not hold the peer: the leave is best effort.
    let abort = writer.abort_handle();
    if tokio::time::timeout(Duration::from_secs(5), writer).await.is_err() {
        abort.abort();
    }
    reader.abort();
    r
}

/// JSON text of a message to our server.
fn encode(msg: &ClientMsg) -> Result<String, PeerError> {
    serde_json::to_string(msg).map_err(|e| PeerError::Ws(format!("encoding {msg:?}: {e}")))
}

/// A message from our server; one that does not parse (say, a type from a newer server) is
/// logged and skipped.
fn parse(text: &str) -> Option<ServerMsg> {
    match serde_json::from_str(text) {
        Ok(msg) => Some(msg),
        Err(e) => {
            tracing::debug!(error = %e, message = %text, "unparsed signaling message ignored");
            None
        }
    }
}

async fn ws_send(ws: &mut Ws, msg: &ClientMsg) -> Result<(), PeerError> {
    ws.send(Message::text(encode(msg)?)).await.map_err(|e| PeerError::Ws(e.to_string()))
}

/// Most messages kept while waiting for one (the rest are dropped).
const BACKLOG: usize = 1024;

/// Reads messages until `pick` takes one (`Break`; named `kind` in errors); an `error`
/// message fails. Messages `pick` hands back (`Continue`) go to `backlog`.
async fn wait_for<T>(ws: &mut Ws, kind: &str, backlog: &mut Vec<ServerMsg>, pick: impl Fn(ServerMsg) -> ControlFlow<T, ServerMsg>) -> Result<T, PeerError> {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let msg = tokio::time::timeout_at(deadline, ws.next()).await.map_err(|_| PeerError::Ws(format!("no {kind} in time")))?;
        match msg {
            Some(Ok(Message::Text(t))) => match parse(&t) {
                Some(ServerMsg::Error { code, message }) => return Err(PeerError::Refused(format!("{code}: {message}"))),
                Some(msg) => match pick(msg) {
                    Break(found) => return Ok(found),
                    Continue(other) if backlog.len() < BACKLOG => backlog.push(other),
                    Continue(_) => {}
                },
                None => {}
            },
            Some(Ok(_)) => {}
            _ => return Err(PeerError::Ws("signaling closed".into())),
        }
    }
}

/// WHIP/WHEP: a publisher POSTs its offer to the WHIP URL; every participant POSTs one
/// receive-only offer per other publisher to the WHEP URL.
async fn whip(shared: &Shared, ctx: &Ctx, p: &Participant, who: &Who) -> Result<(), PeerError> {
    let join_start = Instant::now();
    let s = &shared.scenario;
    let room = &shared.rooms[p.room];
    // Every WHIP/WHEP session gets its own identity: servers (ours, LiveKit) replace a
    // session when the same identity connects again.
    let auth = |identity: String, publish: bool| async move {
        let bearer = match (&shared.api, &s.bearer) {
            (Some(api), _) => api.token(room, &identity, publish).await?,
            (None, Some(b)) => b.clone(),
            (None, None) => return Err(PeerError::Refused("the whip target needs --api-key or --bearer".into())),
        };
        Ok::<_, PeerError>(format!("Bearer {bearer}"))
    };
    let mut sessions = Vec::new();
    let mut conns = Vec::new();
    if p.role != Role::Subscriber {
        let bearer = auth(p.identity.clone(), true).await?;
        let mut conn = who.conn(shared).await?;
        let (offer, pending) = conn.offer(&p.identity, p.sending(), 0, 0)?;
        let url = s.whip_url.replace("{room}", room);
        let (origin, location, answer) = post_sdp(&url, shared.tls.clone(), &bearer, offer, Duration::ZERO).await?;
        conn.accept_answer(pending, &answer)?;
        sessions.push((origin, location, bearer));
        conns.push((conn, p.sending()));
    }
    let recv = Sending { video: false, audio: false, until: p.until, end: p.end };
    // A subscriber viewing N video tracks plays the first N video publishers (and all audio).
    let viewed = if p.role == Role::Subscriber { s.view_tracks.unwrap_or(usize::MAX) } else { usize::MAX };
    let others = shared.publishers.iter().enumerate().filter(|(_, x)| **x != p.identity);
    for (_, publisher) in others.filter(|(i, _)| *i >= s.video_publishers || *i < viewed) {
        let bearer = auth(format!("{}-sees-{publisher}", p.identity), false).await?;
        let mut conn = who.conn(shared).await?;
        let (offer, pending) = conn.offer(&p.identity, recv, 1, 1)?;
        let url = s.whep_url.replace("{room}", room).replace("{publisher}", publisher);
        // The publisher may not have published yet: retry "not found" for a while.
        let (origin, location, answer) = post_sdp(&url, shared.tls.clone(), &bearer, offer, Duration::from_secs(20)).await?;
        conn.accept_answer(pending, &answer)?;
        sessions.push((origin, location, bearer));
        conns.push((conn, recv));
    }
    let runs = conns.into_iter().map(|(c, send)| c.run(send, None, ctx, join_start));
    let results = futures_util::future::join_all(runs).await;
    for (origin, location, bearer) in sessions {
        if let Some(path) = location {
            let _ = origin.send("DELETE", &path, &[("authorization", bearer.as_str())], String::new()).await;
        }
    }
    results.into_iter().collect()
}

async fn post_sdp(url: &str, tls: Option<Arc<rustls::ClientConfig>>, auth: &str, offer: String, retry_404: Duration) -> Result<(Origin, Option<String>, String), PeerError> {
    let (origin, path) = Origin::parse(url, tls)?;
    let deadline = Instant::now() + retry_404;
    loop {
        let r = origin.send("POST", &path, &[("authorization", auth), ("content-type", "application/sdp")], offer.clone()).await?;
        if r.status == 201 {
            let location = r.location.map(|l| if l.starts_with('/') { l } else { Origin::parse(&l, None).map(|(_, p)| p).unwrap_or(l) });
            return Ok((origin, location, r.body));
        }
        if r.status == 404 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(200)).await;
            continue;
        }
        return Err(HttpError::Status { method: "POST".into(), path, status: r.status, body: r.body }.into());
    }
}

/// A Janus API session with one plugin handle.
pub struct JanusHandle {
    origin: Origin,
    base: String,
    session: u64,
    handle: u64,
    /// Events fetched for another handle of this session.
    stash: std::cell::RefCell<Vec<serde_json::Value>>,
}

fn janus_tx() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(1);
    format!("lt{}", N.fetch_add(1, Ordering::Relaxed))
}

async fn janus_post(origin: &Origin, path: &str, mut body: serde_json::Value) -> Result<serde_json::Value, PeerError> {
    body["transaction"] = janus_tx().into();
    let r = origin.send("POST", path, &[("content-type", "application/json")], body.to_string()).await?;
    let v: serde_json::Value = serde_json::from_str(&r.body).map_err(|_| PeerError::Refused(format!("Janus answered HTTP {}: {}", r.status, r.body)))?;
    if v["janus"] == "error" {
        return Err(PeerError::Refused(format!("Janus: {}", v["error"])));
    }
    Ok(v)
}

impl JanusHandle {
    /// Creates a session and attaches the VideoRoom plugin.
    pub async fn attach(janus_url: &str) -> Result<Self, PeerError> {
        let (origin, base) = Origin::parse(janus_url, None)?;
        let base = base.trim_end_matches('/').to_string();
        let v = janus_post(&origin, &base, serde_json::json!({ "janus": "create" })).await?;
        let session = v["data"]["id"].as_u64().ok_or_else(|| PeerError::Refused(format!("Janus create: {v}")))?;
        let mut h = Self { origin, base, session, handle: 0, stash: Default::default() };
        h.handle = h.attach_plugin().await?;
        Ok(h)
    }

    async fn attach_plugin(&self) -> Result<u64, PeerError> {
        let path = format!("{}/{}", self.base, self.session);
        let v = janus_post(&self.origin, &path, serde_json::json!({ "janus": "attach", "plugin": "janus.plugin.videoroom" })).await?;
        v["data"]["id"].as_u64().ok_or_else(|| PeerError::Refused(format!("Janus attach: {v}")))
    }

    /// Sends a plugin request; returns the synchronous plugin data (for `create`, `list`...).
    pub async fn request(&self, handle: u64, body: serde_json::Value, jsep: Option<serde_json::Value>) -> Result<serde_json::Value, PeerError> {
        let path = format!("{}/{}/{}", self.base, self.session, handle);
        let mut msg = serde_json::json!({ "janus": "message", "body": body });
        if let Some(j) = jsep {
            msg["jsep"] = j;
        }
        let v = janus_post(&self.origin, &path, msg).await?;
        let data = &v["plugindata"]["data"];
        if data["error"].is_string() {
            return Err(PeerError::Refused(format!("Janus VideoRoom {}: {}", data["error_code"], data["error"])));
        }
        Ok(v)
    }

    /// Long-polls the session until an event from `handle` carries a JSEP. A publisher's two
    /// handles wait at the same time on one session, so events for the other handle are kept
    /// for it rather than dropped.
    async fn event_with_jsep(&self, handle: u64) -> Result<serde_json::Value, PeerError> {
        let deadline = Instant::now() + Duration::from_secs(40);
        let path = format!("{}/{}?maxev=10", self.base, self.session);
        loop {
            let stashed = {
                let mut stash = self.stash.borrow_mut();
                stash.iter().position(|e| e["sender"].as_u64() == Some(handle)).map(|i| stash.remove(i))
            };
            if let Some(e) = stashed {
                let data = &e["plugindata"]["data"];
                if data["error"].is_string() {
                    return Err(PeerError::Refused(format!("Janus VideoRoom {}: {}", data["error_code"], data["error"])));
                }
                if e["jsep"]["sdp"].is_string() {
                    return Ok(e);
                }
                continue;
            }
            if Instant::now() >= deadline {
                return Err(PeerError::Refused("Janus sent no SDP in time".into()));
            }
            let r = self.origin.send("GET", &path, &[], String::new()).await?;
            let v: serde_json::Value = serde_json::from_str(&r.body).unwrap_or_default();
            let events = match v {
                serde_json::Value::Array(a) => a,
                other => vec![other],
            };
            let mut stash = self.stash.borrow_mut();
            stash.extend(events.into_iter().filter(|e| e["sender"].is_u64()));
            // Keep the stash bounded: only events with an SDP or an error matter.
            stash.retain(|e| e["jsep"]["sdp"].is_string() || e["plugindata"]["data"]["error"].is_string());
        }
    }

    async fn keepalive(&self) {
        let path = format!("{}/{}", self.base, self.session);
        let _ = janus_post(&self.origin, &path, serde_json::json!({ "janus": "keepalive" })).await;
    }

    /// Destroys the session.
    pub async fn destroy(&self) {
        let path = format!("{}/{}", self.base, self.session);
        let _ = janus_post(&self.origin, &path, serde_json::json!({ "janus": "destroy" })).await;
    }
}

/// Creates the Janus VideoRoom rooms of a scenario; returns their numbers.
pub async fn janus_rooms(s: &Scenario) -> Result<Vec<String>, PeerError> {
    let h = JanusHandle::attach(&s.janus_url).await?;
    let base = 10_000 + (std::process::id() as u64 % 100_000) * 100;
    let mut rooms = Vec::new();
    for r in 0..s.rooms as u64 {
        let codec = match s.codec {
            VideoCodec::Vp8 => "vp8",
            VideoCodec::H264 => "h264",
            VideoCodec::Vp9 => "vp9",
        };
        let room = base + r;
        let body = serde_json::json!({ "request": "create", "room": room, "publishers": s.publishers() + 1, "videocodec": codec, "audiocodec": "opus", "bitrate": 0, "permanent": false, "description": "loadtest" });
        h.request(h.handle, body, None).await?;
        rooms.push(room.to_string());
    }
    h.destroy().await;
    Ok(rooms)
}

/// Janus VideoRoom: a publisher joins with its offer (`joinandconfigure`); every participant
/// subscribes to all other publishers with one multistream subscriber handle. The publishing
/// connection runs while the subscription is set up (Janus only lets a feed be subscribed once
/// its media is up).
async fn janus(shared: &Shared, ctx: &Ctx, p: &Participant, who: &Who) -> Result<(), PeerError> {
    let join_start = Instant::now();
    let room: u64 = shared.rooms[p.room].parse().map_err(|_| PeerError::Refused("bad Janus room".into()))?;
    let h = JanusHandle::attach(&shared.scenario.janus_url).await?;
    let publisher = async {
        let mut conn = who.conn(shared).await?;
        let (offer, pending) = conn.offer(&p.identity, p.sending(), 0, 0)?;
        let body = serde_json::json!({ "request": "joinandconfigure", "ptype": "publisher", "room": room, "display": p.identity, "audio": p.role == Role::Audio, "video": p.role == Role::Video });
        let mut jsep = serde_json::json!({ "type": "offer", "sdp": offer });
        if shared.spec.simulcast {
            // Our offer lists the rids lowest first; Janus assumes highest first unless told.
            jsep["rid_order"] = "lmh".into();
        }
        h.request(h.handle, body, Some(jsep)).await?;
        let ev = h.event_with_jsep(h.handle).await?;
        conn.accept_answer(pending, ev["jsep"]["sdp"].as_str().unwrap_or_default())?;
        let id = ev["plugindata"]["data"]["id"].as_u64().ok_or_else(|| PeerError::Refused(format!("Janus join: no publisher id in {ev}")))?;
        shared.feeds.lock().map_err(|_| PeerError::Refused("feeds poisoned".into()))?.entry(p.room).or_default().push((p.identity.clone(), id));
        conn.run(p.sending(), None, ctx, join_start).await
    };
    let subscriber = async {
        // Wait for the other publishers of the room, then subscribe to all of them at once.
        let want = shared.scenario.publishers() - usize::from(p.role != Role::Subscriber);
        let deadline = Instant::now() + Duration::from_secs(30);
        let feeds = loop {
            let feeds: Vec<u64> = shared
                .feeds
                .lock()
                .map_err(|_| PeerError::Refused("feeds poisoned".into()))?
                .get(&p.room)
                .map(|v| v.iter().filter(|(who, _)| *who != p.identity).map(|(_, id)| *id).collect())
                .unwrap_or_default();
            if feeds.len() >= want {
                break feeds;
            }
            if Instant::now() > deadline {
                return Err(PeerError::Refused(format!("only {} of {want} publishers appeared", feeds.len())));
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        if feeds.is_empty() {
            return Ok(());
        }
        let sub = h.attach_plugin().await?;
        let streams: Vec<serde_json::Value> = feeds.iter().map(|f| serde_json::json!({ "feed": f })).collect();
        // A feed can be subscribed once its publisher's media is up (error 428 before).
        let deadline = Instant::now() + Duration::from_secs(20);
        let ev = loop {
            h.request(sub, serde_json::json!({ "request": "join", "ptype": "subscriber", "room": room, "streams": streams }), None).await?;
            match h.event_with_jsep(sub).await {
                Err(PeerError::Refused(m)) if m.contains("428") && Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(250)).await,
                r => break r?,
            }
        };
        let mut conn = who.conn(shared).await?;
        let answer = conn.accept_offer(ev["jsep"]["sdp"].as_str().unwrap_or_default())?;
        h.request(sub, serde_json::json!({ "request": "start" }), Some(serde_json::json!({ "type": "answer", "sdp": answer }))).await?;
        conn.run(Sending { video: false, audio: false, until: p.until, end: p.end }, None, ctx, join_start).await
    };
    let keepalive = async {
        loop {
            tokio::time::sleep(Duration::from_secs(20)).await;
            h.keepalive().await;
        }
    };
    let both = async {
        if p.role == Role::Subscriber {
            subscriber.await
        } else {
            let (a, b) = futures_util::future::join(publisher, subscriber).await;
            a.and(b)
        }
    };
    let result = tokio::select! {
        r = both => r,
        () = keepalive => Ok(()),
    };
    h.destroy().await;
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn our_signaling_is_typed_and_bad_messages_are_skipped() {
        assert_eq!(encode(&ClientMsg::join("t")).unwrap(), r#"{"type":"join","token":"t"}"#);
        assert_eq!(parse(r#"{"type":"offer","sdp":"v=0"}"#), Some(ServerMsg::Offer { sdp: "v=0".into() }));
        assert_eq!(parse(r#"{"type":"error","code":"from_the_future","message":"m"}"#), Some(ServerMsg::error(signaling::ErrorCode::Unknown, "m")));
        assert_eq!(parse(r#"{"type":"something_new"}"#), None);
        assert_eq!(parse("{not json"), None);
    }
}
