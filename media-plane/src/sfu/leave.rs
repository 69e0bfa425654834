//! Removing a session: its tracks leave every subscriber, its subscriptions leave every
//! publisher, the room and the other cores are told.

use link::{Event as LinkEvent, LeaveReason};

use super::cross::{CrossMsg, PubRef};
use super::ids::SessionKey;
use super::Core;

impl Core {
    /// Removes a session and every reference to it, and tells the room.
    pub(super) fn remove(&mut self, key: SessionKey, reason: LeaveReason) {
        let Some(s) = self.sessions.remove(key) else { return };
        for &up in &s.ups {
            let Some(track) = self.ups.remove(up) else { continue };
            for dk in track.downs {
                self.unbind(dk);
            }
        }
        for &dk in &s.downs {
            self.drop_down(dk);
        }
        if s.shadow.is_none() && !s.ups.is_empty() {
            let from = PubRef { core: self.cfg.index, key, serial: s.serial };
            for &c in self.room_cores.get(&s.room).into_iter().flatten() {
                self.out.cross.push((c, CrossMsg::PublisherLeft { from }));
            }
        }
        if let Some(members) = self.rooms.get_mut(&s.room) {
            members.retain(|k| *k != key);
            if members.is_empty() {
                self.rooms.remove(&s.room);
            }
        }
        if s.shadow.is_some() {
            return;
        }
        // The last local member left: other cores stop sending, and shadows go.
        if self.local_members(&s.room) == 0 {
            self.announce_members(&s.room, false);
            for &k in self.rooms.get(&s.room).into_iter().flatten() {
                self.sessions[k].ending = Some(LeaveReason::Requested);
                self.maybe_ending.push(k);
            }
        }
        tracing::info!(session = %s.id, identity = %s.identity, room = %s.room, ?reason, "session ended");
        self.out.events.push(LinkEvent::SessionEnded { room: s.room, session: s.id, reason });
    }
}
