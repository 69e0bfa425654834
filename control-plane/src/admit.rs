//! Admission: whether a token may join, under which identity, in which room and on which
//! media core. A room created for a join that then fails is removed again.

use std::collections::BTreeMap;

use signaling::ErrorCode;

use crate::error::ApiError;
use crate::placement::CoreLoad;
use crate::secret;
use crate::signal::{ClientTx, ServerMsg};
use crate::state::{core_loads, pick_core, random_id, validate_name, Admission, App, Participant, Room, Via, AUDIENCE_SEPARATOR, RESOURCE_SECRET_LEN};
use crate::token::{unix_now, Claims};
use crate::webhook::Kind as Hook;

/// Largest suffix tried for a distinct open-join identity (`name (2)` … `name (999)`).
const MAX_NAME_SUFFIX: u32 = 999;

/// Random characters of a WHEP player's identity suffix (62^8 values).
const AUDIENCE_SUFFIX_LEN: usize = 8;

/// The identity of one WHEP player whose token names `identity`: `identity~` and a random suffix.
pub fn audience_identity(identity: &str) -> String {
    format!("{identity}{AUDIENCE_SEPARATOR}{}", secret::random(AUDIENCE_SUFFIX_LEN))
}

impl App {
    /// Admits the holder of `claims` as a new session, creating and placing the room as
    /// needed; counts the attempt by its result.
    pub fn admit(&self, claims: &Claims, via: Via, tx: Option<ClientTx>) -> Result<Admission, ApiError> {
        let admitted = self.try_admit(claims, via, tx);
        self.metrics.join(via, admitted.as_ref().map(|_| ()));
        admitted
    }

    fn try_admit(&self, claims: &Claims, via: Via, tx: Option<ClientTx>) -> Result<Admission, ApiError> {
        validate_name(&claims.room, "room")?;
        if self.lock().revocations.revoked(claims) {
            return Err(ApiError::TokenRevoked);
        }
        let created = self.ensure_room(claims)?;
        let admitted = self.claim_identity(claims, via).and_then(|identity| self.seat(claims, identity, via, tx));
        if admitted.is_err() && created {
            self.drop_if_unused(&claims.room);
        }
        admitted
    }

    /// Creates the token's room on first join when rooms are auto-created; true if it did.
    fn ensure_room(&self, claims: &Claims) -> Result<bool, ApiError> {
        let mut st = self.lock();
        if st.rooms.contains_key(&claims.room) {
            return Ok(false);
        }
        if !self.settings.auto_create_rooms {
            return Err(ApiError::RoomNotFound(claims.room.clone()));
        }
        let room = Room {
            name: claims.room.clone(),
            max_participants: self.settings.default_max_participants,
            created_at: unix_now(),
            auto: true,
            placement: None,
            participants: BTreeMap::new(),
        };
        st.rooms.insert(claims.room.clone(), room);
        Ok(true)
    }

    /// The identity the new session gets, when the token fixes it. A token the operator
    /// signed replaces an older session of its identity and kind, as LiveKit does. An
    /// open-join token never replaces anyone: its name is made distinct when the session is
    /// seated (None here), under the same lock. A WHEP player never replaces anyone either:
    /// one player URL and token usually serve a whole audience, so each player gets its own
    /// identity, the token's with a random suffix ([`audience_identity`]).
    fn claim_identity(&self, claims: &Claims, via: Via) -> Result<Option<String>, ApiError> {
        if claims.open {
            return Ok(None);
        }
        if via == Via::Whep {
            return Ok(Some(audience_identity(&claims.sub)));
        }
        let duplicate = {
            let st = self.lock();
            st.rooms.get(&claims.room).and_then(|r| r.participants.values().find(|p| p.identity == claims.sub && p.via == via).map(|p| p.session.clone()))
        };
        if let Some(old) = duplicate {
            self.remove(&old, true, Some(ServerMsg::error(ErrorCode::DuplicateIdentity, "replaced by a new connection")));
        }
        Ok(Some(claims.sub.clone()))
    }

    /// Seats the participant in the token's room under `identity` (None: the token's name,
    /// made distinct from the names in the room: `name (2)`, `name (3)`, …): checks the
    /// room's limit, places the room on a core when it has none, picks the participant's core
    /// and tells the others.
    fn seat(&self, claims: &Claims, identity: Option<String>, via: Via, tx: Option<ClientTx>) -> Result<Admission, ApiError> {
        let mut st = self.lock();
        let (placed, identity) = {
            let room = st.rooms.get(&claims.room).ok_or_else(|| ApiError::RoomNotFound(claims.room.clone()))?;
            if room.max_participants > 0 && room.participants.len() as u32 >= room.max_participants {
                return Err(ApiError::RoomFull(claims.room.clone()));
            }
            let identity = match identity {
                Some(i) => i,
                None => distinct_name(room, &claims.sub)?,
            };
            (room.placement.as_ref().is_some_and(|p| st.nodes.contains_key(&p.0)), identity)
        };
        // Place the room on first join, or again when its node went away.
        if !placed {
            let p = pick_core(&core_loads(&st, self.settings.core_busy_limit))?;
            tracing::info!(room = %claims.room, node = %p.0, core = p.1, "room placed");
            if let Some(room) = st.rooms.get_mut(&claims.room) {
                room.placement = Some(p);
            }
        }
        // The participant goes to the room's core while it has room; then to the least-loaded
        // core of the same node, and the room spans cores (the node forwards between them).
        let (node_id, room_core) = st.rooms.get(&claims.room).and_then(|r| r.placement.clone()).ok_or(ApiError::NoMediaNode)?;
        let loads: Vec<CoreLoad> = core_loads(&st, self.settings.core_busy_limit).into_iter().filter(|c| c.node == node_id).collect();
        let core = match loads.iter().find(|c| c.core == room_core) {
            Some(c) if c.has_room() => room_core,
            _ => {
                let (_, c) = pick_core(&loads)?;
                tracing::info!(room = %claims.room, node = %node_id, core = c, "room spans another core");
                c
            }
        };
        let session = random_id("PA_");
        let resource = (via != Via::Websocket).then(|| secret::random(RESOURCE_SECRET_LEN));
        let p = Participant {
            session: session.clone(),
            identity,
            via,
            grants: claims.grants,
            tracks: Vec::new(),
            tx,
            joined_at: unix_now(),
            media: false,
            resource: resource.clone(),
            core,
        };
        let view = p.view();
        st.sessions.insert(session.clone(), claims.room.clone());
        let room = st.rooms.get_mut(&claims.room).ok_or_else(|| ApiError::RoomNotFound(claims.room.clone()))?;
        let others = room.participants.values().map(Participant::view).collect();
        room.broadcast(&session, &ServerMsg::ParticipantJoined { participant: view.clone() });
        let first = room.participants.is_empty();
        room.participants.insert(session.clone(), p);
        if first {
            self.hooks.emit(Hook::RoomStarted, room.info(), None, None);
        }
        self.hooks.emit(Hook::ParticipantJoined, room.info(), Some(view.clone()), None);
        Ok(Admission { session, room: claims.room.clone(), identity: view.identity, others, resource })
    }

    /// Removes an auto-created room that nobody joined.
    fn drop_if_unused(&self, room: &str) {
        let mut st = self.lock();
        if st.rooms.get(room).is_some_and(|r| r.auto && r.participants.is_empty()) {
            st.rooms.remove(room);
            tracing::debug!(%room, "room created for a failed join removed");
        }
    }
}

/// `name`, or the first of `name (2)` … `name (999)` that nobody in `room` holds.
fn distinct_name(room: &Room, name: &str) -> Result<String, ApiError> {
    let taken = |n: &str| room.participants.values().any(|p| p.identity == n);
    if !taken(name) {
        return Ok(name.to_string());
    }
    (2..=MAX_NAME_SUFFIX).map(|n| format!("{name} ({n})")).find(|n| !taken(n)).ok_or_else(|| ApiError::BadRequest(format!("too many participants named {name}")))
}
