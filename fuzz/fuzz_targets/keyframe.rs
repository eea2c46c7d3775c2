//! The simulcast key-frame detector reads the start of every video RTP payload of a
//! simulcast layer (VP8/VP9 descriptors, H.264 NAL headers and STAP-A lengths, AV1
//! aggregation headers): any bytes must give an answer, never a panic or an out-of-bounds read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use str0m::format::Codec;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1, Codec::Opus] {
        let _ = sfu::core::simulcast::is_keyframe_start(codec, data);
    }
});
