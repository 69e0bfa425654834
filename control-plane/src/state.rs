//! The control plane's view of the cluster: rooms, participants, media-plane nodes and
//! pending requests. All of it sits behind one mutex that is never held across an await.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use link::{Command, Event as LinkEvent, Grants as LinkGrants, JoinError, LeaveReason, Subscription, TrackSettings};
use serde::Serialize;
use signaling::{ErrorCode, IceServer, TrackKind};
use tokio::sync::{mpsc, oneshot};

use crate::error::ApiError;
use crate::revoke::Revocations;
use crate::secret;
use crate::placement::{least_loaded, report_secs, CoreLoad, PacketCost, TrackRate};
use crate::signal::{ClientTx, Outgoing, ServerMsg};
use crate::throttle::Throttles;
use crate::token::{unix_now, Grants, TokenKeys};
use crate::metrics::Metrics;
use crate::webhook::{Kind as Hook, Notifier, RoomInfo};

/// Connection kind, published track and participant view: the signaling messages' types.
pub use signaling::{ParticipantView, TrackInfo, Via};

/// How long a join waits for the media plane's answer.
pub const JOIN_TIMEOUT: Duration = Duration::from_secs(10);

/// Runtime settings of the control plane.
#[derive(Debug, Clone)]
pub struct Settings {
    /// Create a room on first join when it does not exist.
    pub auto_create_rooms: bool,
    /// Participant limit of auto-created rooms (0: none).
    pub default_max_participants: u32,
    /// Let the web app mint its own tokens (development).
    pub open_join: bool,
    /// The secret the open join asks for (`?invite=` in the app's URL); None: not asked.
    pub invite: Option<String>,
    /// Lifetime of tokens minted for the web app.
    pub demo_token_ttl: u64,
    /// TURN relay handed to clients.
    pub turn: Option<crate::config::TurnConfig>,
    /// Busy share (thousandths) from which a core takes no new participant; 1000: off.
    pub core_busy_limit: u16,
    /// Webhook receivers.
    pub webhooks: Vec<reqwest::Url>,
}

/// One participant session.
#[derive(Debug)]
pub struct Participant {
    /// Session id.
    pub session: String,
    /// Identity from the token.
    pub identity: String,
    /// Connection kind.
    pub via: Via,
    /// Grants from the token.
    pub grants: Grants,
    /// Published tracks.
    pub tracks: Vec<TrackInfo>,
    /// Signaling channel (WebSocket participants).
    pub tx: Option<ClientTx>,
    /// Unix time of joining.
    pub joined_at: u64,
    /// Whether the media session was created on the node.
    pub media: bool,
    /// The secret last segment of its WHIP/WHEP resource URL (RFC 9725): what ends the
    /// session besides the API credentials. None for `/ws` sessions.
    pub resource: Option<String>,
    /// Core of the room's node that hosts this participant: the room's core, or another
    /// core of the same node once that one is full (the room then spans cores).
    pub core: u32,
}

/// Separates a token's identity from the suffix that a WHEP player's identity adds to it;
/// unreserved in URLs, so that the identity can stand in an API path as it is.
pub const AUDIENCE_SEPARATOR: char = '~';

impl Participant {
    /// Whether this session belongs to the token identity `identity`: it has that identity,
    /// or it is a WHEP player of that identity (`identity~suffix`).
    pub fn is_of(&self, identity: &str) -> bool {
        self.identity == identity
            || (self.via == Via::Whep && self.identity.strip_prefix(identity).is_some_and(|rest| rest.starts_with(AUDIENCE_SEPARATOR)))
    }

    /// Public view.
    pub fn view(&self) -> ParticipantView {
        ParticipantView { identity: self.identity.clone(), session: self.session.clone(), via: self.via, tracks: self.tracks.clone(), joined_at: self.joined_at }
    }
}

/// A room.
#[derive(Debug)]
pub struct Room {
    /// Name.
    pub name: String,
    /// Participant limit (0: none).
    pub max_participants: u32,
    /// Unix time of creation.
    pub created_at: u64,
    /// Created by a join rather than the API; removed when it empties.
    pub auto: bool,
    /// Node and core hosting the room while it has participants.
    pub placement: Option<(String, u32)>,
    /// Participants by session id.
    pub participants: BTreeMap<String, Participant>,
}

/// Public view of a room.
#[derive(Debug, Serialize)]
pub struct RoomView {
    /// Name.
    pub name: String,
    /// Participant limit (0: none).
    pub max_participants: u32,
    /// Unix time of creation.
    pub created_at: u64,
    /// Participants now.
    pub num_participants: usize,
    /// Hosting node and core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub node: Option<String>,
    /// Hosting core.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub core: Option<u32>,
    /// Participants (detail view only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub participants: Option<Vec<ParticipantView>>,
}

impl Room {
    /// Public view, with participants when `detail`.
    pub fn view(&self, detail: bool) -> RoomView {
        RoomView {
            name: self.name.clone(),
            max_participants: self.max_participants,
            created_at: self.created_at,
            num_participants: self.participants.len(),
            node: self.placement.as_ref().map(|p| p.0.clone()),
            core: self.placement.as_ref().map(|p| p.1),
            participants: detail.then(|| self.participants.values().map(Participant::view).collect()),
        }
    }

    /// What webhook events say about the room.
    pub fn info(&self) -> RoomInfo {
        RoomInfo { name: self.name.clone(), created_at: self.created_at, num_participants: self.participants.len() }
    }

    pub(crate) fn broadcast(&self, except: &str, msg: &ServerMsg) {
        for p in self.participants.values() {
            if p.session != except {
                if let Some(tx) = &p.tx {
                    tx.send(msg.clone());
                }
            }
        }
    }
}

/// One media core as last reported by its node.
#[derive(Debug, Clone, Default, Serialize)]
pub struct CoreStatus {
    /// UDP port.
    pub port: u16,
    /// Sessions on the core.
    pub sessions: u32,
    /// RTP packets received per second over the last report interval.
    pub rx_pps: f64,
    /// RTP packets forwarded per second over the last report interval.
    pub tx_pps: f64,
    /// Forwarded packets since the node registered.
    pub tx_total: u64,
    /// Share of the last report interval the core's thread was busy, in thousandths.
    pub busy_permille: u16,
    /// Sessions whose media was connected at the last report (`None`: the node does not say).
    pub connected: Option<u32>,
    /// Of the busy share, thousandths spent on joins and ICE/DTLS handshakes (`None`: the
    /// node does not say).
    pub setup_permille: Option<u16>,
    /// Cost per forwarded packet over the last reports (placement's model).
    #[serde(skip)]
    pub packet_cost: PacketCost,
}

/// A registered media-plane node.
#[derive(Debug)]
pub struct Node {
    /// Advertised addresses.
    pub addresses: Vec<String>,
    /// Per core, as last reported.
    pub cores: Vec<CoreStatus>,
    /// Sessions per core.
    pub capacity: u32,
    /// Commands to the node.
    pub tx: mpsc::UnboundedSender<Command>,
    /// Connection generation, to ignore a stale link's goodbye.
    pub generation: u64,
    /// Packets per published track, as placement prices them.
    pub track_rate: TrackRate,
}

/// Everything behind the lock.
#[derive(Debug, Default)]
pub struct State {
    /// Rooms by name.
    pub rooms: BTreeMap<String, Room>,
    /// Nodes by id.
    pub nodes: BTreeMap<String, Node>,
    /// Session id to room name.
    pub sessions: HashMap<String, String>,
    /// Kicks whose tokens are refused.
    pub revocations: Revocations,
    /// Joins waiting for an answer.
    pending: HashMap<u64, oneshot::Sender<Result<String, ApiError>>>,
}

/// Shared application state.
pub struct App {
    /// Settings.
    pub settings: Settings,
    /// Token keys.
    pub keys: TokenKeys,
    /// API key.
    pub api_key: String,
    /// API secret.
    pub api_secret: String,
    /// Secret media-plane nodes present on the link.
    pub node_secret: String,
    /// Rate limits per source address.
    pub throttles: Throttles,
    /// The switch that tells signaling connections the process is stopping.
    pub shutdown: crate::shutdown::Shutdown,
    /// Webhook events.
    pub hooks: Notifier,
    /// Prometheus metrics.
    pub metrics: Metrics,
    state: Mutex<State>,
    next_id: AtomicU64,
}

/// What a successful admission returns.
#[derive(Debug, Clone)]
pub struct Admission {
    /// New session id.
    pub session: String,
    /// Room.
    pub room: String,
    /// The identity it got: the token's, or a distinct one for an open-join name in use.
    pub identity: String,
    /// Others already in the room.
    pub others: Vec<ParticipantView>,
    /// The secret of its WHIP/WHEP resource URL (see [`Participant::resource`]).
    pub resource: Option<String>,
}

pub(crate) fn random_id(prefix: &str) -> String {
    format!("{prefix}{}", secret::random(12))
}

/// Characters of a WHIP/WHEP resource secret (alphanumeric: about 190 bits).
pub(crate) const RESOURCE_SECRET_LEN: usize = 32;

impl App {
    /// New state with no rooms and no nodes.
    pub fn new(settings: Settings, api_key: String, api_secret: String, node_secret: String) -> Arc<App> {
        let metrics = Metrics::default();
        let hooks = Notifier::start(&settings.webhooks, &api_secret, metrics.webhooks.clone());
        Arc::new(App {
            settings,
            keys: TokenKeys::new(&api_key, &api_secret),
            api_key,
            api_secret,
            node_secret,
            throttles: Throttles::default(),
            shutdown: Default::default(),
            hooks,
            metrics,
            state: Mutex::new(State::default()),
            next_id: AtomicU64::new(1),
        })
    }

    /// Locks the state; a poisoned lock is recovered (the state stays consistent per call).
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Creates a room through the API.
    pub fn create_room(&self, name: &str, max_participants: u32) -> Result<RoomView, ApiError> {
        validate_name(name, "room")?;
        let mut st = self.lock();
        if st.rooms.contains_key(name) {
            return Err(ApiError::RoomExists(name.to_string()));
        }
        let room = Room { name: name.into(), max_participants, created_at: unix_now(), auto: false, placement: None, participants: BTreeMap::new() };
        let view = room.view(false);
        st.rooms.insert(name.into(), room);
        Ok(view)
    }

    /// Asks the room's node to create the media session from `offer`; returns the SDP answer.
    /// `video` is how the session wants each video track it receives, until it says otherwise.
    pub async fn start_media(&self, session: &str, offer: String, subscription: Subscription, video: TrackSettings) -> Result<String, ApiError> {
        if offer.len() < 10 || !offer.starts_with("v=") {
            return Err(ApiError::BadSdp("body is not an SDP offer".into()));
        }
        let req = self.next_id.fetch_add(1, Ordering::Relaxed);
        let rx = {
            let mut st = self.lock();
            let room_name = st.sessions.get(session).cloned().ok_or_else(|| ApiError::NotFound(format!("session {session}")))?;
            let room = st.rooms.get_mut(&room_name).ok_or_else(|| ApiError::RoomNotFound(room_name.clone()))?;
            let (node_id, _) = room.placement.clone().ok_or(ApiError::NoMediaNode)?;
            let p = room.participants.get_mut(session).ok_or_else(|| ApiError::NotFound(format!("session {session}")))?;
            let core = p.core;
            if p.media {
                return Err(ApiError::BadRequest("the media session already exists; answer the server's offers instead".into()));
            }
            p.media = true;
            let cmd = Command::Join {
                req,
                core,
                room: room_name,
                session: session.to_string(),
                identity: p.identity.clone(),
                grants: LinkGrants { publish: p.grants.can_publish, subscribe: p.grants.can_subscribe },
                subscription,
                video,
                offer,
            };
            let node = st.nodes.get(&node_id).ok_or(ApiError::NoMediaNode)?;
            node.tx.send(cmd).map_err(|_| ApiError::NoMediaNode)?;
            let (tx, rx) = oneshot::channel();
            st.pending.insert(req, tx);
            rx
        };
        let result = match tokio::time::timeout(JOIN_TIMEOUT, rx).await {
            Ok(Ok(res)) => res,
            Ok(Err(_)) => Err(ApiError::NoMediaNode),
            Err(_) => {
                self.lock().pending.remove(&req);
                Err(ApiError::MediaTimeout)
            }
        };
        if result.is_err() {
            // The client may try again with a corrected offer.
            let mut st = self.lock();
            let room = st.sessions.get(session).cloned();
            if let Some(p) = room.and_then(|r| st.rooms.get_mut(&r)).and_then(|r| r.participants.get_mut(session)) {
                p.media = false;
            }
        }
        result
    }

    /// Relays a client's SDP answer to the node.
    pub fn client_answer(&self, session: &str, sdp: String) -> Result<(), ApiError> {
        let st = self.lock();
        let node = node_of(&st, session).ok_or_else(|| ApiError::NotFound(format!("session {session}")))?;
        node.tx.send(Command::Answer { session: session.to_string(), sdp }).map_err(|_| ApiError::NoMediaNode)
    }

    /// Removes a session: tells the node (when `tell_node`), the room, and the participant
    /// itself (`notice`, after which its signaling channel closes).
    pub fn remove(&self, session: &str, tell_node: bool, notice: Option<ServerMsg>) -> Option<ParticipantView> {
        let mut st = self.lock();
        let room_name = st.sessions.remove(session)?;
        if tell_node {
            if let Some(node) = node_of_room(&st, &room_name) {
                let _ = node.tx.send(Command::Leave { session: session.to_string() });
            }
        }
        let room = st.rooms.get_mut(&room_name)?;
        let p = room.participants.remove(session)?;
        if let (Some(tx), Some(n)) = (&p.tx, notice) {
            tx.send(n);
            tx.send(Outgoing::Close);
        }
        room.broadcast(session, &ServerMsg::ParticipantLeft { identity: p.identity.clone(), session: session.to_string() });
        let view = p.view();
        for t in &p.tracks {
            self.hooks.emit(Hook::TrackUnpublished, room.info(), Some(view.clone()), Some(t.clone()));
        }
        self.hooks.emit(Hook::ParticipantLeft, room.info(), Some(view), None);
        if room.participants.is_empty() {
            self.hooks.emit(Hook::RoomFinished, room.info(), None, None);
            room.placement = None;
            if room.auto {
                st.rooms.remove(&room_name);
            }
        }
        tracing::info!(%session, room = %room_name, identity = %p.identity, "participant left");
        Some(p.view())
    }

    /// Deletes a room and disconnects everyone in it.
    pub fn delete_room(&self, name: &str) -> Result<(), ApiError> {
        let sessions: Vec<String> = {
            let st = self.lock();
            let room = st.rooms.get(name).ok_or_else(|| ApiError::RoomNotFound(name.to_string()))?;
            if let Some(node) = node_of_room(&st, name) {
                let _ = node.tx.send(Command::CloseRoom { room: name.to_string() });
            }
            room.participants.keys().cloned().collect()
        };
        for s in sessions {
            self.remove(&s, false, Some(ServerMsg::error(ErrorCode::RoomClosed, "the room was deleted")));
        }
        self.lock().rooms.remove(name);
        Ok(())
    }

    /// Registers a node's link; returns its command receiver and generation.
    pub fn register_node(&self, id: &str, addresses: Vec<String>, cores: Vec<u16>, capacity: u32) -> (mpsc::UnboundedReceiver<Command>, u64) {
        let (tx, rx) = mpsc::unbounded_channel();
        let generation = self.next_id.fetch_add(1, Ordering::Relaxed);
        let stale = {
            let mut st = self.lock();
            let stale = sessions_on_node(&st, id);
            let cores = cores.into_iter().map(|port| CoreStatus { port, ..Default::default() }).collect();
            st.nodes.insert(id.to_string(), Node { addresses, cores, capacity, tx, generation, track_rate: TrackRate::default() });
            stale
        };
        for s in stale {
            self.remove(&s, false, Some(ServerMsg::error(ErrorCode::MediaLost, "the media node restarted")));
        }
        (rx, generation)
    }

    /// A node's link closed: its sessions end and its rooms are placed again on next join.
    pub fn node_gone(&self, id: &str, generation: u64) {
        let sessions = {
            let mut st = self.lock();
            if st.nodes.get(id).map(|n| n.generation) != Some(generation) {
                return;
            }
            st.nodes.remove(id);
            sessions_on_node(&st, id)
        };
        tracing::warn!(node = %id, sessions = sessions.len(), "media-plane node disconnected");
        for s in sessions {
            self.remove(&s, false, Some(ServerMsg::error(ErrorCode::MediaLost, "the media node went away")));
        }
    }

    /// Applies one event from a node.
    pub fn node_event(&self, node_id: &str, ev: LinkEvent) {
        match ev {
            LinkEvent::Answer { req, sdp } => {
                if let Some(tx) = self.lock().pending.remove(&req) {
                    let _ = tx.send(Ok(sdp));
                }
            }
            LinkEvent::JoinFailed { req, error } => {
                if let Some(tx) = self.lock().pending.remove(&req) {
                    let err = match error {
                        JoinError::BadSdp(message) => ApiError::BadSdp(message),
                        JoinError::CoreFull(_) => ApiError::NoCapacity,
                        JoinError::SessionExists(_) | JoinError::CoreFailed(_) => ApiError::NoMediaNode,
                    };
                    let _ = tx.send(Err(err));
                }
            }
            LinkEvent::Offer { session, sdp } => self.to_session(&session, ServerMsg::Offer { sdp }),
            LinkEvent::AnswerFailed { session, message } => {
                self.to_session(&session, ServerMsg::error(ErrorCode::BadSdp, message));
            }
            LinkEvent::TrackPublished { room, session, track, kind } => {
                let kind = track_kind(kind);
                let mut st = self.lock();
                let Some(r) = st.rooms.get_mut(&room) else { return };
                let info = r.info();
                let Some(p) = r.participants.get_mut(&session) else { return };
                p.tracks.push(TrackInfo { id: track.clone(), kind });
                self.hooks.emit(Hook::TrackPublished, info, Some(p.view()), Some(TrackInfo { id: track.clone(), kind }));
                let msg = ServerMsg::TrackPublished { identity: p.identity.clone(), session: session.clone(), track, kind };
                r.broadcast(&session, &msg);
            }
            LinkEvent::SessionEnded { session, reason, .. } => {
                let notice = match reason {
                    LeaveReason::Requested => None,
                    LeaveReason::Timeout => Some(ServerMsg::error(ErrorCode::MediaTimeout, "ICE/DTLS timed out")),
                    LeaveReason::Closed => Some(ServerMsg::error(ErrorCode::MediaClosed, "the media connection closed")),
                    LeaveReason::CoreFailed => Some(ServerMsg::error(ErrorCode::MediaLost, "the media core failed and restarted; join again")),
                    LeaveReason::ControlLost => Some(ServerMsg::error(ErrorCode::MediaLost, "the media node lost the control plane")),
                };
                self.remove(&session, false, notice);
            }
            LinkEvent::TrackPaused { session, publisher, track, paused } => {
                self.to_session(&session, ServerMsg::TrackPaused { session: publisher, track, paused });
            }
            LinkEvent::LayersWanted { session, track, rids } => self.to_session(&session, ServerMsg::LayersWanted { track, rids }),
            LinkEvent::Connected { session } => tracing::debug!(%session, "media connected"),
            LinkEvent::Load { core, sessions, rx_packets, tx_packets, busy_permille, connected, interval_ms, setup_permille } => {
                let mut st = self.lock();
                if let Some(n) = st.nodes.get_mut(node_id) {
                    if let Some(c) = n.cores.get_mut(core as usize) {
                        let secs = report_secs(interval_ms);
                        c.sessions = sessions;
                        c.rx_pps = rx_packets as f64 / secs;
                        c.tx_pps = tx_packets as f64 / secs;
                        c.tx_total += tx_packets;
                        c.busy_permille = busy_permille;
                        c.connected = connected;
                        c.setup_permille = setup_permille;
                        c.packet_cost.record(busy_permille, setup_permille, c.tx_pps);
                    }
                }
                let rate = st.nodes.get(node_id).map(|n| pps_per_track(n, rooms_on_node(&st, node_id)));
                if let (Some(rate), Some(n)) = (rate, st.nodes.get_mut(node_id)) {
                    n.track_rate.record(std::time::Instant::now(), rate);
                }
                tracing::trace!(node = %node_id, core, sessions, rx_packets, tx_packets, busy_permille, "load");
            }
            LinkEvent::Register { .. } => tracing::warn!(node = %node_id, "duplicate register ignored"),
        }
    }

    fn to_session(&self, session: &str, msg: ServerMsg) {
        let st = self.lock();
        let Some(room) = st.sessions.get(session).and_then(|r| st.rooms.get(r)) else { return };
        if let Some(tx) = room.participants.get(session).and_then(|p| p.tx.as_ref()) {
            tx.send(msg);
        }
    }

    /// Session id and identity of the participant `identity` in `room`, or of the room's
    /// first video publisher.
    pub fn find_publisher(&self, room: &str, identity: Option<&str>) -> Result<(String, String), ApiError> {
        let st = self.lock();
        let r = st.rooms.get(room).ok_or_else(|| ApiError::RoomNotFound(room.to_string()))?;
        let found = match identity {
            Some(id) => r.participants.values().find(|p| p.identity == id && p.via != Via::Whep),
            None => r
                .participants
                .values()
                .filter(|p| p.tracks.iter().any(|t| t.kind == TrackKind::Video))
                .min_by_key(|p| p.joined_at),
        };
        found.map(|p| (p.session.clone(), p.identity.clone())).ok_or_else(|| ApiError::NotFound(match identity {
            Some(id) => format!("participant {id}"),
            None => "video publisher".to_string(),
        }))
    }

    /// ICE servers for a client: STUN, and TURN over UDP, TCP and TLS with REST credentials
    /// (`<expiry>:<identity>`, `base64(HMAC-SHA1(secret, username))`) valid for the configured TTL.
    pub fn ice_servers(&self, identity: &str) -> Vec<IceServer> {
        let Some(t) = &self.settings.turn else { return Vec::new() };
        let host = if t.host.contains(':') && !t.host.starts_with('[') { format!("[{}]", t.host) } else { t.host.clone() };
        let username = format!("{}:{}", crate::token::unix_now() + t.ttl, identity.replace(':', "_"));
        let credential = turn_password(&t.secret, &username);
        vec![
            IceServer { urls: vec![format!("stun:{host}:{}", t.port)], username: None, credential: None },
            IceServer {
                urls: vec![
                    format!("turn:{host}:{}?transport=udp", t.port),
                    format!("turn:{host}:{}?transport=tcp", t.port),
                    format!("turns:{host}:{}?transport=tcp", t.tls_port),
                ],
                username: Some(username),
                credential: Some(credential),
            },
        ]
    }

    /// Whether `given` is the resource secret of `session` in `room` (compared in constant time).
    pub fn owns_resource(&self, room: &str, session: &str, given: &str) -> bool {
        let st = self.lock();
        let p = st.rooms.get(room).and_then(|r| r.participants.get(session));
        p.and_then(|p| p.resource.as_deref()).is_some_and(|s| secret::equal(s.as_bytes(), given.as_bytes()))
    }

    /// Room name of a session.
    pub fn room_of(&self, session: &str) -> Option<String> {
        self.lock().sessions.get(session).cloned()
    }
}

/// The signaling form of a track kind from the control link.
fn track_kind(kind: link::TrackKind) -> TrackKind {
    match kind {
        link::TrackKind::Audio => TrackKind::Audio,
        link::TrackKind::Video => TrackKind::Video,
    }
}

pub(crate) fn validate_name(name: &str, what: &str) -> Result<(), ApiError> {
    let ok = !name.is_empty() && name.len() <= 128 && name.chars().all(|c| c.is_ascii_alphanumeric() || "-_.".contains(c));
    if ok {
        Ok(())
    } else {
        Err(ApiError::BadRequest(format!("{what} name must be 1-128 characters of A-Z a-z 0-9 - _ .")))
    }
}

/// The least-loaded core with room; no core at all and no core with room are different errors.
pub(crate) fn pick_core(loads: &[CoreLoad]) -> Result<(String, u32), ApiError> {
    least_loaded(loads).ok_or(if loads.is_empty() { ApiError::NoMediaNode } else { ApiError::NoCapacity })
}

/// Rooms placed on node `node`.
fn rooms_on_node<'a>(st: &'a State, node: &'a str) -> impl Iterator<Item = &'a Room> + 'a {
    st.rooms.values().filter(move |r| r.placement.as_ref().is_some_and(|(n, _)| n == node))
}

/// Packets one published track brings into node `n` now, from its ingress and the published
/// tracks of its `rooms` (0 when it has none).
fn pps_per_track<'a>(n: &Node, rooms: impl IntoIterator<Item = &'a Room>) -> f64 {
    let tracks: usize = rooms.into_iter().flat_map(|r| r.participants.values()).map(|p| p.tracks.len()).sum();
    let rx_pps: f64 = n.cores.iter().map(|c| c.rx_pps).sum();
    if tracks > 0 {
        rx_pps / tracks as f64
    } else {
        0.0
    }
}

pub(crate) fn core_loads(st: &State, busy_limit: u16) -> Vec<CoreLoad> {
    let mut loads = Vec::new();
    for (id, n) in &st.nodes {
        let rooms: Vec<&Room> = rooms_on_node(st, id).collect();
        // Packets one published track brings, at the highest rate seen lately.
        let pps_per_track = n.track_rate.priced(pps_per_track(n, rooms.iter().copied()));
        // Per room, once: (all its published tracks, the most one participant publishes).
        let room_tracks: Vec<(usize, usize)> = rooms
            .iter()
            .map(|r| (r.participants.values().map(|p| p.tracks.len()).sum(), r.participants.values().map(|p| p.tracks.len()).max().unwrap_or(0)))
            .collect();
        for (i, c) in n.cores.iter().enumerate() {
            let on_core = || rooms.iter().zip(&room_tracks).flat_map(|(r, t)| r.participants.values().filter(|p| p.core == i as u32).map(move |p| (*t, p)));
            let assigned = on_core().count() as u32;
            let committed_permille = match c.packet_cost.permille_per_track(pps_per_track) {
                Some(per_track) => (on_core().map(|(t, p)| received_tracks(t, p)).sum::<usize>() as f64 * per_track) as u32,
                None => 0,
            };
            loads.push(CoreLoad { node: id.clone(), core: i as u32, assigned, reported: c.sessions, connected: c.connected, capacity: n.capacity, busy_permille: c.busy_permille, setup_permille: c.setup_permille.unwrap_or(0), committed_permille, busy_limit });
        }
    }
    loads
}

/// Tracks participant `p` receives, given its room's (total, largest publisher's) track
/// counts: every other participant's, none for a WHIP publisher, or for a WHEP player the one
/// publisher it watches (the largest one, as an upper bound).
fn received_tracks((total, largest): (usize, usize), p: &Participant) -> usize {
    match p.via {
        _ if !p.grants.can_subscribe => 0,
        Via::Whip => 0,
        Via::Whep => largest,
        Via::Websocket => total.saturating_sub(p.tracks.len()),
    }
}

fn node_of_room<'a>(st: &'a State, room: &str) -> Option<&'a Node> {
    let (node, _) = st.rooms.get(room)?.placement.as_ref()?;
    st.nodes.get(node)
}

/// The node hosting `session`'s room.
pub(crate) fn node_of<'a>(st: &'a State, session: &str) -> Option<&'a Node> {
    node_of_room(st, st.sessions.get(session)?)
}

fn sessions_on_node(st: &State, node: &str) -> Vec<String> {
    rooms_on_node(st, node).flat_map(|r| r.participants.keys().cloned()).collect()
}

/// `base64(HMAC-SHA1(secret, username))`, the TURN REST password coturn and our relay expect.
pub fn turn_password(secret: &str, username: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    let Ok(mut m) = Hmac::<sha1::Sha1>::new_from_slice(secret.as_bytes()) else { return String::new() };
    m.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(m.finalize().into_bytes())
}
