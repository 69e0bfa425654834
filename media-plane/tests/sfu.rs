//! The per-core SFU driven by real str0m clients on a virtual clock: no sockets, no sleeps.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

use link::{Command, Event as LinkEvent, Grants, LeaveReason, Subscription};
use media_plane::sfu::{Core, CoreConfig};
use str0m::change::{SdpAnswer, SdpOffer, SdpPendingOffer};
use str0m::format::Codec;
use str0m::media::{Direction, KeyframeRequestKind, MediaKind, Mid};
use str0m::net::{Protocol, Receive};
use str0m::rtp::RtpWrite;
use str0m::{Candidate, Event, Input, Output, Rtc};

const SFU: &str = "10.0.0.1:5000";

struct Peer {
    identity: String,
    session: String,
    rtc: Rtc,
    addr: SocketAddr,
    pending: Option<SdpPendingOffer>,
    /// Own sending mids by kind.
    send: Vec<(Mid, MediaKind)>,
    seq: u64,
    connected: bool,
    /// Received RTP packets per (stream id of the m-line, kind): count.
    received: HashMap<Mid, u64>,
    keyframe_requests: u64,
    /// Whether this peer takes part in the exchange (false simulates a vanished client).
    alive: bool,
}

struct World {
    now: Instant,
    core: Core,
    peers: Vec<Peer>,
    link: Vec<LinkEvent>,
    next_req: u64,
}

impl World {
    fn new() -> World {
        str0m::crypto::from_feature_flags().install_process_default();
        let now = Instant::now();
        let addr: SocketAddr = SFU.parse().unwrap();
        let core = Core::new(CoreConfig { index: 0, local: addr, candidates: vec![addr], capacity: 50, connect_timeout: Duration::from_secs(30) });
        World { now, core, peers: Vec::new(), link: Vec::new(), next_req: 1 }
    }

    /// A client joins `room`, publishing audio and video (or only receiving), like a browser.
    fn join(&mut self, identity: &str, room: &str, publish: bool) -> usize {
        let i = self.peers.len();
        let addr: SocketAddr = format!("10.0.1.{}:4000", i + 1).parse().unwrap();
        let mut rtc = Rtc::builder().set_rtp_mode(true).build(self.now);
        rtc.add_local_candidate(Candidate::host(addr, "udp").unwrap());
        let mut api = rtc.sdp_api();
        let dir = if publish { Direction::SendOnly } else { Direction::RecvOnly };
        let a = api.add_media(MediaKind::Audio, dir, Some(identity.into()), None, None);
        let v = api.add_media(MediaKind::Video, dir, Some(identity.into()), None, None);
        let (offer, pending) = api.apply().unwrap();
        let session = format!("S-{identity}");
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
                subscription: Subscription::All,
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
        };
        let events: Vec<LinkEvent> = self.core.take_events().collect();
        let mut rest = Vec::new();
        for e in events {
            match e {
                LinkEvent::Answer { req: r, sdp } if r == req => {
                    let answer = SdpAnswer::from_sdp_string(&sdp).unwrap();
                    peer.rtc.sdp_api().accept_answer(peer.pending.take().unwrap(), answer).unwrap();
                }
                other => rest.push(other),
            }
        }
        assert!(peer.pending.is_none(), "join must be answered at once");
        self.peers.push(peer);
        self.route(rest);
        i
    }

    fn peer_by_session(&mut self, session: &str) -> Option<&mut Peer> {
        self.peers.iter_mut().find(|p| p.session == session)
    }

    /// Server offers go to their client, whose answer goes back to the core.
    fn route_link_events(&mut self) {
        let events: Vec<LinkEvent> = self.core.take_events().collect();
        self.route(events);
    }

    fn route(&mut self, events: Vec<LinkEvent>) {
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
    fn poll_peer(core: &mut Core, now: Instant, p: &mut Peer) {
        loop {
            match p.rtc.poll_output().unwrap() {
                Output::Timeout(_) => break,
                Output::Transmit(t) => core.handle_datagram(now, p.addr, &t.contents),
                Output::Event(e) => match e {
                    Event::Connected => p.connected = true,
                    Event::RtpPacket(pkt) => {
                        let mid = p.rtc.direct_api().stream_rx(&pkt.header.ssrc).map(|s| s.mid());
                        if let Some(mid) = mid {
                            *p.received.entry(mid).or_default() += 1;
                        }
                    }
                    Event::KeyframeRequest(_) => p.keyframe_requests += 1,
                    _ => {}
                },
            }
        }
    }

    /// One exchange round, then the clock moves by `dt`.
    fn step(&mut self, dt: Duration) {
        let sfu: SocketAddr = SFU.parse().unwrap();
        for _ in 0..4 {
            for p in self.peers.iter_mut().filter(|p| p.alive) {
                Self::poll_peer(&mut self.core, self.now, p);
            }
            let out: Vec<_> = self.core.take_transmits().collect();
            for t in out {
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
    fn media_step(&mut self) {
        let now = self.now;
        for p in self.peers.iter_mut().filter(|p| p.alive && p.connected) {
            let seq = p.seq;
            p.seq += 1;
            for &(mid, kind) in &p.send {
                let codec = if kind == MediaKind::Audio { Codec::Opus } else { Codec::Vp8 };
                let Some(pt) = p.rtc.codec_config().find(|c| c.spec().codec == codec).map(|c| c.pt()) else { continue };
                let mut api = p.rtc.direct_api();
                let Some(tx) = api.stream_tx_by_mid(mid, None) else { continue };
                let payload = vec![seq as u8; if kind == MediaKind::Video { 1000 } else { 100 }];
                tx.write_rtp(RtpWrite::new(pt, seq.into(), (seq * 960) as u32, now, payload).marker(true));
            }
        }
        self.step(Duration::from_millis(10));
    }

    fn run_media(&mut self, steps: usize) {
        for _ in 0..steps {
            self.media_step();
        }
    }

    fn connect_all(&mut self) {
        for _ in 0..300 {
            if self.peers.iter().filter(|p| p.alive).all(|p| p.connected) {
                return;
            }
            self.step(Duration::from_millis(10));
        }
        panic!("peers did not connect");
    }

    fn received_total(&self, i: usize) -> u64 {
        self.peers[i].received.values().sum()
    }

    fn ended(&self, session: &str) -> Option<LeaveReason> {
        self.link.iter().find_map(|e| match e {
            LinkEvent::SessionEnded { session: s, reason, .. } if s == session => Some(*reason),
            _ => None,
        })
    }
}

#[test]
fn three_peers_each_receive_the_other_two() {
    let mut w = World::new();
    for n in ["a", "b", "c"] {
        w.join(n, "room", true);
    }
    w.connect_all();
    w.run_media(100);
    for i in 0..3 {
        // Two remote publishers, two tracks each.
        let streams = w.peers[i].received.iter().filter(|(_, n)| **n > 50).count();
        assert_eq!(streams, 4, "peer {} received {:?}", w.peers[i].identity, w.peers[i].received);
    }
    let c = w.core.counters();
    assert!(c.rx_rtp >= 3 * 2 * 90, "{c:?}");
    assert!(c.tx_rtp >= 2 * c.rx_rtp - 50, "each packet goes to two subscribers: {c:?}");
    let published = w.link.iter().filter(|e| matches!(e, LinkEvent::TrackPublished { .. })).count();
    assert_eq!(published, 6);
}

#[test]
fn late_joiner_triggers_renegotiation_both_ways() {
    let mut w = World::new();
    w.join("a", "room", true);
    w.join("b", "room", true);
    w.connect_all();
    w.run_media(50);
    let offers_before = w.link.iter().filter(|e| matches!(e, LinkEvent::Offer { .. })).count();
    let d = w.join("d", "room", true);
    w.connect_all();
    w.run_media(100);
    let offers_after = w.link.iter().filter(|e| matches!(e, LinkEvent::Offer { .. })).count();
    assert!(offers_after > offers_before, "existing peers must be offered the newcomer's tracks");
    assert_eq!(w.peers[d].received.values().filter(|n| **n > 50).count(), 4, "newcomer gets both existing publishers: {:?} {:?}", w.peers[d].received, w.link.iter().filter(|e| !matches!(e, LinkEvent::Offer { .. })).collect::<Vec<_>>());
    assert!(w.peers[0].received.len() >= 4, "a gets b and d: {:?}", w.peers[0].received);
}

#[test]
fn a_leaver_is_removed_and_the_room_is_told() {
    let mut w = World::new();
    for n in ["a", "b", "c"] {
        w.join(n, "room", true);
    }
    w.connect_all();
    w.run_media(30);
    w.core.handle_command(w.now, Command::Leave { session: "S-c".into() });
    w.peers[2].alive = false;
    w.route_link_events();
    assert_eq!(w.ended("S-c"), Some(LeaveReason::Requested));
    assert_eq!(w.core.session_count(), 2);
    // Remaining peers are offered the removal of c's tracks and keep receiving each other.
    let before = w.received_total(0);
    w.run_media(50);
    assert!(w.received_total(0) >= before + 90, "a still receives b");
    let stop_offers = w.link.iter().filter(|e| matches!(e, LinkEvent::Offer { session, .. } if session != "S-c")).count();
    assert!(stop_offers >= 4);
}

#[test]
fn a_vanished_client_times_out_and_the_others_continue() {
    let mut w = World::new();
    w.join("a", "room", true);
    w.join("b", "room", true);
    w.join("ghost", "room", true);
    w.connect_all();
    w.run_media(20);
    w.peers[2].alive = false;
    for _ in 0..6000 {
        w.media_step();
        if w.ended("S-ghost").is_some() {
            break;
        }
    }
    assert!(matches!(w.ended("S-ghost"), Some(LeaveReason::Timeout | LeaveReason::Closed)), "ghost must be removed");
    let before = w.received_total(1);
    w.run_media(50);
    assert!(w.received_total(1) >= before + 90);
}

#[test]
fn never_connecting_session_is_removed_after_the_connect_timeout() {
    let mut w = World::new();
    w.join("a", "room", true);
    w.peers[0].alive = false;
    for _ in 0..40 {
        w.step(Duration::from_secs(1));
    }
    assert_eq!(w.ended("S-a"), Some(LeaveReason::Timeout));
    assert_eq!(w.core.session_count(), 0);
}

#[test]
fn keyframe_requests_reach_the_publisher_throttled() {
    let mut w = World::new();
    w.join("pub", "room", true);
    w.join("sub", "room", true);
    w.connect_all();
    w.run_media(100);
    let base = w.peers[0].keyframe_requests;
    // The subscriber asks for a keyframe on every video m-line it receives, 20 times quickly.
    let video_mids: Vec<Mid> = w.peers[1]
        .received
        .keys()
        .copied()
        .filter(|m| w.peers[1].rtc.media(*m).is_some_and(|m| m.kind() == MediaKind::Video))
        .collect();
    assert_eq!(video_mids.len(), 1);
    for _ in 0..20 {
        let mut api = w.peers[1].rtc.direct_api();
        api.stream_rx_by_mid(video_mids[0], None).unwrap().request_keyframe(KeyframeRequestKind::Pli);
        w.media_step();
    }
    w.run_media(100);
    let relayed = w.peers[0].keyframe_requests - base;
    assert!(relayed >= 1, "the publisher must see the subscriber's request");
    assert!(relayed <= 3, "requests must be throttled, got {relayed}");
}

#[test]
fn bad_input_gets_typed_errors_and_disturbs_nobody() {
    let mut w = World::new();
    w.join("a", "room", true);
    w.join("b", "room", true);
    w.connect_all();
    w.core.handle_command(
        w.now,
        Command::Join {
            req: 99,
            core: 0,
            room: "room".into(),
            session: "S-bad".into(),
            identity: "bad".into(),
            grants: Grants { publish: true, subscribe: true },
            subscription: Subscription::All,
            offer: "v=0\r\nthis is not sdp".into(),
        },
    );
    let failed = w.core.take_events().any(|e| matches!(e, LinkEvent::JoinFailed { req: 99, ref code, .. } if code == "bad_sdp"));
    assert!(failed);
    // Garbage datagrams from a known and an unknown address.
    let known = w.peers[0].addr;
    for junk in [&[0u8; 0][..], &[0x00, 0x01, 0x00, 0x50, 0x21, 0x12, 0xA4, 0x42][..], &[0x80; 1500][..], &[0x16, 0xfe, 0xfd, 0, 0][..]] {
        w.core.handle_datagram(w.now, known, junk);
        w.core.handle_datagram(w.now, "10.9.9.9:9".parse().unwrap(), junk);
    }
    // An answer nobody asked for.
    w.core.handle_command(w.now, Command::Answer { session: "S-a".into(), sdp: "garbage".into() });
    assert!(w.core.take_events().any(|e| matches!(e, LinkEvent::AnswerFailed { .. })));
    let before = w.received_total(1);
    w.run_media(50);
    assert!(w.received_total(1) >= before + 90, "b still receives a");
    assert!(w.core.counters().unroutable >= 4);
}

