//! A virtual-clock world of real str0m clients around one [`Core`]: no sockets, no sleeps.
//! Used by the integration tests and the benchmarks; it panics on protocol failures, which
//! is what a test wants.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent, Grants, LeaveReason, Subscription};
use crate::codec::{self, FrameInfo, VideoCodec};
use crate::sfu::{Core, CoreConfig, Handled};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, MediaKind, Mid, Rid, Simulcast, SimulcastLayer};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

/// The SFU's address in the simulation.
pub const SFU: &str = "10.0.0.1:5000";

/// One simulated client.
pub struct Peer {
    pub identity: String,
    pub session: String,
    pub rtc: Rtc,
    pub addr: SocketAddr,
    pub pending: Option<SdpPendingOffer>,
    /// Own sending mids by kind.
    pub send: Vec<(Mid, MediaKind)>,
    pub seq: u64,
    pub connected: bool,
    /// Received RTP packets per (stream id of the m-line, kind): count.
    pub received: HashMap<Mid, u64>,
    pub keyframe_requests: u64,
    /// Whether this peer takes part in the exchange (false simulates a vanished client).
    pub alive: bool,
    /// When set, its Binding requests never reach the core once it is connected, as with
    /// libnice, which sends no consent checks (`crate::keepalive`).
    pub no_consent: bool,
    /// When set, every received RTP packet is logged: (m-line, extended sequence number,
    /// RTP timestamp, SSRC).
    pub rtp_log: Option<Vec<(Mid, u64, u32, u32)>>,
    /// What the core said each of this peer's datagrams went to.
    pub handled: HashMap<Handled, u64>,
    /// Simulcast video layers this peer sends (empty: one plain video stream).
    pub layers: Vec<SimLayer>,
    /// When set, every received video packet is logged with what its payload tells.
    pub frame_log: Option<Vec<Received>>,
    /// The core's SDP answer to its join (its ICE ufrag and password are in it).
    pub answer: String,
}

/// One simulcast layer a simulated publisher sends: VP8 with a valid payload descriptor,
/// one packet per frame, a keyframe when asked and every second.
#[derive(Debug, Clone)]
pub struct SimLayer {
    /// Its rid.
    pub rid: Rid,
    /// Frame size its keyframes announce.
    pub size: (u16, u16),
    /// Payload bytes per packet (sets its bitrate: one packet per 10 ms step).
    pub len: usize,
    /// PictureID of the next frame (each layer starts elsewhere, as in libwebrtc).
    pub picture_id: u16,
    /// TL0PICIDX of the next frame.
    pub tl0: u8,
    /// The next frame is a keyframe.
    pub keyframe_due: bool,
    /// Not sent (the publisher paused this encoding).
    pub paused: bool,
    /// Packets sent.
    pub sent: u64,
    /// Keyframe requests that named this layer.
    pub keyframe_requests: u64,
    /// Sends three temporal layers (TID 0, 2, 1, 2 in turn), as libwebrtc's VP8 L1T3.
    pub temporal: bool,
    /// Frames sent, for the temporal pattern.
    pub frames: u64,
}

/// One received video packet, as a subscriber saw it.
#[derive(Debug, Clone, Copy)]
pub struct Received {
    /// Its m-line.
    pub mid: Mid,
    /// Extended sequence number.
    pub seq: u64,
    /// RTP timestamp.
    pub ts: u32,
    /// SSRC.
    pub ssrc: u32,
    /// What the payload tells.
    pub frame: FrameInfo,
}

/// Three layers as a browser sends them, lowest first: rids l, m, h at 320×180, 640×360 and
/// 1280×720.
pub fn three_layers() -> Vec<SimLayer> {
    [("l", (320, 180), 200, 1000), ("m", (640, 360), 500, 9000), ("h", (1280, 720), 1000, 20000)]
        .into_iter()
        .map(|(rid, size, len, picture_id)| SimLayer { rid: Rid::from(rid), size, len, picture_id, tl0: 0, keyframe_due: true, paused: false, sent: 0, keyframe_requests: 0, temporal: false, frames: 0 })
        .collect()
}

/// A VP8 RTP payload: descriptor with 15-bit PictureID, TL0PICIDX and TID 0 (Y set), a partition start,
/// and for a keyframe the frame tag, start code and size; `len` bytes in all (at least 16).
pub fn vp8_payload(picture_id: u16, tl0: u8, keyframe: bool, size: (u16, u16), len: usize) -> Vec<u8> {
    vp8_payload_tid(picture_id, tl0, 0, keyframe, size, len)
}

/// [`vp8_payload`] of temporal layer `tid`.
pub fn vp8_payload_tid(picture_id: u16, tl0: u8, tid: u8, keyframe: bool, size: (u16, u16), len: usize) -> Vec<u8> {
    let mut p = vec![0x90, 0xe0, 0x80 | ((picture_id >> 8) as u8 & 0x7f), picture_id as u8, tl0, (tid << 6) | 0x20];
    if keyframe {
        p.extend_from_slice(&[0x10, 0x02, 0x00, 0x9d, 0x01, 0x2a]);
        p.extend_from_slice(&size.0.to_le_bytes());
        p.extend_from_slice(&size.1.to_le_bytes());
    } else {
        p.extend_from_slice(&[0x11, 0x02, 0x00]);
    }
    p.resize(len.max(p.len() + 1), 0);
    p
}

/// The core and its clients on one virtual clock.
pub struct World {
    pub now: Instant,
    pub core: Core,
    pub peers: Vec<Peer>,
    pub link: Vec<LinkEvent>,
    pub next_req: u64,
    /// Datagrams from the core to these addresses are lost in transit (loss on one path).
    pub lose_to: Vec<SocketAddr>,
}

impl Default for World {
    fn default() -> Self {
        Self::new()
    }
}

impl World {
    /// An empty world with core `index` of a node with `cores` cores (for rooms that span
    /// cores: move [`Core::take_cross`] output between worlds with [`shuttle`]).
    pub fn new_core(index: u32, cores: u32) -> World {
        crate::crypto::install();
        let now = Instant::now();
        let addr: SocketAddr = SFU.parse().unwrap();
        let core = Core::new(CoreConfig { index, local: addr, candidates: vec![addr], capacity: 5000, connect_timeout: Duration::from_secs(30), cores, nack_history: crate::sfu::NACK_HISTORY, bwe_initial: crate::sfu::BWE_INITIAL });
        World { now, core, peers: Vec::new(), link: Vec::new(), next_req: 1, lose_to: Vec::new() }
    }

    /// An empty world with one core.
    pub fn new() -> World {
        Self::new_core(0, 1)
    }

    /// A client joins `room`, publishing audio and video (or only receiving), like a browser.
    pub fn join(&mut self, identity: &str, room: &str, publish: bool) -> usize {
        self.join_with(identity, &format!("S-{identity}"), room, publish, Subscription::All)
    }

    /// [`World::join`] with a given session id and subscription (a WHEP player, or the
    /// same identity joining again as a new session).
    pub fn join_with(&mut self, identity: &str, session: &str, room: &str, publish: bool, subscription: Subscription) -> usize {
        self.join_layers(identity, session, room, publish, subscription, Vec::new())
    }

    /// A client that publishes audio and simulcast VP8 video with `layers` (lowest first).
    pub fn join_simulcast(&mut self, identity: &str, room: &str, layers: Vec<SimLayer>) -> usize {
        self.join_layers(identity, &format!("S-{identity}"), room, true, Subscription::All, layers)
    }

    /// [`World::join_with`], with simulcast video layers when `layers` is not empty.
    pub fn join_layers(&mut self, identity: &str, session: &str, room: &str, publish: bool, subscription: Subscription, layers: Vec<SimLayer>) -> usize {
        let i = self.peers.len();
        let addr: SocketAddr = format!("10.0.1.{}:4000", i + 1).parse().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let dir = if publish { Direction::SendOnly } else { Direction::RecvOnly };
        let a = api.add_media(MediaKind::Audio, dir, Some(identity.into()), None, None);
        let simulcast = (!layers.is_empty()).then(|| Simulcast { send: layers.iter().map(|l| SimulcastLayer::new(&l.rid)).collect(), recv: Vec::new() });
        let v = api.add_media(MediaKind::Video, dir, Some(identity.into()), None, simulcast);
        let (offer, pending) = api.apply().unwrap();
        let session = session.to_string();
        let req = self.next_req;
        self.next_req += 1;
        self.core.handle_command(
            self.now,
            Command::Join {
                req,
                core: 0,
                room: room.into(),
                session: session.clone(),
                identity: identity.into(),
                grants: Grants { publish, subscribe: true },
                subscription,
                video: Default::default(),
                offer: offer.to_sdp_string(),
            },
        );
        let mut peer = Peer {
            identity: identity.into(),
            session,
            rtc,
            addr,
            pending: Some(pending),
            send: if publish { vec![(a, MediaKind::Audio), (v, MediaKind::Video)] } else { vec![] },
            seq: 1,
            connected: false,
            received: HashMap::new(),
            keyframe_requests: 0,
            alive: true,
            no_consent: false,
            rtp_log: None,
            handled: HashMap::new(),
            layers,
            frame_log: None,
            answer: String::new(),
        };
        let events: Vec<LinkEvent> = self.core.take_events().collect();
        let mut rest = Vec::new();
        for e in events {
            match e {
                LinkEvent::Answer { req: r, sdp } if r == req => {
                    let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                    peer.rtc.sdp_api().accept_answer(peer.pending.take().unwrap(), answer).unwrap();
                    peer.answer = sdp;
                }
                other => rest.push(other),
            }
        }
        assert!(peer.pending.is_none(), "join must be answered at once");
        self.peers.push(peer);
        self.route(rest);
        i
    }

    /// The peer of a session.
    pub fn peer_by_session(&mut self, session: &str) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.session == session)
    }

    /// Server offers go to their client, whose answer goes back to the core.
    pub fn route_link_events(&mut self) {
        let events: Vec<LinkEvent> = self.core.take_events().collect();
        self.route(events);
    }

    /// Delivers link events (offers go to their client, answers back to the core).
    pub fn route(&mut self, events: Vec<LinkEvent>) {
        for e in events {
            if let LinkEvent::Offer { session, sdp } = &e {
                let now = self.now;
                let answer = {
                    let Some(p) = self.peer_by_session(session) else { continue };
                    if !p.alive {
                        continue;
                    }
                    let offer = SdpOffer::from_sdp_string(sdp).unwrap();
                    p.rtc.sdp_api().accept_offer(offer).unwrap()
                };
                self.core.handle_command(now, Command::Answer { session: session.clone(), sdp: answer.to_sdp_string() });
            }
            self.link.push(e);
        }
        // Answers may make the core offer again.
        let more: Vec<LinkEvent> = self.core.take_events().collect();
        if !more.is_empty() {
            self.route(more);
        }
    }

    /// Polls a peer until it has nothing more; its datagrams go to the core.
    pub fn poll_peer(core: &mut Core, now: Instant, p: &mut Peer) {
        loop {
            match p.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) if p.no_consent && p.connected && crate::demux::is_binding_request(&t.contents) => {}
                Output::Transmit(t) => {
                    *p.handled.entry(core.handle_datagram(now, p.addr, &t.contents)).or_default() += 1;
                }
                Output::Event(e) => match e {
                    Event::Connected => p.connected = true,
                    Event::RtpPacket(pkt) => {
                        let mid = p.rtc.direct_api().stream_rx(&pkt.header.ssrc).map(|s| s.mid());
                        if let Some(mid) = mid {
                            *p.received.entry(mid).or_default() += 1;
                            if let Some(log) = &mut p.rtp_log {
                                log.push((mid, *pkt.seq_no, pkt.header.timestamp, *pkt.header.ssrc));
                            }
                            let video = p.rtc.media(mid).is_some_and(|m| m.kind() == MediaKind::Video);
                            if let Some(log) = p.frame_log.as_mut().filter(|_| video) {
                                let frame = codec::inspect(VideoCodec::Vp8, &pkt.payload);
                                if frame.vp8.is_some() {
                                    log.push(Received { mid, seq: *pkt.seq_no, ts: pkt.header.timestamp, ssrc: *pkt.header.ssrc, frame });
                                }
                            }
                        }
                    }
                    Event::KeyframeRequest(req) => {
                        p.keyframe_requests += 1;
                        for l in p.layers.iter_mut().filter(|l| req.rid.is_none_or(|r| r == l.rid)) {
                            l.keyframe_due = true;
                            l.keyframe_requests += 1;
                        }
                    }
                    _ => {}
                },
            }
        }
    }

    /// One exchange round, then the clock moves by `dt`.
    pub fn step(&mut self, dt: Duration) {
        let sfu: SocketAddr = SFU.parse().unwrap();
        for _ in 0..4 {
            for p in self.peers.iter_mut().filter(|p| p.alive) {
                Self::poll_peer(&mut self.core, self.now, p);
            }
            let out: Vec<_> = self.core.take_transmits().collect();
            for t in out {
                if self.lose_to.contains(&t.destination) {
                    continue;
                }
                if let Some(p) = self.peers.iter_mut().find(|p| p.addr == t.destination && p.alive) {
                    let input = Input::Receive(
                        self.now,
                        Receive { proto: Protocol::Udp, source: sfu, destination: p.addr, contents: t.contents.as_slice().try_into().unwrap() },
                    );
                    p.rtc.handle_input(input).unwrap();
                    // str0m holds one received RTP packet at a time: poll after every input.
                    Self::poll_peer(&mut self.core, self.now, p);
                }
            }
            self.route_link_events();
        }
        self.now += dt;
        self.core.handle_timeout(self.now);
        for p in self.peers.iter_mut().filter(|p| p.alive) {
            p.rtc.handle_input(Input::Timeout(self.now)).unwrap();
        }
        self.route_link_events();
    }

    /// Every publisher sends one audio and one video packet, then one 10 ms step.
    pub fn media_step(&mut self) {
        let now = self.now;
        for p in self.peers.iter_mut().filter(|p| p.alive && p.connected) {
            let seq = p.seq;
            p.seq += 1;
            for &(mid, kind) in &p.send {
                let codec = if kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                if kind == MediaKind::Video && !p.layers.is_empty() {
                    let Some(pt) = p.rtc.codec_config().find(|c| c.spec().codec == codec).map(|c| c.pt()) else { continue };
                    for l in p.layers.iter_mut().filter(|l| !l.paused) {
                        // A keyframe restarts the temporal pattern at the base layer.
                        if l.keyframe_due || seq % 100 == 0 {
                            l.frames = 0;
                        }
                        let tid = if l.temporal { [0, 2, 1, 2][(l.frames % 4) as usize] } else { 0 };
                        let keyframe = l.frames == 0 && (l.keyframe_due || seq % 100 == 0);
                        l.keyframe_due = false;
                        l.frames += 1;
                        if tid == 0 {
                            l.tl0 = l.tl0.wrapping_add(1);
                        }
                        let payload = vp8_payload_tid(l.picture_id, l.tl0, tid, keyframe, l.size, l.len);
                        l.picture_id = (l.picture_id + 1) & 0x7fff;
                        let mut api = p.rtc.direct_api();
                        let Some(tx) = api.stream_tx_by_mid(mid, Some(l.rid)) else { continue };
                        tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 900) as u32, now, payload).marker(true));
                        l.sent += 1;
                    }
                    continue;
                }
                let Some(pt) = p.rtc.codec_config().find(|c| c.spec().codec == codec).map(|c| c.pt()) else { continue };
                let mut api = p.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
                let payload = vec![seq as u8; if kind == MediaKind::Video { 1000 } else { 100 }];
                tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 960) as u32, now, payload).marker(true));
            }
        }
        self.step(Duration::from_millis(10));
    }

    /// Runs `steps` media steps.
    pub fn run_media(&mut self, steps: usize) {
        for _ in 0..steps {
            self.media_step();
        }
    }

    /// Steps until every live peer is connected.
    pub fn connect_all(&mut self) {
        for _ in 0..300 {
            if self.peers.iter().filter(|p| p.alive).all(|p| p.connected) {
                return;
            }
            self.step(Duration::from_millis(10));
        }
        panic!("peers did not connect");
    }

    /// Packets received by peer `i`.
    pub fn received_total(&self, i: usize) -> u64 {
        self.peers[i].received.values().sum()
    }

    /// Why a session ended, if it did.
    pub fn ended(&self, session: &str) -> Option<LeaveReason> {
        self.link.iter().find_map(|e| match e {
            LinkEvent::SessionEnded { session: s, reason, .. } if s == session => Some(*reason),
            _ => None,
        })
    }
}

/// Delivers the cross-core messages of every world to the world of their target core,
/// until none are left.
pub fn shuttle(worlds: &mut [&mut World]) {
    loop {
        let mut moved = false;
        for i in 0..worlds.len() {
            let out: Vec<_> = worlds[i].core.take_cross().collect();
            for (target, msg) in out {
                moved = true;
                if let Some(w) = worlds.iter_mut().find(|w| w.core.config().index == target) {
                    let now = w.now;
                    w.core.handle_cross(now, msg);
                }
            }
        }
        if !moved {
            break;
        }
    }
}

/// Steps the worlds of one node's cores together, shuttling their cross-core messages, until
/// every live peer in each is connected.
pub fn connect_worlds(worlds: &mut [&mut World]) {
    for _ in 0..300 {
        for w in worlds.iter_mut() {
            w.step(Duration::from_millis(10));
        }
        shuttle(worlds);
        if worlds.iter().all(|w| w.peers.iter().filter(|p| p.alive).all(|p| p.connected)) {
            return;
        }
    }
    panic!("peers did not connect");
}
