//! The RED (RFC 2198) reader runs on every RED packet a publisher sends: block headers and
//! lengths come from the network. Any bytes must give blocks inside the payload or an
//! error, never a panic or an out-of-bounds read; the payload-type mapping keeps the length.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::red;

fuzz_target!(|data: &[u8]| {
    if let Ok(blocks) = red::blocks(data) {
        for b in &blocks {
            assert!(b.data.start <= b.data.end && b.data.end <= data.len());
        }
        assert!(red::primary(data).is_ok());
        let mapped = red::map_block_pt(data, 111, 63).expect("parsed once already");
        assert_eq!(mapped.len(), data.len());
    }
});
