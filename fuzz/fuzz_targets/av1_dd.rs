//! The AV1 dependency descriptor reader runs on every AV1 packet a publisher sends that
//! carries the header extension (`sfu/src/core/av1_dd.rs`), against the template structure
//! an earlier descriptor of the stream sent: any bytes must give a descriptor whose layers
//! lie in range or an error, never a panic. After a first byte saying where to cut, the
//! input is two descriptors: one read on its own (it may carry a structure), then one read
//! against that structure, as the per-stream state (`av1_svc.rs`) does.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::av1_dd;
use sfu::core::av1_svc::Av1Stream;

fuzz_target!(|data: &[u8]| {
    let Some((&cut, rest)) = data.split_first() else {
        return;
    };
    let (first, second) = rest.split_at(usize::from(cut).min(rest.len()));
    let known = match av1_dd::parse(first, None) {
        Ok(d) => {
            assert!(d.spatial <= av1_dd::MAX_LAYER_ID && d.temporal <= av1_dd::MAX_LAYER_ID);
            d.structure
        }
        Err(_) => None,
    };
    if let Ok(d) = av1_dd::parse(second, known.as_ref()) {
        assert!(d.spatial <= av1_dd::MAX_LAYER_ID && d.temporal <= av1_dd::MAX_LAYER_ID);
        assert!(d.decode_targets <= av1_dd::MAX_DECODE_TARGETS);
    }
    let mut stream = Av1Stream::default();
    for part in [first, second] {
        if let Ok(f) = stream.frame(part) {
            assert!(f.sid <= av1_dd::MAX_LAYER_ID && f.tid <= av1_dd::MAX_LAYER_ID);
        }
    }
});
