//! The per-core SFU driven by real str0m clients on a virtual clock: no sockets, no sleeps.

use std::time::Duration;

use link::{Command, Event as LinkEvent, Grants, LeaveReason, Subscription};
use media_plane::sim::{connect_worlds, shuttle, World};
use str0m::media::{KeyframeRequestKind, MediaKind, Mid};

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

/// Packets the subscriber got of (video, audio) after a 10 ms outage on its path, with each
/// subscriber keeping `history` of sent video for NACKs. Both tracks send one packet per
/// step and only video is nackable, so a repair shows as one more video than audio.
fn received_after_outage(history: Duration) -> (u64, u64) {
    let mut w = World::new();
    w.core.set_nack_history(history);
    w.join("pub", "room", true);
    let sub = w.join("sub", "room", false);
    w.connect_all();
    w.run_media(50);
    // (video, audio) packets the subscriber got, by the kind of each of its m-lines.
    let counts = |w: &mut World| {
        let p = &mut w.peers[sub];
        let mut by_kind = (0, 0);
        for (mid, n) in &p.received {
            match p.rtc.media(*mid).map(|m| m.kind()) {
                Some(MediaKind::Video) => by_kind.0 += n,
                Some(MediaKind::Audio) => by_kind.1 += n,
                None => {}
            }
        }
        by_kind
    };
    let before = counts(&mut w);
    assert!(before.0 > 0 && before.0 == before.1, "one audio and one video packet per step: {before:?}");
    let addr = w.peers[sub].addr;
    w.lose_to.push(addr);
    w.media_step();
    w.lose_to.clear();
    w.run_media(60);
    let after = counts(&mut w);
    (after.0 - before.0, after.1 - before.1)
}

#[test]
fn lost_video_is_repaired_from_the_nack_history_and_not_past_it() {
    // The default history repairs the video packet lost on the way to the subscriber.
    let (video, audio) = received_after_outage(media_plane::sfu::NACK_HISTORY);
    assert!(audio >= 55, "media kept flowing: {audio}");
    assert_eq!(video, audio + 1, "the lost video packet is retransmitted on NACK");
    // A history shorter than the NACK's round trip has already forgotten it.
    let (video, audio) = received_after_outage(Duration::from_millis(1));
    assert!(audio >= 55, "media kept flowing: {audio}");
    assert_eq!(video, audio, "nothing to retransmit past the history");
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
fn peers_that_send_no_consent_checks_stay_while_their_traffic_flows_and_end_once_it_stops() {
    // libnice (GStreamer's webrtcbin) sends no Binding requests once connected; str0m's lite
    // agent alone would end such a session 15 s later.
    let mut w = World::new();
    let publisher = w.join("gst-publisher", "room", true);
    let viewer = w.join("gst-viewer", "room", false);
    w.connect_all();
    w.peers[publisher].no_consent = true;
    w.peers[viewer].no_consent = true;
    let before = w.received_total(viewer);
    w.run_media(6000); // 60 s
    assert_eq!(w.ended("S-gst-publisher"), None);
    assert_eq!(w.ended("S-gst-viewer"), None);
    let during = w.received_total(viewer);
    assert!(during >= before + 11_000, "the viewer got {} packets in 60 s", during - before);
    w.run_media(100);
    assert!(w.received_total(viewer) >= during + 180, "still flowing after 60 s");
    // Gone quiet: the publisher ends by timeout within 15 s of its last datagram, plus one
    // keepalive interval.
    w.peers[publisher].alive = false;
    let silent_from = w.now;
    while w.ended("S-gst-publisher").is_none() && w.now < silent_from + Duration::from_secs(30) {
        w.step(Duration::from_millis(100));
    }
    assert_eq!(w.ended("S-gst-publisher"), Some(LeaveReason::Timeout));
    assert!(w.now - silent_from <= Duration::from_secs(21), "ended {:?} after going quiet", w.now - silent_from);
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
            video: Default::default(),
            offer: "v=0\r\nthis is not sdp".into(),
        },
    );
    let failed = w.core.take_events().any(|e| matches!(e, LinkEvent::JoinFailed { req: 99, error: link::JoinError::BadSdp(_) }));
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

#[test]
fn a_room_spans_two_cores_and_every_track_crosses() {
    let mut a = World::new_core(0, 2);
    let mut b = World::new_core(1, 2);
    let alice = a.join("alice", "r", true);
    shuttle(&mut [&mut a, &mut b]);
    let bob = b.join("bob", "r", true);
    let carol = b.join("carol", "r", false);
    shuttle(&mut [&mut a, &mut b]);
    connect_worlds(&mut [&mut a, &mut b]);
    for _ in 0..60 {
        a.media_step();
        b.media_step();
        shuttle(&mut [&mut a, &mut b]);
    }
    // Alice (core 0) gets Bob's audio and video from core 1; Bob and Carol get Alice's.
    assert!(a.received_total(alice) > 40, "alice got {}", a.received_total(alice));
    assert!(b.peers[bob].received.len() >= 2 && b.received_total(bob) > 40, "bob: {:?}", b.peers[bob].received);
    assert!(b.peers[carol].received.len() >= 4, "carol sees both publishers' tracks: {:?}", b.peers[carol].received);
    // Shadows are not sessions of their core.
    assert_eq!(a.core.session_count(), 1);
    assert_eq!(b.core.session_count(), 2);

    // Alice leaves core 0: core 1 drops her shadow, and Carol's m-lines for her stop.
    a.core.handle_command(a.now, Command::Leave { session: "S-alice".into() });
    shuttle(&mut [&mut a, &mut b]);
    for _ in 0..20 {
        a.step(Duration::from_millis(10));
        b.step(Duration::from_millis(10));
        shuttle(&mut [&mut a, &mut b]);
    }
    let before = b.received_total(carol);
    b.run_media(20);
    let after = b.received_total(carol);
    // Carol keeps receiving Bob only: 2 tracks × 20 steps.
    assert!(after - before <= 40, "carol still gets alice's packets: {}", after - before);
    assert!(after - before >= 20, "carol lost bob: {}", after - before);
}

#[test]
fn a_whep_player_follows_its_broadcaster_across_a_reconnect_with_numbering_continued() {
    let mut w = World::new();
    let a = w.join("alice", "r", true);
    w.connect_all();
    w.run_media(5);
    // A WHEP player of alice: her session now, and her identity after.
    let whep = Subscription::Only { publisher: "S-alice".into(), identity: Some("alice".into()) };
    let v = w.join_with("viewer", "S-viewer", "r", false, whep);
    w.peers[v].rtp_log = Some(Vec::new());
    w.connect_all();
    w.run_media(50);
    let before = w.peers[v].rtp_log.as_ref().map_or(0, |l| l.len());
    assert!(before >= 80, "the player receives alice's audio and video: {before}");

    // Alice's connection is replaced: her session leaves, and 300 ms later she joins again
    // as a new session, numbering her packets from elsewhere.
    w.core.handle_command(w.now, Command::Leave { session: "S-alice".into() });
    w.peers[a].alive = false;
    for _ in 0..30 {
        w.step(Duration::from_millis(10));
    }
    let a2 = w.join_with("alice", "S-alice-2", "r", true, Subscription::All);
    w.peers[a2].seq = 40_000;
    w.connect_all();
    w.run_media(50);

    let log = w.peers[v].rtp_log.clone().unwrap_or_default();
    assert!(log.len() >= before + 80, "the player receives the new session too: {} then {}", before, log.len());
    let mids: std::collections::BTreeSet<Mid> = log.iter().map(|e| e.0).collect();
    assert_eq!(mids.len(), 2, "audio and video, on the player's own two m-lines");
    for mid in mids {
        let stream: Vec<_> = log.iter().filter(|e| e.0 == mid).collect();
        // One SSRC per m-line: to the player this is one stream, not a new one.
        assert!(stream.iter().all(|e| e.3 == stream[0].3), "{mid}: SSRC changed");
        // Sequence numbers continue one by one across the switch.
        for pair in stream.windows(2) {
            assert_eq!(pair[1].1, pair[0].1 + 1, "{mid}: {:?} then {:?}", pair[0], pair[1]);
        }
        // Timestamps keep moving forward; at the switch, by about the time that passed
        // (300 ms of absence plus reconnecting, under 2 s), not by the sources' difference.
        let jumps: Vec<i64> = stream.windows(2).map(|p| i64::from(p[1].2.wrapping_sub(p[0].2) as i32)).collect();
        assert!(jumps.iter().all(|j| *j > 0), "{mid}: timestamps go back: {jumps:?}");
        let switch = jumps.iter().copied().max().unwrap_or(0);
        assert!(switch > 960 && switch < 2 * 90_000, "{mid}: the switch moved the clock by {switch}");
    }
}

/// The loop charges datagrams of sessions still in ICE/DTLS to setup, the rest to forwarding;
/// load reports carry the split so placement can price forwarding alone.
#[test]
fn datagrams_are_told_apart_as_handshake_or_connected_work() {
    use media_plane::sfu::Handled;
    let mut w = World::new();
    let publisher = w.join("pub", "room", true);
    let viewer = w.join("sub", "room", false);
    w.connect_all();
    let setup: Vec<u64> = w.peers.iter().map(|p| p.handled.get(&Handled::Setup).copied().unwrap_or(0)).collect();
    // STUN checks, the DTLS client's flights: several each.
    assert!(setup.iter().all(|&n| n >= 3), "handshake datagrams: {setup:?}");
    w.run_media(50);
    for (i, p) in w.peers.iter().enumerate() {
        assert_eq!(p.handled.get(&Handled::Setup).copied().unwrap_or(0), setup[i], "{} after connecting", p.identity);
        assert_eq!(p.handled.get(&Handled::Dropped), None, "{}", p.identity);
    }
    assert!(w.peers[publisher].handled[&Handled::Connected] >= 100, "media: {:?}", w.peers[publisher].handled);
    assert!(w.peers[viewer].handled[&Handled::Connected] >= 1, "RTCP: {:?}", w.peers[viewer].handled);
    assert_eq!(w.core.handle_datagram(w.now, "10.9.9.9:9".parse().unwrap(), b"junk"), Handled::Dropped);
    let since = w.core.counters();
    let LinkEvent::Load { setup_permille, busy_permille, connected, .. } = w.core.load_event(since, Duration::from_secs(1), 300, 450) else { panic!("not a load report") };
    assert_eq!((busy_permille, setup_permille, connected), (300, Some(300), Some(2)), "setup is at most the busy share");
}

/// A STUN Binding request with USERNAME `user`, signed with `password` when given, or with a
/// MESSAGE-INTEGRITY of zeros otherwise.
fn binding(user: &str, password: Option<&[u8]>) -> Vec<u8> {
    use hmac::{Hmac, Mac};
    let mut attrs = vec![0x00, 0x06];
    attrs.extend_from_slice(&(user.len() as u16).to_be_bytes());
    attrs.extend_from_slice(user.as_bytes());
    while attrs.len() % 4 != 0 {
        attrs.push(0);
    }
    // PRIORITY, which str0m requires of a Binding request.
    attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 0x6e, 0x00, 0x1e, 0xff]);
    let mut m = vec![0x00, 0x01];
    m.extend_from_slice(&((attrs.len() + 24) as u16).to_be_bytes());
    m.extend_from_slice(&[0x21, 0x12, 0xA4, 0x42]);
    m.extend_from_slice(&rand::random::<[u8; 12]>());
    m.extend_from_slice(&attrs);
    let tag = match password {
        Some(p) => {
            let mut mac = Hmac::<sha1::Sha1>::new_from_slice(p).unwrap();
            mac.update(&m);
            mac.finalize().into_bytes().to_vec()
        }
        None => vec![0; 20],
    };
    m.extend_from_slice(&[0x00, 0x08, 0x00, 0x14]);
    m.extend_from_slice(&tag);
    m
}

/// A STUN Binding request with USERNAME `user` and no MESSAGE-INTEGRITY at all.
fn unsigned_binding(user: &str) -> Vec<u8> {
    let signed = binding(user, None);
    let mut m = signed[..signed.len() - 24].to_vec();
    let len = (m.len() - 20) as u16;
    m[2..4].copy_from_slice(&len.to_be_bytes());
    m
}

fn sdp_attr<'a>(sdp: &'a str, key: &str) -> &'a str {
    sdp.lines().find_map(|l| l.strip_prefix(key)).map(str::trim).unwrap_or_default()
}

#[test]
fn spoofed_bindings_teach_the_core_no_address_and_the_call_goes_on() {
    let mut w = World::new();
    w.join("a", "room", true);
    let b = w.join("b", "room", false);
    w.connect_all();
    w.run_media(20);
    let (ufrag, pass) = (sdp_attr(&w.peers[0].answer, "a=ice-ufrag:").to_string(), sdp_attr(&w.peers[0].answer, "a=ice-pwd:").to_string());
    assert!(!ufrag.is_empty() && !pass.is_empty());
    let before = w.core.counters();
    let received = w.received_total(b);
    // 5000 bindings with the right ufrag and a wrong integrity, each from a new address.
    for i in 0..5000u32 {
        let from = std::net::SocketAddr::from(([198, 18, (i >> 8) as u8, i as u8], 40000));
        let spoof = if i % 2 == 0 { binding(&format!("{ufrag}:spoof"), None) } else { unsigned_binding(&format!("{ufrag}:spoof")) };
        w.core.handle_datagram(w.now, from, &spoof);
        // Media from that address then goes nowhere.
        w.core.handle_datagram(w.now, from, &[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3]);
    }
    let after = w.core.counters();
    // Half carry a wrong integrity (checked and counted); str0m does not even parse the others.
    assert_eq!(after.unverified_stun - before.unverified_stun, 2500);
    assert!(after.unroutable - before.unroutable >= 5000, "{after:?}");
    w.run_media(50);
    assert!(w.received_total(b) >= received + 90, "b still receives a");
    // A binding signed with the session's password from a new address (a client that moved)
    // is learned: media from there is routed.
    let moved = "203.0.113.50:41000".parse().unwrap();
    w.core.handle_datagram(w.now, moved, &binding(&format!("{ufrag}:moved"), Some(pass.as_bytes())));
    let unroutable = w.core.counters().unroutable;
    w.core.handle_datagram(w.now, moved, &[0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3]);
    assert_eq!(w.core.counters().unroutable, unroutable, "the verified address routes");
    assert_eq!(w.core.counters().unverified_stun, after.unverified_stun);
    // A session keeps its last MAX_ADDRS verified addresses: older ones stop routing.
    let rtp = [0x80, 96, 0, 1, 0, 0, 0, 1, 0, 0, 0, 9, 1, 2, 3];
    for i in 0..20u16 {
        let from = std::net::SocketAddr::from(([203, 0, 113, 60], 42000 + i));
        w.core.handle_datagram(w.now, from, &binding(&format!("{ufrag}:moved"), Some(pass.as_bytes())));
    }
    let unroutable = w.core.counters().unroutable;
    w.core.handle_datagram(w.now, moved, &rtp);
    w.core.handle_datagram(w.now, "203.0.113.60:42000".parse().unwrap(), &rtp);
    assert_eq!(w.core.counters().unroutable, unroutable + 2, "evicted: the first moved address and the oldest of the twenty");
    w.core.handle_datagram(w.now, "203.0.113.60:42019".parse().unwrap(), &rtp);
    assert_eq!(w.core.counters().unroutable, unroutable + 2, "the newest routes");
}
