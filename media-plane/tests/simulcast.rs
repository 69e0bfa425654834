//! Simulcast, layer selection, selective subscription and dynacast in the per-core SFU,
//! driven by str0m clients on a virtual clock (`media_plane::sim`): no sockets, no sleeps.

use std::time::Duration;

use link::{Command, Event as LinkEvent, Quality, Subscription, TrackSettings};
use media_plane::sim::{connect_worlds, shuttle, three_layers, Received, World};
use media_plane::allocate::RAISE_HOLD;
use media_plane::sfu::CrossMsg;
use str0m::media::{MediaKind, Mid};

/// The publisher's video mid, as the track id the control plane names it by.
fn video_track(w: &World, publisher: usize) -> String {
    let mid = w.peers[publisher].send.iter().find(|(_, k)| *k == MediaKind::Video).map(|(m, _)| *m).expect("publisher sends video");
    mid.to_string()
}

fn subscribe(w: &mut World, sub: usize, publisher: usize, settings: TrackSettings) {
    let cmd = Command::Subscribe { session: w.peers[sub].session.clone(), publisher: w.peers[publisher].session.clone(), track: video_track(w, publisher), settings };
    let now = w.now;
    w.core.handle_command(now, cmd);
    w.route_link_events();
}

fn quality(q: Quality) -> TrackSettings {
    TrackSettings { quality: Some(q), ..Default::default() }
}

/// Keyframe sizes a subscriber received, in order, deduplicated.
fn sizes(log: &[Received]) -> Vec<(u16, u16)> {
    let mut v: Vec<(u16, u16)> = log.iter().filter_map(|r| r.frame.size).collect();
    v.dedup();
    v
}

/// Checks that a subscriber's video is one stream: one SSRC, sequence numbers and PictureIDs
/// without gaps, timestamps that never go back.
fn assert_one_stream(log: &[Received]) {
    assert!(log.len() > 10, "too few packets: {}", log.len());
    assert!(log.windows(2).all(|w| w[0].ssrc == w[1].ssrc), "one SSRC");
    for w in log.windows(2) {
        assert_eq!(w[1].seq, w[0].seq + 1, "sequence numbers continue: {:?} -> {:?}", w[0], w[1]);
        let (a, b) = (w[0].frame.vp8.and_then(|f| f.picture_id), w[1].frame.vp8.and_then(|f| f.picture_id));
        assert_eq!(b, a.map(|a| (a + 1) & 0x7fff), "PictureIDs continue: {:?} -> {:?}", w[0], w[1]);
        assert!(w[1].ts.wrapping_sub(w[0].ts) < u32::MAX / 2 && w[1].ts != w[0].ts, "timestamps move forward: {:?} -> {:?}", w[0], w[1]);
    }
}

/// A room with a three-layer publisher and `n` subscribers, connected, each logging frames.
fn room(n: usize) -> (World, usize, Vec<usize>) {
    let mut w = World::new();
    let p = w.join_simulcast("pub", "r", three_layers());
    let subs: Vec<usize> = (0..n).map(|i| w.join(&format!("sub{i}"), "r", false)).collect();
    w.connect_all();
    w.run_media(5);
    for &s in &subs {
        w.peers[s].frame_log = Some(Vec::new());
    }
    (w, p, subs)
}

#[test]
fn each_subscriber_gets_one_layer_and_switches_only_at_keyframes_with_numbering_continued() {
    let (mut w, p, subs) = room(2);
    let (hi, lo) = (subs[0], subs[1]);
    subscribe(&mut w, lo, p, quality(Quality::Low));
    w.run_media(150);
    assert_eq!(sizes(w.peers[hi].frame_log.as_ref().unwrap()), vec![(1280, 720)], "default: the top layer");
    assert_eq!(sizes(w.peers[lo].frame_log.as_ref().unwrap()), vec![(320, 180)], "asked for the low layer");

    // Low climbs to high: it waits for a keyframe of the high layer, and its stream goes on.
    let switch_at = w.peers[lo].frame_log.as_ref().unwrap().len();
    subscribe(&mut w, lo, p, quality(Quality::High));
    w.run_media(150);
    let log = w.peers[lo].frame_log.clone().unwrap();
    assert_eq!(sizes(&log), vec![(320, 180), (1280, 720)]);
    let first_high = log.iter().position(|r| r.frame.size == Some((1280, 720))).unwrap();
    assert!(first_high >= switch_at, "the switch came after it was asked for");
    assert!(log[first_high].frame.keyframe_start, "the new layer starts at a keyframe");
    assert_one_stream(&log);

    // And back down, by size: a 320x180 tile gets the low layer.
    subscribe(&mut w, lo, p, TrackSettings { max_width: Some(320), max_height: Some(180), ..Default::default() });
    w.run_media(150);
    let log = w.peers[lo].frame_log.clone().unwrap();
    assert_eq!(sizes(&log), vec![(320, 180), (1280, 720), (320, 180)]);
    assert_one_stream(&log);
    assert_one_stream(w.peers[hi].frame_log.as_ref().unwrap());
}

#[test]
fn keyframe_requests_for_a_switch_go_to_the_target_layer_only() {
    let (mut w, p, subs) = room(1);
    w.run_media(150);
    for l in &mut w.peers[p].layers {
        l.keyframe_due = false;
    }
    let before: Vec<u64> = w.peers[p].layers.iter().map(|l| l.sent).collect();
    let asked: Vec<u64> = w.peers[p].layers.iter().map(|l| l.keyframe_requests).collect();
    subscribe(&mut w, subs[0], p, quality(Quality::Low));
    // The request leaves at once; the simulated publisher releases the keyframe it then
    // writes at its own next timeout (a step later), and the subscriber gets it a step after.
    w.run_media(4);
    let now: Vec<u64> = w.peers[p].layers.iter().map(|l| l.keyframe_requests).collect();
    assert_eq!((now[0] - asked[0], now[1] - asked[1], now[2] - asked[2]), (1, 0, 0), "one request, for the low layer only");
    let log = w.peers[subs[0]].frame_log.as_ref().unwrap();
    assert!(log.iter().any(|r| r.frame.size == Some((320, 180))), "switched within 40 ms: {:?}", sizes(log));
    assert!(w.peers[p].layers.iter().zip(before).all(|(l, b)| l.sent > b), "every layer still sent");
}

#[test]
fn unsubscribed_and_disabled_tracks_cost_no_fan_out_and_come_back() {
    let (mut w, p, subs) = room(1);
    let s = subs[0];
    w.run_media(50);
    let track = video_track(&w, p);
    let tx = |w: &World| w.core.counters().tx_rtp;

    // Disabled: audio only is forwarded (one packet per step).
    subscribe(&mut w, s, p, TrackSettings { enabled: false, ..Default::default() });
    let before = tx(&w);
    w.run_media(100);
    assert_eq!(tx(&w) - before, 100, "only audio is forwarded while video is disabled");
    subscribe(&mut w, s, p, TrackSettings::default());
    let before = w.peers[s].frame_log.as_ref().unwrap().len();
    w.run_media(100);
    let log = w.peers[s].frame_log.as_ref().unwrap();
    assert!(log.len() > before + 50, "video resumed");
    assert!(log[before].frame.keyframe_start, "it resumes at a keyframe");

    // Unsubscribed: the m-line is stopped by renegotiation and no packet goes to it.
    let now = w.now;
    w.core.handle_command(now, Command::Unsubscribe { session: w.peers[s].session.clone(), publisher: w.peers[p].session.clone(), track });
    w.route_link_events();
    w.run_media(10);
    let before = tx(&w);
    w.run_media(100);
    assert_eq!(tx(&w) - before, 100, "only audio after unsubscribing");
    assert!(w.link.iter().any(|e| matches!(e, LinkEvent::Offer { session, .. } if *session == w.peers[s].session)), "the m-line was renegotiated away");
}

#[test]
fn auto_subscribe_off_receives_only_the_tracks_it_names() {
    let mut w = World::new();
    let p = w.join_simulcast("pub", "r", three_layers());
    let q = w.join("other", "r", true);
    let s = w.join_with("picky", "S-picky", "r", false, Subscription::Chosen);
    w.connect_all();
    w.run_media(50);
    assert_eq!(w.received_total(s), 0, "nothing without a subscription");
    subscribe(&mut w, s, p, quality(Quality::Medium));
    w.peers[s].frame_log = Some(Vec::new());
    w.run_media(100);
    assert!(w.received_total(s) > 50);
    assert_eq!(w.peers[s].received.len(), 1, "only the named track (not its audio, not the other publisher)");
    assert_eq!(sizes(w.peers[s].frame_log.as_ref().unwrap()), vec![(640, 360)]);
    let _ = q;
}

#[test]
fn bad_subscriptions_change_nothing() {
    let (mut w, p, subs) = room(1);
    let mut other = World::new();
    let _ = other.join("x", "elsewhere", true);
    let s = subs[0];
    let stranger = w.join("stranger", "other-room", true);
    w.connect_all();
    w.run_media(20);
    let session = w.peers[s].session.clone();
    let bad = [
        Command::Subscribe { session: session.clone(), publisher: w.peers[p].session.clone(), track: "nope".into(), settings: TrackSettings::default() },
        Command::Subscribe { session: session.clone(), publisher: "S-ghost".into(), track: "0".into(), settings: TrackSettings::default() },
        Command::Subscribe { session: session.clone(), publisher: w.peers[stranger].session.clone(), track: video_track(&w, stranger), settings: TrackSettings::default() },
        Command::Subscribe { session: "S-ghost".into(), publisher: w.peers[p].session.clone(), track: video_track(&w, p), settings: TrackSettings::default() },
        Command::Subscribe { session: session.clone(), publisher: session.clone(), track: "1".into(), settings: TrackSettings::default() },
        Command::Unsubscribe { session: session.clone(), publisher: w.peers[stranger].session.clone(), track: video_track(&w, stranger) },
        Command::Subscribe { session: session.clone(), publisher: w.peers[p].session.clone(), track: video_track(&w, p), settings: TrackSettings { max_width: Some(u32::MAX), max_height: Some(0), ..Default::default() } },
    ];
    for cmd in bad {
        let now = w.now;
        w.core.handle_command(now, cmd);
    }
    w.route_link_events();
    let before = w.received_total(s);
    w.run_media(100);
    assert!(w.received_total(s) >= before + 190, "still receives the publisher's audio and video");
    assert!(!w.peers[s].received.keys().any(|m| *m == Mid::from("none")));
    assert_eq!(sizes(&w.peers[s].frame_log.clone().unwrap()), vec![(1280, 720)], "an absurd size asks for the top layer, nothing worse");
}

#[test]
fn dynacast_tells_the_publisher_which_layers_are_wanted() {
    let (mut w, p, subs) = room(2);
    let wanted = |w: &World| {
        w.link.iter().rev().find_map(|e| match e {
            LinkEvent::LayersWanted { rids, .. } => Some(rids.clone()),
            _ => None,
        })
    };
    w.run_media(50);
    assert_eq!(wanted(&w), Some(vec!["h".to_string()]), "both watch the top layer");
    for &s in &subs {
        subscribe(&mut w, s, p, TrackSettings { max_width: Some(320), max_height: Some(180), ..Default::default() });
    }
    w.run_media(30);
    assert_eq!(wanted(&w), Some(vec!["l".to_string()]), "small tiles only");

    // The publisher pauses what is not wanted; subscribers keep the low layer.
    for l in &mut w.peers[p].layers {
        l.paused = l.rid.to_string() != "l";
    }
    w.run_media(200);
    let before = w.peers[subs[0]].frame_log.as_ref().unwrap().len();
    w.run_media(50);
    assert!(w.peers[subs[0]].frame_log.as_ref().unwrap().len() >= before + 45);

    // One subscriber wants the top again: it is asked for within a tick, and once the
    // publisher resumes it the subscriber climbs to it.
    subscribe(&mut w, subs[0], p, TrackSettings::default());
    w.run_media(30);
    assert_eq!(wanted(&w), Some(vec!["l".to_string(), "h".to_string()]));
    for l in &mut w.peers[p].layers {
        l.paused = l.rid.to_string() == "m";
    }
    w.run_media(150);
    let log = w.peers[subs[0]].frame_log.clone().unwrap();
    assert_eq!(sizes(&log).last(), Some(&(1280, 720)));
    assert_one_stream(&log);
}

#[test]
fn across_two_cores_each_gets_its_layer_and_only_wanted_layers_cross() {
    let mut a = World::new_core(0, 2);
    let mut b = World::new_core(1, 2);
    let p = a.join_simulcast("pub", "r", three_layers());
    shuttle(&mut [&mut a, &mut b]);
    let lo = b.join("lo", "r", false);
    let hi = b.join("hi", "r", false);
    shuttle(&mut [&mut a, &mut b]);
    connect_worlds(&mut [&mut a, &mut b]);
    for s in [lo, hi] {
        b.peers[s].frame_log = Some(Vec::new());
    }
    let track = video_track(&a, p);
    let now = b.now;
    b.core.handle_command(now, Command::Subscribe { session: "S-lo".into(), publisher: "S-pub".into(), track: track.clone(), settings: quality(Quality::Low) });
    b.route_link_events();
    // Count the layers of the packets that cross, once the wishes have settled.
    let mut crossed = [0u64; 3];
    for step in 0..200 {
        a.media_step();
        b.media_step();
        for (target, msg) in a.core.take_cross().collect::<Vec<_>>() {
            if let CrossMsg::Rtp(r) = &msg {
                if step >= 100 && r.packet.params.spec().codec == str0m::format::Codec::Vp8 {
                    crossed[usize::from(r.packet.slot)] += 1;
                }
            }
            if target == 1 {
                let now = b.now;
                b.core.handle_cross(now, msg);
            }
        }
        shuttle(&mut [&mut a, &mut b]);
    }
    assert_eq!(sizes(b.peers[lo].frame_log.as_ref().unwrap()), vec![(320, 180)]);
    assert_eq!(sizes(b.peers[hi].frame_log.as_ref().unwrap()), vec![(1280, 720)]);
    assert_one_stream(b.peers[lo].frame_log.as_ref().unwrap());
    assert!(crossed[0] >= 95 && crossed[2] >= 95, "the wanted layers cross: {crossed:?}");
    assert_eq!(crossed[1], 0, "the middle layer, wanted by no one there, stays home: {crossed:?}");
}

/// Steps until every one of `subs` has received a keyframe of `size` since `from` (log
/// lengths), and returns how long that took, or `None` after `limit`.
fn time_until_size(w: &mut World, subs: &[usize], from: &[usize], size: (u16, u16), limit: Duration) -> Option<Duration> {
    let start = w.now;
    while w.now.duration_since(start) <= limit {
        let done = subs.iter().zip(from).all(|(s, f)| w.peers[*s].frame_log.as_ref().is_some_and(|l| l[*f..].iter().any(|r| r.frame.size == Some(size))));
        if done {
            return Some(w.now.duration_since(start));
        }
        w.media_step();
    }
    None
}

#[test]
fn a_scripted_estimate_lowers_layers_pauses_what_does_not_fit_and_recovers() {
    let mut w = World::new();
    let p1 = w.join_simulcast("p1", "r", three_layers());
    let p2 = w.join_simulcast("p2", "r", three_layers());
    let s = w.join("viewer", "r", false);
    w.connect_all();
    w.run_media(150);
    w.peers[s].frame_log = Some(Vec::new());
    let session = w.peers[s].session.clone();
    let paused = |w: &World| {
        w.link.iter().filter_map(|e| match e {
            LinkEvent::TrackPaused { session: who, paused, .. } if *who == w.peers[s].session => Some(*paused),
            _ => None,
        }).collect::<Vec<bool>>()
    };
    let now = w.now;
    w.core.set_estimate(now, &session, 10_000_000);
    w.run_media(100);
    assert_eq!(sizes(w.peers[s].frame_log.as_ref().unwrap()), vec![(1280, 720)], "room for both top layers");

    // 1.3 Mbit/s: audio first (2 × 64k), then both low layers, then both raised to the middle.
    let mark = w.peers[s].frame_log.as_ref().unwrap().len();
    let now = w.now;
    w.core.set_estimate(now, &session, 1_300_000);
    let took = time_until_size(&mut w, &[s], &[mark], (640, 360), Duration::from_secs(2)).expect("downgraded within 2 s");
    assert!(took <= Duration::from_millis(100), "downgrade took {took:?}");
    w.run_media(100);
    let log = w.peers[s].frame_log.clone().unwrap();
    assert!(log[log.len() - 50..].iter().all(|r| r.frame.size.is_none_or(|z| z == (640, 360))), "both on the middle layer");

    // 250 kbit/s: not even a low layer fits beside the audio: video paused, audio goes on.
    let audio_before = w.received_total(s) - w.peers[s].frame_log.as_ref().unwrap().len() as u64;
    let now = w.now;
    w.core.set_estimate(now, &session, 250_000);
    w.run_media(10);
    let video_before = w.peers[s].frame_log.as_ref().unwrap().len();
    w.run_media(100);
    assert_eq!(w.peers[s].frame_log.as_ref().unwrap().len(), video_before, "no video while paused");
    let audio_after = w.received_total(s) - w.peers[s].frame_log.as_ref().unwrap().len() as u64;
    assert!(audio_after - audio_before >= 200, "audio is never starved: {}", audio_after - audio_before);
    assert_eq!(paused(&w), vec![true, true], "the client is told of both pauses");

    // Room again: video resumes at a keyframe and climbs back to the top.
    let mark = w.peers[s].frame_log.as_ref().unwrap().len();
    let now = w.now;
    w.core.set_estimate(now, &session, 10_000_000);
    // A raise waits until it has been possible for RAISE_HOLD.
    let took = time_until_size(&mut w, &[s], &[mark], (1280, 720), RAISE_HOLD + Duration::from_secs(2)).expect("back to the top layer");
    assert!(took >= RAISE_HOLD, "the raise waited for the hold: {took:?}");
    assert_eq!(paused(&w), vec![true, true, false, false]);
    let _ = (p1, p2);
}

/// A three-layer publisher whose layers send temporal layers (100 frames a second each, a
/// media step being 10 ms: 25 of TID 0, 25 of TID 1, 50 of TID 2) and one viewer, connected
/// and measured for a window (1 s). Returns the world, the publisher and the viewer.
fn temporal_room() -> (World, usize, usize) {
    let mut w = World::new();
    let mut layers = three_layers();
    for l in &mut layers {
        l.temporal = true;
    }
    let p = w.join_simulcast("pub", "r", layers);
    let s = w.join("viewer", "r", false);
    w.connect_all();
    w.run_media(150);
    (w, p, s)
}

#[test]
fn when_even_the_low_layer_does_not_fit_its_base_temporal_layer_goes_on_without_gaps() {
    let (mut w, _p, s) = temporal_room();
    let session = w.peers[s].session.clone();
    // Audio 64k, then the low layer (160 kbit/s measured) does not fit, its half does.
    let now = w.now;
    w.core.set_estimate(now, &session, 64_000 + 100_000);
    w.run_media(50);
    w.peers[s].frame_log = Some(Vec::new());
    w.run_media(200);
    let log = w.peers[s].frame_log.clone().unwrap();
    assert!(log.iter().all(|r| r.frame.vp8.and_then(|f| f.tid) == Some(0)), "only the base temporal layer");
    assert!((45..=55).contains(&log.len()), "a quarter of 200 frames: {}", log.len());
    assert_eq!(sizes(&log), vec![(320, 180)]);
    assert_one_stream(&log);
    let paused = w.link.iter().any(|e| matches!(e, LinkEvent::TrackPaused { paused: true, .. }));
    assert!(!paused, "reduced, not paused");

    // Room for the whole low layer: every temporal layer again, still one stream.
    let now = w.now;
    w.core.set_estimate(now, &session, 64_000 + 200_000);
    // 50 steps after the raise hold (a media step is 10 ms).
    w.run_media(50 + RAISE_HOLD.as_millis() as usize / 10);
    let mark = w.peers[s].frame_log.as_ref().unwrap().len();
    w.run_media(100);
    let log = w.peers[s].frame_log.clone().unwrap();
    assert!(log.len() - mark >= 95, "all frames again: {}", log.len() - mark);
    assert_one_stream(&log);
}

#[test]
fn a_frame_rate_cap_leaves_out_the_temporal_layers_above_it_without_gaps() {
    let (mut w, p, s) = temporal_room();
    let frames_with = |w: &mut World, settings: TrackSettings| {
        subscribe(w, s, p, settings);
        // The cap applies at the next layer choice (every 250 ms) and at a safe frame.
        w.run_media(60);
        w.peers[s].frame_log = Some(Vec::new());
        w.run_media(200);
        w.peers[s].frame_log.clone().unwrap()
    };
    let low = |max_fps| TrackSettings { max_fps, ..quality(Quality::Low) };
    let log = frames_with(&mut w, low(Some(50)));
    assert!(log.iter().all(|r| r.frame.vp8.and_then(|f| f.tid).is_some_and(|t| t <= 1)), "TID 0 and 1 only");
    assert!((95..=105).contains(&log.len()), "half of 200 frames: {}", log.len());
    assert_one_stream(&log);
    let log = frames_with(&mut w, low(Some(20)));
    assert!(log.iter().all(|r| r.frame.vp8.and_then(|f| f.tid) == Some(0)), "the base layer only");
    assert!((45..=55).contains(&log.len()), "a quarter of 200 frames: {}", log.len());
    assert_one_stream(&log);
    let log = frames_with(&mut w, low(None));
    assert!(log.len() >= 195, "all frames again: {}", log.len());
    assert_one_stream(&log);
    assert_eq!(sizes(&log), vec![(320, 180)], "the layer did not change");
}
