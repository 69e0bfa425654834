//! Arbitrary SDP offers through a core's join (str0m's parser, then our negotiation), and
//! arbitrary answers to a pending renegotiation: a typed refusal or a session, never a panic.
#![no_main]

use std::time::Instant;

use libfuzzer_sys::fuzz_target;
use link::{Command, Grants, Subscription};
use media_plane::sfu::{Core, CoreConfig, BWE_INITIAL, NACK_HISTORY};

fuzz_target!(|data: &[u8]| {
    let Ok(sdp) = std::str::from_utf8(data) else { return };
    let addr = "10.0.0.1:5000".parse().expect("literal address");
    let mut core = Core::new(CoreConfig {
        index: 0,
        local: addr,
        candidates: vec![addr],
        capacity: 10,
        connect_timeout: std::time::Duration::from_secs(30),
        cores: 1,
        nack_history: NACK_HISTORY,
        bwe_initial: BWE_INITIAL,
    });
    let now = Instant::now();
    let join = |session: &str, offer: &str| Command::Join {
        req: 1,
        core: 0,
        room: "r".into(),
        session: session.into(),
        identity: session.into(),
        grants: Grants { publish: true, subscribe: true },
        subscription: Subscription::All,
        video: Default::default(),
        offer: offer.into(),
    };
    core.handle_command(now, join("S-fuzz", sdp));
    core.handle_command(now, Command::Answer { session: "S-fuzz".into(), sdp: sdp.into() });
    let _ = core.take_events().count();
});
