//! The VP9 payload descriptor reader runs on every VP9 packet a publisher sends (SVC layer
//! indices, picture ids, the scalability structure): any bytes must give a descriptor that
//! lies inside the payload or an error, never a panic or an out-of-bounds read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::vp9;

fuzz_target!(|data: &[u8]| {
    if let Ok(d) = vp9::parse(data) {
        assert!(d.len <= data.len());
        assert!(d.sid() < 8 && d.tid() < 8);
        assert!(d.resolutions.len() <= 8);
    }
});
