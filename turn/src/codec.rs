//! STUN (RFC 8489) messages and TURN (RFC 8656) ChannelData, parsed in place.
//!
//! Why our own codec: the relay's hot path (ChannelData and Send/Data indications) must
//! read a datagram without allocating and hand the payload on as a borrowed slice. The
//! parser here validates the framing once ([`Message::parse`]) and then looks attributes
//! up by scanning the borrowed bytes; the writer ([`Writer`]) appends to a reused buffer.
//! MESSAGE-INTEGRITY (HMAC-SHA1) and FINGERPRINT (CRC-32) are computed over the bytes
//! as the RFC defines them. Nothing here panics on any input (fuzz target `turn_message`).

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

use hmac::{Hmac, Mac};
use sha1::Sha1;

/// The STUN magic cookie.
pub const MAGIC: u32 = 0x2112_A442;
const FINGERPRINT_XOR: u32 = 0x5354_554E;

/// STUN methods used by TURN.
pub mod method {
    /// Binding.
    pub const BINDING: u16 = 0x001;
    /// Allocate.
    pub const ALLOCATE: u16 = 0x003;
    /// Refresh.
    pub const REFRESH: u16 = 0x004;
    /// Send (indication).
    pub const SEND: u16 = 0x006;
    /// Data (indication).
    pub const DATA: u16 = 0x007;
    /// CreatePermission.
    pub const CREATE_PERMISSION: u16 = 0x008;
    /// ChannelBind.
    pub const CHANNEL_BIND: u16 = 0x009;
}

/// Attribute types.
pub mod attr {
    /// MAPPED-ADDRESS.
    pub const MAPPED_ADDRESS: u16 = 0x0001;
    /// USERNAME.
    pub const USERNAME: u16 = 0x0006;
    /// MESSAGE-INTEGRITY.
    pub const MESSAGE_INTEGRITY: u16 = 0x0008;
    /// ERROR-CODE.
    pub const ERROR_CODE: u16 = 0x0009;
    /// UNKNOWN-ATTRIBUTES.
    pub const UNKNOWN_ATTRIBUTES: u16 = 0x000A;
    /// CHANNEL-NUMBER.
    pub const CHANNEL_NUMBER: u16 = 0x000C;
    /// LIFETIME.
    pub const LIFETIME: u16 = 0x000D;
    /// XOR-PEER-ADDRESS.
    pub const XOR_PEER_ADDRESS: u16 = 0x0012;
    /// DATA.
    pub const DATA: u16 = 0x0013;
    /// REALM.
    pub const REALM: u16 = 0x0014;
    /// NONCE.
    pub const NONCE: u16 = 0x0015;
    /// XOR-RELAYED-ADDRESS.
    pub const XOR_RELAYED_ADDRESS: u16 = 0x0016;
    /// REQUESTED-ADDRESS-FAMILY.
    pub const REQUESTED_ADDRESS_FAMILY: u16 = 0x0017;
    /// EVEN-PORT.
    pub const EVEN_PORT: u16 = 0x0018;
    /// REQUESTED-TRANSPORT.
    pub const REQUESTED_TRANSPORT: u16 = 0x0019;
    /// DONT-FRAGMENT.
    pub const DONT_FRAGMENT: u16 = 0x001A;
    /// MESSAGE-INTEGRITY-SHA256.
    pub const MESSAGE_INTEGRITY_SHA256: u16 = 0x001C;
    /// XOR-MAPPED-ADDRESS.
    pub const XOR_MAPPED_ADDRESS: u16 = 0x0020;
    /// RESERVATION-TOKEN.
    pub const RESERVATION_TOKEN: u16 = 0x0022;
    /// PRIORITY (ICE).
    pub const PRIORITY: u16 = 0x0024;
    /// USE-CANDIDATE (ICE).
    pub const USE_CANDIDATE: u16 = 0x0025;
    /// SOFTWARE.
    pub const SOFTWARE: u16 = 0x8022;
    /// FINGERPRINT.
    pub const FINGERPRINT: u16 = 0x8028;

    /// Comprehension-required attributes this server understands (others in a request
    /// are answered with 420).
    pub fn understood(t: u16) -> bool {
        t >= 0x8000
            || matches!(
                t,
                MAPPED_ADDRESS
                    | USERNAME
                    | MESSAGE_INTEGRITY
                    | ERROR_CODE
                    | UNKNOWN_ATTRIBUTES
                    | CHANNEL_NUMBER
                    | LIFETIME
                    | XOR_PEER_ADDRESS
                    | DATA
                    | REALM
                    | NONCE
                    | XOR_RELAYED_ADDRESS
                    | REQUESTED_ADDRESS_FAMILY
                    | EVEN_PORT
                    | REQUESTED_TRANSPORT
                    | DONT_FRAGMENT
                    | MESSAGE_INTEGRITY_SHA256
                    | XOR_MAPPED_ADDRESS
                    | RESERVATION_TOKEN
                    | PRIORITY
                    | USE_CANDIDATE
            )
    }
}

/// Message class.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Class {
    /// Request.
    Request,
    /// Indication.
    Indication,
    /// Success response.
    Success,
    /// Error response.
    Error,
}

impl Class {
    fn bits(self) -> u16 {
        match self {
            Class::Request => 0,
            Class::Indication => 1,
            Class::Success => 2,
            Class::Error => 3,
        }
    }
}

/// Why bytes are not a valid STUN message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ParseError {
    /// Not STUN at all (too short, wrong first bits, wrong cookie, bad length): drop it.
    NotStun,
    /// A STUN header but broken attributes: answer 400 if it is a request.
    BadAttributes,
    /// FINGERPRINT present and wrong: drop silently (RFC 8489 §7.3).
    BadFingerprint,
}

/// What kind of datagram arrived on a TURN client port.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// A STUN message (first two bits 00).
    Stun,
    /// TURN ChannelData (first two bits 01).
    ChannelData,
    /// Anything else.
    Other,
}

/// Classify by the first byte.
pub fn kind(data: &[u8]) -> Kind {
    match data.first().map(|b| b >> 6) {
        Some(0) => Kind::Stun,
        Some(1) => Kind::ChannelData,
        _ => Kind::Other,
    }
}

/// A TCP/TLS stream that does not start with STUN or ChannelData.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotTurnFraming;

/// How many bytes the frame at the start of a TCP stream occupies, if its header is
/// complete: STUN = 20 + length; ChannelData = 4 + length rounded up to 4 (RFC 8656 §12.5).
/// `Err` when the stream is not TURN framing at all.
pub fn stream_frame_len(buf: &[u8]) -> Result<Option<usize>, NotTurnFraming> {
    if buf.len() < 4 {
        return Ok(None);
    }
    let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
    match kind(buf) {
        Kind::Stun => Ok(Some(20 + len)),
        Kind::ChannelData => Ok(Some(4 + len.div_ceil(4) * 4)),
        Kind::Other => Err(NotTurnFraming),
    }
}

/// A ChannelData message, borrowed.
#[derive(Debug, Clone, Copy)]
pub struct ChannelData<'a> {
    /// Channel number (0x4000..=0x7FFF when valid).
    pub channel: u16,
    /// Application data.
    pub data: &'a [u8],
}

impl<'a> ChannelData<'a> {
    /// Parse (trailing padding allowed).
    pub fn parse(buf: &'a [u8]) -> Option<Self> {
        if buf.len() < 4 || kind(buf) != Kind::ChannelData {
            return None;
        }
        let channel = u16::from_be_bytes([buf[0], buf[1]]);
        let len = usize::from(u16::from_be_bytes([buf[2], buf[3]]));
        let data = buf.get(4..4 + len)?;
        Some(ChannelData { channel, data })
    }

    /// Write a ChannelData frame into `out` (cleared first); `pad` rounds the frame up to
    /// a multiple of 4 (required over TCP/TLS).
    pub fn write(out: &mut Vec<u8>, channel: u16, data: &[u8], pad: bool) {
        out.clear();
        out.extend_from_slice(&channel.to_be_bytes());
        out.extend_from_slice(&(data.len() as u16).to_be_bytes());
        out.extend_from_slice(data);
        if pad {
            while !out.len().is_multiple_of(4) {
                out.push(0);
            }
        }
    }
}

/// A validated STUN message, borrowing the datagram.
#[derive(Debug, Clone, Copy)]
pub struct Message<'a> {
    raw: &'a [u8],
    /// Method (12 bits).
    pub method: u16,
    /// Class.
    pub class: Class,
    /// Transaction id.
    pub txid: [u8; 12],
    /// Offset of the MESSAGE-INTEGRITY attribute header, if present.
    integrity_at: Option<usize>,
    /// End of the attributes that count (everything after MESSAGE-INTEGRITY but
    /// FINGERPRINT is ignored, RFC 8489 §14.5).
    attrs_end: usize,
}

impl<'a> Message<'a> {
    /// Parse and validate framing, attribute lengths and FINGERPRINT.
    pub fn parse(raw: &'a [u8]) -> Result<Self, ParseError> {
        if raw.len() < 20 || kind(raw) != Kind::Stun {
            return Err(ParseError::NotStun);
        }
        let t = u16::from_be_bytes([raw[0], raw[1]]);
        let len = usize::from(u16::from_be_bytes([raw[2], raw[3]]));
        let cookie = u32::from_be_bytes([raw[4], raw[5], raw[6], raw[7]]);
        if cookie != MAGIC || len % 4 != 0 || raw.len() != 20 + len {
            return Err(ParseError::NotStun);
        }
        let method = (t & 0x000F) | ((t & 0x00E0) >> 1) | ((t & 0x3E00) >> 2);
        let class = match ((t >> 4) & 1) | ((t >> 7) & 2) {
            0 => Class::Request,
            1 => Class::Indication,
            2 => Class::Success,
            _ => Class::Error,
        };
        let mut txid = [0u8; 12];
        txid.copy_from_slice(&raw[8..20]);
        let mut integrity_at = None;
        let mut attrs_end = raw.len();
        let mut pos = 20;
        while pos < raw.len() {
            let Some(h) = raw.get(pos..pos + 4) else {
                return Err(ParseError::BadAttributes);
            };
            let at = u16::from_be_bytes([h[0], h[1]]);
            let alen = usize::from(u16::from_be_bytes([h[2], h[3]]));
            let next = pos + 4 + alen.div_ceil(4) * 4;
            if next > raw.len() {
                return Err(ParseError::BadAttributes);
            }
            if at == attr::FINGERPRINT {
                if alen != 4 || next != raw.len() {
                    return Err(ParseError::BadAttributes);
                }
                let got =
                    u32::from_be_bytes([raw[pos + 4], raw[pos + 5], raw[pos + 6], raw[pos + 7]]);
                if got != fingerprint(raw, pos) {
                    return Err(ParseError::BadFingerprint);
                }
                if integrity_at.is_none() {
                    attrs_end = pos;
                }
            } else if integrity_at.is_none() && at == attr::MESSAGE_INTEGRITY {
                if alen != 20 {
                    return Err(ParseError::BadAttributes);
                }
                integrity_at = Some(pos);
                attrs_end = next;
            }
            pos = next;
        }
        Ok(Message {
            raw,
            method,
            class,
            txid,
            integrity_at,
            attrs_end,
        })
    }

    /// The raw bytes.
    pub fn raw(&self) -> &'a [u8] {
        self.raw
    }

    /// Iterate `(type, value)` of the attributes that count.
    pub fn attrs(&self) -> impl Iterator<Item = (u16, &'a [u8])> + 'a {
        let raw = self.raw;
        let end = self.attrs_end;
        let mut pos = 20;
        std::iter::from_fn(move || {
            if pos + 4 > end {
                return None;
            }
            let at = u16::from_be_bytes([raw[pos], raw[pos + 1]]);
            let alen = usize::from(u16::from_be_bytes([raw[pos + 2], raw[pos + 3]]));
            let v = raw.get(pos + 4..pos + 4 + alen)?;
            pos += 4 + alen.div_ceil(4) * 4;
            Some((at, v))
        })
    }

    /// The first attribute of type `t`.
    pub fn get(&self, t: u16) -> Option<&'a [u8]> {
        self.attrs().find(|(at, _)| *at == t).map(|(_, v)| v)
    }

    /// Comprehension-required attribute types not understood (for 420).
    pub fn unknown_required(&self) -> impl Iterator<Item = u16> + 'a {
        self.attrs()
            .map(|(t, _)| t)
            .filter(|t| !attr::understood(*t))
    }

    /// A UTF-8 text attribute.
    pub fn text(&self, t: u16) -> Option<&'a str> {
        self.get(t).and_then(|v| std::str::from_utf8(v).ok())
    }

    /// A 32-bit attribute (LIFETIME).
    pub fn u32(&self, t: u16) -> Option<u32> {
        let v = self.get(t)?;
        (v.len() == 4).then(|| u32::from_be_bytes([v[0], v[1], v[2], v[3]]))
    }

    /// An XOR-*-ADDRESS attribute. `Some(None)`: present but malformed.
    pub fn xor_addr(&self, t: u16) -> Option<Option<SocketAddr>> {
        self.get(t).map(|v| decode_xor_addr(v, &self.txid))
    }

    /// All XOR-PEER-ADDRESS attributes (CreatePermission may carry several).
    pub fn xor_addrs(&self, t: u16) -> impl Iterator<Item = Option<SocketAddr>> + 'a {
        let txid = self.txid;
        self.attrs()
            .filter(move |(at, _)| *at == t)
            .map(move |(_, v)| decode_xor_addr(v, &txid))
    }

    /// Whether MESSAGE-INTEGRITY is present.
    pub fn has_integrity(&self) -> bool {
        self.integrity_at.is_some()
    }

    /// Check MESSAGE-INTEGRITY (HMAC-SHA1 keyed with `key`). False when absent.
    pub fn check_integrity(&self, key: &[u8]) -> bool {
        let Some(at) = self.integrity_at else {
            return false;
        };
        let Ok(mut mac) = Hmac::<Sha1>::new_from_slice(key) else {
            return false;
        };
        // The header's length field as if MESSAGE-INTEGRITY were the last attribute.
        let len = (at + 24 - 20) as u16;
        mac.update(&self.raw[0..2]);
        mac.update(&len.to_be_bytes());
        mac.update(&self.raw[4..at]);
        mac.verify_slice(&self.raw[at + 4..at + 24]).is_ok()
    }
}

fn decode_xor_addr(v: &[u8], txid: &[u8; 12]) -> Option<SocketAddr> {
    if v.len() < 4 {
        return None;
    }
    let port = u16::from_be_bytes([v[2], v[3]]) ^ (MAGIC >> 16) as u16;
    match v[1] {
        1 if v.len() == 8 => {
            let x = u32::from_be_bytes([v[4], v[5], v[6], v[7]]) ^ MAGIC;
            Some(SocketAddr::new(IpAddr::V4(Ipv4Addr::from(x)), port))
        }
        2 if v.len() == 20 => {
            let mut key = [0u8; 16];
            key[..4].copy_from_slice(&MAGIC.to_be_bytes());
            key[4..].copy_from_slice(txid);
            let mut a = [0u8; 16];
            for i in 0..16 {
                a[i] = v[4 + i] ^ key[i];
            }
            Some(SocketAddr::new(IpAddr::V6(Ipv6Addr::from(a)), port))
        }
        _ => None,
    }
}

/// CRC-32 (ISO-HDLC) of `raw[..at]` with the length field adjusted to end after a
/// FINGERPRINT at `at`, XORed as RFC 8489 §14.7 says.
fn fingerprint(raw: &[u8], at: usize) -> u32 {
    const CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISO_HDLC);
    let len = (at + 8 - 20) as u16;
    let mut d = CRC.digest();
    d.update(&raw[0..2]);
    d.update(&len.to_be_bytes());
    d.update(&raw[4..at]);
    d.finalize() ^ FINGERPRINT_XOR
}

/// Builds one STUN message into a reused buffer.
pub struct Writer<'b> {
    out: &'b mut Vec<u8>,
}

impl<'b> Writer<'b> {
    /// Start a message (clears `out`).
    pub fn new(out: &'b mut Vec<u8>, method: u16, class: Class, txid: &[u8; 12]) -> Self {
        out.clear();
        let m = method & 0x0FFF;
        let c = class.bits();
        let t = (m & 0x000F)
            | ((m & 0x0070) << 1)
            | ((m & 0x0F80) << 2)
            | ((c & 1) << 4)
            | ((c & 2) << 7);
        out.extend_from_slice(&t.to_be_bytes());
        out.extend_from_slice(&[0, 0]);
        out.extend_from_slice(&MAGIC.to_be_bytes());
        out.extend_from_slice(txid);
        Writer { out }
    }

    fn set_len(&mut self) {
        let len = (self.out.len() - 20) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
    }

    /// Append a raw attribute (padded to 4).
    pub fn attr(&mut self, t: u16, v: &[u8]) -> &mut Self {
        self.out.extend_from_slice(&t.to_be_bytes());
        self.out.extend_from_slice(&(v.len() as u16).to_be_bytes());
        self.out.extend_from_slice(v);
        while !self.out.len().is_multiple_of(4) {
            self.out.push(0);
        }
        self.set_len();
        self
    }

    /// Append a 32-bit attribute.
    pub fn u32(&mut self, t: u16, v: u32) -> &mut Self {
        self.attr(t, &v.to_be_bytes())
    }

    /// Append an XOR-*-ADDRESS attribute.
    pub fn xor_addr(&mut self, t: u16, a: SocketAddr) -> &mut Self {
        let port = a.port() ^ (MAGIC >> 16) as u16;
        let mut v = [0u8; 20];
        v[2..4].copy_from_slice(&port.to_be_bytes());
        let n = match a.ip() {
            IpAddr::V4(ip) => {
                v[1] = 1;
                v[4..8].copy_from_slice(&(u32::from(ip) ^ MAGIC).to_be_bytes());
                8
            }
            IpAddr::V6(ip) => {
                v[1] = 2;
                let mut key = [0u8; 16];
                key[..4].copy_from_slice(&MAGIC.to_be_bytes());
                // Invariant: the header is written, so bytes 8..20 hold the txid.
                key[4..].copy_from_slice(&self.out[8..20]);
                for (i, b) in ip.octets().iter().enumerate() {
                    v[4 + i] = b ^ key[i];
                }
                20
            }
        };
        self.attr(t, &v[..n])
    }

    /// Append ERROR-CODE.
    pub fn error(&mut self, code: u16, reason: &str) -> &mut Self {
        let mut v = vec![0, 0, (code / 100) as u8, (code % 100) as u8];
        v.extend_from_slice(reason.as_bytes());
        self.attr(attr::ERROR_CODE, &v)
    }

    /// Append MESSAGE-INTEGRITY (HMAC-SHA1 with `key`).
    pub fn integrity(&mut self, key: &[u8]) -> &mut Self {
        let at = self.out.len();
        let len = (at + 24 - 20) as u16;
        self.out[2..4].copy_from_slice(&len.to_be_bytes());
        // Invariant: HMAC accepts keys of any length.
        let mut mac = Hmac::<Sha1>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(&self.out[..at]);
        let tag = mac.finalize().into_bytes();
        self.attr(attr::MESSAGE_INTEGRITY, &tag)
    }

    /// Append FINGERPRINT (must be last).
    pub fn fingerprint(&mut self) -> &mut Self {
        let at = self.out.len();
        let fp = fingerprint(self.out, at);
        self.u32(attr::FINGERPRINT, fp)
    }
}

/// The long-term credential key: MD5(username ":" realm ":" password) (RFC 8489 §9.2.2).
pub fn long_term_key(username: &str, realm: &str, password: &str) -> [u8; 16] {
    use md5::{Digest, Md5};
    let mut h = Md5::new();
    h.update(username.as_bytes());
    h.update(b":");
    h.update(realm.as_bytes());
    h.update(b":");
    h.update(password.as_bytes());
    h.finalize().into()
}

/// The ERROR-CODE of an error response.
pub fn error_code(m: &Message<'_>) -> Option<u16> {
    let v = m.get(attr::ERROR_CODE)?;
    (v.len() >= 4).then(|| u16::from(v[2] & 7) * 100 + u16::from(v[3]))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roundtrip_with_integrity_and_fingerprint() {
        let mut buf = Vec::new();
        let txid = [7u8; 12];
        let key = long_term_key("u", "r", "p");
        let peer: SocketAddr = "203.0.113.5:4000".parse().unwrap();
        let peer6: SocketAddr = "[2001:db8::1]:5000".parse().unwrap();
        Writer::new(&mut buf, method::CREATE_PERMISSION, Class::Request, &txid)
            .xor_addr(attr::XOR_PEER_ADDRESS, peer)
            .xor_addr(attr::XOR_PEER_ADDRESS, peer6)
            .attr(attr::USERNAME, b"u")
            .integrity(&key)
            .fingerprint();
        let m = Message::parse(&buf).unwrap();
        assert_eq!(m.method, method::CREATE_PERMISSION);
        assert_eq!(m.class, Class::Request);
        assert_eq!(m.txid, txid);
        assert_eq!(m.text(attr::USERNAME), Some("u"));
        let addrs: Vec<_> = m.xor_addrs(attr::XOR_PEER_ADDRESS).collect();
        assert_eq!(addrs, [Some(peer), Some(peer6)]);
        assert!(m.check_integrity(&key));
        assert!(!m.check_integrity(&long_term_key("u", "r", "x")));
        // A flipped bit breaks the fingerprint: dropped.
        let mut bad = buf.clone();
        bad[25] ^= 1;
        assert_eq!(
            Message::parse(&bad).unwrap_err(),
            ParseError::BadFingerprint
        );
    }

    #[test]
    fn class_bits_roundtrip() {
        let mut buf = Vec::new();
        for class in [
            Class::Request,
            Class::Indication,
            Class::Success,
            Class::Error,
        ] {
            for m in [
                method::BINDING,
                method::ALLOCATE,
                method::CHANNEL_BIND,
                0xFFF,
            ] {
                Writer::new(&mut buf, m, class, &[0; 12]);
                let p = Message::parse(&buf).unwrap();
                assert_eq!((p.method, p.class), (m, class));
            }
        }
        // Binding request is 0x0001, Allocate error 0x0113 (known values).
        Writer::new(&mut buf, method::ALLOCATE, Class::Error, &[0; 12]);
        assert_eq!(&buf[..2], &[0x01, 0x13]);
    }

    #[test]
    fn rejects_garbage_without_panicking() {
        assert_eq!(Message::parse(&[]).unwrap_err(), ParseError::NotStun);
        assert_eq!(
            Message::parse(&[0xff; 40]).unwrap_err(),
            ParseError::NotStun
        );
        let mut buf = Vec::new();
        Writer::new(&mut buf, method::BINDING, Class::Request, &[1; 12]).attr(0x0006, b"abcd");
        buf[23] = 200; // attribute longer than the message
        assert_eq!(Message::parse(&buf).unwrap_err(), ParseError::BadAttributes);
        assert!(ChannelData::parse(&[0x40, 0, 0, 9, 1]).is_none());
        assert_eq!(stream_frame_len(&[0x40, 0, 0, 5]), Ok(Some(12)));
        assert_eq!(stream_frame_len(&[0x00, 1, 0, 8]), Ok(Some(28)));
        assert!(stream_frame_len(&[0xC0, 1, 0, 8]).is_err());
    }

    #[test]
    fn rfc5769_sample_request_verifies() {
        // RFC 5769 §2.1: short-term credential, password "VOkJxbRl1RmTxUk/WvJxBt".
        let hex = "000100582112a442b7e7a701bc34d686fa87dfae802200105354554e207465737420636c69656e7400240004\
                   6e0001ff80290008932ff9b151263b36000600096576746a3a68367659202020000800149aeaa70cbfd8cb56\
                   781ef2b5b2d3f249c1b571a280280004e57a3bcf";
        let raw: Vec<u8> = (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect();
        let m = Message::parse(&raw).unwrap();
        assert_eq!(m.text(attr::USERNAME), Some("evtj:h6vY"));
        assert!(m.check_integrity(b"VOkJxbRl1RmTxUk/WvJxBt"));
    }
}
