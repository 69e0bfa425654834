//! The control plane's end of the control link: media-plane nodes connect here over an
//! authenticated WebSocket, register, receive commands and send events.

use std::sync::Arc;

use axum::extract::ws::{Message, WebSocket};
use axum::extract::{State, WebSocketUpgrade};
use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};
use futures_util::{SinkExt, StreamExt};
use link::{Event as LinkEvent, PROTOCOL_VERSION, SECRET_HEADER};

use crate::error::ApiError;
use crate::secret;
use crate::state::App;

/// How often the control plane pings a node.
pub const PING_EVERY: std::time::Duration = std::time::Duration::from_secs(10);
/// Silence after which a node's link counts as dead: its sessions are lost.
pub const LINK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// `GET /internal/link`: a node's link; refused with 401 without the node secret.
pub async fn link(State(app): State<Arc<App>>, headers: HeaderMap, upgrade: WebSocketUpgrade) -> Response {
    let given = headers.get(SECRET_HEADER).map(|v| v.as_bytes()).unwrap_or_default();
    if !secret::equal(given, app.node_secret.as_bytes()) {
        return ApiError::Unauthorized("bad node secret".into()).into_response();
    }
    upgrade.max_message_size(1 << 20).on_upgrade(move |socket| serve(app, socket))
}

async fn serve(app: Arc<App>, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (node, mut commands, generation) = match stream.next().await {
        Some(Ok(Message::Text(t))) => match serde_json::from_str::<LinkEvent>(&t) {
            Ok(LinkEvent::Register { version, node, addresses, cores, capacity_per_core }) if version == PROTOCOL_VERSION => {
                tracing::info!(%node, ?addresses, cores = cores.len(), "media-plane node registered");
                let ports = cores.iter().map(|c| c.port).collect();
                let (rx, generation) = app.register_node(&node, addresses, ports, capacity_per_core);
                (node, rx, generation)
            }
            Ok(LinkEvent::Register { version, .. }) => {
                tracing::warn!(version, "node speaks another link protocol version; refused");
                return;
            }
            _ => {
                tracing::warn!("link did not start with a register message");
                return;
            }
        },
        _ => return,
    };
    // Nodes report their load every second; a link silent for LINK_TIMEOUT is dead.
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > LINK_TIMEOUT {
                    tracing::warn!(%node, silent = ?heard.elapsed(), "media-plane node silent; dropping its link");
                    break;
                }
                if sink.send(Message::Ping(Vec::new().into())).await.is_err() {
                    break;
                }
            }
            msg = stream.next() => match msg {
                Some(Ok(Message::Text(t))) => {
                    heard = tokio::time::Instant::now();
                    match serde_json::from_str::<LinkEvent>(&t) {
                        Ok(ev) => app.node_event(&node, ev),
                        Err(e) => tracing::warn!(%node, error = %e, "malformed event on the link"),
                    }
                }
                Some(Ok(Message::Close(_))) | None | Some(Err(_)) => break,
                Some(Ok(_)) => heard = tokio::time::Instant::now(),
            },
            cmd = commands.recv() => match cmd {
                Some(cmd) => {
                    if sink.send(Message::Text(cmd.to_json().into())).await.is_err() {
                        break;
                    }
                }
                None => break,
            },
        }
    }
    app.node_gone(&node, generation);
}
