//! Arbitrary bytes through the STUN and ChannelData decoders: no panic, and a decoded
//! message's attributes stay inside the datagram.
#![no_main]

use libfuzzer_sys::fuzz_target;
use relay::stun;

fuzz_target!(|data: &[u8]| {
    let _ = stun::channel_data(data);
    let _ = stun::stream_frame_len(data);
    if let Ok(m) = stun::decode(data) {
        let _ = m.unknown_required();
        let _ = m.verify(b"key");
        for t in [stun::attr::XOR_PEER_ADDRESS, stun::attr::XOR_MAPPED_ADDRESS, stun::attr::XOR_RELAYED_ADDRESS] {
            if let Some(v) = m.get(t) {
                let _ = m.xor_addr(v);
            }
        }
        let _ = m.text(stun::attr::USERNAME);
        let _ = m.u32(stun::attr::LIFETIME);
    }
});
