//! WebSocket signaling at `/ws` (protocol in docs/signaling.md).
//!
//! The client joins with a token, sends one SDP offer for what it publishes, and answers the
//! server's offers whenever other participants' tracks come or go. The server is the only
//! side that renegotiates after the first offer, so there is no glare. After its offer it may
//! `subscribe` and `unsubscribe` to single tracks ([`crate::subscribe`]); with auto-subscribe
//! off (token grant or `join` flag) it receives only those.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use link::{Subscription, TrackSettings};
/// The protocol's messages, defined in the shared `signaling` crate.
pub use signaling::{ClientMsg, ErrorCode, ServerMsg};
use tokio::sync::mpsc;

use crate::error::ApiError;
use limits::Bucket;
use crate::shutdown::RECONNECT;
use crate::state::{App, Via};

/// Largest signaling message accepted (an offer with simulcast is about 10 KiB).
pub const MAX_MESSAGE: usize = 64 * 1024;

/// A connection that has not joined this long after it opened is closed.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// The server pings a connection this often.
pub const PING_EVERY: Duration = Duration::from_secs(15);

/// A connection from which nothing (not even a pong) arrived for this long is closed.
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(40);

/// Messages a client may send at once, and per second after that; more closes the connection.
pub const MESSAGE_BURST: u32 = 50;
/// See [`MESSAGE_BURST`].
pub const MESSAGES_PER_SECOND: u32 = 20;

/// Messages queued for one client at most. Signaling is a few messages a second even in a
/// crowd, so a client this far behind has stopped reading (or floods pings without reading
/// the pongs): it is disconnected rather than queued for without limit.
pub const CLIENT_QUEUE: usize = 1024;

/// One send to a client that takes longer than this ends the connection.
const SEND_TIMEOUT: Duration = Duration::from_secs(10);

/// The sending side of one client's queue. It never blocks the sender (the room's lock is
/// often held): a full queue marks the client as too slow, and its connection is closed.
#[derive(Debug, Clone)]
pub struct ClientTx {
    tx: mpsc::Sender<Outgoing>,
    overflowed: Arc<AtomicBool>,
}

impl ClientTx {
    /// A queue of [`CLIENT_QUEUE`] messages, and its receiving side.
    fn new() -> (Self, mpsc::Receiver<Outgoing>) {
        let (tx, rx) = mpsc::channel(CLIENT_QUEUE);
        (ClientTx { tx, overflowed: Arc::default() }, rx)
    }

    /// Queues a message; when the queue is full it is dropped and the client marked too slow.
    pub fn send(&self, out: impl Into<Outgoing>) {
        if let Err(mpsc::error::TrySendError::Full(_)) = self.tx.try_send(out.into()) {
            self.overflowed.store(true, Ordering::Relaxed);
        }
    }

    /// Resolves once the writer has stopped (the socket failed, timed out, or closed).
    async fn closed(&self) {
        self.tx.closed().await;
    }
}

/// What goes down one connection's channel: a message, a ping, or the order to close.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A message to send.
    Msg(ServerMsg),
    /// A WebSocket ping (the client's pong shows it is there).
    Ping,
    /// Close the socket after sending what came before.
    Close,
    /// Close the socket with a policy violation (1008) and this reason.
    Reject(&'static str),
    /// Close the socket with [`RECONNECT`]: the server is stopping, come back.
    Reconnect,
}

impl From<ServerMsg> for Outgoing {
    fn from(msg: ServerMsg) -> Self {
        Outgoing::Msg(msg)
    }
}

impl From<&ApiError> for ServerMsg {
    fn from(e: &ApiError) -> Self {
        ServerMsg::error(e.code(), e.to_string())
    }
}

/// `GET /ws`: upgrades to the signaling WebSocket.
pub async fn ws(State(app): State<Arc<App>>, upgrade: WebSocketUpgrade) -> Response {
    upgrade.max_message_size(MAX_MESSAGE).on_upgrade(move |socket| serve(app, socket))
}

fn encode(msg: &ServerMsg) -> Message {
    Message::Text(serde_json::to_string(msg).unwrap_or_default().into())
}

async fn serve(app: Arc<App>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = ClientTx::new();
    // The writer holds the flag only: a sender of its own would keep it waiting forever.
    let slow = tx.overflowed.clone();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let frame = match out {
                _ if slow.load(Ordering::Relaxed) => {
                    tracing::debug!("signaling client too slow: its queue filled; closing");
                    Message::Close(Some(CloseFrame { code: 1008, reason: "too slow: outgoing queue full".into() }))
                }
                Outgoing::Msg(msg) => encode(&msg),
                Outgoing::Ping => Message::Ping(Default::default()),
                Outgoing::Close => Message::Close(Some(CloseFrame { code: 1000, reason: "bye".into() })),
                Outgoing::Reject(reason) => Message::Close(Some(CloseFrame { code: 1008, reason: reason.into() })),
                Outgoing::Reconnect => Message::Close(Some(CloseFrame { code: RECONNECT, reason: "server restarting: reconnect".into() })),
            };
            let last = matches!(frame, Message::Close(_));
            if !matches!(tokio::time::timeout(SEND_TIMEOUT, sink.send(frame)).await, Ok(Ok(()))) || last {
                break;
            }
        }
    });
    let mut conn = Conn::default();
    let opened = Instant::now();
    let mut last_heard = opened;
    let mut pings = tokio::time::interval_at((opened + PING_EVERY).into(), PING_EVERY);
    let mut bucket = Bucket::new(opened, MESSAGE_BURST, MESSAGES_PER_SECOND);
    let mut stopping = app.shutdown.watcher();
    loop {
        // Before `join`, the join deadline; after, silence for IDLE_TIMEOUT.
        let deadline = if conn.session.is_none() { opened + JOIN_TIMEOUT } else { last_heard + IDLE_TIMEOUT };
        // The writer stopping (peer gone, too slow, or told to close) ends the reading too.
        let next = tokio::select! {
            next = stream.next() => next,
            () = tx.closed() => break,
            () = stopping.begun() => {
                // The session is not removed: that would end its media, and the process is
                // going away, not the client.
                tx.send(Outgoing::Reconnect);
                conn.session = None;
                break;
            }
            _ = pings.tick() => {
                tx.send(Outgoing::Ping);
                continue;
            }
            () = tokio::time::sleep_until(deadline.into()) => {
                let why = if conn.session.is_none() { "join timeout" } else { "idle timeout" };
                tracing::debug!(why, "signaling connection closed");
                tx.send(Outgoing::Reject(why));
                break;
            }
        };
        let Some(Ok(msg)) = next else { break };
        last_heard = Instant::now();
        if !bucket.take(last_heard) {
            tracing::debug!("signaling client over its message rate; closing");
            tx.send(Outgoing::Reject("too many messages"));
            break;
        }
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let parsed = match serde_json::from_str::<ClientMsg>(&text) {
            Ok(m) => m,
            Err(e) => {
                tx.send(ServerMsg::error(ErrorCode::BadRequest, format!("malformed message: {e}")));
                continue;
            }
        };
        if let Err(e) = handle(&app, &tx, &mut conn, parsed).await {
            tx.send(ServerMsg::from(&e));
        }
        if conn.session.as_ref().is_some_and(|s| app.room_of(s).is_none()) {
            // Removed (kicked, room deleted, media lost): the notice and Close are queued.
            conn.session = None;
            break;
        }
    }
    if let Some(s) = conn.session {
        app.remove(&s, true, None);
    }
    drop(tx);
    // What is queued goes out, each send bounded by its timeout; the whole by one more.
    let abort = writer.abort_handle();
    if tokio::time::timeout(SEND_TIMEOUT, writer).await.is_err() {
        abort.abort();
    }
}

/// What one connection knows about itself.
#[derive(Debug)]
struct Conn {
    /// Its session, once joined.
    session: Option<String>,
    /// Receives every other participant's tracks without subscribing (token and `join` agree).
    auto_subscribe: bool,
}

impl Default for Conn {
    fn default() -> Self {
        Conn { session: None, auto_subscribe: true }
    }
}

impl Conn {
    /// The session, or `unauthorized` before `join`.
    fn joined(&self) -> Result<&str, ApiError> {
        self.session.as_deref().ok_or_else(|| ApiError::Unauthorized("join first".into()))
    }
}

async fn handle(app: &Arc<App>, tx: &ClientTx, conn: &mut Conn, msg: ClientMsg) -> Result<(), ApiError> {
    match msg {
        ClientMsg::Join { token, auto_subscribe } => {
            if conn.session.is_some() {
                return Err(ApiError::BadRequest("already joined".into()));
            }
            let claims = app.keys.verify(&token)?;
            let adm = app.admit(&claims, Via::Websocket, Some(tx.clone()))?;
            tx.send(ServerMsg::Joined {
                    room: adm.room,
                    identity: adm.identity.clone(),
                    session: adm.session.clone(),
                    grants: claims.grants,
                    participants: adm.others,
                ice_servers: app.ice_servers(&adm.identity),
            });
            conn.session = Some(adm.session);
            conn.auto_subscribe = claims.grants.auto_subscribe && auto_subscribe.unwrap_or(true);
            Ok(())
        }
        ClientMsg::Offer { sdp } => {
            let subscription = if conn.auto_subscribe { Subscription::All } else { Subscription::Chosen };
            let answer = app.start_media(conn.joined()?, sdp, subscription, TrackSettings::default()).await?;
            tx.send(ServerMsg::Answer { sdp: answer });
            Ok(())
        }
        ClientMsg::Answer { sdp } => app.client_answer(conn.joined()?, sdp),
        ClientMsg::Subscribe { tracks, settings } => app.subscribe(conn.joined()?, &tracks, settings),
        ClientMsg::Unsubscribe { tracks } => app.unsubscribe(conn.joined()?, &tracks),
        ClientMsg::Leave => {
            if let Some(s) = conn.session.take() {
                app.remove(&s, true, None);
            }
            tx.send(Outgoing::Close);
            Ok(())
        }
        ClientMsg::Ping => {
            tx.send(ServerMsg::Pong);
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_client_that_stops_reading_is_marked_too_slow_and_its_queue_stays_bounded() {
        let (tx, mut rx) = ClientTx::new();
        for _ in 0..CLIENT_QUEUE {
            tx.send(ServerMsg::Pong);
        }
        assert!(!tx.overflowed.load(Ordering::Relaxed), "a full queue is not yet an overflow");
        for _ in 0..10 * CLIENT_QUEUE {
            tx.send(ServerMsg::Pong);
        }
        assert!(tx.overflowed.load(Ordering::Relaxed));
        let mut queued = 0;
        while rx.try_recv().is_ok() {
            queued += 1;
        }
        assert_eq!(queued, CLIENT_QUEUE, "messages past the bound were dropped, not queued");
        drop(rx);
        tokio::time::timeout(Duration::from_secs(1), tx.closed()).await.expect("the reader sees the writer stop");
    }
}
