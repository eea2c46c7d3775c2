//! The picture-size readers run on the key-frame start of every simulcast layer a
//! publisher sends (H.264 SPS with Exp-Golomb codes, emulation prevention, scaling lists
//! and cropping; VP9 descriptors and uncompressed headers; VP8 key frame headers): any
//! bytes must give a size or an error, never a panic, an overflow or an out-of-bounds read.
#![no_main]
use libfuzzer_sys::fuzz_target;
use sfu::core::frame_size;
use str0m::format::Codec;

fuzz_target!(|data: &[u8]| {
    for codec in [Codec::Vp8, Codec::Vp9, Codec::H264, Codec::Av1] {
        if let Ok(Some((w, h))) = frame_size::frame_size(codec, data) {
            assert!(w > 0 && h > 0, "{codec:?} gave an empty picture");
        }
    }
    // The bare parsers too: an SPS without its NAL header, a VP9 frame without descriptor.
    if let Ok((w, h)) = frame_size::h264_sps(data) {
        assert!(w > 0 && h > 0 && w <= 16384 && h <= 32768);
    }
    let _ = frame_size::vp9_frame(data);
});
