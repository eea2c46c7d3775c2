//! The load generator's Engine.IO / Socket.IO frame decoder (`loadtest/src/sio/frame.rs`,
//! compiled here as it is: it depends on nothing else in the crate) with arbitrary text, for
//! the main namespace and `/study`: errors, never panics.
#![no_main]
use libfuzzer_sys::fuzz_target;

#[allow(dead_code)]
#[path = "../../loadtest/src/sio/frame.rs"]
mod frame;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    let _ = frame::parse_packet("/study", text);
    let _ = frame::parse_packet("/", text);
});
