//! The routing parser sees every datagram from an unknown address.
#![no_main]
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let _ = sfu::core::stun::is_stun(data);
    if let Ok(u) = sfu::core::stun::local_ufrag(data) {
        assert!(!u.is_empty() && !u.contains(':'));
    }
});
