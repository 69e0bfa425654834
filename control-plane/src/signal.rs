//! WebSocket signaling at `/ws` (protocol in docs/signaling.md).
//!
//! The client joins with a token, sends one SDP offer for what it publishes, and answers the
//! server's offers whenever other participants' tracks come or go. The server is the only
//! side that renegotiates after the first offer, so there is no glare. After its offer it may
//! `subscribe` and `unsubscribe` to single tracks ([`crate::subscribe`]); with auto-subscribe
//! off (token grant or `join` flag) it receives only those.

use std::sync::Arc;

use axum::extract::ws::{CloseFrame, Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::response::Response;
use futures_util::{SinkExt, StreamExt};
use link::{Subscription, TrackSettings};
/// The protocol's messages, defined in the shared `signaling` crate.
pub use signaling::{ClientMsg, ErrorCode, ServerMsg};
use tokio::sync::mpsc;

use crate::error::ApiError;
use crate::state::{App, Via};

/// Largest signaling message accepted.
pub const MAX_MESSAGE: usize = 256 * 1024;

/// What goes down one connection's channel: a message, or the order to close the socket.
#[derive(Debug, Clone)]
pub enum Outgoing {
    /// A message to send.
    Msg(ServerMsg),
    /// Close the socket after sending what came before.
    Close,
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
    let (tx, mut rx) = mpsc::unbounded_channel::<Outgoing>();
    let writer = tokio::spawn(async move {
        while let Some(out) = rx.recv().await {
            let msg = match out {
                Outgoing::Msg(msg) => msg,
                Outgoing::Close => {
                    let _ = sink.send(Message::Close(Some(CloseFrame { code: 1000, reason: "bye".into() }))).await;
                    break;
                }
            };
            if sink.send(encode(&msg)).await.is_err() {
                break;
            }
        }
    });
    let mut conn = Conn::default();
    while let Some(Ok(msg)) = stream.next().await {
        let text = match msg {
            Message::Text(t) => t,
            Message::Close(_) => break,
            _ => continue,
        };
        let parsed = match serde_json::from_str::<ClientMsg>(&text) {
            Ok(m) => m,
            Err(e) => {
                let _ = tx.send(ServerMsg::error(ErrorCode::BadRequest, format!("malformed message: {e}")).into());
                continue;
            }
        };
        if let Err(e) = handle(&app, &tx, &mut conn, parsed).await {
            let _ = tx.send(ServerMsg::from(&e).into());
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
    let _ = writer.await;
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

async fn handle(app: &Arc<App>, tx: &mpsc::UnboundedSender<Outgoing>, conn: &mut Conn, msg: ClientMsg) -> Result<(), ApiError> {
    match msg {
        ClientMsg::Join { token, auto_subscribe } => {
            if conn.session.is_some() {
                return Err(ApiError::BadRequest("already joined".into()));
            }
            let claims = app.keys.verify(&token)?;
            let adm = app.admit(&claims, Via::Websocket, Some(tx.clone()))?;
            let _ = tx.send(
                ServerMsg::Joined {
                    room: adm.room,
                    identity: claims.sub.clone(),
                    session: adm.session.clone(),
                    grants: claims.grants,
                    participants: adm.others,
                    ice_servers: app.ice_servers(&claims.sub),
                }
                .into(),
            );
            conn.session = Some(adm.session);
            conn.auto_subscribe = claims.grants.auto_subscribe && auto_subscribe.unwrap_or(true);
            Ok(())
        }
        ClientMsg::Offer { sdp } => {
            let subscription = if conn.auto_subscribe { Subscription::All } else { Subscription::Chosen };
            let answer = app.start_media(conn.joined()?, sdp, subscription, TrackSettings::default()).await?;
            let _ = tx.send(ServerMsg::Answer { sdp: answer }.into());
            Ok(())
        }
        ClientMsg::Answer { sdp } => app.client_answer(conn.joined()?, sdp),
        ClientMsg::Subscribe { tracks, settings } => app.subscribe(conn.joined()?, &tracks, settings),
        ClientMsg::Unsubscribe { tracks } => app.unsubscribe(conn.joined()?, &tracks),
        ClientMsg::Leave => {
            if let Some(s) = conn.session.take() {
                app.remove(&s, true, None);
            }
            let _ = tx.send(Outgoing::Close);
            Ok(())
        }
        ClientMsg::Ping => {
            let _ = tx.send(ServerMsg::Pong.into());
            Ok(())
        }
    }
}
