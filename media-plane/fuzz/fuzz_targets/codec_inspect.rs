//! Arbitrary payloads through what forwarding and the demux read of each packet: no panic, and a VP8
//! descriptor that str0m accepts can always be patched with the munger's values.
#![no_main]

use libfuzzer_sys::fuzz_target;
use media_plane::codec::{inspect, VideoCodec};
use media_plane::demux;
use media_plane::vp8munge::Vp8Munger;

fuzz_target!(|data: &[u8]| {
    let _ = inspect(VideoCodec::H264, data);
    let _ = demux::is_stun(data);
    let _ = demux::stun_local_ufrag(data);
    let _ = demux::stun_ufrags(data);
    let _ = demux::binding_integrity_ok(data, b"fuzz-password");
    let info = inspect(VideoCodec::Vp8, data);
    if let Some(f) = info.vp8 {
        let mut m = Vp8Munger::default();
        m.map(&f);
        m.switch_source();
        let out = m.map(&f);
        if let (Ok(d), Some(p)) = (str0m::rtp::Vp8Descriptor::parse(data), out.picture_id) {
            let _ = d.patch().picture_id(p).build();
        }
    }
});
