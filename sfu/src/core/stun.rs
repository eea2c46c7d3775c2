//! Just enough STUN parsing to route a datagram from an unknown address: find the
//! USERNAME attribute of a binding request and return our (local) ufrag, the part
//! before the colon. Full STUN validation (MESSAGE-INTEGRITY, FINGERPRINT) is str0m's job
//! once the datagram reached the right transport; this parser only has to be safe on any
//! input, which the fuzz target `stun_username` checks.

use thiserror::Error;

const MAGIC_COOKIE: [u8; 4] = [0x21, 0x12, 0xA4, 0x42];
const ATTR_USERNAME: u16 = 0x0006;
const HEADER_LEN: usize = 20;

/// Why a datagram is not a routable STUN message.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum StunError {
    /// Shorter than a STUN header, or the length field disagrees with the datagram.
    #[error("truncated STUN message")]
    Truncated,
    /// Not STUN at all (first bits or magic cookie wrong).
    #[error("not a STUN message")]
    NotStun,
    /// STUN, but it carries no USERNAME (e.g. a response).
    #[error("STUN message without USERNAME")]
    NoUsername,
    /// USERNAME is not `local:remote` in UTF-8.
    #[error("malformed STUN USERNAME")]
    BadUsername,
}

/// Whether the datagram looks like STUN (RFC 7983 demultiplexing: first byte 0..=3).
pub fn is_stun(data: &[u8]) -> bool {
    data.len() >= HEADER_LEN && data[0] < 4 && data[4..8] == MAGIC_COOKIE
}

/// The local ufrag named by a STUN request's USERNAME (`local:remote`).
pub fn local_ufrag(data: &[u8]) -> Result<&str, StunError> {
    if data.len() < HEADER_LEN {
        return Err(StunError::Truncated);
    }
    if data[0] >= 4 || data[4..8] != MAGIC_COOKIE {
        return Err(StunError::NotStun);
    }
    let body_len = u16::from_be_bytes([data[2], data[3]]) as usize;
    let body = data
        .get(HEADER_LEN..HEADER_LEN + body_len)
        .ok_or(StunError::Truncated)?;
    let mut rest = body;
    while rest.len() >= 4 {
        let typ = u16::from_be_bytes([rest[0], rest[1]]);
        let len = u16::from_be_bytes([rest[2], rest[3]]) as usize;
        let value = rest.get(4..4 + len).ok_or(StunError::Truncated)?;
        if typ == ATTR_USERNAME {
            let s = std::str::from_utf8(value).map_err(|_| StunError::BadUsername)?;
            let (local, _remote) = s.split_once(':').ok_or(StunError::BadUsername)?;
            if local.is_empty() {
                return Err(StunError::BadUsername);
            }
            return Ok(local);
        }
        let padded = (len + 3) & !3;
        rest = rest.get(4 + padded..).unwrap_or(&[]);
    }
    Err(StunError::NoUsername)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn binding_request(username: &[u8]) -> Vec<u8> {
        let mut attrs = Vec::new();
        // A PRIORITY attribute first, so the parser has to skip one.
        attrs.extend_from_slice(&[0x00, 0x24, 0x00, 0x04, 1, 2, 3, 4]);
        attrs.extend_from_slice(&ATTR_USERNAME.to_be_bytes());
        attrs.extend_from_slice(&(username.len() as u16).to_be_bytes());
        attrs.extend_from_slice(username);
        while attrs.len() % 4 != 0 {
            attrs.push(0);
        }
        let mut m = vec![0x00, 0x01];
        m.extend_from_slice(&(attrs.len() as u16).to_be_bytes());
        m.extend_from_slice(&MAGIC_COOKIE);
        m.extend_from_slice(&[7; 12]);
        m.extend_from_slice(&attrs);
        m
    }

    #[test]
    fn finds_local_ufrag() {
        let m = binding_request(b"srvUfrag:cliUfrag");
        assert!(is_stun(&m));
        assert_eq!(local_ufrag(&m), Ok("srvUfrag"));
    }

    #[test]
    fn rejects_bad_input_without_panicking() {
        assert_eq!(local_ufrag(&[]), Err(StunError::Truncated));
        assert_eq!(local_ufrag(&[0x80; 40]), Err(StunError::NotStun));
        let m = binding_request(b"nocolon");
        assert_eq!(local_ufrag(&m), Err(StunError::BadUsername));
        let m = binding_request(b":x");
        assert_eq!(local_ufrag(&m), Err(StunError::BadUsername));
        let mut m = binding_request(b"a:b");
        m.truncate(m.len() - 6);
        assert_eq!(local_ufrag(&m), Err(StunError::Truncated));
        // Length field claims a huge body.
        let mut m = binding_request(b"a:b");
        m[2] = 0xff;
        assert_eq!(local_ufrag(&m), Err(StunError::Truncated));
        // Every truncation and every single-byte corruption is handled.
        let m = binding_request(b"abc:def");
        for n in 0..m.len() {
            let _ = local_ufrag(&m[..n]);
            let mut c = m.clone();
            c[n] ^= 0xff;
            let _ = local_ufrag(&c);
        }
    }
}
