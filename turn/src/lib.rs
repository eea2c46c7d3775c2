//! studyroom TURN: a relay for learners whose networks block UDP (or everything but 443).
//!
//! Layers:
//! - [`codec`]: STUN/TURN messages parsed in place, written into reused buffers.
//! - [`server`]: the sans-IO TURN server ([`TurnServer`]): allocations, permissions,
//!   channels, long-term credentials (static users and TURN REST), peer policy, quotas.
//! - [`driver`]: tokio listeners (UDP and TCP 3478, TLS 5349) and relay sockets around
//!   the core, plus the in-process hand-over of datagrams to a co-located SFU.
//! - [`rest_credential`]: the TURN REST credential scheme (coturn's `use-auth-secret`)
//!   so `join` can hand out credentials this relay (or any compatible TURN) accepts.

pub mod cidr;
pub mod codec;
pub mod driver;
pub mod server;

pub use cidr::{Cidr, PeerPolicy};
pub use server::{Client, Io, Proto, ServerConfig, TurnServer, TurnStats};

use base64::Engine;
use hmac::{Hmac, Mac};
use sha1::Sha1;

/// Credentials for one participant: username `EXPIRY:identity`,
/// password `base64(HMAC-SHA1(secret, username))`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RestCredential {
    /// `EXPIRY:identity`.
    pub username: String,
    /// The HMAC.
    pub password: String,
}

/// Make REST credentials valid until `expiry_unix` (seconds).
pub fn rest_credential(secret: &[u8], identity: &str, expiry_unix: u64) -> RestCredential {
    let username = format!("{expiry_unix}:{identity}");
    let password = rest_password(secret, &username);
    RestCredential { username, password }
}

/// The password for a REST username.
pub fn rest_password(secret: &[u8], username: &str) -> String {
    // Invariant: HMAC accepts keys of any length.
    let mut mac = Hmac::<Sha1>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(username.as_bytes());
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_coturn_scheme() {
        // Reference computed with: printf '1700000000:alice' | openssl dgst -sha1 -hmac secret -binary | base64
        let c = rest_credential(b"secret", "alice", 1_700_000_000);
        assert_eq!(c.username, "1700000000:alice");
        assert_eq!(c.password, "d8soP47RbdIKLDUOpnJPVQyq5Ts=");
        assert_eq!(c.password, rest_password(b"secret", "1700000000:alice"));
        assert_ne!(c.password, rest_password(b"other", "1700000000:alice"));
    }
}
