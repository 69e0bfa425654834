//! The media plane's end of the control link: a WebSocket client that registers the node,
//! routes commands to cores and carries events back. It reconnects on its own.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use link::{Command, CoreInfo, Event as LinkEvent, LeaveReason, PROTOCOL_VERSION, SECRET_HEADER};
use tokio::sync::mpsc::UnboundedReceiver;

use crate::worker::CoreInbox;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::http::HeaderValue;
use tokio_tungstenite::tungstenite::Message;

/// Errors that end one link connection.
#[derive(Debug, thiserror::Error)]
pub enum LinkError {
    /// The WebSocket failed.
    #[error("websocket: {0}")]
    Ws(#[from] tokio_tungstenite::tungstenite::Error),
    /// The CA file could not be used.
    #[error("control CA: {0}")]
    Ca(#[from] certs::CertError),
    /// The secret is not a valid header value.
    #[error("node secret is not a valid header value")]
    BadSecret,
    /// The control plane closed the link.
    #[error("control plane closed the link")]
    Closed,
    /// Nothing came from the control plane, not even a pong, for [`LINK_TIMEOUT`].
    #[error("control plane silent for {0:?}")]
    Silent(Duration),
}

/// How often the node pings the control plane.
pub const PING_EVERY: Duration = Duration::from_secs(10);
/// Silence after which the link counts as dead and is dialled again.
pub const LINK_TIMEOUT: Duration = Duration::from_secs(30);
/// How long sessions outlive a lost control link: past it, every session ends
/// ([`LeaveReason::ControlLost`]), since the control plane that owned them has dropped them.
pub const CONTROL_GRACE: Duration = Duration::from_secs(15);

/// Settings of the link.
#[derive(Debug, Clone)]
pub struct LinkSettings {
    /// `wss://host:port/internal/link` (or `ws://` on a private network).
    pub url: String,
    /// Shared node secret.
    pub secret: String,
    /// CA to trust for `wss://` (the development CA); system roots otherwise.
    pub ca: Option<PathBuf>,
    /// Node id.
    pub node: String,
    /// Advertised addresses.
    pub addresses: Vec<String>,
    /// Cores and ports.
    pub cores: Vec<CoreInfo>,
    /// Sessions per core.
    pub capacity_per_core: u32,
}

/// First backoff between two dials of the control plane.
const FIRST_BACKOFF: Duration = Duration::from_millis(200);

/// Runs the link forever, reconnecting with backoff. Once the link has been down for
/// [`CONTROL_GRACE`] without a new registration, every core ends its sessions.
pub async fn run(settings: LinkSettings, cores: Vec<CoreInbox>, mut events: UnboundedReceiver<LinkEvent>) {
    let mut backoff = FIRST_BACKOFF;
    // Since when sessions have had no control plane (None: connected, or already ended).
    let mut lost: Option<tokio::time::Instant> = None;
    loop {
        let dial = connect(&settings);
        let dialled = match lost {
            Some(at) => tokio::time::timeout_at(at + CONTROL_GRACE, dial).await.unwrap_or(Err(LinkError::Silent(CONTROL_GRACE))),
            None => dial.await,
        };
        let result = match dialled {
            Ok(link) => {
                lost = None;
                backoff = FIRST_BACKOFF;
                serve(link, &cores, &mut events).await
            }
            Err(e) => Err(e),
        };
        match result {
            Ok(()) => tracing::warn!("control link closed; reconnecting"),
            Err(e) => tracing::warn!(error = %e, url = %settings.url, "control link down; retrying"),
        }
        let since = *lost.get_or_insert_with(tokio::time::Instant::now);
        if since.elapsed() >= CONTROL_GRACE {
            end_all(&cores);
            lost = None;
        }
        // Nobody reads the cores' events while the link is down: they would pile up, and they
        // refer to sessions the next control plane does not know.
        while events.try_recv().is_ok() {}
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(5));
    }
}

/// Tells every core to end its sessions: their control plane is gone.
fn end_all(cores: &[CoreInbox]) {
    tracing::warn!(grace = ?CONTROL_GRACE, "no control plane within the grace period; ending every session");
    for tx in cores {
        tx.send(Command::EndAll { reason: LeaveReason::ControlLost });
    }
}

/// A registered link to the control plane.
type Link = tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Dials the control plane and registers the node.
async fn connect(s: &LinkSettings) -> Result<Link, LinkError> {
    let mut req = s.url.as_str().into_client_request()?;
    req.headers_mut().insert(SECRET_HEADER, HeaderValue::from_str(&s.secret).map_err(|_| LinkError::BadSecret)?);
    let connector = match &s.ca {
        Some(ca) => Some(tokio_tungstenite::Connector::Rustls(Arc::new(certs::client_config(ca)?))),
        None => None,
    };
    let (mut ws, _) = tokio_tungstenite::connect_async_tls_with_config(req, None, false, connector).await?;
    let register = LinkEvent::Register {
        version: PROTOCOL_VERSION,
        node: s.node.clone(),
        addresses: s.addresses.clone(),
        cores: s.cores.clone(),
        capacity_per_core: s.capacity_per_core,
    };
    ws.send(Message::text(register.to_json())).await?;
    tracing::info!(url = %s.url, node = %s.node, "registered with the control plane");
    Ok(ws)
}

/// Carries commands to the cores and events back until the link fails or goes silent.
async fn serve(link: Link, cores: &[CoreInbox], events: &mut UnboundedReceiver<LinkEvent>) -> Result<(), LinkError> {
    let (mut tx, mut rx) = link.split();
    // Events queued while disconnected refer to sessions the control plane no longer tracks.
    while events.try_recv().is_ok() {}
    let mut session_core: HashMap<String, usize> = HashMap::new();
    let mut ping = tokio::time::interval(PING_EVERY);
    let mut heard = tokio::time::Instant::now();
    loop {
        tokio::select! {
            _ = ping.tick() => {
                if heard.elapsed() > LINK_TIMEOUT {
                    return Err(LinkError::Silent(heard.elapsed()));
                }
                tx.send(Message::Ping(Vec::new().into())).await?;
            }
            msg = rx.next() => {
                let Some(msg) = msg else { return Err(LinkError::Closed) };
                heard = tokio::time::Instant::now();
                match msg? {
                    Message::Text(t) => match serde_json::from_str::<Command>(&t) {
                        Ok(cmd) => route(cmd, cores, &mut session_core),
                        Err(e) => tracing::warn!(error = %e, "malformed command on the control link"),
                    },
                    Message::Close(_) => return Ok(()),
                    _ => {}
                }
            }
            ev = events.recv() => {
                let Some(ev) = ev else { return Ok(()) };
                if let LinkEvent::SessionEnded { session, .. } = &ev {
                    session_core.remove(session);
                }
                tx.send(Message::text(ev.to_json())).await?;
            }
        }
    }
}

fn route(cmd: Command, cores: &[CoreInbox], session_core: &mut HashMap<String, usize>) {
    let target = match &cmd {
        Command::Join { core, session, .. } => {
            let c = *core as usize;
            session_core.insert(session.clone(), c);
            Some(c)
        }
        Command::Answer { session, .. } | Command::Leave { session } | Command::Subscribe { session, .. } | Command::Unsubscribe { session, .. } => {
            session_core.get(session).copied()
        }
        Command::CloseRoom { .. } | Command::EndAll { .. } => None,
    };
    match target {
        Some(c) => match cores.get(c) {
            Some(tx) => {
                tx.send(cmd);
            }
            None => tracing::warn!(core = c, "command for a core this node does not have"),
        },
        None if matches!(cmd, Command::CloseRoom { .. } | Command::EndAll { .. }) => {
            for tx in cores {
                tx.send(cmd.clone());
            }
        }
        None => tracing::debug!("command for an unknown session dropped"),
    }
}
