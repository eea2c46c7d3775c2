//! RFC 2198 redundant audio (RED), as Chrome sends it for Opus (`red/48000/2`, fmtp
//! `111/111`): each packet carries the current Opus frame (the *primary*, last block) after
//! one or more earlier frames (redundant blocks), so a receiver can fill a single loss
//! without a retransmission, which audio has no time for.
//!
//! The SFU does not decode audio. A subscriber whose answer accepted `red` gets the RED
//! packet as is (only the block payload types are mapped to its own); one that did not gets
//! the primary block alone as a plain Opus packet ([`primary`]). The header layout read
//! here comes from the network, so every length is checked: bad input is an error, never a
//! panic or an out-of-bounds read (fuzzed: `fuzz/fuzz_targets/red.rs`).
//!
//! Block header (RFC 2198 §3): `F(1) PT(7)` then, when F is set (more blocks follow),
//! `timestamp offset(14) block length(10)`; the last header is one byte (F clear) and its
//! block, the primary, runs to the end of the payload.

use std::ops::Range;

/// Why a RED payload could not be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedError {
    /// The payload ends inside the block headers.
    TruncatedHeader,
    /// The redundant block lengths add up to more than the payload holds.
    BlockTooLong,
    /// More blocks than a sender would use (libwebrtc sends at most a few).
    TooManyBlocks,
}

impl std::fmt::Display for RedError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            RedError::TruncatedHeader => "RED payload ends inside its block headers",
            RedError::BlockTooLong => "RED block lengths exceed the payload",
            RedError::TooManyBlocks => "RED payload has too many blocks",
        })
    }
}

impl std::error::Error for RedError {}

/// Most redundant blocks accepted in one packet (Chrome sends one or two).
pub const MAX_REDUNDANT_BLOCKS: usize = 16;

/// One block of a RED payload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Block {
    /// Payload type of the block's data (the wrapped codec, e.g. Opus 111).
    pub pt: u8,
    /// How far back (RTP timestamp units) the block's frame is; 0 for the primary.
    pub ts_offset: u16,
    /// Where the block's data sits in the payload.
    pub data: Range<usize>,
    /// Offset of this block's header byte holding F and PT.
    pub header_at: usize,
}

/// Every block of a RED payload, redundant ones first, the primary last.
pub fn blocks(payload: &[u8]) -> Result<Vec<Block>, RedError> {
    let mut heads: Vec<(u8, u16, usize, usize)> = Vec::new();
    let mut at = 0;
    loop {
        let &b0 = payload.get(at).ok_or(RedError::TruncatedHeader)?;
        let pt = b0 & 0x7f;
        if b0 & 0x80 == 0 {
            heads.push((pt, 0, 0, at));
            at += 1;
            break;
        }
        if heads.len() == MAX_REDUNDANT_BLOCKS {
            return Err(RedError::TooManyBlocks);
        }
        let h = payload.get(at..at + 4).ok_or(RedError::TruncatedHeader)?;
        let ts_offset = (u16::from(h[1]) << 6) | (u16::from(h[2]) >> 2);
        let len = (usize::from(h[2] & 0x03) << 8) | usize::from(h[3]);
        heads.push((pt, ts_offset, len, at));
        at += 4;
    }
    let mut out = Vec::with_capacity(heads.len());
    let last = heads.len() - 1;
    for (i, (pt, ts_offset, len, header_at)) in heads.into_iter().enumerate() {
        let end = if i == last {
            payload.len()
        } else {
            at.checked_add(len)
                .filter(|e| *e <= payload.len())
                .ok_or(RedError::BlockTooLong)?
        };
        out.push(Block {
            pt,
            ts_offset,
            data: at..end,
            header_at,
        });
        at = end;
    }
    Ok(out)
}

/// The primary block (the current frame): its payload type and data.
pub fn primary(payload: &[u8]) -> Result<(u8, &[u8]), RedError> {
    let bs = blocks(payload)?;
    // Invariant: `blocks` returns at least the primary on success.
    let p = bs.last().expect("a primary block");
    Ok((p.pt, &payload[p.data.clone()]))
}

/// The payload with every block payload type `from` changed to `to` (the subscriber calls
/// the wrapped codec by another number); the F bits and the data are kept.
pub fn map_block_pt(payload: &[u8], from: u8, to: u8) -> Result<Vec<u8>, RedError> {
    let bs = blocks(payload)?;
    let mut out = payload.to_vec();
    for b in bs.iter().filter(|b| b.pt == from) {
        out[b.header_at] = (out[b.header_at] & 0x80) | (to & 0x7f);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A RED payload: redundant blocks (pt, ts offset, data), then the primary (pt, data).
    fn red(redundant: &[(u8, u16, &[u8])], primary: (u8, &[u8])) -> Vec<u8> {
        let mut v = Vec::new();
        for (pt, off, data) in redundant {
            let len = data.len() as u16;
            v.push(0x80 | pt);
            v.push((off >> 6) as u8);
            v.push(((off & 0x3f) << 2) as u8 | (len >> 8) as u8);
            v.push(len as u8);
        }
        v.push(primary.0);
        for (_, _, data) in redundant {
            v.extend_from_slice(data);
        }
        v.extend_from_slice(primary.1);
        v
    }

    #[test]
    fn reads_blocks_and_primary() {
        let long = [7u8; 300]; // a length above 255 uses the 2 high bits
        let p = red(&[(111, 1920, &long), (111, 960, b"prev")], (111, b"now!"));
        let bs = blocks(&p).unwrap();
        assert_eq!(bs.len(), 3);
        assert_eq!((bs[0].pt, bs[0].ts_offset), (111, 1920));
        assert_eq!(&p[bs[0].data.clone()], &long[..]);
        assert_eq!(
            (bs[1].ts_offset, &p[bs[1].data.clone()]),
            (960, &b"prev"[..])
        );
        assert_eq!(primary(&p).unwrap(), (111, &b"now!"[..]));
        // No redundancy at all (the first packet of a talk spurt): one byte header.
        assert_eq!(primary(&[111, 1, 2, 3]).unwrap(), (111, &[1u8, 2, 3][..]));
        // An empty primary is legal (DTX comfort packets can be tiny).
        assert_eq!(primary(&[111]).unwrap(), (111, &[][..]));
    }

    #[test]
    fn malformed_payloads_are_errors() {
        assert_eq!(primary(&[]), Err(RedError::TruncatedHeader));
        // F set but the 4-byte header is cut.
        assert_eq!(primary(&[0x80 | 111, 0, 0]), Err(RedError::TruncatedHeader));
        // Headers never end (every byte has F set).
        assert_eq!(
            primary(&[0xef, 0, 0, 0, 0xef, 0, 0, 0]),
            Err(RedError::TruncatedHeader)
        );
        // A redundant block longer than what follows.
        let mut p = red(&[(111, 960, b"abcd")], (111, b"xy"));
        p[3] = 200;
        assert_eq!(primary(&p), Err(RedError::BlockTooLong));
        // Too many blocks.
        let many: Vec<u8> = (0..=MAX_REDUNDANT_BLOCKS)
            .flat_map(|_| [0x80 | 111, 0, 0, 0])
            .chain([111])
            .collect();
        assert_eq!(primary(&many), Err(RedError::TooManyBlocks));
    }

    #[test]
    fn maps_block_payload_types() {
        let p = red(&[(111, 960, b"prev")], (111, b"now"));
        let q = map_block_pt(&p, 111, 109).unwrap();
        assert_eq!(q[0], 0x80 | 109);
        assert_eq!(q[4], 109);
        assert_eq!(primary(&q).unwrap(), (109, &b"now"[..]));
        assert_eq!(&q[5..], &p[5..], "data untouched");
        assert_eq!(map_block_pt(&[0x80], 1, 2), Err(RedError::TruncatedHeader));
    }
}
