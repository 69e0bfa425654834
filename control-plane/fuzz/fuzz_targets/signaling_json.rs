//! Arbitrary bytes as the JSON a client sends on `/ws` and a node sends on the control link:
//! a typed message or a typed error, never a panic; what parses serializes and parses back
//! to the same message.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(msg) = serde_json::from_slice::<signaling::ClientMsg>(data) {
        let text = serde_json::to_string(&msg).expect("a parsed message serializes");
        let again: signaling::ClientMsg = serde_json::from_str(&text).expect("and parses again");
        assert_eq!(again, msg);
    }
    let _ = serde_json::from_slice::<signaling::ServerMsg>(data);
    let _ = serde_json::from_slice::<link::Event>(data);
    let _ = serde_json::from_slice::<link::Command>(data);
});
